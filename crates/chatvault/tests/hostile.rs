//! A hostile server, through the `ChatVault` facade: the storage lies (see
//! `chatvault_conformance::layers::Tamper`) and a device must refuse every
//! lie for the affected record only, show no forged plaintext, and keep
//! syncing the rest of the vault.
//!
//! Each case runs on the local folder backend and on the object-store
//! layout over `object_store`'s in-memory store. Two devices share one
//! hostile layer: the writer (A) pushes honestly, the reader (B) pulls what
//! the server chooses to hand out.
//!
//! # What a device detects today
//!
//! Every sealed blob is authenticated with AAD = vault ‖ chat ‖ part ‖
//! version, so these are **detected** and reported as a skipped record
//! ([`SyncReport::skipped`](chatvault::SyncReport)) with a typed error,
//! while the replica keeps the last honest state:
//! - blobs swapped between chats, a body moved to another chat, blobs moved
//!   in from another vault: [`Error::Tampered`] (or
//!   [`Error::UnknownKeyId`] when the other vault's key id is not in this
//!   keyring);
//! - an older blob replayed under a newer version number: `Tampered`;
//! - truncated blobs and flipped bits: `Tampered` (a flip in the blob header
//!   can surface as `UnsupportedFormat`, `UnknownKeyId` or `Corrupt`);
//! - a format byte from the future: [`Error::UnsupportedFormat`].
//!
//! **Rollback** (an older record served with its true, older version): a
//! device that already holds a version refuses anything not newer (the
//! replica's version check in the merge), so its state never goes back; the
//! round reports nothing. What is **not detected** today:
//! - a device that never held the chat (a new device, or one that only saw
//!   an older version) accepts the rolled-back record as the latest: there
//!   is no signed vault-wide version vector, only per-device high-water
//!   marks;
//! - a withheld chat (left out of the feed and of `get`) looks like a chat
//!   that was never written;
//! - after a rolled-back or withheld change, the device's feed cursor has
//!   moved past it: the device catches up when the chat changes again (or
//!   when skipped records are retried), not on its own.
//!
//! **Key-file rollback** (an older key file served after a rotation): a
//! device that holds a newer key file refuses the older one as `Tampered`,
//! both when a running device re-reads the keyring (the round fails with
//! `Tampered` naming the key file, applying nothing) and when it opens; it
//! keeps its keys and its feed cursor, and reads what it could not open
//! once the server stops lying.

use chatvault::core::layer::LayerExt;
use chatvault::{ChatId, ChatVault, DynStorage, Error, Role};
use chatvault_conformance::layers::{HostileLayer, Tamper};
use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
use std::path::Path;
use std::sync::Arc;

const PASSPHRASE: &str = "hostile tests";

#[derive(Copy, Clone, Debug)]
enum Backend {
    Folder,
    InMemory,
}

const BACKENDS: [Backend; 2] = [Backend::Folder, Backend::InMemory];

fn backend(kind: Backend, dir: &Path) -> DynStorage {
    match kind {
        Backend::Folder => {
            Arc::new(chatvault_fs::open(dir.join("server")).expect("open the folder backend"))
        }
        Backend::InMemory => Arc::new(ObjectStoreStorage::new(
            Arc::new(object_store::memory::InMemory::new()),
            object_store::path::Path::from("vault"),
            ObjectStoreOptions::default(),
        )),
    }
}

async fn open(storage: DynStorage, replica: &Path) -> ChatVault {
    ChatVault::builder()
        .storage(storage)
        .replica_path(replica)
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .open()
        .await
        .expect("open the vault")
}

/// Two devices over one hostile server, three chats that B holds in full.
struct World {
    _dir: tempfile::TempDir,
    hostile: HostileLayer,
    server: DynStorage,
    a: ChatVault,
    b: ChatVault,
    x: ChatId,
    y: ChatId,
    z: ChatId,
}

/// What a chat looks like to the application: title and message texts.
async fn view(vault: &ChatVault, chat: ChatId) -> (String, Vec<String>) {
    let full = vault.load_full_chat(chat).await.expect("load the chat");
    (
        full.title().to_string(),
        full.messages()
            .iter()
            .map(|m| m.content().to_string())
            .collect(),
    )
}

async fn world(kind: Backend) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend(kind, dir.path());
    let hostile = HostileLayer::new(14);
    let a = open(
        server.clone().layer(hostile.clone()),
        &dir.path().join("a.redb"),
    )
    .await;
    let b = open(
        server.clone().layer(hostile.clone()),
        &dir.path().join("b.redb"),
    )
    .await;
    let mut ids = Vec::new();
    for name in ["x", "y", "z"] {
        let chat = a.new_chat(format!("chat {name}")).await.expect("new chat");
        a.add_message(chat.id, Role::User, format!("{name} v1"))
            .await
            .expect("save");
        ids.push(chat.id);
    }
    a.sync_now().await.expect("push");
    b.sync_now().await.expect("pull");
    for &chat in &ids {
        view(&b, chat).await;
    }
    // A second honest version of x and y, so there is something to roll
    // back to and something new to lie about.
    for &chat in &ids[..2] {
        a.add_message(chat, Role::Assistant, "second, honest")
            .await
            .expect("save");
    }
    a.sync_now().await.expect("push");
    World {
        _dir: dir,
        hostile,
        server,
        a,
        b,
        x: ids[0],
        y: ids[1],
        z: ids[2],
    }
}

fn is_integrity_error(error: &Error) -> bool {
    matches!(
        error,
        Error::Tampered { .. }
            | Error::UnsupportedFormat { .. }
            | Error::UnknownKeyId { .. }
            | Error::Corrupt { .. }
    )
}

/// Arms `tamper`, lets B sync, and checks: the targets are skipped with an
/// error `expected` accepts, B still shows its last honest state of them,
/// and a change to the untouched chat z still arrives.
async fn refused(w: &World, tamper: Tamper, targets: &[ChatId], expected: fn(&Error) -> bool) {
    let before: Vec<_> = futures::future::join_all(targets.iter().map(|&c| view(&w.b, c))).await;
    w.hostile.arm(tamper.clone());
    let report =
        w.b.sync_now()
            .await
            .expect("a lying server does not fail the round");
    for &chat in targets {
        let skipped = report
            .skipped
            .iter()
            .find(|s| s.chat == chat)
            .unwrap_or_else(|| panic!("{tamper:?}: chat {chat} was not reported: {report:?}"));
        assert!(
            expected(&skipped.error),
            "{tamper:?}: unexpected error {}",
            skipped.error
        );
    }
    assert!(w.hostile.tampered() > 0, "{tamper:?} was never served");
    for (&chat, before) in targets.iter().zip(before) {
        assert_eq!(
            view(&w.b, chat).await,
            before,
            "{tamper:?}: B must keep its last honest state of {chat}"
        );
    }
    still_syncs(w).await;
}

/// A change to the untouched chat z reaches B while the server lies.
async fn still_syncs(w: &World) {
    w.a.add_message(w.z, Role::User, "z still syncs")
        .await
        .expect("save");
    w.a.sync_now().await.expect("push");
    let report = w.b.sync_now().await.expect("pull");
    assert!(
        report.skipped.iter().all(|s| s.chat != w.z),
        "z is honest: {report:?}"
    );
    let (_, texts) = view(&w.b, w.z).await;
    assert_eq!(texts.last().map(String::as_str), Some("z still syncs"));
}

#[tokio::test]
async fn swapped_blobs_of_two_chats_are_refused_as_tampered() {
    for kind in BACKENDS {
        let w = world(kind).await;
        refused(&w, Tamper::SwapBlobs(w.x, w.y), &[w.x, w.y], |e| {
            matches!(e, Error::Tampered { .. })
        })
        .await;
    }
}

#[tokio::test]
async fn a_body_moved_to_another_chat_is_refused_as_tampered() {
    for kind in BACKENDS {
        let w = world(kind).await;
        refused(&w, Tamper::MoveBody { from: w.z, to: w.x }, &[w.x], |e| {
            matches!(e, Error::Tampered { .. })
        })
        .await;
    }
}

#[tokio::test]
async fn blobs_moved_in_from_another_vault_are_refused() {
    for kind in BACKENDS {
        let w = world(kind).await;
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other_server = backend(kind, other_dir.path());
        let other = open(other_server.clone(), &other_dir.path().join("o.redb")).await;
        let foreign = other.new_chat("someone else's").await.expect("chat");
        other
            .add_message(foreign.id, Role::User, "not yours")
            .await
            .expect("save");
        other.sync_now().await.expect("push");
        refused(
            &w,
            Tamper::MoveFromVault {
                chat: w.x,
                from: other_server,
                source: foreign.id,
            },
            &[w.x],
            |e| matches!(e, Error::Tampered { .. } | Error::UnknownKeyId { .. }),
        )
        .await;
    }
}

#[tokio::test]
async fn an_old_blob_replayed_under_a_new_version_is_refused_as_tampered() {
    for kind in BACKENDS {
        let w = world(kind).await;
        refused(&w, Tamper::ReplayAsNew(w.x), &[w.x], |e| {
            matches!(e, Error::Tampered { .. })
        })
        .await;
    }
}

#[tokio::test]
async fn truncated_blobs_are_refused() {
    for kind in BACKENDS {
        let w = world(kind).await;
        refused(&w, Tamper::Truncate(w.x), &[w.x], is_integrity_error).await;
    }
}

#[tokio::test]
async fn flipped_bits_are_refused() {
    for kind in BACKENDS {
        let w = world(kind).await;
        refused(&w, Tamper::FlipBits(w.x), &[w.x], is_integrity_error).await;
    }
}

#[tokio::test]
async fn a_record_claiming_a_future_format_is_unsupported_not_garbage() {
    for kind in BACKENDS {
        let w = world(kind).await;
        refused(&w, Tamper::FutureFormat(w.x), &[w.x], |e| {
            matches!(e, Error::UnsupportedFormat { .. })
        })
        .await;
    }
}

#[tokio::test]
async fn a_rollback_never_takes_a_device_back_to_an_older_version() {
    for kind in BACKENDS {
        let w = world(kind).await;
        // B takes the second version of x, then the server rolls x back to
        // the first while A writes a third.
        w.b.sync_now().await.expect("pull v2");
        let held = view(&w.b, w.x).await;
        assert_eq!(held.1, ["x v1", "second, honest"]);
        w.hostile.arm(Tamper::Rollback(w.x));
        w.a.add_message(w.x, Role::User, "third")
            .await
            .expect("save");
        w.a.sync_now().await.expect("push");
        let report = w.b.sync_now().await.expect("round");
        assert!(report.skipped.is_empty(), "{report:?}");
        assert_eq!(view(&w.b, w.x).await, held, "the older version is refused");
        still_syncs(&w).await;

        // Once the server stops lying, the next change of x arrives whole.
        w.hostile.disarm();
        w.a.add_message(w.x, Role::User, "fourth")
            .await
            .expect("save");
        w.a.sync_now().await.expect("push");
        w.b.sync_now().await.expect("pull");
        assert_eq!(
            view(&w.b, w.x).await.1,
            ["x v1", "second, honest", "third", "fourth"]
        );
    }
}

#[tokio::test]
async fn a_device_that_never_held_a_chat_cannot_tell_a_rollback_from_the_latest() {
    for kind in BACKENDS {
        let w = world(kind).await;
        w.hostile.arm(Tamper::Rollback(w.x));
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = open(
            w.server.clone().layer(w.hostile.clone()),
            &dir.path().join("c.redb"),
        )
        .await;
        let report = fresh.sync_now().await.expect("pull");
        assert!(report.skipped.is_empty(), "{report:?}");
        // Documented gap: the first version (authentic, but old) is accepted.
        assert_eq!(view(&fresh, w.x).await.1, ["x v1"]);
        assert_eq!(view(&fresh, w.y).await.1, ["y v1", "second, honest"]);
    }
}

#[tokio::test]
async fn a_withheld_chat_is_simply_missing_and_the_rest_syncs() {
    for kind in BACKENDS {
        let w = world(kind).await;
        w.hostile.arm(Tamper::Withhold(w.x));
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = open(
            w.server.clone().layer(w.hostile.clone()),
            &dir.path().join("c.redb"),
        )
        .await;
        let report = fresh.sync_now().await.expect("pull");
        assert!(report.skipped.is_empty(), "{report:?}");
        assert!(fresh.sidebar().iter().all(|s| s.id != w.x));
        assert!(matches!(
            fresh.load_full_chat(w.x).await,
            Err(Error::NotFound { .. })
        ));
        assert_eq!(view(&fresh, w.y).await.1, ["y v1", "second, honest"]);
        still_syncs(&w).await;
        w.hostile.disarm();
    }
}

#[tokio::test]
async fn a_rolled_back_key_file_is_refused_and_the_device_keeps_its_keys() {
    for kind in BACKENDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = backend(kind, dir.path());
        // Only B's view of the server lies; A writes honestly.
        let hostile = HostileLayer::new(21);
        let b_replica = dir.path().join("b.redb");
        let a = open(server.clone(), &dir.path().join("a.redb")).await;
        let b = open(server.clone().layer(hostile.clone()), &b_replica).await;
        let chat = a.new_chat("keys").await.expect("new chat").id;
        a.rotate_key().await.expect("rotate to key 2");
        a.add_message(chat, Role::User, "under key 2")
            .await
            .expect("save");
        a.sync_now().await.expect("push");
        b.sync_now().await.expect("pull: B adopts key file 2");
        assert_eq!(view(&b, chat).await.1, vec!["under key 2"]);

        // A rotates again; B, re-reading the keyring for key 3, is served
        // the oldest key file it ever saw.
        a.rotate_key().await.expect("rotate to key 3");
        a.add_message(chat, Role::User, "under key 3")
            .await
            .expect("save");
        a.sync_now().await.expect("push");
        hostile.arm(Tamper::RollbackKeyring);
        // A rolled-back key file is a lie about the whole vault: the round
        // fails with `Tampered` naming the key file (nothing is applied and
        // the feed cursor stays before the record B could not open).
        let round = b.sync_now().await;
        assert!(
            hostile.tampered() > 0,
            "{kind:?}: the old key file was never served"
        );
        match round {
            Err(Error::Tampered { what }) => assert!(what.contains("key file"), "{kind:?}: {what}"),
            other => panic!("{kind:?}: a rolled-back key file must be refused: {other:?}"),
        }
        assert_eq!(
            view(&b, chat).await.1,
            vec!["under key 2"],
            "{kind:?}: B keeps its last honest state and its key 2"
        );
        b.close().await;

        // Opening against the rolled-back key file is refused too, and
        // changes nothing.
        let reopened = ChatVault::builder()
            .storage(server.clone().layer(hostile.clone()))
            .replica_path(&b_replica)
            .passphrase(PASSPHRASE)
            .scrypt_work_factor(4)
            .open()
            .await;
        assert!(
            matches!(reopened, Err(Error::Tampered { .. })),
            "{kind:?}: opening against an older key file: {:?}",
            reopened.map(|_| ())
        );

        // Once the server stops lying, B reads what it skipped.
        hostile.disarm();
        let b = open(server.clone().layer(hostile.clone()), &b_replica).await;
        b.sync_now().await.expect("pull");
        assert_eq!(
            view(&b, chat).await.1,
            vec!["under key 2", "under key 3"],
            "{kind:?}: after the lie, B catches up"
        );
        a.close().await;
        b.close().await;
    }
}
