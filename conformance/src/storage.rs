//! The Storage contract, one `pub async fn` per behaviour.
//!
//! Each function opens its own vaults (named after itself) through a
//! [`TestBackend`], so contracts run in any order and in parallel. A
//! function's one-line doc is the contract it checks; together they restate
//! the prose contract on [`chatvault_core::Storage`]. Contracts that need a
//! capability or hook the backend lacks return [`Verdict::Skipped`] with the
//! reason.
//!
//! [`contracts`] lists them all for the runner; a backend's own tests may
//! also call any function directly.

use crate::backend::TestBackend;
use crate::layers::RequestCounter;
use crate::runner::{Contract, Failure, Outcome, Verdict};
use crate::{contract, ensure, ensure_eq};
use bytes::Bytes;
use chatvault_core::{
    Change, ChatId, Cursor, DynStorage, Error, Part, PutPrecondition, SealedRecord,
};
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Records the large-vault contracts write (override with the environment
/// variable `CHATVAULT_CONFORMANCE_RECORDS`).
pub const LARGE_VAULT_RECORDS: usize = 10_000;

/// Every Storage contract, in a stable order.
pub fn contracts() -> Vec<Contract> {
    vec![
        contract!("storage", capabilities_are_usable),
        contract!("storage", empty_vault_has_no_changes_records_or_keyring),
        contract!("storage", put_then_get_returns_summary_and_body),
        contract!("storage", get_summary_part_omits_bodies),
        contract!("storage", get_leaves_out_missing_ids),
        contract!("storage", get_accepts_max_batch_ids),
        contract!("storage", empty_body_round_trips_as_empty_not_absent),
        contract!("storage", large_versions_round_trip_exactly),
        contract!("storage", put_absent_commits_when_no_record_exists),
        contract!("storage", put_absent_conflicts_when_record_exists),
        contract!("storage", put_absent_conflicts_when_tombstone_exists),
        contract!("storage", put_version_commits_when_stored_version_matches),
        contract!(
            "storage",
            put_version_conflicts_with_current_version_when_stale
        ),
        contract!(
            "storage",
            put_version_conflicts_with_none_when_record_missing
        ),
        contract!("storage", put_none_commits_greater_versions),
        contract!("storage", put_rejects_versions_not_greater_than_stored),
        contract!("storage", put_batch_returns_one_result_per_record_in_order),
        contract!("storage", delete_leaves_tombstone_in_get_and_changes),
        contract!("storage", delete_with_stale_precondition_conflicts),
        contract!(
            "storage",
            put_over_tombstone_with_greater_version_revives_chat
        ),
        contract!(
            "storage",
            changes_report_commits_in_order_with_increasing_versions
        ),
        contract!(
            "storage",
            changes_paginate_with_small_limits_without_gaps_or_duplicates
        ),
        contract!(
            "storage",
            changes_after_saved_cursor_report_only_later_commits
        ),
        contract!("storage", cursor_from_one_client_works_on_another),
        contract!("storage", changes_inline_summaries_match_stored_summaries),
        contract!("storage", put_over_max_record_bytes_fails_too_large),
        contract!("storage", vaults_are_isolated),
        contract!("storage", keyring_round_trips_with_preconditions),
        contract!("storage", keyring_is_isolated_between_vaults),
        contract!("storage", large_vault_pages_through_feed_and_get),
        contract!("storage", idle_poll_costs_one_request_in_large_vault),
        contract!("storage", concurrent_absent_puts_commit_exactly_once),
        contract!("storage", concurrent_version_puts_commit_exactly_once),
        contract!(
            "storage",
            concurrent_writers_feed_reports_every_commit_once_in_one_order
        ),
        contract!(
            "storage",
            corrupt_record_fails_corrupt_and_others_stay_readable
        ),
    ]
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

fn ids(changes: &[Change]) -> Vec<(ChatId, u64, bool)> {
    changes
        .iter()
        .map(|c| (c.chat, c.version, c.deleted))
        .collect()
}

async fn get_one(
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

fn expect_conflict(
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

fn large_vault_records() -> usize {
    std::env::var("CHATVAULT_CONFORMANCE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LARGE_VAULT_RECORDS)
}

/// Writes `count` fresh records (version 1, `Absent`) through `put_batch`,
/// several batches at a time when the backend's preconditions are atomic.
async fn fill(storage: &DynStorage, count: usize, writer: &str) -> Result<Vec<ChatId>, Failure> {
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

// ---------------------------------------------------------------------------
// Basic operations

/// `capabilities()` allows batches of at least one record and records of at
/// least 4 KiB.
pub async fn capabilities_are_usable(backend: &dyn TestBackend) -> Outcome {
    let storage = backend.open("capabilities_are_usable").await?;
    let caps = storage.capabilities();
    ensure!(caps.max_batch >= 1, "max_batch is {}", caps.max_batch);
    ensure!(
        caps.max_record_bytes >= 4096,
        "max_record_bytes is {}",
        caps.max_record_bytes
    );
    ensure!(
        !caps.push || storage.push().is_some(),
        "capabilities().push is true but push() returns None"
    );
    Ok(Verdict::Passed)
}

/// A new vault has an empty feed, no records and no keyring.
pub async fn empty_vault_has_no_changes_records_or_keyring(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("empty_vault_has_no_changes_records_or_keyring")
        .await?;
    let page = storage.changes(&Cursor::start(), 100).await?;
    ensure!(
        page.changes.is_empty(),
        "new vault reports {:?}",
        page.changes
    );
    ensure!(!page.has_more, "new vault's feed claims more pages");
    let again = storage.changes(&page.cursor, 100).await?;
    ensure!(
        again.changes.is_empty(),
        "feed after its own cursor reports {:?}",
        again.changes
    );
    let records = storage
        .get(&[ChatId::new(), ChatId::new()], Part::Full)
        .await?;
    ensure!(
        records.is_empty(),
        "get of unknown ids returned {records:?}"
    );
    ensure!(
        storage.get_keyring().await?.is_none(),
        "new vault has a keyring"
    );
    Ok(Verdict::Passed)
}

/// `get(Full)` returns exactly the summary and body that were put.
pub async fn put_then_get_returns_summary_and_body(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("put_then_get_returns_summary_and_body")
        .await?;
    let chat = ChatId::new();
    let written = record(chat, 7, "a");
    storage
        .put(written.clone(), PutPrecondition::Absent)
        .await?;
    let read = get_one(&storage, chat, Part::Full).await?;
    ensure_eq!(read, Some(written.clone()), "get(Full) after put");
    // A second client (another device) sees the same record.
    let other = backend
        .open("put_then_get_returns_summary_and_body")
        .await?;
    let read = get_one(&other, chat, Part::Full).await?;
    ensure_eq!(read, Some(written), "get(Full) from another client");
    Ok(Verdict::Passed)
}

/// `get(Summary)` returns the summary with `body: None`.
pub async fn get_summary_part_omits_bodies(backend: &dyn TestBackend) -> Outcome {
    let storage = backend.open("get_summary_part_omits_bodies").await?;
    let chat = ChatId::new();
    let written = record(chat, 3, "a");
    storage
        .put(written.clone(), PutPrecondition::Absent)
        .await?;
    let read = get_one(&storage, chat, Part::Summary).await?;
    let expected = SealedRecord {
        body: None,
        ..written
    };
    ensure_eq!(read, Some(expected), "get(Summary)");
    Ok(Verdict::Passed)
}

/// `get` returns the records of the ids that exist, in any order, and
/// leaves the others out.
pub async fn get_leaves_out_missing_ids(backend: &dyn TestBackend) -> Outcome {
    let storage = backend.open("get_leaves_out_missing_ids").await?;
    let (a, b) = (ChatId::new(), ChatId::new());
    storage
        .put(record(a, 1, "a"), PutPrecondition::Absent)
        .await?;
    storage
        .put(record(b, 2, "b"), PutPrecondition::Absent)
        .await?;
    let mut read = storage
        .get(&[ChatId::new(), b, ChatId::new(), a], Part::Full)
        .await?;
    read.sort_by_key(|r| r.chat);
    let mut expected = vec![record(a, 1, "a"), record(b, 2, "b")];
    expected.sort_by_key(|r| r.chat);
    ensure_eq!(read, expected, "get of two existing and two missing ids");
    Ok(Verdict::Passed)
}

/// `get` answers a request of `max_batch` ids (capped at 1,000) in one call.
pub async fn get_accepts_max_batch_ids(backend: &dyn TestBackend) -> Outcome {
    let storage = backend.open("get_accepts_max_batch_ids").await?;
    let count = storage.capabilities().max_batch.clamp(1, 1000);
    let chats = fill(&storage, count, "batch").await?;
    let read = storage.get(&chats, Part::Summary).await?;
    ensure_eq!(read.len(), count, "records returned for {count} ids");
    let wanted: HashSet<ChatId> = chats.iter().copied().collect();
    let got: HashSet<ChatId> = read.iter().map(|r| r.chat).collect();
    ensure!(wanted == got, "get returned other ids than asked for");
    Ok(Verdict::Passed)
}

/// A record with an empty body comes back with `Some(empty)`, not `None`.
pub async fn empty_body_round_trips_as_empty_not_absent(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("empty_body_round_trips_as_empty_not_absent")
        .await?;
    let chat = ChatId::new();
    let written = SealedRecord {
        chat,
        version: 1,
        deleted: false,
        summary: Bytes::from_static(b"s"),
        body: Some(Bytes::new()),
    };
    storage
        .put(written.clone(), PutPrecondition::Absent)
        .await?;
    ensure_eq!(
        get_one(&storage, chat, Part::Full).await?,
        Some(written),
        "get(Full) of a record with an empty body"
    );
    Ok(Verdict::Passed)
}

/// Versions above 2^53 (beyond a JSON double) and up to `i64::MAX` survive
/// put, get and changes exactly.
pub async fn large_versions_round_trip_exactly(backend: &dyn TestBackend) -> Outcome {
    let storage = backend.open("large_versions_round_trip_exactly").await?;
    let chat = ChatId::new();
    let first = (1u64 << 53) + 1;
    let last = i64::MAX as u64;
    storage
        .put(record(chat, first, "a"), PutPrecondition::Absent)
        .await?;
    storage
        .put(record(chat, last, "a"), PutPrecondition::Version(first))
        .await?;
    ensure_eq!(
        get_one(&storage, chat, Part::Full).await?,
        Some(record(chat, last, "a")),
        "get after a put at version i64::MAX"
    );
    let (changes, _) = drain(&storage, &Cursor::start(), 100).await?;
    ensure_eq!(
        changes.last().map(|c| c.version),
        Some(last),
        "feed's last version"
    );
    Ok(Verdict::Passed)
}

// ---------------------------------------------------------------------------
// Preconditions

/// `put(Absent)` commits when the chat has no record.
pub async fn put_absent_commits_when_no_record_exists(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("put_absent_commits_when_no_record_exists")
        .await?;
    let chat = ChatId::new();
    storage
        .put(record(chat, 1, "a"), PutPrecondition::Absent)
        .await?;
    ensure_eq!(
        get_one(&storage, chat, Part::Full).await?,
        Some(record(chat, 1, "a")),
        "record after put(Absent)"
    );
    Ok(Verdict::Passed)
}

/// `put(Absent)` on an existing record fails with `Conflict` carrying the
/// stored version and changes nothing.
pub async fn put_absent_conflicts_when_record_exists(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("put_absent_conflicts_when_record_exists")
        .await?;
    let chat = ChatId::new();
    storage
        .put(record(chat, 4, "a"), PutPrecondition::Absent)
        .await?;
    let result = storage
        .put(record(chat, 9, "b"), PutPrecondition::Absent)
        .await;
    expect_conflict(result, Some(chat), Some(4), "second put(Absent)")?;
    ensure_eq!(
        get_one(&storage, chat, Part::Full).await?,
        Some(record(chat, 4, "a")),
        "record after the conflicting put"
    );
    let (changes, _) = drain(&storage, &Cursor::start(), 100).await?;
    ensure_eq!(
        ids(&changes),
        vec![(chat, 4, false)],
        "feed after the conflicting put"
    );
    Ok(Verdict::Passed)
}

/// `put(Absent)` fails with `Conflict` when only a tombstone exists.
pub async fn put_absent_conflicts_when_tombstone_exists(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("put_absent_conflicts_when_tombstone_exists")
        .await?;
    let chat = ChatId::new();
    storage
        .put(record(chat, 1, "a"), PutPrecondition::Absent)
        .await?;
    storage
        .delete(
            chat,
            2,
            tombstone_summary(chat, 2),
            PutPrecondition::Version(1),
        )
        .await?;
    let result = storage
        .put(record(chat, 3, "b"), PutPrecondition::Absent)
        .await;
    expect_conflict(result, Some(chat), Some(2), "put(Absent) over a tombstone")?;
    let read = get_one(&storage, chat, Part::Full).await?;
    ensure!(
        read.as_ref().is_some_and(|r| r.deleted && r.version == 2),
        "record after the conflicting put: {read:?}"
    );
    Ok(Verdict::Passed)
}

/// `put(Version(v))` commits when the stored version is `v`.
pub async fn put_version_commits_when_stored_version_matches(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("put_version_commits_when_stored_version_matches")
        .await?;
    let chat = ChatId::new();
    storage
        .put(record(chat, 1, "a"), PutPrecondition::Absent)
        .await?;
    storage
        .put(record(chat, 2, "b"), PutPrecondition::Version(1))
        .await?;
    storage
        .put(record(chat, 10, "c"), PutPrecondition::Version(2))
        .await?;
    ensure_eq!(
        get_one(&storage, chat, Part::Full).await?,
        Some(record(chat, 10, "c")),
        "record after two matching put(Version)"
    );
    Ok(Verdict::Passed)
}

/// `put(Version(v))` fails with `Conflict` carrying the stored version when
/// it is not `v`, and changes nothing.
pub async fn put_version_conflicts_with_current_version_when_stale(
    backend: &dyn TestBackend,
) -> Outcome {
    let storage = backend
        .open("put_version_conflicts_with_current_version_when_stale")
        .await?;
    let chat = ChatId::new();
    storage
        .put(record(chat, 1, "a"), PutPrecondition::Absent)
        .await?;
    storage
        .put(record(chat, 2, "a"), PutPrecondition::Version(1))
        .await?;
    let result = storage
        .put(record(chat, 3, "stale"), PutPrecondition::Version(1))
        .await;
    expect_conflict(
        result,
        Some(chat),
        Some(2),
        "put(Version(1)) over version 2",
    )?;
    ensure_eq!(
        get_one(&storage, chat, Part::Full).await?,
        Some(record(chat, 2, "a")),
        "record after the stale put"
    );
    Ok(Verdict::Passed)
}

/// `put(Version(v))` on a chat without a record fails with
/// `Conflict { current: None }`.
pub async fn put_version_conflicts_with_none_when_record_missing(
    backend: &dyn TestBackend,
) -> Outcome {
    let storage = backend
        .open("put_version_conflicts_with_none_when_record_missing")
        .await?;
    let chat = ChatId::new();
    let result = storage
        .put(record(chat, 2, "a"), PutPrecondition::Version(1))
        .await;
    expect_conflict(
        result,
        Some(chat),
        None,
        "put(Version(1)) on a missing chat",
    )?;
    ensure!(
        get_one(&storage, chat, Part::Full).await?.is_none(),
        "a record appeared after the failed put"
    );
    Ok(Verdict::Passed)
}

/// `put(None)` commits a first version and every greater one.
pub async fn put_none_commits_greater_versions(backend: &dyn TestBackend) -> Outcome {
    let storage = backend.open("put_none_commits_greater_versions").await?;
    let chat = ChatId::new();
    for version in [1, 2, 5, 100] {
        storage
            .put(record(chat, version, "a"), PutPrecondition::None)
            .await?;
    }
    ensure_eq!(
        get_one(&storage, chat, Part::Full).await?,
        Some(record(chat, 100, "a")),
        "record after put(None) at 1, 2, 5, 100"
    );
    Ok(Verdict::Passed)
}

/// A put whose version is not greater than the stored one fails with
/// `Conflict` carrying the stored version, whatever the precondition.
pub async fn put_rejects_versions_not_greater_than_stored(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("put_rejects_versions_not_greater_than_stored")
        .await?;
    let chat = ChatId::new();
    storage
        .put(record(chat, 5, "a"), PutPrecondition::Absent)
        .await?;
    let equal = storage
        .put(record(chat, 5, "b"), PutPrecondition::None)
        .await;
    expect_conflict(
        equal,
        Some(chat),
        Some(5),
        "put(None) at the stored version",
    )?;
    let lower = storage
        .put(record(chat, 4, "b"), PutPrecondition::None)
        .await;
    expect_conflict(lower, Some(chat), Some(5), "put(None) at a lower version")?;
    let same = storage
        .put(record(chat, 5, "b"), PutPrecondition::Version(5))
        .await;
    expect_conflict(same, Some(chat), Some(5), "put(Version(5)) at version 5")?;
    let tomb = storage
        .delete(chat, 3, tombstone_summary(chat, 3), PutPrecondition::None)
        .await;
    expect_conflict(tomb, Some(chat), Some(5), "delete at a lower version")?;
    ensure_eq!(
        get_one(&storage, chat, Part::Full).await?,
        Some(record(chat, 5, "a")),
        "record after the rejected puts"
    );
    Ok(Verdict::Passed)
}

/// `put_batch` returns one result per record, in order, and commits exactly
/// the entries whose precondition held.
pub async fn put_batch_returns_one_result_per_record_in_order(
    backend: &dyn TestBackend,
) -> Outcome {
    let storage = backend
        .open("put_batch_returns_one_result_per_record_in_order")
        .await?;
    let (taken, a, b) = (ChatId::new(), ChatId::new(), ChatId::new());
    storage
        .put(record(taken, 3, "first"), PutPrecondition::Absent)
        .await?;
    let results = storage
        .put_batch(vec![
            (record(a, 1, "batch"), PutPrecondition::Absent),
            (record(taken, 4, "batch"), PutPrecondition::Absent),
            (record(b, 1, "batch"), PutPrecondition::Absent),
            (
                record(ChatId::new(), 2, "batch"),
                PutPrecondition::Version(1),
            ),
        ])
        .await;
    ensure_eq!(results.len(), 4, "results for a batch of 4");
    let mut results = results.into_iter();
    let mut next = move || results.next().unwrap_or(Ok(()));
    ensure!(next().is_ok(), "entry 0 (fresh chat, Absent) failed");
    expect_conflict(
        next(),
        Some(taken),
        Some(3),
        "entry 1 (existing chat, Absent)",
    )?;
    ensure!(next().is_ok(), "entry 2 (fresh chat, Absent) failed");
    expect_conflict(next(), None, None, "entry 3 (missing chat, Version(1))")?;
    let mut read = storage.get(&[a, taken, b], Part::Full).await?;
    read.sort_by_key(|r| r.chat);
    let mut expected = vec![
        record(a, 1, "batch"),
        record(taken, 3, "first"),
        record(b, 1, "batch"),
    ];
    expected.sort_by_key(|r| r.chat);
    ensure_eq!(read, expected, "records after the batch");
    Ok(Verdict::Passed)
}

// ---------------------------------------------------------------------------
// Tombstones

/// `delete` leaves a tombstone that `get` returns (`deleted`, no body) and
/// `changes` reports.
pub async fn delete_leaves_tombstone_in_get_and_changes(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("delete_leaves_tombstone_in_get_and_changes")
        .await?;
    let chat = ChatId::new();
    storage
        .put(record(chat, 1, "a"), PutPrecondition::Absent)
        .await?;
    let (_, cursor) = drain(&storage, &Cursor::start(), 100).await?;
    storage
        .delete(
            chat,
            2,
            tombstone_summary(chat, 2),
            PutPrecondition::Version(1),
        )
        .await?;
    let tombstone = SealedRecord {
        chat,
        version: 2,
        deleted: true,
        summary: tombstone_summary(chat, 2),
        body: None,
    };
    ensure_eq!(
        get_one(&storage, chat, Part::Full).await?,
        Some(tombstone.clone()),
        "get(Full) of a deleted chat"
    );
    ensure_eq!(
        get_one(&storage, chat, Part::Summary).await?,
        Some(tombstone),
        "get(Summary) of a deleted chat"
    );
    let (changes, _) = drain(&storage, &cursor, 100).await?;
    ensure_eq!(
        ids(&changes),
        vec![(chat, 2, true)],
        "feed after the delete"
    );
    let (all, _) = drain(&storage, &Cursor::start(), 100).await?;
    ensure_eq!(
        all.last().map(|c| (c.chat, c.version, c.deleted)),
        Some((chat, 2, true)),
        "the whole feed ends with the tombstone"
    );
    Ok(Verdict::Passed)
}

/// `delete` with a stale precondition fails with `Conflict` and leaves the
/// record alive.
pub async fn delete_with_stale_precondition_conflicts(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("delete_with_stale_precondition_conflicts")
        .await?;
    let chat = ChatId::new();
    storage
        .put(record(chat, 1, "a"), PutPrecondition::Absent)
        .await?;
    storage
        .put(record(chat, 2, "a"), PutPrecondition::Version(1))
        .await?;
    let result = storage
        .delete(
            chat,
            3,
            tombstone_summary(chat, 3),
            PutPrecondition::Version(1),
        )
        .await;
    expect_conflict(
        result,
        Some(chat),
        Some(2),
        "delete with Version(1) over version 2",
    )?;
    ensure_eq!(
        get_one(&storage, chat, Part::Full).await?,
        Some(record(chat, 2, "a")),
        "record after the stale delete"
    );
    Ok(Verdict::Passed)
}

/// A put with a greater version over a tombstone commits a live record.
pub async fn put_over_tombstone_with_greater_version_revives_chat(
    backend: &dyn TestBackend,
) -> Outcome {
    let storage = backend
        .open("put_over_tombstone_with_greater_version_revives_chat")
        .await?;
    let chat = ChatId::new();
    storage
        .put(record(chat, 1, "a"), PutPrecondition::Absent)
        .await?;
    storage
        .delete(
            chat,
            2,
            tombstone_summary(chat, 2),
            PutPrecondition::Version(1),
        )
        .await?;
    storage
        .put(record(chat, 3, "b"), PutPrecondition::Version(2))
        .await?;
    ensure_eq!(
        get_one(&storage, chat, Part::Full).await?,
        Some(record(chat, 3, "b")),
        "record after reviving"
    );
    let (changes, _) = drain(&storage, &Cursor::start(), 100).await?;
    ensure_eq!(
        changes.last().map(|c| (c.version, c.deleted)),
        Some((3, false)),
        "feed's last change"
    );
    Ok(Verdict::Passed)
}

// ---------------------------------------------------------------------------
// The change feed

/// `changes` reports commits in commit order; per chat, versions strictly
/// increase and the last reported version is the stored one.
pub async fn changes_report_commits_in_order_with_increasing_versions(
    backend: &dyn TestBackend,
) -> Outcome {
    let storage = backend
        .open("changes_report_commits_in_order_with_increasing_versions")
        .await?;
    let chats: Vec<ChatId> = (0..5).map(|_| ChatId::new()).collect();
    let mut order = Vec::new();
    for round in 1..=3u64 {
        for &chat in &chats {
            let precondition = if round == 1 {
                PutPrecondition::Absent
            } else {
                PutPrecondition::Version(round - 1)
            };
            storage.put(record(chat, round, "a"), precondition).await?;
            order.push((chat, round));
        }
    }
    let (changes, _) = drain(&storage, &Cursor::start(), 1000).await?;
    let mut last: HashMap<ChatId, u64> = HashMap::new();
    let mut seen = HashSet::new();
    let mut previous_position = None;
    for change in &changes {
        ensure!(
            seen.insert((change.chat, change.version)),
            "commit {:?} v{} reported twice",
            change.chat,
            change.version
        );
        if let Some(&before) = last.get(&change.chat) {
            ensure!(
                change.version > before,
                "versions of {:?} go from {before} to {} in the feed",
                change.chat,
                change.version
            );
        }
        last.insert(change.chat, change.version);
        let position = order
            .iter()
            .position(|&(c, v)| c == change.chat && v == change.version);
        ensure!(
            position.is_some(),
            "feed reports a commit never made: {change:?}"
        );
        ensure!(
            previous_position < position,
            "feed is not in commit order at {change:?}"
        );
        previous_position = position;
    }
    for &chat in &chats {
        ensure_eq!(last.get(&chat), Some(&3), "last reported version of {chat}");
    }
    Ok(Verdict::Passed)
}

/// Paging the feed with limits 1, 2, 3 and 7 yields the same changes as one
/// large page, with `has_more` true until the last page.
pub async fn changes_paginate_with_small_limits_without_gaps_or_duplicates(
    backend: &dyn TestBackend,
) -> Outcome {
    let storage = backend
        .open("changes_paginate_with_small_limits_without_gaps_or_duplicates")
        .await?;
    for _ in 0..25 {
        storage
            .put(record(ChatId::new(), 1, "a"), PutPrecondition::Absent)
            .await?;
    }
    let (all, end) = drain(&storage, &Cursor::start(), 1000).await?;
    ensure_eq!(all.len(), 25, "changes in one large page");
    for limit in [1usize, 2, 3, 7] {
        let mut cursor = Cursor::start();
        let mut paged = Vec::new();
        let mut pages = 0;
        loop {
            let page = storage.changes(&cursor, limit).await?;
            pages += 1;
            ensure!(pages <= 25 * 2 + 2, "limit {limit}: feed does not end");
            ensure!(
                page.changes.len() <= limit,
                "limit {limit}: page of {}",
                page.changes.len()
            );
            paged.extend(page.changes);
            cursor = page.cursor;
            if !page.has_more {
                break;
            }
        }
        ensure_eq!(
            ids(&paged),
            ids(&all),
            "limit {limit}: paged feed vs one page"
        );
        let after = storage.changes(&cursor, limit).await?;
        ensure!(
            after.changes.is_empty() && !after.has_more,
            "limit {limit}: the final cursor still reports {:?}",
            after.changes
        );
    }
    let after = storage.changes(&end, 1000).await?;
    ensure!(
        after.changes.is_empty(),
        "end cursor reports {:?}",
        after.changes
    );
    Ok(Verdict::Passed)
}

/// `changes(cursor)` reports exactly the commits made after the cursor was
/// handed out.
pub async fn changes_after_saved_cursor_report_only_later_commits(
    backend: &dyn TestBackend,
) -> Outcome {
    let storage = backend
        .open("changes_after_saved_cursor_report_only_later_commits")
        .await?;
    let early = ChatId::new();
    storage
        .put(record(early, 1, "a"), PutPrecondition::Absent)
        .await?;
    let (_, cursor) = drain(&storage, &Cursor::start(), 100).await?;
    let (x, y) = (ChatId::new(), ChatId::new());
    storage
        .put(record(x, 1, "a"), PutPrecondition::Absent)
        .await?;
    storage
        .put(record(early, 2, "a"), PutPrecondition::Version(1))
        .await?;
    storage
        .put(record(y, 1, "a"), PutPrecondition::Absent)
        .await?;
    let (later, next) = drain(&storage, &cursor, 100).await?;
    ensure_eq!(
        ids(&later),
        vec![(x, 1, false), (early, 2, false), (y, 1, false)],
        "changes after the saved cursor"
    );
    let (none, _) = drain(&storage, &next, 100).await?;
    ensure!(none.is_empty(), "changes after the end: {none:?}");
    Ok(Verdict::Passed)
}

/// A cursor handed out to one client continues the feed on another client
/// of the same vault (cursors are stored across restarts and devices).
pub async fn cursor_from_one_client_works_on_another(backend: &dyn TestBackend) -> Outcome {
    let first = backend
        .open("cursor_from_one_client_works_on_another")
        .await?;
    first
        .put(record(ChatId::new(), 1, "a"), PutPrecondition::Absent)
        .await?;
    let (_, cursor) = drain(&first, &Cursor::start(), 100).await?;
    let chat = ChatId::new();
    first
        .put(record(chat, 1, "a"), PutPrecondition::Absent)
        .await?;
    let second = backend
        .open("cursor_from_one_client_works_on_another")
        .await?;
    let (later, _) = drain(&second, &cursor, 100).await?;
    ensure_eq!(
        ids(&later),
        vec![(chat, 1, false)],
        "second client's feed after the cursor"
    );
    Ok(Verdict::Passed)
}

/// When `inline_summaries` is declared, every change carries the stored
/// sealed summary of that version.
pub async fn changes_inline_summaries_match_stored_summaries(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("changes_inline_summaries_match_stored_summaries")
        .await?;
    if !storage.capabilities().inline_summaries {
        return Ok(Verdict::Skipped(
            "capabilities().inline_summaries is false".into(),
        ));
    }
    let chat = ChatId::new();
    storage
        .put(record(chat, 1, "a"), PutPrecondition::Absent)
        .await?;
    storage
        .delete(
            chat,
            2,
            tombstone_summary(chat, 2),
            PutPrecondition::Version(1),
        )
        .await?;
    let (changes, _) = drain(&storage, &Cursor::start(), 100).await?;
    let summaries: Vec<Option<Bytes>> = changes.into_iter().map(|c| c.summary).collect();
    ensure_eq!(
        summaries,
        vec![
            Some(record(chat, 1, "a").summary),
            Some(tombstone_summary(chat, 2))
        ],
        "inline summaries"
    );
    Ok(Verdict::Passed)
}

// ---------------------------------------------------------------------------
// Limits and isolation

/// A record of `max_record_bytes` commits; one byte more fails with
/// `TooLarge { size, limit }` and commits nothing.
pub async fn put_over_max_record_bytes_fails_too_large(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("put_over_max_record_bytes_fails_too_large")
        .await?;
    let limit = storage.capabilities().max_record_bytes;
    if limit > 64 << 20 {
        return Ok(Verdict::Skipped(format!(
            "max_record_bytes is {limit}: too large to build in memory (limit for this contract: 64 MiB)"
        )));
    }
    let summary = Bytes::from(vec![b's'; 100.min(limit)]);
    let record_of = |chat, size: usize| SealedRecord {
        chat,
        version: 1,
        deleted: false,
        summary: summary.clone(),
        body: Some(Bytes::from(vec![b'b'; size - summary.len()])),
    };
    let fits = ChatId::new();
    storage
        .put(record_of(fits, limit), PutPrecondition::Absent)
        .await?;
    let too_big = ChatId::new();
    match storage
        .put(record_of(too_big, limit + 1), PutPrecondition::Absent)
        .await
    {
        Err(Error::TooLarge { size, limit: l }) => {
            ensure_eq!((size, l), (limit + 1, limit), "TooLarge fields");
        }
        other => {
            return Err(Failure(format!(
                "put of {} bytes (limit {limit}): expected TooLarge, got {other:?}",
                limit + 1
            )))
        }
    }
    ensure!(
        get_one(&storage, too_big, Part::Summary).await?.is_none(),
        "the rejected record was stored"
    );
    let stored = get_one(&storage, fits, Part::Full).await?;
    ensure_eq!(
        stored.map(|r| r.size()),
        Some(limit),
        "size of the record at the limit"
    );
    Ok(Verdict::Passed)
}

/// Two vaults never see each other's records or changes, even for the same
/// chat id.
pub async fn vaults_are_isolated(backend: &dyn TestBackend) -> Outcome {
    let alice = backend.open("vaults_are_isolated_alice").await?;
    let bob = backend.open("vaults_are_isolated_bob").await?;
    let chat = ChatId::new();
    alice
        .put(record(chat, 5, "alice"), PutPrecondition::Absent)
        .await?;
    ensure!(
        get_one(&bob, chat, Part::Full).await?.is_none(),
        "bob reads alice's record"
    );
    let (bob_changes, _) = drain(&bob, &Cursor::start(), 100).await?;
    ensure!(bob_changes.is_empty(), "bob's feed shows {bob_changes:?}");
    bob.put(record(chat, 1, "bob"), PutPrecondition::Absent)
        .await?;
    ensure_eq!(
        get_one(&alice, chat, Part::Full).await?,
        Some(record(chat, 5, "alice")),
        "alice's record after bob wrote the same chat id"
    );
    ensure_eq!(
        get_one(&bob, chat, Part::Full).await?,
        Some(record(chat, 1, "bob")),
        "bob's record"
    );
    let (alice_changes, _) = drain(&alice, &Cursor::start(), 100).await?;
    ensure_eq!(ids(&alice_changes), vec![(chat, 5, false)], "alice's feed");
    Ok(Verdict::Passed)
}

/// The keyring starts absent, and `put_keyring` follows the precondition
/// rules with versions that strictly increase.
pub async fn keyring_round_trips_with_preconditions(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("keyring_round_trips_with_preconditions")
        .await?;
    ensure!(
        storage.get_keyring().await?.is_none(),
        "new vault has a keyring"
    );
    let missing = storage
        .put_keyring(Bytes::from_static(b"k0"), PutPrecondition::Version(1))
        .await;
    expect_conflict(
        missing,
        None,
        None,
        "put_keyring(Version(1)) with no keyring",
    )?;
    let v1 = storage
        .put_keyring(Bytes::from_static(b"k1"), PutPrecondition::Absent)
        .await?;
    let read = storage.get_keyring().await?;
    ensure_eq!(
        read.map(|k| (k.bytes, k.version)),
        Some((Bytes::from_static(b"k1"), v1)),
        "keyring after the first put"
    );
    let again = storage
        .put_keyring(Bytes::from_static(b"k-other"), PutPrecondition::Absent)
        .await;
    expect_conflict(again, None, Some(v1), "second put_keyring(Absent)")?;
    let v2 = storage
        .put_keyring(Bytes::from_static(b"k2"), PutPrecondition::Version(v1))
        .await?;
    ensure!(v2 > v1, "keyring version went from {v1} to {v2}");
    let stale = storage
        .put_keyring(Bytes::from_static(b"k-stale"), PutPrecondition::Version(v1))
        .await;
    expect_conflict(stale, None, Some(v2), "put_keyring with a stale version")?;
    let other = backend
        .open("keyring_round_trips_with_preconditions")
        .await?;
    let v3 = other
        .put_keyring(Bytes::from_static(b"k3"), PutPrecondition::None)
        .await?;
    ensure!(v3 > v2, "keyring version went from {v2} to {v3}");
    let read = storage.get_keyring().await?;
    ensure_eq!(
        read.map(|k| (k.bytes, k.version)),
        Some((Bytes::from_static(b"k3"), v3)),
        "keyring read by the first client after another client's put"
    );
    Ok(Verdict::Passed)
}

/// One vault's keyring is invisible to another vault.
pub async fn keyring_is_isolated_between_vaults(backend: &dyn TestBackend) -> Outcome {
    let alice = backend.open("keyring_is_isolated_alice").await?;
    let bob = backend.open("keyring_is_isolated_bob").await?;
    alice
        .put_keyring(Bytes::from_static(b"alice"), PutPrecondition::Absent)
        .await?;
    ensure!(
        bob.get_keyring().await?.is_none(),
        "bob reads alice's keyring"
    );
    bob.put_keyring(Bytes::from_static(b"bob"), PutPrecondition::Absent)
        .await?;
    ensure_eq!(
        alice.get_keyring().await?.map(|k| k.bytes),
        Some(Bytes::from_static(b"alice")),
        "alice's keyring after bob's put"
    );
    Ok(Verdict::Passed)
}

// ---------------------------------------------------------------------------
// Volume

/// With 10,000 records, paging the feed (limit 1,000, then 997) reports each
/// exactly once in one order, and `get` returns every record.
pub async fn large_vault_pages_through_feed_and_get(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("large_vault_pages_through_feed_and_get")
        .await?;
    let count = large_vault_records();
    let started = std::time::Instant::now();
    let chats = fill(&storage, count, "bulk").await?;
    let filled = started.elapsed();
    let (first, end) = drain(&storage, &Cursor::start(), 1000).await?;
    let drained = started.elapsed();
    ensure_eq!(first.len(), count, "changes reported for {count} puts");
    let unique: HashSet<ChatId> = first.iter().map(|c| c.chat).collect();
    ensure_eq!(unique.len(), count, "distinct chats in the feed");
    let wanted: HashSet<ChatId> = chats.iter().copied().collect();
    ensure!(
        unique == wanted,
        "the feed reports other chats than were written"
    );
    let other = backend
        .open("large_vault_pages_through_feed_and_get")
        .await?;
    let (second, _) = drain(&other, &Cursor::start(), 997).await?;
    ensure!(
        ids(&first) == ids(&second),
        "two readers with different page sizes saw different orders"
    );
    let (none, _) = drain(&storage, &end, 1000).await?;
    ensure!(none.is_empty(), "changes after the end: {}", none.len());
    let batch = storage.capabilities().max_batch.clamp(1, 1000);
    let mut found = 0;
    for ids in chats.chunks(batch) {
        let records = storage.get(ids, Part::Summary).await?;
        for r in &records {
            ensure_eq!(
                r.summary,
                record(r.chat, 1, "bulk").summary,
                "summary of {}",
                r.chat
            );
        }
        found += records.len();
    }
    ensure_eq!(found, count, "records returned by get");
    // Information for whoever tunes a backend; nothing asserts on time.
    println!(
        "storage::large_vault_pages_through_feed_and_get: {count} records: put_batch {filled:?}, first full feed read {:?}, total {:?}",
        drained - filled,
        started.elapsed()
    );
    Ok(Verdict::Passed)
}

/// With 10,000 records, a poll with nothing new costs one request to the
/// server (counted by the backend's request counter).
pub async fn idle_poll_costs_one_request_in_large_vault(backend: &dyn TestBackend) -> Outcome {
    let vault = "idle_poll_costs_one_request_in_large_vault";
    let requests = RequestCounter::new();
    let Some(counted) = backend.open_counting(vault, requests.clone()).await else {
        return Ok(Verdict::Skipped(
            "the test backend has no request counter (TestBackend::open_counting)".into(),
        ));
    };
    let counted = counted?;
    let count = large_vault_records();
    let writer = backend.open(vault).await?;
    fill(&writer, count, "bulk").await?;
    let (all, cursor) = drain(&counted, &Cursor::start(), 1000).await?;
    ensure_eq!(all.len(), count, "changes before the idle poll");
    // A first poll may warm caches (a snapshot, a compaction check); the
    // contract is about the steady state.
    let warm = counted.changes(&cursor, 1000).await?;
    ensure!(warm.changes.is_empty(), "changes appeared from nowhere");
    requests.reset();
    let idle = counted.changes(&warm.cursor, 1000).await?;
    ensure!(idle.changes.is_empty(), "changes appeared from nowhere");
    let made = requests.total();
    println!(
        "storage::idle_poll_costs_one_request_in_large_vault: {count} records: idle poll made {made} request(s), {} bytes ({:?})",
        requests.total_bytes(),
        requests.snapshot()
    );
    ensure_eq!(made, 1, "requests made by one idle poll ({requests:?})");
    Ok(Verdict::Passed)
}

// ---------------------------------------------------------------------------
// Concurrency

const RACERS: usize = 8;

fn require_atomic(storage: &DynStorage) -> Option<Verdict> {
    (!storage.capabilities().atomic_preconditions)
        .then(|| Verdict::Skipped("capabilities().atomic_preconditions is false".into()))
}

async fn clients(
    backend: &dyn TestBackend,
    vault: &str,
    n: usize,
) -> Result<Vec<DynStorage>, Failure> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(backend.open(vault).await?);
    }
    Ok(clients)
}

/// Eight clients racing `put(Absent)` on one chat: exactly one commits; the
/// others get `Conflict` carrying the winner's version.
pub async fn concurrent_absent_puts_commit_exactly_once(backend: &dyn TestBackend) -> Outcome {
    let vault = "concurrent_absent_puts_commit_exactly_once";
    let first = backend.open(vault).await?;
    if let Some(skip) = require_atomic(&first) {
        return Ok(skip);
    }
    let racers = clients(backend, vault, RACERS).await?;
    let chat = ChatId::new();
    let results = futures::future::join_all(racers.iter().enumerate().map(|(i, c)| {
        c.put(
            record(chat, 10 + i as u64, &format!("racer{i}")),
            PutPrecondition::Absent,
        )
    }))
    .await;
    let winners: Vec<usize> = (0..RACERS).filter(|&i| results[i].is_ok()).collect();
    ensure_eq!(
        winners.len(),
        1,
        "racers whose put(Absent) committed ({results:?})"
    );
    let winner = winners[0];
    let version = 10 + winner as u64;
    for (i, result) in results.into_iter().enumerate() {
        if i != winner {
            expect_conflict(result, Some(chat), Some(version), &format!("racer {i}"))?;
        }
    }
    ensure_eq!(
        get_one(&first, chat, Part::Full).await?,
        Some(record(chat, version, &format!("racer{winner}"))),
        "stored record"
    );
    let (changes, _) = drain(&first, &Cursor::start(), 100).await?;
    ensure_eq!(
        ids(&changes),
        vec![(chat, version, false)],
        "feed after the race"
    );
    Ok(Verdict::Passed)
}

/// Eight clients racing `put(Version(v))` on one chat: exactly one commits.
pub async fn concurrent_version_puts_commit_exactly_once(backend: &dyn TestBackend) -> Outcome {
    let vault = "concurrent_version_puts_commit_exactly_once";
    let first = backend.open(vault).await?;
    if let Some(skip) = require_atomic(&first) {
        return Ok(skip);
    }
    let chat = ChatId::new();
    first
        .put(record(chat, 1, "base"), PutPrecondition::Absent)
        .await?;
    let racers = clients(backend, vault, RACERS).await?;
    let results = futures::future::join_all(racers.iter().enumerate().map(|(i, c)| {
        c.put(
            record(chat, 2 + i as u64, &format!("racer{i}")),
            PutPrecondition::Version(1),
        )
    }))
    .await;
    let winners: Vec<usize> = (0..RACERS).filter(|&i| results[i].is_ok()).collect();
    ensure_eq!(
        winners.len(),
        1,
        "racers whose put(Version(1)) committed ({results:?})"
    );
    let winner = winners[0];
    let version = 2 + winner as u64;
    for (i, result) in results.into_iter().enumerate() {
        if i != winner {
            expect_conflict(result, Some(chat), Some(version), &format!("racer {i}"))?;
        }
    }
    ensure_eq!(
        get_one(&first, chat, Part::Full).await?,
        Some(record(chat, version, &format!("racer{winner}"))),
        "stored record"
    );
    Ok(Verdict::Passed)
}

/// Eight writers on four clients commit 25 records each while a reader
/// polls: every reader sees every commit exactly once, in one common order
/// that keeps each writer's own order, with no gaps.
pub async fn concurrent_writers_feed_reports_every_commit_once_in_one_order(
    backend: &dyn TestBackend,
) -> Outcome {
    const WRITERS: usize = 8;
    const PUTS: usize = 25;
    let vault = "concurrent_writers_feed_reports_every_commit_once_in_one_order";
    let first = backend.open(vault).await?;
    if let Some(skip) = require_atomic(&first) {
        return Ok(skip);
    }
    let writer_clients = clients(backend, vault, 4).await?;
    let reader = backend.open(vault).await?;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let poller = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut cursor = Cursor::start();
            let mut seen: Vec<Change> = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = reader.changes(&cursor, 7).await?;
                let more = page.has_more;
                seen.extend(page.changes);
                cursor = page.cursor;
                if finished && !more {
                    return Ok::<_, Error>(seen);
                }
                if !more {
                    // Pacing only, so the poll loop does not flood the
                    // server while the writers work.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        })
    };

    let writers = (0..WRITERS).map(|w| {
        let client = Arc::clone(&writer_clients[w % writer_clients.len()]);
        tokio::spawn(async move {
            let mut mine = Vec::with_capacity(PUTS);
            for _ in 0..PUTS {
                let chat = ChatId::new();
                client
                    .put(record(chat, 1, &format!("w{w}")), PutPrecondition::Absent)
                    .await?;
                mine.push(chat);
            }
            Ok::<_, Error>(mine)
        })
    });
    let mut per_writer = Vec::new();
    for handle in futures::future::join_all(writers).await {
        let mine = handle.map_err(|e| Failure(format!("writer task panicked: {e}")))??;
        per_writer.push(mine);
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let polled = poller
        .await
        .map_err(|e| Failure(format!("reader task panicked: {e}")))??;

    let committed: HashSet<ChatId> = per_writer.iter().flatten().copied().collect();
    ensure_eq!(committed.len(), WRITERS * PUTS, "distinct commits made");
    let (fresh, _) = drain(&first, &Cursor::start(), 1000).await?;
    let (fresh_small, _) = drain(&writer_clients[0], &Cursor::start(), 13).await?;
    for (who, feed) in [
        ("polling reader", &polled),
        ("fresh reader", &fresh),
        ("fresh reader, limit 13", &fresh_small),
    ] {
        let mut counts: HashMap<ChatId, usize> = HashMap::new();
        for change in feed.iter() {
            *counts.entry(change.chat).or_default() += 1;
        }
        let missing = committed.iter().filter(|c| !counts.contains_key(c)).count();
        let twice = counts.values().filter(|&&n| n > 1).count();
        let unknown = counts.keys().filter(|c| !committed.contains(c)).count();
        ensure!(
            missing == 0 && twice == 0 && unknown == 0,
            "{who}: {missing} commits missing, {twice} reported more than once, {unknown} never made (of {})",
            committed.len()
        );
    }
    ensure!(
        ids(&polled) == ids(&fresh),
        "the polling reader saw another order than a fresh reader"
    );
    ensure!(
        ids(&fresh_small) == ids(&fresh),
        "readers with limits 13 and 1000 saw different orders"
    );
    let position: HashMap<ChatId, usize> =
        fresh.iter().enumerate().map(|(i, c)| (c.chat, i)).collect();
    for (w, mine) in per_writer.iter().enumerate() {
        let positions: Vec<usize> = mine
            .iter()
            .filter_map(|c| position.get(c).copied())
            .collect();
        ensure!(
            positions.windows(2).all(|p| p[0] < p[1]),
            "writer {w}'s sequential commits appear out of order in the feed"
        );
    }
    Ok(Verdict::Passed)
}

// ---------------------------------------------------------------------------
// Corruption

/// A record damaged on the server fails with `Corrupt` when read, and the
/// vault's other records stay readable.
pub async fn corrupt_record_fails_corrupt_and_others_stay_readable(
    backend: &dyn TestBackend,
) -> Outcome {
    let vault = "corrupt_record_fails_corrupt_and_others_stay_readable";
    let storage = backend.open(vault).await?;
    let (bad, good) = (ChatId::new(), ChatId::new());
    storage
        .put(record(bad, 1, "a"), PutPrecondition::Absent)
        .await?;
    storage
        .put(record(good, 1, "a"), PutPrecondition::Absent)
        .await?;
    let Some(corrupted) = backend.corrupt_record(vault, bad).await else {
        return Ok(Verdict::Skipped(
            "the test backend cannot damage stored records (TestBackend::corrupt_record)".into(),
        ));
    };
    corrupted?;
    let reader = backend.open(vault).await?;
    match reader.get(&[bad], Part::Full).await {
        Err(Error::Corrupt { .. }) => {}
        other => {
            return Err(Failure(format!(
                "get of the damaged record: expected Corrupt, got {other:?}"
            )))
        }
    }
    ensure_eq!(
        get_one(&reader, good, Part::Full).await?,
        Some(record(good, 1, "a")),
        "the undamaged record"
    );
    let fresh = ChatId::new();
    reader
        .put(record(fresh, 1, "b"), PutPrecondition::Absent)
        .await?;
    let by_chat: BTreeMap<ChatId, u64> = match drain(&reader, &Cursor::start(), 100).await {
        Ok((changes, _)) => changes.iter().map(|c| (c.chat, c.version)).collect(),
        Err(failure) => {
            return Err(Failure(format!(
                "the feed fails once one record is damaged: {failure}"
            )))
        }
    };
    ensure!(
        by_chat.contains_key(&good) && by_chat.contains_key(&fresh),
        "the feed lost undamaged records after the damage: {by_chat:?}"
    );
    Ok(Verdict::Passed)
}
