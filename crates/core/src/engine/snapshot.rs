//! The sealed sidebar snapshot: every live chat's summary in one compact
//! binary encoding under one AEAD seal, kept in the replica so a cold start
//! opens one blob instead of one sealed summary per chat (docs/design.md
//! §8, "Sidebar snapshot").
//!
//! The encoding is hand-written rather than serde-based: it holds seven
//! fixed fields per summary, a general binary format crate would be a new
//! dependency for that, and JSON is what made the per-record open slow.
//! Layout (all integers big-endian):
//!
//! ```text
//! format u8 (1) ‖ digest [32] ‖ count u32 ‖ count × entry
//! entry = id [16] ‖ created hlc ‖ last_activity hlc ‖ message_count u32 ‖
//!         flags u8 (bit 0: starred, bit 1: deleted hlc follows) ‖
//!         [deleted hlc] ‖ title_len u32 ‖ title (UTF-8)
//! hlc   = millis u64 ‖ counter u32 ‖ device u64
//! ```
//!
//! `digest` is the replica's digest of its stored summaries' ids, versions
//! and tombstone flags when the snapshot was written
//! (`replica::write::summaries_digest`): sealed inside, so an old snapshot
//! cannot be passed off as reflecting newer records.
//!
//! Decoding checks every length against the bytes left and refuses
//! trailing bytes, unknown flags and unknown formats: any input is either
//! a snapshot or an error, never a panic.

use crate::chat::ChatSummary;
use crate::hlc::Hlc;
use crate::ids::{ChatId, DeviceId};
use crate::{Error, Result};

/// Format byte of the snapshots this build writes and reads.
pub(crate) const SNAPSHOT_FORMAT: u8 = 1;

const FLAG_STARRED: u8 = 1;
const FLAG_DELETED: u8 = 2;
const HLC_LEN: usize = 8 + 4 + 8;
/// The smallest entry: id, two stamps, count, flags, empty title.
const MIN_ENTRY: usize = 16 + 2 * HLC_LEN + 4 + 1 + 4;

fn put_hlc(out: &mut Vec<u8>, hlc: &Hlc) {
    out.extend_from_slice(&hlc.millis.to_be_bytes());
    out.extend_from_slice(&hlc.counter.to_be_bytes());
    out.extend_from_slice(&hlc.device.0.to_be_bytes());
}

/// The digest of the replica's summaries a snapshot reflects.
pub(crate) type Digest = [u8; 32];

/// Encodes `summaries` as one snapshot plaintext reflecting `digest`.
pub(crate) fn encode<'a>(
    digest: &Digest,
    summaries: impl ExactSizeIterator<Item = &'a ChatSummary>,
) -> Result<Vec<u8>> {
    let count = u32::try_from(summaries.len())
        .map_err(|_| Error::invalid("too many chats for one sidebar snapshot"))?;
    let mut out = Vec::with_capacity(37 + summaries.len() * (MIN_ENTRY + 32));
    out.push(SNAPSHOT_FORMAT);
    out.extend_from_slice(digest);
    out.extend_from_slice(&count.to_be_bytes());
    for s in summaries {
        out.extend_from_slice(s.id.as_bytes());
        put_hlc(&mut out, &s.created);
        put_hlc(&mut out, &s.last_activity);
        out.extend_from_slice(&s.message_count.to_be_bytes());
        let mut flags = 0;
        if s.starred {
            flags |= FLAG_STARRED;
        }
        if s.deleted.is_some() {
            flags |= FLAG_DELETED;
        }
        out.push(flags);
        if let Some(deleted) = &s.deleted {
            put_hlc(&mut out, deleted);
        }
        let title_len = u32::try_from(s.title.len())
            .map_err(|_| Error::invalid(format!("the title of chat {} is too long", s.id)))?;
        out.extend_from_slice(&title_len.to_be_bytes());
        out.extend_from_slice(s.title.as_bytes());
    }
    Ok(out)
}

fn malformed(why: impl Into<String>) -> Error {
    Error::corrupt("sidebar snapshot", why)
}

/// Reads the snapshot plaintext front to back.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(malformed("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| malformed("truncated"))
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn hlc(&mut self) -> Result<Hlc> {
        Ok(Hlc::new(self.u64()?, self.u32()?, DeviceId(self.u64()?)))
    }
}

/// Decodes a snapshot plaintext: its digest and its summaries. Errors: [`Error::UnsupportedFormat`] for
/// another format byte, [`Error::Corrupt`] for anything malformed.
#[cfg(test)]
pub(crate) fn decode(bytes: &[u8]) -> Result<(Digest, Vec<ChatSummary>)> {
    let mut digest = [0; 32];
    let mut out = Vec::new();
    decode_with(
        bytes,
        |d| {
            digest = *d;
            Ok(())
        },
        |s| out.push(s),
    )?;
    Ok((digest, out))
}

/// Decodes a snapshot plaintext entry by entry, without collecting it
/// (the caller keeps each summary where it belongs, so a cold start holds
/// the plaintext and the sidebar, not a third copy): `check` sees the
/// digest before any entry, and may refuse it; `f` then receives each
/// summary in order. On an error part of the entries may have been given
/// to `f`. Errors as for [`decode`].
pub(crate) fn decode_with(
    bytes: &[u8],
    check: impl FnOnce(&Digest) -> Result<()>,
    mut f: impl FnMut(ChatSummary),
) -> Result<()> {
    let mut r = Reader { bytes };
    let format = r.u8()?;
    if format != SNAPSHOT_FORMAT {
        return Err(Error::UnsupportedFormat {
            what: "sidebar snapshot".to_string(),
            found: u32::from(format),
            supported: u32::from(SNAPSHOT_FORMAT),
        });
    }
    check(&r.array::<32>()?)?;
    let count = usize::try_from(r.u32()?).map_err(|_| malformed("count out of range"))?;
    if count > r.bytes.len() / MIN_ENTRY {
        return Err(malformed(format!(
            "{count} entries cannot fit in {} bytes",
            r.bytes.len()
        )));
    }
    for _ in 0..count {
        let id = ChatId::from_bytes(r.array()?);
        let created = r.hlc()?;
        let last_activity = r.hlc()?;
        let message_count = r.u32()?;
        let flags = r.u8()?;
        if flags & !(FLAG_STARRED | FLAG_DELETED) != 0 {
            return Err(malformed(format!("unknown flags {flags:#04x}")));
        }
        let deleted = if flags & FLAG_DELETED != 0 {
            Some(r.hlc()?)
        } else {
            None
        };
        let title_len = usize::try_from(r.u32()?).map_err(|_| malformed("title too long"))?;
        let title = std::str::from_utf8(r.take(title_len)?)
            .map_err(|_| malformed(format!("the title of chat {id} is not UTF-8")))?
            .to_owned();
        f(ChatSummary {
            id,
            title,
            created,
            last_activity,
            message_count,
            starred: flags & FLAG_STARRED != 0,
            deleted,
        });
    }
    if !r.bytes.is_empty() {
        return Err(malformed(format!(
            "{} bytes after the last entry",
            r.bytes.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hlc() -> impl Strategy<Value = Hlc> {
        (any::<u64>(), any::<u32>(), any::<u64>()).prop_map(|(t, c, d)| Hlc::new(t, c, DeviceId(d)))
    }

    fn summary() -> impl Strategy<Value = ChatSummary> {
        (
            any::<[u8; 16]>(),
            ".{0,40}",
            hlc(),
            hlc(),
            any::<u32>(),
            any::<bool>(),
            proptest::option::of(hlc()),
        )
            .prop_map(
                |(id, title, created, last_activity, message_count, starred, deleted)| {
                    ChatSummary {
                        id: ChatId::from_bytes(id),
                        title,
                        created,
                        last_activity,
                        message_count,
                        starred,
                        deleted,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn snapshots_round_trip(
            digest in any::<[u8; 32]>(),
            summaries in proptest::collection::vec(summary(), 0..20),
        ) {
            let bytes = encode(&digest, summaries.iter())?;
            prop_assert_eq!(decode(&bytes)?, (digest, summaries));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Either an error or (rarely) a well-formed snapshot that
            // encodes back to the same bytes.
            if let Ok((digest, summaries)) = decode(&bytes) {
                prop_assert_eq!(encode(&digest, summaries.iter())?, bytes);
            }
        }

        #[test]
        fn random_bytes_after_the_format_byte_are_errors(
            rest in proptest::collection::vec(any::<u8>(), 1..512),
        ) {
            // A count that does not match the bytes that follow is refused.
            let mut bytes = vec![SNAPSHOT_FORMAT];
            bytes.extend([0; 32]);
            bytes.extend([0xff, 0xff, 0xff, 0xff]);
            bytes.extend(rest);
            prop_assert!(decode(&bytes).is_err());
        }

        #[test]
        fn truncated_or_extended_snapshots_are_errors(
            summaries in proptest::collection::vec(summary(), 1..8),
            cut in any::<prop::sample::Index>(),
            extra in any::<u8>(),
        ) {
            let bytes = encode(&[7; 32], summaries.iter())?;
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..cut]).is_err());
            let mut longer = bytes.clone();
            longer.push(extra);
            prop_assert!(decode(&longer).is_err());
        }
    }

    #[test]
    fn another_format_byte_is_unsupported() {
        let mut bytes = encode(&[0; 32], std::iter::empty()).expect("encode");
        bytes[0] = 2;
        assert!(matches!(
            decode(&bytes),
            Err(Error::UnsupportedFormat { found: 2, .. })
        ));
        assert!(decode(&[]).is_err());
    }
}
