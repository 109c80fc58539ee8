//! A complete chatvault backend in one file: [`RedbStorage`] keeps a vault
//! in a [redb](https://docs.rs/redb) database file, using nothing but the
//! public [`Storage`] trait. The conformance suite holds it to the same
//! contract as the shipped backends (`cargo test -p chatvault-conformance
//! --test custom_backend`).
//!
//! How it meets the contract:
//!
//! - **Commit order is the feed.** Every put runs in one redb write
//!   transaction, and redb lets one write transaction run at a time. The
//!   transaction takes the next number from a per-vault counter, writes the
//!   record and appends `(number → change)` to a feed table, then commits.
//!   Numbers therefore become visible in order, and a reader that pages
//!   `number > cursor` in a read transaction (a consistent snapshot) can
//!   never skip one.
//! - **Preconditions decide in the same transaction** that writes, so two
//!   racing `Absent` puts cannot both commit.
//! - **An idle poll is one read transaction** over an index, whatever the
//!   number of chats.
//! - **Damaged data is typed**: each stored record carries its lengths; one
//!   that does not decode is `Error::Corrupt`, and the others still serve.
//!
//! Run it: `cargo run -p chatvault-conformance --example custom_backend`.

use async_trait::async_trait;
use bytes::Bytes;
use chatvault_core::{
    Capabilities, Change, ChangePage, ChatId, Cursor, Error, KeyringBlob, Part, PutPrecondition,
    Result, SealedRecord, Storage,
};
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Current record per chat: chat id → encoded record.
pub const RECORDS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("records");
/// The change feed: commit number → encoded change (chat, version,
/// deleted, summary).
const FEED: TableDefinition<u64, &[u8]> = TableDefinition::new("feed");
/// Counters and the keyring: name → bytes.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const LAST_COMMIT: &str = "last_commit";
const KEYRING: &str = "keyring";
const MAX_RECORD_BYTES: usize = 16 << 20;
const FORMAT: u8 = 1;

/// A chatvault vault stored in one redb database file.
///
/// Clone-free sharing: several `RedbStorage` clients may wrap the same
/// `Arc<Database>` (redb opens a file once per process), each behaving
/// like a separate device.
#[derive(Debug, Clone)]
pub struct RedbStorage {
    db: Arc<Database>,
    transactions: Arc<AtomicU64>,
}

fn local(message: &str, error: impl Into<chatvault_core::BoxError>) -> Error {
    Error::local(message, error)
}

impl RedbStorage {
    /// Opens (creating if needed) the vault database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let db = Database::create(path).map_err(|e| local("cannot open the vault database", e))?;
        Self::new(Arc::new(db))
    }

    /// A new client over an already open database.
    pub fn new(db: Arc<Database>) -> Result<Self> {
        let storage = Self {
            db,
            transactions: Arc::new(AtomicU64::new(0)),
        };
        // Create the tables once so that read transactions can open them.
        let tx = storage.write()?;
        tx.open_table(RECORDS)
            .map_err(|e| local("records table", e))?;
        tx.open_table(FEED).map_err(|e| local("feed table", e))?;
        tx.open_table(META).map_err(|e| local("meta table", e))?;
        tx.commit().map_err(|e| local("commit", e))?;
        storage.transactions.store(0, Ordering::SeqCst);
        Ok(storage)
    }

    /// Database transactions this client has opened: its "requests".
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::SeqCst)
    }

    fn write(&self) -> Result<redb::WriteTransaction> {
        self.transactions.fetch_add(1, Ordering::SeqCst);
        self.db
            .begin_write()
            .map_err(|e| local("cannot begin a write transaction", e))
    }

    fn read(&self) -> Result<redb::ReadTransaction> {
        self.transactions.fetch_add(1, Ordering::SeqCst);
        self.db
            .begin_read()
            .map_err(|e| local("cannot begin a read transaction", e))
    }

    /// Runs blocking database work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(RedbStorage) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || work(this))
            .await
            .map_err(|e| local("database task failed", e))?
    }

    /// Checks and writes one record inside `tx`; the caller commits.
    fn put_in(
        tx: &redb::WriteTransaction,
        record: &SealedRecord,
        precondition: PutPrecondition,
    ) -> Result<()> {
        if record.size() > MAX_RECORD_BYTES {
            return Err(Error::TooLarge {
                size: record.size(),
                limit: MAX_RECORD_BYTES,
            });
        }
        let mut records = tx
            .open_table(RECORDS)
            .map_err(|e| local("records table", e))?;
        let key = record.chat.as_bytes();
        let current = match records.get(key).map_err(|e| local("read record", e))? {
            Some(value) => Some(decode_record(record.chat, value.value(), Part::Summary)?.version),
            None => None,
        };
        let holds = match precondition {
            PutPrecondition::None => true,
            PutPrecondition::Absent => current.is_none(),
            PutPrecondition::Version(v) => current == Some(v),
        };
        if !holds || current.is_some_and(|stored| record.version <= stored) {
            return Err(Error::Conflict {
                chat: record.chat,
                current,
            });
        }
        records
            .insert(key, encode_record(record).as_slice())
            .map_err(|e| local("write record", e))?;
        let mut meta = tx.open_table(META).map_err(|e| local("meta table", e))?;
        let last = match meta
            .get(LAST_COMMIT)
            .map_err(|e| local("read counter", e))?
        {
            Some(value) => read_u64(value.value(), 0)
                .ok_or_else(|| Error::corrupt("commit counter", "not 8 bytes"))?,
            None => 0,
        };
        let next = last + 1;
        meta.insert(LAST_COMMIT, next.to_be_bytes().as_slice())
            .map_err(|e| local("write counter", e))?;
        let mut feed = tx.open_table(FEED).map_err(|e| local("feed table", e))?;
        feed.insert(next, encode_change(record).as_slice())
            .map_err(|e| local("append change", e))?;
        Ok(())
    }
}

#[async_trait]
impl Storage for RedbStorage {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            notifications: false,
            max_batch: 1000,
            max_record_bytes: MAX_RECORD_BYTES,
            atomic_preconditions: true,
            inline_summaries: true,
            concurrent_writers: false,
            // No blob storage: records sync, attachments report
            // `Error::Unsupported` (and the suite skips the blob contracts).
            blobs: false,
        }
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        let after: u64 = if since.is_start() {
            0
        } else {
            since.0.parse().map_err(|_| {
                Error::invalid(format!("not a cursor of this backend: {:?}", since.0))
            })?
        };
        self.blocking(move |this| {
            let tx = this.read()?;
            let feed = tx.open_table(FEED).map_err(|e| local("feed table", e))?;
            let mut changes = Vec::new();
            let mut cursor = after;
            let mut has_more = false;
            for entry in feed.range(after + 1..).map_err(|e| local("read feed", e))? {
                let (number, value) = entry.map_err(|e| local("read feed", e))?;
                if changes.len() == limit {
                    has_more = true;
                    break;
                }
                cursor = number.value();
                changes.push(decode_change(number.value(), value.value())?);
            }
            Ok(ChangePage {
                changes,
                cursor: Cursor(cursor.to_string()),
                has_more,
                waiting: None,
            })
        })
        .await
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        let chats = chats.to_vec();
        self.blocking(move |this| {
            let tx = this.read()?;
            let records = tx
                .open_table(RECORDS)
                .map_err(|e| local("records table", e))?;
            let mut found = Vec::with_capacity(chats.len());
            for chat in chats {
                if let Some(value) = records
                    .get(chat.as_bytes())
                    .map_err(|e| local("read record", e))?
                {
                    found.push(decode_record(chat, value.value(), part)?);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        self.blocking(move |this| {
            let tx = this.write()?;
            Self::put_in(&tx, &record, precondition)?;
            tx.commit().map_err(|e| local("commit", e))
        })
        .await
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let len = batch.len();
        let outcome = self
            .blocking(move |this| {
                // One transaction for the whole batch. An entry whose
                // precondition fails writes nothing (checks come before
                // writes), so only it is refused; a database error aborts
                // the whole transaction.
                let tx = this.write()?;
                let mut results = Vec::with_capacity(batch.len());
                for (record, precondition) in &batch {
                    match Self::put_in(&tx, record, *precondition) {
                        Err(error @ Error::Local { .. }) => return Err(error),
                        result => results.push(result),
                    }
                }
                tx.commit().map_err(|e| local("commit", e))?;
                Ok(results)
            })
            .await;
        match outcome {
            Ok(results) => results,
            Err(error) => {
                let message = error.to_string();
                (0..len)
                    .map(|_| {
                        Err(Error::Local {
                            message: message.clone(),
                            source: None,
                        })
                    })
                    .collect()
            }
        }
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        self.blocking(|this| {
            let tx = this.read()?;
            let meta = tx.open_table(META).map_err(|e| local("meta table", e))?;
            let Some(value) = meta.get(KEYRING).map_err(|e| local("read keyring", e))? else {
                return Ok(None);
            };
            let bytes = value.value();
            let version = read_u64(bytes, 0)
                .ok_or_else(|| Error::corrupt("keyring", "shorter than its header"))?;
            Ok(Some(KeyringBlob {
                bytes: Bytes::copy_from_slice(&bytes[8..]),
                version,
            }))
        })
        .await
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        self.blocking(move |this| {
            let tx = this.write()?;
            let version = {
                let mut meta = tx.open_table(META).map_err(|e| local("meta table", e))?;
                let current = match meta.get(KEYRING).map_err(|e| local("read keyring", e))? {
                    Some(value) => Some(
                        read_u64(value.value(), 0)
                            .ok_or_else(|| Error::corrupt("keyring", "shorter than its header"))?,
                    ),
                    None => None,
                };
                let holds = match precondition {
                    PutPrecondition::None => true,
                    PutPrecondition::Absent => current.is_none(),
                    PutPrecondition::Version(v) => current == Some(v),
                };
                if !holds {
                    return Err(Error::Conflict {
                        chat: ChatId::from_bytes([0; 16]),
                        current,
                    });
                }
                let version = current.unwrap_or(0) + 1;
                let mut value = version.to_be_bytes().to_vec();
                value.extend_from_slice(&bytes);
                meta.insert(KEYRING, value.as_slice())
                    .map_err(|e| local("write keyring", e))?;
                version
            };
            tx.commit().map_err(|e| local("commit", e))?;
            Ok(version)
        })
        .await
    }
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let slice = bytes.get(at..at + 8)?;
    Some(u64::from_be_bytes(slice.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let slice = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes(slice.try_into().ok()?) as usize)
}

fn push_blob(out: &mut Vec<u8>, blob: &[u8]) {
    out.extend_from_slice(&(blob.len() as u32).to_be_bytes());
    out.extend_from_slice(blob);
}

/// `[format][version u64][deleted][summary len u32][summary][has body][body len u32][body]`
fn encode_record(record: &SealedRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.size() + 32);
    out.push(FORMAT);
    out.extend_from_slice(&record.version.to_be_bytes());
    out.push(u8::from(record.deleted));
    push_blob(&mut out, &record.summary);
    match &record.body {
        Some(body) => {
            out.push(1);
            push_blob(&mut out, body);
        }
        None => out.push(0),
    }
    out
}

fn decode_record(chat: ChatId, bytes: &[u8], part: Part) -> Result<SealedRecord> {
    let corrupt = |reason: &str| Error::corrupt(format!("record of chat {chat}"), reason);
    if bytes.first() != Some(&FORMAT) {
        return Err(corrupt("unknown format byte"));
    }
    let version = read_u64(bytes, 1).ok_or_else(|| corrupt("truncated version"))?;
    let deleted = match bytes.get(9) {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(corrupt("bad deleted flag")),
    };
    let summary_len = read_u32(bytes, 10).ok_or_else(|| corrupt("truncated summary length"))?;
    let summary = bytes
        .get(14..14 + summary_len)
        .ok_or_else(|| corrupt("truncated summary"))?;
    let at = 14 + summary_len;
    let body = match bytes.get(at) {
        Some(0) if bytes.len() == at + 1 => None,
        Some(1) => {
            let len = read_u32(bytes, at + 1).ok_or_else(|| corrupt("truncated body length"))?;
            if bytes.len() != at + 5 + len {
                return Err(corrupt("body length does not match the stored bytes"));
            }
            Some(Bytes::copy_from_slice(&bytes[at + 5..]))
        }
        _ => return Err(corrupt("bad body marker or trailing bytes")),
    };
    Ok(SealedRecord {
        chat,
        version,
        deleted,
        summary: Bytes::copy_from_slice(summary),
        body: if part == Part::Body { body } else { None },
    })
}

/// `[chat 16][version u64][deleted][summary]`
fn encode_change(record: &SealedRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(25 + record.summary.len());
    out.extend_from_slice(record.chat.as_bytes());
    out.extend_from_slice(&record.version.to_be_bytes());
    out.push(u8::from(record.deleted));
    out.extend_from_slice(&record.summary);
    out
}

fn decode_change(number: u64, bytes: &[u8]) -> Result<Change> {
    let corrupt = || Error::corrupt(format!("feed entry {number}"), "shorter than its header");
    let chat: [u8; 16] = bytes
        .get(..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    Ok(Change {
        chat: ChatId::from_bytes(chat),
        version: read_u64(bytes, 16).ok_or_else(corrupt)?,
        deleted: *bytes.get(24).ok_or_else(corrupt)? == 1,
        summary: Some(Bytes::copy_from_slice(&bytes[25..])),
        writer: None,
    })
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| local("temp dir", e))?;
    let laptop = RedbStorage::open(dir.path().join("vault.redb"))?;
    let phone = RedbStorage::new(laptop.db.clone())?;

    let chat = ChatId::new();
    let record = SealedRecord {
        chat,
        version: 1,
        deleted: false,
        summary: Bytes::from_static(b"sealed summary"),
        body: Some(Bytes::from_static(b"sealed body")),
    };
    laptop.put(record, PutPrecondition::Absent).await?;

    // The phone learns about the chat from the feed, in one transaction.
    let page = phone.changes(&Cursor::start(), 100).await?;
    println!("phone sees {:?} (cursor {:?})", page.changes, page.cursor);

    // A stale write loses with a typed conflict instead of overwriting.
    let stale = SealedRecord {
        chat,
        version: 2,
        deleted: false,
        summary: Bytes::from_static(b"stale"),
        body: None,
    };
    let conflict = phone.put(stale, PutPrecondition::Absent).await;
    println!("second create: {conflict:?}");
    Ok(())
}
