//! ChatGPT data export (`conversations.json`, alone or in the downloaded
//! zip): a list of conversations, each a tree of nodes in `mapping`
//! (`parent`/`children`). The branch shown in ChatGPT is the path from the
//! root to `current_node`; other branches (regenerated answers, edited
//! prompts) are left out. Hidden scaffolding
//! (`metadata.is_visually_hidden_from_conversation`) and empty system
//! messages are skipped. Text parts are kept; other parts (images, files,
//! code-interpreter output, browsing results) become a short placeholder
//! naming what was there.

use super::{bad, chat_id, message_id, parse, seconds_to_millis, Conversation, ImportedMessage};
use chatvault::{Result, Role};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

const SOURCE: &str = "chatgpt";

#[derive(Deserialize)]
struct Export {
    #[serde(default)]
    title: Option<String>,
    create_time: Option<f64>,
    update_time: Option<f64>,
    mapping: HashMap<String, Node>,
    current_node: Option<String>,
    conversation_id: Option<String>,
    id: Option<String>,
}

#[derive(Deserialize)]
struct Node {
    message: Option<Message>,
    parent: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    id: Option<String>,
    author: Author,
    create_time: Option<f64>,
    content: Option<Content>,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize)]
struct Author {
    role: String,
}

#[derive(Deserialize)]
struct Content {
    content_type: String,
    #[serde(default)]
    parts: Vec<Value>,
    text: Option<String>,
}

#[derive(Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    is_visually_hidden_from_conversation: bool,
    #[serde(default)]
    attachments: Vec<Attachment>,
}

#[derive(Deserialize)]
struct Attachment {
    name: Option<String>,
}

/// Reads every conversation, in full, before anything is saved.
pub fn read(file: &Path, conversations: Vec<Value>) -> Result<Vec<Conversation>> {
    conversations
        .into_iter()
        .enumerate()
        .map(|(n, value)| {
            let name = describe(n, &value);
            let export: Export = parse(file, &name, value)?;
            conversation(file, &name, export)
        })
        .collect()
}

/// How an error names a conversation: its position, id and title.
fn describe(n: usize, value: &Value) -> String {
    let field = |key| value.get(key).and_then(Value::as_str);
    let id = field("conversation_id")
        .or_else(|| field("id"))
        .unwrap_or("?");
    match field("title") {
        Some(title) => format!("#{n} ({id}, {title:?})"),
        None => format!("#{n} ({id})"),
    }
}

fn conversation(file: &Path, name: &str, export: Export) -> Result<Conversation> {
    let source_id = export.conversation_id.or(export.id).ok_or_else(|| {
        bad(
            file,
            name,
            "conversation_id",
            "missing (and no `id` either)",
        )
    })?;
    let created = export
        .create_time
        .and_then(seconds_to_millis)
        .ok_or_else(|| bad(file, name, "create_time", "missing or not a time"))?;
    let updated = export
        .update_time
        .and_then(seconds_to_millis)
        .unwrap_or(created);
    let current = export
        .current_node
        .ok_or_else(|| bad(file, name, "current_node", "missing"))?;

    // From current_node up to the root, then reversed: the shown branch.
    let mut branch = Vec::new();
    let mut next = Some(current);
    while let Some(id) = next {
        if branch.len() > export.mapping.len() {
            return Err(bad(file, name, "mapping", "the parent links form a cycle"));
        }
        let node = export.mapping.get(&id).ok_or_else(|| {
            bad(
                file,
                name,
                &format!("mapping.{id}"),
                "named as a parent or current_node but missing",
            )
        })?;
        next = node.parent.clone();
        branch.push((id, node));
    }
    branch.reverse();

    let mut messages = Vec::new();
    let mut last_time = created;
    for (node_id, node) in branch {
        let Some(message) = &node.message else {
            continue;
        };
        if message.metadata.is_visually_hidden_from_conversation {
            continue;
        }
        let field = |f: &str| format!("mapping.{node_id}.message.{f}");
        let role = match message.author.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "system" | "developer" => Role::System,
            "tool" => Role::Tool,
            other => {
                return Err(bad(
                    file,
                    name,
                    &field("author.role"),
                    &format!("unknown role {other:?} (expected user, assistant, system or tool)"),
                ))
            }
        };
        let content = text(message);
        if content.trim().is_empty() {
            // Empty system prompts and empty tool-call shells are scaffolding.
            continue;
        }
        let written = match message.create_time {
            Some(seconds) => seconds_to_millis(seconds)
                .ok_or_else(|| bad(file, name, &field("create_time"), "not a time"))?,
            None => last_time,
        };
        last_time = written;
        let id = message.id.as_deref().unwrap_or(&node_id);
        messages.push(ImportedMessage {
            id: message_id(SOURCE, &source_id, id),
            role,
            content,
            written,
        });
    }
    Ok(Conversation {
        id: chat_id(SOURCE, &source_id),
        title: export.title.unwrap_or_default(),
        starred: false,
        created,
        updated,
        messages,
    })
}

/// A message's text: text parts as they are, placeholders for the rest.
fn text(message: &Message) -> String {
    let mut pieces: Vec<String> = Vec::new();
    if let Some(content) = &message.content {
        match content.content_type.as_str() {
            "text" | "multimodal_text" => {
                for part in &content.parts {
                    match part {
                        Value::String(text) => pieces.push(text.clone()),
                        Value::Object(object) => pieces.push(placeholder(object)),
                        Value::Null => {}
                        other => pieces.push(other.to_string()),
                    }
                }
            }
            "code" => pieces.extend(content.text.clone()),
            "execution_output" => pieces.push("[code interpreter output]".into()),
            other => pieces.push(match &content.text {
                Some(text) if !text.is_empty() => text.clone(),
                _ => format!("[{}]", other.replace('_', " ")),
            }),
        }
    }
    for attachment in &message.metadata.attachments {
        pieces.push(format!(
            "[file: {}]",
            attachment.name.as_deref().unwrap_or("unnamed")
        ));
    }
    pieces.retain(|p| !p.is_empty());
    pieces.join("\n")
}

/// A short placeholder for a non-text part, naming what it was.
fn placeholder(part: &serde_json::Map<String, Value>) -> String {
    let kind = part
        .get("content_type")
        .and_then(Value::as_str)
        .unwrap_or("attachment");
    match kind {
        "image_asset_pointer" => "[image]".into(),
        "audio_transcription" => part
            .get("text")
            .and_then(Value::as_str)
            .map_or_else(|| "[audio]".into(), str::to_string),
        "audio_asset_pointer" | "real_time_user_audio_video_asset_pointer" => "[audio]".into(),
        other => format!("[{}]", other.replace('_', " ")),
    }
}
