//! Storage backends written in the target language: the
//! [`StorageBackend`] foreign trait and its adapter to
//! [`chatvault::Storage`].

use crate::error::VaultError;
use async_trait::async_trait;
use bytes::Bytes;
use chatvault::core::{
    BlobId, BlobPage, Capabilities, Change, ChangePage, Cursor, KeyringBlob, Part, PutPrecondition,
    SealedRecord,
};
use chatvault::{ChatId, Error, Result};
use std::fmt;
use std::sync::Arc;

/// What a backend can do (see `chatvault::core::Capabilities`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct StorageCapabilities {
    /// Most ids one `get` and most records one batch should carry.
    pub max_batch: u32,
    /// Largest record (summary + body) or blob accepted, in bytes; larger
    /// ones must fail with `VaultError.TooLarge`.
    pub max_record_bytes: u64,
    /// Two racing `Absent` puts: exactly one commits.
    pub atomic_preconditions: bool,
    /// `changes` fills in each change's `summary`.
    pub inline_summaries: bool,
    /// Several writers commit without a shared commit point (`get` may
    /// return several records of one chat).
    pub concurrent_writers: bool,
    /// The backend stores blobs (`put_blob` and the rest); without it they
    /// raise `VaultError.Unsupported`.
    pub blobs: bool,
}

/// One chat's sealed record as the backend stores it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct StoredRecord {
    /// The chat (a UUID).
    pub chat: String,
    /// Strictly increasing per chat.
    pub version: u64,
    /// True for a tombstone.
    pub deleted: bool,
    /// The sealed summary.
    pub summary: Vec<u8>,
    /// The sealed body (`None` for tombstones, and when only summaries were
    /// asked for).
    pub body: Option<Vec<u8>>,
}

/// What must hold for a put to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Precondition {
    /// Only monotonic versions: the new version exceeds the stored one.
    Unconditional,
    /// No record (live or tombstone) exists.
    Absent,
    /// The stored version is exactly `version`.
    Version {
        /// The expected stored version.
        version: u64,
    },
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FeedChange {
    /// The chat that changed.
    pub chat: String,
    /// Its version after the change.
    pub version: u64,
    /// True if the change deleted the chat.
    pub deleted: bool,
    /// The sealed summary, with `inline_summaries`.
    pub summary: Option<Vec<u8>>,
    /// The writer that committed it, with `concurrent_writers`.
    pub writer: Option<u64>,
}

/// A page of the change feed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FeedPage {
    /// Changes in commit order.
    pub changes: Vec<FeedChange>,
    /// Where the next call continues (opaque to the library).
    pub cursor: String,
    /// True if more changes were committed past this page.
    pub has_more: bool,
    /// What the backend saw but cannot read yet, if anything.
    pub waiting: Option<String>,
}

/// The vault's key file and its version.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct KeyFile {
    /// The key file's bytes.
    pub bytes: Vec<u8>,
    /// Its version.
    pub version: u64,
}

/// A page of stored blob ids.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct BlobListing {
    /// Blob ids (hex) in ascending order.
    pub ids: Vec<String>,
    /// When each was last put, Unix milliseconds (empty: unknown).
    pub touched_ms: Vec<u64>,
    /// True if more ids may follow the last one.
    pub has_more: bool,
}

/// A storage backend implemented in the target language: the contract of
/// `chatvault::Storage` (see its docs and the conformance suite), with
/// ids as text and sealed bytes as byte strings. Methods are called from
/// background threads, possibly several at once; raise `VaultError`
/// variants (`Conflict`, `TooLarge`, `Unavailable`, `Unsupported`, …) for
/// the failures the contract names.
#[uniffi::export(with_foreign)]
pub trait StorageBackend: Send + Sync {
    /// What this backend can do (read once, when the library adopts it).
    fn capabilities(&self) -> StorageCapabilities;
    /// Changes committed after `since` (`""`: the start), in commit order,
    /// at most `limit`.
    fn changes(&self, since: String, limit: u64) -> Result<FeedPage, VaultError>;
    /// The current records of `chats` (ids without a record are left out);
    /// bodies only with `with_body`.
    fn get(&self, chats: Vec<String>, with_body: bool) -> Result<Vec<StoredRecord>, VaultError>;
    /// Commits `record` if `precondition` holds, else raises `Conflict`.
    fn put(&self, record: StoredRecord, precondition: Precondition) -> Result<(), VaultError>;
    /// The key file, if one was stored.
    fn get_keyring(&self) -> Result<Option<KeyFile>, VaultError>;
    /// Stores the key file; returns its new version.
    fn put_keyring(&self, bytes: Vec<u8>, precondition: Precondition) -> Result<u64, VaultError>;
    /// Stores blob `id` (idempotent; touches it).
    fn put_blob(&self, id: String, sealed: Vec<u8>) -> Result<(), VaultError>;
    /// The blob stored under `id`, if any.
    fn get_blob(&self, id: String) -> Result<Option<Vec<u8>>, VaultError>;
    /// Up to `limit` blob ids after `after`, ascending.
    fn list_blobs(&self, after: Option<String>, limit: u64) -> Result<BlobListing, VaultError>;
    /// Removes blob `id` (a missing one is not an error).
    fn delete_blob(&self, id: String) -> Result<(), VaultError>;
}

/// A [`StorageBackend`] as a [`chatvault::Storage`].
pub(crate) struct ForeignStorage {
    backend: Arc<dyn StorageBackend>,
    capabilities: Capabilities,
}

impl fmt::Debug for ForeignStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForeignStorage")
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl ForeignStorage {
    /// Adopts `backend`, reading its capabilities (on a blocking thread).
    pub(crate) async fn adopt(backend: Arc<dyn StorageBackend>) -> Result<Self> {
        let probe = backend.clone();
        let capabilities = match tokio::task::spawn_blocking(move || probe.capabilities()).await {
            Ok(capabilities) => capabilities,
            Err(error) => return Err(callback_failed(error)),
        };
        Ok(Self {
            backend,
            capabilities: Capabilities {
                notifications: false,
                max_batch: capabilities.max_batch.max(1) as usize,
                max_record_bytes: usize::try_from(capabilities.max_record_bytes)
                    .unwrap_or(usize::MAX),
                atomic_preconditions: capabilities.atomic_preconditions,
                inline_summaries: capabilities.inline_summaries,
                concurrent_writers: capabilities.concurrent_writers,
                blobs: capabilities.blobs,
            },
        })
    }

    /// Calls the foreign backend on a blocking thread (it may wait for a
    /// lock such as Python's GIL).
    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn StorageBackend) -> Result<T, VaultError> + Send + 'static,
    {
        let backend = self.backend.clone();
        match tokio::task::spawn_blocking(move || f(&*backend)).await {
            Ok(result) => result.map_err(Error::from),
            Err(error) => Err(callback_failed(error)),
        }
    }
}

fn callback_failed(error: tokio::task::JoinError) -> Error {
    Error::Rejected {
        code: "callback".to_owned(),
        message: format!("the foreign storage backend's call failed: {error}"),
    }
}

fn precondition(precondition: PutPrecondition) -> Precondition {
    match precondition {
        PutPrecondition::None => Precondition::Unconditional,
        PutPrecondition::Absent => Precondition::Absent,
        PutPrecondition::Version(version) => Precondition::Version { version },
    }
}

fn chat_id(text: &str) -> Result<ChatId> {
    text.parse().map_err(|_| {
        Error::corrupt(
            "a storage backend's answer",
            format!("{text:?} is not a chat id"),
        )
    })
}

fn blob_id(text: &str) -> Result<BlobId> {
    text.parse().map_err(|_| {
        Error::corrupt(
            "a storage backend's answer",
            format!("{text:?} is not a blob id"),
        )
    })
}

fn record_out(record: SealedRecord) -> StoredRecord {
    StoredRecord {
        chat: record.chat.to_string(),
        version: record.version,
        deleted: record.deleted,
        summary: record.summary.to_vec(),
        body: record.body.map(|b| b.to_vec()),
    }
}

fn record_in(record: StoredRecord) -> Result<SealedRecord> {
    Ok(SealedRecord {
        chat: chat_id(&record.chat)?,
        version: record.version,
        deleted: record.deleted,
        summary: Bytes::from(record.summary),
        body: record.body.map(Bytes::from),
    })
}

#[async_trait]
impl chatvault::Storage for ForeignStorage {
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        let since = since.0.clone();
        let page = self.call(move |b| b.changes(since, limit as u64)).await?;
        let changes = page
            .changes
            .into_iter()
            .map(|c| {
                Ok(Change {
                    chat: chat_id(&c.chat)?,
                    version: c.version,
                    deleted: c.deleted,
                    summary: c.summary.map(Bytes::from),
                    writer: c.writer,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ChangePage {
            changes,
            cursor: Cursor(page.cursor),
            has_more: page.has_more,
            waiting: page.waiting,
        })
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        let ids: Vec<String> = chats.iter().map(ToString::to_string).collect();
        let with_body = part == Part::Body;
        let records = self.call(move |b| b.get(ids, with_body)).await?;
        records.into_iter().map(record_in).collect()
    }

    async fn put(&self, record: SealedRecord, condition: PutPrecondition) -> Result<()> {
        let record = record_out(record);
        let condition = precondition(condition);
        self.call(move |b| b.put(record, condition)).await
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        let file = self.call(|b| b.get_keyring()).await?;
        Ok(file.map(|f| KeyringBlob {
            bytes: Bytes::from(f.bytes),
            version: f.version,
        }))
    }

    async fn put_keyring(&self, bytes: Bytes, condition: PutPrecondition) -> Result<u64> {
        let bytes = bytes.to_vec();
        let condition = precondition(condition);
        self.call(move |b| b.put_keyring(bytes, condition)).await
    }

    async fn put_blob(&self, id: BlobId, sealed: Bytes) -> Result<()> {
        let id = id.to_string();
        let sealed = sealed.to_vec();
        self.call(move |b| b.put_blob(id, sealed)).await
    }

    async fn get_blob(&self, id: BlobId) -> Result<Option<Bytes>> {
        let id = id.to_string();
        Ok(self.call(move |b| b.get_blob(id)).await?.map(Bytes::from))
    }

    async fn list_blobs(&self, after: Option<BlobId>, limit: usize) -> Result<BlobPage> {
        let after = after.map(|id| id.to_string());
        let page = self
            .call(move |b| b.list_blobs(after, limit as u64))
            .await?;
        Ok(BlobPage {
            ids: page
                .ids
                .iter()
                .map(|id| blob_id(id))
                .collect::<Result<Vec<_>>>()?,
            touched_ms: page.touched_ms,
            has_more: page.has_more,
        })
    }

    async fn delete_blob(&self, id: BlobId) -> Result<()> {
        let id = id.to_string();
        self.call(move |b| b.delete_blob(id)).await
    }
}
