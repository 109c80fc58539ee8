//! The replayed state of the log: each chat's current record, and which log
//! items were valid.
//!
//! Validity is a pure function of the log prefix: an item is valid iff its
//! precondition admits it against the chat's state after every earlier valid
//! item (earlier entries, and earlier items of the same entry). Every reader
//! replays the same prefix, so all readers agree on which items count, and a
//! writer learns whether it won by replaying up to its own slot.
//!
//! Memory: about 100 bytes per chat plus its inline sealed summary (a
//! 100k-chat vault with 200-byte summaries: ~30 MB), plus one position per
//! invalid item (normally none: writers check before claiming). Keeping the
//! summaries is what lets `get(ids, Part::Summary)` answer a sidebar from one
//! LIST instead of one ranged GET per chat.

use crate::entry::{EntryItem, LogEntry, Position, Precondition};
use crate::layout::WriteId;
use crate::snapshot::Snapshot;
use bytes::Bytes;
use chatvault_core::ChatId;
use std::collections::{BTreeSet, HashMap};

/// A chat's current record, as far as the log says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Current {
    pub(crate) version: u64,
    pub(crate) deleted: bool,
    pub(crate) write: WriteId,
    pub(crate) at: Position,
    pub(crate) summary_len: u64,
    pub(crate) body_len: Option<u64>,
    /// The sealed summary as the log entry carried it (`None` when it was
    /// larger than the inline limit and lives only in the blob).
    pub(crate) summary: Option<Bytes>,
}

impl Current {
    pub(crate) fn of(item: &EntryItem, at: Position) -> Self {
        Self {
            version: item.version,
            deleted: item.deleted,
            write: item.write,
            at,
            summary_len: item.summary_len,
            body_len: item.body_len,
            summary: item.summary.clone(),
        }
    }

    /// True if this is the same commit as `other` (the summaries are then
    /// equal too).
    pub(crate) fn same_commit(&self, other: &Current) -> bool {
        (self.at, self.version, self.write) == (other.at, other.version, other.write)
    }
}

/// The log replayed up to [`Index::head`].
#[derive(Clone, Debug)]
pub(crate) struct Index {
    head: u64,
    validity_from: u64,
    chats: HashMap<ChatId, Current>,
    invalid: BTreeSet<Position>,
}

impl Index {
    /// Nothing replayed yet, the log read from slot 1.
    pub(crate) fn genesis() -> Self {
        Self {
            head: 0,
            validity_from: 1,
            chats: HashMap::new(),
            invalid: BTreeSet::new(),
        }
    }

    pub(crate) fn from_snapshot(snapshot: &Snapshot) -> Self {
        Self {
            head: snapshot.seq,
            validity_from: snapshot.validity_from,
            chats: snapshot
                .chats
                .iter()
                .map(|c| (c.item.chat, Current::of(&c.item, c.at)))
                .collect(),
            invalid: snapshot.invalid.iter().copied().collect(),
        }
    }

    /// Entries up to and including this slot are replayed.
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// The first slot whose validity this index knows; readers positioned
    /// before it resync from a snapshot.
    pub(crate) fn validity_from(&self) -> u64 {
        self.validity_from
    }

    pub(crate) fn current(&self, chat: &ChatId) -> Option<&Current> {
        self.chats.get(chat)
    }

    /// The chat's current version, if it has a record.
    pub(crate) fn version(&self, chat: &ChatId) -> Option<u64> {
        self.chats.get(chat).map(|c| c.version)
    }

    /// Every chat with a record and its current one.
    pub(crate) fn chats(&self) -> impl Iterator<Item = (&ChatId, &Current)> {
        self.chats.iter()
    }

    pub(crate) fn invalid_from(&self, seq: u64) -> impl Iterator<Item = Position> + '_ {
        self.invalid.range(Position { seq, idx: 0 }..).copied()
    }

    /// `Err(current version)` if a put of `version` under `pre` would not
    /// commit now.
    pub(crate) fn check(
        &self,
        chat: &ChatId,
        version: u64,
        pre: Precondition,
    ) -> Result<(), Option<u64>> {
        let current = self.chats.get(chat).map(|c| c.version);
        if pre.admits(current, version) {
            Ok(())
        } else {
            Err(current)
        }
    }

    /// Replays slot `head + 1`; `None` for an entry nobody can decode (it
    /// counts as a slot with no valid item, for every reader alike). Returns
    /// the validity of each item.
    pub(crate) fn apply(&mut self, seq: u64, entry: Option<&LogEntry>) -> Vec<bool> {
        debug_assert_eq!(seq, self.head + 1, "log replayed out of order");
        self.head = seq;
        let Some(entry) = entry else {
            return Vec::new();
        };
        let mut validity = Vec::with_capacity(entry.items.len());
        for (idx, item) in entry.items.iter().enumerate() {
            let at = Position::of(seq, idx);
            let valid = self.check(&item.chat, item.version, item.pre).is_ok();
            if valid {
                self.chats.insert(item.chat, Current::of(item, at));
            } else {
                self.invalid.insert(at);
            }
            validity.push(valid);
        }
        validity
    }

    /// Whether the item at `at` (at or after [`Index::validity_from`], at or
    /// before the head) was valid.
    pub(crate) fn is_valid(&self, at: Position) -> bool {
        !self.invalid.contains(&at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryItem;

    fn item(chat: ChatId, version: u64, pre: Precondition) -> EntryItem {
        EntryItem {
            chat,
            version,
            write: WriteId::random(),
            deleted: false,
            pre,
            summary_len: 0,
            body_len: None,
            summary: None,
        }
    }

    #[test]
    fn replay_rejects_an_item_whose_precondition_an_earlier_item_broke() {
        let chat = ChatId::new();
        let mut index = Index::genesis();
        let first = LogEntry {
            items: vec![item(chat, 1, Precondition::Absent)],
        };
        let racing = LogEntry {
            items: vec![
                item(chat, 1, Precondition::Absent),
                item(chat, 2, Precondition::Version(1)),
            ],
        };
        assert_eq!(index.apply(1, Some(&first)), vec![true]);
        assert_eq!(index.apply(2, Some(&racing)), vec![false, true]);
        assert!(!index.is_valid(Position { seq: 2, idx: 0 }));
        assert_eq!(index.current(&chat).map(|c| c.version), Some(2));
    }

    #[test]
    fn an_undecodable_entry_advances_the_head_and_changes_nothing() {
        let mut index = Index::genesis();
        assert!(index.apply(1, None).is_empty());
        assert_eq!(index.head(), 1);
        assert_eq!(index.chats().count(), 0);
    }
}
