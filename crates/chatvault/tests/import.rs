//! Batched saves: an import commits every chat in one local transaction,
//! lands whole or not at all, and reaches other devices like single saves.

use chatvault::core::Clock;
use chatvault::{Chat, ChatId, ChatVault, DeviceId, DynStorage, Error, Role};
use chatvault_conformance::layers::{CountingStorage, Op};
use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use std::path::Path;
use std::sync::Arc;

fn memory(limit: usize) -> DynStorage {
    Arc::new(ObjectStoreStorage::new(
        Arc::new(InMemory::new()),
        StorePath::from("vault"),
        ObjectStoreOptions::default().with_max_record_bytes(limit),
    ))
}

async fn open(storage: DynStorage, replica: &Path) -> ChatVault {
    ChatVault::builder()
        .storage(storage)
        .replica_path(replica)
        .passphrase("import tests")
        .scrypt_work_factor(4)
        .open()
        .await
        .expect("open")
}

fn exported(clock: &Clock, n: usize) -> Vec<Chat> {
    (0..n)
        .map(|i| {
            let mut chat = Chat::new(ChatId::new(), format!("imported {i}"), clock.tick());
            chat.add_message(Role::User, format!("message of chat {i}"), clock.tick());
            chat
        })
        .collect()
}

#[tokio::test]
async fn an_import_commits_every_chat_at_once_and_reaches_another_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = memory(1 << 20);
    let importer = open(storage.clone(), &dir.path().join("a.redb")).await;
    let existing = importer.new_chat("already here").await.expect("save");
    let mut edited = (*existing).clone();
    let clock = Clock::new(DeviceId(77));
    edited.add_message(Role::User, "from the export", clock.tick());
    let mut chats = exported(&clock, 50);
    chats.push(edited);

    let mut done = 0;
    let report = importer
        .import_chats(chats.clone(), |n| done += n)
        .await
        .expect("import");
    assert_eq!((report.added, report.updated, report.unchanged), (50, 1, 0));
    assert_eq!(done, 51, "progress counts every chat");
    let merged = importer
        .load_full_chat(chats[50].id)
        .await
        .expect("the edited chat");
    assert_eq!(merged.message_count(), 1, "merged with the stored chat");
    assert_eq!(importer.sidebar().len(), 51);
    assert_eq!(importer.pending_changes().expect("outbox"), 51);

    let counting = Arc::new(CountingStorage::new(storage.clone()));
    let other = open(counting.clone(), &dir.path().join("b.redb")).await;
    importer.sync_now().await.expect("push");
    other.sync_now().await.expect("pull");
    assert_eq!(other.sidebar().len(), 51);
    let chat = other.load_full_chat(chats[7].id).await.expect("load");
    assert_eq!(chat.messages()[0].content(), "message of chat 7");
    let gets = counting.calls(Op::Get);
    assert!(gets <= 2, "{gets} gets for 51 chats and one body");
}

#[tokio::test]
async fn an_import_with_one_chat_too_large_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = open(memory(4096), &dir.path().join("a.redb")).await;
    let clock = Clock::new(DeviceId(77));
    let mut chats = exported(&clock, 10);
    chats[5].add_message(Role::Assistant, "z".repeat(10_000), clock.tick());
    let err = vault
        .import_chats(chats, |_| {})
        .await
        .expect_err("a chat over the limit must fail the import");
    assert!(matches!(err, Error::TooLarge { limit: 4096, .. }), "{err}");
    assert!(vault.sidebar().is_empty(), "no chat of the batch is shown");
    assert_eq!(vault.pending_changes().expect("outbox"), 0);
    let report = vault.sync_now().await.expect("sync");
    assert_eq!(report.pushed, 0);
}
