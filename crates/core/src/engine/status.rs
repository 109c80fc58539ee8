//! What the engine tells the application: sync status, change events and
//! per-sync reports.

use crate::ids::ChatId;
use crate::Error;
use tokio::sync::{broadcast, watch};

/// Where synchronisation stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncStatus {
    /// The backend is unreachable (or no sync has run yet); local changes
    /// are kept in the outbox and pushed once it answers again.
    Offline {
        /// Why, in words.
        reason: String,
    },
    /// A sync round is running.
    Syncing,
    /// The last round synced everything it could, but some records did not
    /// open (sealed under a key this device does not hold yet, written by a
    /// newer chatvault, damaged). They are kept and retried with backoff,
    /// after a keyring re-read, after an upgrade and at every manual sync;
    /// [`Engine::skipped`](super::Engine::skipped) lists them.
    Incomplete {
        /// How many chats' records are waiting to open.
        skipped: usize,
    },
    /// The last round synced everything the backend could hand out, but it
    /// has seen more that it cannot read yet (files a file-sync service is
    /// still copying into this device's copy of a folder). Nothing is
    /// skipped: the next rounds pick it up once it is there.
    Waiting {
        /// What the backend is waiting for, in words.
        reason: String,
    },
    /// The last round pulled every change and pushed every local change.
    Synced,
    /// The last round failed in a way retrying alone will not fix (refused
    /// credentials, a record the server rejects). Local changes stay queued.
    Error {
        /// Why, in words.
        reason: String,
    },
}

/// A change applications react to (refresh the sidebar, the open chat, a
/// status line). Delivered on a broadcast channel: a receiver that falls more
/// than its capacity behind gets `RecvError::Lagged` and should re-read
/// [`Engine::sidebar`](super::Engine::sidebar).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A chat was created or changed, locally or by a pull.
    ChatUpserted(ChatId),
    /// A chat was deleted, locally or by a pull.
    ChatDeleted(ChatId),
    /// The sync status changed.
    SyncStatus(SyncStatus),
    /// The server refused to take these chats' local changes for a reason
    /// retrying alone will not fix (rejected, unauthorized, unreadable
    /// server state to merge with). They stay queued with backoff and are
    /// retried at later rounds; other chats keep syncing.
    PushRefused {
        /// The chats whose push was refused.
        chats: Vec<ChatId>,
        /// The error, in words.
        reason: String,
    },
    /// A pulled record could not be opened (corrupt, tampered with, or from
    /// a newer chatvault) and was skipped; the rest of the vault still syncs.
    RecordSkipped {
        /// The chat whose record was skipped.
        chat: ChatId,
        /// The error, in words.
        reason: String,
    },
    /// Where re-sealing after a key rotation stands, after each batch of
    /// [`Engine::reseal_stale`](super::Engine::reseal_stale): `done` of the
    /// `total` records in this device's replica (live chats and tombstones)
    /// are sealed under data key `key_id`. Counted from the replica each
    /// time, so the figures carry over a restart; `done == total` when the
    /// re-seal is complete (pushing may still be under way).
    ResealProgress {
        /// The data key records are re-sealed under (the current one).
        key_id: u32,
        /// Records sealed under it.
        done: usize,
        /// Records in the replica.
        total: usize,
    },
}

/// A pulled record that could not be opened and was skipped.
#[derive(Debug)]
pub struct SkippedRecord {
    /// The chat.
    pub chat: ChatId,
    /// The version that failed to open.
    pub version: u64,
    /// Why ([`Error::Tampered`], [`Error::Corrupt`],
    /// [`Error::UnsupportedFormat`], [`Error::UnknownKeyId`]).
    pub error: Error,
}

/// What one sync round did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Chats whose newer server state was applied locally.
    pub pulled: usize,
    /// Local changes the server confirmed.
    pub pushed: usize,
    /// Pushes that lost a race and were merged and re-sealed.
    pub conflicts_resolved: usize,
    /// Pulled records that failed to open.
    pub skipped: Vec<SkippedRecord>,
    /// Chats still waiting in the outbox after the round.
    pub pending: u64,
    /// Requests made to the backend (change-feed pages, gets, put batches).
    pub requests: u64,
    /// Sealed bytes fetched (records pulled, and server records fetched to
    /// resolve conflicts).
    pub bytes_pulled: u64,
    /// Sealed bytes sent in puts.
    pub bytes_pushed: u64,
    /// What the backend could not hand out yet (see
    /// [`ChangePage::waiting`](crate::ChangePage::waiting)), if anything.
    pub waiting: Option<String>,
}

/// Fans events out to subscribers and keeps the current status.
pub(crate) struct Notifier {
    events: broadcast::Sender<Event>,
    status: watch::Sender<SyncStatus>,
}

/// How many events a slow subscriber may fall behind before it lags.
const EVENT_CAPACITY: usize = 4096;

impl Notifier {
    pub(crate) fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (status, _) = watch::channel(SyncStatus::Offline {
            reason: "not synced since the vault was opened".to_string(),
        });
        Self { events, status }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub(crate) fn watch_status(&self) -> watch::Receiver<SyncStatus> {
        self.status.subscribe()
    }

    pub(crate) fn status(&self) -> SyncStatus {
        self.status.borrow().clone()
    }

    pub(crate) fn emit(&self, event: Event) {
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.events.send(event);
    }

    pub(crate) fn set_status(&self, status: SyncStatus) {
        let changed = self.status.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status.clone();
                true
            }
        });
        if changed {
            self.emit(Event::SyncStatus(status));
        }
    }

    /// The status after a successful round, with `skipped` records still
    /// waiting to open and what the backend is `waiting` for.
    pub(crate) fn finish_round_with_skipped(&self, skipped: usize, waiting: Option<String>) {
        if skipped > 0 {
            self.set_status(SyncStatus::Incomplete { skipped });
        } else if let Some(reason) = waiting {
            self.set_status(SyncStatus::Waiting { reason });
        } else {
            self.finish_round(None);
        }
    }

    /// The status after a round ended with `error` (or none).
    pub(crate) fn finish_round(&self, error: Option<&Error>) {
        let status = match error {
            None => SyncStatus::Synced,
            Some(e) if e.is_retriable() => SyncStatus::Offline {
                reason: e.to_string(),
            },
            Some(e) => SyncStatus::Error {
                reason: e.to_string(),
            },
        };
        self.set_status(status);
    }
}
