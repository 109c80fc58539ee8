//! The compact binary encodings: of a [`ChatSummary`], shared by summary
//! format 2 (`codec`) and the sidebar snapshot (`engine::snapshot`), and of
//! a whole [`Chat`], chat body format 5 (`codec`).
//!
//! Hand-written rather than serde-based: a handful of fixed fields, a
//! general binary format crate would be a new dependency for that, and JSON
//! is what made opening summaries and chats slow. Layout (integers
//! big-endian):
//!
//! ```text
//! summary = id [16] ‖ created hlc ‖ last_activity hlc ‖ message_count u32 ‖
//!           flags u8 (bit 0: starred, bit 1: deleted hlc follows) ‖
//!           [deleted hlc] ‖ title_len u32 ‖ title (UTF-8)
//! hlc     = millis u64 ‖ counter u32 ‖ device u64
//!
//! chat    = text_len u32 ‖ text ‖ id [16] ‖ created hlc ‖
//!           title_len u32 ‖ title hlc ‖ starred hlc ‖
//!           flags u8 (bit 0: starred, bit 1: deleted hlc follows,
//!                     bit 2: selected id follows) ‖
//!           [deleted hlc] ‖ selected hlc ‖ [selected id [16]] ‖
//!           message_count u32 ‖ message* (in (created, id) order)
//! message = id [16] ‖ created hlc ‖ body hlc ‖
//!           role u8 (0 user, 1 assistant, 2 system, 3 tool) ‖
//!           content_len u32 ‖ attachment_count u32 ‖ attachment* ‖
//!           flags u8 (bit 0: deleted hlc, bit 1: written u64,
//!                     bit 2: parent id, bit 3: alternative_of id follow) ‖
//!           [deleted hlc] ‖ [written u64] ‖ [parent [16]] ‖
//!           [alternative_of [16]]
//! attachment = id [32] ‖ name_len u32 ‖ media_type_len u32 ‖ size u64
//! ```
//!
//! A chat's strings (title, then per message its content and its
//! attachments' names and media types) are not inline: they are the
//! `text` at the front, concatenated in the order the structure names
//! their lengths. So the text is UTF-8 as a whole, and a search prefilter
//! folds and scans it exactly as it would a JSON body, without decoding
//! (`codec::body_text`).
//!
//! The readers check every length and count against the bytes left before
//! allocating, refuse unknown flags and roles, messages out of order and
//! bytes left over: any input is a value or an error, never a panic, and a
//! chat decodes only from the bytes it encodes to.

use crate::chat::{Attachment, Chat, ChatSummary, Lww, Message, MessageBody, Role};
use crate::hlc::Hlc;
use crate::ids::{BlobId, ChatId, DeviceId, MessageId};
use crate::{Error, Result};
use std::collections::BTreeMap;

const FLAG_STARRED: u8 = 1;
const FLAG_DELETED: u8 = 2;
const HLC_LEN: usize = 8 + 4 + 8;
/// The smallest encoded summary: id, two stamps, count, flags, empty title.
pub(crate) const MIN_SUMMARY_LEN: usize = 16 + 2 * HLC_LEN + 4 + 1 + 4;

/// Appends `hlc` (20 bytes).
pub(crate) fn put_hlc(out: &mut Vec<u8>, hlc: &Hlc) {
    out.extend_from_slice(&hlc.millis.to_be_bytes());
    out.extend_from_slice(&hlc.counter.to_be_bytes());
    out.extend_from_slice(&hlc.device.0.to_be_bytes());
}

/// Appends the binary encoding of `s` to `out`.
///
/// Errors: [`Error::InvalidInput`] for a title over 4 GiB.
pub(crate) fn put_summary(out: &mut Vec<u8>, s: &ChatSummary) -> Result<()> {
    out.extend_from_slice(s.id.as_bytes());
    put_hlc(out, &s.created);
    put_hlc(out, &s.last_activity);
    out.extend_from_slice(&s.message_count.to_be_bytes());
    let mut flags = 0;
    if s.starred {
        flags |= FLAG_STARRED;
    }
    if s.deleted.is_some() {
        flags |= FLAG_DELETED;
    }
    out.push(flags);
    if let Some(deleted) = &s.deleted {
        put_hlc(out, deleted);
    }
    let title_len = u32::try_from(s.title.len())
        .map_err(|_| Error::invalid(format!("the title of chat {} is too long", s.id)))?;
    out.extend_from_slice(&title_len.to_be_bytes());
    out.extend_from_slice(s.title.as_bytes());
    Ok(())
}

const CHAT_STARRED: u8 = 1;
const CHAT_DELETED: u8 = 2;
const CHAT_SELECTED: u8 = 4;
const MESSAGE_DELETED: u8 = 1;
const MESSAGE_WRITTEN: u8 = 2;
const MESSAGE_PARENT: u8 = 4;
const MESSAGE_ALTERNATIVE_OF: u8 = 8;
/// The smallest encoded message: id, two stamps, role, two counts, flags.
const MIN_MESSAGE_LEN: usize = 16 + 2 * HLC_LEN + 1 + 4 + 4 + 1;
/// An encoded attachment: id, two lengths, size.
const ATTACHMENT_LEN: usize = 32 + 4 + 4 + 8;

fn put_u32_len(out: &mut Vec<u8>, len: usize, what: impl FnOnce() -> String) -> Result<()> {
    let len = u32::try_from(len).map_err(|_| Error::invalid(format!("{} is too long", what())))?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

fn role_byte(role: &Role) -> u8 {
    match role {
        Role::User => 0,
        Role::Assistant => 1,
        Role::System => 2,
        Role::Tool => 3,
    }
}

/// Appends the binary encoding of `chat` (the layout in the module docs)
/// to `out`. The same state always gives the same bytes.
///
/// Errors: [`Error::InvalidInput`] for a string, a text or a count over
/// 4 GiB.
pub(crate) fn put_chat(out: &mut Vec<u8>, chat: &Chat) -> Result<()> {
    let mut messages: Vec<&Message> = chat.messages.values().collect();
    messages.sort_by_key(|m| (m.created, m.id));
    let strings = || {
        std::iter::once(chat.title.value.as_str()).chain(messages.iter().flat_map(|m| {
            std::iter::once(m.content()).chain(
                m.attachments()
                    .iter()
                    .flat_map(|a| [a.name.as_str(), a.media_type.as_str()]),
            )
        }))
    };
    let text_len: usize = strings().map(str::len).sum();
    out.reserve(4 + text_len + 16 + 3 * HLC_LEN + messages.len() * MIN_MESSAGE_LEN);
    put_u32_len(out, text_len, || format!("the text of chat {}", chat.id))?;
    for s in strings() {
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(chat.id.as_bytes());
    put_hlc(out, &chat.created);
    put_u32_len(out, chat.title.value.len(), || {
        format!("the title of chat {}", chat.id)
    })?;
    put_hlc(out, &chat.title.at);
    put_hlc(out, &chat.starred.at);
    let mut flags = 0;
    if chat.starred.value {
        flags |= CHAT_STARRED;
    }
    if chat.deleted.is_some() {
        flags |= CHAT_DELETED;
    }
    if chat.selected.value.is_some() {
        flags |= CHAT_SELECTED;
    }
    out.push(flags);
    if let Some(deleted) = &chat.deleted {
        put_hlc(out, deleted);
    }
    put_hlc(out, &chat.selected.at);
    if let Some(selected) = &chat.selected.value {
        out.extend_from_slice(selected.as_bytes());
    }
    put_u32_len(out, messages.len(), || {
        format!("the message list of chat {}", chat.id)
    })?;
    for m in messages {
        put_message(out, m)?;
    }
    Ok(())
}

/// Appends a run of messages, as a body chunk holds them (chat format 6,
/// `chunked`): `text_len u32 ‖ text ‖ message_count u32 ‖ message*`, the
/// text being every string of the messages in the order they name them.
/// `messages` must be in (created, id) order; the reader refuses any other.
///
/// Errors: [`Error::InvalidInput`] for a text or a count over 4 GiB.
pub(crate) fn put_messages(out: &mut Vec<u8>, messages: &[&Message]) -> Result<()> {
    let strings = || {
        messages.iter().flat_map(|m| {
            std::iter::once(m.content()).chain(
                m.attachments()
                    .iter()
                    .flat_map(|a| [a.name.as_str(), a.media_type.as_str()]),
            )
        })
    };
    let text_len: usize = strings().map(str::len).sum();
    out.reserve(8 + text_len + messages.len() * MIN_MESSAGE_LEN);
    put_u32_len(out, text_len, || "the text of a body chunk".to_owned())?;
    for s in strings() {
        out.extend_from_slice(s.as_bytes());
    }
    put_u32_len(out, messages.len(), || {
        "the message list of a body chunk".to_owned()
    })?;
    for m in messages {
        put_message(out, m)?;
    }
    Ok(())
}

/// The bytes [`put_message`] and the text of [`put_messages`] give `m`.
pub(crate) fn message_len(m: &Message) -> usize {
    let attachments = m.attachments();
    let strings: usize = m.content().len()
        + attachments
            .iter()
            .map(|a| a.name.len() + a.media_type.len())
            .sum::<usize>();
    let optional = m.deleted.map_or(0, |_| HLC_LEN)
        + m.written.map_or(0, |_| 8)
        + [&m.parent, &m.alternative_of].into_iter().flatten().count() * 16;
    MIN_MESSAGE_LEN + attachments.len() * ATTACHMENT_LEN + optional + strings
}

fn put_message(out: &mut Vec<u8>, m: &Message) -> Result<()> {
    out.extend_from_slice(m.id.as_bytes());
    put_hlc(out, &m.created);
    put_hlc(out, &m.body.at);
    out.push(role_byte(m.role()));
    put_u32_len(out, m.content().len(), || format!("message {}", m.id))?;
    let attachments = m.attachments();
    put_u32_len(out, attachments.len(), || {
        format!("the attachment list of message {}", m.id)
    })?;
    for a in attachments {
        out.extend_from_slice(a.id.as_bytes());
        put_u32_len(out, a.name.len(), || format!("attachment name {}", a.name))?;
        put_u32_len(out, a.media_type.len(), || {
            format!("the media type of attachment {}", a.name)
        })?;
        out.extend_from_slice(&a.size.to_be_bytes());
    }
    let mut flags = 0;
    for (set, flag) in [
        (m.deleted.is_some(), MESSAGE_DELETED),
        (m.written.is_some(), MESSAGE_WRITTEN),
        (m.parent.is_some(), MESSAGE_PARENT),
        (m.alternative_of.is_some(), MESSAGE_ALTERNATIVE_OF),
    ] {
        if set {
            flags |= flag;
        }
    }
    out.push(flags);
    if let Some(deleted) = &m.deleted {
        put_hlc(out, deleted);
    }
    if let Some(written) = m.written {
        out.extend_from_slice(&written.to_be_bytes());
    }
    for id in [&m.parent, &m.alternative_of].into_iter().flatten() {
        out.extend_from_slice(id.as_bytes());
    }
    Ok(())
}

/// The text of a binary chat (`bytes` after the format byte): every string
/// of the chat, concatenated; `None` if `bytes` is too short to hold the
/// text it announces.
pub(crate) fn chat_text(bytes: &[u8]) -> Option<&[u8]> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    rest.get(..len)
}

/// The strings of a binary chat, handed out in order.
struct Text<'a> {
    rest: &'a str,
}

impl<'a> Text<'a> {
    /// Refuses text left after the last string.
    fn finish(&self, reader: &Reader<'_>) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(reader.malformed("text left over after the last string"))
        }
    }

    fn next(&mut self, reader: &Reader<'_>, len: usize) -> Result<String> {
        match (self.rest.get(..len), self.rest.get(len..)) {
            (Some(head), Some(tail)) => {
                self.rest = tail;
                Ok(head.to_owned())
            }
            _ => Err(reader.malformed("a string runs past the text or splits a char")),
        }
    }
}

/// Reads a binary encoding front to back; errors name `what` is read.
pub(crate) struct Reader<'a> {
    /// The bytes not read yet.
    pub(crate) bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader of `bytes`, which hold a `what` (for error messages).
    pub(crate) fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Self { bytes, what }
    }

    /// [`Error::Corrupt`] about the value being read.
    pub(crate) fn malformed(&self, why: impl Into<String>) -> Error {
        Error::corrupt(self.what, why)
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(self.malformed("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| self.malformed("truncated"))
    }

    /// The next byte.
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// The next big-endian u32.
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// The next big-endian u64.
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// The next HLC (millis, counter, device).
    pub(crate) fn hlc(&mut self) -> Result<Hlc> {
        Ok(Hlc::new(self.u64()?, self.u32()?, DeviceId(self.u64()?)))
    }

    /// The next big-endian u32 as a length or count.
    pub(crate) fn len(&mut self) -> Result<usize> {
        usize::try_from(self.u32()?).map_err(|_| self.malformed("length out of range"))
    }

    /// A count of items at least `min_len` bytes each, refused when the
    /// bytes left cannot hold that many (before anything is allocated).
    pub(crate) fn count(&mut self, min_len: usize) -> Result<usize> {
        let count = self.len()?;
        if count.saturating_mul(min_len) > self.bytes.len() {
            return Err(self.malformed(format!("{count} items cannot fit the bytes left")));
        }
        Ok(count)
    }

    /// The next value if `present`, else `None`.
    pub(crate) fn option<T>(
        &mut self,
        present: bool,
        read: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<Option<T>> {
        if present {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The next message id.
    pub(crate) fn message_id(&mut self) -> Result<MessageId> {
        Ok(MessageId::from_bytes(self.array()?))
    }

    /// Refuses flag bits outside `known`.
    fn flags(&mut self, known: u8) -> Result<u8> {
        let flags = self.u8()?;
        if flags & !known != 0 {
            return Err(self.malformed(format!("unknown flags {flags:#04x}")));
        }
        Ok(flags)
    }

    /// The next chat, as [`put_chat`] wrote it; every byte must be used.
    pub(crate) fn chat(&mut self) -> Result<Chat> {
        let chat = self.chat_then_more()?;
        self.finish()?;
        Ok(chat)
    }

    /// The next run of messages, as [`put_messages`] wrote it, in
    /// (created, id) order.
    pub(crate) fn messages(&mut self) -> Result<Vec<Message>> {
        let mut text = self.text()?;
        let messages = self.ordered_messages(&mut text)?;
        text.finish(self)?;
        Ok(messages)
    }

    /// The next text block (`text_len u32 ‖ text`).
    fn text(&mut self) -> Result<Text<'a>> {
        let text_len = self.len()?;
        let text = std::str::from_utf8(self.take(text_len)?)
            .map_err(|_| self.malformed("the text is not UTF-8"))?;
        Ok(Text { rest: text })
    }

    /// The next `count u32 ‖ message*`, strictly in (created, id) order,
    /// their strings taken from `text`.
    fn ordered_messages(&mut self, text: &mut Text<'_>) -> Result<Vec<Message>> {
        let count = self.count(MIN_MESSAGE_LEN)?;
        let mut messages: Vec<Message> = Vec::with_capacity(count);
        for _ in 0..count {
            let message = self.message(text)?;
            if let Some(p) = messages.last() {
                if (p.created, p.id) >= (message.created, message.id) {
                    return Err(self.malformed(format!("message {} is out of order", message.id)));
                }
            }
            messages.push(message);
        }
        Ok(messages)
    }

    /// The next chat, as [`put_chat`] wrote it, with bytes allowed after it.
    pub(crate) fn chat_then_more(&mut self) -> Result<Chat> {
        let mut text = self.text()?;
        let id = ChatId::from_bytes(self.array()?);
        let created = self.hlc()?;
        let title_len = self.len()?;
        let title = Lww::new(text.next(self, title_len)?, self.hlc()?);
        let starred_at = self.hlc()?;
        let flags = self.flags(CHAT_STARRED | CHAT_DELETED | CHAT_SELECTED)?;
        let deleted = self.option(flags & CHAT_DELETED != 0, Self::hlc)?;
        let selected_at = self.hlc()?;
        let selected = self.option(flags & CHAT_SELECTED != 0, Self::message_id)?;
        let mut messages = BTreeMap::new();
        for message in self.ordered_messages(&mut text)? {
            if messages.insert(message.id, message).is_some() {
                return Err(self.malformed("a message id appears twice"));
            }
        }
        text.finish(self)?;
        Ok(Chat {
            id,
            created,
            title,
            starred: Lww::new(flags & CHAT_STARRED != 0, starred_at),
            messages,
            deleted,
            selected: Lww::new(selected, selected_at),
        })
    }

    fn message(&mut self, text: &mut Text<'_>) -> Result<Message> {
        let id = self.message_id()?;
        let created = self.hlc()?;
        let at = self.hlc()?;
        let role = match self.u8()? {
            0 => Role::User,
            1 => Role::Assistant,
            2 => Role::System,
            3 => Role::Tool,
            other => return Err(self.malformed(format!("unknown role {other}"))),
        };
        let content_len = self.len()?;
        let content = text.next(self, content_len)?;
        let count = self.count(ATTACHMENT_LEN)?;
        let mut attachments = Vec::with_capacity(count);
        for _ in 0..count {
            let blob = BlobId(self.array()?);
            let name_len = self.len()?;
            let media_type_len = self.len()?;
            attachments.push(Attachment {
                id: blob,
                name: text.next(self, name_len)?,
                media_type: text.next(self, media_type_len)?,
                size: self.u64()?,
            });
        }
        let flags = self
            .flags(MESSAGE_DELETED | MESSAGE_WRITTEN | MESSAGE_PARENT | MESSAGE_ALTERNATIVE_OF)?;
        Ok(Message {
            id,
            created,
            body: Lww::new(
                MessageBody {
                    role,
                    content,
                    attachments,
                },
                at,
            ),
            deleted: self.option(flags & MESSAGE_DELETED != 0, Self::hlc)?,
            written: self.option(flags & MESSAGE_WRITTEN != 0, Self::u64)?,
            parent: self.option(flags & MESSAGE_PARENT != 0, Self::message_id)?,
            alternative_of: self.option(flags & MESSAGE_ALTERNATIVE_OF != 0, Self::message_id)?,
        })
    }

    /// The next summary, as [`put_summary`] wrote it.
    pub(crate) fn summary(&mut self) -> Result<ChatSummary> {
        let id = ChatId::from_bytes(self.array()?);
        let created = self.hlc()?;
        let last_activity = self.hlc()?;
        let message_count = self.u32()?;
        let flags = self.u8()?;
        if flags & !(FLAG_STARRED | FLAG_DELETED) != 0 {
            return Err(self.malformed(format!("unknown flags {flags:#04x}")));
        }
        let deleted = if flags & FLAG_DELETED != 0 {
            Some(self.hlc()?)
        } else {
            None
        };
        let title_len = self.len()?;
        let title = std::str::from_utf8(self.take(title_len)?)
            .map_err(|_| self.malformed(format!("the title of chat {id} is not UTF-8")))?
            .to_owned();
        Ok(ChatSummary {
            id,
            title,
            created,
            last_activity,
            message_count,
            starred: flags & FLAG_STARRED != 0,
            deleted,
        })
    }

    /// Refuses bytes left after the value.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.malformed(format!("{} bytes after the end", self.bytes.len())))
        }
    }
}
