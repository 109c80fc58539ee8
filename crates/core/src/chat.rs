//! The chat model and its merge: a state-based CRDT.
//!
//! A [`Chat`] is a join-semilattice: [`Chat::merge`] is commutative,
//! associative and idempotent, so replicas that exchange states in any order,
//! any number of times, converge (property-tested in `tests/merge_laws.rs`).
//!
//! - **Messages** are a map message id → [`Message`]. A message's role and
//!   content are one last-writer-wins register stamped with an [`Hlc`]; its
//!   creation stamp is fixed (the smallest seen wins). Messages are shown in
//!   the total order (creation stamp, id).
//! - **Original time.** A message brought in from elsewhere (an import)
//!   also carries the wall time it was first written there,
//!   [`Message::written`], separate from the merge clock. Like the creation
//!   stamp it is fixed: merge keeps the earliest one known. An importer
//!   derives the creation stamp from the same time, so imported messages
//!   keep their original order.
//! - **Title** and **starred** are last-writer-wins registers on the same
//!   clock. Equal stamps (only possible for the same edit) tie-break on the
//!   value, so merging stays deterministic even for hand-built states.
//! - **Deletion wins.** Deleting a message or a chat leaves a tombstone
//!   stamped with the deletion time. A tombstone is final: an edit made on a
//!   device that had not yet seen the deletion, even one stamped later, does
//!   not bring the message or chat back (remove-wins). Deleted content is
//!   dropped from the state at once; only ids and stamps remain.
//! - **Garbage collection**: [`Chat::collect_garbage`] drops message
//!   tombstones older than a horizon. A replica offline for longer than the
//!   horizon could resurrect such a message, so pick a horizon longer than
//!   any device stays offline (the engine's default is 90 days).

use crate::hlc::Hlc;
use crate::ids::{ChatId, MessageId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who wrote a message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person using the app.
    User,
    /// The assistant (model) answering.
    Assistant,
    /// A system prompt.
    System,
    /// A tool call result.
    Tool,
}

/// A last-writer-wins register.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lww<T> {
    /// The current value.
    #[serde(rename = "v")]
    pub value: T,
    /// When it was written.
    #[serde(rename = "at")]
    pub at: Hlc,
}

impl<T: Clone + Ord> Lww<T> {
    /// A register holding `value` written at `at`.
    pub fn new(value: T, at: Hlc) -> Self {
        Self { value, at }
    }

    /// Keeps the later write; equal stamps keep the greater value.
    pub fn merge(&mut self, other: &Lww<T>) {
        if (&other.at, &other.value) > (&self.at, &self.value) {
            self.at = other.at;
            self.value = other.value.clone();
        }
    }

    /// Writes `value` at `at` if that is later than the current write.
    pub fn set(&mut self, value: T, at: Hlc) {
        self.merge(&Lww { value, at });
    }
}

/// One message of a chat.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// The message's id.
    pub id: MessageId,
    /// When it was created: its place in the chat's order.
    pub created: Hlc,
    /// Role and content, last-writer-wins.
    pub body: Lww<MessageBody>,
    /// Set once the message is deleted (a tombstone; content is dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Hlc>,
    /// When the message was originally written, in Unix milliseconds, for a
    /// message imported from elsewhere (absent for one written here: its
    /// creation stamp is that time). Encoded since chat format 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<u64>,
}

/// A message's role and content: edited together as one register.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageBody {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl Message {
    /// The message's role.
    pub fn role(&self) -> &Role {
        &self.body.value.role
    }

    /// The message's text (empty for a deleted message).
    pub fn content(&self) -> &str {
        &self.body.value.content
    }

    /// True if the message was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.is_some()
    }

    /// When the message was written, in Unix milliseconds: its original
    /// time if it was imported, else its creation stamp's wall time.
    pub fn written_millis(&self) -> u64 {
        self.written.unwrap_or(self.created.millis)
    }

    fn merge(&mut self, other: &Message) {
        self.created = self.created.min(other.created);
        self.body.merge(&other.body);
        self.deleted = self.deleted.max(other.deleted);
        // Earliest known original time; a state without one knows nothing.
        self.written = match (self.written, other.written) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.normalize();
    }

    fn normalize(&mut self) {
        if self.deleted.is_some() {
            self.body.value.content.clear();
            self.body.value.role = Role::User;
            self.written = None;
        }
    }
}

/// A chat: title, star and messages, mergeable across devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    /// The chat's id.
    pub id: ChatId,
    /// When it was created (the smallest seen wins).
    pub created: Hlc,
    /// The title register.
    pub title: Lww<String>,
    /// The star register.
    pub starred: Lww<bool>,
    /// Every message ever added, tombstones included, by id.
    pub messages: BTreeMap<MessageId, Message>,
    /// Set once the chat is deleted (a tombstone; content is dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Hlc>,
}

impl Chat {
    /// A new, empty chat titled `title`, created at `at`.
    pub fn new(id: ChatId, title: impl Into<String>, at: Hlc) -> Self {
        Self {
            id,
            created: at,
            title: Lww::new(title.into(), at),
            starred: Lww::new(false, at),
            messages: BTreeMap::new(),
            deleted: None,
        }
    }

    /// The tombstone of chat `id`, deleted at `deleted`.
    pub fn tombstone(id: ChatId, created: Hlc, deleted: Hlc) -> Self {
        Self {
            id,
            created,
            title: Lww::new(String::new(), Hlc::ZERO),
            starred: Lww::new(false, Hlc::ZERO),
            messages: BTreeMap::new(),
            deleted: Some(deleted),
        }
    }

    /// True if the chat was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.is_some()
    }

    /// The title.
    pub fn title(&self) -> &str {
        &self.title.value
    }

    /// Whether the chat is starred.
    pub fn is_starred(&self) -> bool {
        self.starred.value
    }

    /// Live messages in display order: (creation stamp, id).
    pub fn messages(&self) -> Vec<&Message> {
        let mut live: Vec<&Message> = self.messages.values().filter(|m| !m.is_deleted()).collect();
        live.sort_by_key(|m| (m.created, m.id));
        live
    }

    /// Number of live messages.
    pub fn message_count(&self) -> usize {
        self.messages.values().filter(|m| !m.is_deleted()).count()
    }

    /// The latest stamp anywhere in the chat: its last activity.
    pub fn last_activity(&self) -> Hlc {
        let mut latest = self.created.max(self.title.at).max(self.starred.at);
        if let Some(d) = self.deleted {
            latest = latest.max(d);
        }
        for m in self.messages.values() {
            latest = latest.max(m.created).max(m.body.at);
            if let Some(d) = m.deleted {
                latest = latest.max(d);
            }
        }
        latest
    }

    /// Renames the chat at `at`.
    pub fn rename(&mut self, title: impl Into<String>, at: Hlc) {
        if !self.is_deleted() {
            self.title.set(title.into(), at);
        }
    }

    /// Stars or unstars the chat at `at`.
    pub fn star(&mut self, starred: bool, at: Hlc) {
        if !self.is_deleted() {
            self.starred.set(starred, at);
        }
    }

    /// Adds a message created at `at` and returns its id. Does nothing to a
    /// deleted chat (the id is still returned, the message is not kept).
    pub fn add_message(&mut self, role: Role, content: impl Into<String>, at: Hlc) -> MessageId {
        let id = MessageId::new();
        self.insert_message(id, role, content, at);
        id
    }

    /// Adds (or, if the id exists, edits) message `id` at `at`.
    pub fn insert_message(
        &mut self,
        id: MessageId,
        role: Role,
        content: impl Into<String>,
        at: Hlc,
    ) {
        self.insert_written_message(id, role, content, at, None);
    }

    /// Adds (or, if the id exists, merges into) message `id`, stamped `at`
    /// and originally written at `written` (Unix milliseconds) elsewhere:
    /// how an importer keeps a message's original time.
    pub fn insert_written_message(
        &mut self,
        id: MessageId,
        role: Role,
        content: impl Into<String>,
        at: Hlc,
        written: Option<u64>,
    ) {
        if self.is_deleted() {
            return;
        }
        let incoming = Message {
            id,
            created: at,
            body: Lww::new(
                MessageBody {
                    role,
                    content: content.into(),
                },
                at,
            ),
            deleted: None,
            written,
        };
        match self.messages.get_mut(&id) {
            Some(existing) => existing.merge(&incoming),
            None => {
                self.messages.insert(id, incoming);
            }
        }
    }

    /// Replaces the content of message `id` at `at`. Returns false if there
    /// is no such live message.
    pub fn edit_message(&mut self, id: MessageId, content: impl Into<String>, at: Hlc) -> bool {
        match self.messages.get_mut(&id) {
            Some(m) if !m.is_deleted() => {
                let role = m.role().clone();
                m.body.set(
                    MessageBody {
                        role,
                        content: content.into(),
                    },
                    at,
                );
                true
            }
            _ => false,
        }
    }

    /// Deletes message `id` at `at`. Returns false if there is no such
    /// message.
    pub fn delete_message(&mut self, id: MessageId, at: Hlc) -> bool {
        match self.messages.get_mut(&id) {
            Some(m) => {
                m.deleted = m.deleted.max(Some(at));
                m.normalize();
                true
            }
            None => false,
        }
    }

    /// Deletes the whole chat at `at`.
    pub fn delete(&mut self, at: Hlc) {
        self.deleted = self.deleted.max(Some(at));
        self.normalize();
    }

    /// Merges `other` (another replica's state of the same chat) into this
    /// one. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &Chat) {
        debug_assert_eq!(self.id, other.id, "merging different chats");
        self.created = self.created.min(other.created);
        self.deleted = self.deleted.max(other.deleted);
        if self.deleted.is_some() {
            self.normalize();
            return;
        }
        self.title.merge(&other.title);
        self.starred.merge(&other.starred);
        for (id, theirs) in &other.messages {
            match self.messages.get_mut(id) {
                Some(ours) => ours.merge(theirs),
                None => {
                    self.messages.insert(*id, theirs.clone());
                }
            }
        }
    }

    /// `a` merged with `b`, leaving both untouched.
    pub fn merged(a: &Chat, b: &Chat) -> Chat {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    /// Drops message tombstones deleted before `horizon`.
    pub fn collect_garbage(&mut self, horizon: Hlc) {
        self.messages
            .retain(|_, m| m.deleted.is_none_or(|deleted| deleted >= horizon));
    }

    /// The sidebar summary of this chat.
    pub fn summary(&self) -> ChatSummary {
        ChatSummary {
            id: self.id,
            title: self.title.value.clone(),
            created: self.created,
            last_activity: self.last_activity(),
            message_count: u32::try_from(self.message_count()).unwrap_or(u32::MAX),
            starred: self.starred.value,
            deleted: self.deleted,
        }
    }

    fn normalize(&mut self) {
        if self.deleted.is_some() {
            self.title = Lww::new(String::new(), Hlc::ZERO);
            self.starred = Lww::new(false, Hlc::ZERO);
            self.messages.clear();
        }
    }
}

/// What the sidebar shows of a chat. Sealed as the record's summary part.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatSummary {
    /// The chat's id.
    pub id: ChatId,
    /// The title.
    pub title: String,
    /// When the chat was created.
    pub created: Hlc,
    /// The latest stamp anywhere in the chat.
    pub last_activity: Hlc,
    /// Number of live messages.
    pub message_count: u32,
    /// Whether the chat is starred.
    pub starred: bool,
    /// Set if the chat was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Hlc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::DeviceId;

    fn at(ms: u64, dev: u64) -> Hlc {
        Hlc::new(ms, 0, DeviceId(dev))
    }

    #[test]
    fn two_devices_adding_messages_offline_keep_both() {
        let id = ChatId::new();
        let base = Chat::new(id, "t", at(1, 1));
        let mut a = base.clone();
        let mut b = base.clone();
        a.add_message(Role::User, "from a", at(2, 1));
        b.add_message(Role::User, "from b", at(2, 2));
        a.merge(&b);
        let texts: Vec<_> = a
            .messages()
            .iter()
            .map(|m| m.content().to_string())
            .collect();
        assert_eq!(texts, vec!["from a", "from b"]);
    }

    #[test]
    fn chat_deletion_wins_over_a_later_edit_from_a_stale_device() {
        let id = ChatId::new();
        let mut a = Chat::new(id, "t", at(1, 1));
        let mut b = a.clone();
        a.delete(at(5, 1));
        b.rename("renamed later", at(9, 2));
        b.add_message(Role::User, "late", at(9, 2));
        b.merge(&a);
        assert!(b.is_deleted());
        assert_eq!(b.message_count(), 0);
        assert_eq!(b.title(), "");
    }

    #[test]
    fn later_title_wins_and_gc_drops_old_tombstones_only() {
        let mut c = Chat::new(ChatId::new(), "a", at(1, 1));
        c.rename("b", at(3, 2));
        c.rename("c", at(2, 3));
        assert_eq!(c.title(), "b");
        let old = c.add_message(Role::User, "x", at(4, 1));
        let new = c.add_message(Role::User, "y", at(5, 1));
        c.delete_message(old, at(6, 1));
        c.delete_message(new, at(20, 1));
        c.collect_garbage(at(10, 0));
        assert!(!c.messages.contains_key(&old));
        assert!(c.messages.contains_key(&new));
    }
}
