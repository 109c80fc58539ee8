//! Stable fuzz drivers (proptest) for what this backend reads back from the
//! store: log entries, record blobs and compaction snapshots. Arbitrary
//! bytes and mutated valid encodings must give a typed error or a value,
//! never a panic; what decodes obeys the format's bounds, and a count or
//! length read from the store never sizes an allocation beyond the input.
//!
//! CI runs proptest's default case count; `PROPTEST_CASES` raises it
//! (`just fuzz-long`).

use crate::entry::{
    decode_blob, decode_entry, encode_blob, encode_entry, EntryItem, LogEntry, Position,
    Precondition, MAX_ENTRY_ITEMS, MAX_INLINE_SUMMARY,
};
use crate::layout::WriteId;
use crate::snapshot::{
    decode_snapshot, encode_snapshot, encode_snapshot_json, Snapshot, SnapshotChat,
};
use bytes::{BufMut, Bytes, BytesMut};
use chatvault_core::{ChatId, Error};
use proptest::prelude::*;

fn item(n: u64, deleted: bool, summary: Option<&'static [u8]>) -> EntryItem {
    EntryItem {
        chat: ChatId::new(),
        version: n,
        write: WriteId(n * 7919),
        deleted,
        pre: if n == 1 {
            Precondition::Absent
        } else {
            Precondition::Version(n - 1)
        },
        summary_len: summary.map_or(40, |s| s.len() as u64),
        body_len: (!deleted).then_some(300 + n),
        summary: summary.map(Bytes::from_static),
    }
}

fn valid_entry() -> Vec<u8> {
    let entry = LogEntry {
        items: vec![
            item(1, false, Some(b"sealed summary one")),
            item(2, true, Some(b"")),
            item(3, false, None),
        ],
    };
    encode_entry(&entry).expect("encodes").to_vec()
}

fn valid_snapshot() -> Snapshot {
    Snapshot {
        seq: 9,
        validity_from: 4,
        invalid: vec![Position { seq: 5, idx: 1 }],
        chats: [
            (2, false, Some(&b"two"[..])),
            (6, true, None),
            (9, false, Some(&b""[..])),
        ]
        .into_iter()
        .map(|(seq, deleted, summary)| SnapshotChat {
            at: Position { seq, idx: 0 },
            item: EntryItem {
                pre: Precondition::None,
                ..item(seq, deleted, summary)
            },
        })
        .collect(),
    }
}

/// Overwrites, then optionally truncates: enough to reach every branch of
/// a length-prefixed or JSON decoder from a valid start.
fn mutated(valid: &[u8], writes: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut out = valid.to_vec();
    for &(at, byte) in writes {
        let i = at % out.len().max(1);
        if let Some(slot) = out.get_mut(i) {
            *slot ^= byte | 1;
        }
    }
    if let Some(cut) = cut {
        out.truncate(cut % (out.len() + 1));
    }
    out
}

fn writes() -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>()), 1..4)
}

/// What every decoded snapshot must satisfy, whatever the input.
fn check_snapshot(snapshot: &Snapshot, input: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(
        snapshot.validity_from >= 1 && snapshot.validity_from <= snapshot.seq.saturating_add(1)
    );
    prop_assert!(snapshot.chats.windows(2).all(|w| w[0].at <= w[1].at));
    prop_assert!(snapshot
        .chats
        .iter()
        .all(|c| c.at.seq >= 1 && c.at.seq <= snapshot.seq));
    // Each chat took at least 53 input bytes (binary) or a JSON object.
    prop_assert!(snapshot.chats.len() <= input.len() / 20);
    for chat in &snapshot.chats {
        prop_assert!(!(chat.item.deleted && chat.item.body_len.is_some()));
        if let Some(summary) = &chat.item.summary {
            prop_assert!(summary.len() <= MAX_INLINE_SUMMARY);
        }
    }
    Ok(())
}

fn check_entry(entry: &LogEntry) -> Result<(), TestCaseError> {
    prop_assert!(!entry.items.is_empty() && entry.items.len() <= MAX_ENTRY_ITEMS);
    for item in &entry.items {
        if let Some(summary) = &item.summary {
            prop_assert_eq!(summary.len() as u64, item.summary_len);
        }
        prop_assert!(!(item.deleted && item.body_len.is_some()));
    }
    // What decodes re-encodes to something that decodes the same.
    let again = decode_entry(&encode_entry(entry).expect("re-encodes"), "again").ok();
    prop_assert_eq!(again.as_ref(), Some(entry));
    Ok(())
}

fn is_typed(error: &Error) -> bool {
    matches!(
        error,
        Error::Corrupt { .. } | Error::UnsupportedFormat { .. }
    )
}

proptest! {
    #[test]
    fn entry_decoder_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        framed in any::<bool>(),
    ) {
        // Half the inputs carry a valid header, to reach the JSON parser.
        let bytes = if framed { [&b"cvl\x01"[..], &bytes].concat() } else { bytes };
        match decode_entry(&bytes, "fuzz") {
            Ok(entry) => check_entry(&entry)?,
            Err(e) => prop_assert!(is_typed(&e), "{e}"),
        }
    }

    #[test]
    fn entry_decoder_never_panics_on_mutated_entries(writes in writes(), cut in any::<Option<usize>>()) {
        match decode_entry(&mutated(&valid_entry(), &writes, cut), "fuzz") {
            Ok(entry) => check_entry(&entry)?,
            Err(e) => prop_assert!(is_typed(&e), "{e}"),
        }
    }

    #[test]
    fn blob_decoder_never_panics_and_keeps_the_promised_lengths(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        framed in any::<bool>(),
        summary_len in prop_oneof![0u64..300, any::<u64>()],
        body_len in any::<Option<u64>>(),
        full in any::<bool>(),
    ) {
        let bytes = if framed { [&b"cvb\x01"[..], &bytes].concat() } else { bytes };
        match decode_blob(Bytes::from(bytes.clone()), summary_len, body_len, full, "fuzz") {
            Ok((summary, body)) => {
                prop_assert_eq!(summary.len() as u64, summary_len);
                let expected = if full { body_len } else { None };
                prop_assert_eq!(body.as_ref().map(|b| b.len() as u64), expected);
                prop_assert!(summary.len() + body.map_or(0, |b| b.len()) <= bytes.len());
            }
            Err(e) => prop_assert!(is_typed(&e), "{e}"),
        }
    }

    #[test]
    fn blob_decoder_never_panics_on_mutated_blobs(writes in writes(), cut in any::<Option<usize>>(), full in any::<bool>()) {
        let blob = encode_blob(b"sealed summary", Some(b"sealed body, a little longer"));
        let bytes = mutated(&blob, &writes, cut);
        if let Ok((summary, body)) = decode_blob(Bytes::from(bytes), 14, Some(28), full, "fuzz") {
            prop_assert_eq!(summary.len(), 14);
            prop_assert_eq!(body.map(|b| b.len()), full.then_some(28));
        }
    }

    #[test]
    fn snapshot_decoder_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..800),
        format in 0u8..4,
    ) {
        // Most inputs carry a header of either format, to reach the parsers.
        let bytes = match format {
            1 | 2 => [&b"cvs"[..], &[format], &bytes].concat(),
            _ => bytes,
        };
        match decode_snapshot(&bytes, "fuzz") {
            Ok(snapshot) => check_snapshot(&snapshot, &bytes)?,
            Err(e) => prop_assert!(is_typed(&e), "{e}"),
        }
    }

    #[test]
    fn snapshot_decoder_never_panics_on_mutated_snapshots(
        writes in writes(),
        cut in any::<Option<usize>>(),
        json in any::<bool>(),
    ) {
        let snapshot = valid_snapshot();
        let valid = if json { encode_snapshot_json(&snapshot) } else { encode_snapshot(&snapshot) };
        let bytes = mutated(&valid.expect("encodes"), &writes, cut);
        match decode_snapshot(&bytes, "fuzz") {
            Ok(decoded) => check_snapshot(&decoded, &bytes)?,
            Err(e) => prop_assert!(is_typed(&e), "{e}"),
        }
    }

    #[test]
    fn snapshot_counts_from_the_store_do_not_size_allocations(
        invalid_count in any::<u32>(),
        chat_count in any::<u64>(),
        tail in prop::collection::vec(any::<u8>(), 0..120),
    ) {
        // A header claiming billions of entries over a few bytes fails as
        // truncated after reading what is there, not after reserving room.
        let mut bytes = BytesMut::new();
        bytes.put_slice(b"cvs\x02");
        bytes.put_u64_le(3);
        bytes.put_u64_le(1);
        bytes.put_u32_le(invalid_count);
        if invalid_count == 0 {
            bytes.put_u64_le(chat_count);
        }
        bytes.put_slice(&tail);
        match decode_snapshot(&bytes, "fuzz") {
            Ok(snapshot) => check_snapshot(&snapshot, &bytes)?,
            Err(e) => prop_assert!(is_typed(&e), "{e}"),
        }
    }
}

#[test]
fn valid_encodings_decode_unchanged() {
    let entry = decode_entry(&valid_entry(), "valid").expect("entry decodes");
    assert_eq!(entry.items.len(), 3);
    let snapshot = valid_snapshot();
    for bytes in [
        encode_snapshot(&snapshot).expect("binary"),
        encode_snapshot_json(&snapshot).expect("json"),
    ] {
        assert_eq!(decode_snapshot(&bytes, "valid").expect("decodes"), snapshot);
    }
}
