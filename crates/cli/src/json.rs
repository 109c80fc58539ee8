//! chatvault's plain JSON: what `export --format json`, `show --json` and
//! `ls --json` print, and what `import` reads back (exactly: exporting,
//! importing into a fresh vault and exporting again gives the same file).
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
//! `import` also reads the plaintext of an age export
//! (`chatvault-export/1`, e.g. after `age -d`).

use crate::import::{parse_list, Conversation, ImportedMessage, ListAt, Naming};
use chatvault::{Chat, ChatId, ChatSummary, Error, MessageId, Result, Role, EXPORT_FORMAT};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The format name of chatvault's plain JSON.
pub const FORMAT: &str = "chatvault-json/1";

/// A whole export.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// Always [`FORMAT`].
    pub format: String,
    /// The chats.
    pub chats: Vec<JsonChat>,
}

/// One chat.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonChat {
    id: ChatId,
    title: String,
    starred: bool,
    created: String,
    updated: String,
    messages: Vec<JsonMessage>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonMessage {
    id: MessageId,
    role: Role,
    content: String,
    created: String,
}

/// One line of `ls --json`.
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

/// A chat in the plain schema.
pub fn chat(chat: &Chat) -> JsonChat {
    JsonChat {
        id: chat.id,
        title: chat.title().to_string(),
        starred: chat.is_starred(),
        created: time(chat.created.millis),
        updated: time(chat.title.at.max(chat.starred.at).millis),
        messages: chat
            .messages()
            .into_iter()
            .map(|m| JsonMessage {
                id: m.id,
                role: m.role().clone(),
                content: m.content().to_string(),
                created: time(m.written_millis()),
            })
            .collect(),
    }
}

/// A sidebar entry for `ls --json`.
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

/// Every chat as one export document.
pub fn export<'a>(chats: impl IntoIterator<Item = &'a Chat>) -> Export {
    Export {
        format: FORMAT.into(),
        chats: chats.into_iter().map(chat).collect(),
    }
}

/// Reads an export document (a JSON object with a `format` field) straight
/// from its bytes, without a `serde_json::Value` of it.
pub fn read(file: &Path, json: &[u8]) -> Result<Vec<Chat>> {
    /// The `format` field alone (everything else skipped unread).
    #[derive(Deserialize)]
    struct Header {
        #[serde(default)]
        format: Option<String>,
    }
    let format = serde_json::from_slice::<Header>(json)
        .map_err(|e| Error::invalid(format!("{} is not a JSON export: {e}", file.display())))?
        .format
        .unwrap_or_default();
    if format == EXPORT_FORMAT {
        // The plaintext of an age export: whole chat states, merged as
        // they are.
        return parse_list::<Chat, Names>(file, json, ListAt::Chats);
    }
    if format != FORMAT {
        return Err(Error::invalid(format!(
            "{}: format {format:?} is not one this version reads ({FORMAT} or {EXPORT_FORMAT})",
            file.display()
        )));
    }
    parse_list::<JsonChat, Names>(file, json, ListAt::Chats)?
        .into_iter()
        .enumerate()
        .map(|(n, chat)| {
            let name = format!("#{n} ({})", chat.id);
            let millis = |field: &str, text: &str| {
                crate::import::rfc3339_millis(text)
                    .ok_or_else(|| crate::import::bad(file, &name, field, "not an RFC 3339 time"))
            };
            let mut messages = Vec::with_capacity(chat.messages.len());
            for (i, m) in chat.messages.into_iter().enumerate() {
                messages.push(ImportedMessage {
                    id: m.id,
                    role: m.role,
                    content: m.content,
                    written: millis(&format!("messages[{i}].created"), &m.created)?,
                });
            }
            Ok(Conversation {
                id: chat.id,
                title: chat.title,
                starred: chat.starred,
                created: millis("created", &chat.created)?,
                updated: millis("updated", &chat.updated)?,
                messages,
            }
            .into_chat())
        })
        .collect()
}

/// The field that names a chat in errors: its id.
#[derive(Deserialize)]
struct Names {
    #[serde(default)]
    id: Option<String>,
}

impl Naming for Names {
    /// Its position and id.
    fn name(&self, n: usize) -> String {
        format!("#{n} ({})", self.id.as_deref().unwrap_or("?"))
    }
}
