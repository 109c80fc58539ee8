//! Attachments through the facade, on the folder backend: attached on one
//! device and read back on another, stored once, never visible on the
//! server before their bytes, resumed after a network loss without
//! re-sending what landed, refused uploads holding only their own chat,
//! tampering detected, the cache kept within its budget, and a backend
//! without blobs failing with a typed error.

use async_trait::async_trait;
use bytes::Bytes;
use chatvault::core::layer::{LayeredStorage, Op};
use chatvault::core::{BlobId, Capabilities};
use chatvault::{ChatVault, DynStorage, Error, Event, Role, Storage};
use chatvault_conformance::layers::{Fault, FaultyStorage};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod common;
use common::noise;

const PASSPHRASE: &str = "attachment tests";

fn folder(dir: &Path) -> DynStorage {
    Arc::new(chatvault_fs::open(dir.join("server")).expect("open the folder backend"))
}

async fn open_on(dir: &Path, device: &str, storage: DynStorage) -> ChatVault {
    ChatVault::builder()
        .storage(storage)
        .replica_path(dir.join(format!("{device}.redb")))
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .auto_maintenance(None)
        .open()
        .await
        .expect("open the vault")
}

async fn stored_blobs(storage: &DynStorage) -> Vec<BlobId> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = storage.list_blobs(after, 100).await.expect("list blobs");
        all.extend(page.ids.iter().copied());
        if page.ids.is_empty() || !page.has_more {
            return all;
        }
        after = page.ids.last().copied();
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Attaches `data` as `name` to `chat` on `vault`, sends a message carrying
/// it and syncs; returns the attachment.
async fn send_file(
    vault: &ChatVault,
    chat: chatvault::ChatId,
    data: &[u8],
    name: &str,
) -> chatvault::Attachment {
    let attachment = vault
        .attach(chat, data, name, chatvault::media_type_of(name))
        .await
        .expect("attach");
    vault
        .add_message_with_attachments(chat, Role::User, "", vec![attachment.clone()])
        .await
        .expect("send");
    vault.sync_now().await.expect("sync");
    attachment
}

#[tokio::test]
async fn a_file_attached_on_one_device_reads_back_on_another_and_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = folder(dir.path());
    let laptop = open_on(dir.path(), "laptop", server.clone()).await;
    let chat = laptop.new_chat("Plans").await.expect("new chat").id;

    // Three chunks (1,000,000 + 1,000,000 + 500,000 bytes).
    let photo = noise(2_500_000, 1);
    let attachment = laptop
        .attach(chat, &photo[..], "photo.jpg", "image/jpeg")
        .await
        .expect("attach");
    assert_eq!(attachment.size, 2_500_000);
    assert_eq!(attachment.name, "photo.jpg");
    // The same bytes again are the same attachment.
    let again = laptop
        .attach(chat, &photo[..], "copy.jpg", "image/jpeg")
        .await
        .expect("attach again");
    assert_eq!(again.id, attachment.id);
    // A file made of one chunk twice stores that chunk once.
    let block = noise(1_000_000, 2);
    let doubled = [block.clone(), block].concat();
    let twice = laptop
        .attach(chat, &doubled[..], "twice.bin", "application/octet-stream")
        .await
        .expect("attach the doubled file");
    let message = laptop
        .add_message_with_attachments(
            chat,
            Role::User,
            "the photo and the file",
            vec![attachment.clone(), twice.clone()],
        )
        .await
        .expect("send");
    // Nothing is on the server until the next sync.
    assert!(stored_blobs(&server).await.is_empty());
    laptop.sync_now().await.expect("sync the laptop");
    // 3 chunks + manifest, then 1 chunk + manifest.
    assert_eq!(stored_blobs(&server).await.len(), 6);

    let phone = open_on(dir.path(), "phone", server.clone()).await;
    phone.sync_now().await.expect("sync the phone");
    let listed = phone.attachments(chat).await.expect("list");
    assert_eq!(
        listed,
        vec![(message, attachment.clone()), (message, twice.clone())]
    );
    assert_eq!(
        phone.attachment_bytes(&attachment).await.expect("read"),
        photo
    );
    let saved = dir.path().join("twice.bin");
    assert_eq!(
        phone.save_attachment(&twice, &saved).await.expect("save"),
        2_000_000
    );
    assert_eq!(std::fs::read(&saved).expect("read the saved file"), doubled);
    // The phone keeps what it fetched: a second read needs no server.
    let offline = FaultyStorage::new(server.clone());
    offline.fail_all(Fault::Unavailable);
    drop(phone);
    let phone = open_on(dir.path(), "phone", offline.clone()).await;
    assert_eq!(
        phone
            .attachment_bytes(&attachment)
            .await
            .expect("read from the cache"),
        photo
    );
    assert_eq!(offline.calls(Op::GetBlob), 0);
}

#[tokio::test]
async fn a_message_never_reaches_the_server_before_its_attachment_and_uploads_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = folder(dir.path());
    let link = FaultyStorage::new(server.clone());
    let laptop = open_on(dir.path(), "laptop", link.clone()).await;
    let chat = laptop.new_chat("Scan").await.expect("new chat").id;
    let other = laptop.new_chat("Other").await.expect("new chat").id;
    laptop
        .add_message(other, Role::User, "plain text")
        .await
        .expect("write");

    // Offline: attaching still works (staged on this device).
    link.fail_all(Fault::Unavailable);
    let scan = noise(3_200_000, 3);
    let attachment = laptop
        .attach(chat, &scan[..], "scan.pdf", "application/pdf")
        .await
        .expect("attach offline");
    laptop
        .add_message_with_attachments(chat, Role::User, "my scan", vec![attachment.clone()])
        .await
        .expect("send offline");
    link.heal();

    // The manifest's upload (the fifth blob, after the four chunks) fails:
    // the chunks landed, no record did.
    let staged = laptop.engine().blob_dir().staged().expect("staged");
    assert_eq!(staged.len(), 5, "4 chunks and the manifest wait");
    link.fail_nth(Op::PutBlob, 5, Fault::Unavailable);
    let err = laptop.sync_now().await.expect_err("the upload fails");
    assert!(err.is_retriable(), "{err}");
    assert_eq!(stored_blobs(&server).await.len(), 4);
    let phone = open_on(dir.path(), "phone", server.clone()).await;
    phone.sync_now().await.expect("sync the phone");
    assert!(phone.sidebar().is_empty(), "a record went before its blobs");

    // Back online: only the blobs still marked go (what landed and was
    // confirmed is not sent again), then the records.
    let left = laptop.engine().blob_dir().staged().expect("staged").len() as u64;
    assert_eq!(left, 1, "only the manifest is left");
    let before = link.calls(Op::PutBlob);
    laptop.sync_now().await.expect("sync the laptop");
    assert_eq!(link.calls(Op::PutBlob) - before, left);
    assert_eq!(stored_blobs(&server).await.len(), 5);
    assert!(laptop
        .engine()
        .blob_dir()
        .staged()
        .expect("staged")
        .is_empty());
    phone.sync_now().await.expect("sync the phone");
    assert_eq!(phone.sidebar().len(), 2);
    assert_eq!(
        phone.attachment_bytes(&attachment).await.expect("read"),
        scan
    );
}

/// Refuses every blob upload for good, as a server over its quota would.
#[derive(Debug)]
struct RefuseBlobs(DynStorage);

#[async_trait]
impl LayeredStorage for RefuseBlobs {
    fn inner(&self) -> &dyn Storage {
        &*self.0
    }

    async fn put_blob(&self, _id: BlobId, _sealed: Bytes) -> chatvault::Result<()> {
        Err(Error::Rejected {
            code: "403".to_string(),
            message: "blob quota exceeded".to_string(),
        })
    }
}

/// Stores records only, as a custom backend without the blob methods.
#[derive(Debug)]
struct NoBlobs(DynStorage);

#[async_trait]
impl LayeredStorage for NoBlobs {
    fn inner(&self) -> &dyn Storage {
        &*self.0
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            blobs: false,
            ..self.0.capabilities()
        }
    }
}

#[tokio::test]
async fn an_attachment_the_server_refuses_holds_only_its_own_chat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = folder(dir.path());
    let laptop = open_on(dir.path(), "laptop", Arc::new(RefuseBlobs(server.clone()))).await;
    let mut events = laptop.changes();
    let held = laptop.new_chat("Held").await.expect("new chat").id;
    let free = laptop.new_chat("Free").await.expect("new chat").id;
    let attachment = laptop
        .attach(held, &b"receipt"[..], "receipt.txt", "text/plain")
        .await
        .expect("attach");
    laptop
        .add_message_with_attachments(held, Role::User, "receipt", vec![attachment])
        .await
        .expect("send");
    laptop
        .add_message(free, Role::User, "unrelated")
        .await
        .expect("write");
    let err = laptop
        .sync_now()
        .await
        .expect_err("the refusal is reported");
    assert!(matches!(err, Error::Rejected { .. }), "{err}");
    let mut reported = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::PushRefused { chats, reason } = event {
            assert!(reason.contains("blob quota exceeded"), "{reason}");
            reported.extend(chats);
        }
    }
    assert_eq!(reported, vec![held]);

    let phone = open_on(dir.path(), "phone", server).await;
    phone.sync_now().await.expect("sync the phone");
    let titles: Vec<String> = phone.sidebar().iter().map(|s| s.title.clone()).collect();
    assert_eq!(titles, vec!["Free".to_string()]);
}

#[tokio::test]
async fn a_backend_without_blobs_refuses_attachments_with_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let laptop = open_on(dir.path(), "laptop", Arc::new(NoBlobs(folder(dir.path())))).await;
    let chat = laptop.new_chat("Text only").await.expect("new chat").id;
    let err = laptop
        .attach(chat, &b"bytes"[..], "a.txt", "text/plain")
        .await
        .expect_err("no blobs");
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    // Text still syncs.
    laptop
        .add_message(chat, Role::User, "still fine")
        .await
        .expect("write");
    laptop.sync_now().await.expect("sync");
}

#[tokio::test]
async fn a_tampered_chunk_is_refused_and_never_written_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = folder(dir.path());
    let laptop = open_on(dir.path(), "laptop", server.clone()).await;
    let chat = laptop.new_chat("Secret").await.expect("new chat").id;
    let data = noise(1_500_000, 4);
    let attachment = send_file(&laptop, chat, &data, "secret.bin").await;

    // Flip one byte of every stored chunk except the manifest.
    let stored = files_under(&dir.path().join("server"));
    let manifest = attachment.id.to_string();
    let mut flipped = 0;
    for path in stored {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.len() == 64 && name != manifest && path.to_string_lossy().contains("blob") {
            let mut bytes = std::fs::read(&path).expect("read a blob");
            let middle = bytes.len() / 2;
            bytes[middle] ^= 1;
            std::fs::write(&path, bytes).expect("tamper");
            flipped += 1;
        }
    }
    assert_eq!(flipped, 2);

    let phone = open_on(dir.path(), "phone", server).await;
    phone.sync_now().await.expect("sync the phone");
    let target = dir.path().join("secret.bin");
    let err = phone
        .save_attachment(&attachment, &target)
        .await
        .expect_err("tampered");
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
    assert!(!target.exists(), "an unverified file was written out");
}

#[tokio::test]
async fn the_attachment_cache_stays_within_its_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = folder(dir.path());
    let laptop = open_on(dir.path(), "laptop", server.clone()).await;
    let chat = laptop.new_chat("Big").await.expect("new chat").id;
    let data = noise(4_500_000, 5);
    let attachment = send_file(&laptop, chat, &data, "big.bin").await;

    let budget = 2_500_000;
    let phone = ChatVault::builder()
        .storage(server)
        .replica_path(dir.path().join("phone.redb"))
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .attachment_cache_bytes(budget)
        .open()
        .await
        .expect("open the phone");
    phone.sync_now().await.expect("sync the phone");
    for _ in 0..2 {
        assert_eq!(
            phone.attachment_bytes(&attachment).await.expect("read"),
            data
        );
        let cached = phone
            .engine()
            .blob_dir()
            .bytes()
            .expect("measure the cache");
        assert!(
            cached <= budget,
            "{cached} bytes cached over a {budget} budget"
        );
        assert!(cached > 0, "nothing was cached");
    }
}

#[tokio::test]
async fn a_key_that_seals_an_attachment_is_not_retired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = folder(dir.path());
    let laptop = open_on(dir.path(), "laptop", server.clone()).await;
    let chat = laptop
        .new_chat("Before the rotation")
        .await
        .expect("new chat")
        .id;
    let data = noise(1_200_000, 6);
    let attachment = send_file(&laptop, chat, &data, "old.bin").await;

    assert_eq!(laptop.rotate_key().await.expect("rotate"), 2);
    loop {
        if laptop.reseal_stale(100).await.expect("reseal").remaining == 0 {
            break;
        }
    }
    // Every record is under key 2 now, but the chunks stay under key 1.
    assert_eq!(
        laptop.retire_unused_keys().await.expect("retire"),
        Vec::<u32>::new()
    );
    assert_eq!(laptop.cipher().key_ids(), vec![1, 2]);

    let phone = open_on(dir.path(), "phone", server).await;
    phone.sync_now().await.expect("sync the phone");
    assert_eq!(
        phone.attachment_bytes(&attachment).await.expect("read"),
        data
    );
}

fn bytes_under(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn one_file_in_ten_chats_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = folder(dir.path());
    let laptop = open_on(dir.path(), "laptop", server.clone()).await;
    let data = noise(5_000_000, 7);
    for i in 0..10 {
        let chat = laptop
            .new_chat(format!("chat {i}"))
            .await
            .expect("new chat")
            .id;
        let attachment = laptop
            .attach(chat, &data[..], "report.pdf", "application/pdf")
            .await
            .expect("attach");
        laptop
            .add_message_with_attachments(chat, Role::User, "the report", vec![attachment])
            .await
            .expect("send");
    }
    laptop.sync_now().await.expect("sync");
    assert_eq!(
        stored_blobs(&server).await.len(),
        6,
        "5 chunks and one manifest"
    );
    let blob_bytes: u64 = files_under(&dir.path().join("server"))
        .iter()
        .filter(|p| p.to_string_lossy().contains("/blob/"))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let limit = data.len() as u64 * 105 / 100;
    assert!(
        blob_bytes <= limit,
        "{blob_bytes} blob bytes stored for one {}-byte file in ten chats",
        data.len()
    );
    assert!(bytes_under(&dir.path().join("server")) > blob_bytes);
}

#[tokio::test]
async fn a_new_device_syncs_a_chat_with_a_hundred_images_without_fetching_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = folder(dir.path());
    let laptop = open_on(dir.path(), "laptop", server.clone()).await;
    let chat = laptop.new_chat("Photos").await.expect("new chat").id;
    let mut attachments = Vec::new();
    for i in 0..100 {
        let image = noise(2_000 + i * 10, i as u64 + 100);
        attachments.push(
            laptop
                .attach(chat, &image[..], format!("img{i}.png"), "image/png")
                .await
                .expect("attach"),
        );
    }
    for (i, group) in attachments.chunks(10).enumerate() {
        laptop
            .add_message_with_attachments(chat, Role::User, format!("batch {i}"), group.to_vec())
            .await
            .expect("send");
    }
    laptop.sync_now().await.expect("sync");

    let counted = FaultyStorage::new(server);
    let phone = open_on(dir.path(), "phone", counted.clone()).await;
    phone.sync_now().await.expect("sync the phone");
    let full = phone.load_full_chat(chat).await.expect("load");
    assert_eq!(full.messages().len(), 10);
    assert_eq!(phone.attachments(chat).await.expect("list").len(), 100);
    assert_eq!(phone.sidebar()[0].message_count, 10);
    assert_eq!(counted.calls(Op::GetBlob), 0, "the text waited for bytes");
    assert_eq!(counted.calls(Op::ListBlobs), 0);
    // Reading one image fetches only its blobs (one chunk and a manifest).
    phone
        .attachment_bytes(&attachments[42])
        .await
        .expect("read");
    assert_eq!(counted.calls(Op::GetBlob), 2);
}

/// A ChatGPT export zip: the project's `conversations.json` fixture (a
/// message with `file-service://file-abc`, also listed in its
/// `metadata.attachments`) and that image's file.
fn chatgpt_zip(path: &Path, image: &[u8]) {
    use std::io::Write;
    let json = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chatgpt-conversations.json"),
    )
    .expect("the fixture");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).expect("create the zip"));
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("conversations.json", options)
        .expect("entry");
    zip.write_all(&json).expect("write");
    zip.start_file("file-abc-map.png", options).expect("entry");
    zip.write_all(image).expect("write");
    zip.finish().expect("finish the zip");
}

#[tokio::test]
async fn a_chatgpt_export_zip_imports_its_images_and_another_device_gets_the_same_bytes() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = folder(dir.path());
    let laptop = open_on(dir.path(), "laptop", server.clone()).await;
    let image = noise(1_300_000, 8);
    let export = dir.path().join("chatgpt-export.zip");
    chatgpt_zip(&export, &image);

    let (report, _, attached) = laptop
        .import_file(&export, chatvault::ImportOptions::default())
        .await
        .expect("import");
    assert_eq!(attached, 1);
    assert!(report.added > 0);
    // Importing again adds nothing.
    let (again, _, _) = laptop
        .import_file(&export, chatvault::ImportOptions::default())
        .await
        .expect("import again");
    assert_eq!((again.added, again.updated), (0, 0));
    laptop.sync_now().await.expect("sync");

    let phone = open_on(dir.path(), "phone", server).await;
    phone.sync_now().await.expect("sync the phone");
    let chat = phone
        .sidebar()
        .iter()
        .find(|s| s.title.contains("München"))
        .map(|s| s.id)
        .expect("the imported chat");
    let listed = phone.attachments(chat).await.expect("list");
    assert_eq!(listed.len(), 1);
    let (message, attachment) = &listed[0];
    assert_eq!(attachment.name, "map.png");
    assert_eq!(attachment.media_type, "image/png");
    let full = phone.load_full_chat(chat).await.expect("load");
    let text = full.messages[message].content();
    assert!(
        !text.contains("[image]") && !text.contains("[file:"),
        "{text}"
    );
    assert!(text.contains("München"), "{text}");
    let saved = dir.path().join("map.png");
    phone
        .save_attachment(attachment, &saved)
        .await
        .expect("save");
    let got = Sha256::digest(std::fs::read(&saved).expect("read"));
    assert_eq!(got, Sha256::digest(&image));

    // The same export read without its files keeps the placeholders.
    let (chats, _) = chatvault::import::read(&export).expect("read");
    let placeholder = chats
        .iter()
        .flat_map(|c| c.all_messages())
        .any(|m| m.content().contains("[image]"));
    assert!(placeholder);
}

#[tokio::test]
async fn a_torn_cache_entry_is_fetched_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = folder(dir.path());
    let laptop = open_on(dir.path(), "laptop", server.clone()).await;
    let chat = laptop.new_chat("Cached").await.expect("new chat").id;
    let data = noise(1_100_000, 9);
    let attachment = send_file(&laptop, chat, &data, "c.bin").await;
    let phone = open_on(dir.path(), "phone", server).await;
    phone.sync_now().await.expect("sync the phone");
    assert_eq!(
        phone.attachment_bytes(&attachment).await.expect("read"),
        data
    );
    // A crash while the cache wrote left entries empty or torn.
    let cache = phone.engine().blob_dir().path().join("sealed");
    let entries = files_under(&cache);
    assert_eq!(entries.len(), 3, "two chunks and the manifest are cached");
    std::fs::write(&entries[0], b"").expect("empty one");
    let torn = std::fs::read(&entries[1]).expect("read one");
    std::fs::write(&entries[1], &torn[..torn.len() / 2]).expect("tear one");
    assert_eq!(
        phone
            .attachment_bytes(&attachment)
            .await
            .expect("read again"),
        data
    );
}

#[tokio::test]
async fn a_reference_from_another_vault_is_refused_before_a_message_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mine = open_on(dir.path(), "mine", folder(dir.path())).await;
    let other_dir = tempfile::tempdir().expect("tempdir");
    let theirs = open_on(other_dir.path(), "theirs", folder(other_dir.path())).await;
    let chat = mine.new_chat("Mine").await.expect("new chat").id;
    let their_chat = theirs.new_chat("Theirs").await.expect("new chat").id;
    let foreign = theirs
        .attach(their_chat, &b"not yours"[..], "x.txt", "text/plain")
        .await
        .expect("attach");
    theirs.sync_now().await.expect("sync");
    let err = mine
        .add_message_with_attachments(chat, Role::User, "stolen", vec![foreign])
        .await
        .expect_err("another vault's attachment");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    // A size that disagrees with the manifest is refused too.
    let own = mine
        .attach(chat, &b"mine"[..], "m.txt", "text/plain")
        .await
        .expect("attach");
    let wrong = chatvault::Attachment {
        size: 5,
        ..own.clone()
    };
    let err = mine
        .add_message_with_attachments(chat, Role::User, "", vec![wrong])
        .await
        .expect_err("wrong size");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    mine.add_message_with_attachments(chat, Role::User, "", vec![own])
        .await
        .expect("its own attachment");
    assert_eq!(
        mine.load_full_chat(chat)
            .await
            .expect("load")
            .messages()
            .len(),
        1
    );
}

/// Holds every blob upload until the test lets it go, saying when the
/// first one began.
#[derive(Debug)]
struct GatedBlobs {
    inner: DynStorage,
    entered: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl LayeredStorage for GatedBlobs {
    fn inner(&self) -> &dyn Storage {
        &*self.inner
    }

    async fn put_blob(&self, id: BlobId, sealed: Bytes) -> chatvault::Result<()> {
        self.entered.notify_one();
        self.release
            .acquire()
            .await
            .expect("the gate stays open")
            .forget();
        self.inner.put_blob(id, sealed).await
    }
}

// Found while writing the attachment crash trials: a push listed the staged
// attachments when it began, so a message whose file was attached while
// that upload ran went out with the push's records, before its blobs.
#[tokio::test]
async fn a_file_attached_while_a_push_uploads_waits_for_the_next_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = folder(dir.path());
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let gated = Arc::new(GatedBlobs {
        inner: server.clone(),
        entered: entered.clone(),
        release: release.clone(),
    });
    let laptop = Arc::new(open_on(dir.path(), "laptop", gated).await);
    let chat = laptop.new_chat("Photos").await.expect("new chat").id;
    let first = laptop
        .attach(chat, &noise(1_000, 1)[..], "first.jpg", "image/jpeg")
        .await
        .expect("attach");
    laptop
        .add_message_with_attachments(chat, Role::User, "first", vec![first])
        .await
        .expect("send");
    let syncing = laptop.clone();
    let sync = tokio::spawn(async move { syncing.sync_now().await });
    entered.notified().await;

    // The push is uploading the first file: attach and send a second one.
    let late = noise(2_000, 2);
    let second = laptop
        .attach(chat, &late[..], "second.jpg", "image/jpeg")
        .await
        .expect("attach during the upload");
    laptop
        .add_message_with_attachments(chat, Role::User, "second", vec![second.clone()])
        .await
        .expect("send during the upload");
    release.add_permits(1_000);
    sync.await.expect("the sync task").expect("sync");

    // Whatever that push sent, every attachment another device sees reads.
    let phone = open_on(dir.path(), "phone", server.clone()).await;
    phone.sync_now().await.expect("sync the phone");
    for (message, attachment) in phone.attachments(chat).await.unwrap_or_default() {
        phone
            .attachment_bytes(&attachment)
            .await
            .unwrap_or_else(|e| panic!("message {message} is on the server before its file: {e}"));
    }
    // The next push sends the second file, then the message.
    laptop.sync_now().await.expect("sync again");
    assert_eq!(laptop.pending_changes().expect("pending"), 0);
    phone.sync_now().await.expect("sync the phone again");
    let attachments = phone.attachments(chat).await.expect("attachments");
    assert_eq!(attachments.len(), 2);
    assert_eq!(phone.attachment_bytes(&second).await.expect("read"), late);
}

// The same file attached to several chats at once: every attach succeeds
// and every chat waits for the upload. Before the fix, the tasks staging
// one blob shared one temporary file name (one attach failed with
// NotFound when another renamed it away, or a torn blob could be staged),
// and the upload marker was read, changed and written back without a
// lock, so concurrent attaches dropped each other's chat from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_file_attached_to_chats_at_once_holds_every_chat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = folder(dir.path());
    let laptop = Arc::new(open_on(dir.path(), "laptop", server).await);
    let mut chats = Vec::new();
    for i in 0..16 {
        chats.push(
            laptop
                .new_chat(format!("chat {i}"))
                .await
                .expect("new chat")
                .id,
        );
    }
    let file = Arc::new(noise(3_000, 4));
    let attaches = chats.iter().map(|&chat| {
        let laptop = laptop.clone();
        let file = file.clone();
        tokio::spawn(async move {
            laptop
                .attach(chat, &file[..], "same.bin", "application/octet-stream")
                .await
        })
    });
    for attached in futures::future::join_all(attaches).await {
        attached.expect("the task").expect("attach");
    }
    let waiting = laptop
        .engine()
        .blob_dir()
        .waiting_chats()
        .expect("waiting chats");
    for chat in &chats {
        assert!(
            waiting.contains(chat),
            "{chat} does not wait for the upload"
        );
    }
}

/// `open_on` with garbage collection's grace period set to `grace`.
async fn open_with_grace(
    dir: &Path,
    device: &str,
    storage: DynStorage,
    grace: std::time::Duration,
) -> ChatVault {
    ChatVault::builder()
        .storage(storage)
        .replica_path(dir.join(format!("{device}.redb")))
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .auto_maintenance(None)
        .blob_grace(grace)
        .open()
        .await
        .expect("open the vault")
}

#[tokio::test]
async fn collection_deletes_unnamed_blobs_after_the_grace_period_and_keeps_named_ones() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough that the early run below sees nothing past it on a slow
    // machine.
    let grace = std::time::Duration::from_secs(10);
    let storage = folder(dir.path());
    let phone = open_with_grace(dir.path(), "phone", storage.clone(), grace).await;
    let chat = phone.new_chat("files").await.unwrap().id;
    let kept = send_file(&phone, chat, &noise(1_500_000, 1), "kept.bin").await;
    let deleted = send_file(&phone, chat, &noise(1_500_000, 2), "deleted.bin").await;
    // Attached, never sent.
    let _never_sent = phone
        .attach(
            chat,
            &noise(900_000, 3)[..],
            "draft.bin",
            "application/octet-stream",
        )
        .await
        .unwrap();
    let loaded = phone.load_full_chat(chat).await.unwrap();
    let carrying = loaded
        .attachments()
        .into_iter()
        .find(|(_, a)| a.id == deleted.id)
        .map(|(m, _)| m)
        .unwrap();
    phone.delete_message(chat, carrying).await.unwrap();
    phone.sync_now().await.unwrap();
    let before = stored_blobs(&storage).await;
    // kept: 2 chunks + manifest; deleted: 2 + 1; never sent: 1 + 1.
    assert_eq!(before.len(), 8, "every blob was uploaded");

    // Within the grace period nothing goes, named or not.
    let laptop = open_with_grace(dir.path(), "laptop", storage.clone(), grace).await;
    let early = laptop.collect_attachments().await.unwrap();
    assert_eq!(early.deleted, 0, "{early:?}");
    assert_eq!(stored_blobs(&storage).await.len(), 8);

    tokio::time::sleep(grace + std::time::Duration::from_millis(500)).await;
    let run = laptop.collect_attachments().await.unwrap();
    assert_eq!(run.stopped, None);
    assert_eq!(run.listed, 8);
    assert_eq!(run.candidates, 8, "all eight are past the grace period");
    assert_eq!(run.referenced, 3, "the sent file's chunks and manifest");
    assert_eq!(run.deleted, 5, "the deleted message's file and the draft");
    assert_eq!(stored_blobs(&storage).await.len(), 3);
    // The named file still reads, on a device that never held it.
    let tablet = open_with_grace(dir.path(), "tablet", storage.clone(), grace).await;
    tablet.sync_now().await.unwrap();
    assert_eq!(
        tablet.attachment_bytes(&kept).await.unwrap(),
        noise(1_500_000, 1)
    );
    let gone = tablet.attachment_bytes(&deleted).await.unwrap_err();
    assert!(matches!(gone, Error::NotFound { .. }), "{gone:?}");
    // A second run finds nothing more.
    let again = laptop.collect_attachments().await.unwrap();
    assert_eq!((again.candidates, again.deleted), (3, 0), "{again:?}");
}

#[tokio::test]
async fn a_message_naming_an_old_attachment_puts_it_again_before_it_is_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let grace = std::time::Duration::from_secs(2);
    let storage = folder(dir.path());
    let phone = open_with_grace(dir.path(), "phone", storage.clone(), grace).await;
    let chat = phone.new_chat("files").await.unwrap().id;
    let data = noise(1_200_000, 7);
    let file = send_file(&phone, chat, &data, "photo.jpg").await;
    // The only message naming it goes: the blobs are garbage for now.
    let carrying = phone.load_full_chat(chat).await.unwrap().attachments()[0].0;
    phone.delete_message(chat, carrying).await.unwrap();
    phone.sync_now().await.unwrap();

    // Past half the grace period the phone names it again, offline: the
    // lease of its last put ran out, so the record must wait for a new put.
    tokio::time::sleep(grace / 2 + std::time::Duration::from_millis(300)).await;
    let other = phone.new_chat("forwarded").await.unwrap().id;
    phone
        .add_message_with_attachments(other, Role::User, "again", vec![file.clone()])
        .await
        .unwrap();

    // Meanwhile another device collects: nothing names the blobs on the
    // server, and they are past the grace period.
    tokio::time::sleep(grace / 2 + std::time::Duration::from_millis(300)).await;
    let laptop = open_with_grace(dir.path(), "laptop", storage.clone(), grace).await;
    let run = laptop.collect_attachments().await.unwrap();
    assert_eq!(
        run.deleted, 3,
        "the collector deleted the unnamed blobs: {run:?}"
    );
    assert!(stored_blobs(&storage).await.is_empty());

    // The phone's push puts them back from its own copy before the record.
    phone.sync_now().await.unwrap();
    assert_eq!(stored_blobs(&storage).await.len(), 3, "put again");
    laptop.sync_now().await.unwrap();
    let named = laptop.attachments(other).await.unwrap();
    assert_eq!(named.len(), 1);
    assert_eq!(laptop.attachment_bytes(&named[0].1).await.unwrap(), data);
    // And now that a chat names them, a collection keeps them.
    tokio::time::sleep(grace + std::time::Duration::from_millis(300)).await;
    let run = laptop.collect_attachments().await.unwrap();
    assert_eq!((run.referenced, run.deleted), (3, 0), "{run:?}");
}

#[tokio::test]
async fn blobs_a_collector_deletes_just_after_their_put_are_put_back_by_the_check_after_the_push() {
    let dir = tempfile::tempdir().unwrap();
    // The check is due a quarter of it after the put: 5 s, so the sync
    // right after the deletion comes before it even on a slow machine.
    let grace = std::time::Duration::from_secs(20);
    let storage = folder(dir.path());
    let phone = open_with_grace(dir.path(), "phone", storage.clone(), grace).await;
    let chat = phone.new_chat("files").await.unwrap().id;
    let data = noise(1_100_000, 11);
    let file = send_file(&phone, chat, &data, "scan.pdf").await;
    // A collector that listed just before the put deletes the blobs in the
    // instant after it: the record naming them is already on the server.
    let stored = stored_blobs(&storage).await;
    assert_eq!(stored.len(), 3);
    for id in &stored {
        storage.delete_blob(*id).await.unwrap();
    }
    // Before the check is due, a sync leaves things be.
    phone.sync_now().await.unwrap();
    assert!(stored_blobs(&storage).await.is_empty());
    tokio::time::sleep(chatvault::core::attachments::verify_after(grace)).await;
    phone.sync_now().await.unwrap();
    assert_eq!(
        stored_blobs(&storage).await,
        stored,
        "put back from the phone's copy"
    );
    let laptop = open_with_grace(dir.path(), "laptop", storage.clone(), grace).await;
    laptop.sync_now().await.unwrap();
    assert_eq!(laptop.attachment_bytes(&file).await.unwrap(), data);
    // Checked once: deleting them again is not noticed by this device.
    for id in &stored {
        storage.delete_blob(*id).await.unwrap();
    }
    tokio::time::sleep(chatvault::core::attachments::verify_after(grace)).await;
    phone.sync_now().await.unwrap();
    assert!(stored_blobs(&storage).await.is_empty());
}

#[tokio::test]
async fn reopening_removes_what_a_killed_attach_left_half_staged() {
    let dir = tempfile::tempdir().unwrap();
    let storage = folder(dir.path());
    let phone = open_on(dir.path(), "phone", storage.clone()).await;
    let chat = phone.new_chat("files").await.unwrap().id;
    let file = send_file(&phone, chat, &noise(300_000, 5), "kept.bin").await;
    let blobs = phone.engine().blob_dir().path().to_path_buf();
    phone.close().await;
    // A process killed inside staging: temporary files, and a marker whose
    // blob never got its final name.
    let orphan = BlobId([0x5a; 32]);
    let leftovers = [
        blobs
            .join("sealed")
            .join(format!(".{orphan}.4242.0.staged")),
        blobs.join("sealed").join(format!(".{orphan}.4242.1.tmp")),
        blobs.join("outgoing").join(format!(".{orphan}.4242.2.tmp")),
        blobs.join("pending").join(orphan.to_string()),
    ];
    for path in &leftovers {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }
    // A re-touch marker for a blob only the server holds is not an orphan.
    let retouch = blobs.join("pending").join(BlobId([0x6b; 32]).to_string());
    std::fs::write(&retouch, b"r").unwrap();
    let phone = open_on(dir.path(), "phone", storage).await;
    for path in &leftovers {
        assert!(!path.exists(), "{} is left", path.display());
    }
    assert!(retouch.exists(), "a re-touch marker stays");
    assert_eq!(
        phone.attachment_bytes(&file).await.unwrap(),
        noise(300_000, 5)
    );
}
