//! `LocalFileSystem` plus fsync.
//!
//! `object_store`'s `LocalFileSystem` writes a staging file and then renames
//! it into place (`PutMode::Overwrite`) or hard-links it
//! (`PutMode::Create`; `link(2)` fails if the name exists, which makes
//! create-if-absent atomic between processes), but it never fsyncs: after a
//! power loss a "written" object may be missing or empty. This wrapper fsyncs
//! the file, its directory, and every directory above that this handle has
//! not yet made durable (up to the vault's root) before a put returns, so the shared-log layout's ordering holds on disk too: a
//! blob is durable before the log slot naming it is created, and a slot is
//! durable before `put` returns. Listings go through [`crate::listing`].

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

/// A [`LocalFileSystem`] whose puts are durable when they return.
#[derive(Debug)]
pub(crate) struct DurableLocalFileSystem {
    inner: Arc<LocalFileSystem>,
    /// The canonical folder `inner` is rooted at.
    root: PathBuf,
    fsync: bool,
    /// Directories whose own entry (in their parent) is known durable: a
    /// put walks up from the object's directory and stops at the first one
    /// here, so a directory that a put created (`rec/<chat>/`, a device's
    /// `dev/<vault>.<writer>/` and all below it) is made durable once.
    durable_dirs: Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>>,
}

impl DurableLocalFileSystem {
    pub(crate) fn new(inner: LocalFileSystem, root: PathBuf, fsync: bool) -> Self {
        Self {
            inner: Arc::new(inner),
            root,
            fsync,
            durable_dirs: Arc::default(),
        }
    }

    fn walk(
        &self,
        prefix: Option<&Path>,
        offset: Option<&Path>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (root, prefix, offset) = (
            self.root.clone(),
            prefix.cloned().unwrap_or_default(),
            offset.cloned(),
        );
        futures::stream::once(tokio::task::spawn_blocking(move || {
            crate::listing::walk(root, prefix, offset)
        }))
        .flat_map(|joined| {
            let items =
                joined.unwrap_or_else(|e| vec![Err(object_store::Error::JoinError { source: e })]);
            futures::stream::iter(items)
        })
        .boxed()
    }

    async fn sync(&self, location: &Path) -> object_store::Result<()> {
        if !self.fsync {
            return Ok(());
        }
        let file = self.inner.path_to_filesystem(location)?;
        let root = self.root.clone();
        let durable = Arc::clone(&self.durable_dirs);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            File::open(&file)?.sync_all()?;
            // The file's entry lives in its directory; a directory the put
            // created lives in its parent, and so on up to the vault's root.
            let known = |dir: &std::path::Path| {
                durable.lock().map(|set| set.contains(dir)).unwrap_or(false)
            };
            let mut below: Option<&std::path::Path> = None;
            for dir in file.ancestors().skip(1) {
                // Directories cannot be opened for fsync on every platform
                // (Windows); the file itself is what matters most there.
                if let Ok(handle) = File::open(dir) {
                    handle.sync_all()?;
                }
                // `dir` now holds the entry of what is below it durably.
                if let (Some(child), Ok(mut set)) = (below, durable.lock()) {
                    set.insert(child.to_path_buf());
                }
                if dir == root || !dir.starts_with(&root) || known(dir) {
                    break;
                }
                below = Some(dir);
            }
            Ok(())
        })
        .await
        .map_err(|e| object_store::Error::JoinError { source: e })?
        .map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })
    }
}

impl fmt::Display for DurableLocalFileSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Durable{}", self.inner)
    }
}

#[async_trait]
impl ObjectStore for DurableLocalFileSystem {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let result = self.inner.put_opts(location, payload, opts).await?;
        self.sync(location).await?;
        Ok(result)
    }

    /// Not used by the layout (every object is written with one put), so
    /// multipart uploads are passed through without fsync.
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.walk(prefix, None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.walk(prefix, Some(offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}
