//! The configuration values of a vault handle: [`ObjectStoreOptions`] (the
//! layout's limits and timing), [`MaintenancePolicy`] (when
//! [`Storage::maintain`](chatvault_core::Storage::maintain) compacts) and
//! [`CompactOptions`] (what a compaction deletes). Plain values; the
//! components read them.

use crate::entry::MAX_ENTRY_ITEMS;
use std::time::Duration;

/// Tuning and capabilities of an [`ObjectStoreStorage`](crate::ObjectStoreStorage).
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
    pub(crate) atomic_create: bool,
    pub(crate) max_record_bytes: usize,
    pub(crate) max_batch: usize,
    pub(crate) max_inline_summary: usize,
    pub(crate) concurrency: usize,
    pub(crate) max_claim_delay: Duration,
    pub(crate) maintenance: MaintenancePolicy,
    pub(crate) copied: bool,
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
    /// [`Capabilities::atomic_preconditions`](chatvault_core::Capabilities::atomic_preconditions). Default `true`.
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
        self.max_batch = records.clamp(1, MAX_ENTRY_ITEMS);
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

    /// When [`Storage::maintain`](chatvault_core::Storage::maintain) compacts the vault. Default
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
    /// [`DeviceLogStorage`](crate::DeviceLogStorage)), where a torn entry cannot be final. Default
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

/// When [`Storage::maintain`](chatvault_core::Storage::maintain) compacts.
///
/// ```
/// use chatvault_object_store::{CompactOptions, MaintenancePolicy, ObjectStoreOptions};
/// use std::time::Duration;
/// let options = ObjectStoreOptions::default().with_maintenance(
///     MaintenancePolicy::default()
///         .with_entries(1_000)
///         .with_min_interval(Duration::from_secs(3600))
///         .with_compact(CompactOptions::default().with_min_age(Duration::from_secs(7200))),
/// );
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct MaintenancePolicy {
    pub(crate) entries: u64,
    pub(crate) min_interval: Duration,
    pub(crate) compact: CompactOptions,
}

impl Default for MaintenancePolicy {
    fn default() -> Self {
        Self {
            entries: 256,
            min_interval: Duration::from_secs(600),
            compact: CompactOptions::default(),
        }
    }
}

impl MaintenancePolicy {
    /// Compact once this many log entries were committed after the newest
    /// snapshot (jittered up to +50 %). It bounds what a new device replays
    /// entry by entry (one GET each) on top of the snapshot. Default 256.
    pub fn with_entries(mut self, entries: u64) -> Self {
        self.entries = entries.max(1);
        self
    }

    /// Compact at most this often: not if this handle ran, or the newest
    /// snapshot was written (by any device), more recently (jittered up to
    /// +50 %). Default 10 minutes.
    pub fn with_min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self
    }

    /// The compaction to run; its horizon must exceed the claim delay
    /// ([`ObjectStoreStorage::compact`](crate::ObjectStoreStorage::compact) checks). Default
    /// [`CompactOptions::default`] (one hour).
    pub fn with_compact(mut self, compact: CompactOptions) -> Self {
        self.compact = compact;
        self
    }
}

/// How [`ObjectStoreStorage::compact`](crate::ObjectStoreStorage::compact) chooses what to delete.
#[derive(Clone, Debug)]
pub struct CompactOptions {
    pub(crate) min_age: Duration,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            min_age: Duration::from_secs(3600),
        }
    }
}

impl CompactOptions {
    /// Only objects last modified longer ago than this are deleted (log
    /// entries, superseded blobs, old keyring versions). It must exceed
    /// [`ObjectStoreOptions::with_max_claim_delay`]
    /// ([`ObjectStoreStorage::compact`](crate::ObjectStoreStorage::compact) refuses otherwise), with room for
    /// the clock skew between devices and the store, or a put in flight may
    /// lose its blob (`docs/design.md` §5.2). Readers whose cursor is older than the
    /// oldest kept log entry resync from the snapshot, so a longer horizon
    /// also spares devices that were offline for a while a resync.
    /// Default one hour.
    pub fn with_min_age(mut self, min_age: Duration) -> Self {
        self.min_age = min_age;
        self
    }
}
