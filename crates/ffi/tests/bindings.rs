//! The exported interface from Rust: what every foreign language calls.

use chatvault_ffi::{open_vault, OpenOptions, Role, Status, Vault, VaultError};
use std::path::Path;
use std::sync::Arc;

async fn device(dir: &Path, name: &str, passphrase: &str) -> Result<Arc<Vault>, VaultError> {
    open_vault(OpenOptions {
        storage_url: format!("file://{}", dir.join("server").display()),
        replica_path: dir.join(format!("{name}.redb")).display().to_string(),
        passphrase: Some(passphrase.to_owned()),
        identity: None,
        scrypt_work_factor: Some(10),
        poll_interval_ms: None,
    })
    .await
}

#[tokio::test]
async fn two_devices_sync_through_the_exported_interface() {
    let dir = tempfile::tempdir().expect("tempdir");
    let laptop = device(dir.path(), "laptop", "pass").await.expect("laptop");
    let phone = device(dir.path(), "phone", "pass").await.expect("phone");
    let chat = laptop.new_chat("Trip".into()).await.expect("new chat");
    laptop
        .add_message(chat.clone(), Role::User, "Book the train".into())
        .await
        .expect("add");
    laptop.sync_now().await.expect("push");
    let report = phone.sync_now().await.expect("pull");
    assert_eq!(report.pulled, 1);
    assert_eq!(phone.status(), Status::Synced);
    let sidebar = phone.sidebar();
    assert_eq!(sidebar.len(), 1);
    assert_eq!(sidebar[0].title, "Trip");
    let full = phone.load_chat(chat).await.expect("load");
    assert_eq!(full.messages[0].content, "Book the train");
    assert_eq!(full.messages[0].role, Role::User);
    laptop.close().await.expect("close");
    phone.close().await.expect("close");
}

#[tokio::test]
async fn a_wrong_passphrase_is_wrong_key_with_the_library_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = device(dir.path(), "laptop", "right").await.expect("create");
    first.sync_now().await.expect("sync");
    let error = device(dir.path(), "thief", "wrong")
        .await
        .expect_err("a wrong passphrase must not open the vault");
    assert!(matches!(error, VaultError::WrongKey { .. }), "{error:?}");
    assert!(error.to_string().starts_with("wrong key: "), "{error}");
    let error = first
        .load_chat("not-a-uuid".into())
        .await
        .expect_err("a bad id");
    assert!(
        matches!(error, VaultError::InvalidInput { .. }),
        "{error:?}"
    );
}
