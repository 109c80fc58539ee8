//! The sync engine: local-first chat state that converges across devices.
//!
//! An [`Engine`] ties together a [`Storage`] (the server copy), a
//! [`Replica`] (this device's crash-safe copy), a [`Cipher`] and the chat
//! CRDT:
//!
//! - **Save** ([`Engine::save_chat`], [`Engine::update`], [`Engine::delete_chat`]):
//!   merge into the current state → seal summary and body bound to
//!   `Aad { vault, chat, part, version }` → store the record and its outbox
//!   entry in one replica transaction → notify listeners → wake the
//!   background push. The call returns once the change is durable on this
//!   device; it never waits for the network.
//! - **Push** (the outbox): each pending chat is put with the precondition
//!   "the server still holds the version I built on". A conflict is
//!   resolved by fetch → merge → re-seal as a new version → retry (bounded);
//!   retriable failures keep the entry queued with backoff; replaying an
//!   entry that already reached the server is recognised, so a crash
//!   between push and confirmation loses and duplicates nothing.
//! - **Pull**: [`Storage::changes`] from the stored cursor, page by page →
//!   fetch what changed (summaries, inline when the backend provides them;
//!   bodies only for chats this device holds in full) → open, decode and
//!   merge on blocking threads, in batches → store with the advanced cursor
//!   in one transaction → notify. A record that fails to open is reported
//!   ([`Event::RecordSkipped`], [`SyncReport::skipped`]) and skipped; the
//!   rest still syncs. An idle pull is one `changes` request: no work is
//!   proportional to the number of chats.
//! - **When**: [`Engine::sync_now`] runs one round; [`Engine::start`] runs
//!   rounds in the background, woken by a [`Transport`] (polling, or the
//!   backend's push plus polling as a safety net) and by local saves.
//! - **Housekeeping**: a successful round of either kind starts the
//!   backend's maintenance ([`Storage::maintain`](crate::Storage::maintain))
//!   in its own task when it is due by the schedule kept in the replica;
//!   [`Engine::settle_maintenance`] bounds it in a process about to exit.
//!
//! In memory the engine keeps the sidebar (every live chat's summary, in a
//! `DashMap`) and recently opened chats (a `moka` cache bounded by bytes).
//! Both are rebuilt from the replica on open, so the sidebar is available
//! offline and instantly.
//!
//! The apply layer, the crash analysis of save, push and pull, and the
//! spans each round records are in `docs/design.md` §8.
//!
//! Most applications use the `chatvault` crate's `ChatVault`, which builds an
//! engine (unlocking the vault, opening the replica) and adds chat-level
//! helpers on top.
//!
//! [`Storage`]: crate::Storage
//! [`Storage::changes`]: crate::Storage::changes

mod fetch;
mod journal;
mod keyring;
mod local;
mod maintenance;
mod outbox;
mod pull;
mod reseal;
mod retry;
mod save;
pub(crate) mod sealing;
mod sidebar;
mod snapshot;
mod state;
mod status;
mod worker;

pub use keyring::{KeyringSource, KeyringUpdate};
pub use maintenance::{SettledMaintenance, DEFAULT_MAINTENANCE_BUDGET};
pub use reseal::ResealReport;
pub use sidebar::{IntoIter as SidebarIntoIter, Sidebar};
pub use status::{Event, SkippedRecord, SyncReport, SyncStatus};
pub use worker::SyncWorker;

use crate::attachments::BlobDir;
use crate::chat::{Chat, ChatSummary};
use crate::cipher::Cipher;
use crate::hlc::Clock;
use crate::ids::{ChatId, DeviceId, MessageId, VaultId};
use crate::replica::{Replica, SkippedEntry};
use crate::storage::{Capabilities, DynStorage, MaintenanceReport, Part};
use crate::transport::Transport;
use crate::{Error, Result};
use local::{Limits, LocalStore};
use sealing::Sealer;
use state::State;
use status::Notifier;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// A filter on a chat's opened, not yet decoded body, for
/// [`Engine::all_chats_where`]: true keeps the chat.
pub type BodyFilter = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Chats whose bodies [`Engine::all_chats`] reads from the replica in one
/// snapshot and opens together (memory holds one batch of sealed bodies).
const LOCAL_BATCH: usize = 2048;

/// What one sync round does.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Round {
    /// Pull the server's changes.
    pull: bool,
    /// Push the outbox.
    push: bool,
    /// Push entries still in their backoff too, and retry every skipped
    /// record (a manual round, or back from offline).
    force: bool,
}

impl Round {
    /// [`Engine::sync_now`]: pull and push, forced.
    const SYNC_NOW: Round = Round {
        pull: true,
        push: true,
        force: true,
    };
    /// [`Engine::pull`]: forced.
    const PULL: Round = Round {
        pull: true,
        push: false,
        force: true,
    };
    /// [`Engine::push`]: forced.
    const PUSH: Round = Round {
        pull: false,
        push: true,
        force: true,
    };
    /// A background round: pull and push, forced only when `recovering`
    /// from a failed round.
    pub(crate) fn background(recovering: bool) -> Round {
        Round {
            pull: true,
            push: true,
            force: recovering,
        }
    }
    /// The push a local save wakes: due entries only.
    pub(crate) const AFTER_SAVE: Round = Round {
        pull: false,
        push: true,
        force: false,
    };
}

/// Settings of an [`Engine`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The vault the records belong to (bound into every sealed blob).
    pub vault: VaultId,
    /// This device (the tie-break of its clock).
    pub device: DeviceId,
    /// Byte bound of the full-chat cache.
    pub cache_bytes: u64,
    /// Most conflict rounds one push makes before leaving a chat queued for
    /// the next sync.
    pub max_conflict_rounds: u32,
    /// Most changes asked for per [`Storage::changes`](crate::Storage::changes) page.
    pub page_size: usize,
    /// Message tombstones older than this are dropped when their chat is
    /// next saved ([`Chat::collect_garbage`]). A device offline for longer
    /// could bring such a message back, so keep it longer than any device
    /// stays offline; `None` keeps tombstones forever.
    pub tombstone_horizon: Option<Duration>,
    /// How often a successful sync round (background sync,
    /// [`Engine::sync_now`], [`Engine::pull`], [`Engine::push`]) asks the
    /// backend for housekeeping ([`Storage::maintain`](crate::Storage::maintain):
    /// compaction of the object-store change log, for instance), jittered by
    /// ±20 %, counted from the latest run recorded in the replica, so short
    /// processes keep the schedule too; a device that never ran it asks at
    /// its first sync. The backend still decides from its own thresholds
    /// whether to do work. `None` switches automatic maintenance off
    /// ([`Engine::maintain`] still runs it on demand).
    pub maintenance_every: Option<Duration>,
    /// Where new data keys come from when a pulled record names a key id
    /// this device does not hold, or after the network was away
    /// ([`Engine::refresh_keyring`]). `None`: the cipher's keys are all
    /// there is (a record under another key stays skipped).
    pub keyring: Option<Arc<dyn KeyringSource>>,
    /// Byte budget of the attachment cache (fetched blobs kept in the
    /// blob directory beside the replica); blobs waiting for upload do not
    /// count.
    pub attachment_cache_bytes: u64,
    /// Garbage collection's grace period for blobs: a blob no put renewed
    /// for this long, and no chat names, may be deleted; an attachment is
    /// put again before a record naming it is pushed more than half of it
    /// after its last put. Every device of a vault must use the same one
    /// (default [`DEFAULT_BLOB_GRACE`](crate::attachments::DEFAULT_BLOB_GRACE),
    /// 7 days).
    pub blob_grace: Duration,
    /// The newest vault format this device reads and writes
    /// ([`VAULT_FORMAT`](crate::raw::codec::VAULT_FORMAT), the default).
    /// A lower value makes the engine behave as a release that knows no
    /// newer format: it refuses a vault whose format floor is higher and
    /// skips records in newer formats. Only a mixed-fleet test needs it,
    /// as the stand-in for a device that was not upgraded.
    pub max_vault_format: u8,
    /// How long streamed appends ([`Engine::append_to_message`]) may stay
    /// in the stream journal before a background push round folds them
    /// into a new version of their chat (sealed in full and pushed). An
    /// explicit [`Engine::sync_now`] or [`Engine::push`], another edit of
    /// the chat, [`Engine::flush_streams`] and closing the engine fold at
    /// once. Longer means fewer whole-chat seals during a stream, shorter
    /// means other devices see a stream sooner.
    pub stream_fold_after: Duration,
}

impl EngineConfig {
    /// Defaults for `vault` on `device`: a 32 MiB chat cache, 5 conflict
    /// rounds, pages of 1,000 changes, a 90-day tombstone horizon,
    /// maintenance asked for every 10 minutes, a 512 MiB attachment cache,
    /// a 7-day grace period for unnamed blobs, streamed appends folded
    /// after 30 seconds.
    pub fn new(vault: VaultId, device: DeviceId) -> Self {
        Self {
            vault,
            device,
            cache_bytes: 32 << 20,
            max_conflict_rounds: 5,
            page_size: 1000,
            tombstone_horizon: Some(Duration::from_secs(90 * 24 * 3600)),
            maintenance_every: Some(Duration::from_secs(600)),
            keyring: None,
            attachment_cache_bytes: 512 << 20,
            blob_grace: crate::attachments::DEFAULT_BLOB_GRACE,
            max_vault_format: crate::codec::VAULT_FORMAT,
            stream_fold_after: Duration::from_secs(30),
        }
    }
}

/// Everything the engine's tasks share.
pub(crate) struct Inner {
    storage: DynStorage,
    capabilities: Capabilities,
    /// This device's copy and everything under the write lock.
    local: LocalStore,
    config: EngineConfig,
    /// Sync status and events (shared with the local store, which announces
    /// committed changes).
    notifier: Arc<Notifier>,
    /// One push or pull at a time.
    sync_lock: tokio::sync::Mutex<()>,
    /// Where new keys come from, and whether the next push re-reads them.
    keyring: keyring::Keyring,
    /// Set at open: the first pull retries every skipped record.
    retry_all_skipped: std::sync::atomic::AtomicBool,
    /// When maintenance last ran (mirroring the replica) and the run in
    /// progress.
    maintenance: maintenance::Scheduler,
    /// This device's sealed blobs: attachments staged for upload (a push
    /// sends them before any record that waits for them) and the cache.
    blobs: Arc<BlobDir>,
}

impl Inner {
    fn max_batch(&self) -> usize {
        self.capabilities.max_batch.max(1)
    }
}

impl Drop for Inner {
    /// The last handle of the engine is gone: keep the sidebar as a sealed
    /// snapshot for the next cold start if it changed since the replica's
    /// one. A failure only costs the next start its speed.
    fn drop(&mut self) {
        if let Err(e) = save::fold_streams(&self.local, Duration::ZERO) {
            tracing::warn!(error = %e, "cannot fold the streamed appends; the next start does");
        }
        if let Err(e) = self.local.write_snapshot(Duration::ZERO) {
            tracing::warn!(error = %e, "cannot write the sidebar snapshot; the next start reads every summary");
        }
    }
}

/// The blob directory of the replica at `replica`: `<file name>.blobs`
/// beside it.
fn blob_dir_of(replica: &std::path::Path) -> std::path::PathBuf {
    let mut name = replica
        .file_name()
        .map(ToOwned::to_owned)
        .unwrap_or_default();
    name.push(".blobs");
    replica.with_file_name(name)
}

/// Runs `f` on a blocking thread: decryption, parsing, merging and replica
/// I/O stay off the async runtime.
async fn blocking<T: Send + 'static>(
    inner: &Arc<Inner>,
    f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
) -> Result<T> {
    let inner = inner.clone();
    tokio::task::spawn_blocking(move || f(&inner))
        .await
        .map_err(|e| {
            Error::local_message(format!("a background task of the sync engine failed: {e}"))
        })?
}

/// Every live chat in full ([`Engine::all_chats`]), and the chats left out
/// because their record does not open.
#[derive(Debug, Default)]
pub struct AllChats {
    /// The chats that opened, most recently active first.
    pub chats: Vec<Arc<Chat>>,
    /// The chats whose record does not open, with why.
    pub unreadable: Vec<SkippedRecord>,
}

/// True for the failures of one record that leave the rest readable: it is
/// damaged, tampered with, newer, or sealed under a key not held here.
fn opens_later(error: &Error) -> bool {
    matches!(
        error,
        Error::Corrupt { .. }
            | Error::Tampered { .. }
            | Error::UnsupportedFormat { .. }
            | Error::UnknownKeyId { .. }
    )
}

/// The sync engine. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("vault", &self.inner.config.vault)
            .field("device", &self.inner.config.device)
            .field("replica", &self.inner.local.replica)
            .field("storage", &self.inner.storage)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the engine over `storage` and `replica` with an unlocked
    /// `cipher`, and loads the sidebar from the replica (no network).
    ///
    /// Records the vault and device in a new replica; fails with
    /// [`Error::InvalidInput`] if the replica belongs to another vault, and
    /// with [`Error::UnsupportedFormat`] (naming the vault format needed)
    /// if the vault's format floor is above what this device reads
    /// (`docs/design.md` §3.6).
    pub async fn open(
        storage: DynStorage,
        replica: Replica,
        cipher: Arc<dyn Cipher>,
        config: EngineConfig,
    ) -> Result<Self> {
        let sealer = Sealer::reading_up_to(cipher, config.vault, config.max_vault_format);
        sealer.check_format_floor()?;
        let capabilities = storage.capabilities();
        let chats = usize::try_from(replica.record_count()?).unwrap_or(0);
        // Only scheduling depends on it: a mark that does not read is
        // treated as none (maintenance is then asked for at the next sync).
        let mark = replica.maintenance().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the replica's maintenance mark does not read; ignored");
            None
        });
        let blobs = Arc::new(
            BlobDir::new(blob_dir_of(replica.path()), config.attachment_cache_bytes)
                .with_grace(config.blob_grace),
        );
        // The replica's lock makes this process the directory's only user:
        // whatever a killed one left half-staged names nothing.
        match blobs.remove_orphans() {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "removed what an interrupted attach left behind"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot clean the blob directory; it stays as it is")
            }
        }
        let notifier = Arc::new(Notifier::new());
        let local = LocalStore::new(
            replica,
            sealer,
            Clock::new(config.device),
            State::new(config.cache_bytes, chats),
            notifier.clone(),
            Limits {
                max_record_bytes: capabilities.max_record_bytes,
                concurrent_writers: capabilities.concurrent_writers,
                tombstone_horizon: config.tombstone_horizon,
            },
        );
        let inner = Arc::new(Inner {
            storage,
            capabilities,
            local,
            notifier,
            sync_lock: tokio::sync::Mutex::new(()),
            keyring: keyring::Keyring::new(config.keyring.clone()),
            retry_all_skipped: std::sync::atomic::AtomicBool::new(true),
            maintenance: maintenance::Scheduler::new(mark),
            blobs,
            config,
        });
        blocking(&inner, |inner| {
            let local = &inner.local;
            local.check_identity(inner.config.vault, inner.config.device)?;
            local.load_sidebar()?;
            // Streamed appends a crash left unfolded: fold them now.
            for chat in local.journal.recover(&local.sealer)? {
                save::fold_stream(local, chat)?;
            }
            Ok(())
        })
        .await?;
        Ok(Self { inner })
    }

    /// This device's blob directory (attachments staged for upload, and
    /// the attachment cache): `<replica file>.blobs` beside the replica.
    pub fn blob_dir(&self) -> Arc<BlobDir> {
        self.inner.blobs.clone()
    }

    /// The vault this engine syncs.
    pub fn vault(&self) -> VaultId {
        self.inner.config.vault
    }

    /// This device.
    pub fn device(&self) -> DeviceId {
        self.inner.config.device
    }

    /// This device's clock: stamps for edits made through [`Engine::update`].
    pub fn clock(&self) -> &Clock {
        &self.inner.local.clock
    }

    /// The backend.
    pub fn storage(&self) -> &DynStorage {
        &self.inner.storage
    }

    /// The local replica.
    pub fn replica(&self) -> &Replica {
        &self.inner.local.replica
    }

    /// Live chats' summaries, most recently active first. In memory; no
    /// I/O; a shared snapshot, rebuilt only after a chat changed.
    pub fn sidebar(&self) -> Sidebar {
        self.inner.local.state.sidebar()
    }

    /// Number of live chats in the sidebar.
    pub fn chat_count(&self) -> usize {
        self.inner.local.state.len()
    }

    /// The summary of `chat`, if it is live.
    pub fn summary(&self, chat: ChatId) -> Option<ChatSummary> {
        self.inner.local.state.summary(chat)
    }

    /// The full chat if it is loaded in memory (see [`Engine::load_full_chat`]).
    pub fn chat(&self, chat: ChatId) -> Option<Arc<Chat>> {
        self.inner
            .local
            .state
            .cached(chat)
            .filter(|c| !c.is_deleted())
    }

    /// Bytes held by the full-chat cache.
    pub fn cached_bytes(&self) -> u64 {
        self.inner.local.state.cached_bytes()
    }

    /// Subscribes to change and status events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.notifier.subscribe()
    }

    /// The current sync status.
    pub fn status(&self) -> SyncStatus {
        self.inner.notifier.status()
    }

    /// A receiver that always holds the latest sync status.
    pub fn watch_status(&self) -> watch::Receiver<SyncStatus> {
        self.inner.notifier.watch_status()
    }

    /// Records this device could not open and keeps retrying (see
    /// [`SyncStatus::Incomplete`]).
    pub fn skipped(&self) -> Result<Vec<SkippedEntry>> {
        self.inner.local.replica.skipped()
    }

    /// Number of chats with local changes the server has not confirmed.
    pub fn pending(&self) -> Result<u64> {
        self.inner.local.replica.outbox_len()
    }

    /// Loads `chat` in full: from memory, else from the replica, else from
    /// the server (then kept in the replica). Fails with
    /// [`Error::NotFound`] for an unknown or deleted chat.
    pub async fn load_full_chat(&self, chat: ChatId) -> Result<Arc<Chat>> {
        save::load_full_chat(&self.inner, chat).await
    }

    /// Merges `chat` (a whole state, e.g. edited by the application) into the
    /// stored state and queues it for push. Returns the merged state.
    pub async fn save_chat(&self, chat: Chat) -> Result<Arc<Chat>> {
        save::save_chat(&self.inner, chat).await
    }

    /// Saves many chats at once (an import): each is merged into its stored
    /// state like [`Engine::save_chat`], and all of them commit with their
    /// outbox entries in one replica transaction, so either every chat is
    /// saved or none is (a chat too large for the backend fails the batch
    /// with [`Error::TooLarge`]). A chat this device holds only as a summary
    /// is saved after fetching its body, on its own. Returns the merged
    /// states in the order given.
    pub async fn save_chats(&self, chats: Vec<Chat>) -> Result<Vec<Arc<Chat>>> {
        save::save_chats(&self.inner, chats).await
    }

    /// Applies `edit` to the current full state of `chat` (loading it first
    /// if needed) and queues the result for push. `edit` receives this
    /// device's clock for stamps and returns a value passed back to the
    /// caller. Fails with [`Error::NotFound`] for an unknown or deleted
    /// chat.
    pub async fn update<T, F>(&self, chat: ChatId, edit: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Chat, &Clock) -> Result<T> + Send + 'static,
    {
        save::update(&self.inner, chat, edit).await
    }

    /// Appends `text` to `message` of `chat`: one token of a streamed
    /// reply. It costs what the token costs: one sealed entry of about the
    /// text's size appended to the stream journal beside the replica and
    /// synced, not a new sealed version of the whole chat (docs/design.md
    /// §8.5). Memory, the sidebar and listeners see it at once; it is
    /// durable when this returns (a crash keeps every append that
    /// returned). The journal is folded into one ordinary new version
    /// (sealed in full, queued for push) by another edit of the chat, by
    /// an explicit [`sync_now`](Self::sync_now) or [`push`](Self::push), by
    /// a background push once [`EngineConfig::stream_fold_after`] passed,
    /// by [`flush_streams`](Self::flush_streams), and when the engine
    /// closes or reopens after a crash.
    ///
    /// Errors: [`Error::NotFound`] for an unknown or deleted chat or
    /// message; replica and journal write failures.
    pub async fn append_to_message(
        &self,
        chat: ChatId,
        message: MessageId,
        text: impl Into<String>,
    ) -> Result<()> {
        save::append_to_message(&self.inner, chat, message, text.into()).await
    }

    /// Folds every chat's streamed appends into a new version now (see
    /// [`append_to_message`](Self::append_to_message)): call it when a
    /// stream ends to have the next push send it.
    pub async fn flush_streams(&self) -> Result<()> {
        blocking(&self.inner, |inner| {
            save::fold_streams(&inner.local, Duration::ZERO)
        })
        .await
    }

    /// Deletes `chat`: a tombstone that wins over edits other devices make
    /// without having seen it. Deleting a deleted chat does nothing; an
    /// unknown chat is [`Error::NotFound`].
    pub async fn delete_chat(&self, chat: ChatId) -> Result<()> {
        save::delete_chat(&self.inner, chat).await
    }

    /// Every live chat in full, loading bodies from the server as needed
    /// (for exports). A chat whose record does not open (damaged on the
    /// server or in the replica, a newer format, an unknown key) is left out
    /// and named in [`AllChats::unreadable`] instead of failing the whole
    /// call; bodies are fetched through the same tolerant path as a pull.
    pub async fn all_chats(&self) -> Result<AllChats> {
        self.all_chats_where(Arc::new(|_: &[u8]| true)).await
    }

    /// [`all_chats`](Self::all_chats) for a search: a chat whose body,
    /// read from the replica and opened, `keep` rejects is left out before
    /// it is decoded (decoding is most of the cost). `keep` sees the body's
    /// encoding ([`codec`](crate::raw::codec)): a format byte, then UTF-8 JSON
    /// in which every string of the chat (title, message text) appears
    /// verbatim unless it holds `"`, `\` or a control character. Chats
    /// already decoded in memory or fetched from the server are returned
    /// unfiltered, so `keep` may only narrow what the caller checks itself.
    pub async fn all_chats_where(&self, keep: BodyFilter) -> Result<AllChats> {
        let inner = &self.inner;
        let sidebar = self.sidebar();
        // Bodies this device lacks come in batched gets up front; loading
        // them one by one below would cost a request per chat.
        let ids: Vec<ChatId> = sidebar.iter().map(|s| s.id).collect();
        let locals = blocking(inner, move |inner| inner.local.replica.local_states(&ids)).await?;
        let versions: std::collections::HashMap<ChatId, u64> = locals
            .iter()
            .filter_map(|l| l.header.map(|h| (l.chat, h.version)))
            .collect();
        let missing: Vec<ChatId> = locals
            .iter()
            .filter(|l| l.header.is_some_and(|h| !h.deleted) && !l.has_body)
            .map(|l| l.chat)
            .collect();
        let wanted: Vec<fetch::Wanted> = missing
            .iter()
            .map(|&chat| fetch::Wanted {
                chat,
                version: versions.get(&chat).copied().unwrap_or(0),
            })
            .collect();
        let fetch::Fetched {
            records,
            mut unreadable,
            ..
        } = fetch::fetch(inner, &wanted, Part::Body).await?;
        let stored = blocking(inner, move |inner| {
            Ok(records
                .into_iter()
                .filter_map(|record| {
                    let (chat, version) = (record.chat, record.version);
                    match inner.local.store_fetched(record) {
                        Ok(()) => None,
                        Err(error) => Some((chat, version, error)),
                    }
                })
                .collect::<Vec<_>>())
        })
        .await?;
        for (chat, version, error) in stored {
            if !opens_later(&error) {
                return Err(error);
            }
            unreadable.push(SkippedRecord {
                chat,
                version,
                error,
            });
        }
        let left_out: std::collections::HashSet<ChatId> =
            unreadable.iter().map(|s| s.chat).collect();
        let ids: Vec<ChatId> = sidebar
            .iter()
            .map(|s| s.id)
            .filter(|id| !left_out.contains(id))
            .collect();
        let mut chats = Vec::with_capacity(ids.len());
        // Bodies held here are read a batch per snapshot and opened on every
        // core; one chat at a time this took seconds at 10k chats.
        for batch in ids.chunks(LOCAL_BATCH) {
            let batch = batch.to_vec();
            let keep = keep.clone();
            let (batch, loaded) = blocking(inner, move |inner| {
                let loaded = save::load_local_bodies(&inner.local, &batch, keep.as_ref())?;
                Ok((batch, loaded))
            })
            .await?;
            for (chat, loaded) in batch.into_iter().zip(loaded) {
                let loaded = match loaded {
                    save::BulkLoad::Loaded(loaded) => loaded,
                    save::BulkLoad::Excluded => continue,
                    // Replaced by a concurrent pull without its body.
                    save::BulkLoad::NotLocal => self.load_full_chat(chat).await,
                };
                match loaded {
                    Ok(loaded) => chats.push(loaded),
                    // Deleted by a concurrent pull since the sidebar was read.
                    Err(Error::NotFound { .. }) => {}
                    Err(error) if opens_later(&error) => unreadable.push(SkippedRecord {
                        chat,
                        version: versions.get(&chat).copied().unwrap_or(0),
                        error,
                    }),
                    Err(e) => return Err(e),
                }
            }
        }
        for s in &unreadable {
            tracing::warn!(chat = %s.chat, version = s.version, error = %s.error, "a chat that does not open is left out");
        }
        Ok(AllChats { chats, unreadable })
    }

    /// Runs the backend's housekeeping now ([`Storage::maintain`]); with
    /// `force` regardless of the backend's thresholds, and waits for it.
    /// Successful sync rounds start it by themselves when it is due (every
    /// [`EngineConfig::maintenance_every`]); this run counts as the latest
    /// for that schedule.
    ///
    /// [`Storage::maintain`]: crate::Storage::maintain
    pub async fn maintain(&self, force: bool) -> Result<MaintenanceReport> {
        self.run_maintenance(force).await
    }

    /// Runs one sync round now: retry every skipped record, pull every
    /// change, then push the outbox (entries and records waiting for their
    /// backoff included). Updates the status and
    /// returns what was done; on failure the status says why and queued
    /// changes stay queued. When the backend's maintenance is due (see
    /// [`EngineConfig::maintenance_every`]), a successful round starts it
    /// in its own task and returns without waiting for it; a process about
    /// to exit bounds it with [`Engine::settle_maintenance`].
    pub async fn sync_now(&self) -> Result<SyncReport> {
        self.round(Round::SYNC_NOW).await
    }

    /// Pulls every change without pushing.
    pub async fn pull(&self) -> Result<SyncReport> {
        self.round(Round::PULL).await
    }

    /// Pushes the outbox without pulling.
    pub async fn push(&self) -> Result<SyncReport> {
        self.round(Round::PUSH).await
    }

    /// One round of `what`.
    pub(crate) async fn round(&self, what: Round) -> Result<SyncReport> {
        let Round { pull, push, force } = what;
        use tracing::field::Empty;
        use tracing::Instrument;
        let inner = &self.inner;
        let _one_at_a_time = inner.sync_lock.lock().await;
        let span = tracing::info_span!(
            "sync_round",
            pull,
            push,
            pulled = Empty,
            pushed = Empty,
            conflicts_resolved = Empty,
            skipped = Empty,
            pending = Empty,
            requests = Empty,
        );
        let report = self
            .round_locked(pull, push, force)
            .instrument(span.clone())
            .await;
        if let Ok(r) = &report {
            self.maintain_when_due().await;
            self.snapshot_when_due().await;
            span.record("pulled", r.pulled);
            span.record("pushed", r.pushed);
            span.record("conflicts_resolved", r.conflicts_resolved);
            span.record("skipped", r.skipped.len());
            span.record("pending", r.pending);
            span.record("requests", r.requests);
        }
        report
    }

    /// Writes the sidebar snapshot if the sidebar changed and the last one
    /// is older than [`local::SNAPSHOT_EVERY`], so a process that is killed
    /// rather than closed still leaves a recent one (used at the next start
    /// if nothing changed after it). A failure is logged.
    async fn snapshot_when_due(&self) {
        let written = blocking(&self.inner, |inner| {
            inner.local.write_snapshot(local::SNAPSHOT_EVERY)
        })
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write the sidebar snapshot; the next start reads every summary");
        }
    }

    /// Writes the sidebar snapshot now if the sidebar changed since the
    /// replica's one (the engine also does so when its last handle is
    /// dropped, and after a sync round at most once a minute). Returns
    /// true if one was written. Errors: [`Error::Local`] if the replica
    /// write failed; the next start then reads every summary, which is
    /// slower but correct.
    pub async fn write_sidebar_snapshot(&self) -> Result<bool> {
        blocking(&self.inner, |inner| {
            inner.local.write_snapshot(Duration::ZERO)
        })
        .await
    }

    /// One round, under the sync lock.
    async fn round_locked(&self, pull: bool, push: bool, force: bool) -> Result<SyncReport> {
        let inner = &self.inner;
        inner.notifier.set_status(SyncStatus::Syncing);
        let mut report = SyncReport::default();
        let mut result = Ok(());
        if pull {
            result = pull::pull(inner, &mut report, force).await;
        }
        if push && result.is_ok() {
            result = outbox::push(inner, &mut report, force).await;
        }
        let pending = blocking(inner, |inner| {
            Ok((
                inner.local.replica.outbox_len()?,
                inner.local.replica.skipped()?.len(),
            ))
        })
        .await;
        match (result, pending) {
            (Ok(()), Ok((pending, skipped))) => {
                report.pending = pending;
                inner
                    .notifier
                    .finish_round_with_skipped(skipped, report.waiting.clone());
                Ok(report)
            }
            (Err(e), _) | (Ok(()), Err(e)) => {
                if e.is_retriable() {
                    inner.keyring.recheck_later();
                }
                inner.notifier.finish_round(Some(&e));
                Err(e)
            }
        }
    }

    /// Starts syncing in the background: a round whenever `transport` says
    /// so (and after each pull that failed, with its backoff), a push after
    /// every local save. Stop it with [`SyncWorker::stop`]; dropping the
    /// worker stops it too. Must be called within a Tokio runtime.
    pub fn start(&self, transport: Arc<dyn Transport>) -> SyncWorker {
        worker::start(self.clone(), transport)
    }

    /// Starts syncing in the background with the default transport: the
    /// backend's change notifications if it has them ([`Storage::notifications`]), raced
    /// with polling every `interval` (jittered, backing off while pulls fail).
    ///
    /// [`Storage::notifications`]: crate::Storage::notifications
    pub fn start_polling(&self, interval: Duration) -> SyncWorker {
        let push = self.inner.storage.notifications();
        self.start(Arc::new(worker::PushOrPoll::new(push, interval)))
    }
}
