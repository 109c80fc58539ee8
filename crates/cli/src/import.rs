//! `import`: chats from JSON Lines, one chat per line:
//! `{"title": "…", "messages": [{"role": "user", "content": "…"}]}`.

use chatvault::{Chat, ChatId, ChatVault, Error, Result, Role};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportedChat {
    title: String,
    #[serde(default)]
    messages: Vec<ImportedMessage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportedMessage {
    role: Role,
    content: String,
}

/// Imports every chat of `file`. The whole file is checked before the first
/// chat is saved, so a bad line leaves the vault untouched.
pub async fn run(vault: &ChatVault, file: &Path) -> Result<()> {
    let text = tokio::fs::read_to_string(file)
        .await
        .map_err(|e| Error::invalid(format!("cannot read {}: {e}", file.display())))?;
    let chats = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str::<ImportedChat>(line)
                .map_err(|e| Error::invalid(format!("{} line {}: {e}", file.display(), n + 1)))
        })
        .collect::<Result<Vec<_>>>()?;

    let progress = ProgressBar::new(chats.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} chats, {per_sec}, {eta} left")
            .map_err(|e| Error::invalid(format!("progress template: {e}")))?,
    );
    let clock = vault.engine().clock();
    let mut messages = 0;
    for imported in chats {
        let mut chat = Chat::new(ChatId::new(), imported.title, clock.tick());
        messages += imported.messages.len();
        for message in imported.messages {
            chat.add_message(message.role, message.content, clock.tick());
        }
        // One save per chat: one replica transaction, one queued push.
        vault.save_chat(chat).await?;
        progress.inc(1);
    }
    progress.finish_and_clear();
    println!(
        "imported {} chats, {messages} messages",
        progress.position()
    );
    Ok(())
}
