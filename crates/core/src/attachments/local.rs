//! This device's directory of sealed blobs: the staging area for uploads
//! (with markers saying what has not reached the server yet) and the
//! download cache, kept within a byte budget.
//!
//! Layout, beside the replica file (`docs/design.md` §10.6):
//!
//! - `sealed/<64hex>`: a sealed blob (chunk or manifest), exactly as the
//!   server stores it;
//! - `pending/<64hex>`: an empty marker: that sealed blob is not known to
//!   be on the server yet (never evicted while the marker exists);
//! - `outgoing/<64hex>`: per staged attachment (named by its manifest),
//!   the blobs to upload in order (chunks, then the manifest) and the
//!   chats whose records must wait for them.
//!
//! Staged blobs are written unsynced to temporary names, then committed
//! together (markers and their directory synced, then each blob synced
//! and renamed, then its directory synced) before the `outgoing` entry is
//! written, synced and renamed; cached blobs are not synced (a torn one is
//! fetched again). A crash leaves either the old state or the new one, or
//! temporary files and markers that name nothing.

use crate::ids::{BlobId, ChatId};
use crate::storage::DynStorage;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

/// An attachment staged for upload: what `outgoing/<manifest>` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Outgoing {
    /// The chats whose records wait until every blob below is on the server.
    chats: BTreeSet<ChatId>,
    /// The blobs to upload, in order: every chunk, then the manifest.
    blobs: Vec<BlobId>,
}

/// What one round of uploads did.
#[derive(Debug, Default)]
pub struct Uploaded {
    /// Blobs sent.
    pub blobs: usize,
    /// Their sealed bytes.
    pub bytes: u64,
    /// Chats whose records must not be pushed yet: an attachment of theirs
    /// was refused by the server for good, with the reason.
    pub waiting: Vec<(ChatId, String)>,
    /// The first refusal behind [`waiting`](Self::waiting).
    pub refused: Option<Error>,
}

/// This device's sealed-blob directory (see the module docs).
#[derive(Debug)]
pub struct BlobDir {
    root: PathBuf,
    budget: u64,
    /// Held while an `outgoing/` entry is read, changed and written back,
    /// so two attaches of one file do not drop each other's chat.
    outgoing_lock: Mutex<()>,
}

/// Threads that sync staged blobs at once.
const SYNC_THREADS: usize = 4;

/// Blob uploads one attachment keeps in flight.
const UPLOADS_IN_FLIGHT: usize = 4;

/// A blob [`BlobDir::stage`] wrote to a temporary file, for
/// [`BlobDir::commit_staged`].
#[derive(Debug)]
pub struct Staged {
    id: BlobId,
    tmp: PathBuf,
}

/// Syncs directory `dir`, so the names created, renamed or removed in it
/// last.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| local("cannot sync", dir, e))
}

fn local(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::local(format!("{what} {}", path.display()), e)
}

impl BlobDir {
    /// The directory at `root` (created when first written), whose cached
    /// blobs are evicted oldest-used first beyond `budget` bytes. Blobs
    /// waiting for upload are never evicted and do not count against it.
    pub fn new(root: impl Into<PathBuf>, budget: u64) -> Self {
        Self {
            root: root.into(),
            budget,
            outgoing_lock: Mutex::new(()),
        }
    }

    fn lock_outgoing(&self) -> MutexGuard<'_, ()> {
        // Guards no data: a panic elsewhere leaves nothing half-updated.
        self.outgoing_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    fn file(&self, kind: &str, id: &BlobId) -> PathBuf {
        self.root.join(kind).join(id.to_string())
    }

    fn write_atomic(&self, kind: &str, id: &BlobId, bytes: &[u8]) -> Result<()> {
        self.write_file(kind, id, bytes, true)
    }

    /// Writes `bytes` to `<kind>/<id>` through a temporary file renamed
    /// into place, synced first when `durable`.
    fn write_file(&self, kind: &str, id: &BlobId, bytes: &[u8], durable: bool) -> Result<()> {
        let dir = self.root.join(kind);
        std::fs::create_dir_all(&dir).map_err(|e| local("cannot create", &dir, e))?;
        let path = dir.join(id.to_string());
        // Unique per write, not only per process: two tasks staging the
        // same blob (one file attached to two chats at once, or two empty
        // files) must not write, truncate and rename one temporary file.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{id}.{}.{n}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            if durable {
                file.sync_all()?;
            }
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            // Best effort: a leftover temporary file is only wasted space.
            let _ = std::fs::remove_file(&tmp);
            local("cannot write", &path, e)
        })
    }

    /// True if the sealed blob `id` is here.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.file("sealed", id).is_file()
    }

    /// The sealed blob `id`, if it is here (and marks it used, for the
    /// eviction order).
    pub fn get(&self, id: &BlobId) -> Result<Option<Vec<u8>>> {
        let path = self.file("sealed", id);
        match std::fs::read(&path) {
            Ok(bytes) => {
                // Only the eviction order depends on it.
                if let Ok(file) = std::fs::File::options().append(true).open(&path) {
                    let _ = file.set_modified(SystemTime::now());
                }
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(local("cannot read", &path, e)),
        }
    }

    /// Keeps the sealed blob `id` fetched from the server, as a cache
    /// entry. Not synced: after a crash an entry may be empty or torn,
    /// which [`forget`](Self::forget) handles (the reader refetches).
    pub fn cache(&self, id: &BlobId, sealed: &[u8]) -> Result<()> {
        self.write_file("sealed", id, sealed, false)
    }

    /// Drops the cached copy of `id` if it does not open (a torn cache
    /// entry); returns false, keeping it, if it is staged for upload (then
    /// it is this device's only copy, and the damage is reported).
    pub fn forget(&self, id: &BlobId) -> Result<bool> {
        if self.file("pending", id).is_file() {
            return Ok(false);
        }
        let path = self.file("sealed", id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(local("cannot remove", &path, e)),
        }
    }

    /// Writes the sealed blob `id` to a temporary file, unsynced, for
    /// [`commit_staged`](Self::commit_staged) to put in place; `None` if the
    /// blob is here already (the same content attached, or fetched, before).
    pub fn stage(&self, id: &BlobId, sealed: &[u8]) -> Result<Option<Staged>> {
        if self.contains(id) {
            return Ok(None);
        }
        let dir = self.root.join("sealed");
        std::fs::create_dir_all(&dir).map_err(|e| local("cannot create", &dir, e))?;
        static STAGED: AtomicU64 = AtomicU64::new(0);
        let n = STAGED.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{id}.{}.{n}.staged", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(sealed)
        };
        write().map_err(|e| {
            // Best effort: a leftover temporary file is only wasted space.
            let _ = std::fs::remove_file(&tmp);
            local("cannot write", &tmp, e)
        })?;
        Ok(Some(Staged { id: *id, tmp }))
    }

    /// Puts the blobs [`stage`](Self::stage) wrote in place, durably, with
    /// one synced directory per step instead of two syncs per blob: first
    /// every pending marker (and the `pending/` directory synced), then
    /// every blob synced and renamed into `sealed/` (and that directory
    /// synced). So a blob under its final name always carries a durable
    /// marker until it is uploaded, and is always whole; a crash before
    /// this ends leaves only temporary files and markers without blobs,
    /// which name nothing.
    pub fn commit_staged(&self, staged: Vec<Staged>) -> Result<()> {
        if staged.is_empty() {
            return Ok(());
        }
        let pending = self.root.join("pending");
        std::fs::create_dir_all(&pending).map_err(|e| local("cannot create", &pending, e))?;
        for blob in &staged {
            let marker = self.file("pending", &blob.id);
            std::fs::File::create(&marker).map_err(|e| local("cannot write", &marker, e))?;
        }
        sync_dir(&pending)?;
        // The syncs overlap on a few threads; each blob is renamed once it
        // is synced.
        let commit = |blob: &Staged| -> Result<()> {
            let path = self.file("sealed", &blob.id);
            let commit = || -> std::io::Result<()> {
                std::fs::File::options()
                    .write(true)
                    .open(&blob.tmp)?
                    .sync_all()?;
                std::fs::rename(&blob.tmp, &path)
            };
            commit().map_err(|e| {
                let _ = std::fs::remove_file(&blob.tmp);
                local("cannot write", &path, e)
            })
        };
        let per_thread = staged.len().div_ceil(SYNC_THREADS);
        std::thread::scope(|scope| {
            let workers: Vec<_> = staged
                .chunks(per_thread)
                .map(|part| scope.spawn(move || part.iter().try_for_each(commit)))
                .collect();
            workers.into_iter().try_for_each(|worker| {
                worker.join().unwrap_or_else(|_| {
                    Err(Error::local(
                        "a staging thread panicked",
                        std::io::Error::other("panic"),
                    ))
                })
            })
        })?;
        sync_dir(&self.root.join("sealed"))
    }

    /// Records that `chat`'s records wait for the staged attachment whose
    /// manifest is `manifest` and whose blobs are `blobs` (chunks, then the
    /// manifest). Written after every blob is staged; adds `chat` if the
    /// attachment is already waiting for other chats.
    pub fn hold(&self, manifest: &BlobId, blobs: Vec<BlobId>, chat: ChatId) -> Result<()> {
        let _outgoing = self.lock_outgoing();
        let mut outgoing = self.outgoing(manifest)?.unwrap_or_default();
        if !blobs.iter().any(|id| self.file("pending", id).is_file()) {
            // Everything is on the server already: nothing to wait for.
            return Ok(());
        }
        outgoing.blobs = blobs;
        outgoing.chats.insert(chat);
        let json = serde_json::to_vec(&outgoing)
            .map_err(|e| Error::local("cannot encode an upload marker", e))?;
        self.write_atomic("outgoing", manifest, &json)?;
        sync_dir(&self.root.join("outgoing"))
    }

    /// Adds `chat` to the chats waiting for the staged attachment
    /// `manifest`, if it is still waiting for upload (a message in another
    /// chat than the one it was attached to carries it).
    pub fn also_hold(&self, manifest: &BlobId, chat: ChatId) -> Result<()> {
        let _outgoing = self.lock_outgoing();
        match self.outgoing(manifest)? {
            Some(mut outgoing) if !outgoing.chats.contains(&chat) => {
                outgoing.chats.insert(chat);
                let json = serde_json::to_vec(&outgoing)
                    .map_err(|e| Error::local("cannot encode an upload marker", e))?;
                self.write_atomic("outgoing", manifest, &json)
            }
            _ => Ok(()),
        }
    }

    fn outgoing(&self, manifest: &BlobId) -> Result<Option<Outgoing>> {
        let path = self.file("outgoing", manifest);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::local(
                    format!("the upload marker {} does not read", path.display()),
                    e,
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(local("cannot read", &path, e)),
        }
    }

    fn ids(&self, kind: &str) -> Result<Vec<BlobId>> {
        let dir = self.root.join(kind);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(local("cannot list", &dir, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| local("cannot list", &dir, e))?;
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The blobs staged here and not yet known to be on the server.
    pub fn staged(&self) -> Result<Vec<BlobId>> {
        self.ids("pending")
    }

    /// The chats whose records wait for a staged attachment.
    pub fn waiting_chats(&self) -> Result<BTreeSet<ChatId>> {
        let mut chats = BTreeSet::new();
        for manifest in self.ids("outgoing")? {
            if let Some(outgoing) = self.outgoing(&manifest)? {
                chats.extend(outgoing.chats);
            }
        }
        Ok(chats)
    }

    /// Uploads every staged attachment, each blob at most once more after
    /// a crash (a blob's marker goes only once the server has it). A
    /// retriable failure (the network, a busy server) stops the round and
    /// is returned: nothing waiting for it may be pushed. An attachment
    /// whose upload is refused for good stays staged and its chats are
    /// reported in [`Uploaded::waiting`], while the others go on.
    pub async fn upload(&self, storage: &DynStorage) -> Result<Uploaded> {
        let mut report = Uploaded::default();
        for manifest in self.ids("outgoing")? {
            let Some(outgoing) = self.outgoing(&manifest)? else {
                continue;
            };
            match self.upload_one(storage, &outgoing, &mut report).await {
                Ok(()) => {
                    let path = self.file("outgoing", &manifest);
                    std::fs::remove_file(&path).map_err(|e| local("cannot remove", &path, e))?;
                }
                Err(e) if e.is_retriable() => return Err(e),
                Err(e) => {
                    let reason = format!("attachment {manifest} cannot be uploaded: {e}");
                    tracing::warn!(%manifest, error = %e, "attachment upload refused; its chats wait");
                    report
                        .waiting
                        .extend(outgoing.chats.iter().map(|c| (*c, reason.clone())));
                    report.refused.get_or_insert(e);
                }
            }
        }
        Ok(report)
    }

    async fn upload_one(
        &self,
        storage: &DynStorage,
        outgoing: &Outgoing,
        report: &mut Uploaded,
    ) -> Result<()> {
        use futures::{StreamExt, TryStreamExt};
        let Some((manifest, chunks)) = outgoing.blobs.split_last() else {
            return Ok(());
        };
        // Chunks a few at a time, then the manifest: a reader that finds
        // the manifest finds every chunk.
        // A chunk repeated in the file is sent once.
        let mut seen = BTreeSet::new();
        let unique: Vec<BlobId> = chunks
            .iter()
            .copied()
            .filter(|id| seen.insert(*id))
            .collect();
        let sent: Vec<u64> = futures::stream::iter(unique)
            .map(|id| self.upload_blob(storage, id))
            .buffer_unordered(UPLOADS_IN_FLIGHT)
            .try_collect()
            .await?;
        let last = self.upload_blob(storage, *manifest).await?;
        for len in sent.into_iter().chain([last]).filter(|len| *len > 0) {
            report.blobs += 1;
            report.bytes += len;
        }
        Ok(())
    }

    /// Puts the staged blob `id` unless the server is known to hold it;
    /// returns the bytes sent (0: nothing to send). The marker goes only
    /// once the put returned.
    async fn upload_blob(&self, storage: &DynStorage, id: BlobId) -> Result<u64> {
        let marker = self.file("pending", &id);
        if !marker.is_file() {
            return Ok(0);
        }
        let sealed = self.get(&id)?.ok_or_else(|| {
            Error::local(
                format!(
                    "staged blob {id} is missing from {}; attach the file again",
                    self.root.display()
                ),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        let len = sealed.len() as u64;
        storage.put_blob(id, sealed.into()).await?;
        match std::fs::remove_file(&marker) {
            Ok(()) => Ok(len),
            // Another upload of the same blob (two attachments sharing a
            // chunk) confirmed it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(len),
            Err(e) => Err(local("cannot remove", &marker, e)),
        }
    }

    /// Evicts cached blobs, least recently used first, until the cached
    /// ones fit the budget. Returns the bytes freed.
    pub fn evict(&self) -> Result<u64> {
        let pending: BTreeSet<BlobId> = self.ids("pending")?.into_iter().collect();
        let mut cached = Vec::new();
        let mut total = 0u64;
        for id in self.ids("sealed")? {
            if pending.contains(&id) {
                continue;
            }
            let path = self.file("sealed", &id);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            total += meta.len();
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            cached.push((used, meta.len(), path));
        }
        cached.sort();
        let mut freed = 0;
        for (_, len, path) in cached {
            if total <= self.budget {
                break;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    freed += len;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(local("cannot evict", &path, e)),
            }
        }
        Ok(freed)
    }

    /// Bytes of sealed blobs here (cached and staged).
    pub fn bytes(&self) -> Result<u64> {
        let mut total = 0;
        for id in self.ids("sealed")? {
            if let Ok(meta) = std::fs::metadata(self.file("sealed", &id)) {
                total += meta.len();
            }
        }
        Ok(total)
    }
}
