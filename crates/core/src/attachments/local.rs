//! This device's directory of sealed blobs: the staging area for uploads
//! (with markers saying what has not reached the server yet) and the
//! download cache, kept within a byte budget.
//!
//! Layout, beside the replica file (`docs/design.md` §10.6):
//!
//! - `sealed/<64hex>`: a sealed blob (chunk or manifest), exactly as the
//!   server stores it;
//! - `pending/<64hex>`: a marker: that sealed blob must be put (again)
//!   before the records that wait for it (never evicted while the marker
//!   exists). Empty: staged here, synced, trusted as it is; `r`: a
//!   re-touch of a blob that may be only a cached (unsynced) copy, checked
//!   before it is put, else fetched from the server and put back;
//! - `outgoing/<64hex>`: per attachment a message here names (named by its
//!   manifest), the blobs to put in order (chunks, then the manifest), the
//!   chats whose records wait for them, and when they were last put: the
//!   lease that garbage collection's safety rests on (§10.6).
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
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

/// An attachment a message on this device names: what
/// `outgoing/<manifest>` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Outgoing {
    /// The chats whose records wait until every blob below is on the server
    /// and was put within half the grace period.
    chats: BTreeSet<ChatId>,
    /// The blobs to upload, in order: every chunk, then the manifest.
    blobs: Vec<BlobId>,
    /// When every blob was last put (ms since the epoch); `None` until the
    /// first upload ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    put_ms: Option<u64>,
    /// A record naming it was pushed since the last put, and no check has
    /// yet confirmed, [`verify_after`] later, that every blob is still on
    /// the server (a collector that listed before the put may have deleted
    /// one just after it; §10.6).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    unverified: bool,
}

/// How long after its second listing a collection may still delete (past
/// it the run stops; the next starts over): an eighth of the grace period,
/// at most 10 minutes.
pub fn collect_deadline(grace: Duration) -> Duration {
    (grace / 8).min(Duration::from_secs(600))
}

/// How long after its last put a device checks that the blobs of an
/// attachment a pushed record names are still on the server: twice
/// [`collect_deadline`], so any collector that listed before the put has
/// stopped deleting by then.
pub fn verify_after(grace: Duration) -> Duration {
    collect_deadline(grace) * 2
}

/// Checks that sealed bytes open as the blob they are named by (set by the
/// layer that holds the vault's keys: [`BlobDir::set_verifier`]).
pub type BlobVerifier = Arc<dyn Fn(&BlobId, &[u8]) -> bool + Send + Sync>;

/// The default grace period of garbage collection: a blob no put renewed
/// for this long may be deleted when no record names it.
pub const DEFAULT_BLOB_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The content of a re-touch marker (see the module docs).
const RETOUCH: &[u8] = b"r";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
pub struct BlobDir {
    root: PathBuf,
    budget: u64,
    /// Garbage collection's grace period: an attachment is put again
    /// before a record naming it is pushed more than half of it after its
    /// last put.
    grace: Duration,
    /// Checks a cached copy before it is put again.
    verifier: OnceLock<BlobVerifier>,
    /// Held while an `outgoing/` entry is read, changed and written back,
    /// so two attaches of one file do not drop each other's chat.
    outgoing_lock: Mutex<()>,
}

impl std::fmt::Debug for BlobDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobDir")
            .field("root", &self.root)
            .field("budget", &self.budget)
            .field("grace", &self.grace)
            .field("verifier", &self.verifier.get().is_some())
            .finish_non_exhaustive()
    }
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
            grace: DEFAULT_BLOB_GRACE,
            verifier: OnceLock::new(),
            outgoing_lock: Mutex::new(()),
        }
    }

    /// The same directory with garbage collection's grace period `grace`
    /// (default [`DEFAULT_BLOB_GRACE`]): every device of a vault must use
    /// the same one.
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The grace period of garbage collection.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Sets how a cached copy is checked before it is put again (once; a
    /// later call is ignored). Without it such a copy is never trusted:
    /// the server's copy is put back instead.
    pub fn set_verifier(&self, verifier: BlobVerifier) {
        let _ = self.verifier.set(verifier);
    }

    /// Half the grace period, in milliseconds: how long after its last put
    /// an attachment may still be named by a pushed record.
    fn lease_ms(&self) -> u64 {
        u64::try_from(self.grace.as_millis() / 2).unwrap_or(u64::MAX)
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

    /// Records that `chat`'s records wait for the attachment whose manifest
    /// is `manifest` and whose blobs are `blobs` (chunks, then the
    /// manifest): staged here by [`attach`](super::Attachments::attach), or
    /// an attachment a new message names again. If no entry holds it yet,
    /// every blob not already marked gets a re-touch marker, so the next
    /// push puts it again (renewing its touched time, or restoring it if a
    /// collector deleted it) before the record: §10.6's rule 2.
    pub fn hold(&self, manifest: &BlobId, blobs: Vec<BlobId>, chat: ChatId) -> Result<()> {
        let _outgoing = self.lock_outgoing();
        let existing = self.outgoing(manifest)?;
        let fresh = existing
            .as_ref()
            .and_then(|o| o.put_ms)
            .is_some_and(|put| now_ms().saturating_sub(put) <= self.lease_ms());
        let mut outgoing = existing.unwrap_or_default();
        if existing_is_current(&outgoing, &blobs, chat) {
            return Ok(());
        }
        if !fresh {
            self.mark_retouch(&blobs)?;
        }
        outgoing.blobs = blobs;
        outgoing.chats.insert(chat);
        self.write_outgoing(manifest, &outgoing)
    }

    /// Writes re-touch markers for the blobs in `blobs` that have none,
    /// durably.
    fn mark_retouch(&self, blobs: &[BlobId]) -> Result<()> {
        let pending = self.root.join("pending");
        std::fs::create_dir_all(&pending).map_err(|e| local("cannot create", &pending, e))?;
        let mut wrote = false;
        for id in blobs {
            let marker = self.file("pending", id);
            if marker.is_file() {
                continue;
            }
            std::fs::write(&marker, RETOUCH).map_err(|e| local("cannot write", &marker, e))?;
            wrote = true;
        }
        if wrote {
            sync_dir(&pending)?;
        }
        Ok(())
    }

    fn write_outgoing(&self, manifest: &BlobId, outgoing: &Outgoing) -> Result<()> {
        let json = serde_json::to_vec(outgoing)
            .map_err(|e| Error::local("cannot encode an upload marker", e))?;
        self.write_atomic("outgoing", manifest, &json)?;
        sync_dir(&self.root.join("outgoing"))
    }

    /// After a push: drops from every attachment put since the chats
    /// whose records no longer wait (`still_pending` says which chats
    /// still have changes queued; the entry is then checked on the server
    /// [`verify_after`] its put), and removes the entries that hold no
    /// chat, were checked, and whose lease ran out. An entry stays while
    /// its lease runs, so a message naming the attachment soon after needs
    /// no new upload.
    pub fn settle(&self, still_pending: &dyn Fn(ChatId) -> bool) -> Result<()> {
        let _outgoing = self.lock_outgoing();
        let now = now_ms();
        for (manifest, mut outgoing) in self.entries()? {
            let Some(put) = outgoing.put_ms else {
                continue;
            };
            let before = outgoing.chats.len();
            outgoing.chats.retain(|chat| still_pending(*chat));
            if outgoing.chats.len() != before {
                // A record naming it may have been pushed: check later.
                outgoing.unverified = true;
            }
            if outgoing.chats.is_empty()
                && !outgoing.unverified
                && now.saturating_sub(put) > self.lease_ms()
            {
                let path = self.file("outgoing", &manifest);
                std::fs::remove_file(&path).map_err(|e| local("cannot remove", &path, e))?;
            } else if outgoing.chats.len() != before {
                self.write_outgoing(&manifest, &outgoing)?;
            }
        }
        Ok(())
    }

    /// Every blob staged here or waited for by a message not yet pushed: a
    /// collector on this device never deletes them.
    pub fn held_blobs(&self) -> Result<BTreeSet<BlobId>> {
        let mut blobs: BTreeSet<BlobId> = self.ids("pending")?.into_iter().collect();
        for (manifest, outgoing) in self.entries()? {
            if !outgoing.chats.is_empty() {
                blobs.extend(outgoing.blobs);
                blobs.insert(manifest);
            }
        }
        Ok(blobs)
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

    /// Every `outgoing/` entry, by manifest.
    fn entries(&self) -> Result<Vec<(BlobId, Outgoing)>> {
        let mut entries = Vec::new();
        for manifest in self.ids("outgoing")? {
            if let Some(outgoing) = self.outgoing(&manifest)? {
                entries.push((manifest, outgoing));
            }
        }
        Ok(entries)
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

    /// Removes what a process killed while staging left behind: temporary
    /// files (`.<id>.<pid>.<n>.tmp` / `.staged`) and empty pending markers
    /// whose blob never reached its final name. Call it only while no
    /// other process uses this directory (the replica beside it is open
    /// here, which its lock guarantees). Re-touch markers stay: their copy
    /// may legitimately be on the server only. Returns how many files went.
    pub fn remove_orphans(&self) -> Result<usize> {
        let mut removed = 0;
        for kind in ["sealed", "outgoing"] {
            let dir = self.root.join(kind);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') && (name.ends_with(".tmp") || name.ends_with(".staged")) {
                    let path = entry.path();
                    std::fs::remove_file(&path).map_err(|e| local("cannot remove", &path, e))?;
                    removed += 1;
                }
            }
        }
        for id in self.ids("pending")? {
            let marker = self.file("pending", &id);
            let empty = std::fs::metadata(&marker).is_ok_and(|m| m.len() == 0);
            if empty && !self.contains(&id) {
                std::fs::remove_file(&marker).map_err(|e| local("cannot remove", &marker, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The blobs staged here and not yet known to be on the server.
    pub fn staged(&self) -> Result<Vec<BlobId>> {
        self.ids("pending")
    }

    /// The chats whose records wait for an attachment: not uploaded yet,
    /// or last put more than half the grace period ago (put again first).
    pub fn waiting_chats(&self) -> Result<BTreeSet<ChatId>> {
        let mut chats = BTreeSet::new();
        let now = now_ms();
        for (_, outgoing) in self.entries()? {
            if !self.is_fresh(&outgoing, now) {
                chats.extend(outgoing.chats);
            }
        }
        Ok(chats)
    }

    /// True if every blob of `outgoing` was put within the lease.
    fn is_fresh(&self, outgoing: &Outgoing, now: u64) -> bool {
        outgoing
            .put_ms
            .is_some_and(|put| now.saturating_sub(put) <= self.lease_ms())
    }

    /// Uploads every staged attachment, each blob at most once more after
    /// a crash (a blob's marker goes only once the server has it). A
    /// retriable failure (the network, a busy server) stops the round and
    /// is returned: nothing waiting for it may be pushed. An attachment
    /// whose upload is refused for good stays staged and its chats are
    /// reported in [`Uploaded::waiting`], while the others go on.
    pub async fn upload(&self, storage: &DynStorage) -> Result<Uploaded> {
        let mut report = Uploaded::default();
        for (manifest, outgoing) in self.entries()? {
            let started = now_ms();
            if outgoing.unverified && outgoing.chats.is_empty() {
                self.verify(storage, &manifest, &outgoing, &mut report)
                    .await?;
                continue;
            }
            if self.is_fresh(&outgoing, started) {
                continue;
            }
            if outgoing.put_ms.is_some() {
                if outgoing.chats.is_empty() {
                    // A lease that ran out with no message waiting.
                    continue;
                }
                // Records still wait, and the lease ran out: put it again.
                self.mark_retouch(&outgoing.blobs)?;
            }
            match self.upload_one(storage, &outgoing, &mut report).await {
                Ok(()) => {
                    let _outgoing = self.lock_outgoing();
                    // Chats added meanwhile keep their place.
                    let mut current = self.outgoing(&manifest)?.unwrap_or(outgoing);
                    // The lease runs from the first put: the earliest a
                    // blob of this round may have been touched.
                    current.put_ms = Some(started);
                    self.write_outgoing(&manifest, &current)?;
                }
                Err(e) if e.is_retriable() => return Err(e),
                Err(Error::NotFound { what }) => {
                    // Named again long after its upload, and gone from the
                    // server and from here: its bytes are lost whatever
                    // this device does, and holding the chats back would
                    // only stop their text too. Readers get `NotFound`.
                    tracing::warn!(%manifest, %what, "an attachment named again is gone; its messages go without it");
                    let path = self.file("outgoing", &manifest);
                    std::fs::remove_file(&path).map_err(|e| local("cannot remove", &path, e))?;
                }
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

    /// Checks, once [`verify_after`] the last put, that every blob of the
    /// attachment `manifest` (whose records were pushed) is still on the
    /// server; puts back from this device's copy any a collector deleted
    /// in the instant after that put. Retriable failures are returned;
    /// a blob gone everywhere is reported and given up.
    async fn verify(
        &self,
        storage: &DynStorage,
        manifest: &BlobId,
        outgoing: &Outgoing,
        report: &mut Uploaded,
    ) -> Result<()> {
        let wait = u64::try_from(verify_after(self.grace).as_millis()).unwrap_or(u64::MAX);
        let put = outgoing.put_ms.unwrap_or(0);
        if now_ms().saturating_sub(put) < wait {
            return Ok(());
        }
        let missing = storage.missing_blobs(&outgoing.blobs).await?;
        if !missing.is_empty() {
            tracing::warn!(%manifest, missing = missing.len(), "blobs a pushed record names were collected just after their put; putting them back");
            self.mark_retouch(&missing)?;
            match self.upload_one(storage, outgoing, report).await {
                Ok(()) => {}
                Err(e) if e.is_retriable() => return Err(e),
                Err(e) => {
                    tracing::warn!(%manifest, error = %e, "cannot put back the blobs of an attachment a pushed record names");
                }
            }
        }
        let _outgoing = self.lock_outgoing();
        if let Some(mut current) = self.outgoing(manifest)? {
            current.unverified = false;
            self.write_outgoing(manifest, &current)?;
        }
        Ok(())
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
        let retouch = match std::fs::read(&marker) {
            Ok(content) => content == RETOUCH,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(local("cannot read", &marker, e)),
        };
        let local_copy = self.get(&id)?;
        let sealed = match local_copy {
            Some(sealed) if !retouch => sealed,
            // A cached copy is put again only if it opens as `id` (it may
            // be torn: the cache is not synced); else the server's copy
            // goes back, which touches it.
            Some(sealed) if self.verifier.get().is_some_and(|v| v(&id, &sealed)) => sealed,
            _ if retouch => match storage.get_blob(id).await? {
                Some(sealed) => sealed.to_vec(),
                None => {
                    return Err(Error::NotFound {
                        what: format!(
                            "blob {id} of an attachment: neither this device nor the server \
                             holds it any more; attach the file again"
                        ),
                    })
                }
            },
            _ => {
                return Err(Error::local(
                    format!(
                        "staged blob {id} is missing from {}; attach the file again",
                        self.root.display()
                    ),
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ))
            }
        };
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
        let mut pending: BTreeSet<BlobId> = self.ids("pending")?.into_iter().collect();
        // The blobs of an attachment a message waits for: a late push puts
        // them again from here.
        for (_, outgoing) in self.entries()? {
            if !outgoing.chats.is_empty() || outgoing.unverified {
                pending.extend(outgoing.blobs);
            }
        }
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

/// True if `outgoing` already holds `chat` for these `blobs`: nothing to
/// write (whether its lease ran out is the push's concern).
fn existing_is_current(outgoing: &Outgoing, blobs: &[BlobId], chat: ChatId) -> bool {
    outgoing.blobs == blobs && outgoing.chats.contains(&chat)
}
