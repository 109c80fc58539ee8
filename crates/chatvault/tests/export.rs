//! An export never fails whole because one chat is damaged on the server: it
//! holds every chat that opens and names the ones that do not.

use chatvault::core::envelope::ExportTarget;
use chatvault::core::raw::codec::encode_summary;
use chatvault::core::{Aad, Cipher, Part, PutPrecondition, SealedRecord};
use chatvault::{ChatVault, DynStorage, Role};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

fn folder(dir: &Path) -> DynStorage {
    Arc::new(chatvault_fs::open(dir.join("server")).expect("open the folder backend"))
}

async fn open(dir: &Path, name: &str) -> ChatVault {
    ChatVault::builder()
        .storage(folder(dir))
        .replica_path(dir.join(format!("{name}.redb")))
        .passphrase("export tests")
        .scrypt_work_factor(4)
        .open()
        .await
        .expect("open")
}

#[tokio::test]
async fn an_export_skips_a_chat_whose_body_does_not_open_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(dir.path(), "a").await;
    let good = a.new_chat("Intact").await.expect("save");
    a.add_message(good.id, Role::User, "kept in the export")
        .await
        .expect("add");
    let damaged = a.new_chat("Damaged body").await.expect("save");
    a.add_message(damaged.id, Role::User, "lost on the server")
        .await
        .expect("add");
    a.sync_now().await.expect("push");

    // The server keeps a valid summary but garbles the body of a newer
    // version: the sidebar shows the chat, its body does not open.
    let server = folder(dir.path());
    let stored = server
        .get(&[damaged.id], Part::Body)
        .await
        .expect("get")
        .pop()
        .expect("the damaged chat is on the server");
    let version = stored.version + 1;
    let summary = a
        .cipher()
        .seal(
            &Aad {
                vault: a.vault_id(),
                chat: damaged.id,
                part: Part::Summary,
                version,
            },
            &encode_summary(&a.load_full_chat(damaged.id).await.expect("load").summary())
                .expect("encode"),
        )
        .expect("seal");
    server
        .put(
            SealedRecord {
                chat: damaged.id,
                version,
                deleted: false,
                summary: summary.into(),
                body: Some(b"not a sealed body".to_vec().into()),
            },
            PutPrecondition::Version(stored.version),
        )
        .await
        .expect("damage");

    // A device that holds only summaries exports: bodies come from the server.
    let b = open(dir.path(), "b").await;
    b.sync_now().await.expect("pull");
    assert_eq!(b.sidebar().len(), 2);
    let backup = age::x25519::Identity::generate();
    let file = b
        .export_age(&ExportTarget::Recipients(vec![backup.to_public()]))
        .await
        .expect("one damaged chat must not fail the whole export");
    let mut json = Vec::new();
    age::Decryptor::new(&file[..])
        .expect("an age file")
        .decrypt(std::iter::once(&backup as &dyn age::Identity))
        .expect("decrypts")
        .read_to_end(&mut json)
        .expect("read");
    let export: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    let chats = export["chats"].as_array().expect("chats");
    assert_eq!(chats.len(), 1);
    assert!(String::from_utf8_lossy(&json).contains("kept in the export"));
    let skipped = export["skipped"]
        .as_array()
        .expect("skipped chats are named");
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["chat"], damaged.id.to_string());
    assert_eq!(skipped[0]["version"], version);
    assert!(
        skipped[0]["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{skipped:?}"
    );
}

#[tokio::test]
async fn a_json_export_carries_attachment_references_and_reading_it_keeps_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(dir.path(), "a").await;
    let chat = a.new_chat("With a file").await.expect("save");
    a.add_message(chat.id, Role::User, "no file here")
        .await
        .expect("add");
    let attachment = a
        .attach(
            chat.id,
            &b"%PDF-1.7 ..."[..],
            "report.pdf",
            "application/pdf",
        )
        .await
        .expect("attach");
    let message = a
        .add_message_with_attachments(chat.id, Role::User, "the report", vec![attachment.clone()])
        .await
        .expect("add");

    // Without the bytes: the references alone.
    let export = a
        .write_export_json(
            Vec::new(),
            chatvault::ExportOptions { attachments: false },
            |_, _| {},
        )
        .await
        .expect("export");
    let export = chatvault::export::JsonExportFile {
        bytes: export.out,
        chats: export.chats,
        skipped: export.skipped,
    };
    let document: serde_json::Value = serde_json::from_slice(&export.bytes).expect("JSON");
    assert_eq!(
        document["format"],
        chatvault::export::JSON_FORMAT_ATTACHMENTS
    );
    assert!(document.get("files").is_none());
    let messages = document["chats"][0]["messages"]
        .as_array()
        .expect("messages");
    assert!(messages[0].get("attachments").is_none(), "{messages:?}");
    assert_eq!(messages[1]["id"], message.to_string());
    assert_eq!(
        messages[1]["attachments"],
        serde_json::json!([{
            "id": attachment.id.to_hex(),
            "name": "report.pdf",
            "media_type": "application/pdf",
            "size": 12,
        }])
    );

    // Read back, the message still carries the reference.
    let chats = chatvault::import::json::read(Path::new("export.json"), &export.bytes)
        .expect("read the export");
    let read = chats[0].messages();
    assert_eq!(read[1].attachments(), [attachment]);
    assert!(read[0].attachments().is_empty());
}
