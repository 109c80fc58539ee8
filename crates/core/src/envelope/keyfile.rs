//! Key files: a vault's keyring, encrypted with age, in a container of slots.
//!
//! age refuses to encrypt one file to a passphrase *and* to other
//! recipients, so a key file holds up to two *slots*, each a complete,
//! standard age file of the same plaintext keyring:
//!
//! - a passphrase slot (age scrypt), for a person typing a passphrase;
//! - an X25519 slot encrypted to every device and recovery key at once.
//!
//! # Key file format (version 1)
//!
//! ```text
//! "CVKF" | format (1 byte, = 1) | slot count (1 byte)
//!   then per slot: kind (1 byte: 1 = passphrase, 2 = X25519)
//!                  | length (4 bytes, big-endian) | age file
//! ```
//!
//! Readers skip slot kinds they do not know, so a later build can add a kind
//! without locking older builds out of the slots they understand. A slot can
//! be cut out and decrypted with the `age` tool.
//!
//! # Keyring format (version 2), the plaintext inside each slot
//!
//! ```text
//! format (1 byte, = 2) | vault id (16) | key file version (8, BE)
//!   | current key id (4, BE) | key count (4, BE)
//!   | per key: key id (4, BE) | key (32)
//! ```
//!
//! The key file version grows by one with every key file written; a device
//! refuses a key file older than the one it holds (a rollback) and one that
//! holds none of its data keys (a substitution): see
//! [`EnvelopeCipher::check_successor`]. Format 1 (written by the first
//! release) lacks the version and still reads, as version 0; the next write
//! upgrades it.

use super::export::{self, check_passphrase, check_work_factor};
use super::{DataKey, EnvelopeCipher, Keyring, DATA_KEY_LEN};
use crate::ids::VaultId;
use crate::{Error, Result};
use age::secrecy::SecretString;
use age::x25519;
use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

/// Format version of key files (the slot container) written by this build.
pub const KEY_FILE_FORMAT: u8 = 1;
/// Format version of the plaintext keyring inside each slot.
pub const KEYRING_FORMAT: u8 = 2;

const MAGIC: &[u8; 4] = b"CVKF";
const SLOT_PASSPHRASE: u8 = 1;
const SLOT_X25519: u8 = 2;
const KEY_ENTRY_LEN: usize = 4 + DATA_KEY_LEN;
/// Header of a format-1 keyring (no version).
const KEYRING_V1_HEADER_LEN: usize = 1 + 16 + 4 + 4;
const KEYRING_HEADER_LEN: usize = 1 + 16 + 8 + 4 + 4;

/// How a key file is protected: a passphrase, X25519 recipients (devices, a
/// recovery key), or both (then the file has one slot for each).
///
/// ```
/// use chatvault_core::envelope::KeyProtection;
/// use age::secrecy::SecretString;
///
/// let laptop = age::x25519::Identity::generate();
/// let recovery = age::x25519::Identity::generate();
/// let protection = KeyProtection::for_passphrase(SecretString::from("a long passphrase"))
///     .with_recipient(laptop.to_public())
///     .with_recipient(recovery.to_public());
/// assert_eq!(protection.recipients.len(), 2);
/// ```
#[derive(Clone, Debug, Default)]
pub struct KeyProtection {
    /// The passphrase of the passphrase slot; `None` for no such slot.
    pub passphrase: Option<SecretString>,
    /// The recipients of the X25519 slot; empty for no such slot.
    pub recipients: Vec<x25519::Recipient>,
    /// scrypt work factor `log2 N` (1..=22) of the passphrase slot; `None`
    /// uses age's default, tuned to about one second on this machine. Tests
    /// use a low value to stay fast.
    pub work_factor: Option<u8>,
}

impl KeyProtection {
    /// Protection by `passphrase` alone.
    pub fn for_passphrase(passphrase: SecretString) -> Self {
        Self::default().with_passphrase(passphrase)
    }

    /// Protection by `recipients` alone.
    pub fn for_recipients(recipients: impl IntoIterator<Item = x25519::Recipient>) -> Self {
        Self {
            recipients: recipients.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Sets the passphrase.
    pub fn with_passphrase(mut self, passphrase: SecretString) -> Self {
        self.passphrase = Some(passphrase);
        self
    }

    /// Adds a recipient.
    pub fn with_recipient(mut self, recipient: x25519::Recipient) -> Self {
        self.recipients.push(recipient);
        self
    }

    /// Sets the scrypt work factor `log2 N` of the passphrase slot.
    pub fn with_work_factor(mut self, log_n: u8) -> Self {
        self.work_factor = Some(log_n);
        self
    }

    fn validate(&self) -> Result<()> {
        if self.passphrase.is_none() && self.recipients.is_empty() {
            return Err(Error::invalid(
                "a key file needs a passphrase or at least one recipient",
            ));
        }
        if let Some(p) = &self.passphrase {
            check_passphrase(p)?;
        }
        check_work_factor(self.work_factor)
    }
}

/// What unlocks a key file.
#[derive(Clone)]
pub enum Unlock {
    /// The passphrase of the key file's passphrase slot.
    Passphrase(SecretString),
    /// A device's or the recovery key's identity, for the X25519 slot.
    Identity(x25519::Identity),
}

impl fmt::Debug for Unlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unlock::Passphrase(_) => f.write_str("Unlock::Passphrase(..)"),
            Unlock::Identity(identity) => {
                write!(f, "Unlock::Identity(for {})", identity.to_public())
            }
        }
    }
}

impl EnvelopeCipher {
    /// Encrypts the keyring into a key file, for
    /// [`Storage::put_keyring`](crate::Storage::put_keyring). The file
    /// carries key file version one above
    /// [`keyring_version`](Self::keyring_version), which becomes this
    /// keyring's version: every key file written is
    /// newer than the last, so a server replaying an older one is caught by
    /// [`check_successor`](Self::check_successor).
    ///
    /// Errors: [`Error::InvalidInput`] when `protection` has neither a
    /// passphrase nor a recipient, has an empty passphrase, or a work factor
    /// outside 1..=22.
    pub fn to_key_file(&self, protection: &KeyProtection) -> Result<Vec<u8>> {
        protection.validate()?;
        let plaintext = {
            let mut ring = self.write();
            ring.version = ring.version.saturating_add(1);
            encode_keyring(&ring, ring.version)
        };
        let mut slots = Vec::with_capacity(2);
        if let Some(passphrase) = &protection.passphrase {
            let file =
                export::encrypt_to_passphrase(&plaintext, passphrase, protection.work_factor)?;
            slots.push((SLOT_PASSPHRASE, file));
        }
        if !protection.recipients.is_empty() {
            let file = export::encrypt_to_recipients(&plaintext, &protection.recipients)?;
            slots.push((SLOT_X25519, file));
        }
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(KEY_FILE_FORMAT);
        out.push(u8::try_from(slots.len()).map_err(|_| Error::invalid("too many key file slots"))?);
        for (kind, file) in slots {
            let len = u32::try_from(file.len())
                .map_err(|_| Error::invalid("key file slot larger than 4 GiB"))?;
            out.push(kind);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&file);
        }
        Ok(out)
    }

    /// Decrypts a key file (from [`Storage::get_keyring`](crate::Storage::get_keyring))
    /// and returns the vault's cipher.
    ///
    /// Errors: [`Error::WrongKey`] when the passphrase or identity does not
    /// open it (or the file has no slot of that kind);
    /// [`Error::UnsupportedFormat`] for a key file or keyring written by a
    /// newer chatvault; [`Error::Corrupt`] or [`Error::Tampered`] for a
    /// garbled or modified file.
    pub fn from_key_file(bytes: &[u8], unlock: &Unlock) -> Result<Self> {
        let slots = parse_container(bytes)?;
        let (kind, kind_name) = match unlock {
            Unlock::Passphrase(_) => (SLOT_PASSPHRASE, "passphrase"),
            Unlock::Identity(_) => (SLOT_X25519, "X25519"),
        };
        let mut candidates = slots.iter().filter(|(k, _)| *k == kind).peekable();
        if candidates.peek().is_none() {
            return Err(Error::WrongKey {
                message: format!("the key file has no {kind_name} slot"),
            });
        }
        // Built only when a slot needs it. age's own cap is this machine's
        // calibrated cost + 4 (gigabytes of memory): a key file comes from the
        // server, so a hostile one is capped at the largest work factor
        // chatvault itself ever writes.
        let passphrase_identity;
        let identity: &dyn age::Identity = match unlock {
            Unlock::Passphrase(p) => {
                let mut scrypt = age::scrypt::Identity::new(p.clone());
                scrypt.set_max_work_factor(export::MAX_WORK_FACTOR);
                passphrase_identity = scrypt;
                &passphrase_identity
            }
            Unlock::Identity(i) => i,
        };
        let what = format!("key file {kind_name} slot");
        let mut last_error = None;
        for (_, file) in candidates {
            match export::decrypt(file, identity, &what) {
                Ok(plaintext) => return decode_keyring(&plaintext).map(Self::from_keyring),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::WrongKey {
            message: format!("the key file has no {kind_name} slot"),
        }))
    }
}

fn parse_container(bytes: &[u8]) -> Result<Vec<(u8, &[u8])>> {
    const WHAT: &str = "key file";
    if bytes.len() < MAGIC.len() + 2 || !bytes.starts_with(MAGIC) {
        return Err(Error::corrupt(WHAT, "not a chatvault key file"));
    }
    let format = bytes[4];
    if format == 0 {
        return Err(Error::corrupt(WHAT, "format version 0 is not valid"));
    }
    if format > KEY_FILE_FORMAT {
        return Err(Error::UnsupportedFormat {
            what: WHAT.to_string(),
            found: u32::from(format),
            supported: u32::from(KEY_FILE_FORMAT),
        });
    }
    let count = bytes[5];
    let mut rest = &bytes[6..];
    let mut slots = Vec::with_capacity(usize::from(count));
    for i in 0..count {
        let truncated = || Error::corrupt(WHAT, format!("slot {i} is truncated"));
        let (&kind, after_kind) = rest.split_first().ok_or_else(truncated)?;
        let (len, after_len) = after_kind.split_first_chunk::<4>().ok_or_else(truncated)?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| truncated())?;
        if after_len.len() < len {
            return Err(truncated());
        }
        let (file, after_file) = after_len.split_at(len);
        slots.push((kind, file));
        rest = after_file;
    }
    if !rest.is_empty() {
        return Err(Error::corrupt(
            WHAT,
            format!("{} unexpected bytes after the last slot", rest.len()),
        ));
    }
    Ok(slots)
}

/// Encodes `ring` as a keyring of key file version `version`.
fn encode_keyring(ring: &Keyring, version: u64) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(
        KEYRING_HEADER_LEN + ring.keys.len() * KEY_ENTRY_LEN,
    ));
    out.push(KEYRING_FORMAT);
    out.extend_from_slice(ring.vault.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&ring.current.to_be_bytes());
    // A keyring never holds anywhere near u32::MAX keys (ids are u32).
    let count = u32::try_from(ring.keys.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for (id, key) in &ring.keys {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(key.bytes());
    }
    out
}

fn decode_keyring(bytes: &[u8]) -> Result<Keyring> {
    const WHAT: &str = "keyring";
    let Some(&format) = bytes.first() else {
        return Err(Error::corrupt(WHAT, "empty keyring"));
    };
    if format == 0 {
        return Err(Error::corrupt(WHAT, "format version 0 is not valid"));
    }
    if format > KEYRING_FORMAT {
        return Err(Error::UnsupportedFormat {
            what: WHAT.to_string(),
            found: u32::from(format),
            supported: u32::from(KEYRING_FORMAT),
        });
    }
    // Format 1 has no version: it reads as version 0.
    let (version_len, header_len) = match format {
        1 => (0, KEYRING_V1_HEADER_LEN),
        _ => (8, KEYRING_HEADER_LEN),
    };
    if bytes.len() < header_len {
        return Err(Error::corrupt(WHAT, "keyring header is truncated"));
    }
    let mut vault = [0u8; 16];
    vault.copy_from_slice(&bytes[1..17]);
    let version = match version_len {
        0 => 0,
        _ => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[17..25]);
            u64::from_be_bytes(b)
        }
    };
    let rest = &bytes[17 + version_len..];
    let current = be_u32(&rest[..4]);
    let count = be_u32(&rest[4..8]);
    let entries = &bytes[header_len..];
    let expected = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(KEY_ENTRY_LEN));
    if expected != Some(entries.len()) {
        return Err(Error::corrupt(
            WHAT,
            format!(
                "{count} keys announced but {} bytes of keys present",
                entries.len()
            ),
        ));
    }
    let mut keys = BTreeMap::new();
    for entry in entries.chunks_exact(KEY_ENTRY_LEN) {
        let id = be_u32(&entry[..4]);
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        key.copy_from_slice(&entry[4..]);
        if keys.insert(id, DataKey::from_bytes(key)).is_some() {
            return Err(Error::corrupt(WHAT, format!("key id {id} appears twice")));
        }
    }
    if !keys.contains_key(&current) {
        return Err(Error::corrupt(
            WHAT,
            format!("the current key id {current} is not in the keyring"),
        ));
    }
    Ok(Keyring {
        vault: VaultId::from_bytes(vault),
        version,
        current,
        keys,
    })
}

fn be_u32(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keyring_round_trips_through_its_encoding() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        cipher.rotate();
        let encoded = encode_keyring(&cipher.read(), 7);
        let decoded = decode_keyring(&encoded).expect("decode");
        assert_eq!(decoded.version, 7);
        let ring = cipher.read();
        assert_eq!(decoded.vault, ring.vault);
        assert_eq!(decoded.current, 2);
        assert_eq!(decoded.keys.len(), 2);
        for (id, key) in &ring.keys {
            assert_eq!(decoded.keys[id].bytes(), key.bytes());
        }
    }

    #[test]
    fn newer_keyring_format_is_unsupported() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let mut encoded = encode_keyring(&cipher.read(), 1);
        encoded[0] = KEYRING_FORMAT + 1;
        assert!(matches!(
            decode_keyring(&encoded),
            Err(Error::UnsupportedFormat { found: 3, .. })
        ));
    }

    #[test]
    fn keyring_without_its_current_key_is_corrupt() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let mut encoded = encode_keyring(&cipher.read(), 1);
        encoded[25..29].copy_from_slice(&7u32.to_be_bytes());
        assert!(matches!(
            decode_keyring(&encoded),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn unknown_slot_kinds_are_skipped() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let device = x25519::Identity::generate();
        let file = cipher
            .to_key_file(&KeyProtection::for_recipients([device.to_public()]))
            .expect("key file");
        // Prepend a slot of a kind this build does not know.
        let mut with_unknown = file[..5].to_vec();
        with_unknown.push(file[5] + 1);
        with_unknown.extend_from_slice(&[9, 0, 0, 0, 3, 1, 2, 3]);
        with_unknown.extend_from_slice(&file[6..]);
        let opened = EnvelopeCipher::from_key_file(&with_unknown, &Unlock::Identity(device))
            .expect("the X25519 slot still opens");
        assert_eq!(opened.vault(), cipher.vault());
    }

    /// The first release's keyring layout: no version field.
    fn encode_keyring_v1(ring: &Keyring) -> Vec<u8> {
        let mut out = vec![1u8];
        out.extend_from_slice(ring.vault.as_bytes());
        out.extend_from_slice(&ring.current.to_be_bytes());
        out.extend_from_slice(&(ring.keys.len() as u32).to_be_bytes());
        for (id, key) in &ring.keys {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(key.bytes());
        }
        out
    }

    #[test]
    fn first_release_keyring_without_version_reads_as_version_zero_and_upgrades_on_write() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        cipher.rotate();
        let old = encode_keyring_v1(&cipher.read());
        let decoded = decode_keyring(&old).expect("format 1 still reads");
        assert_eq!(decoded.version, 0);
        assert_eq!(decoded.current, 2);
        assert_eq!(decoded.keys.len(), 2);
        let reopened = EnvelopeCipher::from_keyring(decoded);
        let device = x25519::Identity::generate();
        let file = reopened
            .to_key_file(&KeyProtection::for_recipients([device.to_public()]))
            .expect("key file");
        let upgraded = EnvelopeCipher::from_key_file(&file, &Unlock::Identity(device))
            .expect("the upgraded file opens");
        assert_eq!(upgraded.keyring_version(), 1);
        reopened
            .check_successor(&upgraded)
            .expect("the upgrade follows the old keyring");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_keyring_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(decode_keyring(&bytes).is_err() || bytes.len() >= KEYRING_HEADER_LEN);
            let _ = parse_container(&bytes);
        }
    }
}
