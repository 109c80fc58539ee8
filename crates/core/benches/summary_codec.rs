//! Summary encodings: JSON (summary format 1) against the binary encoding
//! (summary format 2, written from format floor 2), on the same 10,000
//! summaries in the same run: encode, decode, and bytes per summary. The
//! ratios of median per-summary times are printed after the criterion
//! groups (docs/design.md §3.6 says why both exist).

use chatvault_core::chat::Chat;
use chatvault_core::raw::codec::{decode_summary, encode_summary_at};
use chatvault_core::{ChatId, DeviceId, Hlc};
use criterion::{black_box, Criterion};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const COUNT: usize = 10_000;

/// Per-summary seconds of every batch criterion ran, per benchmark.
static MEASURED: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

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
            .push(elapsed.as_secs_f64() / (iters as f64 * COUNT as f64));
    }
    elapsed
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
                timed(format!("encode {name}"), iters, || {
                    for s in &summaries {
                        black_box(encode_summary_at(s, floor).expect("encode"));
                    }
                })
            })
        });
        group.bench_function(format!("decode {name}"), |b| {
            b.iter_custom(|iters| {
                timed(format!("decode {name}"), iters, || {
                    for e in &encoded {
                        black_box(decode_summary(e).expect("decode"));
                    }
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
            "{op}: json {:.0} ns, binary {:.0} ns per summary: binary takes {:.2}x the JSON time",
            json * 1e9,
            binary * 1e9,
            binary / json
        );
    }
}
