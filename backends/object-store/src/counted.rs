//! Counting the requests one task makes, for
//! [`MaintenanceReport::requests`](chatvault_core::MaintenanceReport::requests):
//! every handle talks to its store through [`Counted`], which adds one to
//! the counter of the task it runs in, if that task set one with
//! [`count_requests`]. Other tasks sharing the handle are not counted.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

tokio::task_local! {
    static REQUESTS: Arc<AtomicU64>;
}

/// Runs `work`, returning its output and the requests it made.
pub(crate) async fn count_requests<T>(work: impl Future<Output = T>) -> (T, u64) {
    let counter = Arc::new(AtomicU64::new(0));
    let output = REQUESTS.scope(Arc::clone(&counter), work).await;
    (output, counter.load(Ordering::Relaxed))
}

fn count() {
    let _ = REQUESTS.try_with(|counter| counter.fetch_add(1, Ordering::Relaxed));
}

/// A store that counts requests for the task that makes them.
#[derive(Debug)]
pub(crate) struct Counted(pub(crate) Arc<dyn ObjectStore>);

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[async_trait]
impl ObjectStore for Counted {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        count();
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        count();
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        count();
        self.0.get_opts(location, options).await
    }

    async fn get_range(&self, location: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        count();
        self.0.get_range(location, range).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        count();
        self.0.get_ranges(location, ranges).await
    }

    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        count();
        self.0.head(location).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        count();
        self.0.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        count();
        self.0.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        count();
        self.0.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        count();
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        count();
        self.0.copy(from, to).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        count();
        self.0.rename(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        count();
        self.0.copy_if_not_exists(from, to).await
    }

    async fn rename_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        count();
        self.0.rename_if_not_exists(from, to).await
    }
}
