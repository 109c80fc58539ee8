//! The records and enums the bindings pass by value.

use chatvault::core::engine::{Event, SyncStatus};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
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

impl From<&chatvault::Role> for Role {
    fn from(role: &chatvault::Role) -> Self {
        match role {
            chatvault::Role::User => Role::User,
            chatvault::Role::Assistant => Role::Assistant,
            chatvault::Role::System => Role::System,
            chatvault::Role::Tool => Role::Tool,
        }
    }
}

impl From<Role> for chatvault::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::User => chatvault::Role::User,
            Role::Assistant => chatvault::Role::Assistant,
            Role::System => chatvault::Role::System,
            Role::Tool => chatvault::Role::Tool,
        }
    }
}

/// What the sidebar shows of a chat.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChatSummary {
    /// The chat's id (a UUID).
    pub id: String,
    /// The title.
    pub title: String,
    /// When the chat was created, Unix milliseconds.
    pub created_ms: u64,
    /// The latest activity anywhere in the chat, Unix milliseconds.
    pub last_activity_ms: u64,
    /// Live messages on the branch shown.
    pub message_count: u32,
    /// Whether the chat is starred.
    pub starred: bool,
}

impl From<&chatvault::ChatSummary> for ChatSummary {
    fn from(summary: &chatvault::ChatSummary) -> Self {
        Self {
            id: summary.id.to_string(),
            title: summary.title.clone(),
            created_ms: summary.created.millis,
            last_activity_ms: summary.last_activity.millis,
            message_count: summary.message_count,
            starred: summary.starred,
        }
    }
}

/// A file a message carries (its bytes are fetched separately).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Attachment {
    /// The attachment's id.
    pub id: String,
    /// The file's name.
    pub name: String,
    /// Its media type, e.g. `image/png`.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

impl From<&chatvault::Attachment> for Attachment {
    fn from(a: &chatvault::Attachment) -> Self {
        Self {
            id: a.id.to_string(),
            name: a.name.clone(),
            media_type: a.media_type.clone(),
            size: a.size,
        }
    }
}

impl TryFrom<Attachment> for chatvault::Attachment {
    type Error = crate::VaultError;

    fn try_from(a: Attachment) -> Result<Self, Self::Error> {
        let id = a.id.parse().map_err(|_| crate::VaultError::InvalidInput {
            message: format!("invalid input: {:?} is not an attachment id", a.id),
        })?;
        Ok(Self {
            id,
            name: a.name,
            media_type: a.media_type,
            size: a.size,
        })
    }
}

/// One message of the branch shown.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Message {
    /// The message's id (a UUID).
    pub id: String,
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
    /// When it was written, Unix milliseconds.
    pub written_ms: u64,
    /// The message it replaces, for a regenerated or edited one.
    pub alternative_of: Option<String>,
    /// The files it carries.
    pub attachments: Vec<Attachment>,
}

impl From<&chatvault::Message> for Message {
    fn from(message: &chatvault::Message) -> Self {
        Self {
            id: message.id.to_string(),
            role: message.role().into(),
            content: message.content().to_owned(),
            written_ms: message.written_millis(),
            alternative_of: message.alternative_of.map(|id| id.to_string()),
            attachments: message.attachments().iter().map(Attachment::from).collect(),
        }
    }
}

/// A chat in full: its title and the messages of the branch shown.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Chat {
    /// The chat's id (a UUID).
    pub id: String,
    /// The title.
    pub title: String,
    /// Whether the chat is starred.
    pub starred: bool,
    /// True if some message has alternatives (regenerated or edited).
    pub branched: bool,
    /// The messages shown, in order.
    pub messages: Vec<Message>,
}

impl From<&chatvault::Chat> for Chat {
    fn from(chat: &chatvault::Chat) -> Self {
        Self {
            id: chat.id.to_string(),
            title: chat.title().to_owned(),
            starred: chat.is_starred(),
            branched: chat.is_branched(),
            messages: chat.messages().into_iter().map(Message::from).collect(),
        }
    }
}

/// Where synchronisation stands.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Status {
    /// The backend is unreachable (or no sync ran yet); changes stay queued.
    Offline {
        /// Why.
        reason: String,
    },
    /// A sync round is running.
    Syncing,
    /// Synced, but some records did not open yet (retried).
    Incomplete {
        /// How many chats' records wait to open.
        skipped: u64,
    },
    /// Synced, but the backend saw more it cannot read yet.
    Waiting {
        /// What it waits for.
        reason: String,
    },
    /// Everything pulled and pushed.
    Synced,
    /// The last round failed in a way retrying alone will not fix.
    Error {
        /// Why.
        reason: String,
    },
    /// A status this version of the bindings does not know.
    Other {
        /// The status, in words.
        description: String,
    },
}

impl From<SyncStatus> for Status {
    fn from(status: SyncStatus) -> Self {
        match status {
            SyncStatus::Offline { reason } => Status::Offline { reason },
            SyncStatus::Syncing => Status::Syncing,
            SyncStatus::Incomplete { skipped } => Status::Incomplete {
                skipped: skipped as u64,
            },
            SyncStatus::Waiting { reason } => Status::Waiting { reason },
            SyncStatus::Synced => Status::Synced,
            SyncStatus::Error { reason } => Status::Error { reason },
            other => Status::Other {
                description: format!("{other:?}"),
            },
        }
    }
}

/// A change an application reacts to.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum VaultEvent {
    /// A chat was created or changed, here or by a pull.
    ChatUpserted {
        /// The chat's id.
        chat: String,
    },
    /// A chat was deleted, here or by a pull.
    ChatDeleted {
        /// The chat's id.
        chat: String,
    },
    /// The sync status changed.
    StatusChanged {
        /// The new status.
        status: Status,
    },
    /// The server refused these chats' changes (kept queued, retried).
    PushRefused {
        /// The chats.
        chats: Vec<String>,
        /// Why.
        reason: String,
    },
    /// A pulled record could not be opened and was skipped.
    RecordSkipped {
        /// The chat.
        chat: String,
        /// Why.
        reason: String,
    },
    /// Re-sealing after a key rotation: `done` of `total` records.
    ResealProgress {
        /// The data key records are re-sealed under.
        key_id: u32,
        /// Records sealed under it.
        done: u64,
        /// Records in the replica.
        total: u64,
    },
    /// The listener fell behind and `missed` events were dropped: re-read
    /// the sidebar.
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
    /// An event this version of the bindings does not know.
    Other {
        /// The event, in words.
        description: String,
    },
}

impl From<Event> for VaultEvent {
    fn from(event: Event) -> Self {
        match event {
            Event::ChatUpserted(chat) => VaultEvent::ChatUpserted {
                chat: chat.to_string(),
            },
            Event::ChatDeleted(chat) => VaultEvent::ChatDeleted {
                chat: chat.to_string(),
            },
            Event::SyncStatus(status) => VaultEvent::StatusChanged {
                status: status.into(),
            },
            Event::PushRefused { chats, reason } => VaultEvent::PushRefused {
                chats: chats.iter().map(ToString::to_string).collect(),
                reason,
            },
            Event::RecordSkipped { chat, reason } => VaultEvent::RecordSkipped {
                chat: chat.to_string(),
                reason,
            },
            Event::ResealProgress {
                key_id,
                done,
                total,
            } => VaultEvent::ResealProgress {
                key_id,
                done: done as u64,
                total: total as u64,
            },
            other => VaultEvent::Other {
                description: format!("{other:?}"),
            },
        }
    }
}

/// What one sync round did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncReport {
    /// Chats whose newer server state was applied here.
    pub pulled: u64,
    /// Local changes the server confirmed.
    pub pushed: u64,
    /// Pushes that lost a race and were merged and re-sealed.
    pub conflicts_resolved: u64,
    /// Pulled records that failed to open.
    pub skipped: u64,
    /// Chats still waiting to be pushed.
    pub pending: u64,
    /// Requests sent to the backend.
    pub requests: u64,
    /// What the backend could not hand out yet, if anything.
    pub waiting: Option<String>,
}

impl From<chatvault::SyncReport> for SyncReport {
    fn from(report: chatvault::SyncReport) -> Self {
        Self {
            pulled: report.pulled as u64,
            pushed: report.pushed as u64,
            conflicts_resolved: report.conflicts_resolved as u64,
            skipped: report.skipped.len() as u64,
            pending: report.pending,
            requests: report.requests,
            waiting: report.waiting,
        }
    }
}

/// What unlocks a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ProtectionKind {
    /// The passphrase.
    Passphrase,
    /// A device's age identity.
    Device,
    /// The recovery key.
    Recovery,
}

/// One entry of the vault's key file: something that unlocks it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Protection {
    /// The short id key commands take (`passphrase`, `recovery`, or 12
    /// characters of a device's recipient).
    pub id: String,
    /// Passphrase, device or recovery key.
    pub kind: ProtectionKind,
    /// A name for people.
    pub label: String,
    /// The age recipient (`age1…`) the key file is encrypted to.
    pub recipient: String,
    /// When it was added, Unix milliseconds.
    pub added_ms: u64,
}

impl From<&chatvault::Protection> for Protection {
    fn from(protection: &chatvault::Protection) -> Self {
        Self {
            id: protection.id(),
            kind: match protection.kind {
                chatvault::ProtectionKind::Passphrase => ProtectionKind::Passphrase,
                chatvault::ProtectionKind::Device => ProtectionKind::Device,
                chatvault::ProtectionKind::Recovery => ProtectionKind::Recovery,
            },
            label: protection.label.clone(),
            recipient: protection.recipient.clone(),
            added_ms: protection.added_ms,
        }
    }
}

/// One match of a search.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SearchHit {
    /// The chat.
    pub chat: String,
    /// Its title.
    pub title: String,
    /// The message's number on the branch shown, from 1 (`None`: the
    /// title matched, or a message on another branch).
    pub message_index: Option<u64>,
    /// The message's role (`None`: the title matched).
    pub role: Option<Role>,
    /// When the message (or chat) was last active, Unix milliseconds.
    pub at_ms: u64,
    /// The text around the match.
    pub snippet: String,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ImportReport {
    /// Chats new to the vault.
    pub added: u64,
    /// Chats that were there and got newer content.
    pub updated: u64,
    /// Chats that were there already as they are in the file.
    pub unchanged: u64,
    /// Chats deleted in the vault that the file still holds (left deleted).
    pub deletions_ignored: u64,
    /// Files from the export attached to messages.
    pub attached_files: u64,
    /// What the file held that was left out, in words (`None`: nothing).
    pub left_out: Option<String>,
}

/// The alternatives in one message's place ("< 2 of 3 >").
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Alternatives {
    /// Every live alternative, oldest first.
    pub messages: Vec<Message>,
    /// Which of them the branch shown goes through, from 1 (`None`: none).
    pub shown: Option<u64>,
    /// The position of the message asked about, from 1.
    pub position: u64,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct VerifyReport {
    /// True when no problem was found.
    pub ok: bool,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
    /// Every line, notes and problems, in the order found.
    pub lines: Vec<String>,
    /// Records checked on the server.
    pub server_records: u64,
    /// Records checked in the replica.
    pub replica_records: u64,
}
