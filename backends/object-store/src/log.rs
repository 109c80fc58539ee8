//! Reading the log: listing slots, fetching entries, rebuilding and advancing
//! a handle's index.

use crate::entry::{decode_entry, LogEntry, MAX_ENTRY_BYTES};
use crate::error::map_store_error;
use crate::index::Index;
use crate::layout::Layout;
use crate::snapshot::{read_snapshot_stream, Snapshot, MAX_SNAPSHOT_BYTES};
use crate::{ObjectStoreStorage, State};
use chatvault_core::{Error, Result};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectMeta;
use std::collections::{BTreeMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::Arc;
use tokio::time::Instant;

/// Entries fetched per round while replaying a long tail.
const REPLAY_CHUNK: usize = 512;

/// A log entry as read: `None` if it could not be decoded (see
/// [`ObjectStoreStorage::fetch_entry`]).
pub(crate) type Fetched = Option<LogEntry>;

/// Entries this handle replayed last, so the feed does not fetch them
/// again: a new device replays the log after the snapshot into its index,
/// then reports the same entries. Bounded by count and by inline bytes.
#[derive(Debug, Default)]
pub(crate) struct RecentEntries {
    entries: BTreeMap<u64, Fetched>,
    bytes: usize,
}

/// Most entries [`RecentEntries`] keeps.
const RECENT_ENTRIES: usize = 1024;
/// Most inline-summary bytes [`RecentEntries`] keeps.
const RECENT_BYTES: usize = 8 << 20;

impl RecentEntries {
    fn weight(entry: &Fetched) -> usize {
        entry.as_ref().map_or(0, |e| {
            e.items
                .iter()
                .map(|i| 128 + i.summary.as_ref().map_or(0, |s| s.len()))
                .sum()
        })
    }

    pub(crate) fn remember(&mut self, seq: u64, entry: &Fetched) {
        self.bytes += Self::weight(entry);
        if let Some(old) = self.entries.insert(seq, entry.clone()) {
            self.bytes = self.bytes.saturating_sub(Self::weight(&old));
        }
        while self.entries.len() > RECENT_ENTRIES || self.bytes > RECENT_BYTES {
            let Some((_, old)) = self.entries.pop_first() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(Self::weight(&old));
        }
    }

    pub(crate) fn get(&self, seq: u64) -> Option<&Fetched> {
        self.entries.get(&seq)
    }

    /// Forgets everything (the index restarted from a snapshot).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// The error for a listing that repeats itself.
pub(crate) fn no_progress(dir: &Path, location: &Path) -> Error {
    Error::Unavailable {
        message: format!(
            "the store's listing of {dir} returned {location} twice: its paging makes no \
             progress; retry later"
        ),
        source: None,
    }
}

/// What a catch-up did.
#[derive(Debug, Default)]
pub(crate) struct CatchUp {
    /// Entries replayed whose slot was in the range the caller asked to keep.
    pub(crate) fetched: BTreeMap<u64, Fetched>,
    /// A hole in the log stopped the replay below slots that exist.
    pub(crate) stalled: bool,
}

impl ObjectStoreStorage {
    /// Numbered objects directly inside `dir` after `after`, ascending.
    /// Foreign objects are reported and skipped.
    pub(crate) async fn list_numbered(
        &self,
        dir: &Path,
        after: u64,
    ) -> Result<Vec<(u64, ObjectMeta)>> {
        let offset = Layout::numbered_path(dir, after);
        let mut stream = self.store.list_with_offset(Some(dir), &offset);
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        while let Some(item) = stream.next().await {
            match item {
                // A listing that repeats a name is a paging loop making no
                // progress (a server handing back the same continuation):
                // stop rather than list forever.
                Ok(meta) if !seen.insert(meta.location.clone()) => {
                    return Err(no_progress(dir, &meta.location));
                }
                Ok(meta) => match Layout::numbered_child(dir, &meta.location) {
                    Some(n) if n > after => found.push((n, meta)),
                    Some(_) => {}
                    None => self.foreign.report(&meta.location),
                },
                // A local file whose name is not a valid object path (control
                // characters, not UTF-8): foreign by definition.
                Err(object_store::Error::InvalidPath { source }) => {
                    tracing::warn!(dir = %dir, error = %source, "ignoring an object with an invalid name");
                }
                Err(e) => return Err(map_store_error(e, &format!("listing {dir}"))),
            }
        }
        found.sort_by_key(|(n, _)| *n);
        found.dedup_by_key(|(n, _)| *n);
        Ok(found)
    }

    /// Log slots after `after`, ascending.
    pub(crate) async fn list_log(&self, after: u64) -> Result<Vec<u64>> {
        let listed = self.list_numbered(self.layout.log_dir(), after).await?;
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
                    self.layout.log_entry(seq)
                ),
                source: None,
            }),
        }
    }

    /// [`ObjectStoreStorage::fetch_entry`], with `None` for a slot that is
    /// gone (deleted by compaction since it was listed).
    pub(crate) async fn fetch_entry_if_present(&self, seq: u64) -> Result<Option<Fetched>> {
        let path = self.layout.log_entry(seq);
        let bytes = match self.read_capped(&path, MAX_ENTRY_BYTES).await {
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
            .buffered(self.options.concurrency)
            .try_collect()
            .await
    }

    /// [`ObjectStoreStorage::fetch_entries`], `None` if any slot is gone.
    pub(crate) async fn fetch_entries_if_present(
        &self,
        seqs: &[u64],
    ) -> Result<Option<Vec<(u64, Fetched)>>> {
        let fetched: Vec<Option<Fetched>> = futures::stream::iter(seqs.iter().copied())
            .map(|seq| async move { self.fetch_entry_if_present(seq).await })
            .buffered(self.options.concurrency)
            .try_collect()
            .await?;
        Ok(seqs
            .iter()
            .copied()
            .zip(fetched)
            .map(|(seq, entry)| entry.map(|entry| (seq, entry)))
            .collect())
    }

    /// The newest snapshot that decodes, if any. Damaged snapshots are
    /// skipped for older ones.
    pub(crate) async fn latest_snapshot(&self) -> Result<Option<Snapshot>> {
        let listed = self.list_numbered(self.layout.snap_dir(), 0).await?;
        for (seq, meta) in listed.into_iter().rev() {
            let decoded = match self
                .open_capped(&meta.location, None, MAX_SNAPSHOT_BYTES)
                .await
            {
                Ok(stream) => read_snapshot_stream(stream, meta.location.as_ref()).await,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => Err(e),
            };
            match decoded {
                Ok(snapshot) if snapshot.seq == seq => return Ok(Some(snapshot)),
                Ok(_) => {
                    tracing::warn!(snapshot = %meta.location, "skipping a snapshot whose content names another slot")
                }
                Err(e @ Error::Corrupt { .. }) => {
                    tracing::warn!(error = %e, "skipping a damaged snapshot")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Rebuilds the index on a handle's first use: the latest snapshot, or
    /// the start of the log if there is none.
    pub(crate) async fn ensure_loaded(&self, state: &mut State) -> Result<()> {
        if state.loaded {
            return Ok(());
        }
        match self.latest_snapshot().await? {
            Some(snapshot) => {
                state.index = Index::from_snapshot(&snapshot);
                state.snapshot_seq = state.snapshot_seq.max(snapshot.seq);
                state.resync = Some(Arc::new(snapshot));
            }
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
        state: &mut State,
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
                        state.index = Index::from_snapshot(&snapshot);
                        state.recent.clear();
                        state.snapshot_seq = state.snapshot_seq.max(snapshot.seq);
                        state.resync = Some(Arc::new(snapshot));
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
                if entry.is_none() && self.options.copied {
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
        state: &mut State,
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
    pub(crate) fn at_head_recently(&self, state: &State) -> bool {
        state
            .at_head_since
            .is_some_and(|since| since.elapsed() < self.options.max_claim_delay)
    }

    /// Brings the index up to the head of the log before a read: one HEAD of
    /// the next slot when [`ObjectStoreStorage::at_head_recently`] makes that
    /// proof enough (cheaper than a LIST everywhere, and O(1) on servers
    /// whose LIST walks the bucket), else a LIST and replay as
    /// [`ObjectStoreStorage::refresh`] does. A hole in the log (a file-sync
    /// tool delivering slots out of order) stops both at the same place.
    pub(crate) async fn refresh_for_read(&self, state: &mut State) -> Result<()> {
        self.ensure_loaded(state).await?;
        if self.at_head_recently(state) {
            let checked_at = Instant::now();
            let next = self.layout.log_entry(state.index.head() + 1);
            match self.store.head(&next).await {
                Err(object_store::Error::NotFound { .. }) => {
                    state.at_head_since = Some(checked_at);
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => return Err(map_store_error(e, &format!("checking for {next}"))),
            }
        }
        self.refresh(state, None).await.map(|_| ())
    }
}
