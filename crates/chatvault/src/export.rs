//! chatvault's export schema, owned here so that every application (and
//! the `chatvault` CLI) writes and reads the same documents; documented in
//! `docs/design.md` §4.1. An export is one [`Export`] document:
//! `{"format", "vault"?, "chats", "skipped"?}`, whose `format` says how
//! its chats are written:
//!
//! - [`JSON_FORMAT`] (`chatvault-json/1`), plain JSON for people and other
//!   programs: what `chatvault export --format json`, `show --json` and
//!   `ls --json` print ([`ChatVault::export_json`]), and what
//!   [`import::json`](crate::import::json) reads back (exactly: exporting,
//!   importing into a fresh vault and exporting again gives the same
//!   file);
//! - [`EXPORT_FORMAT`] (`chatvault-export/1`), whole chat states (every
//!   stamp and deletion, so an import merges them as they are), with the
//!   vault's id and the chats left out: the plaintext of
//!   [`ChatVault::export_age`], a standard age file.
//!
//! Plain JSON:
//!
//! ```json
//! {"format": "chatvault-json/1",
//!  "chats": [{"id": "<uuid>", "title": "…", "starred": false,
//!             "created": "2024-05-01T09:30:00.000Z",
//!             "updated": "2024-05-01T09:31:12.345Z",
//!             "messages": [{"id": "<uuid>", "role": "user",
//!                           "content": "…",
//!                           "created": "2024-05-01T09:30:00.000Z"}]}]}
//! ```
//!
//! Times are UTC, RFC 3339 with milliseconds. `role` is one of user,
//! assistant, system, tool. Only live chats and messages are written, in
//! display order. `updated` is the latest change of title or star.
//!
//! A chat with branches (regenerated answers, edited prompts) carries its
//! tree: `messages` is still the current path, `branches` holds the live
//! messages off it (in tree order), every message names the message it
//! follows (`parent`) and the one it replaces (`alternative_of`) where it
//! has them, and `selected` names the last message of the current path. A
//! document with such a chat is [`JSON_FORMAT_BRANCHES`]
//! (`chatvault-json/2`), and an age export with one
//! [`EXPORT_FORMAT_BRANCHES`] (`chatvault-export/2`), so that releases
//! from before branches refuse them by name instead of dropping the tree.
//!
//! A message that carries files names them under `attachments`:
//! `[{"id": "<64 hex>", "name": "…", "media_type": "…", "size": …}]`, the
//! references a device fetches and verifies the bytes by (the bytes
//! themselves are in no export). A document with such a message is
//! [`JSON_FORMAT_ATTACHMENTS`] (`chatvault-json/3`), and an age export
//! with one [`EXPORT_FORMAT_ATTACHMENTS`] (`chatvault-export/3`), whether
//! or not a chat in it has branches, so that releases from before
//! attachments refuse them by name instead of dropping the references.

use crate::task::blocking;
use crate::{
    Attachment, Chat, ChatId, ChatSummary, ChatVault, Error, Message, MessageId, Result, Role,
    SkippedRecord,
};
use chatvault_core::engine::AllChats;
use chatvault_core::envelope::{export_age, ExportTarget};
use chatvault_core::BlobId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The format name of chatvault's plain JSON.
pub const JSON_FORMAT: &str = "chatvault-json/1";

/// The format name of chatvault's plain JSON when a chat in it has
/// branches.
pub const JSON_FORMAT_BRANCHES: &str = "chatvault-json/2";

/// The format name of chatvault's plain JSON when a message in it carries
/// attachments (references only; a chat in it may also have branches).
pub const JSON_FORMAT_ATTACHMENTS: &str = "chatvault-json/3";

/// The format name of [`ChatVault::export_age`]'s plaintext: whole chat
/// states.
pub const EXPORT_FORMAT: &str = "chatvault-export/1";

/// The format name of [`ChatVault::export_age`]'s plaintext when a chat in
/// it has branches.
pub const EXPORT_FORMAT_BRANCHES: &str = "chatvault-export/2";

/// The format name of [`ChatVault::export_age`]'s plaintext when a message
/// in it carries attachments (the references, in the body encoding of
/// chat format 4; not the bytes).
pub const EXPORT_FORMAT_ATTACHMENTS: &str = "chatvault-export/3";

/// An export document, of either format: `chats` are [`JsonChat`]s under
/// [`JSON_FORMAT`], whole [`Chat`] states under [`EXPORT_FORMAT`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export<C = JsonChat> {
    /// [`JSON_FORMAT`] or [`EXPORT_FORMAT`].
    pub format: String,
    /// The vault's id ([`EXPORT_FORMAT`] only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<String>,
    /// The chats.
    pub chats: Vec<C>,
    /// Chats left out because their record does not open
    /// ([`EXPORT_FORMAT`] only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Vec<SkippedChat>>,
}

/// A chat an export left out because its record does not open.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkippedChat {
    /// The chat's id.
    pub chat: String,
    /// The version whose record does not open.
    pub version: u64,
    /// Why it does not open.
    pub reason: String,
}

/// One chat.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonChat {
    /// The chat's id.
    pub id: ChatId,
    /// Its title.
    pub title: String,
    /// Starred or not.
    pub starred: bool,
    /// When it was created ([`time`]).
    pub created: String,
    /// The latest change of its title or star ([`time`]).
    pub updated: String,
    /// Its current path: the live messages shown, in display order.
    pub messages: Vec<JsonMessage>,
    /// The live messages off the current path (other branches), in tree
    /// order: a message after the one it follows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<JsonMessage>,
    /// The last message of the current path, for a chat with branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<MessageId>,
}

/// One message of a [`JsonChat`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonMessage {
    /// The message's id.
    pub id: MessageId,
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// When it was written ([`time`]).
    pub created: String,
    /// The message it follows, in a chat with branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<MessageId>,
    /// The message it is an alternative of (a regenerated answer, an
    /// edited prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternative_of: Option<MessageId>,
    /// The files it carries: references to their sealed bytes in the
    /// vault (the bytes are not in the export).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<JsonAttachment>,
}

/// A file a [`JsonMessage`] carries: the reference an
/// [`Attachment`] holds. Its bytes stay in the vault; a device of the
/// vault reads them by `id` (`chatvault save-attachment`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonAttachment {
    /// The manifest blob's id, 64 hex digits.
    pub id: BlobId,
    /// The file's name.
    pub name: String,
    /// Its media type, e.g. `image/png`.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

impl From<&Attachment> for JsonAttachment {
    fn from(attachment: &Attachment) -> Self {
        Self {
            id: attachment.id,
            name: attachment.name.clone(),
            media_type: attachment.media_type.clone(),
            size: attachment.size,
        }
    }
}

impl From<JsonAttachment> for Attachment {
    fn from(attachment: JsonAttachment) -> Self {
        Self {
            id: attachment.id,
            name: attachment.name,
            media_type: attachment.media_type,
            size: attachment.size,
        }
    }
}

/// A sidebar entry in plain JSON (one element of `chatvault ls --json`).
#[derive(Serialize)]
pub struct JsonSummary {
    id: ChatId,
    title: String,
    starred: bool,
    messages: u32,
    created: String,
    last_activity: String,
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn time(millis: u64) -> String {
    i64::try_from(millis)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// `chat` in plain JSON: its current path in display order, and its other
/// branches if it has any.
pub fn chat(chat: &Chat) -> JsonChat {
    let message = |m: &Message| JsonMessage {
        id: m.id,
        role: m.role().clone(),
        content: m.content().to_string(),
        created: time(m.written_millis()),
        parent: m.parent,
        alternative_of: m.alternative_of,
        attachments: m.attachments().iter().map(JsonAttachment::from).collect(),
    };
    let path = chat.messages();
    let (branches, selected) = if chat.is_branched() {
        let branches = chat
            .tree()
            .into_iter()
            .filter(|e| !e.on_path)
            .map(|e| message(e.message))
            .collect();
        (branches, path.last().map(|m| m.id))
    } else {
        (Vec::new(), None)
    };
    JsonChat {
        id: chat.id,
        title: chat.title().to_string(),
        starred: chat.is_starred(),
        created: time(chat.created.millis),
        updated: time(chat.title.at.max(chat.starred.at).millis),
        messages: path.into_iter().map(message).collect(),
        branches,
        selected,
    }
}

/// A sidebar entry in plain JSON.
pub fn summary(summary: &ChatSummary) -> JsonSummary {
    JsonSummary {
        id: summary.id,
        title: summary.title.clone(),
        starred: summary.starred,
        messages: summary.message_count,
        created: time(summary.created.millis),
        last_activity: time(summary.last_activity.millis),
    }
}

/// `chats` as one plain JSON export document ([`JSON_FORMAT`];
/// [`JSON_FORMAT_BRANCHES`] if a chat has branches;
/// [`JSON_FORMAT_ATTACHMENTS`] if a message carries attachments).
pub fn export<'a>(chats: impl IntoIterator<Item = &'a Chat>) -> Export {
    let chats: Vec<JsonChat> = chats.into_iter().map(chat).collect();
    let branched = chats.iter().any(|c| c.selected.is_some());
    let attached = chats
        .iter()
        .flat_map(|c| c.messages.iter().chain(&c.branches))
        .any(|m| !m.attachments.is_empty());
    Export {
        format: if attached {
            JSON_FORMAT_ATTACHMENTS
        } else if branched {
            JSON_FORMAT_BRANCHES
        } else {
            JSON_FORMAT
        }
        .into(),
        vault: None,
        chats,
        skipped: None,
    }
}

/// A plain JSON export ([`ChatVault::export_json`]): the file's bytes and
/// what was left out of it.
#[derive(Debug)]
pub struct JsonExportFile {
    /// The document ([`Export`]), pretty-printed, ending with a line break.
    pub bytes: Vec<u8>,
    /// How many chats it holds.
    pub chats: usize,
    /// Chats left out because their record does not open, with why.
    pub skipped: Vec<SkippedRecord>,
}

impl ChatVault {
    /// Every live chat in full, most recently active first, with the chats
    /// whose record does not open (and why) beside them: bodies this device
    /// lacks are fetched from the server in batches.
    ///
    /// Errors: the replica's, and the server's when it cannot be reached
    /// for a body this device lacks (sync later, or work from what is
    /// loaded).
    pub async fn all_chats(&self) -> Result<AllChats> {
        self.engine().all_chats().await
    }

    /// Every live chat as plain JSON ([`JSON_FORMAT`]), the file
    /// `chatvault export --format json` writes; importing it into a fresh
    /// vault and exporting again gives the same bytes. A chat whose record
    /// does not open is left out and named in
    /// [`JsonExportFile::skipped`]. The file is plaintext: store it with
    /// care.
    ///
    /// Errors: those of [`all_chats`](Self::all_chats).
    pub async fn export_json(&self) -> Result<JsonExportFile> {
        let all = self.all_chats().await?;
        // Encoding every chat is CPU-bound.
        blocking(move || {
            let export = export(all.chats.iter().map(AsRef::as_ref));
            let mut bytes = serde_json::to_vec_pretty(&export)
                .map_err(|e| Error::invalid(format!("cannot encode the export: {e}")))?;
            bytes.push(b'\n');
            Ok(JsonExportFile {
                bytes,
                chats: export.chats.len(),
                skipped: all.unreadable,
            })
        })
        .await
    }

    /// Exports every live chat as a standard age file (decrypt it with the
    /// `age` or `rage` tools) whose plaintext is an [`EXPORT_FORMAT`]
    /// document (`chatvault-export/2` if a chat has branches,
    /// `chatvault-export/3` if a message carries attachments: their
    /// references, not their bytes):
    /// `{"format": "chatvault-export/1", "vault": …,
    /// "chats": [...], "skipped": [{"chat", "version", "reason"}]}`. Loads
    /// chat bodies from the server as needed; a chat whose record does not
    /// open is named under `skipped` instead of failing the export.
    ///
    /// Errors: those of [`all_chats`](Self::all_chats) and of encrypting to
    /// `to`.
    pub async fn export_age(&self, to: &ExportTarget) -> Result<Vec<u8>> {
        let all = self.all_chats().await?;
        let vault = self.vault_id().to_string();
        let to = to.clone();
        // Encoding every chat and encrypting the result are CPU-bound.
        blocking(move || {
            let branched = all.chats.iter().any(|c| c.is_branched());
            let attached = all.chats.iter().any(|c| c.has_attachments());
            let export = Export {
                format: if attached {
                    EXPORT_FORMAT_ATTACHMENTS
                } else if branched {
                    EXPORT_FORMAT_BRANCHES
                } else {
                    EXPORT_FORMAT
                }
                .into(),
                vault: Some(vault),
                chats: all.chats.iter().map(Arc::as_ref).collect::<Vec<&Chat>>(),
                skipped: Some(
                    all.unreadable
                        .iter()
                        .map(|s| SkippedChat {
                            chat: s.chat.to_string(),
                            version: s.version,
                            reason: s.error.to_string(),
                        })
                        .collect(),
                ),
            };
            let json = serde_json::to_vec(&export)
                .map_err(|e| Error::invalid(format!("cannot encode the export: {e}")))?;
            export_age(&json, &to)
        })
        .await
    }
}
