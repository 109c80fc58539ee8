//! [`CountingLayer`]: counts calls, sealed bytes and round trips.

use super::{records_bytes, Op, RequestCounter};
use async_trait::async_trait;
use bytes::Bytes;
use chatvault_core::layer::{LayeredStorage, StorageLayer};
use chatvault_core::{
    BlobId, BlobPage, ChangePage, ChatId, Cursor, DynStorage, KeyringBlob, MaintenanceBudget,
    MaintenanceReport, Part, PutPrecondition, Result, SealedRecord, Storage,
};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Round trips: how often the number of calls in flight rose from zero.
/// Calls that overlap share a round trip, so five concurrent `get`s count
/// once and five `get`s one after the other count five times. Clones share
/// the tally.
#[derive(Clone, Default)]
pub struct RoundTrips {
    in_flight: Arc<AtomicU64>,
    waves: Arc<AtomicU64>,
}

/// Held while one call is in flight ([`RoundTrips::start`]).
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RoundTrips {
    /// A tally at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks a call as in flight until the guard drops.
    pub fn start(&self) -> InFlight {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.waves.fetch_add(1, Ordering::SeqCst);
        }
        InFlight(self.in_flight.clone())
    }

    /// Round trips since the last reset.
    pub fn get(&self) -> u64 {
        self.waves.load(Ordering::SeqCst)
    }

    /// Starts counting again.
    pub fn reset(&self) {
        self.waves.store(0, Ordering::SeqCst);
    }
}

impl fmt::Debug for RoundTrips {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoundTrips({})", self.get())
    }
}

/// Counts every call made through it and the sealed bytes the calls carry,
/// by [`Op`], into a [`RequestCounter`]; with
/// [`CountingLayer::with_round_trips`] it also tallies [`RoundTrips`]. The
/// calls themselves pass through unchanged.
///
/// ```
/// use chatvault_conformance::layers::{CountingLayer, Op, RequestCounter};
/// use chatvault_core::layer::LayerExt;
/// # fn demo(backend: chatvault_core::DynStorage) {
/// let requests = RequestCounter::new();
/// let storage = backend.layer(CountingLayer::new(requests.clone()));
/// // …use `storage`, then:
/// println!("{} puts", requests.get(Op::Put.name()).calls);
/// # let _ = storage;
/// # }
/// ```
///
/// Clones share the counter, so one layer can count several devices.
#[derive(Clone, Debug, Default)]
pub struct CountingLayer {
    counter: RequestCounter,
    trips: Option<RoundTrips>,
}

impl CountingLayer {
    /// A layer recording into `counter`.
    pub fn new(counter: RequestCounter) -> Self {
        Self {
            counter,
            trips: None,
        }
    }

    /// Also tallies round trips into `trips`.
    pub fn with_round_trips(mut self, trips: RoundTrips) -> Self {
        self.trips = Some(trips);
        self
    }

    /// The counter this layer records into.
    pub fn counter(&self) -> &RequestCounter {
        &self.counter
    }

    /// Calls of one operation so far.
    pub fn calls(&self, op: Op) -> u64 {
        self.counter.get(op.name()).calls
    }
}

impl StorageLayer for CountingLayer {
    fn layer(&self, inner: DynStorage) -> DynStorage {
        Arc::new(CountingStorage {
            inner,
            counter: self.counter.clone(),
            trips: self.trips.clone(),
        })
    }
}

/// The storage [`CountingLayer`] builds: counts every call made to the
/// wrapped [`Storage`] and the sealed bytes it carries, by [`Op`]; the calls
/// themselves pass through unchanged.
#[derive(Debug, Clone)]
pub struct CountingStorage {
    inner: DynStorage,
    counter: RequestCounter,
    trips: Option<RoundTrips>,
}

impl CountingStorage {
    /// Wraps `inner` with a fresh counter.
    pub fn new(inner: DynStorage) -> Self {
        Self::with_counter(inner, RequestCounter::new())
    }

    /// Wraps `inner`, recording into an existing `counter` (e.g. one shared
    /// by several devices).
    pub fn with_counter(inner: DynStorage, counter: RequestCounter) -> Self {
        Self {
            inner,
            counter,
            trips: None,
        }
    }

    /// The counter this layer records into.
    pub fn counter(&self) -> &RequestCounter {
        &self.counter
    }

    /// Calls of one operation so far.
    pub fn calls(&self, op: Op) -> u64 {
        self.counter.get(op.name()).calls
    }

    fn trip(&self) -> Option<InFlight> {
        self.trips.as_ref().map(RoundTrips::start)
    }
}

#[async_trait]
impl LayeredStorage for CountingStorage {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        let _trip = self.trip();
        let page = self.inner.changes(since, limit).await;
        let received = page.as_ref().map_or(0, |p| {
            p.changes
                .iter()
                .map(|c| c.summary.as_ref().map_or(0, Bytes::len) as u64)
                .sum()
        });
        self.counter.record(Op::Changes.name(), 0, received);
        page
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        let _trip = self.trip();
        let records = self.inner.get(chats, part).await;
        let received = records.as_ref().map_or(0, |r| records_bytes(r));
        self.counter.record(Op::Get.name(), 0, received);
        records
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        let _trip = self.trip();
        self.counter.record(Op::Put.name(), record.size() as u64, 0);
        self.inner.put(record, precondition).await
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let _trip = self.trip();
        let sent = batch.iter().map(|(r, _)| r.size() as u64).sum();
        self.counter.record(Op::PutBatch.name(), sent, 0);
        self.inner.put_batch(batch).await
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        let _trip = self.trip();
        let keyring = self.inner.get_keyring().await;
        let received = keyring
            .as_ref()
            .map_or(0, |k| k.as_ref().map_or(0, |k| k.bytes.len() as u64));
        self.counter.record(Op::GetKeyring.name(), 0, received);
        keyring
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        let _trip = self.trip();
        self.counter
            .record(Op::PutKeyring.name(), bytes.len() as u64, 0);
        self.inner.put_keyring(bytes, precondition).await
    }

    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        let _trip = self.trip();
        self.counter.record(Op::Maintain.name(), 0, 0);
        self.inner.maintain(budget).await
    }

    async fn put_blob(&self, id: BlobId, sealed: Bytes) -> Result<()> {
        let _trip = self.trip();
        self.counter
            .record(Op::PutBlob.name(), sealed.len() as u64, 0);
        self.inner.put_blob(id, sealed).await
    }

    async fn get_blob(&self, id: BlobId) -> Result<Option<Bytes>> {
        let _trip = self.trip();
        let blob = self.inner.get_blob(id).await;
        let received = blob
            .as_ref()
            .map_or(0, |b| b.as_ref().map_or(0, |b| b.len() as u64));
        self.counter.record(Op::GetBlob.name(), 0, received);
        blob
    }

    async fn list_blobs(&self, after: Option<BlobId>, limit: usize) -> Result<BlobPage> {
        let _trip = self.trip();
        self.counter.record(Op::ListBlobs.name(), 0, 0);
        self.inner.list_blobs(after, limit).await
    }

    async fn delete_blob(&self, id: BlobId) -> Result<()> {
        let _trip = self.trip();
        self.counter.record(Op::DeleteBlob.name(), 0, 0);
        self.inner.delete_blob(id).await
    }
}
