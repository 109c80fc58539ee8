//! The [`Cipher`] trait: sealing and opening record parts.
//!
//! The default implementation is [`EnvelopeCipher`](crate::envelope::EnvelopeCipher):
//! one random data key per vault, kept in an age-encrypted key file, and
//! XChaCha20-Poly1305 per blob.

use crate::ids::{ChatId, VaultId};
use crate::storage::Part;
use crate::Result;

/// What a sealed blob is bound to. A blob opened with a different `Aad` than
/// it was sealed with fails with [`Error::Tampered`](crate::Error::Tampered),
/// so a server cannot move blobs between vaults, chats, parts or versions.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Aad {
    /// The vault the blob belongs to.
    pub vault: VaultId,
    /// The chat the blob belongs to.
    pub chat: ChatId,
    /// Summary or body.
    pub part: Part,
    /// The record version the blob was sealed for.
    pub version: u64,
}

impl Aad {
    /// The canonical byte encoding bound into the AEAD, before the key id the
    /// cipher appends: `"chatvault/aad/1" ‖ vault ‖ chat ‖ part ‖ version`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(15 + 16 + 16 + 1 + 8);
        out.extend_from_slice(b"chatvault/aad/1");
        out.extend_from_slice(self.vault.as_bytes());
        out.extend_from_slice(self.chat.as_bytes());
        out.push(match self.part {
            Part::Summary => 0,
            Part::Body => 1,
        });
        out.extend_from_slice(&self.version.to_be_bytes());
        out
    }
}

/// Seals and opens the parts of records.
///
/// `open(aad, seal(aad, p)) == p`; any change to the sealed bytes or to
/// `aad` makes `open` fail with a typed error, never a panic. Implementations
/// are cheap per call (no public-key operation per record) and thread-safe.
pub trait Cipher: Send + Sync {
    /// Encrypts and authenticates `plaintext`, bound to `aad`.
    fn seal(&self, aad: &Aad, plaintext: &[u8]) -> Result<Vec<u8>>;

    /// Verifies and decrypts `sealed`, which must have been sealed with `aad`.
    fn open(&self, aad: &Aad, sealed: &[u8]) -> Result<Vec<u8>>;

    /// The data key id `sealed` names in its header, read without opening
    /// it, for a cipher whose keys rotate: how the engine finds records
    /// still under an older key (re-seal) and which keys a record may need
    /// (retire). `Ok(None)`, the default, for a cipher without key ids. The
    /// id is not authenticated until the blob is opened.
    ///
    /// Errors: [`Error::Corrupt`](crate::Error::Corrupt) or
    /// [`Error::UnsupportedFormat`](crate::Error::UnsupportedFormat) for a
    /// header this cipher cannot read.
    fn sealed_key_id(&self, sealed: &[u8]) -> Result<Option<u32>> {
        let _ = sealed;
        Ok(None)
    }

    /// The vault's format floor (`docs/design.md` §3.6): the vault format
    /// ([`VAULT_FORMAT`](crate::raw::codec::VAULT_FORMAT) and older) every
    /// device of the vault reads, so the one records are written in. The
    /// envelope cipher reads it from the authenticated key file; the
    /// default, 1, is the format every release reads.
    fn format_floor(&self) -> u8 {
        1
    }

    /// Seals the parts of one record together: a cipher whose keys change
    /// while it is in use (the envelope cipher adopts rotations) seals them
    /// all under one key, so a record never has its summary under one key
    /// and its body under another. The default seals them one by one, which
    /// is right for a cipher whose key never changes.
    fn seal_parts(&self, parts: &[(Aad, &[u8])]) -> Result<Vec<Vec<u8>>> {
        parts
            .iter()
            .map(|(aad, plaintext)| self.seal(aad, plaintext))
            .collect()
    }
}
