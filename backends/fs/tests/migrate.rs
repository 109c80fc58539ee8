//! Moving a shared-log folder vault to the per-device layout
//! (`FsStorageBuilder::migrate_to_per_device`, `docs/design.md` §5.4): a
//! migration cut at any write finishes when run again, and afterwards the
//! per-device vault holds exactly what the shared log held, older
//! releases stop at the markers, and the shared log takes no commit.

use bytes::Bytes;
use chatvault_core::{
    ChatId, Cursor, Error, Part, PutPrecondition, SealedRecord, Storage, StorageExt,
};
use chatvault_fs::{FolderLayout, FsStorageBuilder, WriterId};
use chatvault_object_store::{
    HookedStore, ObjectStoreOptions, ObjectStoreStorage, StoreHook, StoreOp, MIGRATED_VAULT,
};
use object_store::path::Path;
use object_store::ObjectStore;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Fails the `fail_at`-th write (1-based; 0: none) as a crash would cut it,
/// and every write after it: the process is gone.
#[derive(Debug)]
struct CutAt {
    writes: AtomicUsize,
    fail_at: usize,
}

impl StoreHook for CutAt {
    fn before(&self, op: StoreOp, _: Option<&Path>) -> object_store::Result<()> {
        if !op.writes() {
            return Ok(());
        }
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_at != 0 && n >= self.fail_at {
            return Err(object_store::Error::Generic {
                store: "test",
                source: "the process died here".into(),
            });
        }
        Ok(())
    }

    fn fmt_store(&self, inner: &dyn ObjectStore, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CutAt({inner})")
    }
}

fn record(chat: ChatId, version: u64, deleted: bool) -> SealedRecord {
    SealedRecord {
        chat,
        version,
        deleted,
        summary: Bytes::from(format!("summary {chat} {version}")),
        body: (!deleted).then(|| Bytes::from(format!("body {chat} {version}"))),
    }
}

/// A shared-log vault: a key file at version 2 and `chats` chats, some
/// edited, one deleted. Returns each chat's current record.
async fn shared_vault(dir: &std::path::Path, chats: usize) -> Vec<SealedRecord> {
    let storage = FsStorageBuilder::new(dir)
        .layout(FolderLayout::SharedLog)
        .open()
        .unwrap();
    storage
        .put_keyring(Bytes::from_static(b"key file 1"), PutPrecondition::Absent)
        .await
        .unwrap();
    storage
        .put_keyring(
            Bytes::from_static(b"key file 2"),
            PutPrecondition::Version(1),
        )
        .await
        .unwrap();
    let mut current = Vec::new();
    for i in 0..chats {
        let chat = ChatId::new();
        storage
            .put(record(chat, 1, false), PutPrecondition::Absent)
            .await
            .unwrap();
        let last = match i % 3 {
            0 => record(chat, 1, false),
            1 => {
                storage
                    .put(record(chat, 2, false), PutPrecondition::Version(1))
                    .await
                    .unwrap();
                record(chat, 2, false)
            }
            _ => {
                storage
                    .delete(
                        chat,
                        2,
                        record(chat, 2, true).summary,
                        PutPrecondition::Version(1),
                    )
                    .await
                    .unwrap();
                record(chat, 2, true)
            }
        };
        current.push(last);
    }
    current
}

async fn migrate(
    dir: &std::path::Path,
    fail_at: usize,
) -> chatvault_core::Result<chatvault_fs::MigrationReport> {
    FsStorageBuilder::new(dir)
        .writer(WriterId(7))
        .layer(move |inner| {
            let cut = CutAt {
                writes: AtomicUsize::new(0),
                fail_at,
            };
            Arc::new(HookedStore::new(inner, cut))
        })
        .migrate_to_per_device()
        .await
}

/// What a new device of this release reads from the folder: every chat's
/// records (sorted) and the key file.
async fn read_back(dir: &std::path::Path, chats: &[ChatId]) -> (Vec<SealedRecord>, Bytes, u64) {
    let storage = chatvault_fs::open(dir).unwrap();
    assert_eq!(storage.folder_layout(), FolderLayout::PerDevice);
    let mut records = storage.get(chats, Part::Body).await.unwrap();
    records.sort_by_key(|r| (r.chat, r.version));
    let key = storage.get_keyring().await.unwrap().unwrap();
    let mut cursor = Cursor::start();
    let mut seen = 0;
    loop {
        let page = storage.changes(&cursor, 7).await.unwrap();
        seen += page.changes.len();
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    assert!(seen >= chats.len());
    (records, key.bytes, key.version)
}

#[tokio::test]
async fn a_migration_cut_at_any_write_finishes_when_run_again() {
    // Writes of a full run: the joined file, the key file, one blob and one
    // log slot per batch, the two markers; cut at each of them in turn.
    let template = tempfile::tempdir().unwrap();
    let mut expected = shared_vault(template.path(), 7).await;
    expected.sort_by_key(|r| (r.chat, r.version));
    let chats: Vec<ChatId> = expected.iter().map(|r| r.chat).collect();
    let mut fail_at = 1;
    loop {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let cut = migrate(dir.path(), fail_at).await;
        let finished_first_time = cut.is_ok();
        if let Err(e) = &cut {
            assert!(
                e.is_retriable() || matches!(e, Error::Rejected { .. }),
                "cut at write {fail_at}: {e:?}"
            );
        }
        let report = migrate(dir.path(), 0).await.unwrap();
        assert!(report.sealed_at > 0, "{report:?}");
        let (records, key, version) = read_back(dir.path(), &chats).await;
        assert_eq!(records, expected, "cut at write {fail_at}");
        assert_eq!((key.as_ref(), version), (&b"key file 2"[..], 2));
        let again = migrate(dir.path(), 0).await.unwrap();
        assert!(again.already_moved, "{again:?}");
        if finished_first_time {
            assert!(fail_at > 3, "a run makes more than three writes");
            break;
        }
        fail_at += 1;
        assert!(fail_at < 100, "the migration never finished");
    }
}

#[tokio::test]
async fn after_the_move_older_releases_stop_and_the_shared_log_takes_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    let before = shared_vault(dir.path(), 4).await;
    // A handle of an older release, opened before the move and after it.
    let old = || {
        ObjectStoreStorage::new(
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap()),
            Path::default(),
            ObjectStoreOptions::default(),
        )
    };
    let running = old();
    running.changes(&Cursor::start(), 100).await.unwrap();
    let report = migrate(dir.path(), 0).await.unwrap();
    assert_eq!(report.records, before.len() as u64);
    assert_eq!(report.key_file_version, Some(2));

    let fresh = old();
    let key = fresh.get_keyring().await.unwrap().unwrap();
    assert!(chatvault_object_store::is_marker(&key.bytes));
    let feed = drain_err(&fresh).await;
    assert!(
        matches!(feed, Error::UnsupportedFormat { found: 128, .. }),
        "{feed:?}"
    );
    let chat = ChatId::new();
    let put = running
        .put(record(chat, 1, false), PutPrecondition::Absent)
        .await;
    assert!(
        matches!(put, Err(Error::UnsupportedFormat { found: 128, .. })),
        "a commit after the seal is refused: {put:?}"
    );
    // This release follows the moved vault.
    let dirs: Vec<String> = std::fs::read_dir(dir.path().join("dev"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, vec![format!("{MIGRATED_VAULT}.{}", WriterId(7))]);
}

async fn drain_err(storage: &ObjectStoreStorage) -> Error {
    let mut cursor = Cursor::start();
    loop {
        match storage.changes(&cursor, 100).await {
            Ok(page) if page.has_more => cursor = page.cursor,
            Ok(_) => panic!("the feed of a moved vault ended without an error"),
            Err(e) => return e,
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
