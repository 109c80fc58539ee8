//! [`Objects`]: the vault's objects in the store, as the components see
//! them: named by the [`Layout`], listed by number, read with a cap (every
//! object is read with a limit the format sets, so a damaged or hostile
//! store cannot make a device download or hold more than a well-formed
//! vault ever needs; `docs/design.md` §5), created with create-if-absent,
//! deleted in bulk.

use crate::counted::Counted;
use crate::error::map_store_error;
use crate::hooked::HookedStore;
use crate::layout::{ForeignFiles, Layout, WriteId};
use crate::read::CappedStream;
use bytes::Bytes;
use chatvault_core::{ChatId, Error, Result};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, PutMode, PutOptions, PutResult};
use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

/// A vault's objects under its prefix, reached through a request counter.
#[derive(Debug)]
pub(crate) struct Objects {
    /// `raw` behind a request counter (see [`crate::counted`]).
    store: Arc<dyn ObjectStore>,
    raw: Arc<dyn ObjectStore>,
    layout: Layout,
    foreign: ForeignFiles,
    /// Requests in flight at once for bulk work.
    concurrency: usize,
}

impl Objects {
    /// The objects under `prefix` in `store`.
    pub(crate) fn new(store: Arc<dyn ObjectStore>, prefix: &Path, concurrency: usize) -> Self {
        Self {
            store: Arc::new(HookedStore::new(Arc::clone(&store), Counted)),
            raw: store,
            layout: Layout::new(prefix),
            foreign: ForeignFiles::default(),
            concurrency,
        }
    }

    /// Where each kind of object lives.
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The store requests go to (counted).
    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Reports a name that is not part of the layout (once per name).
    pub(crate) fn report_foreign(&self, location: &Path) {
        self.foreign.report(location);
    }

    /// The caller's store, without the counter.
    pub(crate) fn raw(&self) -> &Arc<dyn ObjectStore> {
        &self.raw
    }

    /// Numbered objects directly inside `dir` after `after`, ascending.
    /// Foreign objects are reported and skipped.
    pub(crate) async fn list_numbered(
        &self,
        dir: &Path,
        after: u64,
    ) -> Result<Vec<(u64, ObjectMeta)>> {
        let offset = Layout::numbered_path(dir, after);
        let mut stream = self.store.list_with_offset(Some(dir), &offset);
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        while let Some(item) = stream.next().await {
            match item {
                // A listing that repeats a name is a paging loop making no
                // progress (a server handing back the same continuation):
                // stop rather than list forever.
                Ok(meta) if !seen.insert(meta.location.clone()) => {
                    return Err(no_progress(dir, &meta.location));
                }
                Ok(meta) => match Layout::numbered_child(dir, &meta.location) {
                    Some(n) if n > after => found.push((n, meta)),
                    Some(_) => {}
                    None => self.foreign.report(&meta.location),
                },
                // A local file whose name is not a valid object path (control
                // characters, not UTF-8): foreign by definition.
                Err(object_store::Error::InvalidPath { source }) => {
                    tracing::warn!(dir = %dir, error = %source, "ignoring an object with an invalid name");
                }
                Err(e) => return Err(map_store_error(e, &format!("listing {dir}"))),
            }
        }
        found.sort_by_key(|(n, _)| *n);
        found.dedup_by_key(|(n, _)| *n);
        Ok(found)
    }

    /// Every record blob with its parsed name, for compaction; foreign
    /// names are reported and skipped.
    pub(crate) async fn list_blobs(&self) -> Result<Vec<((ChatId, u64, WriteId), ObjectMeta)>> {
        let dir = self.layout.rec_dir();
        let mut blobs = Vec::new();
        let mut seen = HashSet::new();
        let mut listing = self.store.list(Some(dir));
        while let Some(item) = listing.next().await {
            let meta = match item {
                Ok(meta) if !seen.insert(meta.location.clone()) => {
                    return Err(no_progress(dir, &meta.location));
                }
                Ok(meta) => meta,
                Err(object_store::Error::InvalidPath { .. }) => continue,
                Err(e) => return Err(map_store_error(e, "listing record blobs")),
            };
            match self.layout.parse_blob(&meta.location) {
                Some(key) => blobs.push((key, meta)),
                None => self.foreign.report(&meta.location),
            }
        }
        Ok(blobs)
    }

    /// Opens `path` (or a range of it) for reading in chunks, refusing it
    /// as `Corrupt` if it is (or turns out to be) larger than `cap` bytes.
    /// A missing object is `NotFound`.
    pub(crate) async fn open_capped(
        &self,
        path: &Path,
        range: Option<Range<u64>>,
        cap: u64,
    ) -> Result<CappedStream> {
        let what = path.to_string();
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(path, options)
            .await
            .map_err(|e| map_store_error(e, &format!("reading {what}")))?;
        let size = match range {
            Some(range) => range.end.saturating_sub(range.start).min(result.meta.size),
            None => result.meta.size,
        };
        CappedStream::new(what, size, cap, result.into_stream())
    }

    /// Reads `path` whole, at most `cap` bytes (see
    /// [`Objects::open_capped`]).
    pub(crate) async fn read_capped(&self, path: &Path, cap: u64) -> Result<Bytes> {
        self.open_capped(path, None, cap).await?.collect().await
    }

    /// Creates `path` holding `bytes` unless it exists (create-if-absent).
    /// The store's own error, so callers can tell a taken name.
    pub(crate) async fn create(
        &self,
        path: &Path,
        bytes: Bytes,
    ) -> object_store::Result<PutResult> {
        self.store
            .put_opts(path, bytes.into(), PutOptions::from(PutMode::Create))
            .await
    }

    /// Deletes `paths` concurrently; objects already gone count as deleted
    /// by someone else and are not counted.
    pub(crate) async fn delete_all(&self, paths: impl Iterator<Item = Path>) -> Result<usize> {
        let results: Vec<Result<bool>> = futures::stream::iter(paths)
            .map(|path| async move {
                match self.store.delete(&path).await {
                    Ok(()) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(map_store_error(e, &format!("deleting {path}"))),
                }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut deleted = 0;
        for result in results {
            if result? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// The error for a listing that repeats itself.
fn no_progress(dir: &Path, location: &Path) -> Error {
    Error::Unavailable {
        message: format!(
            "the store's listing of {dir} returned {location} twice: its paging makes no \
             progress; retry later"
        ),
        source: None,
    }
}
