//! Moving a shared-log vault to the per-device layout, and the markers that
//! stop releases before the per-device layout from misreading or writing a
//! folder that uses it (`docs/design.md` §5.4).
//!
//! Both markers are objects in the shared-log places an older release
//! reads, in a format newer than it knows, so it fails with
//! `UnsupportedFormat` instead of seeing an empty vault (and creating one):
//!
//! - `keyring/<n>`: `CVKF`, format byte 128, then a line of text;
//! - `log/<n>`: `cvl`, format byte 128, then the same text.
//!
//! Their bytes are constant, so two devices writing them in their own
//! copies write the same file.

use crate::devices::{DeviceLogStorage, WriterId};
use crate::entry::ENTRY_MAGIC;
use crate::error::{is_taken, map_store_error};
use crate::layout::Layout;
use crate::ObjectStoreStorage;
use bytes::Bytes;
use chatvault_core::{ChatId, Cursor, Error, Part, PutPrecondition, Result, Storage};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The format byte of both markers: above any format a shared-log release
/// reads (and far from the next real one).
pub const MARKER_FORMAT: u8 = 128;
/// The text after the marker header.
const MARKER_TEXT: &[u8] =
    b"\nthis vault uses the per-device folder layout: open it with chatvault 0.2 or later\n";
/// The vault id of a per-device vault migrated from a shared log: every
/// device that migrates the same folder lands in the same vault.
pub const MIGRATED_VAULT: WriterId = WriterId(0);

fn marker(magic: &[u8]) -> Bytes {
    let mut bytes = magic.to_vec();
    bytes.push(MARKER_FORMAT);
    bytes.extend_from_slice(MARKER_TEXT);
    Bytes::from(bytes)
}

/// The key-file marker's bytes.
pub fn key_file_marker() -> Bytes {
    marker(b"CVKF")
}

/// The log-entry marker's bytes.
pub fn log_marker() -> Bytes {
    marker(ENTRY_MAGIC)
}

/// True if `bytes` are one of the markers.
pub fn is_marker(bytes: &[u8]) -> bool {
    bytes == key_file_marker() || bytes == log_marker()
}

/// Creates `path` holding `bytes` unless it exists. True if it now holds
/// exactly `bytes`.
async fn create(store: &dyn ObjectStore, path: &Path, bytes: Bytes) -> Result<bool> {
    match store
        .put_opts(
            path,
            bytes.clone().into(),
            PutOptions::from(PutMode::Create),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_taken(&e) => {
            let held = store
                .get(path)
                .await
                .map_err(|e| map_store_error(e, &format!("reading {path}")))?
                .bytes()
                .await
                .map_err(|e| map_store_error(e, &format!("reading {path}")))?;
            Ok(held == bytes)
        }
        Err(e) => Err(map_store_error(e, &format!("writing {path}"))),
    }
}

/// Writes both markers at slot and version 1 of a new per-device vault's
/// shared-log places (`prefix`), where a shared-log release looks first.
pub(crate) async fn write_markers(store: &dyn ObjectStore, prefix: &Path) -> Result<()> {
    let layout = Layout::new(prefix);
    create(store, &layout.keyring(1), key_file_marker()).await?;
    create(store, &layout.log_entry(1), log_marker()).await?;
    Ok(())
}

/// What [`DeviceLogStorage::migrate_from_shared_log`] did.
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

impl DeviceLogStorage {
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
        if self.wanted_vault() != Some(MIGRATED_VAULT) {
            return Err(Error::invalid(
                "a migration must follow the migrated vault (follow_vault(MIGRATED_VAULT))",
            ));
        }
        let store = self.store_handle();
        let shared = ObjectStoreStorage::new(
            Arc::clone(&store),
            self.prefix().clone(),
            self.options_handle(),
        );
        let mut report = MigrationReport::default();
        if let Some(slot) = shared.sealed_at().await? {
            // Moved already (by another device, or by an earlier run here).
            report.sealed_at = slot;
            report.already_moved = true;
            return Ok(report);
        }
        let own = self.own().await?;
        for _ in 0..16 {
            let key_file = shared.get_keyring().await?;
            let Some(key_file) = key_file else {
                return Err(Error::invalid(
                    "the folder holds no shared-log vault to move",
                ));
            };
            if !is_marker(&key_file.bytes) {
                match own
                    .create_keyring_version(key_file.bytes.clone(), key_file.version)
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
            let (chats, head) = match shared.chats_and_head().await {
                Ok(found) => found,
                Err(Error::UnsupportedFormat { .. }) => match shared.sealed_at().await? {
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
                let records = shared.get(batch, Part::Full).await?;
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
            if create(&*store, &shared.log_path(slot), log_marker()).await? {
                report.sealed_at = slot;
                // Releases that read the key file first stop there too.
                let next = key_file.version + 1;
                create(&*store, &shared.keyring_path(next), key_file_marker()).await?;
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

impl ObjectStoreStorage {
    /// Every chat with a record and the head of the log, read through the
    /// feed. Fails with `UnsupportedFormat` at a marker.
    pub(crate) async fn chats_and_head(&self) -> Result<(Vec<ChatId>, u64)> {
        let mut chats = BTreeSet::new();
        let mut cursor = Cursor::start();
        loop {
            let page = self.changes(&cursor, 1000).await?;
            page.check_progress(&cursor)?;
            chats.extend(page.changes.iter().map(|c| c.chat));
            cursor = page.cursor;
            if !page.has_more {
                break;
            }
        }
        let head = self.head_after_refresh().await?;
        Ok((chats.into_iter().collect(), head))
    }

    /// The slot of the per-device marker if the newest slot holds it.
    pub(crate) async fn sealed_at(&self) -> Result<Option<u64>> {
        let listed = self.list_log(0).await?;
        let Some(&newest) = listed.last() else {
            return Ok(None);
        };
        match self.read_capped(&self.layout.log_entry(newest), 4096).await {
            Ok(bytes) if is_marker(&bytes) => Ok(Some(newest)),
            Ok(_) | Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The head of the log after listing what is new.
    async fn head_after_refresh(&self) -> Result<u64> {
        let mut state = self.state.lock().await;
        self.refresh(&mut state, None).await?;
        Ok(state.index.head())
    }

    pub(crate) fn log_path(&self, slot: u64) -> Path {
        self.layout.log_entry(slot)
    }

    pub(crate) fn keyring_path(&self, version: u64) -> Path {
        self.layout.keyring(version)
    }
}
