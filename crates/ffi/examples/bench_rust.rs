//! The Rust side of the bindings bench (`bench.py`): the same
//! operations through the `chatvault` facade, so the two can be compared in
//! one run.
//!
//! - `bench_rust setup <dir> <chats>`: creates a vault on `file://<dir>/server`
//!   with `<chats>` chats of two messages (replica `<dir>/seed.redb`).
//! - `bench_rust measure <dir> <replica> <adds>`: opens the vault with the
//!   replica `<replica>` (a copy of the seed's) and reads the sidebar, then
//!   makes `<adds>` `add_message` calls over the first 100 chats; prints one
//!   JSON line of seconds.

use chatvault::{Chat, ChatId, ChatVault, Role};
use std::time::Instant;

const PASSPHRASE: &str = "bench passphrase";

async fn open(dir: &str, replica: &str) -> Result<ChatVault, chatvault::Error> {
    ChatVault::builder()
        .storage_url(format!("file://{dir}/server"))
        .replica_path(replica)
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(10)
        .open()
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("setup") if args.len() == 4 => {
            let (dir, chats) = (&args[2], args[3].parse::<usize>()?);
            let vault = open(dir, &format!("{dir}/seed.redb")).await?;
            let clock = vault.engine().clock();
            let all: Vec<Chat> = (0..chats)
                .map(|i| {
                    let mut chat = Chat::new(ChatId::new(), format!("Chat {i}"), clock.tick());
                    chat.add_message(Role::User, format!("Question {i}"), clock.tick());
                    chat.add_message(Role::Assistant, format!("Answer {i}"), clock.tick());
                    chat
                })
                .collect();
            vault.import_chats(all, |_| {}).await?;
            vault.sync_now().await?;
            vault.engine().write_sidebar_snapshot().await?;
            vault.close().await;
            println!("{{\"chats\": {chats}}}");
        }
        Some("measure") if args.len() == 5 => {
            let (dir, replica, adds) = (&args[2], &args[3], args[4].parse::<usize>()?);
            let start = Instant::now();
            let vault = open(dir, replica).await?;
            let open_s = start.elapsed().as_secs_f64();
            let sidebar = vault.sidebar();
            let titles: Vec<String> = sidebar.iter().map(|s| s.title.clone()).collect();
            let open_sidebar_s = start.elapsed().as_secs_f64();
            let targets: Vec<ChatId> = sidebar.iter().take(100).map(|s| s.id).collect();
            let start = Instant::now();
            for i in 0..adds {
                vault
                    .add_message(targets[i % targets.len()], Role::User, format!("added {i}"))
                    .await?;
            }
            let adds_s = start.elapsed().as_secs_f64();
            vault.close().await;
            println!(
                "{{\"chats\": {}, \"open_s\": {open_s}, \"open_sidebar_s\": {open_sidebar_s}, \"adds\": {adds}, \"adds_s\": {adds_s}}}",
                titles.len()
            );
        }
        _ => {
            eprintln!("usage: bench_rust setup <dir> <chats> | measure <dir> <replica> <adds>");
            std::process::exit(2);
        }
    }
    Ok(())
}
