//! [`ReplicaWrite`]: one atomic change to the replica.

use super::encoding::{
    decode_body, decode_outbox, decode_summary, encode_body, encode_outbox, encode_summary,
    OutboxEntry, RecordHeader,
};
use super::maintenance::MaintenanceMark;
use super::skipped::{self, SkippedEntry};
use super::{
    local_error, snapshot_chunk_key, BODIES, META, META_CURSOR, META_DEVICE, META_KEY_FILE,
    META_KEY_TRUST, META_MAINTENANCE, META_SEALED, META_SIDEBAR_GENERATION, META_SIDEBAR_SNAPSHOT,
    META_SIDEBAR_SNAPSHOT_WHOLE, META_VAULT, OUTBOX, SKIPPED, SUMMARIES,
};
use crate::envelope::KeyTrust;
use crate::ids::{ChatId, DeviceId, VaultId};
use crate::storage::{Cursor, SealedRecord};
use crate::Result;
use bytes::Bytes;
use redb::{ReadableTable, WriteTransaction};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One atomic change to the [`Replica`](super::Replica): everything done
/// through it becomes durable together when [`commit`](Self::commit) returns,
/// or not at all (dropping it aborts).
pub struct ReplicaWrite {
    txn: WriteTransaction,
    /// True once a summary was written: the commit bumps the sidebar
    /// generation.
    summaries_changed: bool,
    /// Counts this transaction's generation bump once it commits.
    tally: Option<Arc<AtomicU64>>,
}

impl std::fmt::Debug for ReplicaWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaWrite").finish_non_exhaustive()
    }
}

/// Reads shared by read and write transactions.
pub(crate) trait Tables {
    fn summary_value(&self, chat: ChatId) -> Result<Option<Vec<u8>>>;
    fn body_value(&self, chat: ChatId) -> Result<Option<Vec<u8>>>;
    fn outbox_value(&self, chat: ChatId) -> Result<Option<Vec<u8>>>;
}

macro_rules! impl_tables {
    ($txn:ty) => {
        impl Tables for $txn {
            fn summary_value(&self, chat: ChatId) -> Result<Option<Vec<u8>>> {
                let table = self
                    .open_table(SUMMARIES)
                    .map_err(|e| local_error("cannot read the replica summaries", e))?;
                let value = table
                    .get(chat.as_bytes())
                    .map_err(|e| local_error("cannot read the replica summaries", e))?
                    .map(|v| v.value().to_vec());
                Ok(value)
            }

            fn body_value(&self, chat: ChatId) -> Result<Option<Vec<u8>>> {
                let table = self
                    .open_table(BODIES)
                    .map_err(|e| local_error("cannot read the replica bodies", e))?;
                let value = table
                    .get(chat.as_bytes())
                    .map_err(|e| local_error("cannot read the replica bodies", e))?
                    .map(|v| v.value().to_vec());
                Ok(value)
            }

            fn outbox_value(&self, chat: ChatId) -> Result<Option<Vec<u8>>> {
                let table = self
                    .open_table(OUTBOX)
                    .map_err(|e| local_error("cannot read the outbox", e))?;
                let value = table
                    .get(chat.as_bytes())
                    .map_err(|e| local_error("cannot read the outbox", e))?
                    .map(|v| v.value().to_vec());
                Ok(value)
            }
        }
    };
}

impl_tables!(redb::ReadTransaction);
impl_tables!(WriteTransaction);

/// A metadata value as of `txn`; `None` when absent (or the table is).
pub(crate) fn read_meta<T: Meta>(txn: &T, key: &str) -> Result<Option<Vec<u8>>> {
    txn.meta_value(key)
}

/// The sidebar generation as of `txn` (absent: 0).
pub(crate) fn read_generation(txn: &impl Meta) -> Result<u64> {
    match txn.meta_value(META_SIDEBAR_GENERATION)? {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| {
                crate::Error::local_message(
                    "the replica's sidebar generation is malformed; \
                     the replica file is damaged"
                        .to_string(),
                )
            }),
    }
}

/// SHA-256 over every stored summary's chat id, version and tombstone flag
/// (`id [16] ‖ version u64 BE ‖ flags u8`, in chat id order), read from
/// `table`: what a sidebar snapshot is checked against, so a writer that
/// does not bump the sidebar generation (an older chatvault) still makes
/// the snapshot stale. Reads the keys and the first 9 bytes of each value,
/// never the sealed summaries.
pub(crate) fn summaries_digest(
    table: &impl ReadableTable<&'static [u8; 16], &'static [u8]>,
) -> Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let iter = table
        .iter()
        .map_err(|e| local_error("cannot read the replica summaries", e))?;
    for item in iter {
        let (key, value) = item.map_err(|e| local_error("cannot read the replica summaries", e))?;
        let key = key.value();
        let value = value.value();
        let header = value
            .get(..9)
            .ok_or_else(|| super::encoding::corrupt(ChatId::from_bytes(*key), "summary"))?;
        hash.update(key);
        hash.update(header);
    }
    Ok(hash.finalize().into())
}

/// Metadata reads shared by read and write transactions.
pub(crate) trait Meta {
    fn meta_value(&self, key: &str) -> Result<Option<Vec<u8>>>;
}

impl Meta for redb::ReadTransaction {
    fn meta_value(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let meta = match self.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(local_error("cannot read the replica metadata", e)),
        };
        let value = meta
            .get(key)
            .map_err(|e| local_error("cannot read the replica metadata", e))?
            .map(|v| v.value().to_vec());
        Ok(value)
    }
}

impl Meta for WriteTransaction {
    fn meta_value(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let meta = self
            .open_table(META)
            .map_err(|e| local_error("cannot read the replica metadata", e))?;
        let value = meta
            .get(key)
            .map_err(|e| local_error("cannot read the replica metadata", e))?
            .map(|v| v.value().to_vec());
        Ok(value)
    }
}

pub(crate) fn read_header(txn: &impl Tables, chat: ChatId) -> Result<Option<RecordHeader>> {
    txn.summary_value(chat)?
        .map(|v| decode_summary(chat, &v).map(|(header, _)| header))
        .transpose()
}

pub(crate) fn read_pending(txn: &impl Tables, chat: ChatId) -> Result<Option<OutboxEntry>> {
    txn.outbox_value(chat)?
        .map(|v| decode_outbox(chat, &v))
        .transpose()
}

pub(crate) fn read_record(
    txn: &impl Tables,
    chat: ChatId,
    with_body: bool,
) -> Result<Option<SealedRecord>> {
    let Some(summary) = txn.summary_value(chat)? else {
        return Ok(None);
    };
    let (header, sealed_summary) = decode_summary(chat, &summary)?;
    let body = if with_body && !header.deleted {
        match txn.body_value(chat)? {
            Some(value) => {
                let (version, sealed) = decode_body(chat, &value)?;
                (version == header.version).then(|| Bytes::copy_from_slice(sealed))
            }
            None => None,
        }
    } else {
        None
    };
    Ok(Some(SealedRecord {
        chat,
        version: header.version,
        deleted: header.deleted,
        summary: Bytes::copy_from_slice(sealed_summary),
        body,
    }))
}

impl ReplicaWrite {
    pub(crate) fn new(mut txn: WriteTransaction, tally: Option<Arc<AtomicU64>>) -> Self {
        txn.set_durability(redb::Durability::Immediate);
        Self {
            txn,
            summaries_changed: false,
            tally,
        }
    }

    /// Commits everything written through this transaction; durable when
    /// this returns `Ok`. On error nothing of it is visible. A transaction
    /// that wrote a summary bumps the sidebar generation as part of it, so
    /// any sidebar snapshot taken before is stale from the same commit on.
    pub fn commit(mut self) -> Result<()> {
        if self.summaries_changed {
            let next = read_generation(&self.txn)?.wrapping_add(1);
            self.set_meta(META_SIDEBAR_GENERATION, &next.to_be_bytes())?;
        }
        self.txn
            .commit()
            .map_err(|e| local_error("cannot commit to the replica", e))?;
        if self.summaries_changed {
            if let Some(tally) = &self.tally {
                tally.fetch_add(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// The sidebar generation as of this transaction (before its own bump,
    /// which happens at commit).
    pub(crate) fn sidebar_generation(&self) -> Result<u64> {
        read_generation(&self.txn)
    }

    /// [`summaries_digest`] of the summaries as of this transaction.
    pub(crate) fn summaries_digest(&self) -> Result<[u8; 32]> {
        let table = self
            .txn
            .open_table(SUMMARIES)
            .map_err(|e| local_error("cannot read the replica summaries", e))?;
        summaries_digest(&table)
    }

    /// Keeps `chunks`, the sealed chunks of the sidebar snapshot
    /// reflecting sidebar generation `generation`, replacing any earlier
    /// snapshot (its extra chunks and a snapshot kept whole by an earlier
    /// release are removed). Does not bump the generation.
    pub(crate) fn set_sidebar_snapshot(
        &mut self,
        generation: u64,
        chunks: impl ExactSizeIterator<Item = Result<Vec<u8>>>,
    ) -> Result<()> {
        let count = u32::try_from(chunks.len())
            .map_err(|_| crate::Error::invalid("too many sidebar snapshot chunks"))?;
        let before = read_meta(&self.txn, META_SIDEBAR_SNAPSHOT)?
            .and_then(|head| head.get(8..12).and_then(|c| c.try_into().ok()))
            .map_or(0, u32::from_be_bytes);
        for (index, sealed) in (0..count).zip(chunks) {
            self.set_meta(&snapshot_chunk_key(index), &sealed?)?;
        }
        for index in count..before {
            self.remove_meta(&snapshot_chunk_key(index))?;
        }
        self.remove_meta(META_SIDEBAR_SNAPSHOT_WHOLE)?;
        let mut head = Vec::with_capacity(12);
        head.extend_from_slice(&generation.to_be_bytes());
        head.extend_from_slice(&count.to_be_bytes());
        self.set_meta(META_SIDEBAR_SNAPSHOT, &head)
    }

    /// The version and tombstone flag stored for `chat`, as of this
    /// transaction.
    pub fn header(&self, chat: ChatId) -> Result<Option<RecordHeader>> {
        read_header(&self.txn, chat)
    }

    /// The stored record of `chat`, as of this transaction.
    pub fn record(&self, chat: ChatId, with_body: bool) -> Result<Option<SealedRecord>> {
        read_record(&self.txn, chat, with_body)
    }

    /// The outbox entry of `chat`, as of this transaction.
    pub fn pending(&self, chat: ChatId) -> Result<Option<OutboxEntry>> {
        read_pending(&self.txn, chat)
    }

    fn store(&mut self, record: &SealedRecord) -> Result<()> {
        self.summaries_changed = true;
        let key = record.chat.as_bytes();
        {
            let mut summaries = self
                .txn
                .open_table(SUMMARIES)
                .map_err(|e| local_error("cannot write the replica summaries", e))?;
            summaries
                .insert(
                    key,
                    encode_summary(record.version, record.deleted, &record.summary).as_slice(),
                )
                .map_err(|e| local_error("cannot write the replica summaries", e))?;
        }
        match &record.body {
            // A stale body would not open (its AAD names an older version):
            // without a new one this device simply no longer holds it.
            None => {
                self.txn
                    .open_table(BODIES)
                    .map_err(|e| local_error("cannot write the replica bodies", e))?
                    .remove(key)
                    .map_err(|e| local_error("cannot write the replica bodies", e))?;
                Ok(())
            }
            Some(body) => self.insert_body(record.chat, record.version, body),
        }
    }

    fn insert_body(&mut self, chat: ChatId, version: u64, body: &[u8]) -> Result<()> {
        self.txn
            .open_table(BODIES)
            .map_err(|e| local_error("cannot write the replica bodies", e))?
            .insert(chat.as_bytes(), encode_body(version, body).as_slice())
            .map_err(|e| local_error("cannot write the replica bodies", e))?;
        Ok(())
    }

    fn set_pending(&mut self, entry: &OutboxEntry) -> Result<()> {
        let mut outbox = self
            .txn
            .open_table(OUTBOX)
            .map_err(|e| local_error("cannot write the outbox", e))?;
        outbox
            .insert(entry.chat.as_bytes(), encode_outbox(entry).as_slice())
            .map_err(|e| local_error("cannot write the outbox", e))?;
        Ok(())
    }

    fn remove_pending(&mut self, chat: ChatId) -> Result<()> {
        let mut outbox = self
            .txn
            .open_table(OUTBOX)
            .map_err(|e| local_error("cannot write the outbox", e))?;
        outbox
            .remove(chat.as_bytes())
            .map_err(|e| local_error("cannot write the outbox", e))?;
        Ok(())
    }

    /// A local change: stores `record` and queues it for push, built on server
    /// version `base`. Replaces any earlier pending entry of the chat, so
    /// pending saves collapse to the latest state.
    pub fn put_local(&mut self, record: &SealedRecord, base: Option<u64>) -> Result<()> {
        self.store(record)?;
        self.set_pending(&OutboxEntry {
            chat: record.chat,
            base,
            version: record.version,
            attempts: 0,
            not_before: 0,
        })
    }

    /// A record as the server holds it: stores it and drops any pending
    /// entry of the chat (the caller has established that the server's
    /// record already covers the local state).
    pub fn put_remote(&mut self, record: &SealedRecord) -> Result<()> {
        self.store(record)?;
        self.remove_pending(record.chat)
    }

    /// Keeps a body fetched on demand, if it belongs to the stored summary's
    /// version. Returns false (and stores nothing) otherwise.
    pub fn put_body(&mut self, chat: ChatId, version: u64, body: &[u8]) -> Result<bool> {
        match self.header(chat)? {
            Some(header) if header.version == version && !header.deleted => {
                self.insert_body(chat, version, body)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The server confirmed version `version` of `chat`. Removes the outbox
    /// entry if it still names that version; if the chat changed locally
    /// meanwhile, the entry stays and is now built on `version`.
    pub fn mark_pushed(&mut self, chat: ChatId, version: u64) -> Result<()> {
        match self.pending(chat)? {
            Some(entry) if entry.version == version => self.remove_pending(chat),
            Some(entry) if entry.base.is_none_or(|base| base < version) => {
                self.set_pending(&OutboxEntry {
                    base: Some(version),
                    attempts: 0,
                    not_before: 0,
                    ..entry
                })
            }
            _ => Ok(()),
        }
    }

    /// The server no longer holds the version `chat`'s pending entry was
    /// built on: push it next with base `base` instead.
    pub fn rebase(&mut self, chat: ChatId, base: Option<u64>) -> Result<()> {
        match self.pending(chat)? {
            Some(entry) => self.set_pending(&OutboxEntry {
                base,
                attempts: 0,
                not_before: 0,
                ..entry
            }),
            None => Ok(()),
        }
    }

    /// A push of `chat` failed: records the attempt and when to retry.
    pub fn reschedule(&mut self, chat: ChatId, attempts: u32, not_before: u64) -> Result<()> {
        match self.pending(chat)? {
            Some(entry) => self.set_pending(&OutboxEntry {
                attempts,
                not_before,
                ..entry
            }),
            None => Ok(()),
        }
    }

    /// The skipped-record entry of `chat`, if any.
    pub fn skipped(&self, chat: ChatId) -> Result<Option<SkippedEntry>> {
        let table = self
            .txn
            .open_table(SKIPPED)
            .map_err(|e| local_error("cannot read the skipped records", e))?;
        let value = table
            .get(chat.as_bytes())
            .map_err(|e| local_error("cannot read the skipped records", e))?
            .map(|v| v.value().to_vec());
        value.map(|v| skipped::decode(chat, &v)).transpose()
    }

    /// Remembers that `entry.chat`'s record did not open.
    pub fn put_skipped(&mut self, entry: &SkippedEntry) -> Result<()> {
        let mut table = self
            .txn
            .open_table(SKIPPED)
            .map_err(|e| local_error("cannot write the skipped records", e))?;
        table
            .insert(entry.chat.as_bytes(), skipped::encode(entry).as_slice())
            .map_err(|e| local_error("cannot write the skipped records", e))?;
        Ok(())
    }

    /// Forgets `chat`'s skipped record if `version` supersedes it (a record
    /// of that version or newer was opened). Returns true if one was removed.
    pub fn resolve_skipped(&mut self, chat: ChatId, version: u64) -> Result<bool> {
        match self.skipped(chat)? {
            Some(entry) if entry.version <= version => {
                let mut table = self
                    .txn
                    .open_table(SKIPPED)
                    .map_err(|e| local_error("cannot write the skipped records", e))?;
                table
                    .remove(chat.as_bytes())
                    .map_err(|e| local_error("cannot write the skipped records", e))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn remove_meta(&mut self, key: &str) -> Result<()> {
        let mut meta = self
            .txn
            .open_table(META)
            .map_err(|e| local_error("cannot write the replica metadata", e))?;
        meta.remove(key)
            .map_err(|e| local_error("cannot write the replica metadata", e))?;
        Ok(())
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let mut meta = self
            .txn
            .open_table(META)
            .map_err(|e| local_error("cannot write the replica metadata", e))?;
        meta.insert(key, value)
            .map_err(|e| local_error("cannot write the replica metadata", e))?;
        Ok(())
    }

    /// Moves the pull cursor: commit it with the records it covers.
    pub fn set_cursor(&mut self, cursor: &Cursor) -> Result<()> {
        self.set_meta(META_CURSOR, cursor.0.as_bytes())
    }

    /// Records which vault and device this replica belongs to.
    pub fn set_identity(&mut self, vault: VaultId, device: DeviceId) -> Result<()> {
        self.set_meta(META_VAULT, vault.as_bytes())?;
        self.set_meta(META_DEVICE, &device.0.to_be_bytes())
    }

    /// Keeps a copy of the vault's (age-encrypted) key file for offline
    /// unlock, and what this device trusts of it ([`KeyTrust`]).
    pub fn set_key_file(&mut self, key_file: &[u8], trust: &KeyTrust) -> Result<()> {
        self.set_meta(META_KEY_FILE, key_file)?;
        self.set_meta(META_KEY_TRUST, &trust.to_bytes())
    }

    /// Records when this device last ran the backend's maintenance.
    pub fn set_maintenance(&mut self, mark: &MaintenanceMark) -> Result<()> {
        self.set_meta(META_MAINTENANCE, &mark.encode())
    }

    /// Keeps `value` under `name` for the application (e.g. the facade's
    /// Supabase session), or removes it with `None`. The replica stores the
    /// bytes as given: the caller seals them with the vault's cipher first,
    /// since everything in the replica must be ciphertext.
    pub fn set_sealed_value(&mut self, name: &str, value: Option<&[u8]>) -> Result<()> {
        let key = format!("{META_SEALED}{name}");
        match value {
            Some(value) => self.set_meta(&key, value),
            None => {
                let mut meta = self
                    .txn
                    .open_table(META)
                    .map_err(|e| local_error("cannot write the replica metadata", e))?;
                meta.remove(key.as_str())
                    .map_err(|e| local_error("cannot write the replica metadata", e))?;
                Ok(())
            }
        }
    }
}
