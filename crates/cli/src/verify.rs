//! `verify`: opens every record on the server and in this device's replica
//! and reports each one that fails authentication, cannot be decoded, or
//! differs between the two. Read-only: nothing is repaired or pulled.

use chatvault::core::codec::{decode_chat, decode_summary};
use chatvault::core::storage::{Cursor, Part, SealedRecord};
use chatvault::core::{Aad, Cipher};
use chatvault::{Chat, ChatId, ChatSummary, ChatVault, Error, Result};
use std::collections::BTreeMap;

/// How many changes one page of the server's feed asks for.
const PAGE: usize = 1000;

/// A record opened: its summary and (if it carries one) its body.
type Opened = (ChatSummary, Option<Chat>);

/// Runs the check; `Err` (exit code 5) if anything is wrong.
pub async fn run(vault: &ChatVault) -> Result<()> {
    let engine = vault.engine();
    let storage = engine.storage();
    let cipher = vault.cipher();
    let vault_id = vault.vault_id();
    let open = |record: &SealedRecord| -> Result<Opened> {
        let aad = |part| Aad {
            vault: vault_id,
            chat: record.chat,
            part,
            version: record.version,
        };
        let summary = decode_summary(&cipher.open(&aad(Part::Summary), &record.summary)?)?;
        if summary.id != record.chat {
            return Err(Error::corrupt(
                format!("summary of chat {}", record.chat),
                format!("it describes chat {}", summary.id),
            ));
        }
        let body = match &record.body {
            Some(body) => Some(decode_chat(&cipher.open(&aad(Part::Full), body)?)?),
            None => None,
        };
        Ok((summary, body))
    };

    // The server: every chat's latest version from the change feed.
    let mut latest: BTreeMap<ChatId, u64> = BTreeMap::new();
    let mut cursor = Cursor::start();
    loop {
        let page = storage.changes(&cursor, PAGE).await?;
        for change in &page.changes {
            latest.insert(change.chat, change.version);
        }
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    let ids: Vec<ChatId> = latest.keys().copied().collect();
    let mut server = BTreeMap::new();
    for chunk in ids.chunks(PAGE) {
        for record in storage.get(chunk, Part::Full).await? {
            server.insert(record.chat, record);
        }
    }

    let mut problems = 0usize;
    let mut report = |what: String| {
        problems += 1;
        println!("{what}");
    };
    let mut opened_server = BTreeMap::new();
    for (chat, record) in &server {
        match open(record) {
            Ok(opened) => {
                opened_server.insert(*chat, (record.version, opened));
            }
            Err(e) => report(format!(
                "server  chat {chat} version {}: {e}",
                record.version
            )),
        }
    }
    for chat in ids.iter().filter(|id| !server.contains_key(id)) {
        report(format!(
            "server  chat {chat}: named by the change feed but missing"
        ));
    }

    let replica = engine.replica();
    let mut checked_local = 0usize;
    for stored in replica.summaries()? {
        checked_local += 1;
        let Some(record) = replica.record(stored.chat, true)? else {
            continue;
        };
        let local = match open(&record) {
            Ok(opened) => opened,
            Err(e) => {
                report(format!(
                    "replica chat {} version {}: {e}",
                    record.chat, record.version
                ));
                continue;
            }
        };
        if let Some((version, theirs)) = opened_server.get(&record.chat) {
            let differs = *version == record.version
                && (local.0 != theirs.0
                    || matches!((&local.1, &theirs.1), (Some(a), Some(b)) if a != b));
            if differs {
                report(format!(
                    "differs chat {} version {}: the replica and the server hold different content",
                    record.chat, record.version
                ));
            }
        }
    }
    println!(
        "checked {} server records and {checked_local} replica records: {}",
        server.len(),
        if problems == 0 {
            "all open and agree".to_string()
        } else {
            format!("{problems} problem(s)")
        }
    );
    if problems > 0 {
        return Err(Error::corrupt(
            format!("{problems} record(s)"),
            "see the lines above; restore the damaged copy (e.g. `sync` from a good device) \
             or report it",
        ));
    }
    Ok(())
}
