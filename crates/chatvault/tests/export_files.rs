//! Exports carry the bytes of the attachments their messages name: a
//! vault's JSON and age exports import into a vault with other keys, whose
//! attachments read back the same bytes (under that vault's ids); importing
//! again adds nothing; the JSON export round-trips but for those ids; and a
//! damaged file (bad base64, wrong size) is a typed error before anything
//! is attached.

use base64::Engine as _;
use chatvault::export::{JSON_FORMAT_ATTACHMENTS, JSON_FORMAT_FILES};
use chatvault::{ChatVault, Error, ExportOptions, ExportTarget, ImportOptions, Role};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

mod common;
use common::noise;

async fn open(dir: &Path, name: &str, passphrase: &str) -> ChatVault {
    ChatVault::builder()
        .storage(Arc::new(
            chatvault_fs::open(dir.join(format!("{name}-server"))).expect("open the backend"),
        ))
        .replica_path(dir.join(format!("{name}.redb")))
        .passphrase(passphrase)
        .scrypt_work_factor(4)
        .auto_maintenance(None)
        .open()
        .await
        .expect("open the vault")
}

/// The SHA-256 of every attachment of every chat, by file name.
async fn digests(vault: &ChatVault) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for summary in vault.sidebar().iter() {
        for (_, attachment) in vault.attachments(summary.id).await.expect("list") {
            let bytes = vault.attachment_bytes(&attachment).await.expect("read");
            assert_eq!(bytes.len() as u64, attachment.size);
            out.insert(attachment.name.clone(), Sha256::digest(&bytes).to_vec());
        }
    }
    out
}

/// Every attachment's id, by file name.
async fn ids(vault: &ChatVault) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    for summary in vault.sidebar().iter() {
        for (_, a) in vault.attachments(summary.id).await.expect("list") {
            ids.insert(a.name.clone(), a.id.to_hex());
        }
    }
    ids
}

/// The position of the file `name` under `files` in `document`.
fn file(document: &serde_json::Value, name: &str) -> usize {
    document["files"]
        .as_array()
        .and_then(|files| files.iter().position(|f| f["name"] == name))
        .expect("the file is in the export")
}

/// A vault with three files in two chats: a 2.5 MB one (three chunks), an
/// empty one, and a small one sent in both chats.
async fn vault_with_files(dir: &Path) -> (ChatVault, BTreeMap<String, Vec<u8>>) {
    let vault = open(dir, "source", "the source vault").await;
    let first = vault.new_chat("Photos").await.expect("chat").id;
    let second = vault.new_chat("Notes").await.expect("chat").id;
    let big = noise(2_500_000, 3);
    let small = b"a small note, sent twice".to_vec();
    let attach = |chat, data: Vec<u8>, name: &'static str| {
        let vault = &vault;
        async move {
            vault
                .attach(chat, &data[..], name, chatvault::media_type_of(name))
                .await
                .expect("attach")
        }
    };
    let big = attach(first, big, "big.bin").await;
    let empty = attach(first, Vec::new(), "empty.txt").await;
    let note = attach(first, small.clone(), "note.txt").await;
    let note_again = attach(second, small, "note.txt").await;
    assert_eq!(note.id, note_again.id);
    vault
        .add_message_with_attachments(first, Role::User, "files", vec![big, empty, note])
        .await
        .expect("send");
    vault
        .add_message_with_attachments(second, Role::User, "again", vec![note_again])
        .await
        .expect("send");
    vault
        .add_message(second, Role::Assistant, "thanks")
        .await
        .expect("add");
    vault.sync_now().await.expect("sync");
    let digests = digests(&vault).await;
    assert_eq!(digests.len(), 3);
    (vault, digests)
}

#[tokio::test]
async fn a_json_export_carries_each_file_once_and_restores_it_into_a_vault_with_other_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (source, expected) = vault_with_files(dir.path()).await;
    let path = dir.path().join("export.json");
    let mut seen = (0, 0);
    let exported = source
        .write_export_json(
            std::fs::File::create(&path).expect("create"),
            ExportOptions::default(),
            |done, total| seen = (done, total),
        )
        .await
        .expect("export");
    assert_eq!((exported.chats, exported.files), (2, 3));
    assert_eq!(exported.file_bytes, 2_500_000 + 24);
    assert_eq!(seen, (2_500_024, 2_500_024));
    let bytes = std::fs::read(&path).expect("read the export");
    let document: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(document["format"], JSON_FORMAT_FILES);
    let files = document["files"].as_array().expect("files");
    assert_eq!(files.len(), 3, "each file once");
    let data = |name: &str| &files[file(&document, name)]["data"];
    assert_eq!(data("big.bin").as_array().map(Vec::len), Some(3));
    assert_eq!(data("empty.txt"), &serde_json::json!([]));
    assert_eq!(data("note.txt").as_array().map(Vec::len), Some(1));
    // The in-memory export is the same document.
    assert_eq!(source.export_json().await.expect("export").bytes, bytes);

    let target = open(dir.path(), "target", "another vault").await;
    let (report, _, attached) = target
        .import_file(&path, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!((report.added, attached), (2, 3));
    assert_eq!(digests(&target).await, expected);
    // The references are the target vault's: its ids differ.
    let (old, new) = (ids(&source).await, ids(&target).await);
    assert!(old.iter().all(|(name, id)| new[name] != *id));

    // Importing again adds nothing.
    let (again, _, _) = target
        .import_file(&path, ImportOptions::default())
        .await
        .expect("import again");
    assert_eq!((again.added, again.updated), (0, 0));

    // Exporting again gives the same bytes, but for the ids.
    let mut round =
        String::from_utf8(target.export_json().await.expect("export").bytes).expect("UTF-8");
    for (name, id) in &new {
        round = round.replace(id.as_str(), &old[name]);
    }
    assert_eq!(round.as_bytes(), &bytes[..]);
    // And another device of the target vault reads the files from its server.
    target.sync_now().await.expect("sync");
}

#[tokio::test]
async fn an_age_export_carries_the_files_and_restores_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (source, expected) = vault_with_files(dir.path()).await;
    let backup = age::x25519::Identity::generate();
    let exported = source
        .write_export_age(
            &ExportTarget::Recipients(vec![backup.to_public()]),
            Vec::new(),
            ExportOptions::default(),
            |_, _| {},
        )
        .await
        .expect("export");
    assert_eq!(exported.files, 3);
    let mut json = Vec::new();
    age::Decryptor::new(&exported.out[..])
        .expect("an age file")
        .decrypt(std::iter::once(&backup as &dyn age::Identity))
        .expect("decrypts")
        .read_to_end(&mut json)
        .expect("read");
    let document: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(document["format"], chatvault::EXPORT_FORMAT_FILES);
    assert_eq!(document["files"].as_array().map(Vec::len), Some(3));
    let path = dir.path().join("export.json");
    std::fs::write(&path, &json).expect("write the plaintext");

    let target = open(dir.path(), "target", "another vault").await;
    let (report, _, attached) = target
        .import_file(&path, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!((report.added, attached), (2, 3));
    assert_eq!(digests(&target).await, expected);
    let (again, _, _) = target
        .import_file(&path, ImportOptions::default())
        .await
        .expect("import again");
    assert_eq!((again.added, again.updated), (0, 0));
}

#[tokio::test]
async fn an_export_without_attachments_keeps_the_references_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (source, _) = vault_with_files(dir.path()).await;
    let exported = source
        .write_export_json(Vec::new(), ExportOptions { attachments: false }, |_, _| {})
        .await
        .expect("export");
    assert_eq!(exported.files, 0);
    let document: serde_json::Value = serde_json::from_slice(&exported.out).expect("JSON");
    assert_eq!(document["format"], JSON_FORMAT_ATTACHMENTS);
    assert!(document.get("files").is_none());
}

#[tokio::test]
async fn a_damaged_file_in_an_export_is_a_typed_error_and_nothing_is_attached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (source, _) = vault_with_files(dir.path()).await;
    let bytes = source.export_json().await.expect("export").bytes;
    let document: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    let target = open(dir.path(), "target", "another vault").await;
    let text = String::from_utf8(bytes).expect("UTF-8");
    let note = base64::engine::general_purpose::STANDARD.encode(b"a small note, sent twice");
    let damaged = [
        (
            "bad base64",
            text.replace(&note, "not base64!"),
            "is not base64",
        ),
        (
            "a size too large",
            text.replace(
                "\"size\": 24,\n      \"data\"",
                "\"size\": 25,\n      \"data\"",
            ),
            "holds 24 bytes, its size says 25",
        ),
        (
            "a size too small",
            text.replace(
                "\"size\": 2500000,\n      \"data\"",
                "\"size\": 1000000,\n      \"data\"",
            ),
            "more than the 1000000 bytes",
        ),
        (
            "no data",
            text.replace("\"size\": 0,\n      \"data\": []", "\"size\": 0"),
            "no `data`",
        ),
        (
            // Keys sorted, as some tools write them.
            "data before the fields",
            serde_json::to_string(&document).expect("encode"),
            "`data` comes before",
        ),
    ];
    for (what, damaged, says) in damaged {
        assert_ne!(damaged, text, "{what}: the export was damaged");
        let path = dir.path().join("damaged.json");
        std::fs::write(&path, damaged).expect("write");
        let error = target
            .import_file(&path, ImportOptions::default())
            .await
            .expect_err(what);
        assert!(
            matches!(&error, Error::InvalidInput { .. }) && error.to_string().contains(says),
            "{what}: {error}"
        );
        let error = chatvault::import::json::read(&path, &std::fs::read(&path).expect("read"))
            .expect_err(what);
        assert!(error.to_string().contains(says), "{what}: {error}");
    }
    assert!(target.sidebar().is_empty(), "nothing was imported");
}

/// A backend that stores no blobs.
#[derive(Debug)]
struct NoBlobs(chatvault::DynStorage);

#[async_trait::async_trait]
impl chatvault::core::layer::LayeredStorage for NoBlobs {
    fn inner(&self) -> &dyn chatvault::Storage {
        &*self.0
    }

    fn capabilities(&self) -> chatvault::core::Capabilities {
        chatvault::core::Capabilities {
            blobs: false,
            ..self.0.capabilities()
        }
    }
}

#[tokio::test]
async fn an_export_with_files_into_a_vault_without_blobs_says_why_and_saves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (source, _) = vault_with_files(dir.path()).await;
    let path = dir.path().join("export.json");
    std::fs::write(&path, source.export_json().await.expect("export").bytes).expect("write");
    let target = ChatVault::builder()
        .storage(Arc::new(NoBlobs(Arc::new(
            chatvault_fs::open(dir.path().join("no-blobs")).expect("open the backend"),
        ))))
        .replica_path(dir.path().join("no-blobs.redb"))
        .passphrase("text only")
        .scrypt_work_factor(4)
        .auto_maintenance(None)
        .open()
        .await
        .expect("open the vault");
    let error = target
        .import_file(&path, ImportOptions::default())
        .await
        .expect_err("no blobs");
    assert!(matches!(error, Error::Unsupported { .. }), "{error}");
    assert!(target.sidebar().is_empty());
}
