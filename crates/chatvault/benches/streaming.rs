//! A streamed reply into a 1,000-message chat: what each token costs
//! locally. `append_to_message` (the stream journal, docs/design.md §8.5)
//! against `edit_message` with the growing text (a whole-chat re-seal and
//! replica commit per token, how a stream was written before), on the same
//! chat shape in the same run. Prints one table: bytes the process wrote
//! (`wchar` of /proc/self/io: every write system call, page writes of the
//! replica included), bytes the payload added (journal file, or replica
//! file growth), and time per token. No target is asserted here;
//! BENCHMARKS.md holds the figures.
//!
//! `cargo bench -p chatvault --bench streaming [-- --tokens N --messages N]`

use chatvault::{ChatId, ChatVault, MessageId, Role};
use std::path::Path;
use std::time::{Duration, Instant};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes this process handed to write system calls so far.
fn wchar() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

async fn long_chat(dir: &Path, name: &str, messages: usize) -> (ChatVault, ChatId, MessageId) {
    let vault = ChatVault::builder()
        .storage_url(format!("file://{}", dir.join("server").display()))
        .replica_path(dir.join(name))
        .passphrase("streaming bench")
        .scrypt_work_factor(4)
        .open()
        .await
        .expect("open");
    let chat = vault.new_chat("Long").await.expect("chat").id;
    let mut state = (*vault.load_full_chat(chat).await.expect("load")).clone();
    for i in 0..messages {
        state.add_message(
            Role::User,
            format!("{i:04} {}", "x".repeat(290)),
            vault.engine().clock().tick(),
        );
    }
    vault.save_chat(state).await.expect("save");
    let reply = vault
        .add_message(chat, Role::Assistant, "")
        .await
        .expect("reply");
    (vault, chat, reply)
}

struct Row {
    wrote: u64,
    payload: u64,
    took: Duration,
}

#[tokio::main]
async fn main() {
    let tokens = arg("--tokens", 300);
    let messages = arg("--messages", 1000);
    let dir = tempfile::tempdir().expect("tempdir");

    // Baseline: the whole text rewritten per token.
    let (vault, chat, reply) = long_chat(dir.path(), "edit.redb", messages).await;
    let replica = dir.path().join("edit.redb");
    let (w0, f0, t0) = (wchar(), file_len(&replica), Instant::now());
    let mut text = String::new();
    for i in 0..tokens {
        text.push_str(&format!("tok{i} "));
        vault
            .edit_message(chat, reply, text.clone())
            .await
            .expect("edit");
    }
    let edit = Row {
        wrote: wchar() - w0,
        payload: file_len(&replica).saturating_sub(f0),
        took: t0.elapsed(),
    };
    drop(vault);

    // The stream journal.
    let (vault, chat, reply) = long_chat(dir.path(), "append.redb", messages).await;
    let journal = dir.path().join("append.redb.journal");
    let (w0, t0) = (wchar(), Instant::now());
    let mut payload = 0;
    for i in 0..tokens {
        let before = file_len(&journal);
        vault
            .append_to_message(chat, reply, format!("tok{i} "))
            .await
            .expect("append");
        payload += file_len(&journal) - before;
    }
    let append = Row {
        wrote: wchar() - w0,
        payload,
        took: t0.elapsed(),
    };
    let (w0, t0) = (wchar(), Instant::now());
    vault.flush_streams().await.expect("fold");
    let fold = Row {
        wrote: wchar() - w0,
        payload: 0,
        took: t0.elapsed(),
    };

    let per = |bytes: u64| bytes as f64 / tokens as f64;
    println!(
        "\nstreaming {tokens} tokens into a {messages}-message chat (folder backend, no sync)\n"
    );
    println!("| mode | bytes written per token (wchar) | payload per token | time per token |");
    println!("|---|---|---|---|");
    println!(
        "| edit_message, whole text per token (baseline) | {:.0} B | {:.0} B (replica growth) | {:.2} ms |",
        per(edit.wrote),
        per(edit.payload),
        edit.took.as_secs_f64() * 1e3 / tokens as f64
    );
    println!(
        "| append_to_message (journal) | {:.0} B | {:.0} B (journal entry) | {:.2} ms |",
        per(append.wrote),
        per(append.payload),
        append.took.as_secs_f64() * 1e3 / tokens as f64
    );
    println!(
        "| + one fold at the end, spread over the tokens | {:.0} B | — | {:.3} ms |",
        per(fold.wrote),
        fold.took.as_secs_f64() * 1e3 / tokens as f64
    );
    println!(
        "\njournal vs baseline, bytes written per token incl. the fold: {:.4}x",
        per(append.wrote + fold.wrote) / per(edit.wrote)
    );
}
