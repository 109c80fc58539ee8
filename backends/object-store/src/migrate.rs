//! [`Migration`]: moving a shared-log vault to the per-device layout
//! (`docs/design.md` §5.4): the key file and every chat's current record
//! are copied into the device's own log, then the shared log is sealed with
//! the markers (see [`crate::markers`]).

use crate::markers::{create, is_marker, key_file_marker, log_marker};
use crate::options::ObjectStoreOptions;
use crate::storage::ObjectStoreStorage;
use chatvault_core::{ChatId, Cursor, Error, Part, PutPrecondition, Result, Storage};
use object_store::path::Path;
use object_store::ObjectStore;
use std::collections::BTreeSet;
use std::sync::Arc;

/// What [`DeviceLogStorage::migrate_from_shared_log`](crate::DeviceLogStorage::migrate_from_shared_log) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Records copied into this device's log (records already there from an
    /// interrupted run are not counted).
    pub records: u64,
    /// The key file version copied.
    pub key_file_version: Option<u64>,
    /// The shared log's slot that now holds the marker.
    pub sealed_at: u64,
    /// True if another device had already moved the vault (nothing copied
    /// by this call but what that device's copy lacked).
    pub already_moved: bool,
}

/// One move of a shared-log vault into a device's own log of the
/// per-device layout (`docs/design.md` §5.4).
pub(crate) struct Migration {
    store: Arc<dyn ObjectStore>,
    /// The shared log being moved.
    shared: ObjectStoreStorage,
}

impl Migration {
    /// Moves the shared-log vault under `prefix` in `store`.
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        options: ObjectStoreOptions,
    ) -> Self {
        Self {
            shared: ObjectStoreStorage::new(Arc::clone(&store), prefix, options),
            store,
        }
    }

    /// The report of a move made already (by another device, or by an
    /// earlier run here): the shared log is sealed.
    pub(crate) async fn moved_already(&self) -> Result<Option<MigrationReport>> {
        Ok(sealed_at(&self.shared).await?.map(|slot| MigrationReport {
            sealed_at: slot,
            already_moved: true,
            ..MigrationReport::default()
        }))
    }

    /// Copies into `own` (the device's own log) and seals the shared log;
    /// see [`DeviceLogStorage::migrate_from_shared_log`](crate::DeviceLogStorage::migrate_from_shared_log).
    pub(crate) async fn run(&self, own: &ObjectStoreStorage) -> Result<MigrationReport> {
        let (store, shared) = (&self.store, &self.shared);
        let mut report = MigrationReport::default();
        for _ in 0..16 {
            let key_file = shared.get_keyring().await?;
            let Some(key_file) = key_file else {
                return Err(Error::invalid(
                    "the folder holds no shared-log vault to move",
                ));
            };
            if !is_marker(&key_file.bytes) {
                match own
                    .key_file()
                    .create_version(key_file.bytes.clone(), key_file.version)
                    .await
                {
                    Ok(()) | Err(Error::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
                report.key_file_version = Some(key_file.version);
            }
            // Every chat's current record, read through the shared log's
            // own feed; a marker appearing meanwhile (another device moved
            // the vault) ends the migration.
            let (chats, head) = match chats_and_head(shared).await {
                Ok(found) => found,
                Err(Error::UnsupportedFormat { .. }) => match sealed_at(shared).await? {
                    Some(slot) => {
                        report.sealed_at = slot;
                        report.already_moved = true;
                        return Ok(report);
                    }
                    None => continue,
                },
                Err(e) => return Err(e),
            };
            for batch in chats.chunks(own.options().max_batch.max(1)) {
                let records = shared.get(batch, Part::Body).await?;
                let puts = records
                    .into_iter()
                    .map(|record| (record, PutPrecondition::None))
                    .collect();
                for result in own.put_batch(puts).await {
                    match result {
                        Ok(()) => report.records += 1,
                        // Already copied by an earlier, interrupted run.
                        Err(Error::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            let slot = head + 1;
            if create(&**store, &shared.log().slot(slot), log_marker()).await? {
                report.sealed_at = slot;
                // Releases that read the key file first stop there too.
                let next = key_file.version + 1;
                create(&**store, &shared.key_file().path(next), key_file_marker()).await?;
                return Ok(report);
            }
            // Another commit took the slot: copy it too, then seal after it.
        }
        Err(Error::Unavailable {
            message: "the shared log kept growing while it was being moved; run the migration \
                      again"
                .into(),
            source: None,
        })
    }
}

/// Every chat with a record in `shared` and the head of its log, read
/// through the feed. Fails with `UnsupportedFormat` at a marker.
async fn chats_and_head(shared: &ObjectStoreStorage) -> Result<(Vec<ChatId>, u64)> {
    let mut chats = BTreeSet::new();
    let mut cursor = Cursor::start();
    loop {
        let page = shared.changes(&cursor, 1000).await?;
        page.check_progress(&cursor)?;
        chats.extend(page.changes.iter().map(|c| c.chat));
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    let head = shared.log().head_after_refresh().await?;
    Ok((chats.into_iter().collect(), head))
}

/// The slot of the per-device marker if the newest slot of `shared` holds
/// it.
async fn sealed_at(shared: &ObjectStoreStorage) -> Result<Option<u64>> {
    let listed = shared.log().list_log(0).await?;
    let Some(&newest) = listed.last() else {
        return Ok(None);
    };
    match shared.log().read_marker(newest).await {
        Ok(bytes) if is_marker(&bytes) => Ok(Some(newest)),
        Ok(_) | Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
