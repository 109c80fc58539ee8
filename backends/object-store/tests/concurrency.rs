//! Writers racing for log slots from separate handles (devices) on one store.

mod common;

use chatvault_core::{ChatId, Cursor, Error, PutPrecondition, Storage};
use common::{drain, memory, record, vault};
use futures::future::join_all;
use object_store::path::Path;
use std::collections::HashMap;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_each_commit_exactly_once_in_order_without_gaps() {
    const WRITERS: usize = 8;
    const PUTS: u64 = 25;
    let store = memory();
    let tasks = (0..WRITERS).map(|_| {
        let storage = Arc::new(vault(store.clone()));
        tokio::spawn(async move {
            let chat = ChatId::new();
            for version in 1..=PUTS {
                let pre = if version == 1 {
                    PutPrecondition::Absent
                } else {
                    PutPrecondition::Version(version - 1)
                };
                storage.put(record(chat, version), pre).await.expect("put");
            }
            chat
        })
    });
    let chats: Vec<ChatId> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();

    let reader = vault(store.clone());
    let (changes, _) = drain(&reader, &Cursor::start(), 17).await;
    assert_eq!(
        changes.len(),
        WRITERS * PUTS as usize,
        "every commit reported exactly once"
    );
    let mut last: HashMap<ChatId, u64> = HashMap::new();
    for change in &changes {
        let previous = last.insert(change.chat, change.version).unwrap_or(0);
        assert_eq!(
            change.version,
            previous + 1,
            "versions of a chat appear in commit order"
        );
    }
    assert_eq!(last.len(), chats.len());

    let slots: Vec<String> = {
        use futures::TryStreamExt;
        let listed: Vec<_> = store
            .list(Some(&Path::from("users/alice/log")))
            .try_collect()
            .await
            .unwrap();
        let mut names: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
        names.sort();
        names
    };
    let expected: Vec<String> = (1..=WRITERS as u64 * PUTS)
        .map(|seq| format!("users/alice/log/{seq:020}"))
        .collect();
    assert_eq!(slots, expected, "slots 1..=N, no gaps, nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_racing_absent_puts_exactly_one_commits() {
    let store = memory();
    let chat = ChatId::new();
    let handles: Vec<_> = (0..10).map(|_| Arc::new(vault(store.clone()))).collect();
    let results = join_all(handles.iter().enumerate().map(|(i, h)| {
        let h = Arc::clone(h);
        tokio::spawn(async move {
            let mut r = record(chat, 1);
            r.summary = format!("writer {i}").into();
            h.put(r, PutPrecondition::Absent).await
        })
    }))
    .await;
    let results: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
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
    }
    let (changes, _) = drain(&vault(store), &Cursor::start(), 100).await;
    assert_eq!(changes.len(), 1, "losers are invisible");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_version_puts_on_one_chat_have_one_winner_per_version() {
    let store = memory();
    let chat = ChatId::new();
    vault(store.clone())
        .put(record(chat, 1), PutPrecondition::Absent)
        .await
        .unwrap();
    let handles: Vec<_> = (0..6).map(|_| Arc::new(vault(store.clone()))).collect();
    // Each writer does fetch-merge-retry like the engine: on a conflict it
    // builds on the version it was told about.
    let tasks = handles.iter().map(|h| {
        let h = Arc::clone(h);
        tokio::spawn(async move {
            let mut base = 1;
            let mut wins = 0;
            while wins < 5 {
                match h
                    .put(record(chat, base + 1), PutPrecondition::Version(base))
                    .await
                {
                    Ok(()) => {
                        wins += 1;
                        base += 1;
                    }
                    Err(Error::Conflict {
                        current: Some(v), ..
                    }) => base = v,
                    Err(e) => panic!("{e:?}"),
                }
            }
        })
    });
    for t in join_all(tasks).await {
        t.unwrap();
    }
    let (changes, _) = drain(&vault(store), &Cursor::start(), 1000).await;
    let versions: Vec<u64> = changes.iter().map(|c| c.version).collect();
    assert_eq!(
        versions,
        (1..=31).collect::<Vec<_>>(),
        "one commit per version, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_polling_during_writes_never_misses_a_commit() {
    let store = memory();
    let writer = Arc::new(vault(store.clone()));
    let reader = vault(store);
    let writing = {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            let mut chats = Vec::new();
            for _ in 0..200 {
                let chat = ChatId::new();
                writer
                    .put(record(chat, 1), PutPrecondition::Absent)
                    .await
                    .unwrap();
                chats.push(chat);
            }
            chats
        })
    };
    let mut cursor = Cursor::start();
    let mut seen = Vec::new();
    while !writing.is_finished() {
        let page = reader.changes(&cursor, 7).await.unwrap();
        seen.extend(page.changes.into_iter().map(|c| c.chat));
        cursor = page.cursor;
        tokio::task::yield_now().await;
    }
    let written = writing.await.unwrap();
    let (rest, _) = drain(&reader, &cursor, 7).await;
    seen.extend(rest.into_iter().map(|c| c.chat));
    assert_eq!(seen, written);
}
