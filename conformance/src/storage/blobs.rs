//! Storage contracts: sealed blobs (`put_blob`, `get_blob`, `list_blobs`,
//! `delete_blob`): immutable, content-addressed, every put a touch. Every
//! contract here needs [`Capabilities::blobs`](chatvault_core::Capabilities::blobs)
//! ([`Needs::Blobs`]); without it the runner reports them as skipped.

use crate::backend::TestBackend;
use crate::runner::{Contract, Failure, Needs, Outcome, Verdict};
use crate::{contract, ensure, ensure_eq};
use bytes::Bytes;
#[cfg(feature = "envelope")]
use chatvault_core::envelope::EnvelopeCipher;
#[cfg(feature = "envelope")]
use chatvault_core::VaultId;
use chatvault_core::{BlobId, DynStorage, Error};
use std::collections::BTreeSet;

/// The contracts of this group, in a stable order, all gated on
/// [`Needs::Blobs`].
pub fn contracts() -> Vec<Contract> {
    [
        contract!("storage", blob_put_then_get_returns_the_bytes),
        contract!("storage", blob_put_is_idempotent),
        contract!("storage", blob_put_again_renews_its_touched_time),
        contract!("storage", blob_get_of_a_missing_id_is_none),
        contract!(
            "storage",
            blob_list_pages_in_id_order_without_skips_or_repeats
        ),
        contract!("storage", blob_delete_then_get_is_none),
        contract!("storage", blob_missing_names_exactly_the_absent_ids),
        contract!("storage", blobs_are_isolated_between_vaults),
        contract!(
            "storage",
            blob_at_the_size_limit_commits_and_one_byte_over_is_too_large
        ),
        contract!("storage", blob_damaged_or_moved_fails_to_open),
    ]
    .into_iter()
    .map(|c| c.needing(Needs::Blobs))
    .collect()
}

/// A blob id made of one counter (distinct, and spread over the first
/// byte so the ids land in different fan-out directories).
pub fn blob_id(n: u32) -> BlobId {
    let mut id = [0u8; 32];
    let spread = n.wrapping_mul(2_654_435_761);
    id[..4].copy_from_slice(&spread.to_be_bytes());
    id[28..].copy_from_slice(&n.to_be_bytes());
    BlobId(id)
}

/// Stand-in sealed bytes naming the id and the writer.
fn blob_bytes(id: &BlobId, writer: &str) -> Bytes {
    Bytes::from(format!("sealed|{id}|{writer}"))
}

/// Skips a contract called directly on a backend without blobs.
fn without_blobs(storage: &DynStorage) -> Option<Verdict> {
    Needs::Blobs
        .missing(&storage.capabilities())
        .map(Verdict::Skipped)
}

/// Every id `list_blobs` returns, paging by `limit`; fails on a page out of
/// order, over `limit`, or repeating an id.
pub async fn list_all(storage: &DynStorage, limit: usize) -> Result<Vec<BlobId>, Failure> {
    let mut all: Vec<BlobId> = Vec::new();
    let mut after = None;
    for _ in 0..100_000 {
        let page = storage.list_blobs(after, limit).await?;
        ensure!(
            page.ids.len() <= limit,
            "list_blobs(limit = {limit}) returned {} ids",
            page.ids.len()
        );
        for id in &page.ids {
            if let Some(previous) = all.last() {
                ensure!(
                    id > previous,
                    "list_blobs returned {id} after {previous}: not ascending, or repeated"
                );
            }
            all.push(*id);
        }
        if !page.has_more {
            return Ok(all);
        }
        ensure!(
            !page.ids.is_empty(),
            "list_blobs answered an empty page that claims more (after {after:?})"
        );
        after = all.last().copied();
    }
    Err(Failure("list_blobs did not end after 100,000 pages".into()))
}

/// A stored blob reads back byte for byte, from another client too.
pub async fn blob_put_then_get_returns_the_bytes(backend: &dyn TestBackend) -> Outcome {
    let vault = "blob_put_then_get_returns_the_bytes";
    let storage = backend.open(vault).await?;
    if let Some(skipped) = without_blobs(&storage) {
        return Ok(skipped);
    }
    let (small, empty) = (blob_id(1), blob_id(2));
    let bytes = blob_bytes(&small, "a");
    storage.put_blob(small, bytes.clone()).await?;
    storage.put_blob(empty, Bytes::new()).await?;
    ensure_eq!(
        storage.get_blob(small).await?,
        Some(bytes.clone()),
        "get_blob after put_blob"
    );
    let other = backend.open(vault).await?;
    ensure_eq!(
        other.get_blob(small).await?,
        Some(bytes),
        "get_blob from another client"
    );
    ensure_eq!(
        other.get_blob(empty).await?,
        Some(Bytes::new()),
        "an empty blob"
    );
    Ok(Verdict::Passed)
}

/// Putting an id twice succeeds; with other bytes (another sealing of the
/// same plaintext) the second put succeeds too, and one of the two is
/// stored, whole.
pub async fn blob_put_is_idempotent(backend: &dyn TestBackend) -> Outcome {
    let vault = "blob_put_is_idempotent";
    let storage = backend.open(vault).await?;
    if let Some(skipped) = without_blobs(&storage) {
        return Ok(skipped);
    }
    let id = blob_id(7);
    let first = blob_bytes(&id, "first");
    let second = blob_bytes(&id, "second");
    storage.put_blob(id, first.clone()).await?;
    storage.put_blob(id, first.clone()).await?;
    let other = backend.open(vault).await?;
    other.put_blob(id, second.clone()).await?;
    let stored = storage.get_blob(id).await?;
    ensure!(
        stored == Some(first.clone()) || stored == Some(second.clone()),
        "after two sealings of one id the blob must be one of them, whole: {stored:?}"
    );
    ensure_eq!(
        list_all(&other, 10).await?,
        vec![id],
        "one id put three times lists once"
    );
    Ok(Verdict::Passed)
}

/// `list_blobs` reports a touched time per id near the time of its put, and
/// putting the id again later moves it forward (garbage collection deletes
/// only blobs no put renewed within its grace period, `docs/design.md`
/// §10.6). A backend that reports no touched times is skipped: its blobs
/// are never collected.
pub async fn blob_put_again_renews_its_touched_time(backend: &dyn TestBackend) -> Outcome {
    let storage = backend
        .open("blob_put_again_renews_its_touched_time")
        .await?;
    if let Some(skipped) = without_blobs(&storage) {
        return Ok(skipped);
    }
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    // Clocks of client and server may differ a little; stores keep whole
    // seconds (S3's Last-Modified).
    const SLACK_MS: u64 = 60_000;
    let (a, b) = (blob_id(1), blob_id(2));
    let before = now_ms();
    storage.put_blob(a, blob_bytes(&a, "a")).await?;
    storage.put_blob(b, blob_bytes(&b, "b")).await?;
    let page = storage.list_blobs(None, 10).await?;
    if page.touched_ms.is_empty() {
        return Ok(Verdict::Skipped(
            "the backend reports no touched times (BlobPage::touched_ms): \
             garbage collection never deletes its blobs"
                .into(),
        ));
    }
    ensure_eq!(
        page.touched_ms.len(),
        page.ids.len(),
        "one touched time per listed id"
    );
    let after = now_ms();
    for (id, touched) in page.ids.iter().zip(&page.touched_ms) {
        ensure!(
            *touched + SLACK_MS >= before && *touched <= after + SLACK_MS,
            "blob {id} was put between {before} and {after} ms but lists as touched at {touched}"
        );
    }
    let first_a = page.touched_ms[page.ids.iter().position(|id| *id == a).unwrap_or(0)];
    // Past the one-second granularity of object stores' times.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    storage.put_blob(a, blob_bytes(&a, "a again")).await?;
    let page = storage.list_blobs(None, 10).await?;
    let touched = |id: BlobId| {
        page.ids
            .iter()
            .position(|x| *x == id)
            .and_then(|i| page.touched_ms.get(i).copied())
    };
    let (Some(again_a), Some(b_now)) = (touched(a), touched(b)) else {
        return Err(Failure(format!("both blobs must still list: {page:?}")));
    };
    ensure!(
        again_a > first_a,
        "putting blob {a} again must renew its touched time ({first_a} ms before, {again_a} ms after)"
    );
    ensure!(
        again_a > b_now,
        "only the blob put again is renewed: {a} at {again_a} ms, {b} at {b_now} ms"
    );
    Ok(Verdict::Passed)
}

/// `get_blob` of an id never stored is `Ok(None)`, in an empty vault and in
/// one holding other blobs.
pub async fn blob_get_of_a_missing_id_is_none(backend: &dyn TestBackend) -> Outcome {
    let storage = backend.open("blob_get_of_a_missing_id_is_none").await?;
    if let Some(skipped) = without_blobs(&storage) {
        return Ok(skipped);
    }
    ensure_eq!(
        storage.get_blob(blob_id(1)).await?,
        None,
        "get_blob in an empty vault"
    );
    ensure_eq!(
        storage.list_blobs(None, 10).await?.ids,
        Vec::<BlobId>::new(),
        "list_blobs of an empty vault"
    );
    storage
        .put_blob(blob_id(2), blob_bytes(&blob_id(2), "a"))
        .await?;
    ensure_eq!(
        storage.get_blob(blob_id(1)).await?,
        None,
        "get_blob of another id"
    );
    Ok(Verdict::Passed)
}

/// `list_blobs` pages through every stored id in ascending order, with
/// small pages, never skipping or repeating one; `after` an id that is not
/// stored starts right after where it would be.
pub async fn blob_list_pages_in_id_order_without_skips_or_repeats(
    backend: &dyn TestBackend,
) -> Outcome {
    let storage = backend
        .open("blob_list_pages_in_id_order_without_skips_or_repeats")
        .await?;
    if let Some(skipped) = without_blobs(&storage) {
        return Ok(skipped);
    }
    let stored: BTreeSet<BlobId> = (0..61).map(|n| blob_id(n * 2)).collect();
    for id in &stored {
        storage.put_blob(*id, blob_bytes(id, "a")).await?;
    }
    let expected: Vec<BlobId> = stored.iter().copied().collect();
    for limit in [1, 7, 60, 61, 1000] {
        ensure_eq!(
            list_all(&storage, limit).await?,
            expected,
            "every id, paging by {limit}"
        );
    }
    // Starting after an id that is not stored (an odd one).
    let gap = blob_id(3);
    let after_gap: Vec<BlobId> = stored.iter().copied().filter(|id| *id > gap).collect();
    let page = storage.list_blobs(Some(gap), 1000).await?;
    ensure_eq!(page.ids, after_gap, "list_blobs after an id not stored");
    ensure!(!page.has_more, "the last page claims more");
    let last = expected.last().copied();
    let page = storage.list_blobs(last, 5).await?;
    ensure!(
        page.ids.is_empty() && !page.has_more,
        "after the last id: {page:?}"
    );
    Ok(Verdict::Passed)
}

/// `missing_blobs` names, of the ids asked for, exactly those not stored:
/// none of a vault's own and every one never put or deleted (an id asked
/// for twice may be named twice); another vault's blobs count as missing.
pub async fn blob_missing_names_exactly_the_absent_ids(backend: &dyn TestBackend) -> Outcome {
    let vault = "blob_missing_names_exactly_the_absent_ids";
    let storage = backend.open(vault).await?;
    if let Some(skipped) = without_blobs(&storage) {
        return Ok(skipped);
    }
    let stored: Vec<BlobId> = (0..5).map(blob_id).collect();
    for id in &stored {
        storage.put_blob(*id, blob_bytes(id, "a")).await?;
    }
    ensure_eq!(
        storage.missing_blobs(&stored).await?,
        Vec::<BlobId>::new(),
        "every id asked for is stored"
    );
    storage.delete_blob(stored[2]).await?;
    let elsewhere = backend.open(&format!("{vault}-other")).await?;
    elsewhere
        .put_blob(blob_id(9), blob_bytes(&blob_id(9), "b"))
        .await?;
    let asked = [
        stored[0],
        blob_id(7),
        stored[2],
        stored[4],
        blob_id(9),
        blob_id(7),
    ];
    let mut missing = storage.missing_blobs(&asked).await?;
    missing.sort();
    missing.dedup();
    let mut expected = vec![blob_id(7), stored[2], blob_id(9)];
    expected.sort();
    ensure_eq!(
        missing,
        expected,
        "a blob never put, a deleted one and another vault's are missing"
    );
    ensure_eq!(
        storage.missing_blobs(&[]).await?,
        Vec::<BlobId>::new(),
        "asking for nothing"
    );
    Ok(Verdict::Passed)
}

/// `delete_blob` removes the blob (get → `None`, gone from the listing);
/// deleting it again, or an id never stored, succeeds.
pub async fn blob_delete_then_get_is_none(backend: &dyn TestBackend) -> Outcome {
    let vault = "blob_delete_then_get_is_none";
    let storage = backend.open(vault).await?;
    if let Some(skipped) = without_blobs(&storage) {
        return Ok(skipped);
    }
    let (gone, kept) = (blob_id(1), blob_id(2));
    storage.put_blob(gone, blob_bytes(&gone, "a")).await?;
    storage.put_blob(kept, blob_bytes(&kept, "a")).await?;
    storage.delete_blob(gone).await?;
    let other = backend.open(vault).await?;
    ensure_eq!(other.get_blob(gone).await?, None, "get_blob after delete");
    ensure_eq!(
        list_all(&other, 10).await?,
        vec![kept],
        "list_blobs after delete"
    );
    other.delete_blob(gone).await?;
    other.delete_blob(blob_id(99)).await?;
    ensure_eq!(
        other.get_blob(kept).await?,
        Some(blob_bytes(&kept, "a")),
        "the other blob"
    );
    // A deleted id can be stored again (garbage collection raced a new
    // upload of the same content).
    storage.put_blob(gone, blob_bytes(&gone, "b")).await?;
    ensure_eq!(
        other.get_blob(gone).await?,
        Some(blob_bytes(&gone, "b")),
        "a blob stored again after its deletion"
    );
    Ok(Verdict::Passed)
}

/// Two vaults (users) never see, list or delete each other's blobs, even
/// under the same id.
pub async fn blobs_are_isolated_between_vaults(backend: &dyn TestBackend) -> Outcome {
    let alice = backend.open("blobs_are_isolated_alice").await?;
    let bob = backend.open("blobs_are_isolated_bob").await?;
    if let Some(skipped) = without_blobs(&alice) {
        return Ok(skipped);
    }
    let (shared, alone) = (blob_id(1), blob_id(2));
    alice.put_blob(shared, blob_bytes(&shared, "alice")).await?;
    alice.put_blob(alone, blob_bytes(&alone, "alice")).await?;
    ensure_eq!(bob.get_blob(alone).await?, None, "bob reads alice's blob");
    ensure_eq!(
        list_all(&bob, 10).await?,
        Vec::<BlobId>::new(),
        "bob lists alice's blobs"
    );
    bob.put_blob(shared, blob_bytes(&shared, "bob")).await?;
    bob.delete_blob(alone).await?;
    ensure_eq!(
        alice.get_blob(shared).await?,
        Some(blob_bytes(&shared, "alice")),
        "alice's blob after bob stored the same id"
    );
    ensure_eq!(
        alice.get_blob(alone).await?,
        Some(blob_bytes(&alone, "alice")),
        "alice's blob after bob deleted its id"
    );
    ensure_eq!(
        bob.get_blob(shared).await?,
        Some(blob_bytes(&shared, "bob")),
        "bob's own blob"
    );
    ensure_eq!(list_all(&bob, 10).await?, vec![shared], "bob's listing");
    Ok(Verdict::Passed)
}

/// A blob of exactly `max_record_bytes` commits; one byte more fails with
/// `TooLarge { size, limit }` and stores nothing.
pub async fn blob_at_the_size_limit_commits_and_one_byte_over_is_too_large(
    backend: &dyn TestBackend,
) -> Outcome {
    let storage = backend
        .open("blob_at_the_size_limit_commits_and_one_byte_over_is_too_large")
        .await?;
    if let Some(skipped) = without_blobs(&storage) {
        return Ok(skipped);
    }
    let limit = storage.capabilities().max_record_bytes;
    if limit > 64 << 20 {
        return Ok(Verdict::Skipped(format!(
            "max_record_bytes is {limit}: too large to build in memory (limit for this contract: 64 MiB)"
        )));
    }
    let (fits, over) = (blob_id(1), blob_id(2));
    let whole = Bytes::from(vec![0xa5u8; limit]);
    storage.put_blob(fits, whole.clone()).await?;
    match storage
        .put_blob(over, Bytes::from(vec![0x5au8; limit + 1]))
        .await
    {
        Err(Error::TooLarge { size, limit: l }) => {
            ensure_eq!((size, l), (limit + 1, limit), "TooLarge fields");
        }
        other => {
            return Err(Failure(format!(
                "put_blob of {} bytes (limit {limit}): expected TooLarge, got {other:?}",
                limit + 1
            )))
        }
    }
    let stored = storage.get_blob(fits).await?;
    ensure!(
        stored.as_ref() == Some(&whole),
        "the blob at the limit reads back as {:?} bytes",
        stored.as_ref().map(Bytes::len)
    );
    ensure_eq!(storage.get_blob(over).await?, None, "the refused blob");
    Ok(Verdict::Passed)
}

/// Sealed with the envelope cipher, a blob opens after the round trip; a
/// blob damaged in storage, stored under another id, or opened by another
/// vault fails with `Tampered`, a truncated one with `Corrupt`.
///
/// Needs the crate feature `envelope` (on with `sync`); without it the
/// contract reports itself skipped.
pub async fn blob_damaged_or_moved_fails_to_open(backend: &dyn TestBackend) -> Outcome {
    #[cfg(not(feature = "envelope"))]
    {
        let _ = backend;
        Ok(Verdict::Skipped(
            "chatvault-conformance was built without its `envelope` feature (the contract seals with \
             chatvault-core's envelope cipher)"
                .into(),
        ))
    }
    #[cfg(feature = "envelope")]
    {
        sealed_round_trip(backend).await
    }
}

#[cfg(feature = "envelope")]
async fn sealed_round_trip(backend: &dyn TestBackend) -> Outcome {
    let storage = backend.open("blob_damaged_or_moved_fails_to_open").await?;
    if let Some(skipped) = without_blobs(&storage) {
        return Ok(skipped);
    }
    let cipher = EnvelopeCipher::generate(VaultId::new());
    let plaintext = b"the bytes of an attachment chunk".repeat(40);
    let id = cipher.blob_id(&plaintext);
    storage
        .put_blob(id, Bytes::from(cipher.seal_blob(&id, &plaintext)?))
        .await?;
    let Some(stored) = storage.get_blob(id).await? else {
        return Err(Failure("the sealed blob is missing after put_blob".into()));
    };
    ensure_eq!(
        cipher.open_blob(&id, &stored)?,
        plaintext,
        "the opened blob"
    );

    // Damaged: one bit flipped in the ciphertext, as stored.
    let damaged_id = cipher.blob_id(b"damaged");
    let mut damaged = cipher.seal_blob(&damaged_id, b"damaged")?;
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x10;
    storage.put_blob(damaged_id, Bytes::from(damaged)).await?;
    let fetched = storage.get_blob(damaged_id).await?.unwrap_or_default();
    ensure!(
        matches!(
            cipher.open_blob(&damaged_id, &fetched),
            Err(Error::Tampered { .. })
        ),
        "a damaged blob must fail as Tampered"
    );

    // Moved: the first blob's bytes stored under another id.
    let moved_id = cipher.blob_id(b"another chunk");
    storage.put_blob(moved_id, stored.clone()).await?;
    let fetched = storage.get_blob(moved_id).await?.unwrap_or_default();
    ensure!(
        matches!(
            cipher.open_blob(&moved_id, &fetched),
            Err(Error::Tampered { .. })
        ),
        "a blob stored under another id must fail as Tampered"
    );

    // Truncated.
    let cut_id = cipher.blob_id(b"cut");
    storage.put_blob(cut_id, stored.slice(..20)).await?;
    let fetched = storage.get_blob(cut_id).await?.unwrap_or_default();
    ensure!(
        matches!(
            cipher.open_blob(&cut_id, &fetched),
            Err(Error::Corrupt { .. })
        ),
        "a truncated blob must fail as Corrupt"
    );

    // Another vault's cipher (same id): refused.
    let stranger = EnvelopeCipher::generate(VaultId::new());
    ensure!(
        stranger.open_blob(&id, &stored).is_err(),
        "another vault opened the blob"
    );
    Ok(Verdict::Passed)
}
