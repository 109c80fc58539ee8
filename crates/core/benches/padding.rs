//! What size padding costs in bytes and what it hides, on chats shaped like
//! real ones (seeded, so every run sees the same corpus): every chat's
//! summary and body are encoded as the engine encodes them and sealed under
//! each padding setting; the table gives the bytes stored and how many
//! distinct blob sizes the server sees, beside the unpadded baseline of the
//! same run.
//!
//! `cargo bench -p chatvault-core --bench padding [-- --chats N]`

use chatvault_core::envelope::{EnvelopeCipher, Padding};
use chatvault_core::raw::codec::{encode_chat, encode_summary};
use chatvault_core::{Aad, Chat, ChatId, Cipher, Clock, DeviceId, Part, Role, VaultId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

const SEED: u64 = 0x5e_ed0f_c4a7;

/// A length drawn from a log-normal distribution around `median` (spread
/// ×/÷ 3 at one sigma), the shape message lengths have in real chat logs.
fn log_normal(rng: &mut StdRng, median: f64, max: usize) -> usize {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    ((median * (normal * 3f64.ln()).exp()) as usize).clamp(1, max)
}

fn text(rng: &mut StdRng, len: usize) -> String {
    const WORDS: &[&str] = &[
        "the", "vault", "sync", "message", "rust", "key", "device", "please", "explain", "why",
        "error", "storage", "thanks", "could", "you", "write", "a", "function", "that",
    ];
    let mut out = String::with_capacity(len + 10);
    while out.len() < len {
        out.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
        out.push(' ');
    }
    out.truncate(len);
    out
}

fn corpus(chats: usize) -> Vec<Chat> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let clock = Clock::new(DeviceId(1));
    (0..chats)
        .map(|_| {
            let title_len = rng.gen_range(8..70);
            let mut chat = Chat::new(ChatId::new(), text(&mut rng, title_len), clock.tick());
            let turns = log_normal(&mut rng, 6.0, 200);
            for _ in 0..turns {
                let question = log_normal(&mut rng, 120.0, 8_000);
                chat.add_message(Role::User, text(&mut rng, question), clock.tick());
                let answer = log_normal(&mut rng, 900.0, 30_000);
                chat.add_message(Role::Assistant, text(&mut rng, answer), clock.tick());
            }
            chat
        })
        .collect()
}

struct Row {
    name: String,
    summary_bytes: u64,
    body_bytes: u64,
    summary_sizes: usize,
    body_sizes: usize,
}

fn measure(
    name: &str,
    padding: Padding,
    cipher: &EnvelopeCipher,
    encoded: &[(Vec<u8>, Vec<u8>)],
) -> Row {
    cipher.set_padding(padding);
    let mut row = Row {
        name: name.to_string(),
        summary_bytes: 0,
        body_bytes: 0,
        summary_sizes: 0,
        body_sizes: 0,
    };
    let (mut summaries, mut bodies) = (BTreeSet::new(), BTreeSet::new());
    for (summary, body) in encoded {
        let aad = |part| Aad {
            vault: cipher.vault(),
            chat: ChatId::new(),
            part,
            version: 1,
        };
        let sealed = cipher.seal(&aad(Part::Summary), summary).expect("seal");
        row.summary_bytes += sealed.len() as u64;
        summaries.insert(sealed.len());
        let sealed = cipher.seal(&aad(Part::Body), body).expect("seal");
        row.body_bytes += sealed.len() as u64;
        bodies.insert(sealed.len());
    }
    row.summary_sizes = summaries.len();
    row.body_sizes = bodies.len();
    row
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let chats = args
        .iter()
        .position(|a| a == "--chats")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = corpus(chats)
        .iter()
        .map(|chat| {
            (
                encode_summary(&chat.summary()).expect("encode"),
                encode_chat(chat).expect("encode"),
            )
        })
        .collect();
    let cipher = EnvelopeCipher::generate(VaultId::new());
    let rows = [
        measure("off (baseline)", Padding::Off, &cipher, &encoded),
        measure(
            "padmé, floor 256 (default)",
            Padding::default(),
            &cipher,
            &encoded,
        ),
        measure(
            "padmé, floor 0",
            Padding::Padme { floor: 0 },
            &cipher,
            &encoded,
        ),
        measure(
            "power of two, floor 256",
            Padding::PowerOfTwo { floor: 256 },
            &cipher,
            &encoded,
        ),
    ];
    let base = &rows[0];
    let total = |r: &Row| r.summary_bytes + r.body_bytes;
    println!("\n{chats} chats (seed {SEED:#x}), summary and body of each sealed once\n");
    println!("| padding | summaries | bodies | total | vs off | distinct summary sizes | distinct body sizes |");
    println!("|---|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {} B | {} B | {} B | {:+.1} % | {} | {} |",
            row.name,
            row.summary_bytes,
            row.body_bytes,
            total(row),
            (total(row) as f64 / total(base) as f64 - 1.0) * 100.0,
            row.summary_sizes,
            row.body_sizes,
        );
    }
}
