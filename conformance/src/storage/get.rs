//! Storage contracts: put and get: what was written reads back exactly.

use super::{drain, get_one, record};
use crate::backend::TestBackend;
use crate::runner::{Contract, Outcome, Verdict};
use crate::{contract, ensure, ensure_eq};
use bytes::Bytes;
use chatvault_core::{ChatId, Cursor, Part, PutPrecondition, SealedRecord};

/// The contracts of this group, in a stable order.
pub fn contracts() -> Vec<Contract> {
    vec![
        contract!("storage", capabilities_are_usable),
        contract!("storage", empty_vault_has_no_changes_records_or_keyring),
        contract!("storage", put_then_get_returns_summary_and_body),
        contract!("storage", get_summary_part_omits_bodies),
        contract!("storage", get_leaves_out_missing_ids),
        contract!("storage", empty_body_round_trips_as_empty_not_absent),
        contract!("storage", large_versions_round_trip_exactly),
    ]
}

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
        !caps.notifications || storage.notifications().is_some(),
        "capabilities().notifications is true but notifications() returns None"
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
        .get(&[ChatId::new(), ChatId::new()], Part::Body)
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
    let read = get_one(&storage, chat, Part::Body).await?;
    ensure_eq!(read, Some(written.clone()), "get(Full) after put");
    // A second client (another device) sees the same record.
    let other = backend
        .open("put_then_get_returns_summary_and_body")
        .await?;
    let read = get_one(&other, chat, Part::Body).await?;
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
        .get(&[ChatId::new(), b, ChatId::new(), a], Part::Body)
        .await?;
    read.sort_by_key(|r| r.chat);
    let mut expected = vec![record(a, 1, "a"), record(b, 2, "b")];
    expected.sort_by_key(|r| r.chat);
    ensure_eq!(read, expected, "get of two existing and two missing ids");
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
        get_one(&storage, chat, Part::Body).await?,
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
        get_one(&storage, chat, Part::Body).await?,
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
