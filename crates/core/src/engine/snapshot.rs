//! The sealed sidebar snapshot: every live chat's summary in one compact
//! binary encoding under one AEAD seal, kept in the replica so a cold start
//! opens one blob instead of one sealed summary per chat (docs/design.md
//! §8, "Sidebar snapshot").
//!
//! The snapshot is kept in chunks of at most [`CHUNK`] summaries, each
//! sealed on its own (bound to the vault, the generation and its index), so
//! that neither writing nor a cold start ever holds the whole plaintext: a
//! start opens and decodes one chunk at a time straight into the sidebar.
//! Layout of a chunk's plaintext (integers big-endian; `summary` as in
//! `crate::binary`):
//!
//! ```text
//! format u8 (2) ‖ digest [32] ‖ index u32 ‖ chunks u32 ‖ count u32 ‖ count × summary
//! ```
//!
//! Every chunk names its index and the number of chunks, sealed inside, so
//! chunks cannot be dropped, repeated, reordered or mixed across
//! snapshots without the decoder noticing.
//!
//! `digest` is the replica's digest of its stored summaries' ids, versions
//! and tombstone flags when the snapshot was written
//! (`replica::write::summaries_digest`): sealed inside, so an old snapshot
//! cannot be passed off as reflecting newer records.
//!
//! Decoding checks every length against the bytes left and refuses
//! trailing bytes, unknown flags and unknown formats: any input is either
//! a snapshot or an error, never a panic.

use crate::binary::{put_summary, Reader, MIN_SUMMARY_LEN};
use crate::chat::ChatSummary;
use crate::{Error, Result};

/// Format byte of the snapshot chunks this build writes and reads (format
/// 1, one unchunked snapshot, was written by the first release of it and
/// is never read: its key is removed at the next write).
pub(crate) const SNAPSHOT_FORMAT: u8 = 2;

/// Most summaries per sealed chunk: bounds what a cold start holds beside
/// the sidebar (~0.5 MB of plaintext) while keeping one AEAD per thousands
/// of summaries.
pub(crate) const CHUNK: usize = 4096;

/// Where a chunk sits in its snapshot.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Place {
    /// Its index, from 0.
    pub(crate) index: u32,
    /// How many chunks the snapshot has.
    pub(crate) chunks: u32,
}

/// The digest of the replica's summaries a snapshot reflects.
pub(crate) type Digest = [u8; 32];

/// Encodes `summaries` as the plaintext of chunk `place` of a snapshot
/// reflecting `digest`.
pub(crate) fn encode<'a>(
    digest: &Digest,
    place: Place,
    summaries: impl ExactSizeIterator<Item = &'a ChatSummary>,
) -> Result<Vec<u8>> {
    let count = u32::try_from(summaries.len())
        .map_err(|_| Error::invalid("too many chats for one sidebar snapshot chunk"))?;
    let mut out = Vec::with_capacity(45 + summaries.len() * (MIN_SUMMARY_LEN + 32));
    out.push(SNAPSHOT_FORMAT);
    out.extend_from_slice(digest);
    out.extend_from_slice(&place.index.to_be_bytes());
    out.extend_from_slice(&place.chunks.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    for s in summaries {
        put_summary(&mut out, s)?;
    }
    Ok(out)
}

/// Decodes a chunk's plaintext: its digest, place and summaries. Errors:
/// [`Error::UnsupportedFormat`] for another format byte,
/// [`Error::Corrupt`] for anything malformed.
#[cfg(test)]
pub(crate) fn decode(bytes: &[u8]) -> Result<(Digest, Place, Vec<ChatSummary>)> {
    let mut head = (
        [0; 32],
        Place {
            index: 0,
            chunks: 0,
        },
    );
    let mut out = Vec::new();
    decode_with(
        bytes,
        |d, p| {
            head = (*d, p);
            Ok(())
        },
        |s| out.push(s),
    )?;
    Ok((head.0, head.1, out))
}

/// Decodes a chunk's plaintext entry by entry, without collecting it
/// (the caller keeps each summary where it belongs, so a cold start holds
/// one chunk and the sidebar, not a third copy): `check` sees the digest
/// and the chunk's place before any entry, and may refuse them; `f` then
/// receives each summary in order. On an error part of the entries may
/// have been given to `f`. Errors as for [`decode`].
pub(crate) fn decode_with(
    bytes: &[u8],
    check: impl FnOnce(&Digest, Place) -> Result<()>,
    mut f: impl FnMut(ChatSummary),
) -> Result<()> {
    let mut r = Reader::new("sidebar snapshot", bytes);
    let format = r.u8()?;
    if format != SNAPSHOT_FORMAT {
        return Err(Error::UnsupportedFormat {
            what: "sidebar snapshot".to_string(),
            found: u32::from(format),
            supported: u32::from(SNAPSHOT_FORMAT),
        });
    }
    let digest = r.array::<32>()?;
    let place = Place {
        index: r.u32()?,
        chunks: r.u32()?,
    };
    if place.index >= place.chunks {
        return Err(r.malformed(format!("chunk {} of {} chunks", place.index, place.chunks)));
    }
    check(&digest, place)?;
    let count = usize::try_from(r.u32()?).map_err(|_| r.malformed("count out of range"))?;
    if count > r.bytes.len() / MIN_SUMMARY_LEN {
        return Err(r.malformed(format!(
            "{count} entries cannot fit in {} bytes",
            r.bytes.len()
        )));
    }
    for _ in 0..count {
        f(r.summary()?);
    }
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::ids::{ChatId, DeviceId};
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
            (index, chunks) in (1u32..5).prop_flat_map(|n| (0..n, Just(n))),
            summaries in proptest::collection::vec(summary(), 0..20),
        ) {
            let place = Place { index, chunks };
            let bytes = encode(&digest, place, summaries.iter())?;
            prop_assert_eq!(decode(&bytes)?, (digest, place, summaries));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Either an error or (rarely) a well-formed snapshot that
            // encodes back to the same bytes.
            if let Ok((digest, place, summaries)) = decode(&bytes) {
                prop_assert_eq!(encode(&digest, place, summaries.iter())?, bytes);
            }
        }

        #[test]
        fn random_bytes_after_the_format_byte_are_errors(
            rest in proptest::collection::vec(any::<u8>(), 1..512),
        ) {
            // A count that does not match the bytes that follow is refused.
            let mut bytes = vec![SNAPSHOT_FORMAT];
            bytes.extend([0; 32]);
            bytes.extend([0, 0, 0, 0, 0, 0, 0, 1]);
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
            let bytes = encode(&[7; 32], Place { index: 0, chunks: 1 }, summaries.iter())?;
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..cut]).is_err());
            let mut longer = bytes.clone();
            longer.push(extra);
            prop_assert!(decode(&longer).is_err());
        }
    }

    #[test]
    fn another_format_byte_is_unsupported() {
        let place = Place {
            index: 0,
            chunks: 1,
        };
        let mut bytes = encode(&[0; 32], place, std::iter::empty()).expect("encode");
        bytes[0] = 1;
        assert!(matches!(
            decode(&bytes),
            Err(Error::UnsupportedFormat { found: 1, .. })
        ));
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn a_chunk_placed_outside_its_snapshot_is_corrupt() {
        let bytes = encode(
            &[0; 32],
            Place {
                index: 2,
                chunks: 2,
            },
            std::iter::empty(),
        )
        .expect("encode");
        assert!(matches!(decode(&bytes), Err(Error::Corrupt { .. })));
    }
}
