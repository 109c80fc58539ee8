//! A key file is bound to its vault and versioned: a device refuses a key
//! file rolled back to an older version and a keyring substituted by someone
//! who only knows a device's X25519 public key (issue 15 item 7).

use age::x25519;
use chatvault_core::envelope::{EnvelopeCipher, KeyProtection, KeyTrust, Unlock};
use chatvault_core::{Error, VaultId};

fn open(file: &[u8], device: &x25519::Identity) -> EnvelopeCipher {
    EnvelopeCipher::from_key_file(file, &Unlock::Identity(device.clone())).expect("unlock")
}

fn key_file(cipher: &EnvelopeCipher, device: &x25519::Identity) -> Vec<u8> {
    cipher
        .to_key_file(&KeyProtection::for_recipients([device.to_public()]))
        .expect("key file")
}

#[test]
fn every_key_file_written_carries_the_next_version() {
    let device = x25519::Identity::generate();
    let cipher = EnvelopeCipher::generate(VaultId::new());
    assert_eq!(cipher.keyring_version(), 0);
    let first = open(&key_file(&cipher, &device), &device);
    assert_eq!(first.keyring_version(), 1);
    let second = open(&key_file(&first, &device), &device);
    assert_eq!(second.keyring_version(), 2);
}

#[test]
fn a_key_file_rolled_back_to_an_older_version_is_refused_and_changes_nothing() {
    let device = x25519::Identity::generate();
    let created = EnvelopeCipher::generate(VaultId::new());
    let v1 = key_file(&created, &device);
    let running = open(&v1, &device);
    // Another device rotates and writes version 2; this device adopts it.
    let other = open(&v1, &device);
    other.rotate();
    let v2 = key_file(&other, &device);
    assert!(running.adopt_keys(&open(&v2, &device)).expect("adopt v2"));
    assert_eq!(running.keyring_version(), 2);
    assert_eq!(running.current_key_id(), 2);

    // The server hands back version 1 (from before the rotation).
    let rolled_back = open(&v1, &device);
    let err = running
        .adopt_keys(&rolled_back)
        .expect_err("rollback refused");
    assert!(
        matches!(&err, Error::Tampered { what } if what.contains("rollback")),
        "{err:?}"
    );
    assert_eq!(running.current_key_id(), 2, "still seals under the new key");
    assert_eq!(running.keyring_version(), 2);
}

#[test]
fn a_keyring_substituted_by_someone_knowing_only_the_public_key_is_refused() {
    let device = x25519::Identity::generate();
    let genuine = EnvelopeCipher::generate(VaultId::new());
    let running = open(&key_file(&genuine, &device), &device);

    // An attacker knows the vault id and the device's public key, and writes
    // a keyring of their own with a higher version and a key id far ahead.
    let forged = EnvelopeCipher::generate(running.vault());
    for _ in 0..5 {
        forged.rotate();
    }
    let forged_file = key_file(&open(&key_file(&forged, &device), &device), &device);
    let substituted = open(&forged_file, &device);
    assert!(substituted.keyring_version() > running.keyring_version());

    let err = running
        .adopt_keys(&substituted)
        .expect_err("substitution refused");
    assert!(matches!(err, Error::Tampered { .. }), "{err:?}");
    assert_eq!(running.key_ids(), vec![1]);
    assert_eq!(running.current_key_id(), 1);

    // A forged key under a key id the device already holds is refused too.
    let same_id = EnvelopeCipher::generate(running.vault());
    let same_id = open(
        &key_file(&open(&key_file(&same_id, &device), &device), &device),
        &device,
    );
    assert!(matches!(
        running.check_successor(&same_id),
        Err(Error::Tampered { .. })
    ));
}

#[test]
fn the_fingerprint_matches_across_devices_and_rotations_and_differs_for_a_forgery() {
    let laptop = x25519::Identity::generate();
    let genuine = EnvelopeCipher::generate(VaultId::new());
    let file = key_file(&genuine, &laptop);
    let on_laptop = open(&file, &laptop);
    assert_eq!(on_laptop.fingerprint(), genuine.fingerprint());
    on_laptop.rotate();
    assert_eq!(on_laptop.fingerprint(), genuine.fingerprint());
    let forged = EnvelopeCipher::generate(genuine.vault());
    assert_ne!(forged.fingerprint(), genuine.fingerprint());
    assert_eq!(genuine.fingerprint().len(), 16 * 2 + 7);
}

/// A key file as the first release wrote it: container format 1 with one
/// X25519 slot holding a format-1 keyring (no version field).
fn first_release_key_file(vault: VaultId, key: &[u8; 32], device: &x25519::Identity) -> Vec<u8> {
    use std::io::Write;
    let mut keyring = vec![1u8];
    keyring.extend_from_slice(vault.as_bytes());
    keyring.extend_from_slice(&1u32.to_be_bytes());
    keyring.extend_from_slice(&1u32.to_be_bytes());
    keyring.extend_from_slice(&1u32.to_be_bytes());
    keyring.extend_from_slice(key);
    let recipient = device.to_public();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .expect("encryptor");
    let mut slot = Vec::new();
    let mut writer = encryptor.wrap_output(&mut slot).expect("wrap");
    writer.write_all(&keyring).expect("write");
    writer.finish().expect("finish");
    let mut file = b"CVKF".to_vec();
    file.extend_from_slice(&[1, 1, 2]);
    file.extend_from_slice(&(slot.len() as u32).to_be_bytes());
    file.extend_from_slice(&slot);
    file
}

#[test]
fn a_first_release_key_file_still_opens_as_version_zero_and_its_successor_is_accepted() {
    use chatvault_core::{Aad, ChatId, Cipher, Part};
    let device = x25519::Identity::generate();
    let vault = VaultId::new();
    let old = first_release_key_file(vault, &[7u8; 32], &device);
    let opened = open(&old, &device);
    assert_eq!(opened.vault(), vault);
    assert_eq!(opened.keyring_version(), 0);
    assert_eq!(opened.key_ids(), vec![1]);
    let aad = Aad {
        vault,
        chat: ChatId::new(),
        part: Part::Summary,
        version: 1,
    };
    let sealed = opened.seal(&aad, b"old vault").expect("seal");
    // The next write upgrades the file; it follows the old one.
    let upgraded = open(&key_file(&opened, &device), &device);
    assert_eq!(upgraded.keyring_version(), 1);
    opened
        .check_successor(&upgraded)
        .expect("the upgrade is accepted");
    assert_eq!(upgraded.open(&aad, &sealed).expect("open"), b"old vault");
}

/// A key file a removed device writes from what it still knows (the vault
/// id, the laptop's public key, data key 1): key 1 plus a key of its own
/// made current, with a bogus tag for the laptop's key 2, at `bumps`
/// versions past the one it last read.
fn forged_by_the_removed_phone(
    phone: &EnvelopeCipher,
    laptop: &x25519::Identity,
    bumps: usize,
) -> EnvelopeCipher {
    let forged = open(&key_file(phone, laptop), laptop);
    forged.rotate();
    forged.rotate();
    forged.retire(2).expect("retire its own key 2");
    let mut file = key_file(&forged, laptop);
    for _ in 1..bumps {
        file = key_file(&open(&file, laptop), laptop);
    }
    open(&file, laptop)
}

#[test]
fn a_removed_device_cannot_forge_a_successor_key_file() {
    let laptop_key = x25519::Identity::generate();
    let phone_key = x25519::Identity::generate();
    let created = EnvelopeCipher::generate(VaultId::new());
    let both = KeyProtection::for_recipients([laptop_key.to_public(), phone_key.to_public()]);
    let v1 = created.to_key_file(&both).expect("key file");
    let laptop = open(&v1, &laptop_key);
    let phone = open(&v1, &phone_key);

    // The laptop removes the phone: the data key rotates in the same file.
    let draft = open(&v1, &laptop_key);
    assert_eq!(draft.rotate(), 2);
    let removal = open(&key_file(&draft, &laptop_key), &laptop_key);
    assert!(laptop.adopt_keys(&removal).expect("adopt the removal"));
    assert_eq!(laptop.keyring_version(), 2);

    for bumps in [1, 2] {
        let forged = forged_by_the_removed_phone(&phone, &laptop_key, bumps);
        assert!(forged.keyring_version() >= laptop.keyring_version());
        assert_eq!(forged.key_ids(), vec![1, 3]);
        let err = laptop
            .check_successor(&forged)
            .expect_err("a forged successor must be refused");
        assert!(matches!(err, Error::Tampered { .. }), "{err:?}");
        assert!(matches!(
            laptop.adopt_keys(&forged),
            Err(Error::Tampered { .. })
        ));
        assert_eq!(laptop.current_key_id(), 2, "still seals under key 2");
        assert_eq!(laptop.key_ids(), vec![1, 2]);
        // The trust kept in the replica refuses it without any secret.
        let kept = KeyTrust::from_bytes(&KeyTrust::of(&laptop).to_bytes()).expect("decode");
        assert_eq!(kept, KeyTrust::of(&laptop));
        assert!(matches!(kept.admits(&forged), Err(Error::Tampered { .. })));
    }

    // The genuine next key file (say the laptop retires key 1) still follows.
    let next = open(&key_file(&removal, &laptop_key), &laptop_key);
    next.retire(1).expect("retire key 1");
    let next = open(&key_file(&next, &laptop_key), &laptop_key);
    KeyTrust::of(&laptop)
        .admits(&next)
        .expect("a genuine successor follows");
    laptop.check_successor(&next).expect("and by the cipher");
}

#[test]
fn two_different_key_files_of_one_version_are_refused() {
    let device = x25519::Identity::generate();
    let v1 = key_file(&EnvelopeCipher::generate(VaultId::new()), &device);
    let running = open(&v1, &device);
    let first = open(&v1, &device);
    first.rotate();
    let first = open(&key_file(&first, &device), &device);
    let second = open(&v1, &device);
    second.rotate();
    let second = open(&key_file(&second, &device), &device);
    assert_eq!(first.keyring_version(), second.keyring_version());
    running.adopt_keys(&first).expect("the first version 2");
    // The same file again is fine; another one under version 2 is not.
    running
        .check_successor(&first)
        .expect("the same file again");
    let err = running
        .check_successor(&second)
        .expect_err("another version 2 refused");
    assert!(matches!(err, Error::Tampered { .. }), "{err:?}");
}

#[test]
fn the_trusted_key_file_record_refuses_garbage_with_a_typed_error() {
    let trust = KeyTrust::of(&EnvelopeCipher::generate(VaultId::new())).to_bytes();
    for cut in 0..trust.len() {
        assert!(
            matches!(
                KeyTrust::from_bytes(&trust[..cut]),
                Err(Error::Corrupt { .. })
            ),
            "cut at {cut}"
        );
    }
    let mut newer = trust.clone();
    newer[4] = 9;
    assert!(matches!(
        KeyTrust::from_bytes(&newer),
        Err(Error::UnsupportedFormat { .. })
    ));
    let mut trailing = trust;
    trailing.push(0);
    assert!(matches!(
        KeyTrust::from_bytes(&trailing),
        Err(Error::Corrupt { .. })
    ));
}
