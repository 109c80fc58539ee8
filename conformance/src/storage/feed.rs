//! Storage contracts: the change feed: commit order, pagination, cursors, inline summaries.

use super::{drain, ids, record, tombstone_summary};
use crate::backend::TestBackend;
use crate::runner::{Contract, Needs, Outcome, Verdict};
use crate::{contract, ensure, ensure_eq};
use bytes::Bytes;
use chatvault_core::StorageExt;
use chatvault_core::{ChatId, Cursor, PutPrecondition};
use std::collections::{HashMap, HashSet};

/// The contracts of this group, in a stable order.
pub fn contracts() -> Vec<Contract> {
    vec![
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
        contract!("storage", changes_inline_summaries_match_stored_summaries)
            .needing(Needs::InlineSummaries),
    ]
}

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
    // Gated by the runner; the check keeps a direct call honest too.
    if let Some(reason) = Needs::InlineSummaries.missing(&storage.capabilities()) {
        return Ok(Verdict::Skipped(reason));
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
