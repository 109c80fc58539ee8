//! The servers the scale bench runs on, and what it measures beside
//! chatvault on each: the seed-style poll (list every chat id and timestamp,
//! diff locally) and raw puts of the same bytes.
//!
//! - local folder: `FsStorage`, counted at the object-store level
//!   (`CountingObjectStore`, one call per request a remote store would get);
//! - S3: `S3Storage` on the conformance fixture (endpoint from
//!   `CHATVAULT_TEST_S3_ENDPOINT`, else the test image, else the in-process
//!   s3s-fs stand-in), counted at the HTTP level (`CountingHttpConnector`);
//! - Supabase: `SupabaseStorage` on the conformance fixture (local
//!   PostgreSQL cluster + PostgREST-compatible gateway, max rows 1,000),
//!   counted at the HTTP level by the backend's `on_request` observer.

use async_trait::async_trait;
use bytes::Bytes;
use chatvault::core::layer::LayerExt;
use chatvault::core::{DynStorage, PutPrecondition, Result, SealedRecord};
use chatvault_conformance::layers::{
    CountingHttpConnector, CountingLayer, CountingObjectStore, RequestCounter, RoundTrips,
};
use chatvault_test_services::postgres::SupabaseFixture;
use chatvault_test_services::s3::S3Fixture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests in flight at once for the raw-put baseline: the layout's own
/// default concurrency, so both sides may overlap requests equally.
pub const RAW_PUT_CONCURRENCY: usize = 32;

/// The function the seed-style Supabase poll calls: `select id, updated_at`
/// over the records table, as a set-returning RPC so the gateway's max-rows
/// cap applies exactly as it does to a PostgREST table select.
const SEED_POLL_SQL: &str = r#"
create or replace function public.bench_seed_style_poll()
returns table (chat uuid, updated_at timestamptz)
language sql stable security invoker set search_path = ''
as $$ select r.chat, r.updated_at from public.chatvault_records r
      where r.owner = (select auth.uid()) $$;
grant execute on function public.bench_seed_style_poll() to authenticated;
"#;

/// An object store that tracks [`RoundTrips`] (list streams stay in flight
/// until drained) and counts the entries LISTs return.
#[derive(Debug)]
pub struct TrackedStore {
    inner: Arc<dyn ObjectStore>,
    trips: RoundTrips,
    listed: Arc<AtomicU64>,
}

impl fmt::Display for TrackedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tracked({})", self.inner)
    }
}

impl TrackedStore {
    fn new(inner: Arc<dyn ObjectStore>, trips: RoundTrips, listed: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            trips,
            listed,
        }
    }

    fn tracked_list(
        &self,
        stream: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let guard = self.trips.start();
        let listed = self.listed.clone();
        stream
            .inspect(move |item| {
                let _in_flight = &guard;
                if item.is_ok() {
                    listed.fetch_add(1, Ordering::Relaxed);
                }
            })
            .boxed()
    }
}

#[async_trait]
impl ObjectStore for TrackedStore {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let _trip = self.trips.start();
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let _trip = self.trips.start();
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &StorePath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let _trip = self.trips.start();
        self.inner.get_opts(location, options).await
    }

    async fn get_range(
        &self,
        location: &StorePath,
        range: Range<u64>,
    ) -> object_store::Result<Bytes> {
        let _trip = self.trips.start();
        self.inner.get_range(location, range).await
    }

    async fn get_ranges(
        &self,
        location: &StorePath,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let _trip = self.trips.start();
        self.inner.get_ranges(location, ranges).await
    }

    async fn head(&self, location: &StorePath) -> object_store::Result<ObjectMeta> {
        let _trip = self.trips.start();
        self.inner.head(location).await
    }

    async fn delete(&self, location: &StorePath) -> object_store::Result<()> {
        let _trip = self.trips.start();
        self.inner.delete(location).await
    }

    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.tracked_list(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&StorePath>,
        offset: &StorePath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.tracked_list(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> object_store::Result<ListResult> {
        let _trip = self.trips.start();
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &StorePath, to: &StorePath) -> object_store::Result<()> {
        let _trip = self.trips.start();
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(
        &self,
        from: &StorePath,
        to: &StorePath,
    ) -> object_store::Result<()> {
        let _trip = self.trips.start();
        self.inner.copy_if_not_exists(from, to).await
    }
}

/// What a seed-style poll saw.
#[derive(Clone, Debug, Default)]
pub struct SeedPoll {
    /// Requests it took.
    pub requests: u64,
    /// Bytes sent.
    pub sent: u64,
    /// Bytes received.
    pub received: u64,
    /// Chats the listing returned.
    pub seen: u64,
    /// Chats whose timestamp changed since the previous listing.
    pub changed: u64,
    /// Chats in the previous listing missing from this one: what the old
    /// app would take for deletions.
    pub missing: u64,
}

/// One vault on one server, with a counted handle for the reading device,
/// an uncounted one for the writing device, and the raw baselines.
pub struct Vault {
    /// The reading device's storage, counted into [`Vault::counter`].
    pub reader: DynStorage,
    /// Requests and bytes of the reader (HTTP level; object-store level on
    /// the local folder).
    pub counter: RequestCounter,
    /// Round trips of the reader.
    pub trips: RoundTrips,
    /// Entries the reader's LISTs returned (object stores).
    pub listed: Arc<AtomicU64>,
    /// The writing device's storage (not counted).
    pub writer: DynStorage,
    kind: VaultKind,
    /// The previous seed-style listing: chat → timestamp.
    previous: Mutex<HashMap<String, String>>,
}

enum VaultKind {
    Objects {
        /// The same server, counted into `raw_counter`, for the baselines.
        raw: Arc<dyn ObjectStore>,
        raw_counter: RequestCounter,
        prefix: StorePath,
        /// The local folder's bytes are not on a wire.
        local: bool,
    },
    Supabase {
        url: String,
        anon_key: String,
        token: String,
        /// A second, uncounted client for the raw-put baseline.
        raw: DynStorage,
    },
}

/// A server the bench runs on.
pub enum Server {
    /// A local folder (fresh temporary folder per vault).
    Folder {
        /// Holds the vault folders.
        root: tempfile::TempDir,
    },
    /// The S3 fixture.
    S3(Box<S3Fixture>),
    /// The Supabase fixture.
    Supabase(&'static SupabaseFixture),
}

impl Server {
    /// A local folder server.
    pub fn folder() -> Self {
        Self::Folder {
            root: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The S3 fixture (environment, image or stand-in).
    pub async fn s3() -> Result<Self> {
        Ok(Self::S3(Box::new(S3Fixture::start().await?)))
    }

    /// The Supabase fixture, with the seed-style poll's function installed.
    pub async fn supabase() -> Result<Self> {
        let fixture = SupabaseFixture::shared(chatvault_supabase::MIGRATIONS).await?;
        let admin = fixture.postgres.connect().await?;
        admin.batch_execute(SEED_POLL_SQL).await.map_err(|e| {
            chatvault::core::Error::invalid(format!("installing the seed-style poll: {e}"))
        })?;
        Ok(Self::Supabase(fixture))
    }

    /// Short name for table headings.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Folder { .. } => "local folder",
            Self::S3(_) => "S3",
            Self::Supabase(_) => "Supabase",
        }
    }

    /// What serves it, for the report.
    pub fn describe(&self) -> String {
        match self {
            Self::Folder { root } => format!(
                "FsStorage in {} (counted at the object-store level: one call = one request a remote store would get; LIST bytes are not on a wire)",
                root.path().display()
            ),
            Self::S3(fixture) => format!(
                "{} (counted at the HTTP level: request and response bodies)",
                fixture.describe()
            ),
            Self::Supabase(fixture) => format!(
                "{} (counted at the HTTP level: request line, headers and body both ways)",
                fixture.description()
            ),
        }
    }

    /// A fresh, empty vault named `name` on this server. `durable_writer`:
    /// whether the local folder's writer fsyncs (seeding does not need to;
    /// the bulk import compares like with like either way).
    pub async fn vault(&self, name: &str, durable_writer: bool) -> Result<Vault> {
        let counter = RequestCounter::new();
        let trips = RoundTrips::default();
        let listed = Arc::new(AtomicU64::new(0));
        match self {
            Self::Folder { root } => {
                let dir: PathBuf = root.path().join(name);
                let (c, t, l) = (counter.clone(), trips.clone(), listed.clone());
                let reader = chatvault_fs::FsStorageBuilder::new(&dir)
                    .layer(move |store| {
                        let tracked = Arc::new(TrackedStore::new(store, t.clone(), l.clone()));
                        Arc::new(CountingObjectStore::new(tracked, c.clone()))
                    })
                    .open()?;
                // The raw baseline writes through the same durable store the
                // vault uses (fsync included), captured from the layer hook.
                let captured: Arc<Mutex<Option<Arc<dyn ObjectStore>>>> = Arc::default();
                let slot = captured.clone();
                let writer = chatvault_fs::FsStorageBuilder::new(&dir)
                    .fsync(durable_writer)
                    .layer(move |store| {
                        *slot.lock().expect("slot") = Some(store.clone());
                        store
                    })
                    .open()?;
                let durable = captured.lock().expect("slot").clone().expect("layer ran");
                let raw_counter = RequestCounter::new();
                Ok(Vault::new(
                    Arc::new(reader),
                    counter,
                    trips,
                    listed,
                    Arc::new(writer),
                    VaultKind::Objects {
                        raw: Arc::new(CountingObjectStore::new(durable, raw_counter.clone())),
                        raw_counter,
                        prefix: StorePath::default(),
                        local: true,
                    },
                ))
            }
            Self::S3(fixture) => {
                let location = fixture.vault(name).await?;
                let client = |connector: Option<CountingHttpConnector>| {
                    let mut builder = fixture
                        .amazon_s3_builder()
                        .with_bucket_name(&location.bucket);
                    if let Some(connector) = connector {
                        builder = builder.with_http_connector(connector);
                    }
                    builder.build().map_err(|e| {
                        chatvault::core::Error::invalid(format!("S3 client for the bench: {e}"))
                    })
                };
                let options = chatvault_object_store::ObjectStoreOptions::default()
                    .with_atomic_create(fixture.atomic_conditional_put);
                let counted = client(Some(CountingHttpConnector::new(counter.clone())))?;
                let tracked = TrackedStore::new(Arc::new(counted), trips.clone(), listed.clone());
                let reader =
                    chatvault_s3::from_store(Arc::new(tracked), &location.prefix, options.clone());
                let writer =
                    chatvault_s3::from_store(Arc::new(client(None)?), &location.prefix, options);
                let raw_counter = RequestCounter::new();
                let raw = client(Some(CountingHttpConnector::new(raw_counter.clone())))?;
                Ok(Vault::new(
                    Arc::new(reader),
                    counter,
                    trips,
                    listed,
                    Arc::new(writer),
                    VaultKind::Objects {
                        raw: Arc::new(raw),
                        raw_counter,
                        prefix: StorePath::from(location.prefix.as_str()),
                        local: false,
                    },
                ))
            }
            Self::Supabase(fixture) => {
                let user = uuid::Uuid::now_v7();
                let token = fixture.user_token(user, 24 * 3600);
                let client_token = token.clone();
                let client = |observer: Option<RequestCounter>| {
                    let mut builder = chatvault_supabase::SupabaseStorage::builder(&format!(
                        "supabase+{}",
                        fixture.url
                    ))?
                    .anon_key(fixture.anon_key.clone())
                    .token_source(chatvault_supabase::StaticToken::new(client_token.clone()))
                    .timeout(Duration::from_secs(600));
                    if let Some(counter) = observer {
                        builder = builder.on_request(move |event| {
                            counter.record(&event.function, event.bytes_sent, event.bytes_received)
                        });
                    }
                    builder.build()
                };
                // On Supabase every call is one RPC (one HTTP request) unless
                // it pages: round trips are counted per storage call.
                let reader = (Arc::new(client(Some(counter.clone()))?) as DynStorage)
                    .layer(CountingLayer::default().with_round_trips(trips.clone()));
                Ok(Vault::new(
                    reader,
                    counter,
                    trips,
                    listed,
                    Arc::new(client(None)?),
                    VaultKind::Supabase {
                        url: fixture.url.clone(),
                        anon_key: fixture.anon_key.clone(),
                        token,
                        raw: Arc::new(client(None)?),
                    },
                ))
            }
        }
    }
}

impl Vault {
    fn new(
        reader: DynStorage,
        counter: RequestCounter,
        trips: RoundTrips,
        listed: Arc<AtomicU64>,
        writer: DynStorage,
        kind: VaultKind,
    ) -> Self {
        Self {
            reader,
            counter,
            trips,
            listed,
            writer,
            kind,
            previous: Mutex::default(),
        }
    }

    /// Resets the reader's counters.
    pub fn reset(&self) {
        self.counter.reset();
        self.trips.reset();
        self.listed.store(0, Ordering::SeqCst);
    }

    /// True when bytes on this vault are not on a wire (local folder).
    pub fn is_local(&self) -> bool {
        matches!(self.kind, VaultKind::Objects { local: true, .. })
    }

    /// The seed app's poll: list every chat's id and timestamp and diff it
    /// against the previous listing. On an object store that is a LIST of
    /// `rec/` (one object per record version); on Supabase a select of
    /// `chat, updated_at` from the records table through the gateway,
    /// which cuts it at max rows.
    pub async fn seed_style_poll(&self) -> Result<SeedPoll> {
        let (listing, requests, sent, received) = match &self.kind {
            VaultKind::Objects {
                raw,
                raw_counter,
                prefix,
                ..
            } => {
                raw_counter.reset();
                let rec = prefix.child("rec");
                let objects: Vec<ObjectMeta> = raw
                    .list(Some(&rec))
                    .try_collect()
                    .await
                    .map_err(|e| chatvault::core::Error::unavailable("seed-style LIST", e))?;
                let mut listing = HashMap::new();
                for object in objects {
                    // rec/<chat>/<version>-<write>: the newest name wins.
                    let mut parts = object.location.parts().skip(prefix.parts().count() + 1);
                    let (Some(chat), Some(name)) = (parts.next(), parts.next()) else {
                        continue;
                    };
                    let entry = listing
                        .entry(chat.as_ref().to_owned())
                        .or_insert_with(String::new);
                    let stamp = format!("{}|{}", name.as_ref(), object.last_modified);
                    if stamp > *entry {
                        *entry = stamp;
                    }
                }
                let (requests, sent, received) = totals(raw_counter);
                (listing, requests, sent, received)
            }
            VaultKind::Supabase {
                url,
                anon_key,
                token,
                ..
            } => {
                let http = reqwest::Client::new();
                let request = http
                    .post(format!("{url}/rest/v1/rpc/bench_seed_style_poll"))
                    .header("apikey", anon_key)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .header("accept", "application/json")
                    .body("{}")
                    .build()
                    .map_err(|e| chatvault::core::Error::invalid(e.to_string()))?;
                // Counted as the backend counts its own requests: request
                // line, headers and body; status line, headers and body.
                let sent = request_len(&request);
                let response = http
                    .execute(request)
                    .await
                    .map_err(|e| chatvault::core::Error::unavailable("seed-style select", e))?;
                let head = 17 + headers_len(response.headers());
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| chatvault::core::Error::unavailable("seed-style select", e))?;
                let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).map_err(|e| {
                    chatvault::core::Error::invalid(format!("seed-style rows: {e}"))
                })?;
                let listing = rows
                    .iter()
                    .map(|row| (row["chat"].to_string(), row["updated_at"].to_string()))
                    .collect();
                (listing, 1, sent as u64, (head + body.len()) as u64)
            }
        };
        let mut previous = self.previous.lock().expect("previous listing");
        let changed = listing
            .iter()
            .filter(|(chat, stamp)| previous.get(*chat).is_some_and(|old| old != *stamp))
            .count() as u64;
        let missing = if previous.is_empty() {
            0
        } else {
            previous
                .keys()
                .filter(|c| !listing.contains_key(*c))
                .count() as u64
        };
        let seen = listing.len() as u64;
        if previous.is_empty() || previous.len() < listing.len() {
            *previous = listing;
        }
        Ok(SeedPoll {
            requests,
            sent,
            received,
            seen,
            changed,
            missing,
        })
    }

    /// Writes `records` the rawest way this server takes them, returning
    /// the wall time: one object per record (summary and body bytes) with
    /// [`RAW_PUT_CONCURRENCY`] requests in flight on an object store; on
    /// Supabase, the backend's own batched push RPC without the engine.
    pub async fn raw_puts(&self, records: Vec<SealedRecord>) -> Result<Duration> {
        let start = Instant::now();
        match &self.kind {
            VaultKind::Objects { raw, prefix, .. } => {
                let puts = records.into_iter().map(|record| {
                    let location = prefix.child("raw").child(record.chat.to_string());
                    let mut bytes = record.summary.to_vec();
                    bytes.extend_from_slice(record.body.as_deref().unwrap_or_default());
                    let raw = raw.clone();
                    async move { raw.put(&location, bytes.into()).await }
                });
                futures::stream::iter(puts)
                    .buffer_unordered(RAW_PUT_CONCURRENCY)
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| chatvault::core::Error::unavailable("raw put", e))?;
            }
            VaultKind::Supabase { raw, .. } => {
                let batch = raw.capabilities().max_batch.max(1);
                let mut records = records.into_iter().peekable();
                while records.peek().is_some() {
                    let chunk: Vec<_> = records
                        .by_ref()
                        .take(batch)
                        .map(|r| (r, PutPrecondition::Absent))
                        .collect();
                    for result in raw.put_batch(chunk).await {
                        result?;
                    }
                }
            }
        }
        Ok(start.elapsed())
    }
}

#[allow(dead_code)] // The attachment bench's; the scale bench does not use it.
impl Vault {
    /// The raw baseline of an attachment round trip on an object store:
    /// the file at `file` read in `piece`-byte pieces, each put as one
    /// object through the same store, `in_flight` requests at a time (as
    /// the attachment upload sends); then got back with as many in flight
    /// and written to `out` in order (synced, as `save_attachment` does).
    /// Returns (upload, download) wall times; `None` on Supabase (no raw
    /// blob path without the backend).
    pub async fn raw_file_round_trip(
        &self,
        file: &std::path::Path,
        piece: usize,
        in_flight: usize,
        out: &std::path::Path,
    ) -> Result<Option<(Duration, Duration)>> {
        use std::io::{Read, Write};
        let VaultKind::Objects { raw, prefix, .. } = &self.kind else {
            return Ok(None);
        };
        let io = |e: std::io::Error| chatvault::core::Error::local("raw baseline file", e);
        let store = |e: object_store::Error| chatvault::core::Error::unavailable("raw baseline", e);
        let location = |i: usize| prefix.child("rawfile").child(i.to_string());
        let start = Instant::now();
        let mut input = std::fs::File::open(file).map_err(io)?;
        let mut pieces = 0usize;
        let reads = std::iter::from_fn(|| {
            let mut buf = vec![0u8; piece];
            let mut filled = 0;
            while filled < piece {
                match input.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => return Some(Err(io(e))),
                }
            }
            if filled == 0 {
                return None;
            }
            buf.truncate(filled);
            pieces += 1;
            Some(Ok((pieces - 1, buf)))
        });
        futures::stream::iter(reads)
            .map(|read| {
                let raw = raw.clone();
                async move {
                    let (i, buf) = read?;
                    raw.put(&location(i), Bytes::from(buf).into())
                        .await
                        .map_err(store)
                }
            })
            .buffer_unordered(in_flight)
            .try_collect::<Vec<_>>()
            .await?;
        let upload = start.elapsed();
        let start = Instant::now();
        let mut output = std::fs::File::create(out).map_err(io)?;
        let mut gets = futures::stream::iter(0..pieces)
            .map(|i| {
                let raw = raw.clone();
                let at = location(i);
                async move { raw.get(&at).await?.bytes().await }
            })
            .buffered(in_flight);
        while let Some(bytes) = gets.next().await {
            output.write_all(&bytes.map_err(store)?).map_err(io)?;
        }
        output.sync_all().map_err(io)?;
        Ok(Some((upload, start.elapsed())))
    }
}

/// Requests, bytes sent and bytes received in `counter`.
pub fn totals(counter: &RequestCounter) -> (u64, u64, u64) {
    let snapshot = counter.snapshot();
    let requests = snapshot.values().map(|c| c.calls).sum();
    let sent = snapshot.values().map(|c| c.bytes_sent).sum();
    let received = snapshot.values().map(|c| c.bytes_received).sum();
    (requests, sent, received)
}

fn request_len(request: &reqwest::Request) -> usize {
    let url = request.url();
    let line = request.method().as_str().len()
        + url.path().len()
        + 12
        + url.host_str().map_or(0, str::len)
        + 8
        + 2;
    let body = request
        .body()
        .and_then(|b| b.as_bytes())
        .map_or(0, <[u8]>::len);
    line + headers_len(request.headers()) + body
}

fn headers_len(headers: &reqwest::header::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}
