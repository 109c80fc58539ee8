//! A record that does not open is never forgotten: it is kept in the
//! replica and retried until it opens, after an upgrade of chatvault or
//! after another device rotated the vault's data key.

use chatvault::core::engine::{Engine, EngineConfig};
use chatvault::core::envelope::{EnvelopeCipher, KeyProtection};
use chatvault::core::{Aad, Cipher, DeviceId, PutPrecondition, Replica};
use chatvault::{ChatVault, DynStorage, Error, SyncStatus};
use chatvault_conformance::layers::{Fault, FaultyStorage, Op};
use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
use object_store::{memory::InMemory, path::Path as StorePath};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn in_memory() -> DynStorage {
    Arc::new(ObjectStoreStorage::new(
        Arc::new(InMemory::new()),
        StorePath::from("vault"),
        ObjectStoreOptions::default(),
    ))
}

/// An older chatvault: it cannot read what the current build writes.
#[derive(Debug)]
struct OlderBuild {
    current: Arc<EnvelopeCipher>,
    upgraded: AtomicBool,
}

impl Cipher for OlderBuild {
    fn seal(&self, aad: &Aad, plaintext: &[u8]) -> chatvault::Result<Vec<u8>> {
        self.current.seal(aad, plaintext)
    }

    fn open(&self, aad: &Aad, sealed: &[u8]) -> chatvault::Result<Vec<u8>> {
        if self.upgraded.load(Ordering::SeqCst) {
            self.current.open(aad, sealed)
        } else {
            Err(Error::UnsupportedFormat {
                what: "sealed blob".into(),
                found: 2,
                supported: 1,
            })
        }
    }
}

async fn engine(
    storage: &DynStorage,
    replica: &Path,
    cipher: Arc<dyn Cipher>,
    vault: chatvault::VaultId,
) -> Engine {
    engine_with(
        storage,
        replica,
        cipher,
        EngineConfig::new(vault, DeviceId::random()),
    )
    .await
}

async fn engine_with(
    storage: &DynStorage,
    replica: &Path,
    cipher: Arc<dyn Cipher>,
    config: EngineConfig,
) -> Engine {
    let replica = Replica::open(replica).expect("replica");
    Engine::open(storage.clone(), replica, cipher, config)
        .await
        .expect("engine")
}

#[tokio::test]
async fn an_older_build_that_skipped_a_newer_record_gets_it_after_upgrading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = in_memory();
    let keys = Arc::new(EnvelopeCipher::generate(chatvault::VaultId::new()));
    let vault = keys.vault();
    let writer = engine(&storage, &dir.path().join("new.redb"), keys.clone(), vault).await;
    let chat = chatvault::Chat::new(
        chatvault::ChatId::new(),
        "written by a newer build",
        writer.clock().tick(),
    );
    let id = chat.id;
    writer.save_chat(chat).await.expect("save");
    writer.sync_now().await.expect("push");

    let old = Arc::new(OlderBuild {
        current: keys.clone(),
        upgraded: AtomicBool::new(false),
    });
    let reader_path = dir.path().join("old.redb");
    let reader = engine(&storage, &reader_path, old.clone(), vault).await;
    let report = reader
        .sync_now()
        .await
        .expect("the rest of the vault syncs");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(reader.status(), SyncStatus::Incomplete { skipped: 1 });
    assert!(reader.summary(id).is_none());
    // The cursor has moved past it: a plain pull no longer sees it...
    let again = reader.sync_now().await.expect("sync");
    assert!(again.skipped.is_empty(), "{again:?}");
    drop(reader);

    // ...but the replica remembers, and the upgraded build retries it.
    old.upgraded.store(true, Ordering::SeqCst);
    let upgraded = engine(&storage, &reader_path, old, vault).await;
    upgraded.sync_now().await.expect("sync after the upgrade");
    assert_eq!(
        upgraded.summary(id).map(|s| s.title),
        Some("written by a newer build".to_string())
    );
    assert!(upgraded.skipped().expect("skipped").is_empty());
    assert_eq!(upgraded.status(), SyncStatus::Synced);
}

async fn device(storage: &DynStorage, dir: &Path, name: &str) -> ChatVault {
    ChatVault::builder()
        .storage(storage.clone())
        .replica_path(dir.join(format!("{name}.redb")))
        .passphrase("rotation")
        .scrypt_work_factor(4)
        .open()
        .await
        .expect("open")
}

#[tokio::test]
async fn a_running_device_rereads_the_keyring_for_a_record_under_a_new_key_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = in_memory();
    let laptop = device(&storage, dir.path(), "laptop").await;
    let phone = device(&storage, dir.path(), "phone").await;
    laptop.new_chat("before the rotation").await.expect("save");
    laptop.sync_now().await.expect("sync");
    phone.sync_now().await.expect("sync");
    assert_eq!(phone.sidebar().len(), 1);

    // The laptop rotates the data key and stores the new key file.
    let new_key = rotate_and_store(&laptop, &storage).await;
    let after = laptop.new_chat("after the rotation").await.expect("save");
    laptop.sync_now().await.expect("sync");

    // The phone, still running, meets a record under a key id it lacks.
    let report = phone.sync_now().await.expect("sync");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(phone.cipher().current_key_id(), new_key);
    assert_eq!(phone.sidebar().len(), 2);
    assert_eq!(
        phone
            .load_full_chat(after.id)
            .await
            .expect("the new-key chat opens")
            .title(),
        "after the rotation"
    );
    assert!(phone.engine().skipped().expect("skipped").is_empty());
}

/// Rotates the vault's data key on `laptop` and stores the new key file;
/// returns the new key id.
async fn rotate_and_store(laptop: &ChatVault, storage: &DynStorage) -> u32 {
    let new_key = laptop.cipher().rotate();
    let protection =
        KeyProtection::for_passphrase("rotation".to_string().into()).with_work_factor(4);
    let key_file = laptop.cipher().to_key_file(&protection).expect("key file");
    let current = storage
        .get_keyring()
        .await
        .expect("keyring")
        .expect("stored");
    storage
        .put_keyring(key_file.into(), PutPrecondition::Version(current.version))
        .await
        .expect("store the rotated key file");
    new_key
}

#[tokio::test]
async fn a_manual_sync_retries_a_record_skipped_while_the_keyring_could_not_be_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = in_memory();
    let laptop = device(&storage, dir.path(), "laptop").await;
    let link = FaultyStorage::new(storage.clone());
    let phone_storage: DynStorage = link.clone();
    let phone = device(&phone_storage, dir.path(), "phone").await;
    let new_key = rotate_and_store(&laptop, &storage).await;
    let after = laptop.new_chat("after the rotation").await.expect("save");
    laptop.sync_now().await.expect("sync");

    // The phone pulls the record under the new key id, but the keyring
    // re-read fails: the record is kept in the skipped table with a backoff.
    link.fail_op(Op::GetKeyring, Fault::Unavailable);
    phone
        .sync_now()
        .await
        .expect_err("the keyring re-read fails");
    assert_eq!(phone.engine().skipped().expect("skipped").len(), 1);

    // Back online, a manual sync does not wait out the backoff: it re-reads
    // the keyring and opens the record at once.
    link.heal();
    let report = phone.sync_now().await.expect("sync");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(phone.cipher().current_key_id(), new_key);
    assert!(phone.engine().skipped().expect("skipped").is_empty());
    assert_eq!(
        phone
            .load_full_chat(after.id)
            .await
            .expect("the new-key chat opens")
            .title(),
        "after the rotation"
    );
    assert_eq!(phone.status(), SyncStatus::Synced);
}

/// A device that holds none of the vault's current data keys: every record
/// is under an unknown key id.
#[derive(Debug)]
struct MissingKey(Arc<EnvelopeCipher>);

impl Cipher for MissingKey {
    fn seal(&self, aad: &Aad, plaintext: &[u8]) -> chatvault::Result<Vec<u8>> {
        self.0.seal(aad, plaintext)
    }

    fn open(&self, _: &Aad, _: &[u8]) -> chatvault::Result<Vec<u8>> {
        Err(Error::UnknownKeyId { key_id: 7 })
    }
}

/// Counts keyring re-reads; never finds a new key.
#[derive(Debug, Default)]
struct CountingRefresh(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl chatvault::core::engine::KeyringSource for CountingRefresh {
    async fn reread(&self) -> chatvault::Result<Option<chatvault::core::engine::KeyringUpdate>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(None)
    }
}

#[tokio::test]
async fn the_keyring_is_reread_at_most_once_per_round() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = in_memory();
    let keys = Arc::new(EnvelopeCipher::generate(chatvault::VaultId::new()));
    let vault = keys.vault();
    let writer = engine(
        &storage,
        &dir.path().join("writer.redb"),
        keys.clone(),
        vault,
    )
    .await;
    let save = |title: &'static str| {
        let writer = writer.clone();
        async move {
            let chat = chatvault::Chat::new(chatvault::ChatId::new(), title, writer.clock().tick());
            writer.save_chat(chat).await.expect("save");
            writer.sync_now().await.expect("push");
        }
    };
    save("first").await;

    let refresh = Arc::new(CountingRefresh::default());
    let mut config = EngineConfig::new(vault, DeviceId::random());
    config.keyring = Some(refresh.clone());
    let reader = engine_with(
        &storage,
        &dir.path().join("reader.redb"),
        Arc::new(MissingKey(keys)),
        config,
    )
    .await;
    let report = reader.sync_now().await.expect("sync");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(refresh.0.load(Ordering::SeqCst), 1);

    // A manual sync retries the first record at once, and a second record
    // under an unknown key arrives: one round, both need the keyring, one
    // read.
    save("second").await;
    let report = reader.sync_now().await.expect("sync");
    assert_eq!(
        report.skipped.len(),
        1,
        "only the new record is reported: {report:?}"
    );
    assert_eq!(reader.skipped().expect("skipped").len(), 2);
    assert_eq!(refresh.0.load(Ordering::SeqCst), 2);
}
