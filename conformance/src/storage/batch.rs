//! Storage contracts: batches: `get` of `max_batch` `put_batch` results per record.

use super::{expect_conflict, fill, record};
use crate::backend::TestBackend;
use crate::runner::{Contract, Outcome, Verdict};
use crate::{contract, ensure, ensure_eq};
use chatvault_core::{ChatId, Part, PutPrecondition};
use std::collections::HashSet;

/// The contracts of this group, in a stable order.
pub fn contracts() -> Vec<Contract> {
    vec![
        contract!("storage", get_accepts_max_batch_ids),
        contract!("storage", put_batch_returns_one_result_per_record_in_order),
    ]
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
    let mut read = storage.get(&[a, taken, b], Part::Body).await?;
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
