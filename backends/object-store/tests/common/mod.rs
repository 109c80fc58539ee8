//! Test helpers around a real `ObjectStore` (`InMemory`): a hook that
//! counts requests and can make the Nth request fail in one of four ways.

#![allow(dead_code)]

use async_trait::async_trait;
use bytes::Bytes;
use chatvault_core::{ChatId, SealedRecord};
use chatvault_object_store::{
    HookedStore, ObjectStoreOptions, ObjectStoreStorage, StoreHook, StoreOp,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetResult, ObjectMeta, ObjectStore};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How an injected fault behaves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// The request fails and has no effect.
    Lost,
    /// The request takes effect, then the response is lost (an error).
    AppliedThenLost,
    /// The request and every later one fail: the process died.
    Dead,
    /// The request takes effect, its response is lost, and the client's own
    /// retry (as `object_store` retries a 5xx) finds the object it just
    /// created: a create answers "precondition failed".
    AppliedThenTaken,
}

#[derive(Copy, Clone, Debug)]
struct Fault {
    at: u64,
    mode: FaultMode,
}

enum Decision {
    Pass,
    Fail,
    ApplyThenFail,
    ApplyThenTaken,
}

/// A store that counts requests to the wrapped one and injects faults: a
/// [`HookedStore`] with the [`Faults`] hook (reached with `hook()`).
pub type Instrumented = HookedStore<Faults>;

/// Wraps `inner` in an [`Instrumented`] store.
pub fn instrumented(inner: Arc<dyn ObjectStore>) -> Arc<Instrumented> {
    Arc::new(HookedStore::new(inner, Faults::default()))
}

/// Counts requests and injects faults (see [`Instrumented`]).
#[derive(Default)]
pub struct Faults {
    requests: AtomicU64,
    lists: AtomicU64,
    fault: Mutex<Option<Fault>>,
    hidden: Arc<Mutex<Vec<Path>>>,
    hold: Mutex<Option<Held>>,
    bytes_read: Arc<AtomicU64>,
    repeat_listings: std::sync::atomic::AtomicBool,
}

/// A put held back by [`Faults::hold_next_put`]: a slow request.
#[derive(Clone)]
pub struct Held {
    pattern: String,
    arrived: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Semaphore>,
}

impl Held {
    /// Waits until the held put was sent.
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// Lets the held put go through (if its sender still waits for it).
    pub fn release(&self) {
        self.release.add_permits(1);
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

impl Faults {
    /// Requests since the last reset.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Bytes of object content the caller consumed since the last reset.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::SeqCst)
    }

    /// Listings repeat their objects forever, as a server whose paging
    /// hands back the same continuation token would.
    pub fn repeat_listings(&self, repeat: bool) {
        self.repeat_listings.store(repeat, Ordering::SeqCst);
    }

    fn maybe_repeating(
        &self,
        stream: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if !self.repeat_listings.load(Ordering::SeqCst) {
            return stream;
        }
        futures::stream::once(stream.collect::<Vec<_>>())
            .flat_map(|items| {
                let items: Vec<ObjectMeta> = items.into_iter().filter_map(Result::ok).collect();
                futures::stream::iter(
                    std::iter::repeat_with(move || items.clone())
                        .take_while(|items| !items.is_empty())
                        .flatten()
                        .map(Ok),
                )
            })
            .boxed()
    }

    /// LIST requests since the last reset.
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }

    pub fn reset(&self) {
        self.requests.store(0, Ordering::SeqCst);
        self.bytes_read.store(0, Ordering::SeqCst);
        self.lists.store(0, Ordering::SeqCst);
    }

    /// The `at`-th request from now (1-based) fails as `mode` says.
    pub fn fail_request(&self, at: u64, mode: FaultMode) {
        self.reset();
        *self.fault.lock().unwrap() = Some(Fault { at, mode });
    }

    /// Listings leave `path` out, as an eventually consistent listing would.
    pub fn hide_from_listings(&self, path: Path) {
        self.hidden.lock().unwrap().push(path);
    }

    fn visible(
        &self,
        stream: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let hidden = Arc::clone(&self.hidden);
        stream
            .filter(move |item| {
                let hide =
                    matches!(item, Ok(meta) if hidden.lock().unwrap().contains(&meta.location));
                futures::future::ready(!hide)
            })
            .boxed()
    }

    /// The next put whose location contains `pattern` waits until released;
    /// dropping the waiting request (a client-side timeout) cancels it.
    pub fn hold_next_put(&self, pattern: &str) -> Held {
        let held = Held {
            pattern: pattern.to_owned(),
            arrived: Arc::new(tokio::sync::Notify::new()),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        *self.hold.lock().unwrap() = Some(held.clone());
        held
    }

    pub fn heal(&self) {
        *self.fault.lock().unwrap() = None;
    }

    fn decision(&self) -> Decision {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        match *self.fault.lock().unwrap() {
            Some(Fault { at, mode }) if n == at => match mode {
                FaultMode::AppliedThenLost => Decision::ApplyThenFail,
                FaultMode::AppliedThenTaken => Decision::ApplyThenTaken,
                _ => Decision::Fail,
            },
            Some(Fault {
                at,
                mode: FaultMode::Dead,
            }) if n > at => Decision::Fail,
            _ => Decision::Pass,
        }
    }
}

fn injected() -> object_store::Error {
    object_store::Error::Generic {
        store: "Instrumented",
        source: "injected fault".into(),
    }
}

#[async_trait]
impl StoreHook for Faults {
    async fn wait(&self, op: StoreOp, location: Option<&Path>) {
        let Some(location) = location.filter(|_| op == StoreOp::Put) else {
            return;
        };
        let held = {
            let mut hold = self.hold.lock().unwrap();
            match hold.as_ref() {
                Some(h) if location.as_ref().contains(&h.pattern) => hold.take(),
                _ => None,
            }
        };
        if let Some(held) = held {
            held.arrived.notify_one();
            let _permit = held.release.acquire().await;
        }
    }

    /// Puts and deletes may take effect and then fail; other requests fail
    /// unsent.
    fn decide(
        &self,
        op: StoreOp,
        location: Option<&Path>,
    ) -> object_store::Result<Option<object_store::Error>> {
        if op == StoreOp::List {
            self.lists.fetch_add(1, Ordering::SeqCst);
        }
        match (self.decision(), op) {
            (Decision::Pass, _) => Ok(None),
            (Decision::ApplyThenFail, StoreOp::Put | StoreOp::Delete)
            | (Decision::ApplyThenTaken, StoreOp::Delete) => Ok(Some(injected())),
            (Decision::ApplyThenTaken, StoreOp::Put) => {
                Ok(Some(object_store::Error::Precondition {
                    path: location.map(|l| l.to_string()).unwrap_or_default(),
                    source: "injected: the retry of a create that landed".into(),
                }))
            }
            _ => Err(injected()),
        }
    }

    fn get_result(&self, _: &Path, mut result: GetResult) -> GetResult {
        if let object_store::GetResultPayload::Stream(stream) = result.payload {
            let counter = Arc::clone(&self.bytes_read);
            result.payload = object_store::GetResultPayload::Stream(
                stream
                    .inspect(move |chunk| {
                        if let Ok(chunk) = chunk {
                            counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                        }
                    })
                    .boxed(),
            );
        }
        result
    }

    fn listed(
        &self,
        listing: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.maybe_repeating(self.visible(listing))
    }

    fn fmt_store(&self, inner: &dyn ObjectStore, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instrumented({inner})")
    }
}

pub fn memory() -> Arc<dyn ObjectStore> {
    Arc::new(InMemory::new())
}

pub fn vault(store: Arc<dyn ObjectStore>) -> ObjectStoreStorage {
    ObjectStoreStorage::new(
        store,
        Path::from("users/alice"),
        ObjectStoreOptions::default(),
    )
}

/// A record whose bytes say which chat and version they belong to.
pub fn record(chat: ChatId, version: u64) -> SealedRecord {
    SealedRecord {
        chat,
        version,
        deleted: false,
        summary: Bytes::from(format!("summary {chat} v{version}")),
        body: Some(Bytes::from(format!("body {chat} v{version} ").repeat(8))),
    }
}

pub fn tombstone(chat: ChatId, version: u64) -> SealedRecord {
    SealedRecord {
        chat,
        version,
        deleted: true,
        summary: Bytes::from(format!("deleted {chat} v{version}")),
        body: None,
    }
}

/// Every change from the start of the feed, paging with `limit`.
pub async fn drain(
    storage: &dyn chatvault_core::Storage,
    from: &chatvault_core::Cursor,
    limit: usize,
) -> (Vec<chatvault_core::Change>, chatvault_core::Cursor) {
    let mut cursor = from.clone();
    let mut all = Vec::new();
    for _ in 0..1_000_000 {
        let page = storage.changes(&cursor, limit).await.expect("changes");
        assert!(page.changes.len() <= limit, "page larger than the limit");
        all.extend(page.changes);
        cursor = page.cursor;
        if !page.has_more {
            return (all, cursor);
        }
    }
    panic!("feed never ended");
}

/// Options with a short claim delay, so tests can wait out a valid
/// compaction horizon ([`horizon`]) in real time.
pub fn quick_options() -> ObjectStoreOptions {
    ObjectStoreOptions::default().with_max_claim_delay(QUICK_CLAIM_DELAY)
}

/// The claim delay of [`quick_options`].
pub const QUICK_CLAIM_DELAY: std::time::Duration = std::time::Duration::from_millis(400);

/// A vault handle with [`quick_options`].
pub fn quick_vault(store: Arc<dyn ObjectStore>) -> ObjectStoreStorage {
    ObjectStoreStorage::new(store, Path::from("users/alice"), quick_options())
}

/// A compaction horizon valid for [`quick_options`] (twice the claim delay).
pub fn horizon() -> chatvault_object_store::CompactOptions {
    chatvault_object_store::CompactOptions::default().with_min_age(2 * QUICK_CLAIM_DELAY)
}

/// Lets [`horizon`] pass in real time (object ages are the store's clock).
pub async fn age_past_horizon() {
    tokio::time::sleep(2 * QUICK_CLAIM_DELAY + std::time::Duration::from_millis(150)).await;
}

/// Compacts with a horizon everything written so far is past, for tests
/// with no put in flight: a handle whose claim delay is 1 ms compacts with
/// a 2 ms horizon after 5 ms (a blocking sleep: the store's clock is real
/// even when tokio's is paused).
pub async fn compact_now(store: &Arc<dyn ObjectStore>) -> chatvault_object_store::CompactReport {
    std::thread::sleep(std::time::Duration::from_millis(5));
    let compactor = ObjectStoreStorage::new(
        store.clone(),
        Path::from("users/alice"),
        ObjectStoreOptions::default().with_max_claim_delay(std::time::Duration::from_millis(1)),
    );
    compactor
        .compact(
            chatvault_object_store::CompactOptions::default()
                .with_min_age(std::time::Duration::from_millis(2)),
        )
        .await
        .expect("compaction")
}
