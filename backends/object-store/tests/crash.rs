//! A writer that fails or dies at any request of a put leaves either no
//! visible change or a complete one that every reader reports.

mod common;

use chatvault_core::{ChatId, Cursor, Error, Part, PutPrecondition, SealedRecord, Storage};
use common::{drain, instrumented, memory, record, vault, FaultMode};

/// What every reader must see after the put: exactly the old record, or
/// exactly the new one, with nothing half-written.
async fn assert_all_or_nothing(
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    before: &SealedRecord,
    after: &SealedRecord,
    old_reader: &dyn Storage,
    old_cursor: &Cursor,
    put_result: &chatvault_core::Result<()>,
    label: &str,
) -> bool {
    let fresh = vault(store);
    let (feed, _) = drain(&fresh, &Cursor::start(), 10).await;
    let versions: Vec<u64> = feed
        .iter()
        .filter(|c| c.chat == before.chat)
        .map(|c| c.version)
        .collect();
    let got = fresh
        .get(&[before.chat], Part::Body)
        .await
        .expect("get after crash");
    let (tail, _) = drain(old_reader, old_cursor, 10).await;
    let committed = match versions.as_slice() {
        [1] => {
            assert_eq!(
                got,
                vec![before.clone()],
                "{label}: nothing visible means the old record"
            );
            assert!(
                tail.is_empty(),
                "{label}: a reader at the head sees nothing new"
            );
            false
        }
        [1, 2] => {
            assert_eq!(
                got,
                vec![after.clone()],
                "{label}: a visible change is complete"
            );
            assert_eq!(
                tail.len(),
                1,
                "{label}: a reader at the head sees the change"
            );
            assert_eq!(tail[0].summary.as_ref(), Some(&after.summary), "{label}");
            true
        }
        other => panic!("{label}: unexpected versions {other:?}"),
    };
    if put_result.is_ok() {
        assert!(committed, "{label}: an acknowledged put must be visible");
    }
    committed
}

async fn fail_each_request_of_a_put(mode: FaultMode, warm: bool) {
    let mut failed_at = Vec::new();
    for n in 1.. {
        let inner = memory();
        let chat = ChatId::new();
        let before = record(chat, 1);
        let after = record(chat, 2);
        let setup = vault(inner.clone());
        setup
            .put(before.clone(), PutPrecondition::Absent)
            .await
            .unwrap();
        setup
            .put(record(ChatId::new(), 1), PutPrecondition::Absent)
            .await
            .unwrap();
        let (_, head) = drain(&setup, &Cursor::start(), 10).await;

        let store = instrumented(inner.clone());
        let writer = vault(store.clone());
        if warm {
            writer.changes(&head, 10).await.unwrap();
        }
        store.hook().fail_request(n, mode);
        let result = writer.put(after.clone(), PutPrecondition::Version(1)).await;
        let reached = store.hook().requests() >= n;
        store.hook().heal();
        let label = format!("{mode:?}, warm {warm}, request {n}");
        if !reached {
            assert!(result.is_ok(), "{label}: {result:?}");
            assert!(n > 2, "a put takes at least two requests");
            break;
        }
        if let Err(e) = &result {
            assert!(
                e.is_retriable() || matches!(e, Error::Conflict { .. }),
                "{label}: {e:?}"
            );
        }
        let committed = assert_all_or_nothing(
            inner.clone(),
            &before,
            &after,
            &setup,
            &head,
            &result,
            &label,
        )
        .await;
        failed_at.push((n, committed));

        // The engine retries through fetch-merge; a restarted device (new
        // handle) must be able to write on top of whatever happened.
        let restarted = vault(inner.clone());
        let current = restarted.get(&[chat], Part::Summary).await.unwrap()[0].version;
        restarted
            .put(record(chat, current + 1), PutPrecondition::Version(current))
            .await
            .unwrap_or_else(|e| panic!("{label}: retry failed: {e:?}"));
    }
    assert!(
        failed_at.len() >= 2,
        "{mode:?}: every request of the put was failed once: {failed_at:?}"
    );
    // The last request is the commit: losing its response after it applied
    // must leave a committed record.
    if mode == FaultMode::AppliedThenLost {
        assert_eq!(
            failed_at.last().map(|&(_, c)| c),
            Some(true),
            "{failed_at:?}"
        );
    }
}

#[tokio::test]
async fn a_put_failing_at_any_request_is_all_or_nothing() {
    fail_each_request_of_a_put(FaultMode::Lost, false).await;
    fail_each_request_of_a_put(FaultMode::Lost, true).await;
}

#[tokio::test]
async fn a_put_whose_response_is_lost_after_any_request_is_all_or_nothing() {
    fail_each_request_of_a_put(FaultMode::AppliedThenLost, false).await;
    fail_each_request_of_a_put(FaultMode::AppliedThenLost, true).await;
}

#[tokio::test]
async fn a_writer_dying_at_any_request_leaves_all_or_nothing() {
    fail_each_request_of_a_put(FaultMode::Dead, false).await;
    fail_each_request_of_a_put(FaultMode::Dead, true).await;
}

#[tokio::test]
async fn a_lost_commit_response_is_recognised_as_success() {
    let inner = memory();
    let store = instrumented(inner.clone());
    let writer = vault(store.clone());
    let chat = ChatId::new();
    writer
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    // Warm put: blob PUT, then the slot create, whose response is lost.
    store.hook().fail_request(2, FaultMode::AppliedThenLost);
    writer
        .put(record(chat, 2), PutPrecondition::Version(1))
        .await
        .unwrap();
    store.hook().heal();
    assert_eq!(
        vault(inner).get(&[chat], Part::Body).await.unwrap(),
        vec![record(chat, 2)]
    );
}

#[tokio::test]
async fn a_retried_commit_that_finds_its_own_slot_is_success_not_conflict() {
    let inner = memory();
    let store = instrumented(inner.clone());
    let writer = vault(store.clone());
    let chat = ChatId::new();
    writer
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    // Warm put: blob PUT, then the slot create, which lands; its response is
    // lost and `object_store`'s retry answers 412.
    store.hook().fail_request(2, FaultMode::AppliedThenTaken);
    writer
        .put(record(chat, 2), PutPrecondition::Version(1))
        .await
        .expect("the writer's own commit is a success");
    store.hook().heal();
    let (feed, _) = drain(&vault(inner.clone()), &Cursor::start(), 10).await;
    assert_eq!(
        feed.iter().map(|c| c.version).collect::<Vec<_>>(),
        vec![1, 2],
        "committed exactly once"
    );

    // A batch: every record of the entry is reported as committed.
    let (a, b) = (ChatId::new(), ChatId::new());
    store.hook().fail_request(3, FaultMode::AppliedThenTaken);
    let results = writer
        .put_batch(vec![
            (record(a, 1), PutPrecondition::Absent),
            (record(b, 1), PutPrecondition::Absent),
        ])
        .await;
    store.hook().heal();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        vault(inner).get(&[a, b], Part::Body).await.unwrap().len(),
        2
    );
}

#[tokio::test]
async fn a_retried_keyring_write_that_finds_its_own_version_is_success() {
    let inner = memory();
    let store = instrumented(inner.clone());
    let writer = vault(store.clone());
    writer
        .put_keyring("v1".into(), PutPrecondition::Absent)
        .await
        .unwrap();
    // LIST, then the create, which lands and is answered 412 on retry.
    store.hook().fail_request(2, FaultMode::AppliedThenTaken);
    let version = writer
        .put_keyring("v2".into(), PutPrecondition::Version(1))
        .await
        .expect("the writer's own keyring version is a success");
    store.hook().heal();
    assert_eq!(version, 2);
    let stored = vault(inner).get_keyring().await.unwrap().unwrap();
    assert_eq!((stored.version, stored.bytes.as_ref()), (2, &b"v2"[..]));
}
