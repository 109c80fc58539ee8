//! The cost of polling: an idle poll is one request whatever the vault size.

mod common;

use chatvault_core::{ChatId, Cursor, Part, PutPrecondition, SealedRecord, Storage};
use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
use common::{drain, instrumented, memory, record, vault};
use object_store::path::Path;

#[tokio::test]
async fn an_idle_poll_over_ten_thousand_records_is_one_request() {
    let inner = memory();
    let writer = vault(inner.clone());
    for _ in 0..10_000 {
        writer
            .put(record(ChatId::new(), 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    let counted = instrumented(inner.clone());
    let reader = vault(counted.clone());
    let (feed, head) = drain(&reader, &Cursor::start(), 1000).await;
    assert_eq!(feed.len(), 10_000);

    counted.hook().reset();
    let idle = reader.changes(&head, 1000).await.unwrap();
    println!(
        "idle poll at 10k records: {} request(s)",
        counted.hook().requests()
    );
    assert!(idle.changes.is_empty());
    assert_eq!(counted.hook().requests(), 1);

    // k new commits: one LIST plus the k entries; then the bodies, with one
    // HEAD of the next log slot (the reader just saw the head, so that
    // proves it current) alongside the blob reads.
    let changed: Vec<ChatId> = feed.iter().take(5).map(|c| c.chat).collect();
    for &chat in &changed {
        writer
            .put(record(chat, 2), PutPrecondition::Version(1))
            .await
            .unwrap();
    }
    counted.hook().reset();
    let page = reader.changes(&head, 1000).await.unwrap();
    println!(
        "poll with 5 changes: {} request(s)",
        counted.hook().requests()
    );
    assert_eq!(page.changes.len(), 5);
    assert_eq!(counted.hook().requests(), 1 + 5);
    counted.hook().reset();
    let records = reader.get(&changed, Part::Body).await.unwrap();
    println!(
        "get of 5 changed chats: {} request(s)",
        counted.hook().requests()
    );
    assert_eq!(records.len(), 5);
    assert_eq!(
        (counted.hook().requests(), counted.hook().lists()),
        (1 + 5, 0)
    );
}

#[tokio::test]
async fn a_sidebar_get_of_inline_summaries_is_one_request_and_reads_no_blob() {
    let inner = memory();
    let writer = vault(inner.clone());
    let chats: Vec<ChatId> = (0..50).map(|_| ChatId::new()).collect();
    let batch = chats
        .iter()
        .map(|&chat| (record(chat, 1), PutPrecondition::Absent))
        .collect();
    for result in writer.put_batch(batch).await {
        result.unwrap();
    }
    let counted = instrumented(inner.clone());
    let reader = vault(counted.clone());
    // The first call also rebuilds the index: LIST snap/, LIST log/, GET the
    // entry. Later ones check for newer commits with a HEAD of the next slot.
    assert_eq!(
        reader.get(&chats[..1], Part::Summary).await.unwrap().len(),
        1
    );

    counted.hook().reset();
    let mut summaries = reader.get(&chats, Part::Summary).await.unwrap();
    println!(
        "sidebar get of 50 chats: {} request(s)",
        counted.hook().requests()
    );
    summaries.sort_by_key(|r| r.chat);
    let mut expected: Vec<_> = chats
        .iter()
        .map(|&chat| SealedRecord {
            body: None,
            ..record(chat, 1)
        })
        .collect();
    expected.sort_by_key(|r| r.chat);
    assert_eq!(summaries, expected);
    assert_eq!((counted.hook().requests(), counted.hook().lists()), (1, 0));

    // Summaries over the inline limit are only in the blobs: read ranged,
    // after the HEAD finds a new slot and a LIST and GET replay it.
    let big = ChatId::new();
    let no_inline = ObjectStoreStorage::new(
        inner.clone(),
        Path::from("users/alice"),
        ObjectStoreOptions::default().with_max_inline_summary(0),
    );
    no_inline
        .put(record(big, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    counted.hook().reset();
    let got = reader.get(&[big], Part::Summary).await.unwrap();
    assert_eq!(got[0].summary, record(big, 1).summary);
    assert_eq!(got[0].body, None);
    assert_eq!(
        (counted.hook().requests(), counted.hook().lists()),
        (1 + 1 + 1 + 1, 1)
    );
}

#[tokio::test]
async fn a_feed_page_of_batch_entries_reads_only_the_entries_it_reports() {
    let inner = memory();
    let writer = vault(inner.clone());
    for _ in 0..20 {
        let batch = (0..50)
            .map(|_| (record(ChatId::new(), 1), PutPrecondition::Absent))
            .collect();
        for result in writer.put_batch(batch).await {
            result.unwrap();
        }
    }
    let counted = instrumented(inner.clone());
    let reader = vault(counted.clone());
    let (all, _) = drain(&reader, &Cursor::start(), 1000).await;
    assert_eq!(all.len(), 1000);

    // The reader's index is at the head: the page lists the log once and
    // reads at most the two 50-record entries that fill it, not all twenty
    // (none when the handle still holds the entries it replayed).
    counted.hook().reset();
    let page = reader.changes(&Cursor::start(), 100).await.unwrap();
    println!(
        "page of 100 over 50-record entries: {} request(s)",
        counted.hook().requests()
    );
    assert_eq!(page.changes.len(), 100);
    assert!(page.has_more);
    assert_eq!(
        page.changes.iter().map(|c| c.chat).collect::<Vec<_>>(),
        all[..100].iter().map(|c| c.chat).collect::<Vec<_>>()
    );
    assert!(
        counted.hook().requests() <= 1 + 2,
        "{}",
        counted.hook().requests()
    );
    assert_eq!(counted.hook().lists(), 1);
}

#[tokio::test]
async fn a_new_device_reads_each_entry_after_the_snapshot_once() {
    let inner = memory();
    let writer = vault(inner.clone());
    for _ in 0..10 {
        writer
            .put(record(ChatId::new(), 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    common::compact_now(&inner).await;
    for _ in 0..20 {
        writer
            .put(record(ChatId::new(), 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    let counted = instrumented(inner.clone());
    let (feed, _) = drain(&vault(counted.clone()), &Cursor::start(), 1000).await;
    assert_eq!(feed.len(), 30);
    // The snapshot (a LIST and a GET), the LISTs of each page, and the 20
    // entries after the snapshot, each read once.
    let gets = counted.hook().requests() - counted.hook().lists();
    assert_eq!(
        gets,
        1 + 20,
        "{} requests, {} lists",
        counted.hook().requests(),
        counted.hook().lists()
    );
}
