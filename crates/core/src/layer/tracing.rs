//! [`TracingLayer`]: a span per storage call and per-operation figures.

use crate::ids::{BlobId, ChatId};
use crate::storage::{
    BlobPage, ChangePage, Cursor, DynStorage, KeyringBlob, MaintenanceBudget, MaintenanceReport,
    Part, PutPrecondition, SealedRecord, Storage,
};
use crate::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::Instrument;

use super::{LayeredStorage, Op, StorageLayer};

/// Figures of one [`Storage`] operation, as counted by [`TracingLayer`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that returned an error (for `put_batch`: calls with at least
    /// one failed record).
    pub errors: u64,
    /// Calls that failed with a retriable error.
    pub retriable_errors: u64,
    /// Wall time spent in those calls.
    pub total_time: Duration,
    /// The slowest call.
    pub max_time: Duration,
}

/// Per-operation call figures shared between a [`TracingLayer`] and whoever
/// reads them; clones share the figures.
#[derive(Clone, Default)]
pub struct StorageMetrics {
    stats: Arc<Mutex<BTreeMap<&'static str, CallStats>>>,
}

impl StorageMetrics {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, CallStats>> {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, op: &'static str, elapsed: Duration, error: Option<&Error>) {
        let mut stats = self.lock();
        let entry = stats.entry(op).or_default();
        entry.calls += 1;
        entry.total_time += elapsed;
        entry.max_time = entry.max_time.max(elapsed);
        if let Some(error) = error {
            entry.errors += 1;
            if error.is_retriable() {
                entry.retriable_errors += 1;
            }
        }
    }

    /// Figures of one operation by name (`changes`, `get`, `put`,
    /// `put_batch`, `get_keyring`, `put_keyring`, `maintain`, `put_blob`,
    /// `get_blob`, `list_blobs`, `delete_blob`: [`Op::name`]);
    /// zero if it never ran.
    pub fn get(&self, op: &str) -> CallStats {
        self.lock().get(op).copied().unwrap_or_default()
    }

    /// A copy of every operation's figures.
    pub fn snapshot(&self) -> BTreeMap<&'static str, CallStats> {
        self.lock().clone()
    }
}

impl fmt::Debug for StorageMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.snapshot()).finish()
    }
}

/// Wraps every storage call in a `tracing` span (`storage` with the
/// operation name and sizes) and emits one event per call with its outcome
/// and duration; counts calls, errors and time in [`StorageMetrics`].
#[derive(Clone, Debug, Default)]
pub struct TracingLayer {
    metrics: StorageMetrics,
}

impl TracingLayer {
    /// A layer with fresh metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// A layer recording into existing `metrics` (shared by several
    /// storages).
    pub fn with_metrics(metrics: StorageMetrics) -> Self {
        Self { metrics }
    }

    /// The figures this layer records into.
    pub fn metrics(&self) -> StorageMetrics {
        self.metrics.clone()
    }
}

impl StorageLayer for TracingLayer {
    fn layer(&self, inner: DynStorage) -> DynStorage {
        Arc::new(TracingStorage {
            inner,
            metrics: self.metrics.clone(),
        })
    }
}

/// The storage [`TracingLayer`] builds.
#[derive(Debug)]
pub struct TracingStorage {
    inner: DynStorage,
    metrics: StorageMetrics,
}

impl TracingStorage {
    async fn traced<T, Fut>(&self, op: Op, items: usize, call: Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let op = op.name();
        let span = tracing::debug_span!("storage", op, items);
        let started = Instant::now();
        let result = call.instrument(span.clone()).await;
        let elapsed = started.elapsed();
        self.metrics.record(op, elapsed, result.as_ref().err());
        span.in_scope(|| match &result {
            Ok(_) => tracing::debug!(op, ?elapsed, "storage call succeeded"),
            Err(error) => tracing::debug!(op, ?elapsed, %error, "storage call failed"),
        });
        result
    }
}

#[async_trait]
impl LayeredStorage for TracingStorage {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        self.traced(Op::Changes, limit, self.inner.changes(since, limit))
            .await
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        self.traced(Op::Get, chats.len(), self.inner.get(chats, part))
            .await
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        self.traced(Op::Put, 1, self.inner.put(record, precondition))
            .await
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let items = batch.len();
        let span = tracing::debug_span!("storage", op = Op::PutBatch.name(), items);
        let started = Instant::now();
        let results = self.inner.put_batch(batch).instrument(span.clone()).await;
        let elapsed = started.elapsed();
        let failed = results.iter().find_map(|r| r.as_ref().err());
        self.metrics.record(Op::PutBatch.name(), elapsed, failed);
        let errors = results.iter().filter(|r| r.is_err()).count();
        span.in_scope(|| tracing::debug!(?elapsed, errors, "storage batch put finished"));
        results
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        self.traced(Op::GetKeyring, 1, self.inner.get_keyring())
            .await
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        self.traced(
            Op::PutKeyring,
            1,
            self.inner.put_keyring(bytes, precondition),
        )
        .await
    }

    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        self.traced(Op::Maintain, 1, self.inner.maintain(budget))
            .await
    }

    async fn put_blob(&self, id: BlobId, sealed: Bytes) -> Result<()> {
        self.traced(Op::PutBlob, 1, self.inner.put_blob(id, sealed))
            .await
    }

    async fn get_blob(&self, id: BlobId) -> Result<Option<Bytes>> {
        self.traced(Op::GetBlob, 1, self.inner.get_blob(id)).await
    }

    async fn list_blobs(&self, after: Option<BlobId>, limit: usize) -> Result<BlobPage> {
        self.traced(Op::ListBlobs, limit, self.inner.list_blobs(after, limit))
            .await
    }

    async fn delete_blob(&self, id: BlobId) -> Result<()> {
        self.traced(Op::DeleteBlob, 1, self.inner.delete_blob(id))
            .await
    }
}
