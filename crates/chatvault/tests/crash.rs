//! Durability under a real crash: a child process saves messages (with
//! background sync pushing concurrently) and is killed with SIGKILL at an
//! arbitrary moment. Every save that returned before the kill must survive
//! the restart and reach another device exactly once.

use chatvault::{ChatVault, Role};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD: &str = "CHATVAULT_CRASH_CHILD";
const PASSPHRASE: &str = "crash test";

async fn open(dir: &Path, replica: &str) -> ChatVault {
    ChatVault::builder()
        .storage_url(format!("file://{}", dir.join("server").display()))
        .replica_path(dir.join(replica))
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .open()
        .await
        .expect("open")
}

/// The child: saves numbered messages forever, printing each one once its
/// save returned, while background sync pushes.
async fn save_until_killed(dir: &Path) {
    let vault = open(dir, "crashing.redb").await;
    vault
        .start_sync(Duration::from_millis(5))
        .expect("start sync");
    let chat = vault.new_chat("Crash test").await.expect("chat");
    println!("chat {}", chat.id);
    for i in 0u64.. {
        vault
            .add_message(chat.id, Role::User, format!("message {i}"))
            .await
            .expect("save");
        println!("saved {i}");
    }
}

#[tokio::test]
async fn saves_that_returned_survive_a_kill_and_sync_exactly_once() {
    if let Ok(dir) = std::env::var(CHILD) {
        save_until_killed(Path::new(&dir)).await;
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args([
            "--exact",
            "saves_that_returned_survive_a_kill_and_sync_exactly_once",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let mut chat = None;
    let mut saved = 0u64;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read");
        // libtest prints "test <name> ... " without a newline before the
        // child's first line.
        if let Some((_, id)) = line.split_once("chat ") {
            chat = Some(id.trim().parse::<chatvault::ChatId>().expect("chat id"));
        } else if let Some(n) = line.strip_prefix("saved ") {
            saved = n.parse::<u64>().expect("number") + 1;
            if saved == 40 {
                child.kill().expect("SIGKILL the child");
                break;
            }
        }
    }
    child.wait().expect("reap the child");
    let chat = chat.expect("the child created its chat");

    let restarted = open(dir.path(), "crashing.redb").await;
    let local = restarted
        .load_full_chat(chat)
        .await
        .expect("from the replica");
    let count = local.message_count() as u64;
    assert!(
        count >= saved,
        "{saved} saves returned before the kill, but the replica holds {count} messages"
    );
    restarted.sync_now().await.expect("push what was queued");
    assert_eq!(restarted.pending_changes().expect("pending"), 0);

    let other = open(dir.path(), "other.redb").await;
    other.load_sidebar().await.expect("pull");
    let seen = other.load_full_chat(chat).await.expect("on another device");
    let texts: Vec<String> = seen
        .messages()
        .iter()
        .map(|m| m.content().to_string())
        .collect();
    let expected: Vec<String> = (0..count).map(|i| format!("message {i}")).collect();
    assert_eq!(texts, expected, "every saved message, once, in order");
}
