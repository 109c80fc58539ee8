//! The fs backend on a real folder: persistence, atomic creates between
//! handles, push, and the leftovers of file-sync tools, in both folder
//! layouts (the shared log where atomic creates matter, the per-device one
//! where each handle is a device of its own).

use bytes::Bytes;
use chatvault_core::{
    ChatId, Cursor, Error, Part, PullOutcome, PutPrecondition, SealedRecord, Storage,
};
use chatvault_fs::{FolderLayout, FsStorage, FsStorageBuilder};
use chatvault_object_store::{CompactOptions, ObjectStoreOptions};
use std::sync::Arc;
use std::time::Duration;

/// A handle on the shared-log layout of `dir`.
fn shared(dir: &std::path::Path) -> FsStorage {
    FsStorageBuilder::new(dir)
        .layout(FolderLayout::SharedLog)
        .open()
        .unwrap()
}

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

/// `a` creates `chat`, `b` commits version 2 on top, and `a`'s stale put
/// of version 2 then fails with a conflict naming version 2.
async fn a_commit_of_b_makes_a_stale_put_of_a_conflict(
    a: &impl Storage,
    b: &impl Storage,
    chat: ChatId,
) {
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
}

#[tokio::test]
async fn commits_are_shared_between_handles_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (shared(dir.path()), shared(dir.path()));
    let chat = ChatId::new();
    a_commit_of_b_makes_a_stale_put_of_a_conflict(&a, &b, chat).await;
    drop((a, b));
    let reopened = chatvault_fs::open_url(&format!("file://{}", dir.path().display())).unwrap();
    assert_eq!(
        reopened.get(&[chat], Part::Body).await.unwrap(),
        vec![record(chat, 2)]
    );
    assert_eq!(all_changes(&reopened).await, vec![(chat, 1), (chat, 2)]);
}

/// In the per-device layout each handle writes its own log: a stale
/// precondition still conflicts once the other device's commit is in this
/// copy, and `get` returns each device's current record of the chat (the
/// engine merges them).
#[tokio::test]
async fn per_device_handles_see_each_other_and_get_returns_each_devices_record() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        chatvault_fs::open(dir.path()).unwrap(),
        chatvault_fs::open(dir.path()).unwrap(),
    );
    assert_eq!(a.folder_layout(), FolderLayout::PerDevice);
    let caps = a.capabilities();
    assert!(caps.concurrent_writers && !caps.atomic_preconditions);
    let chat = ChatId::new();
    a_commit_of_b_makes_a_stale_put_of_a_conflict(&a, &b, chat).await;
    let dirs: Vec<String> = std::fs::read_dir(dir.path().join("dev"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs.len(), 2, "one directory per writing device: {dirs:?}");
    let vault = dirs[0].split_once('.').unwrap().0;
    assert!(
        dirs.iter().all(|d| d.starts_with(vault)),
        "one vault: {dirs:?}"
    );
    drop((a, b));
    let reopened = chatvault_fs::open_url(&format!("file://{}", dir.path().display())).unwrap();
    let mut got = reopened.get(&[chat], Part::Body).await.unwrap();
    got.sort_by_key(|r| r.version);
    assert_eq!(got, vec![record(chat, 1), record(chat, 2)]);
    let mut changes = all_changes(&reopened).await;
    changes.sort();
    assert_eq!(changes, vec![(chat, 1), (chat, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_from_separate_handles_commit_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let chat = ChatId::new();
    let handles: Vec<Arc<FsStorage>> = (0..6).map(|_| Arc::new(shared(dir.path()))).collect();
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
    let reader = FsStorageBuilder::new(dir.path())
        .poll_interval(Duration::from_secs(3600))
        .open()
        .unwrap();
    assert!(reader.capabilities().notifications);
    let push = reader
        .notifications()
        .expect("fs offers change notifications");
    let writer = chatvault_fs::open(dir.path()).unwrap();
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
    let storage = FsStorageBuilder::new(dir.path())
        .poll_interval(Duration::from_secs(5))
        .open()
        .unwrap();
    let push = storage.notifications().unwrap();
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
    let storage = shared(dir.path());
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
    let fresh = shared(dir.path());
    assert_eq!(all_changes(&fresh).await, vec![(first, 1), (second, 1)]);
    let mut got = fresh.get(&[first, second], Part::Body).await.unwrap();
    got.sort_by_key(|r| r.chat);
    let mut want = vec![record(first, 1), record(second, 1)];
    want.sort_by_key(|r| r.chat);
    assert_eq!(got, want);
    // Nothing is in flight: a handle with a 1 ms claim delay may compact
    // with a 2 ms horizon once that has passed.
    std::thread::sleep(Duration::from_millis(5));
    FsStorageBuilder::new(dir.path())
        .layout(FolderLayout::SharedLog)
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
    assert_eq!(all_changes(&shared(dir.path())).await.len(), 2);
}

/// The same leftovers in the per-device layout: beside the device
/// directories, inside a device's log, and copies of whole device
/// directories in each service's naming. None fails a pull or adds a
/// record.
#[tokio::test]
async fn leftovers_in_the_per_device_layout_never_fail_a_pull() {
    let dir = tempfile::tempdir().unwrap();
    let storage = chatvault_fs::open(dir.path()).unwrap();
    let first = ChatId::new();
    storage
        .put(record(first, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let dev = dir.path().join("dev");
    let device = std::fs::read_dir(&dev)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let log = device.join("log");
    let entry = std::fs::read(log.join("00000000000000000001")).unwrap();
    for name in [
        "00000000000000000001.sync-conflict-20240101-120000-ABCDEFG",
        "00000000000000000001 (Laptop's conflicted copy 2024-01-01)",
        "00000000000000000001 (conflicted copy 2024-01-01 120000)",
        "00000000000000000001-LAPTOP",
        "00000000000000000001 2",
        ".syncthing.00000000000000000002.tmp",
    ] {
        std::fs::write(log.join(name), &entry).unwrap();
    }
    std::fs::write(dev.join(".DS_Store"), b"x").unwrap();
    std::fs::write(dev.join("notes.txt"), b"x").unwrap();
    let name = device.file_name().unwrap().to_string_lossy().into_owned();
    for copy in [
        format!("{name}.sync-conflict-20240101-120000-ABCDEFG"),
        format!("{name} 2"),
    ] {
        std::fs::create_dir_all(dev.join(copy).join("log")).unwrap();
    }
    let second = ChatId::new();
    storage
        .put(record(second, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let fresh = chatvault_fs::open(dir.path()).unwrap();
    let mut changes = all_changes(&fresh).await;
    changes.sort();
    let mut want = vec![(first, 1), (second, 1)];
    want.sort();
    assert_eq!(changes, want);
    assert_eq!(
        fresh.get(&[first, second], Part::Body).await.unwrap().len(),
        2
    );
}

#[tokio::test]
async fn a_folder_shared_by_a_sync_tool_reports_non_atomic_preconditions() {
    let dir = tempfile::tempdir().unwrap();
    let by_tool = FsStorageBuilder::new(dir.path())
        .layout(FolderLayout::SharedLog)
        .shared_by_sync_tool(true)
        .open()
        .unwrap();
    assert!(!by_tool.capabilities().atomic_preconditions);
    assert!(shared(dir.path()).capabilities().atomic_preconditions);
}

#[tokio::test]
async fn a_path_that_is_a_file_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        chatvault_fs::open(&file),
        Err(Error::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn maintenance_compacts_a_folder_vault_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    // Short, so the test is quick, but with room for a put's fsyncs on a
    // loaded machine: at 50 ms a busy CI disk made a put give up
    // (`Unavailable`, "too busy to commit").
    let claim_delay = Duration::from_millis(400);
    let storage = FsStorageBuilder::new(dir.path())
        .layout(FolderLayout::SharedLog)
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
    let fresh = shared(dir.path());
    assert_eq!(all_changes(&fresh).await.len(), 5);
    assert_eq!(fresh.get(&chats, Part::Body).await.unwrap().len(), 5);
}

/// Sealed blobs live in one `blob/` directory at the folder's root, shared
/// by every device of the per-device layout (and the same one the shared
/// log uses). A file-sync conflict copy of a blob (two devices stored one
/// id before the folder synced) and staging leftovers are not blob names:
/// they are ignored, and the blob that kept its name is read.
#[tokio::test]
async fn blobs_are_shared_by_devices_and_conflict_copies_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let phone = FsStorageBuilder::new(dir.path())
        .layout(FolderLayout::PerDevice)
        .open()
        .unwrap();
    let laptop = FsStorageBuilder::new(dir.path())
        .layout(FolderLayout::PerDevice)
        .open()
        .unwrap();
    let id = chatvault_core::BlobId([0xab; 32]);
    phone
        .put_blob(id, Bytes::from_static(b"sealed by the phone"))
        .await
        .unwrap();
    laptop
        .put_blob(id, Bytes::from_static(b"sealed by the laptop"))
        .await
        .unwrap();
    let fan = dir.path().join("blob").join("ab");
    let name = id.to_hex();
    assert!(fan.join(&name).is_file(), "blob/<2 hex>/<id> at the root");
    std::fs::write(
        fan.join(format!("{name}.sync-conflict-20240101-120000-ABCDEFG")),
        b"sealed by the laptop",
    )
    .unwrap();
    std::fs::write(fan.join(format!("{name} (laptop's conflicted copy)")), b"x").unwrap();
    std::fs::write(fan.join(format!("{name}#7")), b"x").unwrap();
    for device in [&phone, &laptop] {
        assert_eq!(
            device.get_blob(id).await.unwrap(),
            Some(Bytes::from_static(b"sealed by the laptop")),
            "a put replaces the stored sealing (it touches the blob), and both devices read the one in the folder"
        );
        let page = device.list_blobs(None, 10).await.unwrap();
        assert_eq!(page.ids, vec![id]);
        assert_eq!(page.touched_ms.len(), 1, "the touched time is listed");
        assert!(!page.has_more);
    }
    // The shared-log layout of the same folder sees the same blobs.
    let migrated_view = shared(dir.path());
    assert_eq!(
        migrated_view.list_blobs(None, 10).await.unwrap().ids,
        vec![id]
    );
}
