//! Content-addressed sealed blobs (attachment chunks): the keyed hash that
//! names them ([`BlobHasher`]) and sealing one under the vault's current data
//! key, bound to the vault and its [`BlobId`]. Formats and the reasons are in
//! `docs/design.md` §10.

use super::{EnvelopeCipher, BLOB_SECRET_LEN};
use crate::ids::{BlobId, VaultId, BLOB_ID_LEN};
use crate::Result;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// The fixed prefix of a blob's associated data (a record's is
/// `"chatvault/aad/1"`: the two can never be mistaken for each other).
const BLOB_AAD_LABEL: &[u8] = b"chatvault/blob-aad/1";

/// The associated data a blob is sealed bound to, before the key id and
/// format byte the cipher appends: `"chatvault/blob-aad/1" ‖ vault id (16) ‖
/// blob id (32)`.
fn blob_aad(vault: VaultId, id: &BlobId) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOB_AAD_LABEL.len() + 16 + BLOB_ID_LEN);
    out.extend_from_slice(BLOB_AAD_LABEL);
    out.extend_from_slice(vault.as_bytes());
    out.extend_from_slice(id.as_bytes());
    out
}

/// Computes a [`BlobId`] from a plaintext fed in pieces: HMAC-SHA256 keyed
/// with the vault's blob secret. Memory stays constant whatever the length,
/// so a large file is hashed as it streams by. Get one from
/// [`EnvelopeCipher::blob_hasher`].
///
/// ```
/// use chatvault_core::envelope::EnvelopeCipher;
/// use chatvault_core::VaultId;
///
/// let cipher = EnvelopeCipher::generate(VaultId::new());
/// let mut hasher = cipher.blob_hasher();
/// hasher.update(b"hello ");
/// hasher.update(b"world");
/// assert_eq!(hasher.finish(), cipher.blob_id(b"hello world"));
/// ```
#[derive(Clone)]
pub struct BlobHasher {
    mac: Hmac<Sha256>,
}

impl BlobHasher {
    fn new(secret: &[u8; BLOB_SECRET_LEN]) -> Self {
        // HMAC takes keys of any length, so this cannot fail; the fallback
        // (an all-zero key) only satisfies the type.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        Self { mac }
    }

    /// Feeds the next piece of the plaintext.
    pub fn update(&mut self, bytes: &[u8]) {
        self.mac.update(bytes);
    }

    /// The id of everything fed so far.
    pub fn finish(self) -> BlobId {
        let mut id = [0u8; BLOB_ID_LEN];
        id.copy_from_slice(&self.mac.finalize().into_bytes());
        BlobId(id)
    }
}

impl fmt::Debug for BlobHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobHasher").finish_non_exhaustive()
    }
}

impl EnvelopeCipher {
    /// A streaming hasher for blob ids, keyed with this vault's blob secret
    /// (kept in the keyring, `docs/design.md` §10.2): identical plaintexts
    /// get one id within the vault, and without the secret (the server) an
    /// id cannot be computed from a guessed plaintext.
    pub fn blob_hasher(&self) -> BlobHasher {
        BlobHasher::new(&self.read().blob_secret())
    }

    /// The [`BlobId`] of `plaintext`: [`blob_hasher`](Self::blob_hasher)
    /// over all of it at once.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        let mut hasher = self.blob_hasher();
        hasher.update(plaintext);
        hasher.finish()
    }

    /// Seals one blob (chunk) `plaintext` named `id` under the current data
    /// key, in the same format as records (§2: key id, nonce, padding), bound
    /// to this vault and to `id`. For [`Storage::put_blob`](crate::Storage::put_blob).
    /// `id` is normally [`blob_id`](Self::blob_id) of `plaintext`; sealing
    /// does not recompute it.
    ///
    /// Errors: [`Error::InvalidInput`](crate::Error::InvalidInput) for a
    /// plaintext too large for the AEAD.
    pub fn seal_blob(&self, id: &BlobId, plaintext: &[u8]) -> Result<Vec<u8>> {
        let ring = self.read();
        let bound = blob_aad(ring.vault, id);
        self.seal_bound(&ring, &bound, plaintext)
    }

    /// Verifies and decrypts a sealed blob fetched under `id`.
    ///
    /// Errors, in the order of §2: [`Error::Corrupt`](crate::Error::Corrupt)
    /// (truncated, garbled header), [`Error::UnsupportedFormat`](crate::Error::UnsupportedFormat),
    /// [`Error::UnknownKeyId`](crate::Error::UnknownKeyId), and
    /// [`Error::Tampered`](crate::Error::Tampered) for any modified byte or a
    /// blob stored under another id or taken from another vault.
    pub fn open_blob(&self, id: &BlobId, sealed: &[u8]) -> Result<Vec<u8>> {
        let bound = blob_aad(self.vault(), id);
        self.open_bound(&bound, sealed, || format!("blob {id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{DataKey, KeyProtection, Keyring, Unlock};
    use crate::Error;
    use std::collections::BTreeMap;
    use zeroize::Zeroizing;

    #[test]
    fn blob_ids_are_keyed_by_the_vault_and_stable_across_a_key_file() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let other = EnvelopeCipher::generate(VaultId::new());
        let id = cipher.blob_id(b"a file");
        assert_eq!(id, cipher.blob_id(b"a file"));
        assert_ne!(id, cipher.blob_id(b"another file"));
        assert_ne!(
            id,
            other.blob_id(b"a file"),
            "another vault, another secret"
        );

        let device = age::x25519::Identity::generate();
        let file = cipher
            .to_key_file(&KeyProtection::for_recipients([device.to_public()]))
            .expect("key file");
        let reopened =
            EnvelopeCipher::from_key_file(&file, &Unlock::Identity(device)).expect("open");
        assert_eq!(reopened.blob_id(b"a file"), id);
        reopened.rotate();
        assert_eq!(reopened.blob_id(b"a file"), id, "rotation keeps the secret");
    }

    #[test]
    fn a_sealed_blob_opens_only_under_its_id_and_vault() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let id = cipher.blob_id(b"chunk");
        let sealed = cipher.seal_blob(&id, b"chunk").expect("seal");
        assert_eq!(cipher.open_blob(&id, &sealed).expect("open"), b"chunk");

        let other_id = cipher.blob_id(b"other chunk");
        assert!(matches!(
            cipher.open_blob(&other_id, &sealed),
            Err(Error::Tampered { .. })
        ));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            cipher.open_blob(&id, &flipped),
            Err(Error::Tampered { .. })
        ));
        assert!(matches!(
            cipher.open_blob(&id, &sealed[..10]),
            Err(Error::Corrupt { .. })
        ));
        // A keyring of another vault holding the very same data key and
        // blob secret still refuses it: the vault id is bound.
        let ring = cipher.read();
        let twin = EnvelopeCipher::from_keyring(Keyring {
            vault: VaultId::new(),
            version: 0,
            current: 1,
            keys: BTreeMap::from([(
                1,
                DataKey::from_bytes(Zeroizing::new(*ring.keys[&1].bytes())),
            )]),
            protections: Vec::new(),
            retired: BTreeMap::new(),
            blob_secret: ring.blob_secret.clone(),
            format_floor: ring.format_floor,
        });
        drop(ring);
        assert_eq!(twin.blob_id(b"chunk"), id, "same secret, same id");
        assert!(matches!(
            twin.open_blob(&id, &sealed),
            Err(Error::Tampered { .. })
        ));
    }
}
