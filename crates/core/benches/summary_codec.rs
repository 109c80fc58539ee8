//! Summary encodings: JSON (summary format 1) against the binary encoding
//! (summary format 2, written from format floor 2), on the same 10,000
//! summaries in the same run: encode, decode, and bytes per summary. The
//! ratios of median per-summary times are printed after the criterion
//! groups (docs/design.md §3.6 says why both exist).

mod common;

use chatvault_core::chat::Chat;
use chatvault_core::raw::codec::{decode_summary, encode_summary_at};
use chatvault_core::{ChatId, DeviceId, Hlc};
use common::{criterion, print_json_vs_binary, timed};
use criterion::{black_box, Criterion};

const COUNT: usize = 10_000;

fn summaries() -> Vec<chatvault_core::chat::ChatSummary> {
    (0..COUNT)
        .map(|i| {
            let at = Hlc::new(1_700_000_000_000 + i as u64, 0, DeviceId(7));
            let mut chat = Chat::new(
                ChatId::new(),
                format!("Trip plans for the summer, part {i}"),
                at,
            );
            chat.star(i % 5 == 0, at);
            chat.summary()
        })
        .collect()
}

fn codec(c: &mut Criterion) {
    let summaries = summaries();
    let mut group = c.benchmark_group("10k summaries");
    for (floor, name) in [(1u8, "json"), (2, "binary")] {
        let encoded: Vec<Vec<u8>> = summaries
            .iter()
            .map(|s| encode_summary_at(s, floor).expect("encode"))
            .collect();
        let bytes: usize = encoded.iter().map(Vec::len).sum();
        println!(
            "{name}: {:.1} bytes per summary",
            bytes as f64 / COUNT as f64
        );
        group.bench_function(format!("encode {name}"), |b| {
            b.iter_custom(|iters| {
                timed(&format!("encode {name}"), iters, COUNT as u64, || {
                    for s in &summaries {
                        black_box(encode_summary_at(s, floor).expect("encode"));
                    }
                })
            })
        });
        group.bench_function(format!("decode {name}"), |b| {
            b.iter_custom(|iters| {
                timed(&format!("decode {name}"), iters, COUNT as u64, || {
                    for e in &encoded {
                        black_box(decode_summary(e).expect("decode"));
                    }
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
    print_json_vs_binary("summary", 1e9, "ns");
}
