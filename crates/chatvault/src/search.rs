//! Search ([`ChatVault::search`]): substring search over titles and
//! messages of every chat, folding case and diacritics (`krakow` finds
//! "Kraków", `RESEAUX` finds "réseaux"). Each hit says where it is: the
//! title, message number N of the branch shown (what `chatvault show CHAT
//! --at N` jumps to), or a message on another branch (by id: what
//! `chatvault select` switches to), with its role and time.

use crate::{Chat, ChatId, ChatVault, MessageId, Result, Role, SkippedRecord};
use chatvault_core::engine::BodyFilter;
use chatvault_core::raw::codec::body_text;

/// Characters of context on each side of a match.
const CONTEXT: usize = 30;

/// One match: the chat, where in it, when, and a snippet.
#[derive(Debug, PartialEq, Eq)]
pub struct Hit {
    /// Which chat.
    pub chat: ChatId,
    /// Its title.
    pub title: String,
    /// The matching message's number in the branch shown (1-based, as
    /// `show --at` takes it) and role; `None` for a match in the title or
    /// on another branch.
    pub message: Option<(usize, Role)>,
    /// A matching message on a branch not shown (a regenerated answer, an
    /// edited question): its id and role.
    pub other_branch: Option<(MessageId, Role)>,
    /// When the matching message was written (the chat's creation for a
    /// title match), Unix milliseconds.
    pub at: u64,
    /// The match with some context, on one line.
    pub snippet: String,
}

/// Every match of `text` in `chats`: per chat its title first, then the
/// messages of the branch shown in order, then those of its other branches
/// (in tree order). An empty `text` matches nothing.
pub fn find(chats: &[impl AsRef<Chat>], text: &str) -> Vec<Hit> {
    let mut matcher = Matcher::new(text);
    let mut hits = Vec::new();
    for chat in chats {
        let chat = chat.as_ref();
        if let Some(snippet) = matcher.snippet(chat.title()) {
            hits.push(Hit {
                chat: chat.id,
                title: chat.title().to_string(),
                message: None,
                other_branch: None,
                at: chat.created.millis,
                snippet,
            });
        }
        for (index, message) in chat.messages().into_iter().enumerate() {
            if let Some(snippet) = matcher.snippet(message.content()) {
                hits.push(Hit {
                    chat: chat.id,
                    title: chat.title().to_string(),
                    message: Some((index + 1, message.role().clone())),
                    other_branch: None,
                    at: message.written_millis(),
                    snippet,
                });
            }
        }
        if chat.is_branched() {
            for entry in chat.tree().into_iter().filter(|e| !e.on_path) {
                let message = entry.message;
                if let Some(snippet) = matcher.snippet(message.content()) {
                    hits.push(Hit {
                        chat: chat.id,
                        title: chat.title().to_string(),
                        message: None,
                        other_branch: Some((message.id, message.role().clone())),
                        at: message.written_millis(),
                        snippet,
                    });
                }
            }
        }
    }
    hits
}

/// The one form both the query and the text are compared in: lowercase,
/// without diacritics (a precomposed letter becomes the base letter of its
/// canonical decomposition: `ó` → `o`, `É` → `e`). Each char maps to one
/// char, so the mapping keeps char positions and a text always finds
/// itself (`str::to_lowercase` would turn a word-final `Σ` into `ς` and
/// `İ` into two chars). A combining mark standing on its own (text in
/// decomposed form) is kept as it is.
fn fold(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let lower = c.to_lowercase().next().unwrap_or(c);
    let mut base = None;
    unicode_normalization::char::decompose_canonical(lower, |part| {
        base.get_or_insert(part);
    });
    match base {
        Some(base) if !unicode_normalization::char::is_combining_mark(base) => base,
        _ => lower,
    }
}

/// Whether `text` may hold a char whose fold is ASCII: any non-ASCII char
/// may (`ó` folds to `o`, `İ` to `i`, the Kelvin sign to `k`), so only an
/// all-ASCII text takes the bulk path.
fn has_fold_to_ascii(text: &[u8]) -> bool {
    !text.is_ascii()
}

/// Appends the folded form of `text` to `out` as far as an ASCII query
/// can tell: when `text` holds no char of [`FOLD_TO_ASCII`], lowering its
/// ASCII bytes in bulk finds exactly the matches of an ASCII query, at the
/// same byte offsets; otherwise (or for any other query) the full fold.
fn fold_for(out: &mut String, text: &str, ascii_query: bool) {
    if ascii_query && !has_fold_to_ascii(text.as_bytes()) {
        let start = out.len();
        out.push_str(text);
        out[start..].make_ascii_lowercase();
    } else {
        fold_into(out, text);
    }
}

/// Appends the folded form of `text` to `out`: runs of ASCII in bulk, the
/// other chars one by one.
fn fold_into(out: &mut String, text: &str) {
    let mut rest = text;
    while !rest.is_empty() {
        let run = rest
            .bytes()
            .position(|b| !b.is_ascii())
            .unwrap_or(rest.len());
        let (ascii, tail) = rest.split_at(run);
        let start = out.len();
        out.push_str(ascii);
        out[start..].make_ascii_lowercase();
        let mut chars = tail.chars();
        if let Some(c) = chars.next() {
            out.push(fold(c));
        }
        rest = chars.as_str();
    }
}

/// A case-insensitive substring matcher that reuses one buffer for the
/// folded text, so scanning a message allocates nothing (but its snippet).
struct Matcher {
    /// The folded query's bytes, searched with a SIMD substring finder.
    finder: memchr::memmem::Finder<'static>,
    /// Chars in the folded query.
    needle_chars: usize,
    /// The query is ASCII (see [`fold_for`]).
    ascii: bool,
    /// The folded form of the text being scanned.
    folded: String,
}

impl Matcher {
    fn new(needle: &str) -> Self {
        let folded: String = needle.chars().map(fold).collect();
        Self {
            needle_chars: folded.chars().count(),
            ascii: folded.is_ascii(),
            finder: memchr::memmem::Finder::new(folded.as_bytes()).into_owned(),
            folded: String::new(),
        }
    }

    /// The text around the first case-insensitive match in `haystack`.
    fn snippet(&mut self, haystack: &str) -> Option<String> {
        if self.needle_chars == 0 {
            return None;
        }
        self.folded.clear();
        fold_for(&mut self.folded, haystack, self.ascii);
        // Both sides are UTF-8, so a match starts on a char boundary; the
        // folding maps char to char, so char positions carry over.
        let byte = self.finder.find(self.folded.as_bytes())?;
        let at = self.folded[..byte].chars().count();
        Some(excerpt(haystack, at, self.needle_chars))
    }
}

/// `len` chars from char `at` of `text` with up to [`CONTEXT`] chars of
/// context on each side, on one line.
fn excerpt(text: &str, at: usize, len: usize) -> String {
    let start = at.saturating_sub(CONTEXT);
    let end = at + len + CONTEXT;
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    let mut chars = text.chars().skip(start);
    out.extend(
        chars
            .by_ref()
            .take(end - start)
            .map(|c| if c.is_control() { ' ' } else { c }),
    );
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// A filter on each chat's encoded body, read through the codec's
/// [`body_text`] (the JSON of a JSON body, in which a title or message
/// appears verbatim unless it holds `"`, `\` or a control character; the
/// verbatim strings of a binary one): a chat whose folded text lacks the
/// folded query has no hit and is never decoded. Folding maps those
/// characters to themselves and nothing else to them, so for a query
/// without them the filter drops no hit; a query with them is checked on
/// every JSON body, and so is a body the codec does not know (decoding
/// reports what is wrong with it).
fn prefilter(text: &str) -> BodyFilter {
    let escaped = |c: char| c == '"' || c == '\\' || c < ' ';
    if text.is_empty() {
        return std::sync::Arc::new(|_: &[u8]| false);
    }
    let needs_unescaped = text.chars().any(escaped);
    let folded: String = text.chars().map(fold).collect();
    let ascii = folded.is_ascii();
    let finder = memchr::memmem::Finder::new(folded.as_bytes()).into_owned();
    std::sync::Arc::new(move |encoded: &[u8]| {
        let Some(body) = body_text(encoded) else {
            return true;
        };
        if body.escaped && needs_unescaped {
            return true;
        }
        let haystack = body.bytes;
        if ascii && !has_fold_to_ascii(haystack) {
            // No UTF-8 check needed: ASCII bytes never occur inside a
            // multi-byte char.
            let mut buffer = haystack.to_vec();
            buffer.make_ascii_lowercase();
            return finder.find(&buffer).is_some();
        }
        let Ok(haystack) = std::str::from_utf8(haystack) else {
            // Let decoding report what is wrong with it.
            return true;
        };
        let mut buffer = String::with_capacity(haystack.len());
        fold_into(&mut buffer, haystack);
        finder.find(buffer.as_bytes()).is_some()
    })
}

/// What [`ChatVault::search`] found.
#[derive(Debug)]
pub struct SearchResults {
    /// Every match, per chat (most recently active first) its title first,
    /// then its messages in order.
    pub hits: Vec<Hit>,
    /// Chats that were not searched because their record does not open,
    /// with why.
    pub unreadable: Vec<SkippedRecord>,
}

impl ChatVault {
    /// Finds `text` in the title and messages of every live chat, folding
    /// case and diacritics ([`find`]). Chats this device lacks in full are
    /// fetched from the server in batches; a chat whose encoded body cannot
    /// hold the text is never decoded. An empty `text` finds nothing.
    ///
    /// Errors: those of [`all_chats`](Self::all_chats).
    pub async fn search(&self, text: &str) -> Result<SearchResults> {
        let all = self.engine().all_chats_where(prefilter(text)).await?;
        Ok(SearchResults {
            hits: find(&all.chats, text),
            unreadable: all.unreadable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snippet(haystack: &str, needle: &str) -> Option<String> {
        Matcher::new(needle).snippet(haystack)
    }

    /// The matcher before it was made fast: chars collected and folded per
    /// message, then compared window by window. The fast one must agree.
    fn reference(haystack: &str, needle: &str) -> Option<String> {
        let chars: Vec<char> = haystack.chars().collect();
        let lower: Vec<char> = chars.iter().map(|&c| fold(c)).collect();
        let needle: Vec<char> = needle.chars().map(fold).collect();
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

    #[test]
    fn matches_ignore_case_and_keep_non_ascii_context() {
        let text = "Wir fahren nach München und dann ÜBER die Alpen";
        assert_eq!(
            snippet(text, "über").as_deref(),
            Some("… fahren nach München und dann ÜBER die Alpen")
        );
        assert_eq!(snippet(text, "zürich"), None);
        assert_eq!(snippet(text, ""), None);
    }

    #[test]
    fn snippets_cut_long_text_on_both_sides_and_blank_control_chars() {
        let text = format!("{}\tNeedle\n{}", "a".repeat(40), "b".repeat(40));
        let expected = format!("…{} Needle {}…", "a".repeat(29), "b".repeat(29));
        assert_eq!(snippet(&text, "NEEDLE"), Some(expected));
    }

    #[test]
    fn case_and_diacritics_fold_away_both_ways() {
        assert_eq!(
            snippet("Kraków in May", "krakow").as_deref(),
            Some("Kraków in May")
        );
        assert_eq!(
            snippet("les réseaux", "RESEAUX").as_deref(),
            Some("les réseaux")
        );
        assert_eq!(
            snippet("Crème brûlée", "CREME BRULEE").as_deref(),
            Some("Crème brûlée")
        );
        assert_eq!(
            snippet("plain text", "plaín").as_deref(),
            Some("plain text")
        );
        assert_eq!(snippet("Łódź", "lodz"), None, "Ł has no decomposition");
    }

    #[test]
    fn every_non_ascii_char_whose_fold_is_ascii_takes_the_full_fold() {
        // The bulk ASCII path is only taken for all-ASCII text: no char it
        // skips could fold into an ASCII query.
        for c in (0..=u32::from(char::MAX))
            .filter_map(char::from_u32)
            .filter(|&c| !c.is_ascii() && fold(c).is_ascii())
        {
            let mut buffer = [0u8; 4];
            assert!(
                has_fold_to_ascii(c.encode_utf8(&mut buffer).as_bytes()),
                "{c:?}"
            );
        }
    }

    #[test]
    fn a_text_always_finds_itself() {
        // `str::to_lowercase` folds a word-final Σ to ς and İ to two chars;
        // per-char folding on both sides keeps these queries matching.
        for text in ["ΟΔΟΣ", "İstanbul", "KELVIN \u{212A}", "straße", "ǅemal"] {
            assert!(snippet(text, text).is_some(), "{text}");
            assert!(snippet(&format!("x {text} y"), text).is_some(), "{text}");
        }
    }

    #[test]
    fn find_reports_titles_and_messages_with_their_times() {
        use crate::{ChatId, DeviceId, Role};
        use chatvault_core::hlc::Hlc;
        let mut chat = Chat::new(
            ChatId::new(),
            "Trip to München",
            Hlc::new(10, 0, DeviceId(1)),
        );
        chat.add_message(
            Role::User,
            "where in MÜNCHEN?",
            Hlc::new(20, 0, DeviceId(1)),
        );
        chat.add_message(
            Role::Assistant,
            "nothing here",
            Hlc::new(30, 0, DeviceId(1)),
        );
        let hits = find(&[std::sync::Arc::new(chat.clone())], "münchen");
        let times: Vec<u64> = hits.iter().map(|h| h.at).collect();
        assert_eq!(times, [10, 20]);
        assert!(hits
            .iter()
            .all(|h| h.chat == chat.id && h.title == "Trip to München"));
        assert_eq!(hits[1].snippet, "where in MÜNCHEN?");
        assert_eq!(hits[0].message, None);
        assert_eq!(hits[1].message, Some((1, Role::User)));
    }

    #[test]
    fn find_reports_a_match_on_another_branch_by_id() {
        use crate::{ChatId, DeviceId, Role};
        use chatvault_core::hlc::Hlc;
        let mut chat = Chat::new(ChatId::new(), "t", Hlc::new(10, 0, DeviceId(1)));
        chat.add_message(Role::User, "q", Hlc::new(20, 0, DeviceId(1)));
        let old = chat.add_message(Role::Assistant, "old lisbon", Hlc::new(30, 0, DeviceId(1)));
        chat.add_alternative(old, "new porto", Hlc::new(40, 0, DeviceId(1)));
        let chats = [std::sync::Arc::new(chat)];
        let hits = find(&chats, "lisbon");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].message, None);
        assert_eq!(hits[0].other_branch, Some((old, Role::Assistant)));
        let shown = find(&chats, "porto");
        assert_eq!(shown[0].message, Some((2, Role::Assistant)));
        assert_eq!(shown[0].other_branch, None);
    }

    fn text() -> impl Strategy<Value = String> {
        // ASCII, Latin-1, Greek (final sigma), Turkish dotted I, Kelvin
        // sign, ß, titlecase digraphs, an emoji and control chars.
        let chars = prop::sample::select(vec![
            'a', 'B', 'c', 'x', 'X', ' ', 'i', 'I', 'k', 'K', 's', 'S', 'é', 'É', 'ü', 'Ü', 'ß',
            'e', 'u', 'ó', '\u{301}', 'Σ', 'σ', 'ς', 'İ', 'ı', '\u{212A}', 'ǅ', 'ǆ', '😀', '\n',
            '\t', '"', '\\',
        ]);
        prop::collection::vec(chars, 0..120).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn fast_matcher_agrees_with_the_reference(haystack in text(), needle in text()) {
            let needle: String = needle.chars().take(4).collect();
            prop_assert_eq!(snippet(&haystack, &needle), reference(&haystack, &needle));
        }

        #[test]
        fn the_prefilter_never_drops_a_chat_with_a_hit(
            title in text(),
            messages in prop::collection::vec(text(), 0..4),
            needle in text(),
            from in 0usize..120,
        ) {
            use chatvault_core::hlc::Hlc;
            use crate::{ChatId, DeviceId, Role};
            let mut chat = Chat::new(ChatId::new(), title, Hlc::new(1, 0, DeviceId(1)));
            for (n, m) in messages.iter().enumerate() {
                chat.add_message(Role::User, m.clone(), Hlc::new(2 + n as u64, 0, DeviceId(1)));
            }
            // A query cut from a message (when there is one) or arbitrary;
            // quotes, backslashes and control chars included.
            let all: Vec<char> = messages.concat().chars().collect();
            let needle: String = if all.is_empty() {
                needle.chars().take(3).collect()
            } else {
                all.iter().cycle().skip(from % all.len()).take(3).collect()
            };
            let encoded = chatvault_core::raw::codec::encode_chat(&chat).expect("encode");
            let binary = chatvault_core::raw::codec::encode_chat_at(&chat, 2).expect("encode");
            if !find(&[std::sync::Arc::new(chat)], &needle).is_empty() {
                prop_assert!(prefilter(&needle)(&encoded));
                prop_assert!(prefilter(&needle)(&binary), "binary body");
            }
        }

        #[test]
        fn every_substring_is_found(haystack in text(), from in 0usize..120, len in 1usize..6) {
            let chars: Vec<char> = haystack.chars().collect();
            prop_assume!(from + len <= chars.len());
            let needle: String = chars[from..from + len].iter().collect();
            prop_assert_eq!(snippet(&haystack, &needle), reference(&haystack, &needle));
            prop_assert!(snippet(&haystack, &needle).is_some());
        }
    }
}
