//! The Storage contract on `InMemory`: preconditions, tombstones, parts,
//! paging, keyring.

mod common;

use bytes::Bytes;
use chatvault_core::StorageExt;
use chatvault_core::{ChatId, Cursor, Error, Part, PutPrecondition, Storage};
use common::{drain, memory, record, tombstone, vault};

#[tokio::test]
async fn absent_precondition_commits_once_and_reports_the_stored_version() {
    let storage = vault(memory());
    let chat = ChatId::new();
    storage
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let err = storage
        .put(record(chat, 2), PutPrecondition::Absent)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { current: Some(1), chat: c } if c == chat),
        "{err:?}"
    );
}

#[tokio::test]
async fn version_precondition_must_name_the_stored_version() {
    let storage = vault(memory());
    let chat = ChatId::new();
    let err = storage
        .put(record(chat, 2), PutPrecondition::Version(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { current: None, .. }),
        "{err:?}"
    );
    storage
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    storage
        .put(record(chat, 2), PutPrecondition::Version(1))
        .await
        .unwrap();
    let err = storage
        .put(record(chat, 3), PutPrecondition::Version(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                current: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        storage.get(&[chat], Part::Body).await.unwrap(),
        vec![record(chat, 2)]
    );
}

#[tokio::test]
async fn versions_only_go_up_whatever_the_precondition() {
    let storage = vault(memory());
    let chat = ChatId::new();
    storage
        .put(record(chat, 5), PutPrecondition::None)
        .await
        .unwrap();
    for stale in [5, 4] {
        let err = storage
            .put(record(chat, stale), PutPrecondition::None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Conflict {
                    current: Some(5),
                    ..
                }
            ),
            "{err:?}"
        );
    }
    storage
        .put(record(chat, 9), PutPrecondition::None)
        .await
        .unwrap();
    assert_eq!(
        storage.get(&[chat], Part::Summary).await.unwrap()[0].version,
        9
    );
}

#[tokio::test]
async fn a_conflict_seen_by_a_stale_handle_is_checked_against_the_real_head() {
    let store = memory();
    let (laptop, phone) = (vault(store.clone()), vault(store));
    let chat = ChatId::new();
    laptop
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    // The phone's index is empty until it reads the log; its precondition
    // must still be judged against what the laptop committed.
    phone
        .put(record(chat, 2), PutPrecondition::Version(1))
        .await
        .unwrap();
    let err = laptop
        .put(record(chat, 2), PutPrecondition::Version(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                current: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn tombstones_are_reported_by_changes_and_get() {
    let storage = vault(memory());
    let chat = ChatId::new();
    storage
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    storage
        .delete(
            chat,
            2,
            Bytes::from_static(b"gone"),
            PutPrecondition::Version(1),
        )
        .await
        .unwrap();
    let (changes, _) = drain(&storage, &Cursor::start(), 10).await;
    assert_eq!(changes.len(), 2);
    assert!(changes[1].deleted && changes[1].version == 2);
    assert_eq!(changes[1].summary.as_deref(), Some(&b"gone"[..]));
    let got = storage.get(&[chat], Part::Body).await.unwrap();
    assert_eq!(
        (got[0].deleted, got[0].version, got[0].body.clone()),
        (true, 2, None)
    );
    let err = storage
        .put(record(chat, 3), PutPrecondition::Absent)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                current: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_tombstone_with_a_body_is_invalid_input() {
    let storage = vault(memory());
    let mut bad = tombstone(ChatId::new(), 1);
    bad.body = Some(Bytes::from_static(b"x"));
    assert!(matches!(
        storage.put(bad, PutPrecondition::None).await,
        Err(Error::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn summary_reads_leave_bodies_out_and_missing_ids_are_skipped() {
    let storage = vault(memory());
    let (a, b, missing) = (ChatId::new(), ChatId::new(), ChatId::new());
    storage
        .put(record(a, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    storage
        .put(record(b, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let mut got = storage
        .get(&[a, missing, b, a], Part::Summary)
        .await
        .unwrap();
    got.sort_by_key(|r| r.chat);
    let mut want = vec![record(a, 1), record(b, 1)];
    want.sort_by_key(|r| r.chat);
    for w in &mut want {
        w.body = None;
    }
    assert_eq!(got, want);
}

#[tokio::test]
async fn records_over_the_limit_are_too_large() {
    let storage = chatvault_object_store::ObjectStoreStorage::new(
        memory(),
        object_store::path::Path::from("v"),
        chatvault_object_store::ObjectStoreOptions::default().with_max_record_bytes(100),
    );
    let mut big = record(ChatId::new(), 1);
    big.body = Some(Bytes::from(vec![0u8; 200]));
    assert!(matches!(
        storage.put(big, PutPrecondition::None).await,
        Err(Error::TooLarge { limit: 100, .. })
    ));
    assert_eq!(storage.capabilities().max_record_bytes, 100);
}

#[tokio::test]
async fn pages_respect_the_limit_and_never_repeat_or_skip() {
    let storage = vault(memory());
    let chats: Vec<ChatId> = (0..23).map(|_| ChatId::new()).collect();
    for &chat in &chats {
        storage
            .put(record(chat, 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    let (changes, cursor) = drain(&storage, &Cursor::start(), 5).await;
    assert_eq!(changes.iter().map(|c| c.chat).collect::<Vec<_>>(), chats);
    assert!(changes.iter().all(|c| c.summary.is_some()));
    assert!(storage
        .changes(&cursor, 5)
        .await
        .unwrap()
        .changes
        .is_empty());
}

#[tokio::test]
async fn a_batch_commits_in_one_entry_and_pages_can_end_inside_it() {
    let storage = vault(memory());
    let chats: Vec<ChatId> = (0..7).map(|_| ChatId::new()).collect();
    let mut batch: Vec<_> = chats
        .iter()
        .map(|&c| (record(c, 1), PutPrecondition::Absent))
        .collect();
    // Same chat twice in one batch: the second sees the first.
    batch.push((record(chats[0], 2), PutPrecondition::Version(1)));
    batch.push((record(chats[1], 1), PutPrecondition::Absent));
    let results = storage.put_batch(batch).await;
    assert!(results[..8].iter().all(Result::is_ok), "{results:?}");
    assert!(matches!(
        results[8],
        Err(Error::Conflict {
            current: Some(1),
            ..
        })
    ));

    let (changes, _) = drain(&storage, &Cursor::start(), 3).await;
    let seen: Vec<(ChatId, u64)> = changes.iter().map(|c| (c.chat, c.version)).collect();
    let mut want: Vec<(ChatId, u64)> = chats.iter().map(|&c| (c, 1)).collect();
    want.push((chats[0], 2));
    assert_eq!(seen, want);
}

#[tokio::test]
async fn keyring_versions_follow_the_precondition_rules() {
    let storage = vault(memory());
    assert_eq!(storage.get_keyring().await.unwrap(), None);
    let err = storage
        .put_keyring(Bytes::from_static(b"k0"), PutPrecondition::Version(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { current: None, .. }),
        "{err:?}"
    );
    assert_eq!(
        storage
            .put_keyring(Bytes::from_static(b"k1"), PutPrecondition::Absent)
            .await
            .unwrap(),
        1
    );
    let err = storage
        .put_keyring(Bytes::from_static(b"k"), PutPrecondition::Absent)
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
        "{err:?}"
    );
    assert_eq!(
        storage
            .put_keyring(Bytes::from_static(b"k2"), PutPrecondition::Version(1))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        storage
            .put_keyring(Bytes::from_static(b"k3"), PutPrecondition::None)
            .await
            .unwrap(),
        3
    );
    let keyring = storage.get_keyring().await.unwrap().unwrap();
    assert_eq!((keyring.version, &keyring.bytes[..]), (3, &b"k3"[..]));
}

#[tokio::test]
async fn vaults_under_different_prefixes_do_not_see_each_other() {
    let store = memory();
    let alice = vault(store.clone());
    let bob = chatvault_object_store::ObjectStoreStorage::new(
        store,
        object_store::path::Path::from("users/bob"),
        Default::default(),
    );
    let chat = ChatId::new();
    alice
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    assert!(bob
        .changes(&Cursor::start(), 10)
        .await
        .unwrap()
        .changes
        .is_empty());
    assert!(bob.get(&[chat], Part::Body).await.unwrap().is_empty());
    bob.put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_cursor_from_elsewhere_is_invalid_input() {
    let storage = vault(memory());
    let err = storage
        .changes(&Cursor("tok_123".into()), 10)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
}

#[tokio::test]
async fn a_cursor_past_the_end_restarts_the_feed() {
    let storage = vault(memory());
    let chat = ChatId::new();
    storage
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let page = storage.changes(&Cursor("500".into()), 10).await.unwrap();
    assert_eq!(
        page.changes.iter().map(|c| c.chat).collect::<Vec<_>>(),
        vec![chat]
    );
}

#[tokio::test]
async fn capabilities_describe_the_layout() {
    let caps = vault(memory()).capabilities();
    assert!(caps.inline_summaries && caps.atomic_preconditions && !caps.notifications);
    assert_eq!(caps.max_record_bytes, 16 << 20);
}
