//! `search`: case-insensitive substring search over titles and messages of
//! every chat in this device's decrypted replica.

use crate::json::time;
use chatvault::{Chat, ChatVault, Result};

/// Characters of context on each side of a match.
const CONTEXT: usize = 30;

/// One match: the chat, when, and a snippet.
#[derive(Debug, PartialEq, Eq)]
pub struct Hit {
    /// Which chat.
    pub chat: chatvault::ChatId,
    /// Its title.
    pub title: String,
    /// When the matching message was written (the chat's creation for a
    /// title match), Unix milliseconds.
    pub at: u64,
    /// The match with some context, on one line.
    pub snippet: String,
}

/// Every chat (title first, then its messages in order) containing `text`.
pub fn find(chats: &[impl AsRef<Chat>], text: &str) -> Vec<Hit> {
    let needle = text.to_lowercase();
    let mut hits = Vec::new();
    for chat in chats {
        let chat = chat.as_ref();
        if let Some(snippet) = snippet(chat.title(), &needle) {
            hits.push(Hit {
                chat: chat.id,
                title: chat.title().to_string(),
                at: chat.created.millis,
                snippet,
            });
        }
        for message in chat.messages() {
            if let Some(snippet) = snippet(message.content(), &needle) {
                hits.push(Hit {
                    chat: chat.id,
                    title: chat.title().to_string(),
                    at: message.written_millis(),
                    snippet,
                });
            }
        }
    }
    hits
}

/// The text around the first case-insensitive match of `needle`.
fn snippet(haystack: &str, needle: &str) -> Option<String> {
    // Lowercasing can change byte lengths, so match on chars.
    let chars: Vec<char> = haystack.chars().collect();
    let lower: Vec<char> = chars
        .iter()
        .map(|c| c.to_lowercase().next().unwrap_or(*c))
        .collect();
    let needle: Vec<char> = needle.chars().collect();
    if needle.is_empty() || needle.len() > lower.len() {
        return None;
    }
    let at = lower.windows(needle.len()).position(|w| w == needle)?;
    let start = at.saturating_sub(CONTEXT);
    let end = (at + needle.len() + CONTEXT).min(chars.len());
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.extend(
        chars[start..end]
            .iter()
            .map(|&c| if c.is_control() { ' ' } else { c }),
    );
    if end < chars.len() {
        out.push('…');
    }
    Some(out)
}

/// Prints every hit: chat id, time, title, snippet.
pub async fn run(vault: &ChatVault, text: &str) -> Result<()> {
    let all = vault.engine().all_chats().await?;
    for skipped in &all.unreadable {
        eprintln!(
            "warning: chat {} not searched: {}",
            skipped.chat, skipped.error
        );
    }
    for hit in find(&all.chats, text) {
        println!(
            "{}  {}  {}: {}",
            hit.chat,
            time(hit.at),
            hit.title,
            hit.snippet
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_ignore_case_and_keep_non_ascii_context() {
        let text = "Wir fahren nach München und dann ÜBER die Alpen";
        assert_eq!(
            snippet(text, "über").as_deref(),
            Some("… fahren nach München und dann ÜBER die Alpen")
        );
        assert_eq!(snippet(text, "zürich"), None);
    }
}
