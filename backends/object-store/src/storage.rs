//! [`ObjectStoreStorage`]: one shared-log vault, composed of its
//! components (the [`Log`] and its [`Feed`], the [`Records`] with their
//! [`RecordObjects`], the [`KeyFile`], the [`SealedBlobs`], the [`Maintainer`] and its [`Compactor`],
//! all over the vault's [`Objects`]); its [`Storage`] impl hands each call
//! to the component that owns it.

use crate::compaction::{CompactReport, Compactor};
use crate::feed::Feed;
use crate::keyring::KeyFile;
use crate::log::Log;
use crate::maintenance::Maintainer;
use crate::objects::Objects;
use crate::options::{CompactOptions, ObjectStoreOptions};
use crate::record_objects::RecordObjects;
use crate::records::Records;
use crate::sealed_blobs::SealedBlobs;
use async_trait::async_trait;
use bytes::Bytes;
use chatvault_core::{
    BlobId, BlobPage, Capabilities, ChangePage, ChatId, Cursor, KeyringBlob, MaintenanceBudget,
    MaintenanceReport, Part, PutPrecondition, Result, SealedRecord, Storage,
};
use object_store::path::Path;
use object_store::ObjectStore;
use std::fmt;
use std::sync::Arc;

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
///   blob it reads (every blob for `Part::Body`, only those of summaries too
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
    prefix: Path,
    options: ObjectStoreOptions,
    objects: Arc<Objects>,
    log: Arc<Log>,
    feed: Feed,
    records: Records,
    key_file: KeyFile,
    sealed_blobs: SealedBlobs,
    maintainer: Maintainer,
}

impl fmt::Debug for ObjectStoreStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreStorage")
            .field("store", &self.objects.store().to_string())
            .field("layout", self.objects.layout())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ObjectStoreStorage {
    /// A vault under `prefix` in `store` (an empty prefix uses the store's
    /// root). One prefix holds exactly one vault; give each user their own.
    /// Nothing is read until the first call.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, options: ObjectStoreOptions) -> Self {
        let objects = Arc::new(Objects::new(store, &prefix, options.concurrency));
        let log = Arc::new(Log::new(Arc::clone(&objects), &options));
        let blobs = RecordObjects::new(Arc::clone(&objects), &options);
        let compactor = Compactor::new(
            Arc::clone(&objects),
            Arc::clone(&log),
            options.max_claim_delay,
        );
        Self {
            feed: Feed::new(Arc::clone(&log), options.concurrency),
            records: Records::new(Arc::clone(&log), blobs, &options),
            key_file: KeyFile::new(Arc::clone(&objects), options.max_record_bytes),
            sealed_blobs: SealedBlobs::new(Arc::clone(&objects), options.max_record_bytes),
            maintainer: Maintainer::new(
                Arc::clone(&objects),
                Arc::clone(&log),
                compactor,
                options.maintenance.clone(),
            ),
            log,
            objects,
            prefix,
            options,
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

    /// The store underneath (the caller's, not the request counter the
    /// handle talks through).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        self.objects.raw()
    }

    /// Writes a snapshot at the head of the log, then deletes log entries
    /// (all but the newest), older snapshots, blobs no current record references, and superseded
    /// keyring versions, all only if older than
    /// [`CompactOptions::with_min_age`]. Safe to run while other devices
    /// read and write, and from several devices at once; run it now and then
    /// (say daily) from one of them to keep storage and first-use cost
    /// bounded.
    ///
    /// # Errors
    ///
    /// `InvalidInput` unless [`CompactOptions::with_min_age`] exceeds this
    /// handle's [`ObjectStoreOptions::with_max_claim_delay`]:
    /// with a shorter horizon, compaction could delete the blobs of a put
    /// that is about to commit, or a log slot a writer still takes for free.
    pub async fn compact(&self, options: CompactOptions) -> Result<CompactReport> {
        self.maintainer.compactor().compact(options).await
    }

    /// The change log and what this handle replayed of it.
    pub(crate) fn log(&self) -> &Log {
        &self.log
    }

    /// The key file's versions.
    pub(crate) fn key_file(&self) -> &KeyFile {
        &self.key_file
    }
}

#[async_trait]
impl Storage for ObjectStoreStorage {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            notifications: false,
            max_batch: self.options.max_batch,
            max_record_bytes: self.options.max_record_bytes,
            atomic_preconditions: self.options.atomic_create,
            inline_summaries: true,
            concurrent_writers: false,
            blobs: true,
        }
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        self.feed.changes(since, limit).await
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        self.records.get(chats, part).await
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        let mut results = self.records.put(vec![(record, precondition)]).await;
        results.pop().unwrap_or(Ok(()))
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        self.records.put(batch).await
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        self.key_file.read().await
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        self.key_file.write(bytes, precondition).await
    }

    async fn put_blob(&self, id: BlobId, sealed: Bytes) -> Result<()> {
        self.sealed_blobs.put(id, sealed).await
    }

    async fn get_blob(&self, id: BlobId) -> Result<Option<Bytes>> {
        self.sealed_blobs.get(id).await
    }

    async fn list_blobs(&self, after: Option<BlobId>, limit: usize) -> Result<BlobPage> {
        self.sealed_blobs.list(after, limit).await
    }

    async fn missing_blobs(&self, ids: &[BlobId]) -> Result<Vec<BlobId>> {
        self.sealed_blobs.missing(ids).await
    }

    async fn delete_blob(&self, id: BlobId) -> Result<()> {
        self.sealed_blobs.delete(id).await
    }

    /// Compacts when [`ObjectStoreOptions::with_maintenance`] says it is
    /// due; see [`MaintenancePolicy`](crate::MaintenancePolicy).
    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        self.maintainer.maintain(budget).await
    }
}
