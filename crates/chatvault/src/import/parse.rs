//! What the importers share: a conversation as a source describes it and
//! how it becomes a chat, derived ids, the fenced-block marker, titles from
//! first words, and typed parsing of a list of conversations with errors
//! that name the conversation and the field.

use crate::{Attachment, Chat, ChatId, DeviceId, Error, MessageId, Result, Role};
use chatvault_core::{Hlc, Lww, NewMessage};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::Path;
use uuid::Uuid;

/// The namespace of ids derived from a source's conversation and message
/// ids. Never change it: re-imports would duplicate every chat.
const NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_52b3_8f2e_4b8e_9a57_2d0c_51f3_a9e4);

/// The device id in the stamps of imported state (below every real device's
/// edits at the same millisecond).
const IMPORT_DEVICE: DeviceId = DeviceId(0);

/// A conversation as a source describes it, before it becomes a [`Chat`].
pub(crate) struct Conversation {
    /// The chat id (derived, or chatvault's own).
    pub id: ChatId,
    /// The title.
    pub title: String,
    /// Starred (only chatvault's own format has stars).
    pub starred: bool,
    /// Creation time, Unix milliseconds.
    pub created: u64,
    /// Last update of title or star, Unix milliseconds.
    pub updated: u64,
    /// The messages in order: a parent before its children.
    pub messages: Vec<ImportedMessage>,
    /// The message whose branch the source shows (ChatGPT's
    /// `current_node`), for a conversation with branches.
    pub selected: Option<MessageId>,
}

/// A message as a source describes it.
pub(crate) struct ImportedMessage {
    /// The message id (derived, or chatvault's own).
    pub id: MessageId,
    /// Who wrote it.
    pub role: Role,
    /// Its text, with placeholders for what is not text.
    pub content: String,
    /// When it was written, Unix milliseconds.
    pub written: u64,
    /// The message it follows in the source's tree (`None`: a root, or a
    /// source without a tree).
    pub parent: Option<MessageId>,
    /// The message it is an alternative of (see [`place_branches`]).
    pub alternative_of: Option<MessageId>,
    /// Files of the export that the message carried, to attach.
    pub files: Vec<FoundFile>,
    /// The files it carries (chatvault's own JSON only: references to
    /// sealed bytes in the vault).
    pub attachments: Vec<Attachment>,
}

/// A file an export holds for a message.
#[derive(Clone, Debug)]
pub(crate) struct FoundFile {
    /// Its entry in the export zip.
    pub entry: String,
    /// Its name as the user knew it.
    pub name: String,
    /// Its media type.
    pub media_type: String,
}

impl ImportedMessage {
    /// A message of a source without a tree.
    pub(crate) fn flat(id: MessageId, role: Role, content: String, written: u64) -> Self {
        Self {
            id,
            role,
            content,
            written,
            parent: None,
            alternative_of: None,
            files: Vec::new(),
            attachments: Vec::new(),
        }
    }
}

/// A source's messages (each naming its parent; `None` or an id not among
/// them: a root) in tree order: a parent before its children, siblings
/// oldest first (by original time, then by their order in `messages`).
/// `None` if the parent links form a cycle.
pub(crate) fn tree_order(messages: Vec<ImportedMessage>) -> Option<Vec<ImportedMessage>> {
    let count = messages.len();
    let index: HashMap<MessageId, usize> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id, i))
        .collect();
    let mut roots = Vec::new();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        match message.parent.and_then(|p| index.get(&p)) {
            Some(&parent) if parent != i => children.entry(parent).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let by_time = |list: &mut Vec<usize>| list.sort_by_key(|&i| (messages[i].written, i));
    by_time(&mut roots);
    children.values_mut().for_each(by_time);
    let mut order = Vec::with_capacity(count);
    let mut stack: Vec<usize> = roots.into_iter().rev().collect();
    while let Some(i) = stack.pop() {
        order.push(i);
        if let Some(list) = children.get(&i) {
            stack.extend(list.iter().rev());
        }
    }
    if order.len() != count {
        return None;
    }
    let mut slots: Vec<Option<ImportedMessage>> = messages.into_iter().map(Some).collect();
    let ordered: Vec<ImportedMessage> = order.into_iter().filter_map(|i| slots[i].take()).collect();
    // A parent that is not among the messages makes its child a root.
    let known: std::collections::HashSet<MessageId> = ordered.iter().map(|m| m.id).collect();
    Some(
        ordered
            .into_iter()
            .map(|mut m| {
                m.parent = m.parent.filter(|p| known.contains(p) && *p != m.id);
                m
            })
            .collect(),
    )
}

/// Turns a source's tree into chatvault's places: the oldest child of each
/// message (and the oldest root) is the original, every later sibling an
/// alternative of it (a regenerated answer, an edited prompt), as the
/// source apps show them. `messages` must list a parent before its
/// children and siblings oldest first. A tree without a single branch
/// becomes a flat list (no places: the chat stays readable by releases
/// before branches). Returns whether there was a branch.
pub(crate) fn place_branches(messages: &mut [ImportedMessage]) -> bool {
    let mut first_child: HashMap<Option<MessageId>, MessageId> = HashMap::new();
    let mut branched = false;
    for message in messages.iter_mut() {
        match first_child.get(&message.parent) {
            Some(&original) => {
                message.alternative_of = Some(original);
                branched = true;
            }
            None => {
                first_child.insert(message.parent, message.id);
            }
        }
    }
    if !branched {
        for message in messages.iter_mut() {
            message.parent = None;
            message.alternative_of = None;
        }
    }
    branched
}

impl Conversation {
    /// The chat, stamped from the original times: messages in their
    /// original order even if the source's clock went backwards. A message
    /// is stamped after the message it follows (its parent, else the one
    /// before it in the list), so a message on the shown branch gets the
    /// same stamp whether the source had branches or not, and a re-import
    /// of a chat imported before branches existed places its messages.
    pub(crate) fn into_chat(self) -> Chat {
        let stamp = |millis| Hlc::new(millis, 0, IMPORT_DEVICE);
        let mut chat = Chat::new(self.id, self.title.clone(), stamp(self.created));
        let updated = stamp(self.updated.max(self.created));
        chat.title = Lww::new(self.title, updated);
        chat.starred = Lww::new(self.starred, updated);
        // Per message: its stamp (time, counter), and the stamp of what it
        // follows.
        type Stamp = (u64, u32);
        let mut placed: HashMap<MessageId, (Stamp, Stamp)> = HashMap::new();
        let mut chain = (0, 0);
        let mut latest = self.updated.max(self.created);
        for message in self.messages {
            let original = message.alternative_of.and_then(|o| placed.get(&o));
            let parent = message.parent.and_then(|p| placed.get(&p));
            let after = match (original, parent) {
                (Some(&(_, after)), _) => after,
                (None, Some(&(at, _))) => at,
                (None, None) => chain,
            };
            let at = (message.written.max(after.0), after.1.saturating_add(1));
            placed.insert(message.id, (at, after));
            if message.parent.is_none() && message.alternative_of.is_none() {
                chain = at;
            }
            latest = latest.max(at.0);
            chat.insert(NewMessage {
                id: message.id,
                role: message.role,
                content: message.content,
                created: Hlc::new(at.0, at.1, IMPORT_DEVICE),
                written: Some(message.written),
                parent: message.parent,
                alternative_of: message.alternative_of,
                attachments: message.attachments,
            });
        }
        if let Some(selected) = self.selected {
            // After every imported message, so that the source's choice
            // is what the current path shows.
            chat.selected = Lww::new(Some(selected), Hlc::new(latest, u32::MAX, IMPORT_DEVICE));
        }
        chat
    }
}

/// What the importers left out on purpose, counted so that the summary
/// line says so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Messages the source hides from its own view (ChatGPT's system
    /// prompt and custom-instruction context).
    pub hidden: usize,
    /// Messages with nothing in them (empty system prompts, empty tool-call
    /// shells).
    pub empty: usize,
}

impl Skipped {
    /// Both counts added up.
    pub fn add(&mut self, other: Skipped) {
        self.hidden += other.hidden;
        self.empty += other.empty;
    }

    /// `left out on purpose: …` naming each nonzero count, or `None` when
    /// nothing was left out.
    pub fn describe(&self) -> Option<String> {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let mut parts = Vec::new();
        if self.hidden > 0 {
            parts.push(format!(
                "{} hidden message{}",
                self.hidden,
                plural(self.hidden)
            ));
        }
        if self.empty > 0 {
            parts.push(format!(
                "{} empty message{}",
                self.empty,
                plural(self.empty)
            ));
        }
        (!parts.is_empty()).then(|| format!("left out on purpose: {}", parts.join(", ")))
    }
}

/// `body` as a fenced block with the info string `info`: the marker under
/// which an import keeps what is not plain text (thinking, tool calls and
/// results, a file's extracted text). The fence is three backticks, or one
/// more than the longest run of backticks in `body`, so the block always
/// closes where it should; line breaks and backticks in `info` become
/// spaces and quotes.
pub(crate) fn fenced(info: &str, body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in body.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat((longest + 1).max(3));
    let info: String = info
        .trim()
        .chars()
        .map(|c| match c {
            '`' => '\'',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect();
    let body = body.trim_end_matches(['\n', '\r']);
    if body.is_empty() {
        format!("{fence}{info}\n{fence}")
    } else {
        format!("{fence}{info}\n{body}\n{fence}")
    }
}

/// The most characters of a title made from a chat's first message.
const TITLE_CHARS: usize = 60;

/// The title of a conversation: the source's, or, when it has none (or a
/// blank one), the start of the first user message outside fenced blocks,
/// cut at a word boundary after at most [`TITLE_CHARS`] characters with
/// `…`; `(untitled)` when there is no such text either.
pub(crate) fn title_or_first_words(title: Option<String>, messages: &[ImportedMessage]) -> String {
    if let Some(title) = title.filter(|t| !t.trim().is_empty()) {
        return title;
    }
    let words: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| outside_fences(&m.content))
        .find(|words| !words.is_empty())
        .unwrap_or_default();
    if words.is_empty() {
        return "(untitled)".into();
    }
    let mut title = String::new();
    for word in &words {
        let extra = usize::from(!title.is_empty()) + word.chars().count();
        if title.chars().count() + extra > TITLE_CHARS {
            if title.is_empty() {
                title = word.chars().take(TITLE_CHARS).collect();
            }
            title.push('…');
            return title;
        }
        if !title.is_empty() {
            title.push(' ');
        }
        title.push_str(word);
    }
    title
}

/// The words of `text` outside its fenced blocks.
fn outside_fences(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let ticks = &trimmed[..trimmed.len() - trimmed.trim_start_matches('`').len()];
        match fence {
            Some(open) if ticks.len() >= open.len() && trimmed[ticks.len()..].trim().is_empty() => {
                fence = None
            }
            Some(_) => {}
            None if ticks.len() >= 3 => fence = Some(ticks),
            None => words.extend(line.split_whitespace()),
        }
    }
    words
}

/// A chat id derived from a source's conversation id.
pub(crate) fn chat_id(source: &str, conversation: &str) -> ChatId {
    ChatId(Uuid::new_v5(
        &NAMESPACE,
        format!("{source}\u{0}{conversation}").as_bytes(),
    ))
}

/// A message id derived from a source's conversation and message ids.
pub(crate) fn message_id(source: &str, conversation: &str, message: &str) -> MessageId {
    MessageId(Uuid::new_v5(
        &NAMESPACE,
        format!("{source}\u{0}{conversation}\u{0}{message}").as_bytes(),
    ))
}

/// What names a conversation in errors: the few fields that say which it
/// is, read on their own (everything else is skipped unread).
pub(crate) trait Naming: DeserializeOwned {
    /// `#n (id, "title")`, as far as the fields are there.
    fn name(&self, n: usize) -> String;
}

/// Where a list of conversations is in a file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListAt {
    /// The file is the list (ChatGPT, Claude).
    Top,
    /// At the key `chats` of the top-level object (chatvault's formats).
    Chats,
}

/// The list at `chats`, every other key skipped unread.
#[derive(serde::Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Chats<T> {
    chats: Vec<T>,
}

/// `json`'s list at `at` as `T`s, or the path of the bad field and what is
/// wrong with it.
fn list<T: DeserializeOwned>(
    json: &[u8],
    at: ListAt,
) -> std::result::Result<Vec<T>, (String, String)> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let parsed = match at {
        ListAt::Top => serde_path_to_error::deserialize::<_, Vec<T>>(&mut deserializer),
        ListAt::Chats => {
            serde_path_to_error::deserialize::<_, Chats<T>>(&mut deserializer).map(|c| c.chats)
        }
    };
    let list = parsed.map_err(|e| (e.path().to_string(), e.inner().to_string()))?;
    deserializer
        .end()
        .map_err(|e| (String::new(), e.to_string()))?;
    Ok(list)
}

/// Deserializes the list of conversations in `json` straight into `T`s,
/// checked in full: no `serde_json::Value` of the file is ever built (one
/// takes ten and more times the file's size in memory). A bad conversation
/// is named by its position and its [`Naming`] fields, with the path of
/// the bad field.
pub(crate) fn parse_list<T: DeserializeOwned, N: Naming>(
    file: &Path,
    json: &[u8],
    at: ListAt,
) -> Result<Vec<T>> {
    let (path, what) = match list::<T>(json, at) {
        Ok(list) => return Ok(list),
        Err(error) => error,
    };
    let inside = match at {
        ListAt::Top => Some(path.as_str()),
        ListAt::Chats => path.strip_prefix("chats"),
    };
    let element = inside
        .and_then(|rest| rest.strip_prefix('['))
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(n, field)| Some((n.parse::<usize>().ok()?, field.trim_start_matches('.'))));
    match element {
        Some((n, field)) => {
            // Only the naming fields of every conversation: small.
            let name = list::<N>(json, at)
                .ok()
                .and_then(|names| names.get(n).map(|named| named.name(n)))
                .unwrap_or_else(|| format!("#{n}"));
            Err(bad(file, &name, field, &what))
        }
        None if path.is_empty() || path == "." => Err(Error::invalid(format!(
            "{}: {what}; nothing was imported",
            file.display()
        ))),
        None => Err(Error::invalid(format!(
            "{}: field `{path}`: {what}; nothing was imported",
            file.display()
        ))),
    }
}

/// The error for a bad field of a conversation.
pub(crate) fn bad(file: &Path, conversation: &str, field: &str, what: &str) -> Error {
    Error::invalid(format!(
        "{}: conversation {conversation}, field `{field}`: {what}; nothing was imported \
         (fix or remove that conversation and import again)",
        file.display()
    ))
}

/// Unix milliseconds from fractional seconds (ChatGPT's times).
pub(crate) fn seconds_to_millis(seconds: f64) -> Option<u64> {
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1000.0).round() as u64)
}

/// Unix milliseconds from an RFC 3339 time.
pub(crate) fn rfc3339_millis(text: &str) -> Option<u64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
}

#[cfg(test)]
mod tests {
    use super::{fenced, title_or_first_words, ImportedMessage};
    use crate::{MessageId, Role};
    use uuid::Uuid;

    fn user(content: &str) -> ImportedMessage {
        ImportedMessage::flat(MessageId(Uuid::nil()), Role::User, content.into(), 0)
    }

    #[test]
    fn a_fence_is_longer_than_any_backtick_run_inside_and_its_info_one_line() {
        assert_eq!(fenced("thinking", "plain\n"), "```thinking\nplain\n```");
        assert_eq!(fenced("tool_result", ""), "```tool_result\n```");
        assert_eq!(
            fenced("attachment a`b\nc.md", "x ````` y"),
            "``````attachment a'b c.md\nx ````` y\n``````"
        );
    }

    #[test]
    fn a_title_from_the_first_message_skips_fenced_blocks_and_cuts_at_a_word() {
        let fenced_first = user("```attachment a.txt\nfile words\n```\nWhat is in it?");
        assert_eq!(
            title_or_first_words(Some(" ".into()), &[fenced_first]),
            "What is in it?"
        );
        let long_word = "x".repeat(70);
        assert_eq!(
            title_or_first_words(None, &[user(&long_word)]),
            format!("{}…", "x".repeat(60))
        );
        assert_eq!(title_or_first_words(None, &[user("  \n")]), "(untitled)");
        assert_eq!(title_or_first_words(Some("Kept".into()), &[]), "Kept");
    }
}
