//! [`LocalStore`]: this device's side of the engine, everything under the
//! write lock: the replica, the in-memory sidebar and cache, the sealer
//! and the clock. Save, pull, push (conflict resolution) and `all_chats`
//! are leaves over its apply layer:
//!
//! - [`LocalStore::current`]: a chat's current state inside a replica write;
//! - [`LocalStore::stage_local`]: seal a new local state as the next version
//!   and queue it for push;
//! - [`LocalStore::fold_remote`] and [`LocalStore::fold_pulled`]: merge a
//!   server record into the local state;
//! - [`LocalStore::store_fetched`]: keep a record fetched on demand;
//! - [`LocalStore::publish`]: show a committed state to memory and
//!   subscribers;
//! - [`LocalStore::commit_local`] and [`LocalStore::commit_batch`]: a local
//!   change, read-edit-seal-commit in one transaction.
//!
//! Every function that writes takes the open [`ReplicaWrite`]; the caller
//! commits it and only then publishes, so memory never runs ahead of the
//! replica (docs/design.md §8). No network here: fetching is `fetch.rs`.

use super::sealing::OpenedRecord;
use super::sealing::Sealer;
use super::state::State;
use super::status::{Event, Notifier};
use crate::chat::{Chat, ChatSummary};
use crate::hlc::Clock;
use crate::hlc::Hlc;
use crate::ids::{ChatId, DeviceId, VaultId};
use crate::replica::Replica;
use crate::replica::{RecordHeader, ReplicaWrite, StoredSnapshot};
use crate::storage::SealedRecord;
use crate::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long after the last sidebar snapshot (or the load) a sync round
/// that changed the sidebar writes a new one. Closing the engine writes
/// one whenever the sidebar changed.
pub(super) const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);

/// What the local store knows of the sidebar snapshot in the replica.
#[derive(Debug)]
struct SnapshotMark {
    /// The sidebar generation the in-memory sidebar reflected at load,
    /// minus the tally then: the generation it reflects now is this plus
    /// the tally. `None` once memory may differ from what a scan would show
    /// (a summary did not open at load; another writer changed a summary):
    /// no snapshot is written then.
    base: Option<u64>,
    /// The generation of the snapshot the replica holds, if it is known to
    /// be one this store loaded or wrote.
    written: Option<u64>,
    /// When it was loaded or written.
    at: Instant,
}

/// A chat's current state as a local change sees it.
pub(super) enum Current {
    /// No record of the chat exists here.
    Missing,
    /// Only the summary is held locally (the body was never loaded).
    Summary(ChatSummary),
    /// The whole state (a deleted chat is its tombstone).
    Full(Arc<Chat>),
}

/// A committed state to show: its summary, version, and the whole chat if
/// known (else a cached older version is dropped).
pub(super) struct Publish {
    pub summary: ChatSummary,
    pub version: u64,
    pub full: Option<Arc<Chat>>,
}

/// A new local state staged in a replica write, to publish once it commits.
pub(super) struct Staged {
    /// The state as sealed (after tombstone garbage collection).
    pub chat: Arc<Chat>,
    /// The version it was sealed as.
    pub version: u64,
}

impl Staged {
    pub(super) fn publish(&self) -> Publish {
        Publish {
            summary: self.chat.summary(),
            version: self.version,
            full: Some(self.chat.clone()),
        }
    }
}

/// The version a new local state of `chat` is sealed as: above both the
/// stored version and `at_least`.
fn next_version(chat: ChatId, header: Option<RecordHeader>, at_least: u64) -> Result<u64> {
    header
        .map_or(0, |h| h.version)
        .max(at_least)
        .checked_add(1)
        .ok_or_else(|| Error::invalid(format!("chat {chat} has reached the last version")))
}

/// What the backend accepts and how old tombstones may get, as the local
/// store needs them.
pub(super) struct Limits {
    /// [`Capabilities::max_record_bytes`](crate::Capabilities): a record
    /// over it never enters the outbox.
    pub(super) max_record_bytes: usize,
    /// [`Capabilities::concurrent_writers`](crate::Capabilities): merge
    /// every record that is not the one held here (docs/design.md §8.3).
    pub(super) concurrent_writers: bool,
    /// [`EngineConfig::tombstone_horizon`](super::EngineConfig::tombstone_horizon).
    pub(super) tombstone_horizon: Option<std::time::Duration>,
}

/// This device's copy of the vault and the in-memory view that follows it:
/// see the [module docs](self).
pub(super) struct LocalStore {
    /// The crash-safe copy: records, outbox, cursor, skipped records.
    pub(super) replica: Replica,
    /// The sidebar and the cache of full chats, following the replica in
    /// commit order.
    pub(super) state: State,
    /// Seals and opens records of this vault.
    pub(super) sealer: Sealer,
    /// This device's clock.
    pub(super) clock: Clock,
    /// Where committed changes are announced.
    pub(super) events: Arc<Notifier>,
    /// Woken after every local commit (the background push waits on it).
    pub(super) committed: Notify,
    limits: Limits,
    /// Serialises local commits and pull applications: each reads the
    /// current state, merges and commits, and the in-memory view follows
    /// the replica in commit order.
    write_lock: Mutex<()>,
    /// Commits through [`write`](Self::write) that bumped the sidebar
    /// generation.
    tally: Arc<AtomicU64>,
    /// The sidebar snapshot's bookkeeping.
    snapshot: Mutex<SnapshotMark>,
    /// Streamed appends not yet folded into a version (`journal.rs`).
    pub(super) journal: super::journal::Journal,
}

impl LocalStore {
    /// A local store over `replica`; the sidebar is empty until
    /// [`load_sidebar`](Self::load_sidebar).
    pub(super) fn new(
        replica: Replica,
        sealer: Sealer,
        clock: Clock,
        state: State,
        events: Arc<Notifier>,
        limits: Limits,
    ) -> Self {
        let journal = super::journal::Journal::new(replica.path());
        Self {
            journal,
            replica,
            state,
            sealer,
            clock,
            events,
            committed: Notify::new(),
            limits,
            write_lock: Mutex::new(()),
            tally: Arc::new(AtomicU64::new(0)),
            snapshot: Mutex::new(SnapshotMark {
                base: None,
                written: None,
                at: Instant::now(),
            }),
        }
    }

    /// Starts a replica write whose sidebar generation bump (if it changes
    /// a summary) is counted as this store's: every engine write that may
    /// change a summary goes through here, under the write lock, and
    /// publishes to memory before releasing it.
    pub(super) fn write(&self) -> Result<ReplicaWrite> {
        self.replica.write_counted(self.tally.clone())
    }

    fn mark(&self) -> MutexGuard<'_, SnapshotMark> {
        self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens and decodes the sidebar snapshot of `generation`, kept in
    /// `chunks` sealed chunks, one chunk at a time, checks every chunk
    /// reflects the summaries whose digest is `digest` and sits where it is
    /// read, and shows it.
    fn load_snapshot(&self, generation: u64, chunks: u32, digest: &[u8; 32]) -> Result<()> {
        let decoded = (|| {
            if chunks == 0 {
                return Err(Error::corrupt("sidebar snapshot", "it has no chunks"));
            }
            for index in 0..chunks {
                let sealed = self.replica.sidebar_snapshot_chunk(index)?.ok_or_else(|| {
                    Error::corrupt("sidebar snapshot", format!("chunk {index} is missing"))
                })?;
                let plain = self.sealer.open_snapshot(generation, index, &sealed)?;
                drop(sealed);
                super::snapshot::decode_with(
                    &plain,
                    |reflects, place| {
                        if reflects != digest {
                            Err(Error::corrupt(
                                "sidebar snapshot",
                                "it does not reflect the stored summaries (a writer that does \
                                 not keep the sidebar generation, such as an older chatvault, \
                                 changed them)",
                            ))
                        } else if place != (super::snapshot::Place { index, chunks }) {
                            Err(Error::corrupt(
                                "sidebar snapshot",
                                format!(
                                    "chunk {index} of {chunks} says it is chunk {} of {}",
                                    place.index, place.chunks
                                ),
                            ))
                        } else {
                            Ok(())
                        }
                    },
                    |summary| {
                        self.clock.observe(summary.last_activity);
                        self.state.fill_one(summary);
                    },
                )?;
            }
            Ok(())
        })();
        match decoded {
            // Drops any ordered snapshot taken meanwhile.
            Ok(()) => self.state.fill(std::iter::empty()),
            // Whatever was decoded before the damage goes: the scan refills.
            Err(_) => self.state.clear(),
        }
        decoded
    }

    /// Writes the sealed sidebar snapshot if the sidebar changed since the
    /// replica's one and at least `min_age` passed since that one was
    /// loaded or written. Returns true if one was written.
    ///
    /// Under the write lock, the in-memory sidebar mirrors the replica at
    /// generation `base + tally`; the snapshot is committed only if the
    /// replica is still at that generation, checked inside the writing
    /// transaction, so a snapshot never claims a generation it does not
    /// reflect.
    pub(super) fn write_snapshot(&self, min_age: Duration) -> Result<bool> {
        let _writes = self.lock_writes();
        let mut mark = self.mark();
        let Some(base) = mark.base else {
            return Ok(false);
        };
        // Memory shows streamed appends the replica's summaries lack.
        if !self.journal.is_empty() {
            return Ok(false);
        }
        let generation = base.wrapping_add(self.tally.load(Ordering::Acquire));
        if mark.written == Some(generation) || mark.at.elapsed() < min_age {
            return Ok(false);
        }
        let sidebar = self.state.sidebar();
        let mut write = self.replica.write()?;
        let found = write.sidebar_generation()?;
        if found != generation {
            tracing::debug!(
                found,
                expected = generation,
                "the replica's summaries changed outside the engine; no sidebar snapshot this session"
            );
            mark.base = None;
            return Ok(false);
        }
        let digest = write.summaries_digest()?;
        // One chunk encoded and sealed at a time: never the whole plaintext.
        let parts: Vec<&[Arc<ChatSummary>]> = if sidebar.is_empty() {
            vec![&[]]
        } else {
            sidebar.chunks(super::snapshot::CHUNK).collect()
        };
        let chunks = u32::try_from(parts.len())
            .map_err(|_| Error::invalid("too many chats for one sidebar snapshot"))?;
        let mut bytes = 0;
        let sealed = (0..chunks).zip(parts).map(|(index, part)| {
            let place = super::snapshot::Place { index, chunks };
            let plain = super::snapshot::encode(&digest, place, part.iter().map(|s| &**s))?;
            let sealed = self.sealer.seal_snapshot(generation, index, &plain)?;
            bytes += sealed.len();
            Ok(sealed)
        });
        write.set_sidebar_snapshot(generation, sealed)?;
        write.commit()?;
        mark.written = Some(generation);
        mark.at = Instant::now();
        tracing::debug!(
            generation,
            chats = sidebar.len(),
            chunks,
            bytes,
            "sidebar snapshot written"
        );
        Ok(true)
    }

    /// True on a backend with concurrent writers: records of one chat are
    /// merged whatever their versions (docs/design.md §8.3).
    pub(super) fn concurrent_writers(&self) -> bool {
        self.limits.concurrent_writers
    }

    /// Takes the write lock: one local commit or pull application at a time.
    pub(super) fn lock_writes(&self) -> MutexGuard<'_, ()> {
        // The guarded data is the replica, which is transactional: a panic
        // mid-write aborted its transaction, so the lock is safe to reuse.
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `vault` and `device` in a new replica; fails with
    /// [`Error::InvalidInput`] if the replica belongs to another vault.
    pub(super) fn check_identity(&self, vault: VaultId, device: DeviceId) -> Result<()> {
        match self.replica.identity()? {
            Some((held, _)) if held != vault => Err(Error::invalid(format!(
                "the replica {} belongs to vault {held}, not to vault {vault}; use another replica path",
                self.replica.path().display(),
            ))),
            Some((_, held)) if held == device => Ok(()),
            _ => {
                let mut write = self.replica.write()?;
                write.set_identity(vault, device)?;
                write.commit()
            }
        }
    }

    /// Fills the sidebar from the replica (no network): from its sealed
    /// sidebar snapshot when that reflects the current sidebar generation
    /// and opens, else by opening every stored summary.
    pub(super) fn load_sidebar(&self) -> Result<()> {
        /// Summaries decrypted per step: bounds the transient memory of a
        /// cold start, whatever the vault's size.
        const BATCH: usize = 4096;
        let _writes = self.lock_writes();
        // Read before the scan: a summary another writer commits meanwhile
        // makes the replica's generation differ from the one recorded here,
        // never the reverse.
        let (generation, stored) = self.replica.sidebar_snapshot()?;
        let base = generation.wrapping_sub(self.tally.load(Ordering::Acquire));
        match stored {
            Some(StoredSnapshot {
                chunks,
                digest: Some(digest),
                ..
            }) => match self.load_snapshot(generation, chunks, &digest) {
                Ok(()) => {
                    *self.mark() = SnapshotMark {
                        base: Some(base),
                        written: Some(generation),
                        at: Instant::now(),
                    };
                    return Ok(());
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "the replica's sidebar snapshot does not open; reading every summary instead"
                ),
            },
            Some(StoredSnapshot { generation: at, .. }) => tracing::debug!(
                snapshot = at,
                generation,
                "the sidebar snapshot is stale; reading every summary"
            ),
            None => {}
        }
        let mut complete = true;
        self.replica.scan_summaries(BATCH, |batch| {
            let live: Vec<_> = batch.into_iter().filter(|s| !s.deleted).collect();
            let opened = super::sealing::par_map(live, |s| {
                (s.chat, self.sealer.open_summary(s.chat, s.version, &s.sealed))
            });
            let mut summaries = Vec::with_capacity(opened.len());
            for (chat, result) in opened {
                match result {
                    Ok(summary) => {
                        self.clock.observe(summary.last_activity);
                        summaries.push(summary);
                    }
                    Err(e) => {
                        complete = false;
                        tracing::warn!(%chat, error = %e, "a chat in the replica does not open; left out of the sidebar");
                        self.events.emit(Event::RecordSkipped {
                            chat,
                            reason: e.to_string(),
                        });
                    }
                }
            }
            self.state.fill(summaries);
            Ok(())
        })?;
        *self.mark() = SnapshotMark {
            base: complete.then_some(base),
            written: None,
            at: Instant::now(),
        };
        Ok(())
    }

    /// The current state of `chat` inside write transaction `header`'s view.
    /// `None` when `needs_body` and only the summary is held.
    pub(super) fn current(
        &self,
        chat: ChatId,
        header: Option<RecordHeader>,
        record: impl FnOnce() -> Result<Option<SealedRecord>>,
        needs_body: bool,
    ) -> Result<Option<Current>> {
        let Some(header) = header else {
            return Ok(Some(Current::Missing));
        };
        if let Some(cached) = self.state.cached_at(chat, header.version) {
            return Ok(Some(Current::Full(cached)));
        }
        let record = record()?.ok_or_else(|| Error::NotFound {
            what: format!("chat {chat}"),
        })?;
        if header.deleted {
            let summary = self
                .sealer
                .open_summary(chat, record.version, &record.summary)?;
            let at = summary.deleted.unwrap_or(summary.last_activity);
            return Ok(Some(Current::Full(Arc::new(Chat::tombstone(
                chat,
                summary.created,
                at,
            )))));
        }
        match &record.body {
            Some(body) => {
                let mut state = self.sealer.open_body(chat, record.version, body)?;
                self.journal.apply_to(chat, record.version, &mut state);
                Ok(Some(Current::Full(Arc::new(state))))
            }
            None if needs_body => Ok(None),
            None => Ok(Some(Current::Summary(self.sealer.open_summary(
                chat,
                record.version,
                &record.summary,
            )?))),
        }
    }

    /// Seals `next` (a new local state of its chat, whose stored header in
    /// `write` is `header`) as the next version and stores it with its outbox
    /// entry in `write`. Fails with [`Error::TooLarge`] (and stages nothing)
    /// if the backend would refuse the record: it must not enter the outbox,
    /// where it would fail every push forever.
    pub(super) fn stage_local(
        &self,
        write: &mut ReplicaWrite,
        header: Option<RecordHeader>,
        mut next: Chat,
    ) -> Result<Staged> {
        let chat = next.id;
        if let Some(horizon) = self.tombstone_horizon() {
            next.collect_garbage(horizon);
        }
        let base = match write.pending(chat)? {
            Some(entry) => entry.base,
            None => header.map(|h| h.version),
        };
        let version = next_version(chat, header, base.unwrap_or(0))?;
        let record = self.sealer.seal(&next, version)?;
        self.check_size(&record)?;
        write.put_local(&record, base)?;
        Ok(Staged {
            chat: Arc::new(next),
            version,
        })
    }

    /// Folds the server's record `sealed` (opened: `summary`, `remote`) into
    /// the pending local state of its chat within `write`, the one place a
    /// pull and a conflicting push merge. If the merge adds nothing to the
    /// server's state, that record is stored and nothing is left to push;
    /// otherwise the merge is sealed as the next version and queued on top of
    /// the server's. `None` when the local body is missing.
    ///
    /// Errors: [`Error::TooLarge`] when the merge is over the backend's
    /// record limit (nothing is written: the pending state stays as it was).
    pub(super) fn fold_remote(
        &self,
        write: &mut ReplicaWrite,
        header: Option<RecordHeader>,
        sealed: &SealedRecord,
        summary: ChatSummary,
        remote: Arc<Chat>,
    ) -> Result<Option<Publish>> {
        let chat = sealed.chat;
        let version = sealed.version;
        let local = match self.current(chat, header, || write.record(chat, true), true)? {
            Some(Current::Full(local)) => local,
            _ => return Ok(None),
        };
        let merged = Chat::merged(&local, &remote);
        if merged == *remote {
            write.put_remote(sealed)?;
            return Ok(Some(Publish {
                summary,
                version,
                full: Some(remote),
            }));
        }
        self.queue_merge(write, header, version, Arc::new(merged))
            .map(Some)
    }

    /// Seals `merged` (a merge of this device's state with the server's) as
    /// the next version above `base`, the newest server version it builds
    /// on, and queues it on top of `base`.
    ///
    /// Errors: [`Error::TooLarge`] when the merge outgrew what the backend
    /// accepts: it must not enter the outbox, where it would fail every
    /// push; nothing is written and the caller reports it for this chat
    /// alone.
    fn queue_merge(
        &self,
        write: &mut ReplicaWrite,
        header: Option<RecordHeader>,
        base: u64,
        merged: Arc<Chat>,
    ) -> Result<Publish> {
        let next = next_version(merged.id, header, base)?;
        let record = self.sealer.seal(&merged, next)?;
        self.check_size(&record)?;
        write.put_local(&record, Some(base))?;
        Ok(Publish {
            summary: merged.summary(),
            version: next,
            full: Some(merged),
        })
    }

    /// Folds one opened record from the change feed into `write`. Returns
    /// the state to publish, or `None` if the record brought nothing new.
    pub(super) fn fold_pulled(
        &self,
        write: &mut ReplicaWrite,
        record: OpenedRecord,
    ) -> Result<Option<Publish>> {
        let OpenedRecord {
            sealed,
            summary,
            chat: remote,
        } = record;
        let chat = sealed.chat;
        let version = sealed.version;
        let header = write.header(chat)?;
        let pending = write.pending(chat)?;
        self.clock.observe(summary.last_activity);
        let remote = remote.map(Arc::new);
        if self.limits.concurrent_writers {
            return self.fold_concurrent(write, sealed, summary, remote);
        }

        // The server's record is the state when nothing local is pending
        // (and it is newer), or when it deletes the chat: deletion wins
        // over the local edits, nothing of them survives a merge with the
        // tombstone.
        let take_theirs = match pending {
            None if header.is_some_and(|h| h.version >= version) => return Ok(None),
            None => true,
            Some(entry) if entry.base.is_some_and(|base| base >= version) => return Ok(None),
            Some(_) => sealed.deleted,
        };
        if take_theirs {
            write.put_remote(&sealed)?;
            return Ok(Some(Publish {
                summary,
                version,
                full: remote,
            }));
        }
        // Without the body there is nothing to merge with yet; the push of
        // the pending entry will conflict and merge then.
        let Some(remote) = remote else {
            return Ok(None);
        };
        self.fold_remote(write, header, &sealed, summary, remote)
    }

    /// [`LocalStore::fold_pulled`] on a backend with concurrent writers
    /// ([`Capabilities::concurrent_writers`](crate::Capabilities)), where a
    /// record's version does not tell whether this device's state already
    /// holds it: two devices may each have committed version 7 of a chat,
    /// neither knowing the other's. So every record that is not the one held
    /// here is merged, whatever its version (docs/design.md §8.3):
    ///
    /// - nothing held: the record is the state;
    /// - the very record held (same sealed summary): its body is kept if it
    ///   was missing, nothing else;
    /// - no body here to merge with: a newer record replaces the summary; an
    ///   older or equal one waits until the body loads (loading merges every
    ///   device's current record);
    /// - else the merge: nothing new → nothing; exactly the record's state
    ///   and newer → stored as it is; otherwise sealed as a version above
    ///   both and queued, based on the newest version seen on the server.
    fn fold_concurrent(
        &self,
        write: &mut ReplicaWrite,
        sealed: SealedRecord,
        summary: ChatSummary,
        remote: Option<Arc<Chat>>,
    ) -> Result<Option<Publish>> {
        let chat = sealed.chat;
        let version = sealed.version;
        let header = write.header(chat)?;
        let pending = write.pending(chat)?;
        let Some(held) = header else {
            write.put_remote(&sealed)?;
            return Ok(Some(Publish {
                summary,
                version,
                full: remote,
            }));
        };
        let held_record = write.record(chat, false)?;
        if held_record.is_some_and(|r| r.summary == sealed.summary) {
            if let (Some(body), Some(state)) = (&sealed.body, &remote) {
                if write.put_body(chat, version, body)? {
                    return Ok(Some(Publish {
                        summary,
                        version,
                        full: Some(state.clone()),
                    }));
                }
            }
            return Ok(None);
        }
        // A tombstone carries no body; its state is the deletion itself.
        let remote = match remote {
            Some(remote) => Some(remote),
            None if sealed.deleted => Some(Arc::new(Chat::tombstone(
                chat,
                summary.created,
                summary.deleted.unwrap_or(summary.last_activity),
            ))),
            None => None,
        };
        let local = self.current(chat, header, || write.record(chat, true), true)?;
        let (Some(Current::Full(local)), Some(remote)) = (local, remote.clone()) else {
            // A summary never brings a deleted chat back: the body decides.
            if version > held.version && pending.is_none() && !held.deleted {
                write.put_remote(&sealed)?;
                return Ok(Some(Publish {
                    summary,
                    version,
                    full: remote,
                }));
            }
            // An older deletion still wins over the live chat held here as a
            // summary: the merge is that tombstone, whatever the body held.
            if let (Some(tombstone), false) = (remote.filter(|_| sealed.deleted), held.deleted) {
                let base = version.max(held.version);
                return self.queue_merge(write, header, base, tombstone).map(Some);
            }
            return Ok(None);
        };
        let merged = Chat::merged(&local, &remote);
        let newer = version > held.version && pending.is_none();
        if merged == *remote && newer {
            write.put_remote(&sealed)?;
            return Ok(Some(Publish {
                summary,
                version,
                full: Some(remote),
            }));
        }
        if merged == *local {
            return Ok(None);
        }
        // The newest version known to be on the server: the queued change
        // is based on it, so its push conflicts only if something newer came.
        let on_server = match pending {
            Some(entry) => entry.base.unwrap_or(0),
            None => held.version,
        };
        let base = version.max(on_server);
        self.queue_merge(write, header, base, Arc::new(merged))
            .map(Some)
    }

    /// Stores a record fetched on demand: its body if it matches the local
    /// version, or the whole record if the server is ahead and nothing local
    /// is pending (then it is what the next pull would have brought).
    pub(super) fn store_fetched(&self, record: SealedRecord) -> Result<()> {
        let opened = self.sealer.open(record)?;
        let chat = opened.sealed.chat;
        let version = opened.sealed.version;
        let _writes = self.lock_writes();
        let mut write = self.write()?;
        let header = write.header(chat)?;
        let pending = write.pending(chat)?;
        let full = opened.chat.map(Arc::new);
        match header {
            Some(h) if h.version == version => {
                if let (Some(body), Some(chat_state)) = (&opened.sealed.body, &full) {
                    if write.put_body(chat, version, body)? {
                        write.commit()?;
                        self.state.cache(version, chat_state.clone());
                    }
                }
            }
            Some(h) if h.version > version || pending.is_some() => {}
            _ => {
                write.put_remote(&opened.sealed)?;
                write.commit()?;
                if let Some(c) = &full {
                    self.clock.observe(c.last_activity());
                }
                self.publish(Publish {
                    summary: opened.summary,
                    version,
                    full,
                });
            }
        }
        Ok(())
    }

    /// Applies a committed state to memory and tells subscribers. Call only
    /// after the replica write holding it committed.
    pub(super) fn publish(&self, state: Publish) {
        let id = state.summary.id;
        if self.state.apply(state.summary, state.version, state.full) {
            self.events.emit(Event::ChatDeleted(id));
        } else {
            self.events.emit(Event::ChatUpserted(id));
        }
    }

    /// Fails with [`Error::TooLarge`] if the backend would refuse `record`.
    pub(super) fn check_size(&self, record: &SealedRecord) -> Result<()> {
        let limit = self.limits.max_record_bytes;
        if record.size() > limit {
            return Err(Error::TooLarge {
                size: record.size(),
                limit,
            });
        }
        Ok(())
    }

    /// The stamp before which message tombstones are dropped, if any.
    fn tombstone_horizon(&self) -> Option<Hlc> {
        let horizon = self.limits.tombstone_horizon?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        let cutoff = now.checked_sub(horizon)?;
        let millis = u64::try_from(cutoff.as_millis()).ok()?;
        Some(Hlc::new(millis, 0, DeviceId(0)))
    }
}
