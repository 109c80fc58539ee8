//! A record that grows past the backend's size limit outside a save (a
//! merge with another device's edits, a re-seal with more padding, a queued
//! change re-sealed before a push) is reported for its chat alone: it never
//! enters the outbox, and every other chat syncs on (issue 19 item 5).

use chatvault::core::envelope::Padding;
use chatvault::{ChatVault, DynStorage, Role};
use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use std::path::Path;
use std::sync::Arc;

/// One in-memory server seen through a backend that accepts records up to
/// `limit` bytes (several views of one store may have different limits).
fn view(server: &Arc<InMemory>, limit: usize) -> DynStorage {
    Arc::new(ObjectStoreStorage::new(
        server.clone(),
        StorePath::from("vault"),
        ObjectStoreOptions::default().with_max_record_bytes(limit),
    ))
}

async fn device(storage: DynStorage, dir: &Path, name: &str, padding: Padding) -> ChatVault {
    ChatVault::builder()
        .storage(storage)
        .replica_path(dir.join(format!("{name}.redb")))
        .passphrase("size limit tests")
        .scrypt_work_factor(4)
        .padding(padding)
        .open()
        .await
        .expect("open")
}

/// Every change queued on `vault` fits the backend's limit.
fn queued_sizes(vault: &ChatVault) -> Vec<usize> {
    vault
        .engine()
        .replica()
        .due(None, None, usize::MAX)
        .expect("outbox")
        .iter()
        .map(|(_, record)| record.size())
        .collect()
}

#[tokio::test]
async fn a_merge_that_outgrows_the_limit_is_reported_for_its_chat_and_the_others_sync() {
    const LIMIT: usize = 4096;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Arc::new(InMemory::new());
    let a = device(view(&server, LIMIT), dir.path(), "a", Padding::Off).await;
    let b = device(view(&server, LIMIT), dir.path(), "b", Padding::Off).await;
    let big = a.new_chat("big").await.expect("save");
    let small = a.new_chat("small").await.expect("save");
    a.sync_now().await.expect("push");
    b.sync_now().await.expect("pull");
    b.load_full_chat(big.id).await.expect("b holds the body");

    // Each device adds 2 KB to the same chat while apart: each fits, the
    // merge of both does not.
    a.add_message(big.id, Role::User, "a".repeat(2000))
        .await
        .expect("fits");
    a.sync_now().await.expect("push");
    b.add_message(big.id, Role::User, "b".repeat(2000))
        .await
        .expect("fits");
    b.rename(small.id, "small, renamed on b")
        .await
        .expect("rename");
    let other = b.new_chat("new on b").await.expect("save");

    let _ = b.sync_now().await;
    let _ = b.sync_now().await;
    assert!(
        queued_sizes(&b).iter().all(|size| *size <= LIMIT),
        "an over-limit merge entered the outbox: {:?}",
        queued_sizes(&b)
    );
    // The other chats went on.
    a.sync_now().await.expect("pull");
    assert_eq!(
        a.load_full_chat(small.id).await.expect("open").title(),
        "small, renamed on b"
    );
    assert_eq!(
        a.load_full_chat(other.id).await.expect("open").title(),
        "new on b"
    );
    // Nothing of b's is lost: its message is still there, still queued,
    // and the chat is reported.
    let on_b = b.load_full_chat(big.id).await.expect("open");
    assert!(on_b
        .messages()
        .iter()
        .any(|m| m.content().starts_with("bbbb")));
    assert_eq!(b.pending_changes().expect("outbox"), 1);
    let reported = b.engine().skipped().expect("skipped");
    assert!(
        reported.iter().any(|s| s.chat == big.id),
        "the chat is reported: {reported:?}"
    );
}

#[tokio::test]
async fn a_chat_that_outgrows_the_limit_when_resealed_is_named_and_the_others_are_resealed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Arc::new(InMemory::new());
    // Written unpadded through a backend with a large limit.
    let writer = device(view(&server, 1 << 20), dir.path(), "writer", Padding::Off).await;
    let big = writer.new_chat("big").await.expect("save");
    writer
        .add_message(big.id, Role::User, "x".repeat(3000))
        .await
        .expect("save");
    let mut others = Vec::new();
    for i in 0..3 {
        others.push(
            writer
                .new_chat(format!("small {i}"))
                .await
                .expect("save")
                .id,
        );
    }
    writer.sync_now().await.expect("push");
    let big_size = writer
        .engine()
        .replica()
        .record(big.id, true)
        .expect("replica")
        .expect("stored")
        .size();
    writer.rotate_key().await.expect("rotate");

    // The re-sealing device pads (the default), and its backend takes the
    // big chat as it is written, but not one byte more.
    let resealer = device(
        view(&server, big_size),
        dir.path(),
        "resealer",
        Padding::default(),
    )
    .await;
    resealer.sync_now().await.expect("pull");
    let report = resealer.reseal_stale(1).await.expect("re-seal");
    assert_eq!(report.resealed, 1, "{report:?}");
    let report = resealer.reseal_stale(100).await.expect("re-seal the rest");
    assert_eq!(report.remaining, 1, "only the big chat is left: {report:?}");
    assert!(
        report
            .refused
            .iter()
            .any(|(chat, why)| *chat == big.id && why.contains("limit")),
        "{report:?}"
    );
    assert!(queued_sizes(&resealer).iter().all(|size| *size <= big_size));
    resealer.sync_now().await.expect("push the re-sealed chats");
    let again = resealer.reseal_stale(100).await.expect("once more");
    assert_eq!((again.resealed, again.remaining), (0, 1), "{again:?}");
    let fresh = device(view(&server, 1 << 20), dir.path(), "fresh", Padding::Off).await;
    fresh.sync_now().await.expect("pull");
    for id in others.iter().chain([&big.id]) {
        fresh.load_full_chat(*id).await.expect("every chat opens");
    }
}

#[tokio::test]
async fn a_queued_change_that_outgrows_the_limit_when_restaged_does_not_stop_the_push() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Arc::new(InMemory::new());
    let limit = 4096;
    let laptop = device(view(&server, 1 << 20), dir.path(), "laptop", Padding::Off).await;
    let phone = device(view(&server, limit), dir.path(), "phone", Padding::Off).await;
    let big = phone.new_chat("big").await.expect("save");
    phone.sync_now().await.expect("push");
    // Queued on the phone under key 1, unpadded, just under the limit.
    let mut text = "y".repeat(4000);
    loop {
        match phone.add_message(big.id, Role::User, text.clone()).await {
            Ok(_) => break,
            Err(chatvault::Error::TooLarge { .. }) => text.truncate(text.len() - 20),
            Err(e) => panic!("{e}"),
        }
    }
    let small = phone.new_chat("small").await.expect("save");
    assert_eq!(phone.pending_changes().expect("outbox"), 2);

    // The key rotates on the laptop; the phone adopts it and from now on
    // pads what it seals: re-sealed before the push, the big change no
    // longer fits.
    laptop.sync_now().await.expect("pull");
    let key = laptop.rotate_key().await.expect("rotate");
    phone.cipher().set_padding(Padding::default());
    phone.refresh_keys().await.expect("adopt the new key");
    assert_eq!(phone.cipher().current_key_id(), key);

    let _ = phone.sync_now().await;
    laptop.sync_now().await.expect("pull");
    assert_eq!(
        laptop
            .load_full_chat(small.id)
            .await
            .expect("the small change landed")
            .title(),
        "small"
    );
    assert!(queued_sizes(&phone).iter().all(|size| *size <= limit));
    assert_eq!(
        phone.pending_changes().expect("outbox"),
        1,
        "the big change stays queued"
    );
}
