//! Reads chatvault's own export files back: the plain JSON
//! ([`JSON_FORMAT`], see [`crate::export`]) and the plaintext of an age
//! export ([`EXPORT_FORMAT`], e.g. after `age -d`), whose whole chat states
//! are merged as they are. Attachment references are kept (the bytes are
//! in no export: they open on the devices of the vault that holds them).

use super::parse::{parse_list, Conversation, ImportedMessage, ListAt, Naming};
use crate::export::{
    JsonChat, EXPORT_FORMAT_ATTACHMENTS, EXPORT_FORMAT_BRANCHES, JSON_FORMAT,
    JSON_FORMAT_ATTACHMENTS, JSON_FORMAT_BRANCHES,
};
use crate::{Chat, Error, Result, EXPORT_FORMAT};
use serde::Deserialize;
use std::path::Path;

/// Reads a chatvault export document (a JSON object with a `format` field,
/// `json`, read from `file`, which errors name) straight from its bytes,
/// without a `serde_json::Value` of it.
///
/// Errors: [`Error::InvalidInput`] for another format, naming the ones this
/// version reads, or naming the chat and field that is wrong.
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
    if [
        EXPORT_FORMAT,
        EXPORT_FORMAT_BRANCHES,
        EXPORT_FORMAT_ATTACHMENTS,
    ]
    .contains(&format.as_str())
    {
        // The plaintext of an age export: whole chat states, merged as
        // they are.
        return parse_list::<Chat, Names>(file, json, ListAt::Chats);
    }
    if ![JSON_FORMAT, JSON_FORMAT_BRANCHES, JSON_FORMAT_ATTACHMENTS].contains(&format.as_str()) {
        return Err(Error::invalid(format!(
            "{}: format {format:?} is not one this version reads ({JSON_FORMAT}, \
             {JSON_FORMAT_BRANCHES}, {JSON_FORMAT_ATTACHMENTS}, {EXPORT_FORMAT}, \
             {EXPORT_FORMAT_BRANCHES} or {EXPORT_FORMAT_ATTACHMENTS})",
            file.display()
        )));
    }
    parse_list::<JsonChat, Names>(file, json, ListAt::Chats)?
        .into_iter()
        .enumerate()
        .map(|(n, chat)| {
            let name = format!("#{n} ({})", chat.id);
            let millis = |field: &str, text: &str| {
                super::parse::rfc3339_millis(text)
                    .ok_or_else(|| super::parse::bad(file, &name, field, "not an RFC 3339 time"))
            };
            let mut messages = Vec::with_capacity(chat.messages.len() + chat.branches.len());
            // The current path, then the other branches: a message after
            // the one it follows.
            for (list, items) in [("messages", chat.messages), ("branches", chat.branches)] {
                for (i, m) in items.into_iter().enumerate() {
                    messages.push(ImportedMessage {
                        id: m.id,
                        role: m.role,
                        content: m.content,
                        written: millis(&format!("{list}[{i}].created"), &m.created)?,
                        parent: m.parent,
                        alternative_of: m.alternative_of,
                        files: Vec::new(),
                        attachments: m.attachments.into_iter().map(Into::into).collect(),
                    });
                }
            }
            Ok(Conversation {
                id: chat.id,
                title: chat.title,
                starred: chat.starred,
                created: millis("created", &chat.created)?,
                updated: millis("updated", &chat.updated)?,
                messages,
                selected: chat.selected,
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
