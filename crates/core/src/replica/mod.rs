//! The local replica: this device's crash-safe copy of the vault
//! ([`Replica`], whose docs hold the durability contract).

mod encoding;
mod maintenance;
mod skipped;
mod write;

pub use encoding::{OutboxEntry, RecordHeader};
pub use maintenance::MaintenanceMark;
pub use skipped::{SkipReason, SkippedEntry};
pub(crate) use write::ReplicaWrite;

use crate::envelope::KeyTrust;
use crate::ids::{ChatId, DeviceId, VaultId};
use crate::storage::{Cursor, SealedRecord};
use crate::{Error, Result};
use encoding::{decode_body, decode_outbox, decode_summary};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Format version of replica files written by this build.
pub const REPLICA_FORMAT: u32 = 1;

/// Memory redb may use to cache pages of the replica. Its default (1 GiB)
/// would let the cache grow with the vault; the operating system's page
/// cache already keeps the file warm, so a small cache costs little time.
pub const REPLICA_CACHE_BYTES: usize = 4 << 20;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const SUMMARIES: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("summaries");
pub(crate) const BODIES: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("bodies");
pub(crate) const OUTBOX: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("outbox");
/// Records that did not open (see [`SkippedEntry`]); absent in replicas
/// written before it existed, which read as empty.
pub(crate) const SKIPPED: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("skipped");

pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_VAULT: &str = "vault";
pub(crate) const META_DEVICE: &str = "device";
pub(crate) const META_CURSOR: &str = "cursor";
pub(crate) const META_KEY_FILE: &str = "key_file";
/// What this device trusts of the key file ([`KeyTrust`]), kept beside the
/// copy; absent in replicas written before it existed.
pub(crate) const META_KEY_TRUST: &str = "key_trust";
pub(crate) const META_MAINTENANCE: &str = "maintenance";
/// Prefix of the metadata keys [`Replica::sealed_value`] reads.
pub(crate) const META_SEALED: &str = "sealed/";
/// The sidebar generation: `u64 BE`, bumped by every commit that changes
/// a stored summary (absent: 0). See [`Replica::sidebar_generation`].
pub(crate) const META_SIDEBAR_GENERATION: &str = "sidebar_generation";
/// The sealed sidebar snapshot as the first release of it kept it, in one
/// value (`generation u64 BE ‖ sealed snapshot`): removed when a chunked
/// one is written, never read.
pub(crate) const META_SIDEBAR_SNAPSHOT_WHOLE: &str = "sidebar_snapshot";
/// The head of the sealed sidebar snapshot, kept in chunks: `generation
/// u64 BE ‖ chunk count u32 BE`; chunk `i` is the value of
/// `sidebar_snapshot/chunk/<i>` (docs/design.md §8).
pub(crate) const META_SIDEBAR_SNAPSHOT: &str = "sidebar_snapshot/head";

/// The metadata key of sealed sidebar snapshot chunk `index`.
pub(crate) fn snapshot_chunk_key(index: u32) -> String {
    format!("sidebar_snapshot/chunk/{index}")
}

/// A record's sealed summary as stored in the replica, for the sidebar.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSummary {
    /// The chat.
    pub chat: ChatId,
    /// The version the summary was sealed for.
    pub version: u64,
    /// True for a tombstone.
    pub deleted: bool,
    /// The sealed summary.
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for StoredSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSummary")
            .field("chat", &self.chat)
            .field("version", &self.version)
            .field("deleted", &self.deleted)
            .field("sealed_len", &self.sealed.len())
            .finish()
    }
}

/// The sealed sidebar snapshot as the replica holds it
/// ([`Replica::sidebar_snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredSnapshot {
    /// The sidebar generation it reflects.
    pub(crate) generation: u64,
    /// How many sealed chunks it has ([`Replica::sidebar_snapshot_chunk`]).
    pub(crate) chunks: u32,
    /// The digest of the summaries now stored, when `generation` is current.
    pub(crate) digest: Option<[u8; 32]>,
}

/// What the replica holds of one chat.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LocalState {
    /// The chat.
    pub chat: ChatId,
    /// Its stored record's version and tombstone flag, if any.
    pub header: Option<RecordHeader>,
    /// Its outbox entry, if local changes await the server.
    pub pending: Option<OutboxEntry>,
    /// True if the body of the stored version is held.
    pub has_body: bool,
}

/// This device's crash-safe copy of a vault: one [redb](https://docs.rs/redb) file holding
///
/// - every chat's record **exactly as sealed for the server** (summary and,
///   when this device has loaded it, body), so the replica is encrypted at
///   rest with the vault's cipher and reading it needs the unlocked keyring;
/// - the **outbox**: one entry per chat whose local state the server has not
///   confirmed yet, naming the version to push and the server version it was
///   built on (so pending saves of one chat collapse to its latest state);
/// - the **pull cursor**: how far this device has read the change feed;
/// - the **skipped records**: pulled records that did not open (a newer
///   format, a key id not yet held, damage), retried until they do, so the
///   cursor moving past them forgets nothing;
/// - metadata: the replica format version, the vault and device ids, a
///   copy of the vault's key file (sealed with age, as on the server) so the
///   vault can be unlocked offline, and when this device last ran the
///   backend's maintenance ([`MaintenanceMark`]).
///
/// # Durability contract
///
/// Every change goes through one write transaction (written only by the sync
/// engine, inside this crate), committed with redb's immediate durability:
/// **when the commit returns `Ok`, the change is on disk** (fsync'd) and survives a crash or power loss; if
/// the process dies before that, none of the transaction is visible after
/// restart. In terms of the sync engine:
///
/// - **A local save is durable when the save call returns.** Its sealed
///   record and its outbox entry commit in the same transaction: after a
///   crash there is either both (and the push is replayed) or neither (the
///   save never returned `Ok`).
/// - **Pulled records and the cursor that covers them commit together.** A
///   crash mid-pull re-reads the same page after restart; applying it twice
///   changes nothing.
/// - **An outbox entry is removed only after the server confirmed the push**,
///   in a later transaction. A crash between the two replays the push; the
///   engine recognises its own record on the server (or merges, which is
///   idempotent), so nothing is lost or duplicated.
/// - **A failed write changes nothing.** A full disk or an I/O error aborts
///   the transaction and surfaces as [`Error::Local`]; the file keeps its
///   last committed state. After an I/O error redb refuses further writes
///   through the same handle, so reopen the replica (restart the app) once
///   space is freed.
///
/// A file that is not a chatvault replica, or is corrupt, fails to open with
/// [`Error::Local`]; one written by a newer chatvault fails with
/// [`Error::UnsupportedFormat`]. Neither is ever silently reset: the replica
/// may hold changes the server has not seen.
///
/// ```
/// use chatvault_core::Replica;
/// use chatvault_core::{ChatId, Cursor, SealedRecord};
///
/// # fn main() -> chatvault_core::Result<()> {
/// let dir = tempfile::tempdir().map_err(|e| chatvault_core::Error::local("tempdir", e))?;
/// let replica = Replica::open(dir.path().join("replica.redb"))?;
/// let record = SealedRecord {
///     chat: ChatId::new(),
///     version: 1,
///     deleted: false,
///     summary: b"sealed summary".to_vec().into(),
///     body: Some(b"sealed body".to_vec().into()),
/// };
/// // Records as the server holds them, e.g. from a restored backup:
/// assert_eq!(replica.store_server_records(&[record.clone()])?, 1);
/// assert_eq!(replica.header(record.chat)?.map(|h| h.version), Some(1));
/// // Storing the same version again changes nothing.
/// assert_eq!(replica.store_server_records(&[record])?, 0);
/// assert!(replica.outbox()?.is_empty());
/// assert_eq!(replica.cursor()?, Cursor::start());
/// # Ok(())
/// # }
/// ```
///
/// A cheap handle: clones share one open file (the engine, the key
/// management and a session store each hold one), which closes when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Replica {
    db: Arc<Database>,
    path: Arc<Path>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("path", &self.path).finish()
    }
}

/// Turns a redb failure into [`Error::Local`], naming what was being done and
/// saying "disk full" in words when that is the cause.
pub(crate) fn local_error(context: &str, error: impl Into<redb::Error>) -> Error {
    let error: redb::Error = error.into();
    match error {
        redb::Error::Io(io) => {
            let message = if io.kind() == std::io::ErrorKind::StorageFull {
                format!("{context}: the disk is full; nothing was written")
            } else {
                format!("{context}: I/O error: {io}")
            };
            Error::local(message, io)
        }
        redb::Error::DatabaseAlreadyOpen => Error::Local {
            message: format!(
                "{context}: the replica file is already open (another ChatVault or process uses it)"
            ),
            source: None,
        },
        redb::Error::Corrupted(reason) => Error::Local {
            message: format!("{context}: the replica file is corrupt: {reason}"),
            source: None,
        },
        other => Error::Local {
            message: format!("{context}: {other}"),
            source: None,
        },
    }
}

impl Replica {
    /// Opens the replica at `path`, creating it (and its parent folder) if it
    /// does not exist.
    ///
    /// Fails with [`Error::Local`] if the file is corrupt, not a chatvault
    /// replica, or already open, and with [`Error::UnsupportedFormat`] if a
    /// newer chatvault wrote it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::local(
                    format!("cannot create the replica folder {}", parent.display()),
                    e,
                )
            })?;
        }
        let db = Database::builder()
            .set_cache_size(REPLICA_CACHE_BYTES)
            .create(&path)
            .map_err(|e| local_error(&format!("cannot open the replica {}", path.display()), e))?;
        Self::init(db, path)
    }

    #[cfg(test)]
    pub(crate) fn open_with_backend(backend: impl redb::StorageBackend) -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| local_error("cannot open the replica", e))?;
        Self::init(db, PathBuf::from("<test backend>"))
    }

    fn init(db: Database, path: PathBuf) -> Result<Self> {
        let replica = Self {
            db: Arc::new(db),
            path: path.into(),
        };
        let format = replica.meta_value(META_FORMAT)?;
        match format {
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| {
                        Error::local_message(format!(
                            "the replica {} has a malformed format marker",
                            replica.path.display()
                        ))
                    })?;
                if found > REPLICA_FORMAT {
                    return Err(Error::UnsupportedFormat {
                        what: format!("local replica {}", replica.path.display()),
                        found,
                        supported: REPLICA_FORMAT,
                    });
                }
                if found == 0 {
                    return Err(Error::local_message(format!(
                        "the replica {} has format version 0, which is not valid",
                        replica.path.display()
                    )));
                }
            }
            None => replica.initialize()?,
        }
        Ok(replica)
    }

    /// Writes the format marker and creates the tables of a new replica;
    /// refuses a redb file that already holds other data.
    fn initialize(&self) -> Result<()> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| local_error("cannot initialize the replica", e))?;
        let foreign = txn
            .list_tables()
            .map_err(|e| local_error("cannot initialize the replica", e))?
            .next()
            .is_some();
        if foreign {
            return Err(Error::local_message(format!(
                "{} is a redb file but not a chatvault replica (it has no format marker); \
                 refusing to touch it",
                self.path.display()
            )));
        }
        {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| local_error("cannot initialize the replica", e))?;
            meta.insert(META_FORMAT, REPLICA_FORMAT.to_be_bytes().as_slice())
                .map_err(|e| local_error("cannot initialize the replica", e))?;
            for table in [SUMMARIES, BODIES, OUTBOX] {
                txn.open_table(table)
                    .map_err(|e| local_error("cannot initialize the replica", e))?;
            }
        }
        txn.commit()
            .map_err(|e| local_error("cannot initialize the replica", e))
    }

    /// Where the replica file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a write transaction. Only one runs at a time; a second call
    /// blocks until the first commits or is dropped (dropping aborts).
    /// Crate-private: the sync engine is the only writer of records, the
    /// outbox and the cursor.
    pub(crate) fn write(&self) -> Result<ReplicaWrite> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| local_error("cannot start a replica write", e))?;
        Ok(ReplicaWrite::new(txn, None))
    }

    /// A write transaction that, when it commits a change to the summaries
    /// (and so bumps the sidebar generation), also adds one to `tally`: how
    /// the sync engine knows which generations its own commits made.
    pub(crate) fn write_counted(
        &self,
        tally: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<ReplicaWrite> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| local_error("cannot start a replica write", e))?;
        Ok(ReplicaWrite::new(txn, Some(tally)))
    }

    fn read(&self) -> Result<redb::ReadTransaction> {
        self.db
            .begin_read()
            .map_err(|e| local_error("cannot read the replica", e))
    }

    fn meta_value(&self, key: &str) -> Result<Option<Vec<u8>>> {
        write::Meta::meta_value(&self.read()?, key)
    }

    /// The vault and device this replica belongs to, once recorded.
    pub fn identity(&self) -> Result<Option<(VaultId, DeviceId)>> {
        let vault = self.meta_value(META_VAULT)?;
        let device = self.meta_value(META_DEVICE)?;
        match (vault, device) {
            (Some(vault), Some(device)) => {
                let vault = <[u8; 16]>::try_from(vault.as_slice()).map_err(|_| {
                    Error::local_message("the replica's vault id is malformed".to_string())
                })?;
                let device = <[u8; 8]>::try_from(device.as_slice()).map_err(|_| {
                    Error::local_message("the replica's device id is malformed".to_string())
                })?;
                Ok(Some((
                    VaultId::from_bytes(vault),
                    DeviceId(u64::from_be_bytes(device)),
                )))
            }
            _ => Ok(None),
        }
    }

    /// The copy of the vault's key file kept for offline unlock, if any.
    pub fn key_file(&self) -> Result<Option<Vec<u8>>> {
        self.meta_value(META_KEY_FILE)
    }

    /// What this device trusts of the vault's key file (see
    /// [`KeyTrust`]): what a key file from the server must follow, checked
    /// without opening the copy. `None` for a replica written before it was
    /// kept.
    ///
    /// Errors: [`Error::Corrupt`](crate::Error::Corrupt) for a malformed value.
    pub fn key_trust(&self) -> Result<Option<KeyTrust>> {
        self.meta_value(META_KEY_TRUST)?
            .map(|bytes| KeyTrust::from_bytes(&bytes))
            .transpose()
    }

    /// Keeps `key_file` (the vault's key file exactly as the server holds
    /// it, age-encrypted) as the copy for offline unlock, with `trust`
    /// ([`KeyTrust::of`] the cipher opened from it), replacing any earlier
    /// ones. Durable when it returns. Check a new key file with
    /// [`KeyTrust::admits`] before keeping it: this is what a replayed or
    /// forged file is caught against. Writes nothing when the replica
    /// already holds both.
    pub fn set_key_file(&self, key_file: &[u8], trust: &KeyTrust) -> Result<()> {
        if self.key_file()?.as_deref() == Some(key_file)
            && self.key_trust()?.as_ref() == Some(trust)
        {
            return Ok(());
        }
        let mut write = self.write()?;
        write.set_key_file(key_file, trust)?;
        write.commit()
    }

    /// Stores records exactly as the server holds them, in one transaction:
    /// a device seeded from a copy of the server's records (a restored
    /// backup, a prepared fixture) instead of pulling them. A record is
    /// left out where the replica already holds that version or a newer
    /// one, or where a local change of its chat is pending (those are the
    /// sync engine's to merge). Returns how many were stored. The pull
    /// cursor does not move: the next pull reads the change feed from where
    /// it was and skips what is already here.
    pub fn store_server_records(&self, records: &[SealedRecord]) -> Result<usize> {
        let mut write = self.write()?;
        let mut stored = 0;
        for record in records {
            if write.pending(record.chat)?.is_some()
                || write
                    .header(record.chat)?
                    .is_some_and(|h| h.version >= record.version)
            {
                continue;
            }
            write.put_remote(record)?;
            stored += 1;
        }
        write.commit()?;
        Ok(stored)
    }

    /// A value the application keeps in the replica under `name` (see
    /// [`Replica::set_sealed_value`]), exactly as it was stored.
    pub fn sealed_value(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.meta_value(&format!("{META_SEALED}{name}"))
    }

    /// Keeps `value` under `name` for the application (e.g. the facade's
    /// Supabase session), or removes it with `None`; durable when it
    /// returns. The replica stores the bytes as given: seal them with the
    /// vault's cipher first, since everything in the replica must be
    /// ciphertext.
    pub fn set_sealed_value(&self, name: &str, value: Option<&[u8]>) -> Result<()> {
        let mut write = self.write()?;
        write.set_sealed_value(name, value)?;
        write.commit()
    }

    /// The sidebar generation: a counter every commit that changes a stored
    /// summary (a save, a delete, a pulled or re-sealed record) bumps in
    /// the same transaction. A sidebar snapshot records the generation it
    /// reflects and is used only while the two are equal.
    pub fn sidebar_generation(&self) -> Result<u64> {
        let txn = self.read()?;
        write::read_generation(&txn)
    }

    /// The current sidebar generation and the stored sidebar snapshot, if
    /// one is kept, read in one snapshot of the replica; the summaries'
    /// digest is computed only when the snapshot's generation is current.
    pub(crate) fn sidebar_snapshot(&self) -> Result<(u64, Option<StoredSnapshot>)> {
        let txn = self.read()?;
        let generation = write::read_generation(&txn)?;
        let stored = write::read_meta(&txn, META_SIDEBAR_SNAPSHOT)?;
        let Some((at, chunks)) = stored.and_then(|bytes| {
            let head = <[u8; 12]>::try_from(bytes.as_slice()).ok()?;
            let (at, chunks) = head.split_at(8);
            Some((
                u64::from_be_bytes(at.try_into().ok()?),
                u32::from_be_bytes(chunks.try_into().ok()?),
            ))
        }) else {
            return Ok((generation, None));
        };
        let digest = if at == generation {
            let table = txn
                .open_table(SUMMARIES)
                .map_err(|e| local_error("cannot read the replica summaries", e))?;
            Some(write::summaries_digest(&table)?)
        } else {
            None
        };
        Ok((
            generation,
            Some(StoredSnapshot {
                generation: at,
                chunks,
                digest,
            }),
        ))
    }

    /// Sealed chunk `index` of the stored sidebar snapshot, if kept. Read
    /// one at a time, so a cold start holds one chunk, not the snapshot.
    pub(crate) fn sidebar_snapshot_chunk(&self, index: u32) -> Result<Option<Vec<u8>>> {
        let txn = self.read()?;
        write::read_meta(&txn, &snapshot_chunk_key(index))
    }

    /// When this device last ran the backend's maintenance, if it ever did
    /// (the sync engine keeps it; see [`MaintenanceMark`]).
    pub fn maintenance(&self) -> Result<Option<MaintenanceMark>> {
        self.meta_value(META_MAINTENANCE)?
            .map(|bytes| MaintenanceMark::decode(&bytes))
            .transpose()
    }

    /// The pull cursor: how far this device has applied the change feed.
    pub fn cursor(&self) -> Result<Cursor> {
        match self.meta_value(META_CURSOR)? {
            None => Ok(Cursor::start()),
            Some(bytes) => String::from_utf8(bytes).map(Cursor).map_err(|_| {
                Error::local_message("the replica's pull cursor is not UTF-8".to_string())
            }),
        }
    }

    /// Number of stored records, tombstones included.
    pub fn record_count(&self) -> Result<u64> {
        let txn = self.read()?;
        let table = txn
            .open_table(SUMMARIES)
            .map_err(|e| local_error("cannot read the replica summaries", e))?;
        table
            .len()
            .map_err(|e| local_error("cannot read the replica summaries", e))
    }

    /// Hands every stored summary, tombstones included, to `f` in chat id
    /// order, `batch` at a time, from one consistent snapshot; memory stays
    /// bounded by the batch, whatever the vault's size.
    pub fn scan_summaries(
        &self,
        batch: usize,
        mut f: impl FnMut(Vec<StoredSummary>) -> Result<()>,
    ) -> Result<()> {
        let batch = batch.max(1);
        let txn = self.read()?;
        let table = txn
            .open_table(SUMMARIES)
            .map_err(|e| local_error("cannot read the replica summaries", e))?;
        let len = table
            .len()
            .map_err(|e| local_error("cannot read the replica summaries", e))?;
        // A batch larger than the table (`usize::MAX` for "all at once")
        // must not reserve more than the table holds.
        let capacity = usize::try_from(len).unwrap_or(usize::MAX).min(batch);
        let iter = table
            .iter()
            .map_err(|e| local_error("cannot read the replica summaries", e))?;
        let mut chunk = Vec::with_capacity(capacity);
        for item in iter {
            let (key, value) =
                item.map_err(|e| local_error("cannot read the replica summaries", e))?;
            let chat = ChatId::from_bytes(*key.value());
            let (header, sealed) = decode_summary(chat, value.value())?;
            chunk.push(StoredSummary {
                chat,
                version: header.version,
                deleted: header.deleted,
                sealed: sealed.to_vec(),
            });
            if chunk.len() == batch {
                f(std::mem::replace(&mut chunk, Vec::with_capacity(capacity)))?;
            }
        }
        if !chunk.is_empty() {
            f(chunk)?;
        }
        Ok(())
    }

    /// Every stored summary, tombstones included, in chat id order.
    pub fn summaries(&self) -> Result<Vec<StoredSummary>> {
        let mut out = Vec::new();
        self.scan_summaries(usize::MAX, |batch| {
            out.extend(batch);
            Ok(())
        })?;
        Ok(out)
    }

    /// The version and tombstone flag stored for `chat`, if any.
    pub fn header(&self, chat: ChatId) -> Result<Option<RecordHeader>> {
        let txn = self.read()?;
        write::read_header(&txn, chat)
    }

    /// The stored record of `chat`; the body is included when `with_body` and
    /// this device holds it.
    pub fn record(&self, chat: ChatId, with_body: bool) -> Result<Option<SealedRecord>> {
        let txn = self.read()?;
        write::read_record(&txn, chat, with_body)
    }

    /// The stored records of `chats`, in the order given (`None` for a chat
    /// not stored), read in one snapshot: a bulk read (search, export) costs
    /// one read transaction instead of one per chat. Bodies as for
    /// [`record`](Self::record).
    pub fn records(&self, chats: &[ChatId], with_body: bool) -> Result<Vec<Option<SealedRecord>>> {
        let txn = self.read()?;
        chats
            .iter()
            .map(|&chat| write::read_record(&txn, chat, with_body))
            .collect()
    }

    /// The data key id each of `chats`' stored body names in its header, as
    /// `key_of` reads it (`None` where this device holds no body, or
    /// `key_of` finds none), read in one snapshot without copying the
    /// bodies: how a re-seal finds a body left under an older key than its
    /// summary.
    pub fn body_key_ids(
        &self,
        chats: &[ChatId],
        key_of: impl Fn(&[u8]) -> Option<u32>,
    ) -> Result<Vec<Option<u32>>> {
        let txn = self.read()?;
        let table = txn
            .open_table(BODIES)
            .map_err(|e| local_error("cannot read the replica bodies", e))?;
        chats
            .iter()
            .map(|chat| {
                let value = table
                    .get(chat.as_bytes())
                    .map_err(|e| local_error("cannot read the replica bodies", e))?;
                Ok(match value {
                    Some(value) => {
                        let (_, sealed) = decode_body(*chat, value.value())?;
                        key_of(sealed)
                    }
                    None => None,
                })
            })
            .collect()
    }

    /// Whether this device holds the body of `chat` (at the summary's version).
    pub fn has_body(&self, chat: ChatId) -> Result<bool> {
        let txn = self.read()?;
        let table = txn
            .open_table(BODIES)
            .map_err(|e| local_error("cannot read the replica bodies", e))?;
        let present = table
            .get(chat.as_bytes())
            .map_err(|e| local_error("cannot read the replica bodies", e))?
            .map(|v| decode_body(chat, v.value()).map(|_| ()))
            .transpose()?
            .is_some();
        Ok(present)
    }

    /// What this device holds of each of `chats`, read in one snapshot (the
    /// pull uses it to decide what to fetch).
    pub fn local_states(&self, chats: &[ChatId]) -> Result<Vec<LocalState>> {
        let txn = self.read()?;
        chats
            .iter()
            .map(|&chat| {
                let header = write::read_header(&txn, chat)?;
                let pending = write::read_pending(&txn, chat)?;
                let has_body = match (header, write::Tables::body_value(&txn, chat)?) {
                    (Some(h), Some(value)) => decode_body(chat, &value)?.0 == h.version,
                    _ => false,
                };
                Ok(LocalState {
                    chat,
                    header,
                    pending,
                    has_body,
                })
            })
            .collect()
    }

    /// Every outbox entry, in chat id order.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        let txn = self.read()?;
        let table = txn
            .open_table(OUTBOX)
            .map_err(|e| local_error("cannot read the outbox", e))?;
        let mut out = Vec::new();
        let iter = table
            .iter()
            .map_err(|e| local_error("cannot read the outbox", e))?;
        for item in iter {
            let (key, value) = item.map_err(|e| local_error("cannot read the outbox", e))?;
            out.push(decode_outbox(
                ChatId::from_bytes(*key.value()),
                value.value(),
            )?);
        }
        Ok(out)
    }

    /// Outbox entries due by `now` (Unix ms; `None`: all of them) whose chat
    /// id sorts after `after`, with the records they name, read in one
    /// snapshot: at most `limit`, in chat id order.
    pub fn due(
        &self,
        now: Option<u64>,
        after: Option<ChatId>,
        limit: usize,
    ) -> Result<Vec<(OutboxEntry, SealedRecord)>> {
        use std::ops::Bound;
        let txn = self.read()?;
        let table = txn
            .open_table(OUTBOX)
            .map_err(|e| local_error("cannot read the outbox", e))?;
        let start = after.map(|a| *a.as_bytes());
        let lower = match &start {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        let iter = table
            .range::<&[u8; 16]>((lower, Bound::Unbounded))
            .map_err(|e| local_error("cannot read the outbox", e))?;
        let mut out = Vec::new();
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(|e| local_error("cannot read the outbox", e))?;
            let entry = decode_outbox(ChatId::from_bytes(*key.value()), value.value())?;
            if now.is_some_and(|now| entry.not_before > now) {
                continue;
            }
            out.push((entry, pending_record(&txn, entry)?));
        }
        Ok(out)
    }

    /// The outbox entries of `chats` that exist, with their records, read in
    /// one snapshot.
    pub fn pending_records(&self, chats: &[ChatId]) -> Result<Vec<(OutboxEntry, SealedRecord)>> {
        let txn = self.read()?;
        let mut out = Vec::new();
        for &chat in chats {
            if let Some(entry) = write::read_pending(&txn, chat)? {
                out.push((entry, pending_record(&txn, entry)?));
            }
        }
        Ok(out)
    }

    /// Number of chats waiting to be pushed.
    pub fn outbox_len(&self) -> Result<u64> {
        let txn = self.read()?;
        let table = txn
            .open_table(OUTBOX)
            .map_err(|e| local_error("cannot read the outbox", e))?;
        table
            .len()
            .map_err(|e| local_error("cannot read the outbox", e))
    }

    /// The outbox entry of `chat`, if its local state is not yet pushed.
    pub fn pending(&self, chat: ChatId) -> Result<Option<OutboxEntry>> {
        let txn = self.read()?;
        write::read_pending(&txn, chat)
    }
}

fn pending_record(txn: &redb::ReadTransaction, entry: OutboxEntry) -> Result<SealedRecord> {
    write::read_record(txn, entry.chat, true)?.ok_or_else(|| {
        Error::local_message(format!(
            "the outbox names chat {} but the replica holds no record of it",
            entry.chat
        ))
    })
}

#[cfg(test)]
mod tests;
