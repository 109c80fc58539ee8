//! Keys a person manages (issue 13): three devices over the local-folder
//! backend add a device, change the passphrase, use a recovery key, rotate
//! while one is offline, remove a device, and change keys concurrently; bad
//! input is a typed error that changes nothing.

use chatvault::core::envelope::EnvelopeCipher;
use chatvault::core::PutPrecondition;
use chatvault::{ChatVault, DynStorage, Error, Event, ProtectionKind};
use std::path::Path;
use std::sync::Arc;

const PASSPHRASE: &str = "correct horse battery staple";

fn folder(dir: &Path) -> DynStorage {
    Arc::new(chatvault_fs::open(dir.join("server")).expect("open the folder backend"))
}

async fn with_passphrase(
    storage: &DynStorage,
    dir: &Path,
    name: &str,
    passphrase: &str,
) -> chatvault::Result<ChatVault> {
    ChatVault::builder()
        .storage(storage.clone())
        .replica_path(dir.join(format!("{name}.redb")))
        .passphrase(passphrase)
        .scrypt_work_factor(4)
        .open()
        .await
}

async fn with_identity(
    storage: &DynStorage,
    dir: &Path,
    name: &str,
    identity: &age::x25519::Identity,
) -> chatvault::Result<ChatVault> {
    ChatVault::builder()
        .storage(storage.clone())
        .replica_path(dir.join(format!("{name}.redb")))
        .identity(identity.clone())
        .scrypt_work_factor(4)
        .open()
        .await
}

/// The first device: creates the vault with three chats and pushes them.
async fn laptop_with_chats(
    storage: &DynStorage,
    dir: &Path,
) -> (ChatVault, Vec<chatvault::ChatId>) {
    let laptop = with_passphrase(storage, dir, "laptop", PASSPHRASE)
        .await
        .expect("create the vault");
    let mut ids = Vec::new();
    for title in ["Trip plans", "Sourdough", "Taxes"] {
        let chat = laptop.new_chat(title).await.expect("new chat");
        laptop
            .add_message(chat.id, chatvault::Role::User, format!("about {title}"))
            .await
            .expect("message");
        ids.push(chat.id);
    }
    laptop.sync_now().await.expect("push");
    (laptop, ids)
}

async fn server_version(storage: &DynStorage) -> u64 {
    storage
        .get_keyring()
        .await
        .expect("get keyring")
        .expect("a key file")
        .version
}

#[tokio::test]
async fn a_device_added_on_the_laptop_opens_the_vault_and_reads_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    a_device_added_on_the_laptop_opens_the_vault_and_reads_everything_on(
        folder(dir.path()),
        dir.path(),
    )
    .await;
}

async fn a_device_added_on_the_laptop_opens_the_vault_and_reads_everything_on(
    storage: DynStorage,
    dir: &Path,
) {
    let (laptop, ids) = laptop_with_chats(&storage, dir).await;
    let phone_key = age::x25519::Identity::generate();
    let tablet_key = age::x25519::Identity::generate();

    // Before it is added, the phone's key opens nothing.
    let err = with_identity(&storage, dir, "phone", &phone_key)
        .await
        .expect_err("not yet a device of the vault");
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");

    let added = laptop
        .add_device(&phone_key.to_public().to_string(), "phone")
        .await
        .expect("add the phone");
    assert_eq!(added.kind, ProtectionKind::Device);
    laptop
        .add_device(&tablet_key.to_public().to_string(), "tablet")
        .await
        .expect("add the tablet");

    for (name, key) in [("phone", &phone_key), ("tablet", &tablet_key)] {
        let device = with_identity(&storage, dir, name, key)
            .await
            .expect("an added device opens the vault");
        device.sync_now().await.expect("first sync");
        assert_eq!(device.sidebar().len(), 3, "{name}");
        for id in &ids {
            let chat = device.load_full_chat(*id).await.expect("every chat opens");
            assert_eq!(chat.message_count(), 1);
        }
        let listed = device.list_protections().await.expect("list");
        let labels: Vec<&str> = listed.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, vec!["passphrase", "phone", "tablet"], "{name}");
        device.close().await;
    }
}

#[tokio::test]
async fn a_passphrase_changed_on_one_device_unlocks_on_another_and_the_old_one_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    a_passphrase_changed_on_one_device_unlocks_on_another_and_the_old_one_stops_on(
        folder(dir.path()),
        dir.path(),
    )
    .await;
}

async fn a_passphrase_changed_on_one_device_unlocks_on_another_and_the_old_one_stops_on(
    storage: DynStorage,
    dir: &Path,
) {
    let (laptop, ids) = laptop_with_chats(&storage, dir).await;
    let desktop = with_passphrase(&storage, dir, "desktop", PASSPHRASE)
        .await
        .expect("second device");
    desktop.close().await;

    laptop
        .change_passphrase("a much better passphrase")
        .await
        .expect("change the passphrase");

    let err = with_passphrase(&storage, dir, "desktop", PASSPHRASE)
        .await
        .expect_err("the old passphrase no longer unlocks");
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    let desktop = with_passphrase(&storage, dir, "desktop", "a much better passphrase")
        .await
        .expect("the new passphrase unlocks on another device");
    desktop.sync_now().await.expect("sync");
    assert_eq!(
        desktop.load_full_chat(ids[0]).await.expect("open").title(),
        "Trip plans"
    );
    // The laptop's own session goes on with the new passphrase.
    laptop
        .rotate_key()
        .await
        .expect("a key change after passwd");
    let third = with_passphrase(&storage, dir, "third", "a much better passphrase")
        .await
        .expect("a third device");
    third.sync_now().await.expect("sync");
    assert_eq!(third.sidebar().len(), 3);
}

#[tokio::test]
async fn a_recovery_key_unlocks_after_the_passphrase_is_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    a_recovery_key_unlocks_after_the_passphrase_is_forgotten_on(folder(dir.path()), dir.path())
        .await;
}

async fn a_recovery_key_unlocks_after_the_passphrase_is_forgotten_on(
    storage: DynStorage,
    dir: &Path,
) {
    let (laptop, ids) = laptop_with_chats(&storage, dir).await;
    let recovery = laptop.create_recovery_key().await.expect("recovery key");
    let secret = age::secrecy::ExposeSecret::expose_secret(&recovery.secret()).to_string();
    assert!(
        secret.starts_with("AGE-SECRET-KEY-1"),
        "shown once, as an age identity"
    );
    let listed = laptop.list_protections().await.expect("list");
    assert!(listed
        .iter()
        .any(|p| p.kind == ProtectionKind::Recovery && p.recipient == recovery.recipient()));

    // A new laptop, passphrase forgotten: the recovery key typed instead.
    let rescued = with_passphrase(&storage, dir, "new-laptop", &secret)
        .await
        .expect("the recovery key unlocks where a passphrase is asked for");
    rescued.sync_now().await.expect("sync");
    for id in &ids {
        rescued.load_full_chat(*id).await.expect("every chat opens");
    }
    // And it can set a new passphrase from there.
    rescued
        .change_passphrase("remembered this time")
        .await
        .expect("new passphrase");
    with_passphrase(&storage, dir, "another", "remembered this time")
        .await
        .expect("the new passphrase unlocks");

    // A second recovery key replaces the first.
    let second = rescued.create_recovery_key().await.expect("again");
    let recoveries: Vec<_> = rescued
        .list_protections()
        .await
        .expect("list")
        .into_iter()
        .filter(|p| p.kind == ProtectionKind::Recovery)
        .collect();
    assert_eq!(recoveries.len(), 1);
    assert_eq!(recoveries[0].recipient, second.recipient());
}

#[tokio::test]
async fn a_device_offline_during_a_rotation_reads_old_and_new_records_afterwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    a_device_offline_during_a_rotation_reads_old_and_new_records_afterwards_on(
        folder(dir.path()),
        dir.path(),
    )
    .await;
}

async fn a_device_offline_during_a_rotation_reads_old_and_new_records_afterwards_on(
    storage: DynStorage,
    dir: &Path,
) {
    let (laptop, ids) = laptop_with_chats(&storage, dir).await;
    let phone_key = age::x25519::Identity::generate();
    laptop
        .add_device(&phone_key.to_public().to_string(), "phone")
        .await
        .expect("add");
    let running = with_passphrase(&storage, dir, "desktop", PASSPHRASE)
        .await
        .expect("a running device");
    running.sync_now().await.expect("sync");
    let phone = with_identity(&storage, dir, "phone", &phone_key)
        .await
        .expect("phone");
    phone.sync_now().await.expect("sync");
    phone.close().await; // offline from here

    let new_key = laptop.rotate_key().await.expect("rotate");
    assert_eq!(new_key, 2);
    assert_eq!(
        laptop.cipher().current_key_id(),
        2,
        "new writes use the new key at once"
    );
    let after = laptop.new_chat("after the rotation").await.expect("save");
    laptop.sync_now().await.expect("push");
    let sealed = storage
        .get(&[after.id], chatvault::core::Part::Summary)
        .await
        .expect("get")
        .remove(0);
    assert_eq!(
        EnvelopeCipher::sealed_key_id(&sealed.summary).expect("header"),
        2
    );

    // The offline phone comes back: old and new records open.
    let phone = with_identity(&storage, dir, "phone", &phone_key)
        .await
        .expect("the phone reopens after the rotation");
    let report = phone.sync_now().await.expect("sync");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(phone.sidebar().len(), 4);
    phone.load_full_chat(ids[0]).await.expect("an old-key chat");
    phone
        .load_full_chat(after.id)
        .await
        .expect("the new-key chat");
    // The device that kept running re-reads the key file by itself.
    let report = running.sync_now().await.expect("sync");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(running.cipher().current_key_id(), 2);
    running
        .load_full_chat(after.id)
        .await
        .expect("the new-key chat");
}

#[tokio::test]
async fn a_removed_device_cannot_read_a_record_written_afterwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    a_removed_device_cannot_read_a_record_written_afterwards_on(folder(dir.path()), dir.path())
        .await;
}

async fn a_removed_device_cannot_read_a_record_written_afterwards_on(
    storage: DynStorage,
    dir: &Path,
) {
    let (laptop, ids) = laptop_with_chats(&storage, dir).await;
    let phone_key = age::x25519::Identity::generate();
    let added = laptop
        .add_device(&phone_key.to_public().to_string(), "lost phone")
        .await
        .expect("add");
    let phone = with_identity(&storage, dir, "phone", &phone_key)
        .await
        .expect("phone");
    phone.sync_now().await.expect("sync");
    assert_eq!(phone.sidebar().len(), 3);

    let removed = laptop.remove_protection(&added.id()).await.expect("remove");
    assert_eq!(removed.protection.label, "lost phone");
    assert_eq!(removed.new_key_id, 2, "removal rotates the data key");
    let secret = laptop
        .new_chat("written after the removal")
        .await
        .expect("save");
    laptop.sync_now().await.expect("push");

    // The running phone meets a record under a key it does not hold; its
    // key no longer opens the key file: a WrongKey error, and it stops.
    let err = phone
        .sync_now()
        .await
        .expect_err("the removed device must not read on");
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("removed"), "{err}");
    assert!(phone.load_full_chat(secret.id).await.is_err());
    assert!(phone.cipher().key_ids().iter().all(|id| *id != 2));
    // Nothing damaged: what it had stays, and the other devices are fine.
    assert_eq!(
        phone.load_full_chat(ids[0]).await.expect("kept").title(),
        "Trip plans"
    );
    phone.close().await;
    let err = with_identity(&storage, dir, "phone", &phone_key)
        .await
        .expect_err("reopening with the removed key");
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    let desktop = with_passphrase(&storage, dir, "desktop", PASSPHRASE)
        .await
        .expect("the passphrase still unlocks");
    desktop.sync_now().await.expect("sync");
    assert_eq!(
        desktop
            .load_full_chat(secret.id)
            .await
            .expect("open")
            .title(),
        "written after the removal"
    );
}

#[tokio::test]
async fn key_changes_from_two_devices_at_once_both_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    key_changes_from_two_devices_at_once_both_land_on(folder(dir.path()), dir.path()).await;
}

async fn key_changes_from_two_devices_at_once_both_land_on(storage: DynStorage, dir: &Path) {
    let (laptop, _) = laptop_with_chats(&storage, dir).await;
    let desktop = with_passphrase(&storage, dir, "desktop", PASSPHRASE)
        .await
        .expect("desktop");
    for round in 0..3 {
        let a = age::x25519::Identity::generate().to_public().to_string();
        let b = age::x25519::Identity::generate().to_public().to_string();
        let (label_a, label_b) = (
            format!("from laptop {round}"),
            format!("from desktop {round}"),
        );
        let (on_laptop, on_desktop) = tokio::join!(
            laptop.add_device(&a, &label_a),
            desktop.add_device(&b, &label_b),
        );
        on_laptop.expect("the laptop's change lands (first, or after re-reading)");
        on_desktop.expect("the desktop's change lands (first, or after re-reading)");
        for device in [&laptop, &desktop] {
            let recipients: Vec<String> = device
                .list_protections()
                .await
                .expect("list")
                .into_iter()
                .map(|p| p.recipient)
                .collect();
            assert!(
                recipients.contains(&a) && recipients.contains(&b),
                "round {round}"
            );
        }
    }
    // A rotation racing an addition: both land too.
    let c = age::x25519::Identity::generate().to_public().to_string();
    let (rotated, added) = tokio::join!(laptop.rotate_key(), desktop.add_device(&c, "late"));
    let key = rotated.expect("rotate");
    added.expect("add");
    desktop.list_protections().await.expect("re-read");
    assert_eq!(desktop.cipher().current_key_id(), key);
}

#[tokio::test]
async fn bad_key_input_is_a_typed_error_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    bad_key_input_is_a_typed_error_and_changes_nothing_on(folder(dir.path()), dir.path()).await;
}

async fn bad_key_input_is_a_typed_error_and_changes_nothing_on(storage: DynStorage, dir: &Path) {
    let (laptop, _) = laptop_with_chats(&storage, dir).await;
    let before = storage.get_keyring().await.expect("get").expect("stored");

    let err = with_passphrase(&storage, dir, "desktop", "not the passphrase")
        .await
        .expect_err("wrong passphrase");
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");

    for malformed in ["", "age1notakey", "AGE-SECRET-KEY-1QQQ", "ssh-ed25519 AAAA"] {
        let err = laptop
            .add_device(malformed, "bad")
            .await
            .expect_err("malformed recipient");
        assert!(
            matches!(err, Error::InvalidInput { .. }),
            "{malformed}: {err}"
        );
    }
    let err = laptop
        .remove_protection("passphrase")
        .await
        .expect_err("the last protection");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert!(err.to_string().contains("last protection"), "{err}");
    let err = laptop
        .remove_protection("nobody-here")
        .await
        .expect_err("unknown");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = laptop
        .change_passphrase("")
        .await
        .expect_err("empty passphrase");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let after = storage.get_keyring().await.expect("get").expect("stored");
    assert_eq!(after, before, "no refused change wrote a key file");

    // Adding the same device twice is refused too.
    let phone = age::x25519::Identity::generate().to_public().to_string();
    laptop.add_device(&phone, "phone").await.expect("add");
    let version = server_version(&storage).await;
    let err = laptop.add_device(&phone, "again").await.expect_err("twice");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_eq!(server_version(&storage).await, version);

    // A tampered key file: the server replays the file from before the
    // device was added. The key change refuses to build on it.
    let current = storage.get_keyring().await.expect("get").expect("stored");
    storage
        .put_keyring(
            before.bytes.clone(),
            PutPrecondition::Version(current.version),
        )
        .await
        .expect("the server replays an old key file");
    let replayed = server_version(&storage).await;
    let err = laptop
        .rotate_key()
        .await
        .expect_err("a rolled-back key file");
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
    assert_eq!(server_version(&storage).await, replayed, "nothing written");
    assert_eq!(laptop.cipher().current_key_id(), 1, "nothing changed here");
    // A garbled key file is refused as well.
    storage
        .put_keyring(
            bytes::Bytes::from_static(b"CVKF\x02\x01\x03\x00\x00\x00\x03abc"),
            PutPrecondition::Version(replayed),
        )
        .await
        .expect("the server stores garbage");
    let err = laptop.rotate_key().await.expect_err("garbage");
    assert!(
        matches!(err, Error::Corrupt { .. } | Error::Tampered { .. }),
        "{err}"
    );
    assert_eq!(laptop.cipher().current_key_id(), 1);
}

/// A key file as the first release wrote it: container format 1 whose
/// passphrase slot (kind 1) holds a format-2 keyring directly.
fn legacy_key_file(passphrase: &str, vault: chatvault::VaultId) -> Vec<u8> {
    let mut keyring = vec![2u8];
    keyring.extend_from_slice(vault.as_bytes());
    keyring.extend_from_slice(&1u64.to_be_bytes()); // key file version
    keyring.extend_from_slice(&1u32.to_be_bytes()); // current key id
    keyring.extend_from_slice(&1u32.to_be_bytes()); // one key
    keyring.extend_from_slice(&1u32.to_be_bytes());
    keyring.extend_from_slice(&[7u8; 32]);
    let slot = chatvault::core::envelope::export_age(
        &keyring,
        &chatvault::ExportTarget::Passphrase {
            passphrase: passphrase.to_string().into(),
            work_factor: Some(4),
        },
    )
    .expect("age file");
    let mut file = b"CVKF".to_vec();
    file.extend_from_slice(&[1, 1, 1]);
    file.extend_from_slice(&(slot.len() as u32).to_be_bytes());
    file.extend_from_slice(&slot);
    file
}

#[tokio::test]
async fn a_key_file_from_the_first_release_is_upgraded_by_the_first_key_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    a_key_file_from_the_first_release_is_upgraded_by_the_first_key_change_on(
        folder(dir.path()),
        dir.path(),
    )
    .await;
}

async fn a_key_file_from_the_first_release_is_upgraded_by_the_first_key_change_on(
    storage: DynStorage,
    dir: &Path,
) {
    storage
        .put_keyring(
            legacy_key_file(PASSPHRASE, chatvault::VaultId::new()).into(),
            PutPrecondition::Absent,
        )
        .await
        .expect("an old vault's key file");
    let laptop = with_passphrase(&storage, dir, "laptop", PASSPHRASE)
        .await
        .expect("an old key file still unlocks");
    let chat = laptop.new_chat("from before").await.expect("save");
    laptop.sync_now().await.expect("push");
    assert!(laptop.list_protections().await.expect("list").is_empty());

    let phone_key = age::x25519::Identity::generate();
    laptop
        .add_device(&phone_key.to_public().to_string(), "phone")
        .await
        .expect("the first key change upgrades the file");
    let kinds: Vec<ProtectionKind> = laptop
        .list_protections()
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![ProtectionKind::Passphrase, ProtectionKind::Device]
    );
    let upgraded = storage.get_keyring().await.expect("get").expect("stored");
    assert_eq!(upgraded.bytes[4], 2, "key file format 2");

    let phone = with_identity(&storage, dir, "phone", &phone_key)
        .await
        .expect("the added device opens");
    phone.sync_now().await.expect("sync");
    phone
        .load_full_chat(chat.id)
        .await
        .expect("the old chat opens");
    laptop.close().await;
    with_passphrase(&storage, dir, "laptop", PASSPHRASE)
        .await
        .expect("the passphrase still unlocks the upgraded file (and it follows the old copy)");
}

/// The same devices over S3: the endpoint from `CHATVAULT_TEST_S3_ENDPOINT`,
/// else a container, else the in-process stand-in. Each scenario gets a
/// vault of its own. Concurrent key changes need atomic create-if-absent,
/// which the stand-in lacks: that scenario is reported as skipped there.
#[tokio::test]
async fn the_key_scenarios_over_s3() {
    use chatvault_test_services::s3::S3Fixture;
    let fixture = S3Fixture::start().await.expect("an S3 service");
    eprintln!("s3 served by {}", fixture.describe());
    let run = chatvault_test_services::run_id();
    let open = |name: &'static str| {
        let fixture = &fixture;
        let run = run.clone();
        async move {
            let location = fixture
                .vault(&format!("keys-{run}-{name}"))
                .await
                .expect("vault location");
            let storage = chatvault_s3::S3StorageBuilder::new()
                .with_endpoint(&fixture.endpoint)
                .with_region(&fixture.region)
                .with_credentials(&fixture.access_key_id, &fixture.secret_access_key)
                .with_bucket(location.bucket)
                .with_prefix(location.prefix)
                .with_atomic_conditional_put(fixture.atomic_conditional_put)
                .build()
                .expect("S3 storage");
            Arc::new(storage) as DynStorage
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).expect("dir");
        path
    };
    a_device_added_on_the_laptop_opens_the_vault_and_reads_everything_on(
        open("add").await,
        &sub("add"),
    )
    .await;
    a_passphrase_changed_on_one_device_unlocks_on_another_and_the_old_one_stops_on(
        open("passwd").await,
        &sub("passwd"),
    )
    .await;
    a_recovery_key_unlocks_after_the_passphrase_is_forgotten_on(
        open("recovery").await,
        &sub("recovery"),
    )
    .await;
    a_device_offline_during_a_rotation_reads_old_and_new_records_afterwards_on(
        open("rotate").await,
        &sub("rotate"),
    )
    .await;
    a_removed_device_cannot_read_a_record_written_afterwards_on(
        open("remove").await,
        &sub("remove"),
    )
    .await;
    if fixture.atomic_conditional_put {
        key_changes_from_two_devices_at_once_both_land_on(open("race").await, &sub("race")).await;
    } else {
        eprintln!(
            "SKIPPED concurrent key changes over S3: {} has no atomic create-if-absent",
            fixture.describe()
        );
    }
    fixture.stop().await;
}

#[tokio::test]
async fn resealing_after_a_rotation_resumes_after_a_restart_then_the_old_key_is_retired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = folder(dir.path());
    let dir = dir.path();
    let (laptop, mut ids) = laptop_with_chats(&storage, dir).await;
    for i in 0..7 {
        ids.push(laptop.new_chat(format!("chat {i}")).await.expect("new").id);
    }
    laptop.sync_now().await.expect("push");
    let desktop = with_passphrase(&storage, dir, "desktop", PASSPHRASE)
        .await
        .expect("desktop");
    desktop.sync_now().await.expect("sync");

    assert_eq!(laptop.rotate_key().await.expect("rotate"), 2);
    let err = laptop.retire_unused_keys().await.map(|r| r.len());
    assert_eq!(
        err.expect("nothing to retire yet"),
        0,
        "key 1 still seals every chat"
    );

    // One batch, then the laptop "restarts": the next process resumes.
    let first = laptop.reseal_stale(4).await.expect("reseal");
    assert_eq!((first.resealed, first.remaining), (4, 6));
    laptop.close().await;
    let laptop = with_passphrase(&storage, dir, "laptop", PASSPHRASE)
        .await
        .expect("reopen");
    let mut rounds = 0;
    loop {
        let report = laptop.reseal_stale(4).await.expect("reseal");
        rounds += 1;
        if report.remaining == 0 {
            break;
        }
        assert!(rounds < 5, "{report:?}");
    }
    assert_eq!(laptop.pending_changes().expect("pending"), 0, "pushed");
    for id in &ids {
        let sealed = storage
            .get(&[*id], chatvault::core::Part::Body)
            .await
            .expect("get")
            .remove(0);
        assert_eq!(
            EnvelopeCipher::sealed_key_id(&sealed.summary).expect("header"),
            2
        );
        let body = sealed.body.expect("a body");
        assert_eq!(EnvelopeCipher::sealed_key_id(&body).expect("header"), 2);
    }

    assert_eq!(laptop.retire_unused_keys().await.expect("retire"), vec![1]);
    assert_eq!(laptop.cipher().key_ids(), vec![2]);
    // The desktop, running since before the rotation, catches up by itself.
    let report = desktop.sync_now().await.expect("sync");
    assert!(report.skipped.is_empty(), "{report:?}");
    for id in &ids {
        desktop.load_full_chat(*id).await.expect("every chat opens");
    }
    let fresh = with_passphrase(&storage, dir, "fresh", PASSPHRASE)
        .await
        .expect("a new device");
    let report = fresh.sync_now().await.expect("sync");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(fresh.cipher().key_ids(), vec![2]);
    assert_eq!(fresh.sidebar().len(), ids.len());
}

/// The re-seal progress events of the laptop's vault, in order.
fn progress(events: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<(u32, usize, usize)> {
    let mut out = Vec::new();
    loop {
        match events.try_recv() {
            Ok(Event::ResealProgress {
                key_id,
                done,
                total,
            }) => out.push((key_id, done, total)),
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                panic!("the test fell {n} events behind")
            }
            Err(_) => return out,
        }
    }
}

#[tokio::test]
async fn resealing_reports_its_progress_per_batch_up_to_the_total() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = folder(dir.path());
    let dir = dir.path();
    let (laptop, _) = laptop_with_chats(&storage, dir).await;
    for i in 0..17 {
        laptop.new_chat(format!("chat {i}")).await.expect("new");
    }
    laptop.sync_now().await.expect("push");
    let mut events = laptop.changes();
    assert_eq!(laptop.rotate_key().await.expect("rotate"), 2);

    let mut reports = Vec::new();
    loop {
        let report = laptop.reseal_stale(6).await.expect("reseal");
        reports.push(report.clone());
        if report.remaining == 0 {
            break;
        }
        assert!(reports.len() < 10, "{reports:?}");
    }
    let seen = progress(&mut events);
    assert_eq!(seen.len(), reports.len(), "one event per batch: {seen:?}");
    assert_eq!(
        seen,
        vec![(2, 6, 20), (2, 12, 20), (2, 18, 20), (2, 20, 20)],
        "done counts up by the batch to the total, under the new key"
    );
    for (event, report) in seen.iter().zip(&reports) {
        assert_eq!((event.1, event.2), (report.done, report.total));
    }
    // Nothing stale: one more call reports completion again, nothing done.
    let again = laptop.reseal_stale(6).await.expect("reseal");
    assert_eq!((again.resealed, again.remaining), (0, 0));
    assert_eq!(progress(&mut events), vec![(2, 20, 20)]);
}

/// Every record the server holds for `ids` (live or deleted) is sealed
/// under `key`, summary and body.
async fn server_records_are_under(storage: &DynStorage, ids: &[chatvault::ChatId], key: u32) {
    for id in ids {
        for record in storage
            .get(&[*id], chatvault::core::Part::Body)
            .await
            .expect("get")
        {
            assert_eq!(
                EnvelopeCipher::sealed_key_id(&record.summary).expect("header"),
                key,
                "summary of {id} (deleted: {})",
                record.deleted
            );
            if let Some(body) = &record.body {
                assert_eq!(EnvelopeCipher::sealed_key_id(body).expect("header"), key);
            }
        }
    }
}

#[tokio::test]
async fn a_rotate_reseal_retire_cycle_frees_the_old_key_with_deleted_chats_and_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = folder(dir.path());
    let dir = dir.path();
    let (laptop, mut ids) = laptop_with_chats(&storage, dir).await;
    for i in 0..5 {
        let chat = laptop.new_chat(format!("chat {i}")).await.expect("new");
        for m in 0..3 {
            laptop
                .add_message(chat.id, chatvault::Role::User, format!("m{m}"))
                .await
                .expect("message");
        }
        ids.push(chat.id);
    }
    // Deleted messages in two chats, two chats deleted outright.
    let mut deleted_messages = Vec::new();
    for &chat in &ids[3..5] {
        let first = laptop.load_full_chat(chat).await.expect("load").messages()[0].id;
        laptop
            .delete_message(chat, first)
            .await
            .expect("delete message");
        deleted_messages.push((chat, first));
    }
    let deleted_chats = vec![ids[0], ids[6]];
    for &chat in &deleted_chats {
        laptop.delete_chat(chat).await.expect("delete chat");
    }
    laptop.sync_now().await.expect("push");
    let desktop = with_passphrase(&storage, dir, "desktop", PASSPHRASE)
        .await
        .expect("desktop");
    desktop.sync_now().await.expect("sync");

    assert_eq!(laptop.rotate_key().await.expect("rotate"), 2);
    // The tombstones on the server are under key 1 until re-sealed.
    for chat in &deleted_chats {
        let records = storage
            .get(&[*chat], chatvault::core::Part::Summary)
            .await
            .expect("get");
        assert!(records.iter().all(|r| r.deleted), "{chat} is a tombstone");
        assert_eq!(records.len(), 1, "the server returns the tombstone");
    }
    server_records_are_under(&storage, &deleted_chats, 1).await;
    loop {
        let report = laptop.reseal_stale(3).await.expect("reseal");
        if report.remaining == 0 {
            assert_eq!(report.stale_tombstones, 0, "{report:?}");
            assert_eq!(report.done, ids.len(), "tombstones count: {report:?}");
            break;
        }
    }
    assert_eq!(laptop.pending_changes().expect("pending"), 0, "pushed");
    assert_eq!(
        laptop.engine().referenced_key_ids().await.expect("keys"),
        [2].into_iter().collect()
    );
    server_records_are_under(&storage, &ids, 2).await;

    assert_eq!(
        laptop.retire_unused_keys().await.expect("retire"),
        vec![1],
        "no tombstone holds key 1 back"
    );
    for device in [&desktop, &laptop] {
        let report = device.sync_now().await.expect("sync");
        assert!(report.skipped.is_empty(), "{report:?}");
    }
    let fresh = with_passphrase(&storage, dir, "fresh", PASSPHRASE)
        .await
        .expect("a new device");
    let report = fresh.sync_now().await.expect("sync");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(fresh.cipher().key_ids(), vec![2]);
    for device in [&desktop, &fresh] {
        assert_eq!(device.sidebar().len(), ids.len() - deleted_chats.len());
        for chat in &deleted_chats {
            assert!(
                device.load_full_chat(*chat).await.is_err(),
                "{chat} stays deleted"
            );
        }
        for (chat, message) in &deleted_messages {
            let full = device.load_full_chat(*chat).await.expect("opens");
            assert!(full.messages().iter().all(|m| m.id != *message));
            assert_eq!(full.message_count(), 2, "m1 and m2 remain");
        }
    }
}

/// Edits the phone makes while away: a message in an existing chat and a
/// new chat. Returns the new chat and the texts to look for.
async fn edits_while_away(phone: &ChatVault, existing: chatvault::ChatId) -> chatvault::ChatId {
    phone
        .add_message(existing, chatvault::Role::User, "written while away")
        .await
        .expect("edit while away");
    let chat = phone.new_chat("made while away").await.expect("new chat");
    phone
        .add_message(chat.id, chatvault::Role::User, "hello from the train")
        .await
        .expect("message");
    assert_eq!(phone.pending_changes().expect("pending"), 2);
    chat.id
}

/// The laptop rotates, re-seals everything and retires key 1.
async fn rotate_reseal_retire(laptop: &ChatVault) {
    assert_eq!(laptop.rotate_key().await.expect("rotate"), 2);
    while laptop.reseal_stale(64).await.expect("reseal").remaining > 0 {}
    assert_eq!(laptop.retire_unused_keys().await.expect("retire"), vec![1]);
}

/// The laptop (and a fresh device) read the phone's edits, and the server
/// holds them under key 2.
async fn edits_reached_everyone(
    storage: &DynStorage,
    dir: &Path,
    laptop: &ChatVault,
    existing: chatvault::ChatId,
    made: chatvault::ChatId,
) {
    let report = laptop.sync_now().await.expect("sync");
    assert!(report.skipped.is_empty(), "{report:?}");
    server_records_are_under(storage, &[existing, made], 2).await;
    let fresh = with_passphrase(storage, dir, "fresh", PASSPHRASE)
        .await
        .expect("fresh");
    let report = fresh.sync_now().await.expect("sync");
    assert!(report.skipped.is_empty(), "{report:?}");
    for device in [laptop, &fresh] {
        let full = device.load_full_chat(existing).await.expect("existing");
        assert!(
            full.messages()
                .iter()
                .any(|m| m.content() == "written while away"),
            "the edit made while away"
        );
        let full = device.load_full_chat(made).await.expect("the new chat");
        assert_eq!(full.title(), "made while away");
        assert_eq!(full.messages()[0].content(), "hello from the train");
    }
}

#[tokio::test]
async fn changes_queued_on_a_closed_device_while_the_old_key_was_retired_reach_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = folder(dir.path());
    let dir = dir.path();
    let (laptop, ids) = laptop_with_chats(&storage, dir).await;
    let phone = with_passphrase(&storage, dir, "phone", PASSPHRASE)
        .await
        .expect("phone");
    phone.sync_now().await.expect("sync");
    let made = edits_while_away(&phone, ids[1]).await;
    phone.close().await;

    rotate_reseal_retire(&laptop).await;

    // The phone reopens: the server's key file no longer holds key 1, which
    // seals its queued changes; the replica's copy still does.
    let phone = with_passphrase(&storage, dir, "phone", PASSPHRASE)
        .await
        .expect("the phone reopens");
    let report = phone.sync_now().await.expect("sync");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(phone.pending_changes().expect("pending"), 0, "{report:?}");
    edits_reached_everyone(&storage, dir, &laptop, ids[1], made).await;
    // Reopened once more, the phone needs no old key any more.
    phone.close().await;
    let phone = with_passphrase(&storage, dir, "phone", PASSPHRASE)
        .await
        .expect("reopen");
    assert_eq!(phone.cipher().key_ids(), vec![2]);
}

#[tokio::test]
async fn changes_queued_on_a_running_device_cut_off_while_the_old_key_was_retired_reach_the_others()
{
    use chatvault_conformance::layers::{Fault, FaultyStorage};
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = folder(dir.path());
    let dir = dir.path();
    let (laptop, ids) = laptop_with_chats(&storage, dir).await;
    let link = FaultyStorage::new(storage.clone());
    let phone = with_passphrase(&(link.clone() as DynStorage), dir, "phone", PASSPHRASE)
        .await
        .expect("phone");
    phone.sync_now().await.expect("sync");
    phone.load_full_chat(ids[1]).await.expect("held in full");
    link.fail_all(Fault::Unavailable);
    let made = edits_while_away(&phone, ids[1]).await;
    assert!(phone.sync_now().await.is_err(), "cut off");

    rotate_reseal_retire(&laptop).await;

    link.heal();
    let report = phone.sync_now().await.expect("back online");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(phone.pending_changes().expect("pending"), 0, "{report:?}");
    assert_eq!(phone.cipher().current_key_id(), 2);
    edits_reached_everyone(&storage, dir, &laptop, ids[1], made).await;
}

/// A key file as a removed device forges it from what it still knows:
/// data key 1 from its own keyring, a key of its own made current (its key
/// id 2 retired, so the forged current key is 3), sealed to `recipients`,
/// `bumps` versions past the one it last read, and with `passphrase_slot`
/// (copied byte for byte from a genuine file) when given.
fn forge_key_file(
    removed: &EnvelopeCipher,
    recipients: &[age::x25519::Recipient],
    passphrase_slot: Option<&[u8]>,
    bumps: usize,
) -> Vec<u8> {
    use chatvault::core::envelope::KeyProtection;
    removed.rotate();
    removed.rotate();
    removed.retire(2).expect("retire its own key 2");
    let protection = KeyProtection::for_recipients(recipients.iter().cloned());
    let mut file = Vec::new();
    for _ in 0..bumps {
        file = removed.to_key_file(&protection).expect("forged key file");
    }
    let Some(slot) = passphrase_slot else {
        return file;
    };
    // Container: "CVKF" | format | slot count | (kind | length | age file)*.
    let mut spliced = file[..5].to_vec();
    spliced.push(file[5] + 1);
    spliced.push(3);
    spliced.extend_from_slice(&(slot.len() as u32).to_be_bytes());
    spliced.extend_from_slice(slot);
    spliced.extend_from_slice(&file[6..]);
    spliced
}

/// The passphrase slot (kind 3) of a key file, as it is stored.
fn passphrase_slot(file: &[u8]) -> Vec<u8> {
    let mut rest = &file[6..];
    while !rest.is_empty() {
        let kind = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if kind == 3 {
            return rest[5..5 + len].to_vec();
        }
        rest = &rest[5 + len..];
    }
    panic!("no passphrase slot");
}

async fn replace_key_file(storage: &DynStorage, file: Vec<u8>) {
    let current = server_version(storage).await;
    storage
        .put_keyring(file.into(), PutPrecondition::Version(current))
        .await
        .expect("the removed device writes the key file (it kept storage access)");
}

/// Adds a phone with its own key to the vault `laptop` is in, opens it
/// and syncs it: its key, its protection and the phone.
async fn add_phone(
    laptop: &ChatVault,
    storage: &DynStorage,
    dir: &Path,
) -> (age::x25519::Identity, chatvault::Protection, ChatVault) {
    let phone_key = age::x25519::Identity::generate();
    let added = laptop
        .add_device(&phone_key.to_public().to_string(), "lost phone")
        .await
        .expect("add");
    let phone = with_identity(storage, dir, "phone", &phone_key)
        .await
        .expect("phone");
    phone.sync_now().await.expect("sync");
    (phone_key, added, phone)
}

#[tokio::test]
async fn a_key_file_forged_by_a_removed_device_is_refused_and_the_laptop_keeps_its_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = folder(dir.path());
    let laptop_key = age::x25519::Identity::generate();
    let laptop = with_identity(&storage, dir.path(), "laptop", &laptop_key)
        .await
        .expect("create the vault");
    let kept = laptop.new_chat("before the removal").await.expect("save");
    laptop.sync_now().await.expect("push");
    let (phone_key, added, phone) = add_phone(&laptop, &storage, dir.path()).await;
    laptop.remove_protection(&added.id()).await.expect("remove");
    assert_eq!(laptop.cipher().current_key_id(), 2);
    let secret = laptop.new_chat("after the removal").await.expect("save");
    laptop.sync_now().await.expect("push");

    // The phone still has storage access and key 1: it writes a key file
    // holding key 1 and a key of its own, sealed to the laptop and itself.
    let genuine = storage
        .get_keyring()
        .await
        .expect("get")
        .expect("stored")
        .bytes
        .to_vec();
    let forged = forge_key_file(
        phone.cipher(),
        &[laptop_key.to_public(), phone_key.to_public()],
        None,
        2,
    );
    replace_key_file(&storage, forged).await;

    let err = laptop
        .refresh_keys()
        .await
        .expect_err("the forged key file must be refused");
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
    assert_eq!(
        laptop.cipher().current_key_id(),
        2,
        "still seals under key 2"
    );
    assert_eq!(laptop.cipher().key_ids(), vec![1, 2]);
    let later = laptop.new_chat("after the forgery").await.expect("save");
    let sealed = laptop
        .engine()
        .replica()
        .record(later.id, false)
        .expect("replica")
        .expect("stored");
    assert_eq!(
        EnvelopeCipher::sealed_key_id(&sealed.summary).expect("header"),
        2
    );
    laptop.close().await;

    // Reopening against the forged file is refused too; the replica keeps
    // what it trusted, so once the genuine file is back everything opens.
    let err = with_identity(&storage, dir.path(), "laptop", &laptop_key)
        .await
        .expect_err("reopening against the forged key file");
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
    replace_key_file(&storage, genuine).await;
    let laptop = with_identity(&storage, dir.path(), "laptop", &laptop_key)
        .await
        .expect("the genuine key file opens");
    laptop.sync_now().await.expect("sync");
    assert_eq!(laptop.cipher().key_ids(), vec![1, 2]);
    for (id, title) in [
        (kept.id, "before the removal"),
        (secret.id, "after the removal"),
        (later.id, "after the forgery"),
    ] {
        assert_eq!(
            laptop.load_full_chat(id).await.expect("open").title(),
            title
        );
    }
}

#[tokio::test]
async fn a_forged_key_file_is_refused_after_the_passphrase_changed_on_another_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = folder(dir.path());
    let (laptop, ids) = laptop_with_chats(&storage, dir.path()).await;
    let (_, added, phone) = add_phone(&laptop, &storage, dir.path()).await;
    let desktop = with_passphrase(&storage, dir.path(), "desktop", PASSPHRASE)
        .await
        .expect("desktop");
    // The desktop removes the phone; the laptop reads the removal (key 2),
    // then is closed while the desktop changes the passphrase.
    desktop
        .remove_protection(&added.id())
        .await
        .expect("remove");
    laptop
        .refresh_keys()
        .await
        .expect("the laptop reads the removal");
    assert_eq!(laptop.cipher().key_ids(), vec![1, 2]);
    laptop.close().await;
    desktop
        .change_passphrase("a much better passphrase")
        .await
        .expect("passwd");
    let genuine = storage
        .get_keyring()
        .await
        .expect("get")
        .expect("stored")
        .bytes
        .to_vec();
    let new_passphrase_identity = desktop
        .cipher()
        .protections()
        .into_iter()
        .find(|p| p.kind == ProtectionKind::Passphrase)
        .expect("a passphrase")
        .recipient
        .parse::<age::x25519::Recipient>()
        .expect("recipient");

    // The phone copies the new passphrase slot byte for byte and seals its
    // own keyring (key 1 and a key of its own) to the new passphrase.
    let forged = forge_key_file(
        phone.cipher(),
        &[new_passphrase_identity],
        Some(&passphrase_slot(&genuine)),
        4,
    );
    replace_key_file(&storage, forged).await;

    // The laptop opens with the new passphrase: its copy of the key file
    // does not open with it, but what it trusts (key 2) is kept apart.
    let err = with_passphrase(&storage, dir.path(), "laptop", "a much better passphrase")
        .await
        .expect_err("the forged key file must be refused");
    assert!(matches!(err, Error::Tampered { .. }), "{err}");

    // The genuine file back: the laptop opens and reads everything.
    replace_key_file(&storage, genuine).await;
    let laptop = with_passphrase(&storage, dir.path(), "laptop", "a much better passphrase")
        .await
        .expect("the genuine key file opens");
    laptop.sync_now().await.expect("sync");
    assert_eq!(
        laptop.cipher().current_key_id(),
        desktop.cipher().current_key_id()
    );
    assert_eq!(
        laptop.load_full_chat(ids[0]).await.expect("open").title(),
        "Trip plans"
    );
}

/// The key file `storage` holds now, opened with the passphrase.
async fn key_file_opened(storage: &DynStorage) -> EnvelopeCipher {
    use chatvault::core::envelope::Unlock;
    EnvelopeCipher::from_key_file(
        &key_file_now(storage).await,
        &Unlock::Passphrase(PASSPHRASE.to_string().into()),
    )
    .expect("open the key file with the passphrase")
}

/// Seals the summary (and, unless `deleted`, the body) of `chat` as
/// `laptop` holds it as its next version, each part with the cipher given,
/// and stores it on the server on top of the version the laptop holds.
/// `damage` flips the summary's last byte.
async fn put_next_version(
    storage: &DynStorage,
    laptop: &ChatVault,
    chat: chatvault::ChatId,
    (summary_cipher, body_cipher): (&EnvelopeCipher, &EnvelopeCipher),
    deleted: bool,
    damage: bool,
) {
    use chatvault::core::raw::codec::{encode_chat, encode_summary};
    use chatvault::core::{Aad, Cipher, Part, SealedRecord};
    let state = laptop.load_full_chat(chat).await.expect("open");
    let version = laptop
        .engine()
        .replica()
        .header(chat)
        .expect("replica")
        .expect("stored")
        .version;
    let aad = |part| Aad {
        vault: laptop.vault_id(),
        chat,
        part,
        version: version + 1,
    };
    let mut summary = summary_cipher
        .seal(
            &aad(Part::Summary),
            &encode_summary(&state.summary()).expect("encode"),
        )
        .expect("seal");
    if damage {
        let last = summary.len() - 1;
        summary[last] ^= 1;
    }
    let body = (!deleted).then(|| {
        body_cipher
            .seal(&aad(Part::Body), &encode_chat(&state).expect("encode"))
            .expect("seal")
            .into()
    });
    storage
        .put(
            SealedRecord {
                chat,
                version: version + 1,
                deleted,
                summary: summary.into(),
                body,
            },
            PutPrecondition::Version(version),
        )
        .await
        .expect("put the record");
}

#[tokio::test]
async fn a_body_left_under_an_older_key_than_its_summary_is_resealed_before_the_key_retires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = folder(dir.path());
    let (laptop, ids) = laptop_with_chats(&storage, dir.path()).await;
    let old_key = key_file_opened(&storage).await;
    assert_eq!(laptop.rotate_key().await.expect("rotate"), 2);
    laptop.reseal_stale(100).await.expect("re-seal");

    // A record as a build that sealed the parts one by one wrote it while a
    // rotation was adopted: the summary under key 2, the body under key 1.
    put_next_version(
        &storage,
        &laptop,
        ids[0],
        (laptop.cipher(), &old_key),
        false,
        false,
    )
    .await;
    laptop.sync_now().await.expect("pull it");

    let report = laptop.reseal_stale(100).await.expect("re-seal");
    assert_eq!(report.resealed, 1, "the mixed record is stale: {report:?}");
    assert_eq!(report.remaining, 0);
    assert_eq!(laptop.retire_unused_keys().await.expect("retire"), vec![1]);
    let fresh = with_passphrase(&storage, dir.path(), "fresh", PASSPHRASE)
        .await
        .expect("a new device");
    fresh.sync_now().await.expect("sync");
    assert_eq!(
        fresh.load_full_chat(ids[0]).await.expect("opens").title(),
        "Trip plans"
    );
}

#[tokio::test]
async fn a_key_a_skipped_record_may_need_is_not_retired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = folder(dir.path());
    let (laptop, ids) = laptop_with_chats(&storage, dir.path()).await;
    let phone = with_passphrase(&storage, dir.path(), "phone", PASSPHRASE)
        .await
        .expect("phone");
    phone.sync_now().await.expect("sync");
    let old_key = key_file_opened(&storage).await;
    laptop.rotate_key().await.expect("rotate");
    laptop.reseal_stale(100).await.expect("re-seal and push");
    phone
        .sync_now()
        .await
        .expect("the phone reads the re-sealed chats");

    // A tombstone under key 1 the phone cannot open (damaged in transit, or
    // written by a newer build): it is skipped, and its key id kept.
    put_next_version(&storage, &laptop, ids[1], (&old_key, &old_key), true, true).await;
    let report = phone.sync_now().await.expect("sync");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    let skipped = phone.engine().skipped().expect("skipped");
    assert_eq!(skipped[0].key_ids, vec![1]);

    let err = phone
        .retire_unused_keys()
        .await
        .expect_err("key 1 may still be needed");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert!(err.to_string().contains("could not open"), "{err}");
    assert!(err.to_string().contains(&ids[1].to_string()), "{err}");
    assert_eq!(phone.cipher().key_ids(), vec![1, 2]);
    let fresh = with_passphrase(&storage, dir.path(), "fresh", PASSPHRASE)
        .await
        .expect("a new device");
    assert_eq!(
        fresh.cipher().key_ids(),
        vec![1, 2],
        "key 1 is still in the key file"
    );
}

/// The key file on the server now, as bytes.
async fn key_file_now(storage: &DynStorage) -> Vec<u8> {
    storage
        .get_keyring()
        .await
        .expect("get")
        .expect("stored")
        .bytes
        .to_vec()
}

/// True if `old` (a key file from before a secret was replaced, opened with
/// that secret) opens a chat written after the replacement.
async fn old_secret_opens(
    old: &[u8],
    secret: chatvault::core::envelope::Unlock,
    storage: &DynStorage,
    chat: chatvault::ChatId,
) -> bool {
    use chatvault::core::{Aad, Cipher, Part};
    let cipher =
        EnvelopeCipher::from_key_file(old, &secret).expect("the old secret opens the old file");
    let record = storage
        .get(&[chat], Part::Summary)
        .await
        .expect("get")
        .into_iter()
        .next()
        .expect("stored");
    let aad = Aad {
        vault: cipher.vault(),
        chat,
        part: Part::Summary,
        version: record.version,
    };
    cipher.open(&aad, &record.summary).is_ok()
}

#[tokio::test]
async fn replacing_a_secret_rotates_the_data_key_so_the_old_secret_opens_nothing_new() {
    use chatvault::core::envelope::Unlock;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = folder(dir.path());
    let (laptop, _) = laptop_with_chats(&storage, dir.path()).await;
    let recovery = laptop
        .create_recovery_key()
        .await
        .expect("first recovery key");
    assert_eq!(
        laptop.cipher().current_key_id(),
        1,
        "adding a first one replaces nothing"
    );

    // passwd
    let before = key_file_now(&storage).await;
    laptop
        .change_passphrase("a much better passphrase")
        .await
        .expect("passwd");
    assert_eq!(laptop.cipher().current_key_id(), 2);
    let after = laptop.new_chat("after passwd").await.expect("save");
    laptop.sync_now().await.expect("push");
    let old_passphrase = Unlock::Passphrase(PASSPHRASE.to_string().into());
    assert!(!old_secret_opens(&before, old_passphrase, &storage, after.id).await);

    // a new recovery key replaces the first
    let before = key_file_now(&storage).await;
    laptop
        .create_recovery_key()
        .await
        .expect("replace the recovery key");
    assert_eq!(laptop.cipher().current_key_id(), 3);
    let after = laptop
        .new_chat("after the new recovery key")
        .await
        .expect("save");
    laptop.sync_now().await.expect("push");
    assert!(!old_secret_opens(&before, recovery.unlock(), &storage, after.id).await);

    // removing the passphrase (the recovery key stays)
    let before = key_file_now(&storage).await;
    let desktop_key = age::x25519::Identity::generate();
    laptop
        .add_device(&desktop_key.to_public().to_string(), "desktop")
        .await
        .expect("add a device to keep a protection");
    let desktop = with_identity(&storage, dir.path(), "desktop", &desktop_key)
        .await
        .expect("desktop");
    let removed = desktop
        .remove_protection("passphrase")
        .await
        .expect("remove the passphrase");
    assert_eq!(removed.new_key_id, 4);
    let after = desktop
        .new_chat("after removing the passphrase")
        .await
        .expect("save");
    desktop.sync_now().await.expect("push");
    let new_passphrase = Unlock::Passphrase("a much better passphrase".to_string().into());
    assert!(!old_secret_opens(&before, new_passphrase, &storage, after.id).await);
}
