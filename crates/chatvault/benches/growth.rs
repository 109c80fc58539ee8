//! History growth through the public API (issue 21): what a new device's
//! first sync and an idle poll cost after 300 and after 4,000 edits of the
//! same 200 chats, one push per edit, for each way an application syncs:
//!
//! - **background sync**: `start_sync`, each edit pushed by the worker;
//! - **`sync_now` only**: no background sync, one `sync_now` per edit (an
//!   app syncing on its own events, every `chatvault` command);
//! - **no maintenance**: `sync_now` only with automatic maintenance off,
//!   which is what a `sync_now`-only client did before issue 21.
//!
//! ```text
//! cargo bench -p chatvault --features fs --bench growth             # folder
//! cargo bench -p chatvault --features fs --bench growth -- --s3     # and S3 (fixture or stand-in)
//! cargo bench -p chatvault --features fs --bench growth -- --edits 300,1000 --runs 3
//! cargo bench -p chatvault --features fs --bench growth -- --modes sync-now,off
//! ```
//!
//! Time is compressed as in `backends/object-store/benches/history.rs`: a
//! claim delay of 100 ms, a compaction horizon of 250 ms and maintenance
//! asked for every 200 ms (real vaults: 5 min, 1 h and 10 min); the
//! backend's entry threshold is its default (256). Edits land faster than
//! the horizon, so before measuring, the bench waits out the horizon and
//! syncs once more, as a client would on a vault whose history is older
//! than an hour. Where a vault stands in its compaction cycle (0 to ~256
//! entries after the newest snapshot) moves single runs a lot, so each row
//! is the median of `--runs` vaults (default 5), figure by figure. Prints
//! markdown tables; each figure is compared with its figure at the
//! smallest edit count.

use chatvault::{ChatId, ChatVault, DynStorage};
use chatvault_conformance::layers::{CountingObjectStore, RequestCounter};
use chatvault_object_store::{CompactOptions, MaintenancePolicy, ObjectStoreOptions};
use chatvault_test_services::s3::S3Fixture;
use object_store::ObjectStore;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHATS: usize = 200;
const CLAIM_DELAY: Duration = Duration::from_millis(100);
const HORIZON: Duration = Duration::from_millis(250);
const MAINTENANCE_EVERY: Duration = Duration::from_millis(200);
const IDLE_POLLS: usize = 51;
const PASSPHRASE: &str = "growth bench";

fn options() -> ObjectStoreOptions {
    ObjectStoreOptions::default()
        .with_max_claim_delay(CLAIM_DELAY)
        .with_maintenance(
            MaintenancePolicy::default()
                .with_min_interval(Duration::ZERO)
                .with_compact(CompactOptions::default().with_min_age(HORIZON)),
        )
}

/// How the writing device syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Background,
    SyncNow,
    NoMaintenance,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Background => "background sync",
            Self::SyncNow => "`sync_now` only",
            Self::NoMaintenance => "`sync_now` only, maintenance off (before issue 21)",
        }
    }
}

/// One vault on one server; each `open` is a new handle (a device).
enum Backend {
    Folder(PathBuf),
    S3 {
        store: Arc<dyn ObjectStore>,
        prefix: String,
    },
}

impl Backend {
    fn open(&self, counter: RequestCounter) -> DynStorage {
        match self {
            Self::Folder(dir) => Arc::new(
                chatvault_fs::FsStorageBuilder::new(dir)
                    .options(options())
                    .fsync(false)
                    .layer(move |store| Arc::new(CountingObjectStore::new(store, counter.clone())))
                    .open()
                    .expect("open the folder vault"),
            ),
            Self::S3 { store, prefix } => Arc::new(chatvault_s3::from_store(
                Arc::new(CountingObjectStore::new(Arc::clone(store), counter)),
                prefix,
                options(),
            )),
        }
    }
}

fn device(storage: DynStorage, replica: PathBuf) -> chatvault::ChatVaultBuilder {
    ChatVault::builder()
        .storage(storage)
        .replica_path(replica)
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
}

/// `sync_now`, again while it fails retriably: with the claim delay
/// compressed to 100 ms, a put on a loaded machine may outlive its claim
/// deadline (the change stays queued, as on a slow network).
async fn sync(vault: &ChatVault, what: &str) {
    let mut tries = 0;
    loop {
        match vault.sync_now().await {
            Ok(_) => return,
            Err(e) if e.is_retriable() && tries < 20 => tries += 1,
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Figures {
    first_sync_ms: f64,
    first_sync_requests: u64,
    idle_ms: f64,
    idle_requests: f64,
    edit_ms: f64,
}

async fn run(backend: &Backend, replicas: &std::path::Path, mode: Mode, edits: usize) -> Figures {
    let writer_storage = backend.open(RequestCounter::new());
    let every = match mode {
        Mode::NoMaintenance => None,
        Mode::Background | Mode::SyncNow => Some(MAINTENANCE_EVERY),
    };
    let writer = device(writer_storage, replicas.join("writer.redb"))
        .auto_maintenance(every)
        .open()
        .await
        .expect("open the writer");
    let mut chats: Vec<ChatId> = Vec::with_capacity(CHATS);
    for i in 0..CHATS {
        chats.push(
            writer
                .new_chat(format!("chat {i}"))
                .await
                .expect("new chat")
                .id,
        );
    }
    sync(&writer, "push the chats").await;
    if mode == Mode::Background {
        writer
            .start_sync(Duration::from_millis(50))
            .expect("background sync");
    }
    let started = Instant::now();
    for i in 0..edits {
        writer
            .rename(chats[i % CHATS], format!("edit {i}"))
            .await
            .expect("rename");
        match mode {
            Mode::Background => {
                // One push per edit, by the worker (woken by the save).
                while writer.pending_changes().expect("pending") > 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Mode::SyncNow | Mode::NoMaintenance => {
                sync(&writer, "sync").await;
            }
        }
    }
    let edit_ms = started.elapsed().as_secs_f64() * 1e3 / edits as f64;
    // The history is now older than the horizon, as a long-lived vault's
    // is: one more sync (a poll of the worker, or one `sync_now`).
    tokio::time::sleep(HORIZON + Duration::from_millis(100)).await;
    match mode {
        Mode::Background => {
            tokio::time::sleep(Duration::from_millis(150)).await;
            writer.stop_sync().await;
        }
        Mode::SyncNow | Mode::NoMaintenance => {
            sync(&writer, "sync").await;
        }
    }
    let _ = writer.settle_maintenance(Duration::from_secs(600)).await;
    writer.close().await;

    // A new device: its first sync, then idle polls. Its own maintenance
    // is off so that only the writer's history is measured.
    let counter = RequestCounter::new();
    let fresh = device(backend.open(counter.clone()), replicas.join("fresh.redb"))
        .auto_maintenance(None)
        .open()
        .await
        .expect("open the new device");
    counter.reset();
    let started = Instant::now();
    sync(&fresh, "first sync").await;
    let first_sync_ms = started.elapsed().as_secs_f64() * 1e3;
    let first_sync_requests = counter.total();
    assert_eq!(fresh.sidebar().len(), CHATS);
    counter.reset();
    let mut times = Vec::with_capacity(IDLE_POLLS);
    for _ in 0..IDLE_POLLS {
        let started = Instant::now();
        let report = fresh.sync_now().await.expect("idle poll");
        times.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(report.pulled, 0);
    }
    times.sort_by(f64::total_cmp);
    let idle_requests = counter.total() as f64 / IDLE_POLLS as f64;
    fresh.close().await;
    Figures {
        first_sync_ms,
        first_sync_requests,
        idle_ms: times[times.len() / 2],
        idle_requests,
        edit_ms,
    }
}

/// The median of each figure over several runs.
fn median(runs: &[Figures]) -> Figures {
    let pick = |f: fn(&Figures) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    Figures {
        first_sync_ms: pick(|f| f.first_sync_ms),
        first_sync_requests: pick(|f| f.first_sync_requests as f64) as u64,
        idle_ms: pick(|f| f.idle_ms),
        idle_requests: pick(|f| f.idle_requests),
        edit_ms: pick(|f| f.edit_ms),
    }
}

fn ratio(value: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}×", value / base)
    } else {
        "–".into()
    }
}

fn table(server: &str, mode: Mode, runs: usize, rows: &[(usize, Figures)]) {
    println!(
        "\n### {server}, {}: {CHATS} chats, one push per edit, median of {runs} vaults\n",
        mode.name()
    );
    println!(
        "| edits | new device: first sync | its requests | idle poll (median) | idle requests | time per edit |"
    );
    println!("|---|---|---|---|---|---|");
    let Some(&(_, base)) = rows.first() else {
        return;
    };
    for (edits, f) in rows {
        println!(
            "| {edits} | {:.1} ms ({}) | {} ({}) | {:.3} ms ({}) | {:.1} ({}) | {:.1} ms |",
            f.first_sync_ms,
            ratio(f.first_sync_ms, base.first_sync_ms),
            f.first_sync_requests,
            ratio(
                f.first_sync_requests as f64,
                base.first_sync_requests as f64
            ),
            f.idle_ms,
            ratio(f.idle_ms, base.idle_ms),
            f.idle_requests,
            ratio(f.idle_requests, base.idle_requests),
            f.edit_ms,
        );
    }
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let edits: Vec<usize> = arg_value(&args, "--edits")
        .map(|list| {
            list.split(',')
                .map(|n| n.trim().parse().expect("--edits: numbers"))
                .collect()
        })
        .unwrap_or_else(|| vec![300, 4_000]);
    let modes: Vec<Mode> = match arg_value(&args, "--modes").as_deref() {
        Some(list) => list
            .split(',')
            .map(|m| match m.trim() {
                "background" => Mode::Background,
                "sync-now" => Mode::SyncNow,
                "off" => Mode::NoMaintenance,
                other => panic!("--modes: background, sync-now or off, not {other}"),
            })
            .collect(),
        None => vec![Mode::Background, Mode::SyncNow, Mode::NoMaintenance],
    };
    let runs: usize = arg_value(&args, "--runs")
        .map(|n| n.parse().expect("--runs: a number"))
        .unwrap_or(5)
        .max(1);
    let s3 = args.iter().any(|a| a == "--s3");
    let fs = !args.iter().any(|a| a == "--s3-only");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        println!(
            "## History growth through the public API (time compressed: claim delay {CLAIM_DELAY:?}, horizon {HORIZON:?}, maintenance every {MAINTENANCE_EVERY:?})"
        );
        if fs {
            for &mode in &modes {
                let mut rows = Vec::new();
                for &n in &edits {
                    let mut figures = Vec::with_capacity(runs);
                    for _ in 0..runs {
                        let dir = tempfile::tempdir().expect("temp dir");
                        let backend = Backend::Folder(dir.path().join("server"));
                        figures.push(run(&backend, dir.path(), mode, n).await);
                    }
                    rows.push((n, median(&figures)));
                }
                table("local folder (fsync off)", mode, runs, &rows);
            }
        }
        if s3 {
            match S3Fixture::start().await {
                Ok(fixture) => {
                    println!("\nS3: {}", fixture.describe());
                    for &mode in &modes {
                        let mut rows = Vec::new();
                        for &n in &edits {
                            let mut figures = Vec::with_capacity(runs);
                            for r in 0..runs {
                                let location = fixture
                                    .vault(&format!("growth-{mode:?}-{n}-{r}"))
                                    .await
                                    .expect("vault location");
                                let store = fixture
                                    .amazon_s3_builder()
                                    .with_bucket_name(&location.bucket)
                                    .build()
                                    .expect("S3 client");
                                let backend = Backend::S3 {
                                    store: Arc::new(store),
                                    prefix: location.prefix,
                                };
                                let dir = tempfile::tempdir().expect("temp dir");
                                figures.push(run(&backend, dir.path(), mode, n).await);
                            }
                            rows.push((n, median(&figures)));
                        }
                        table("S3", mode, runs, &rows);
                    }
                    fixture.stop().await;
                }
                Err(e) => println!("\nS3 skipped: no S3 service ({e})"),
            }
        }
    });
}
