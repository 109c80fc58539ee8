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

/// A chat and a message the vault holds, and an export (from an untrusted
/// file) that deletes both.
async fn deleting_export(vault: &ChatVault) -> (ChatId, ChatId, Vec<Chat>) {
    let doomed = vault.new_chat("kept unless asked").await.expect("save");
    let kept = vault.new_chat("its message stays").await.expect("save");
    let message = vault
        .add_message(kept.id, Role::User, "do not delete me")
        .await
        .expect("message");
    let clock = Clock::new(DeviceId(66));
    clock.observe(vault.engine().clock().tick());
    let tombstone = Chat::tombstone(doomed.id, doomed.created, clock.tick());
    let mut edited = (*vault.load_full_chat(kept.id).await.expect("load")).clone();
    assert!(edited.delete_message(message, clock.tick()));
    (doomed.id, kept.id, vec![tombstone, edited])
}

#[tokio::test]
async fn an_import_never_deletes_chats_or_messages_unless_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = open(memory(1 << 20), &dir.path().join("a.redb")).await;
    let (doomed, kept, export) = deleting_export(&vault).await;
    let report = vault
        .import_chats(export.clone(), |_| {})
        .await
        .expect("import");
    assert_eq!(report.deletions_ignored, 2, "{report:?}");
    assert_eq!(vault.sidebar().len(), 2, "no chat deleted");
    let chat = vault.load_full_chat(kept).await.expect("load");
    assert_eq!(chat.message_count(), 1, "no message deleted");
    assert!(vault.load_full_chat(doomed).await.is_ok());

    let report = vault
        .import_chats_with(
            export,
            chatvault::ImportOptions {
                apply_deletions: true,
            },
            |_| {},
        )
        .await
        .expect("import applying deletions");
    assert_eq!(report.deletions_ignored, 0, "{report:?}");
    assert_eq!(vault.sidebar().len(), 1, "asked for: the chat is deleted");
    let chat = vault.load_full_chat(kept).await.expect("load");
    assert_eq!(chat.message_count(), 0, "asked for: the message is deleted");
}

#[tokio::test]
async fn an_import_with_times_far_in_the_future_is_refused_and_moves_no_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = open(memory(1 << 20), &dir.path().join("a.redb")).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    for far in [u64::MAX, now + 3 * 24 * 3600 * 1000] {
        let stamp = chatvault::core::Hlc::new(far, 0, DeviceId(0));
        let mut chat = Chat::new(
            ChatId::new(),
            "from the year 3000",
            Clock::new(DeviceId(5)).tick(),
        );
        chat.add_message(Role::User, "pinned", stamp);
        let err = vault
            .import_chats(vec![chat], |_| {})
            .await
            .expect_err("a time days ahead must be refused");
        assert!(
            matches!(err, Error::InvalidInput { ref message } if message.contains("future")),
            "{err}"
        );
    }
    assert!(vault.sidebar().is_empty(), "nothing imported");
    let tick = vault.engine().clock().tick();
    assert!(
        tick.millis < now + 3600 * 1000,
        "the clock was moved: {tick:?}"
    );
    // A little ahead (another device's clock skew) is fine.
    let mut chat = Chat::new(
        ChatId::new(),
        "slightly ahead",
        Clock::new(DeviceId(5)).tick(),
    );
    chat.add_message(
        Role::User,
        "skewed",
        chatvault::core::Hlc::new(now + 60 * 1000, 0, DeviceId(0)),
    );
    vault
        .import_chats(vec![chat], |_| {})
        .await
        .expect("a minute ahead is accepted");
}
