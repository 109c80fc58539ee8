//! [`RecentEntries`]: the log entries a handle replayed last, so the feed
//! does not fetch them again: a new device replays the log after the
//! snapshot into its index, then reports the same entries. Bounded by count
//! and by inline bytes.

use crate::entry::LogEntry;
use std::collections::BTreeMap;

/// A log entry as read: `None` if it could not be decoded (it holds no
/// valid record for any reader).
pub(crate) type Fetched = Option<LogEntry>;

/// Most entries [`RecentEntries`] keeps.
const RECENT_ENTRIES: usize = 1024;
/// Most inline-summary bytes [`RecentEntries`] keeps.
const RECENT_BYTES: usize = 8 << 20;

/// Entries replayed last, by slot.
#[derive(Debug, Default)]
pub(crate) struct RecentEntries {
    entries: BTreeMap<u64, Fetched>,
    bytes: usize,
}

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
