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
