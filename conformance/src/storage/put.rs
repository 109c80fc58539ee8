//! Storage contracts: put preconditions: `Absent`, `Version(v)`, `None`, strictly greater versions, the size limit.

use super::{drain, expect_conflict, get_one, ids, record, tombstone_summary};
use crate::backend::TestBackend;
use crate::runner::{Contract, Failure, Outcome, Verdict};
use crate::{contract, ensure, ensure_eq};
use bytes::Bytes;
use chatvault_core::StorageExt;
use chatvault_core::{ChatId, Cursor, Error, Part, PutPrecondition, SealedRecord};

/// The contracts of this group, in a stable order.
pub fn contracts() -> Vec<Contract> {
    vec![
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
        contract!("storage", put_over_max_record_bytes_fails_too_large),
    ]
}

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
        get_one(&storage, chat, Part::Body).await?,
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
        get_one(&storage, chat, Part::Body).await?,
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
    let read = get_one(&storage, chat, Part::Body).await?;
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
        get_one(&storage, chat, Part::Body).await?,
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
        get_one(&storage, chat, Part::Body).await?,
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
        get_one(&storage, chat, Part::Body).await?.is_none(),
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
        get_one(&storage, chat, Part::Body).await?,
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
        get_one(&storage, chat, Part::Body).await?,
        Some(record(chat, 5, "a")),
        "record after the rejected puts"
    );
    Ok(Verdict::Passed)
}

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
    let stored = get_one(&storage, fits, Part::Body).await?;
    ensure_eq!(
        stored.map(|r| r.size()),
        Some(limit),
        "size of the record at the limit"
    );
    Ok(Verdict::Passed)
}
