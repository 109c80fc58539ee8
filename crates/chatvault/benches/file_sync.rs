//! The file-sync benchmark (issue 20): a vault in a folder that a file-sync
//! service copies between devices, in the per-device layout. Prints one
//! markdown table, every figure beside a baseline measured in the same run.
//!
//! ```text
//! cargo bench -p chatvault --bench file_sync -- --chats 10000 --runs 7
//! just bench-file-sync
//! ```
//!
//! Flags: `--chats N` (default 10,000), `--edit-rounds N` (history added
//! before the first idle measurement: N rounds in which every device edits
//! 50 chats and syncs; default 20), `--polls N` (idle polls timed, median
//! reported; default 50), `--runs N` (Syncthing round trips timed, median
//! reported; default 7).
//!
//! - **Idle poll**: three devices write into one folder (each only under its
//!   own `dev/<vault>.<writer>/`, as on synced copies once the service has
//!   caught up), together N chats of two messages. On device 0, the time of
//!   `sync_now` with nothing new vs one `std::fs::read_dir` of each of the
//!   three device log directories (the least any reader of three logs must
//!   do), and the `list` calls one poll makes (counted by
//!   `CountingObjectStore` layered into the folder's store with
//!   `FsStorageBuilder::layer`; one `list` may walk a directory tree).
//!   Measured after the seeding and the edit rounds, then again after every
//!   device compacted its log (`maintain(true)`, the compaction horizon
//!   compressed from one hour to 2 s and waited out).
//! - **Write to appearance through Syncthing**: two real Syncthing 1.19
//!   processes on loopback (`chatvault_test_services::syncthing`), a device
//!   on each copy. Device A adds a message and syncs; the time until device
//!   B's `sync_now` (polled every 20 ms) shows it, beside the time
//!   Syncthing takes to copy a file of the same size (the bytes A's sync
//!   wrote) from A's copy to B's, polled the same way. Runs alternate;
//!   medians of `--runs`. Skipped (said so in the table) when Syncthing is
//!   not installed, unless `CI` is set.

mod common;

use chatvault::core::Clock;
use chatvault::{ChatId, ChatVault, DeviceId, Role};
use chatvault_conformance::layers::{CountingObjectStore, RequestCounter};
use chatvault_fs::{FsStorageBuilder, WriterId};
use chatvault_object_store::{CompactOptions, MaintenancePolicy, ObjectStoreOptions};
use chatvault_test_services::syncthing::SyncthingCluster;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEVICES: usize = 3;
const POLL: Duration = Duration::from_millis(20);
/// The longest a write may take to appear on the other copy.
const APPEAR_LIMIT: Duration = Duration::from_secs(60);
/// The compaction horizon, compressed (default one hour) so that the
/// bench's history can be compacted; the bench waits it out first.
const HORIZON: Duration = Duration::from_secs(2);
/// The claim delay, compressed below the horizon as compaction requires.
const CLAIM_DELAY: Duration = Duration::from_secs(1);

struct Options {
    chats: usize,
    edit_rounds: usize,
    polls: usize,
    runs: usize,
}

fn parse_options() -> Options {
    let mut options = Options {
        chats: 10_000,
        edit_rounds: 20,
        polls: 50,
        runs: 7,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let mut number = || -> usize {
            let value = inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| panic!("{flag} needs a value"));
            value
                .replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {value:?}"))
        };
        match flag.as_str() {
            "--chats" => options.chats = number(),
            "--edit-rounds" => options.edit_rounds = number(),
            "--polls" => options.polls = number().max(1),
            "--runs" => options.runs = number().max(1),
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => panic!("unknown flag {other:?}"),
        }
    }
    options
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A device on `folder` writing as `device`, its folder store wrapped in a
/// request counter; fsync off (a throwaway vault).
async fn open_counted(
    folder: &Path,
    replica: &Path,
    device: u64,
    counter: &RequestCounter,
) -> ChatVault {
    let counter = counter.clone();
    let storage = FsStorageBuilder::new(folder)
        .writer(WriterId(device))
        .fsync(false)
        .options(
            ObjectStoreOptions::default()
                .with_max_claim_delay(CLAIM_DELAY)
                .with_maintenance(
                    MaintenancePolicy::default()
                        .with_min_interval(Duration::ZERO)
                        .with_compact(CompactOptions::default().with_min_age(HORIZON)),
                ),
        )
        .layer(move |store| Arc::new(CountingObjectStore::new(store, counter.clone())))
        .open()
        .expect("open the folder");
    ChatVault::builder()
        .storage(Arc::new(storage))
        .device_id(DeviceId(device))
        .replica_path(replica)
        .passphrase(common::PASSPHRASE)
        .scrypt_work_factor(4)
        .auto_maintenance(None)
        .open()
        .await
        .expect("open a device")
}

/// Syncs until nothing is queued.
async fn push_all(vault: &ChatVault) {
    for _ in 0..1_000 {
        match vault.sync_now().await {
            Ok(report) if report.pending == 0 => return,
            Ok(_) => {}
            // A big batch may outlive the compressed claim delay: retried.
            Err(e) if e.is_retriable() => {}
            Err(e) => panic!("sync: {e}"),
        }
    }
    panic!("the outbox did not drain");
}

/// The log directories of every device under `folder`.
fn log_dirs(folder: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(folder.join("dev"))
        .expect("dev/")
        .map(|e| e.expect("entry").path().join("log"))
        .collect();
    dirs.sort();
    dirs
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

struct Idle {
    label: String,
    poll_ms: f64,
    baseline_ms: f64,
    lists: f64,
    requests: f64,
    entries: usize,
}

/// Times `polls` idle `sync_now` calls on `vault` and as many read_dir
/// passes over the device logs; counts the requests of one poll.
async fn idle(
    label: &str,
    vault: &ChatVault,
    counter: &RequestCounter,
    folder: &Path,
    polls: usize,
) -> Idle {
    let dirs = log_dirs(folder);
    // Warm both paths up.
    vault.sync_now().await.expect("sync");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut lists = Vec::new();
    let mut requests = Vec::new();
    for _ in 0..polls {
        counter.reset();
        let started = Instant::now();
        let report = vault.sync_now().await.expect("idle sync");
        ours.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(report.pulled, 0, "an idle poll pulled something");
        lists.push(counter.get("list").calls as f64);
        requests.push(counter.total() as f64);

        let started = Instant::now();
        let mut names = 0usize;
        for dir in &dirs {
            names += std::fs::read_dir(dir)
                .expect("read_dir")
                .filter_map(|e| e.ok())
                .map(|e| std::hint::black_box(e.file_name()).len())
                .sum::<usize>();
        }
        theirs.push(started.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(names);
    }
    Idle {
        label: label.to_owned(),
        poll_ms: median(ours),
        baseline_ms: median(theirs),
        lists: median(lists),
        requests: median(requests),
        entries: dirs.iter().map(|d| count_files(d)).sum(),
    }
}

/// Seeds three devices with `chats` chats, adds history, measures idle
/// polls before and after compaction.
async fn idle_polls(options: &Options) -> (Vec<Idle>, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("folder");
    let counters: Vec<RequestCounter> = (0..DEVICES).map(|_| RequestCounter::new()).collect();
    let mut devices = Vec::new();
    for (d, counter) in counters.iter().enumerate() {
        let replica = dir.path().join(format!("device-{d}.redb"));
        devices.push(open_counted(&folder, &replica, 1 + d as u64, counter).await);
        if d == 0 {
            push_all(&devices[0]).await;
        }
    }
    let started = Instant::now();
    let clock = Clock::new(DeviceId(99));
    let mut ids: Vec<Vec<ChatId>> = vec![Vec::new(); DEVICES];
    for (d, vault) in devices.iter().enumerate() {
        let share = options.chats / DEVICES + usize::from(d < options.chats % DEVICES);
        let chats: Vec<_> = (0..share)
            .map(|i| common::sample_chat(&clock, d * options.chats + i, 2, 60))
            .collect();
        ids[d] = chats.iter().map(|c| c.id).collect();
        vault.import_chats(chats, |_| {}).await.expect("import");
        push_all(vault).await;
        eprintln!("device {d}: {share} chats written");
    }
    for round in 0..options.edit_rounds {
        for (d, vault) in devices.iter().enumerate() {
            for k in 0..50 {
                let mine = &ids[d];
                let chat = mine[(round * 50 + k) % mine.len()];
                vault
                    .add_message(chat, Role::User, format!("edit {round}.{k}"))
                    .await
                    .expect("edit");
            }
            push_all(vault).await;
        }
    }
    for vault in &devices {
        push_all(vault).await;
    }
    let seed_s = started.elapsed().as_secs_f64();
    eprintln!("seeded in {seed_s:.1} s");
    let mut out = vec![
        idle(
            "after seeding and edit rounds",
            &devices[0],
            &counters[0],
            &folder,
            options.polls,
        )
        .await,
    ];
    tokio::time::sleep(HORIZON + Duration::from_millis(500)).await;
    for vault in &devices {
        let report = vault.maintain(true).await.expect("maintain");
        eprintln!("compaction: {report:?}");
    }
    for vault in &devices {
        push_all(vault).await;
    }
    out.push(
        idle(
            "after every device compacted its log",
            &devices[0],
            &counters[0],
            &folder,
            options.polls,
        )
        .await,
    );
    for vault in devices {
        vault.close().await;
    }
    (out, seed_s)
}

struct Latency {
    served: String,
    chatvault_ms: Vec<f64>,
    baseline_ms: Vec<f64>,
    bytes: Vec<u64>,
}

/// Polls `check` every [`POLL`] until it is true; the time since `from`.
async fn wait_for<F, Fut>(from: Instant, mut check: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if check().await {
            return from.elapsed().as_secs_f64() * 1e3;
        }
        assert!(
            from.elapsed() < APPEAR_LIMIT,
            "nothing appeared within {APPEAR_LIMIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Every file of a folder below `dev/`, with its size.
fn dev_sizes(folder: &Path) -> std::collections::BTreeMap<PathBuf, u64> {
    let mut out = std::collections::BTreeMap::new();
    let mut pending = vec![folder.join("dev")];
    while let Some(at) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(meta) = entry.metadata() {
                out.insert(path, meta.len());
            }
        }
    }
    out
}

async fn syncthing_latency(options: &Options) -> Result<Latency, String> {
    let cluster = match SyncthingCluster::start(2).await {
        Ok(cluster) => cluster,
        Err(e) if chatvault_conformance::services_required() => {
            panic!("CI is set and Syncthing could not start: {e}")
        }
        Err(e) => return Err(e),
    };
    let served = format!("{:?}", cluster.served());
    let replicas = tempfile::tempdir().expect("tempdir");
    let open = |folder: &Path, name: &str| {
        ChatVault::builder()
            .storage_url(format!("file://{}", folder.display()))
            .replica_path(replicas.path().join(format!("{name}.redb")))
            .passphrase(common::PASSPHRASE)
            .scrypt_work_factor(4)
            .open()
    };
    let a = open(cluster.folder(0), "a").await.expect("open a");
    let chat = a.new_chat("latency").await.expect("chat").id;
    a.sync_now().await.expect("sync");
    cluster.wait_in_sync(Duration::from_secs(60)).await?;
    let b = open(cluster.folder(1), "b").await.expect("open b");
    b.sync_now().await.expect("sync");
    cluster.wait_in_sync(Duration::from_secs(60)).await?;
    std::fs::create_dir_all(cluster.folder(0).join("probe")).expect("probe dir");
    let mut out = Latency {
        served,
        chatvault_ms: Vec::new(),
        baseline_ms: Vec::new(),
        bytes: Vec::new(),
    };
    for run in 0..options.runs {
        // chatvault: save, sync, poll b.
        let before = dev_sizes(cluster.folder(0));
        let started = Instant::now();
        let message = a
            .add_message(chat, Role::User, format!("run {run}: hello from a"))
            .await
            .expect("save");
        a.sync_now().await.expect("push");
        let written: u64 = dev_sizes(cluster.folder(0))
            .into_iter()
            .filter(|(path, size)| before.get(path) != Some(size))
            .map(|(_, size)| size)
            .sum();
        let ms = wait_for(started, || async {
            b.sync_now().await.is_ok()
                && b.load_full_chat(chat)
                    .await
                    .is_ok_and(|c| c.messages().iter().any(|m| m.id == message))
        })
        .await;
        out.chatvault_ms.push(ms);
        out.bytes.push(written);

        // Syncthing alone: a file of the same size, polled the same way.
        let name = format!("probe/run-{run}.bin");
        let content: Vec<u8> = (0..written).map(|i| (i * 31 + run as u64) as u8).collect();
        let target = cluster.folder(1).join(&name);
        let staging = cluster.folder(0).join(format!("probe/.run-{run}.tmp"));
        let started = Instant::now();
        std::fs::write(&staging, &content).expect("write probe");
        std::fs::rename(&staging, cluster.folder(0).join(&name)).expect("rename probe");
        let ms = wait_for(started, || {
            let seen = std::fs::read(&target).is_ok_and(|bytes| bytes == content);
            async move { seen }
        })
        .await;
        out.baseline_ms.push(ms);
        eprintln!(
            "run {run}: chatvault {:.0} ms, Syncthing alone {ms:.0} ms ({written} bytes)",
            out.chatvault_ms[run]
        );
    }
    a.close().await;
    b.close().await;
    cluster.stop()?;
    Ok(out)
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = std::process::Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "rustc unknown".into());
    format!("{nproc} CPUs, {rustc}")
}

fn main() {
    let options = parse_options();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("## chatvault file-sync benchmark\n");
    println!(
        "Machine: {}. {} chats over {DEVICES} device logs, {} edit rounds; medians of {} idle \
         polls and {} Syncthing round trips.\n",
        machine(),
        options.chats,
        options.edit_rounds,
        options.polls,
        options.runs
    );
    let (idle, seed_s) = rt.block_on(idle_polls(&options));
    let latency = rt.block_on(syncthing_latency(&options));
    println!("| measure | figure |\n|---|---|");
    println!(
        "| seeding ({} chats through 3 devices + history) | {seed_s:.1} s |",
        options.chats
    );
    for i in &idle {
        println!(
            "| idle `sync_now`, {}: time vs `read_dir` of the {DEVICES} device logs ({} entries) \
             | {:.2} ms vs {:.3} ms = {:.0}× |",
            i.label,
            i.entries,
            i.poll_ms,
            i.baseline_ms,
            i.poll_ms / i.baseline_ms
        );
        println!(
            "| idle `sync_now`, {}: `list` calls / all store calls per poll (goal: one listing \
             per device log) | {} / {} for {DEVICES} device logs |",
            i.label, i.lists, i.requests
        );
    }
    match latency {
        Ok(l) => {
            let ours = median(l.chatvault_ms.clone());
            let theirs = median(l.baseline_ms.clone());
            println!(
                "| write on A to visible on B through Syncthing (save + `sync_now` on A, B polls \
                 `sync_now` every {} ms) vs Syncthing copying a file of the same size ({} bytes, \
                 median) | {ours:.0} ms vs {theirs:.0} ms = {:.2}× (runs: {:?} vs {:?}) |",
                POLL.as_millis(),
                median(l.bytes.iter().map(|b| *b as f64).collect()),
                ours / theirs,
                l.chatvault_ms.iter().map(|m| m.round()).collect::<Vec<_>>(),
                l.baseline_ms.iter().map(|m| m.round()).collect::<Vec<_>>()
            );
            println!("\nSyncthing: {}.", l.served);
        }
        Err(e) => println!("| write to appearance through Syncthing | NOT RUN: {e} |"),
    }
}
