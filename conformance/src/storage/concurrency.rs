//! Storage contracts: concurrent writers: preconditions decide exactly one winner, the feed reports every commit once.

use super::{drain, expect_conflict, get_one, ids, record};
use crate::backend::TestBackend;
use crate::runner::{Contract, Failure, Needs, Outcome, Verdict};
use crate::{contract, ensure, ensure_eq};
use chatvault_core::{Change, ChatId, Cursor, DynStorage, Error, Part, PutPrecondition};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const RACERS: usize = 8;

/// The runner gates this group on `atomic_preconditions`; the check here
/// keeps a direct call honest too.
fn require_atomic(storage: &DynStorage) -> Option<Verdict> {
    Needs::AtomicPreconditions
        .missing(&storage.capabilities())
        .map(Verdict::Skipped)
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

/// The contracts of this group, in a stable order.
pub fn contracts() -> Vec<Contract> {
    vec![
        contract!("storage", concurrent_absent_puts_commit_exactly_once)
            .needing(Needs::AtomicPreconditions),
        contract!("storage", concurrent_version_puts_commit_exactly_once)
            .needing(Needs::AtomicPreconditions),
        contract!(
            "storage",
            concurrent_writers_feed_reports_every_commit_once_in_one_order
        )
        .needing(Needs::AtomicPreconditions),
    ]
}

/// `RACERS` clients put version `first_version + i` of `chat` with
/// `precondition` at once: exactly one commits, the others get `Conflict`
/// carrying the winner's version, and `reader` then gets the winner's
/// record. Returns the winning version.
async fn race_one_winner(
    backend: &dyn TestBackend,
    vault: &str,
    reader: &DynStorage,
    chat: ChatId,
    first_version: u64,
    precondition: PutPrecondition,
) -> Result<u64, Failure> {
    let racers = clients(backend, vault, RACERS).await?;
    let results = futures::future::join_all(racers.iter().enumerate().map(|(i, c)| {
        c.put(
            record(chat, first_version + i as u64, &format!("racer{i}")),
            precondition,
        )
    }))
    .await;
    let winners: Vec<usize> = (0..RACERS).filter(|&i| results[i].is_ok()).collect();
    ensure_eq!(
        winners.len(),
        1,
        "racers whose put({precondition:?}) committed ({results:?})"
    );
    let winner = winners[0];
    let version = first_version + winner as u64;
    for (i, result) in results.into_iter().enumerate() {
        if i != winner {
            expect_conflict(result, Some(chat), Some(version), &format!("racer {i}"))?;
        }
    }
    ensure_eq!(
        get_one(reader, chat, Part::Body).await?,
        Some(record(chat, version, &format!("racer{winner}"))),
        "stored record"
    );
    Ok(version)
}

/// Eight clients racing `put(Absent)` on one chat: exactly one commits; the
/// others get `Conflict` carrying the winner's version.
pub async fn concurrent_absent_puts_commit_exactly_once(backend: &dyn TestBackend) -> Outcome {
    let vault = "concurrent_absent_puts_commit_exactly_once";
    let first = backend.open(vault).await?;
    if let Some(skip) = require_atomic(&first) {
        return Ok(skip);
    }
    let chat = ChatId::new();
    let version =
        race_one_winner(backend, vault, &first, chat, 10, PutPrecondition::Absent).await?;
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
    race_one_winner(backend, vault, &first, chat, 2, PutPrecondition::Version(1)).await?;
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
