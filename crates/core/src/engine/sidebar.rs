//! [`Sidebar`]: the live chats' summaries, most recently active first, as
//! one shared snapshot. The engine keeps it up to date as chats change and
//! hands it out as a reference-counted handle: a call copies no summary
//! and sorts nothing unless a chat changed since the last call (then it
//! orders pointers, not summaries).

use crate::chat::ChatSummary;
use std::ops::Deref;
use std::sync::Arc;

/// The sidebar: live chats' summaries, most recently active first (ties by
/// id). Cheap to clone (one reference count) and immutable: a snapshot of
/// the moment it was taken. Index it, iterate it (`for summary in
/// &sidebar`) or take owned entries (`for summary in sidebar`, each an
/// `Arc<ChatSummary>`).
#[derive(Clone, Debug, Default)]
pub struct Sidebar {
    entries: Arc<[Arc<ChatSummary>]>,
}

impl Sidebar {
    /// Orders `entries` as the sidebar shows them.
    pub(crate) fn sorted(mut entries: Vec<Arc<ChatSummary>>) -> Self {
        entries.sort_by(|a, b| {
            b.last_activity
                .cmp(&a.last_activity)
                .then_with(|| a.id.cmp(&b.id))
        });
        Self {
            entries: entries.into(),
        }
    }

    /// The summaries as owned values (one copy of each), for code that
    /// wants a `Vec`.
    pub fn to_vec(&self) -> Vec<ChatSummary> {
        self.entries.iter().map(|s| ChatSummary::clone(s)).collect()
    }
}

impl PartialEq for Sidebar {
    /// Equal summaries in the same order.
    fn eq(&self, other: &Self) -> bool {
        self.entries[..] == other.entries[..]
    }
}

impl Eq for Sidebar {}

impl PartialEq<Vec<ChatSummary>> for Sidebar {
    /// Equal summaries in the same order.
    fn eq(&self, other: &Vec<ChatSummary>) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| **a == *b)
    }
}

impl Deref for Sidebar {
    type Target = [Arc<ChatSummary>];

    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl<'a> IntoIterator for &'a Sidebar {
    type Item = &'a Arc<ChatSummary>;
    type IntoIter = std::slice::Iter<'a, Arc<ChatSummary>>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl IntoIterator for Sidebar {
    type Item = Arc<ChatSummary>;
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter {
            entries: self.entries,
            next: 0,
        }
    }
}

/// The owned iterator of a [`Sidebar`]: each entry's `Arc`, in order.
#[derive(Debug)]
pub struct IntoIter {
    entries: Arc<[Arc<ChatSummary>]>,
    next: usize,
}

impl Iterator for IntoIter {
    type Item = Arc<ChatSummary>;

    fn next(&mut self) -> Option<Arc<ChatSummary>> {
        let entry = self.entries.get(self.next).cloned();
        self.next += 1;
        entry
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.entries.len().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for IntoIter {}
