//! [`Log`]: the change log of one vault as a handle knows it: listing its
//! slots, fetching entries, and the handle's replayed state
//! ([`LogState`]: the index, the snapshot a resyncing reader is served
//! from, when the index was last at the head), rebuilt from the newest
//! snapshot and advanced by replaying new slots.

use crate::entry::decode_entry;
use crate::entry::MAX_ENTRY_BYTES;
use crate::index::Index;
use crate::objects::Objects;
use crate::options::ObjectStoreOptions;
use crate::recent::{Fetched, RecentEntries};
use crate::snapshot::Snapshot;
use chatvault_core::{ChatId, Error, Result};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

/// Entries fetched per round while replaying a long tail.
const REPLAY_CHUNK: usize = 512;

/// What one handle knows about the log, shared by its tasks (behind
/// [`Log::lock`]).
#[derive(Debug)]
pub(crate) struct LogState {
    /// False until the index was rebuilt from the store once.
    loaded: bool,
    index: Index,
    /// The snapshot a resyncing reader is being served from; dropped once no
    /// reader needs it.
    resync: Option<Arc<Snapshot>>,
    /// When the index was last known to be at the head of the log (no slot
    /// after it existed); see [`Log::at_head_recently`]. A tokio instant,
    /// so tests can let hours pass.
    at_head_since: Option<Instant>,
    /// The newest snapshot this handle knows of (0: none).
    snapshot_seq: u64,
    /// The entries it replayed last, for the feed to reuse.
    recent: RecentEntries,
}

impl LogState {
    fn new() -> Self {
        Self {
            loaded: false,
            index: Index::genesis(),
            resync: None,
            at_head_since: None,
            snapshot_seq: 0,
            recent: RecentEntries::default(),
        }
    }

    /// The log replayed up to its head.
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    /// Replays this handle's own entry, just created at slot `seq` (the
    /// head + 1); the validity of each item.
    pub(crate) fn apply_own(&mut self, seq: u64, entry: &crate::entry::LogEntry) -> Vec<bool> {
        self.index.apply(seq, Some(entry))
    }

    /// The snapshot a resyncing reader is served from.
    pub(crate) fn resync(&self) -> Option<Arc<Snapshot>> {
        self.resync.clone()
    }

    /// Keeps (or, `None`, drops) the snapshot resyncing readers are served
    /// from.
    pub(crate) fn set_resync(&mut self, snapshot: Option<Arc<Snapshot>>) {
        self.resync = snapshot;
    }

    /// The entry of slot `seq` if it was replayed lately.
    pub(crate) fn recent(&self, seq: u64) -> Option<&Fetched> {
        self.recent.get(seq)
    }

    /// The index was at the head of the log at `at`.
    pub(crate) fn mark_at_head(&mut self, at: Instant) {
        self.at_head_since = Some(at);
    }

    /// When the index was last known to be at the head of the log.
    pub(crate) fn at_head_since(&self) -> Option<Instant> {
        self.at_head_since
    }

    /// The newest snapshot this handle knows of (0: none).
    pub(crate) fn snapshot_seq(&self) -> u64 {
        self.snapshot_seq
    }

    /// A snapshot at `seq` exists (the known one only moves up).
    pub(crate) fn note_snapshot(&mut self, seq: u64) {
        self.snapshot_seq = self.snapshot_seq.max(seq);
    }

    /// Restarts the index from `snapshot`.
    fn restart_from(&mut self, snapshot: Snapshot) {
        self.index = Index::from_snapshot(&snapshot);
        self.snapshot_seq = self.snapshot_seq.max(snapshot.seq);
        self.resync = Some(Arc::new(snapshot));
    }
}

/// The change log of one vault and what this handle replayed of it.
#[derive(Debug)]
pub(crate) struct Log {
    objects: Arc<Objects>,
    /// See [`ObjectStoreOptions::with_copied`].
    copied: bool,
    concurrency: usize,
    max_claim_delay: Duration,
    state: Mutex<LogState>,
}

/// What a catch-up did.
#[derive(Debug, Default)]
pub(crate) struct CatchUp {
    /// Entries replayed whose slot was in the range the caller asked to keep.
    pub(crate) fetched: BTreeMap<u64, Fetched>,
    /// A hole in the log stopped the replay below slots that exist.
    pub(crate) stalled: bool,
}

impl Log {
    /// The log under `objects`, nothing replayed yet.
    pub(crate) fn new(objects: Arc<Objects>, options: &ObjectStoreOptions) -> Self {
        Self {
            objects,
            copied: options.copied,
            concurrency: options.concurrency,
            max_claim_delay: options.max_claim_delay,
            state: Mutex::new(LogState::new()),
        }
    }

    /// This handle's state, locked.
    pub(crate) async fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().await
    }

    /// The store the log is read from (counted).
    pub(crate) fn store(&self) -> &Arc<dyn object_store::ObjectStore> {
        self.objects.store()
    }

    /// The directory of the log's slots.
    pub(crate) fn dir(&self) -> &Path {
        self.objects.layout().log_dir()
    }

    /// The path of slot `seq`.
    pub(crate) fn slot(&self, seq: u64) -> Path {
        self.objects.layout().log_entry(seq)
    }

    /// Log slots after `after`, ascending.
    pub(crate) async fn list_log(&self, after: u64) -> Result<Vec<u64>> {
        let listed = self.objects.list_numbered(self.dir(), after).await?;
        Ok(listed.into_iter().map(|(n, _)| n).collect())
    }

    /// Reads slot `seq`. An entry nobody can decode is `Ok(None)` (logged),
    /// so all readers skip it alike; a newer format is an error, since
    /// skipping it would make this reader disagree with newer ones.
    pub(crate) async fn fetch_entry(&self, seq: u64) -> Result<Fetched> {
        match self.fetch_entry_if_present(seq).await? {
            Some(fetched) => Ok(fetched),
            None => Err(Error::Unavailable {
                message: format!(
                    "log entry {} vanished while being read (compaction running?); retry",
                    self.slot(seq)
                ),
                source: None,
            }),
        }
    }

    /// [`Log::fetch_entry`], with `None` for a slot that is
    /// gone (deleted by compaction since it was listed).
    pub(crate) async fn fetch_entry_if_present(&self, seq: u64) -> Result<Option<Fetched>> {
        let path = self.slot(seq);
        let bytes = match self.objects.read_capped(&path, MAX_ENTRY_BYTES).await {
            Ok(bytes) => Ok(bytes),
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => Err(e),
        };
        match bytes.and_then(|bytes| decode_entry(&bytes, path.as_ref())) {
            Ok(entry) => Ok(Some(Some(entry))),
            Err(e @ Error::Corrupt { .. }) => {
                tracing::warn!(error = %e, "skipping an undecodable log entry; it holds no valid record for any reader");
                Ok(Some(None))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads several slots concurrently, in order.
    pub(crate) async fn fetch_entries(&self, seqs: &[u64]) -> Result<Vec<(u64, Fetched)>> {
        futures::stream::iter(seqs.iter().copied())
            .map(|seq| async move { self.fetch_entry(seq).await.map(|entry| (seq, entry)) })
            .buffered(self.concurrency)
            .try_collect()
            .await
    }

    /// [`Log::fetch_entries`], `None` if any slot is gone.
    pub(crate) async fn fetch_entries_if_present(
        &self,
        seqs: &[u64],
    ) -> Result<Option<Vec<(u64, Fetched)>>> {
        let fetched: Vec<Option<Fetched>> = futures::stream::iter(seqs.iter().copied())
            .map(|seq| async move { self.fetch_entry_if_present(seq).await })
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        Ok(seqs
            .iter()
            .copied()
            .zip(fetched)
            .map(|(seq, entry)| entry.map(|entry| (seq, entry)))
            .collect())
    }

    /// The newest snapshot that decodes, if any (see [`Snapshot::latest`]).
    pub(crate) async fn latest_snapshot(&self) -> Result<Option<Snapshot>> {
        Snapshot::latest(&self.objects).await
    }

    /// Rebuilds the index on a handle's first use: the latest snapshot, or
    /// the start of the log if there is none.
    pub(crate) async fn ensure_loaded(&self, state: &mut LogState) -> Result<()> {
        if state.loaded {
            return Ok(());
        }
        match self.latest_snapshot().await? {
            Some(snapshot) => state.restart_from(snapshot),
            None => state.index = Index::genesis(),
        }
        state.loaded = true;
        Ok(())
    }

    /// Replays the slots in `listed` (ascending, every slot after some
    /// offset at or below the head) that follow the index head, keeping the
    /// entries whose slot is in `keep`.
    ///
    /// A hole right after the head is either compaction (a snapshot covers
    /// it: the index restarts from that snapshot) or slots still on their
    /// way (a file-sync tool, a listing that raced a writer): the replay stops
    /// there and the next call retries.
    pub(crate) async fn catch_up(
        &self,
        state: &mut LogState,
        listed: &[u64],
        keep: Option<RangeInclusive<u64>>,
    ) -> Result<CatchUp> {
        let mut outcome = CatchUp::default();
        let after_head = |index: &Index| {
            let head = index.head();
            listed.partition_point(|&seq| seq <= head)
        };
        let mut start = after_head(&state.index);
        if let Some(&first) = listed.get(start) {
            if first > state.index.head() + 1 {
                match self.latest_snapshot().await? {
                    Some(snapshot)
                        if snapshot.seq + 1 >= first && snapshot.seq > state.index.head() =>
                    {
                        state.restart_from(snapshot);
                        state.recent.clear();
                        start = after_head(&state.index);
                    }
                    _ => {
                        tracing::warn!(
                            head = state.index.head(),
                            next = first,
                            "log slots are missing after the head; waiting for them to appear"
                        );
                        outcome.stalled = true;
                        return Ok(outcome);
                    }
                }
            }
        }
        let pending = &listed[start..];
        let contiguous = pending
            .iter()
            .enumerate()
            .take_while(|(i, &seq)| seq == state.index.head() + 1 + *i as u64)
            .count();
        if contiguous < pending.len() {
            tracing::warn!(
                at = pending.get(contiguous).copied(),
                "a log slot is missing before later ones; replaying up to the hole"
            );
            outcome.stalled = true;
        }
        'replay: for chunk in pending[..contiguous].chunks(REPLAY_CHUNK) {
            for (seq, entry) in self.fetch_entries(chunk).await? {
                if entry.is_none() && self.copied {
                    tracing::info!(
                        slot = seq,
                        "a log entry does not decode yet (still being copied?); waiting for it"
                    );
                    outcome.stalled = true;
                    break 'replay;
                }
                state.index.apply(seq, entry.as_ref());
                state.recent.remember(seq, &entry);
                if keep.as_ref().is_some_and(|k| k.contains(&seq)) {
                    outcome.fetched.insert(seq, entry);
                }
            }
        }
        Ok(outcome)
    }

    /// Lists after the head and replays what is new.
    pub(crate) async fn refresh(
        &self,
        state: &mut LogState,
        keep: Option<RangeInclusive<u64>>,
    ) -> Result<CatchUp> {
        self.ensure_loaded(state).await?;
        let listed_at = Instant::now();
        let listed = self.list_log(state.index.head()).await?;
        let caught = self.catch_up(state, &listed, keep).await?;
        if !caught.stalled {
            state.at_head_since = Some(listed_at);
        }
        Ok(caught)
    }

    /// True if the index was at the head of the log so recently that a
    /// slot created since cannot have been compacted away yet: the index is
    /// then at the head if and only if slot `head + 1` does not exist.
    ///
    /// Slots appear in order, so if slot `head + 1` does not exist, no later
    /// one does either, unless compaction deleted it. Compaction deletes only
    /// slots older than its horizon (which exceeds
    /// [`ObjectStoreOptions::with_max_claim_delay`](crate::ObjectStoreOptions::with_max_claim_delay))
    /// and never the newest, so within that delay of the last time the index
    /// was at the head, a missing `head + 1` was never created. After longer,
    /// `head + 1` may have been created and compacted: a LIST (which shows
    /// the newest slot compaction keeps, and so the gap) must come first, or
    /// a read would miss commits and a put would re-create a deleted slot.
    pub(crate) fn at_head_recently(&self, state: &LogState) -> bool {
        state
            .at_head_since
            .is_some_and(|since| since.elapsed() < self.max_claim_delay)
    }

    /// Brings the index up to the head of the log before a read: one HEAD of
    /// the next slot when [`Log::at_head_recently`] makes that
    /// proof enough (cheaper than a LIST everywhere, and O(1) on servers
    /// whose LIST walks the bucket), else a LIST and replay as
    /// [`Log::refresh`] does. A hole in the log (a file-sync
    /// tool delivering slots out of order) stops both at the same place.
    pub(crate) async fn refresh_for_read(&self, state: &mut LogState) -> Result<()> {
        self.ensure_loaded(state).await?;
        if self.at_head_recently(state) {
            let checked_at = Instant::now();
            let next = self.slot(state.index.head() + 1);
            match self.objects.store().head(&next).await {
                Err(object_store::Error::NotFound { .. }) => {
                    state.at_head_since = Some(checked_at);
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(crate::error::map_store_error(
                        e,
                        &format!("checking for {next}"),
                    ))
                }
            }
        }
        self.refresh(state, None).await.map(|_| ())
    }

    /// The first bytes of slot `seq`, enough to recognise a marker.
    pub(crate) async fn read_marker(&self, seq: u64) -> Result<bytes::Bytes> {
        self.objects.read_capped(&self.slot(seq), 4096).await
    }

    /// The current version of each of `chats` (`None`: no record), after
    /// bringing the index up to the head of the log as a read does.
    pub(crate) async fn current_versions(&self, chats: &[ChatId]) -> Result<Vec<Option<u64>>> {
        let mut state = self.lock().await;
        self.refresh_for_read(&mut state).await?;
        Ok(chats.iter().map(|chat| state.index.version(chat)).collect())
    }

    /// The chats whose current record is not a tombstone.
    pub(crate) async fn live_chats(&self) -> Result<Vec<ChatId>> {
        let mut state = self.lock().await;
        self.refresh_for_read(&mut state).await?;
        Ok(state
            .index
            .chats()
            .filter(|(_, current)| !current.deleted)
            .map(|(chat, _)| *chat)
            .collect())
    }

    /// The head of the log after listing what is new.
    pub(crate) async fn head_after_refresh(&self) -> Result<u64> {
        let mut state = self.lock().await;
        self.refresh(&mut state, None).await?;
        Ok(state.index.head())
    }

    /// A compaction wrote (or found) the snapshot of slot `seq`: resyncing
    /// readers are served from it from now on.
    pub(crate) async fn compacted(&self, seq: u64) {
        let mut state = self.lock().await;
        state.resync = None;
        state.note_snapshot(seq);
    }
}
