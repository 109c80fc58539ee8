//! The in-memory view: sidebar summaries in a `DashMap` (each held once,
//! behind an `Arc`) with the ordered [`Sidebar`] snapshot built from them
//! on the first call after a change, full chats in a `moka` cache bounded
//! by bytes.
//!
//! Both mirror the replica: they change only after a replica commit, under
//! the engine's write lock, so a reader never sees state the replica does
//! not hold. Cached chats carry the version they were decoded from.

use super::sidebar::Sidebar;
use crate::chat::{Chat, ChatSummary};
use crate::ids::ChatId;
use dashmap::DashMap;
use moka::sync::Cache;
use std::sync::{Arc, Mutex, PoisonError};

/// Approximate heap bytes of a chat, for the cache's byte bound.
fn weight(chat: &Chat) -> u32 {
    const CHAT_OVERHEAD: usize = 256;
    const MESSAGE_OVERHEAD: usize = 128;
    let bytes = chat
        .messages
        .values()
        .fold(CHAT_OVERHEAD + chat.title().len(), |sum, m| {
            sum.saturating_add(MESSAGE_OVERHEAD + m.content().len())
        });
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

pub(crate) struct State {
    sidebar: DashMap<ChatId, Arc<ChatSummary>>,
    /// The ordered sidebar, until a chat changes.
    snapshot: Mutex<Option<Sidebar>>,
    chats: Cache<ChatId, (u64, Arc<Chat>)>,
}

impl State {
    /// Sized for `chats` sidebar entries up front, so a cold start does not
    /// grow (and briefly double) the map step by step.
    pub(crate) fn new(cache_bytes: u64, chats: usize) -> Self {
        Self {
            sidebar: DashMap::with_capacity(chats),
            snapshot: Mutex::new(None),
            chats: Cache::builder()
                .max_capacity(cache_bytes)
                .weigher(|_, (_, chat): &(u64, Arc<Chat>)| weight(chat))
                .build(),
        }
    }

    /// Live chats, most recently active first: the snapshot taken since
    /// the last change, else a new one.
    pub(crate) fn sidebar(&self) -> Sidebar {
        let mut snapshot = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sidebar) = snapshot.as_ref() {
            return sidebar.clone();
        }
        let sidebar = Sidebar::sorted(self.sidebar.iter().map(|e| e.value().clone()).collect());
        *snapshot = Some(sidebar.clone());
        sidebar
    }

    /// Drops the ordered snapshot: a chat changed.
    fn changed(&self) {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    pub(crate) fn len(&self) -> usize {
        self.sidebar.len()
    }

    pub(crate) fn summary(&self, chat: ChatId) -> Option<ChatSummary> {
        self.sidebar
            .get(&chat)
            .map(|s| ChatSummary::clone(s.value()))
    }

    /// The cached full chat, whatever its version.
    pub(crate) fn cached(&self, chat: ChatId) -> Option<Arc<Chat>> {
        self.chats.get(&chat).map(|(_, c)| c)
    }

    /// The cached full chat if it is at `version`.
    pub(crate) fn cached_at(&self, chat: ChatId, version: u64) -> Option<Arc<Chat>> {
        self.chats
            .get(&chat)
            .filter(|(v, _)| *v == version)
            .map(|(_, c)| c)
    }

    /// Loads sidebar entries at startup.
    pub(crate) fn fill(&self, summaries: impl IntoIterator<Item = ChatSummary>) {
        for summary in summaries {
            if summary.deleted.is_none() {
                self.sidebar.insert(summary.id, Arc::new(summary));
            }
        }
        self.changed();
    }

    /// Loads one sidebar entry at startup (a tombstone is left out). The
    /// caller is [`fill`](Self::fill)ing the state from nothing, so no
    /// ordered snapshot exists yet to drop.
    pub(crate) fn fill_one(&self, summary: ChatSummary) {
        if summary.deleted.is_none() {
            self.sidebar.insert(summary.id, Arc::new(summary));
        }
    }

    /// Forgets every sidebar entry (a startup source that turned out
    /// damaged halfway).
    pub(crate) fn clear(&self) {
        self.sidebar.clear();
        self.changed();
    }

    /// Records a new committed state of a chat. `full` is the whole chat if
    /// known; otherwise a cached older version is dropped. Returns true if
    /// the chat is now deleted.
    pub(crate) fn apply(
        &self,
        summary: ChatSummary,
        version: u64,
        full: Option<Arc<Chat>>,
    ) -> bool {
        // The snapshot is dropped after each change: a sidebar() building
        // one holds the lock while it reads, so it either finishes before
        // the drop or starts after the change.
        let id = summary.id;
        if summary.deleted.is_some() {
            self.sidebar.remove(&id);
            self.changed();
            self.chats.invalidate(&id);
            return true;
        }
        self.sidebar.insert(id, Arc::new(summary));
        self.changed();
        match full {
            Some(chat) => self.chats.insert(id, (version, chat)),
            None => self.chats.invalidate(&id),
        }
        false
    }

    /// Caches a chat loaded on demand at `version`.
    pub(crate) fn cache(&self, version: u64, chat: Arc<Chat>) {
        self.chats.insert(chat.id, (version, chat));
    }

    /// Bytes the full-chat cache currently accounts for.
    pub(crate) fn cached_bytes(&self) -> u64 {
        self.chats.run_pending_tasks();
        self.chats.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::State;
    use crate::chat::ChatSummary;
    use crate::hlc::Hlc;
    use crate::ids::{ChatId, DeviceId};
    use std::sync::Arc;

    fn summary(id: ChatId, at: u64) -> ChatSummary {
        ChatSummary {
            id,
            title: format!("at {at}"),
            created: Hlc::new(1, 0, DeviceId(1)),
            last_activity: Hlc::new(at, 0, DeviceId(1)),
            message_count: 0,
            starred: false,
            deleted: None,
        }
    }

    #[test]
    fn the_sidebar_is_shared_until_a_chat_changes_and_never_copies_a_summary() {
        let state = State::new(1 << 20, 4);
        let (old, new) = (ChatId::new(), ChatId::new());
        state.fill([summary(old, 1), summary(new, 2)]);
        let first = state.sidebar();
        let again = state.sidebar();
        assert!(std::ptr::eq(first.as_ptr(), again.as_ptr()), "one snapshot");
        let ids = |s: &super::Sidebar| s.iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(&first), [new, old]);

        // The old chat becomes the most recent one.
        state.apply(summary(old, 3), 2, None);
        let after = state.sidebar();
        assert!(!std::ptr::eq(first.as_ptr(), after.as_ptr()));
        assert_eq!(ids(&after), [old, new]);
        assert_eq!(ids(&first), [new, old], "a snapshot never changes");
        // The unchanged summary is the same allocation in both.
        assert!(Arc::ptr_eq(&first[0], &after[1]));

        let mut deleted = summary(new, 4);
        deleted.deleted = Some(Hlc::new(4, 0, DeviceId(1)));
        assert!(state.apply(deleted, 3, None));
        assert_eq!(ids(&state.sidebar()), [old]);
        assert_eq!(state.sidebar().to_vec(), vec![summary(old, 3)]);
    }
}
