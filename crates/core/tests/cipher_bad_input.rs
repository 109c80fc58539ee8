//! The envelope cipher under good and bad input: every malformed, moved or
//! tampered blob and key file gives a typed error, never a panic or a wrong
//! plaintext.

use age::secrecy::SecretString;
use age::x25519;
use chatvault_core::envelope::{
    export_age, EnvelopeCipher, ExportTarget, KeyProtection, Padding, Unlock, BLOB_FORMAT,
    BLOB_FORMAT_UNPADDED, BLOB_OVERHEAD, KEYRING_FORMAT, KEYRING_FORMAT_WITHOUT_FLOOR,
};
use chatvault_core::{Aad, ChatId, Cipher, Error, Part, VaultId};
use proptest::prelude::*;
use std::io::Read;
use std::sync::Arc;

/// Low scrypt cost so tests stay fast; production uses age's default.
const TEST_WORK_FACTOR: u8 = 4;

fn aad_for(cipher: &EnvelopeCipher) -> Aad {
    Aad {
        vault: cipher.vault(),
        chat: ChatId::new(),
        part: Part::Body,
        version: 7,
    }
}

fn passphrase(text: &str) -> SecretString {
    SecretString::from(text.to_string())
}

fn sealed_sample() -> (EnvelopeCipher, Aad, Vec<u8>) {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    let aad = aad_for(&cipher);
    let sealed = cipher
        .seal(&aad, b"the quick brown fox jumps over the lazy dog")
        .expect("seal");
    (cipher, aad, sealed)
}

fn age_decrypt(file: &[u8], identity: &dyn age::Identity) -> Vec<u8> {
    let decryptor = age::Decryptor::new(file).expect("a valid age header");
    let mut plaintext = Vec::new();
    decryptor
        .decrypt(std::iter::once(identity))
        .expect("identity matches")
        .read_to_end(&mut plaintext)
        .expect("payload authenticates");
    plaintext
}

/// The slots of a key file, parsed independently of the library:
/// `"CVKF" | format | count | (kind | len BE u32 | age file)*`.
fn key_file_slots(file: &[u8]) -> Vec<(u8, Vec<u8>)> {
    assert_eq!(&file[..4], b"CVKF");
    let mut rest = &file[6..];
    let mut slots = Vec::new();
    for _ in 0..file[5] {
        let kind = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        slots.push((kind, rest[5..5 + len].to_vec()));
        rest = &rest[5 + len..];
    }
    assert!(rest.is_empty());
    slots
}

fn key_file_with_one_slot(kind: u8, age_file: &[u8]) -> Vec<u8> {
    let mut file = b"CVKF".to_vec();
    file.extend_from_slice(&[2, 1, kind]);
    file.extend_from_slice(&(age_file.len() as u32).to_be_bytes());
    file.extend_from_slice(age_file);
    file
}

#[test]
fn seal_then_open_returns_the_plaintext() {
    let (cipher, aad, sealed) = sealed_sample();
    assert_eq!(
        cipher.open(&aad, &sealed).expect("open"),
        b"the quick brown fox jumps over the lazy dog"
    );
}

#[test]
fn sealed_blob_layout_is_format_key_id_nonce_then_ciphertext() {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    cipher.set_padding(Padding::Off);
    let aad = aad_for(&cipher);
    let a = cipher.seal(&aad, &[0u8; 100]).expect("seal");
    let b = cipher.seal(&aad, &[0u8; 100]).expect("seal");
    assert_eq!(a.len(), 100 + BLOB_OVERHEAD);
    assert_eq!(a[0], BLOB_FORMAT_UNPADDED);
    assert_eq!(&a[1..5], &cipher.current_key_id().to_be_bytes());
    assert_eq!(EnvelopeCipher::sealed_key_id(&a).expect("header"), 1);
    assert_ne!(a[5..29], b[5..29], "every seal draws a fresh nonce");
    assert_ne!(a, b);
}

#[test]
fn empty_plaintext_round_trips() {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    let aad = aad_for(&cipher);
    let padded = cipher.seal(&aad, b"").expect("seal");
    assert_eq!(padded.len(), 256 + BLOB_OVERHEAD);
    assert_eq!(cipher.open(&aad, &padded).expect("open"), b"");
    cipher.set_padding(Padding::Off);
    let sealed = cipher.seal(&aad, b"").expect("seal");
    assert_eq!(sealed.len(), BLOB_OVERHEAD);
    assert_eq!(cipher.open(&aad, &sealed).expect("open"), b"");
}

#[test]
fn padded_blobs_hide_lengths_within_a_bucket_and_open_to_the_exact_plaintext() {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    let aad = aad_for(&cipher);
    assert_eq!(cipher.padding(), Padding::default());
    let short = cipher.seal(&aad, b"hi").expect("seal");
    let longer = cipher.seal(&aad, &[b'x'; 200]).expect("seal");
    assert_eq!(short[0], BLOB_FORMAT);
    assert_eq!(short.len(), longer.len(), "both are in the 256-byte floor");
    assert_eq!(cipher.open(&aad, &short).expect("open"), b"hi");
    assert_eq!(cipher.open(&aad, &longer).expect("open"), vec![b'x'; 200]);
    // 1,000 and 1,010 bytes fall into one Padmé bucket (1,024 bytes).
    let a = cipher.seal(&aad, &[1u8; 1000]).expect("seal");
    let b = cipher.seal(&aad, &[1u8; 1010]).expect("seal");
    assert_eq!(a.len(), b.len());
    assert_eq!(a.len(), 1024 + BLOB_OVERHEAD);
    // Plaintexts that end like padding come back whole.
    let tricky = [b"end\x80".as_slice(), b"\x80\x00\x00", &[0u8; 600]];
    for plaintext in tricky {
        let sealed = cipher.seal(&aad, plaintext).expect("seal");
        assert_eq!(cipher.open(&aad, &sealed).expect("open"), plaintext);
    }
}

#[test]
fn devices_with_different_padding_read_each_others_blobs() {
    let padded = EnvelopeCipher::generate(VaultId::new());
    let device = x25519::Identity::generate();
    let file = padded
        .to_key_file(&KeyProtection::for_recipients([device.to_public()]))
        .expect("key file");
    let unpadded = EnvelopeCipher::from_key_file(&file, &Unlock::Identity(device)).expect("open");
    unpadded.set_padding(Padding::Off);
    padded.set_padding(Padding::PowerOfTwo { floor: 64 });
    let aad = aad_for(&padded);
    let from_padded = padded.seal(&aad, b"padded").expect("seal");
    let from_unpadded = unpadded.seal(&aad, b"unpadded").expect("seal");
    assert_eq!(from_padded.len(), 64 + BLOB_OVERHEAD);
    assert_eq!(from_unpadded.len(), 8 + BLOB_OVERHEAD);
    assert_eq!(unpadded.open(&aad, &from_padded).expect("open"), b"padded");
    assert_eq!(
        padded.open(&aad, &from_unpadded).expect("open"),
        b"unpadded"
    );
}

#[test]
fn a_padded_blob_relabelled_or_trimmed_is_tampered() {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    let aad = aad_for(&cipher);
    let sealed = cipher.seal(&aad, b"hello").expect("seal");
    // Relabelling a padded blob as unpadded would hand out the padding with
    // the plaintext: the format byte is authenticated, so it is refused.
    let mut relabelled = sealed.clone();
    relabelled[0] = BLOB_FORMAT_UNPADDED;
    assert!(matches!(
        cipher.open(&aad, &relabelled),
        Err(Error::Tampered { .. })
    ));
    cipher.set_padding(Padding::Off);
    let mut unpadded = cipher.seal(&aad, b"hello").expect("seal");
    unpadded[0] = BLOB_FORMAT;
    assert!(matches!(
        cipher.open(&aad, &unpadded),
        Err(Error::Tampered { .. })
    ));
    let mut trimmed = sealed.clone();
    trimmed.remove(60);
    assert!(matches!(
        cipher.open(&aad, &trimmed),
        Err(Error::Tampered { .. })
    ));
}

#[test]
fn empty_blob_is_corrupt() {
    let (cipher, aad, _) = sealed_sample();
    assert!(matches!(cipher.open(&aad, &[]), Err(Error::Corrupt { .. })));
    assert!(matches!(
        EnvelopeCipher::sealed_key_id(&[]),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn truncated_blob_is_corrupt_below_the_minimum_and_tampered_above() {
    let (cipher, aad, sealed) = sealed_sample();
    for len in 1..sealed.len() {
        let result = cipher.open(&aad, &sealed[..len]);
        if len < BLOB_OVERHEAD {
            assert!(
                matches!(result, Err(Error::Corrupt { .. })),
                "len {len}: {result:?}"
            );
        } else {
            assert!(
                matches!(result, Err(Error::Tampered { .. })),
                "len {len}: {result:?}"
            );
        }
    }
}

#[test]
fn blob_moved_to_another_chat_is_tampered() {
    let (cipher, aad, sealed) = sealed_sample();
    let moved = Aad {
        chat: ChatId::new(),
        ..aad
    };
    assert!(matches!(
        cipher.open(&moved, &sealed),
        Err(Error::Tampered { .. })
    ));
}

#[test]
fn blob_moved_to_another_part_is_tampered() {
    let (cipher, aad, sealed) = sealed_sample();
    let moved = Aad {
        part: Part::Summary,
        ..aad
    };
    assert!(matches!(
        cipher.open(&moved, &sealed),
        Err(Error::Tampered { .. })
    ));
}

#[test]
fn blob_moved_to_another_version_is_tampered() {
    let (cipher, aad, sealed) = sealed_sample();
    for version in [0, 6, 8, u64::MAX] {
        let moved = Aad { version, ..aad };
        assert!(matches!(
            cipher.open(&moved, &sealed),
            Err(Error::Tampered { .. })
        ));
    }
}

#[test]
fn blob_moved_to_another_vault_is_tampered() {
    let (cipher, aad, sealed) = sealed_sample();
    let moved = Aad {
        vault: VaultId::new(),
        ..aad
    };
    assert!(matches!(
        cipher.open(&moved, &sealed),
        Err(Error::Tampered { .. })
    ));
    // Another vault's keyring also has a key 1, but not this one.
    let other = EnvelopeCipher::generate(VaultId::new());
    assert!(matches!(
        other.open(&aad, &sealed),
        Err(Error::Tampered { .. })
    ));
}

#[test]
fn blob_relabelled_with_another_existing_key_id_is_tampered() {
    let (cipher, aad, mut sealed) = sealed_sample();
    let new_id = cipher.rotate();
    sealed[1..5].copy_from_slice(&new_id.to_be_bytes());
    assert!(matches!(
        cipher.open(&aad, &sealed),
        Err(Error::Tampered { .. })
    ));
}

#[test]
fn unknown_key_id_is_reported_with_the_id() {
    let (cipher, aad, mut sealed) = sealed_sample();
    sealed[1..5].copy_from_slice(&99u32.to_be_bytes());
    assert!(matches!(
        cipher.open(&aad, &sealed),
        Err(Error::UnknownKeyId { key_id: 99 })
    ));
}

#[test]
fn unknown_format_byte_is_unsupported_and_zero_is_corrupt() {
    let (cipher, aad, sealed) = sealed_sample();
    for format in [BLOB_FORMAT + 1, 4, 255] {
        let mut newer = sealed.clone();
        newer[0] = format;
        let result = cipher.open(&aad, &newer);
        assert!(
            matches!(result, Err(Error::UnsupportedFormat { found, supported: 2, .. }) if found == u32::from(format)),
            "{result:?}"
        );
    }
    let mut zero = sealed;
    zero[0] = 0;
    assert!(matches!(
        cipher.open(&aad, &zero),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn rotation_seals_new_blobs_under_the_new_key_and_old_blobs_still_open() {
    let (cipher, aad, old_blob) = sealed_sample();
    assert_eq!(cipher.current_key_id(), 1);
    let new_id = cipher.rotate();
    assert_eq!(new_id, 2);
    assert_eq!(cipher.current_key_id(), 2);
    assert_eq!(cipher.key_ids(), vec![1, 2]);
    let new_blob = cipher.seal(&aad, b"after rotation").expect("seal");
    assert_eq!(EnvelopeCipher::sealed_key_id(&new_blob).expect("header"), 2);
    assert_eq!(EnvelopeCipher::sealed_key_id(&old_blob).expect("header"), 1);
    assert_eq!(
        cipher.open(&aad, &new_blob).expect("open new"),
        b"after rotation"
    );
    assert_eq!(
        cipher.open(&aad, &old_blob).expect("open old"),
        b"the quick brown fox jumps over the lazy dog"
    );
}

#[test]
fn retired_key_makes_its_blobs_unknown_key_id() {
    let (cipher, aad, old_blob) = sealed_sample();
    cipher.rotate();
    let new_blob = cipher.seal(&aad, b"kept").expect("seal");
    cipher.retire(1).expect("retire the old key");
    assert_eq!(cipher.key_ids(), vec![2]);
    assert!(matches!(
        cipher.open(&aad, &old_blob),
        Err(Error::UnknownKeyId { key_id: 1 })
    ));
    assert_eq!(cipher.open(&aad, &new_blob).expect("open"), b"kept");
}

#[test]
fn retiring_the_current_or_an_absent_key_is_refused() {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    assert!(matches!(cipher.retire(1), Err(Error::InvalidInput { .. })));
    assert!(matches!(
        cipher.retire(5),
        Err(Error::UnknownKeyId { key_id: 5 })
    ));
    assert_eq!(cipher.key_ids(), vec![1]);
}

#[test]
fn key_file_round_trips_via_passphrase() {
    let (cipher, aad, sealed) = sealed_sample();
    let file = cipher
        .to_key_file(
            &KeyProtection::for_passphrase(passphrase("hunter2 but longer"))
                .with_work_factor(TEST_WORK_FACTOR),
        )
        .expect("key file");
    let unlocked =
        EnvelopeCipher::from_key_file(&file, &Unlock::Passphrase(passphrase("hunter2 but longer")))
            .expect("unlock");
    assert_eq!(unlocked.vault(), cipher.vault());
    assert_eq!(unlocked.current_key_id(), 1);
    assert_eq!(
        unlocked.open(&aad, &sealed).expect("open"),
        b"the quick brown fox jumps over the lazy dog"
    );
}

#[test]
fn key_file_round_trips_via_each_of_two_recipients() {
    let (cipher, aad, sealed) = sealed_sample();
    let laptop = x25519::Identity::generate();
    let recovery = x25519::Identity::generate();
    let file = cipher
        .to_key_file(&KeyProtection::for_recipients([
            laptop.to_public(),
            recovery.to_public(),
        ]))
        .expect("key file");
    for identity in [laptop, recovery] {
        let unlocked =
            EnvelopeCipher::from_key_file(&file, &Unlock::Identity(identity)).expect("unlock");
        assert_eq!(unlocked.vault(), cipher.vault());
        assert_eq!(
            unlocked.open(&aad, &sealed).expect("open"),
            b"the quick brown fox jumps over the lazy dog"
        );
    }
}

#[test]
fn key_file_with_passphrase_and_recipients_opens_with_either() {
    let (cipher, aad, sealed) = sealed_sample();
    let device = x25519::Identity::generate();
    let file = cipher
        .to_key_file(
            &KeyProtection::for_passphrase(passphrase("both ways"))
                .with_recipient(device.to_public())
                .with_work_factor(TEST_WORK_FACTOR),
        )
        .expect("key file");
    assert_eq!(key_file_slots(&file).len(), 2);
    for unlock in [
        Unlock::Passphrase(passphrase("both ways")),
        Unlock::Identity(device),
    ] {
        let unlocked = EnvelopeCipher::from_key_file(&file, &unlock).expect("unlock");
        assert_eq!(unlocked.open(&aad, &sealed).expect("open").len(), 43);
    }
}

#[test]
fn rotated_keyring_survives_the_key_file() {
    let (cipher, aad, old_blob) = sealed_sample();
    cipher.rotate();
    let new_blob = cipher.seal(&aad, b"new").expect("seal");
    let device = x25519::Identity::generate();
    let file = cipher
        .to_key_file(&KeyProtection::for_recipients([device.to_public()]))
        .expect("key file");
    let unlocked = EnvelopeCipher::from_key_file(&file, &Unlock::Identity(device)).expect("unlock");
    assert_eq!(unlocked.current_key_id(), 2);
    assert_eq!(unlocked.key_ids(), vec![1, 2]);
    assert_eq!(unlocked.open(&aad, &new_blob).expect("open new"), b"new");
    assert!(unlocked.open(&aad, &old_blob).is_ok());
    let resealed = unlocked.seal(&aad, b"x").expect("seal");
    assert_eq!(EnvelopeCipher::sealed_key_id(&resealed).expect("header"), 2);
}

#[test]
fn wrong_passphrase_is_wrong_key() {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    let file = cipher
        .to_key_file(
            &KeyProtection::for_passphrase(passphrase("right one"))
                .with_work_factor(TEST_WORK_FACTOR),
        )
        .expect("key file");
    let result = EnvelopeCipher::from_key_file(&file, &Unlock::Passphrase(passphrase("wrong one")));
    assert!(matches!(result, Err(Error::WrongKey { .. })), "{result:?}");
}

#[test]
fn wrong_identity_is_wrong_key() {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    let device = x25519::Identity::generate();
    let file = cipher
        .to_key_file(&KeyProtection::for_recipients([device.to_public()]))
        .expect("key file");
    let stranger = x25519::Identity::generate();
    let result = EnvelopeCipher::from_key_file(&file, &Unlock::Identity(stranger));
    assert!(matches!(result, Err(Error::WrongKey { .. })), "{result:?}");
}

#[test]
fn unlocking_a_slot_the_key_file_lacks_is_wrong_key() {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    let device = x25519::Identity::generate();
    let recipients_only = cipher
        .to_key_file(&KeyProtection::for_recipients([device.to_public()]))
        .expect("key file");
    let result =
        EnvelopeCipher::from_key_file(&recipients_only, &Unlock::Passphrase(passphrase("any")));
    assert!(matches!(result, Err(Error::WrongKey { .. })), "{result:?}");
    let passphrase_only = cipher
        .to_key_file(
            &KeyProtection::for_passphrase(passphrase("p")).with_work_factor(TEST_WORK_FACTOR),
        )
        .expect("key file");
    let result = EnvelopeCipher::from_key_file(&passphrase_only, &Unlock::Identity(device));
    assert!(matches!(result, Err(Error::WrongKey { .. })), "{result:?}");
}

#[test]
fn key_file_from_a_newer_format_is_unsupported() {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    let device = x25519::Identity::generate();
    let mut file = cipher
        .to_key_file(&KeyProtection::for_recipients([device.to_public()]))
        .expect("key file");
    file[4] = 3;
    let result = EnvelopeCipher::from_key_file(&file, &Unlock::Identity(device));
    assert!(
        matches!(
            result,
            Err(Error::UnsupportedFormat {
                found: 3,
                supported: 2,
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn keyring_from_a_newer_format_inside_a_valid_slot_is_unsupported() {
    let device = x25519::Identity::generate();
    let mut newer_keyring = vec![KEYRING_FORMAT + 1];
    newer_keyring.extend_from_slice(&[0u8; 60]);
    let slot = export_age(
        &newer_keyring,
        &ExportTarget::Recipients(vec![device.to_public()]),
    )
    .expect("age file");
    let file = key_file_with_one_slot(2, &slot);
    let result = EnvelopeCipher::from_key_file(&file, &Unlock::Identity(device));
    assert!(
        matches!(result, Err(Error::UnsupportedFormat { found, .. }) if found == u32::from(KEYRING_FORMAT) + 1),
        "{result:?}"
    );
}

#[test]
fn garbage_keyring_inside_a_valid_slot_is_corrupt() {
    let device = x25519::Identity::generate();
    let slot = export_age(
        &[1, 2, 3],
        &ExportTarget::Recipients(vec![device.to_public()]),
    )
    .expect("age file");
    let file = key_file_with_one_slot(2, &slot);
    let result = EnvelopeCipher::from_key_file(&file, &Unlock::Identity(device));
    assert!(matches!(result, Err(Error::Corrupt { .. })), "{result:?}");
}

#[test]
fn key_file_slots_are_standard_age_files() {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    let device = x25519::Identity::generate();
    let file = cipher
        .to_key_file(
            &KeyProtection::for_passphrase(passphrase("no lock-in"))
                .with_recipient(device.to_public())
                .with_work_factor(TEST_WORK_FACTOR),
        )
        .expect("key file");
    let slots = key_file_slots(&file);
    assert_eq!(
        slots.iter().map(|(kind, _)| *kind).collect::<Vec<_>>(),
        vec![3, 2]
    );
    // `age -d slot3 > passphrase-identity.txt` (asks for the passphrase),
    // then `age -d -i passphrase-identity.txt slot2`.
    let identity_text = age_decrypt(
        &slots[0].1,
        &age::scrypt::Identity::new(passphrase("no lock-in")),
    );
    let passphrase_identity: x25519::Identity = String::from_utf8(identity_text)
        .expect("text")
        .parse()
        .expect("an age X25519 identity");
    let by_passphrase = age_decrypt(&slots[1].1, &passphrase_identity);
    let by_device = age_decrypt(&slots[1].1, &device);
    assert_eq!(by_passphrase, by_device);
    assert_eq!(
        by_passphrase[0], KEYRING_FORMAT_WITHOUT_FLOOR,
        "keyring format version (format 4 until the format floor is raised)"
    );
    assert_eq!(&by_passphrase[1..17], cipher.vault().as_bytes());
    assert_eq!(
        &by_passphrase[17..25],
        &1u64.to_be_bytes(),
        "key file version"
    );
}

#[test]
fn invalid_key_protection_is_refused() {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    for protection in [
        KeyProtection::default(),
        KeyProtection::for_passphrase(passphrase("")),
        KeyProtection::for_passphrase(passphrase("ok")).with_work_factor(0),
        KeyProtection::for_passphrase(passphrase("ok")).with_work_factor(23),
    ] {
        let result = cipher.to_key_file(&protection);
        assert!(
            matches!(result, Err(Error::InvalidInput { .. })),
            "{protection:?}: {result:?}"
        );
    }
}

#[test]
fn export_to_passphrase_is_a_standard_age_file() {
    let file = export_age(
        b"every chat, exported",
        &ExportTarget::Passphrase {
            passphrase: passphrase("export pass"),
            work_factor: Some(TEST_WORK_FACTOR),
        },
    )
    .expect("export");
    assert!(file.starts_with(b"age-encryption.org/v1\n-> scrypt "));
    let plaintext = age_decrypt(
        &file,
        &age::scrypt::Identity::new(passphrase("export pass")),
    );
    assert_eq!(plaintext, b"every chat, exported");
}

#[test]
fn export_to_recipients_is_a_standard_age_file_for_each_recipient() {
    let a = x25519::Identity::generate();
    let b = x25519::Identity::generate();
    let data = vec![42u8; 200_000];
    let file = export_age(
        &data,
        &ExportTarget::Recipients(vec![a.to_public(), b.to_public()]),
    )
    .expect("export");
    assert!(file.starts_with(b"age-encryption.org/v1\n-> X25519 "));
    assert_eq!(age_decrypt(&file, &a), data);
    assert_eq!(age_decrypt(&file, &b), data);
}

#[test]
fn export_without_a_usable_target_is_refused() {
    for target in [
        ExportTarget::Recipients(vec![]),
        ExportTarget::Passphrase {
            passphrase: passphrase(""),
            work_factor: None,
        },
        ExportTarget::Passphrase {
            passphrase: passphrase("ok"),
            work_factor: Some(64),
        },
    ] {
        let result = export_age(b"x", &target);
        assert!(
            matches!(result, Err(Error::InvalidInput { .. })),
            "{target:?}: {result:?}"
        );
    }
}

#[test]
fn debug_output_of_secrets_reveals_nothing() {
    let secret = "correct horse battery staple";
    let protection = KeyProtection::for_passphrase(passphrase(secret));
    assert!(!format!("{protection:?}").contains(secret));
    let unlock = Unlock::Passphrase(passphrase(secret));
    assert!(!format!("{unlock:?}").contains(secret));
    let identity = x25519::Identity::generate();
    let identity_text = {
        use age::secrecy::ExposeSecret;
        identity.to_string().expose_secret().to_string()
    };
    let shown = format!("{:?}", Unlock::Identity(identity));
    assert!(shown.starts_with("Unlock::Identity(for age1"), "{shown}");
    assert!(!shown.contains(&identity_text));
}

#[test]
fn one_cipher_shared_across_threads_seals_and_opens_while_rotating() {
    let cipher = Arc::new(EnvelopeCipher::generate(VaultId::new()));
    let vault = cipher.vault();
    let shared: Arc<dyn Cipher> = cipher.clone();
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let aad = Aad {
                        vault,
                        chat: ChatId::new(),
                        part: Part::Summary,
                        version: i,
                    };
                    let text = format!("thread {t} record {i}");
                    let sealed = shared.seal(&aad, text.as_bytes()).expect("seal");
                    assert_eq!(shared.open(&aad, &sealed).expect("open"), text.as_bytes());
                }
            })
        })
        .collect();
    for _ in 0..5 {
        cipher.rotate();
    }
    for worker in workers {
        worker.join().expect("worker thread");
    }
    assert_eq!(cipher.current_key_id(), 6);
}

fn flipped(bytes: &[u8], position: usize, bit: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[position] ^= 1 << bit;
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_plaintext_round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..4096), version in any::<u64>()) {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let aad = Aad { version, ..aad_for(&cipher) };
        let sealed = cipher.seal(&aad, &plaintext).expect("seal");
        prop_assert_eq!(cipher.open(&aad, &sealed).expect("open"), plaintext);
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_blob_is_detected(position in 0usize..(43 + BLOB_OVERHEAD), bit in 0u8..8) {
        let (cipher, aad, sealed) = sealed_sample();
        let result = cipher.open(&aad, &flipped(&sealed, position, bit));
        match position {
            0 => prop_assert!(
                matches!(result, Err(Error::UnsupportedFormat { .. }) | Err(Error::Corrupt { .. })),
                "format byte: {:?}", result
            ),
            1..=4 => prop_assert!(
                matches!(result, Err(Error::UnknownKeyId { .. })),
                "key id: {:?}", result
            ),
            _ => prop_assert!(matches!(result, Err(Error::Tampered { .. })), "{:?}", result),
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_key_file_is_detected(seed in any::<prop::sample::Index>(), bit in 0u8..8) {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let device = x25519::Identity::generate();
        let file = cipher
            .to_key_file(&KeyProtection::for_recipients([device.to_public()]))
            .expect("key file");
        let position = seed.index(file.len());
        let result = EnvelopeCipher::from_key_file(&flipped(&file, position, bit), &Unlock::Identity(device));
        prop_assert!(
            matches!(
                result,
                Err(Error::Corrupt { .. } | Error::Tampered { .. } | Error::WrongKey { .. } | Error::UnsupportedFormat { .. })
            ),
            "position {}: {:?}", position, result
        );
    }

    #[test]
    fn random_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (cipher, aad, _) = sealed_sample();
        prop_assert!(cipher.open(&aad, &bytes).is_err());
        let _ = EnvelopeCipher::sealed_key_id(&bytes);
        let device = x25519::Identity::generate();
        prop_assert!(EnvelopeCipher::from_key_file(&bytes, &Unlock::Identity(device.clone())).is_err());
        prop_assert!(EnvelopeCipher::from_key_file(&bytes, &Unlock::Passphrase(passphrase("p"))).is_err());
        // The same bytes behind a valid container header and slot reach the
        // age parser and the keyring decoder.
        for kind in [1u8, 2] {
            let file = key_file_with_one_slot(kind, &bytes);
            prop_assert!(EnvelopeCipher::from_key_file(&file, &Unlock::Identity(device.clone())).is_err());
        }
        let blob_like = [&[BLOB_FORMAT, 0, 0, 0, 1][..], &bytes].concat();
        prop_assert!(cipher.open(&aad, &blob_like).is_err());
    }

    #[test]
    fn random_bytes_behind_an_age_header_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let device = x25519::Identity::generate();
        let age_like = [&b"age-encryption.org/v1\n-> X25519 "[..], &bytes].concat();
        let file = key_file_with_one_slot(2, &age_like);
        prop_assert!(EnvelopeCipher::from_key_file(&file, &Unlock::Identity(device)).is_err());
    }
}

#[test]
fn a_key_file_demanding_more_scrypt_work_than_chatvault_writes_is_refused_at_once() {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    let file = cipher
        .to_key_file(
            &KeyProtection::for_passphrase(passphrase("hostile server"))
                .with_work_factor(TEST_WORK_FACTOR),
        )
        .expect("key file");
    let (kind, age_file) = key_file_slots(&file).remove(0);
    // The server rewrites the scrypt stanza's work factor: 2^23 needs 8 GiB
    // of memory per unlock attempt. The header MAC is only checked after
    // scrypt ran, so nothing but a cap stops the work.
    let text = String::from_utf8_lossy(&age_file).into_owned();
    let stanza = text
        .lines()
        .find(|line| line.starts_with("-> scrypt "))
        .expect("a scrypt stanza");
    let hostile_stanza = format!(
        "{} 23",
        stanza.rsplit_once(' ').expect("salt and work factor").0
    );
    let hostile = text.replacen(stanza, &hostile_stanza, 1);
    let hostile = key_file_with_one_slot(kind, hostile.as_bytes());
    let err =
        EnvelopeCipher::from_key_file(&hostile, &Unlock::Passphrase(passphrase("hostile server")))
            .expect_err("a work factor above the cap must be refused");
    assert!(
        matches!(err, Error::Corrupt { ref reason, .. } if reason.contains("exceeds chatvault's maximum")),
        "{err}"
    );
}
