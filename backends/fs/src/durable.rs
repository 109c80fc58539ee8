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
//! durable before `put` returns. Listings go through [`crate::listing`]. The
//! rest is forwarded by [`HookedStore`].

use async_trait::async_trait;
use chatvault_object_store::{HookedStore, StoreHook};
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

/// A [`LocalFileSystem`] whose puts are durable when they return.
pub(crate) type DurableLocalFileSystem = HookedStore<Durability>;

/// Opens `inner` (rooted at the canonical folder `root`) with fsync after
/// each put when `fsync` is set.
pub(crate) fn durable(
    inner: LocalFileSystem,
    root: PathBuf,
    fsync: bool,
) -> DurableLocalFileSystem {
    let inner = Arc::new(inner);
    let hook = Durability {
        local: Arc::clone(&inner),
        root,
        fsync,
        durable_dirs: Arc::default(),
    };
    HookedStore::new(inner, hook)
}

/// The hook of a [`DurableLocalFileSystem`]: fsync after a put, listings
/// through [`crate::listing`].
#[derive(Debug)]
pub(crate) struct Durability {
    local: Arc<LocalFileSystem>,
    /// The canonical folder `local` is rooted at.
    root: PathBuf,
    fsync: bool,
    /// Directories whose own entry (in their parent) is known durable: a
    /// put walks up from the object's directory and stops at the first one
    /// here, so a directory that a put created (`rec/<chat>/`, a device's
    /// `dev/<vault>.<writer>/` and all below it) is made durable once.
    durable_dirs: Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>>,
}

#[async_trait]
impl StoreHook for Durability {
    /// Fsyncs the file and the directories above it. Multipart uploads are
    /// not used by the layout (every object is written with one put), so
    /// they are passed through without fsync.
    async fn after_put(&self, location: &Path) -> object_store::Result<()> {
        if !self.fsync {
            return Ok(());
        }
        let file = self.local.path_to_filesystem(location)?;
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

    fn list(
        &self,
        prefix: Option<&Path>,
        offset: Option<&Path>,
    ) -> Option<BoxStream<'static, object_store::Result<ObjectMeta>>> {
        let (root, prefix, offset) = (
            self.root.clone(),
            prefix.cloned().unwrap_or_default(),
            offset.cloned(),
        );
        let walk = futures::stream::once(tokio::task::spawn_blocking(move || {
            crate::listing::walk(root, prefix, offset)
        }))
        .flat_map(|joined| {
            let items =
                joined.unwrap_or_else(|e| vec![Err(object_store::Error::JoinError { source: e })]);
            futures::stream::iter(items)
        });
        Some(walk.boxed())
    }

    fn fmt_store(&self, inner: &dyn ObjectStore, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Durable{inner}")
    }
}
