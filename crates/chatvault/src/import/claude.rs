//! Claude export (`conversations.json`, alone or in the downloaded zip): a
//! list of conversations with `uuid`, `name`, `created_at`, `updated_at`
//! and `chat_messages` (`uuid`, `sender` human/assistant, `text` and/or
//! `content` blocks, `created_at`, `attachments`, `files`). Text blocks are
//! kept as they are; `thinking`, `tool_use` (its JSON input) and
//! `tool_result` (its text) blocks and an attachment's
//! `extracted_content` are kept in marked fenced blocks ([`fenced`]); an
//! image, a file without extracted text or an unknown block without text
//! becomes a short placeholder naming what was there. A conversation
//! without a name is titled from its first message
//! ([`title_or_first_words`]). Where every message names its
//! `parent_message_uuid`, the tree is kept: siblings are alternatives
//! (retries, edited prompts), the branch of `current_leaf_message_uuid`
//! (else of the newest message) is the one shown.

use super::parse::{
    bad, chat_id, fenced, message_id, parse_list, place_branches, rfc3339_millis,
    title_or_first_words, tree_order, Conversation, ImportedMessage, ListAt, Naming,
};
use crate::{Chat, Result, Role};
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
    /// The last message of the branch Claude shows, in exports that have
    /// branches.
    #[serde(default)]
    current_leaf_message_uuid: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    uuid: String,
    /// The message this one answers or follows; siblings are retries and
    /// edits. Absent in older exports (a flat list).
    #[serde(default)]
    parent_message_uuid: Option<String>,
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
    /// A `thinking` block's text.
    thinking: Option<String>,
    /// A `tool_use` block's input.
    input: Option<serde_json::Value>,
    /// A `tool_result` block's output: text, or a list of blocks.
    content: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct File {
    file_name: Option<String>,
    /// The text the model was given from the file.
    extracted_content: Option<String>,
}

/// Reads every conversation of a Claude export's `conversations.json`
/// (`json`, read from `file`, which errors name), in full, before anything
/// is saved.
///
/// Errors: [`Error::InvalidInput`](crate::Error::InvalidInput) naming the
/// conversation and the field that is wrong.
pub fn read(file: &Path, json: &[u8]) -> Result<Vec<Chat>> {
    parse_list::<Export, Names>(file, json, ListAt::Top)?
        .into_iter()
        .enumerate()
        .map(|(n, export)| {
            let name = Names {
                uuid: Some(export.uuid.clone()),
                name: export.name.clone(),
            }
            .name(n);
            conversation(file, &name, export).map(Conversation::into_chat)
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
        let mut imported = ImportedMessage::flat(
            message_id(SOURCE, &export.uuid, &message.uuid),
            role,
            text(message),
            written,
        );
        imported.parent = message
            .parent_message_uuid
            .as_deref()
            .map(|parent| message_id(SOURCE, &export.uuid, parent));
        messages.push(imported);
    }
    // A tree where every message names its parent (the root's names a
    // uuid that is not a message); a flat list in older exports.
    let mut selected = None;
    if export
        .chat_messages
        .iter()
        .all(|m| m.parent_message_uuid.is_some())
    {
        messages = tree_order(messages)
            .ok_or_else(|| bad(file, name, "chat_messages", "the parent links form a cycle"))?;
        if place_branches(&mut messages) {
            let known = |id| messages.iter().any(|m| m.id == id);
            selected = export
                .current_leaf_message_uuid
                .as_deref()
                .map(|leaf| message_id(SOURCE, &export.uuid, leaf))
                .filter(|&id| known(id))
                .or_else(|| messages.iter().max_by_key(|m| m.written).map(|m| m.id));
        }
    } else {
        for message in &mut messages {
            message.parent = None;
        }
    }
    Ok(Conversation {
        id: chat_id(SOURCE, &export.uuid),
        title: title_or_first_words(export.name, &messages),
        starred: false,
        created,
        updated,
        messages,
        selected,
    })
}

/// The content blocks (or, without any, `text`), then attachments.
fn text(message: &Message) -> String {
    let mut pieces: Vec<String> = Vec::new();
    if message.content.is_empty() {
        pieces.extend(message.text.clone());
    }
    for block in &message.content {
        let name = block.name.as_deref().unwrap_or("");
        pieces.push(match block.kind.as_str() {
            "text" => block.text.clone().unwrap_or_default(),
            "thinking" => fenced(
                "thinking",
                block
                    .thinking
                    .as_deref()
                    .or(block.text.as_deref())
                    .unwrap_or(""),
            ),
            "tool_use" => fenced(
                &format!("tool_use {name}"),
                &block
                    .input
                    .as_ref()
                    .map_or_else(String::new, serde_json::Value::to_string),
            ),
            "tool_result" => fenced(
                &format!("tool_result {name}"),
                &block.content.as_ref().map_or_else(String::new, result_text),
            ),
            "image" => "[image]".into(),
            other => match &block.text {
                Some(text) if !text.is_empty() => text.clone(),
                _ => format!("[{}]", other.replace('_', " ")),
            },
        });
    }
    for file in message.attachments.iter().chain(&message.files) {
        let name = file.file_name.as_deref().unwrap_or("unnamed");
        pieces.push(match file.extracted_content.as_deref() {
            Some(content) if !content.trim().is_empty() => {
                fenced(&format!("attachment {name}"), content)
            }
            _ => format!("[file: {name}]"),
        });
    }
    pieces.retain(|p| !p.is_empty());
    pieces.join("\n")
}

/// The text of a tool result's `content`: a string as it is, the `text`
/// of each block of a list (a placeholder for a block without one), and
/// any other value as its JSON.
fn result_text(content: &serde_json::Value) -> String {
    use serde_json::Value;
    match content {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(items) => {
            let pieces: Vec<String> = items
                .iter()
                .map(result_text)
                .filter(|p| !p.is_empty())
                .collect();
            pieces.join("\n")
        }
        Value::Object(fields) => match (fields.get("text"), fields.get("type")) {
            (Some(Value::String(text)), _) => text.clone(),
            (None, Some(Value::String(kind))) if fields.len() == 1 || kind == "image" => {
                format!("[{}]", kind.replace('_', " "))
            }
            _ => content.to_string(),
        },
        other => other.to_string(),
    }
}
