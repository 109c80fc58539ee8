//! ChatGPT data export (`conversations.json`, alone or in the downloaded
//! zip): a list of conversations, each a tree of nodes in `mapping`
//! (`parent`/`children`). Every branch is kept: the children of a message
//! are alternatives of one another (regenerated answers, edited prompts),
//! the oldest the original, and the branch of `current_node` is the one
//! shown. Hidden scaffolding
//! (`metadata.is_visually_hidden_from_conversation`) and empty system
//! messages are skipped and counted ([`Skipped`]); what hung under them
//! moves up to their nearest shown ancestor. Text parts are kept; code the assistant sent to a tool
//! and the tool's output are kept in marked fenced blocks
//! (```` ```tool_use RECIPIENT ````, ```` ```tool_result TOOL ````), a
//! reasoning model's thoughts in ```` ```thinking ```` ([`fenced`]); other
//! parts (images, files, browsing results) become a short placeholder
//! naming what was there. The export carries no text of attached files
//! (only their names, kept as `[file: NAME]`). A conversation without a
//! title is titled from its first message ([`title_or_first_words`]).

use super::files::{ExportFile, FileIndex};
use super::parse::{
    bad, chat_id, fenced, message_id, parse_list, place_branches, seconds_to_millis,
    title_or_first_words, tree_order, Conversation, FoundFile, ImportedMessage, ListAt, Naming,
    Skipped,
};
use crate::attachments::media_type_of;
use crate::{Chat, Result, Role};
use serde::Deserialize;
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
    /// Where an assistant message went: `all` (the user) or a tool.
    #[serde(default)]
    recipient: AnyStr,
}

#[derive(Deserialize)]
struct Author {
    role: String,
    /// A tool message's tool.
    #[serde(default)]
    name: AnyStr,
}

#[derive(Deserialize)]
struct Content {
    content_type: String,
    #[serde(default)]
    parts: Vec<Part>,
    text: Option<String>,
    /// A reasoning model's thoughts (`content_type` `thoughts`):
    /// `summary` and `content` of each.
    #[serde(default)]
    thoughts: Option<serde_json::Value>,
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
    #[serde(default)]
    id: AnyStr,
    name: Option<String>,
    #[serde(default)]
    mime_type: AnyStr,
}

/// Reads every conversation of a ChatGPT export's `conversations.json`
/// (`json`, read from `file`, which errors name), in full, before anything
/// is saved; with what was left out on purpose.
///
/// Errors: [`Error::InvalidInput`](crate::Error::InvalidInput) naming the
/// conversation and the field that is wrong.
pub fn read(file: &Path, json: &[u8]) -> Result<(Vec<Chat>, Skipped)> {
    read_with(file, json, &FileIndex::default()).map(|(chats, skipped, _)| (chats, skipped))
}

/// [`read`], finding the files the messages name in `files` (the export
/// zip's entries): a file found there is returned to attach instead of its
/// placeholder in the text.
pub(crate) fn read_with(
    file: &Path,
    json: &[u8],
    files: &FileIndex,
) -> Result<(Vec<Chat>, Skipped, Vec<ExportFile>)> {
    let mut found = Vec::new();
    let mut skipped = Skipped::default();
    let conversations = parse_list::<Export, Names>(file, json, ListAt::Top)?
        .into_iter()
        .enumerate()
        .map(|(n, export)| {
            let name = Names {
                title: export.title.clone(),
                conversation_id: export.conversation_id.clone(),
                id: export.id.clone(),
            }
            .name(n);
            let (mut conversation, left_out) = conversation(file, &name, export, files)?;
            skipped.add(left_out);
            for message in &mut conversation.messages {
                for file in std::mem::take(&mut message.files) {
                    found.push(ExportFile {
                        chat: conversation.id,
                        message: message.id,
                        entry: file.entry,
                        name: file.name,
                        media_type: file.media_type,
                    });
                }
            }
            Ok(conversation.into_chat())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((conversations, skipped, found))
}

/// The fields that name a conversation in errors.
#[derive(Deserialize)]
struct Names {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

impl Naming for Names {
    /// Its position, id and title.
    fn name(&self, n: usize) -> String {
        let id = self
            .conversation_id
            .as_deref()
            .or(self.id.as_deref())
            .unwrap_or("?");
        match &self.title {
            Some(title) => format!("#{n} ({id}, {title:?})"),
            None => format!("#{n} ({id})"),
        }
    }
}

/// A node worth showing: its role, text, own time (if any) and files.
type Shown = (Role, String, Option<u64>, Vec<FoundFile>);

fn conversation(
    file: &Path,
    name: &str,
    export: Export,
    files: &FileIndex,
) -> Result<(Conversation, Skipped)> {
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

    let current = export
        .mapping
        .contains_key(&current)
        .then_some(current)
        .ok_or_else(|| {
            bad(
                file,
                name,
                "current_node",
                "names a node that is not in mapping",
            )
        })?;

    // Every node with a message worth showing, in a fixed order.
    let mut skipped = Skipped::default();
    let mut node_ids: Vec<&String> = export.mapping.keys().collect();
    node_ids.sort();
    let mut visible: HashMap<&str, Shown> = HashMap::new();
    for node_id in node_ids {
        let Some(message) = export.mapping.get(node_id).and_then(|n| n.message.as_ref()) else {
            continue;
        };
        if message.metadata.is_visually_hidden_from_conversation {
            skipped.hidden += 1;
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
        let (content, found) = text(message, files);
        if content.trim().is_empty() && found.is_empty() {
            // Empty system prompts and empty tool-call shells are scaffolding.
            skipped.empty += 1;
            continue;
        }
        let written = match message.create_time {
            Some(seconds) => Some(
                seconds_to_millis(seconds)
                    .ok_or_else(|| bad(file, name, &field("create_time"), "not a time"))?,
            ),
            None => None,
        };
        visible.insert(node_id, (role, content, written, found));
    }

    // Each shown node hangs under its nearest shown ancestor (hidden
    // scaffolding between them drops out), and takes that ancestor's time
    // when it has none of its own.
    let up = |node_id: &str| -> Result<(Option<&str>, u64)> {
        let mut steps = 0;
        let mut time = None;
        let mut parent_of = export
            .mapping
            .get(node_id)
            .and_then(|n| n.parent.as_deref());
        while let Some(parent) = parent_of {
            steps += 1;
            if steps > export.mapping.len() {
                return Err(bad(file, name, "mapping", "the parent links form a cycle"));
            }
            let node = export.mapping.get(parent).ok_or_else(|| {
                bad(
                    file,
                    name,
                    &format!("mapping.{parent}"),
                    "named as a parent but missing",
                )
            })?;
            if let Some((_, _, written, _)) = visible.get(parent) {
                return Ok((Some(parent), written.or(time).unwrap_or(created)));
            }
            time = time.or_else(|| {
                node.message
                    .as_ref()
                    .and_then(|m| m.create_time)
                    .and_then(seconds_to_millis)
            });
            parent_of = node.parent.as_deref();
        }
        Ok((None, time.unwrap_or(created)))
    };
    let derived = |node_id: &str| {
        let message = export.mapping.get(node_id).and_then(|n| n.message.as_ref());
        let id = message.and_then(|m| m.id.as_deref()).unwrap_or(node_id);
        message_id(SOURCE, &source_id, id)
    };
    let mut messages = Vec::with_capacity(visible.len());
    for (node_id, (role, content, written, found)) in &visible {
        let (parent, inherited) = up(node_id)?;
        let mut message = ImportedMessage::flat(
            derived(node_id),
            role.clone(),
            content.clone(),
            written.unwrap_or(inherited),
        );
        message.parent = parent.map(derived);
        message.files = found.clone();
        messages.push(message);
    }
    // A fixed order before sorting into the tree, whatever the map's.
    messages.sort_by_key(|m| (m.written, m.id));
    let mut messages = tree_order(messages)
        .ok_or_else(|| bad(file, name, "mapping", "the parent links form a cycle"))?;
    let selected = if place_branches(&mut messages) {
        // The branch ChatGPT shows: current_node, or its nearest shown
        // ancestor.
        let shown = if visible.contains_key(current.as_str()) {
            Some(current.as_str())
        } else {
            up(&current)?.0
        };
        shown.map(derived)
    } else {
        None
    };
    let title = title_or_first_words(export.title, &messages);
    Ok((
        Conversation {
            id: chat_id(SOURCE, &source_id),
            title,
            starred: false,
            created,
            updated,
            messages,
            selected,
        },
        skipped,
    ))
}

/// A message's text: text parts as they are, tool calls, tool output and
/// thoughts in marked fenced blocks, placeholders for the rest; and the
/// files of the message found in `files` (no placeholder for those).
fn text(message: &Message, files: &FileIndex) -> (String, Vec<FoundFile>) {
    let mut pieces: Vec<String> = Vec::new();
    let mut found: Vec<FoundFile> = Vec::new();
    let find = |found: &mut Vec<FoundFile>,
                pointer: Option<&str>,
                name: Option<&str>,
                media_type: Option<&str>| {
        let (entry, original) = files.find(pointer?)?;
        if found.iter().any(|f| f.entry == entry) {
            return Some(());
        }
        let name = name.map_or(original, str::to_string);
        let media_type =
            media_type.map_or_else(|| media_type_of(&name).to_string(), str::to_string);
        found.push(FoundFile {
            entry: entry.to_string(),
            name,
            media_type,
        });
        Some(())
    };
    if let Some(content) = &message.content {
        match content.content_type.as_str() {
            "text" | "multimodal_text" => {
                for part in &content.parts {
                    match part {
                        Part::Text(text) => pieces.push(text.clone()),
                        Part::Object {
                            content_type,
                            text,
                            asset_pointer,
                        } => {
                            if find(&mut found, asset_pointer.as_deref(), None, None).is_none() {
                                pieces.push(placeholder(content_type.as_deref(), text.as_deref()))
                            }
                        }
                        Part::Null => {}
                        Part::Other(text) => pieces.push(text.clone()),
                    }
                }
            }
            "code" => {
                let code = content.text.clone().unwrap_or_default();
                pieces.push(match message.recipient.0.as_deref() {
                    Some(tool) if tool != "all" => fenced(&format!("tool_use {tool}"), &code),
                    _ => code,
                });
            }
            "execution_output" => pieces.push(fenced(
                &format!(
                    "tool_result {}",
                    message.author.name.0.as_deref().unwrap_or("")
                ),
                content.text.as_deref().unwrap_or(""),
            )),
            "thoughts" => {
                let thoughts = content
                    .thoughts
                    .as_ref()
                    .map_or_else(String::new, thoughts_text);
                pieces.push(fenced("thinking", &thoughts));
            }
            other => pieces.push(match &content.text {
                Some(text) if !text.is_empty() => text.clone(),
                _ => format!("[{}]", other.replace('_', " ")),
            }),
        }
    }
    for attachment in &message.metadata.attachments {
        let name = attachment.name.as_deref();
        let media_type = attachment.mime_type.0.as_deref();
        if find(&mut found, attachment.id.0.as_deref(), name, media_type).is_none() {
            pieces.push(format!("[file: {}]", name.unwrap_or("unnamed")));
        }
    }
    pieces.retain(|p| !p.is_empty());
    (pieces.join("\n"), found)
}

/// The text of a `thoughts` list: each thought's `summary` and `content`,
/// a blank line between thoughts.
fn thoughts_text(thoughts: &serde_json::Value) -> String {
    let field = |thought: &serde_json::Value, key: &str| {
        thought
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    };
    let pieces: Vec<String> = thoughts
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|thought| {
            [field(thought, "summary"), field(thought, "content")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|t| !t.is_empty())
        .collect();
    pieces.join("\n\n")
}

/// A short placeholder for a non-text part, naming what it was.
fn placeholder(content_type: Option<&str>, text: Option<&str>) -> String {
    match content_type.unwrap_or("attachment") {
        "image_asset_pointer" => "[image]".into(),
        "audio_transcription" => text.map_or_else(|| "[audio]".into(), str::to_string),
        "audio_asset_pointer" | "real_time_user_audio_video_asset_pointer" => "[audio]".into(),
        other => format!("[{}]", other.replace('_', " ")),
    }
}

/// One element of a message's `parts`, read without building a
/// `serde_json::Value` of it: text as it is, an object as the two fields
/// its placeholder needs (the rest skipped unread), a number or boolean as
/// its JSON text, a list as a placeholder.
enum Part {
    Text(String),
    Object {
        content_type: Option<String>,
        text: Option<String>,
        asset_pointer: Option<String>,
    },
    Null,
    Other(String),
}

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct PartVisitor;
        impl<'de> Visitor<'de> for PartVisitor {
            type Value = Part;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a message part")
            }
            fn visit_str<E>(self, text: &str) -> std::result::Result<Part, E> {
                Ok(Part::Text(text.to_string()))
            }
            fn visit_string<E>(self, text: String) -> std::result::Result<Part, E> {
                Ok(Part::Text(text))
            }
            fn visit_unit<E>(self) -> std::result::Result<Part, E> {
                Ok(Part::Null)
            }
            fn visit_none<E>(self) -> std::result::Result<Part, E> {
                Ok(Part::Null)
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Part, E> {
                Ok(Part::Other(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Part, E> {
                Ok(Part::Other(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Part, E> {
                Ok(Part::Other(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Part, E> {
                Ok(Part::Other(
                    serde_json::Number::from_f64(v)
                        .map_or_else(|| "null".to_string(), |n| n.to_string()),
                ))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Part, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Part::Other("[list]".into()))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Part, A::Error> {
                let (mut content_type, mut text, mut asset_pointer) = (None, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "content_type" => content_type = map.next_value::<AnyStr>()?.0,
                        "text" => text = map.next_value::<AnyStr>()?.0,
                        "asset_pointer" => asset_pointer = map.next_value::<AnyStr>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Part::Object {
                    content_type,
                    text,
                    asset_pointer,
                })
            }
        }
        deserializer.deserialize_any(PartVisitor)
    }
}

/// A string where there is one; anything else (skipped unread) is `None`.
#[derive(Default)]
struct AnyStr(Option<String>);

impl<'de> Deserialize<'de> for AnyStr {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct AnyStrVisitor;
        impl<'de> Visitor<'de> for AnyStrVisitor {
            type Value = AnyStr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, text: &str) -> std::result::Result<AnyStr, E> {
                Ok(AnyStr(Some(text.to_string())))
            }
            fn visit_string<E>(self, text: String) -> std::result::Result<AnyStr, E> {
                Ok(AnyStr(Some(text)))
            }
            fn visit_unit<E>(self) -> std::result::Result<AnyStr, E> {
                Ok(AnyStr(None))
            }
            fn visit_none<E>(self) -> std::result::Result<AnyStr, E> {
                Ok(AnyStr(None))
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<AnyStr, E> {
                Ok(AnyStr(None))
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<AnyStr, E> {
                Ok(AnyStr(None))
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<AnyStr, E> {
                Ok(AnyStr(None))
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<AnyStr, E> {
                Ok(AnyStr(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<AnyStr, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(AnyStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<AnyStr, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyStr(None))
            }
        }
        deserializer.deserialize_any(AnyStrVisitor)
    }
}
