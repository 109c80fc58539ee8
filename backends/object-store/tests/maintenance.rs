//! `Storage::maintain`: compaction that runs by itself when it is due, never
//! before its horizon is safe, and safely from several devices at once.

mod common;

use chatvault_core::{
    ChatId, Cursor, Error, MaintenanceBudget, Part, PutPrecondition, SealedRecord, Storage,
};
use chatvault_object_store::{
    CompactOptions, MaintenancePolicy, ObjectStoreOptions, ObjectStoreStorage,
};
use common::{drain, instrumented, memory, record};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const CLAIM_DELAY: Duration = Duration::from_millis(150);

fn policy(entries: u64, min_interval: Duration) -> MaintenancePolicy {
    MaintenancePolicy::default()
        .with_entries(entries)
        .with_min_interval(min_interval)
        .with_compact(CompactOptions::default().with_min_age(2 * CLAIM_DELAY))
}

fn device(store: Arc<dyn ObjectStore>, policy: MaintenancePolicy) -> ObjectStoreStorage {
    ObjectStoreStorage::new(
        store,
        Path::from("users/alice"),
        ObjectStoreOptions::default()
            .with_max_claim_delay(CLAIM_DELAY)
            .with_maintenance(policy),
    )
}

const DUE: MaintenanceBudget = MaintenanceBudget { force: false };
const FORCE: MaintenanceBudget = MaintenanceBudget { force: true };

async fn count(store: &Arc<dyn ObjectStore>, dir: &str) -> usize {
    let listed: Vec<_> = store
        .list(Some(&Path::from(format!("users/alice/{dir}"))))
        .try_collect()
        .await
        .unwrap();
    listed.len()
}

async fn put_new(storage: &dyn Storage, n: usize) {
    for _ in 0..n {
        storage
            .put(record(ChatId::new(), 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn maintenance_compacts_once_enough_was_committed_since_the_snapshot() {
    let inner = memory();
    let store = instrumented(inner.clone());
    let vault = device(store.clone(), policy(10, Duration::ZERO));
    put_new(&vault, 5).await;
    store.hook().reset();
    let idle = vault.maintain(DUE).await.unwrap();
    assert!(!idle.ran);
    assert_eq!(
        (idle.requests, store.hook().requests()),
        (0, 0),
        "deciding that nothing is due costs no request"
    );

    put_new(&vault, 20).await;
    tokio::time::sleep(2 * CLAIM_DELAY + Duration::from_millis(50)).await;
    store.hook().reset();
    let ran = vault.maintain(DUE).await.unwrap();
    assert!(ran.ran);
    assert_eq!(ran.removed_entries, 24, "all but the newest entry");
    assert_eq!(
        ran.requests,
        store.hook().requests(),
        "the report counts its requests"
    );
    assert_eq!(count(&inner, "snap").await, 1);
    assert_eq!(count(&inner, "log").await, 1);
    assert!(!vault.maintain(DUE).await.unwrap().ran, "nothing new since");
    let (feed, _) = drain(
        &device(inner, policy(10, Duration::ZERO)),
        &Cursor::start(),
        7,
    )
    .await;
    assert_eq!(feed.len(), 25);
}

#[tokio::test]
async fn maintenance_waits_out_the_interval_after_any_devices_compaction() {
    let store = memory();
    let (a, b) = (
        device(store.clone(), policy(4, Duration::from_secs(3600))),
        device(store.clone(), policy(4, Duration::from_secs(3600))),
    );
    put_new(&a, 10).await;
    assert!(
        b.maintain(DUE).await.unwrap().ran,
        "due, and nobody ran yet"
    );
    put_new(&a, 10).await;
    assert!(
        !a.maintain(DUE).await.unwrap().ran,
        "another device compacted within the interval"
    );
    assert!(
        a.maintain(FORCE).await.unwrap().ran,
        "force ignores thresholds"
    );
}

#[tokio::test]
async fn maintenance_refuses_a_horizon_not_above_the_claim_delay() {
    let storage = ObjectStoreStorage::new(
        memory(),
        Path::from("users/alice"),
        ObjectStoreOptions::default()
            .with_max_claim_delay(Duration::from_secs(7200))
            .with_maintenance(MaintenancePolicy::default()),
    );
    put_new(&storage, 1).await;
    assert!(matches!(
        storage.maintain(FORCE).await,
        Err(Error::InvalidInput { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_maintaining_at_once_lose_no_commit() {
    let store = memory();
    let devices: Vec<Arc<ObjectStoreStorage>> = (0..3)
        .map(|_| Arc::new(device(store.clone(), policy(3, Duration::ZERO))))
        .collect();
    let tasks: Vec<_> = devices
        .iter()
        .map(|device| {
            let device = Arc::clone(device);
            tokio::spawn(async move {
                let chats: Vec<ChatId> = (0..4).map(|_| ChatId::new()).collect();
                let mut acked: HashMap<ChatId, u64> = HashMap::new();
                let (mut removed, mut ran) = (0, 0);
                for round in 1..=40u64 {
                    let chat = chats[(round % 4) as usize];
                    let version = acked.get(&chat).map_or(1, |v| v + 1);
                    let pre = match acked.get(&chat) {
                        Some(&v) => PutPrecondition::Version(v),
                        None => PutPrecondition::Absent,
                    };
                    match device.put(record(chat, version), pre).await {
                        Ok(()) => {
                            acked.insert(chat, version);
                        }
                        Err(e) if e.is_retriable() => {}
                        Err(e) => panic!("put: {e}"),
                    }
                    // As the engine does after a sync round.
                    match device.maintain(DUE).await {
                        Ok(report) => {
                            removed += report.removed_entries;
                            ran += u64::from(report.ran);
                        }
                        Err(e) if e.is_retriable() => {}
                        Err(e) => panic!("maintain: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                (acked, removed, ran)
            })
        })
        .collect();
    let mut acked = HashMap::new();
    let (mut removed, mut ran) = (0, 0);
    for task in tasks {
        let (device_acked, device_removed, device_ran) = task.await.unwrap();
        acked.extend(device_acked);
        removed += device_removed;
        ran += device_ran;
    }
    assert!(
        ran > 3 && removed > 0,
        "compaction ran ({ran} times, {removed} entries)"
    );

    let fresh = device(store.clone(), policy(3, Duration::ZERO));
    let (feed, _) = drain(&fresh, &Cursor::start(), 5).await;
    let mut latest = HashMap::new();
    for change in feed {
        latest.insert(change.chat, change.version);
    }
    assert_eq!(
        latest, acked,
        "every acknowledged version is the current one"
    );
    let chats: Vec<ChatId> = acked.keys().copied().collect();
    let mut got = fresh.get(&chats, Part::Body).await.unwrap();
    got.sort_by_key(|r| r.chat);
    let mut want: Vec<SealedRecord> = acked.iter().map(|(&c, &v)| record(c, v)).collect();
    want.sort_by_key(|r| r.chat);
    assert_eq!(got, want, "every current blob survived");
}

#[tokio::test]
async fn a_vault_whose_snapshot_an_older_release_wrote_as_json_still_loads() {
    let store = memory();
    let writer = device(store.clone(), policy(3, Duration::ZERO));
    let chats: Vec<ChatId> = (0..5).map(|_| ChatId::new()).collect();
    for &chat in &chats {
        writer
            .put(record(chat, 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    tokio::time::sleep(2 * CLAIM_DELAY + Duration::from_millis(50)).await;
    assert!(writer.maintain(FORCE).await.unwrap().ran);
    let snap = Path::from(format!("users/alice/snap/{:020}", 5));
    let binary = store.get(&snap).await.unwrap().bytes().await.unwrap();
    assert_eq!(binary[3], 2, "format 2 is written");
    let json = chatvault_object_store::measure::snapshot_as_json(&binary).unwrap();
    assert_eq!(json[3], 1);
    store.put(&snap, json.into()).await.unwrap();
    assert_eq!(count(&store, "log").await, 1, "the rest of the log is gone");

    let fresh = device(store.clone(), policy(3, Duration::ZERO));
    let (feed, _) = drain(&fresh, &Cursor::start(), 2).await;
    let mut seen: Vec<ChatId> = feed.iter().map(|c| c.chat).collect();
    seen.sort();
    let mut want = chats.clone();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(fresh.get(&chats, Part::Body).await.unwrap().len(), 5);
    // And the next compaction replaces it with format 2.
    let extra = ChatId::new();
    fresh
        .put(record(extra, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    assert!(fresh.maintain(FORCE).await.unwrap().ran);
    let rewritten = Path::from(format!("users/alice/snap/{:020}", 6));
    assert_eq!(
        store.get(&rewritten).await.unwrap().bytes().await.unwrap()[3],
        2
    );
}
