//! Moving a vault to a new format in the field (`docs/design.md` §3.6): a
//! mixed fleet of an upgraded device and one that was not (standing in for
//! the previous release: it reads and writes vault format 1 only) on one
//! vault, with concurrent edits before and after the format floor is
//! raised. The old device never misreads, silently drops or overwrites a
//! record in the new format, refuses to reopen the vault naming the format
//! it needs, and once upgraded merges what it queued meanwhile: nothing is
//! lost.

use chatvault::core::storage::Part;
use chatvault::core::{Aad, Cipher};
use chatvault::{ChatId, ChatVault, Error, Role};
use std::path::Path;

const PASSPHRASE: &str = "mixed fleet";

async fn open(
    server: &Path,
    replica: &Path,
    max_vault_format: Option<u8>,
) -> chatvault::Result<ChatVault> {
    let mut builder = ChatVault::builder()
        .storage_url(format!("file://{}", server.display()))
        .replica_path(replica)
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4);
    if let Some(format) = max_vault_format {
        builder = builder.max_vault_format(format);
    }
    builder.open().await
}

/// The format byte of `part` of the newest record of `chat` on the server,
/// opened with `vault`'s keys.
async fn part_format(vault: &ChatVault, chat: ChatId, part: Part) -> u8 {
    let records = vault
        .engine()
        .storage()
        .get(&[chat], part)
        .await
        .expect("get");
    let record = records
        .into_iter()
        .max_by_key(|r| r.version)
        .expect("a record");
    let aad = Aad {
        vault: vault.cipher().vault(),
        chat,
        part,
        version: record.version,
    };
    let sealed = match part {
        Part::Summary => &record.summary,
        Part::Body => record.body.as_ref().expect("a body"),
    };
    vault.cipher().open(&aad, sealed).expect("open")[0]
}

/// The format byte of the newest summary of `chat` on the server.
async fn summary_format(vault: &ChatVault, chat: ChatId) -> u8 {
    part_format(vault, chat, Part::Summary).await
}

/// The format byte of the newest body of `chat` on the server.
async fn body_format(vault: &ChatVault, chat: ChatId) -> u8 {
    part_format(vault, chat, Part::Body).await
}

async fn texts(vault: &ChatVault, chat: ChatId) -> Vec<String> {
    let mut texts: Vec<String> = vault
        .load_full_chat(chat)
        .await
        .expect("load")
        .messages()
        .iter()
        .map(|m| m.content().to_string())
        .collect();
    texts.sort();
    texts
}

fn sorted(items: &[&str]) -> Vec<String> {
    let mut items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    items.sort();
    items
}

#[tokio::test]
async fn a_mixed_fleet_loses_nothing_before_during_and_after_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = dir.path().join("server");
    let new = open(&server, &dir.path().join("new.redb"), None)
        .await
        .expect("the upgraded device");
    let old_replica = dir.path().join("old.redb");
    let old = open(&server, &old_replica, Some(1))
        .await
        .expect("the old device opens a vault at floor 1");
    assert_eq!(new.format_floor(), 1);

    // Before the upgrade: both write format 1 and read each other's, with
    // concurrent edits of one chat.
    let shared = new.new_chat("shared").await.expect("chat").id;
    new.add_message(shared, Role::User, "new 1")
        .await
        .expect("add");
    new.sync_now().await.expect("sync");
    old.sync_now().await.expect("sync");
    let own = old.new_chat("old's own").await.expect("chat").id;
    old.add_message(own, Role::User, "old own 1")
        .await
        .expect("add");
    new.add_message(shared, Role::User, "new 2")
        .await
        .expect("add");
    old.add_message(shared, Role::Assistant, "old 2")
        .await
        .expect("add");
    for _ in 0..2 {
        new.sync_now().await.expect("sync");
        old.sync_now().await.expect("sync");
    }
    let before = sorted(&["new 1", "new 2", "old 2"]);
    assert_eq!(texts(&new, shared).await, before);
    assert_eq!(texts(&old, shared).await, before);
    assert_eq!(texts(&new, own).await, sorted(&["old own 1"]));
    assert_eq!(
        summary_format(&new, shared).await,
        1,
        "floor 1 writes JSON summaries"
    );
    assert_eq!(body_format(&new, shared).await, 1, "and JSON bodies");

    // The upgrade: one key-file change raising the floor.
    assert!(new.upgrade_format().await.expect("upgrade"));
    assert_eq!(new.format_floor(), 2);
    assert!(
        !new.upgrade_format().await.expect("again"),
        "already at the floor"
    );

    // The upgraded device writes the new format at once; the old one, still
    // running, skips it (reported, kept for retry), keeps showing what it
    // had, and its concurrent edit stays queued instead of overwriting.
    new.add_message(shared, Role::User, "new 3")
        .await
        .expect("add");
    new.sync_now().await.expect("sync");
    assert_eq!(
        summary_format(&new, shared).await,
        2,
        "floor 2 writes binary summaries"
    );
    assert_eq!(
        body_format(&new, shared).await,
        5,
        "and binary bodies (chat format 5)"
    );
    let report = old.sync_now().await.expect("the old device's pull");
    let skipped = report
        .skipped
        .iter()
        .find(|s| s.chat == shared)
        .expect("the new-format record is reported as skipped");
    assert!(
        matches!(
            skipped.error,
            Error::UnsupportedFormat {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "skipped for its format: {}",
        skipped.error
    );
    assert_eq!(
        texts(&old, shared).await,
        before,
        "not misread, not dropped"
    );
    old.add_message(shared, Role::Assistant, "old 3")
        .await
        .expect("add offline-style");
    old.add_message(own, Role::User, "old own 2")
        .await
        .expect("add");
    match old.sync_now().await {
        Ok(_) => {}
        Err(e) => assert!(
            matches!(e, Error::UnsupportedFormat { .. }),
            "refused for the format only: {e}"
        ),
    }
    new.sync_now().await.expect("sync");
    assert_eq!(
        texts(&new, shared).await,
        sorted(&["new 1", "new 2", "old 2", "new 3"]),
        "the old device overwrote nothing"
    );
    assert_eq!(
        texts(&new, own).await,
        sorted(&["old own 1", "old own 2"]),
        "a chat still in the old format keeps syncing"
    );

    // Reopened, the old device refuses the vault, naming the format.
    drop(old);
    match open(&server, &old_replica, Some(1)).await {
        Err(Error::UnsupportedFormat {
            what,
            found,
            supported,
        }) => {
            assert_eq!((what.as_str(), found, supported), ("vault", 2, 1));
        }
        Err(e) => panic!("expected UnsupportedFormat, got {e}"),
        Ok(_) => panic!("a device reading vault format 1 opened a format-2 vault"),
    }

    // Upgraded, it reads everything and sends what it queued meanwhile.
    let upgraded = open(&server, &old_replica, None)
        .await
        .expect("the device after its upgrade");
    for _ in 0..2 {
        upgraded.sync_now().await.expect("sync");
        new.sync_now().await.expect("sync");
    }
    let after = sorted(&["new 1", "new 2", "old 2", "new 3", "old 3"]);
    assert_eq!(texts(&upgraded, shared).await, after);
    assert_eq!(texts(&new, shared).await, after, "nothing lost");
    assert_eq!(summary_format(&upgraded, shared).await, 2);
    assert_eq!(body_format(&upgraded, shared).await, 5);
    assert_eq!(
        body_format(&upgraded, own).await,
        1,
        "a record keeps its format until it is written again"
    );
    assert_eq!(upgraded.format_floor(), 2);
}

#[tokio::test]
async fn search_finds_and_skips_chats_by_their_binary_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = dir.path().join("server");
    let writer = open(&server, &dir.path().join("writer.redb"), None)
        .await
        .expect("open");
    assert!(writer.upgrade_format().await.expect("upgrade"));
    let trip = writer.new_chat("Trip").await.expect("chat").id;
    writer
        .add_message(trip, Role::User, "Two nights in Kraków, \"old town\"")
        .await
        .expect("add");
    let other = writer.new_chat("Groceries").await.expect("chat").id;
    writer
        .add_message(other, Role::User, "milk and bread")
        .await
        .expect("add");
    writer.sync_now().await.expect("sync");
    assert_eq!(body_format(&writer, trip).await, 5);
    // A second device: the bodies it searches come from the server.
    let reader = open(&server, &dir.path().join("reader.redb"), None)
        .await
        .expect("open");
    reader.sync_now().await.expect("sync");
    for vault in [&writer, &reader] {
        for (query, chat) in [
            ("krakow", trip),
            ("\"OLD TOWN\"", trip),
            ("trip", trip),
            ("BREAD", other),
        ] {
            let results = vault.search(query).await.expect("search");
            assert!(results.unreadable.is_empty());
            let chats: Vec<ChatId> = results.hits.iter().map(|h| h.chat).collect();
            assert_eq!(chats, [chat], "{query}");
        }
        let none = vault.search("zebra").await.expect("search");
        assert!(none.hits.is_empty());
    }
}

#[tokio::test]
async fn a_vault_created_by_the_new_release_stays_readable_by_the_old_one_until_upgraded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = dir.path().join("server");
    let new = open(&server, &dir.path().join("new.redb"), None)
        .await
        .expect("open");
    let chat = new.new_chat("t").await.expect("chat").id;
    new.add_message(chat, Role::User, "hello")
        .await
        .expect("add");
    new.sync_now().await.expect("sync");
    let old = open(&server, &dir.path().join("old.redb"), Some(1))
        .await
        .expect("a new vault starts at floor 1");
    old.sync_now().await.expect("sync");
    assert_eq!(texts(&old, chat).await, sorted(&["hello"]));
}
