//! Wrappers for tests and benches that add behaviour around any backend
//! without the backend knowing: counting and fault injection.
//!
//! - [`CountingStorage`] counts [`Storage`] calls and the sealed bytes they
//!   carry;
//! - [`FaultyStorage`] makes chosen calls fail the way networks and servers
//!   fail (unavailable, timed out, HTTP 500, a response lost after the
//!   server committed), until healed;
//! - [`CountingObjectStore`] counts the calls an object-store layout makes,
//!   and [`CountingHttpConnector`] counts the HTTP requests an
//!   `object_store` client really sends (list pages and retries included):
//!   what "an idle poll costs one request" is measured with.
//!
//! All of them record into a [`RequestCounter`], a cheap, cloneable handle
//! that tests keep to read the numbers.
//!
//! ```
//! use chatvault_conformance::layers::{Fault, FaultyStorage, Op};
//! # fn demo(storage: chatvault_core::DynStorage) {
//! let faulty = FaultyStorage::new(storage);
//! // The second put from now answers 503, then the device is offline.
//! faulty.fail_nth(Op::Put, 2, Fault::ServerError);
//! faulty.fail_all(Fault::Unavailable);
//! faulty.heal();
//! # }
//! ```

use async_trait::async_trait;
use bytes::Bytes;
use chatvault_core::{
    Capabilities, ChangePage, ChatId, Cursor, DynStorage, Error, KeyringBlob, MaintenanceBudget,
    MaintenanceReport, Part, PutPrecondition, Result, SealedRecord, Storage, Transport,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Calls and bytes recorded for one kind of operation.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct OpCount {
    /// How many calls (or HTTP requests) were made.
    pub calls: u64,
    /// Bytes sent to the server by those calls.
    pub bytes_sent: u64,
    /// Bytes received from the server by those calls.
    pub bytes_received: u64,
}

/// A shared tally of requests by operation name. Clones share the tally.
#[derive(Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, OpCount>>>,
}

impl RequestCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, OpCount>> {
        // A poisoned tally is still a tally: a panicking test thread must not
        // hide the numbers from the others.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one call of `op` that sent and received the given bytes.
    pub fn record(&self, op: &str, bytes_sent: u64, bytes_received: u64) {
        let mut counts = self.lock();
        let entry = counts.entry(op.to_owned()).or_default();
        entry.calls += 1;
        entry.bytes_sent += bytes_sent;
        entry.bytes_received += bytes_received;
    }

    /// Adds received bytes to `op` without counting a call (a response body
    /// that arrived after the call was recorded).
    pub fn add_received(&self, op: &str, bytes: u64) {
        self.lock().entry(op.to_owned()).or_default().bytes_received += bytes;
    }

    /// Calls of every operation.
    pub fn total(&self) -> u64 {
        self.lock().values().map(|c| c.calls).sum()
    }

    /// Bytes sent plus bytes received, over every operation.
    pub fn total_bytes(&self) -> u64 {
        self.lock()
            .values()
            .map(|c| c.bytes_sent + c.bytes_received)
            .sum()
    }

    /// The tally of one operation (zero if it never ran).
    pub fn get(&self, op: &str) -> OpCount {
        self.lock().get(op).copied().unwrap_or_default()
    }

    /// A copy of the whole tally, by operation name.
    pub fn snapshot(&self) -> BTreeMap<String, OpCount> {
        self.lock().clone()
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        self.lock().clear();
    }
}

impl fmt::Debug for RequestCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.snapshot()).finish()
    }
}

/// The [`Storage`] operations a layer can count or fail.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// [`Storage::changes`].
    Changes,
    /// [`Storage::get`].
    Get,
    /// [`Storage::put`].
    Put,
    /// [`Storage::put_batch`].
    PutBatch,
    /// [`Storage::delete`].
    Delete,
    /// [`Storage::get_keyring`].
    GetKeyring,
    /// [`Storage::put_keyring`].
    PutKeyring,
    /// [`Storage::maintain`].
    Maintain,
}

impl Op {
    /// The name the operation is counted under.
    pub fn name(self) -> &'static str {
        match self {
            Op::Changes => "changes",
            Op::Get => "get",
            Op::Put => "put",
            Op::PutBatch => "put_batch",
            Op::Delete => "delete",
            Op::GetKeyring => "get_keyring",
            Op::PutKeyring => "put_keyring",
            Op::Maintain => "maintain",
        }
    }
}

fn records_bytes(records: &[SealedRecord]) -> u64 {
    records.iter().map(|r| r.size() as u64).sum()
}

/// Counts every call made to the wrapped [`Storage`] and the sealed bytes
/// it carries, by [`Op`]; the calls themselves pass through unchanged.
#[derive(Debug, Clone)]
pub struct CountingStorage {
    inner: DynStorage,
    counter: RequestCounter,
}

impl CountingStorage {
    /// Wraps `inner` with a fresh counter.
    pub fn new(inner: DynStorage) -> Self {
        Self::with_counter(inner, RequestCounter::new())
    }

    /// Wraps `inner`, recording into an existing `counter` (e.g. one shared
    /// by several devices).
    pub fn with_counter(inner: DynStorage, counter: RequestCounter) -> Self {
        Self { inner, counter }
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

#[async_trait]
impl Storage for CountingStorage {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
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
        let records = self.inner.get(chats, part).await;
        let received = records.as_ref().map_or(0, |r| records_bytes(r));
        self.counter.record(Op::Get.name(), 0, received);
        records
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        self.counter.record(Op::Put.name(), record.size() as u64, 0);
        self.inner.put(record, precondition).await
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let sent = batch.iter().map(|(r, _)| r.size() as u64).sum();
        self.counter.record(Op::PutBatch.name(), sent, 0);
        self.inner.put_batch(batch).await
    }

    async fn delete(
        &self,
        chat: ChatId,
        version: u64,
        summary: Bytes,
        precondition: PutPrecondition,
    ) -> Result<()> {
        self.counter
            .record(Op::Delete.name(), summary.len() as u64, 0);
        self.inner
            .delete(chat, version, summary, precondition)
            .await
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        let keyring = self.inner.get_keyring().await;
        let received = keyring
            .as_ref()
            .map_or(0, |k| k.as_ref().map_or(0, |k| k.bytes.len() as u64));
        self.counter.record(Op::GetKeyring.name(), 0, received);
        keyring
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        self.counter
            .record(Op::PutKeyring.name(), bytes.len() as u64, 0);
        self.inner.put_keyring(bytes, precondition).await
    }

    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        self.counter.record(Op::Maintain.name(), 0, 0);
        self.inner.maintain(budget).await
    }

    fn push(&self) -> Option<Arc<dyn Transport>> {
        self.inner.push()
    }
}

/// How an injected failure looks to the caller.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The network is down: [`Error::Unavailable`] at once, nothing reaches
    /// the server.
    Unavailable,
    /// The request hangs for this long, then fails as a timeout
    /// ([`Error::Unavailable`]); nothing reaches the server.
    Timeout(Duration),
    /// The server answers HTTP 500 ([`Error::Unavailable`]); nothing was
    /// committed.
    ServerError,
    /// The request reaches the server and commits, but the response is lost:
    /// the caller sees [`Error::Unavailable`] although the change happened.
    /// Replaying it must be harmless.
    LostResponse,
}

impl Fault {
    fn error(self, op: Op) -> Error {
        let message = match self {
            Fault::Unavailable => {
                format!("injected fault: network unreachable during {}", op.name())
            }
            Fault::Timeout(after) => {
                format!("injected fault: {} timed out after {after:?}", op.name())
            }
            Fault::ServerError => {
                format!(
                    "injected fault: HTTP 500 Internal Server Error on {}",
                    op.name()
                )
            }
            Fault::LostResponse => format!(
                "injected fault: connection reset after the server committed {}",
                op.name()
            ),
        };
        Error::Unavailable {
            message,
            source: None,
        }
    }
}

#[derive(Debug, Default)]
struct FaultPlan {
    /// Failures armed for one call: (op, calls of `op` still to let pass).
    nth: Vec<(Op, u64, Fault)>,
    /// Every call of these ops fails until healed.
    ops: BTreeMap<Op, Fault>,
    /// Every call fails until healed.
    all: Option<Fault>,
    calls: BTreeMap<Op, u64>,
    injected: u64,
}

impl FaultPlan {
    /// Counts a call of `op` and says whether it must fail, and how.
    fn decide(&mut self, op: Op) -> Option<Fault> {
        *self.calls.entry(op).or_default() += 1;
        let mut fault = self.all.or_else(|| self.ops.get(&op).copied());
        let mut fired = None;
        for (index, (armed_op, remaining, armed_fault)) in self.nth.iter_mut().enumerate() {
            if *armed_op != op {
                continue;
            }
            if *remaining == 0 {
                if fired.is_none() {
                    fired = Some(index);
                    fault = fault.or(Some(*armed_fault));
                }
            } else {
                *remaining -= 1;
            }
        }
        if let Some(index) = fired {
            self.nth.remove(index);
        }
        if fault.is_some() {
            self.injected += 1;
        }
        fault
    }
}

/// Makes chosen calls of the wrapped [`Storage`] fail like a flaky network
/// or server would; every other call passes through.
///
/// Faults are armed and healed at any time through `&self`, so a test keeps
/// an `Arc<FaultyStorage>` and hands clones of it to the code under test.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: DynStorage,
    plan: Mutex<FaultPlan>,
}

impl FaultyStorage {
    /// Wraps `inner`; nothing fails until a fault is armed.
    pub fn new(inner: DynStorage) -> Arc<Self> {
        Arc::new(Self {
            inner,
            plan: Mutex::new(FaultPlan::default()),
        })
    }

    fn plan(&self) -> MutexGuard<'_, FaultPlan> {
        self.plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `n`-th call of `op` from now (1 = the next one) fails with
    /// `fault`; the calls before and after it pass.
    pub fn fail_nth(&self, op: Op, n: u64, fault: Fault) {
        self.plan().nth.push((op, n.saturating_sub(1), fault));
    }

    /// Every call of `op` fails with `fault` until [`FaultyStorage::heal`].
    pub fn fail_op(&self, op: Op, fault: Fault) {
        self.plan().ops.insert(op, fault);
    }

    /// Every call fails with `fault` until [`FaultyStorage::heal`]: the
    /// device is offline.
    pub fn fail_all(&self, fault: Fault) {
        self.plan().all = Some(fault);
    }

    /// Disarms every fault; calls pass through again.
    pub fn heal(&self) {
        let mut plan = self.plan();
        plan.nth.clear();
        plan.ops.clear();
        plan.all = None;
    }

    /// Calls of `op` made so far, failed ones included.
    pub fn calls(&self, op: Op) -> u64 {
        self.plan().calls.get(&op).copied().unwrap_or(0)
    }

    /// How many calls failed on purpose so far.
    pub fn injected(&self) -> u64 {
        self.plan().injected
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &DynStorage {
        &self.inner
    }

    /// Runs `call` unless a fault is armed for `op`; `LostResponse` runs it
    /// and then reports a failure anyway.
    async fn guard<T, F>(&self, op: Op, call: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let fault = self.plan().decide(op);
        match fault {
            None => call.await,
            Some(Fault::LostResponse) => {
                // The outcome is dropped on purpose: the caller must not
                // learn whether the server committed.
                let _committed = call.await;
                Err(Fault::LostResponse.error(op))
            }
            Some(Fault::Timeout(after)) => {
                tokio::time::sleep(after).await;
                Err(Fault::Timeout(after).error(op))
            }
            Some(fault) => Err(fault.error(op)),
        }
    }
}

#[async_trait]
impl Storage for FaultyStorage {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        self.guard(Op::Changes, self.inner.changes(since, limit))
            .await
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        self.guard(Op::Get, self.inner.get(chats, part)).await
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        self.guard(Op::Put, self.inner.put(record, precondition))
            .await
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let len = batch.len();
        match self
            .guard(Op::PutBatch, async {
                Ok(self.inner.put_batch(batch).await)
            })
            .await
        {
            Ok(results) => results,
            Err(error) => {
                let message = error.to_string();
                (0..len)
                    .map(|_| {
                        Err(Error::Unavailable {
                            message: message.clone(),
                            source: None,
                        })
                    })
                    .collect()
            }
        }
    }

    async fn delete(
        &self,
        chat: ChatId,
        version: u64,
        summary: Bytes,
        precondition: PutPrecondition,
    ) -> Result<()> {
        self.guard(
            Op::Delete,
            self.inner.delete(chat, version, summary, precondition),
        )
        .await
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        self.guard(Op::GetKeyring, self.inner.get_keyring()).await
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        self.guard(Op::PutKeyring, self.inner.put_keyring(bytes, precondition))
            .await
    }

    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        self.guard(Op::Maintain, self.inner.maintain(budget)).await
    }

    fn push(&self) -> Option<Arc<dyn Transport>> {
        self.inner.push()
    }
}

/// Counts the calls made to the wrapped [`ObjectStore`] by operation
/// (`put`, `get`, `head`, `list`, `delete`, `copy`…) and the payload bytes
/// moved; calls pass through unchanged, including the inner store's own
/// `list_with_offset` and range reads.
///
/// One call is one request for most stores; a `list` over many objects may
/// page. [`CountingHttpConnector`] counts the HTTP requests themselves.
#[derive(Debug)]
pub struct CountingObjectStore {
    inner: Arc<dyn ObjectStore>,
    counter: RequestCounter,
}

impl CountingObjectStore {
    /// Wraps `inner`, recording into `counter`.
    pub fn new(inner: Arc<dyn ObjectStore>, counter: RequestCounter) -> Self {
        Self { inner, counter }
    }

    /// The counter this layer records into.
    pub fn counter(&self) -> &RequestCounter {
        &self.counter
    }

    fn counted_list(
        &self,
        op: &'static str,
        stream: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counter.record(op, 0, 0);
        stream
    }
}

impl fmt::Display for CountingObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.counter
            .record("put", payload.content_length() as u64, 0);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.counter.record("put_multipart", 0, 0);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let op = if options.head { "head" } else { "get" };
        let result = self.inner.get_opts(location, options).await;
        let received = result
            .as_ref()
            .map_or(0, |r| r.range.end.saturating_sub(r.range.start));
        self.counter
            .record(op, 0, if op == "head" { 0 } else { received });
        result
    }

    async fn get_range(&self, location: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        let bytes = self.inner.get_range(location, range).await;
        let received = bytes.as_ref().map_or(0, |b| b.len() as u64);
        self.counter.record("get", 0, received);
        bytes
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let parts = self.inner.get_ranges(location, ranges).await;
        let received = parts
            .as_ref()
            .map_or(0, |p| p.iter().map(|b| b.len() as u64).sum());
        self.counter.record("get", 0, received);
        parts
    }

    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        self.counter.record("head", 0, 0);
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.counter.record("delete", 0, 0);
        self.inner.delete(location).await
    }

    fn delete_stream<'a>(
        &'a self,
        locations: BoxStream<'a, object_store::Result<Path>>,
    ) -> BoxStream<'a, object_store::Result<Path>> {
        let counter = self.counter.clone();
        self.inner
            .delete_stream(locations)
            .inspect(move |_| counter.record("delete", 0, 0))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counted_list("list", self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.counted_list("list", self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.counter.record("list", 0, 0);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.counter.record("copy", 0, 0);
        self.inner.copy(from, to).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.counter.record("rename", 0, 0);
        self.inner.rename(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.counter.record("copy", 0, 0);
        self.inner.copy_if_not_exists(from, to).await
    }

    async fn rename_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.counter.record("rename", 0, 0);
        self.inner.rename_if_not_exists(from, to).await
    }
}

/// An `object_store` [`HttpConnector`] that counts every HTTP request the
/// client sends (by method: `GET`, `PUT`, `HEAD`, `DELETE`, `POST`…) with
/// the bytes of request bodies and the `Content-Length` of responses.
/// Retries and list pages each count, as a server bill would.
///
/// ```
/// # fn demo() -> object_store::Result<()> {
/// use chatvault_conformance::layers::{CountingHttpConnector, RequestCounter};
/// let requests = RequestCounter::new();
/// let s3 = object_store::aws::AmazonS3Builder::new()
///     .with_bucket_name("chats")
///     .with_http_connector(CountingHttpConnector::new(requests.clone()))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CountingHttpConnector {
    counter: RequestCounter,
}

impl CountingHttpConnector {
    /// A connector over `object_store`'s default reqwest client, recording
    /// into `counter`.
    pub fn new(counter: RequestCounter) -> Self {
        Self { counter }
    }
}

impl HttpConnector for CountingHttpConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(CountingHttpService {
            inner,
            counter: self.counter.clone(),
        }))
    }
}

#[derive(Debug)]
struct CountingHttpService {
    inner: HttpClient,
    counter: RequestCounter,
}

#[async_trait]
impl HttpService for CountingHttpService {
    async fn call(&self, req: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        let method = req.method().as_str().to_owned();
        let sent = req.body().content_length() as u64;
        let response = self.inner.execute(req).await;
        let received = response.as_ref().map_or(0, |r| {
            r.headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        });
        self.counter.record(&method, sent, received);
        response
    }
}

// ---------------------------------------------------------------- chaos --

use chatvault_core::layer::StorageLayer;
use std::sync::atomic::{AtomicU64, Ordering};

/// A small, fast, seedable generator (SplitMix64): every random choice of
/// [`ChaosLayer`] and [`HostileLayer`] comes from one seed, so a failing run
/// replays exactly (given the same sequence of calls).
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `p` (0.0 never, 1.0 always).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// What a [`ChaosLayer`] does, and how often. Every probability is per call
/// (0.0 = never). Start from [`ChaosConfig::calm`] or [`ChaosConfig::stormy`]
/// and adjust the fields.
#[derive(Clone, Debug, PartialEq)]
pub struct ChaosConfig {
    /// The seed of every choice.
    pub seed: u64,
    /// A call fails with retriable [`Error::Unavailable`] before reaching the
    /// server.
    pub unavailable: f64,
    /// A call fails with non-retriable [`Error::Rejected`] before reaching
    /// the server (a 4xx the client cannot fix by waiting).
    pub rejected: f64,
    /// A call hangs for [`ChaosConfig::timeout_after`], then fails with
    /// [`Error::Unavailable`]; nothing reaches the server.
    pub timeout: f64,
    /// How long a timed-out call hangs.
    pub timeout_after: Duration,
    /// A write (put, put_batch, delete, put_keyring) commits on the server
    /// but its response is lost: the caller sees [`Error::Unavailable`].
    pub lost_response: f64,
    /// Every call first waits a random time up to this long.
    pub max_latency: Duration,
    /// A feed call answers with the page of the previous call again (its
    /// cursor included): at-least-once delivery, the cursor moves back.
    pub duplicate_page: f64,
    /// A feed page's changes are shuffled across chats (each chat's own
    /// changes keep their order).
    pub reorder_page: f64,
}

impl ChaosConfig {
    /// Seeded, with nothing enabled.
    pub fn calm(seed: u64) -> Self {
        Self {
            seed,
            unavailable: 0.0,
            rejected: 0.0,
            timeout: 0.0,
            timeout_after: Duration::from_millis(5),
            lost_response: 0.0,
            max_latency: Duration::ZERO,
            duplicate_page: 0.0,
            reorder_page: 0.0,
        }
    }

    /// Seeded, with every kind of trouble at a rate a sync loop must survive:
    /// 10 % unavailable, 2 % rejected, 3 % timeouts, 10 % lost write
    /// responses, up to 2 ms latency, 10 % duplicated and 20 % reordered
    /// feed pages.
    pub fn stormy(seed: u64) -> Self {
        Self {
            seed,
            unavailable: 0.10,
            rejected: 0.02,
            timeout: 0.03,
            timeout_after: Duration::from_millis(5),
            lost_response: 0.10,
            max_latency: Duration::from_millis(2),
            duplicate_page: 0.10,
            reorder_page: 0.20,
        }
    }
}

/// How many faults a [`ChaosStorage`] injected, by kind.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ChaosStats {
    /// Calls failed with [`Error::Unavailable`] before reaching the server.
    pub unavailable: u64,
    /// Calls failed with [`Error::Rejected`].
    pub rejected: u64,
    /// Calls that hung, then failed.
    pub timeouts: u64,
    /// Writes that committed but answered [`Error::Unavailable`].
    pub lost_responses: u64,
    /// Calls delayed by latency.
    pub delayed: u64,
    /// Feed pages delivered twice.
    pub duplicated_pages: u64,
    /// Feed pages reordered.
    pub reordered_pages: u64,
}

impl ChaosStats {
    /// Every injected fault (latency not counted: it does not fail a call).
    pub fn faults(&self) -> u64 {
        self.unavailable
            + self.rejected
            + self.timeouts
            + self.lost_responses
            + self.duplicated_pages
            + self.reordered_pages
    }
}

/// Seeded chaos around any backend: retriable and non-retriable errors,
/// latency, timeouts, responses lost after a successful write, duplicated
/// and reordered feed pages, all drawn from [`ChaosConfig::seed`].
///
/// ```
/// use chatvault_conformance::layers::{ChaosConfig, ChaosLayer};
/// use chatvault_core::layer::StorageExt;
/// # fn demo(backend: chatvault_core::DynStorage) {
/// let chaos = ChaosLayer::new(ChaosConfig::stormy(7));
/// let storage = backend.layer(chaos.clone());
/// // …run the code under test, then:
/// println!("{:?}", chaos.stats());
/// # let _ = storage;
/// # }
/// ```
///
/// Clones of a layer share one generator and one tally, so every storage
/// it wraps draws from the same seeded sequence.
#[derive(Clone, Debug)]
pub struct ChaosLayer {
    shared: Arc<ChaosShared>,
}

#[derive(Debug)]
struct ChaosShared {
    config: ChaosConfig,
    rng: Mutex<SeededRng>,
    stats: Mutex<ChaosStats>,
    /// Chaos on/off without rebuilding the stack (1 = on).
    enabled: AtomicU64,
}

impl ChaosLayer {
    /// A layer injecting what `config` says.
    pub fn new(config: ChaosConfig) -> Self {
        Self {
            shared: Arc::new(ChaosShared {
                rng: Mutex::new(SeededRng::new(config.seed)),
                config,
                stats: Mutex::new(ChaosStats::default()),
                enabled: AtomicU64::new(1),
            }),
        }
    }

    /// What was injected so far, through every storage of this layer.
    pub fn stats(&self) -> ChaosStats {
        *lock(&self.shared.stats)
    }

    /// Turns the chaos off (calls pass through untouched) or back on: a
    /// test heals the network before checking convergence.
    pub fn set_enabled(&self, enabled: bool) {
        self.shared
            .enabled
            .store(u64::from(enabled), Ordering::SeqCst);
    }

    /// The configuration.
    pub fn config(&self) -> &ChaosConfig {
        &self.shared.config
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StorageLayer for ChaosLayer {
    fn layer(&self, inner: DynStorage) -> DynStorage {
        Arc::new(ChaosStorage {
            inner,
            shared: self.shared.clone(),
            previous_since: Mutex::new(None),
        })
    }
}

/// The storage [`ChaosLayer`] builds.
#[derive(Debug)]
pub struct ChaosStorage {
    inner: DynStorage,
    shared: Arc<ChaosShared>,
    previous_since: Mutex<Option<Cursor>>,
}

/// What the dice decided for one call.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Unavailable,
    Rejected,
    Timeout,
    LostResponse,
}

impl ChaosStorage {
    fn enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::SeqCst) == 1
    }

    /// Rolls the dice for one call: latency first, then at most one fault.
    fn roll(&self, write: bool) -> (Duration, Verdict) {
        if !self.enabled() {
            return (Duration::ZERO, Verdict::Pass);
        }
        let config = &self.shared.config;
        let mut rng = lock(&self.shared.rng);
        let latency = if config.max_latency.is_zero() {
            Duration::ZERO
        } else {
            let micros = config.max_latency.as_micros().min(u128::from(u64::MAX)) as u64;
            Duration::from_micros(rng.below(micros + 1))
        };
        let verdict = if rng.chance(config.unavailable) {
            Verdict::Unavailable
        } else if rng.chance(config.rejected) {
            Verdict::Rejected
        } else if rng.chance(config.timeout) {
            Verdict::Timeout
        } else if write && rng.chance(config.lost_response) {
            Verdict::LostResponse
        } else {
            Verdict::Pass
        };
        drop(rng);
        let mut stats = lock(&self.shared.stats);
        if !latency.is_zero() {
            stats.delayed += 1;
        }
        match verdict {
            Verdict::Pass => {}
            Verdict::Unavailable => stats.unavailable += 1,
            Verdict::Rejected => stats.rejected += 1,
            Verdict::Timeout => stats.timeouts += 1,
            Verdict::LostResponse => stats.lost_responses += 1,
        }
        (latency, verdict)
    }

    async fn run<T, F>(&self, op: Op, write: bool, call: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let (latency, verdict) = self.roll(write);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match verdict {
            Verdict::Pass => call.await,
            Verdict::Unavailable => Err(Fault::Unavailable.error(op)),
            Verdict::Rejected => Err(Error::Rejected {
                code: "chaos-400".to_owned(),
                message: format!("injected fault: the server refused {}", op.name()),
            }),
            Verdict::Timeout => {
                let after = self.shared.config.timeout_after;
                tokio::time::sleep(after).await;
                Err(Fault::Timeout(after).error(op))
            }
            Verdict::LostResponse => {
                let _committed = call.await;
                Err(Fault::LostResponse.error(op))
            }
        }
    }

    /// Shuffles `changes` across chats, keeping each chat's own order.
    fn reorder(&self, changes: &mut [chatvault_core::Change]) {
        let mut rng = lock(&self.shared.rng);
        let mut order: Vec<usize> = (0..changes.len()).collect();
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        drop(rng);
        // Slots keep their chat; each chat's changes are dealt back into its
        // slots in their original order, so only the interleaving changes.
        let mut by_chat: BTreeMap<ChatId, std::collections::VecDeque<chatvault_core::Change>> =
            BTreeMap::new();
        for change in changes.iter() {
            by_chat
                .entry(change.chat)
                .or_default()
                .push_back(change.clone());
        }
        let slots: Vec<ChatId> = order.iter().map(|&i| changes[i].chat).collect();
        for (slot, chat) in changes.iter_mut().zip(slots) {
            if let Some(next) = by_chat.get_mut(&chat).and_then(|q| q.pop_front()) {
                *slot = next;
            }
        }
    }
}

#[async_trait]
impl Storage for ChaosStorage {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        let (duplicate, reorder) = if self.enabled() {
            let mut rng = lock(&self.shared.rng);
            (
                rng.chance(self.shared.config.duplicate_page),
                rng.chance(self.shared.config.reorder_page),
            )
        } else {
            (false, false)
        };
        let previous = lock(&self.previous_since).replace(since.clone());
        let asked = match previous {
            Some(previous) if duplicate && previous != *since => {
                lock(&self.shared.stats).duplicated_pages += 1;
                previous
            }
            _ => since.clone(),
        };
        let mut page = self
            .run(Op::Changes, false, self.inner.changes(&asked, limit))
            .await?;
        if reorder && page.changes.len() > 1 {
            lock(&self.shared.stats).reordered_pages += 1;
            self.reorder(&mut page.changes);
        }
        Ok(page)
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        self.run(Op::Get, false, self.inner.get(chats, part)).await
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        self.run(Op::Put, true, self.inner.put(record, precondition))
            .await
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let len = batch.len();
        match self
            .run(Op::PutBatch, true, async {
                Ok(self.inner.put_batch(batch).await)
            })
            .await
        {
            Ok(results) => results,
            Err(error) => {
                let retriable = error.is_retriable();
                let message = error.to_string();
                (0..len)
                    .map(|_| {
                        if retriable {
                            Err(Error::Unavailable {
                                message: message.clone(),
                                source: None,
                            })
                        } else {
                            Err(Error::Rejected {
                                code: "chaos-400".to_owned(),
                                message: message.clone(),
                            })
                        }
                    })
                    .collect()
            }
        }
    }

    async fn delete(
        &self,
        chat: ChatId,
        version: u64,
        summary: Bytes,
        precondition: PutPrecondition,
    ) -> Result<()> {
        self.run(
            Op::Delete,
            true,
            self.inner.delete(chat, version, summary, precondition),
        )
        .await
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        self.run(Op::GetKeyring, false, self.inner.get_keyring())
            .await
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        self.run(
            Op::PutKeyring,
            true,
            self.inner.put_keyring(bytes, precondition),
        )
        .await
    }

    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        self.run(Op::Maintain, false, self.inner.maintain(budget))
            .await
    }

    fn push(&self) -> Option<Arc<dyn Transport>> {
        self.inner.push()
    }
}

// -------------------------------------------------------------- hostile --

/// One way a [`HostileLayer`] lies. Tampering applies to what the server
/// hands out (`get`, `changes`, `get_keyring`); writes pass through and are
/// remembered, so older versions can be replayed later.
#[derive(Clone, Debug)]
pub enum Tamper {
    /// `get` of either chat returns the other chat's sealed summary and body
    /// under the asked chat's id and version.
    SwapBlobs(ChatId, ChatId),
    /// `get` of `to` returns `from`'s sealed body (its own summary).
    MoveBody {
        /// Whose body is served.
        from: ChatId,
        /// The chat it is served as.
        to: ChatId,
    },
    /// `get` of `chat` returns the sealed summary and body of `source` read
    /// from another vault's storage `from`, under `chat`'s id and version.
    MoveFromVault {
        /// The chat it is served as.
        chat: ChatId,
        /// The other vault's storage.
        from: DynStorage,
        /// The other vault's chat whose blobs are served.
        source: ChatId,
    },
    /// `get` of `chat` returns the oldest version of it this layer has seen,
    /// with its true (older) version number: a rollback.
    Rollback(ChatId),
    /// `get` of `chat` returns the oldest version seen, relabelled with the
    /// current version number: a replay claiming to be new.
    ReplayAsNew(ChatId),
    /// `get_keyring` returns the oldest key file this layer has seen.
    RollbackKeyring,
    /// The sealed summary and body of `chat` lose their second half.
    Truncate(ChatId),
    /// One bit of the sealed summary and one of the body of `chat` flip
    /// (positions drawn from the layer's seed).
    FlipBits(ChatId),
    /// The format byte of `chat`'s sealed blobs claims a future format.
    FutureFormat(ChatId),
    /// `chat` is left out of `get` and `changes`, as if never written.
    Withhold(ChatId),
}

impl Tamper {
    /// The chats whose records this tampering changes.
    fn targets(&self) -> Vec<ChatId> {
        match self {
            Tamper::SwapBlobs(a, b) => vec![*a, *b],
            Tamper::MoveBody { to, .. } => vec![*to],
            Tamper::MoveFromVault { chat, .. }
            | Tamper::Rollback(chat)
            | Tamper::ReplayAsNew(chat)
            | Tamper::Truncate(chat)
            | Tamper::FlipBits(chat)
            | Tamper::FutureFormat(chat)
            | Tamper::Withhold(chat) => vec![*chat],
            Tamper::RollbackKeyring => Vec::new(),
        }
    }
}

#[derive(Debug)]
struct HostileState {
    tampers: Vec<Tamper>,
    /// Every record version seen passing through, by chat and version.
    history: BTreeMap<ChatId, BTreeMap<u64, SealedRecord>>,
    /// Every key file seen, oldest first.
    keyrings: Vec<KeyringBlob>,
    rng: SeededRng,
    tampered: u64,
}

/// A server that lies: it swaps, moves, rolls back, truncates, flips bits,
/// fakes format versions and withholds records (see [`Tamper`]), so tests
/// can check a device refuses all of it. Clones share the armed tampering
/// and the history of records seen.
#[derive(Clone, Debug)]
pub struct HostileLayer {
    state: Arc<Mutex<HostileState>>,
}

impl HostileLayer {
    /// An honest layer (nothing armed) remembering what passes through; bit
    /// positions are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(HostileState {
                tampers: Vec::new(),
                history: BTreeMap::new(),
                keyrings: Vec::new(),
                rng: SeededRng::new(seed),
                tampered: 0,
            })),
        }
    }

    /// Starts lying in this way too.
    pub fn arm(&self, tamper: Tamper) {
        lock(&self.state).tampers.push(tamper);
    }

    /// Stops every lie; the history is kept.
    pub fn disarm(&self) {
        lock(&self.state).tampers.clear();
    }

    /// How many records, pages or key files were served tampered.
    pub fn tampered(&self) -> u64 {
        lock(&self.state).tampered
    }
}

impl StorageLayer for HostileLayer {
    fn layer(&self, inner: DynStorage) -> DynStorage {
        Arc::new(HostileStorage {
            inner,
            state: self.state.clone(),
        })
    }
}

/// The storage [`HostileLayer`] builds.
#[derive(Debug)]
pub struct HostileStorage {
    inner: DynStorage,
    state: Arc<Mutex<HostileState>>,
}

fn truncated(bytes: &Bytes) -> Bytes {
    bytes.slice(..bytes.len() / 2)
}

fn flipped(bytes: &Bytes, rng: &mut SeededRng) -> Bytes {
    if bytes.is_empty() {
        return bytes.clone();
    }
    let mut out = bytes.to_vec();
    let bit = rng.below(out.len() as u64 * 8);
    out[(bit / 8) as usize] ^= 1 << (bit % 8);
    Bytes::from(out)
}

fn future_format(bytes: &Bytes) -> Bytes {
    let mut out = bytes.to_vec();
    if let Some(first) = out.first_mut() {
        *first = first.wrapping_add(1);
    }
    Bytes::from(out)
}

impl HostileStorage {
    fn remember(&self, records: &[SealedRecord]) {
        let mut state = lock(&self.state);
        for record in records {
            let versions = state.history.entry(record.chat).or_default();
            // A summary-only copy never replaces a full one.
            let keep_full = versions
                .get(&record.version)
                .is_some_and(|known| known.body.is_some() && record.body.is_none());
            if !keep_full {
                versions.insert(record.version, record.clone());
            }
        }
    }

    fn tampers(&self) -> Vec<Tamper> {
        lock(&self.state).tampers.clone()
    }

    fn oldest(&self, chat: ChatId) -> Option<SealedRecord> {
        lock(&self.state)
            .history
            .get(&chat)
            .and_then(|v| v.values().next().cloned())
    }

    /// Applies every armed tampering to one honest record; `None` withholds
    /// it.
    async fn corrupt(
        &self,
        mut record: SealedRecord,
        part: Part,
        tampers: &[Tamper],
    ) -> Result<Option<SealedRecord>> {
        let chat = record.chat;
        let mut touched = false;
        for tamper in tampers {
            if !tamper.targets().contains(&chat) {
                continue;
            }
            touched = true;
            match tamper {
                Tamper::SwapBlobs(a, b) => {
                    let other = if chat == *a { *b } else { *a };
                    if let Some(o) = self.inner.get(&[other], part).await?.pop() {
                        record.summary = o.summary;
                        record.body = o.body;
                    }
                }
                Tamper::MoveBody { from, .. } => {
                    if let Some(o) = self.inner.get(&[*from], Part::Full).await?.pop() {
                        if part == Part::Full {
                            record.body = o.body;
                        }
                    }
                }
                Tamper::MoveFromVault { from, source, .. } => {
                    if let Some(o) = from.get(&[*source], part).await?.pop() {
                        record.summary = o.summary;
                        record.body = o.body;
                    }
                }
                Tamper::Rollback(_) => {
                    if let Some(old) = self.oldest(chat) {
                        record = old;
                    }
                }
                Tamper::ReplayAsNew(_) => {
                    if let Some(old) = self.oldest(chat) {
                        let version = record.version;
                        record = old;
                        record.version = version;
                    }
                }
                Tamper::Truncate(_) => {
                    record.summary = truncated(&record.summary);
                    record.body = record.body.as_ref().map(truncated);
                }
                Tamper::FlipBits(_) => {
                    let mut state = lock(&self.state);
                    record.summary = flipped(&record.summary, &mut state.rng);
                    record.body = record.body.as_ref().map(|b| flipped(b, &mut state.rng));
                }
                Tamper::FutureFormat(_) => {
                    record.summary = future_format(&record.summary);
                    record.body = record.body.as_ref().map(future_format);
                }
                Tamper::Withhold(_) => return Ok(None),
                Tamper::RollbackKeyring => {}
            }
        }
        if part == Part::Summary {
            record.body = None;
        }
        if touched {
            lock(&self.state).tampered += 1;
        }
        Ok(Some(record))
    }
}

#[async_trait]
impl Storage for HostileStorage {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        let mut page = self.inner.changes(since, limit).await?;
        let tampers = self.tampers();
        let targets: Vec<ChatId> = tampers.iter().flat_map(Tamper::targets).collect();
        let withheld: Vec<ChatId> = tampers
            .iter()
            .filter_map(|t| match t {
                Tamper::Withhold(chat) => Some(*chat),
                _ => None,
            })
            .collect();
        page.changes.retain(|c| !withheld.contains(&c.chat));
        for change in &mut page.changes {
            if targets.contains(&change.chat) {
                // Make the device fetch the record, where the lie is told.
                change.summary = None;
            }
        }
        Ok(page)
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        let records = self.inner.get(chats, part).await?;
        self.remember(&records);
        let tampers = self.tampers();
        if tampers.is_empty() {
            return Ok(records);
        }
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            if let Some(record) = self.corrupt(record, part, &tampers).await? {
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        let copy = record.clone();
        self.inner.put(record, precondition).await?;
        self.remember(&[copy]);
        Ok(())
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let copies: Vec<SealedRecord> = batch.iter().map(|(r, _)| r.clone()).collect();
        let results = self.inner.put_batch(batch).await;
        let landed: Vec<SealedRecord> = copies
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(c, _)| c)
            .collect();
        self.remember(&landed);
        results
    }

    async fn delete(
        &self,
        chat: ChatId,
        version: u64,
        summary: Bytes,
        precondition: PutPrecondition,
    ) -> Result<()> {
        self.inner
            .delete(chat, version, summary, precondition)
            .await
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        let keyring = self.inner.get_keyring().await?;
        let mut state = lock(&self.state);
        if let Some(k) = &keyring {
            if !state.keyrings.iter().any(|seen| seen.version == k.version) {
                state.keyrings.push(k.clone());
            }
        }
        if state
            .tampers
            .iter()
            .any(|t| matches!(t, Tamper::RollbackKeyring))
        {
            if let Some(oldest) = state.keyrings.first().cloned() {
                state.tampered += 1;
                return Ok(Some(oldest));
            }
        }
        Ok(keyring)
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        let version = self.inner.put_keyring(bytes.clone(), precondition).await?;
        lock(&self.state)
            .keyrings
            .push(KeyringBlob { bytes, version });
        Ok(version)
    }

    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        self.inner.maintain(budget).await
    }

    fn push(&self) -> Option<Arc<dyn Transport>> {
        self.inner.push()
    }
}
