//! Storage contracts: isolation: two vaults never see each other's records or changes.

use super::{drain, get_one, ids, record};
use crate::backend::TestBackend;
use crate::runner::{Contract, Outcome, Verdict};
use crate::{contract, ensure, ensure_eq};
use chatvault_core::{ChatId, Cursor, Part, PutPrecondition};

/// The contracts of this group, in a stable order.
pub fn contracts() -> Vec<Contract> {
    vec![contract!("storage", vaults_are_isolated)]
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
        get_one(&bob, chat, Part::Body).await?.is_none(),
        "bob reads alice's record"
    );
    let (bob_changes, _) = drain(&bob, &Cursor::start(), 100).await?;
    ensure!(bob_changes.is_empty(), "bob's feed shows {bob_changes:?}");
    bob.put(record(chat, 1, "bob"), PutPrecondition::Absent)
        .await?;
    ensure_eq!(
        get_one(&alice, chat, Part::Body).await?,
        Some(record(chat, 5, "alice")),
        "alice's record after bob wrote the same chat id"
    );
    ensure_eq!(
        get_one(&bob, chat, Part::Body).await?,
        Some(record(chat, 1, "bob")),
        "bob's record"
    );
    let (alice_changes, _) = drain(&alice, &Cursor::start(), 100).await?;
    ensure_eq!(ids(&alice_changes), vec![(chat, 5, false)], "alice's feed");
    Ok(Verdict::Passed)
}
