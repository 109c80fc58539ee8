//! Storage contracts: corruption: a damaged record fails `Corrupt`, the rest stays readable.

use super::{drain, get_one, record};
use crate::backend::TestBackend;
use crate::runner::{Contract, Failure, Outcome, Verdict};
use crate::{contract, ensure, ensure_eq};
use chatvault_core::{ChatId, Cursor, Error, Part, PutPrecondition};
use std::collections::BTreeMap;

/// The contracts of this group, in a stable order.
pub fn contracts() -> Vec<Contract> {
    vec![contract!(
        "storage",
        corrupt_record_fails_corrupt_and_others_stay_readable
    )]
}

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
    match reader.get(&[bad], Part::Body).await {
        Err(Error::Corrupt { .. }) => {}
        other => {
            return Err(Failure(format!(
                "get of the damaged record: expected Corrupt, got {other:?}"
            )))
        }
    }
    ensure_eq!(
        get_one(&reader, good, Part::Body).await?,
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
