//! Compaction snapshots: every chat's current record at one log slot.
//!
//! `snap/<seq>` holds, for each chat, its latest valid item as of slot `seq`
//! (with the inline summary, so a reader resyncing from it needs no other
//! request for the sidebar), the position of that item, and the invalid items
//! from `validity_from` on, so readers keep agreeing on validity for the log
//! entries that compaction kept. Encoded like a log entry: magic `cvs`, a
//! format byte, JSON. Size: roughly 1.4 × (summary + 150 bytes) per chat.

use crate::entry::{check_header, EntryItem, HEADER_LEN};
use crate::index::Position;
use bytes::{BufMut, Bytes, BytesMut};
use chatvault_core::{Error, Result};
use serde::{Deserialize, Serialize};

const SNAPSHOT_MAGIC: &[u8; 3] = b"cvs";
const SNAPSHOT_FORMAT: u8 = 1;
/// Largest snapshot a reader accepts: about 2.5 million chats with
/// 200-byte summaries, far above any one user's vault.
pub(crate) const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// The state after replaying log slots `1..=seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub(crate) seq: u64,
    pub(crate) validity_from: u64,
    pub(crate) invalid: Vec<Position>,
    /// Sorted by position, the order a resyncing reader reports them in.
    pub(crate) chats: Vec<SnapshotChat>,
}

/// One chat's current record and where in the log it was committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotChat {
    pub(crate) at: Position,
    #[serde(flatten)]
    pub(crate) item: EntryItem,
}

pub(crate) fn encode_snapshot(snapshot: &Snapshot) -> Result<Bytes> {
    let json = serde_json::to_vec(snapshot)
        .map_err(|e| Error::invalid(format!("cannot encode a snapshot: {e}")))?;
    let mut out = BytesMut::with_capacity(HEADER_LEN + json.len());
    out.put_slice(SNAPSHOT_MAGIC);
    out.put_u8(SNAPSHOT_FORMAT);
    out.put_slice(&json);
    Ok(out.freeze())
}

pub(crate) fn decode_snapshot(bytes: &[u8], what: &str) -> Result<Snapshot> {
    let json = check_header(bytes, SNAPSHOT_MAGIC, SNAPSHOT_FORMAT, "snapshot", what)?;
    let mut snapshot: Snapshot = serde_json::from_slice(json)
        .map_err(|e| Error::corrupt(what, format!("malformed snapshot: {e}")))?;
    if snapshot.validity_from == 0 || snapshot.validity_from > snapshot.seq.saturating_add(1) {
        return Err(Error::corrupt(
            what,
            "snapshot validity range out of bounds",
        ));
    }
    if snapshot
        .chats
        .iter()
        .map(|c| c.at)
        .chain(snapshot.invalid.iter().copied())
        .any(|at| at.seq > snapshot.seq || at.seq == 0)
    {
        return Err(Error::corrupt(
            what,
            "snapshot names a commit after its own slot",
        ));
    }
    snapshot.chats.sort_by_key(|c| c.at);
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Precondition;
    use crate::layout::WriteId;
    use chatvault_core::ChatId;

    #[test]
    fn snapshots_round_trip_and_come_back_in_log_order() {
        let chat = |seq| SnapshotChat {
            at: Position { seq, idx: 0 },
            item: EntryItem {
                chat: ChatId::new(),
                version: seq,
                write: WriteId::random(),
                deleted: seq == 2,
                pre: Precondition::None,
                summary_len: 2,
                body_len: (seq != 2).then_some(9),
                summary: Some(Bytes::from_static(b"hi")),
            },
        };
        let snapshot = Snapshot {
            seq: 5,
            validity_from: 3,
            invalid: vec![Position { seq: 4, idx: 1 }],
            chats: vec![chat(5), chat(2), chat(3)],
        };
        let decoded =
            decode_snapshot(&encode_snapshot(&snapshot).expect("encodes"), "t").expect("decodes");
        let mut sorted = snapshot.clone();
        sorted.chats.sort_by_key(|c| c.at);
        assert_eq!(decoded, sorted);
    }

    #[test]
    fn a_snapshot_naming_later_commits_is_corrupt() {
        let snapshot = Snapshot {
            seq: 1,
            validity_from: 1,
            invalid: vec![Position { seq: 9, idx: 0 }],
            chats: vec![SnapshotChat {
                at: Position { seq: 7, idx: 0 },
                item: EntryItem {
                    chat: ChatId::new(),
                    version: 1,
                    write: WriteId(1),
                    deleted: false,
                    pre: Precondition::None,
                    summary_len: 0,
                    body_len: None,
                    summary: None,
                },
            }],
        };
        let bytes = encode_snapshot(&snapshot).expect("encodes");
        assert!(matches!(
            decode_snapshot(&bytes, "t"),
            Err(Error::Corrupt { .. })
        ));
    }
}
