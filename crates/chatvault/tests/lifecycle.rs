//! A vault that lives for years: housekeeping runs by itself, and the
//! background worker's schedule survives a device that saves while offline.

use async_trait::async_trait;
use chatvault::core::layer::LayeredStorage;
use chatvault::core::{
    ChangePage, Cursor, PullOutcome, PutPrecondition, SealedRecord, Storage, Transport,
};
use chatvault::{ChatId, ChatVault, DynStorage, Error, Event, Role, SyncStatus};
use chatvault_conformance::layers::{CountingStorage, Fault, FaultyStorage, Op};
use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
use object_store::{memory::InMemory, path::Path as StorePath};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

fn folder(dir: &Path) -> DynStorage {
    Arc::new(chatvault_fs::open(dir.join("server")).expect("open the folder backend"))
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
    // The round's outcome reaches the transport with the next wait, which
    // may come after the push emptied the outbox.
    assert!(
        eventually(
            || transport.outcomes.lock().expect("outcomes lock").last() == Some(&PullOutcome::Ok)
        )
        .await,
        "the first round after the network returns succeeds: {:?}",
        transport.outcomes.lock().expect("outcomes lock")
    );
    worker.stop().await;
    vault.close().await;
}

fn small_records(limit: usize) -> DynStorage {
    Arc::new(ObjectStoreStorage::new(
        Arc::new(InMemory::new()),
        StorePath::from("vault"),
        ObjectStoreOptions::default().with_max_record_bytes(limit),
    ))
}

#[tokio::test]
async fn a_save_larger_than_the_backend_accepts_fails_at_once_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = builder(small_records(4096), dir.path())
        .open()
        .await
        .expect("open");
    let chat = vault.new_chat("fits").await.expect("small save");
    vault
        .add_message(chat.id, Role::User, "a short line")
        .await
        .expect("small message");
    vault.sync_now().await.expect("sync");
    let before = vault.load_full_chat(chat.id).await.expect("load");

    let err = vault
        .add_message(chat.id, Role::User, "x".repeat(10_000))
        .await
        .expect_err("a record over the limit must be refused");
    assert!(
        matches!(err, Error::TooLarge { limit: 4096, .. }),
        "expected TooLarge naming the limit, got {err}"
    );
    assert_eq!(*vault.load_full_chat(chat.id).await.expect("load"), *before);
    assert_eq!(
        vault.pending_changes().expect("outbox"),
        0,
        "nothing queued"
    );

    let huge = chatvault::Chat::new(
        chatvault::ChatId::new(),
        "y".repeat(10_000),
        vault.engine().clock().tick(),
    );
    let err = vault
        .save_chat(huge)
        .await
        .expect_err("a new chat over the limit must be refused");
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert_eq!(vault.sidebar().len(), 1, "the refused chat is not shown");
    assert_eq!(vault.pending_changes().expect("outbox"), 0);
    let report = vault.sync_now().await.expect("the outbox is not wedged");
    assert_eq!(report.pending, 0);
}

/// Refuses every put of one chat, as a server with a rule against it would.
#[derive(Debug)]
struct RefuseOne {
    inner: DynStorage,
    refused: Mutex<Option<ChatId>>,
}

impl RefuseOne {
    fn refuses(&self, chat: ChatId) -> bool {
        *self.refused.lock().expect("refused lock") == Some(chat)
    }

    fn refusal() -> Error {
        Error::Rejected {
            code: "P0001".into(),
            message: "this chat breaks a server rule".into(),
        }
    }
}

#[async_trait]
impl LayeredStorage for RefuseOne {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }
    async fn put(&self, record: SealedRecord, pre: PutPrecondition) -> chatvault::Result<()> {
        if self.refuses(record.chat) {
            return Err(Self::refusal());
        }
        self.inner.put(record, pre).await
    }
    async fn put_batch(
        &self,
        batch: Vec<(SealedRecord, PutPrecondition)>,
    ) -> Vec<chatvault::Result<()>> {
        let mut results = Vec::with_capacity(batch.len());
        for (record, pre) in batch {
            results.push(LayeredStorage::put(self, record, pre).await);
        }
        results
    }
}

#[tokio::test]
async fn a_refused_chat_is_reported_by_name_and_never_holds_back_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = small_records(1 << 20);
    let refuse = Arc::new(RefuseOne {
        inner: server.clone(),
        refused: Mutex::new(None),
    });
    let vault = builder(refuse.clone(), dir.path())
        .open()
        .await
        .expect("open");
    let bad = vault
        .new_chat("the server refuses this one")
        .await
        .expect("save");
    *refuse.refused.lock().expect("refused lock") = Some(bad.id);
    let mut events = vault.changes();
    let mut good = Vec::new();
    for i in 0..5 {
        good.push(vault.new_chat(format!("fine {i}")).await.expect("save").id);
    }
    let err = vault
        .sync_now()
        .await
        .expect_err("the round reports the refusal");
    assert!(matches!(err, Error::Rejected { .. }), "{err}");
    assert!(
        matches!(vault.status(), SyncStatus::Error { ref reason } if reason.contains("server rule")),
        "{:?}",
        vault.status()
    );
    let mut named = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::PushRefused { chats, reason } = event {
            assert!(reason.contains("server rule"), "{reason}");
            named.extend(chats);
        }
    }
    assert_eq!(named, vec![bad.id], "the event names the refused chat");
    assert_eq!(
        vault.pending_changes().expect("outbox"),
        1,
        "only the refused chat waits"
    );

    let other = builder(server, &dir.path().join("other"))
        .open()
        .await
        .expect("second device");
    other.sync_now().await.expect("sync");
    let mut seen: Vec<ChatId> = other.sidebar().iter().map(|s| s.id).collect();
    seen.sort();
    good.sort();
    assert_eq!(seen, good, "every other chat reached the server");
}

/// A server whose feed, once armed, answers every page with no change, the
/// cursor it was given and `has_more`: a pull that trusted it would loop
/// forever holding the sync lock.
#[derive(Debug)]
struct StuckFeed {
    inner: DynStorage,
    stuck: std::sync::atomic::AtomicBool,
    pages: AtomicU64,
}

#[async_trait]
impl LayeredStorage for StuckFeed {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }
    async fn changes(&self, since: &Cursor, limit: usize) -> chatvault::Result<ChangePage> {
        if !self.stuck.load(Ordering::SeqCst) {
            return self.inner.changes(since, limit).await;
        }
        self.pages.fetch_add(1, Ordering::SeqCst);
        Ok(ChangePage {
            changes: Vec::new(),
            cursor: since.clone(),
            has_more: true,
            waiting: None,
        })
    }
}

#[tokio::test]
async fn a_feed_page_that_claims_more_without_advancing_fails_the_round_naming_the_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stuck = Arc::new(StuckFeed {
        inner: folder(dir.path()),
        stuck: std::sync::atomic::AtomicBool::new(false),
        pages: AtomicU64::new(0),
    });
    let vault = builder(stuck.clone(), dir.path())
        .open()
        .await
        .expect("open");
    vault
        .new_chat("before the server got stuck")
        .await
        .expect("save");
    vault.sync_now().await.expect("an honest round");
    stuck.stuck.store(true, Ordering::SeqCst);
    let err = tokio::time::timeout(Duration::from_secs(10), vault.sync_now())
        .await
        .expect("the round ends instead of spinning")
        .expect_err("a feed that does not advance is an error");
    match &err {
        Error::Corrupt { what, reason } => {
            assert!(what.contains("change feed"), "{what}");
            assert!(reason.contains("cursor"), "{reason}");
        }
        other => panic!("expected Corrupt naming the cursor, got {other:?}"),
    }
    assert_eq!(
        stuck.pages.load(Ordering::SeqCst),
        1,
        "one page, not a loop"
    );
    // The lock is free again: an honest server syncs at once.
    stuck.stuck.store(false, Ordering::SeqCst);
    vault.sync_now().await.expect("syncs again");
    vault.close().await;
}
