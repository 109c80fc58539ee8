//! One forwarding [`ObjectStore`] wrapper for every layer that only watches,
//! delays or fails requests: [`HookedStore`] forwards each method of the
//! trait, the provided ones included, to the inner store and calls a
//! [`StoreHook`] around it. A layer writes only the hook methods it needs
//! (in the spirit of OpenDAL's `LayeredAccessor`), so no layer can forget a
//! method and silently change what the inner store does.
//!
//! The conveniences `put`, `put_multipart` and `get` keep the trait's
//! bodies, which call `put_opts`, `put_multipart_opts` and `get_opts` on
//! this wrapper, so they pass the hook once.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// A kind of request to an [`ObjectStore`], as a [`StoreHook`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOp {
    /// `put_opts` (and `put`).
    Put,
    /// `put_multipart_opts` (and `put_multipart`): starting an upload.
    PutMultipart,
    /// `get_opts` without `head`, `get_range`, `get_ranges` (and `get`).
    Get,
    /// `head`, or `get_opts` with `head` set.
    Head,
    /// `delete`, and each location of `delete_stream`.
    Delete,
    /// `list`, `list_with_offset` and `list_with_delimiter`.
    List,
    /// `copy` and `copy_if_not_exists`.
    Copy,
    /// `rename` and `rename_if_not_exists`.
    Rename,
}

impl StoreOp {
    /// The operation's name: `put`, `put_multipart`, `get`, `head`,
    /// `delete`, `list`, `copy` or `rename`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::PutMultipart => "put_multipart",
            Self::Get => "get",
            Self::Head => "head",
            Self::Delete => "delete",
            Self::List => "list",
            Self::Copy => "copy",
            Self::Rename => "rename",
        }
    }

    /// Whether the operation changes what the store holds.
    pub fn writes(self) -> bool {
        matches!(
            self,
            Self::Put | Self::PutMultipart | Self::Delete | Self::Copy | Self::Rename
        )
    }
}

/// What a [`HookedStore`] calls around the requests it forwards. Every
/// method has a body that does nothing, so a hook names only what it adds.
#[async_trait]
pub trait StoreHook: Send + Sync + fmt::Debug + 'static {
    /// Called before each request (`location` is the object's, a copy's or
    /// rename's source, or a listing's prefix). An error fails the request
    /// without the inner store seeing it.
    fn before(&self, op: StoreOp, location: Option<&Path>) -> object_store::Result<()> {
        let _ = (op, location);
        Ok(())
    }

    /// Called first for each request but listings (whose streams are made
    /// without waiting): a hook that holds requests back, as a slow server
    /// does, waits here. Dropping the request while it waits cancels it.
    async fn wait(&self, op: StoreOp, location: Option<&Path>) {
        let _ = (op, location);
    }

    /// Decides each request after [`wait`](Self::wait): `Err` fails it
    /// without the inner store seeing it, `Ok(None)` sends it, and
    /// `Ok(Some(error))` sends it and answers `error` whatever the store
    /// answered (the request took effect and its response was lost). By
    /// default what [`before`](Self::before) says.
    fn decide(
        &self,
        op: StoreOp,
        location: Option<&Path>,
    ) -> object_store::Result<Option<object_store::Error>> {
        self.before(op, location).map(|()| None)
    }

    /// Called when a request that passed [`before`](Self::before) has
    /// returned, whether it succeeded or not, with the payload bytes it
    /// sent and received: a put's payload; a get's range as the response
    /// announces it (its body is read later) or the bytes a range read
    /// returned; 0 otherwise. A listing counts when its stream is made, and
    /// `delete_stream` once for each location it reports.
    fn after(&self, op: StoreOp, bytes_sent: u64, bytes_received: u64) {
        let _ = (op, bytes_sent, bytes_received);
    }

    /// Called after a `put_opts` succeeded and before it returns, to make
    /// the object durable; an error fails the put.
    async fn after_put(&self, location: &Path) -> object_store::Result<()> {
        let _ = location;
        Ok(())
    }

    /// A listing in place of the inner store's for `list` (`offset`:
    /// `None`) and `list_with_offset`; `None` keeps the inner store's.
    fn list(
        &self,
        prefix: Option<&Path>,
        offset: Option<&Path>,
    ) -> Option<BoxStream<'static, object_store::Result<ObjectMeta>>> {
        let _ = (prefix, offset);
        None
    }

    /// A successful `get_opts` response, to watch or change its body as it
    /// is read; by default unchanged.
    fn get_result(&self, location: &Path, result: GetResult) -> GetResult {
        let _ = location;
        result
    }

    /// The listing `list` and `list_with_offset` return (the inner store's,
    /// or [`list`](Self::list)'s), to filter or watch; by default unchanged.
    fn listed(
        &self,
        listing: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        listing
    }

    /// How the wrapped store displays; by default as the inner store.
    fn fmt_store(&self, inner: &dyn ObjectStore, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(inner, f)
    }
}

/// An [`ObjectStore`] that forwards every request to `inner`, calling
/// `hook` around it (see [`StoreHook`]).
#[derive(Debug)]
pub struct HookedStore<H: StoreHook> {
    inner: Arc<dyn ObjectStore>,
    hook: H,
}

impl<H: StoreHook> HookedStore<H> {
    /// Wraps `inner`, calling `hook` around each request.
    pub fn new(inner: Arc<dyn ObjectStore>, hook: H) -> Self {
        Self { inner, hook }
    }

    /// The store requests are forwarded to.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The hook called around each request.
    pub fn hook(&self) -> &H {
        &self.hook
    }

    /// Runs `request` between the hook's `wait` and `decide` and its
    /// `after`, `received` measuring what a successful result received.
    async fn call<T>(
        &self,
        op: StoreOp,
        location: Option<&Path>,
        sent: u64,
        request: impl std::future::Future<Output = object_store::Result<T>>,
        received: impl FnOnce(&T) -> u64,
    ) -> object_store::Result<T> {
        self.hook.wait(op, location).await;
        let answer = self.hook.decide(op, location)?;
        let result = request.await;
        self.hook
            .after(op, sent, result.as_ref().map_or(0, received));
        match answer {
            Some(error) => Err(error),
            None => result,
        }
    }

    fn listing(
        &self,
        prefix: Option<&Path>,
        offset: Option<&Path>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let answer = match self.hook.decide(StoreOp::List, prefix) {
            Ok(answer) => answer,
            Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
        };
        let stream = self
            .hook
            .list(prefix, offset)
            .unwrap_or_else(|| match offset {
                Some(offset) => self.inner.list_with_offset(prefix, offset),
                None => self.inner.list(prefix),
            });
        self.hook.after(StoreOp::List, 0, 0);
        match answer {
            Some(error) => futures::stream::once(async { Err(error) }).boxed(),
            None => self.hook.listed(stream),
        }
    }
}

fn nothing<T>(_: &T) -> u64 {
    0
}

impl<H: StoreHook> fmt::Display for HookedStore<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.hook.fmt_store(self.inner.as_ref(), f)
    }
}

#[async_trait]
impl<H: StoreHook> ObjectStore for HookedStore<H> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let sent = payload.content_length() as u64;
        let put = async {
            let result = self.inner.put_opts(location, payload, opts).await?;
            self.hook.after_put(location).await?;
            Ok(result)
        };
        self.call(StoreOp::Put, Some(location), sent, put, nothing)
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts);
        self.call(StoreOp::PutMultipart, Some(location), 0, upload, nothing)
            .await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let head = options.head;
        let op = if head { StoreOp::Head } else { StoreOp::Get };
        let get = self.inner.get_opts(location, options);
        let result = self
            .call(op, Some(location), 0, get, |r| {
                if head {
                    0
                } else {
                    r.range.end.saturating_sub(r.range.start)
                }
            })
            .await?;
        Ok(self.hook.get_result(location, result))
    }

    async fn get_range(&self, location: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        let get = self.inner.get_range(location, range);
        self.call(StoreOp::Get, Some(location), 0, get, |b| b.len() as u64)
            .await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let get = self.inner.get_ranges(location, ranges);
        self.call(StoreOp::Get, Some(location), 0, get, |parts| {
            parts.iter().map(|b| b.len() as u64).sum()
        })
        .await
    }

    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        let head = self.inner.head(location);
        self.call(StoreOp::Head, Some(location), 0, head, nothing)
            .await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        let delete = self.inner.delete(location);
        self.call(StoreOp::Delete, Some(location), 0, delete, nothing)
            .await
    }

    fn delete_stream<'a>(
        &'a self,
        locations: BoxStream<'a, object_store::Result<Path>>,
    ) -> BoxStream<'a, object_store::Result<Path>> {
        let hook = &self.hook;
        // Deletions the hook sends and then answers with an error of its own.
        let answers: Arc<Mutex<HashMap<Path, object_store::Error>>> = Arc::default();
        let noted = Arc::clone(&answers);
        let locations = locations
            .then(move |location| {
                let noted = Arc::clone(&noted);
                async move {
                    let location = location?;
                    hook.wait(StoreOp::Delete, Some(&location)).await;
                    if let Some(error) = hook.decide(StoreOp::Delete, Some(&location))? {
                        if let Ok(mut noted) = noted.lock() {
                            noted.insert(location.clone(), error);
                        }
                    }
                    Ok(location)
                }
            })
            .boxed();
        self.inner
            .delete_stream(locations)
            .map(move |deleted| {
                hook.after(StoreOp::Delete, 0, 0);
                let location = deleted?;
                match answers.lock().ok().and_then(|mut a| a.remove(&location)) {
                    Some(error) => Err(error),
                    None => Ok(location),
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.listing(prefix, None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.listing(prefix, Some(offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let list = self.inner.list_with_delimiter(prefix);
        self.call(StoreOp::List, prefix, 0, list, nothing).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        let copy = self.inner.copy(from, to);
        self.call(StoreOp::Copy, Some(from), 0, copy, nothing).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        let rename = self.inner.rename(from, to);
        self.call(StoreOp::Rename, Some(from), 0, rename, nothing)
            .await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        let copy = self.inner.copy_if_not_exists(from, to);
        self.call(StoreOp::Copy, Some(from), 0, copy, nothing).await
    }

    async fn rename_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        let rename = self.inner.rename_if_not_exists(from, to);
        self.call(StoreOp::Rename, Some(from), 0, rename, nothing)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use std::sync::Mutex;

    /// Records what it sees and fails every write when `fail` is set.
    #[derive(Debug, Default)]
    struct Log {
        seen: Mutex<Vec<(StoreOp, u64, u64)>>,
        fail: bool,
    }

    impl StoreHook for Log {
        fn before(&self, op: StoreOp, _: Option<&Path>) -> object_store::Result<()> {
            if self.fail && op.writes() {
                return Err(object_store::Error::NotImplemented);
            }
            Ok(())
        }

        fn after(&self, op: StoreOp, sent: u64, received: u64) {
            self.seen.lock().unwrap().push((op, sent, received));
        }
    }

    #[tokio::test]
    async fn every_request_passes_the_hook_once() {
        let store = HookedStore::new(Arc::new(InMemory::new()), Log::default());
        let path = Path::from("a/b");
        store
            .put(&path, PutPayload::from_static(b"hello"))
            .await
            .unwrap();
        store.get(&path).await.unwrap();
        store.get_range(&path, 1..3).await.unwrap();
        store.head(&path).await.unwrap();
        store.list(None).try_collect::<Vec<_>>().await.unwrap();
        store.copy(&path, &Path::from("c")).await.unwrap();
        store
            .rename(&Path::from("c"), &Path::from("d"))
            .await
            .unwrap();
        let gone = futures::stream::iter([Ok(Path::from("d"))]).boxed();
        store
            .delete_stream(gone)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        use StoreOp::*;
        assert_eq!(
            *store.hook().seen.lock().unwrap(),
            [
                (Put, 5, 0),
                (Get, 0, 5),
                (Get, 0, 2),
                (Head, 0, 0),
                (List, 0, 0),
                (Copy, 0, 0),
                (Rename, 0, 0),
                (Delete, 0, 0),
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_hook_keeps_the_request_from_the_store() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let hook = Log {
            fail: true,
            ..Log::default()
        };
        let store = HookedStore::new(Arc::clone(&inner), hook);
        let path = Path::from("a");
        assert!(store
            .put(&path, PutPayload::from_static(b"x"))
            .await
            .is_err());
        assert!(inner.head(&path).await.is_err());
        assert!(store.hook().seen.lock().unwrap().is_empty());
    }
}
