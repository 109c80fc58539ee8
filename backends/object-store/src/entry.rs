//! Encodings of what the layout stores: log entries and record blobs.
//!
//! Every object starts with a three-byte magic naming its kind and one format
//! byte. Bytes without the magic are [`Error::Corrupt`]; the right magic with a
//! newer format byte is [`Error::UnsupportedFormat`], so a vault written by a
//! newer chatvault is refused rather than misread.
//!
//! A log entry is the magic, the format byte, then JSON:
//!
//! ```json
//! {"items":[{"chat":"0190…","version":7,"write":"9f1c…","pre":{"version":6},
//!            "summary_len":180,"body_len":5120,"summary":"base64…"}]}
//! ```
//!
//! A blob is the magic, the format byte, the sealed summary, then the sealed
//! body; the entry's lengths say where one ends, so a sidebar read is a ranged
//! GET of the head of the blob.

use crate::layout::WriteId;
use bytes::{BufMut, Bytes, BytesMut};
use chatvault_core::{ChatId, Error, PutPrecondition, Result};
use serde::{Deserialize, Serialize};

pub(crate) const ENTRY_MAGIC: &[u8; 3] = b"cvl";
const ENTRY_FORMAT: u8 = 1;
const BLOB_MAGIC: &[u8; 3] = b"cvb";
const BLOB_FORMAT: u8 = 1;
/// Magic plus format byte.
pub(crate) const HEADER_LEN: usize = 4;
/// Largest log entry the format allows; readers refuse larger ones unread
/// (as undecodable, alike for every reader) and writers leave inline
/// summaries out of an entry rather than exceed it.
pub(crate) const MAX_ENTRY_BYTES: u64 = 16 << 20;
/// Most records one log entry carries.
pub(crate) const MAX_ENTRY_ITEMS: usize = 10_000;
/// Largest summary an entry or snapshot carries inline.
pub(crate) const MAX_INLINE_SUMMARY: usize = 1 << 20;
/// Room an item takes in an entry besides its inline summary: its JSON keys,
/// a chat id, three numbers, a write id and a precondition, with margin.
pub(crate) const ITEM_OVERHEAD: usize = 512;

/// Where an item sits in the log: entry `seq`, item `idx` within it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Position {
    pub(crate) seq: u64,
    pub(crate) idx: u32,
}

impl Position {
    /// Item `idx` of entry `seq`.
    pub(crate) fn of(seq: u64, idx: usize) -> Self {
        Self {
            seq,
            idx: u32::try_from(idx).unwrap_or(u32::MAX),
        }
    }
}

/// One commit: one or more records, each with the precondition it was
/// written under, so every reader can replay its validity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogEntry {
    pub(crate) items: Vec<EntryItem>,
}

/// One record of a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntryItem {
    pub(crate) chat: ChatId,
    pub(crate) version: u64,
    pub(crate) write: WriteId,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) deleted: bool,
    pub(crate) pre: Precondition,
    pub(crate) summary_len: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body_len: Option<u64>,
    /// The sealed summary, unless it was larger than the inline limit.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "base64_bytes"
    )]
    pub(crate) summary: Option<Bytes>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// [`PutPrecondition`] as stored, spelled independently of the Rust enum so
/// renaming a variant in core cannot change the format.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Precondition {
    None,
    Absent,
    Version(u64),
}

impl From<PutPrecondition> for Precondition {
    fn from(value: PutPrecondition) -> Self {
        match value {
            PutPrecondition::None => Self::None,
            PutPrecondition::Absent => Self::Absent,
            PutPrecondition::Version(v) => Self::Version(v),
        }
    }
}

impl Precondition {
    /// Whether a put of `version` under this precondition may commit over a
    /// chat whose stored version is `current`. Versions strictly increase
    /// whatever the precondition.
    pub(crate) fn admits(self, current: Option<u64>, version: u64) -> bool {
        if current.is_some_and(|c| version <= c) {
            return false;
        }
        match self {
            Self::None => true,
            Self::Absent => current.is_none(),
            Self::Version(expected) => current == Some(expected),
        }
    }
}

/// Bytes an inline summary of `len` bytes takes in an entry (base64).
pub(crate) fn inline_cost(len: usize) -> usize {
    len.div_ceil(3).saturating_mul(4)
}

pub(crate) fn encode_entry(entry: &LogEntry) -> Result<Bytes> {
    let json = serde_json::to_vec(entry)
        .map_err(|e| Error::invalid(format!("cannot encode a log entry: {e}")))?;
    let mut out = BytesMut::with_capacity(HEADER_LEN + json.len());
    out.put_slice(ENTRY_MAGIC);
    out.put_u8(ENTRY_FORMAT);
    out.put_slice(&json);
    Ok(out.freeze())
}

/// Decodes and checks a log entry; `what` names it in errors.
pub(crate) fn decode_entry(bytes: &[u8], what: &str) -> Result<LogEntry> {
    let json = check_header(bytes, ENTRY_MAGIC, ENTRY_FORMAT, "log entry", what)?;
    let entry: LogEntry = serde_json::from_slice(json)
        .map_err(|e| Error::corrupt(what, format!("malformed log entry: {e}")))?;
    if entry.items.is_empty() {
        return Err(Error::corrupt(what, "log entry without records"));
    }
    if entry.items.len() > MAX_ENTRY_ITEMS {
        return Err(Error::corrupt(what, "log entry with too many records"));
    }
    for item in &entry.items {
        if item
            .summary
            .as_ref()
            .is_some_and(|s| s.len() as u64 != item.summary_len)
        {
            return Err(Error::corrupt(
                what,
                "inline summary length disagrees with summary_len",
            ));
        }
        if item
            .summary
            .as_ref()
            .is_some_and(|s| s.len() > MAX_INLINE_SUMMARY)
        {
            return Err(Error::corrupt(
                what,
                "inline summary larger than the format allows",
            ));
        }
        if item.deleted && item.body_len.is_some() {
            return Err(Error::corrupt(what, "tombstone with a body"));
        }
    }
    Ok(entry)
}

pub(crate) fn encode_blob(summary: &[u8], body: Option<&[u8]>) -> Bytes {
    let body = body.unwrap_or_default();
    let mut out = BytesMut::with_capacity(HEADER_LEN + summary.len() + body.len());
    out.put_slice(BLOB_MAGIC);
    out.put_u8(BLOB_FORMAT);
    out.put_slice(summary);
    out.put_slice(body);
    out.freeze()
}

/// Splits a blob into summary and body, checking the lengths its log entry
/// promised. With `full == false`, `bytes` is only the head of the blob (a
/// ranged read up to the end of the summary) and the body is `None`.
pub(crate) fn decode_blob(
    bytes: Bytes,
    summary_len: u64,
    body_len: Option<u64>,
    full: bool,
    what: &str,
) -> Result<(Bytes, Option<Bytes>)> {
    check_header(&bytes, BLOB_MAGIC, BLOB_FORMAT, "record blob", what)?;
    let summary_end = usize::try_from(summary_len)
        .ok()
        .and_then(|n| n.checked_add(HEADER_LEN))
        .ok_or_else(|| Error::corrupt(what, "summary length out of range"))?;
    if bytes.len() < summary_end {
        return Err(Error::corrupt(what, "blob shorter than its summary"));
    }
    let summary = bytes.slice(HEADER_LEN..summary_end);
    let rest = (bytes.len() - summary_end) as u64;
    let body = match (full, body_len) {
        (false, _) => None,
        (true, None) if rest == 0 => None,
        (true, Some(len)) if rest == len => Some(bytes.slice(summary_end..)),
        _ => {
            return Err(Error::corrupt(
                what,
                "blob length disagrees with its log entry",
            ))
        }
    };
    Ok((summary, body))
}

/// Checks magic and format byte and returns the payload after them.
pub(crate) fn check_header<'a>(
    bytes: &'a [u8],
    magic: &[u8; 3],
    format: u8,
    kind: &str,
    what: &str,
) -> Result<&'a [u8]> {
    if bytes.len() < HEADER_LEN || &bytes[..3] != magic {
        return Err(Error::corrupt(
            what,
            format!("not a chatvault {kind} (bad magic or truncated)"),
        ));
    }
    match bytes[3] {
        found if found == format => Ok(&bytes[HEADER_LEN..]),
        0 => Err(Error::corrupt(what, format!("{kind} with format byte 0"))),
        found if found > format => Err(Error::UnsupportedFormat {
            what: kind.to_owned(),
            found: u32::from(found),
            supported: u32::from(format),
        }),
        found => Err(Error::corrupt(
            what,
            format!("{kind} with retired format {found}"),
        )),
    }
}

/// Serde adapter: `Option<Bytes>` as a base64 string.
pub(crate) mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Bytes>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => serializer.serialize_str(&STANDARD.encode(bytes)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Bytes>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => STANDARD
                .decode(text)
                .map(|b| Some(Bytes::from(b)))
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item_strategy() -> impl Strategy<Value = EntryItem> {
        (
            any::<[u8; 16]>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            prop_oneof![
                Just(Precondition::None),
                Just(Precondition::Absent),
                any::<u64>().prop_map(Precondition::Version)
            ],
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |(chat, version, write, deleted, pre, summary, summary_len, body_len)| {
                    let summary = summary.map(Bytes::from);
                    EntryItem {
                        chat: ChatId::from_bytes(chat),
                        version,
                        write: WriteId(write),
                        deleted,
                        pre,
                        summary_len: summary.as_ref().map_or(summary_len, |s| s.len() as u64),
                        body_len: (!deleted).then_some(body_len),
                        summary,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn log_entries_round_trip(items in proptest::collection::vec(item_strategy(), 1..8)) {
            let entry = LogEntry { items };
            let encoded = encode_entry(&entry).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode_entry(&encoded, "t").map_err(|e| TestCaseError::fail(e.to_string()))?, entry);
        }

        #[test]
        fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..256), lens in (any::<u64>(), proptest::option::of(any::<u64>()))) {
            let _ = decode_entry(&bytes, "t");
            let _ = decode_blob(Bytes::from(bytes.clone()), lens.0, lens.1, true, "t");
            let _ = decode_blob(Bytes::from(bytes.clone()), lens.0, lens.1, false, "t");
            let mut framed = ENTRY_MAGIC.to_vec();
            framed.push(ENTRY_FORMAT);
            framed.extend_from_slice(&bytes);
            let _ = decode_entry(&framed, "t");
        }

        #[test]
        fn blobs_round_trip(summary in proptest::collection::vec(any::<u8>(), 0..64), body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
            let blob = encode_blob(&summary, body.as_deref());
            let (s, b) = decode_blob(blob, summary.len() as u64, body.as_ref().map(|b| b.len() as u64), true, "t")
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&s[..], &summary[..]);
            prop_assert_eq!(b.map(|b| b.to_vec()), body);
        }
    }

    #[test]
    fn a_newer_format_is_unsupported_not_corrupt() {
        let mut bytes = ENTRY_MAGIC.to_vec();
        bytes.push(ENTRY_FORMAT + 1);
        bytes.extend_from_slice(b"{}");
        assert!(matches!(
            decode_entry(&bytes, "t"),
            Err(Error::UnsupportedFormat {
                found: 2,
                supported: 1,
                ..
            })
        ));
    }

    #[test]
    fn truncated_or_garbled_entries_are_corrupt() {
        let entry = LogEntry {
            items: vec![EntryItem {
                chat: ChatId::new(),
                version: 1,
                write: WriteId(7),
                deleted: false,
                pre: Precondition::Absent,
                summary_len: 3,
                body_len: Some(10),
                summary: Some(Bytes::from_static(b"abc")),
            }],
        };
        let encoded = encode_entry(&entry).expect("encodes");
        for cut in [0, 2, 4, encoded.len() - 1] {
            assert!(
                matches!(
                    decode_entry(&encoded[..cut], "t"),
                    Err(Error::Corrupt { .. })
                ),
                "cut at {cut}"
            );
        }
        assert!(matches!(
            decode_entry(b"hello world", "t"),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn a_blob_shorter_than_its_entry_says_is_corrupt() {
        let blob = encode_blob(b"summary", Some(b"body"));
        assert!(matches!(
            decode_blob(blob.slice(..8), 7, Some(4), false, "t"),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            decode_blob(blob.slice(..11), 7, Some(4), true, "t"),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            decode_blob(blob.clone(), 7, Some(5), true, "t"),
            Err(Error::Corrupt { .. })
        ));
        let (summary, body) =
            decode_blob(blob.slice(..11), 7, Some(4), false, "t").expect("head decodes");
        assert_eq!((&summary[..], body), (&b"summary"[..], None));
    }

    #[test]
    fn preconditions_admit_only_what_the_contract_allows() {
        use Precondition::*;
        assert!(None.admits(Option::None, 1));
        assert!(None.admits(Some(1), 2));
        assert!(!None.admits(Some(2), 2));
        assert!(Absent.admits(Option::None, 5));
        assert!(!Absent.admits(Some(1), 5));
        assert!(Version(3).admits(Some(3), 4));
        assert!(!Version(3).admits(Some(2), 4));
        assert!(!Version(3).admits(Option::None, 4));
        assert!(!Version(3).admits(Some(3), 3));
    }
}
