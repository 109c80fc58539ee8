//! Byte layouts of the replica's table values.
//!
//! Fixed little layouts rather than JSON: the sidebar reads one summary
//! value per chat at cold start, and the outbox is rewritten on every save.
//!
//! - summary value: `version u64 BE ‖ flags u8 (bit 0: tombstone) ‖ sealed summary`
//! - body value: `version u64 BE ‖ sealed body`
//! - outbox value: `layout u8 (1) ‖ flags u8 (bit 0: has base) ‖ base u64 BE ‖
//!   version u64 BE ‖ attempts u32 BE ‖ not_before u64 BE (Unix ms)`

use crate::ids::ChatId;
use crate::{Error, Result};

const FLAG_DELETED: u8 = 1;
const FLAG_HAS_BASE: u8 = 1;
const OUTBOX_LAYOUT: u8 = 1;
const OUTBOX_LEN: usize = 1 + 1 + 8 + 8 + 4 + 8;

/// What the replica knows of a chat's record without opening it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// The version the stored record was sealed for.
    pub version: u64,
    /// True for a tombstone.
    pub deleted: bool,
}

/// A chat whose local state the server has not confirmed yet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The chat.
    pub chat: ChatId,
    /// The server version the local state was built on (`None`: the chat is
    /// new to the server). The push's precondition.
    pub base: Option<u64>,
    /// The version of the stored record to push.
    pub version: u64,
    /// Failed push attempts since the last local change.
    pub attempts: u32,
    /// Unix milliseconds before which background sync does not retry.
    pub not_before: u64,
}

pub(crate) fn corrupt(chat: ChatId, table: &str) -> Error {
    Error::local_message(format!(
        "the replica's {table} entry for chat {chat} is truncated or malformed"
    ))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

pub(crate) fn encode_summary(version: u64, deleted: bool, sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + sealed.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.push(if deleted { FLAG_DELETED } else { 0 });
    out.extend_from_slice(sealed);
    out
}

pub(crate) fn decode_summary(chat: ChatId, bytes: &[u8]) -> Result<(RecordHeader, &[u8])> {
    let version = u64_at(bytes, 0).ok_or_else(|| corrupt(chat, "summary"))?;
    let flags = *bytes.get(8).ok_or_else(|| corrupt(chat, "summary"))?;
    let header = RecordHeader {
        version,
        deleted: flags & FLAG_DELETED != 0,
    };
    Ok((header, &bytes[9..]))
}

pub(crate) fn encode_body(version: u64, sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + sealed.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(sealed);
    out
}

pub(crate) fn decode_body(chat: ChatId, bytes: &[u8]) -> Result<(u64, &[u8])> {
    let version = u64_at(bytes, 0).ok_or_else(|| corrupt(chat, "body"))?;
    Ok((version, &bytes[8..]))
}

pub(crate) fn encode_outbox(entry: &OutboxEntry) -> [u8; OUTBOX_LEN] {
    let mut out = [0u8; OUTBOX_LEN];
    out[0] = OUTBOX_LAYOUT;
    out[1] = if entry.base.is_some() {
        FLAG_HAS_BASE
    } else {
        0
    };
    out[2..10].copy_from_slice(&entry.base.unwrap_or(0).to_be_bytes());
    out[10..18].copy_from_slice(&entry.version.to_be_bytes());
    out[18..22].copy_from_slice(&entry.attempts.to_be_bytes());
    out[22..30].copy_from_slice(&entry.not_before.to_be_bytes());
    out
}

pub(crate) fn decode_outbox(chat: ChatId, bytes: &[u8]) -> Result<OutboxEntry> {
    if bytes.len() != OUTBOX_LEN || bytes[0] != OUTBOX_LAYOUT {
        return Err(corrupt(chat, "outbox"));
    }
    let base = u64_at(bytes, 2).ok_or_else(|| corrupt(chat, "outbox"))?;
    let version = u64_at(bytes, 10).ok_or_else(|| corrupt(chat, "outbox"))?;
    let attempts = bytes
        .get(18..22)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| corrupt(chat, "outbox"))?;
    let not_before = u64_at(bytes, 22).ok_or_else(|| corrupt(chat, "outbox"))?;
    Ok(OutboxEntry {
        chat,
        base: (bytes[1] & FLAG_HAS_BASE != 0).then_some(base),
        version,
        attempts,
        not_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn outbox_entries_round_trip(base in proptest::option::of(any::<u64>()), version: u64, attempts: u32, not_before: u64) {
            let chat = ChatId::new();
            let entry = OutboxEntry { chat, base, version, attempts, not_before };
            prop_assert_eq!(decode_outbox(chat, &encode_outbox(&entry))?, entry);
        }

        #[test]
        fn summary_values_round_trip(version: u64, deleted: bool, sealed in proptest::collection::vec(any::<u8>(), 0..64)) {
            let chat = ChatId::new();
            let bytes = encode_summary(version, deleted, &sealed);
            let (header, rest) = decode_summary(chat, &bytes)?;
            prop_assert_eq!(header, RecordHeader { version, deleted });
            prop_assert_eq!(rest, sealed.as_slice());
        }

        #[test]
        fn truncated_values_are_typed_errors(bytes in proptest::collection::vec(any::<u8>(), 0..9)) {
            let chat = ChatId::new();
            let summary_refused = matches!(decode_summary(chat, &bytes), Err(Error::Local { .. }));
            let outbox_refused = matches!(decode_outbox(chat, &bytes), Err(Error::Local { .. }));
            prop_assert!(summary_refused);
            prop_assert!(outbox_refused);
        }
    }
}
