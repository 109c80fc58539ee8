//! chatvault's record layout over any [`object_store::ObjectStore`]: a local
//! folder, S3 or anything S3-compatible, in-memory for tests. The `fs` and
//! `s3` backends are this crate plus a store.
//!
//! [`ObjectStoreStorage`] needs only atomic whole-object puts, create-if-absent
//! (`PutMode::Create`), ranged GET, LIST with an offset, and DELETE. It never
//! overwrites an object that readers rely on, so stores without If-Match
//! updates (local files) work.
//!
//! # Layout, commit point, validity
//!
//! The formats, the log-slot commit protocol, compaction and the crash
//! analysis of each request are in the repository's `docs/design.md` §5;
//! what the store must guarantee is in §1. In short:
//!
//! ```text
//! rec/<chat>/<version>-<write id>   immutable blob: sealed summary + sealed body
//! log/<seq, 20 digits>              change log; slot N+1 is written after N exists
//! snap/<seq, 20 digits>             compaction snapshot: every chat at slot seq
//! keyring/<version, 20 digits>      the vault's key file, one object per version
//! ```
//!
//! A put writes its blobs, then creates the next free log slot with
//! `PutMode::Create`: that create is the single commit point. Preconditions
//! are decided by replaying the log, so every reader agrees on which items
//! count; a losing item fails with
//! [`Error::Conflict`](chatvault_core::Error::Conflict) carrying the current
//! version. A reader that sees a hole in the log stops before it and
//! resumes at the next poll.
//!
//! # Per device
//!
//! [`DeviceLogStorage`] is the layout for folders a file-sync service
//! copies between devices (`docs/design.md` §5.4): one such shared-log vault
//! per device under `dev/<vault>.<writer>/`, written only by its device and
//! read by all; the feed merges them, `get` returns each device's current
//! record (concurrent versions are merged by the engine), and
//! [`DeviceLogStorage::migrate_from_shared_log`] moves a shared-log vault
//! into it.
//!
//! # One type for either layout
//!
//! [`ObjectStoreVault`] holds a vault in either [`VaultLayout`] and an
//! optional push transport ([`PushSource`]): the `fs` and `s3` builders
//! configure one and return it.
//!
//! # Costs
//!
//! - **Idle poll** (`changes` at the head): one LIST after the cursor,
//!   whatever the number of chats.
//! - **k changes**: the LIST, then the new entries fetched concurrently (their
//!   inline summaries fill [`Change::summary`](chatvault_core::Change::summary)).
//!   A feed page reads only about as many entries as it reports changes from
//!   (one entry of a batch put carries up to `max_batch` records).
//! - **`get`**: one request for commits newer than the handle's index (a
//!   HEAD of the next log slot; a LIST and the new entries when that slot
//!   exists or the handle has not seen the head of the log for
//!   [`ObjectStoreOptions::with_max_claim_delay`]) and, concurrently, one GET
//!   per record blob it needs: none for
//!   [`Part::Summary`] when the summaries
//!   were inlined (the index keeps them), a ranged GET per chat otherwise,
//!   a whole-blob GET per chat for [`Part::Full`].
//! - **Put**: two requests when this handle saw the head of the log within
//!   the claim delay (blob PUT, slot create), else a LIST first; losing a
//!   race adds a LIST and the GETs of the entries it missed.
//! - **First use of a handle**: the index (each chat's current version and
//!   inline summary, about 100 bytes per chat plus the summary) is rebuilt from the latest snapshot plus the log
//!   after it: one LIST of `snap/`, one GET, one LIST of `log/` and one GET per
//!   entry after the snapshot. [`Storage::maintain`] keeps that tail short.
//!
//! # Compaction
//!
//! [`Storage::maintain`] compacts by itself when [`MaintenancePolicy`] says
//! it is due (the engine calls it after sync rounds);
//! [`ObjectStoreStorage::compact`] does it on demand. Either writes
//! `snap/<head>` and deletes what it covers, only objects older than
//! [`CompactOptions::with_min_age`], which must exceed
//! [`ObjectStoreOptions::with_max_claim_delay`] (checked). A reader whose
//! cursor points into the deleted part of the log resyncs from the
//! snapshot; nothing is lost. See `docs/design.md` §5.2.
//!
//! # Damaged and foreign objects
//!
//! - A log entry that cannot be decoded counts, for every reader alike, as a
//!   slot with no valid record: it is skipped with a `tracing` warning and the
//!   rest of the feed still syncs.
//! - A record blob that is missing, truncated or garbled fails
//!   [`get`](chatvault_core::Storage::get) with
//!   [`Error::Corrupt`](chatvault_core::Error::Corrupt) whose `what` is
//!   `"chat <uuid> …"` when the call reads it: always for `Part::Full`, for
//!   `Part::Summary` only if the summary was too large to inline (an inline
//!   summary is served from the log entry, which is the commit); the call
//!   fails as a whole, so a caller fetching a batch
//!   retries the other ids without that one (or one by one) to keep the rest
//!   syncing.
//! - An object written by a newer chatvault (a newer format byte) fails with
//!   [`Error::UnsupportedFormat`](chatvault_core::Error::UnsupportedFormat):
//!   replaying past it could make this reader disagree with newer ones.
//! - Objects whose names do not fit the layout (a stray `log/notes.txt`,
//!   Syncthing's `.syncthing.*.tmp`, `*.sync-conflict-*` copies) are ignored
//!   with a warning, once per name and process.
//!
//! # Example
//!
//! ```
//! use chatvault_core::{ChatId, Cursor, Part, PutPrecondition, SealedRecord, Storage};
//! use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
//! use object_store::{memory::InMemory, path::Path};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> chatvault_core::Result<()> {
//! let store = Arc::new(InMemory::new());
//! let vault = ObjectStoreStorage::new(store, Path::from("users/alice"), ObjectStoreOptions::default());
//! let chat = ChatId::new();
//! let record = SealedRecord { chat, version: 1, deleted: false, summary: "s".into(), body: Some("b".into()) };
//! vault.put(record.clone(), PutPrecondition::Absent).await?;
//!
//! let page = vault.changes(&Cursor::start(), 100).await?;
//! assert_eq!(page.changes[0].chat, chat);
//! assert_eq!(vault.get(&[chat], Part::Full).await?, vec![record]);
//! // Nothing new: one LIST request.
//! assert!(vault.changes(&page.cursor, 100).await?.changes.is_empty());
//! # Ok(())
//! # }
//! ```

mod compaction;
mod counted;
mod devices;
mod entry;
mod error;
mod feed;
#[cfg(test)]
mod fuzz;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hooked;
mod index;
mod keyring;
mod layout;
mod log;
mod maintenance;
mod migrate;
mod read;
mod records;
mod snapshot;
mod vault;

pub use compaction::{CompactOptions, CompactReport};
pub use devices::{DeviceLogStorage, WriterId, DEVICES_DIR};
pub use hooked::{HookedStore, StoreHook, StoreOp};
pub use maintenance::MaintenancePolicy;
pub use migrate::{
    is_marker, key_file_marker, log_marker, MigrationReport, MARKER_FORMAT, MIGRATED_VAULT,
};
pub use vault::{ObjectStoreVault, PushSource, VaultLayout};

use crate::index::Index;
use crate::layout::{ForeignFiles, Layout};
use crate::snapshot::Snapshot;
use async_trait::async_trait;
use bytes::Bytes;
use chatvault_core::{
    Capabilities, ChangePage, ChatId, Cursor, KeyringBlob, MaintenanceBudget, MaintenanceReport,
    Part, PutPrecondition, Result, SealedRecord, Storage,
};
use object_store::path::Path;
use object_store::ObjectStore;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Tuning and capabilities of an [`ObjectStoreStorage`].
///
/// ```
/// use chatvault_object_store::ObjectStoreOptions;
/// let options = ObjectStoreOptions::default()
///     .with_max_record_bytes(4 << 20)
///     .with_atomic_create(true);
/// assert_eq!(options.max_record_bytes(), 4 << 20);
/// ```
#[derive(Clone, Debug)]
pub struct ObjectStoreOptions {
    atomic_create: bool,
    max_record_bytes: usize,
    max_batch: usize,
    max_inline_summary: usize,
    concurrency: usize,
    max_claim_delay: Duration,
    maintenance: MaintenancePolicy,
    copied: bool,
}

impl Default for ObjectStoreOptions {
    fn default() -> Self {
        Self {
            atomic_create: true,
            max_record_bytes: 16 << 20,
            max_batch: 100,
            max_inline_summary: 64 << 10,
            concurrency: 32,
            max_claim_delay: Duration::from_secs(300),
            maintenance: MaintenancePolicy::default(),
            copied: false,
        }
    }
}

impl ObjectStoreOptions {
    /// Whether the store's `PutMode::Create` is atomic (exactly one of two
    /// racing creates succeeds): true for `LocalFileSystem`, `InMemory` and
    /// S3 with conditional writes. Reported as
    /// [`Capabilities::atomic_preconditions`]. Default `true`.
    pub fn with_atomic_create(mut self, atomic: bool) -> Self {
        self.atomic_create = atomic;
        self
    }

    /// Largest record (sealed summary + body) a put accepts; larger ones fail
    /// with `Error::TooLarge`. Default 16 MiB.
    pub fn with_max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Most records one log entry (one `put_batch` commit) carries, and the
    /// batch size advertised to the engine. Default 100, at most 10,000
    /// (the format's limit).
    pub fn with_max_batch(mut self, records: usize) -> Self {
        self.max_batch = records.clamp(1, entry::MAX_ENTRY_ITEMS);
        self
    }

    /// Sealed summaries up to this size are copied into the log entry, so
    /// the change feed carries them. Larger ones are only in the blob and
    /// their [`Change::summary`](chatvault_core::Change::summary) is `None`.
    /// Readers keep inline summaries in memory and serve `get(ids,
    /// Part::Summary)` from them without reading blobs. This is a writer
    /// setting: it decides what the entries this handle writes carry.
    /// Default 64 KiB, at most 1 MiB; an entry whose inline summaries would
    /// exceed the format's 16 MiB limit carries the later ones in blobs only.
    pub fn with_max_inline_summary(mut self, bytes: usize) -> Self {
        self.max_inline_summary = bytes;
        self
    }

    /// Requests in flight at once when fetching entries and blobs. Default 32.
    pub fn with_concurrency(mut self, requests: usize) -> Self {
        self.concurrency = requests.max(1);
        self
    }

    /// A put whose first blob upload started longer ago than this gives up
    /// (with a retriable error) instead of claiming a slot, and its slot
    /// create is cut at that deadline, so that compaction, which deletes
    /// unreferenced blobs older than its horizon, never deletes the blob of
    /// a put that is about to commit. It also bounds how long a handle
    /// trusts that its index is at the head of the log: after this long
    /// without seeing the head, it lists the log before a read or a put.
    /// [`CompactOptions::with_min_age`] must exceed it (compaction refuses
    /// otherwise); every handle of a vault should use the same value.
    /// Default 5 minutes. See `docs/design.md` §5.2.
    pub fn with_max_claim_delay(mut self, delay: Duration) -> Self {
        self.max_claim_delay = delay;
        self
    }

    /// When [`Storage::maintain`] compacts the vault. Default
    /// [`MaintenancePolicy::default`].
    pub fn with_maintenance(mut self, policy: MaintenancePolicy) -> Self {
        self.maintenance = policy;
        self
    }

    /// Objects reach this store through a copier that may deliver a file
    /// before all of its bytes (a file-sync service writing into a folder):
    /// a log entry that does not decode is then treated as one still on its
    /// way, and the replay stops before it until it decodes, instead of
    /// counting as a slot with no valid record. Only for logs that a single
    /// writer creates atomically elsewhere (the per-device logs of
    /// [`DeviceLogStorage`]), where a torn entry cannot be final. Default
    /// `false`.
    pub fn with_copied(mut self, copied: bool) -> Self {
        self.copied = copied;
        self
    }

    /// See [`ObjectStoreOptions::with_max_record_bytes`].
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }
}

/// What one handle knows about the log, shared by its tasks.
struct State {
    /// False until the index was rebuilt from the store once.
    loaded: bool,
    index: Index,
    /// The snapshot a resyncing reader is being served from; dropped once no
    /// reader needs it.
    resync: Option<Arc<Snapshot>>,
    /// When the index was last known to be at the head of the log (no slot
    /// after it existed); see [`ObjectStoreStorage::at_head_recently`].
    /// A tokio instant, so tests can let hours pass.
    at_head_since: Option<Instant>,
    /// The newest snapshot this handle knows of (0: none).
    snapshot_seq: u64,
    /// When this handle last decided to compact.
    maintained_at: Option<Instant>,
    /// The entries it replayed last, for the feed to reuse.
    recent: log::RecentEntries,
}

/// A vault stored with the shared-log layout on an [`ObjectStore`].
///
/// See the [crate docs](crate) for the layout, the commit point, costs and
/// compaction. Several handles (processes, devices) may share one vault;
/// each keeps its own index in memory and learns the head of the log from
/// its cached head plus one LIST with an offset (there is no "head" object
/// to trust or to keep up to date).
///
/// # Errors
///
/// - `changes` skips a log entry nobody can decode (a `tracing` warning, the
///   same for every reader) and keeps going; it fails with
///   `UnsupportedFormat` on an entry from a newer chatvault, and with
///   `Corrupt` only if log entries a reader still needs were removed without
///   a snapshot covering them (restart that reader from `Cursor::start()`).
/// - `get` fails as a whole with `Corrupt { what: "chat <uuid> …" }` if one
///   blob it reads (every blob for `Part::Full`, only those of summaries too
///   large to inline for `Part::Summary`) is missing, torn or garbled; fetch
///   the other ids again without it (or one by one) and they load.
/// - `put` fails with `Conflict { current }` when its precondition does not
///   hold at its slot, `TooLarge` above
///   [`ObjectStoreOptions::with_max_record_bytes`], `InvalidInput` for a
///   tombstone with a body; a put whose commit request failed ambiguously
///   looks the slot up and reports success if its entry landed.
/// - Store failures map as: network, timeouts, 408/429/5xx, a full disk →
///   `Unavailable` (retriable); 401/403 → `Unauthorized`, also when
///   `object_store` reports them as `Generic` (as its S3 client does for
///   LIST); a missing bucket (404) → `NotFound`; other 4xx and unsupported
///   operations → `Rejected`.
pub struct ObjectStoreStorage {
    /// `raw_store` behind a request counter (see [`counted`]).
    store: Arc<dyn ObjectStore>,
    raw_store: Arc<dyn ObjectStore>,
    prefix: Path,
    layout: Layout,
    options: ObjectStoreOptions,
    state: tokio::sync::Mutex<State>,
    foreign: ForeignFiles,
}

impl fmt::Debug for ObjectStoreStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreStorage")
            .field("store", &self.store.to_string())
            .field("layout", &self.layout)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ObjectStoreStorage {
    /// A vault under `prefix` in `store` (an empty prefix uses the store's
    /// root). One prefix holds exactly one vault; give each user their own.
    /// Nothing is read until the first call.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, options: ObjectStoreOptions) -> Self {
        Self {
            store: Arc::new(HookedStore::new(Arc::clone(&store), counted::Counted)),
            raw_store: store,
            layout: Layout::new(&prefix),
            prefix,
            options,
            state: tokio::sync::Mutex::new(State {
                loaded: false,
                index: Index::genesis(),
                resync: None,
                at_head_since: None,
                snapshot_seq: 0,
                maintained_at: None,
                recent: log::RecentEntries::default(),
            }),
            foreign: ForeignFiles::default(),
        }
    }

    /// The prefix the vault lives under.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The options this vault was opened with.
    pub fn options(&self) -> &ObjectStoreOptions {
        &self.options
    }

    /// The store underneath.
    // The caller's store, not the request-counting wrapper the handle
    // talks through.
    #[allow(clippy::misnamed_getters)]
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.raw_store
    }
}

#[async_trait]
impl Storage for ObjectStoreStorage {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            push: false,
            max_batch: self.options.max_batch,
            max_record_bytes: self.options.max_record_bytes,
            atomic_preconditions: self.options.atomic_create,
            inline_summaries: true,
            concurrent_writers: false,
        }
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        self.changes_page(since, limit).await
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        self.get_records(chats, part).await
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        let mut results = self.put_records(vec![(record, precondition)]).await;
        results.pop().unwrap_or(Ok(()))
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        self.put_records(batch).await
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        self.read_keyring().await
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        self.write_keyring(bytes, precondition).await
    }

    /// Compacts when [`ObjectStoreOptions::with_maintenance`] says it is
    /// due; see [`MaintenancePolicy`].
    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        self.maintain_layout(budget).await
    }
}

/// Measurements for benchmarks; not part of the supported API.
#[doc(hidden)]
pub mod measure {
    /// `snapshot` (an encoded snapshot, either format) re-encoded in the
    /// first format, JSON, as releases before format 2 wrote it: to compare
    /// the formats on the same data and to test reading old vaults.
    pub fn snapshot_as_json(snapshot: &[u8]) -> chatvault_core::Result<bytes::Bytes> {
        let decoded = crate::snapshot::decode_snapshot(snapshot, "snapshot")?;
        crate::snapshot::encode_snapshot_json(&decoded)
    }
}
