//! The scale benchmark: one markdown table per backend (local folder, S3,
//! Supabase) at each vault size, every chatvault figure beside a baseline
//! measured in the same run on the same server or the same bytes.
//!
//! ```text
//! cargo bench -p chatvault --bench scale -- --chats 1000,10000 --backends fs,s3,supabase
//! just bench-scale --chats 1000,10000
//! ```
//!
//! Flags: `--chats N,N` (vault sizes, default 1000), `--backends
//! fs,s3,supabase` (default all three), `--import N` (chats in the bulk
//! import, default 1000; 0 skips it), `--k N,N` (changed chats, default
//! 1,100), `--repeat N` (timed repetitions in the cold-start child, median
//! reported; default 5), `--keep-replicas DIR` (copies each reader replica,
//! its key file and the big chat's id to `DIR`, for profiling the children:
//! `CHATVAULT_SCALE_CHILD='cold|<replica>|<key>|<chat id>|1' valgrind
//! --tool=callgrind <bench binary>`), `--reseal N` (chats in the re-seal
//! measurement, default 0: skipped), `--only-reseal` (skip the per-size
//! tables: `--only-reseal --reseal 10000 --backends fs`), `--floor N` (the
//! vault's format floor, default 1: the seeded records, the key file and
//! what the reader writes are that vault format, `docs/design.md` §3.6;
//! `--floor 2` measures binary summaries and bodies).
//!
//! Per size and backend: a writer seeds the vault with N small chats plus one
//! of 1,000 messages (sealed as the engine seals them, pushed in batches),
//! and a reader device syncs it through the engine. Then, on the reader:
//!
//! - idle poll (`sync_now` with nothing new) vs the seed app's poll: list
//!   every chat id and timestamp, diff locally (object stores: a LIST of
//!   `rec/`; Supabase: `select chat, updated_at` from the records table via
//!   the gateway, cut at max rows 1,000, so rows past it look deleted);
//! - k changed chats written by the writer, then one `sync_now`;
//! - cold start to sidebar and opening the 1,000-message chat from the
//!   reader's replica, each in a child process beside a raw redb read of
//!   the same bytes; peak RSS (VmHWM) of a child holding the sidebar,
//!   beside an idle child;
//! - bulk import of `--import` chats through the engine (a loop of
//!   `save_chat`, then `sync_now` until the outbox is empty) vs raw puts of
//!   the same sealed bytes to the same server.
//!
//! - re-seal after a key rotation (`--reseal N`): N chats saved and pushed
//!   through the engine (the baseline: the same batched save + push as the
//!   bulk import), then the data key rotated and every chat re-sealed with
//!   `Engine::reseal_stale` in batches of 512, each pushed, as
//!   `ChatVault::reseal_stale` and `chatvault keys reseal` do; chats/s of
//!   both and their ratio.
//!
//! Requests and bytes are counted by the counting layers of
//! `chatvault-conformance` (see `common/servers.rs` for what each backend
//! counts). Round trips are how often the number of requests in flight rose
//! from zero.

mod common;
#[path = "common/servers.rs"]
mod servers;

use chatvault::core::engine::{Engine, EngineConfig};
use chatvault::core::{Clock, PutPrecondition, Replica};
use chatvault::{Chat, ChatId, DeviceId, Role};
use servers::{totals, SeedPoll, Server, Vault};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const CHILD: &str = "CHATVAULT_SCALE_CHILD";
/// Messages in the big chat opened from the replica.
const BIG_MESSAGES: usize = 1_000;

struct Options {
    chats: Vec<usize>,
    backends: Vec<String>,
    import: usize,
    ks: Vec<usize>,
    repeat: usize,
    keep: Option<PathBuf>,
    reseal: usize,
    only_reseal: bool,
    floor: u8,
}

fn parse_options() -> Options {
    let mut options = Options {
        chats: vec![1_000],
        backends: vec!["fs".into(), "s3".into(), "supabase".into()],
        import: 1_000,
        ks: vec![1, 100],
        repeat: 5,
        keep: None,
        reseal: 0,
        only_reseal: false,
        floor: 1,
    };
    let numbers = |value: &str| -> Vec<usize> {
        value
            .split(',')
            .map(|n| {
                n.trim()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("not a number: {n:?}"))
            })
            .collect()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--chats" => options.chats = numbers(&value()),
            "--backends" => {
                options.backends = value().split(',').map(|b| b.trim().to_owned()).collect()
            }
            "--import" => options.import = numbers(&value())[0],
            "--k" => options.ks = numbers(&value()),
            "--repeat" => options.repeat = numbers(&value())[0].max(1),
            "--keep-replicas" => options.keep = Some(PathBuf::from(value())),
            "--reseal" => options.reseal = numbers(&value())[0],
            "--only-reseal" => options.only_reseal = true,
            "--floor" => {
                options.floor = u8::try_from(numbers(&value())[0]).expect("a vault format")
            }
            // cargo bench passes --bench; filters are not used here.
            _ => {}
        }
    }
    options
}

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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(values: &[(&str, f64)]) {
    for (key, value) in values {
        println!("{key}={value}");
    }
}

/// The work of one child process: `mode|replica|key file|big chat|repeat`.
fn child(task: &str) {
    let parts: Vec<&str> = task.split('|').collect();
    let rt = runtime();
    rt.block_on(async { tokio::task::yield_now().await });
    match parts[0] {
        "idle" => {
            let (rss, hwm) = memory();
            report(&[("rss", rss), ("hwm", hwm)]);
        }
        "cold" => {
            let path = PathBuf::from(parts[1]);
            let cipher = common::unlock(&std::fs::read(parts[2]).expect("key file"));
            let big: ChatId = parts[3].parse().expect("chat id");
            let repeat: usize = parts[4].parse().expect("repeat");
            let scratch = tempfile::tempdir().expect("tempdir");
            let storage = common::storage(scratch.path());
            let (mut raw, mut cold, mut open, mut raw_open) = (vec![], vec![], vec![], vec![]);
            let mut n = 0;
            for _ in 0..repeat {
                let start = Instant::now();
                let replica = Replica::open(&path).expect("replica");
                let summaries = replica.summaries().expect("summaries");
                raw.push(start.elapsed().as_secs_f64() * 1e3);
                drop((summaries, replica));

                let start = Instant::now();
                let engine = rt.block_on(common::open_engine(
                    &path,
                    storage.clone(),
                    cipher.clone(),
                    32 << 20,
                ));
                let sidebar = engine.sidebar();
                cold.push(start.elapsed().as_secs_f64() * 1e3);
                n = sidebar.len();
                drop(sidebar);

                let start = Instant::now();
                let chat = rt.block_on(engine.load_full_chat(big)).expect("open chat");
                open.push(start.elapsed().as_secs_f64() * 1e3);
                assert_eq!(chat.message_count(), BIG_MESSAGES);
                drop(engine);

                let replica = Replica::open(&path).expect("replica");
                let start = Instant::now();
                let record = replica.record(big, true).expect("read");
                raw_open.push(start.elapsed().as_secs_f64() * 1e3);
                assert!(record.is_some_and(|r| r.body.is_some()), "body in replica");
            }
            report(&[
                ("raw_ms", median(raw)),
                ("cold_ms", median(cold)),
                ("open_ms", median(open)),
                ("raw_open_ms", median(raw_open)),
                ("n", n as f64),
            ]);
        }
        "rss" => {
            let path = PathBuf::from(parts[1]);
            let cipher = common::unlock(&std::fs::read(parts[2]).expect("key file"));
            let scratch = tempfile::tempdir().expect("tempdir");
            let storage = common::storage(scratch.path());
            let engine = rt.block_on(common::open_engine(&path, storage, cipher, 32 << 20));
            let (loaded, loaded_hwm) = memory();
            let sidebar = engine.sidebar();
            let (rss, hwm) = memory();
            report(&[
                ("loaded", loaded),
                ("loaded_hwm", loaded_hwm),
                ("rss", rss),
                ("hwm", hwm),
                ("n", sidebar.len() as f64),
            ]);
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

/// Requests, bytes up, bytes down, round trips, wall time.
#[derive(Clone, Copy, Debug, Default)]
struct Traffic {
    requests: u64,
    sent: u64,
    received: u64,
    trips: u64,
    ms: f64,
}

impl Traffic {
    fn of(vault: &Vault, elapsed: Duration) -> Self {
        let (requests, sent, received) = totals(&vault.counter);
        Self {
            requests,
            sent,
            received,
            trips: vault.trips.get(),
            ms: elapsed.as_secs_f64() * 1e3,
        }
    }
}

/// Everything measured for one backend at one size.
#[derive(Default)]
struct Column {
    chats: usize,
    seed_s: f64,
    first_sync_s: f64,
    idle: Traffic,
    idle_listed: u64,
    seed_poll: SeedPoll,
    local: bool,
    changes: Vec<(usize, Traffic)>,
    cold: BTreeMap<String, f64>,
    rss: BTreeMap<String, f64>,
    idle_process: BTreeMap<String, f64>,
    import: Option<(usize, f64, f64)>,
}

async fn seed(vault: &Vault, records: Vec<chatvault::core::SealedRecord>) {
    let batch = vault.writer.capabilities().max_batch.max(1);
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let chunk: Vec<_> = records
            .by_ref()
            .take(batch)
            .map(|r| (r, PutPrecondition::Absent))
            .collect();
        for result in vault.writer.put_batch(chunk).await {
            result.expect("seed put");
        }
    }
}

async fn open_reader(vault: &Vault, path: &Path, key_file: &[u8]) -> Engine {
    let cipher = common::unlock(key_file);
    let config = EngineConfig::new(cipher.vault(), DeviceId(1));
    Engine::open(
        vault.reader.clone(),
        Replica::open(path).expect("replica"),
        cipher,
        config,
    )
    .await
    .expect("reader engine")
}

async fn measure(server: &Server, chats: usize, options: &Options, run: &str) -> Column {
    let mut column = Column {
        chats,
        ..Column::default()
    };
    let vault = server
        .vault(&format!("{run}-scale-{chats}"), false)
        .await
        .expect("vault");
    column.local = vault.is_local();
    let (cipher, key_file) = common::new_vault_key_at(options.floor);
    let clock = Clock::new(DeviceId(2));

    let start = Instant::now();
    let mut all: Vec<Chat> = (0..chats)
        .map(|i| common::sample_chat(&clock, i, 2, 60))
        .collect();
    let big = common::sample_chat(&clock, usize::MAX, BIG_MESSAGES, 200);
    let big_id = big.id;
    let records = all
        .iter()
        .chain(std::iter::once(&big))
        .map(|chat| common::seal(&cipher, chat, 1))
        .collect();
    seed(&vault, records).await;
    column.seed_s = start.elapsed().as_secs_f64();
    eprintln!("  seeded {chats} chats in {:.1} s", column.seed_s);

    let dir = tempfile::tempdir().expect("tempdir");
    let replica_path = dir.path().join("reader.redb");
    let key_path = dir.path().join("key.age");
    std::fs::write(&key_path, &key_file).expect("key file");
    let reader = open_reader(&vault, &replica_path, &key_file).await;
    let start = Instant::now();
    reader.sync_now().await.expect("first sync");
    column.first_sync_s = start.elapsed().as_secs_f64();
    assert_eq!(reader.chat_count(), chats + 1, "the reader sees every chat");
    eprintln!("  first sync in {:.1} s", column.first_sync_s);

    // Idle poll: the second one after the first sync, so nothing is left to
    // settle; then the seed-style listing twice (the first is its previous
    // state).
    reader.sync_now().await.expect("settle");
    vault.reset();
    let start = Instant::now();
    let idle = reader.sync_now().await.expect("idle poll");
    column.idle = Traffic::of(&vault, start.elapsed());
    column.idle_listed = vault.listed.load(Ordering::SeqCst);
    assert_eq!(idle.pulled, 0, "an idle poll pulls nothing");
    vault.seed_style_poll().await.expect("seed-style poll");
    column.seed_poll = vault.seed_style_poll().await.expect("seed-style poll");

    // k changed chats, each a new version written by the other device.
    let mut next = 0;
    for &k in &options.ks {
        let k = k.min(all.len().saturating_sub(next));
        if k == 0 {
            continue;
        }
        let batch: Vec<_> = all[next..next + k]
            .iter_mut()
            .map(|chat| {
                chat.add_message(Role::User, "one more question", clock.tick());
                (common::seal(&cipher, chat, 2), PutPrecondition::Version(1))
            })
            .collect();
        next += k;
        for result in vault.writer.put_batch(batch).await {
            result.expect("changed chat");
        }
        vault.reset();
        let start = Instant::now();
        let pulled = reader.sync_now().await.expect("poll with changes");
        column
            .changes
            .push((k, Traffic::of(&vault, start.elapsed())));
        assert_eq!(pulled.pulled, k, "the reader pulls the k changed chats");
    }

    // The big chat's body into the replica, then close the replica so the
    // children can open it.
    let opened = reader.load_full_chat(big_id).await.expect("big chat");
    assert_eq!(opened.message_count(), BIG_MESSAGES);
    drop((opened, reader));
    let replica = replica_path.display().to_string();
    let key = key_path.display().to_string();
    if let Some(keep) = &options.keep {
        std::fs::create_dir_all(keep).expect("keep folder");
        let stem = keep.join(format!("{}-{chats}", server.name().replace(' ', "-")));
        std::fs::copy(&replica_path, stem.with_extension("redb")).expect("copy replica");
        std::fs::copy(&key_path, stem.with_extension("key")).expect("copy key");
        std::fs::write(stem.with_extension("chat"), big_id.to_string()).expect("chat id");
    }
    column.cold = run_child(format!("cold|{replica}|{key}|{big_id}|{}", options.repeat));
    column.rss = run_child(format!("rss|{replica}|{key}"));
    column.idle_process = run_child("idle".into());
    assert_eq!(column.rss["n"] as usize, chats + 1, "sidebar size");
    drop(all);

    if options.import > 0 {
        column.import =
            Some(import(server, options.import, &format!("{run}-import-{chats}")).await);
    }
    column
}

/// Bulk import through the engine vs raw puts of the same sealed bytes:
/// (chats, engine seconds, raw seconds).
async fn import(server: &Server, n: usize, name: &str) -> (usize, f64, f64) {
    let vault = server.vault(name, true).await.expect("import vault");
    let (cipher, key_file) = common::new_vault_key();
    let clock = Clock::new(DeviceId(3));
    let chats: Vec<Chat> = (0..n)
        .map(|i| common::sample_chat(&clock, i, 2, 60))
        .collect();
    // The raw side writes the same kind of chats, sealed the same way, under
    // other ids (so both land on an empty namespace).
    let raw_records = (0..n)
        .map(|i| common::seal(&cipher, &common::sample_chat(&clock, i, 2, 60), 1))
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let engine_cipher = common::unlock(&key_file);
    let config = EngineConfig::new(engine_cipher.vault(), DeviceId(3));
    let engine = Engine::open(
        vault.writer.clone(),
        Replica::open(dir.path().join("import.redb")).expect("replica"),
        engine_cipher,
        config,
    )
    .await
    .expect("import engine");
    let start = Instant::now();
    // Batches as `ChatVault::import_chats` saves them: one replica
    // transaction per batch.
    let mut chats = chats.into_iter().peekable();
    while chats.peek().is_some() {
        let batch: Vec<Chat> = chats.by_ref().take(chatvault::IMPORT_BATCH).collect();
        engine.save_chats(batch).await.expect("save a batch");
    }
    let mut rounds = 0;
    while engine.pending().expect("pending") > 0 {
        engine.sync_now().await.expect("push");
        rounds += 1;
        assert!(rounds < 100, "the import's outbox does not drain");
    }
    let engine_s = start.elapsed().as_secs_f64();
    let raw_s = vault
        .raw_puts(raw_records)
        .await
        .expect("raw puts")
        .as_secs_f64();
    eprintln!("  import of {n}: engine {engine_s:.2} s, raw {raw_s:.2} s");
    (n, engine_s, raw_s)
}

/// Chats re-sealed per [`Engine::reseal_stale`] call (as the CLI does).
const RESEAL_BATCH: usize = 512;

/// Re-seal throughput: N chats saved and pushed through the engine (the
/// baseline), then the key rotated and all of them re-sealed and pushed.
/// Returns (chats, baseline seconds, re-seal seconds).
async fn reseal(server: &Server, n: usize, name: &str) -> (usize, f64, f64) {
    let vault = server.vault(name, true).await.expect("re-seal vault");
    let (_, key_file) = common::new_vault_key();
    let clock = Clock::new(DeviceId(4));
    let chats: Vec<Chat> = (0..n)
        .map(|i| common::sample_chat(&clock, i, 2, 60))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let cipher = common::unlock(&key_file);
    let config = EngineConfig::new(cipher.vault(), DeviceId(4));
    let engine = Engine::open(
        vault.writer.clone(),
        Replica::open(dir.path().join("reseal.redb")).expect("replica"),
        cipher.clone(),
        config,
    )
    .await
    .expect("re-seal engine");
    let drain = |engine: &Engine| {
        let engine = engine.clone();
        async move {
            let mut rounds = 0;
            while engine.pending().expect("pending") > 0 {
                engine.push().await.expect("push");
                rounds += 1;
                assert!(rounds < 100, "the outbox does not drain");
            }
        }
    };

    let start = Instant::now();
    let mut chats = chats.into_iter().peekable();
    while chats.peek().is_some() {
        let batch: Vec<Chat> = chats.by_ref().take(chatvault::IMPORT_BATCH).collect();
        engine.save_chats(batch).await.expect("save a batch");
    }
    drain(&engine).await;
    let baseline_s = start.elapsed().as_secs_f64();

    let key = cipher.rotate();
    let start = Instant::now();
    loop {
        let report = engine
            .reseal_stale(key, RESEAL_BATCH)
            .await
            .expect("re-seal a batch");
        engine.push().await.expect("push the batch");
        if report.remaining == 0 {
            assert_eq!((report.done, report.total), (n, n), "{report:?}");
            break;
        }
    }
    drain(&engine).await;
    let reseal_s = start.elapsed().as_secs_f64();
    assert_eq!(
        engine.referenced_key_ids().await.expect("keys"),
        [key].into_iter().collect(),
        "every record re-sealed"
    );
    eprintln!("  re-seal of {n}: baseline {baseline_s:.2} s, re-seal {reseal_s:.2} s");
    (n, baseline_s, reseal_s)
}

fn print_reseal(server: &Server, (n, baseline, reseal): (usize, f64, f64)) {
    println!(
        "\n#### {}: re-seal after a key rotation, {n} chats\n",
        server.name()
    );
    println!("| measure | time | chats/s |\n|---|---|---|");
    println!(
        "| save + push of {n} chats through the engine (baseline, batches of {}) | {baseline:.2} s | {:.0} |",
        chatvault::IMPORT_BATCH,
        n as f64 / baseline
    );
    println!(
        "| rotate, then `reseal_stale` in batches of {RESEAL_BATCH} + push each, to completion | {reseal:.2} s | {:.0} |",
        n as f64 / reseal
    );
    println!(
        "| re-seal vs baseline throughput | {:.0} % | |",
        baseline / reseal * 100.0
    );
}

fn bytes(n: u64) -> String {
    match n {
        0..=9_999 => format!("{n} B"),
        10_000..=9_999_999 => format!("{:.1} kB", n as f64 / 1e3),
        _ => format!("{:.1} MB", n as f64 / 1e6),
    }
}

fn traffic(t: &Traffic) -> String {
    format!(
        "{} req · {} up / {} down · {} round trip{} · {:.1} ms",
        t.requests,
        bytes(t.sent),
        bytes(t.received),
        t.trips,
        if t.trips == 1 { "" } else { "s" },
        t.ms
    )
}

fn print_table(server: &Server, columns: &[Column], options: &Options) {
    println!("\n### {}\n", server.name());
    println!("Served by {}.\n", server.describe());
    let mut header = "| measure |".to_owned();
    let mut rule = "|---|".to_owned();
    for column in columns {
        header.push_str(&format!(" {} chats |", column.chats));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    let row = |label: &str, cell: &dyn Fn(&Column) -> String| {
        let mut line = format!("| {label} |");
        for column in columns {
            line.push_str(&format!(" {} |", cell(column)));
        }
        println!("{line}");
    };
    row(
        "seed N chats + one of 1,000 messages (writer) / first sync of the reader",
        &|c| format!("{:.1} s / {:.1} s", c.seed_s, c.first_sync_s),
    );
    row("idle poll, chatvault (`sync_now`, nothing new)", &|c| {
        traffic(&c.idle)
    });
    row(
        "idle poll, seed-style baseline (list every id + timestamp, diff)",
        &|c| {
            format!(
                "{} req · {} up / {} down",
                c.seed_poll.requests,
                bytes(c.seed_poll.sent),
                bytes(c.seed_poll.received)
            )
        },
    );
    row("idle poll: chatvault vs baseline", &|c| {
        let ours = c.idle.sent + c.idle.received;
        let theirs = c.seed_poll.sent + c.seed_poll.received;
        if c.local || theirs == 0 {
            format!(
                "{} vs {} requests; {} vs {} entries listed",
                c.idle.requests, c.seed_poll.requests, c.idle_listed, c.seed_poll.seen
            )
        } else {
            format!(
                "{} vs {} requests; bytes {:.1}× fewer",
                c.idle.requests,
                c.seed_poll.requests,
                theirs as f64 / ours.max(1) as f64
            )
        }
    });
    row(
        "seed-style baseline: chats seen / existing → taken as deleted",
        &|c| {
            let existing = c.chats as u64 + 1;
            format!(
                "{} / {} → {} (diff against the previous listing: {} changed, {} missing)",
                c.seed_poll.seen,
                existing,
                existing.saturating_sub(c.seed_poll.seen),
                c.seed_poll.changed,
                c.seed_poll.missing
            )
        },
    );
    for (i, &k) in options.ks.iter().enumerate() {
        row(&format!("k = {k} changed chats, one `sync_now`"), &|c| {
            c.changes
                .get(i)
                .map_or("—".into(), |(k, t)| format!("{}; k={k}", traffic(t)))
        });
    }
    row(
        "cold start to sidebar from the replica vs raw redb read of the same sealed summaries",
        &|c| {
            format!(
                "{:.1} ms vs {:.1} ms = {:.1}×",
                c.cold["cold_ms"],
                c.cold["raw_ms"],
                c.cold["cold_ms"] / c.cold["raw_ms"]
            )
        },
    );
    row(
        "open the 1,000-message chat vs raw redb read of its sealed record",
        &|c| {
            format!(
                "{:.2} ms vs {:.3} ms = {:.0}×",
                c.cold["open_ms"],
                c.cold["raw_open_ms"],
                c.cold["open_ms"] / c.cold["raw_open_ms"]
            )
        },
    );
    row(
        "bulk import through the engine vs raw puts of the same bytes (goal ≥ 80 %)",
        &|c| {
            c.import.map_or("not run".into(), |(n, engine, raw)| {
                format!(
                    "{n} chats: {:.2} s vs {:.2} s = {:.0} %",
                    engine,
                    raw,
                    raw / engine * 100.0
                )
            })
        },
    );
    row(
        "peak RSS of a process holding the sidebar (VmHWM) vs idle process",
        &|c| {
            format!(
            "{:.1} MiB vs {:.1} MiB (engine open: {:.1} MiB resident, then `sidebar()` copy: {:.1} MiB)",
            c.rss["hwm"], c.idle_process["rss"], c.rss["loaded"], c.rss["rss"]
        )
        },
    );
    row("history growth (same chats, 10× the edits)", &|_| {
        "see `backends/object-store/benches/history.rs`".into()
    });
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let rustc = Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "rustc unknown".into());
    format!("{nproc} CPUs, {memory} memory, {rustc}")
}

fn main() {
    if let Ok(task) = std::env::var(CHILD) {
        child(&task);
        return;
    }
    let options = parse_options();
    println!("## chatvault scale benchmark\n");
    println!("Machine: {}.", machine());
    if options.only_reseal {
        println!("Re-seal only: {} chats.", options.reseal);
    } else {
        println!(
            "Sizes: {:?} chats; k = {:?}; bulk import {} chats; re-seal {} chats; medians of {} \
             in the cold-start child.",
            options.chats, options.ks, options.import, options.reseal, options.repeat
        );
    }
    let rt = runtime();
    let run = chatvault_test_services::run_id();
    for backend in &options.backends {
        let server = rt.block_on(async {
            match backend.as_str() {
                "fs" => Ok(Server::folder()),
                "s3" => Server::s3().await,
                "supabase" => Server::supabase().await,
                other => panic!("unknown backend {other:?} (fs, s3, supabase)"),
            }
        });
        let server = match server {
            Ok(server) => server,
            Err(e) if chatvault_conformance::services_required() => {
                panic!("CI is set and backend {backend} is missing: {e}")
            }
            Err(e) => {
                println!("\n### {backend}\n\nNOT RUN: {e}");
                continue;
            }
        };
        eprintln!("{}: {}", server.name(), server.describe());
        if !options.only_reseal {
            let mut columns = Vec::new();
            for &chats in &options.chats {
                eprintln!("{} at {chats} chats", server.name());
                columns.push(rt.block_on(measure(&server, chats, &options, &run)));
            }
            print_table(&server, &columns, &options);
        }
        if options.reseal > 0 {
            eprintln!("{}: re-seal of {} chats", server.name(), options.reseal);
            let figures = rt.block_on(reseal(&server, options.reseal, &format!("{run}-reseal")));
            print_reseal(&server, figures);
        }
        if let Server::S3(fixture) = &server {
            rt.block_on(fixture.stop());
        }
    }
}
