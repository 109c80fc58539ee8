//! Records this device could not open, kept until a later attempt opens
//! them (see `docs/design.md` §7): the pull cursor moves past them, but the
//! `skipped` table remembers each one, so nothing is forgotten.

use super::{local_error, Replica, SKIPPED};
use crate::ids::ChatId;
use crate::{Error, Result};
use redb::ReadableTable;

/// Why a record was skipped; decides when retrying can help.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// Sealed under a data key this device does not hold yet: retried after
    /// the keyring is re-read.
    UnknownKeyId,
    /// Written by a newer chatvault: retried after an upgrade.
    UnsupportedFormat,
    /// Failed authentication: retried later in case the server repairs it.
    Tampered,
    /// The backend or the decoder could not read it.
    Corrupt,
    /// Anything else.
    Other,
}

impl SkipReason {
    /// The reason an error gives.
    pub fn of(error: &Error) -> Self {
        match error {
            Error::UnknownKeyId { .. } => Self::UnknownKeyId,
            Error::UnsupportedFormat { .. } => Self::UnsupportedFormat,
            Error::Tampered { .. } => Self::Tampered,
            Error::Corrupt { .. } => Self::Corrupt,
            _ => Self::Other,
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::UnknownKeyId => 1,
            Self::UnsupportedFormat => 2,
            Self::Tampered => 3,
            Self::Corrupt => 4,
            Self::Other => 0,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            1 => Self::UnknownKeyId,
            2 => Self::UnsupportedFormat,
            3 => Self::Tampered,
            4 => Self::Corrupt,
            _ => Self::Other,
        }
    }
}

/// A record that could not be opened, as the replica remembers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedEntry {
    /// The chat.
    pub chat: ChatId,
    /// The version that failed to open.
    pub version: u64,
    /// Why, as a class.
    pub reason: SkipReason,
    /// The error, in words.
    pub message: String,
    /// Attempts so far (the first failure counts).
    pub attempts: u32,
    /// Unix milliseconds before which it is not retried (unless forced).
    pub not_before: u64,
    /// The data key ids its sealed parts name in their headers; empty when
    /// no header could be read, so it may need any key. A key it names (or
    /// any key, when empty) must not retire while the record is skipped.
    pub key_ids: Vec<u32>,
}

impl SkippedEntry {
    /// True if opening this record could need data key `key_id`.
    pub fn may_need(&self, key_id: u32) -> bool {
        self.key_ids.is_empty() || self.key_ids.contains(&key_id)
    }
}

/// Value layout, format 2: format byte, version u64 BE, reason code u8,
/// attempts u32 BE, not_before u64 BE, key id count u8, each key id u32 BE,
/// then the message as UTF-8. Format 1 (before key ids were kept) has no
/// count and reads with no key ids: it may need any key.
const FORMAT: u8 = 2;
const FORMAT_WITHOUT_KEYS: u8 = 1;
const FIXED: usize = 1 + 8 + 1 + 4 + 8;

pub(super) fn encode(entry: &SkippedEntry) -> Vec<u8> {
    let keys = &entry.key_ids[..entry.key_ids.len().min(usize::from(u8::MAX))];
    let mut out = Vec::with_capacity(FIXED + 1 + 4 * keys.len() + entry.message.len());
    out.push(FORMAT);
    out.extend_from_slice(&entry.version.to_be_bytes());
    out.push(entry.reason.code());
    out.extend_from_slice(&entry.attempts.to_be_bytes());
    out.extend_from_slice(&entry.not_before.to_be_bytes());
    out.push(keys.len() as u8);
    for id in keys {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(entry.message.as_bytes());
    out
}

pub(super) fn decode(chat: ChatId, bytes: &[u8]) -> Result<SkippedEntry> {
    let corrupt = || {
        Error::local_message(format!(
            "the replica's skipped-record entry of chat {chat} is malformed"
        ))
    };
    if bytes.len() < FIXED {
        return Err(corrupt());
    }
    if bytes[0] != FORMAT && bytes[0] != FORMAT_WITHOUT_KEYS {
        return Err(Error::UnsupportedFormat {
            what: format!("skipped-record entry of chat {chat} in the replica"),
            found: u32::from(bytes[0]),
            supported: u32::from(FORMAT),
        });
    }
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(corrupt)
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(corrupt)
    };
    let mut key_ids = Vec::new();
    let mut message_at = FIXED;
    if bytes[0] == FORMAT {
        let count = usize::from(*bytes.get(FIXED).ok_or_else(corrupt)?);
        for i in 0..count {
            key_ids.push(u32_at(FIXED + 1 + 4 * i)?);
        }
        message_at = FIXED + 1 + 4 * count;
    }
    Ok(SkippedEntry {
        chat,
        version: u64_at(1)?,
        reason: SkipReason::from_code(bytes[9]),
        attempts: u32_at(10)?,
        not_before: u64_at(14)?,
        key_ids,
        message: String::from_utf8_lossy(&bytes[message_at..]).into_owned(),
    })
}

impl Replica {
    /// Every record this device skipped and has not opened since, in chat
    /// id order.
    pub fn skipped(&self) -> Result<Vec<SkippedEntry>> {
        let txn = self.read()?;
        let table = match txn.open_table(SKIPPED) {
            Ok(table) => table,
            // Replicas from before this table existed have skipped nothing.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(local_error("cannot read the skipped records", e)),
        };
        let mut out = Vec::new();
        for row in table
            .iter()
            .map_err(|e| local_error("cannot read the skipped records", e))?
        {
            let (key, value) =
                row.map_err(|e| local_error("cannot read the skipped records", e))?;
            out.push(decode(ChatId::from_bytes(*key.value()), value.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key_ids: Vec<u32>) -> SkippedEntry {
        SkippedEntry {
            chat: ChatId::new(),
            version: 7,
            reason: SkipReason::Tampered,
            message: "failed authentication".to_string(),
            attempts: 3,
            not_before: 99,
            key_ids,
        }
    }

    #[test]
    fn skipped_entries_keep_their_key_ids_and_old_entries_may_need_any_key() {
        for ids in [vec![], vec![1], vec![1, 2]] {
            let e = entry(ids);
            assert_eq!(decode(e.chat, &encode(&e)).expect("decode"), e);
        }
        // Format 1, as written before key ids were kept.
        let e = entry(vec![4]);
        let mut old = encode(&e);
        old[0] = FORMAT_WITHOUT_KEYS;
        old.drain(FIXED..FIXED + 5);
        let read = decode(e.chat, &old).expect("decode format 1");
        assert!(read.key_ids.is_empty());
        assert_eq!(read.message, e.message);
        assert!(read.may_need(1) && read.may_need(9));
        assert!(e.may_need(4) && !e.may_need(1));
        assert!(decode(e.chat, &encode(&e)[..FIXED + 3]).is_err());
    }
}
