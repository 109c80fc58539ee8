//! A device that opens the vault again refuses a key file from the server
//! that rolls back the one it last trusted (issue 15 item 7).

use chatvault::core::envelope::KeyProtection;
use chatvault::core::PutPrecondition;
use chatvault::{ChatVault, DynStorage, Error};
use std::path::Path;
use std::sync::Arc;

fn folder(dir: &Path) -> DynStorage {
    Arc::new(chatvault_fs::open(dir.join("server")).expect("open the folder backend"))
}

async fn open(storage: DynStorage, replica: &Path) -> chatvault::Result<ChatVault> {
    ChatVault::builder()
        .storage(storage)
        .replica_path(replica)
        .passphrase("binding")
        .scrypt_work_factor(4)
        .open()
        .await
}

#[tokio::test]
async fn reopening_refuses_a_key_file_rolled_back_behind_the_local_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = folder(dir.path());
    let laptop = open(storage.clone(), &dir.path().join("laptop.redb"))
        .await
        .expect("create");
    let phone_replica = dir.path().join("phone.redb");
    let phone = open(storage.clone(), &phone_replica).await.expect("phone");
    phone.close().await;
    let before = storage.get_keyring().await.expect("get").expect("stored");

    // A legitimate rotation: the phone accepts the newer key file.
    laptop.cipher().rotate();
    let protection =
        KeyProtection::for_passphrase("binding".to_string().into()).with_work_factor(4);
    let rotated = laptop.cipher().to_key_file(&protection).expect("key file");
    storage
        .put_keyring(rotated.into(), PutPrecondition::Version(before.version))
        .await
        .expect("store the rotated key file");
    let phone = open(storage.clone(), &phone_replica)
        .await
        .expect("a newer key file is accepted");
    phone.close().await;

    // The server now serves the key file from before the rotation again.
    let current = storage.get_keyring().await.expect("get").expect("stored");
    storage
        .put_keyring(
            before.bytes.clone(),
            PutPrecondition::Version(current.version),
        )
        .await
        .expect("the server replays the old key file");
    let err = open(storage.clone(), &phone_replica)
        .await
        .expect_err("a rolled-back key file must be refused");
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
}
