//! The [`Storage`] trait: where sealed records live.
//!
//! A backend stores one vault's records and nothing else; it only ever sees
//! ciphertext plus the metadata in [`SealedRecord`] (ids, versions, sizes).
//! The contract below is what `chatvault-conformance` tests, so a backend
//! that passes the suite works with the sync engine.

use crate::ids::{BlobId, ChatId};
use crate::transport::Transport;
use crate::Result;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A record's two sealed parts: what [`Storage::get`] returns, and the
/// part an [`Aad`](crate::Aad) binds a blob to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Part {
    /// The summary (sidebar: title, last activity, count, star). Asked of
    /// [`Storage::get`]: the summary only.
    Summary,
    /// The body (all messages). Asked of [`Storage::get`]: the summary and
    /// the body.
    Body,
}

/// One chat's record as the server stores it: metadata in the clear, the
/// content sealed by a [`Cipher`](crate::Cipher).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRecord {
    /// The chat this record belongs to.
    pub chat: ChatId,
    /// The record's version; strictly increasing per chat. Bound into the
    /// sealed blobs, so a server cannot replay an older blob as a newer one.
    pub version: u64,
    /// True for a tombstone: the chat was deleted.
    pub deleted: bool,
    /// The sealed summary (for a tombstone: the sealed deletion marker).
    pub summary: Bytes,
    /// The sealed body: `None` when only the summary was asked for, and for
    /// tombstones.
    pub body: Option<Bytes>,
}

impl SealedRecord {
    /// Bytes this record occupies in storage (summary + body).
    pub fn size(&self) -> usize {
        self.summary.len() + self.body.as_ref().map_or(0, Bytes::len)
    }
}

impl fmt::Debug for SealedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedRecord")
            .field("chat", &self.chat)
            .field("version", &self.version)
            .field("deleted", &self.deleted)
            .field("summary_len", &self.summary.len())
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .finish()
    }
}

/// What must be true of the stored record for a put to commit.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PutPrecondition {
    /// No expectation beyond monotonic versions: commits iff the new
    /// version is greater than the stored one (or nothing is stored).
    None,
    /// Commits iff no record (live or tombstone) exists for the chat.
    Absent,
    /// Commits iff the stored version is exactly this one.
    Version(u64),
}

/// An opaque position in a vault's change feed. Backends define its content;
/// callers store it and hand it back. [`Cursor::start`] reads from the
/// beginning.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(pub String);

impl Cursor {
    /// The position before every change.
    pub fn start() -> Self {
        Self(String::new())
    }

    /// True for [`Cursor::start`].
    pub fn is_start(&self) -> bool {
        self.0.is_empty()
    }
}

/// One entry of the change feed.
#[derive(Clone, PartialEq, Eq)]
pub struct Change {
    /// The chat that changed.
    pub chat: ChatId,
    /// Its version after the change.
    pub version: u64,
    /// True if the change deleted the chat.
    pub deleted: bool,
    /// The sealed summary, when the backend returns it inline (saves a
    /// [`Storage::get`] for the sidebar).
    pub summary: Option<Bytes>,
    /// Which writer committed it, on a backend with
    /// [`Capabilities::concurrent_writers`] (`None` elsewhere): one writer's
    /// later change of a chat replaces its earlier ones, another writer's
    /// may be concurrent with them.
    pub writer: Option<u64>,
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change")
            .field("chat", &self.chat)
            .field("version", &self.version)
            .field("deleted", &self.deleted)
            .field("summary_len", &self.summary.as_ref().map(Bytes::len))
            .field("writer", &self.writer)
            .finish()
    }
}

/// A page of the change feed.
#[derive(Clone, Debug)]
pub struct ChangePage {
    /// Changes in commit order.
    pub changes: Vec<Change>,
    /// Where the next call continues. Store it only after the changes are
    /// applied.
    pub cursor: Cursor,
    /// True if more changes were already committed past this page.
    pub has_more: bool,
    /// What the backend saw but cannot read yet, if anything: a file a
    /// file-sync service is still copying, a hole in a log. The feed stops
    /// before it and the next call retries; the engine reports it
    /// ([`SyncStatus::Waiting`](crate::engine::SyncStatus)). `None` for most
    /// backends.
    pub waiting: Option<String>,
}

impl ChangePage {
    /// Checks that a page served for `since` moves the feed forward when it
    /// claims more: one that answers `has_more` with the cursor it was given
    /// would have a reader ask for the same page forever.
    ///
    /// Errors: [`Error::Corrupt`](crate::Error::Corrupt) naming the cursor.
    pub fn check_progress(&self, since: &Cursor) -> Result<()> {
        if self.has_more && self.cursor == *since {
            return Err(crate::Error::corrupt(
                "change feed",
                format!(
                    "a page after cursor {:?} claims more changes but does not advance the cursor \
                     (the server would serve the same page forever)",
                    since.0
                ),
            ));
        }
        Ok(())
    }
}

/// The vault's key file (an age-encrypted keyring) and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyringBlob {
    /// The key file's bytes.
    pub bytes: Bytes,
    /// Its version, for [`Storage::put_keyring`] preconditions.
    pub version: u64,
}

/// What a backend can do; the engine and the conformance suite adapt to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The backend tells when it changed: a [`Transport`] that wakes the
    /// engine ([`Storage::notifications`]), so sync need not wait for a poll.
    pub notifications: bool,
    /// Most ids one [`Storage::get`] and most records one
    /// [`Storage::put_batch`] should carry.
    pub max_batch: usize,
    /// Largest record (summary + body) the backend accepts, in bytes.
    pub max_record_bytes: usize,
    /// Preconditions are atomic under concurrent writers (two racing
    /// `Absent` puts: exactly one commits). A backend that cannot promise
    /// this says so, and the suite reports the concurrency contracts it
    /// skips.
    pub atomic_preconditions: bool,
    /// [`Change::summary`] is filled in by [`Storage::changes`].
    pub inline_summaries: bool,
    /// Several devices commit without a shared commit point (each to its
    /// own log, as in a folder a file-sync service copies), so two of them
    /// may commit versions of one chat that do not know of each other.
    /// [`Storage::get`] then returns each such version (one record per
    /// writer), and the engine merges every record it receives that is not
    /// already part of its state instead of trusting version order.
    pub concurrent_writers: bool,
    /// The backend stores sealed blobs ([`Storage::put_blob`] and the other
    /// blob operations): immutable, content-addressed, each at most
    /// [`max_record_bytes`](Self::max_record_bytes). Without it those
    /// operations fail with [`Error::Unsupported`](crate::Error::Unsupported)
    /// and the conformance suite skips the blob contracts.
    pub blobs: bool,
}

/// A page of [`Storage::list_blobs`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobPage {
    /// Stored blob ids in ascending order, all after the `after` asked for.
    pub ids: Vec<BlobId>,
    /// When each blob of [`ids`](Self::ids) was last put (milliseconds
    /// since the Unix epoch, by the server's clock), one per id; empty if
    /// the backend cannot tell, and then garbage collection deletes none of
    /// its blobs (`docs/design.md` §10.6).
    pub touched_ms: Vec<u64>,
    /// True if more ids may follow the last one: ask again with
    /// `after: ids.last()`.
    pub has_more: bool,
}

/// What [`Storage::maintain`] may do in one call.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceBudget {
    /// Do the work now, ignoring the backend's thresholds (entries since the
    /// last compaction, time since the last run).
    pub force: bool,
}

/// What one [`Storage::maintain`] call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// True if the backend did any work (false: below its thresholds, or
    /// nothing to do).
    pub ran: bool,
    /// Change-log entries removed (folded into a snapshot).
    pub removed_entries: u64,
    /// Other objects or rows removed (superseded blobs, old snapshots).
    pub removed_objects: u64,
    /// Requests the maintenance sent to the server.
    pub requests: u64,
}

/// Where a vault's sealed records live.
///
/// # Contract
///
/// A `Storage` holds the records of exactly one vault (one user). All data it
/// receives is already sealed; it never needs a key.
///
/// - **`put(record, precondition)`** commits the record atomically or not at
///   all. Versions per chat strictly increase: a put whose version is not
///   greater than the stored one fails with [`Error::Conflict`] carrying the
///   stored version, whatever the precondition. [`PutPrecondition::Absent`]
///   fails with `Conflict` if any record or tombstone exists;
///   [`PutPrecondition::Version`]`(v)` fails with `Conflict` unless the stored
///   version is `v`. A conflict never overwrites. Records over
///   [`Capabilities::max_record_bytes`] fail with [`Error::TooLarge`].
/// - A tombstone (`deleted: true`, no body; [`StorageExt::delete`] writes
///   one) is put like any record and reported by `changes` and `get` like
///   any record.
/// - **`changes(since, limit)`** returns the changes committed after `since`
///   in commit order, at most `limit` of them, and a cursor to continue from.
///   It never skips a committed change, even while other writers commit
///   concurrently, and never reports the same commit twice across pages. A
///   call with nothing new costs one small request, independent of how many
///   chats exist. A page may hold several changes of one chat; the last wins.
/// - **`get(ids, part)`** returns the current record of each id that exists
///   (tombstones included), in any order; ids without a record are left out.
///   With [`Part::Summary`] bodies are `None`. A backend with
///   [`Capabilities::concurrent_writers`] may return several records of one
///   chat: each writer's current version, concurrent with the others.
///   Version order does not say which holds what there; the reader merges
///   them all.
/// - **`get_keyring` / `put_keyring`** store the vault's key file with the
///   same precondition rules (`Version` compares the keyring version).
/// - **Blobs** (only with [`Capabilities::blobs`]; the defaults fail with
///   [`Error::Unsupported`]): immutable sealed blobs named by a
///   content-derived [`BlobId`]. `put_blob` is idempotent: putting an id
///   that is already stored succeeds and leaves either sealing stored (two
///   sealings of one plaintext differ, since each draws a fresh nonce, and
///   either opens to the same plaintext); every put, new or not, **touches**
///   the blob: its touched time becomes the time of the put, which
///   `list_blobs` reports in [`BlobPage::touched_ms`] (garbage collection
///   deletes only blobs untouched for its grace period). A blob over [`Capabilities::max_record_bytes`] fails with
///   [`Error::TooLarge`]. `get_blob` of a missing id is `Ok(None)`.
///   `list_blobs(after, limit)` pages through the stored ids in ascending
///   order, at most `limit` (at least 1) per page, never skipping or
///   repeating a blob stored before the listing started. `missing_blobs`
///   names, of the ids asked for, exactly those not stored. `delete_blob`
///   removes a blob (garbage collection only); deleting a missing id
///   succeeds.
/// - Errors are typed: [`Error::Unavailable`] for anything retriable,
///   [`Error::Unauthorized`], [`Error::Conflict`], [`Error::TooLarge`],
///   [`Error::Rejected`], [`Error::Corrupt`] for data the backend itself
///   cannot decode.
///
/// [`Error::Conflict`]: crate::Error::Conflict
/// [`Error::TooLarge`]: crate::Error::TooLarge
/// [`Error::Unavailable`]: crate::Error::Unavailable
/// [`Error::Unauthorized`]: crate::Error::Unauthorized
/// [`Error::Rejected`]: crate::Error::Rejected
/// [`Error::Corrupt`]: crate::Error::Corrupt
/// [`Error::Unsupported`]: crate::Error::Unsupported
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Changes committed after `since`, in commit order, at most `limit`.
    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage>;

    /// The current records of `chats` (missing ids are left out).
    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>>;

    /// Commits `record` if `precondition` holds.
    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()>;

    /// Commits several records, each with its own precondition, returning one
    /// result per record in order. The default calls [`Storage::put`] for
    /// each; backends with a batch request override it.
    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let mut results = Vec::with_capacity(batch.len());
        for (record, precondition) in batch {
            results.push(self.put(record, precondition).await);
        }
        results
    }

    /// The vault's key file, if one was stored.
    async fn get_keyring(&self) -> Result<Option<KeyringBlob>>;

    /// Stores the vault's key file; returns the new keyring version.
    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64>;

    /// Stores the sealed blob `sealed` under `id`; if a blob with that id is
    /// stored, either sealing may stay, and either way the blob's touched
    /// time becomes now (see [`BlobPage::touched_ms`]). The default fails with [`Error::Unsupported`](crate::Error::Unsupported).
    async fn put_blob(&self, id: BlobId, sealed: Bytes) -> Result<()> {
        let _ = (id, sealed);
        Err(crate::Error::unsupported("storing blobs (put_blob)"))
    }

    /// The sealed blob stored under `id`, `None` if there is none. The
    /// default fails with [`Error::Unsupported`](crate::Error::Unsupported).
    async fn get_blob(&self, id: BlobId) -> Result<Option<Bytes>> {
        let _ = id;
        Err(crate::Error::unsupported("reading blobs (get_blob)"))
    }

    /// Up to `limit` stored blob ids after `after` (from the first with
    /// `None`), ascending. The default fails with
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    async fn list_blobs(&self, after: Option<BlobId>, limit: usize) -> Result<BlobPage> {
        let _ = (after, limit);
        Err(crate::Error::unsupported("listing blobs (list_blobs)"))
    }

    /// Of `ids`, those the backend does not store, in any order: how a
    /// device checks, after pushing a record, that no collector deleted a
    /// blob the record names (`docs/design.md` §10.6). The default asks
    /// [`get_blob`](Self::get_blob) for each id (correct, but it downloads
    /// every blob): a backend should answer from metadata.
    async fn missing_blobs(&self, ids: &[BlobId]) -> Result<Vec<BlobId>> {
        let mut missing = Vec::new();
        for id in ids {
            if self.get_blob(*id).await?.is_none() {
                missing.push(*id);
            }
        }
        Ok(missing)
    }

    /// Removes the blob `id`, for garbage collection only; a missing id is
    /// not an error. The default fails with
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    async fn delete_blob(&self, id: BlobId) -> Result<()> {
        let _ = id;
        Err(crate::Error::unsupported("deleting blobs (delete_blob)"))
    }

    /// Housekeeping the backend wants run now and then, such as compacting
    /// its change log so idle polls and new devices stay cheap however long
    /// the history. The engine calls it off the application's path after
    /// sync rounds (see `EngineConfig::maintenance_every`); the backend
    /// decides from its own thresholds whether there is work, unless
    /// `budget.force` is set. It must be safe while other devices read,
    /// write and maintain the same vault. The default does nothing.
    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        let _ = budget;
        Ok(MaintenanceReport::default())
    }

    /// A notification transport that wakes the engine when this backend changes, if
    /// the backend has one ([`Capabilities::notifications`]).
    fn notifications(&self) -> Option<Arc<dyn Transport>> {
        None
    }
}

/// A shared, type-erased storage.
pub type DynStorage = Arc<dyn Storage>;

/// Conveniences written once over every [`Storage`] (as `object_store`
/// keeps its own in `ObjectStoreExt`), so that no backend or layer
/// re-implements, or forgets to forward, them. In scope with
/// `use chatvault_core::StorageExt;`.
#[async_trait]
pub trait StorageExt: Storage {
    /// Leaves a tombstone for `chat` at `version`: a [`Storage::put`] of a
    /// record with `deleted: true`, the sealed deletion marker `summary`,
    /// and no body. Its contract is `put`'s.
    async fn delete(
        &self,
        chat: ChatId,
        version: u64,
        summary: Bytes,
        precondition: PutPrecondition,
    ) -> Result<()> {
        let tombstone = SealedRecord {
            chat,
            version,
            deleted: true,
            summary,
            body: None,
        };
        self.put(tombstone, precondition).await
    }
}

impl<T: Storage + ?Sized> StorageExt for T {}
