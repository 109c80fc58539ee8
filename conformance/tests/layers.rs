//! The test layers over real stores: the redb example backend and
//! `object_store`'s in-memory store.

#[allow(dead_code)]
#[path = "../../examples/custom_backend.rs"]
mod custom_backend;

use bytes::Bytes;
use chatvault_conformance::layers::{
    CountingLayer, CountingStorage, Fault, FaultLayer, FaultyStorage, Op, RequestCounter,
    RoundTrips,
};
use chatvault_core::layer::LayerExt;
use chatvault_core::{
    ChatId, Cursor, DynStorage, Error, Part, PutPrecondition, SealedRecord, Storage,
};
use custom_backend::RedbStorage;
use std::sync::Arc;
use std::time::Duration;

fn storage(dir: &tempfile::TempDir) -> DynStorage {
    Arc::new(RedbStorage::open(dir.path().join("vault.redb")).unwrap())
}

fn record(chat: ChatId, version: u64) -> SealedRecord {
    SealedRecord {
        chat,
        version,
        deleted: false,
        summary: Bytes::from_static(b"summary"),
        body: Some(Bytes::from_static(b"body-bytes")),
    }
}

#[tokio::test]
async fn fail_nth_fails_only_the_chosen_call_and_nothing_commits() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyStorage::new(storage(&dir));
    faulty.fail_nth(Op::Put, 2, Fault::ServerError);
    let (a, b, c) = (ChatId::new(), ChatId::new(), ChatId::new());
    faulty
        .put(record(a, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let second = faulty.put(record(b, 1), PutPrecondition::Absent).await;
    assert!(matches!(&second, Err(e) if e.is_retriable()), "{second:?}");
    faulty
        .put(record(c, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let stored = faulty.inner().get(&[a, b, c], Part::Summary).await.unwrap();
    let mut ids: Vec<ChatId> = stored.iter().map(|r| r.chat).collect();
    ids.sort();
    let mut expected = vec![a, c];
    expected.sort();
    assert_eq!(ids, expected, "the failed put must not commit");
    assert_eq!(faulty.calls(Op::Put), 3);
    assert_eq!(faulty.injected(), 1);
}

#[tokio::test]
async fn fail_all_takes_the_device_offline_until_healed() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyStorage::new(storage(&dir));
    faulty.fail_all(Fault::Unavailable);
    assert!(faulty
        .changes(&Cursor::start(), 10)
        .await
        .unwrap_err()
        .is_retriable());
    assert!(faulty.get_keyring().await.unwrap_err().is_retriable());
    let batch = faulty
        .put_batch(vec![(record(ChatId::new(), 1), PutPrecondition::Absent); 2])
        .await;
    assert!(
        batch
            .iter()
            .all(|r| matches!(r, Err(e) if e.is_retriable())),
        "{batch:?}"
    );
    faulty.heal();
    let page = faulty.changes(&Cursor::start(), 10).await.unwrap();
    assert!(page.changes.is_empty(), "nothing committed while offline");
}

#[tokio::test]
async fn fail_op_fails_only_that_operation() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyStorage::new(storage(&dir));
    faulty.fail_op(Op::Get, Fault::Timeout(Duration::from_millis(1)));
    let chat = ChatId::new();
    faulty
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let read = faulty.get(&[chat], Part::Body).await;
    assert!(matches!(&read, Err(Error::Unavailable { .. })), "{read:?}");
    faulty.heal();
    assert_eq!(
        faulty.get(&[chat], Part::Body).await.unwrap(),
        vec![record(chat, 1)]
    );
}

#[tokio::test]
async fn lost_response_commits_but_reports_a_retriable_error() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyStorage::new(storage(&dir));
    faulty.fail_nth(Op::Put, 1, Fault::LostResponse);
    let chat = ChatId::new();
    let result = faulty.put(record(chat, 1), PutPrecondition::Absent).await;
    assert!(matches!(&result, Err(e) if e.is_retriable()), "{result:?}");
    assert_eq!(
        faulty.get(&[chat], Part::Body).await.unwrap(),
        vec![record(chat, 1)],
        "the server committed although the caller saw an error"
    );
    let replay = faulty.put(record(chat, 1), PutPrecondition::Absent).await;
    assert!(
        matches!(
            replay,
            Err(Error::Conflict {
                current: Some(1),
                ..
            })
        ),
        "{replay:?}"
    );
}

#[tokio::test]
async fn counting_storage_counts_calls_and_sealed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let counting = CountingStorage::new(storage(&dir));
    let chat = ChatId::new();
    counting
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    counting.get(&[chat], Part::Body).await.unwrap();
    counting.changes(&Cursor::start(), 10).await.unwrap();
    counting.changes(&Cursor::start(), 10).await.unwrap();
    assert_eq!(counting.calls(Op::Put), 1);
    assert_eq!(counting.calls(Op::Get), 1);
    assert_eq!(counting.calls(Op::Changes), 2);
    let put = counting.counter().get("put");
    assert_eq!(put.bytes_sent, record(chat, 1).size() as u64);
    assert_eq!(
        counting.counter().get("get").bytes_received,
        record(chat, 1).size() as u64
    );
    // Each change carries the 7-byte inline summary.
    assert_eq!(counting.counter().get("changes").bytes_received, 14);
    counting.counter().reset();
    assert_eq!(counting.counter().total(), 0);
}

#[tokio::test]
async fn counting_layer_counts_every_storage_it_wraps_into_one_counter() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let requests = RequestCounter::new();
    let layer = CountingLayer::new(requests.clone());
    let laptop = storage(&first).layer(layer.clone());
    let phone = storage(&second).layer(layer.clone());
    let chat = ChatId::new();
    laptop
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    phone
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    phone.get(&[chat], Part::Body).await.unwrap();
    assert_eq!(layer.calls(Op::Put), 2);
    assert_eq!(
        requests.get("put").bytes_sent,
        2 * record(chat, 1).size() as u64
    );
    assert_eq!(requests.get("get").calls, 1);
    assert_eq!(requests.total(), 3);
}

#[tokio::test]
async fn counting_layer_counts_overlapping_calls_as_one_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let trips = RoundTrips::new();
    let counted = storage(&dir).layer(CountingLayer::default().with_round_trips(trips.clone()));
    let chats: Vec<ChatId> = (0..4).map(|_| ChatId::new()).collect();
    for &chat in &chats {
        counted
            .put(record(chat, 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    assert_eq!(trips.get(), 4, "four puts one after the other");
    trips.reset();
    let reads = chats
        .iter()
        .map(|chat| counted.get(std::slice::from_ref(chat), Part::Summary));
    let results = futures::future::join_all(reads).await;
    assert!(results.iter().all(Result::is_ok));
    assert!(
        (1..=4).contains(&trips.get()),
        "concurrent reads share round trips: {}",
        trips.get()
    );
}

#[tokio::test]
async fn fault_layer_arms_faults_on_every_storage_it_wraps() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultLayer::new();
    let inner = storage(&dir);
    let faulty = inner.clone().layer(faults.clone());
    let chat = ChatId::new();
    faults.fail_nth(Op::Put, 1, Fault::LostResponse);
    let lost = faulty.put(record(chat, 1), PutPrecondition::Absent).await;
    assert!(
        matches!(&lost, Err(e) if e.is_retriable()),
        "a lost response reads as a retriable failure: {lost:?}"
    );
    let stored = inner.get(&[chat], Part::Body).await.unwrap();
    assert_eq!(
        stored.len(),
        1,
        "the write committed although its response was lost"
    );
    faults.fail_all(Fault::Unavailable);
    assert!(faulty.changes(&Cursor::start(), 10).await.is_err());
    faults.heal();
    assert_eq!(
        faulty
            .changes(&Cursor::start(), 10)
            .await
            .unwrap()
            .changes
            .len(),
        1
    );
    assert_eq!(faults.calls(Op::Changes), 2);
    assert_eq!(faults.injected(), 2);
}

/// The `object_store` counters (feature `object-store`).
#[cfg(feature = "object-store")]
mod object_store_counting {
    use super::*;
    use chatvault_conformance::layers::CountingObjectStore;
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStore, PutMode, PutPayload};

    #[tokio::test]
    async fn counting_object_store_counts_each_call_by_operation() {
        let requests = RequestCounter::new();
        let store = CountingObjectStore::new(Arc::new(InMemory::new()), requests.clone());
        let path = Path::from("log/00000000000000000001");
        store
            .put(&path, PutPayload::from_static(b"entry"))
            .await
            .unwrap();
        let taken = store
            .put_opts(
                &path,
                PutPayload::from_static(b"other"),
                PutMode::Create.into(),
            )
            .await;
        assert!(
            matches!(taken, Err(object_store::Error::AlreadyExists { .. })),
            "{taken:?}"
        );
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(bytes, Bytes::from_static(b"entry"));
        let listed: Vec<_> = store
            .list_with_offset(Some(&Path::from("log")), &path)
            .try_collect()
            .await
            .unwrap();
        assert!(listed.is_empty(), "nothing after the offset");
        assert_eq!(requests.get("put").calls, 2);
        assert_eq!(requests.get("put").bytes_sent, 10);
        assert_eq!(requests.get("get").calls, 1);
        assert_eq!(requests.get("get").bytes_received, 5);
        assert_eq!(requests.get("list").calls, 1);
        assert_eq!(requests.total(), 4);
    }
}
