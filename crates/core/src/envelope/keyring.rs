//! A vault's keyring as a value: its data keys, the current one, the
//! retired ones' tags and the protections list, with the pure operations on
//! it (generate, rotate, retire, adopt a successor, take back retired keys,
//! fingerprint). No locks and no I/O: [`EnvelopeCipher`](super::EnvelopeCipher)
//! holds one behind a lock and seals with it; the key file codec
//! (`keyfile.rs`) reads and writes it; [`KeyTrust`](super::KeyTrust)
//! summarises it.

use super::{KeyTrust, Protection, DATA_KEY_LEN};
use crate::ids::VaultId;
use crate::{Error, Result};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// One data key: its bytes (kept to write the key file) and the AEAD keyed
/// with them (kept so no key schedule runs per record). Both zeroize on drop.
pub(crate) struct DataKey {
    bytes: Zeroizing<[u8; DATA_KEY_LEN]>,
    pub(super) aead: XChaCha20Poly1305,
}

impl DataKey {
    pub(crate) fn from_bytes(bytes: Zeroizing<[u8; DATA_KEY_LEN]>) -> Self {
        let aead = XChaCha20Poly1305::new(Key::from_slice(bytes.as_slice()));
        Self { bytes, aead }
    }

    pub(crate) fn random() -> Self {
        let mut bytes = Zeroizing::new([0u8; DATA_KEY_LEN]);
        OsRng.fill_bytes(bytes.as_mut_slice());
        Self::from_bytes(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8; DATA_KEY_LEN] {
        &self.bytes
    }
}

/// A vault's data keys. Invariant: `keys` holds `current`.
pub(crate) struct Keyring {
    pub(crate) vault: VaultId,
    /// Version of the key file this keyring was last read from or adopted
    /// (0 for a new keyring and for key files written before versions
    /// existed); the next key file written carries `version + 1`.
    pub(crate) version: u64,
    pub(crate) current: u32,
    pub(crate) keys: BTreeMap<u32, DataKey>,
    /// Who the key file is encrypted to (empty for keyrings read from key
    /// files written before the list existed).
    pub(crate) protections: Vec<Protection>,
    /// Retired key ids and a MAC of each retired key ([`key_tag`]): a device
    /// that holds only retired keys can still tell that a keyring follows
    /// its own (the MAC needs the key), without the key being kept.
    pub(crate) retired: BTreeMap<u32, [u8; KEY_TAG_LEN]>,
    /// The secret blob ids are keyed with (`docs/design.md` §10.2), as
    /// stored in a format-4 keyring; `None` for a keyring read from an older
    /// format, whose secret [`blob_secret`](Self::blob_secret) derives.
    pub(crate) blob_secret: Option<Zeroizing<[u8; BLOB_SECRET_LEN]>>,
    /// The vault's format floor (`docs/design.md` §3.6): the oldest vault
    /// format every device must read, so the one devices write. 1 for every
    /// keyring read from a format before 5. It only rises.
    pub(crate) format_floor: u8,
}

/// Length of the blob secret.
pub(crate) const BLOB_SECRET_LEN: usize = 32;

/// The label the blob secret of a keyring older than format 4 is derived
/// under (domain separation from every other use of the data key).
const BLOB_SECRET_LABEL: &[u8] = b"chatvault/blob-secret/1";

/// Length of a retired key's tag.
pub(crate) const KEY_TAG_LEN: usize = 16;

/// A Poly1305 tag over a fixed label, the vault and the key id under a
/// fixed nonce, keyed by the data key: a MAC, so it does not leak the key.
pub(crate) fn key_tag(vault: VaultId, id: u32, key: &DataKey) -> [u8; KEY_TAG_LEN] {
    let mut empty = [0u8; 0];
    let nonce = XNonce::from_slice(&[0u8; 24]);
    let mut label = b"chatvault keyring fingerprint v1".to_vec();
    label.extend_from_slice(vault.as_bytes());
    label.extend_from_slice(&id.to_be_bytes());
    let mut out = [0u8; KEY_TAG_LEN];
    if let Ok(tag) = key
        .aead
        .encrypt_in_place_detached(nonce, &label, &mut empty)
    {
        out.copy_from_slice(&tag);
    }
    out
}

impl Keyring {
    /// A new keyring for `vault` holding one fresh random data key (key id
    /// 1), version 0, no protections.
    pub(crate) fn generate(vault: VaultId) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(1, DataKey::random());
        let mut blob_secret = Zeroizing::new([0u8; BLOB_SECRET_LEN]);
        OsRng.fill_bytes(blob_secret.as_mut_slice());
        Self {
            vault,
            version: 0,
            current: 1,
            keys,
            protections: Vec::new(),
            retired: BTreeMap::new(),
            blob_secret: Some(blob_secret),
            format_floor: 1,
        }
    }

    /// The secret blob ids are keyed with: the stored one (format 4), else
    /// one derived from the data key with the lowest id held, HMAC-SHA256
    /// keyed by that key over a fixed label and the vault id. Every device
    /// reading the same older keyring derives the same secret, and the first
    /// key file a format-4 build writes stores it, after which it never
    /// changes (builds before format 4 cannot read, so cannot rewrite, that
    /// key file).
    pub(crate) fn blob_secret(&self) -> Zeroizing<[u8; BLOB_SECRET_LEN]> {
        if let Some(stored) = &self.blob_secret {
            return stored.clone();
        }
        let mut out = Zeroizing::new([0u8; BLOB_SECRET_LEN]);
        if let Some(key) = self.keys.values().next() {
            // HMAC takes keys of any length: this never fails.
            let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key.bytes()) else {
                return out;
            };
            mac.update(BLOB_SECRET_LABEL);
            mac.update(self.vault.as_bytes());
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
        out
    }

    /// Every key id held, ascending (the current one included).
    pub(crate) fn key_ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// Adds a fresh random data key, makes it current and returns its id
    /// (one more than the largest id so far).
    pub(crate) fn rotate(&mut self) -> u32 {
        let next = self
            .keys
            .keys()
            .next_back()
            .and_then(|max| max.checked_add(1))
            .or_else(|| (1..=u32::MAX).find(|id| !self.keys.contains_key(id)))
            .unwrap_or(0);
        self.keys.insert(next, DataKey::random());
        self.current = next;
        next
    }

    /// Drops key `key_id`, keeping its tag among the retired.
    ///
    /// Errors: [`Error::InvalidInput`] for the current key,
    /// [`Error::UnknownKeyId`] for a key not held.
    pub(crate) fn retire(&mut self, key_id: u32) -> Result<()> {
        if key_id == self.current {
            return Err(Error::invalid(format!(
                "key {key_id} is the current data key; rotate to a new key before retiring it"
            )));
        }
        match self.keys.remove(&key_id) {
            Some(key) => {
                let tag = key_tag(self.vault, key_id, &key);
                self.retired.insert(key_id, tag);
                Ok(())
            }
            None => Err(Error::UnknownKeyId { key_id }),
        }
    }

    /// Takes from `theirs` (a successor read from the key file) the keys
    /// this keyring lacks, its current key id, its retired tags, and at a
    /// version no older its protections list and version. True if a key
    /// was added, the current key or the protections changed.
    ///
    /// Errors: those of [`KeyTrust::admits_keyring`] (another vault, a
    /// rollback, a substitution); nothing is changed then.
    pub(crate) fn adopt(&mut self, theirs: &Keyring) -> Result<bool> {
        KeyTrust::of_keyring(self).admits_keyring(theirs)?;
        let mut changed = false;
        for (id, key) in &theirs.keys {
            if !self.keys.contains_key(id) {
                let bytes = Zeroizing::new(*key.bytes());
                self.keys.insert(*id, DataKey::from_bytes(bytes));
                changed = true;
            }
        }
        if self.current != theirs.current {
            self.current = theirs.current;
            changed = true;
        }
        for (id, tag) in &theirs.retired {
            self.retired.entry(*id).or_insert(*tag);
        }
        // A blob secret, once stored, never changes: keep ours if we hold
        // one, else take the one the successor stores.
        if self.blob_secret.is_none() {
            self.blob_secret.clone_from(&theirs.blob_secret);
        }
        if theirs.format_floor > self.format_floor {
            self.format_floor = theirs.format_floor;
            changed = true;
        }
        if theirs.version >= self.version {
            if self.protections != theirs.protections {
                self.protections = theirs.protections.clone();
                changed = true;
            }
            self.version = theirs.version;
        }
        Ok(changed)
    }

    /// Takes back from `older` (this vault's keyring as last trusted) the
    /// retired keys `key_ids`, each checked against its retired tag; returns
    /// the ids taken back.
    pub(crate) fn hold_retired_from(&mut self, older: &Keyring, key_ids: &[u32]) -> Vec<u32> {
        if older.vault != self.vault {
            return Vec::new();
        }
        let mut held = Vec::new();
        for id in key_ids {
            if self.keys.contains_key(id) {
                continue;
            }
            let (Some(tag), Some(key)) = (self.retired.get(id), older.keys.get(id)) else {
                continue;
            };
            if key_tag(self.vault, *id, key) == *tag {
                let bytes = Zeroizing::new(*key.bytes());
                self.keys.insert(*id, DataKey::from_bytes(bytes));
                held.push(*id);
            }
        }
        held
    }

    /// A short fingerprint of the oldest data key held (hex groups of a
    /// keyed hash); empty for a keyring without keys.
    pub(crate) fn fingerprint(&self) -> String {
        let Some((id, key)) = self.keys.iter().next() else {
            return String::new();
        };
        key_tag(self.vault, *id, key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .chunks(2)
            .map(|pair| pair.concat())
            .collect::<Vec<_>>()
            .join("-")
    }
}
