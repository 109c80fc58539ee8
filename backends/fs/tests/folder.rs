//! The fs backend on a real folder: persistence, atomic creates between
//! handles, push, and the leftovers of file-sync tools.

use bytes::Bytes;
use chatvault_core::{
    ChatId, Cursor, Error, Part, PullOutcome, PutPrecondition, SealedRecord, Storage,
};
use chatvault_fs::FsStorage;
use chatvault_object_store::{CompactOptions, ObjectStoreOptions};
use std::sync::Arc;
use std::time::Duration;

fn record(chat: ChatId, version: u64) -> SealedRecord {
    SealedRecord {
        chat,
        version,
        deleted: false,
        summary: Bytes::from(format!("summary {version}")),
        body: Some(Bytes::from(format!("body {version}"))),
    }
}

async fn all_changes(storage: &FsStorage) -> Vec<(ChatId, u64)> {
    let mut cursor = Cursor::start();
    let mut all = Vec::new();
    loop {
        let page = storage.changes(&cursor, 3).await.unwrap();
        all.extend(page.changes.iter().map(|c| (c.chat, c.version)));
        cursor = page.cursor;
        if !page.has_more {
            return all;
        }
    }
}

#[tokio::test]
async fn commits_are_shared_between_handles_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        FsStorage::open(dir.path()).unwrap(),
        FsStorage::open(dir.path()).unwrap(),
    );
    let chat = ChatId::new();
    a.put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    b.put(record(chat, 2), PutPrecondition::Version(1))
        .await
        .unwrap();
    let err = a
        .put(record(chat, 2), PutPrecondition::Version(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                current: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
    drop((a, b));
    let reopened = FsStorage::open_url(&format!("file://{}", dir.path().display())).unwrap();
    assert_eq!(
        reopened.get(&[chat], Part::Full).await.unwrap(),
        vec![record(chat, 2)]
    );
    assert_eq!(all_changes(&reopened).await, vec![(chat, 1), (chat, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_from_separate_handles_commit_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let chat = ChatId::new();
    let handles: Vec<Arc<FsStorage>> = (0..6)
        .map(|_| Arc::new(FsStorage::open(dir.path()).unwrap()))
        .collect();
    let tasks: Vec<_> = handles
        .iter()
        .map(|h| {
            let h = Arc::clone(h);
            tokio::spawn(async move { h.put(record(chat, 1), PutPrecondition::Absent).await })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => wins += 1,
            Err(Error::Conflict {
                current: Some(1), ..
            }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(all_changes(&handles[0]).await, vec![(chat, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_wakes_on_a_commit_from_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    // With an hour between polls, only a notification can wake it in time.
    let reader = FsStorage::builder(dir.path())
        .poll_interval(Duration::from_secs(3600))
        .open()
        .unwrap();
    assert!(reader.capabilities().push);
    let push = reader.push().expect("fs offers push");
    let writer = FsStorage::open(dir.path()).unwrap();
    let chat = ChatId::new();
    writer
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), push.wait(PullOutcome::Ok))
        .await
        .expect("a commit in the folder wakes the transport");
    assert_eq!(all_changes(&reader).await, vec![(chat, 1)]);
}

#[tokio::test(start_paused = true)]
async fn push_still_polls_when_no_notification_comes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::builder(dir.path())
        .poll_interval(Duration::from_secs(5))
        .open()
        .unwrap();
    let push = storage.push().unwrap();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(60), push.wait(PullOutcome::Ok))
        .await
        .expect("the safety-net poll fires");
    assert!(
        started.elapsed() <= Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn leftovers_of_file_sync_tools_never_fail_a_pull() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let first = ChatId::new();
    storage
        .put(record(first, 1), PutPrecondition::Absent)
        .await
        .unwrap();

    let log = dir.path().join("log");
    for name in [
        ".syncthing.00000000000000000002.tmp",
        "00000000000000000001.sync-conflict-20240101-120000-ABCDEFG",
        "00000000000000000001 (conflicted copy 2024-01-01)",
        "~00000000000000000002.tmp",
        "00000000000000000009#1",
        ".DS_Store",
        "notes.txt",
    ] {
        std::fs::write(log.join(name), b"leftover").unwrap();
    }
    std::fs::create_dir_all(log.join(".stversions")).unwrap();
    std::fs::write(log.join(".stversions").join("00000000000000000001"), b"old").unwrap();
    std::fs::write(dir.path().join("rec").join("Thumbs.db"), b"x").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::fs::write(log.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"x").unwrap();
    }
    // A partial file a sync tool left at the next slot: it occupies the slot,
    // holds no record, and later commits go after it.
    std::fs::write(log.join("00000000000000000002"), b"").unwrap();

    let second = ChatId::new();
    storage
        .put(record(second, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let fresh = FsStorage::open(dir.path()).unwrap();
    assert_eq!(all_changes(&fresh).await, vec![(first, 1), (second, 1)]);
    let mut got = fresh.get(&[first, second], Part::Full).await.unwrap();
    got.sort_by_key(|r| r.chat);
    let mut want = vec![record(first, 1), record(second, 1)];
    want.sort_by_key(|r| r.chat);
    assert_eq!(got, want);
    // Nothing is in flight: a handle with a 1 ms claim delay may compact
    // with a 2 ms horizon once that has passed.
    std::thread::sleep(Duration::from_millis(5));
    FsStorage::builder(dir.path())
        .options(ObjectStoreOptions::default().with_max_claim_delay(Duration::from_millis(1)))
        .open()
        .unwrap()
        .compact(CompactOptions::default().with_min_age(Duration::from_millis(2)))
        .await
        .unwrap();
    assert!(
        log.join("notes.txt").exists(),
        "compaction leaves foreign files alone"
    );
    assert_eq!(
        all_changes(&FsStorage::open(dir.path()).unwrap())
            .await
            .len(),
        2
    );
}

#[tokio::test]
async fn a_folder_shared_by_a_sync_tool_reports_non_atomic_preconditions() {
    let dir = tempfile::tempdir().unwrap();
    let shared = FsStorage::builder(dir.path())
        .shared_by_sync_tool(true)
        .open()
        .unwrap();
    assert!(!shared.capabilities().atomic_preconditions);
    assert!(
        FsStorage::open(dir.path())
            .unwrap()
            .capabilities()
            .atomic_preconditions
    );
}

#[tokio::test]
async fn a_path_that_is_a_file_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        FsStorage::open(&file),
        Err(Error::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn maintenance_compacts_a_folder_vault_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let claim_delay = Duration::from_millis(50);
    let storage = FsStorage::builder(dir.path())
        .options(
            ObjectStoreOptions::default()
                .with_max_claim_delay(claim_delay)
                .with_maintenance(
                    chatvault_object_store::MaintenancePolicy::default()
                        .with_entries(3)
                        .with_min_interval(Duration::ZERO)
                        .with_compact(CompactOptions::default().with_min_age(2 * claim_delay)),
                ),
        )
        .open()
        .unwrap();
    let chats: Vec<ChatId> = (0..5).map(|_| ChatId::new()).collect();
    for &chat in &chats {
        storage
            .put(record(chat, 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    tokio::time::sleep(3 * claim_delay).await;
    let report = storage
        .maintain(chatvault_core::MaintenanceBudget::default())
        .await
        .unwrap();
    assert!(report.ran && report.removed_entries == 4, "{report:?}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("log")).unwrap().count(),
        1
    );
    let fresh = FsStorage::open(dir.path()).unwrap();
    assert_eq!(all_changes(&fresh).await.len(), 5);
    assert_eq!(fresh.get(&chats, Part::Full).await.unwrap().len(), 5);
}
