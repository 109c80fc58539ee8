//! The sealed sidebar snapshot (docs/design.md §8): a clean reopen shows
//! the sidebar from one sealed blob, exactly as the per-record scan would;
//! any change after it (save, delete, pulled record) makes it stale; a
//! snapshot that does not open or decode, or that another key sealed, is
//! passed over for the scan, never an error.

use chatvault::core::engine::{Engine, EngineConfig};
use chatvault::core::envelope::EnvelopeCipher;
use chatvault::core::{Aad, ChatSummary, Cipher, DeviceId, Replica};
use chatvault::{Chat, ChatId, DynStorage, VaultId};
use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
use object_store::{memory::InMemory, path::Path as StorePath};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The reserved chat id prefix the chunks of a snapshot are bound to.
const SNAPSHOT: &[u8; 12] = b"sidebar-snap";

fn is_snapshot(aad: &Aad) -> bool {
    aad.chat.as_bytes().starts_with(SNAPSHOT)
}

fn in_memory() -> DynStorage {
    Arc::new(ObjectStoreStorage::new(
        Arc::new(InMemory::new()),
        StorePath::from("vault"),
        ObjectStoreOptions::default(),
    ))
}

/// The vault's cipher, counting what it opens, and able to refuse to seal
/// a snapshot (a process killed before writing one), to refuse to open
/// one, or to seal garbage in its place.
#[derive(Debug)]
struct Watched {
    inner: Arc<EnvelopeCipher>,
    snapshot_opens: AtomicUsize,
    summary_opens: AtomicUsize,
    no_snapshot_writes: AtomicBool,
    no_snapshot_opens: AtomicBool,
    garbage_snapshots: AtomicBool,
}

impl Watched {
    fn new(inner: Arc<EnvelopeCipher>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            snapshot_opens: AtomicUsize::new(0),
            summary_opens: AtomicUsize::new(0),
            no_snapshot_writes: AtomicBool::new(false),
            no_snapshot_opens: AtomicBool::new(false),
            garbage_snapshots: AtomicBool::new(false),
        })
    }

    /// (snapshot opens, summary opens) since the last call.
    fn opens(&self) -> (usize, usize) {
        (
            self.snapshot_opens.swap(0, Ordering::SeqCst),
            self.summary_opens.swap(0, Ordering::SeqCst),
        )
    }
}

impl Cipher for Watched {
    fn seal(&self, aad: &Aad, plaintext: &[u8]) -> chatvault::Result<Vec<u8>> {
        if is_snapshot(aad) {
            if self.no_snapshot_writes.load(Ordering::SeqCst) {
                return Err(chatvault::Error::invalid("killed before the snapshot"));
            }
            if self.garbage_snapshots.load(Ordering::SeqCst) {
                // Every entry decodes, then one byte too many.
                let mut damaged = plaintext.to_vec();
                damaged.push(0);
                return self.inner.seal(aad, &damaged);
            }
        }
        self.inner.seal(aad, plaintext)
    }

    fn open(&self, aad: &Aad, sealed: &[u8]) -> chatvault::Result<Vec<u8>> {
        if is_snapshot(aad) {
            self.snapshot_opens.fetch_add(1, Ordering::SeqCst);
            if self.no_snapshot_opens.load(Ordering::SeqCst) {
                return Err(chatvault::Error::Tampered {
                    what: "sidebar snapshot".into(),
                });
            }
        } else if aad.part == chatvault::core::Part::Summary {
            self.summary_opens.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.open(aad, sealed)
    }

    fn sealed_key_id(&self, sealed: &[u8]) -> chatvault::Result<Option<u32>> {
        self.inner.sealed_key_id(sealed)
    }
}

async fn engine(
    storage: &DynStorage,
    replica: &Path,
    cipher: Arc<dyn Cipher>,
    vault: VaultId,
) -> Engine {
    let replica = Replica::open(replica).expect("replica");
    Engine::open(
        storage.clone(),
        replica,
        cipher,
        EngineConfig::new(vault, DeviceId(7)),
    )
    .await
    .expect("engine")
}

async fn save(engine: &Engine, title: &str) -> ChatId {
    let chat = Chat::new(ChatId::new(), title, engine.clock().tick());
    let id = chat.id;
    engine.save_chat(chat).await.expect("save");
    id
}

fn titles(sidebar: &[ChatSummary]) -> Vec<String> {
    sidebar.iter().map(|s| s.title.clone()).collect()
}

struct Setup {
    dir: tempfile::TempDir,
    storage: DynStorage,
    keys: Arc<EnvelopeCipher>,
    cipher: Arc<Watched>,
}

impl Setup {
    fn new() -> Self {
        let keys = Arc::new(EnvelopeCipher::generate(VaultId::new()));
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            storage: in_memory(),
            cipher: Watched::new(keys.clone()),
            keys,
        }
    }

    async fn open(&self) -> Engine {
        engine(
            &self.storage,
            &self.dir.path().join("replica.redb"),
            self.cipher.clone(),
            self.keys.vault(),
        )
        .await
    }
}

#[tokio::test]
async fn a_snapshot_of_several_chunks_opens_chunk_by_chunk_and_shows_every_chat() {
    // Chunks hold 4,096 summaries: two chunks, the second one short.
    const CHATS: usize = 4096 + 10;
    let s = Setup::new();
    let first = s.open().await;
    let chats: Vec<Chat> = (0..CHATS)
        .map(|i| Chat::new(ChatId::new(), format!("chat {i}"), first.clock().tick()))
        .collect();
    first.save_chats(chats).await.expect("save");
    let expected = first.sidebar().to_vec();
    assert_eq!(expected.len(), CHATS);
    drop(first);

    s.cipher.opens();
    let second = s.open().await;
    assert_eq!(s.cipher.opens(), (2, 0), "two chunk opens, no summary open");
    assert_eq!(second.sidebar(), expected);
    // Fewer chats: the snapshot shrinks to one chunk, and still reads.
    for summary in expected.iter().take(11) {
        second.delete_chat(summary.id).await.expect("delete");
    }
    assert!(second.write_sidebar_snapshot().await.expect("write"));
    let fewer = second.sidebar().to_vec();
    assert_eq!(fewer.len(), 4095);
    drop(second);
    s.cipher.opens();
    let third = s.open().await;
    assert_eq!(s.cipher.opens(), (1, 0));
    assert_eq!(third.sidebar(), fewer);
}

#[tokio::test]
async fn a_clean_reopen_reads_the_snapshot_and_shows_what_the_scan_shows() {
    let s = Setup::new();
    let first = s.open().await;
    let mut starred = Chat::new(ChatId::new(), "starred ✨", first.clock().tick());
    starred.star(true, first.clock().tick());
    first.save_chat(starred).await.expect("save");
    for title in ["one", "two", "three"] {
        save(&first, title).await;
    }
    let gone = save(&first, "deleted").await;
    first.delete_chat(gone).await.expect("delete");
    let expected = first.sidebar().to_vec();
    assert_eq!(expected.len(), 4);
    drop(first);

    // Written when the engine closed: the next start opens one blob.
    s.cipher.opens();
    let second = s.open().await;
    assert_eq!(
        s.cipher.opens(),
        (1, 0),
        "one snapshot open, no summary open"
    );
    assert_eq!(second.sidebar(), expected);
    let again = save(&second, "after the snapshot").await;
    drop(second);

    // The scan shows the same sidebar: refuse to open the snapshot.
    s.cipher.no_snapshot_opens.store(true, Ordering::SeqCst);
    let scanned = s.open().await;
    let (snapshots, summaries) = s.cipher.opens();
    assert_eq!(
        (snapshots, summaries),
        (1, 5),
        "refused, then every live summary"
    );
    assert_eq!(
        scanned.summary(again).map(|s| s.title).as_deref(),
        Some("after the snapshot")
    );
    let mut with_new = scanned.sidebar().to_vec();
    with_new.retain(|c| c.id != again);
    assert_eq!(with_new, expected);
    drop(scanned);

    // Closing after the scan wrote the snapshot again: used next time.
    s.cipher.no_snapshot_opens.store(false, Ordering::SeqCst);
    let third = s.open().await;
    assert_eq!(s.cipher.opens(), (1, 0));
    assert_eq!(third.sidebar().len(), 5);
}

#[tokio::test]
async fn a_save_a_delete_or_a_pulled_change_after_the_snapshot_makes_it_stale() {
    let s = Setup::new();
    let first = s.open().await;
    let kept = save(&first, "kept").await;
    let doomed = save(&first, "doomed").await;
    first.sync_now().await.expect("push");
    drop(first);

    // A device that dies without writing a new snapshot: each change below
    // leaves the old one in the replica, stale.
    s.cipher.no_snapshot_writes.store(true, Ordering::SeqCst);
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = engine(
        &s.storage,
        &other_dir.path().join("other.redb"),
        s.keys.clone(),
        s.keys.vault(),
    )
    .await;

    type Change = Box<dyn Fn(Engine) -> futures::future::BoxFuture<'static, Option<String>>>;
    let other_for_pull = other.clone();
    let changes: Vec<(&str, Change)> = vec![
        (
            "save",
            Box::new(|e: Engine| {
                Box::pin(async move {
                    save(&e, "saved after").await;
                    Some("saved after".to_string())
                })
            }),
        ),
        (
            "delete",
            Box::new(move |e: Engine| {
                Box::pin(async move {
                    e.delete_chat(doomed).await.expect("delete");
                    None
                })
            }),
        ),
        (
            "pull",
            Box::new(move |e: Engine| {
                let other = other_for_pull.clone();
                Box::pin(async move {
                    save(&other, "pulled").await;
                    other.sync_now().await.expect("push");
                    e.sync_now().await.expect("pull");
                    Some("pulled".to_string())
                })
            }),
        ),
    ];
    for (what, change) in changes {
        // A fresh snapshot first; then the process "dies" after the change.
        s.cipher.no_snapshot_writes.store(false, Ordering::SeqCst);
        let engine = s.open().await;
        engine.write_sidebar_snapshot().await.expect("snapshot");
        drop(engine);
        s.cipher.opens();
        let engine = s.open().await;
        assert_eq!(
            s.cipher.opens(),
            (1, 0),
            "{what}: the fresh snapshot is used"
        );
        s.cipher.no_snapshot_writes.store(true, Ordering::SeqCst);
        let before = engine.sidebar().to_vec();
        let title = change(engine.clone()).await;
        let after = engine.sidebar().to_vec();
        assert_ne!(before, after, "{what} changed the sidebar");
        drop(engine);
        s.cipher.opens();
        let reopened = s.open().await;
        let (snapshots, summaries) = s.cipher.opens();
        assert_eq!(
            snapshots, 0,
            "{what}: the stale snapshot is not even opened"
        );
        assert_eq!(summaries, after.len(), "{what}: every live summary opened");
        assert_eq!(reopened.sidebar(), after, "{what}");
        if let Some(title) = title {
            assert!(titles(&after).contains(&title), "{what}");
        }
        assert!(reopened.summary(kept).is_some());
    }
    assert!(s.open().await.summary(doomed).is_none());
}

#[tokio::test]
async fn a_snapshot_that_does_not_decode_or_open_falls_back_to_the_scan() {
    let s = Setup::new();
    let first = s.open().await;
    save(&first, "one").await;
    save(&first, "two").await;
    let expected = first.sidebar().to_vec();
    // Sealed properly, but what it holds is damaged after the last entry.
    s.cipher.garbage_snapshots.store(true, Ordering::SeqCst);
    assert!(first.write_sidebar_snapshot().await.expect("written"));
    assert!(!first.write_sidebar_snapshot().await.expect("nothing new"));
    drop(first);
    s.cipher.opens();
    let second = s.open().await;
    assert_eq!(s.cipher.opens(), (1, 2), "tried, then scanned");
    assert_eq!(second.sidebar(), expected);
    drop(second);

    // A snapshot sealed under another key of the same vault does not open
    // either: the engine opens, the sidebar is the scan's (empty here, as
    // the summaries do not open under that key either).
    let stranger = Arc::new(EnvelopeCipher::generate(s.keys.vault()));
    let other = engine(
        &s.storage,
        &s.dir.path().join("replica.redb"),
        stranger,
        s.keys.vault(),
    )
    .await;
    assert_eq!(other.sidebar().len(), 0);
    drop(other);

    // Back with the right key: the scan, then a good snapshot again.
    s.cipher.garbage_snapshots.store(false, Ordering::SeqCst);
    let third = s.open().await;
    assert_eq!(third.sidebar(), expected);
    drop(third);
    s.cipher.opens();
    let fourth = s.open().await;
    assert_eq!(s.cipher.opens(), (1, 0));
    assert_eq!(fourth.sidebar(), expected);
}
