//! Damaged, newer and foreign objects: typed errors for the record
//! concerned, the rest keeps syncing, nothing panics.

mod common;

use chatvault_core::{ChatId, Cursor, Error, Part, PutPrecondition, Storage};
use chatvault_object_store::{CompactOptions, ObjectStoreOptions, ObjectStoreStorage};
use common::{drain, instrumented, memory, record, vault};
use object_store::path::Path;
use object_store::ObjectStore;
use std::sync::Arc;

async fn raw_put(store: &Arc<dyn ObjectStore>, path: &str, bytes: &'static [u8]) {
    store.put(&Path::from(path), bytes.into()).await.unwrap();
}

fn slot(seq: u64) -> String {
    format!("users/alice/log/{seq:020}")
}

#[tokio::test]
async fn an_undecodable_log_entry_is_skipped_and_the_rest_syncs() {
    let store = memory();
    let writer = vault(store.clone());
    let chats: Vec<ChatId> = (0..3).map(|_| ChatId::new()).collect();
    for &chat in &chats {
        writer
            .put(record(chat, 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    raw_put(&store, &slot(2), b"\x00garbage").await;
    let reader = vault(store.clone());
    let (feed, cursor) = drain(&reader, &Cursor::start(), 10).await;
    assert_eq!(
        feed.iter().map(|c| c.chat).collect::<Vec<_>>(),
        vec![chats[0], chats[2]]
    );
    assert!(reader
        .get(&[chats[1]], Part::Body)
        .await
        .unwrap()
        .is_empty());
    // Writers go on after it.
    let chat = ChatId::new();
    reader
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let next = reader.changes(&cursor, 10).await.unwrap();
    assert_eq!(
        next.changes.iter().map(|c| c.chat).collect::<Vec<_>>(),
        vec![chat]
    );
}

#[tokio::test]
async fn a_truncated_log_entry_is_skipped_like_a_garbled_one() {
    let store = memory();
    let writer = vault(store.clone());
    let (a, b) = (ChatId::new(), ChatId::new());
    writer
        .put(record(a, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    writer
        .put(record(b, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let path = Path::from(slot(1));
    let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
    store
        .put(&path, bytes.slice(..bytes.len() / 2).into())
        .await
        .unwrap();
    let (feed, _) = drain(&vault(store), &Cursor::start(), 10).await;
    assert_eq!(feed.iter().map(|c| c.chat).collect::<Vec<_>>(), vec![b]);
}

#[tokio::test]
async fn a_log_entry_from_a_newer_chatvault_is_unsupported_format() {
    let store = memory();
    vault(store.clone())
        .put(record(ChatId::new(), 1), PutPrecondition::Absent)
        .await
        .unwrap();
    raw_put(&store, &slot(2), b"cvl\x09{\"items\":[]}").await;
    let err = vault(store)
        .changes(&Cursor::start(), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedFormat {
                found: 9,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

async fn blob_of(store: &Arc<dyn ObjectStore>, chat: ChatId) -> Path {
    use futures::TryStreamExt;
    let listed: Vec<_> = store
        .list(Some(&Path::from(format!("users/alice/rec/{chat}"))))
        .try_collect()
        .await
        .unwrap();
    listed[0].location.clone()
}

#[tokio::test]
async fn a_corrupt_blob_fails_get_with_corrupt_naming_the_chat_and_other_chats_still_load() {
    let store = memory();
    let writer = vault(store.clone());
    // Its summary is only in the blob, as with summaries over the inline limit.
    let blob_summaries = ObjectStoreStorage::new(
        store.clone(),
        Path::from("users/alice"),
        ObjectStoreOptions::default().with_max_inline_summary(0),
    );
    let (bad, bad_summary, good) = (ChatId::new(), ChatId::new(), ChatId::new());
    for (storage, chat) in [
        (&writer, bad),
        (&blob_summaries, bad_summary),
        (&writer, good),
    ] {
        storage
            .put(record(chat, 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    let (blob, summary_blob) = (
        blob_of(&store, bad).await,
        blob_of(&store, bad_summary).await,
    );
    for path in [&blob, &summary_blob] {
        store
            .put(path, b"cvb\x01short".as_slice().into())
            .await
            .unwrap();
    }

    let reader = vault(store.clone());
    for (chat, part) in [(bad, Part::Body), (bad_summary, Part::Summary)] {
        let err = reader.get(&[good, chat], part).await.unwrap_err();
        match err {
            Error::Corrupt { what, .. } => {
                assert!(what.starts_with(&format!("chat {chat}")), "{what}")
            }
            other => panic!("{other:?}"),
        }
    }
    // The summary the log entry carried inline is the committed one and
    // still serves the sidebar; the damage shows when the chat is opened.
    let sidebar = reader.get(&[bad], Part::Summary).await.unwrap();
    assert_eq!(sidebar[0].summary, record(bad, 1).summary);
    assert_eq!(
        reader.get(&[good], Part::Body).await.unwrap(),
        vec![record(good, 1)]
    );
    assert_eq!(
        drain(&reader, &Cursor::start(), 10).await.0.len(),
        3,
        "the feed is unaffected"
    );

    store.delete(&blob).await.unwrap();
    assert!(matches!(
        reader.get(&[bad], Part::Body).await,
        Err(Error::Corrupt { .. })
    ));
    raw_put(&store, summary_blob.as_ref(), b"").await;
    assert!(matches!(
        reader.get(&[bad_summary], Part::Summary).await,
        Err(Error::Corrupt { .. })
    ));
}

#[tokio::test]
async fn foreign_files_are_ignored_everywhere() {
    let store = memory();
    for path in [
        "users/alice/log/notes.txt",
        "users/alice/log/.syncthing.00000000000000000001.tmp",
        "users/alice/log/00000000000000000001.sync-conflict-20240101-120000-ABCDEFG",
        "users/alice/log/sub/00000000000000000001",
        "users/alice/rec/not-a-chat/x",
        "users/alice/snap/README",
        "users/alice/keyring/.DS_Store",
        "users/alice/desktop.ini",
    ] {
        raw_put(&store, path, b"not chatvault's").await;
    }
    let counted = instrumented(store.clone());
    let storage = vault(counted.clone());
    let chat = ChatId::new();
    storage
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    storage
        .put_keyring("k".into(), PutPrecondition::Absent)
        .await
        .unwrap();
    let (feed, cursor) = drain(&storage, &Cursor::start(), 10).await;
    assert_eq!(feed.iter().map(|c| c.chat).collect::<Vec<_>>(), vec![chat]);
    assert_eq!(
        storage.get(&[chat], Part::Body).await.unwrap(),
        vec![record(chat, 1)]
    );
    assert_eq!(storage.get_keyring().await.unwrap().unwrap().version, 1);
    counted.hook().reset();
    assert!(storage
        .changes(&cursor, 10)
        .await
        .unwrap()
        .changes
        .is_empty());
    assert_eq!(
        counted.hook().requests(),
        1,
        "foreign files do not make an idle poll cost more"
    );
    common::compact_now(&store).await;
    assert!(
        store
            .head(&Path::from("users/alice/log/notes.txt"))
            .await
            .is_ok(),
        "compaction leaves foreign files alone"
    );
    assert_eq!(
        vault(store).get(&[chat], Part::Body).await.unwrap(),
        vec![record(chat, 1)]
    );
}

#[tokio::test]
async fn a_damaged_snapshot_falls_back_to_an_older_one() {
    let store = memory();
    let writer = vault(store.clone());
    let (a, b) = (ChatId::new(), ChatId::new());
    writer
        .put(record(a, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    writer.compact(CompactOptions::default()).await.unwrap();
    writer
        .put(record(b, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    // A later snapshot that is garbage must not hide the log it would cover.
    raw_put(&store, &format!("users/alice/snap/{:020}", 2), b"cvs\x01{").await;
    let (feed, _) = drain(&vault(store), &Cursor::start(), 10).await;
    assert_eq!(feed.iter().map(|c| c.chat).collect::<Vec<_>>(), vec![a, b]);
}

#[tokio::test]
async fn a_hole_in_the_log_stalls_the_feed_until_it_fills() {
    let store = memory();
    let writer = vault(store.clone());
    let (a, b) = (ChatId::new(), ChatId::new());
    writer
        .put(record(a, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    writer
        .put(record(b, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    // As a file-sync tool might deliver them: slot 2 before slot 1.
    let path = Path::from(slot(1));
    let first = store.get(&path).await.unwrap().bytes().await.unwrap();
    store.delete(&path).await.unwrap();
    let reader = vault(store.clone());
    let page = reader.changes(&Cursor::start(), 10).await.unwrap();
    assert!(
        page.changes.is_empty(),
        "nothing after a hole is reported before the hole fills"
    );
    store.put(&path, first.into()).await.unwrap();
    let (feed, _) = drain(&reader, &page.cursor, 10).await;
    assert_eq!(feed.iter().map(|c| c.chat).collect::<Vec<_>>(), vec![a, b]);
}

#[tokio::test(start_paused = true)]
async fn a_writer_gives_up_retriably_when_a_taken_slot_never_shows_in_listings() {
    let inner = memory();
    let store = instrumented(inner.clone());
    let writer = vault(store.clone());
    let chat = ChatId::new();
    writer
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let other = vault(inner.clone());
    other
        .put(record(ChatId::new(), 1), PutPrecondition::Absent)
        .await
        .unwrap();
    store.hook().hide_from_listings(Path::from(slot(2)));
    let err = writer
        .put(record(chat, 2), PutPrecondition::Version(1))
        .await
        .unwrap_err();
    assert!(err.is_retriable(), "{err:?}");
    store.hook().heal();
    let (feed, _) = drain(&vault(inner), &Cursor::start(), 10).await;
    assert_eq!(feed.len(), 2, "the abandoned put left nothing visible");
}

#[tokio::test]
async fn objects_numbered_past_the_largest_slot_are_foreign_and_overflow_nothing() {
    let store = memory();
    let writer = vault(store.clone());
    let chat = ChatId::new();
    writer
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    // A snapshot and a log slot named u64::MAX, the snapshot claiming that
    // slot: `head + 1` would overflow.
    let snapshot = format!(
        "cvs\x01{}",
        r#"{"seq":18446744073709551615,"validity_from":1,"invalid":[],"chats":[]}"#
    );
    store
        .put(
            &Path::from(format!("users/alice/snap/{}", u64::MAX)),
            snapshot.into_bytes().into(),
        )
        .await
        .unwrap();
    store
        .put(&Path::from(slot(u64::MAX)), b"cvl\x01{}".to_vec().into())
        .await
        .unwrap();

    let fresh = vault(store.clone());
    assert_eq!(
        fresh.get(&[chat], Part::Body).await.unwrap(),
        vec![record(chat, 1)]
    );
    let (feed, _) = drain(&fresh, &Cursor::start(), 10).await;
    assert_eq!(feed.iter().map(|c| c.chat).collect::<Vec<_>>(), vec![chat]);
    fresh
        .put(record(chat, 2), PutPrecondition::Version(1))
        .await
        .unwrap();
    fresh
        .put_keyring("k".into(), PutPrecondition::None)
        .await
        .unwrap();
    store
        .put(
            &Path::from(format!("users/alice/keyring/{}", u64::MAX)),
            b"hostile".to_vec().into(),
        )
        .await
        .unwrap();
    assert_eq!(fresh.get_keyring().await.unwrap().unwrap().version, 1);
    assert_eq!(
        fresh
            .put_keyring("k2".into(), PutPrecondition::Version(1))
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn a_log_entry_larger_than_the_format_allows_is_skipped_unread() {
    let inner = memory();
    let store = instrumented(inner.clone());
    let writer = vault(inner.clone());
    let before = ChatId::new();
    writer
        .put(record(before, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    // Slot 2: a well-formed entry of 17 MiB (one huge inline summary).
    let huge = ChatId::new();
    let summary = "A".repeat(17 << 20);
    let entry = format!(
        "cvl\x01{{\"items\":[{{\"chat\":\"{huge}\",\"version\":1,\"write\":\"0000000000000001\",\
         \"pre\":\"absent\",\"summary_len\":{},\"summary\":\"{summary}\"}}]}}",
        summary.len() / 4 * 3
    );
    inner
        .put(&Path::from(slot(2)), entry.into_bytes().into())
        .await
        .unwrap();
    let after = ChatId::new();
    writer
        .put(record(after, 1), PutPrecondition::Absent)
        .await
        .unwrap();

    let reader = vault(store.clone());
    store.hook().reset();
    let (feed, _) = drain(&reader, &Cursor::start(), 10).await;
    assert_eq!(
        feed.iter().map(|c| c.chat).collect::<Vec<_>>(),
        vec![before, after],
        "the oversized entry counts as undecodable, for every reader alike"
    );
    assert!(
        store.hook().bytes_read() < 1 << 20,
        "the oversized entry was not downloaded ({} bytes read)",
        store.hook().bytes_read()
    );
}

#[tokio::test]
async fn a_record_over_the_readers_limit_or_a_blob_longer_than_its_entry_is_refused_unread() {
    let inner = memory();
    let store = instrumented(inner.clone());
    let writer = vault(inner.clone());
    let (big, padded) = (ChatId::new(), ChatId::new());
    let mut large = record(big, 1);
    large.body = Some(vec![7u8; 64 << 10].into());
    writer
        .put(large.clone(), PutPrecondition::Absent)
        .await
        .unwrap();
    writer
        .put(record(padded, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    // The server appends 8 MiB to the blob the log entry describes.
    let blob = blob_of(&inner, padded).await;
    let mut bytes = inner
        .get(&blob)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    bytes.extend(std::iter::repeat_n(0u8, 8 << 20));
    inner.put(&blob, bytes.into()).await.unwrap();

    let small = ObjectStoreStorage::new(
        store.clone(),
        Path::from("users/alice"),
        ObjectStoreOptions::default().with_max_record_bytes(16 << 10),
    );
    store.hook().reset();
    let refused = small.get(&[big], Part::Body).await;
    assert!(
        matches!(&refused, Err(Error::Corrupt { reason, .. }) if reason.contains("limit")),
        "{refused:?}"
    );
    let padded_read = vault(store.clone()).get(&[padded], Part::Body).await;
    assert!(
        matches!(&padded_read, Err(Error::Corrupt { what, .. }) if what.contains(&padded.to_string())),
        "{padded_read:?}"
    );
    assert!(
        store.hook().bytes_read() < 1 << 20,
        "neither blob was downloaded ({} bytes read)",
        store.hook().bytes_read()
    );
    // Within the limit, records read as ever.
    assert_eq!(
        vault(inner).get(&[big], Part::Body).await.unwrap(),
        vec![large]
    );
}

#[tokio::test]
async fn a_listing_that_repeats_itself_stops_with_a_retriable_error() {
    let inner = memory();
    let store = instrumented(inner.clone());
    vault(inner.clone())
        .put(record(ChatId::new(), 1), PutPrecondition::Absent)
        .await
        .unwrap();
    store.hook().repeat_listings(true);
    let reader = vault(store.clone());
    let polled = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reader.changes(&Cursor::start(), 10),
    )
    .await
    .expect("a repeating listing must not page forever");
    assert!(matches!(&polled, Err(e) if e.is_retriable()), "{polled:?}");
    store.hook().repeat_listings(false);
    assert_eq!(
        reader
            .changes(&Cursor::start(), 10)
            .await
            .unwrap()
            .changes
            .len(),
        1
    );
}
