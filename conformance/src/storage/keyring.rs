//! Storage contracts: the keyring: preconditions, versions, isolation.

use super::expect_conflict;
use crate::backend::TestBackend;
use crate::runner::{Contract, Outcome, Verdict};
use crate::{contract, ensure, ensure_eq};
use bytes::Bytes;
use chatvault_core::PutPrecondition;

/// The contracts of this group, in a stable order.
pub fn contracts() -> Vec<Contract> {
    vec![
        contract!("storage", keyring_round_trips_with_preconditions),
        contract!("storage", keyring_is_isolated_between_vaults),
    ]
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
