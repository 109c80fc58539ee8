//! Chat ids as people type them: a full id, a unique prefix of one (at
//! least [`MIN_PREFIX`] hex digits, hyphens optional), or a chat's exact
//! title; message ids as a full id or a unique prefix; attachments by
//! name or blob id prefix; and the short ids `ls` and `search` print.

use crate::terminal::terminal;
use chatvault::{Attachment, Chat, ChatId, ChatSummary, Error, MessageId, Result};
use std::sync::Arc;

/// The fewest hex digits accepted as an id prefix.
pub const MIN_PREFIX: usize = 4;

/// The fewest hex digits listings print.
pub const SHORT: usize = 8;

/// An id's hex digits, without hyphens.
fn digits(id: &ChatId) -> String {
    id.0.simple().to_string()
}

/// `text` as hex digits (hyphens dropped, lower case), if it is nothing else.
fn as_prefix(text: &str) -> Option<String> {
    let prefix: String = text
        .chars()
        .filter(|&c| c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let hex = !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_hexdigit());
    hex.then_some(prefix)
}

/// The chat `text` names among `chats`: a full id (listed or not), else
/// the one chat whose id starts with `text` (at least [`MIN_PREFIX`] hex
/// digits), else the one chat titled exactly `text`.
///
/// Errors: [`Error::InvalidInput`] (exit 2) when none matches, or when
/// several do (after listing them on standard error).
pub fn resolve(text: &str, chats: &[Arc<ChatSummary>]) -> Result<ChatId> {
    if let Ok(id) = text.parse::<ChatId>() {
        return Ok(id);
    }
    let by_prefix: Vec<&Arc<ChatSummary>> = match as_prefix(text) {
        Some(prefix) if prefix.len() >= MIN_PREFIX => chats
            .iter()
            .filter(|c| digits(&c.id).starts_with(&prefix))
            .collect(),
        _ => Vec::new(),
    };
    let matches = if by_prefix.is_empty() {
        chats.iter().filter(|c| c.title == text).collect()
    } else {
        by_prefix
    };
    match matches.as_slice() {
        [one] => Ok(one.id),
        [] => Err(Error::invalid(format!(
            "no chat {:?}: give a chat id, a unique prefix of one (at least {MIN_PREFIX} hex \
             digits, see `chatvault ls`) or an exact title",
            terminal(text)
        ))),
        several => {
            let width = short_len(several.iter().map(|c| &c.id));
            for chat in several {
                eprintln!("  {}  {}", short(&chat.id, width), terminal(&chat.title));
            }
            Err(Error::invalid(format!(
                "{:?} matches {} chats (listed above): give more of the id",
                terminal(text),
                several.len()
            )))
        }
    }
}

/// The message of `chat` that `text` names, on any branch: its full id,
/// or a unique prefix of it (at least [`MIN_PREFIX`] hex digits).
///
/// Errors: [`Error::InvalidInput`] (exit 2) when none matches, or when
/// several do (after listing them on standard error).
pub fn resolve_message(text: &str, chat: &Chat) -> Result<MessageId> {
    if let Ok(id) = text.parse::<MessageId>() {
        return Ok(id);
    }
    let matches: Vec<_> = match as_prefix(text) {
        Some(prefix) if prefix.len() >= MIN_PREFIX => chat
            .all_messages()
            .into_iter()
            .filter(|m| m.id.0.simple().to_string().starts_with(&prefix))
            .collect(),
        _ => Vec::new(),
    };
    match matches.as_slice() {
        [one] => Ok(one.id),
        [] => Err(Error::invalid(format!(
            "no message {:?} in this chat: give a message id from `chatvault show --all`, or a \
             unique prefix of one (at least {MIN_PREFIX} hex digits)",
            terminal(text)
        ))),
        several => {
            for message in several {
                let first_line = message.content().lines().next().unwrap_or("");
                let preview: String = first_line.chars().take(60).collect();
                eprintln!("  {}  {}", message.id, terminal(&preview));
            }
            Err(Error::invalid(format!(
                "{:?} matches {} messages (listed above): give more of the id",
                terminal(text),
                several.len()
            )))
        }
    }
}

/// The attachment `text` names among `listed` (a chat's attachments with
/// the messages carrying them): the one file named exactly `text`, else
/// the one whose blob id starts with `text` (at least [`MIN_PREFIX`] hex
/// digits). The same file attached to several messages is one file.
///
/// Errors: [`Error::InvalidInput`] (exit 2) when none matches, or when
/// several different files do (after listing them on standard error).
pub fn resolve_attachment<'a>(
    text: &str,
    listed: &'a [(MessageId, Attachment)],
) -> Result<&'a Attachment> {
    let mut files: Vec<&Attachment> = Vec::new();
    for (_, attachment) in listed {
        if !files.iter().any(|f| f.id == attachment.id) {
            files.push(attachment);
        }
    }
    let by_name: Vec<&Attachment> = files.iter().copied().filter(|f| f.name == text).collect();
    let matches = if by_name.is_empty() {
        match as_prefix(text) {
            Some(prefix) if prefix.len() >= MIN_PREFIX => files
                .into_iter()
                .filter(|f| f.id.to_hex().starts_with(&prefix))
                .collect(),
            _ => Vec::new(),
        }
    } else {
        by_name
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::invalid(format!(
            "no attachment {:?} in this chat: give a file name or a unique prefix of a blob id \
             (at least {MIN_PREFIX} hex digits), as `chatvault attachments` lists them",
            terminal(text)
        ))),
        several => {
            for file in several {
                eprintln!(
                    "  {}  {}",
                    &file.id.to_hex()[..crate::commands::attachments::SHORT_BLOB],
                    crate::output::attachment_line(file)
                );
            }
            Err(Error::invalid(format!(
                "{:?} matches {} different files (listed above): give a prefix of the blob id \
                 instead",
                terminal(text),
                several.len()
            )))
        }
    }
}

/// The number of hex digits (at least [`SHORT`]) that tells every one of
/// `ids` apart.
pub fn short_len<'a>(ids: impl IntoIterator<Item = &'a ChatId>) -> usize {
    distinct_len(ids.into_iter().map(digits).collect())
}

/// [`short_len`] for message ids (which, made in the same second, share
/// their first 8 hex digits).
pub fn short_message_len<'a>(ids: impl IntoIterator<Item = &'a MessageId>) -> usize {
    distinct_len(
        ids.into_iter()
            .map(|id| id.0.simple().to_string())
            .collect(),
    )
}

/// The number of leading hex digits (at least [`SHORT`], at most 32) that
/// tells every one of `all` apart.
fn distinct_len(mut all: Vec<String>) -> usize {
    all.sort_unstable();
    all.windows(2)
        .map(|pair| {
            let common = pair[0]
                .bytes()
                .zip(pair[1].bytes())
                .take_while(|(a, b)| a == b)
                .count();
            common + 1
        })
        .fold(SHORT, usize::max)
        .min(32)
}

/// `id` cut to its first `len` hex digits (with the hyphens among them).
pub fn short(id: &impl std::fmt::Display, len: usize) -> String {
    let full = id.to_string();
    let mut seen = 0;
    let end = full
        .char_indices()
        .find(|&(_, c)| {
            if c != '-' {
                seen += 1;
            }
            seen > len
        })
        .map_or(full.len(), |(at, _)| at);
    full[..end].trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> ChatId {
        text.parse().expect("an id")
    }

    #[test]
    fn short_ids_grow_until_every_id_is_told_apart() {
        let a = id("652ce30c-1111-7000-8000-000000000001");
        let b = id("652ce30c-1122-7000-8000-000000000002");
        let c = id("0f3c0000-0000-7000-8000-000000000003");
        assert_eq!(short_len([&a, &c]), 8);
        assert_eq!(short_len([&a, &b, &c]), 11);
        assert_eq!(short(&a, 8), "652ce30c");
        assert_eq!(short(&a, 11), "652ce30c-111");
        assert_eq!(short(&a, 32), a.to_string());
    }
}
