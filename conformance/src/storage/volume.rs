//! Storage contracts: volume: a large vault pages through the feed and `get`; an idle poll costs one request.

use super::{drain, fill, ids, large_vault_records, record};
use crate::backend::TestBackend;
use crate::layers::RequestCounter;
use crate::runner::{Contract, Outcome, Verdict};
use crate::{contract, ensure, ensure_eq};
use chatvault_core::{ChatId, Cursor, Part};
use std::collections::HashSet;

/// The contracts of this group, in a stable order.
pub fn contracts() -> Vec<Contract> {
    vec![
        contract!("storage", large_vault_pages_through_feed_and_get),
        contract!("storage", idle_poll_costs_one_request_in_large_vault),
    ]
}

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
    // A backend whose devices each keep their own log lists which devices
    // there are, then each device log: here the writer's.
    let allowed = if counted.capabilities().concurrent_writers {
        2
    } else {
        1
    };
    ensure_eq!(
        made,
        allowed,
        "requests made by one idle poll ({requests:?})"
    );
    Ok(Verdict::Passed)
}
