//! Storage contracts: delete: tombstones in `get` and `changes`, preconditions, revival.

use super::{drain, expect_conflict, get_one, ids, record, tombstone_summary};
use crate::backend::TestBackend;
use crate::runner::{Contract, Outcome, Verdict};
use crate::{contract, ensure_eq};
use chatvault_core::StorageExt;
use chatvault_core::{ChatId, Cursor, Part, PutPrecondition, SealedRecord};

/// The contracts of this group, in a stable order.
pub fn contracts() -> Vec<Contract> {
    vec![
        contract!("storage", delete_leaves_tombstone_in_get_and_changes),
        contract!("storage", delete_with_stale_precondition_conflicts),
        contract!(
            "storage",
            put_over_tombstone_with_greater_version_revives_chat
        ),
    ]
}

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
        get_one(&storage, chat, Part::Body).await?,
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
        get_one(&storage, chat, Part::Body).await?,
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
        get_one(&storage, chat, Part::Body).await?,
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
