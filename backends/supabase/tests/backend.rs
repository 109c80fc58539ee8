//! The Supabase backend against real PostgreSQL with the crate's
//! migrations, through PostgREST or the PostgREST-compatible gateway:
//! isolation by row-level security, token refresh, size limits, and the
//! commit-ordered change feed under concurrent writers.

mod common;

fn main() -> std::process::ExitCode {
    common::run(vec![
        trial!(a_user_can_neither_read_nor_write_another_users_records),
        trial!(the_anon_key_alone_reads_and_writes_nothing),
        trial!(an_expired_token_is_refreshed_once_and_the_request_retried),
        trial!(a_token_rejected_again_after_its_refresh_is_unauthorized),
        trial!(over_size_records_fail_too_large_locally_and_on_the_server),
        trial!(fifty_concurrent_writers_feed_reports_every_commit_exactly_once),
        trial!(a_writer_in_flight_holds_back_later_commits_of_the_same_user_only),
        trial!(set_returning_responses_are_capped_but_the_feed_pages_past_them),
        trial!(an_idle_poll_at_ten_thousand_chats_is_one_request_under_a_kilobyte),
        trial!(an_oversize_record_the_server_refuses_fails_alone_in_its_chunk),
        trial!(a_cursor_ahead_of_a_restored_head_restarts_the_feed),
        trial!(table_endpoints_refuse_writes_and_show_only_own_rows),
        trial!(blobs_are_bounded_on_the_server_and_the_table_refuses_writes),
    ])
}

use bytes::Bytes;
use chatvault_core::{ChatId, Cursor, Error, Part, PutPrecondition, Storage};
use chatvault_supabase::{StaticToken, MAX_RECORD_BYTES};
use chatvault_test_services::postgres::SupabaseFixture;
use common::{builder, client, record, rpc, table, ScriptedTokens};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

async fn a_user_can_neither_read_nor_write_another_users_records(
    fixture: &'static SupabaseFixture,
) {
    let (alice_id, bob_id) = (Uuid::now_v7(), Uuid::now_v7());
    let (alice, bob) = (client(fixture, alice_id), client(fixture, bob_id));
    let chat = ChatId::new();
    alice
        .put(record(chat, 1, "alice"), PutPrecondition::Absent)
        .await
        .unwrap();
    alice
        .put_keyring(
            Bytes::from_static(b"alice's key file"),
            PutPrecondition::Absent,
        )
        .await
        .unwrap();

    // Through the storage API, Bob's vault is empty.
    assert!(bob.get(&[chat], Part::Body).await.unwrap().is_empty());
    assert!(bob
        .changes(&Cursor::start(), 100)
        .await
        .unwrap()
        .changes
        .is_empty());
    assert_eq!(bob.get_keyring().await.unwrap(), None);
    // A precondition naming Alice's version finds nothing of Bob's.
    match bob
        .put(record(chat, 2, "bob"), PutPrecondition::Version(1))
        .await
    {
        Err(Error::Conflict {
            chat: c,
            current: None,
        }) => assert_eq!(c, chat),
        other => panic!("expected a conflict with no current version, got {other:?}"),
    }

    // Calling the RPCs directly with Alice's ids returns nothing of hers.
    let bob_token = fixture.user_token(bob_id, 3600);
    let (status, body) = rpc(
        fixture,
        Some(&bob_token),
        "chatvault_get",
        json!({ "ids": [chat.0], "with_bodies": true }),
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({ "records": [], "deferred": [] }))
    );
    let (status, body) = rpc(
        fixture,
        Some(&bob_token),
        "chatvault_pull",
        json!({ "since": 0, "lim": 1000 }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["changes"], json!([]));
    let (status, body) = rpc(
        fixture,
        Some(&bob_token),
        "chatvault_keyring_get",
        json!({}),
    )
    .await;
    assert_eq!((status, body), (200, Value::Null));

    // Bob writing "Alice's" chat id writes his own row; hers is untouched.
    bob.put(record(chat, 7, "bob"), PutPrecondition::None)
        .await
        .unwrap();
    let alices = alice.get(&[chat], Part::Body).await.unwrap();
    assert_eq!(alices, vec![record(chat, 1, "alice")]);
    let admin = fixture.postgres.connect().await.unwrap();
    let rows = admin
        .query(
            "select owner, version from public.chatvault_records where chat = $1 order by version",
            &[&chat.0],
        )
        .await
        .unwrap();
    let owners: Vec<(Uuid, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(owners, vec![(alice_id, 1), (bob_id, 7)]);

    // A token for Alice's id signed with another secret is refused.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": alice_id.to_string(), "role": "authenticated", "exp": 4_000_000_000u64 }),
        &jsonwebtoken::EncodingKey::from_secret(b"not the project secret"),
    )
    .unwrap();
    let (status, body) = rpc(
        fixture,
        Some(&forged),
        "chatvault_get",
        json!({ "ids": [chat.0] }),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (401, Some("PGRST301")));
    let forger = builder(fixture)
        .token_source(StaticToken::new(forged))
        .build()
        .unwrap();
    assert!(matches!(
        forger.get(&[chat], Part::Body).await,
        Err(Error::Unauthorized { .. })
    ));
}

async fn the_anon_key_alone_reads_and_writes_nothing(fixture: &'static SupabaseFixture) {
    let owner = client(fixture, Uuid::now_v7());
    let chat = ChatId::new();
    owner
        .put(record(chat, 1, "owner"), PutPrecondition::Absent)
        .await
        .unwrap();
    let push = json!({ "records": [{ "chat": ChatId::new().0, "version": 1, "summary": "eA==", "pre": "none" }] });
    let calls = [
        ("chatvault_pull", json!({ "since": 0 })),
        ("chatvault_get", json!({ "ids": [chat.0] })),
        ("chatvault_push", push),
        ("chatvault_keyring_get", json!({})),
        ("chatvault_keyring_put", json!({ "keyring": "eA==" })),
    ];
    // Without a token (role anon), and with the anon key as the bearer
    // token, as supabase-js sends it before sign-in.
    for bearer in [None, Some(fixture.anon_key.as_str())] {
        for (function, args) in &calls {
            let (status, body) = rpc(fixture, bearer, function, args.clone()).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (401, Some("42501")),
                "{function} with bearer {:?}: {body}",
                bearer.is_some()
            );
        }
    }
    let anonymous = builder(fixture)
        .token_source(StaticToken::new(fixture.anon_key.clone()))
        .build()
        .unwrap();
    assert!(matches!(
        anonymous.changes(&Cursor::start(), 10).await,
        Err(Error::Unauthorized { .. })
    ));
    assert!(matches!(
        anonymous.get(&[chat], Part::Summary).await,
        Err(Error::Unauthorized { .. })
    ));
    // Nothing was written by any of those calls.
    let admin = fixture.postgres.connect().await.unwrap();
    let anon_rows: i64 = admin
        .query_one(
            "select count(*) from public.chatvault_records where owner is null",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(anon_rows, 0);
}

async fn an_expired_token_is_refreshed_once_and_the_request_retried(
    fixture: &'static SupabaseFixture,
) {
    let user = Uuid::now_v7();
    let tokens = Arc::new(ScriptedTokens::new(
        fixture.user_token(user, -3600),
        vec![fixture.user_token(user, 3600)],
    ));
    let storage = builder(fixture)
        .shared_token_source(tokens.clone())
        .build()
        .unwrap();
    let chat = ChatId::new();
    storage
        .put(record(chat, 1, "a"), PutPrecondition::Absent)
        .await
        .unwrap();
    assert_eq!(tokens.refreshes(), 1);
    assert_eq!(
        storage.transfer_stats().requests,
        2,
        "the rejected request and its retry"
    );
    // The refreshed token keeps working without further refreshes.
    assert_eq!(
        storage.get(&[chat], Part::Body).await.unwrap(),
        vec![record(chat, 1, "a")]
    );
    assert_eq!(tokens.refreshes(), 1);
    assert_eq!(storage.transfer_stats().requests, 3);
}

async fn a_token_rejected_again_after_its_refresh_is_unauthorized(
    fixture: &'static SupabaseFixture,
) {
    let user = Uuid::now_v7();
    let tokens = Arc::new(ScriptedTokens::new(
        fixture.user_token(user, -3600),
        vec![
            fixture.user_token(user, -1800),
            fixture.user_token(user, 3600),
        ],
    ));
    let storage = builder(fixture)
        .shared_token_source(tokens.clone())
        .build()
        .unwrap();
    match storage.changes(&Cursor::start(), 10).await {
        Err(Error::Unauthorized { message }) => {
            assert!(message.contains("JWT expired"), "{message}")
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(tokens.refreshes(), 1, "exactly one refresh per request");
    assert_eq!(storage.transfer_stats().requests, 2);
}

async fn over_size_records_fail_too_large_locally_and_on_the_server(
    fixture: &'static SupabaseFixture,
) {
    let user = Uuid::now_v7();
    let storage = client(fixture, user);
    let chat = ChatId::new();
    let big = |size: usize| chatvault_core::SealedRecord {
        chat,
        version: 1,
        deleted: false,
        summary: Bytes::from_static(b"s"),
        body: Some(Bytes::from(vec![7u8; size - 1])),
    };
    // Exactly the limit fits.
    storage
        .put(big(MAX_RECORD_BYTES), PutPrecondition::Absent)
        .await
        .unwrap();
    // One byte over fails before any upload.
    let before = storage.transfer_stats().requests;
    match storage
        .put(big(MAX_RECORD_BYTES + 1), PutPrecondition::None)
        .await
    {
        Err(Error::TooLarge { size, limit }) => {
            assert_eq!((size, limit), (MAX_RECORD_BYTES + 1, MAX_RECORD_BYTES))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(storage.transfer_stats().requests, before);

    // A client configured above the server's limit is stopped by the SQL,
    // and the server's answer maps to the same error with the server's numbers.
    let loose = builder(fixture)
        .token_source(StaticToken::new(fixture.user_token(user, 3600)))
        .max_record_bytes(MAX_RECORD_BYTES * 2)
        .build()
        .unwrap();
    let mut over = big(MAX_RECORD_BYTES + 1);
    over.version = 2;
    match loose.put(over, PutPrecondition::Version(1)).await {
        Err(Error::TooLarge { size, limit }) => {
            assert_eq!((size, limit), (MAX_RECORD_BYTES + 1, MAX_RECORD_BYTES))
        }
        other => panic!("expected TooLarge from the server, got {other:?}"),
    }
    assert_eq!(loose.transfer_stats().requests, 1);
    assert_eq!(
        storage.get(&[chat], Part::Summary).await.unwrap()[0].version,
        1,
        "nothing was written"
    );

    // In a batch, only the over-size record fails.
    let small = ChatId::new();
    let results = storage
        .put_batch(vec![
            (big(MAX_RECORD_BYTES + 10), PutPrecondition::None),
            (record(small, 1, "a"), PutPrecondition::Absent),
        ])
        .await;
    assert!(matches!(results[0], Err(Error::TooLarge { .. })));
    assert!(results[1].is_ok());

    // The key file has its own limit (1 MiB), enforced in SQL as well.
    match storage
        .put_keyring(
            Bytes::from(vec![1u8; 1024 * 1024 + 1]),
            PutPrecondition::None,
        )
        .await
    {
        Err(Error::TooLarge { size, limit }) => {
            assert_eq!((size, limit), (1024 * 1024 + 1, 1024 * 1024))
        }
        other => panic!("expected TooLarge for the key file, got {other:?}"),
    }
}

/// Fifty clients of one user commit concurrently while a reader polls the
/// feed in small pages; the reader ends with every commit exactly once, each
/// chat's versions in order, and the feed's sequence numbers have no gaps.
async fn fifty_concurrent_writers_feed_reports_every_commit_exactly_once(
    fixture: &'static SupabaseFixture,
) {
    const WRITERS: usize = 50;
    const VERSIONS: u64 = 5;
    const CHATS_PER_WRITER: usize = 2;
    let user = Uuid::now_v7();
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let storage = client(fixture, user);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut cursor = Cursor::start();
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = storage.changes(&cursor, 7).await.unwrap();
                seen.extend(page.changes.iter().map(|c| (c.chat, c.version)));
                cursor = page.cursor;
                if finished && page.changes.is_empty() && !page.has_more {
                    return seen;
                }
            }
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let storage = client(fixture, user);
            tokio::spawn(async move {
                let chats: Vec<ChatId> = (0..CHATS_PER_WRITER).map(|_| ChatId::new()).collect();
                let mut committed = Vec::new();
                for version in 1..=VERSIONS {
                    for chat in &chats {
                        let precondition = if version == 1 {
                            PutPrecondition::Absent
                        } else {
                            PutPrecondition::Version(version - 1)
                        };
                        storage
                            .put(record(*chat, version, &format!("w{w}")), precondition)
                            .await
                            .unwrap();
                        committed.push((*chat, version));
                    }
                }
                committed
            })
        })
        .collect();
    let mut expected = HashSet::new();
    for writer in writers {
        expected.extend(writer.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();

    let total = WRITERS * CHATS_PER_WRITER * VERSIONS as usize;
    assert_eq!(expected.len(), total);
    assert_eq!(
        seen.len(),
        total,
        "the reader saw {} changes for {total} commits",
        seen.len()
    );
    let unique: HashSet<_> = seen.iter().copied().collect();
    assert_eq!(unique, expected, "every commit exactly once");
    let mut last: BTreeMap<ChatId, u64> = BTreeMap::new();
    for (chat, version) in &seen {
        let previous = last.insert(*chat, *version).unwrap_or(0);
        assert!(
            *version > previous,
            "chat {chat}: version {version} after {previous}"
        );
    }

    // The feed's positions are exactly 1..=total: no gaps, no repeats.
    let token = fixture.user_token(user, 3600);
    let mut seqs = Vec::new();
    let mut since = 0;
    loop {
        let (status, page) = rpc(
            fixture,
            Some(&token),
            "chatvault_pull",
            json!({ "since": since, "lim": 1000 }),
        )
        .await;
        assert_eq!(status, 200);
        seqs.extend(
            page["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["seq"].as_u64().unwrap()),
        );
        since = page["cursor"].as_u64().unwrap();
        if !page["more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
}

/// The mechanism behind the feed, step by step in SQL: while one writer of
/// a user is in flight, a second writer of that user waits for it and a
/// reader sees neither; a writer of another user does not wait.
async fn a_writer_in_flight_holds_back_later_commits_of_the_same_user_only(
    fixture: &'static SupabaseFixture,
) {
    let (user, other) = (Uuid::now_v7(), Uuid::now_v7());
    let session = |user: Uuid, name: &'static str| async move {
        let client = fixture.postgres.connect().await.unwrap();
        client
            .batch_execute(&format!(
                "set application_name = '{name}-{user}'; begin; set local role authenticated; \
                 select set_config('request.jwt.claims', '{{\"sub\":\"{user}\",\"role\":\"authenticated\"}}', true);"
            ))
            .await
            .unwrap();
        client
    };
    let push = |chat: ChatId| {
        format!(
            "select public.chatvault_push('[{{\"chat\":\"{}\",\"version\":1,\"summary\":\"eA==\",\"pre\":\"absent\"}}]')::text",
            chat.0
        )
    };
    let pull = "select public.chatvault_pull(0, 100, false)::text";
    let seqs_of = |json: &str| -> Vec<u64> {
        let v: Value = serde_json::from_str(json).unwrap();
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["seq"].as_u64().unwrap())
            .collect()
    };

    let first = session(user, "first").await;
    let one: String = first
        .query_one(&push(ChatId::new()), &[])
        .await
        .unwrap()
        .get(0);
    assert!(one.contains("\"seq\": 1"), "{one}");

    let second = session(user, "second").await;
    let second_push = tokio::spawn(async move {
        let two: String = second
            .query_one(&push(ChatId::new()), &[])
            .await
            .unwrap()
            .get(0);
        second.batch_execute("commit").await.unwrap();
        two
    });
    // Wait (bounded) until the second writer is blocked on a lock.
    let admin = fixture.postgres.connect().await.unwrap();
    let blocked_name = format!("second-{user}");
    let mut waited = 0;
    loop {
        let blocked: i64 = admin
            .query_one(
                "select count(*) from pg_stat_activity where application_name = $1 and wait_event_type = 'Lock'",
                &[&blocked_name],
            )
            .await
            .unwrap()
            .get(0);
        if blocked == 1 {
            break;
        }
        waited += 1;
        assert!(waited < 600, "the second writer never waited for the first");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A reader sees neither commit yet.
    let reader = session(user, "reader").await;
    let nothing: String = reader.query_one(pull, &[]).await.unwrap().get(0);
    assert_eq!(seqs_of(&nothing), Vec::<u64>::new());
    reader.batch_execute("commit").await.unwrap();

    // Another user's writer is not held back: it commits while both wait.
    let stranger = session(other, "stranger").await;
    let theirs = tokio::time::timeout(
        Duration::from_secs(60),
        stranger.query_one(&push(ChatId::new()), &[]),
    )
    .await
    .expect("another user's push must not wait for this user's writer")
    .unwrap();
    let theirs: String = theirs.get(0);
    assert!(theirs.contains("\"seq\": 1"), "{theirs}");
    stranger.batch_execute("commit").await.unwrap();

    // The first commits; the second then gets the next position.
    first.batch_execute("commit").await.unwrap();
    let two = second_push.await.unwrap();
    assert!(two.contains("\"seq\": 2"), "{two}");
    let reader = session(user, "reader-after").await;
    let both: String = reader.query_one(pull, &[]).await.unwrap().get(0);
    assert_eq!(seqs_of(&both), vec![1, 2]);
}

/// The gateway caps set-returning functions at max rows, like Supabase,
/// which is why the chatvault RPCs return one JSON value and page
/// explicitly: 1,500 records still come back whole, page by page.
async fn set_returning_responses_are_capped_but_the_feed_pages_past_them(
    fixture: &'static SupabaseFixture,
) {
    let admin = fixture.postgres.connect().await.unwrap();
    admin
        .batch_execute(
            "create or replace function public.cv_test_series(n integer) returns setof integer \
             language sql stable as $$ select generate_series(1, n) $$; \
             grant execute on function public.cv_test_series(integer) to authenticated;",
        )
        .await
        .unwrap();
    let token = fixture.user_token(Uuid::now_v7(), 3600);
    let (status, rows) = rpc(
        fixture,
        Some(&token),
        "cv_test_series",
        json!({ "n": 1500 }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        rows.as_array().map(Vec::len),
        Some(1000),
        "max rows cut the set"
    );

    let user = Uuid::now_v7();
    let storage = client(fixture, user);
    let chats: Vec<ChatId> = (0..1500).map(|_| ChatId::new()).collect();
    for chunk in chats.chunks(500) {
        let batch = chunk
            .iter()
            .map(|c| (record(*c, 1, "bulk"), PutPrecondition::Absent))
            .collect();
        for result in storage.put_batch(batch).await {
            result.unwrap();
        }
    }
    let mut cursor = Cursor::start();
    let mut seen = HashSet::new();
    loop {
        let page = storage.changes(&cursor, 5000).await.unwrap();
        assert!(page.changes.len() <= 1000);
        seen.extend(page.changes.iter().map(|c| c.chat));
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen.len(), 1500);
    let fetched = storage.get(&chats, Part::Summary).await.unwrap();
    assert_eq!(fetched.len(), 1500);
}

/// An idle poll does not grow with the vault: at 10,000 chats it is one
/// request, and request plus response (headers included) stay under 1 KB.
async fn an_idle_poll_at_ten_thousand_chats_is_one_request_under_a_kilobyte(
    fixture: &'static SupabaseFixture,
) {
    let user = Uuid::now_v7();
    let storage = client(fixture, user);
    let chats: Vec<ChatId> = (0..10_000).map(|_| ChatId::new()).collect();
    for chunk in chats.chunks(chatvault_supabase::MAX_BATCH) {
        let batch = chunk
            .iter()
            .map(|c| (record(*c, 1, "bulk"), PutPrecondition::Absent))
            .collect();
        for result in storage.put_batch(batch).await {
            result.unwrap();
        }
    }
    let mut cursor = Cursor::start();
    let mut seen = 0;
    loop {
        let page = storage.changes(&cursor, 1000).await.unwrap();
        seen += page.changes.len();
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen, 10_000);

    let poller = client(fixture, user);
    let idle = poller.changes(&cursor, 1000).await.unwrap();
    assert!(idle.changes.is_empty() && !idle.has_more);
    assert_eq!(idle.cursor, cursor);
    let stats = poller.transfer_stats();
    let _ = writeln!(
        std::io::stderr(),
        "idle poll at 10,000 chats: {} request, {} bytes sent, {} bytes received",
        stats.requests,
        stats.bytes_sent,
        stats.bytes_received
    );
    assert_eq!(stats.requests, 1);
    assert!(stats.bytes_sent + stats.bytes_received < 1024, "{stats:?}");
}

/// A client whose limit is above the server's sends an over-size record in
/// a chunk of twenty: the server refuses the chunk, and only that record
/// fails; its neighbours commit and the limit learned from the answer stops
/// the next over-size record before it is sent.
async fn an_oversize_record_the_server_refuses_fails_alone_in_its_chunk(
    fixture: &'static SupabaseFixture,
) {
    let user = Uuid::now_v7();
    let loose = builder(fixture)
        .token_source(StaticToken::new(fixture.user_token(user, 3600)))
        .max_record_bytes(MAX_RECORD_BYTES * 2)
        .build()
        .unwrap();
    let chats: Vec<ChatId> = (0..20).map(|_| ChatId::new()).collect();
    let oversize = 7;
    let batch = chats
        .iter()
        .enumerate()
        .map(|(i, chat)| {
            let mut r = record(*chat, 1, "batch");
            if i == oversize {
                r.body = Some(Bytes::from(vec![1u8; MAX_RECORD_BYTES + 1]));
            }
            (r, PutPrecondition::Absent)
        })
        .collect();
    let results = loose.put_batch(batch).await;
    for (i, result) in results.iter().enumerate() {
        if i == oversize {
            assert!(
                matches!(result, Err(Error::TooLarge { limit, .. }) if *limit == MAX_RECORD_BYTES),
                "{result:?}"
            );
        } else {
            assert!(result.is_ok(), "record {i}: {result:?}");
        }
    }
    let stored = loose.get(&chats, Part::Summary).await.unwrap();
    assert_eq!(stored.len(), 19);
    assert!(stored.iter().all(|r| r.chat != chats[oversize]));

    // The server's limit is now known: the next over-size record fails
    // without a request.
    let before = loose.transfer_stats().requests;
    let mut again = record(ChatId::new(), 1, "again");
    again.body = Some(Bytes::from(vec![1u8; MAX_RECORD_BYTES + 1]));
    assert!(matches!(
        loose.put(again, PutPrecondition::Absent).await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(loose.transfer_stats().requests, before);
    assert_eq!(loose.capabilities().max_record_bytes, MAX_RECORD_BYTES);
}

/// Rolls `user`'s vault back to the state after commit `keep`, as restoring
/// a backup taken then would: later records and log entries are gone and
/// the head sequence is rewound (as the superuser, triggers off).
async fn restore_to(fixture: &SupabaseFixture, user: Uuid, keep: i64) {
    let mut admin = fixture.postgres.connect().await.unwrap();
    let tx = admin.transaction().await.unwrap();
    tx.batch_execute("set local session_replication_role = replica")
        .await
        .unwrap();
    tx.execute(
        "delete from public.chatvault_records where owner = $1 and seq > $2",
        &[&user, &keep],
    )
    .await
    .unwrap();
    tx.execute(
        "delete from public.chatvault_changes where owner = $1 and seq > $2",
        &[&user, &keep],
    )
    .await
    .unwrap();
    // As a point-in-time restore would: the head row as it was then, its
    // last commit stamp included.
    tx.execute(
        "update public.chatvault_heads h set next_seq = $2::bigint + 1, last_committed_at = \
         (select c.committed_at from public.chatvault_changes c where c.owner = $1 and c.seq = $2) \
         where h.owner = $1",
        &[&user, &keep],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// After the database is restored to an earlier point, a device whose
/// cursor is past the restored head restarts the feed instead of skipping
/// the commits numbered in between, however many commits follow the
/// restore before its next poll: 2 (the head is still behind the cursor)
/// or 4 and 7 (the head has passed the cursor again, the numbers in between
/// belong to commits the device never saw).
async fn a_cursor_ahead_of_a_restored_head_restarts_the_feed(fixture: &'static SupabaseFixture) {
    for commits_after in [2, 4, 7] {
        restored_feed_restarts(fixture, commits_after).await;
    }
}

async fn restored_feed_restarts(fixture: &'static SupabaseFixture, commits_after: usize) {
    let user = Uuid::now_v7();
    let writer = client(fixture, user);
    let reader = client(fixture, user);
    let before: Vec<ChatId> = (0..5).map(|_| ChatId::new()).collect();
    for chat in &before {
        writer
            .put(record(*chat, 1, "before"), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    let page = reader.changes(&Cursor::start(), 100).await.unwrap();
    assert_eq!(page.changes.len(), 5);
    let cursor = page.cursor;

    restore_to(fixture, user, 2).await;
    let after: Vec<ChatId> = (0..commits_after).map(|_| ChatId::new()).collect();
    for chat in &after {
        writer
            .put(record(*chat, 1, "after"), PutPrecondition::Absent)
            .await
            .unwrap();
    }

    let mut seen = HashSet::new();
    let mut cursor = cursor;
    loop {
        let page = reader.changes(&cursor, 100).await.unwrap();
        seen.extend(page.changes.iter().map(|c| c.chat));
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    let expected: HashSet<ChatId> = before[..2].iter().chain(&after).copied().collect();
    assert_eq!(
        seen, expected,
        "with {commits_after} commits after the restore, the feed restarted and reported the \
         restored vault, skipping nothing"
    );
    // From the new cursor on, the feed continues normally.
    assert!(reader
        .changes(&cursor, 100)
        .await
        .unwrap()
        .changes
        .is_empty());
}

/// The RPCs are the only write path: with the user's own token, writes
/// through PostgREST's table endpoints (resetting the head sequence,
/// deleting or inserting log entries, writing records or a key file of any
/// size) are refused and change nothing; reads through them show only the
/// caller's own rows.
async fn table_endpoints_refuse_writes_and_show_only_own_rows(fixture: &'static SupabaseFixture) {
    use reqwest::Method;
    let (alice_id, bob_id) = (Uuid::now_v7(), Uuid::now_v7());
    let alice = client(fixture, alice_id);
    let chat = ChatId::new();
    for version in 1..=3 {
        alice
            .put(record(chat, version, "alice"), PutPrecondition::None)
            .await
            .unwrap();
    }
    alice
        .put_keyring(Bytes::from_static(b"key file"), PutPrecondition::Absent)
        .await
        .unwrap();
    let token = fixture.user_token(alice_id, 3600);
    let me = format!("owner=eq.{alice_id}");
    let big = format!("\\x{}", "00".repeat(3 * 1024 * 1024));
    let writes = [
        (
            Method::PATCH,
            format!("chatvault_heads?{me}"),
            Some(json!({ "next_seq": 1 })),
        ),
        (Method::DELETE, format!("chatvault_heads?{me}"), None),
        (
            Method::POST,
            "chatvault_heads".into(),
            Some(json!({ "owner": bob_id, "next_seq": 1 })),
        ),
        (Method::DELETE, format!("chatvault_changes?{me}"), None),
        (
            Method::POST,
            "chatvault_changes".into(),
            Some(
                json!({ "owner": alice_id, "seq": 99, "chat": chat.0, "version": 9, "deleted": false, "summary": big }),
            ),
        ),
        (
            Method::POST,
            "chatvault_records".into(),
            Some(
                json!({ "owner": alice_id, "chat": ChatId::new().0, "version": 1, "summary": big, "seq": 0 }),
            ),
        ),
        (
            Method::PATCH,
            format!("chatvault_records?{me}"),
            Some(json!({ "version": 99 })),
        ),
        (Method::DELETE, format!("chatvault_records?{me}"), None),
        (
            Method::PATCH,
            format!("chatvault_keyrings?{me}"),
            Some(json!({ "bytes": big, "version": 9 })),
        ),
        (Method::DELETE, format!("chatvault_keyrings?{me}"), None),
        (
            Method::POST,
            "chatvault_keyrings".into(),
            Some(json!({ "owner": alice_id, "version": 1, "bytes": big })),
        ),
    ];
    for (method, path, body) in writes {
        let (status, answer) = table(fixture, &token, method.clone(), &path, body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (403, Some("42501")),
            "{method} {path} was not refused: {answer}"
        );
    }

    // Nothing changed: the feed still has its three entries, the head its
    // position, the key file its version.
    let (status, heads) = table(
        fixture,
        &token,
        Method::GET,
        "chatvault_heads?select=next_seq",
        None,
    )
    .await;
    assert_eq!((status, heads), (200, json!([{ "next_seq": 4 }])));
    let (status, changes) = table(
        fixture,
        &token,
        Method::GET,
        "chatvault_changes?select=seq",
        None,
    )
    .await;
    // Without `order=` PostgREST (and the database) return rows in any order.
    let mut seqs: Vec<i64> = changes
        .as_array()
        .map(|rows| rows.iter().filter_map(|row| row["seq"].as_i64()).collect())
        .unwrap_or_default();
    seqs.sort_unstable();
    assert_eq!((status, seqs), (200, vec![1, 2, 3]), "{changes}");
    let (status, keyrings) = table(
        fixture,
        &token,
        Method::GET,
        "chatvault_keyrings?select=version",
        None,
    )
    .await;
    assert_eq!((status, keyrings), (200, json!([{ "version": 1 }])));
    assert_eq!(
        alice.get(&[chat], Part::Body).await.unwrap(),
        vec![record(chat, 3, "alice")]
    );

    // Bob reads none of Alice's rows through the tables, even by naming them.
    let bob = fixture.user_token(bob_id, 3600);
    for path in [
        format!("chatvault_records?chat=eq.{}", chat.0),
        format!("chatvault_changes?{me}"),
        format!("chatvault_heads?{me}"),
        format!("chatvault_keyrings?{me}"),
    ] {
        let (status, rows) = table(fixture, &bob, Method::GET, &path, None).await;
        assert_eq!((status, rows), (200, json!([])), "{path}");
    }
    // And Alice's own reads of the table work (a sanity check of the endpoint).
    let (status, rows) = table(
        fixture,
        &token,
        Method::GET,
        &format!("chatvault_records?select=chat,version&chat=eq.{}", chat.0),
        None,
    )
    .await;
    assert_eq!(
        (status, rows),
        (200, json!([{ "chat": chat.0, "version": 3 }]))
    );
}

/// Blobs: a client configured above the server's limit is stopped by the
/// SQL (`TooLarge` with the server's numbers, nothing stored); the table
/// endpoint refuses every write, so a blob can be neither changed nor
/// removed outside the RPCs, and shows each user only their own rows.
async fn blobs_are_bounded_on_the_server_and_the_table_refuses_writes(
    fixture: &'static SupabaseFixture,
) {
    use chatvault_core::BlobId;
    use reqwest::Method;
    let (alice_id, bob_id) = (Uuid::now_v7(), Uuid::now_v7());
    let alice = client(fixture, alice_id);
    let id = BlobId([0x42; 32]);
    alice
        .put_blob(id, Bytes::from_static(b"sealed"))
        .await
        .unwrap();

    let loose = builder(fixture)
        .token_source(StaticToken::new(fixture.user_token(alice_id, 3600)))
        .max_record_bytes(MAX_RECORD_BYTES * 2)
        .build()
        .unwrap();
    let over = BlobId([0x43; 32]);
    match loose
        .put_blob(over, Bytes::from(vec![1u8; MAX_RECORD_BYTES + 1]))
        .await
    {
        Err(Error::TooLarge { size, limit }) => {
            assert_eq!((size, limit), (MAX_RECORD_BYTES + 1, MAX_RECORD_BYTES))
        }
        other => panic!("expected TooLarge from the server, got {other:?}"),
    }
    assert_eq!(loose.transfer_stats().requests, 1);
    assert_eq!(alice.get_blob(over).await.unwrap(), None, "nothing stored");

    // A malformed id is refused by the SQL, not stored under some name.
    let token = fixture.user_token(alice_id, 3600);
    let (status, answer) = rpc(
        fixture,
        Some(&token),
        "chatvault_blob_put",
        json!({ "id": "not hex", "blob": "AA==" }),
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("22023")),
        "{answer}"
    );

    let me = format!("owner=eq.{alice_id}");
    let hex = format!("\\x{}", id.to_hex());
    let writes = [
        (
            Method::PATCH,
            format!("chatvault_blobs?{me}"),
            Some(json!({ "bytes": "\\x00" })),
        ),
        (Method::DELETE, format!("chatvault_blobs?{me}"), None),
        (
            Method::POST,
            "chatvault_blobs".into(),
            Some(json!({ "owner": alice_id, "id": hex, "bytes": "\\x00" })),
        ),
    ];
    for (method, path, body) in writes {
        let (status, answer) = table(fixture, &token, method.clone(), &path, body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (403, Some("42501")),
            "{method} {path} was not refused: {answer}"
        );
    }
    assert_eq!(
        alice.get_blob(id).await.unwrap(),
        Some(Bytes::from_static(b"sealed")),
        "the blob is unchanged"
    );
    let (status, rows) = table(
        fixture,
        &token,
        Method::GET,
        "chatvault_blobs?select=owner",
        None,
    )
    .await;
    assert_eq!((status, rows), (200, json!([{ "owner": alice_id }])));
    let bob = fixture.user_token(bob_id, 3600);
    let (status, rows) = table(
        fixture,
        &bob,
        Method::GET,
        &format!("chatvault_blobs?{me}"),
        None,
    )
    .await;
    assert_eq!((status, rows), (200, json!([])), "bob reads alice's blobs");
}
