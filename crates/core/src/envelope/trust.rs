//! What a device trusts of its vault's key file, and the rule a newer key
//! file must meet to follow it (`docs/design.md` §3.3).
//!
//! age does not authenticate senders: anyone who knows a recipient's public
//! key can write a key file that recipient opens. A removed device knows
//! more than that: the vault id, the recipients and the data keys it held.
//! The successor rule therefore asks a newer key file to account for
//! **every** data key this device holds, not for one of them: each is
//! present with the same bytes, or retired with the tag that only its bytes
//! produce. A device removal rotates the data key in the same key file, so
//! every device that has read the removal holds a key the removed device
//! never saw, and no key file the removed device writes can account for it.
//!
//! The trust is kept in the replica as a [`KeyTrust`] (key ids and tags,
//! never keys), next to the copy of the key file itself: it is checked
//! without opening that copy, so it still holds after the secret that
//! opened the copy was replaced on another device.

use super::{key_tag, EnvelopeCipher, Keyring, Protection, KEY_TAG_LEN};
use crate::ids::VaultId;
use crate::{Error, Result};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::XNonce;
use std::collections::BTreeMap;

const MAGIC: &[u8; 4] = b"CVKT";
const FORMAT: u8 = 1;
/// At most this many keys (held or retired) in one anchor: far above any
/// real vault, so a garbled replica value cannot ask for gigabytes.
const MAX_KEYS: usize = 1 << 16;

/// A key file as this device trusts it, without any secret: the vault, the
/// key file version, the current key id, a tag of every data key held and
/// of every key retired, and a tag of the protections list. Compare a newer
/// keyring with [`admits`](Self::admits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTrust {
    vault: VaultId,
    version: u64,
    current: u32,
    held: BTreeMap<u32, [u8; KEY_TAG_LEN]>,
    retired: BTreeMap<u32, [u8; KEY_TAG_LEN]>,
    protections: [u8; KEY_TAG_LEN],
}

impl KeyTrust {
    /// The trust `cipher` stands for: what it holds now. A key the cipher
    /// took back only to re-seal queued changes (retired in its keyring)
    /// counts as retired.
    pub fn of(cipher: &EnvelopeCipher) -> Self {
        Self::of_keyring(&cipher.read())
    }

    pub(crate) fn of_keyring(ring: &Keyring) -> Self {
        let held = ring
            .keys
            .iter()
            .filter(|(id, _)| !ring.retired.contains_key(id))
            .map(|(id, key)| (*id, key_tag(ring.vault, *id, key)))
            .collect();
        Self {
            vault: ring.vault,
            version: ring.version,
            current: ring.current,
            held,
            retired: ring.retired.clone(),
            protections: protections_tag(ring),
        }
    }

    /// The vault trusted.
    pub fn vault(&self) -> VaultId {
        self.vault
    }

    /// The key file version trusted.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Checks that `newer` (a keyring read from the server) may follow the
    /// trusted one:
    ///
    /// 1. the same vault;
    /// 2. a version no older;
    /// 3. every data key trusted as held is in `newer` with the same bytes,
    ///    or retired in it with the same tag;
    /// 4. every key trusted as retired stays retired with the same tag;
    /// 5. at the same version, the same keyring: the same current key, keys,
    ///    retired keys and protections (two different key files never
    ///    carry one version).
    ///
    /// Whoever wrote a key file that passes knew every data key this device
    /// holds. A removed device does not know the key its removal rotated
    /// to, so it cannot write one.
    ///
    /// Errors: [`Error::InvalidInput`] for another vault's keyring;
    /// [`Error::Tampered`] for everything else, saying which rule failed.
    pub fn admits(&self, newer: &EnvelopeCipher) -> Result<()> {
        self.admits_keyring(&newer.read())
    }

    /// [`admits`](Self::admits) for a keyring value.
    pub(crate) fn admits_keyring(&self, theirs: &Keyring) -> Result<()> {
        if theirs.vault != self.vault {
            return Err(Error::invalid(format!(
                "the server's key file belongs to vault {}, not to vault {} this device is part \
                 of: the storage location now holds another vault (a second `init` into the \
                 same folder, or a mistyped path or bucket); point this device at its own \
                 vault's location, or open the other vault with a new replica path",
                theirs.vault, self.vault
            )));
        }
        let refuse = |why: String| Error::Tampered {
            what: format!("key file ({why}; refused, nothing was changed)"),
        };
        if theirs.version < self.version {
            return Err(refuse(format!(
                "the server returned version {}, older than version {} this device already \
                 trusts: a rollback",
                theirs.version, self.version
            )));
        }
        for (id, tag) in &self.held {
            match theirs.keys.get(id) {
                Some(key) if key_tag(self.vault, *id, key) == *tag => {}
                Some(_) => {
                    return Err(refuse(format!(
                        "it holds a different data key under key id {id} than this device"
                    )))
                }
                None if theirs.retired.get(id) == Some(tag) => {}
                None => {
                    return Err(refuse(format!(
                        "it leaves out data key {id}, which this device holds, without retiring \
                         it: it was not written by a device that knew every current key (a \
                         removed device, or someone who only knows a public key)"
                    )))
                }
            }
        }
        for (id, tag) in &self.retired {
            if theirs.retired.get(id) != Some(tag) {
                return Err(refuse(format!(
                    "it no longer lists data key {id} as retired"
                )));
            }
        }
        if theirs.version == self.version && Self::of_keyring(theirs) != *self {
            return Err(refuse(format!(
                "it differs from the key file of the same version {} this device trusts",
                self.version
            )));
        }
        Ok(())
    }

    /// The binary form kept in the replica: `"CVKT" | format (1) | vault (16)
    /// | version (8) | current (4) | held count (4) | per key: id (4) | tag (16)
    /// | retired count (4) | per key: id (4) | tag (16) | protections tag (16)`,
    /// integers big-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            4 + 1 + 16 + 8 + 4 + 8 + 20 * (self.held.len() + self.retired.len()) + KEY_TAG_LEN,
        );
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(self.vault.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.current.to_be_bytes());
        for keys in [&self.held, &self.retired] {
            out.extend_from_slice(&(keys.len() as u32).to_be_bytes());
            for (id, tag) in keys {
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(tag);
            }
        }
        out.extend_from_slice(&self.protections);
        out
    }

    /// Reads [`to_bytes`](Self::to_bytes).
    ///
    /// Errors: [`Error::Corrupt`] for anything malformed;
    /// [`Error::UnsupportedFormat`] for a newer format.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC.as_slice() {
            return Err(Reader::corrupt("it does not start with CVKT"));
        }
        let format = r.take(1)?[0];
        if format != FORMAT {
            return Err(Error::UnsupportedFormat {
                what: TRUST_WHAT.to_string(),
                found: u32::from(format),
                supported: u32::from(FORMAT),
            });
        }
        let vault = VaultId::from_bytes(r.array()?);
        let version = u64::from_be_bytes(r.array()?);
        let current = u32::from_be_bytes(r.array()?);
        let held = r.keys()?;
        let retired = r.keys()?;
        let protections = r.array()?;
        if !r.0.is_empty() {
            return Err(Reader::corrupt("it has trailing bytes"));
        }
        if !held.contains_key(&current) {
            return Err(Reader::corrupt(
                "its current key is not among the keys held",
            ));
        }
        Ok(Self {
            vault,
            version,
            current,
            held,
            retired,
            protections,
        })
    }
}

const TRUST_WHAT: &str = "the replica's record of the trusted key file";

/// Reads [`KeyTrust::to_bytes`] front to back.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn corrupt(reason: &str) -> Error {
        Error::corrupt(TRUST_WHAT, reason)
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(Self::corrupt("it is truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn keys(&mut self) -> Result<BTreeMap<u32, [u8; KEY_TAG_LEN]>> {
        let count = u32::from_be_bytes(self.array()?) as usize;
        if count > MAX_KEYS {
            return Err(Self::corrupt("it lists too many keys"));
        }
        let mut keys = BTreeMap::new();
        for _ in 0..count {
            let id = u32::from_be_bytes(self.array()?);
            if keys.insert(id, self.array()?).is_some() {
                return Err(Self::corrupt("it lists a key id twice"));
            }
        }
        Ok(keys)
    }
}

/// A MAC of the protections list (kind, time, label, recipient of each),
/// keyed by the current data key under a nonce no other tag uses: two key
/// files of one version with different lists tell apart, and the tag
/// reveals nothing of the key.
fn protections_tag(ring: &Keyring) -> [u8; KEY_TAG_LEN] {
    let mut message = b"chatvault protections v1".to_vec();
    message.extend_from_slice(ring.vault.as_bytes());
    for p in &ring.protections {
        encode_protection(&mut message, p);
    }
    let mut out = [0u8; KEY_TAG_LEN];
    let Some(key) = ring.keys.get(&ring.current) else {
        return out;
    };
    let mut nonce = [0u8; 24];
    nonce[0] = 1;
    let mut empty = [0u8; 0];
    if let Ok(tag) =
        key.aead
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &message, &mut empty)
    {
        out.copy_from_slice(&tag);
    }
    out
}

fn encode_protection(out: &mut Vec<u8>, p: &Protection) {
    out.extend_from_slice(p.kind.as_str().as_bytes());
    out.push(0);
    out.extend_from_slice(&p.added_ms.to_be_bytes());
    for text in [&p.label, &p.recipient] {
        out.extend_from_slice(&(text.len() as u32).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }
}
