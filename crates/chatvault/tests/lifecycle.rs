//! A vault that lives for years: housekeeping runs by itself, and the
//! background worker's schedule survives a device that saves while offline.

use async_trait::async_trait;
use chatvault::core::{PullOutcome, Transport};
use chatvault::{ChatVault, DynStorage};
use chatvault_conformance::layers::{CountingStorage, Fault, FaultyStorage, Op};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

fn folder(dir: &Path) -> DynStorage {
    Arc::new(chatvault_fs::FsStorage::open(dir.join("server")).expect("open the folder backend"))
}

fn builder(storage: DynStorage, dir: &Path) -> chatvault::ChatVaultBuilder {
    ChatVault::builder()
        .storage(storage)
        .replica_path(dir.join("device.redb"))
        .passphrase("lifecycle tests")
        .scrypt_work_factor(4)
}

/// Waits up to ten seconds for `done`.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn background_sync_runs_the_backends_maintenance_without_anyone_calling_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counting = Arc::new(CountingStorage::new(folder(dir.path())));
    let vault = builder(counting.clone(), dir.path())
        .auto_maintenance(Some(Duration::from_millis(30)))
        .poll_interval(Duration::from_millis(10))
        .open()
        .await
        .expect("open");
    vault.new_chat("kept for years").await.expect("save");
    assert!(
        eventually(|| counting.calls(Op::Maintain) >= 2).await,
        "background sync asked for maintenance {} times in 10 s",
        counting.calls(Op::Maintain)
    );
    vault.close().await;
}

#[tokio::test]
async fn switched_off_maintenance_never_reaches_the_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counting = Arc::new(CountingStorage::new(folder(dir.path())));
    let vault = builder(counting.clone(), dir.path())
        .auto_maintenance(None)
        .poll_interval(Duration::from_millis(5))
        .open()
        .await
        .expect("open");
    assert!(
        eventually(|| counting.calls(Op::Changes) >= 5).await,
        "background sync must keep polling"
    );
    assert_eq!(counting.calls(Op::Maintain), 0);
    let report = vault.maintain(true).await.expect("maintenance on demand");
    assert_eq!(counting.calls(Op::Maintain), 1, "{report:?}");
    vault.close().await;
}

/// A transport that records how it was asked to wait and waits until
/// released, so the test sees every restart of the wait.
#[derive(Default)]
struct RecordingTransport {
    waits: AtomicU64,
    outcomes: Mutex<Vec<PullOutcome>>,
    release: Notify,
}

#[async_trait]
impl Transport for RecordingTransport {
    async fn wait(&self, previous: PullOutcome) {
        self.waits.fetch_add(1, Ordering::SeqCst);
        self.outcomes.lock().expect("outcomes lock").push(previous);
        self.release.notified().await;
    }
}

#[tokio::test]
async fn saving_while_offline_neither_postpones_the_next_pull_nor_grows_its_backoff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faulty = FaultyStorage::new(folder(dir.path()));
    let vault = builder(faulty.clone(), dir.path())
        .open()
        .await
        .expect("open");
    faulty.fail_all(Fault::Unavailable);
    let transport = Arc::new(RecordingTransport::default());
    let worker = vault.engine().start(transport.clone());
    assert!(
        eventually(|| transport.waits.load(Ordering::SeqCst) == 1).await,
        "the worker waits for the next pull after its first round"
    );
    let puts_before = faulty.calls(Op::PutBatch) + faulty.calls(Op::Put);
    for i in 0..5 {
        vault
            .new_chat(format!("offline {i}"))
            .await
            .expect("local saves work offline");
    }
    // Each save wakes a push (which fails: offline)...
    assert!(
        eventually(|| faulty.calls(Op::PutBatch) + faulty.calls(Op::Put) > puts_before).await,
        "a local save must wake a push"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...but the wait for the next pull is the same one: not restarted (which
    // would postpone the pull by a whole interval per save) and not handed a
    // stale failure again (which would grow the backoff per save).
    assert_eq!(transport.waits.load(Ordering::SeqCst), 1);
    assert_eq!(
        *transport.outcomes.lock().expect("outcomes lock"),
        vec![PullOutcome::Failed]
    );
    faulty.heal();
    transport.release.notify_one();
    assert!(
        eventually(|| vault.pending_changes().is_ok_and(|n| n == 0)).await,
        "after the network returns, the next pull's round pushes everything"
    );
    assert_eq!(
        transport.outcomes.lock().expect("outcomes lock").last(),
        Some(&PullOutcome::Ok)
    );
    worker.stop().await;
    vault.close().await;
}
