//! Compaction bounds storage and never costs a reader a change, however old
//! its cursor.

mod common;

use chatvault_core::StorageExt;
use chatvault_core::{Change, ChatId, Cursor, Error, Part, PutPrecondition, SealedRecord, Storage};
use chatvault_object_store::CompactOptions;
use common::{
    age_past_horizon, compact_now, drain, horizon, instrumented, memory, quick_options,
    quick_vault, record, tombstone, vault, FaultMode,
};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

async fn names(store: &Arc<dyn ObjectStore>, dir: &str) -> Vec<String> {
    let listed: Vec<_> = store
        .list(Some(&Path::from(format!("users/alice/{dir}"))))
        .try_collect()
        .await
        .unwrap();
    let mut names: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
    names.sort();
    names
}

/// The last version a feed reported per chat.
fn latest(feed: &[Change]) -> HashMap<ChatId, (u64, bool)> {
    feed.iter()
        .map(|c| (c.chat, (c.version, c.deleted)))
        .collect()
}

#[tokio::test]
async fn an_old_cursor_resyncs_from_the_snapshot_and_loses_nothing() {
    let store = memory();
    let writer = vault(store.clone());
    let chats: Vec<ChatId> = (0..10).map(|_| ChatId::new()).collect();
    for version in 1..=3 {
        for &chat in &chats {
            let pre = if version == 1 {
                PutPrecondition::Absent
            } else {
                PutPrecondition::Version(version - 1)
            };
            writer.put(record(chat, version), pre).await.unwrap();
        }
    }
    writer
        .delete(chats[9], 4, "gone".into(), PutPrecondition::Version(3))
        .await
        .unwrap();

    let behind = vault(store.clone());
    let first = behind.changes(&Cursor::start(), 12).await.unwrap();
    let mut behind_feed = first.changes.clone();
    let current = vault(store.clone());
    let (current_feed, current_cursor) = drain(&current, &Cursor::start(), 100).await;

    let report = compact_now(&store).await;
    assert_eq!(report.snapshot_seq, 31);
    assert_eq!(report.log_entries_deleted, 30, "all but the newest");
    assert_eq!(
        report.blobs_deleted, 21,
        "the superseded versions: two of each chat, three of the deleted one"
    );
    assert_eq!(
        names(&store, "log").await,
        vec![format!("users/alice/log/{:020}", 31)]
    );
    assert_eq!(
        names(&store, "snap").await,
        vec![format!("users/alice/snap/{:020}", 31)]
    );

    let extra = ChatId::new();
    writer
        .put(record(extra, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    writer
        .put(record(chats[0], 4), PutPrecondition::Version(3))
        .await
        .unwrap();

    // The reader that was behind resyncs: it ends with the truth.
    let (rest, _) = drain(&behind, &first.cursor, 4).await;
    behind_feed.extend(rest);
    // The reader that was current reads only the new commits.
    let (new, _) = drain(&current, &current_cursor, 4).await;
    assert_eq!(
        new.iter().map(|c| (c.chat, c.version)).collect::<Vec<_>>(),
        vec![(extra, 1), (chats[0], 4)]
    );
    // A new device starts from the snapshot.
    let (fresh_feed, _) = drain(&vault(store.clone()), &Cursor::start(), 3).await;

    let mut truth = latest(&current_feed);
    truth.extend(latest(&new));
    assert_eq!(latest(&behind_feed), truth);
    assert_eq!(latest(&fresh_feed), truth);
    assert_eq!(truth[&chats[9]], (4, true));
    assert!(
        fresh_feed.iter().all(|c| c.summary.is_some()),
        "snapshots carry the summaries"
    );

    // Current records survive compaction, in every part.
    let reader = vault(store.clone());
    let mut got = reader.get(&chats[..9], Part::Body).await.unwrap();
    got.sort_by_key(|r| r.chat);
    let mut want: Vec<_> = chats[..9]
        .iter()
        .map(|&c| record(c, if c == chats[0] { 4 } else { 3 }))
        .collect();
    want.sort_by_key(|r| r.chat);
    assert_eq!(got, want);
    assert_eq!(
        reader.get(&[chats[9]], Part::Body).await.unwrap(),
        vec![{
            let mut t = tombstone(chats[9], 4);
            t.summary = "gone".into();
            t
        }]
    );
    // And a handle that starts from the snapshot can still write.
    reader
        .put(record(chats[1], 4), PutPrecondition::Version(3))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_reader_between_kept_entries_continues_from_the_log() {
    let store = memory();
    let writer = vault(store.clone());
    for _ in 0..5 {
        writer
            .put(record(ChatId::new(), 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    let reader = vault(store.clone());
    let page = reader.changes(&Cursor::start(), 5).await.unwrap();
    // Nothing is old enough to delete: the snapshot is written, the log kept.
    let report = vault(store.clone())
        .compact(CompactOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (
            report.snapshot_seq,
            report.log_entries_deleted,
            report.blobs_deleted
        ),
        (5, 0, 0)
    );
    assert_eq!(names(&store, "log").await.len(), 5);
    let chat = ChatId::new();
    writer
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let next = reader.changes(&page.cursor, 10).await.unwrap();
    assert_eq!(
        next.changes.iter().map(|c| c.chat).collect::<Vec<_>>(),
        vec![chat]
    );
    // A fresh handle loads its index from the snapshot and reads the tail.
    let fresh = vault(store);
    let (feed, _) = drain(&fresh, &Cursor::start(), 2).await;
    assert_eq!(feed.len(), 6);
}

/// A file-sync service re-creates a log entry that compaction deleted (a
/// device that had not seen the delete sends it again). The snapshot was
/// written before any entry was old enough to delete (so it knows validity
/// from slot 1) and a later compaction at the same head deleted the entries:
/// a new reader finds slot 1 but not slot 2. It must not read the log from
/// slot 1 (slot 2 "vanished" on every attempt, so it could never sync) but
/// resync from the snapshot, and report every chat.
#[tokio::test]
async fn a_resurrected_entry_below_the_snapshot_does_not_stop_a_new_reader() {
    let store = memory();
    let writer = vault(store.clone());
    let chats: Vec<ChatId> = (0..4).map(|_| ChatId::new()).collect();
    for &chat in &chats {
        writer
            .put(record(chat, 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    let slot = |seq: u64| Path::from(format!("users/alice/log/{seq:020}"));
    let first = store.get(&slot(1)).await.unwrap().bytes().await.unwrap();
    // Nothing is old enough to delete: a snapshot of slot 4 that knows
    // validity from slot 1.
    let young = vault(store.clone())
        .compact(CompactOptions::default())
        .await
        .unwrap();
    assert_eq!((young.snapshot_seq, young.log_entries_deleted), (4, 0));
    // Later, at the same head: no new snapshot, slots 1 to 3 deleted.
    let old = compact_now(&store).await;
    assert_eq!((old.snapshot_seq, old.log_entries_deleted), (4, 3));
    // The copy service brings slot 1 back.
    store.put(&slot(1), first.into()).await.unwrap();

    for limit in [1, 2, 100] {
        let (feed, _) = drain(&vault(store.clone()), &Cursor::start(), limit).await;
        let reported: HashMap<ChatId, (u64, bool)> = latest(&feed);
        assert_eq!(reported.len(), chats.len(), "page size {limit}");
        assert!(chats.iter().all(|c| reported[c] == (1, false)));
    }
}

#[tokio::test]
async fn orphan_blobs_of_dead_writers_are_removed_after_the_horizon() {
    let inner = memory();
    let store = instrumented(inner.clone());
    let writer = vault(store.clone());
    let chat = ChatId::new();
    writer
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    // Warm put: the blob lands, then the writer dies before claiming a slot.
    store.hook().fail_request(2, FaultMode::Dead);
    assert!(writer
        .put(record(chat, 2), PutPrecondition::Version(1))
        .await
        .is_err());
    store.hook().heal();
    assert_eq!(names(&inner, "rec").await.len(), 2);

    let young = vault(inner.clone())
        .compact(CompactOptions::default())
        .await
        .unwrap();
    assert_eq!(
        young.blobs_deleted, 0,
        "a blob younger than the horizon may belong to a put in flight"
    );
    let old = compact_now(&inner).await;
    assert_eq!(old.blobs_deleted, 1);
    assert_eq!(names(&inner, "rec").await.len(), 1);
    assert_eq!(
        vault(inner).get(&[chat], Part::Body).await.unwrap(),
        vec![record(chat, 1)]
    );
}

#[tokio::test]
async fn compaction_keeps_only_the_newest_keyring_and_snapshot() {
    let store = memory();
    let storage = vault(store.clone());
    for i in 0..3u8 {
        storage
            .put_keyring(vec![i].into(), PutPrecondition::None)
            .await
            .unwrap();
        storage
            .put(record(ChatId::new(), 1), PutPrecondition::Absent)
            .await
            .unwrap();
        compact_now(&store).await;
    }
    assert_eq!(
        names(&store, "keyring").await,
        vec![format!("users/alice/keyring/{:020}", 3)]
    );
    assert_eq!(
        names(&store, "snap").await,
        vec![format!("users/alice/snap/{:020}", 3)]
    );
    assert_eq!(
        storage.get_keyring().await.unwrap().unwrap().bytes.as_ref(),
        &[2]
    );
    assert_eq!(drain(&vault(store), &Cursor::start(), 10).await.0.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacting_while_writers_write_loses_no_commit() {
    // Every handle shares a short claim delay and compaction a horizon above
    // it, so compaction deletes entries and blobs while puts are in flight.
    let options = || {
        chatvault_object_store::ObjectStoreOptions::default()
            .with_max_claim_delay(Duration::from_millis(60))
    };
    let open = |store: &Arc<dyn ObjectStore>| {
        chatvault_object_store::ObjectStoreStorage::new(
            store.clone(),
            Path::from("users/alice"),
            options(),
        )
    };
    let store = memory();
    let writer = Arc::new(open(&store));
    let reader = open(&store);
    let writing = {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            let mut written = Vec::new();
            for _ in 0..150 {
                let chat = ChatId::new();
                loop {
                    // A put that outlived its claim delay gives up
                    // retriably; the caller (the engine) retries it.
                    match writer.put(record(chat, 1), PutPrecondition::Absent).await {
                        Ok(()) => break,
                        Err(e) if e.is_retriable() => continue,
                        Err(e) => panic!("put: {e}"),
                    }
                }
                written.push(chat);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            written
        })
    };
    let compactor = open(&store);
    let compact = CompactOptions::default().with_min_age(Duration::from_millis(120));
    let mut cursor = Cursor::start();
    let mut seen = Vec::new();
    let mut deleted = 0;
    while !writing.is_finished() {
        deleted += compactor
            .compact(compact.clone())
            .await
            .unwrap()
            .log_entries_deleted;
        let page = reader.changes(&cursor, 10).await.unwrap();
        seen.extend(page.changes);
        cursor = page.cursor;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(deleted > 0, "compaction ran during the writes");
    let written = writing.await.unwrap();
    let (rest, _) = drain(&reader, &cursor, 10).await;
    seen.extend(rest);
    let seen: std::collections::HashSet<ChatId> = seen.into_iter().map(|c| c.chat).collect();
    assert!(
        written.iter().all(|c| seen.contains(c)),
        "every commit reached the reader"
    );
}

/// Compaction empties the log but for its newest slot, with no commit after
/// it: the situation of a laptop that slept through another device's writes
/// and the daily compaction.
#[tokio::test(start_paused = true)]
async fn a_handle_that_slept_through_compaction_misses_no_commit_and_reuses_no_slot() {
    let store = memory();
    let writer = vault(store.clone());
    let (sleeper, reader) = (vault(store.clone()), vault(store.clone()));
    let a = ChatId::new();
    writer
        .put(record(a, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let (_, cursor) = drain(&reader, &Cursor::start(), 100).await;
    assert_eq!(sleeper.get(&[a], Part::Summary).await.unwrap().len(), 1);

    let b = ChatId::new();
    writer
        .put(record(b, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    writer
        .put(record(a, 2), PutPrecondition::Version(1))
        .await
        .unwrap();
    let report = compact_now(&store).await;
    assert_eq!((report.snapshot_seq, report.log_entries_deleted), (3, 2));
    assert_eq!(names(&store, "log").await, vec![slot(3)]);
    // Longer than the claim delay: the handles no longer trust their index.
    tokio::time::advance(Duration::from_secs(3600)).await;

    let mut got = sleeper.get(&[a, b], Part::Body).await.unwrap();
    got.sort_by_key(|r| r.chat != a);
    assert_eq!(got, vec![record(a, 2), record(b, 1)]);
    let (missed, _) = drain(&reader, &cursor, 100).await;
    assert_eq!(
        latest(&missed),
        HashMap::from([(a, (2, false)), (b, (1, false))])
    );

    // A write from a handle that slept claims the slot after the head, not
    // a slot compaction deleted (which every later reader would skip).
    let c = ChatId::new();
    let stale_writer = vault(store.clone());
    stale_writer.get(&[a], Part::Summary).await.unwrap();
    writer
        .put(record(b, 2), PutPrecondition::Version(1))
        .await
        .unwrap();
    writer
        .put(record(a, 3), PutPrecondition::Version(2))
        .await
        .unwrap();
    compact_now(&store).await;
    assert_eq!(names(&store, "log").await, vec![slot(5)]);
    tokio::time::advance(Duration::from_secs(3600)).await;
    stale_writer
        .put(record(c, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    assert_eq!(names(&store, "log").await, vec![slot(5), slot(6)]);
    let (fresh, _) = drain(&vault(store.clone()), &Cursor::start(), 100).await;
    assert_eq!(
        latest(&fresh),
        HashMap::from([(a, (3, false)), (b, (2, false)), (c, (1, false))])
    );
}

fn slot(seq: u64) -> String {
    format!("users/alice/log/{seq:020}")
}

/// Every record whose put was acknowledged is read back whole by a new
/// device, and its feed reports it.
async fn assert_acknowledged_puts_survive(
    store: &Arc<dyn ObjectStore>,
    puts: &[(SealedRecord, chatvault_core::Result<()>)],
) {
    let fresh = vault(store.clone());
    let (feed, _) = drain(&fresh, &Cursor::start(), 100).await;
    let reported = latest(&feed);
    for (record, result) in puts {
        match result {
            Ok(()) => {
                assert_eq!(
                    reported.get(&record.chat),
                    Some(&(record.version, false)),
                    "an acknowledged put is in the feed"
                );
                assert_eq!(
                    fresh.get(&[record.chat], Part::Body).await.unwrap(),
                    vec![record.clone()],
                    "an acknowledged put reads back whole"
                );
            }
            Err(e) => assert!(e.is_retriable(), "a put that gave up says retry: {e}"),
        }
    }
}

#[tokio::test]
async fn compaction_spares_the_first_blob_of_a_put_whose_last_blob_was_slow() {
    let inner = memory();
    let store = instrumented(inner.clone());
    let writer = Arc::new(quick_vault(store.clone()));
    writer
        .put(record(ChatId::new(), 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let (a, b) = (record(ChatId::new(), 1), record(ChatId::new(), 1));
    // The batch's blobs upload together: `a` lands at once, `b` hangs.
    let held = store.hook().hold_next_put(&format!("rec/{}", b.chat));
    let put = tokio::spawn({
        let (writer, batch) = (
            Arc::clone(&writer),
            vec![
                (a.clone(), PutPrecondition::Absent),
                (b.clone(), PutPrecondition::Absent),
            ],
        );
        async move { writer.put_batch(batch).await }
    });
    held.arrived().await;
    age_past_horizon().await;
    quick_vault(inner.clone()).compact(horizon()).await.unwrap();
    held.release();
    let results = put.await.unwrap();
    let puts: Vec<_> = [a, b].into_iter().zip(results).collect();
    assert_acknowledged_puts_survive(&inner, &puts).await;
}

#[tokio::test]
async fn compaction_spares_the_blob_of_a_put_whose_commit_request_is_slow() {
    let inner = memory();
    let store = instrumented(inner.clone());
    let writer = Arc::new(quick_vault(store.clone()));
    writer
        .put(record(ChatId::new(), 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let slow = record(ChatId::new(), 1);
    // The slot create hangs, as one `object_store` retries after 5xx for
    // minutes would.
    let held = store.hook().hold_next_put("/log/");
    let put = tokio::spawn({
        let (writer, slow) = (Arc::clone(&writer), slow.clone());
        async move { writer.put(slow, PutPrecondition::Absent).await }
    });
    held.arrived().await;
    age_past_horizon().await;
    quick_vault(inner.clone()).compact(horizon()).await.unwrap();
    held.release();
    let result = put.await.unwrap();
    assert_acknowledged_puts_survive(&inner, &[(slow, result)]).await;
}

#[tokio::test]
async fn a_writer_whose_commit_is_slow_never_recreates_a_compacted_slot() {
    let inner = memory();
    let store = instrumented(inner.clone());
    let writer = Arc::new(quick_vault(store.clone()));
    writer
        .put(record(ChatId::new(), 1), PutPrecondition::Absent)
        .await
        .unwrap();
    // The writer's index is at the head (slot 1): it trusts slot 2 is free
    // and sends its create, which hangs.
    let slow = record(ChatId::new(), 1);
    let held = store.hook().hold_next_put("/log/");
    let put = tokio::spawn({
        let (writer, slow) = (Arc::clone(&writer), slow.clone());
        async move { writer.put(slow, PutPrecondition::Absent).await }
    });
    held.arrived().await;
    // Another device commits slots 2 and 3; compaction later deletes 1 and 2.
    let other = quick_vault(inner.clone());
    for _ in 0..2 {
        other
            .put(record(ChatId::new(), 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    age_past_horizon().await;
    let report = quick_vault(inner.clone()).compact(horizon()).await.unwrap();
    assert_eq!(report.log_entries_deleted, 2);
    held.release();
    let result = put.await.unwrap();
    assert_acknowledged_puts_survive(&inner, &[(slow, result)]).await;
}

#[tokio::test]
async fn compaction_refuses_a_horizon_not_above_the_claim_delay() {
    let store = memory();
    let storage = quick_vault(store.clone());
    storage
        .put(record(ChatId::new(), 1), PutPrecondition::Absent)
        .await
        .unwrap();
    for min_age in [Duration::ZERO, common::QUICK_CLAIM_DELAY] {
        let refused = storage
            .compact(CompactOptions::default().with_min_age(min_age))
            .await;
        assert!(
            matches!(&refused, Err(Error::InvalidInput { message }) if message.contains("claim delay")),
            "{refused:?}"
        );
    }
    assert_eq!(names(&store, "snap").await, Vec::<String>::new());
    let _ = quick_options();
}
