//! The in-memory view: sidebar summaries in a `DashMap`, full chats in a
//! `moka` cache bounded by bytes.
//!
//! Both mirror the replica: they change only after a replica commit, under
//! the engine's write lock, so a reader never sees state the replica does
//! not hold. Cached chats carry the version they were decoded from.

use crate::chat::{Chat, ChatSummary};
use crate::ids::ChatId;
use dashmap::DashMap;
use moka::sync::Cache;
use std::sync::Arc;

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
    sidebar: DashMap<ChatId, ChatSummary>,
    chats: Cache<ChatId, (u64, Arc<Chat>)>,
}

impl State {
    /// Sized for `chats` sidebar entries up front, so a cold start does not
    /// grow (and briefly double) the map step by step.
    pub(crate) fn new(cache_bytes: u64, chats: usize) -> Self {
        Self {
            sidebar: DashMap::with_capacity(chats),
            chats: Cache::builder()
                .max_capacity(cache_bytes)
                .weigher(|_, (_, chat): &(u64, Arc<Chat>)| weight(chat))
                .build(),
        }
    }

    /// Live chats, most recently active first.
    pub(crate) fn sidebar(&self) -> Vec<ChatSummary> {
        let mut out: Vec<ChatSummary> = self.sidebar.iter().map(|e| e.value().clone()).collect();
        out.sort_by(|a, b| {
            b.last_activity
                .cmp(&a.last_activity)
                .then_with(|| a.id.cmp(&b.id))
        });
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.sidebar.len()
    }

    pub(crate) fn summary(&self, chat: ChatId) -> Option<ChatSummary> {
        self.sidebar.get(&chat).map(|s| s.value().clone())
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
                self.sidebar.insert(summary.id, summary);
            }
        }
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
        let id = summary.id;
        if summary.deleted.is_some() {
            self.sidebar.remove(&id);
            self.chats.invalidate(&id);
            return true;
        }
        self.sidebar.insert(id, summary);
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
