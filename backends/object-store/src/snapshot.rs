//! [`Snapshot`]: every chat's current record at one log slot, as compaction
//! writes it; its two formats, and finding the newest one.
//!
//! `snap/<seq>` holds, for each chat, its latest valid item as of slot `seq`
//! (with the inline summary, so a reader resyncing from it needs no other
//! request for the sidebar), the position of that item, and the invalid items
//! from `validity_from` on, so readers keep agreeing on validity for the log
//! entries that compaction kept. Two formats (magic `cvs`, then a format
//! byte), both read, format 2 written; `docs/design.md` §5 has the byte
//! layout and the history:
//!
//! - **1** (first release): JSON with base64 summaries, about
//!   1.4 × (summary + 150 bytes) per chat, read whole.
//! - **2**: fixed-width little-endian fields and length-prefixed sealed
//!   summaries, about summary + 60 bytes per chat, decoded chunk by chunk as
//!   it downloads.

use crate::entry::{
    check_header, EntryItem, Position, Precondition, HEADER_LEN, MAX_INLINE_SUMMARY,
};
use crate::layout::WriteId;
use crate::objects::Objects;
use crate::read::CappedStream;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use chatvault_core::{ChatId, Error, Result};
use futures::FutureExt;
use serde::{Deserialize, Serialize};

const SNAPSHOT_MAGIC: &[u8; 3] = b"cvs";
/// JSON, the first format; still read.
const SNAPSHOT_JSON: u8 = 1;
/// Binary, written since format 2.
const SNAPSHOT_BINARY: u8 = 2;
/// Largest snapshot a reader accepts: about 2.5 million chats with
/// 200-byte summaries, far above any one user's vault.
const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;
/// Chats or invalid positions preallocated for before they arrive (a
/// count read from the store is not trusted for allocation).
const PREALLOCATE: usize = 1 << 16;

const FLAG_DELETED: u8 = 1;
const FLAG_BODY: u8 = 2;
const FLAG_INLINE: u8 = 4;

/// The state after replaying log slots `1..=seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub(crate) seq: u64,
    pub(crate) validity_from: u64,
    pub(crate) invalid: Vec<Position>,
    /// Sorted by position, the order a resyncing reader reports them in.
    pub(crate) chats: Vec<SnapshotChat>,
}

impl Snapshot {
    /// The newest snapshot in `objects` that decodes, if any. Damaged
    /// snapshots are skipped for older ones.
    pub(crate) async fn latest(objects: &Objects) -> Result<Option<Self>> {
        let listed = objects
            .list_numbered(objects.layout().snap_dir(), 0)
            .await?;
        for (seq, meta) in listed.into_iter().rev() {
            let decoded = match objects
                .open_capped(&meta.location, None, MAX_SNAPSHOT_BYTES)
                .await
            {
                Ok(stream) => read_snapshot_stream(stream, meta.location.as_ref()).await,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => Err(e),
            };
            match decoded {
                Ok(snapshot) if snapshot.seq == seq => return Ok(Some(snapshot)),
                Ok(_) => {
                    tracing::warn!(snapshot = %meta.location, "skipping a snapshot whose content names another slot")
                }
                Err(e @ Error::Corrupt { .. }) => {
                    tracing::warn!(error = %e, "skipping a damaged snapshot")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// One chat's current record and where in the log it was committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotChat {
    pub(crate) at: Position,
    #[serde(flatten)]
    pub(crate) item: EntryItem,
}

/// Format 2: header, invalid positions, then one fixed-width record per
/// chat followed by its inline summary.
pub(crate) fn encode_snapshot(snapshot: &Snapshot) -> Result<Bytes> {
    let size = HEADER_LEN
        + 28
        + snapshot.invalid.len() * 12
        + snapshot
            .chats
            .iter()
            .map(|c| 69 + c.item.summary.as_ref().map_or(0, |s| 4 + s.len()))
            .sum::<usize>();
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(SNAPSHOT_MAGIC);
    out.put_u8(SNAPSHOT_BINARY);
    out.put_u64_le(snapshot.seq);
    out.put_u64_le(snapshot.validity_from);
    out.put_u32_le(u32::try_from(snapshot.invalid.len()).map_err(|_| too_many())?);
    for at in &snapshot.invalid {
        out.put_u64_le(at.seq);
        out.put_u32_le(at.idx);
    }
    out.put_u64_le(snapshot.chats.len() as u64);
    for chat in &snapshot.chats {
        let item = &chat.item;
        out.put_u64_le(chat.at.seq);
        out.put_u32_le(chat.at.idx);
        out.put_slice(item.chat.as_bytes());
        out.put_u64_le(item.version);
        out.put_u64_le(item.write.0);
        let mut flags = 0;
        if item.deleted {
            flags |= FLAG_DELETED;
        }
        if item.body_len.is_some() {
            flags |= FLAG_BODY;
        }
        if item.summary.is_some() {
            flags |= FLAG_INLINE;
        }
        out.put_u8(flags);
        out.put_u64_le(item.summary_len);
        if let Some(body_len) = item.body_len {
            out.put_u64_le(body_len);
        }
        if let Some(summary) = &item.summary {
            out.put_u32_le(u32::try_from(summary.len()).map_err(|_| too_many())?);
            out.put_slice(summary);
        }
    }
    Ok(out.freeze())
}

fn too_many() -> Error {
    Error::invalid("snapshot field too large for its format")
}

/// Format 1, JSON: what chatvault wrote before format 2. Kept so tests can
/// write vaults as older releases left them.
pub(crate) fn encode_snapshot_json(snapshot: &Snapshot) -> Result<Bytes> {
    let json = serde_json::to_vec(snapshot)
        .map_err(|e| Error::invalid(format!("cannot encode a snapshot: {e}")))?;
    let mut out = BytesMut::with_capacity(HEADER_LEN + json.len());
    out.put_slice(SNAPSHOT_MAGIC);
    out.put_u8(SNAPSHOT_JSON);
    out.put_slice(&json);
    Ok(out.freeze())
}

/// Decodes a snapshot held in memory, either format.
pub(crate) fn decode_snapshot(bytes: &[u8], what: &str) -> Result<Snapshot> {
    let mut reader = ChunkReader::from_bytes(Bytes::copy_from_slice(bytes), what);
    // Nothing to download: the decoder never waits.
    read_snapshot(&mut reader)
        .now_or_never()
        .unwrap_or_else(|| Err(Error::corrupt(what, "snapshot decoder stalled")))
}

/// Reads a snapshot as it downloads: format 2 is decoded chunk by chunk,
/// format 1 (JSON) collected first.
async fn read_snapshot_stream(stream: CappedStream, what: &str) -> Result<Snapshot> {
    let mut reader = ChunkReader::from_stream(stream, what);
    read_snapshot(&mut reader).await
}

async fn read_snapshot(reader: &mut ChunkReader) -> Result<Snapshot> {
    let header = reader.take(HEADER_LEN).await?;
    let format = if header.len() < HEADER_LEN || &header[..3] != SNAPSHOT_MAGIC {
        return Err(reader.corrupt("not a chatvault snapshot (bad magic or truncated)"));
    } else {
        header[3]
    };
    let snapshot = match format {
        SNAPSHOT_JSON => {
            let rest = reader.rest().await?;
            let mut framed = BytesMut::with_capacity(HEADER_LEN + rest.len());
            framed.put_slice(&header);
            framed.put_slice(&rest);
            let json = check_header(
                &framed,
                SNAPSHOT_MAGIC,
                SNAPSHOT_JSON,
                "snapshot",
                &reader.what,
            )?;
            serde_json::from_slice(json)
                .map_err(|e| reader.corrupt(format!("malformed snapshot: {e}")))?
        }
        SNAPSHOT_BINARY => read_binary(reader).await?,
        // Let the shared check say whether it is newer, retired or zero.
        _ => {
            check_header(
                &header,
                SNAPSHOT_MAGIC,
                SNAPSHOT_BINARY,
                "snapshot",
                &reader.what,
            )?;
            return Err(reader.corrupt("unknown snapshot format"));
        }
    };
    check(snapshot, &reader.what)
}

async fn read_binary(reader: &mut ChunkReader) -> Result<Snapshot> {
    let mut fixed = reader.take(20).await?;
    let seq = fixed.get_u64_le();
    let validity_from = fixed.get_u64_le();
    let invalid_count = fixed.get_u32_le() as usize;
    let mut invalid = Vec::with_capacity(invalid_count.min(PREALLOCATE));
    for _ in 0..invalid_count {
        let mut at = reader.take(12).await?;
        invalid.push(Position {
            seq: at.get_u64_le(),
            idx: at.get_u32_le(),
        });
    }
    let chat_count = reader.take(8).await?.get_u64_le();
    let mut chats = Vec::with_capacity(
        usize::try_from(chat_count)
            .unwrap_or(usize::MAX)
            .min(PREALLOCATE),
    );
    for _ in 0..chat_count {
        let mut fixed = reader.take(53).await?;
        let at = Position {
            seq: fixed.get_u64_le(),
            idx: fixed.get_u32_le(),
        };
        let mut id = [0u8; 16];
        fixed.copy_to_slice(&mut id);
        let version = fixed.get_u64_le();
        let write = WriteId(fixed.get_u64_le());
        let flags = fixed.get_u8();
        let summary_len = fixed.get_u64_le();
        if flags & !(FLAG_DELETED | FLAG_BODY | FLAG_INLINE) != 0 {
            return Err(reader.corrupt("unknown flags in a snapshot record"));
        }
        let body_len = if flags & FLAG_BODY != 0 {
            Some(reader.take(8).await?.get_u64_le())
        } else {
            None
        };
        let summary = if flags & FLAG_INLINE != 0 {
            let len = reader.take(4).await?.get_u32_le() as usize;
            if len > MAX_INLINE_SUMMARY || len as u64 != summary_len {
                return Err(reader.corrupt("inline summary length out of bounds"));
            }
            Some(reader.take(len).await?)
        } else {
            None
        };
        let deleted = flags & FLAG_DELETED != 0;
        if deleted && body_len.is_some() {
            return Err(reader.corrupt("tombstone with a body"));
        }
        chats.push(SnapshotChat {
            at,
            item: EntryItem {
                chat: ChatId::from_bytes(id),
                version,
                write,
                deleted,
                pre: Precondition::None,
                summary_len,
                body_len,
                summary,
            },
        });
    }
    if !reader.at_end().await? {
        return Err(reader.corrupt("bytes after the last snapshot record"));
    }
    Ok(Snapshot {
        seq,
        validity_from,
        invalid,
        chats,
    })
}

/// Checks what both formats promise, and sorts the chats by position.
fn check(mut snapshot: Snapshot, what: &str) -> Result<Snapshot> {
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

/// Bytes pulled from a download (or a buffer) as the decoder needs them.
struct ChunkReader {
    what: String,
    buffer: BytesMut,
    stream: Option<CappedStream>,
}

impl ChunkReader {
    fn from_bytes(bytes: Bytes, what: &str) -> Self {
        Self {
            what: what.to_owned(),
            buffer: BytesMut::from(&bytes[..]),
            stream: None,
        }
    }

    fn from_stream(stream: CappedStream, what: &str) -> Self {
        Self {
            what: what.to_owned(),
            buffer: BytesMut::new(),
            stream: Some(stream),
        }
    }

    fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::corrupt(self.what.clone(), reason.into())
    }

    /// Pulls chunks until `n` bytes are buffered; false at the end.
    async fn fill(&mut self, n: usize) -> Result<bool> {
        while self.buffer.len() < n {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(false);
            };
            match stream.next_chunk().await? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => {
                    self.stream = None;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    async fn take(&mut self, n: usize) -> Result<Bytes> {
        if !self.fill(n).await? {
            return Err(self.corrupt("snapshot truncated"));
        }
        Ok(self.buffer.split_to(n).freeze())
    }

    async fn rest(&mut self) -> Result<Bytes> {
        while self.fill(self.buffer.len() + 1).await? {}
        Ok(self.buffer.split().freeze())
    }

    async fn at_end(&mut self) -> Result<bool> {
        Ok(!self.fill(1).await?)
    }
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
    fn json_snapshots_of_older_releases_still_decode_to_the_same_state() {
        let item = |seq: u64, summary: Option<&'static [u8]>| SnapshotChat {
            at: Position { seq, idx: 0 },
            item: EntryItem {
                chat: ChatId::new(),
                version: seq,
                write: WriteId::random(),
                deleted: false,
                pre: Precondition::None,
                summary_len: summary.map_or(5, |s| s.len() as u64),
                body_len: Some(9),
                summary: summary.map(Bytes::from_static),
            },
        };
        let snapshot = Snapshot {
            seq: 4,
            validity_from: 2,
            invalid: vec![Position { seq: 3, idx: 0 }],
            chats: vec![item(1, Some(b"one")), item(2, None), item(4, Some(b""))],
        };
        let json = encode_snapshot_json(&snapshot).expect("encodes");
        let binary = encode_snapshot(&snapshot).expect("encodes");
        assert_eq!(json[3], 1);
        assert_eq!(binary[3], 2);
        assert_eq!(decode_snapshot(&json, "t").expect("json"), snapshot);
        assert_eq!(decode_snapshot(&binary, "t").expect("binary"), snapshot);
        assert!(binary.len() < json.len());
        for cut in [0, 3, 5, 30, binary.len() - 1] {
            assert!(
                matches!(
                    decode_snapshot(&binary[..cut], "t"),
                    Err(Error::Corrupt { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut newer = binary.to_vec();
        newer[3] = 3;
        assert!(matches!(
            decode_snapshot(&newer, "t"),
            Err(Error::UnsupportedFormat { found: 3, .. })
        ));
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
