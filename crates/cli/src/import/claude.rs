//! Claude export (`conversations.json`, alone or in the downloaded zip): a
//! list of conversations with `uuid`, `name`, `created_at`, `updated_at`
//! and `chat_messages` (`uuid`, `sender` human/assistant, `text` and/or
//! `content` blocks, `created_at`, `attachments`, `files`). Text blocks are
//! kept; other blocks (tool use, tool results, images) become a short
//! placeholder naming what was there.

use super::{
    bad, chat_id, message_id, parse_list, rfc3339_millis, Conversation, ImportedMessage, ListAt,
    Naming,
};
use chatvault::{Result, Role};
use serde::Deserialize;
use std::path::Path;

const SOURCE: &str = "claude";

#[derive(Deserialize)]
struct Export {
    uuid: String,
    #[serde(default)]
    name: Option<String>,
    created_at: String,
    updated_at: Option<String>,
    chat_messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    uuid: String,
    sender: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    created_at: String,
    #[serde(default)]
    attachments: Vec<File>,
    #[serde(default)]
    files: Vec<File>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct File {
    file_name: Option<String>,
}

/// Reads every conversation of the list `json`, in full, before anything
/// is saved.
pub fn read(file: &Path, json: &[u8]) -> Result<Vec<Conversation>> {
    parse_list::<Export, Names>(file, json, ListAt::Top)?
        .into_iter()
        .enumerate()
        .map(|(n, export)| {
            let name = Names {
                uuid: Some(export.uuid.clone()),
                name: export.name.clone(),
            }
            .name(n);
            conversation(file, &name, export)
        })
        .collect()
}

/// The fields that name a conversation in errors.
#[derive(Deserialize)]
struct Names {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl Naming for Names {
    /// Its position, id and title.
    fn name(&self, n: usize) -> String {
        match (&self.uuid, &self.name) {
            (Some(id), Some(title)) => format!("#{n} ({id}, {title:?})"),
            (id, _) => format!("#{n} ({})", id.as_deref().unwrap_or("?")),
        }
    }
}

fn conversation(file: &Path, name: &str, export: Export) -> Result<Conversation> {
    let created = rfc3339_millis(&export.created_at)
        .ok_or_else(|| bad(file, name, "created_at", "not an RFC 3339 time"))?;
    let updated = match &export.updated_at {
        Some(text) => rfc3339_millis(text)
            .ok_or_else(|| bad(file, name, "updated_at", "not an RFC 3339 time"))?,
        None => created,
    };
    let mut messages = Vec::with_capacity(export.chat_messages.len());
    for (n, message) in export.chat_messages.iter().enumerate() {
        let field = |f: &str| format!("chat_messages[{n}].{f}");
        let role = match message.sender.as_str() {
            "human" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(bad(
                    file,
                    name,
                    &field("sender"),
                    &format!("unknown sender {other:?} (expected human or assistant)"),
                ))
            }
        };
        let written = rfc3339_millis(&message.created_at)
            .ok_or_else(|| bad(file, name, &field("created_at"), "not an RFC 3339 time"))?;
        messages.push(ImportedMessage {
            id: message_id(SOURCE, &export.uuid, &message.uuid),
            role,
            content: text(message),
            written,
        });
    }
    Ok(Conversation {
        id: chat_id(SOURCE, &export.uuid),
        title: export.name.unwrap_or_default(),
        starred: false,
        created,
        updated,
        messages,
    })
}

/// The content blocks (or, without any, `text`), then attachments.
fn text(message: &Message) -> String {
    let mut pieces: Vec<String> = Vec::new();
    if message.content.is_empty() {
        pieces.extend(message.text.clone());
    }
    for block in &message.content {
        pieces.push(match (block.kind.as_str(), &block.text) {
            ("text", Some(text)) => text.clone(),
            ("text", None) => String::new(),
            ("tool_use", _) => format!("[tool use: {}]", block.name.as_deref().unwrap_or("?")),
            ("tool_result", _) => "[tool result]".into(),
            ("image", _) => "[image]".into(),
            (other, _) => format!("[{}]", other.replace('_', " ")),
        });
    }
    for file in message.attachments.iter().chain(&message.files) {
        pieces.push(format!(
            "[file: {}]",
            file.file_name.as_deref().unwrap_or("unnamed")
        ));
    }
    pieces.retain(|p| !p.is_empty());
    pieces.join("\n")
}
