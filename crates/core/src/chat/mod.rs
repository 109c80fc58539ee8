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
//! - **Branches.** A message may name the message it follows (`parent`) and
//!   the message it was written to replace (`alternative_of`: regenerate,
//!   edit and resend). Both are fixed at creation. Alternatives share a
//!   place; the chat's **selection** register (last-writer-wins like the
//!   title) names the message whose branch is shown. The current path,
//!   [`Chat::messages`], is a function of the state alone (the rules are in
//!   the `tree` module and `docs/design.md` §4.2): concurrent appends to the
//!   same message are all shown, only an explicit alternative hides a
//!   branch, and every branch stays reachable through [`Chat::tree`] and
//!   [`Chat::alternatives`]. A chat without branches is the flat list of
//!   earlier releases, stored in the same format.
//! - **Garbage collection**: [`Chat::collect_garbage`] drops message
//!   tombstones older than a horizon (a tombstone another message follows or
//!   replaces is kept: it places that message; so is the selected one: it
//!   places the current path). A replica offline for longer than the
//!   horizon could resurrect such a message, so pick a horizon longer than
//!   any device stays offline (the engine's default is 90 days).

mod tree;

use crate::hlc::Hlc;
use crate::ids::{BlobId, ChatId, MessageId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tree::Tree;
pub use tree::{PathEntry, TreeEntry};

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
    /// The message this one follows (was written after). `None`: it follows
    /// the previous message without a parent in (creation stamp, id) order,
    /// as every message did before chat format 3. Fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<MessageId>,
    /// The message this one was written to replace (a regenerated answer,
    /// an edited and resent question): it is an alternative in that
    /// message's place. Fixed at creation. Encoded since chat format 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternative_of: Option<MessageId>,
}

/// A message to put into a chat verbatim with [`Chat::insert`]: how an
/// importer keeps a source's ids, times and tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// The message's id.
    pub id: MessageId,
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
    /// Its creation stamp.
    pub created: Hlc,
    /// Its original time elsewhere, in Unix milliseconds, if imported.
    pub written: Option<u64>,
    /// The message it follows ([`Message::parent`]).
    pub parent: Option<MessageId>,
    /// The message it replaces ([`Message::alternative_of`]).
    pub alternative_of: Option<MessageId>,
    /// The files it carries ([`MessageBody::attachments`]).
    pub attachments: Vec<Attachment>,
}

/// A message's role, content and attachments: edited together as one
/// register.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageBody {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
    /// Files the message carries (references to sealed blobs). Encoded
    /// since chat format 4, and only when there are some.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A file a message carries: a reference to its sealed manifest blob
/// (which lists the file's chunks), plus what an app shows before the
/// bytes are fetched. The bytes themselves never enter the chat record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// The manifest blob's id (a keyed hash of the manifest, so identical
    /// files are one attachment).
    pub id: BlobId,
    /// The file's name as the user gave it (no path).
    pub name: String,
    /// Its media type, e.g. `image/png`.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
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

    /// The files the message carries (none for a deleted message).
    pub fn attachments(&self) -> &[Attachment] {
        &self.body.value.attachments
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

    /// True if the message has a place in a tree (chat format 3).
    pub fn is_placed(&self) -> bool {
        self.parent.is_some() || self.alternative_of.is_some()
    }

    fn merge(&mut self, other: &Message) {
        // Creation and place are fixed: the earliest creation keeps its
        // place (the same for every copy written through the API). At the
        // same creation a known place wins over none: an importer that
        // re-reads a source with its tree places the messages an earlier
        // release imported flat.
        let place = |m: &Message| {
            (
                m.created,
                m.parent.is_none(),
                m.parent,
                m.alternative_of.is_none(),
                m.alternative_of,
            )
        };
        if place(other) < place(self) {
            let theirs = (other.created, other.parent, other.alternative_of);
            (self.created, self.parent, self.alternative_of) = theirs;
        }
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
            self.body.value.attachments.clear();
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
    /// The selection register: the message whose branch the current path
    /// shows, last-writer-wins. Unset (`None` at [`Hlc::ZERO`]) in a chat
    /// nobody branched. Encoded since chat format 3.
    #[serde(default = "no_selection", skip_serializing_if = "is_no_selection")]
    pub selected: Lww<Option<MessageId>>,
}

fn no_selection() -> Lww<Option<MessageId>> {
    Lww::new(None, Hlc::ZERO)
}

fn is_no_selection(selected: &Lww<Option<MessageId>>) -> bool {
    *selected == no_selection()
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
            selected: no_selection(),
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
            selected: no_selection(),
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

    /// True if any message has a place in a tree or a branch was selected:
    /// the chat needs chat format 3. A chat nobody branched is a flat list.
    pub fn is_branched(&self) -> bool {
        !is_no_selection(&self.selected) || self.messages.values().any(Message::is_placed)
    }

    /// The current path: the live messages shown, in display order. For a
    /// chat without branches, every live message in (creation stamp, id)
    /// order.
    pub fn messages(&self) -> Vec<&Message> {
        if !self.is_branched() {
            return self.all_messages();
        }
        Tree::new(self)
            .path()
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    /// The current path with each message's place among its alternatives
    /// ("2 of 3"), as an app shows it.
    pub fn path(&self) -> Vec<PathEntry<'_>> {
        if !self.is_branched() {
            return self
                .all_messages()
                .into_iter()
                .map(|message| PathEntry {
                    message,
                    position: 1,
                    alternatives: 1,
                })
                .collect();
        }
        Tree::new(self).path()
    }

    /// Every live message of every branch in display order, nested by
    /// branch: a tree view.
    pub fn tree(&self) -> Vec<TreeEntry<'_>> {
        Tree::new(self).entries()
    }

    /// Every live message of every branch, in (creation stamp, id) order.
    pub fn all_messages(&self) -> Vec<&Message> {
        let mut live: Vec<&Message> = self.messages.values().filter(|m| !m.is_deleted()).collect();
        live.sort_by_key(|m| (m.created, m.id));
        live
    }

    /// The live alternatives in `message`'s place, oldest first: the
    /// message itself and every regenerated or edited version of it. Empty
    /// if there is no such message.
    pub fn alternatives(&self, message: MessageId) -> Vec<&Message> {
        Tree::new(self).alternatives(message)
    }

    /// Number of live messages on the current path.
    pub fn message_count(&self) -> usize {
        if !self.is_branched() {
            return self.messages.values().filter(|m| !m.is_deleted()).count();
        }
        Tree::new(self).path().len()
    }

    /// The latest stamp anywhere in the chat: its last activity.
    pub fn last_activity(&self) -> Hlc {
        let mut latest = self
            .created
            .max(self.title.at)
            .max(self.starred.at)
            .max(self.selected.at);
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

    /// Appends a message created at `at` after the last message of the
    /// current path and returns its id. Does nothing to a deleted chat (the
    /// id is still returned, the message is not kept).
    pub fn add_message(&mut self, role: Role, content: impl Into<String>, at: Hlc) -> MessageId {
        let id = MessageId::new();
        self.insert_message(id, role, content, at);
        id
    }

    /// Writes a new alternative of `of` created at `at` (regenerate an
    /// answer, edit and resend a question): a message with `of`'s role in
    /// `of`'s place, selected so that the current path shows it (and no
    /// longer what followed `of`; that branch stays reachable). Returns its
    /// id, or `None` if `of` is not a live message of a live chat.
    pub fn add_alternative(
        &mut self,
        of: MessageId,
        content: impl Into<String>,
        at: Hlc,
    ) -> Option<MessageId> {
        if self.is_deleted() {
            return None;
        }
        let role = match self.messages.get(&of) {
            Some(m) if !m.is_deleted() => m.role().clone(),
            _ => return None,
        };
        let (original, parent) = Tree::new(self).place_of(of)?;
        let id = MessageId::new();
        self.insert(NewMessage {
            id,
            role,
            content: content.into(),
            created: at,
            written: None,
            parent,
            alternative_of: Some(original),
            attachments: Vec::new(),
        });
        self.selected.set(Some(id), at);
        Some(id)
    }

    /// Selects the branch that contains `message` at `at`: the current path
    /// goes through it (below it, each place shows its most recently
    /// written alternative). Returns false if there is no such live message.
    pub fn select(&mut self, message: MessageId, at: Hlc) -> bool {
        match self.messages.get(&message) {
            Some(m) if !m.is_deleted() && !self.is_deleted() => {
                self.selected.set(Some(message), at);
                true
            }
            _ => false,
        }
    }

    /// Puts `message` into the chat verbatim, with the place it names (or,
    /// if the id exists, merges it into that message). Does nothing to a
    /// deleted chat.
    pub fn insert(&mut self, message: NewMessage) {
        if self.is_deleted() {
            return;
        }
        let incoming = Message {
            id: message.id,
            created: message.created,
            body: Lww::new(
                MessageBody {
                    role: message.role,
                    content: message.content,
                    attachments: message.attachments,
                },
                message.created,
            ),
            deleted: None,
            written: message.written,
            parent: message.parent,
            alternative_of: message.alternative_of,
        };
        match self.messages.get_mut(&message.id) {
            Some(existing) => existing.merge(&incoming),
            None => {
                self.messages.insert(message.id, incoming);
            }
        }
    }

    /// The id of the last message of the current path, which a new message
    /// follows in a branched chat (`None` in a chat without branches: there
    /// a new message joins the flat chain).
    fn append_parent(&self) -> Option<MessageId> {
        if !self.is_branched() {
            return None;
        }
        Tree::new(self).path().last().map(|e| e.message.id)
    }

    /// Adds (or, if the id exists, edits) message `id` at `at`; a new
    /// message is appended after the last message of the current path.
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
    /// how an importer keeps a message's original time. A new message is
    /// appended after the last message of the current path.
    pub fn insert_written_message(
        &mut self,
        id: MessageId,
        role: Role,
        content: impl Into<String>,
        at: Hlc,
        written: Option<u64>,
    ) {
        let parent = if self.messages.contains_key(&id) {
            self.messages.get(&id).and_then(|m| m.parent)
        } else {
            self.append_parent()
        };
        let alternative_of = self.messages.get(&id).and_then(|m| m.alternative_of);
        self.insert(NewMessage {
            id,
            role,
            content: content.into(),
            created: at,
            written,
            parent,
            alternative_of,
            attachments: Vec::new(),
        });
    }

    /// Appends a new message carrying `attachments` (uploaded first, e.g.
    /// with `ChatVault::attach`) after the last message of the current
    /// path, created at `at`. Returns its id.
    pub fn add_message_with_attachments(
        &mut self,
        role: Role,
        content: impl Into<String>,
        attachments: Vec<Attachment>,
        at: Hlc,
    ) -> MessageId {
        let id = MessageId::new();
        let parent = self.append_parent();
        self.insert(NewMessage {
            id,
            role,
            content: content.into(),
            created: at,
            written: None,
            parent,
            alternative_of: None,
            attachments,
        });
        id
    }

    /// Every attachment of a live message of any branch, with the message
    /// carrying it, in (creation stamp, message id) order.
    pub fn attachments(&self) -> Vec<(MessageId, &Attachment)> {
        let mut messages: Vec<&Message> =
            self.messages.values().filter(|m| !m.is_deleted()).collect();
        messages.sort_by_key(|m| (m.created, m.id));
        messages
            .into_iter()
            .flat_map(|m| m.attachments().iter().map(move |a| (m.id, a)))
            .collect()
    }

    /// True if a message (live or not) carries an attachment: the chat
    /// needs chat format 4.
    pub fn has_attachments(&self) -> bool {
        self.messages.values().any(|m| !m.attachments().is_empty())
    }

    /// Replaces the content of message `id` at `at`. Returns false if there
    /// is no such live message.
    pub fn edit_message(&mut self, id: MessageId, content: impl Into<String>, at: Hlc) -> bool {
        match self.messages.get_mut(&id) {
            Some(m) if !m.is_deleted() => {
                let body = MessageBody {
                    content: content.into(),
                    ..m.body.value.clone()
                };
                m.body.set(body, at);
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
        self.selected.merge(&other.selected);
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

    /// Drops message tombstones deleted before `horizon`, except the
    /// selected message and those a kept message follows or replaces,
    /// directly or through other such tombstones (they keep the current
    /// path and every message in its place).
    pub fn collect_garbage(&mut self, horizon: Hlc) {
        let kept = self.placing(|m| m.deleted.is_none_or(|deleted| deleted >= horizon));
        self.messages.retain(|id, _| kept.contains(id));
    }

    /// The messages `keep` accepts, the selected message, and every message
    /// these follow or replace, directly or through others: the set that
    /// places them. The tree ignores tombstones outside the set for live
    /// messages, so garbage collection (which keeps this set for unexpired
    /// messages) never changes what anyone sees.
    pub(crate) fn placing(&self, keep: impl Fn(&Message) -> bool) -> BTreeSet<MessageId> {
        let mut kept: BTreeSet<MessageId> = self
            .messages
            .values()
            .filter(|m| keep(m))
            .map(|m| m.id)
            .collect();
        if let Some(selected) = self
            .selected
            .value
            .filter(|id| self.messages.contains_key(id))
        {
            kept.insert(selected);
        }
        let mut naming: Vec<MessageId> = kept.iter().copied().collect();
        while let Some(id) = naming.pop() {
            let Some(message) = self.messages.get(&id) else {
                continue;
            };
            for named in message.parent.into_iter().chain(message.alternative_of) {
                if self.messages.contains_key(&named) && kept.insert(named) {
                    naming.push(named);
                }
            }
        }
        kept
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
            self.selected = no_selection();
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
    /// Number of live messages on the current path.
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
