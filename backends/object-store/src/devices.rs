//! The per-device layout, for folders that a file-sync service (Syncthing,
//! Dropbox, a NAS) copies between devices, each device writing its own
//! copy: no two devices ever create or change the same path.
//!
//! ```text
//! <prefix>/dev/<writer, 16 hex>/log/<seq>          this writer's change log
//! <prefix>/dev/<writer>/rec/<chat>/<version>-<w>   its record blobs
//! <prefix>/dev/<writer>/snap/<seq>                 its compaction snapshots
//! <prefix>/dev/<writer>/keyring/<version>          key files it wrote
//! ```
//!
//! Each `dev/<writer>/` is a complete shared-log vault (`docs/design.md`
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
use crate::{ObjectStoreOptions, ObjectStoreStorage};
use async_trait::async_trait;
use bytes::Bytes;
use chatvault_core::{
    Capabilities, ChangePage, ChatId, Cursor, Error, KeyringBlob, MaintenanceBudget,
    MaintenanceReport, Part, PutPrecondition, Result, SealedRecord, Storage,
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

/// A vault in the per-device layout (see the [module docs](self)). Several
/// devices share it through copies of one folder; each writes only under
/// its own `dev/<writer>/`.
///
/// # Errors
///
/// As [`ObjectStoreStorage`], plus: a log entry of another device that does
/// not decode yet (a file the service is still copying) stops that
/// device's feed before it until it decodes; a record blob named by an
/// entry that arrived before it fails `get` with `Corrupt` naming the chat
/// (the engine keeps such a record as skipped and retries it).
pub struct DeviceLogStorage {
    store: Arc<dyn ObjectStore>,
    devices_dir: Path,
    options: ObjectStoreOptions,
    writer: WriterId,
    own: Arc<ObjectStoreStorage>,
    peers: tokio::sync::Mutex<BTreeMap<WriterId, Arc<ObjectStoreStorage>>>,
    foreign: ForeignFiles,
}

impl fmt::Debug for DeviceLogStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceLogStorage")
            .field("store", &self.store.to_string())
            .field("devices_dir", &self.devices_dir)
            .field("writer", &self.writer)
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
        let devices_dir = prefix.child(DEVICES_DIR);
        let own = Arc::new(ObjectStoreStorage::new(
            Arc::clone(&store),
            devices_dir.child(writer.to_string().as_str()),
            options.clone(),
        ));
        Self {
            store,
            devices_dir,
            options,
            writer,
            own,
            peers: tokio::sync::Mutex::new(BTreeMap::new()),
            foreign: ForeignFiles::default(),
        }
    }

    /// True if `store` holds a per-device vault under `prefix` (its `dev/`
    /// directory has at least one device).
    pub async fn exists(store: &dyn ObjectStore, prefix: &Path) -> Result<bool> {
        let dir = prefix.child(DEVICES_DIR);
        let listed = store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| crate::error::map_store_error(e, &format!("listing {dir}")))?;
        Ok(listed
            .common_prefixes
            .iter()
            .any(|p| p.filename().and_then(WriterId::parse).is_some()))
    }

    /// The device this handle writes as.
    pub fn writer(&self) -> WriterId {
        self.writer
    }

    /// This device's own log, as a shared-log vault (compaction, tests).
    pub fn own(&self) -> &ObjectStoreStorage {
        &self.own
    }

    /// Every device that wrote to the vault (this one only once it has), in
    /// writer order: one LIST of `dev/`.
    pub async fn devices(&self) -> Result<Vec<(WriterId, Arc<ObjectStoreStorage>)>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.devices_dir))
            .await
            .map_err(|e| {
                crate::error::map_store_error(e, &format!("listing {}", self.devices_dir))
            })?;
        let mut peers = self.peers.lock().await;
        let mut own_listed = false;
        for dir in &listed.common_prefixes {
            match dir.filename().and_then(WriterId::parse) {
                Some(writer) if writer == self.writer => own_listed = true,
                Some(writer) => {
                    peers.entry(writer).or_insert_with(|| {
                        Arc::new(ObjectStoreStorage::new(
                            Arc::clone(&self.store),
                            dir.clone(),
                            self.options.clone().with_copied(true),
                        ))
                    });
                }
                None => self.foreign.report(dir),
            }
        }
        for object in &listed.objects {
            self.foreign.report(&object.location);
        }
        let mut all: Vec<(WriterId, Arc<ObjectStoreStorage>)> =
            peers.iter().map(|(w, s)| (*w, Arc::clone(s))).collect();
        if own_listed {
            all.push((self.writer, Arc::clone(&self.own)));
            all.sort_by_key(|(w, _)| *w);
        }
        Ok(all)
    }

    /// Every device's newest key file, in writer order.
    pub async fn key_files(&self) -> Result<Vec<(WriterId, KeyringBlob)>> {
        let devices = self.devices().await?;
        let concurrency = self.options_concurrency();
        let read: Vec<Option<(WriterId, KeyringBlob)>> = futures::stream::iter(devices)
            .map(|(writer, storage)| async move {
                Ok::<_, Error>(storage.get_keyring().await?.map(|blob| (writer, blob)))
            })
            .buffered(concurrency)
            .try_collect()
            .await?;
        Ok(read.into_iter().flatten().collect())
    }

    fn options_concurrency(&self) -> usize {
        self.own.options().concurrency.clamp(1, 8)
    }

    /// The newest version of each chat over every device's log.
    async fn merged_versions(&self, chats: &[ChatId]) -> Result<Vec<Option<u64>>> {
        let devices = self.devices().await?;
        let mut merged = vec![None; chats.len()];
        for (_, storage) in devices {
            let versions = storage.current_versions(chats).await?;
            for (slot, version) in merged.iter_mut().zip(versions) {
                *slot = (*slot).max(version);
            }
        }
        Ok(merged)
    }
}

#[async_trait]
impl Storage for DeviceLogStorage {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            concurrent_writers: true,
            // Preconditions are checked against what this device has seen
            // of the others: another device may commit concurrently.
            atomic_preconditions: false,
            ..self.own.capabilities()
        }
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        let limit = limit.max(1);
        let mut cursors = parse_cursor(since)?;
        let mut changes = Vec::new();
        let mut has_more = false;
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
            changes.extend(page.changes);
            cursors.insert(writer, page.cursor);
        }
        Ok(ChangePage {
            changes,
            cursor: format_cursor(&cursors),
            has_more,
        })
    }

    /// Each device's current record of each chat: a chat two devices
    /// changed concurrently comes back once per device, to be merged.
    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        let devices = self.devices().await?;
        let concurrency = self.options_concurrency();
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
            let committed = self.own.put_batch(admitted).await;
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
        self.own.create_keyring_version(bytes, version).await?;
        Ok(version)
    }

    /// Compacts this device's own log only: a device never deletes a file
    /// under another device's directory.
    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        self.own.maintain(budget).await
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
        for bad in ["5", "xyz=1", "0000000000000001", "0000000000000001=1;;"] {
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
