//! Entry points for coverage-guided fuzzing (`cargo fuzz`, see `fuzz/` at
//! the workspace root): each feeds bytes read from outside to one decoder of
//! this layout and panics only when a promise is broken. A typed error is
//! a pass. Built only with the `fuzzing` feature; not a stable API.

use crate::entry::{decode_blob, decode_entry, encode_entry, MAX_ENTRY_ITEMS};
use crate::snapshot::decode_snapshot;
use bytes::Bytes;
use chatvault_core::Error;

fn assert_typed(error: &Error) {
    assert!(
        matches!(
            error,
            Error::Corrupt { .. } | Error::UnsupportedFormat { .. }
        ),
        "untyped error: {error:?}"
    );
}

/// A log entry: decodes to a bounded entry that re-encodes to itself, or
/// fails typed.
pub fn log_entry(bytes: &[u8]) {
    match decode_entry(bytes, "fuzz") {
        Ok(entry) => {
            assert!(!entry.items.is_empty() && entry.items.len() <= MAX_ENTRY_ITEMS);
            for item in &entry.items {
                if let Some(summary) = &item.summary {
                    assert_eq!(summary.len() as u64, item.summary_len);
                }
            }
            let again = encode_entry(&entry).and_then(|b| decode_entry(&b, "again"));
            assert_eq!(again.ok().as_ref(), Some(&entry));
        }
        Err(error) => assert_typed(&error),
    }
}

/// A record blob, its lengths taken from the input's first bytes: the parts
/// come back with exactly the promised lengths, or a typed error.
pub fn record_blob(bytes: &[u8]) {
    let (lengths, blob) = bytes.split_at(bytes.len().min(4));
    let summary_len = u64::from(*lengths.first().unwrap_or(&0));
    let body_len = lengths.get(1).map(|b| u64::from(*b) * 3);
    let full = lengths.get(2).is_some_and(|b| b & 1 == 1);
    match decode_blob(
        Bytes::copy_from_slice(blob),
        summary_len,
        body_len,
        full,
        "fuzz",
    ) {
        Ok((summary, body)) => {
            assert_eq!(summary.len() as u64, summary_len);
            if let (Some(body), Some(len)) = (&body, body_len) {
                assert_eq!(body.len() as u64, len);
            }
        }
        Err(error) => assert_typed(&error),
    }
}

/// A compaction snapshot (binary or JSON): sorted, bounded by its input,
/// or a typed error.
pub fn snapshot(bytes: &[u8]) {
    match decode_snapshot(bytes, "fuzz") {
        Ok(snapshot) => {
            assert!(snapshot.chats.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(snapshot.chats.len() <= bytes.len() / 20);
        }
        Err(error) => assert_typed(&error),
    }
}
