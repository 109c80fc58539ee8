//! History growth with automatic compaction: what a vault costs after 1k,
//! 10k (and, with `--large`, 100k) edits, each edit one put, one sync round
//! and `Storage::maintain` (as the engine runs it after sync rounds), on the
//! fs backend and on S3 (the conformance fixture: `CHATVAULT_TEST_S3_ENDPOINT`,
//! else a container, else the in-process stand-in).
//!
//! ```text
//! cargo bench -p chatvault-object-store --bench history               # 1k, 10k; fs and s3
//! cargo bench -p chatvault-object-store --bench history -- --large    # adds 100k
//! cargo bench -p chatvault-object-store --bench history -- --fs-only
//! ```
//!
//! Time is compressed: the claim delay is 100 ms and the compaction horizon
//! 250 ms (real vaults: 5 min and 1 h), and maintenance may run after every
//! round (the engine: at most every 10 minutes). Edits land faster than the
//! horizon, so before measuring, the bench waits out the horizon and runs
//! one more round, as the engine would on a vault whose history is older
//! than an hour. Prints markdown tables; each figure is compared with its
//! 1k figure. The last table compares snapshot formats at 100k chats.

use bytes::Bytes;
use chatvault_conformance::layers::{CountingObjectStore, RequestCounter};
use chatvault_core::{
    ChatId, Cursor, MaintenanceBudget, Part, PutPrecondition, SealedRecord, Storage,
};
use chatvault_fs::FsStorageBuilder;
use chatvault_object_store::{
    CompactOptions, MaintenancePolicy, ObjectStoreOptions, ObjectStoreStorage,
};

use chatvault_test_services::s3::S3Fixture;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHATS: usize = 100;
const SUMMARY: usize = 200;
const BODY: usize = 2048;
const CLAIM_DELAY: Duration = Duration::from_millis(100);
const HORIZON: Duration = Duration::from_millis(250);
const IDLE_POLLS: usize = 101;

fn options() -> ObjectStoreOptions {
    ObjectStoreOptions::default()
        .with_max_claim_delay(CLAIM_DELAY)
        .with_maintenance(
            MaintenancePolicy::default()
                .with_min_interval(Duration::ZERO)
                .with_compact(CompactOptions::default().with_min_age(HORIZON)),
        )
}

/// One vault on one backend: handles opened with request counting.
trait Backend {
    /// A new handle (a device) on the vault, counting into `counter`.
    fn open(&self, counter: RequestCounter) -> Arc<dyn Storage>;
    /// The raw store and the vault's prefix, to sum stored bytes.
    fn raw(&self) -> (Arc<dyn ObjectStore>, Path);
}

struct Fs {
    dir: tempfile::TempDir,
}

impl Backend for Fs {
    fn open(&self, counter: RequestCounter) -> Arc<dyn Storage> {
        let storage = FsStorageBuilder::new(self.dir.path())
            .options(options())
            .fsync(false)
            .layer(move |store| Arc::new(CountingObjectStore::new(store, counter.clone())))
            .open()
            .expect("open the folder vault");
        Arc::new(storage)
    }

    fn raw(&self) -> (Arc<dyn ObjectStore>, Path) {
        let store = object_store::local::LocalFileSystem::new_with_prefix(self.dir.path())
            .expect("folder store");
        (Arc::new(store), Path::default())
    }
}

struct S3 {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl Backend for S3 {
    fn open(&self, counter: RequestCounter) -> Arc<dyn Storage> {
        let store = Arc::new(CountingObjectStore::new(Arc::clone(&self.store), counter));
        Arc::new(chatvault_s3::from_store(store, &self.prefix, options()))
    }

    fn raw(&self) -> (Arc<dyn ObjectStore>, Path) {
        (Arc::clone(&self.store), Path::from(self.prefix.as_str()))
    }
}

fn record(chat: ChatId, version: u64) -> SealedRecord {
    let fill = |len: usize, seed: u64| -> Bytes {
        (0..len)
            .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    };
    SealedRecord {
        chat,
        version,
        deleted: false,
        summary: fill(SUMMARY, version),
        body: Some(fill(BODY, version + 7)),
    }
}

/// One sync round of a device: the feed drained from its cursor.
async fn sync_round(storage: &dyn Storage, cursor: &mut Cursor) -> usize {
    let mut seen = 0;
    loop {
        let page = storage.changes(cursor, 500).await.expect("changes");
        seen += page.changes.len();
        *cursor = page.cursor;
        if !page.has_more {
            return seen;
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Figures {
    idle_ms: f64,
    idle_requests: f64,
    bootstrap_ms: f64,
    bootstrap_requests: u64,
    bytes: u64,
    compactions: u64,
}

async fn stored_bytes(backend: &dyn Backend) -> u64 {
    let (store, prefix) = backend.raw();
    let listed: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .expect("list the vault");
    listed.iter().map(|m| m.size).sum()
}

async fn run(backend: &dyn Backend, edits: usize) -> Figures {
    let counter = RequestCounter::new();
    let writer = backend.open(counter.clone());
    let chats: Vec<ChatId> = (0..CHATS).map(|_| ChatId::new()).collect();
    let mut versions = vec![0u64; CHATS];
    let mut cursor = Cursor::start();
    let mut compactions = 0;
    for edit in 0..edits {
        let i = edit % CHATS;
        let pre = match versions[i] {
            0 => PutPrecondition::Absent,
            v => PutPrecondition::Version(v),
        };
        let mine = record(chats[i], versions[i] + 1);
        let mut retried = false;
        loop {
            match writer.put(mine.clone(), pre).await {
                Ok(()) => break,
                Err(e) if e.is_retriable() => retried = true,
                // A put that gave up past its deadline may still have landed
                // (docs/design.md §5.3): the retry then conflicts with our
                // own record, which counts as done, as the engine treats it.
                Err(e @ chatvault_core::Error::Conflict { .. }) if retried => {
                    let stored = writer
                        .get(&[chats[i]], Part::Body)
                        .await
                        .expect("get after a conflict");
                    assert!(
                        stored.first() == Some(&mine),
                        "put: {e}, and the stored record is not ours"
                    );
                    break;
                }
                Err(e) => panic!("put: {e}"),
            }
        }
        versions[i] += 1;
        sync_round(writer.as_ref(), &mut cursor).await;
        match writer.maintain(MaintenanceBudget::default()).await {
            Ok(report) => compactions += u64::from(report.ran),
            Err(e) if e.is_retriable() => {}
            Err(e) => panic!("maintain: {e}"),
        }
    }
    // The history is now older than the horizon, as a long-lived vault's is.
    tokio::time::sleep(HORIZON + Duration::from_millis(100)).await;
    sync_round(writer.as_ref(), &mut cursor).await;
    let report = writer
        .maintain(MaintenanceBudget::default())
        .await
        .expect("maintain");
    compactions += u64::from(report.ran);

    // Idle poll of a device at the head.
    let idle_counter = RequestCounter::new();
    let reader = backend.open(idle_counter.clone());
    let mut reader_cursor = Cursor::start();
    sync_round(reader.as_ref(), &mut reader_cursor).await;
    idle_counter.reset();
    let mut times = Vec::with_capacity(IDLE_POLLS);
    for _ in 0..IDLE_POLLS {
        let started = Instant::now();
        let page = reader.changes(&reader_cursor, 500).await.expect("poll");
        times.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(page.changes.is_empty());
    }
    times.sort_by(f64::total_cmp);
    let idle_requests = idle_counter.total() as f64 / IDLE_POLLS as f64;

    // A new device: open, first sync, sidebar.
    let boot_counter = RequestCounter::new();
    let started = Instant::now();
    let fresh = backend.open(boot_counter.clone());
    let mut fresh_cursor = Cursor::start();
    let seen = sync_round(fresh.as_ref(), &mut fresh_cursor).await;
    let sidebar = fresh.get(&chats, Part::Summary).await.expect("sidebar");
    let bootstrap_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(seen >= CHATS && sidebar.len() == CHATS);

    Figures {
        idle_ms: times[times.len() / 2],
        idle_requests,
        bootstrap_ms,
        bootstrap_requests: boot_counter.total(),
        bytes: stored_bytes(backend).await,
        compactions,
    }
}

fn ratio(value: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}×", value / base)
    } else {
        "–".into()
    }
}

fn table(name: &str, rows: &[(usize, Figures)]) {
    println!("\n### {name}: {CHATS} chats, one put + sync round + maintain per edit\n");
    println!(
        "| edits | compactions | idle poll median | idle requests | new device | new-device requests | bytes stored |"
    );
    println!("|---|---|---|---|---|---|---|");
    let Some(&(_, base)) = rows.first() else {
        return;
    };
    for (edits, f) in rows {
        println!(
            "| {edits} | {} | {:.3} ms ({}) | {:.1} ({}) | {:.1} ms ({}) | {} ({}) | {} ({}) |",
            f.compactions,
            f.idle_ms,
            ratio(f.idle_ms, base.idle_ms),
            f.idle_requests,
            ratio(f.idle_requests, base.idle_requests),
            f.bootstrap_ms,
            ratio(f.bootstrap_ms, base.bootstrap_ms),
            f.bootstrap_requests,
            ratio(f.bootstrap_requests as f64, base.bootstrap_requests as f64),
            f.bytes,
            ratio(f.bytes as f64, base.bytes as f64),
        );
    }
}

/// Snapshot size at 100k chats, format 2 (binary) vs format 1 (JSON), on
/// the same vault.
async fn snapshot_sizes() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let vault = ObjectStoreStorage::new(
        Arc::clone(&store),
        Path::from("v"),
        ObjectStoreOptions::default(),
    );
    let chats = 100_000;
    let mut batch = Vec::with_capacity(100);
    for _ in 0..chats {
        let mut r = record(ChatId::new(), 1);
        r.body = Some(Bytes::from_static(b"b"));
        batch.push((r, PutPrecondition::Absent));
        if batch.len() == 100 {
            let results = vault.put_batch(std::mem::take(&mut batch)).await;
            assert!(results.iter().all(Result::is_ok));
        }
    }
    // Nothing is in flight: a handle with a 1 ms claim delay may compact
    // with a 2 ms horizon.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let compactor = ObjectStoreStorage::new(
        Arc::clone(&store),
        Path::from("v"),
        ObjectStoreOptions::default().with_max_claim_delay(Duration::from_millis(1)),
    );
    let started = Instant::now();
    compactor
        .compact(CompactOptions::default().with_min_age(Duration::from_millis(2)))
        .await
        .expect("compact");
    let compact_ms = started.elapsed().as_secs_f64() * 1e3;
    let listed: Vec<_> = store
        .list(Some(&Path::from("v/snap")))
        .try_collect()
        .await
        .expect("list");
    let snapshot = store
        .get(&listed[0].location)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    let json = chatvault_object_store::measure::snapshot_as_json(&snapshot).expect("re-encode");
    let started = Instant::now();
    let fresh = ObjectStoreStorage::new(store, Path::from("v"), ObjectStoreOptions::default());
    fresh.changes(&Cursor::start(), 1).await.expect("load");
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    println!("\n### Snapshot of {chats} chats ({SUMMARY}-byte sealed summaries)\n");
    println!("| format | bytes | per chat |");
    println!("|---|---|---|");
    println!(
        "| 1 (JSON, base64 summaries) | {} | {:.0} |",
        json.len(),
        json.len() as f64 / chats as f64
    );
    println!(
        "| 2 (binary, written now) | {} ({}) | {:.0} |",
        snapshot.len(),
        ratio(snapshot.len() as f64, json.len() as f64),
        snapshot.len() as f64 / chats as f64
    );
    println!("\ncompaction writing it: {compact_ms:.0} ms; a new handle loading it (in memory): {load_ms:.0} ms");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let large = args.iter().any(|a| a == "--large");
    let fs_only = args.iter().any(|a| a == "--fs-only");
    let mut sizes = vec![1_000, 10_000];
    if large {
        sizes.push(100_000);
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        println!("## History growth with automatic compaction (time compressed: claim delay {CLAIM_DELAY:?}, horizon {HORIZON:?})");
        let mut rows = Vec::new();
        for &edits in &sizes {
            let backend = Fs {
                dir: tempfile::tempdir().expect("temp dir"),
            };
            rows.push((edits, run(&backend, edits).await));
        }
        table("fs (fsync off)", &rows);

        if !fs_only {
            match S3Fixture::start().await {
                Ok(fixture) => {
                    println!("\nS3: {}", fixture.describe());
                    let mut rows = Vec::new();
                    for &edits in &sizes {
                        let location = fixture
                            .vault(&format!("history-{edits}"))
                            .await
                            .expect("vault location");
                        let store = fixture
                            .amazon_s3_builder()
                            .with_bucket_name(&location.bucket)
                            .build()
                            .expect("S3 client");
                        let backend = S3 {
                            store: Arc::new(store),
                            prefix: location.prefix,
                        };
                        rows.push((edits, run(&backend, edits).await));
                    }
                    table("s3", &rows);
                    fixture.stop().await;
                }
                Err(e) => println!("\nS3 skipped: no S3 service ({e})"),
            }
        }
        snapshot_sizes().await;
    });
}
