//! A streamed reply (an assistant message rewritten token by token) costs one
//! local write per token and one pushed version per sync round, not one
//! version per token: the outbox keeps one entry per chat, naming its latest
//! state, so a push always sends the newest text and skips the rest.

use chatvault::core::Cursor;
use chatvault::{ChatVault, DynStorage, Role};
use chatvault_conformance::layers::{CountingStorage, Op};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn folder(dir: &Path) -> DynStorage {
    Arc::new(chatvault_fs::open(dir.join("server")).expect("open the folder backend"))
}

async fn open(storage: DynStorage, replica: &Path) -> ChatVault {
    ChatVault::builder()
        .storage(storage)
        .replica_path(replica)
        .passphrase("streaming tests")
        .scrypt_work_factor(4)
        .open()
        .await
        .expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_streamed_in_a_thousand_edits_pushes_at_most_one_version_per_round() {
    const TOKENS: usize = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let counting = Arc::new(CountingStorage::new(folder(dir.path())));
    let writer = open(counting.clone(), &dir.path().join("writer.redb")).await;
    writer
        .start_sync(Duration::from_millis(50))
        .expect("background sync");
    let chat = writer.new_chat("Streamed").await.expect("save");
    let reply = writer
        .add_message(chat.id, Role::Assistant, "")
        .await
        .expect("empty reply");

    let started = Instant::now();
    let mut text = String::new();
    for i in 0..TOKENS {
        text.push_str(&format!("token{i} "));
        writer
            .edit_message(chat.id, reply, text.clone())
            .await
            .expect("edit");
    }
    let local_writes = started.elapsed();
    for _ in 0..1000 {
        if writer.pending_changes().expect("outbox") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(writer.pending_changes().expect("outbox"), 0, "pushed");
    writer.stop_sync().await;

    // Every version of the chat the server's change feed ever recorded.
    let server = folder(dir.path());
    let mut versions = 0;
    let mut cursor = Cursor::start();
    loop {
        let page = server.changes(&cursor, 10_000).await.expect("changes");
        versions += page.changes.iter().filter(|c| c.chat == chat.id).count();
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    let push_rounds = counting.calls(Op::PutBatch) + counting.calls(Op::Put);
    println!(
        "{TOKENS} edits: {local_writes:?} of local writes ({:?} each); \
         {versions} versions on the server; {push_rounds} push rounds",
        local_writes / TOKENS as u32
    );
    assert!(
        versions as u64 <= push_rounds,
        "{versions} versions on the server for {push_rounds} push rounds"
    );
    assert!(
        versions < TOKENS,
        "every edit became a version on the server ({versions})"
    );

    let reader = open(folder(dir.path()), &dir.path().join("reader.redb")).await;
    reader.sync_now().await.expect("pull");
    let on_reader = reader.load_full_chat(chat.id).await.expect("load");
    assert_eq!(on_reader.messages()[0].content(), text);
    let on_writer = writer.load_full_chat(chat.id).await.expect("load");
    assert_eq!(*on_reader, *on_writer);
}
