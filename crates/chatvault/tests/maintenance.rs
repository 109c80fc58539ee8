//! Housekeeping for every client, not only background sync: a process that
//! syncs with `sync_now` alone (an app syncing on its own events, a
//! command-line call) compacts the change log too, on a schedule kept in
//! the replica (issue 21).
//!
//! The folder backend runs with time compressed as in the `history` bench:
//! a claim delay of 100 ms and a compaction horizon of 250 ms (real vaults:
//! 5 min and 1 h), and it compacts once a few dozen entries accumulated.

use async_trait::async_trait;
use bytes::Bytes;
use chatvault::core::{
    Capabilities, ChangePage, Cursor, KeyringBlob, MaintenanceBudget, MaintenanceReport, Part,
    PutPrecondition, SealedRecord, Storage,
};
use chatvault::{ChatId, ChatVault, DynStorage, SettledMaintenance};
use chatvault_conformance::layers::{CountingStorage, Op};
use chatvault_object_store::{CompactOptions, MaintenancePolicy, ObjectStoreOptions};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

const HORIZON: Duration = Duration::from_millis(250);
/// The backend compacts once this many entries (×[1, 1.5)) follow the
/// newest snapshot.
const ENTRIES: u64 = 20;
/// Long enough for any maintenance run of these small vaults to finish.
const PATIENCE: Duration = Duration::from_secs(60);

/// A handle (a device) on the folder vault in `dir/server`.
fn folder(dir: &Path) -> DynStorage {
    let options = ObjectStoreOptions::default()
        .with_max_claim_delay(Duration::from_millis(100))
        .with_maintenance(
            MaintenancePolicy::default()
                .with_entries(ENTRIES)
                .with_min_interval(Duration::ZERO)
                .with_compact(CompactOptions::default().with_min_age(HORIZON)),
        );
    // The shared log: one log that any device compacts (in the per-device
    // layout each device compacts its own, tested in file_sync.rs).
    Arc::new(
        chatvault_fs::FsStorageBuilder::new(dir.join("server"))
            .layout(chatvault_fs::FolderLayout::SharedLog)
            .options(options)
            .fsync(false)
            .open()
            .expect("open the folder backend"),
    )
}

/// A device with its own replica; no background sync unless the test
/// starts it.
fn device(storage: DynStorage, dir: &Path, name: &str) -> chatvault::ChatVaultBuilder {
    ChatVault::builder()
        .storage(storage)
        .replica_path(dir.join(format!("{name}.redb")))
        .passphrase("maintenance tests")
        .scrypt_work_factor(4)
}

/// Objects under `server/<sub>` (log entries, snapshots), staging files
/// left out.
fn objects(dir: &Path, sub: &str) -> usize {
    match std::fs::read_dir(dir.join("server").join(sub)) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .count(),
        Err(_) => 0,
    }
}

/// `edits` renames spread over `chats`, each followed by one `sync_now`
/// (one log entry each).
async fn edit(vault: &ChatVault, chats: &[ChatId], edits: usize, round: &str) {
    for i in 0..edits {
        let chat = chats[i % chats.len()];
        vault
            .rename(chat, format!("{round} {i}"))
            .await
            .expect("rename");
        vault.sync_now().await.expect("sync");
    }
}

async fn new_chats(vault: &ChatVault, n: usize) -> Vec<ChatId> {
    let mut chats = Vec::with_capacity(n);
    for i in 0..n {
        chats.push(vault.new_chat(format!("chat {i}")).await.expect("new").id);
    }
    vault.sync_now().await.expect("sync");
    chats
}

#[tokio::test]
async fn sync_now_alone_compacts_a_long_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = device(folder(dir.path()), dir.path(), "app")
        // Compressed like the backend's thresholds: every round may ask.
        .auto_maintenance(Some(Duration::ZERO))
        .open()
        .await
        .expect("open");
    let chats = new_chats(&vault, 10).await;
    edit(&vault, &chats, 100, "first").await;
    // The first hundred entries pass the horizon; the backend's threshold
    // is crossed again during the next eighty, and that compaction may
    // delete all of them.
    tokio::time::sleep(HORIZON + Duration::from_millis(50)).await;
    edit(&vault, &chats, 80, "second").await;
    assert!(
        !matches!(
            vault.settle_maintenance(PATIENCE).await,
            SettledMaintenance::Cut
        ),
        "a run of this small vault finishes"
    );
    let log = objects(dir.path(), "log");
    assert!(
        objects(dir.path(), "snap") >= 1,
        "no snapshot after 181 entries"
    );
    assert!(
        log <= 81,
        "{log} log entries are left of 181: the first hundred were never compacted"
    );
    vault.close().await;
}

#[tokio::test]
async fn a_device_that_never_ran_maintenance_compacts_a_long_log_at_its_first_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = device(folder(dir.path()), dir.path(), "writer")
        .auto_maintenance(None)
        .open()
        .await
        .expect("open the writer");
    let chats = new_chats(&writer, 5).await;
    edit(&writer, &chats, 120, "edit").await;
    writer.close().await;
    assert!(objects(dir.path(), "log") > 120);
    assert_eq!(objects(dir.path(), "snap"), 0);
    tokio::time::sleep(HORIZON + Duration::from_millis(50)).await;

    // Default schedule (every 10 minutes): the first sync asks at once.
    let phone = device(folder(dir.path()), dir.path(), "phone")
        .open()
        .await
        .expect("open the new device");
    phone.sync_now().await.expect("first sync");
    assert_eq!(phone.sidebar().len(), 5);
    match phone.settle_maintenance(PATIENCE).await {
        SettledMaintenance::Finished(Ok(report)) => {
            assert!(report.ran, "{report:?}");
            assert!(report.removed_entries >= 120, "{report:?}");
        }
        other => panic!("the first sync ran no maintenance to its end: {other:?}"),
    }
    assert_eq!(objects(dir.path(), "snap"), 1);
    assert!(objects(dir.path(), "log") <= 1, "the newest entry stays");
    let mark = phone
        .engine()
        .replica()
        .maintenance()
        .expect("read the mark")
        .expect("a mark");
    assert!(mark.finished, "{mark:?}");
    phone.close().await;
}

#[tokio::test]
async fn the_schedule_lives_in_the_replica_so_a_reopened_device_does_not_ask_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counting = Arc::new(CountingStorage::new(folder(dir.path())));
    for _ in 0..3 {
        let vault = device(counting.clone(), dir.path(), "cli")
            .open()
            .await
            .expect("open");
        vault.new_chat("one more").await.expect("save");
        vault.sync_now().await.expect("sync");
        vault.close().await;
    }
    assert_eq!(
        counting.calls(Op::Maintain),
        1,
        "asked at the first sync, then not before 10 minutes, across processes"
    );
}

/// A backend whose `maintain` waits until released, recording each call's
/// `force`.
#[derive(Debug)]
struct GatedMaintenance {
    inner: DynStorage,
    calls: Mutex<Vec<bool>>,
    release: Notify,
    released: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Storage for GatedMaintenance {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn changes(&self, since: &Cursor, limit: usize) -> chatvault::Result<ChangePage> {
        self.inner.changes(since, limit).await
    }
    async fn get(&self, chats: &[ChatId], part: Part) -> chatvault::Result<Vec<SealedRecord>> {
        self.inner.get(chats, part).await
    }
    async fn put(&self, record: SealedRecord, pre: PutPrecondition) -> chatvault::Result<()> {
        self.inner.put(record, pre).await
    }
    async fn get_keyring(&self) -> chatvault::Result<Option<KeyringBlob>> {
        self.inner.get_keyring().await
    }
    async fn put_keyring(&self, bytes: Bytes, pre: PutPrecondition) -> chatvault::Result<u64> {
        self.inner.put_keyring(bytes, pre).await
    }
    async fn maintain(&self, budget: MaintenanceBudget) -> chatvault::Result<MaintenanceReport> {
        self.calls.lock().expect("calls lock").push(budget.force);
        if !self.released.load(std::sync::atomic::Ordering::SeqCst) {
            self.release.notified().await;
        }
        self.inner.maintain(budget).await
    }
}

#[tokio::test]
async fn a_run_cut_at_its_budget_is_resumed_by_the_next_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gated = Arc::new(GatedMaintenance {
        inner: folder(dir.path()),
        calls: Mutex::new(Vec::new()),
        release: Notify::new(),
        released: false.into(),
    });
    let vault = device(gated.clone(), dir.path(), "cli")
        .open()
        .await
        .expect("open");
    vault.new_chat("hello").await.expect("save");
    vault.sync_now().await.expect("sync");
    assert!(matches!(
        vault.settle_maintenance(Duration::from_millis(20)).await,
        SettledMaintenance::Cut
    ));
    let mark = vault
        .engine()
        .replica()
        .maintenance()
        .expect("read the mark")
        .expect("marked started");
    assert!(!mark.finished, "{mark:?}");

    gated
        .released
        .store(true, std::sync::atomic::Ordering::SeqCst);
    vault.sync_now().await.expect("the next sync");
    assert!(matches!(
        vault.settle_maintenance(PATIENCE).await,
        SettledMaintenance::Finished(Ok(_))
    ));
    assert_eq!(
        *gated.calls.lock().expect("calls lock"),
        vec![false, true],
        "asked at the first sync, then resumed (forced) at the next"
    );
    let mark = vault
        .engine()
        .replica()
        .maintenance()
        .expect("read the mark")
        .expect("a mark");
    assert!(mark.finished && mark.resumes == 0, "{mark:?}");
    vault.close().await;
}
