//! The Storage contract, one `pub async fn` per behaviour, one module per
//! operation: [`get`], [`put`], [`batch`], [`delete`], [`feed`]
//! (`changes`), [`isolation`], [`keyring`], [`volume`], [`concurrency`],
//! [`corruption`], [`blobs`]. They depend on `chatvault-core` alone (with
//! its envelope cipher, which the blob corruption contract seals with).
//!
//! Each function opens its own vaults (named after itself) through a
//! [`TestBackend`](crate::TestBackend), so contracts run in any order and in parallel. A
//! function's one-line doc is the contract it checks; together they restate
//! the prose contract on [`chatvault_core::Storage`].
//!
//! Each module's `contracts()` registers its contracts with the capability
//! they need ([`Needs`](crate::Needs), the way OpenDAL's behavior tests gate on
//! `Capability`): the whole [`concurrency`] group needs
//! `atomic_preconditions`, [`feed::changes_inline_summaries_match_stored_summaries`]
//! needs `inline_summaries`, the whole [`blobs`] group needs `blobs`. The runner reads the backend's
//! [`Capabilities`](chatvault_core::Capabilities) once and reports a
//! contract whose capability is missing as skipped, with the reason, never
//! as passed. Contracts that need a [`TestBackend`](crate::TestBackend) hook the backend does
//! not implement (`open_counting`, `corrupt_record`) or a limit too large to
//! test return [`Verdict::Skipped`](crate::Verdict::Skipped) themselves, and so does a gated contract
//! called directly on a backend without its capability.
//!
//! [`contracts`] lists them all for the runner; a backend's own tests may
//! also call any function directly.

use crate::runner::{Contract, Failure};
use crate::{ensure, ensure_eq};
use bytes::Bytes;
use chatvault_core::{
    Change, ChatId, Cursor, DynStorage, Error, Part, PutPrecondition, SealedRecord,
};
use futures::stream::{self, StreamExt};
use std::sync::Arc;

/// Records the large-vault contracts write (override with the environment
/// variable `CHATVAULT_CONFORMANCE_RECORDS`).
pub const LARGE_VAULT_RECORDS: usize = 10_000;

pub mod batch;
pub mod blobs;
pub mod concurrency;
pub mod corruption;
pub mod delete;
pub mod feed;
pub mod get;
pub mod isolation;
pub mod keyring;
pub mod put;
pub mod volume;

/// Every Storage contract, group by group (one module per operation), in a
/// stable order. A contract's gate ([`Contract::needs`]) names the
/// capability it needs; the runner reports it as skipped when the backend
/// lacks that capability.
pub fn contracts() -> Vec<Contract> {
    [
        get::contracts(),
        put::contracts(),
        batch::contracts(),
        delete::contracts(),
        feed::contracts(),
        isolation::contracts(),
        keyring::contracts(),
        volume::contracts(),
        concurrency::contracts(),
        corruption::contracts(),
        blobs::contracts(),
    ]
    .concat()
}

// ---------------------------------------------------------------------------
// Test data

/// A record whose summary and body name the chat, version and writer, so a
/// read shows exactly which write it returns.
pub fn record(chat: ChatId, version: u64, writer: &str) -> SealedRecord {
    SealedRecord {
        chat,
        version,
        deleted: false,
        summary: Bytes::from(format!("summary|{chat}|{version}|{writer}")),
        body: Some(Bytes::from(format!(
            "body|{chat}|{version}|{writer}|{}",
            "x".repeat((version % 97) as usize)
        ))),
    }
}

/// The sealed deletion marker used for tombstones in the suite.
pub fn tombstone_summary(chat: ChatId, version: u64) -> Bytes {
    Bytes::from(format!("deleted|{chat}|{version}"))
}

/// Every change from `since` to the end of the feed, paging by `limit`;
/// returns them with the final cursor. Fails if the feed does not end
/// within `max_pages`, or if a page is empty while claiming more.
pub async fn drain(
    storage: &DynStorage,
    since: &Cursor,
    limit: usize,
) -> Result<(Vec<Change>, Cursor), Failure> {
    let mut cursor = since.clone();
    let mut all = Vec::new();
    let mut empty_pages_with_more = 0;
    loop {
        let page = storage.changes(&cursor, limit).await?;
        ensure!(
            page.changes.len() <= limit,
            "changes(limit = {limit}) returned {} changes",
            page.changes.len()
        );
        if page.changes.is_empty() && page.has_more {
            // A backend may skip invalid log entries; it must still advance.
            empty_pages_with_more += 1;
            ensure!(
                empty_pages_with_more < 1000 && page.cursor != cursor,
                "changes keeps answering empty pages with has_more = true from cursor {cursor:?}"
            );
        }
        all.extend(page.changes);
        cursor = page.cursor;
        if !page.has_more {
            return Ok((all, cursor));
        }
    }
}

pub(crate) fn ids(changes: &[Change]) -> Vec<(ChatId, u64, bool)> {
    changes
        .iter()
        .map(|c| (c.chat, c.version, c.deleted))
        .collect()
}

pub(crate) async fn get_one(
    storage: &DynStorage,
    chat: ChatId,
    part: Part,
) -> Result<Option<SealedRecord>, Failure> {
    let mut records = storage.get(&[chat], part).await?;
    ensure!(
        records.len() <= 1,
        "get of one id returned {} records",
        records.len()
    );
    Ok(records.pop())
}

pub(crate) fn expect_conflict(
    result: chatvault_core::Result<impl std::fmt::Debug>,
    chat: Option<ChatId>,
    current: Option<u64>,
    what: &str,
) -> Result<(), Failure> {
    match result {
        Err(Error::Conflict {
            chat: got_chat,
            current: got,
        }) => {
            if let Some(chat) = chat {
                ensure_eq!(got_chat, chat, "{what}: Conflict names the wrong chat");
            }
            ensure_eq!(
                got,
                current,
                "{what}: Conflict must carry the stored version"
            );
            Ok(())
        }
        other => Err(Failure(format!(
            "{what}: expected Conflict {{ current: {current:?} }}, got {other:?}"
        ))),
    }
}

pub(crate) fn large_vault_records() -> usize {
    std::env::var("CHATVAULT_CONFORMANCE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LARGE_VAULT_RECORDS)
}

/// Writes `count` fresh records (version 1, `Absent`) through `put_batch`,
/// several batches at a time when the backend's preconditions are atomic.
pub(crate) async fn fill(
    storage: &DynStorage,
    count: usize,
    writer: &str,
) -> Result<Vec<ChatId>, Failure> {
    let caps = storage.capabilities();
    let batch = caps.max_batch.clamp(1, 500);
    // Without atomic preconditions concurrent writers may clobber each
    // other; the large-vault contracts are about volume, not races.
    let parallel = if caps.atomic_preconditions { 4 } else { 1 };
    let chats: Vec<ChatId> = (0..count).map(|_| ChatId::new()).collect();
    let batches: Vec<Vec<(SealedRecord, PutPrecondition)>> = chats
        .chunks(batch)
        .map(|chunk| {
            chunk
                .iter()
                .map(|&chat| (record(chat, 1, writer), PutPrecondition::Absent))
                .collect()
        })
        .collect();
    let results: Vec<Result<(), Failure>> = stream::iter(batches)
        .map(|puts| {
            let storage = Arc::clone(storage);
            async move {
                for (index, result) in storage.put_batch(puts).await.into_iter().enumerate() {
                    if let Err(error) = result {
                        return Err(Failure(format!("put_batch entry {index} failed: {error}")));
                    }
                }
                Ok(())
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(chats)
}
