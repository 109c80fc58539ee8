//! [`Feed`]: the change feed, `changes(cursor, limit)`.
//!
//! The cursor names a position in the log: every item before it was
//! reported. A call lists the log after `min(cursor, head)` (one request; at
//! the head that is the whole idle poll), replays anything new into the
//! index, then reports the valid items from the cursor on. A cursor that
//! points into a compacted part of the log is served from the snapshot
//! instead (see the crate docs).

use crate::entry::Position;
use crate::log::{Log, LogState};
use crate::recent::Fetched;
use crate::snapshot::Snapshot;
use chatvault_core::{Change, ChangePage, Cursor, Error, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::time::Instant;

/// The next item a reader has not seen. Encoded as `"<last complete slot>"`,
/// or `"<last complete slot>.<items of the next slot already seen>"` when a
/// page ended inside a multi-record entry.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct FeedPosition(Position);

impl FeedPosition {
    const START: Self = Self(Position { seq: 1, idx: 0 });

    fn parse(cursor: &Cursor) -> Result<Self> {
        if cursor.is_start() {
            return Ok(Self::START);
        }
        // A cursor of the per-device layout (`<writer>=<cursor>;…`): this
        // replica last read a per-device folder, and now reads a shared log
        // (another location, or a folder opened with the other layout). The
        // feed starts over; versions tell the reader what it holds.
        if cursor.0.contains('=') {
            tracing::info!(cursor = %cursor.0, "a per-device cursor on a shared log; reading it from the start");
            return Ok(Self::START);
        }
        let bad = || {
            Error::invalid(format!(
                "{:?} is not a cursor of the object-store backend",
                cursor.0
            ))
        };
        let (done, idx) = match cursor.0.split_once('.') {
            Some((done, idx)) => (done, idx.parse::<u32>().map_err(|_| bad())?),
            None => (cursor.0.as_str(), 0),
        };
        let done = done.parse::<u64>().map_err(|_| bad())?;
        let seq = done.checked_add(1).ok_or_else(bad)?;
        Ok(Self(Position { seq, idx }))
    }

    fn to_cursor(self) -> Cursor {
        let done = self.0.seq - 1;
        match self.0.idx {
            0 => Cursor(done.to_string()),
            idx => Cursor(format!("{done}.{idx}")),
        }
    }

    /// The position right after the item at `at`.
    fn after(at: Position) -> Self {
        Self(Position {
            seq: at.seq,
            idx: at.idx.saturating_add(1),
        })
    }

    fn at_slot(seq: u64) -> Self {
        Self(Position { seq, idx: 0 })
    }
}

/// True if `listed` (ascending, no repeats) holds every slot of
/// `from..=to`.
fn slots_present(listed: &[u64], from: u64, to: u64) -> bool {
    let start = listed.partition_point(|&seq| seq < from);
    let end = listed.partition_point(|&seq| seq <= to);
    (end - start) as u64 == to - from + 1
}

/// Reports the valid items of a [`Log`] after a cursor.
#[derive(Debug)]
pub(crate) struct Feed {
    log: Arc<Log>,
    /// Entries fetched at once.
    concurrency: usize,
}

impl Feed {
    /// The feed of `log`, fetching up to `concurrency` entries at once.
    pub(crate) fn new(log: Arc<Log>, concurrency: usize) -> Self {
        Self { log, concurrency }
    }

    /// `changes(since, limit)`.
    pub(crate) async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        let limit = limit.max(1);
        let mut pos = FeedPosition::parse(since)?;
        let mut state = self.log.lock().await;
        self.log.ensure_loaded(&mut state).await?;

        let floor = (pos.0.seq - 1).min(state.index().head());
        let listed_at = Instant::now();
        let mut listed = self.log.list_log(floor).await?;
        let window = pos.0.seq..=pos.0.seq.saturating_add(limit as u64);
        let caught = self.log.catch_up(&mut state, &listed, Some(window)).await?;
        if !caught.stalled {
            state.mark_at_head(listed_at);
        }
        let head = state.index().head();

        let beyond_head = pos.0.seq > head + 1 || (pos.0.seq == head + 1 && pos.0.idx > 0);
        if beyond_head && !caught.stalled {
            tracing::warn!(
                cursor = %since.0,
                head,
                "cursor is past the end of the log (was the vault recreated?); restarting the feed"
            );
            pos = FeedPosition::START;
            listed = self.log.list_log(0).await?;
        }

        let waiting = caught.stalled.then(|| {
            format!(
                "{} has entries after slot {head} whose predecessor is missing or not whole yet",
                self.log.dir()
            )
        });
        // The log is read from `pos` only if every slot from there to the
        // head is still there. Compaction deletes a prefix of the log, but
        // the prefix may come back in part: a file-sync service re-creates
        // entries it had not seen deleted (`docs/design.md` §5.4), and a
        // compaction that stopped halfway deletes in no particular order. A
        // hole below the head is served from the snapshot that covers it
        // (found gone on every read otherwise, the feed would never pass
        // it). Where the slot at `pos` itself is gone, or validity is not
        // known there, only a snapshot can serve the reader. Where a slot
        // further on is gone and no snapshot covering it has arrived yet (a
        // peer's copy that got the deletions first), the log is read: the
        // read fails at the hole, to be retried, until the snapshot comes.
        let gone = pos.0.seq <= head && listed.binary_search(&pos.0.seq).is_err();
        let needs_snapshot = pos.0.seq < state.index().validity_from() || gone;
        let hole = pos.0.seq <= head && !slots_present(&listed, pos.0.seq, head);
        let snapshot = if needs_snapshot || hole {
            match self.covering_snapshot(&mut state, pos, &listed).await? {
                None if needs_snapshot => {
                    return Err(Error::corrupt(
                        format!("change log of {}", self.log.store()),
                        format!(
                            "log slot {} is gone and no snapshot covers it; restart the feed from \
                             Cursor::start()",
                            pos.0.seq
                        ),
                    ))
                }
                found => found,
            }
        } else {
            None
        };
        let mut page = match snapshot {
            Some(snapshot) => Self::resync_page(&mut state, &snapshot, pos, limit),
            None => {
                state.set_resync(None);
                self.log_page(&state, pos, limit, caught.fetched).await?
            }
        };
        page.waiting = waiting;
        Ok(page)
    }

    /// Reports valid items from `pos` on, reading entries up to the head.
    async fn log_page(
        &self,
        state: &LogState,
        pos: FeedPosition,
        limit: usize,
        mut fetched: BTreeMap<u64, Fetched>,
    ) -> Result<ChangePage> {
        let head = state.index().head();
        if pos.0.seq > head {
            return Ok(ChangePage {
                changes: Vec::new(),
                cursor: pos.to_cursor(),
                has_more: false,
                waiting: None,
            });
        }
        // Every entry holds at least one item, so `limit` entries can fill the
        // page. They are read in rounds sized to fill what is left of the
        // page at the mean entry size seen so far (one entry to begin with:
        // the entry of one batch put may fill a page alone), so a page of
        // large entries reads little more than the entries it reports.
        let last = head.min(pos.0.seq.saturating_add(limit as u64 - 1));
        let concurrency = self.concurrency as u64;
        let mut changes = Vec::new();
        let mut next = FeedPosition::at_slot(last + 1);
        let (mut entries_read, mut items_read) = (0u64, 0u64);
        let mut seq = pos.0.seq;
        'rounds: while seq <= last {
            let needed = (limit - changes.len()) as u64;
            let wanted = match (entries_read, items_read) {
                (0, _) => 1,
                (_, 0) => concurrency,
                (entries, items) => needed.saturating_mul(entries).div_ceil(items),
            };
            let round = seq..=seq + (wanted.clamp(1, concurrency).min(last - seq + 1) - 1);
            seq = round.end() + 1;
            for seq in round.clone() {
                if let (false, Some(entry)) = (fetched.contains_key(&seq), state.recent(seq)) {
                    fetched.insert(seq, entry.clone());
                }
            }
            let missing: Vec<u64> = round
                .clone()
                .filter(|seq| !fetched.contains_key(seq))
                .collect();
            fetched.extend(self.log.fetch_entries(&missing).await?);
            for seq in round {
                entries_read += 1;
                let Some(entry) = fetched.remove(&seq).flatten() else {
                    continue;
                };
                items_read += entry.items.len() as u64;
                for (idx, item) in entry.items.iter().enumerate() {
                    let at = Position::of(seq, idx);
                    if at < pos.0 || !state.index().is_valid(at) {
                        continue;
                    }
                    changes.push(Change {
                        chat: item.chat,
                        version: item.version,
                        deleted: item.deleted,
                        summary: item.summary.clone(),
                        writer: None,
                    });
                    if changes.len() == limit {
                        next = if idx + 1 < entry.items.len() {
                            FeedPosition::after(at)
                        } else {
                            FeedPosition::at_slot(seq + 1)
                        };
                        break 'rounds;
                    }
                }
            }
        }
        Ok(ChangePage {
            changes,
            cursor: next.to_cursor(),
            has_more: next.0.seq <= head,
            waiting: None,
        })
    }

    /// The snapshot a reader at `pos` can be served from: it reaches the
    /// position, and the log goes on right after it (compaction only
    /// deletes slots it covers). `None` if there is none (yet).
    async fn covering_snapshot(
        &self,
        state: &mut LogState,
        pos: FeedPosition,
        listed: &[u64],
    ) -> Result<Option<Arc<Snapshot>>> {
        let head = state.index().head();
        let covers = |s: &Snapshot| {
            s.seq + 1 >= pos.0.seq && (s.seq >= head || listed.binary_search(&(s.seq + 1)).is_ok())
        };
        if let Some(s) = state.resync().filter(|s| covers(s)) {
            return Ok(Some(s));
        }
        match self.log.latest_snapshot().await? {
            Some(s) if covers(&s) => {
                let s = Arc::new(s);
                state.set_resync(Some(Arc::clone(&s)));
                Ok(Some(s))
            }
            _ => Ok(None),
        }
    }

    /// Serves a reader whose position is in the compacted part of the log
    /// (or before a hole in it) from `snapshot`: every chat whose latest
    /// record (as of the snapshot) is at or after the position, in log
    /// order; then the log after the snapshot.
    fn resync_page(
        state: &mut LogState,
        snapshot: &Snapshot,
        pos: FeedPosition,
        limit: usize,
    ) -> ChangePage {
        let head = state.index().head();
        tracing::debug!(snapshot = snapshot.seq, cursor = ?pos, "serving a reader from the compaction snapshot");
        let start = snapshot.chats.partition_point(|c| c.at < pos.0);
        let remaining = &snapshot.chats[start..];
        let page = &remaining[..remaining.len().min(limit)];
        let changes = page
            .iter()
            .map(|c| Change {
                chat: c.item.chat,
                version: c.item.version,
                deleted: c.item.deleted,
                summary: c.item.summary.clone(),
                writer: None,
            })
            .collect();
        let next = match page.last() {
            Some(last) if page.len() < remaining.len() => FeedPosition::after(last.at),
            _ => FeedPosition::at_slot(snapshot.seq + 1),
        };
        let has_more = next.0.seq <= snapshot.seq || snapshot.seq < head;
        if next.0.seq > snapshot.seq {
            state.set_resync(None);
        }
        ChangePage {
            changes,
            cursor: next.to_cursor(),
            has_more,
            waiting: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        for pos in [
            FeedPosition::START,
            FeedPosition::at_slot(42),
            FeedPosition(Position { seq: 7, idx: 3 }),
        ] {
            assert_eq!(FeedPosition::parse(&pos.to_cursor()).expect("parses"), pos);
        }
        assert_eq!(FeedPosition::START.to_cursor().0, "0");
    }

    #[test]
    fn foreign_cursors_are_invalid_input() {
        for text in ["abc", "1.x", "-1", "18446744073709551615", "1.2.3"] {
            assert!(
                matches!(
                    FeedPosition::parse(&Cursor(text.into())),
                    Err(Error::InvalidInput { .. })
                ),
                "{text}"
            );
        }
    }
}
