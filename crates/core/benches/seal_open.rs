//! Sealing and opening 2 KB records: the envelope cipher (one data key,
//! XChaCha20-Poly1305) against encrypting each record as its own age file to
//! an X25519 recipient, on the same data in the same run. DESIGN.md targets
//! a ratio of at least 20×; the ratio of median per-record times is printed
//! after the criterion groups.

use age::x25519;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::XChaCha20Poly1305;
use chatvault_core::envelope::EnvelopeCipher;
use chatvault_core::{Aad, ChatId, Cipher, Part, VaultId};
use criterion::{black_box, Criterion, Throughput};
use rand::RngCore;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const RECORD_LEN: usize = 2048;
const ENVELOPE: &str = "envelope";
const AGE: &str = "age_x25519_per_record";
const RAW_AEAD: &str = "raw_xchacha20poly1305";

/// Per-iteration seconds of every batch criterion ran, per benchmark.
static MEASURED: Mutex<BTreeMap<&'static str, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn measured(name: &'static str, elapsed: Duration, iters: u64) -> Duration {
    if iters > 0 {
        let mut all = MEASURED.lock().expect("lock");
        all.entry(name)
            .or_default()
            .push(elapsed.as_secs_f64() / iters as f64);
    }
    elapsed
}

fn age_seal_open(
    recipient: &x25519::Recipient,
    identity: &x25519::Identity,
    record: &[u8],
) -> Vec<u8> {
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
            .expect("recipient");
    let mut sealed = Vec::with_capacity(record.len() + 256);
    let mut writer = encryptor.wrap_output(&mut sealed).expect("header");
    writer.write_all(record).expect("encrypt");
    writer.finish().expect("finish");
    let decryptor = age::Decryptor::new_buffered(&sealed[..]).expect("parse");
    let mut opened = Vec::with_capacity(record.len());
    decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .expect("identity")
        .read_to_end(&mut opened)
        .expect("decrypt");
    opened
}

fn seal_open(c: &mut Criterion) {
    let mut record = vec![0u8; RECORD_LEN];
    rand::thread_rng().fill_bytes(&mut record);
    let cipher = EnvelopeCipher::generate(VaultId::new());
    let aad = Aad {
        vault: cipher.vault(),
        chat: ChatId::new(),
        part: Part::Body,
        version: 1,
    };
    let identity = x25519::Identity::generate();
    let recipient = identity.to_public();

    let mut group = c.benchmark_group("seal+open 2KB");
    group.throughput(Throughput::Bytes(RECORD_LEN as u64));
    group.bench_function(ENVELOPE, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let sealed = cipher.seal(&aad, black_box(&record)).expect("seal");
                black_box(cipher.open(&aad, &sealed).expect("open"));
            }
            measured(ENVELOPE, start.elapsed(), iters)
        })
    });
    // The floor: the bare AEAD with no header, no AAD encoding, no lock.
    let raw = XChaCha20Poly1305::new(&XChaCha20Poly1305::generate_key(&mut OsRng));
    group.bench_function(RAW_AEAD, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let nonce = XChaCha20Poly1305::generate_nonce(&mut rand::thread_rng());
                let sealed = raw.encrypt(&nonce, black_box(&record[..])).expect("seal");
                black_box(raw.decrypt(&nonce, &sealed[..]).expect("open"));
            }
            measured(RAW_AEAD, start.elapsed(), iters)
        })
    });
    group.bench_function(AGE, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(age_seal_open(&recipient, &identity, black_box(&record)));
            }
            measured(AGE, start.elapsed(), iters)
        })
    });
    group.finish();
}

/// The median batch's time per record: robust against bursts of load from
/// other processes on a shared machine.
fn per_iteration(name: &str) -> Option<f64> {
    let mut times = MEASURED.lock().expect("lock").get(name)?.clone();
    if times.is_empty() {
        return None;
    }
    times.sort_by(f64::total_cmp);
    Some(times[times.len() / 2])
}

fn print_ratio() {
    if let Some(raw) = per_iteration(RAW_AEAD) {
        println!(
            "raw XChaCha20-Poly1305 seal+open 2KB: {:.2} µs/record",
            raw * 1e6
        );
    }
    match (per_iteration(ENVELOPE), per_iteration(AGE)) {
        (Some(envelope), Some(age)) => {
            println!(
                "envelope seal+open 2KB: {:.2} µs/record; age X25519 per record: {:.2} µs/record",
                envelope * 1e6,
                age * 1e6
            );
            println!("ratio age/envelope seal+open 2KB: {:.1}x", age / envelope);
        }
        _ => println!("ratio age/envelope seal+open 2KB: not measured (benchmark filtered out)"),
    }
}

fn main() {
    // Short measurement keeps the whole run well under two minutes.
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(40)
        .configure_from_args();
    seal_open(&mut criterion);
    criterion.final_summary();
    print_ratio();
}
