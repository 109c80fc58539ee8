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

/// The version of `chat` this device's replica holds.
fn local_version(vault: &ChatVault, chat: chatvault::ChatId) -> Option<u64> {
    vault
        .engine()
        .replica()
        .header(chat)
        .expect("header")
        .map(|h| h.version)
}

/// Bytes in the stream journal beside `replica`.
fn journal_len(replica: &Path) -> u64 {
    let mut name = replica.file_name().expect("name").to_owned();
    name.push(".journal");
    std::fs::metadata(replica.with_file_name(name)).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_streamed_into_a_long_chat_writes_the_token_not_the_chat() {
    const MESSAGES: usize = 1000;
    const TOKENS: usize = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = dir.path().join("writer.redb");
    let writer = open(folder(dir.path()), &replica).await;
    let chat = writer.new_chat("Long").await.expect("chat").id;
    let mut long = (*writer.load_full_chat(chat).await.expect("load")).clone();
    for i in 0..MESSAGES {
        long.add_message(
            Role::User,
            format!("{i:04} {}", "x".repeat(290)),
            writer.engine().clock().tick(),
        );
    }
    writer.save_chat(long).await.expect("save");
    writer.sync_now().await.expect("push");
    let reply = writer
        .add_message(chat, Role::Assistant, "")
        .await
        .expect("empty reply");
    let replica_before = std::fs::metadata(&replica).expect("replica").len();
    let version_before = local_version(&writer, chat);

    let mut text = String::new();
    let mut largest = 0;
    for i in 0..TOKENS {
        let token = format!("tok{i} ");
        let before = journal_len(&replica);
        writer
            .append_to_message(chat, reply, token.clone())
            .await
            .expect("append");
        largest = largest.max(journal_len(&replica) - before);
        text.push_str(&token);
        // Memory shows every token at once.
        let shown = writer.load_full_chat(chat).await.expect("load");
        assert_eq!(shown.messages().last().expect("reply").content(), text);
    }
    println!(
        "largest journal write per token: {largest} bytes; replica file {} -> {} bytes",
        replica_before,
        std::fs::metadata(&replica).expect("replica").len()
    );
    assert!(
        largest < 1024,
        "a token wrote {largest} bytes to the journal"
    );
    assert_eq!(
        local_version(&writer, chat),
        version_before,
        "no new sealed version of the chat per token"
    );

    // Folded once: one new version, pushed, seen by another device.
    writer.flush_streams().await.expect("fold");
    assert_eq!(
        journal_len(&replica),
        0,
        "an emptied journal after the fold"
    );
    assert_eq!(local_version(&writer, chat), version_before.map(|v| v + 1));
    writer.sync_now().await.expect("push");
    let reader = open(folder(dir.path()), &dir.path().join("reader.redb")).await;
    reader.sync_now().await.expect("pull");
    let seen = reader.load_full_chat(chat).await.expect("load");
    assert_eq!(seen.messages().len(), MESSAGES + 1);
    assert_eq!(seen.messages().last().expect("reply").content(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_edit_of_the_chat_folds_the_stream_first_and_loses_no_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = dir.path().join("writer.redb");
    let writer = open(folder(dir.path()), &replica).await;
    let chat = writer.new_chat("Edits").await.expect("chat").id;
    let reply = writer
        .add_message(chat, Role::Assistant, "")
        .await
        .expect("reply");
    for token in ["one ", "two ", "three"] {
        writer
            .append_to_message(chat, reply, token)
            .await
            .expect("append");
    }
    writer.rename(chat, "Renamed").await.expect("rename");
    writer.sync_now().await.expect("push");
    let reader = open(folder(dir.path()), &dir.path().join("reader.redb")).await;
    reader.sync_now().await.expect("pull");
    let seen = reader.load_full_chat(chat).await.expect("load");
    assert_eq!(seen.title(), "Renamed");
    assert_eq!(seen.messages()[0].content(), "one two three");
    // Appending to a message that does not exist is NotFound, not a panic.
    let missing = chatvault::MessageId::new();
    assert!(matches!(
        writer.append_to_message(chat, missing, "x").await,
        Err(chatvault::Error::NotFound { .. })
    ));
}

const STREAM_CHILD: &str = "CHATVAULT_STREAM_CRASH_CHILD";

/// The child: streams numbered tokens into one reply forever, printing
/// each once its append returned.
async fn stream_until_killed(dir: &Path) {
    let vault = open(folder(dir), &dir.join("crashing.redb")).await;
    let chat = vault.new_chat("Crash").await.expect("chat");
    let reply = vault
        .add_message(chat.id, Role::Assistant, "")
        .await
        .expect("reply");
    println!("chat {} {}", chat.id, reply);
    for i in 0u64.. {
        vault
            .append_to_message(chat.id, reply, format!("t{i} "))
            .await
            .expect("append");
        println!("appended {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_returned_survive_a_kill_mid_stream() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    if let Ok(dir) = std::env::var(STREAM_CHILD) {
        stream_until_killed(Path::new(&dir)).await;
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.subsec_nanos() as u64);
    let kill_after = 20 + seed % 60;
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args([
            "--exact",
            "tokens_that_returned_survive_a_kill_mid_stream",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(STREAM_CHILD, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let mut ids = None;
    let mut acked = 0u64;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read");
        if let Some((_, rest)) = line.split_once("chat ") {
            let mut parts = rest.split_whitespace();
            let chat: chatvault::ChatId = parts.next().expect("chat").parse().expect("chat id");
            let reply: chatvault::MessageId =
                parts.next().expect("reply").parse().expect("message id");
            ids = Some((chat, reply));
        } else if let Some(n) = line.strip_prefix("appended ") {
            acked = n.parse::<u64>().expect("number") + 1;
            if acked == kill_after {
                child.kill().expect("SIGKILL the child");
                break;
            }
        }
    }
    child.wait().expect("reap the child");
    let (chat, reply) = ids.expect("the child made its chat");
    let replica = dir.path().join("crashing.redb");
    assert!(
        journal_len(&replica) > 0,
        "the kill left tokens in the journal"
    );
    let vault = open(folder(dir.path()), &replica).await;
    assert_eq!(journal_len(&replica), 0, "reopening folded the journal");
    let state = vault.load_full_chat(chat).await.expect("load");
    let content = state
        .messages
        .get(&reply)
        .expect("the reply")
        .content()
        .to_string();
    let expected: String = (0..acked).map(|i| format!("t{i} ")).collect();
    let one_more: String = (0..=acked).map(|i| format!("t{i} ")).collect();
    assert!(
        content == expected || content == one_more,
        "after a kill at token {acked} (seed {seed}): {content:?}"
    );
    // Recovered by folding: pushed like any change, nothing journaled.
    vault.sync_now().await.expect("push");
    let reader = open(folder(dir.path()), &dir.path().join("reader.redb")).await;
    reader.sync_now().await.expect("pull");
    let seen = reader.load_full_chat(chat).await.expect("load");
    assert_eq!(seen.messages[&reply].content(), content);
}
