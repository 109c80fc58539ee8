//! Conversation branches through the facade: regenerate, edit and resend,
//! alternatives, selection, the sidebar following the current path, and
//! two devices branching the same chat offline on one folder.

use chatvault::{ChatId, ChatVault, DynStorage, Error, MessageId, Role};
use std::path::Path;
use std::sync::Arc;

const PASSPHRASE: &str = "branch tests";

fn folder(dir: &Path) -> DynStorage {
    Arc::new(chatvault_fs::open(dir.join("server")).expect("open the folder backend"))
}

async fn open(dir: &Path, device: &str) -> ChatVault {
    ChatVault::builder()
        .storage(folder(dir))
        .replica_path(dir.join(format!("{device}.redb")))
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .open()
        .await
        .expect("open the vault")
}

async fn path(vault: &ChatVault, chat: ChatId) -> Vec<String> {
    let full = vault.load_full_chat(chat).await.expect("load");
    full.path()
        .iter()
        .map(|e| {
            let text = e.message.content().to_string();
            if e.alternatives > 1 {
                format!("{text} [{}/{}]", e.position, e.alternatives)
            } else {
                text
            }
        })
        .collect()
}

fn count(vault: &ChatVault, chat: ChatId) -> Option<u32> {
    vault
        .sidebar()
        .into_iter()
        .find(|s| s.id == chat)
        .map(|s| s.message_count)
}

#[tokio::test]
async fn regenerate_edit_and_resend_and_select_read_like_the_apps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = open(dir.path(), "laptop").await;
    let chat = vault.new_chat("Trip").await.expect("new chat").id;
    let question = vault
        .add_message(chat, Role::User, "Where to?")
        .await
        .expect("ask");
    let answer = vault
        .add_message(chat, Role::Assistant, "Lisbon.")
        .await
        .expect("answer");

    let again = vault
        .regenerate(chat, answer, "Porto.")
        .await
        .expect("regenerate");
    assert_eq!(path(&vault, chat).await, ["Where to?", "Porto. [2/2]"]);
    let alternatives = vault.alternatives(chat, answer).await.expect("list");
    assert_eq!(alternatives.count(), 2);
    assert_eq!((alternatives.position, alternatives.shown), (1, Some(2)));
    assert_eq!(
        alternatives
            .messages
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>(),
        [answer, again]
    );

    // Each operation refuses the other's kind of message, and unknown ids.
    let err = vault.regenerate(chat, question, "x").await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let err = vault.edit_and_resend(chat, answer, "x").await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let err = vault
        .select_branch(chat, MessageId::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    // Edit and resend: a new branch that starts after the edited question.
    let edited = vault
        .edit_and_resend(chat, question, "Where to in May?")
        .await
        .expect("edit and resend");
    assert_eq!(path(&vault, chat).await, ["Where to in May? [2/2]"]);
    assert_eq!(count(&vault, chat), Some(1));
    vault
        .add_message(chat, Role::Assistant, "Madeira.")
        .await
        .expect("answer the edit");
    assert_eq!(
        path(&vault, chat).await,
        ["Where to in May? [2/2]", "Madeira."]
    );
    assert_eq!(count(&vault, chat), Some(2));

    // Back to the first question: its branch, with the answer last shown.
    vault
        .select_branch(chat, question)
        .await
        .expect("select the old branch");
    assert_eq!(
        path(&vault, chat).await,
        ["Where to? [1/2]", "Porto. [2/2]"]
    );
    vault
        .select_branch(chat, answer)
        .await
        .expect("select the first answer");
    assert_eq!(
        path(&vault, chat).await,
        ["Where to? [1/2]", "Lisbon. [1/2]"]
    );
    let full = vault.load_full_chat(chat).await.expect("load");
    assert_eq!(full.tree().len(), 5);
    assert!(full.alternatives(edited).iter().any(|m| m.id == question));
    vault.close().await;

    // The selection and the tree are durable.
    let reopened = open(dir.path(), "laptop").await;
    assert_eq!(
        path(&reopened, chat).await,
        ["Where to? [1/2]", "Lisbon. [1/2]"]
    );
    reopened.close().await;
}

#[tokio::test]
async fn two_devices_regenerating_the_same_answer_offline_both_keep_both_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let laptop = open(dir.path(), "laptop").await;
    let chat = laptop.new_chat("Shared").await.expect("new chat").id;
    laptop
        .add_message(chat, Role::User, "Name a colour")
        .await
        .expect("ask");
    let answer = laptop
        .add_message(chat, Role::Assistant, "Blue")
        .await
        .expect("answer");
    laptop.sync_now().await.expect("push");
    let phone = open(dir.path(), "phone").await;
    phone.sync_now().await.expect("pull");
    assert_eq!(path(&phone, chat).await, ["Name a colour", "Blue"]);

    // Both regenerate while offline from each other.
    laptop
        .regenerate(chat, answer, "Green")
        .await
        .expect("laptop regenerates");
    // The phone acts later (its clock must read a later millisecond for
    // "later" to be defined by the stamps, not by device ids).
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    phone
        .regenerate(chat, answer, "Red")
        .await
        .expect("phone regenerates");
    // The phone also continues its branch.
    phone
        .add_message(chat, Role::User, "Why red?")
        .await
        .expect("phone asks");

    for _ in 0..2 {
        laptop.sync_now().await.expect("laptop syncs");
        phone.sync_now().await.expect("phone syncs");
    }
    let on_laptop = path(&laptop, chat).await;
    assert_eq!(on_laptop, path(&phone, chat).await);
    for device in [&laptop, &phone] {
        let alternatives = device.alternatives(chat, answer).await.expect("list");
        let mut texts: Vec<&str> = alternatives.messages.iter().map(|m| m.content()).collect();
        texts.sort_unstable();
        assert_eq!(texts, ["Blue", "Green", "Red"]);
    }
    // The phone's later actions (its answer, then its follow-up) decide
    // what is shown.
    assert_eq!(on_laptop, ["Name a colour", "Red [3/3]", "Why red?"]);
    laptop.close().await;
    phone.close().await;
}

const CHATGPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/chatgpt-conversations.json"
);

async fn import_json(
    vault: &ChatVault,
    dir: &Path,
    name: &str,
    json: &serde_json::Value,
) -> ChatId {
    let file = dir.join(name);
    std::fs::write(&file, serde_json::to_vec(json).expect("JSON")).expect("write");
    let (chats, _) = chatvault::import::read(&file).expect("read the export");
    let id = chats[0].id;
    vault.import_chats(chats, |_| {}).await.expect("import");
    id
}

#[tokio::test]
async fn a_chatgpt_export_with_regenerated_answers_imports_every_branch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = open(dir.path(), "laptop").await;
    let mut export: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(CHATGPT).expect("fixture")).expect("JSON");
    // A regenerated answer beside the shown one; ChatGPT still shows the
    // first (current_node).
    export[0]["mapping"]["n-answer-2b"] = serde_json::json!({
        "id": "n-answer-2b",
        "parent": "n-tool",
        "children": [],
        "message": {
            "id": "n-answer-2b",
            "author": {"role": "assistant"},
            "create_time": 1_700_000_130.0,
            "content": {"content_type": "text", "parts": ["Rund 310 km."]},
        },
    });
    let chats = serde_json::Value::Array(vec![export[0].clone()]);
    let chat = import_json(&vault, dir.path(), "chatgpt.json", &chats).await;

    let shown = path(&vault, chat).await;
    assert_eq!(shown.len(), 4, "{shown:?}");
    assert!(
        shown[0].contains("Zürich") && shown[0].ends_with("[2/2]"),
        "{shown:?}"
    );
    assert_eq!(
        shown[3],
        "Etwa 312 km – gut drei Stunden mit dem Zug. [1/2]"
    );
    assert_eq!(count(&vault, chat), Some(4));

    // The other branches are reachable: the regenerated answer and the
    // edited-away question with its answer.
    let full = vault.load_full_chat(chat).await.expect("load");
    let everything: Vec<&str> = full.tree().iter().map(|e| e.message.content()).collect();
    for text in [
        "Rund 310 km.",
        "First draft of the question (edited away)",
        "Answer on the abandoned branch",
    ] {
        assert!(
            everything.contains(&text),
            "{text:?} missing: {everything:?}"
        );
    }
    assert_eq!(everything.len(), 7);
    let first = full.messages()[0].id;
    let edited_away = vault.alternatives(chat, first).await.expect("list");
    assert_eq!(edited_away.count(), 2);
    assert_eq!(
        edited_away.messages[0].content(),
        "First draft of the question (edited away)"
    );
    vault
        .select_branch(chat, edited_away.messages[0].id)
        .await
        .expect("select");
    assert_eq!(
        path(&vault, chat).await,
        [
            "First draft of the question (edited away) [1/2]",
            "Answer on the abandoned branch"
        ]
    );

    // Re-importing changes nothing, not even the selection made here.
    let file = dir.path().join("chatgpt.json");
    let (again, _) = chatvault::import::read(&file).expect("read");
    let report = vault.import_chats(again, |_| {}).await.expect("re-import");
    assert_eq!((report.added, report.updated, report.unchanged), (0, 0, 1));
    assert_eq!(path(&vault, chat).await.len(), 2);
    vault.close().await;
}

#[tokio::test]
async fn a_claude_export_with_retries_keeps_its_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = open(dir.path(), "laptop").await;
    let message = |uuid: &str, parent: &str, sender: &str, text: &str, at: &str| {
        serde_json::json!({
            "uuid": uuid, "parent_message_uuid": parent, "sender": sender,
            "text": text, "content": [], "created_at": at,
        })
    };
    let root = "00000000-0000-4000-8000-000000000000";
    let export = serde_json::json!([{
        "uuid": "c-1",
        "name": "Retries",
        "created_at": "2024-03-01T12:00:00Z",
        "updated_at": "2024-03-01T12:10:00Z",
        "current_leaf_message_uuid": "m-2",
        "chat_messages": [
            message("m-1", root, "human", "Write a haiku", "2024-03-01T12:00:00Z"),
            message("m-2", "m-1", "assistant", "First haiku", "2024-03-01T12:00:10Z"),
            message("m-3", "m-1", "assistant", "Retried haiku", "2024-03-01T12:05:00Z"),
        ],
    }]);
    let chat = import_json(&vault, dir.path(), "claude.json", &export).await;
    // The branch Claude showed, though the retry is newer.
    assert_eq!(
        path(&vault, chat).await,
        ["Write a haiku", "First haiku [1/2]"]
    );
    let full = vault.load_full_chat(chat).await.expect("load");
    assert_eq!(full.tree().len(), 3);
    vault.close().await;
}

#[tokio::test]
async fn a_branched_chat_round_trips_through_the_json_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = open(dir.path(), "laptop").await;
    let chat = vault.new_chat("Round trip").await.expect("new").id;
    let question = vault.add_message(chat, Role::User, "Q").await.expect("ask");
    let answer = vault
        .add_message(chat, Role::Assistant, "A")
        .await
        .expect("answer");
    vault
        .regenerate(chat, answer, "A again")
        .await
        .expect("regenerate");
    vault
        .edit_and_resend(chat, question, "Q edited")
        .await
        .expect("edit");
    vault
        .add_message(chat, Role::Assistant, "A for the edit")
        .await
        .expect("answer");
    let first = vault.export_json().await.expect("export");
    let document: serde_json::Value = serde_json::from_slice(&first.bytes).expect("JSON");
    assert_eq!(document["format"], chatvault::export::JSON_FORMAT_BRANCHES);
    let exported = &document["chats"][0];
    assert_eq!(exported["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(exported["branches"].as_array().map(Vec::len), Some(3));

    let other = tempfile::tempdir().expect("tempdir");
    let fresh = open(other.path(), "elsewhere").await;
    let (chats, _) =
        chatvault::import::read_bytes(Path::new("export.json"), first.bytes.clone(), 1 << 20)
            .expect("read the export");
    fresh.import_chats(chats, |_| {}).await.expect("import");
    assert_eq!(path(&fresh, chat).await, path(&vault, chat).await);
    let second = fresh.export_json().await.expect("export again");
    assert_eq!(
        String::from_utf8_lossy(&second.bytes),
        String::from_utf8_lossy(&first.bytes)
    );
    vault.close().await;
    fresh.close().await;
}

#[tokio::test]
async fn reimporting_a_chat_imported_before_branches_places_every_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = open(dir.path(), "laptop").await;
    let (chats, _) = chatvault::import::read(Path::new(CHATGPT)).expect("read the fixture");
    let trip = chats
        .iter()
        .find(|c| c.is_branched())
        .expect("the fixture has a branched chat")
        .clone();
    // What a release before branches imported: the shown branch alone, flat.
    let mut flat = trip.clone();
    let shown: Vec<MessageId> = trip.messages().iter().map(|m| m.id).collect();
    flat.messages.retain(|id, _| shown.contains(id));
    for message in flat.messages.values_mut() {
        message.parent = None;
        message.alternative_of = None;
    }
    flat.selected = trip.selected.clone();
    flat.selected.value = None;
    flat.selected.at = chatvault::core::Hlc::ZERO;
    assert!(!flat.is_branched());
    vault
        .import_chats(vec![flat], |_| {})
        .await
        .expect("old import");
    let before = path(&vault, trip.id).await;
    assert_eq!(before.len(), 4);

    let report = vault.import_chats(chats, |_| {}).await.expect("re-import");
    assert_eq!(report.updated, 1, "{report:?}");
    let full = vault.load_full_chat(trip.id).await.expect("load");
    assert_eq!(*full, trip, "the re-import holds the whole tree");
    let after = path(&vault, trip.id).await;
    assert_eq!(after.len(), 4);
    assert!(after[0].ends_with("[2/2]"), "{after:?}");
    vault.close().await;
}
