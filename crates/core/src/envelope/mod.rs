//! The default [`Cipher`]: envelope encryption.
//!
//! Each vault has a keyring of random 256-bit data keys, each with a `u32`
//! key id; one of them is *current*. Every blob is sealed with the current
//! key using XChaCha20-Poly1305 and a fresh random 24-byte nonce, so sealing
//! and opening a record costs microseconds: no public-key operation per
//! record. The keyring itself is stored in the backend as a *key file*
//! (see [`EnvelopeCipher::to_key_file`]) whose slots are standard age files
//! protected by a passphrase and/or X25519 recipients.
//!
//! # Format and errors
//!
//! The sealed blob format (version byte, key id, nonce, ciphertext), the
//! associated data and the typed error each kind of bad input gets
//! (`Corrupt`, `UnsupportedFormat`, `UnknownKeyId`, `Tampered`) are
//! specified in `docs/design.md` §2; the key file in §3.
//!
//! # Rotation
//!
//! [`EnvelopeCipher::rotate`] adds a new data key and makes it current; old
//! keys stay so old blobs still open. Once every blob has been re-sealed
//! under the new key ([`EnvelopeCipher::sealed_key_id`] tells which key a blob
//! uses), [`EnvelopeCipher::retire`] drops the old key. Rotation and
//! retirement take `&self` (the keyring sits behind an `RwLock`), so a cipher
//! already shared as `Arc<dyn Cipher>` can be rotated in place; sealing and
//! opening only take the read side of the lock. After either, write the
//! key file again ([`EnvelopeCipher::to_key_file`] and
//! [`Storage::put_keyring`](crate::Storage::put_keyring)), or the change is
//! lost on the next unlock.
//!
//! # Secrets
//!
//! Data keys live in [`Zeroizing`](zeroize::Zeroizing) buffers and in AEAD instances that zeroize
//! themselves on drop; the plaintext keyring is encoded into a zeroizing
//! buffer. `Debug` output shows key ids, never keys.
//!
//! # Example
//!
//! ```
//! use chatvault_core::envelope::{EnvelopeCipher, KeyProtection, Unlock};
//! use chatvault_core::{Aad, ChatId, Cipher, Part, VaultId};
//! use age::secrecy::SecretString;
//! use std::sync::Arc;
//!
//! # fn main() -> chatvault_core::Result<()> {
//! // First device: create the vault's keyring and store its key file.
//! let cipher = EnvelopeCipher::generate(VaultId::new());
//! let protection = KeyProtection::for_passphrase(SecretString::from("correct horse battery"))
//!     .with_work_factor(10); // low for the example; omit to use age's default (≈1 s)
//! let key_file: Vec<u8> = cipher.to_key_file(&protection)?; // → Storage::put_keyring
//!
//! let aad = Aad { vault: cipher.vault(), chat: ChatId::new(), part: Part::Summary, version: 1 };
//! let cipher: Arc<dyn Cipher> = Arc::new(cipher);
//! let sealed = cipher.seal(&aad, b"hello")?;
//!
//! // Another device: unlock once, then open records.
//! let unlocked = EnvelopeCipher::from_key_file(
//!     &key_file,
//!     &Unlock::Passphrase(SecretString::from("correct horse battery")),
//! )?;
//! assert_eq!(unlocked.open(&aad, &sealed)?, b"hello");
//! # Ok(())
//! # }
//! ```

mod blob;
mod export;
mod keyfile;
mod keyring;
mod padding;
mod trust;

pub use blob::BlobHasher;
pub use export::{export_age, export_age_writer, ExportTarget};
pub(crate) use keyfile::{new_passphrase_slot, now_millis, parse_recipient, KeyFileView};
pub use keyfile::{
    KeyProtection, Protection, ProtectionKind, Unlock, KEYRING_FORMAT,
    KEYRING_FORMAT_WITHOUT_FLOOR, KEY_FILE_FORMAT,
};
pub(crate) use keyring::{key_tag, DataKey, Keyring, BLOB_SECRET_LEN, KEY_TAG_LEN};
pub use padding::Padding;
pub use trust::KeyTrust;

use crate::cipher::{Aad, Cipher};
use crate::ids::VaultId;
use crate::storage::Part;
use crate::{Error, Result};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Tag, XNonce};
use rand::RngCore;
use std::fmt;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Newest format version of sealed blobs, written by this build whenever
/// [`Padding`] is on: format 2 seals the plaintext padded (§2 of
/// `docs/design.md`).
pub const BLOB_FORMAT: u8 = 2;
/// Format version of unpadded blobs ([`Padding::Off`]), and of every blob
/// written before padding existed.
pub const BLOB_FORMAT_UNPADDED: u8 = 1;
/// Length of a sealed blob's header: format byte, key id and nonce.
pub const BLOB_HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// Bytes a sealed blob adds to its plaintext: header plus the 16-byte tag.
pub const BLOB_OVERHEAD: usize = BLOB_HEADER_LEN + TAG_LEN;
/// Length of a data key in bytes (256 bits).
pub const DATA_KEY_LEN: usize = 32;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The default [`Cipher`]: a vault's keyring of data keys, sealing with
/// XChaCha20-Poly1305. See the [module docs](self) for formats and errors.
///
/// Share it as `Arc<EnvelopeCipher>` or `Arc<dyn Cipher>`; every method takes
/// `&self`.
pub struct EnvelopeCipher {
    keyring: RwLock<Keyring>,
    /// How this device pads what it seals; a local choice, not part of the
    /// key file.
    padding: RwLock<Padding>,
}

impl fmt::Debug for EnvelopeCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.read();
        f.debug_struct("EnvelopeCipher")
            .field("vault", &ring.vault)
            .field("current_key_id", &ring.current)
            .field("key_ids", &ring.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl EnvelopeCipher {
    /// A new keyring for `vault` holding one fresh random data key (key id 1),
    /// drawn from the operating system's random number generator.
    pub fn generate(vault: VaultId) -> Self {
        Self::from_keyring(Keyring::generate(vault))
    }

    pub(crate) fn from_keyring(keyring: Keyring) -> Self {
        Self {
            keyring: RwLock::new(keyring),
            padding: RwLock::new(Padding::default()),
        }
    }

    /// Sets how blobs sealed from now on are padded ([`Padding::default`]
    /// unless set). Opening is unaffected: padded and unpadded blobs open
    /// alike, whatever this says.
    pub fn set_padding(&self, padding: Padding) {
        *self.padding.write().unwrap_or_else(PoisonError::into_inner) = padding;
    }

    /// How blobs sealed from now on are padded.
    pub fn padding(&self) -> Padding {
        *self.padding.read().unwrap_or_else(PoisonError::into_inner)
    }

    // A panic while holding the lock cannot leave the keyring half-updated
    // (every write is a single insert/remove/assignment), so a poisoned lock
    // is still safe to use.
    fn read(&self) -> RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Keyring> {
        self.keyring.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The vault this keyring belongs to.
    pub fn vault(&self) -> VaultId {
        self.read().vault
    }

    /// The id of the key new blobs are sealed with.
    pub fn current_key_id(&self) -> u32 {
        self.read().current
    }

    /// Version of the key file this keyring was read from (or the highest
    /// one adopted since); 0 for a keyring not yet read from a key file and
    /// for key files written before key files carried a version.
    pub fn keyring_version(&self) -> u64 {
        self.read().version
    }

    /// Who the key file this keyring was last read from or written to is
    /// encrypted to: the passphrase, devices, the recovery key. Empty for a
    /// key file written before chatvault kept the list (key file format 1).
    pub fn protections(&self) -> Vec<Protection> {
        self.read().protections.clone()
    }

    /// Every key id in the keyring, ascending (the current one included).
    pub fn key_ids(&self) -> Vec<u32> {
        self.read().key_ids()
    }

    /// Adds a fresh random data key, makes it current and returns its id
    /// (one more than the largest id so far). Old keys stay, so blobs sealed
    /// under them still open. Store the key file again afterwards.
    pub fn rotate(&self) -> u32 {
        self.write().rotate()
    }

    /// Drops key `key_id` once no blob needs it any more; blobs sealed under
    /// it then fail with [`Error::UnknownKeyId`]. Store the key file again
    /// afterwards.
    ///
    /// Errors: [`Error::InvalidInput`] for the current key (rotate first),
    /// [`Error::UnknownKeyId`] if the keyring does not hold `key_id`.
    pub fn retire(&self, key_id: u32) -> Result<()> {
        self.write().retire(key_id)
    }

    /// The vault's format floor as this keyring holds it
    /// (`docs/design.md` §3.6): 1 until a device raised it.
    pub fn format_floor(&self) -> u8 {
        self.read().format_floor
    }

    /// Raises the vault's format floor to `floor` (`docs/design.md` §3.6);
    /// a floor at or below the current one changes nothing. Returns true if
    /// it rose. Store the key file again afterwards.
    ///
    /// Errors: [`Error::UnsupportedFormat`] for a floor above the newest
    /// vault format this build writes
    /// ([`VAULT_FORMAT`](crate::raw::codec::VAULT_FORMAT)).
    pub fn raise_format_floor(&self, floor: u8) -> Result<bool> {
        if floor > crate::codec::VAULT_FORMAT {
            return Err(Error::UnsupportedFormat {
                what: "vault".to_string(),
                found: u32::from(floor),
                supported: u32::from(crate::codec::VAULT_FORMAT),
            });
        }
        let mut ring = self.write();
        if floor <= ring.format_floor {
            return Ok(false);
        }
        ring.format_floor = floor;
        Ok(true)
    }

    /// Takes the keys of `newer` (the same vault's keyring as re-read from
    /// its key file after another device rotated) that this keyring lacks,
    /// and its current key id. Keys this keyring already holds are kept as
    /// they are. Returns true if anything was added or the current key
    /// changed.
    ///
    /// Errors: as [`check_successor`](Self::check_successor) (another
    /// vault, a rolled-back version, a substituted keyring); nothing is
    /// changed then.
    pub fn adopt_keys(&self, newer: &EnvelopeCipher) -> Result<bool> {
        if std::ptr::eq(self, newer) {
            return Ok(false);
        }
        let theirs = newer.read();
        self.write().adopt(&theirs)
    }

    /// Takes back, to open records only, the keys `key_ids` that this
    /// keyring retired and `older` (the same vault's keyring as this device
    /// last trusted it: the replica's copy of the key file) still holds,
    /// each checked against its retired tag. For a device whose queued
    /// changes are sealed under a key retired while it was away: they must
    /// be opened once to be re-sealed under the current key before they are
    /// pushed. Returns the ids taken back.
    pub fn hold_retired_from(&self, older: &EnvelopeCipher, key_ids: &[u32]) -> Vec<u32> {
        if std::ptr::eq(self, older) {
            return Vec::new();
        }
        let theirs = older.read();
        self.write().hold_retired_from(&theirs, key_ids)
    }

    /// Checks that `newer` (a keyring read from the server after this one)
    /// may follow this keyring, by the successor rule of [`KeyTrust::admits`]:
    /// same vault, a version no older, every data key this keyring holds
    /// present in `newer` with the same bytes or retired there with the
    /// matching tag, every retired key still retired, and at an equal
    /// version the same keyring. Whoever wrote `newer` therefore knew every
    /// data key this device holds: age does not authenticate senders, and a
    /// removed device still knows the keys it held before its removal, but
    /// not the key the removal rotated to.
    ///
    /// Errors: [`Error::InvalidInput`] for another vault's keyring;
    /// [`Error::Tampered`] for a rolled-back version, a different key under
    /// a known id, a held key left out without its retired tag, or a
    /// different keyring under the same version.
    pub fn check_successor(&self, newer: &EnvelopeCipher) -> Result<()> {
        if std::ptr::eq(self, newer) {
            return Ok(());
        }
        KeyTrust::of(self).admits(newer)
    }

    /// A short fingerprint of the keyring's oldest data key (hex, 16 bytes
    /// of a keyed hash: it reveals nothing of the key), for a person to
    /// compare between devices. A brand-new device has no earlier key to
    /// check a key file against; comparing this fingerprint with one shown
    /// by a device already in the vault is how it detects a substituted
    /// keyring. The oldest key stays the same across rotations until it is
    /// retired.
    pub fn fingerprint(&self) -> String {
        self.read().fingerprint()
    }

    /// Encrypts the keyring into a key file protected by exactly
    /// `protection`, for [`Storage::put_keyring`](crate::Storage::put_keyring).
    /// The keyring's list of [protections](Self::protections) becomes the
    /// passphrase (if any) and the recipients, labelled `device 1`,
    /// `device 2`, …; a passphrase gets a fresh passphrase identity. The
    /// file carries key file version one above
    /// [`keyring_version`](Self::keyring_version), which becomes this
    /// keyring's version: every key file written is newer than the last, so
    /// a server replaying an older one is caught by
    /// [`check_successor`](Self::check_successor).
    ///
    /// To change one protection and keep the others (add a device, change the
    /// passphrase), use [`VaultKeys`](crate::keys::VaultKeys).
    ///
    /// Errors: [`Error::InvalidInput`] when `protection` has neither a
    /// passphrase nor a recipient, has an empty passphrase, or a work factor
    /// outside 1..=22.
    pub fn to_key_file(&self, protection: &KeyProtection) -> Result<Vec<u8>> {
        let (protections, passphrase_slot) = keyfile::protections_for(protection)?;
        self.seal_key_file(protections, passphrase_slot.as_deref())
    }

    /// Writes the key file for `protections` (see `keyfile::seal`) at the
    /// keyring's version + 1. The keyring's version and list change only on
    /// success.
    pub(crate) fn seal_key_file(
        &self,
        protections: Vec<Protection>,
        passphrase_slot: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let (file, version) = {
            let ring = self.read();
            let version = ring.version.saturating_add(1);
            let file = keyfile::seal(&ring, version, &protections, passphrase_slot)?;
            (file, version)
        };
        let mut ring = self.write();
        ring.version = ring.version.max(version);
        ring.protections = protections;
        Ok(file)
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
        Self::from_key_file_with_identity(bytes, unlock).map(|(cipher, _)| cipher)
    }

    /// [`from_key_file`](Self::from_key_file), also returning the age X25519
    /// identity that opened the key file's X25519 slot: for a passphrase,
    /// the *passphrase identity* its scrypt slot holds; for an identity,
    /// that identity. `None` for a format-1 key file opened with a
    /// passphrase (it has no passphrase identity).
    ///
    /// `Unlock::Identity` with the passphrase identity opens the same key
    /// file without scrypt, so a process that keeps it (in memory: it is
    /// as secret as the passphrase) can reopen the vault in microseconds.
    /// It stops opening the key file when the passphrase is changed (a new
    /// passphrase identity) or removed.
    ///
    /// Errors: those of [`from_key_file`](Self::from_key_file).
    pub fn from_key_file_with_identity(
        bytes: &[u8],
        unlock: &Unlock,
    ) -> Result<(Self, Option<age::x25519::Identity>)> {
        keyfile::open(bytes, unlock).map(|(ring, identity)| (Self::from_keyring(ring), identity))
    }

    /// The key id a sealed blob names in its header, without opening it:
    /// lets a re-encryption pass find the blobs still under an old key.
    ///
    /// Errors as for [`Cipher::open`] on the header: [`Error::Corrupt`] or
    /// [`Error::UnsupportedFormat`]. The id is not authenticated until the
    /// blob is opened.
    pub fn sealed_key_id(sealed: &[u8]) -> Result<u32> {
        parse_header(sealed, || "sealed blob".to_string()).map(|header| header.key_id)
    }
}

fn describe(aad: &Aad) -> String {
    let part = match aad.part {
        Part::Summary => "summary",
        Part::Body => "body",
    };
    format!("chat {} {part} version {}", aad.chat, aad.version)
}

/// The AEAD's associated data: what the blob is bound to (a record's
/// [`Aad::to_bytes`], or a blob's `blob::blob_aad`), the key id and, from
/// format 2 on, the format byte, so relabelling a padded blob as unpadded
/// (which would hand out the padding) fails authentication. Format 1 blobs
/// keep the associated data they were sealed with.
fn aead_aad(bound: &[u8], key_id: u32, format: u8) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(bound.len() + 5);
    bytes.extend_from_slice(bound);
    bytes.extend_from_slice(&key_id.to_be_bytes());
    if format != BLOB_FORMAT_UNPADDED {
        bytes.push(format);
    }
    bytes
}

/// A sealed blob split at its header.
struct Header<'a> {
    format: u8,
    key_id: u32,
    nonce: &'a [u8],
    /// Ciphertext and tag.
    body: &'a [u8],
}

/// Splits a blob into format, key id, nonce and ciphertext-with-tag,
/// checking the format byte and the minimum length. `what` names the blob
/// in errors; it is only called on failure, keeping formatting off the hot
/// path.
fn parse_header(sealed: &[u8], what: impl Fn() -> String) -> Result<Header<'_>> {
    let Some(&format) = sealed.first() else {
        return Err(Error::corrupt(what(), "empty sealed blob"));
    };
    if format == 0 {
        return Err(Error::corrupt(what(), "format version 0 is not valid"));
    }
    if format > BLOB_FORMAT {
        return Err(Error::UnsupportedFormat {
            what: "sealed blob".to_string(),
            found: u32::from(format),
            supported: u32::from(BLOB_FORMAT),
        });
    }
    if sealed.len() < BLOB_OVERHEAD {
        return Err(Error::corrupt(
            what(),
            format!(
                "sealed blob is {} bytes, shorter than the {BLOB_OVERHEAD}-byte minimum",
                sealed.len()
            ),
        ));
    }
    let (header, body) = sealed.split_at(BLOB_HEADER_LEN);
    Ok(Header {
        format,
        key_id: u32::from_be_bytes([header[1], header[2], header[3], header[4]]),
        nonce: &header[5..],
        body,
    })
}

impl EnvelopeCipher {
    /// Seals `plaintext` under the current key of `ring`.
    fn seal_under(&self, ring: &Keyring, aad: &Aad, plaintext: &[u8]) -> Result<Vec<u8>> {
        if aad.vault != ring.vault {
            return Err(Error::invalid(format!(
                "cannot seal for vault {} with the keyring of vault {}",
                aad.vault, ring.vault
            )));
        }
        self.seal_bound(ring, &aad.to_bytes(), plaintext)
    }

    /// Seals `plaintext` under the current key of `ring`, bound to `bound`
    /// (the encoded associated data, before the key id and format byte).
    fn seal_bound(&self, ring: &Keyring, bound: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let key_id = ring.current;
        let key = ring
            .keys
            .get(&key_id)
            .ok_or(Error::UnknownKeyId { key_id })?;
        let padding = self.padding();
        let mut nonce = [0u8; NONCE_LEN];
        // ThreadRng is a CSPRNG seeded from the OS; with 192-bit nonces random
        // collisions are negligible, and it avoids a syscall per seal.
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(BLOB_OVERHEAD + padding.padded_len(plaintext.len()));
        let format = if padding == Padding::Off {
            BLOB_FORMAT_UNPADDED
        } else {
            BLOB_FORMAT
        };
        out.push(format);
        out.extend_from_slice(&key_id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        padding.pad(&mut out, plaintext.len());
        let tag = key
            .aead
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                &aead_aad(bound, key_id, format),
                &mut out[BLOB_HEADER_LEN..],
            )
            .map_err(|_| Error::invalid("plaintext too large for XChaCha20-Poly1305"))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Verifies and decrypts `sealed`, which must have been sealed bound to
    /// `bound`; `what` names it in errors (called on failure only).
    fn open_bound(
        &self,
        bound: &[u8],
        sealed: &[u8],
        what: impl Fn() -> String,
    ) -> Result<Vec<u8>> {
        let Header {
            format,
            key_id,
            nonce,
            body,
        } = parse_header(sealed, &what)?;
        let ring = self.read();
        let key = ring
            .keys
            .get(&key_id)
            .ok_or(Error::UnknownKeyId { key_id })?;
        let (ciphertext, tag) = body.split_at(body.len() - TAG_LEN);
        let mut plaintext = ciphertext.to_vec();
        key.aead
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &aead_aad(bound, key_id, format),
                &mut plaintext,
                Tag::from_slice(tag),
            )
            .map_err(|_| Error::Tampered { what: what() })?;
        if format == BLOB_FORMAT_UNPADDED {
            Ok(plaintext)
        } else {
            padding::unpad(plaintext, what)
        }
    }
}

impl Cipher for EnvelopeCipher {
    /// Seals `plaintext` under the current key, padded as
    /// [`padding`](EnvelopeCipher::padding) says.
    ///
    /// Errors: [`Error::InvalidInput`] if `aad.vault` is not this keyring's
    /// vault (sealing for another vault with this vault's key is a bug).
    fn seal(&self, aad: &Aad, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.seal_under(&self.read(), aad, plaintext)
    }

    fn sealed_key_id(&self, sealed: &[u8]) -> Result<Option<u32>> {
        EnvelopeCipher::sealed_key_id(sealed).map(Some)
    }

    /// Seals every part under the current key of one keyring snapshot: a
    /// rotation adopted meanwhile waits for the read lock.
    fn seal_parts(&self, parts: &[(Aad, &[u8])]) -> Result<Vec<Vec<u8>>> {
        let ring = self.read();
        parts
            .iter()
            .map(|(aad, plaintext)| self.seal_under(&ring, aad, plaintext))
            .collect()
    }

    fn open(&self, aad: &Aad, sealed: &[u8]) -> Result<Vec<u8>> {
        self.open_bound(&aad.to_bytes(), sealed, || describe(aad))
    }

    fn format_floor(&self) -> u8 {
        EnvelopeCipher::format_floor(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{KeyProtection, Unlock};
    use crate::ids::ChatId;
    use std::collections::BTreeMap;

    #[test]
    fn sealing_for_another_vault_is_refused() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let aad = Aad {
            vault: VaultId::new(),
            chat: ChatId::new(),
            part: Part::Body,
            version: 1,
        };
        assert!(matches!(
            cipher.seal(&aad, b"x"),
            Err(Error::InvalidInput { .. })
        ));
    }

    #[test]
    fn a_keyring_whose_every_shared_key_was_retired_still_follows_by_its_tags() {
        let old = EnvelopeCipher::generate(VaultId::new());
        let device = age::x25519::Identity::generate();
        let protection = KeyProtection::for_recipients([device.to_public()]);
        let file = old.to_key_file(&protection).expect("key file");
        let newer =
            EnvelopeCipher::from_key_file(&file, &Unlock::Identity(device.clone())).expect("open");
        newer.rotate();
        newer.retire(1).expect("retire the old key");
        let file = newer.to_key_file(&protection).expect("key file");
        let reread = EnvelopeCipher::from_key_file(&file, &Unlock::Identity(device)).expect("open");
        assert_eq!(reread.key_ids(), vec![2]);
        old.check_successor(&reread)
            .expect("the retired key's tag proves the writer knew key 1");
        assert!(old.adopt_keys(&reread).expect("adopt"));
        assert_eq!(old.current_key_id(), 2);

        // A keyring of the same vault from someone who never knew key 1.
        let stranger = EnvelopeCipher::from_keyring(Keyring {
            vault: old.vault(),
            version: 99,
            current: 5,
            keys: BTreeMap::from([(5, DataKey::random())]),
            protections: Vec::new(),
            retired: BTreeMap::from([(1, [0u8; KEY_TAG_LEN])]),
            blob_secret: None,
            format_floor: 1,
        });
        let fresh = EnvelopeCipher::generate(old.vault());
        assert!(matches!(
            fresh.check_successor(&stranger),
            Err(Error::Tampered { .. })
        ));
    }

    #[test]
    fn debug_output_shows_key_ids_but_no_key_bytes() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let key_hex: String = cipher.read().keys[&1]
            .bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let shown = format!("{cipher:?}");
        assert!(shown.contains("current_key_id: 1"), "{shown}");
        assert!(!shown.contains(&key_hex[..8]), "{shown}");
        let key_decimal = format!("{:?}", cipher.read().keys[&1].bytes());
        assert!(!shown.contains(&key_decimal), "{shown}");
    }
}
