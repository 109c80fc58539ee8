//! Turning chats into sealed records and back.
//!
//! Each part is bound to `Aad { vault, chat, part, version }`: the summary
//! with [`Part::Summary`], the body with [`Part::Body`]. Opening also checks
//! that the decoded chat is the one the record claims to be.

use crate::chat::{Chat, ChatSummary};
use crate::cipher::{Aad, Cipher};
use crate::codec::{
    chat_format_of, decode_chat_up_to, decode_summary_up_to, encode_chat_at, encode_summary_at,
    summary_format_of, VAULT_FORMAT,
};
use crate::ids::{ChatId, VaultId};
use crate::storage::{Part, SealedRecord};
use crate::{Error, Result};
use std::sync::Arc;

/// A record opened: what [`open_record`] returns.
#[derive(Debug)]
pub struct OpenedRecord {
    /// The sealed record as received (kept to store it unchanged).
    pub sealed: SealedRecord,
    /// Its summary.
    pub summary: ChatSummary,
    /// Its body, if the record carried one.
    pub chat: Option<Chat>,
}

/// Opens `record` of `vault` exactly as the engine opens what it pulls or
/// stores: both parts authenticated and bound to their vault, chat, part
/// and version, the summary and the body checked to describe this chat,
/// and the record's deleted flag checked against its sealed summary (a
/// tombstone's state is rebuilt from its summary). Tools that check a
/// vault (`chatvault verify`) use it so they accept exactly what a device
/// accepts.
///
/// Errors: those of [`Cipher::open`] (`Tampered`, `UnknownKeyId`,
/// `UnsupportedFormat`, `Corrupt`) and of the codec; [`Error::Corrupt`]
/// for a part describing another chat or a deleted flag that disagrees.
pub fn open_record(
    cipher: Arc<dyn Cipher>,
    vault: VaultId,
    record: SealedRecord,
) -> Result<OpenedRecord> {
    Sealer::new(cipher, vault).open(record)
}

/// Seals and opens records of one vault.
pub(crate) struct Sealer {
    cipher: Arc<dyn Cipher>,
    vault: VaultId,
    /// The newest vault format this device reads and writes
    /// ([`VAULT_FORMAT`] but for a device standing in for an older
    /// release in a mixed-fleet test).
    max_format: u8,
}

impl Sealer {
    pub(crate) fn new(cipher: Arc<dyn Cipher>, vault: VaultId) -> Self {
        Self::reading_up_to(cipher, vault, VAULT_FORMAT)
    }

    /// A sealer that reads and writes vault formats up to `max_format`
    /// only, as a release that knows no newer one.
    pub(crate) fn reading_up_to(cipher: Arc<dyn Cipher>, vault: VaultId, max_format: u8) -> Self {
        Self {
            cipher,
            vault,
            max_format: max_format.clamp(1, VAULT_FORMAT),
        }
    }

    /// Checks that this device reads the vault format its key file says
    /// every device writes (the format floor, `docs/design.md` §3.6).
    ///
    /// Errors: [`Error::UnsupportedFormat`] naming the vault format needed.
    pub(crate) fn check_format_floor(&self) -> Result<u8> {
        let floor = self.cipher.format_floor();
        if floor > self.max_format {
            return Err(Error::UnsupportedFormat {
                what: "vault".to_string(),
                found: u32::from(floor),
                supported: u32::from(self.max_format),
            });
        }
        Ok(floor)
    }

    fn aad(&self, chat: ChatId, part: Part, version: u64) -> Aad {
        Aad {
            vault: self.vault,
            chat,
            part,
            version,
        }
    }

    /// Seals `chat` as version `version`: summary always, body unless the
    /// chat is deleted (a tombstone carries only its sealed summary). Both
    /// parts are sealed together ([`Cipher::seal_parts`]): a key adopted
    /// meanwhile never leaves them under different keys.
    ///
    /// The summary and the body are written in the formats of the vault's
    /// format floor.
    /// Errors: [`Error::UnsupportedFormat`] when the floor is above what
    /// this device writes (it never writes a vault it cannot read).
    pub(crate) fn seal(&self, chat: &Chat, version: u64) -> Result<SealedRecord> {
        let floor = self.check_format_floor()?;
        let summary = encode_summary_at(&chat.summary(), floor)?;
        let body = if chat.is_deleted() {
            None
        } else {
            Some(encode_chat_at(chat, floor)?)
        };
        let mut parts = vec![(
            self.aad(chat.id, Part::Summary, version),
            summary.as_slice(),
        )];
        if let Some(body) = &body {
            parts.push((self.aad(chat.id, Part::Body, version), body.as_slice()));
        }
        let mut sealed = self.cipher.seal_parts(&parts)?.into_iter();
        let summary = sealed.next().ok_or_else(|| {
            Error::invalid("the cipher sealed no summary (a Cipher::seal_parts bug)")
        })?;
        let body = match body {
            Some(_) => Some(
                sealed
                    .next()
                    .ok_or_else(|| {
                        Error::invalid("the cipher sealed no body (a Cipher::seal_parts bug)")
                    })?
                    .into(),
            ),
            None => None,
        };
        Ok(SealedRecord {
            chat: chat.id,
            version,
            deleted: chat.is_deleted(),
            summary: summary.into(),
            body,
        })
    }

    /// The data key id `sealed` names, if the cipher has key ids
    /// ([`Cipher::sealed_key_id`]).
    pub(crate) fn key_id(&self, sealed: &[u8]) -> Result<Option<u32>> {
        self.cipher.sealed_key_id(sealed)
    }

    /// True if `record`'s summary or body names a key id other than
    /// `current` (never for a cipher without key ids).
    pub(crate) fn is_stale(&self, record: &SealedRecord, current: u32) -> bool {
        let under_other = |sealed: &[u8]| {
            self.key_id(sealed)
                .is_ok_and(|id| id.is_some_and(|id| id != current))
        };
        under_other(&record.summary) || record.body.as_deref().is_some_and(under_other)
    }

    /// The key ids `record`'s parts name, without duplicates; empty when a
    /// header does not parse (the record may need any key) or the cipher
    /// has no key ids.
    pub(crate) fn record_key_ids(&self, record: &SealedRecord) -> Vec<u32> {
        let mut ids = Vec::with_capacity(2);
        for sealed in std::iter::once(&record.summary).chain(record.body.as_ref()) {
            match self.key_id(sealed) {
                Ok(Some(id)) if !ids.contains(&id) => ids.push(id),
                Ok(_) => {}
                Err(_) => return Vec::new(),
            }
        }
        ids
    }

    pub(crate) fn open_summary(
        &self,
        chat: ChatId,
        version: u64,
        sealed: &[u8],
    ) -> Result<ChatSummary> {
        let plain = self
            .cipher
            .open(&self.aad(chat, Part::Summary, version), sealed)?;
        let summary = decode_summary_up_to(&plain, summary_format_of(self.max_format))?;
        if summary.id != chat {
            return Err(Error::corrupt(
                format!("summary of chat {chat}"),
                format!("it describes chat {}", summary.id),
            ));
        }
        Ok(summary)
    }

    pub(crate) fn open_body(&self, chat: ChatId, version: u64, sealed: &[u8]) -> Result<Chat> {
        let plain = self.open_body_plain(chat, version, sealed)?;
        Self::decode_body_up_to(chat, &plain, chat_format_of(self.max_format))
    }

    /// A body's authenticated plaintext, not yet decoded.
    pub(crate) fn open_body_plain(
        &self,
        chat: ChatId,
        version: u64,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        self.cipher
            .open(&self.aad(chat, Part::Body, version), sealed)
    }

    /// Decodes an opened body of any chat format this device reads (its
    /// vault format's) and checks it is `chat`'s.
    pub(crate) fn decode_body(&self, chat: ChatId, plain: &[u8]) -> Result<Chat> {
        Self::decode_body_up_to(chat, plain, chat_format_of(self.max_format))
    }

    /// Decodes an opened body as a device reading chat formats up to
    /// `supported` does, and checks it is `chat`'s.
    fn decode_body_up_to(chat: ChatId, plain: &[u8], supported: u8) -> Result<Chat> {
        let decoded = decode_chat_up_to(plain, supported)?;
        if decoded.id != chat {
            return Err(Error::corrupt(
                format!("body of chat {chat}"),
                format!("it holds chat {}", decoded.id),
            ));
        }
        Ok(decoded)
    }

    /// The binding of chunk `index` of the sidebar snapshot reflecting
    /// sidebar generation `generation`: this vault, a reserved chat id
    /// (`sidebar-snap` in ASCII, then the index: not a UUIDv7, so no chat
    /// has it), the summary part and the generation as the version. A
    /// record's summary cannot pass for a snapshot chunk, nor a chunk of
    /// one generation, place (or vault) for another.
    fn snapshot_aad(&self, generation: u64, index: u32) -> Aad {
        let mut id = [0u8; 16];
        id[..12].copy_from_slice(b"sidebar-snap");
        id[12..].copy_from_slice(&index.to_be_bytes());
        self.aad(ChatId::from_bytes(id), Part::Summary, generation)
    }

    /// Seals chunk `index` (plaintext `plain`) of the sidebar snapshot of
    /// `generation`.
    pub(crate) fn seal_snapshot(
        &self,
        generation: u64,
        index: u32,
        plain: &[u8],
    ) -> Result<Vec<u8>> {
        self.cipher
            .seal(&self.snapshot_aad(generation, index), plain)
    }

    /// Opens chunk `index` of a sidebar snapshot sealed for `generation`.
    pub(crate) fn open_snapshot(
        &self,
        generation: u64,
        index: u32,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        self.cipher
            .open(&self.snapshot_aad(generation, index), sealed)
    }

    /// Seals stream journal entry `seq` of `chat` (`engine::journal`): the
    /// body part, with `seq | 1 << 63` as the version, which no record
    /// reaches.
    pub(crate) fn seal_journal(&self, chat: ChatId, seq: u64, plain: &[u8]) -> Result<Vec<u8>> {
        let version = seq | super::journal::JOURNAL_BIT;
        self.cipher
            .seal(&self.aad(chat, Part::Body, version), plain)
    }

    /// Opens stream journal entry `seq` of `chat`.
    pub(crate) fn open_journal(&self, chat: ChatId, seq: u64, sealed: &[u8]) -> Result<Vec<u8>> {
        let version = seq | super::journal::JOURNAL_BIT;
        self.cipher
            .open(&self.aad(chat, Part::Body, version), sealed)
    }

    /// Opens a whole record. A tombstone's state is rebuilt from its summary.
    pub(crate) fn open(&self, sealed: SealedRecord) -> Result<OpenedRecord> {
        let summary = self.open_summary(sealed.chat, sealed.version, &sealed.summary)?;
        if sealed.deleted != summary.deleted.is_some() {
            return Err(Error::corrupt(
                format!("record of chat {}", sealed.chat),
                "its deleted flag disagrees with its sealed summary",
            ));
        }
        let chat = match (&summary.deleted, &sealed.body) {
            (Some(deleted), _) => Some(Chat::tombstone(sealed.chat, summary.created, *deleted)),
            (None, Some(body)) => Some(self.open_body(sealed.chat, sealed.version, body)?),
            (None, None) => None,
        };
        Ok(OpenedRecord {
            sealed,
            summary,
            chat,
        })
    }

    /// Opens many records, spreading the work over the machine's cores; each
    /// result stands alone, so one bad record does not spoil the batch.
    pub(crate) fn open_all(
        &self,
        records: Vec<SealedRecord>,
    ) -> Vec<(ChatId, u64, Result<OpenedRecord>)> {
        par_map(records, |r| (r.chat, r.version, self.open(r)))
    }
}

/// Maps `items` with `f` on up to one thread per core (in order), for the
/// CPU-bound batches of decryption and parsing; small batches stay on the
/// calling thread.
pub(crate) fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    crate::parallel::par_map(items, 256, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Role;
    use crate::envelope::EnvelopeCipher;
    use crate::hlc::Hlc;
    use crate::ids::DeviceId;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_sidebar_snapshot_opens_only_for_its_vault_generation_and_key() {
        let cipher = Arc::new(EnvelopeCipher::generate(VaultId::new()));
        let sealer = Sealer::new(cipher.clone(), cipher.vault());
        let sealed = sealer.seal_snapshot(7, 0, b"plain").expect("seal");
        assert_eq!(sealer.open_snapshot(7, 0, &sealed).expect("open"), b"plain");
        assert!(
            sealer.open_snapshot(7, 1, &sealed).is_err(),
            "another chunk"
        );
        assert!(
            sealer.open_snapshot(8, 0, &sealed).is_err(),
            "another generation"
        );
        let elsewhere = Sealer::new(cipher.clone(), VaultId::new());
        assert!(
            elsewhere.open_snapshot(7, 0, &sealed).is_err(),
            "another vault"
        );
        let stranger = Arc::new(EnvelopeCipher::generate(cipher.vault()));
        let stranger = Sealer::new(stranger, cipher.vault());
        assert!(
            stranger.open_snapshot(7, 0, &sealed).is_err(),
            "another key"
        );
        // Nor does a record's summary pass for a snapshot, or the reverse.
        let chat = Chat::new(ChatId::new(), "t", Hlc::new(1, 0, DeviceId(1)));
        let record = sealer.seal(&chat, 7).expect("seal");
        assert!(sealer.open_snapshot(7, 0, &record.summary).is_err());
        assert!(sealer.open_summary(chat.id, 7, &sealed).is_err());
    }

    #[test]
    fn both_parts_of_a_record_are_sealed_under_one_key_while_the_keyring_rotates() {
        let cipher = Arc::new(EnvelopeCipher::generate(VaultId::new()));
        let sealer = Sealer::new(cipher.clone(), cipher.vault());
        let mut chat = Chat::new(ChatId::new(), "rotating", Hlc::new(1, 0, DeviceId(1)));
        for i in 0..50 {
            chat.add_message(Role::User, "x".repeat(200), Hlc::new(2 + i, 0, DeviceId(1)));
        }
        let done = AtomicBool::new(false);
        let mixed = std::thread::scope(|scope| {
            scope.spawn(|| {
                // Another task adopting rotations while records are sealed.
                for _ in 0..20_000 {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    cipher.rotate();
                    std::thread::yield_now();
                }
            });
            let mut mixed = 0;
            for version in 1..=1_000 {
                let record = sealer.seal(&chat, version).expect("seal");
                let summary = EnvelopeCipher::sealed_key_id(&record.summary).expect("summary");
                let body = EnvelopeCipher::sealed_key_id(record.body.as_deref().expect("body"))
                    .expect("body");
                if summary != body {
                    mixed += 1;
                }
            }
            done.store(true, Ordering::Relaxed);
            mixed
        });
        assert!(cipher.current_key_id() > 1, "the keyring rotated meanwhile");
        assert_eq!(
            mixed, 0,
            "records with summary and body under different keys"
        );
    }
}
