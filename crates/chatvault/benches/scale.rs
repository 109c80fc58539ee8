//! Scale: cold start and resident memory with large sidebars (10k and 100k
//! chats; set `CHATVAULT_SCALE_SIZES=10000,100000` to choose). Each
//! measurement runs in a fresh child process, so peak memory (VmHWM) belongs
//! to that step alone, and is printed next to its baselines from the same
//! run: an idle process (the runtime alone) and a raw redb read of the same
//! sealed summaries. DESIGN.md targets ≤ 64 MB resident for a 100k-chat
//! sidebar.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const CHILD: &str = "CHATVAULT_SCALE_CHILD";

/// (VmRSS, VmHWM) of this process in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn report(values: &[(&str, f64)]) {
    for (key, value) in values {
        println!("{key}={value}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The work of one child process.
fn child(task: &str) {
    let (mode, arg) = task.split_once(':').expect("mode:arg");
    let path = PathBuf::from(arg.split(':').next().expect("path"));
    match mode {
        "build" => {
            let chats: usize = arg
                .rsplit(':')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("count");
            let start = Instant::now();
            common::build_replica(&path, chats, 0);
            report(&[("build_s", start.elapsed().as_secs_f64())]);
        }
        "idle" => {
            let rt = runtime();
            rt.block_on(async { tokio::task::yield_now().await });
            let (rss, hwm) = memory();
            report(&[("rss", rss), ("hwm", hwm)]);
        }
        "raw" => {
            let rt = runtime();
            rt.block_on(async { tokio::task::yield_now().await });
            let start = Instant::now();
            let replica = chatvault::core::Replica::open(&path).expect("replica");
            let summaries = replica.summaries().expect("summaries");
            let ms = start.elapsed().as_secs_f64() * 1e3;
            let (rss, hwm) = memory();
            report(&[
                ("ms", ms),
                ("rss", rss),
                ("hwm", hwm),
                ("n", summaries.len() as f64),
            ]);
        }
        "engine" => {
            let rt = runtime();
            let key_file = {
                let replica = chatvault::core::Replica::open(&path).expect("replica");
                replica.key_file().expect("read").expect("key file")
            };
            let cipher = common::unlock(&key_file);
            let scratch = tempfile::tempdir().expect("tempdir");
            let storage = common::storage(scratch.path());
            let start = Instant::now();
            let engine = rt.block_on(common::open_engine(&path, storage, cipher, 32 << 20));
            let (loaded, _) = memory();
            let sidebar = engine.sidebar();
            let ms = start.elapsed().as_secs_f64() * 1e3;
            let (rss, hwm) = memory();
            report(&[
                ("ms", ms),
                ("loaded", loaded),
                ("rss", rss),
                ("hwm", hwm),
                ("n", sidebar.len() as f64),
            ]);
            drop(engine);
        }
        other => panic!("unknown child task {other}"),
    }
}

fn run_child(task: String) -> BTreeMap<String, f64> {
    let output = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD, &task)
        .output()
        .expect("spawn child");
    assert!(
        output.status.success(),
        "child {task} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

fn size_mib(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(f64::NAN, |m| m.len() as f64 / (1024.0 * 1024.0))
}

fn main() {
    if let Ok(task) = std::env::var(CHILD) {
        child(&task);
        return;
    }
    let sizes: Vec<usize> = std::env::var("CHATVAULT_SCALE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    println!(
        "{:>7} | {:>10} | {:>7} | {:>11} | {:>13} | {:>6} | {:>8} | {:>15} | {:>15} | {:>18} | {:>11}",
        "chats",
        "replica MB",
        "build s",
        "raw read ms",
        "cold start ms",
        "ratio",
        "idle MB",
        "raw RSS/peak",
        "engine loaded",
        "+sidebar Vec/peak",
        "peak − idle"
    );
    for chats in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("replica.redb");
        let p = path.display().to_string();
        let build = run_child(format!("build:{p}:{chats}"));
        let idle = run_child(format!("idle:{p}"));
        let raw = run_child(format!("raw:{p}"));
        let engine = run_child(format!("engine:{p}"));
        assert_eq!(engine["n"] as usize, chats + 1, "sidebar size");
        println!(
            "{:>7} | {:>10.1} | {:>7.1} | {:>11.1} | {:>13.1} | {:>5.1}x | {:>8.1} | {:>7.1}/{:<7.1} | {:>15.1} | {:>8.1}/{:<9.1} | {:>11.1}",
            chats,
            size_mib(&path),
            build["build_s"],
            raw["ms"],
            engine["ms"],
            engine["ms"] / raw["ms"],
            idle["rss"],
            raw["rss"],
            raw["hwm"],
            engine["loaded"],
            engine["rss"],
            engine["hwm"],
            engine["hwm"] - idle["rss"],
        );
    }
    println!("(memory in MiB; ratio = cold start / raw redb read of the same sealed summaries)");
}
