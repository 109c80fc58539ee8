//! Fetching records the engine needs now: one batched fetch that tolerates
//! undecodable records, and a chat's body on demand.

use super::pull::apply_pulled;
use super::status::SkippedRecord;
use super::{blocking, Inner};
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

/// Fetches `chat` in full from the server and keeps it locally.
///
/// With concurrent writers the server may hold one current record per
/// writer: the one whose summary is held here (else the newest) is stored,
/// then the others are merged into it.
pub(super) async fn fetch_body(inner: &Arc<Inner>, chat: ChatId) -> Result<()> {
    let fetched = match inner.storage.get(&[chat], Part::Full).await {
        // With concurrent writers in a copied folder, a record that does not
        // read is usually a file still on its way from another device.
        Err(Error::Corrupt { what, reason }) if inner.capabilities.concurrent_writers => {
            return Err(Error::InTransit {
                what: format!("{what} ({reason})"),
            })
        }
        other => other?,
    };
    let mut records: Vec<SealedRecord> = fetched.into_iter().filter(|r| r.chat == chat).collect();
    let held = blocking(inner, move |inner| inner.local.replica.record(chat, false)).await?;
    let first = records
        .iter()
        .position(|r| held.as_ref().is_some_and(|h| h.summary == r.summary))
        .or_else(|| {
            records
                .iter()
                .enumerate()
                .max_by_key(|(_, r)| r.version)
                .map(|(i, _)| i)
        })
        .ok_or_else(|| Error::NotFound {
            what: format!("chat {chat} on the server"),
        })?;
    let record = records.swap_remove(first);
    blocking(inner, move |inner| {
        inner.local.store_fetched(record)?;
        if !records.is_empty() {
            apply_pulled(&inner.local, records, None, Vec::new())?;
        }
        Ok(())
    })
    .await
}
