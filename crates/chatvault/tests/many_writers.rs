//! Many writers: 50 devices (each its own replica and its own storage
//! handle) write one vault at the same time, each into its own chat and
//! all into one shared chat, syncing as they go. Afterwards a fresh device
//! must see every message exactly once: zero lost, zero skipped. Prints
//! saves per second (a figure for the notes, not an assertion).
//!
//! Backends: the local folder, the object-store layout over
//! `object_store`'s in-memory store (50 handles on one store), S3 (the
//! endpoint from `CHATVAULT_TEST_S3_ENDPOINT`, else a container, else the
//! in-process stand-in, which lacks atomic create-if-absent: reported as
//! skipped there) and Supabase (PostgreSQL with the migrations behind the
//! PostgREST-compatible gateway, 50 clients of one user).
//! `CHATVAULT_WRITERS` and `CHATVAULT_WRITES` change the 50 writers and
//! 4 saves each (`just many-writers` runs 10 each).

use chatvault::{ChatId, ChatVault, DynStorage, Role};
use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
use chatvault_supabase::{StaticToken, SupabaseStorage, MIGRATIONS};
use chatvault_test_services::postgres::SupabaseFixture;
use chatvault_test_services::s3::S3Fixture;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const PASSPHRASE: &str = "many writers";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

async fn open(storage: DynStorage, replica: &Path) -> ChatVault {
    ChatVault::builder()
        .storage(storage)
        .replica_path(replica)
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .open()
        .await
        .expect("open a writer")
}

async fn texts(vault: &ChatVault, chat: ChatId) -> Vec<String> {
    vault
        .load_full_chat(chat)
        .await
        .expect("load")
        .messages()
        .iter()
        .map(|m| m.content().to_string())
        .collect()
}

/// Saves until the outbox is empty: conflicts with the other writers are
/// merged and pushed again.
async fn drain(vault: &ChatVault, who: usize) {
    for _ in 0..500 {
        vault.sync_now().await.expect("sync");
        if vault.pending_changes().expect("pending") == 0 {
            return;
        }
    }
    panic!("writer {who} could not push its changes in 500 rounds");
}

async fn many_writers(name: &str, handle: impl Fn() -> DynStorage, dir: &Path) {
    let writers = env("CHATVAULT_WRITERS", 50);
    let writes = env("CHATVAULT_WRITES", 4);
    let first = open(handle(), &dir.join("w0.redb")).await;
    let shared = first.new_chat("shared").await.expect("chat").id;
    first.sync_now().await.expect("push");
    let mut vaults = vec![first];
    for w in 1..writers {
        let vault = open(handle(), &dir.join(format!("w{w}.redb"))).await;
        vault.sync_now().await.expect("pull the shared chat");
        vaults.push(vault);
    }

    let started = Instant::now();
    let work = vaults.iter().enumerate().map(|(w, vault)| async move {
        let own = vault
            .new_chat(format!("writer {w}"))
            .await
            .expect("chat")
            .id;
        for i in 0..writes {
            let chat = if i % 2 == 0 { own } else { shared };
            vault
                .add_message(chat, Role::User, format!("w{w} m{i}"))
                .await
                .expect("save");
            // Errors here are conflicts being resolved or a busy backend;
            // the outbox keeps the change and `drain` finishes it.
            let _ = vault.sync_now().await;
        }
        drain(vault, w).await;
        own
    });
    let own_chats = futures::future::join_all(work).await;
    let elapsed = started.elapsed();
    let saves = writers * (writes + 1);
    println!(
        "many writers on {name}: {writers} writers x {writes} messages (+1 chat each) = {saves} saves \
         pushed in {elapsed:.2?}: {:.1} saves/s",
        saves as f64 / elapsed.as_secs_f64()
    );

    let reader = open(handle(), &dir.join("reader.redb")).await;
    let report = reader.sync_now().await.expect("pull");
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let mut expected_shared = BTreeSet::new();
    for (w, own) in own_chats.iter().enumerate() {
        let expected: Vec<String> = (0..writes)
            .filter(|i| i % 2 == 0)
            .map(|i| format!("w{w} m{i}"))
            .collect();
        assert_eq!(
            texts(&reader, *own).await,
            expected,
            "{name}: writer {w}'s chat"
        );
        expected_shared.extend(
            (0..writes)
                .filter(|i| i % 2 == 1)
                .map(|i| format!("w{w} m{i}")),
        );
    }
    let seen = texts(&reader, shared).await;
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "{name}: no message twice");
    assert_eq!(
        unique, expected_shared,
        "{name}: every writer's shared messages"
    );
    assert_eq!(reader.sidebar().len(), writers + 1, "{name}: every chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_writers_on_a_folder_lose_and_skip_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = dir.path().join("server");
    many_writers(
        "the local folder",
        || Arc::new(chatvault_fs::open(&server).expect("open the folder")),
        dir.path(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_writers_on_the_object_store_layout_lose_and_skip_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    many_writers(
        "object-store InMemory",
        || {
            Arc::new(ObjectStoreStorage::new(
                store.clone(),
                object_store::path::Path::from("vault"),
                ObjectStoreOptions::default(),
            ))
        },
        dir.path(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_writers_on_s3_lose_and_skip_nothing() {
    let fixture = S3Fixture::start().await.expect("an S3 service");
    println!("s3 served by {}", fixture.describe());
    if !fixture.atomic_conditional_put {
        println!(
            "SKIPPED many writers over S3: {} has no atomic create-if-absent, which concurrent \
             writers need",
            fixture.describe()
        );
        fixture.stop().await;
        return;
    }
    let location = fixture
        .vault(&format!(
            "many-writers-{}",
            chatvault_test_services::run_id()
        ))
        .await
        .expect("vault location");
    let dir = tempfile::tempdir().expect("tempdir");
    many_writers(
        "S3",
        || {
            Arc::new(
                chatvault_s3::S3StorageBuilder::new()
                    .with_endpoint(&fixture.endpoint)
                    .with_region(&fixture.region)
                    .with_credentials(&fixture.access_key_id, &fixture.secret_access_key)
                    .with_bucket(location.bucket.clone())
                    .with_prefix(location.prefix.clone())
                    .with_atomic_conditional_put(true)
                    .build()
                    .expect("S3 storage"),
            )
        },
        dir.path(),
    )
    .await;
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_writers_on_supabase_lose_and_skip_nothing() {
    let fixture = match SupabaseFixture::shared(MIGRATIONS).await {
        Ok(fixture) => fixture,
        Err(e) => panic!("this test needs PostgreSQL (install postgresql-15): {e}"),
    };
    let user = uuid::Uuid::now_v7();
    let dir = tempfile::tempdir().expect("tempdir");
    many_writers(
        "Supabase",
        || {
            Arc::new(
                SupabaseStorage::builder(&format!("supabase+{}", fixture.url))
                    .expect("fixture URL")
                    .anon_key(fixture.anon_key.clone())
                    .token_source(StaticToken::new(fixture.user_token(user, 3600)))
                    .build()
                    .expect("Supabase client"),
            )
        },
        dir.path(),
    )
    .await;
}
