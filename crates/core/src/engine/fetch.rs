//! One batched fetch of records that tolerates undecodable ones: a batch
//! the backend cannot decode is retried record by record.

use super::status::SkippedRecord;
use super::Inner;
use crate::ids::ChatId;
use crate::storage::{Part, SealedRecord};
use crate::{Error, Result};
use std::sync::Arc;

/// What [`fetch`] brought: the records the backend returned, and the chats
/// whose record it could not even decode.
#[derive(Default)]
pub(super) struct Fetched {
    pub records: Vec<SealedRecord>,
    pub unreadable: Vec<SkippedRecord>,
    /// Requests made.
    pub requests: u64,
}

/// A chat to fetch, with the version expected (reported if it is
/// unreadable; 0 when unknown).
#[derive(Clone, Copy)]
pub(super) struct Wanted {
    pub chat: ChatId,
    pub version: u64,
}

/// Gets `wanted` in batches. A batch the backend cannot decode
/// ([`Error::Corrupt`]) is retried id by id, so one damaged record lands in
/// [`Fetched::unreadable`] and the others still arrive. Any other failure
/// fails the fetch.
pub(super) async fn fetch(inner: &Arc<Inner>, wanted: &[Wanted], part: Part) -> Result<Fetched> {
    let mut out = Fetched {
        records: Vec::with_capacity(wanted.len()),
        ..Fetched::default()
    };
    for chunk in wanted.chunks(inner.max_batch()) {
        let ids: Vec<ChatId> = chunk.iter().map(|w| w.chat).collect();
        out.requests += 1;
        match inner.storage.get(&ids, part).await {
            Ok(records) => out.records.extend(records),
            Err(Error::Corrupt { .. }) => {
                for w in chunk {
                    out.requests += 1;
                    match inner.storage.get(&[w.chat], part).await {
                        Ok(records) => out.records.extend(records),
                        Err(error @ Error::Corrupt { .. }) => {
                            out.unreadable.push(SkippedRecord {
                                chat: w.chat,
                                version: w.version,
                                error,
                            });
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
