//! Key files: a vault's keyring, encrypted with age, in a container of slots.
//!
//! age refuses to encrypt one file to a passphrase *and* to other
//! recipients, so a key file (format 2) holds up to two *slots*, each a
//! complete, standard age file:
//!
//! - a passphrase slot (kind 3, age scrypt) holding the *passphrase
//!   identity*, an age X25519 identity;
//! - an X25519 slot (kind 2) holding the keyring, encrypted to every device,
//!   the recovery key and the passphrase identity at once.
//!
//! Any device can therefore rewrite the keyring for the passphrase without
//! knowing it. The keyring (format 3) lists these protections, so a device
//! can re-encrypt to all of them. Format 1 key files (the keyring directly
//! in an scrypt slot of kind 1) and keyring formats 1 and 2 still read.
//!
//! ```text
//! "CVKF" | format (1 byte, = 2) | slot count (1 byte)
//!   then per slot: kind (1 byte) | length (4 bytes, big-endian) | age file
//!
//! keyring: format (1, = 4) | vault id (16) | key file version (8, BE)
//!   | current key id (4, BE) | key count (4, BE) | per key: key id (4, BE) | key (32)
//!   | protection count (2, BE) | per protection: kind (1) | added ms (8, BE)
//!   | label length (1) | label | recipient length (1) | recipient
//!   | retired count (2, BE) | per retired key: key id (4, BE) | tag (16)
//!   | blob secret (32)
//! ```
//!
//! The key file version grows by one with every key file written; a device
//! refuses a key file older than the one it holds (a rollback) and one that
//! holds none of its data keys (a substitution): see
//! [`EnvelopeCipher::check_successor`]. The full format history and the
//! rules of key changes are in `docs/design.md` §3.

use super::export::{self, check_passphrase, check_work_factor};
use super::{DataKey, Keyring, BLOB_SECRET_LEN, DATA_KEY_LEN, KEY_TAG_LEN};
use crate::codec::VAULT_FORMAT;
use crate::ids::VaultId;
use crate::{Error, Result};
use age::secrecy::{ExposeSecret, SecretString};
use age::x25519;
use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

/// Format version of key files (the slot container) written by this build.
pub const KEY_FILE_FORMAT: u8 = 2;
/// Newest format version of the plaintext keyring inside the X25519 slot
/// (written only once the format floor was raised; see `KEYRING_FORMAT_WITHOUT_FLOOR`).
pub const KEYRING_FORMAT: u8 = 5;
/// The keyring format written while the vault's format floor is 1: what
/// releases before format floors read.
pub const KEYRING_FORMAT_WITHOUT_FLOOR: u8 = 4;

const MAGIC: &[u8; 4] = b"CVKF";
/// Format 1 only: an age scrypt file of the keyring.
const SLOT_PASSPHRASE_V1: u8 = 1;
const SLOT_X25519: u8 = 2;
/// Format 2: an age scrypt file of the passphrase identity.
const SLOT_PASSPHRASE_IDENTITY: u8 = 3;
const MAX_PROTECTIONS: usize = 1000;
const MAX_LABEL_LEN: usize = 64;
const MAX_RECIPIENT_LEN: usize = 255;
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

/// What kind of secret a [`Protection`] stands for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProtectionKind {
    /// The vault's passphrase (its recipient is the passphrase identity,
    /// which the passphrase slot seals with scrypt).
    Passphrase,
    /// A device's age X25519 identity.
    Device,
    /// The recovery key: an age X25519 identity shown once, kept on paper.
    Recovery,
}

impl ProtectionKind {
    fn code(self) -> u8 {
        match self {
            ProtectionKind::Passphrase => 1,
            ProtectionKind::Device => 2,
            ProtectionKind::Recovery => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ProtectionKind::Passphrase),
            2 => Some(ProtectionKind::Device),
            3 => Some(ProtectionKind::Recovery),
            _ => None,
        }
    }

    /// A lower-case word for listings: `passphrase`, `device`, `recovery`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtectionKind::Passphrase => "passphrase",
            ProtectionKind::Device => "device",
            ProtectionKind::Recovery => "recovery",
        }
    }
}

impl fmt::Display for ProtectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One secret that unlocks the vault's key file, as listed in the keyring
/// (key file format 2). Public information only: no secret is in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protection {
    /// Passphrase, device or recovery key.
    pub kind: ProtectionKind,
    /// A name for people (`laptop`, `device 1`, `recovery key`); at most 64
    /// bytes.
    pub label: String,
    /// The age X25519 recipient (`age1…`) the keyring is encrypted to.
    pub recipient: String,
    /// When it was added, Unix milliseconds.
    pub added_ms: u64,
}

impl Protection {
    /// The short id commands take: `passphrase`, `recovery`, or for a device
    /// the 12 characters after `age1` of its recipient.
    pub fn id(&self) -> String {
        match self.kind {
            ProtectionKind::Passphrase => "passphrase".to_string(),
            ProtectionKind::Recovery => "recovery".to_string(),
            ProtectionKind::Device => self.recipient.chars().skip(4).take(12).collect(),
        }
    }
}

/// The protections list and passphrase slot for exactly `protection`: the
/// passphrase (a fresh passphrase identity under a new scrypt slot) if any,
/// then the recipients, labelled `device 1`, `device 2`, ….
///
/// Errors: [`Error::InvalidInput`] when `protection` has neither a
/// passphrase nor a recipient, has an empty passphrase, or a work factor
/// outside 1..=22.
pub(crate) fn protections_for(
    protection: &KeyProtection,
) -> Result<(Vec<Protection>, Option<Vec<u8>>)> {
    protection.validate()?;
    let added_ms = now_ms();
    let mut protections = Vec::with_capacity(protection.recipients.len() + 1);
    let mut passphrase_slot = None;
    if let Some(passphrase) = &protection.passphrase {
        let (slot, recipient) = new_passphrase_slot(passphrase, protection.work_factor)?;
        protections.push(Protection {
            kind: ProtectionKind::Passphrase,
            label: "passphrase".to_string(),
            recipient: recipient.to_string(),
            added_ms,
        });
        passphrase_slot = Some(slot);
    }
    for (i, recipient) in protection.recipients.iter().enumerate() {
        protections.push(Protection {
            kind: ProtectionKind::Device,
            label: format!("device {}", i + 1),
            recipient: recipient.to_string(),
            added_ms,
        });
    }
    Ok((protections, passphrase_slot))
}

/// Encodes the key file of `ring` as version `version` for `protections`:
/// the keyring (with the list and the version) in an X25519 slot encrypted
/// to every protection's recipient, plus `passphrase_slot` (the
/// scrypt-sealed passphrase identity, kept byte for byte) when the list
/// holds the passphrase.
///
/// Errors: [`Error::InvalidInput`] for an invalid list, a passphrase
/// protection without its slot or the reverse, a malformed recipient.
pub(crate) fn seal(
    ring: &Keyring,
    version: u64,
    protections: &[Protection],
    passphrase_slot: Option<&[u8]>,
) -> Result<Vec<u8>> {
    check_protections(protections)?;
    let has_passphrase = protections
        .iter()
        .any(|p| p.kind == ProtectionKind::Passphrase);
    if has_passphrase != passphrase_slot.is_some() {
        return Err(Error::invalid(
            "the passphrase protection and the passphrase slot must come together",
        ));
    }
    let recipients = protections
        .iter()
        .map(|p| parse_recipient(&p.recipient))
        .collect::<Result<Vec<_>>>()?;
    let plaintext = encode_keyring(ring, version, protections);
    let keyring_slot = export::encrypt_to_recipients(&plaintext, &recipients)?;
    let mut slots: Vec<(u8, &[u8])> = Vec::with_capacity(2);
    if let Some(slot) = passphrase_slot {
        slots.push((SLOT_PASSPHRASE_IDENTITY, slot));
    }
    slots.push((SLOT_X25519, &keyring_slot));
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.push(KEY_FILE_FORMAT);
    out.push(u8::try_from(slots.len()).map_err(|_| Error::invalid("too many key file slots"))?);
    for (kind, file) in slots {
        let len = u32::try_from(file.len())
            .map_err(|_| Error::invalid("key file slot larger than 4 GiB"))?;
        out.push(kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(file);
    }
    Ok(out)
}

/// Decrypts a key file with `unlock`: the keyring, and the age X25519
/// identity that opened its X25519 slot (`None` for a format-1 file opened
/// with a passphrase).
///
/// Errors: [`Error::WrongKey`] when `unlock` does not open it (or the file
/// has no slot of that kind); [`Error::UnsupportedFormat`] for a newer
/// format; [`Error::Corrupt`] or [`Error::Tampered`] for a garbled file.
pub(crate) fn open(bytes: &[u8], unlock: &Unlock) -> Result<(Keyring, Option<x25519::Identity>)> {
    let container = KeyFileView::parse(bytes)?;
    let identity = match unlock {
        Unlock::Identity(identity) => identity.clone(),
        Unlock::Passphrase(passphrase) if container.format == 1 => {
            return open_legacy_passphrase_slots(&container, passphrase).map(|ring| (ring, None))
        }
        Unlock::Passphrase(passphrase) => {
            let slot = container.passphrase_slot.ok_or_else(|| Error::WrongKey {
                message: "the key file has no passphrase slot".to_string(),
            })?;
            open_passphrase_slot(slot, passphrase)?
        }
    };
    let mut candidates = container
        .slots
        .iter()
        .filter(|(k, _)| *k == SLOT_X25519)
        .peekable();
    if candidates.peek().is_none() {
        return Err(Error::WrongKey {
            message: "the key file has no X25519 slot".to_string(),
        });
    }
    let mut last_error = None;
    for (_, file) in candidates {
        match export::decrypt(file, &identity, "key file X25519 slot") {
            Ok(plaintext) => return Ok((decode_keyring(&plaintext)?, Some(identity))),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::WrongKey {
        message: "the key file has no X25519 slot".to_string(),
    }))
}

/// Format 1 key files: the passphrase slot holds the keyring itself.
fn open_legacy_passphrase_slots(
    container: &KeyFileView<'_>,
    passphrase: &SecretString,
) -> Result<Keyring> {
    let mut candidates = container
        .slots
        .iter()
        .filter(|(k, _)| *k == SLOT_PASSPHRASE_V1)
        .peekable();
    if candidates.peek().is_none() {
        return Err(Error::WrongKey {
            message: "the key file has no passphrase slot".to_string(),
        });
    }
    let identity = scrypt_identity(passphrase);
    let mut last_error = None;
    for (_, file) in candidates {
        match export::decrypt(file, &identity, "key file passphrase slot") {
            Ok(plaintext) => return decode_keyring(&plaintext),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::WrongKey {
        message: "the key file has no passphrase slot".to_string(),
    }))
}

/// age's own cap on scrypt is this machine's calibrated cost + 4 (gigabytes
/// of memory): a key file comes from the server, so a hostile one is capped
/// at the largest work factor chatvault itself ever writes.
fn scrypt_identity(passphrase: &SecretString) -> age::scrypt::Identity {
    let mut scrypt = age::scrypt::Identity::new(passphrase.clone());
    scrypt.set_max_work_factor(export::MAX_WORK_FACTOR);
    scrypt
}

/// Opens a format-2 passphrase slot: the passphrase identity it holds.
pub(crate) fn open_passphrase_slot(
    slot: &[u8],
    passphrase: &SecretString,
) -> Result<x25519::Identity> {
    const WHAT: &str = "key file passphrase slot";
    let plaintext = export::decrypt(slot, &scrypt_identity(passphrase), WHAT)?;
    let text = std::str::from_utf8(&plaintext)
        .map_err(|_| Error::corrupt(WHAT, "the passphrase identity is not UTF-8"))?;
    text.trim().parse::<x25519::Identity>().map_err(|_| {
        Error::corrupt(
            WHAT,
            "the passphrase identity is not an age X25519 identity",
        )
    })
}

/// A fresh passphrase identity sealed to `passphrase` with scrypt: the
/// passphrase slot, and the recipient that goes into the protections list.
pub(crate) fn new_passphrase_slot(
    passphrase: &SecretString,
    work_factor: Option<u8>,
) -> Result<(Vec<u8>, x25519::Recipient)> {
    let identity = x25519::Identity::generate();
    let secret = Zeroizing::new(identity.to_string().expose_secret().as_bytes().to_vec());
    let slot = export::encrypt_to_passphrase(&secret, passphrase, work_factor)?;
    Ok((slot, identity.to_public()))
}

/// Parses an age X25519 recipient (`age1…`).
pub(crate) fn parse_recipient(text: &str) -> Result<x25519::Recipient> {
    text.trim().parse::<x25519::Recipient>().map_err(|e| {
        Error::invalid(format!(
            "{text:?} is not an age X25519 recipient (an `age1…` public key, as printed by \
             `age-keygen -y`): {e}"
        ))
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn now_millis() -> u64 {
    now_ms()
}

/// Refuses a protections list no key file can be written for: empty, more
/// than one passphrase, a recipient twice, a label that does not fit.
fn check_protections(protections: &[Protection]) -> Result<()> {
    if protections.is_empty() {
        return Err(Error::invalid(
            "a key file needs at least one protection (a passphrase, a device or a recovery key)",
        ));
    }
    if protections.len() > MAX_PROTECTIONS {
        return Err(Error::invalid(format!(
            "a key file holds at most {MAX_PROTECTIONS} protections"
        )));
    }
    let passphrases = protections
        .iter()
        .filter(|p| p.kind == ProtectionKind::Passphrase)
        .count();
    if passphrases > 1 {
        return Err(Error::invalid("a key file holds at most one passphrase"));
    }
    for (i, p) in protections.iter().enumerate() {
        if p.label.len() > MAX_LABEL_LEN {
            return Err(Error::invalid(format!(
                "the label {:?} is longer than {MAX_LABEL_LEN} bytes",
                p.label
            )));
        }
        if p.recipient.len() > MAX_RECIPIENT_LEN {
            return Err(Error::invalid("an age recipient is at most 255 bytes"));
        }
        if protections[..i].iter().any(|q| q.recipient == p.recipient) {
            return Err(Error::invalid(format!(
                "{} is already a protection of this vault",
                p.recipient
            )));
        }
    }
    Ok(())
}

/// A parsed key file container: its format and slots, not yet decrypted.
pub(crate) struct KeyFileView<'a> {
    /// Container format (1 or 2).
    pub(crate) format: u8,
    /// Every slot, unknown kinds included: (kind, age file).
    pub(crate) slots: Vec<Slot<'a>>,
    /// Format 2: the passphrase slot (the scrypt-sealed passphrase identity).
    pub(crate) passphrase_slot: Option<&'a [u8]>,
}

impl<'a> KeyFileView<'a> {
    /// Refuses a container with more than one passphrase slot (of either
    /// format) before anything is decrypted: each would cost one scrypt
    /// run, so a server could multiply the work factor cap by the slot
    /// count, and chatvault never writes more than one.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self> {
        let (format, slots) = parse_container(bytes)?;
        let passphrase_slots = slots
            .iter()
            .filter(|(k, _)| matches!(*k, SLOT_PASSPHRASE_V1 | SLOT_PASSPHRASE_IDENTITY))
            .count();
        if passphrase_slots > 1 {
            return Err(Error::corrupt(
                "key file",
                format!(
                    "{passphrase_slots} passphrase slots where at most one is valid; refusing to \
                     run scrypt for each"
                ),
            ));
        }
        let passphrase_slot = match format {
            1 => None,
            _ => slots
                .iter()
                .find(|(k, _)| *k == SLOT_PASSPHRASE_IDENTITY)
                .map(|(_, f)| *f),
        };
        Ok(Self {
            format,
            slots,
            passphrase_slot,
        })
    }

    /// A format-1 file with a passphrase slot (the keyring sealed directly
    /// to the passphrase).
    pub(crate) fn has_legacy_passphrase(&self) -> bool {
        self.format == 1 && self.slots.iter().any(|(k, _)| *k == SLOT_PASSPHRASE_V1)
    }

    /// The file has an X25519 slot.
    pub(crate) fn has_x25519(&self) -> bool {
        self.slots.iter().any(|(k, _)| *k == SLOT_X25519)
    }
}

/// A slot of the container: its kind and its age file.
type Slot<'a> = (u8, &'a [u8]);

fn parse_container(bytes: &[u8]) -> Result<(u8, Vec<Slot<'_>>)> {
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
    Ok((format, slots))
}

/// Encodes `ring` as a keyring of key file version `version` holding
/// `protections`.
fn encode_keyring(ring: &Keyring, version: u64, protections: &[Protection]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(
        KEYRING_HEADER_LEN + ring.keys.len() * KEY_ENTRY_LEN + 2 + protections.len() * 100,
    ));
    // Format 5 only once the floor was raised: until then every release
    // since format 4 reads (and may rewrite) the key file.
    out.push(if ring.format_floor > 1 {
        KEYRING_FORMAT
    } else {
        KEYRING_FORMAT_WITHOUT_FLOOR
    });
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
    // check_protections bounds the count and the lengths.
    let count = u16::try_from(protections.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for p in protections.iter().take(usize::from(count)) {
        out.push(p.kind.code());
        out.extend_from_slice(&p.added_ms.to_be_bytes());
        let label = &p.label.as_bytes()[..p.label.len().min(MAX_LABEL_LEN)];
        out.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(label);
        let recipient = &p.recipient.as_bytes()[..p.recipient.len().min(MAX_RECIPIENT_LEN)];
        out.push(u8::try_from(recipient.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(recipient);
    }
    let retired: Vec<_> = ring.retired.iter().take(usize::from(u16::MAX)).collect();
    out.extend_from_slice(
        &u16::try_from(retired.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    for (id, tag) in retired {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(tag);
    }
    // Format 4: the blob secret, stored or (for a keyring read from an
    // older format) derived, so it never changes again once written.
    out.extend_from_slice(ring.blob_secret().as_slice());
    // Format 5: the format floor.
    if ring.format_floor > 1 {
        out.push(ring.format_floor);
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
    let after_header = &bytes[header_len..];
    let keys_len = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(KEY_ENTRY_LEN))
        .filter(|len| match format {
            // Formats 1 and 2 end with the keys.
            1 | 2 => *len == after_header.len(),
            _ => *len <= after_header.len(),
        })
        .ok_or_else(|| {
            Error::corrupt(
                WHAT,
                format!(
                    "{count} keys announced but {} bytes follow the header",
                    after_header.len()
                ),
            )
        })?;
    let (entries, tail) = after_header.split_at(keys_len);
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
    let (tail, format_floor) = match format {
        5 => {
            let (&floor, tail) = tail.split_last().ok_or_else(|| {
                Error::corrupt(WHAT, "the format floor of a format-5 keyring is missing")
            })?;
            (tail, check_format_floor(floor)?)
        }
        _ => (tail, 1),
    };
    let (protections, retired, blob_secret) = match format {
        1 | 2 => (Vec::new(), BTreeMap::new(), None),
        3 => {
            let (protections, rest) = decode_protections(tail)?;
            (protections, decode_retired(rest)?, None)
        }
        _ => {
            let (protections, rest) = decode_protections(tail)?;
            let split = rest.len().checked_sub(BLOB_SECRET_LEN).ok_or_else(|| {
                Error::corrupt(
                    WHAT,
                    "the blob secret of a format-4 or 5 keyring is missing",
                )
            })?;
            let (rest, secret) = rest.split_at(split);
            let mut blob_secret = Zeroizing::new([0u8; BLOB_SECRET_LEN]);
            blob_secret.copy_from_slice(secret);
            (protections, decode_retired(rest)?, Some(blob_secret))
        }
    };
    Ok(Keyring {
        vault: VaultId::from_bytes(vault),
        version,
        current,
        keys,
        protections,
        retired,
        blob_secret,
        format_floor,
    })
}

/// Checks a keyring's format floor: 2 up to the newest vault format this
/// build reads (a floor of 1 is written as keyring format 4).
///
/// Errors: [`Error::UnsupportedFormat`] naming the vault format a newer
/// release raised the floor to; [`Error::Corrupt`] below 2.
fn check_format_floor(floor: u8) -> Result<u8> {
    if floor < 2 {
        return Err(Error::corrupt(
            "keyring",
            format!("a format-5 keyring with format floor {floor} (floors start at 2)"),
        ));
    }
    if floor > VAULT_FORMAT {
        return Err(Error::UnsupportedFormat {
            what: "vault".to_string(),
            found: u32::from(floor),
            supported: u32::from(VAULT_FORMAT),
        });
    }
    Ok(floor)
}

fn decode_retired(bytes: &[u8]) -> Result<BTreeMap<u32, [u8; KEY_TAG_LEN]>> {
    const WHAT: &str = "keyring retired keys";
    let (count, rest) = bytes
        .split_first_chunk::<2>()
        .ok_or_else(|| Error::corrupt(WHAT, "the retired keys list is missing"))?;
    let count = usize::from(u16::from_be_bytes(*count));
    if rest.len() != count * (4 + KEY_TAG_LEN) {
        return Err(Error::corrupt(
            WHAT,
            format!(
                "{count} retired keys announced but {} bytes follow",
                rest.len()
            ),
        ));
    }
    let mut out = BTreeMap::new();
    for entry in rest.chunks_exact(4 + KEY_TAG_LEN) {
        let mut tag = [0u8; KEY_TAG_LEN];
        tag.copy_from_slice(&entry[4..]);
        out.insert(be_u32(&entry[..4]), tag);
    }
    Ok(out)
}

fn decode_protections(bytes: &[u8]) -> Result<(Vec<Protection>, &[u8])> {
    const WHAT: &str = "keyring protections";
    let truncated = || Error::corrupt(WHAT, "the protections list is truncated");
    let (count, mut rest) = bytes.split_first_chunk::<2>().ok_or_else(truncated)?;
    let count = u16::from_be_bytes(*count);
    let mut out = Vec::with_capacity(usize::from(count).min(MAX_PROTECTIONS));
    for _ in 0..count {
        let (&kind, after) = rest.split_first().ok_or_else(truncated)?;
        let (added, after) = after.split_first_chunk::<8>().ok_or_else(truncated)?;
        let (&label_len, after) = after.split_first().ok_or_else(truncated)?;
        if after.len() < usize::from(label_len) {
            return Err(truncated());
        }
        let (label, after) = after.split_at(usize::from(label_len));
        let (&recipient_len, after) = after.split_first().ok_or_else(truncated)?;
        if after.len() < usize::from(recipient_len) {
            return Err(truncated());
        }
        let (recipient, after) = after.split_at(usize::from(recipient_len));
        rest = after;
        let kind = ProtectionKind::from_code(kind)
            .ok_or_else(|| Error::corrupt(WHAT, format!("unknown protection kind {kind}")))?;
        let label = std::str::from_utf8(label)
            .map_err(|_| Error::corrupt(WHAT, "a label is not UTF-8"))?
            .to_string();
        let recipient = std::str::from_utf8(recipient)
            .ok()
            .filter(|r| r.parse::<x25519::Recipient>().is_ok())
            .ok_or_else(|| Error::corrupt(WHAT, "a recipient is not an age X25519 recipient"))?
            .to_string();
        out.push(Protection {
            kind,
            label,
            recipient,
            added_ms: u64::from_be_bytes(*added),
        });
    }
    check_protections(&out).map_err(|e| Error::corrupt(WHAT, e.to_string()))?;
    Ok((out, rest))
}

fn be_u32(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EnvelopeCipher;
    use proptest::prelude::*;

    fn sample_protections() -> Vec<Protection> {
        vec![Protection {
            kind: ProtectionKind::Device,
            label: "laptop".to_string(),
            recipient: x25519::Identity::generate().to_public().to_string(),
            added_ms: 1,
        }]
    }

    #[test]
    fn keyring_round_trips_through_its_encoding() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        cipher.rotate();
        let encoded = encode_keyring(&cipher.read(), 7, &sample_protections());
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
        let mut encoded = encode_keyring(&cipher.read(), 1, &sample_protections());
        encoded[0] = KEYRING_FORMAT + 1;
        assert!(matches!(
            decode_keyring(&encoded),
            Err(Error::UnsupportedFormat { found, .. }) if found == u32::from(KEYRING_FORMAT) + 1
        ));
    }

    #[test]
    fn the_format_floor_is_written_as_format_5_only_once_raised() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let before = encode_keyring(&cipher.read(), 1, &sample_protections());
        assert_eq!(
            before[0], 4,
            "floor 1: the format releases before floors read"
        );
        assert_eq!(decode_keyring(&before).expect("decode").format_floor, 1);

        assert!(cipher.raise_format_floor(VAULT_FORMAT).expect("raise"));
        assert!(!cipher.raise_format_floor(1).expect("lower is no change"));
        let after = encode_keyring(&cipher.read(), 2, &sample_protections());
        assert_eq!(after[0], 5);
        assert_eq!(after.len(), before.len() + 1);
        let decoded = decode_keyring(&after).expect("decode");
        assert_eq!(decoded.format_floor, VAULT_FORMAT);
        assert_eq!(decoded.blob_secret, cipher.read().blob_secret);

        // A floor above what this build reads names the vault format.
        let mut newer = after.to_vec();
        *newer.last_mut().expect("floor byte") = VAULT_FORMAT + 1;
        assert!(matches!(
            decode_keyring(&newer),
            Err(Error::UnsupportedFormat { ref what, found, supported })
                if what == "vault" && found == u32::from(VAULT_FORMAT) + 1
                    && supported == u32::from(VAULT_FORMAT)
        ));
        // Format 5 never carries a floor below 2.
        let mut low = after.to_vec();
        *low.last_mut().expect("floor byte") = 1;
        assert!(matches!(decode_keyring(&low), Err(Error::Corrupt { .. })));
        assert!(matches!(
            cipher.raise_format_floor(VAULT_FORMAT + 1),
            Err(Error::UnsupportedFormat { .. })
        ));
    }

    #[test]
    fn adopting_a_successor_raises_the_floor_and_never_lowers_it() {
        let ours = EnvelopeCipher::generate(VaultId::new());
        let mut theirs_ring =
            decode_keyring(&encode_keyring(&ours.read(), 2, &sample_protections())).expect("copy");
        theirs_ring.format_floor = VAULT_FORMAT;
        let theirs = EnvelopeCipher::from_keyring(theirs_ring);
        assert!(
            ours.adopt_keys(&theirs).expect("adopt"),
            "a raised floor is a change"
        );
        assert_eq!(ours.format_floor(), VAULT_FORMAT);
        let mut older_ring =
            decode_keyring(&encode_keyring(&ours.read(), 3, &sample_protections())).expect("copy");
        older_ring.format_floor = 1;
        let older = EnvelopeCipher::from_keyring(older_ring);
        ours.adopt_keys(&older).expect("adopt");
        assert_eq!(
            ours.format_floor(),
            VAULT_FORMAT,
            "the floor never goes down"
        );
    }

    #[test]
    fn the_blob_secret_survives_a_key_file_and_is_derived_for_older_keyrings() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let secret = cipher.read().blob_secret();
        let encoded = encode_keyring(&cipher.read(), 1, &sample_protections());
        let decoded = decode_keyring(&encoded).expect("format 4 decodes");
        assert_eq!(decoded.blob_secret.as_deref(), Some(&*secret));

        // The same keyring as a format-3 build wrote it: no stored secret.
        let mut v3 = encoded[..encoded.len() - BLOB_SECRET_LEN].to_vec();
        v3[0] = 3;
        let old = decode_keyring(&v3).expect("format 3 decodes");
        assert!(old.blob_secret.is_none());
        let derived = old.blob_secret();
        assert_eq!(
            derived,
            decode_keyring(&v3).expect("again").blob_secret(),
            "deterministic"
        );
        assert_ne!(derived, secret);
        // Written again by this build, the derived secret is stored as is.
        let rewritten = decode_keyring(&encode_keyring(&old, 2, &sample_protections()))
            .expect("format 4 decodes");
        assert_eq!(rewritten.blob_secret.as_deref(), Some(&*derived));
        // Adopting a successor that stores a secret takes it; one already
        // stored is kept.
        let mut adopting = decode_keyring(&v3).expect("format 3 decodes");
        adopting.adopt(&rewritten).expect("adopt");
        assert_eq!(adopting.blob_secret.as_deref(), Some(&*derived));
        // A format-4 keyring cut short of its secret is corrupt.
        assert!(matches!(
            decode_keyring(&encoded[..encoded.len() - 1]),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn keyring_without_its_current_key_is_corrupt() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let mut encoded = encode_keyring(&cipher.read(), 1, &sample_protections());
        encoded[25..29].copy_from_slice(&7u32.to_be_bytes());
        assert!(matches!(
            decode_keyring(&encoded),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn the_passphrase_identity_opens_the_key_file_without_the_passphrase() {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let passphrase = SecretString::from("a long passphrase");
        let file = cipher
            .to_key_file(&KeyProtection::for_passphrase(passphrase.clone()).with_work_factor(2))
            .expect("key file");
        let (_, identity) =
            EnvelopeCipher::from_key_file_with_identity(&file, &Unlock::Passphrase(passphrase))
                .expect("the passphrase opens it");
        let identity = identity.expect("a format-2 key file has a passphrase identity");
        assert_eq!(
            cipher.protections()[0].recipient,
            identity.to_public().to_string()
        );
        let opened = EnvelopeCipher::from_key_file(&file, &Unlock::Identity(identity))
            .expect("the passphrase identity opens it");
        assert_eq!(opened.vault(), cipher.vault());
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

    /// A container of `kind` slots, each an scrypt age file of `payload`
    /// under `passphrase` (work factor 2).
    fn container_of_passphrase_slots(
        format: u8,
        kind: u8,
        count: u8,
        payload: &[u8],
        passphrase: &SecretString,
    ) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(format);
        out.push(count);
        for _ in 0..count {
            let slot = export::encrypt_to_passphrase(payload, passphrase, Some(2)).expect("slot");
            out.push(kind);
            out.extend_from_slice(&(slot.len() as u32).to_be_bytes());
            out.extend_from_slice(&slot);
        }
        out
    }

    #[test]
    fn a_key_file_with_more_than_one_passphrase_slot_is_refused_before_any_scrypt() {
        let passphrase = SecretString::from("a long passphrase");
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let keyring = encode_keyring_v1(&cipher.read());
        // Format 1: every passphrase slot would cost one scrypt.
        let legacy =
            container_of_passphrase_slots(1, SLOT_PASSPHRASE_V1, 20, &keyring, &passphrase);
        // Format 2: a second passphrase-identity slot is just as malformed.
        let identity = x25519::Identity::generate();
        let secret = identity.to_string().expose_secret().as_bytes().to_vec();
        let current =
            container_of_passphrase_slots(2, SLOT_PASSPHRASE_IDENTITY, 2, &secret, &passphrase);
        for file in [legacy, current] {
            let result =
                EnvelopeCipher::from_key_file(&file, &Unlock::Passphrase(passphrase.clone()));
            match result {
                Err(Error::Corrupt { reason, .. }) => {
                    assert!(reason.contains("passphrase slots"), "{reason}")
                }
                other => panic!("expected Corrupt naming the passphrase slots, got {other:?}"),
            }
            let by_identity =
                EnvelopeCipher::from_key_file(&file, &Unlock::Identity(identity.clone()));
            assert!(
                matches!(by_identity, Err(Error::Corrupt { .. })),
                "{by_identity:?}"
            );
        }
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
