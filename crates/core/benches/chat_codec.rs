//! Chat body encodings: JSON (chat formats 1–4, written at format floor 1)
//! against the binary encoding (chat format 5, written from floor 2), on
//! the same 1,000-message chat (≈300-byte messages) in the same run:
//! encode, decode, and plaintext bytes. The ratios of the median times are
//! printed after the criterion groups (docs/design.md §4 has the layout).

mod common;

use chatvault_core::raw::codec::{decode_chat, encode_chat_at};
use common::{criterion, long_chat, print_json_vs_binary, timed};
use criterion::{black_box, Criterion};

const MESSAGES: u64 = 1_000;

fn codec(c: &mut Criterion) {
    let chat = long_chat(MESSAGES);
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
                timed(&format!("encode {name}"), iters, 1, || {
                    black_box(encode_chat_at(&chat, floor).expect("encode"));
                })
            })
        });
        group.bench_function(format!("decode {name}"), |b| {
            b.iter_custom(|iters| {
                timed(&format!("decode {name}"), iters, 1, || {
                    black_box(decode_chat(&encoded).expect("decode"));
                })
            })
        });
    }
    group.finish();
}

fn main() {
    let mut c = criterion();
    codec(&mut c);
    c.final_summary();
    print_json_vs_binary("chat", 1e6, "µs");
}
