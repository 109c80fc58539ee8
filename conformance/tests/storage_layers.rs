//! The public layers (`chatvault_core::layer`: retry, tracing) and the
//! seeded chaos layer, over the redb example backend.

#[allow(dead_code)]
#[path = "../../examples/custom_backend.rs"]
mod custom_backend;

use bytes::Bytes;
use chatvault_conformance::layers::{
    ChaosConfig, ChaosLayer, CountingStorage, Fault, FaultyStorage, Op,
};
use chatvault_core::layer::{LayerExt, RetryLayer, StorageLayer, TracingLayer};
use chatvault_core::StorageExt;
use chatvault_core::{
    BlobId, ChatId, Cursor, DynStorage, Error, MaintenanceBudget, Part, PutPrecondition,
    SealedRecord,
};
use custom_backend::RedbStorage;
use std::sync::Arc;
use std::time::Duration;

fn storage(dir: &tempfile::TempDir) -> DynStorage {
    Arc::new(RedbStorage::open(dir.path().join("vault.redb")).unwrap())
}

fn record(chat: ChatId, version: u64, tag: &'static [u8]) -> SealedRecord {
    SealedRecord {
        chat,
        version,
        deleted: false,
        summary: Bytes::from_static(tag),
        body: Some(Bytes::from_static(b"body-bytes")),
    }
}

fn quick_retry() -> RetryLayer {
    RetryLayer::new()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(2))
}

fn retried(faulty: &Arc<FaultyStorage>) -> DynStorage {
    let inner: DynStorage = faulty.clone();
    inner.layer(quick_retry())
}

#[tokio::test]
async fn retry_layer_retries_a_retriable_failure_until_the_call_passes() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyStorage::new(storage(&dir));
    faulty.fail_nth(Op::Put, 1, Fault::ServerError);
    faulty.fail_nth(Op::Changes, 1, Fault::Unavailable);
    let storage = retried(&faulty);
    let chat = ChatId::new();
    storage
        .put(record(chat, 1, b"a"), PutPrecondition::Absent)
        .await
        .unwrap();
    let page = storage.changes(&Cursor::start(), 10).await.unwrap();
    assert_eq!(page.changes.len(), 1);
    assert_eq!(faulty.calls(Op::Put), 2);
    assert_eq!(faulty.calls(Op::Changes), 2);
}

#[tokio::test]
async fn retry_layer_gives_up_after_its_attempts_with_the_retriable_error() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyStorage::new(storage(&dir));
    faulty.fail_all(Fault::Unavailable);
    let storage = retried(&faulty);
    let err = storage
        .get(&[ChatId::new()], Part::Summary)
        .await
        .unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert_eq!(faulty.calls(Op::Get), 3);
}

#[tokio::test]
async fn retry_layer_returns_a_first_attempt_conflict_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyStorage::new(storage(&dir));
    let storage = retried(&faulty);
    let chat = ChatId::new();
    storage
        .put(record(chat, 1, b"a"), PutPrecondition::Absent)
        .await
        .unwrap();
    let err = storage
        .put(record(chat, 1, b"a"), PutPrecondition::Absent)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                current: Some(1),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(faulty.calls(Op::Put), 2, "no retry of a conflict");
}

#[tokio::test]
async fn a_retried_put_whose_response_was_lost_reports_success_once_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyStorage::new(storage(&dir));
    faulty.fail_nth(Op::Put, 1, Fault::LostResponse);
    // A delete is a put of a tombstone: the third put (after the first
    // one's retry).
    faulty.fail_nth(Op::Put, 3, Fault::LostResponse);
    faulty.fail_nth(Op::PutKeyring, 1, Fault::LostResponse);
    let storage = retried(&faulty);
    let chat = ChatId::new();
    storage
        .put(record(chat, 1, b"mine"), PutPrecondition::Absent)
        .await
        .expect("the landed put is reported as committed");
    storage
        .delete(
            chat,
            2,
            Bytes::from_static(b"gone"),
            PutPrecondition::Version(1),
        )
        .await
        .expect("the landed delete is reported as committed");
    let version = storage
        .put_keyring(Bytes::from_static(b"keys"), PutPrecondition::Absent)
        .await
        .expect("the landed keyring is reported as committed");
    assert_eq!(
        version,
        storage.get_keyring().await.unwrap().unwrap().version
    );
    assert_eq!(
        faulty.calls(Op::Put),
        4,
        "the put and the delete, each retried once"
    );
}

#[tokio::test]
async fn a_retried_put_beaten_by_another_writer_of_the_same_version_still_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyStorage::new(storage(&dir));
    let chat = ChatId::new();
    faulty
        .inner()
        .put(record(chat, 1, b"theirs"), PutPrecondition::Absent)
        .await
        .unwrap();
    faulty.fail_nth(Op::Put, 1, Fault::Unavailable);
    let storage = retried(&faulty);
    let err = storage
        .put(record(chat, 1, b"mine"), PutPrecondition::Absent)
        .await
        .expect_err("another device's record must not count as ours");
    assert!(
        matches!(
            err,
            Error::Conflict {
                current: Some(1),
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_retried_batch_whose_response_was_lost_reports_every_record_committed() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyStorage::new(storage(&dir));
    faulty.fail_nth(Op::PutBatch, 1, Fault::LostResponse);
    let storage = retried(&faulty);
    let (a, b) = (ChatId::new(), ChatId::new());
    let results = storage
        .put_batch(vec![
            (record(a, 1, b"a"), PutPrecondition::Absent),
            (record(b, 1, b"b"), PutPrecondition::Absent),
        ])
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(faulty.calls(Op::PutBatch), 2);
}

#[tokio::test]
async fn tracing_layer_counts_calls_errors_and_forwards_maintain() {
    let dir = tempfile::tempdir().unwrap();
    let counting = Arc::new(CountingStorage::new(storage(&dir)));
    let faulty = FaultyStorage::new(counting.clone());
    faulty.fail_nth(Op::Get, 1, Fault::Unavailable);
    let tracing = TracingLayer::new();
    let metrics = tracing.metrics();
    let inner: DynStorage = faulty.clone();
    let storage = tracing.layer(inner);
    let chat = ChatId::new();
    storage
        .put(record(chat, 1, b"a"), PutPrecondition::Absent)
        .await
        .unwrap();
    assert!(storage.get(&[chat], Part::Body).await.is_err());
    storage.get(&[chat], Part::Body).await.unwrap();
    storage
        .maintain(MaintenanceBudget { force: true })
        .await
        .unwrap();
    assert_eq!(metrics.get("put").calls, 1);
    assert_eq!(metrics.get("get").calls, 2);
    assert_eq!(metrics.get("get").errors, 1);
    assert_eq!(metrics.get("get").retriable_errors, 1);
    assert_eq!(metrics.get("maintain").calls, 1);
    assert_eq!(
        counting.calls(Op::Maintain),
        1,
        "maintain reached the backend"
    );
}

/// Every layer (retry, tracing, chaos, and the suite's counting and fault
/// layers) hands each blob operation to the backend: none falls back to the
/// `Storage` default, which would answer `Unsupported`.
#[tokio::test]
async fn every_layer_forwards_the_blob_operations() {
    let backend: DynStorage = Arc::new(chatvault_object_store::ObjectStoreStorage::new(
        Arc::new(object_store::memory::InMemory::new()),
        object_store::path::Path::from("vault"),
        chatvault_object_store::ObjectStoreOptions::default(),
    ));
    let counting = Arc::new(CountingStorage::new(backend));
    let faulty = FaultyStorage::new(counting.clone());
    faulty.fail_nth(Op::PutBlob, 1, Fault::Unavailable);
    let tracing = TracingLayer::new();
    let metrics = tracing.metrics();
    let chaos = ChaosLayer::new(ChaosConfig::calm(7));
    let inner: DynStorage = faulty.clone();
    let storage = inner.layer(quick_retry()).layer(chaos).layer(tracing);
    assert!(storage.capabilities().blobs);
    let id = BlobId([9; 32]);
    storage
        .put_blob(id, Bytes::from_static(b"sealed"))
        .await
        .expect("put_blob, retried once");
    assert_eq!(
        storage.get_blob(id).await.expect("get_blob"),
        Some(Bytes::from_static(b"sealed"))
    );
    assert_eq!(
        storage.list_blobs(None, 10).await.expect("list_blobs").ids,
        vec![id]
    );
    storage.delete_blob(id).await.expect("delete_blob");
    assert_eq!(storage.get_blob(id).await.expect("get_blob"), None);
    assert_eq!(faulty.calls(Op::PutBlob), 2, "the retry layer retried");
    for (op, calls) in [
        (Op::PutBlob, 1),
        (Op::GetBlob, 2),
        (Op::ListBlobs, 1),
        (Op::DeleteBlob, 1),
    ] {
        assert_eq!(counting.calls(op), calls, "{op} reached the backend");
        assert_eq!(metrics.get(op.name()).calls, calls, "{op} traced");
    }
}

/// Runs a fixed script of calls through a chaos layer and writes down each
/// outcome.
async fn script(seed: u64) -> (Vec<String>, chatvault_conformance::layers::ChaosStats) {
    let dir = tempfile::tempdir().unwrap();
    let chaos = ChaosLayer::new(ChaosConfig::stormy(seed));
    let storage = storage(&dir).layer(chaos.clone());
    let mut outcomes = Vec::new();
    for i in 0..60u64 {
        let chat = ChatId(uuid::Uuid::from_u128(u128::from(i % 7) + 1));
        let put = storage
            .put(record(chat, i + 1, b"x"), PutPrecondition::None)
            .await;
        let page = storage.changes(&Cursor::start(), 5).await;
        outcomes.push(format!(
            "{:?} {:?}",
            put.map_err(|e| e.is_retriable()),
            page.map(|p| p.changes.len()).map_err(|e| e.is_retriable())
        ));
    }
    (outcomes, chaos.stats())
}

#[tokio::test]
async fn chaos_from_one_seed_replays_exactly_and_injects_every_kind() {
    let (first, stats) = script(42).await;
    let (again, stats_again) = script(42).await;
    assert_eq!(first, again, "the same seed must give the same run");
    assert_eq!(stats, stats_again);
    let (other, _) = script(43).await;
    assert_ne!(first, other, "another seed gives another run");
    assert!(stats.unavailable > 0, "{stats:?}");
    assert!(stats.rejected > 0, "{stats:?}");
    assert!(stats.timeouts > 0, "{stats:?}");
    assert!(stats.lost_responses > 0, "{stats:?}");
    assert!(stats.reordered_pages > 0, "{stats:?}");
    assert!(stats.delayed > 0, "{stats:?}");
}

#[tokio::test]
async fn chaos_lost_responses_commit_and_rejections_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let inner = storage(&dir);
    let mut config = ChaosConfig::calm(1);
    config.lost_response = 1.0;
    let lossy = inner.clone().layer(ChaosLayer::new(config));
    let chat = ChatId::new();
    let err = lossy
        .put(record(chat, 1, b"a"), PutPrecondition::Absent)
        .await
        .unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert_eq!(inner.get(&[chat], Part::Body).await.unwrap().len(), 1);

    let mut config = ChaosConfig::calm(1);
    config.rejected = 1.0;
    let refusing = inner.clone().layer(ChaosLayer::new(config));
    let other = ChatId::new();
    let err = refusing
        .put(record(other, 1, b"b"), PutPrecondition::Absent)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Rejected { .. }), "{err}");
    assert!(inner.get(&[other], Part::Body).await.unwrap().is_empty());
}

#[tokio::test]
async fn chaos_duplicates_the_previous_page_and_reorders_only_across_chats() {
    let dir = tempfile::tempdir().unwrap();
    let inner = storage(&dir);
    let (a, b) = (ChatId::new(), ChatId::new());
    for v in 1..=4 {
        inner
            .put(record(a, v, b"a"), PutPrecondition::None)
            .await
            .unwrap();
        inner
            .put(record(b, v, b"b"), PutPrecondition::None)
            .await
            .unwrap();
    }
    let mut config = ChaosConfig::calm(9);
    config.duplicate_page = 1.0;
    config.reorder_page = 1.0;
    let chaos = ChaosLayer::new(config);
    let storage = inner.clone().layer(chaos.clone());
    let first = storage.changes(&Cursor::start(), 4).await.unwrap();
    let second = storage.changes(&first.cursor, 4).await.unwrap();
    assert_eq!(
        second.cursor, first.cursor,
        "the first page came again, with its cursor"
    );
    for page in [&first, &second] {
        for chat in [a, b] {
            let versions: Vec<u64> = page
                .changes
                .iter()
                .filter(|c| c.chat == chat)
                .map(|c| c.version)
                .collect();
            let mut sorted = versions.clone();
            sorted.sort_unstable();
            assert_eq!(versions, sorted, "one chat's changes keep their order");
        }
    }
    assert_eq!(chaos.stats().duplicated_pages, 1);
    chaos.set_enabled(false);
    let calm = storage.changes(&first.cursor, 4).await.unwrap();
    assert_ne!(calm.cursor, first.cursor, "healed: the feed moves on");
}

#[tokio::test]
async fn chaos_timeouts_hang_then_fail_retriably_and_commit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inner = storage(&dir);
    let mut config = ChaosConfig::calm(3);
    config.timeout = 1.0;
    config.timeout_after = Duration::from_millis(30);
    let chaos = ChaosLayer::new(config);
    let slow = inner.clone().layer(chaos.clone());
    let chat = ChatId::new();
    let started = std::time::Instant::now();
    let err = slow
        .put(record(chat, 1, b"t"), PutPrecondition::Absent)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(30),
        "the call hangs for timeout_after before failing"
    );
    assert!(err.is_retriable(), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(inner.get(&[chat], Part::Body).await.unwrap().is_empty());
    assert_eq!(chaos.stats().timeouts, 1);
}

#[tokio::test]
async fn chaos_latency_delays_calls_but_changes_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let inner = storage(&dir);
    let mut config = ChaosConfig::calm(5);
    config.max_latency = Duration::from_millis(3);
    let chaos = ChaosLayer::new(config);
    let delayed = inner.clone().layer(chaos.clone());
    let chats: Vec<ChatId> = (0..10).map(|_| ChatId::new()).collect();
    for &chat in &chats {
        delayed
            .put(record(chat, 1, b"l"), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    let through_chaos = delayed.changes(&Cursor::start(), 100).await.unwrap();
    let direct = inner.changes(&Cursor::start(), 100).await.unwrap();
    let versions = |page: &chatvault_core::ChangePage| -> Vec<(ChatId, u64)> {
        page.changes.iter().map(|c| (c.chat, c.version)).collect()
    };
    assert_eq!(
        versions(&through_chaos),
        versions(&direct),
        "latency only delays"
    );
    assert_eq!(through_chaos.cursor, direct.cursor);
    let stats = chaos.stats();
    assert!(stats.delayed > 0, "{stats:?}");
    assert_eq!(stats.faults(), 0, "latency is not a fault: {stats:?}");
}

#[tokio::test]
async fn chaos_fails_a_whole_batch_retriably_or_not_and_commits_none_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let inner = storage(&dir);
    for (field, retriable) in [("unavailable", true), ("rejected", false)] {
        let mut config = ChaosConfig::calm(11);
        match field {
            "unavailable" => config.unavailable = 1.0,
            _ => config.rejected = 1.0,
        }
        let failing = inner.clone().layer(ChaosLayer::new(config));
        let chats: Vec<ChatId> = (0..3).map(|_| ChatId::new()).collect();
        let batch = chats
            .iter()
            .map(|&chat| (record(chat, 1, b"b"), PutPrecondition::Absent))
            .collect();
        let results = failing.put_batch(batch).await;
        assert_eq!(results.len(), 3, "one result per record ({field})");
        for result in &results {
            let err = result.as_ref().unwrap_err();
            assert_eq!(err.is_retriable(), retriable, "{field}: {err}");
        }
        assert!(inner.get(&chats, Part::Body).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_stormy_run_that_follows_the_feed_duplicates_pages() {
    let dir = tempfile::tempdir().unwrap();
    let inner = storage(&dir);
    for i in 0..40u64 {
        inner
            .put(record(ChatId::new(), i + 1, b"f"), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    let chaos = ChaosLayer::new(ChaosConfig::stormy(17));
    let stormy = inner.clone().layer(chaos.clone());
    let mut cursor = Cursor::start();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..400 {
        match stormy.changes(&cursor, 3).await {
            Ok(page) => {
                seen.extend(page.changes.iter().map(|c| (c.chat, c.version)));
                cursor = page.cursor;
                if !page.has_more && seen.len() == 40 {
                    break;
                }
            }
            Err(error) => assert!(
                error.is_retriable() || matches!(error, Error::Rejected { .. }),
                "{error}"
            ),
        }
    }
    assert_eq!(
        seen.len(),
        40,
        "following the cursor still reads every change"
    );
    let stats = chaos.stats();
    assert!(stats.duplicated_pages > 0, "{stats:?}");
}

#[tokio::test]
async fn retry_over_chaos_lands_every_write_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let inner = storage(&dir);
    let mut config = ChaosConfig::stormy(23);
    // Refusals are final by design; everything else must be survivable.
    config.rejected = 0.0;
    let chaos = ChaosLayer::new(config);
    let storage = inner
        .clone()
        .layer(chaos.clone())
        .layer(quick_retry().with_max_attempts(30));
    let chats: Vec<ChatId> = (0..30).map(|_| ChatId::new()).collect();
    for &chat in &chats {
        storage
            .put(record(chat, 1, b"r"), PutPrecondition::Absent)
            .await
            .unwrap();
        storage
            .put(record(chat, 2, b"r"), PutPrecondition::Version(1))
            .await
            .unwrap();
    }
    let stored = inner.get(&chats, Part::Summary).await.unwrap();
    assert_eq!(stored.len(), 30);
    assert!(stored.iter().all(|r| r.version == 2));
    let stats = chaos.stats();
    assert!(
        stats.lost_responses > 0 && stats.unavailable > 0,
        "{stats:?}"
    );
}
