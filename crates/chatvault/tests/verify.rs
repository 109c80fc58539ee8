//! `chatvault::verify` accepts exactly what the engine accepts: a record
//! whose body is another chat's, or whose deleted flag disagrees with its
//! sealed summary, is a problem, while a sound vault has none.

use chatvault::core::envelope::{EnvelopeCipher, Unlock};
use chatvault::core::raw::codec::{encode_chat, encode_summary};
use chatvault::core::raw::open_record;
use chatvault::core::storage::{Cursor, Part, PutPrecondition, SealedRecord};
use chatvault::core::{Aad, Cipher, Clock};
use chatvault::verify::{verify, Finding};
use chatvault::{ChatId, ChatVault, DeviceId, DynStorage, Role};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const PASSPHRASE: &str = "correct horse battery staple";

fn unlock() -> Unlock {
    Unlock::Passphrase(PASSPHRASE.to_string().into())
}

/// A folder vault holding one chat with one message, synced and closed;
/// returns the storage and the replica's path.
async fn one_chat(dir: &Path) -> (DynStorage, PathBuf) {
    let url = format!("file://{}", dir.join("server").display());
    let replica = dir.join("device.redb");
    let vault = ChatVault::builder()
        .storage_url(&url)
        .replica_path(&replica)
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .open()
        .await
        .expect("open");
    let chat = vault.new_chat("sound").await.expect("new chat");
    vault
        .add_message(chat.id, Role::User, "hello")
        .await
        .expect("add");
    vault.sync_now().await.expect("sync");
    vault.close().await;
    (chatvault::open_url(&url).await.expect("storage"), replica)
}

/// The server's only record and the vault's cipher.
async fn the_record(storage: &DynStorage) -> (SealedRecord, Arc<EnvelopeCipher>) {
    let key_file = storage
        .get_keyring()
        .await
        .expect("get")
        .expect("a key file");
    let cipher = Arc::new(EnvelopeCipher::from_key_file(&key_file.bytes, &unlock()).expect("open"));
    let page = storage.changes(&Cursor::start(), 100).await.expect("feed");
    let chat = page.changes.last().expect("one chat").chat;
    let mut records = storage.get(&[chat], Part::Body).await.expect("get");
    (records.pop().expect("its record"), cipher)
}

/// Stores `record` as the next version of its chat (sealed parts must be
/// bound to that version).
async fn put_next(storage: &DynStorage, record: SealedRecord) {
    let current = record.version - 1;
    storage
        .put(record, PutPrecondition::Version(current))
        .await
        .expect("put");
}

/// The next version of the only chat: its summary sealed as it is, its
/// body sealed to it but holding `body` (another chat's state), or with no
/// body and the deleted flag set while the summary says live.
async fn put_inconsistent_record(storage: &DynStorage, body: Option<chatvault::Chat>) {
    let (record, cipher) = the_record(storage).await;
    let opened = open_record(cipher.clone(), cipher.vault(), record.clone())
        .expect("the stored record opens");
    let version = record.version + 1;
    let seal = |part: Part, plain: Vec<u8>| {
        let aad = Aad {
            vault: cipher.vault(),
            chat: record.chat,
            part,
            version,
        };
        cipher.seal(&aad, &plain).expect("seal").into()
    };
    let summary = seal(
        Part::Summary,
        encode_summary(&opened.summary).expect("encode"),
    );
    put_next(
        storage,
        SealedRecord {
            chat: record.chat,
            version,
            deleted: body.is_none(),
            summary,
            body: body.map(|chat| seal(Part::Body, encode_chat(&chat).expect("encode"))),
        },
    )
    .await;
}

fn problems(report: &chatvault::verify::VerifyReport) -> Vec<&str> {
    report
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::Problem(_)))
        .map(Finding::text)
        .collect()
}

#[tokio::test]
async fn a_sound_vault_has_no_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, replica) = one_chat(dir.path()).await;
    let report = verify(&storage, &replica, &unlock()).await.expect("verify");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.server_records, report.replica_records), (1, 1));
}

#[tokio::test]
async fn verify_rejects_what_the_engine_rejects() {
    let clock = Clock::new(DeviceId(9));
    let mut other = chatvault::Chat::new(ChatId::new(), "another chat", clock.tick());
    other.add_message(Role::User, "hello", clock.tick());
    // A body of another chat; a deleted flag its summary contradicts.
    for (body, expected) in [
        (Some(other), "it holds chat"),
        (None, "deleted flag disagrees"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (storage, replica) = one_chat(dir.path()).await;
        put_inconsistent_record(&storage, body).await;
        let report = verify(&storage, &replica, &unlock()).await.expect("verify");
        let problems = problems(&report);
        assert_eq!(problems.len(), 1, "{report:?}");
        assert!(problems[0].contains(expected), "{problems:?}");
    }
}

#[tokio::test]
async fn a_device_without_a_replica_checks_the_server_alone_and_creates_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, _) = one_chat(dir.path()).await;
    let missing = dir.path().join("never-opened.redb");
    let report = verify(&storage, &missing, &unlock()).await.expect("verify");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.server_records, report.replica_records), (1, 0));
    assert!(!missing.exists());
}
