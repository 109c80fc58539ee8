//! The facade over the default (folder) backend: opening and unlocking,
//! offline use, the outbox, request costs, the cache bound, exports.

use chatvault::core::envelope::ExportTarget;
use chatvault::{ChatVault, DynStorage, Error, Role};
use chatvault_conformance::layers::{CountingStorage, Fault, FaultyStorage, Op};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

const PASSPHRASE: &str = "facade tests";

fn folder(dir: &Path) -> DynStorage {
    Arc::new(chatvault_fs::open(dir.join("server")).expect("open the folder backend"))
}

async fn open(
    storage: DynStorage,
    replica: &Path,
    passphrase: &str,
) -> chatvault::Result<ChatVault> {
    ChatVault::builder()
        .storage(storage)
        .replica_path(replica)
        .passphrase(passphrase)
        .scrypt_work_factor(4)
        .open()
        .await
}

#[tokio::test]
async fn opening_without_storage_replica_or_key_is_invalid_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ChatVault::builder()
            .replica_path(dir.path().join("r.redb"))
            .passphrase("p"),
        ChatVault::builder()
            .storage(folder(dir.path()))
            .passphrase("p"),
        ChatVault::builder()
            .storage(folder(dir.path()))
            .replica_path(dir.path().join("r.redb")),
    ];
    for builder in cases {
        let err = builder
            .open()
            .await
            .expect_err("an incomplete builder must not open");
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    }
    let err = open(folder(dir.path()), &dir.path().join("r.redb"), "")
        .await
        .expect_err("an empty passphrase must not create a vault");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
}

#[tokio::test]
async fn a_replica_of_another_vault_is_refused_and_left_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = dir.path().join("device.redb");
    let first = open(folder(dir.path()), &replica, PASSPHRASE)
        .await
        .expect("first vault");
    let chat = first.new_chat("Mine").await.expect("save");
    first.close().await;

    let other = tempfile::tempdir().expect("tempdir");
    let err = open(folder(other.path()), &replica, PASSPHRASE)
        .await
        .expect_err("a replica of another vault must be refused");
    assert!(
        matches!(err, Error::InvalidInput { ref message } if message.contains("belongs to vault")),
        "{err}"
    );

    let again = open(folder(dir.path()), &replica, PASSPHRASE)
        .await
        .expect("reopen");
    assert_eq!(
        again.sidebar().iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![chat.id]
    );
}

#[tokio::test]
async fn a_device_that_unlocked_once_opens_offline_from_its_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = dir.path().join("device.redb");
    let online = open(folder(dir.path()), &replica, PASSPHRASE)
        .await
        .expect("open");
    let chat = online.new_chat("Readable offline").await.expect("save");
    online
        .add_message(chat.id, Role::User, "hello")
        .await
        .expect("add");
    online.close().await;

    let offline = FaultyStorage::new(folder(dir.path()));
    offline.fail_all(Fault::Unavailable);
    let err = open(offline.clone(), &replica, "wrong")
        .await
        .expect_err("wrong passphrase");
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    let vault = open(offline.clone(), &replica, PASSPHRASE)
        .await
        .expect("offline open");
    assert_eq!(vault.sidebar()[0].title, "Readable offline");
    let full = vault
        .load_full_chat(chat.id)
        .await
        .expect("body from the replica");
    assert_eq!(full.messages()[0].content(), "hello");
    vault
        .add_message(chat.id, Role::User, "written offline")
        .await
        .expect("offline write");
    assert_eq!(
        vault.load_sidebar().await.expect("offline sidebar").len(),
        1
    );
    assert_eq!(vault.pending_changes().expect("pending"), 1);
}

#[tokio::test]
async fn a_never_unlocked_device_cannot_open_while_the_backend_is_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let offline = FaultyStorage::new(folder(dir.path()));
    offline.fail_all(Fault::Unavailable);
    let err = open(offline, &dir.path().join("new.redb"), PASSPHRASE)
        .await
        .expect_err("no key file anywhere");
    assert!(err.is_retriable(), "{err}");
}

#[tokio::test]
async fn pending_saves_of_one_chat_collapse_to_one_push() {
    let dir = tempfile::tempdir().expect("tempdir");
    let network = FaultyStorage::new(folder(dir.path()));
    let vault = open(network.clone(), &dir.path().join("r.redb"), PASSPHRASE)
        .await
        .expect("open");
    let chat = vault.new_chat("Chatty").await.expect("save");
    network.fail_all(Fault::Unavailable);
    for i in 0..10 {
        vault
            .add_message(chat.id, Role::User, format!("m{i}"))
            .await
            .expect("add");
    }
    assert_eq!(vault.pending_changes().expect("pending"), 1);
    network.heal();
    let report = vault.sync_now().await.expect("sync");
    assert_eq!(report.pushed, 1);
    assert_eq!(report.pending, 0);
}

#[tokio::test]
async fn an_idle_sync_costs_one_changes_request_whatever_the_vault_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counting = Arc::new(CountingStorage::new(folder(dir.path())));
    let storage: DynStorage = counting.clone();
    let vault = open(storage, &dir.path().join("r.redb"), PASSPHRASE)
        .await
        .expect("open");
    for i in 0..200 {
        vault.new_chat(format!("chat {i}")).await.expect("save");
    }
    vault.sync_now().await.expect("first sync");
    vault.sync_now().await.expect("echo of our own pushes");
    counting.counter().reset();
    vault.sync_now().await.expect("idle sync");
    let calls: Vec<(String, u64)> = counting
        .counter()
        .snapshot()
        .into_iter()
        .map(|(op, count)| (op, count.calls))
        .filter(|(_, calls)| *calls > 0)
        .collect();
    assert_eq!(calls, vec![(Op::Changes.name().to_string(), 1)]);
}

#[tokio::test]
async fn editing_a_chat_whose_body_was_never_loaded_keeps_the_other_devices_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(folder(dir.path()), &dir.path().join("a.redb"), PASSPHRASE)
        .await
        .expect("a");
    let chat = a.new_chat("Long").await.expect("save");
    a.add_message(chat.id, Role::User, "from a")
        .await
        .expect("add");
    a.sync_now().await.expect("sync a");
    let b = open(folder(dir.path()), &dir.path().join("b.redb"), PASSPHRASE)
        .await
        .expect("b");
    b.load_sidebar().await.expect("sidebar only");
    assert!(b.chat(chat.id).is_none(), "the body is not loaded yet");
    b.add_message(chat.id, Role::User, "from b")
        .await
        .expect("add on b");
    b.sync_now().await.expect("sync b");
    a.sync_now().await.expect("sync a again");
    let texts: Vec<String> = a
        .load_full_chat(chat.id)
        .await
        .expect("load")
        .messages()
        .iter()
        .map(|m| m.content().to_string())
        .collect();
    assert_eq!(texts, vec!["from a", "from b"]);
}

#[tokio::test]
async fn missing_chats_and_messages_are_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = open(folder(dir.path()), &dir.path().join("r.redb"), PASSPHRASE)
        .await
        .expect("open");
    let unknown = chatvault::ChatId::new();
    assert!(matches!(
        vault.delete_chat(unknown).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        vault.rename(unknown, "x").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        vault.load_full_chat(unknown).await,
        Err(Error::NotFound { .. })
    ));
    let chat = vault.new_chat("c").await.expect("save");
    let missing = chatvault::MessageId::new();
    assert!(matches!(
        vault.delete_message(chat.id, missing).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        vault.edit_message(chat.id, missing, "x").await,
        Err(Error::NotFound { .. })
    ));
    vault.delete_chat(chat.id).await.expect("delete");
    assert!(matches!(
        vault.add_message(chat.id, Role::User, "late").await,
        Err(Error::NotFound { .. })
    ));
    assert!(vault.sidebar().is_empty());
}

#[tokio::test]
async fn the_full_chat_cache_stays_within_its_byte_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bound = 64 * 1024;
    let vault = ChatVault::builder()
        .storage(folder(dir.path()))
        .replica_path(dir.path().join("r.redb"))
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .cache_bytes(bound)
        .open()
        .await
        .expect("open");
    let text = "x".repeat(1000);
    let mut ids = Vec::new();
    for i in 0..40 {
        let chat = vault.new_chat(format!("chat {i}")).await.expect("save");
        for _ in 0..8 {
            vault
                .add_message(chat.id, Role::User, text.clone())
                .await
                .expect("add");
        }
        ids.push(chat.id);
    }
    for id in &ids {
        assert_eq!(
            vault
                .load_full_chat(*id)
                .await
                .expect("load")
                .message_count(),
            8
        );
    }
    let cached = vault.engine().cached_bytes();
    assert!(
        cached > 0 && cached <= bound,
        "cache holds {cached} bytes, bound {bound}"
    );
}

#[tokio::test]
async fn an_identity_creates_and_unlocks_a_vault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = age::x25519::Identity::generate();
    let open_with = |replica: &str, identity: age::x25519::Identity| {
        ChatVault::builder()
            .storage(folder(dir.path()))
            .replica_path(dir.path().join(replica))
            .identity(identity)
            .open()
    };
    let a = open_with("a.redb", identity.clone()).await.expect("create");
    a.new_chat("By key").await.expect("save");
    a.sync_now().await.expect("sync");
    let b = open_with("b.redb", identity).await.expect("unlock");
    assert_eq!(b.load_sidebar().await.expect("sidebar")[0].title, "By key");
    let err = open_with("c.redb", age::x25519::Identity::generate())
        .await
        .expect_err("another identity");
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
}

#[tokio::test]
async fn an_age_export_decrypts_to_every_chat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(folder(dir.path()), &dir.path().join("a.redb"), PASSPHRASE)
        .await
        .expect("a");
    let chat = a.new_chat("Exported").await.expect("save");
    a.add_message(chat.id, Role::User, "secret text")
        .await
        .expect("add");
    a.sync_now().await.expect("sync");
    // The exporting device never loaded the body: the export fetches it.
    let b = open(folder(dir.path()), &dir.path().join("b.redb"), PASSPHRASE)
        .await
        .expect("b");
    b.load_sidebar().await.expect("sidebar");
    let backup = age::x25519::Identity::generate();
    let file = b
        .export_age(&ExportTarget::Recipients(vec![backup.to_public()]))
        .await
        .expect("export");
    let decryptor = age::Decryptor::new(&file[..]).expect("an age file");
    let mut json = Vec::new();
    decryptor
        .decrypt(std::iter::once(&backup as &dyn age::Identity))
        .expect("decrypts")
        .read_to_end(&mut json)
        .expect("read");
    let export: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(export["format"], chatvault::EXPORT_FORMAT);
    assert_eq!(export["chats"].as_array().map(Vec::len), Some(1));
    let text = String::from_utf8(json).expect("utf-8");
    assert!(
        text.contains("Exported") && text.contains("secret text"),
        "{text}"
    );
}

#[tokio::test]
async fn a_corrupt_replica_file_fails_open_with_a_local_error_and_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = dir.path().join("r.redb");
    let garbage = vec![0xA5u8; 8192];
    std::fs::write(&replica, &garbage).expect("write");
    let err = open(folder(dir.path()), &replica, PASSPHRASE)
        .await
        .expect_err("a corrupt replica must not open");
    assert!(matches!(err, Error::Local { .. }), "{err}");
    assert_eq!(std::fs::read(&replica).expect("read"), garbage);
}

#[tokio::test]
async fn start_sync_outside_a_runtime_is_invalid_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = open(folder(dir.path()), &dir.path().join("r.redb"), PASSPHRASE)
        .await
        .expect("open");
    let result = std::thread::scope(|s| {
        s.spawn(|| vault.start_sync(std::time::Duration::from_secs(5)))
            .join()
            .expect("thread")
    });
    assert!(
        matches!(result, Err(Error::InvalidInput { .. })),
        "{result:?}"
    );
    assert!(!vault.is_syncing());
}

#[tokio::test]
async fn message_tombstones_older_than_the_horizon_are_dropped_on_the_next_save() {
    use chatvault::core::{Clock, Hlc};
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = open(folder(dir.path()), &dir.path().join("r.redb"), PASSPHRASE)
        .await
        .expect("open");
    let long_ago = |ms| Hlc::new(ms, 0, chatvault::DeviceId(9));
    let mut chat = chatvault::Chat::new(chatvault::ChatId::new(), "Old", long_ago(1));
    let ancient = chat.add_message(Role::User, "deleted long ago", long_ago(2));
    chat.delete_message(ancient, long_ago(3));
    let recent = chat.add_message(
        Role::User,
        "deleted just now",
        Clock::new(chatvault::DeviceId(9)).tick(),
    );
    chat.delete_message(recent, Clock::new(chatvault::DeviceId(9)).tick());
    let saved = vault.save_chat(chat).await.expect("save");
    assert!(
        !saved.messages.contains_key(&ancient),
        "the old tombstone was kept"
    );
    assert!(
        saved.messages.contains_key(&recent),
        "a recent tombstone was dropped"
    );
    assert!(saved.messages[&recent].is_deleted());
}

#[tokio::test]
async fn deleting_a_chat_known_only_by_its_summary_reaches_the_other_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(folder(dir.path()), &dir.path().join("a.redb"), PASSPHRASE)
        .await
        .expect("a");
    let chat = a.new_chat("Doomed").await.expect("save");
    a.add_message(chat.id, Role::User, "text")
        .await
        .expect("add");
    a.sync_now().await.expect("sync a");
    let b = open(folder(dir.path()), &dir.path().join("b.redb"), PASSPHRASE)
        .await
        .expect("b");
    b.load_sidebar().await.expect("sidebar only");
    let mut events = a.changes();
    b.delete_chat(chat.id)
        .await
        .expect("delete without the body");
    b.sync_now().await.expect("sync b");
    a.sync_now().await.expect("sync a again");
    assert!(a.sidebar().is_empty());
    assert!(matches!(
        a.load_full_chat(chat.id).await,
        Err(Error::NotFound { .. })
    ));
    let mut deleted = false;
    while let Ok(event) = events.try_recv() {
        deleted |= event == chatvault::Event::ChatDeleted(chat.id);
    }
    assert!(deleted, "no ChatDeleted event on the other device");
}
