//! Counting wrappers for `object_store` stores and HTTP clients (feature
//! `object-store`).

use super::RequestCounter;
use async_trait::async_trait;
use chatvault_object_store::{HookedStore, StoreHook, StoreOp};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::{ClientOptions, ObjectStore};
use std::fmt;

/// Counts the calls made to the wrapped [`ObjectStore`] by operation
/// (`put`, `get`, `head`, `list`, `delete`, `copy`…) and the payload bytes
/// moved; calls pass through unchanged, including the inner store's own
/// `list_with_offset` and range reads.
///
/// One call is one request for most stores; a `list` over many objects may
/// page. [`CountingHttpConnector`] counts the HTTP requests themselves.
/// `CountingObjectStore::new(inner, counter)` wraps a store; its
/// [`hook`](HookedStore::hook) is the counter it records into.
pub type CountingObjectStore = HookedStore<RequestCounter>;

impl StoreHook for RequestCounter {
    fn after(&self, op: StoreOp, bytes_sent: u64, bytes_received: u64) {
        self.record(op.name(), bytes_sent, bytes_received);
    }

    fn fmt_store(&self, inner: &dyn ObjectStore, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({inner})")
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
