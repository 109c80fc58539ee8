//! The per-device layout, for folders that a file-sync service (Syncthing,
//! Dropbox, a NAS) copies between devices, each device writing its own
//! copy: no two devices ever create or change the same path.
//!
//! ```text
//! <prefix>/dev/<vault>.<writer>/joined                 when the device joined (ms, text)
//! <prefix>/dev/<vault>.<writer>/log/<seq>              this writer's change log
//! <prefix>/dev/<vault>.<writer>/rec/<chat>/<ver>-<w>   its record blobs
//! <prefix>/dev/<vault>.<writer>/snap/<seq>             its compaction snapshots
//! <prefix>/dev/<vault>.<writer>/keyring/<version>      key files it wrote
//! <prefix>/blob/<2 hex>/<64 hex>                       sealed blobs, shared by every device
//! ```
//!
//! Sealed blobs are immutable and named by their content's keyed hash, so
//! every device writes them to one shared `blob/` directory (the same one
//! the shared-log layout uses: migrating moves nothing). Two devices that
//! store one id before the folder synced wrote two sealings of the same
//! plaintext; the file-sync service keeps one and may leave the other as a
//! conflict copy (`….sync-conflict-…`), which is not a blob name: it is
//! ignored like any foreign file, and the blob that stayed opens to the
//! same plaintext.
//!
//! `<vault>` and `<writer>` are 16 hex digits: the writer is the device,
//! the vault the writer that created the vault, so two vaults created in
//! one folder (a rival `init` on a copy that had not synced) never mix.
//! Each `dev/<vault>.<writer>/` is a complete shared-log vault (`docs/design.md`
//! §5) that only its writer creates files in, so its create-if-absent
//! commit point is local to one device and cannot be lost to a conflict
//! copy. [`DeviceLogStorage`] writes to its own and reads every device's:
//! the feed merges every device's log with a cursor per device, `get`
//! returns each device's current record of a chat (concurrent versions of
//! one chat are all returned, for the engine to merge), and the key file is
//! the newest version any device wrote. The commit protocol, the copy
//! anomalies it tolerates and the crash table are in `docs/design.md` §5.4.

use crate::entry::Precondition;
use crate::layout::ForeignFiles;
use crate::markers::write_markers;
use crate::migrate::{Migration, MigrationReport};
use crate::objects::Objects;
use crate::options::ObjectStoreOptions;
use crate::sealed_blobs::SealedBlobs;
use crate::storage::ObjectStoreStorage;
use async_trait::async_trait;
use bytes::Bytes;
use chatvault_core::{
    BlobId, BlobPage, Capabilities, Change, ChangePage, ChatId, Cursor, Error, KeyringBlob,
    MaintenanceBudget, MaintenanceReport, Part, PutPrecondition, Result, SealedRecord, Storage,
};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStore;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The directory under a vault's prefix that holds one directory per
/// writing device.
pub const DEVICES_DIR: &str = "dev";

/// The vault id of a per-device vault migrated from a shared log: every
/// device that migrates the same folder lands in the same vault.
pub const MIGRATED_VAULT: WriterId = WriterId(0);

/// Names one writing device of a [`DeviceLogStorage`] vault: the directory
/// `dev/<16 hex digits>` only that device creates files in. Keep it with
/// the device (chatvault uses the replica's device id), so a device's
/// writes go to one log however often it opens the vault.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriterId(pub u64);

impl WriterId {
    /// A fresh random writer (for a handle that keeps no state of its own).
    pub fn random() -> Self {
        Self(rand::random())
    }

    fn parse(name: &str) -> Option<Self> {
        if name.len() != 16 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(name, 16).ok().map(Self)
    }
}

impl fmt::Display for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriterId({self})")
    }
}

/// A vault in the per-device layout (`docs/design.md` §5.4). Several
/// devices share it through copies of one folder; each writes only under
/// its own `dev/<vault>.<writer>/`.
///
/// # Errors
///
/// As [`ObjectStoreStorage`], plus: a log entry of another device that does
/// not decode yet (a file the service is still copying) stops that
/// device's feed before it until it decodes; a record blob named by an
/// entry that arrived before it fails `get` with `Corrupt` naming the chat
/// (the engine keeps such a record as skipped and retries it); a folder
/// holding two vaults (a second device created one before its copy had
/// synced) fails every call with [`Error::TwoVaults`] on a device that
/// belongs to neither, naming both.
pub struct DeviceLogStorage {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    devices_dir: Path,
    options: ObjectStoreOptions,
    writer: WriterId,
    /// The vault to follow when the folder holds two, if the caller chose.
    wanted: Option<WriterId>,
    /// This device's own log, once the vault it belongs to is known.
    own: tokio::sync::OnceCell<Arc<ObjectStoreStorage>>,
    peers: tokio::sync::Mutex<BTreeMap<WriterId, Arc<ObjectStoreStorage>>>,
    rivals_reported: std::sync::atomic::AtomicBool,
    foreign: ForeignFiles,
    /// The folder's shared `blob/` directory.
    sealed_blobs: SealedBlobs,
}

impl fmt::Debug for DeviceLogStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceLogStorage")
            .field("store", &self.store.to_string())
            .field("devices_dir", &self.devices_dir)
            .field("writer", &self.writer)
            .field("wanted", &self.wanted)
            .finish_non_exhaustive()
    }
}

/// The feed position of a [`DeviceLogStorage`]: one cursor per device log,
/// written `<writer>=<cursor>` joined by `;`, in writer order.
fn parse_cursor(cursor: &Cursor) -> Result<BTreeMap<WriterId, Cursor>> {
    let mut out = BTreeMap::new();
    if cursor.is_start() {
        return Ok(out);
    }
    // A cursor of the shared-log layout (`<slot>` or `<slot>.<items>`): the
    // vault moved to this layout since (`migrate_from_shared_log`). The feed
    // starts over; the records kept their versions, so a reader finds
    // nothing new in them.
    let shared_log = cursor
        .0
        .split('.')
        .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if shared_log && cursor.0.split('.').count() <= 2 {
        tracing::info!(
            cursor = %cursor.0,
            "a shared-log cursor on a per-device vault (the vault was moved); reading its feed \
             from the start"
        );
        return Ok(out);
    }
    for part in cursor.0.split(';') {
        let parsed = part
            .split_once('=')
            .and_then(|(writer, sub)| Some((WriterId::parse(writer)?, sub)));
        let Some((writer, sub)) = parsed else {
            return Err(Error::invalid(format!(
                "not a cursor of a per-device vault: {:?} (start the feed again from \
                 Cursor::start())",
                cursor.0
            )));
        };
        out.insert(writer, Cursor(sub.to_owned()));
    }
    Ok(out)
}

fn format_cursor(cursors: &BTreeMap<WriterId, Cursor>) -> Cursor {
    Cursor(
        cursors
            .iter()
            .filter(|(_, c)| !c.is_start())
            .map(|(writer, c)| format!("{writer}={}", c.0))
            .collect::<Vec<_>>()
            .join(";"),
    )
}

/// One directory under `dev/`: the vault it belongs to (named after the
/// writer that created the vault) and the writer that owns it.
#[derive(Clone, Debug)]
struct DeviceDir {
    vault: WriterId,
    writer: WriterId,
    path: Path,
}

fn parse_device_dir(path: &Path) -> Option<DeviceDir> {
    let (vault, writer) = path.filename()?.split_once('.')?;
    Some(DeviceDir {
        vault: WriterId::parse(vault)?,
        writer: WriterId::parse(writer)?,
        path: path.clone(),
    })
}

/// The file a device writes into its directory when it creates it: the
/// time it joined the vault (milliseconds since the Unix epoch, as text).
/// The vault's creator joined when it created the vault.
const JOINED: &str = "joined";

impl DeviceLogStorage {
    /// The vault under `prefix` in `store`, written by `writer`. Nothing is
    /// read or written until the first call; the writer's directory appears
    /// with its first write.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        options: ObjectStoreOptions,
        writer: WriterId,
    ) -> Self {
        let sealed_blobs = SealedBlobs::new(
            Arc::new(Objects::new(
                Arc::clone(&store),
                &prefix,
                options.concurrency,
            )),
            options.max_record_bytes,
        );
        Self {
            store,
            sealed_blobs,
            devices_dir: prefix.child(DEVICES_DIR),
            prefix,
            options,
            writer,
            wanted: None,
            own: tokio::sync::OnceCell::new(),
            peers: tokio::sync::Mutex::new(BTreeMap::new()),
            rivals_reported: std::sync::atomic::AtomicBool::new(false),
            foreign: ForeignFiles::default(),
        }
    }

    /// Follows the vault created by writer `vault` when the folder holds two
    /// (see [`Error::TwoVaults`], which names them). A device that already
    /// wrote to one vault of the folder keeps following it.
    pub fn follow_vault(mut self, vault: WriterId) -> Self {
        self.wanted = Some(vault);
        self
    }

    /// Moves the shared-log vault under this handle's prefix to the
    /// per-device layout: copies the key file and every chat's current
    /// record, unchanged (still sealed, same versions), into this device's
    /// log, then seals the shared log with the marker in its next slot, so
    /// releases before the per-device layout stop with `UnsupportedFormat`
    /// and nothing is committed there again. A change committed to the
    /// shared log while this runs takes the slot first; it is copied and
    /// sealing is tried again.
    ///
    /// Crash-safe and idempotent: every step creates objects only, a run
    /// that stopped anywhere is finished by running it again, and the old
    /// files stay where they were (delete `log/`, `rec/`, `snap/` and
    /// `keyring/` once every device runs this release). The handle must
    /// follow [`MIGRATED_VAULT`] ([`DeviceLogStorage::follow_vault`]), so
    /// that devices migrating the same folder at once land in one vault.
    ///
    /// Errors: `InvalidInput` for a handle following another vault or a
    /// folder with no shared-log vault; store errors as they come.
    pub async fn migrate_from_shared_log(&self) -> Result<MigrationReport> {
        if self.wanted != Some(MIGRATED_VAULT) {
            return Err(Error::invalid(
                "a migration must follow the migrated vault (follow_vault(MIGRATED_VAULT))",
            ));
        }
        let migration = Migration::new(
            Arc::clone(&self.store),
            self.prefix.clone(),
            self.options.clone(),
        );
        if let Some(report) = migration.moved_already().await? {
            return Ok(report);
        }
        migration.run(&*self.own().await?).await
    }

    /// The prefix the vault lives under.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The device this handle writes as.
    pub fn writer(&self) -> WriterId {
        self.writer
    }

    /// This device's own log as a shared-log vault (compaction, tests),
    /// created under the vault this device follows (a new vault if the
    /// folder holds none).
    pub async fn own(&self) -> Result<Arc<ObjectStoreStorage>> {
        self.own
            .get_or_try_init(|| async {
                let listed = self.list_devices().await?;
                let vault = self.follow(&listed)?.unwrap_or(self.writer);
                let path = self
                    .devices_dir
                    .child(format!("{vault}.{}", self.writer).as_str());
                if !listed.iter().any(|d| d.path == path) {
                    self.write_joined(&path).await?;
                }
                Ok(Arc::new(ObjectStoreStorage::new(
                    Arc::clone(&self.store),
                    path,
                    self.options.clone(),
                )))
            })
            .await
            .cloned()
    }

    /// Writes `dir/joined` with the time now (the first object of a new
    /// device directory; an existing one is left as it is).
    async fn write_joined(&self, dir: &Path) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let path = dir.child(JOINED);
        match self
            .store
            .put_opts(
                &path,
                Bytes::from(now.to_string()).into(),
                object_store::PutOptions::from(object_store::PutMode::Create),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if crate::error::is_taken(&e) => Ok(()),
            Err(e) => Err(crate::error::map_store_error(e, &format!("writing {path}"))),
        }
    }

    /// The directories under `dev/`: one LIST. Other names are reported
    /// once as foreign.
    async fn list_devices(&self) -> Result<Vec<DeviceDir>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.devices_dir))
            .await
            .map_err(|e| {
                crate::error::map_store_error(e, &format!("listing {}", self.devices_dir))
            })?;
        for object in &listed.objects {
            self.foreign.report(&object.location);
        }
        let mut dirs = Vec::new();
        for path in &listed.common_prefixes {
            match parse_device_dir(path) {
                Some(dir) => dirs.push(dir),
                None => self.foreign.report(path),
            }
        }
        Ok(dirs)
    }

    /// The vault this device follows among `listed`: the one it wrote to,
    /// else the one asked for, else the only one. `None` for a folder with
    /// no vault yet.
    ///
    /// Errors: [`Error::TwoVaults`] when the folder holds several and none
    /// of these rules picks one.
    fn follow(&self, listed: &[DeviceDir]) -> Result<Option<WriterId>> {
        if let Some(own) = self.own.get() {
            if let Some(dir) = listed.iter().find(|d| own_path_is(own, d)) {
                return Ok(Some(dir.vault));
            }
        }
        let mut mine: Vec<WriterId> = listed
            .iter()
            .filter(|d| d.writer == self.writer)
            .map(|d| d.vault)
            .collect();
        mine.sort();
        mine.dedup();
        let mut vaults: Vec<WriterId> = listed.iter().map(|d| d.vault).collect();
        vaults.sort();
        vaults.dedup();
        match (mine.as_slice(), self.wanted) {
            ([one], _) => Ok(Some(*one)),
            (_, Some(wanted)) if vaults.contains(&wanted) || mine.is_empty() => Ok(Some(wanted)),
            ([], None) if vaults.len() <= 1 => Ok(vaults.first().copied()),
            _ => Err(Error::TwoVaults {
                message: String::new(),
                vaults: vaults.iter().map(|v| v.to_string()).collect(),
            }),
        }
    }

    /// The vault this device follows, as [`DeviceLogStorage::devices`]
    /// decides it (`None` in an empty folder).
    async fn followed_vault(&self) -> Result<Option<WriterId>> {
        let listed = self.list_devices().await?;
        self.follow(&listed)
    }

    /// Every device of the vault this device follows (this one only once
    /// it has written), in writer order: one LIST of `dev/`.
    ///
    /// Errors: [`Error::TwoVaults`] (described: each vault's devices,
    /// chats and creation time) when the folder holds several vaults and
    /// this device belongs to neither.
    pub async fn devices(&self) -> Result<Vec<(WriterId, Arc<ObjectStoreStorage>)>> {
        let listed = self.list_devices().await?;
        let vault = match self.follow(&listed) {
            Ok(Some(vault)) => vault,
            Ok(None) => return Ok(Vec::new()),
            Err(Error::TwoVaults { .. }) => return Err(self.describe_vaults(&listed).await),
            Err(e) => return Err(e),
        };
        let rivals: Vec<&DeviceDir> = listed.iter().filter(|d| d.vault != vault).collect();
        if !rivals.is_empty()
            && !self
                .rivals_reported
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                following = %vault,
                others = ?rivals.iter().map(|d| d.path.to_string()).collect::<Vec<_>>(),
                "this folder also holds another vault (a device created one before its copy of \
                 the folder had synced); it is left alone: move its dev/ directories out of the \
                 folder on every device to remove it"
            );
        }
        let mut all = Vec::new();
        let mut peers = self.peers.lock().await;
        for dir in listed.iter().filter(|d| d.vault == vault) {
            if dir.writer == self.writer {
                all.push((dir.writer, self.own().await?));
                continue;
            }
            let peer = peers.entry(dir.writer).or_insert_with(|| {
                Arc::new(ObjectStoreStorage::new(
                    Arc::clone(&self.store),
                    dir.path.clone(),
                    self.options.clone().with_copied(true),
                ))
            });
            all.push((dir.writer, Arc::clone(peer)));
        }
        all.sort_by_key(|(w, _)| *w);
        Ok(all)
    }

    /// [`Error::TwoVaults`] describing each vault in `listed`.
    async fn describe_vaults(&self, listed: &[DeviceDir]) -> Error {
        let mut by_vault: BTreeMap<WriterId, Vec<&DeviceDir>> = BTreeMap::new();
        for dir in listed {
            by_vault.entry(dir.vault).or_default().push(dir);
        }
        let mut lines = Vec::new();
        for (vault, dirs) in &by_vault {
            let mut chats = std::collections::BTreeSet::new();
            let mut created: Option<u128> = None;
            for dir in dirs {
                let log = ObjectStoreStorage::new(
                    Arc::clone(&self.store),
                    dir.path.clone(),
                    self.options.clone().with_copied(true),
                );
                if let Ok(ids) = log.log().live_chats().await {
                    chats.extend(ids);
                }
                if let Some(at) = self.joined_at(&dir.path).await {
                    created = Some(created.map_or(at, |c| c.min(at)));
                }
            }
            let created = created.map_or_else(|| "unknown".to_string(), format_millis);
            lines.push(format!(
                "vault {vault}: created {created}, {} chat(s), {} device(s) ({})",
                chats.len(),
                dirs.len(),
                dirs.iter()
                    .map(|d| d.path.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Error::TwoVaults {
            message: format!(
                "this folder holds {} vaults (a device created one before its copy of the folder \
                 had synced, or the folder path was mistyped): {}. Keep one: move the dev/ \
                 directories of the other out of the folder on every device, or name the vault \
                 to follow (`?vault=<id>` on the file:// URL)",
                by_vault.len(),
                lines.join("; ")
            ),
            vaults: by_vault.keys().map(|v| v.to_string()).collect(),
        }
    }

    /// When the device of `dir` joined its vault (`None`: unknown).
    async fn joined_at(&self, dir: &Path) -> Option<u128> {
        let got = self.store.get(&dir.child(JOINED)).await.ok()?;
        if got.meta.size > 64 {
            return None;
        }
        let bytes = got.bytes().await.ok()?;
        std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
    }

    /// Every device's newest key file, in writer order.
    pub async fn key_files(&self) -> Result<Vec<(WriterId, KeyringBlob)>> {
        let devices = self.devices().await?;
        let concurrency = self.concurrency();
        let read: Vec<Option<(WriterId, KeyringBlob)>> = futures::stream::iter(devices)
            .map(|(writer, storage)| async move {
                Ok::<_, Error>(storage.get_keyring().await?.map(|blob| (writer, blob)))
            })
            .buffered(concurrency)
            .try_collect()
            .await?;
        Ok(read.into_iter().flatten().collect())
    }

    fn concurrency(&self) -> usize {
        self.options.concurrency.clamp(1, 8)
    }

    /// The newest version of each chat over every device's log.
    async fn merged_versions(&self, chats: &[ChatId]) -> Result<Vec<Option<u64>>> {
        let devices = self.devices().await?;
        let mut merged = vec![None; chats.len()];
        for (_, storage) in devices {
            let versions = storage.log().current_versions(chats).await?;
            for (slot, version) in merged.iter_mut().zip(versions) {
                *slot = (*slot).max(version);
            }
        }
        Ok(merged)
    }
}

fn own_path_is(own: &ObjectStoreStorage, dir: &DeviceDir) -> bool {
    own.prefix() == &dir.path
}

/// `millis` since the Unix epoch as `YYYY-MM-DD HH:MM UTC`.
fn format_millis(millis: u128) -> String {
    let secs = i64::try_from(millis / 1000).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(secs, 0).map_or_else(
        || format!("{millis} ms"),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

#[async_trait]
impl Storage for DeviceLogStorage {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            notifications: false,
            max_batch: self.options.max_batch,
            max_record_bytes: self.options.max_record_bytes,
            // Preconditions are checked against what this device has seen
            // of the others: another device may commit concurrently.
            atomic_preconditions: false,
            inline_summaries: true,
            concurrent_writers: true,
            blobs: true,
        }
    }

    async fn put_blob(&self, id: BlobId, sealed: Bytes) -> Result<()> {
        self.sealed_blobs.put(id, sealed).await
    }

    async fn get_blob(&self, id: BlobId) -> Result<Option<Bytes>> {
        self.sealed_blobs.get(id).await
    }

    async fn list_blobs(&self, after: Option<BlobId>, limit: usize) -> Result<BlobPage> {
        self.sealed_blobs.list(after, limit).await
    }

    async fn missing_blobs(&self, ids: &[BlobId]) -> Result<Vec<BlobId>> {
        self.sealed_blobs.missing(ids).await
    }

    async fn delete_blob(&self, id: BlobId) -> Result<()> {
        self.sealed_blobs.delete(id).await
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        let limit = limit.max(1);
        let mut cursors = parse_cursor(since)?;
        let mut changes = Vec::new();
        let mut has_more = false;
        let mut waiting = Vec::new();
        for (writer, storage) in self.devices().await? {
            let remaining = limit - changes.len();
            if remaining == 0 {
                has_more = true;
                break;
            }
            let at = cursors.get(&writer).cloned().unwrap_or_default();
            let page = storage.changes(&at, remaining).await?;
            page.check_progress(&at)?;
            has_more |= page.has_more;
            waiting.extend(page.waiting);
            changes.extend(page.changes.into_iter().map(|change| Change {
                writer: Some(writer.0),
                ..change
            }));
            cursors.insert(writer, page.cursor);
        }
        Ok(ChangePage {
            changes,
            cursor: format_cursor(&cursors),
            has_more,
            waiting: (!waiting.is_empty()).then(|| waiting.join("; ")),
        })
    }

    /// Each device's current record of each chat: a chat two devices
    /// changed concurrently comes back once per device, to be merged.
    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        let devices = self.devices().await?;
        let concurrency = self.concurrency();
        let per_device: Vec<Vec<SealedRecord>> = futures::stream::iter(devices)
            .map(|(_, storage)| async move { storage.get(chats, part).await })
            .buffered(concurrency)
            .try_collect()
            .await?;
        Ok(per_device.into_iter().flatten().collect())
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        let mut results = self.put_batch(vec![(record, precondition)]).await;
        results.pop().unwrap_or(Ok(()))
    }

    /// Checks each precondition against the newest version any device's
    /// log holds (as far as this device has received them), then commits
    /// the admitted records to this device's own log.
    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let chats: Vec<ChatId> = batch.iter().map(|(r, _)| r.chat).collect();
        let current = match self.merged_versions(&chats).await {
            Ok(current) => current,
            Err(e) => {
                let message = e.to_string();
                return batch
                    .iter()
                    .map(|_| {
                        Err(Error::Unavailable {
                            message: message.clone(),
                            source: None,
                        })
                    })
                    .collect();
            }
        };
        let mut results: Vec<Option<Result<()>>> = Vec::with_capacity(batch.len());
        let mut admitted = Vec::new();
        let mut slots = Vec::new();
        for (i, ((record, precondition), current)) in batch.into_iter().zip(current).enumerate() {
            if Precondition::from(precondition).admits(current, record.version) {
                admitted.push((record, PutPrecondition::None));
                slots.push(i);
                results.push(None);
            } else {
                results.push(Some(Err(Error::Conflict {
                    chat: record.chat,
                    current,
                })));
            }
        }
        if !admitted.is_empty() {
            let committed = match self.own().await {
                Ok(own) => own.put_batch(admitted).await,
                Err(e) => {
                    let message = e.to_string();
                    admitted
                        .iter()
                        .map(|_| {
                            Err(Error::Unavailable {
                                message: message.clone(),
                                source: None,
                            })
                        })
                        .collect()
                }
            };
            for (slot, result) in slots.into_iter().zip(committed) {
                results[slot] = Some(result);
            }
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
    }

    /// The newest key file any device wrote. Two devices that wrote the
    /// same version with different bytes (key changes made while they could
    /// not see each other) are resolved by taking the lower writer's, the
    /// same choice on every device; the key layer's successor rule then
    /// decides whether this device trusts it.
    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        let files = self.key_files().await?;
        let newest = files.iter().map(|(_, b)| b.version).max();
        let mut at_newest = files.into_iter().filter(|(_, b)| Some(b.version) == newest);
        let Some((writer, chosen)) = at_newest.next() else {
            return Ok(None);
        };
        for (other, blob) in at_newest {
            if blob.bytes != chosen.bytes {
                tracing::warn!(
                    version = chosen.version,
                    chosen = %writer,
                    other = %other,
                    "two devices wrote different key files of one version; using the lower writer's"
                );
            }
        }
        Ok(Some(chosen))
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        let current = self.get_keyring().await?.map(|b| b.version);
        let version = current
            .map_or(Some(1), |v| v.checked_add(1))
            .ok_or_else(|| {
                Error::corrupt(
                    self.devices_dir.to_string(),
                    "keyring version numbers are exhausted",
                )
            })?;
        if !Precondition::from(precondition).admits(current, version) {
            return Err(Error::Conflict {
                chat: ChatId(uuid::Uuid::nil()),
                current,
            });
        }
        let own = self.own().await?;
        own.key_file().create_version(bytes, version).await?;
        if current.is_none() && self.followed_vault().await? == Some(self.writer) {
            // A new vault: releases before this layout must not take the
            // folder for an empty one (and create a vault of their own).
            write_markers(&*self.store, &self.prefix).await?;
        }
        Ok(version)
    }

    /// Compacts this device's own log only: a device never deletes a file
    /// under another device's directory.
    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        match self.own.get() {
            Some(own) => own.maintain(budget).await,
            // Nothing written here yet: nothing of this device's to compact.
            None => Ok(MaintenanceReport::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_invalid_input() {
        let mut cursors = BTreeMap::new();
        cursors.insert(WriterId(1), Cursor("5".into()));
        cursors.insert(WriterId(0xabc), Cursor("7.2".into()));
        let text = format_cursor(&cursors);
        assert_eq!(text.0, "0000000000000001=5;0000000000000abc=7.2");
        assert_eq!(parse_cursor(&text).unwrap(), cursors);
        assert!(parse_cursor(&Cursor::start()).unwrap().is_empty());
        assert!(
            parse_cursor(&Cursor("57.3".into())).unwrap().is_empty(),
            "a shared-log cursor starts over"
        );
        for bad in ["5x", "xyz=1", "0000000000000001=1;;", "1.2.3"] {
            assert!(
                matches!(
                    parse_cursor(&Cursor(bad.into())),
                    Err(Error::InvalidInput { .. })
                ),
                "{bad}"
            );
        }
    }
}
