//! chatvault-fs: a vault in a local folder, the default backend.
//!
//! [`FsStorageBuilder`] configures the record layout of
//! `chatvault-object-store` (per device, [`DeviceLogStorage`], or one
//! shared log, [`ObjectStoreStorage`]; read its docs for the commit point,
//! costs and compaction) over `object_store`'s `LocalFileSystem` with fsync
//! ([`FsStorageBuilder::fsync`]), and a notification transport from filesystem
//! notifications ([`FolderNotifications`]), and returns it as an [`FsStorage`]
//! ([`ObjectStoreVault`]). This crate adds no [`Storage`](chatvault_core::Storage) of its own.
//!
//! ```
//! use chatvault_core::{ChatId, Cursor, PutPrecondition, SealedRecord, Storage};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> chatvault_core::Result<()> {
//! # let dir = tempfile::tempdir().map_err(|e| chatvault_core::Error::invalid(e.to_string()))?;
//! let vault = chatvault_fs::open(dir.path())?;
//! let chat = ChatId::new();
//! let record = SealedRecord { chat, version: 1, deleted: false, summary: "s".into(), body: Some("b".into()) };
//! vault.put(record, PutPrecondition::Absent).await?;
//! assert_eq!(vault.changes(&Cursor::start(), 10).await?.changes[0].chat, chat);
//! # Ok(())
//! # }
//! ```
//!
//! # Atomicity and durability
//!
//! `LocalFileSystem` writes every object to a staging file next to it
//! (`name#1`) and moves it into place in one step: a rename for ordinary
//! writes, a hard link for create-if-absent, which the kernel refuses if the
//! name exists. So readers never see a half-written object, and of two
//! processes creating the same log slot exactly one succeeds (in the shared
//! log, [`Capabilities::atomic_preconditions`](chatvault_core::Capabilities::atomic_preconditions) is then true; in the
//! per-device layout it protects two processes of one device), on local
//! disks and on network file systems with working `link(2)` (NFSv3+, SMB
//! with Unix extensions).
//!
//! `LocalFileSystem` does not fsync. [`FsStorage`] does: before a put
//! returns, the file and the directories it may have created are fsynced.
//! A record's blob is therefore on disk before the log slot that commits it
//! is created, and a `put` that returned `Ok` survives a power cut. Turn it
//! off with [`FsStorageBuilder::fsync`] only for throwaway vaults (tests,
//! benchmarks). Deletions (compaction) are not fsynced: an entry that comes
//! back after a crash was already covered by the snapshot.
//!
//! # Two layouts; folders shared by Syncthing, Dropbox, a NAS
//!
//! A new folder gets the **per-device layout** ([`FolderLayout::PerDevice`],
//! `docs/design.md` §5.4): each device writes only under its own
//! `dev/<vault>.<writer>/` (a complete shared-log vault), and readers merge
//! every device's log. A file-sync service that gives each device its own
//! copy of the folder therefore never has two versions of one file to
//! choose between, and changes made on two devices while their copies
//! differed are merged when the copies meet. Give the device's id as
//! [`FsStorageBuilder::writer`] (chatvault's facade passes the replica's),
//! so a device keeps one log however often it opens the vault.
//!
//! Folders created by releases before it use the **shared log**
//! ([`FolderLayout::SharedLog`]): one log at the root whose slots are
//! claimed with create-if-absent, exact on one file system (a local disk,
//! NFS) but not between copies of a folder: there two devices that commit
//! while apart both claim a slot and the service keeps only one.
//! [`FsStorageBuilder::migrate_to_per_device`] moves such a folder
//! (crash-safe); [`FsStorageBuilder::shared_by_sync_tool`] at least makes
//! the capabilities say so.
//!
//! Files a file-sync service leaves behind are ignored with a warning and
//! never fail a pull: temporary files (`.syncthing.*.tmp`, `~*.tmp`),
//! staging files of a writer that died (`name#1`), conflict copies
//! (`*.sync-conflict-*`, `* (conflicted copy) *`, ...), `.DS_Store` and the
//! like. What arrives late, out of order or partly copied is waited for,
//! not skipped: a device's log stops at a hole or at an entry that does not
//! decode yet, and [`ChangePage::waiting`](chatvault_core::ChangePage::waiting)
//! says so.
//!
//! # Costs on a folder
//!
//! An idle poll is one read of the `dev/` directory and one of each device's
//! `log/` (shared log: one read of `log/`; no file is opened or stat'ed);
//! each listing grows with its log's length, which [`Storage::maintain`](chatvault_core::Storage::maintain)
//! (compaction of this device's own log, scheduled by the engine; see
//! `docs/design.md` §5.2) keeps bounded. Files whose names are not valid
//! UTF-8 are skipped with a warning (`LocalFileSystem`'s own listing would
//! stop at them).
//!
//! # Push
//!
//! [`Storage::notifications`](chatvault_core::Storage::notifications) returns an [`FsNotifications`] (made by [`FolderNotifications`]): it wakes the sync engine when
//! anything appears under `dev/` (shared log: in `log/`), and polls every
//! [`FsStorageBuilder::poll_interval`] (default 5 s) as a safety net.

mod durable;
mod listing;
mod watch;

pub use chatvault_object_store::MigrationReport;
/// How a folder vault lays out its files (`docs/design.md` §5 and §5.4): a
/// new folder gets [`FolderLayout::PerDevice`]; folders created by releases
/// before it use [`FolderLayout::SharedLog`], and keep it when opened.
pub use chatvault_object_store::VaultLayout as FolderLayout;
pub use chatvault_object_store::WriterId;
pub use watch::{FolderNotifications, FsNotifications};

use chatvault_core::{Error, Result};
use chatvault_object_store::{
    is_marker, DeviceLogStorage, ObjectStoreOptions, ObjectStoreStorage, ObjectStoreVault,
    DEVICES_DIR, MIGRATED_VAULT,
};
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Records one put of a local folder carries by default
/// ([`Capabilities::max_batch`](chatvault_core::Capabilities::max_batch);
/// the object-store layout's default of 100 is sized for remote stores).
/// Each `put_batch` of the engine's push ends in a tail nothing overlaps:
/// a listing of `dev/`, the log-slot create with its fsyncs, and one
/// replica commit confirming the batch. On a local folder that tail, not
/// the size of a request, held a bulk push back (10 tails for 1,000 chats;
/// BENCHMARKS.md, "Bulk import on the folder"). 500 is Supabase's batch, so
/// the engine's push page (8 batches) is no larger than on Supabase, and a
/// log entry of 500 items with inline summaries stays far below the entry
/// limit of 16 MiB (a writer leaves summaries out rather than exceed it).
pub const FS_MAX_BATCH: usize = 500;

/// A vault in a local folder: the object-store layout
/// ([`ObjectStoreVault`]) that [`FsStorageBuilder::open`] configures, with
/// the folder's notification transport ([`FolderNotifications`]). See the [crate docs](crate).
pub type FsStorage = ObjectStoreVault;

/// Opens (creating if needed) the vault in `dir` with default options.
pub fn open(dir: impl AsRef<Path>) -> Result<FsStorage> {
    FsStorageBuilder::new(dir).open()
}

/// Opens the vault a `file:///absolute/path` URL names.
///
/// ```
/// # fn main() -> chatvault_core::Result<()> {
/// # let dir = tempfile::tempdir().map_err(|e| chatvault_core::Error::invalid(e.to_string()))?;
/// let url = format!("file://{}", dir.path().display());
/// let vault = chatvault_fs::open_url(&url)?;
/// assert_eq!(chatvault_fs::FsStorageBuilder::from_url(&url)?.dir(), dir.path());
/// assert!(chatvault_fs::open_url("s3://bucket/x").is_err());
/// # let _ = vault;
/// # Ok(())
/// # }
/// ```
pub fn open_url(url: &str) -> Result<FsStorage> {
    FsStorageBuilder::from_url(url)?.open()
}

/// Options for opening an [`FsStorage`].
///
/// ```
/// # fn main() -> chatvault_core::Result<()> {
/// # let dir = tempfile::tempdir().map_err(|e| chatvault_core::Error::invalid(e.to_string()))?;
/// use std::time::Duration;
/// let vault = chatvault_fs::FsStorageBuilder::new(dir.path())
///     .poll_interval(Duration::from_secs(30))
///     .open()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FsStorageBuilder {
    dir: PathBuf,
    options: ObjectStoreOptions,
    poll_interval: Duration,
    fsync: bool,
    layer: Option<StoreLayer>,
    layout: Option<FolderLayout>,
    writer: Option<WriterId>,
    follow: Option<WriterId>,
}

/// Wraps the folder's object store (see [`FsStorageBuilder::layer`]).
type StoreLayer = Arc<dyn Fn(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> + Send + Sync>;

impl std::fmt::Debug for FsStorageBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStorageBuilder")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("poll_interval", &self.poll_interval)
            .field("fsync", &self.fsync)
            .field("layer", &self.layer.is_some())
            .finish()
    }
}

impl FsStorageBuilder {
    /// A builder for the vault in `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_path_buf(),
            options: ObjectStoreOptions::default().with_max_batch(FS_MAX_BATCH),
            poll_interval: Duration::from_secs(5),
            fsync: true,
            layer: None,
            layout: None,
            writer: None,
            follow: None,
        }
    }

    /// A builder for the folder a `file:///absolute/path` URL names
    /// (`?vault=<id>` sets [`FsStorageBuilder::follow_vault`]).
    pub fn from_url(url: &str) -> Result<Self> {
        let mut builder = Self::new(path_from_url(url)?);
        if let Some(vault) = vault_from_url(url)? {
            builder = builder.follow_vault(vault);
        }
        Ok(builder)
    }

    /// The vault's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Layout options (record size limit, batch size…). The builder starts
    /// from [`ObjectStoreOptions::default`] with a batch of
    /// [`FS_MAX_BATCH`] records; options given here replace it whole.
    pub fn options(mut self, options: ObjectStoreOptions) -> Self {
        self.options = options;
        self
    }

    /// How often the notification transport polls when no notification arrives.
    /// Default 5 seconds.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Whether puts are fsynced before they return. Default `true`; `false`
    /// only for vaults you can afford to lose.
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// The folder is synced between devices by a file-sync tool, so
    /// create-if-absent is only atomic on this device: reported as
    /// `atomic_preconditions: false`. See the crate docs.
    pub fn shared_by_sync_tool(mut self, shared: bool) -> Self {
        self.options = self.options.with_atomic_create(!shared);
        self
    }

    /// The layout of a new vault, or the one to insist on. By default a
    /// folder that already holds a vault keeps its layout and an empty one
    /// gets [`FolderLayout::PerDevice`]. Opening a folder whose vault has the
    /// other layout fails with `InvalidInput`.
    pub fn layout(mut self, layout: FolderLayout) -> Self {
        self.layout = Some(layout);
        self
    }

    /// The writer this device commits as in the per-device layout: keep it
    /// with the device (chatvault's facade passes the replica's device id),
    /// so that one device writes one log however often it opens the vault.
    /// Default: a random writer per handle, which is correct but leaves one
    /// log per handle for every reader to list.
    pub fn writer(mut self, writer: WriterId) -> Self {
        self.writer = Some(writer);
        self
    }

    /// In the per-device layout, the vault to follow when the folder holds
    /// two (the error opening it names them; the id is the one before the
    /// dot in their `dev/` directories). Also `?vault=<id>` on a `file://`
    /// URL.
    pub fn follow_vault(mut self, vault: WriterId) -> Self {
        self.follow = Some(vault);
        self
    }

    /// Wraps the folder's object store (already durable) in another one:
    /// request counting, tracing, fault injection, in the spirit of
    /// `object_store`'s `PrefixStore` or OpenDAL's layers.
    pub fn layer(
        mut self,
        layer: impl Fn(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> + Send + Sync + 'static,
    ) -> Self {
        self.layer = Some(Arc::new(layer));
        self
    }

    /// Moves the shared-log vault in this folder to the per-device layout
    /// (`docs/design.md` §5.4), as the writer set with
    /// [`FsStorageBuilder::writer`] (give the device's id): copies the key
    /// file and every chat's current record into this device's directory,
    /// then seals the shared log so releases before the per-device layout
    /// stop with an error naming the format they lack. Crash-safe: run it
    /// again after an interruption. Devices that open the folder afterwards
    /// use the per-device layout; their queued changes go there.
    ///
    /// Errors: `InvalidInput` when the folder holds no shared-log vault.
    pub async fn migrate_to_per_device(self) -> Result<MigrationReport> {
        let writer = self.writer.unwrap_or_else(WriterId::random);
        let (store, root) = self.durable_store()?;
        if existing_layout(&root)? != Some(FolderLayout::SharedLog)
            && !root.join(DEVICES_DIR).is_dir()
        {
            return Err(Error::invalid(format!(
                "{} holds no shared-log vault to move",
                self.dir.display()
            )));
        }
        let devices = DeviceLogStorage::new(
            store,
            object_store::path::Path::default(),
            self.options.clone(),
            writer,
        )
        .follow_vault(MIGRATED_VAULT);
        devices.migrate_from_shared_log().await
    }

    /// The folder's object store (created if missing), made durable and
    /// wrapped in the layer, and the folder's canonical path.
    fn durable_store(&self) -> Result<(Arc<dyn ObjectStore>, PathBuf)> {
        std::fs::create_dir_all(&self.dir).map_err(|e| folder_error(&self.dir, e))?;
        let root = std::fs::canonicalize(&self.dir).map_err(|e| folder_error(&self.dir, e))?;
        if !root.is_dir() {
            return Err(Error::invalid(format!(
                "{} is not a folder",
                self.dir.display()
            )));
        }
        let local = LocalFileSystem::new_with_prefix(&root).map_err(|e| {
            Error::invalid(format!(
                "cannot open vault folder {}: {e}",
                self.dir.display()
            ))
        })?;
        let mut store: Arc<dyn ObjectStore> =
            Arc::new(durable::durable(local, root.clone(), self.fsync));
        if let Some(layer) = &self.layer {
            store = layer(store);
        }
        Ok((store, root))
    }

    /// Opens the vault, creating the folder if it does not exist.
    pub fn open(self) -> Result<FsStorage> {
        let (store, root) = self.durable_store()?;
        let found = existing_layout(&root)?;
        let layout = match (self.layout, found) {
            (Some(wanted), Some(found)) if wanted != found => {
                return Err(Error::invalid(format!(
                    "the vault in {} uses the {found:?} layout, not {wanted:?}",
                    self.dir.display()
                )))
            }
            (Some(layout), _) | (None, Some(layout)) => layout,
            (None, None) => FolderLayout::PerDevice,
        };
        let prefix = object_store::path::Path::default();
        let vault = match layout {
            FolderLayout::SharedLog => {
                ObjectStoreVault::shared_log(ObjectStoreStorage::new(store, prefix, self.options))
            }
            FolderLayout::PerDevice => {
                let writer = self.writer.unwrap_or_else(WriterId::random);
                let mut devices = DeviceLogStorage::new(store, prefix, self.options, writer);
                if let Some(vault) = self.follow {
                    devices = devices.follow_vault(vault);
                }
                ObjectStoreVault::per_device(devices)
            }
        };
        Ok(vault.with_push(FolderNotifications::new(
            &self.dir,
            layout,
            self.poll_interval,
        )))
    }
}

/// The layout of the vault already in `root`, if any: a per-device vault
/// has `dev/` (and, for releases before it, marker files in `log/` and
/// `keyring/`; a moved vault keeps its old files there too), a shared-log
/// one only `log/` or `keyring/`.
fn existing_layout(root: &Path) -> Result<Option<FolderLayout>> {
    if root.join(DEVICES_DIR).is_dir() {
        return Ok(Some(FolderLayout::PerDevice));
    }
    let shared = ["log", "keyring"]
        .iter()
        .any(|name| root.join(name).is_dir());
    if !shared {
        return Ok(None);
    }
    // The markers may arrive (through a file-sync service) before `dev/`.
    let newest = |dir: &str| -> Option<PathBuf> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.len() == 20))
            .collect();
        names.sort();
        names.pop()
    };
    let marked = ["keyring", "log"]
        .iter()
        .filter_map(|dir| newest(dir))
        .any(|path| {
            std::fs::metadata(&path).is_ok_and(|m| m.len() < 4096)
                && std::fs::read(&path).is_ok_and(|bytes| is_marker(&bytes))
        });
    Ok(Some(if marked {
        FolderLayout::PerDevice
    } else {
        FolderLayout::SharedLog
    }))
}

fn folder_error(dir: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => Error::Unauthorized {
            message: format!("cannot create vault folder {}: {e}", dir.display()),
        },
        _ => Error::invalid(format!("cannot create vault folder {}: {e}", dir.display())),
    }
}

/// The vault a `file://` URL's `?vault=<16 hex digits>` asks to follow.
fn vault_from_url(url: &str) -> Result<Option<WriterId>> {
    let parsed =
        url::Url::parse(url).map_err(|e| Error::invalid(format!("not a URL: {url:?}: {e}")))?;
    let Some((key, value)) = parsed.query_pairs().next() else {
        return Ok(None);
    };
    if parsed.query_pairs().count() > 1 || key != "vault" {
        return Err(Error::invalid(format!(
            "unknown parameters in {url:?}; a file:// URL takes only ?vault=<id>"
        )));
    }
    let id = u64::from_str_radix(&value, 16)
        .ok()
        .filter(|_| value.len() == 16)
        .ok_or_else(|| {
            Error::invalid(format!(
                "?vault= takes the 16 hex digits before the dot of a dev/ directory, not {value:?}"
            ))
        })?;
    Ok(Some(WriterId(id)))
}

/// The folder a `file://` URL names.
fn path_from_url(url: &str) -> Result<PathBuf> {
    let parsed =
        url::Url::parse(url).map_err(|e| Error::invalid(format!("not a URL: {url:?}: {e}")))?;
    if parsed.scheme() != "file" {
        return Err(Error::invalid(format!(
            "the fs backend opens file:// URLs, not {:?}",
            parsed.scheme()
        )));
    }
    parsed
        .to_file_path()
        .map_err(|()| Error::invalid(format!("{url:?} does not name a local folder")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_name_folders_and_other_schemes_are_invalid_input() {
        assert_eq!(
            path_from_url("file:///tmp/vault").unwrap(),
            PathBuf::from("/tmp/vault")
        );
        assert_eq!(
            path_from_url("file:///tmp/my%20vault").unwrap(),
            PathBuf::from("/tmp/my vault")
        );
        assert_eq!(
            vault_from_url("file:///tmp/vault?vault=00000000000000ab").unwrap(),
            Some(WriterId(0xab))
        );
        assert_eq!(vault_from_url("file:///tmp/vault").unwrap(), None);
        assert_eq!(
            path_from_url("file:///tmp/vault?vault=00000000000000ab").unwrap(),
            PathBuf::from("/tmp/vault")
        );
        for bad in [
            "file:///v?vault=ab",
            "file:///v?other=1",
            "file:///v?vault=00000000000000ab&x=1",
        ] {
            assert!(
                matches!(vault_from_url(bad), Err(Error::InvalidInput { .. })),
                "{bad}"
            );
        }
        for bad in ["s3://bucket/p", "/tmp/vault", "file://remote-host/x"] {
            assert!(
                matches!(path_from_url(bad), Err(Error::InvalidInput { .. })),
                "{bad}"
            );
        }
    }
}
