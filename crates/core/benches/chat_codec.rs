//! Chat body encodings: JSON (chat formats 1–4, written at format floor 1)
//! against the binary encoding (chat format 5, written from floor 2), on
//! the same 1,000-message chat (≈300-byte messages) in the same run:
//! encode, decode, and plaintext bytes. The ratios of the median times are
//! printed after the criterion groups (docs/design.md §4 has the layout).

use chatvault_core::chat::{Chat, Role};
use chatvault_core::raw::codec::{decode_chat, encode_chat_at};
use chatvault_core::{ChatId, DeviceId, Hlc};
use criterion::{black_box, Criterion};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MESSAGES: u64 = 1_000;

/// Seconds per chat of every batch criterion ran, per benchmark.
static MEASURED: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

/// A chat of [`MESSAGES`] messages of about 300 bytes, alternating user and
/// assistant, with the line breaks and quotes chat text has.
fn chat() -> Chat {
    let device = DeviceId(7);
    let start = 1_700_000_000_000;
    let mut chat = Chat::new(
        ChatId::new(),
        "Trip plans for the summer",
        Hlc::new(start, 0, device),
    );
    for i in 0..MESSAGES {
        let role = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        let mut text = format!("Message {i}: ");
        while text.len() < 290 {
            text.push_str("Let's compare the \"night train\" with flying,\nthen book. ");
        }
        text.truncate(300);
        chat.add_message(role, text, Hlc::new(start + 1 + i, 0, device));
    }
    chat
}

fn timed(name: String, iters: u64, f: impl Fn()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let elapsed = start.elapsed();
    if iters > 0 {
        MEASURED
            .lock()
            .expect("lock")
            .entry(name)
            .or_default()
            .push(elapsed.as_secs_f64() / iters as f64);
    }
    elapsed
}

fn codec(c: &mut Criterion) {
    let chat = chat();
    let mut group = c.benchmark_group("1,000-message chat");
    for (floor, name) in [(1u8, "json"), (2, "binary")] {
        let encoded = encode_chat_at(&chat, floor).expect("encode");
        println!(
            "{name}: {} plaintext bytes (format {})",
            encoded.len(),
            encoded[0]
        );
        group.bench_function(format!("encode {name}"), |b| {
            b.iter_custom(|iters| {
                timed(format!("encode {name}"), iters, || {
                    black_box(encode_chat_at(&chat, floor).expect("encode"));
                })
            })
        });
        group.bench_function(format!("decode {name}"), |b| {
            b.iter_custom(|iters| {
                timed(format!("decode {name}"), iters, || {
                    black_box(decode_chat(&encoded).expect("decode"));
                })
            })
        });
    }
    group.finish();
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    codec(&mut c);
    c.final_summary();
    let all = MEASURED.lock().expect("lock");
    for op in ["encode", "decode"] {
        let (Some(json), Some(binary)) = (
            all.get(&format!("{op} json")),
            all.get(&format!("{op} binary")),
        ) else {
            continue;
        };
        let (json, binary) = (median(json), median(binary));
        println!(
            "{op}: json {:.1} µs, binary {:.1} µs per chat: binary takes {:.2}x the JSON time",
            json * 1e6,
            binary * 1e6,
            binary / json
        );
    }
}
