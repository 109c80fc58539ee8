//! Helpers shared by the multi-device tests (`convergence.rs`, and the
//! tests of folders that a file-sync service copies, `file_sync*.rs`): what
//! a device shows, and the files of a folder copy.

#![allow(dead_code)]

use chatvault::{ChatId, ChatVault, MessageId};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a device shows of a chat: title, star, live messages by id.
pub type View = (String, bool, BTreeMap<MessageId, String>);

/// Every live chat of a device, each loaded in full (a chat that does not
/// load is an error: the `verify` sanity check).
pub async fn state(vault: &ChatVault) -> Result<BTreeMap<ChatId, View>, String> {
    let mut out = BTreeMap::new();
    for summary in vault.sidebar() {
        if summary.deleted.is_some() {
            continue;
        }
        let full = vault
            .load_full_chat(summary.id)
            .await
            .map_err(|e| format!("load {}: {e}", summary.id))?;
        let messages = full
            .messages()
            .iter()
            .map(|m| (m.id, m.content().to_string()))
            .collect();
        out.insert(
            summary.id,
            (full.title().to_string(), summary.starred, messages),
        );
    }
    Ok(out)
}

/// Every file under `folder/under` (the whole folder for `""`), by its path
/// relative to `folder`.
pub fn files(folder: &Path, under: &str) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![folder.join(under)];
    while let Some(at) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read a file");
                let name = path.strip_prefix(folder).expect("below the folder");
                found.insert(name.to_path_buf(), bytes);
            }
        }
    }
    found
}
