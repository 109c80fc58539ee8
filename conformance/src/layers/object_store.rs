//! Counting wrappers for `object_store` stores and HTTP clients (feature
//! `object-store`).

use super::RequestCounter;
use async_trait::async_trait;
use bytes::Bytes;
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
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

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
