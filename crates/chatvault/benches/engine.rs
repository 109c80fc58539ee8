//! Engine benchmarks against DESIGN.md's targets, each next to a baseline
//! measured in the same run on the same bytes:
//!
//! - cold start to sidebar with 10,000 chats in the replica (target ≤ 30 ms)
//!   vs a raw redb read of the same sealed summaries;
//! - opening a 1,000-message chat from the replica (target ≤ 5 ms) vs a raw
//!   redb read of the same sealed body.
//!
//! Unlocking the key file (scrypt) is excluded: its cost is a setting.
//! Ratios of the median batches are printed after the criterion groups.

mod common;

use criterion::{black_box, Criterion};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const COLD_START: &str = "cold_start_to_sidebar_10k";
const RAW_SUMMARIES: &str = "raw_redb_read_10k_summaries";
const OPEN_CHAT: &str = "open_1000_message_chat";
const RAW_BODY: &str = "raw_redb_read_1000_message_body";

static MEASURED: Mutex<BTreeMap<&'static str, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(name: &'static str, elapsed: Duration, iters: u64) -> Duration {
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

fn median(name: &str) -> Option<f64> {
    let mut times = MEASURED.lock().expect("lock").get(name)?.clone();
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn cold_start(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("replica.redb");
    let (key_file, _) = common::build_replica(&path, 10_000, 0);
    let cipher = common::unlock(&key_file);
    let storage = common::storage(dir.path());
    let rt = runtime();

    let mut group = c.benchmark_group("cold start, 10k chats");
    group.sample_size(20);
    group.bench_function(COLD_START, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let engine = rt.block_on(common::open_engine(
                    &path,
                    storage.clone(),
                    cipher.clone(),
                    32 << 20,
                ));
                let sidebar = engine.sidebar();
                total += start.elapsed();
                assert_eq!(sidebar.len(), 10_001);
                black_box(sidebar);
                drop(engine);
            }
            record(COLD_START, total, iters)
        })
    });
    group.bench_function(RAW_SUMMARIES, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let replica = chatvault::core::Replica::open(&path).expect("replica");
                let summaries = replica.summaries().expect("summaries");
                total += start.elapsed();
                black_box(summaries);
                drop(replica);
            }
            record(RAW_SUMMARIES, total, iters)
        })
    });
    group.finish();
}

fn open_chat(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("replica.redb");
    let (key_file, big) = common::build_replica(&path, 0, 1_000);
    let cipher = common::unlock(&key_file);
    let storage = common::storage(dir.path());
    let rt = runtime();

    let mut group = c.benchmark_group("open a 1,000-message chat");
    group.bench_function(OPEN_CHAT, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // A fresh engine each time, so the chat comes from the
                // replica, not from the in-memory cache.
                let engine = rt.block_on(common::open_engine(
                    &path,
                    storage.clone(),
                    cipher.clone(),
                    32 << 20,
                ));
                let start = Instant::now();
                let chat = rt.block_on(engine.load_full_chat(big)).expect("load");
                total += start.elapsed();
                assert_eq!(chat.message_count(), 1_000);
                drop(engine);
            }
            record(OPEN_CHAT, total, iters)
        })
    });
    let replica = chatvault::core::Replica::open(&path).expect("replica");
    group.bench_function(RAW_BODY, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(replica.record(big, true).expect("read"));
            }
            record(RAW_BODY, start.elapsed(), iters)
        })
    });
    group.finish();
}

fn print_ratios() {
    let lines = [
        (
            COLD_START,
            RAW_SUMMARIES,
            "cold start to sidebar, 10k chats",
            30.0,
        ),
        (OPEN_CHAT, RAW_BODY, "open a 1,000-message chat", 5.0),
    ];
    for (measured, baseline, what, target_ms) in lines {
        match (median(measured), median(baseline)) {
            (Some(m), Some(b)) => println!(
                "{what}: {:.2} ms (target ≤ {target_ms} ms) = {:.1}x the raw redb read of the same bytes ({:.3} ms)",
                m * 1e3,
                m / b,
                b * 1e3
            ),
            _ => println!("{what}: not measured (filtered out)"),
        }
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    cold_start(&mut criterion);
    open_chat(&mut criterion);
    criterion.final_summary();
    print_ratios();
}
