//! chatvault's record layout over any [`object_store::ObjectStore`]: a local
//! folder, S3 or anything S3-compatible, in-memory for tests. The `fs` and
//! `s3` backends are this crate plus a store.
//!
//! [`ObjectStoreStorage`] needs only atomic whole-object puts, create-if-absent
//! (`PutMode::Create`), ranged GET, LIST with an offset, and DELETE. It never
//! overwrites an object that readers rely on, so stores without If-Match
//! updates (local files) work.
//!
//! # Layout, commit point, validity
//!
//! The formats, the log-slot commit protocol, compaction and the crash
//! analysis of each request are in the repository's `docs/design.md` §5;
//! what the store must guarantee is in §1. In short:
//!
//! ```text
//! rec/<chat>/<version>-<write id>   immutable blob: sealed summary + sealed body
//! log/<seq, 20 digits>              change log; slot N+1 is written after N exists
//! snap/<seq, 20 digits>             compaction snapshot: every chat at slot seq
//! keyring/<version, 20 digits>      the vault's key file, one object per version
//! blob/<2 hex>/<64 hex>             sealed blobs (attachment chunks), by BlobId
//! ```
//!
//! A put writes its blobs, then creates the next free log slot with
//! `PutMode::Create`: that create is the single commit point. Preconditions
//! are decided by replaying the log, so every reader agrees on which items
//! count; a losing item fails with
//! [`Error::Conflict`](chatvault_core::Error::Conflict) carrying the current
//! version. A reader that sees a hole in the log stops before it and
//! resumes at the next poll.
//!
//! # Per device
//!
//! [`DeviceLogStorage`] is the layout for folders a file-sync service
//! copies between devices (`docs/design.md` §5.4): one such shared-log vault
//! per device under `dev/<vault>.<writer>/`, written only by its device and
//! read by all; the feed merges them, `get` returns each device's current
//! record (concurrent versions are merged by the engine), and
//! [`DeviceLogStorage::migrate_from_shared_log`] moves a shared-log vault
//! into it.
//!
//! # One type for either layout
//!
//! [`ObjectStoreVault`] holds a vault in either [`VaultLayout`] and an
//! optional notification transport ([`NotificationSource`]): the `fs` and `s3` builders
//! configure one and return it.
//!
//! # Costs
//!
//! - **Idle poll** (`changes` at the head): one LIST after the cursor,
//!   whatever the number of chats.
//! - **k changes**: the LIST, then the new entries fetched concurrently (their
//!   inline summaries fill [`Change::summary`](chatvault_core::Change::summary)).
//!   A feed page reads only about as many entries as it reports changes from
//!   (one entry of a batch put carries up to `max_batch` records).
//! - **`get`**: one request for commits newer than the handle's index (a
//!   HEAD of the next log slot; a LIST and the new entries when that slot
//!   exists or the handle has not seen the head of the log for
//!   [`ObjectStoreOptions::with_max_claim_delay`]) and, concurrently, one GET
//!   per record blob it needs: none for
//!   [`Part::Summary`](chatvault_core::Part::Summary) when the summaries
//!   were inlined (the index keeps them), a ranged GET per chat otherwise,
//!   a whole-blob GET per chat for [`Part::Body`](chatvault_core::Part::Body).
//! - **Put**: two requests when this handle saw the head of the log within
//!   the claim delay (blob PUT, slot create), else a LIST first; losing a
//!   race adds a LIST and the GETs of the entries it missed.
//! - **First use of a handle**: the index (each chat's current version and
//!   inline summary, about 100 bytes per chat plus the summary) is rebuilt from the latest snapshot plus the log
//!   after it: one LIST of `snap/`, one GET, one LIST of `log/` and one GET per
//!   entry after the snapshot. [`Storage::maintain`](chatvault_core::Storage::maintain) keeps that tail short.
//!
//! # Compaction
//!
//! [`Storage::maintain`](chatvault_core::Storage::maintain) compacts by itself when [`MaintenancePolicy`] says
//! it is due (the engine calls it after sync rounds);
//! [`ObjectStoreStorage::compact`] does it on demand. Either writes
//! `snap/<head>` and deletes what it covers, only objects older than
//! [`CompactOptions::with_min_age`], which must exceed
//! [`ObjectStoreOptions::with_max_claim_delay`] (checked). A reader whose
//! cursor points into the deleted part of the log resyncs from the
//! snapshot; nothing is lost. See `docs/design.md` §5.2.
//!
//! # Damaged and foreign objects
//!
//! - A log entry that cannot be decoded counts, for every reader alike, as a
//!   slot with no valid record: it is skipped with a `tracing` warning and the
//!   rest of the feed still syncs.
//! - A record blob that is missing, truncated or garbled fails
//!   [`get`](chatvault_core::Storage::get) with
//!   [`Error::Corrupt`](chatvault_core::Error::Corrupt) whose `what` is
//!   `"chat <uuid> …"` when the call reads it: always for `Part::Body`, for
//!   `Part::Summary` only if the summary was too large to inline (an inline
//!   summary is served from the log entry, which is the commit); the call
//!   fails as a whole, so a caller fetching a batch
//!   retries the other ids without that one (or one by one) to keep the rest
//!   syncing.
//! - An object written by a newer chatvault (a newer format byte) fails with
//!   [`Error::UnsupportedFormat`](chatvault_core::Error::UnsupportedFormat):
//!   replaying past it could make this reader disagree with newer ones.
//! - Objects whose names do not fit the layout (a stray `log/notes.txt`,
//!   Syncthing's `.syncthing.*.tmp`, `*.sync-conflict-*` copies) are ignored
//!   with a warning, once per name and process.
//!
//! # Code structure
//!
//! Each module owns one type; [`ObjectStoreStorage`] (`storage.rs`)
//! composes the components and hands each [`Storage`](chatvault_core::Storage) call to one:
//!
//! - `objects.rs`, `Objects`: the store under the prefix (named by
//!   `layout.rs`, read with caps through `read.rs`'s `CappedStream`,
//!   counted by `counted.rs`);
//! - `log.rs`, `Log`: listing and fetching slots, the handle's replayed
//!   state (`index.rs`'s `Index`, rebuilt from `snapshot.rs`'s `Snapshot`;
//!   `recent.rs` keeps the entries replayed last);
//! - `feed.rs`, `Feed`: `changes`; `records.rs`, `Records`: `get`, `put`
//!   (blobs through `record_objects.rs`'s `RecordObjects`, then the slot claim);
//!   `keyring.rs`, `KeyFile`: the key file; `sealed_blobs.rs`,
//!   `SealedBlobs`: the content-addressed sealed blobs (`blob/`);
//! - `compaction.rs`, `Compactor`, and `maintenance.rs`, `Maintainer`:
//!   `compact` and `maintain`; their settings are in `options.rs`;
//! - `devices.rs`, [`DeviceLogStorage`]: the per-device layout over several
//!   [`ObjectStoreStorage`]s (moving a shared log in: `migrate.rs`, the
//!   markers for older releases: `markers.rs`); `vault.rs`,
//!   [`ObjectStoreVault`]: either layout, as the `fs` and `s3` builders
//!   return it.
//!
//! # Example
//!
//! ```
//! use chatvault_core::{ChatId, Cursor, Part, PutPrecondition, SealedRecord, Storage};
//! use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
//! use object_store::{memory::InMemory, path::Path};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> chatvault_core::Result<()> {
//! let store = Arc::new(InMemory::new());
//! let vault = ObjectStoreStorage::new(store, Path::from("users/alice"), ObjectStoreOptions::default());
//! let chat = ChatId::new();
//! let record = SealedRecord { chat, version: 1, deleted: false, summary: "s".into(), body: Some("b".into()) };
//! vault.put(record.clone(), PutPrecondition::Absent).await?;
//!
//! let page = vault.changes(&Cursor::start(), 100).await?;
//! assert_eq!(page.changes[0].chat, chat);
//! assert_eq!(vault.get(&[chat], Part::Body).await?, vec![record]);
//! // Nothing new: one LIST request.
//! assert!(vault.changes(&page.cursor, 100).await?.changes.is_empty());
//! # Ok(())
//! # }
//! ```

mod compaction;
mod counted;
mod devices;
mod entry;
mod error;
mod feed;
#[cfg(test)]
mod fuzz;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hooked;
mod index;
mod keyring;
mod layout;
mod log;
mod maintenance;
mod markers;
mod migrate;
mod objects;
mod options;
mod read;
mod recent;
mod record_objects;
mod records;
mod sealed_blobs;
mod snapshot;
mod storage;
mod vault;

pub use compaction::CompactReport;
pub use devices::{DeviceLogStorage, WriterId, DEVICES_DIR, MIGRATED_VAULT};
pub use hooked::{HookedStore, StoreHook, StoreOp};
pub use markers::{is_marker, key_file_marker, log_marker, MARKER_FORMAT};
pub use migrate::MigrationReport;
pub use options::{CompactOptions, MaintenancePolicy, ObjectStoreOptions};
pub use storage::ObjectStoreStorage;
pub use vault::{NotificationSource, ObjectStoreVault, VaultLayout};

/// Measurements for benchmarks; not part of the supported API.
#[doc(hidden)]
pub mod measure {
    /// `snapshot` (an encoded snapshot, either format) re-encoded in the
    /// first format, JSON, as releases before format 2 wrote it: to compare
    /// the formats on the same data and to test reading old vaults.
    pub fn snapshot_as_json(snapshot: &[u8]) -> chatvault_core::Result<bytes::Bytes> {
        let decoded = crate::snapshot::decode_snapshot(snapshot, "snapshot")?;
        crate::snapshot::encode_snapshot_json(&decoded)
    }
}
