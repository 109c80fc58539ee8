//! End-to-end sync through the facade: several devices, each a
//! [`ChatVault`] with its own replica and its own client of the backend
//! ([`TestBackend::open`]), behind a [`FaultyStorage`] so a contract can take
//! a device offline, lose a response, or kill it between its local commit
//! and its push.
//!
//! Each function's one-line doc is the guarantee it checks. [`contracts`]
//! lists them for the runner; [`run`](crate::run) and
//! [`storage_suite!`](crate::storage_suite) include them next to the Storage
//! contracts, and a [`Suite`](crate::Suite) adds them with
//! `with_sync_contracts`:
//!
//! ```no_run
//! # use chatvault_conformance::{Suite, TestBackend};
//! # struct MyBackend;
//! # #[async_trait::async_trait]
//! # impl TestBackend for MyBackend {
//! #     fn name(&self) -> String { "mine".into() }
//! #     async fn open(&self, _: &str) -> chatvault_core::Result<chatvault_core::DynStorage> {
//! #         Err(chatvault_core::Error::invalid("doc example"))
//! #     }
//! # }
//! # fn main() -> std::process::ExitCode {
//! Suite::new(MyBackend)
//!     .with_storage_contracts()
//!     .with_sync_contracts()
//!     .run()
//! # }
//! ```

use crate::backend::TestBackend;
use crate::layers::{Fault, FaultyStorage, Op};
use crate::runner::{Contract, Failure, Outcome, Verdict};
use crate::{contract, ensure, ensure_eq};
use bytes::Bytes;
use chatvault::{Chat, ChatId, ChatSummary, ChatVault, DynStorage, Error, Event, Role, SyncReport};
use chatvault_core::{Part, PutPrecondition, SealedRecord};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The passphrase every device of the suite unlocks with.
pub const PASSPHRASE: &str = "conformance passphrase";

/// scrypt work factor of the suite's vaults: low, the suite is not about
/// key stretching.
const WORK_FACTOR: u8 = 4;

/// Most sync passes [`settle`] makes before declaring that devices do not
/// converge.
const MAX_PASSES: usize = 6;

/// Every sync contract, in a stable order.
pub fn contracts() -> Vec<Contract> {
    vec![
        contract!("sync", offline_edits_on_three_devices_converge),
        contract!("sync", concurrent_edits_of_one_chat_keep_every_message),
        contract!("sync", branches_written_offline_on_two_devices_converge),
        contract!("sync", deletes_propagate_and_do_not_resurrect),
        contract!(
            "sync",
            a_device_killed_before_pushing_replays_its_outbox_on_restart
        ),
        contract!("sync", a_push_whose_response_was_lost_is_not_duplicated),
        contract!("sync", a_new_device_with_the_passphrase_sees_everything),
        contract!("sync", a_wrong_passphrase_is_refused_with_wrong_key),
        contract!(
            "sync",
            a_record_that_fails_to_open_is_reported_and_the_rest_still_sync
        ),
        contract!(
            "sync",
            a_record_the_backend_cannot_decode_is_reported_and_the_rest_still_sync
        ),
        contract!("sync", sync_status_reports_offline_and_recovers),
        contract!("sync", background_sync_delivers_changes_to_another_device),
        contract!("sync", a_device_offline_past_the_history_horizon_converges),
    ]
}

// ---------------------------------------------------------------------------
// Devices

/// One device of a contract: a vault over its own client of the backend,
/// wrapped so faults can be injected.
pub struct Device {
    /// The facade under test.
    pub vault: ChatVault,
    /// The device's client, for taking it offline.
    pub faults: Arc<FaultyStorage>,
    /// The device's replica file.
    pub replica: PathBuf,
}

impl Device {
    /// Opens device `name` of vault `vault`, with its replica under `dir`.
    pub async fn open(
        backend: &dyn TestBackend,
        vault: &str,
        dir: &Path,
        name: &str,
    ) -> Result<Self, Failure> {
        Self::open_with(backend, vault, dir, name, PASSPHRASE).await
    }

    /// Like [`Device::open`] with another passphrase.
    pub async fn open_with(
        backend: &dyn TestBackend,
        vault: &str,
        dir: &Path,
        name: &str,
        passphrase: &str,
    ) -> Result<Self, Failure> {
        let faults = FaultyStorage::new(backend.open(vault).await?);
        let replica = dir.join(format!("{name}.redb"));
        let vault = open_vault(faults.clone(), &replica, passphrase).await?;
        Ok(Self {
            vault,
            faults,
            replica,
        })
    }

    /// Closes the vault and opens it again from the same replica, over a
    /// fresh, healthy client: a restart.
    pub async fn restart(self, backend: &dyn TestBackend, vault: &str) -> Result<Self, Failure> {
        let Device {
            vault: old,
            replica,
            ..
        } = self;
        old.close().await;
        let faults = FaultyStorage::new(backend.open(vault).await?);
        let vault = open_vault(faults.clone(), &replica, PASSPHRASE).await?;
        Ok(Self {
            vault,
            faults,
            replica,
        })
    }

    /// Takes the device offline: every request fails as unreachable.
    pub fn go_offline(&self) {
        self.faults.fail_all(Fault::Unavailable);
    }

    /// Brings the device back online.
    pub fn go_online(&self) {
        self.faults.heal();
    }
}

async fn open_vault(
    storage: Arc<FaultyStorage>,
    replica: &Path,
    passphrase: &str,
) -> chatvault::Result<ChatVault> {
    let storage: DynStorage = storage;
    ChatVault::builder()
        .storage(storage)
        .replica_path(replica)
        .passphrase(passphrase)
        .scrypt_work_factor(WORK_FACTOR)
        .open()
        .await
}

fn scratch() -> Result<tempfile::TempDir, Failure> {
    tempfile::tempdir().map_err(|e| Failure(format!("cannot create a temporary folder: {e}")))
}

/// Syncs every device in turn, pass after pass, until a whole pass moves
/// nothing; fails if that takes more than a few passes.
pub async fn settle(devices: &[&Device]) -> Result<(), Failure> {
    for _ in 0..MAX_PASSES {
        let mut quiet = true;
        for device in devices {
            let report: SyncReport = device.vault.sync_now().await?;
            quiet &= report.pulled == 0 && report.pushed == 0 && report.pending == 0;
        }
        if quiet {
            return Ok(());
        }
    }
    Err(Failure(format!(
        "devices did not converge within {MAX_PASSES} sync passes"
    )))
}

/// Every live chat of a device, in full, by id.
pub async fn everything(device: &Device) -> Result<BTreeMap<ChatId, Arc<Chat>>, Failure> {
    let mut out = BTreeMap::new();
    for summary in device.vault.sidebar() {
        out.insert(summary.id, device.vault.load_full_chat(summary.id).await?);
    }
    Ok(out)
}

fn texts(chat: &Chat) -> Vec<String> {
    chat.messages()
        .iter()
        .map(|m| m.content().to_string())
        .collect()
}

fn sorted_texts(chat: &Chat) -> Vec<String> {
    let mut texts = texts(chat);
    texts.sort();
    texts
}

/// Fails unless every device shows the same sidebar and the same chats.
async fn ensure_converged(devices: &[&Device]) -> Result<BTreeMap<ChatId, Arc<Chat>>, Failure> {
    let first = everything(devices[0]).await?;
    let first_sidebar: Vec<ChatSummary> = devices[0].vault.sidebar().to_vec();
    for (i, device) in devices.iter().enumerate().skip(1) {
        let theirs = everything(device).await?;
        ensure_eq!(
            theirs.keys().collect::<Vec<_>>(),
            first.keys().collect::<Vec<_>>(),
            "device {i} holds other chats than device 0"
        );
        for (id, chat) in &first {
            ensure!(
                theirs.get(id) == Some(chat),
                "chat {id} differs between device 0 and device {i}:\n  device 0: {:?}\n  device {i}: {:?}",
                texts(chat),
                theirs.get(id).map(|c| texts(c))
            );
        }
        ensure_eq!(
            device.vault.sidebar(),
            first_sidebar,
            "device {i}'s sidebar differs from device 0's"
        );
    }
    Ok(first)
}

// ---------------------------------------------------------------------------
// Contracts

/// Offline edits on three devices (new chats, messages, renames, stars)
/// all survive and every device converges to the same state.
pub async fn offline_edits_on_three_devices_converge(backend: &dyn TestBackend) -> Outcome {
    let name = "sync_offline_edits_on_three_devices_converge";
    let dir = scratch()?;
    let a = Device::open(backend, name, dir.path(), "a").await?;
    let shared = a.vault.new_chat("Shared").await?;
    a.vault.add_message(shared.id, Role::User, "base").await?;
    a.vault.sync_now().await?;
    let b = Device::open(backend, name, dir.path(), "b").await?;
    let c = Device::open(backend, name, dir.path(), "c").await?;
    for device in [&b, &c] {
        device.vault.load_sidebar().await?;
        device.vault.load_full_chat(shared.id).await?;
    }

    for device in [&a, &b, &c] {
        device.go_offline();
    }
    let mut own = Vec::new();
    for (device, label) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        device
            .vault
            .add_message(shared.id, Role::User, format!("offline from {label}"))
            .await?;
        let chat = device.vault.new_chat(format!("Only on {label}")).await?;
        device
            .vault
            .add_message(chat.id, Role::Assistant, format!("reply on {label}"))
            .await?;
        own.push(chat.id);
        ensure!(
            device
                .vault
                .sync_now()
                .await
                .is_err_and(|e| e.is_retriable()),
            "an offline device's sync must fail with a retriable error"
        );
        ensure_eq!(
            device.vault.pending_changes()?,
            2,
            "queued chats on offline device {label}"
        );
    }
    b.vault.rename(shared.id, "Renamed on b").await?;
    c.vault.star(shared.id, true).await?;
    for device in [&a, &b, &c] {
        device.go_online();
    }

    settle(&[&a, &b, &c]).await?;
    let chats = ensure_converged(&[&a, &b, &c]).await?;
    ensure_eq!(chats.len(), 4, "chats after convergence");
    let shared = &chats[&shared.id];
    ensure_eq!(
        sorted_texts(shared),
        vec!["base", "offline from a", "offline from b", "offline from c"],
        "messages of the chat every device edited"
    );
    ensure_eq!(shared.title(), "Renamed on b", "title");
    ensure!(shared.is_starred(), "the star set on c was lost");
    for id in own {
        ensure_eq!(
            chats[&id].message_count(),
            1,
            "messages of a chat made offline"
        );
    }
    Ok(Verdict::Passed)
}

/// Two devices adding messages to one chat without syncing in between:
/// the second push conflicts, is merged, and both keep every message.
pub async fn concurrent_edits_of_one_chat_keep_every_message(backend: &dyn TestBackend) -> Outcome {
    let name = "sync_concurrent_edits_of_one_chat_keep_every_message";
    let dir = scratch()?;
    let a = Device::open(backend, name, dir.path(), "a").await?;
    let chat = a.vault.new_chat("Busy").await?;
    a.vault.sync_now().await?;
    let b = Device::open(backend, name, dir.path(), "b").await?;
    b.vault.load_sidebar().await?;
    b.vault.load_full_chat(chat.id).await?;

    let mut expected = Vec::new();
    for i in 0..5 {
        for (device, label) in [(&a, "a"), (&b, "b")] {
            let text = format!("{label}{i}");
            device
                .vault
                .add_message(chat.id, Role::User, text.clone())
                .await?;
            expected.push(text);
        }
    }
    a.vault.sync_now().await?;
    let report = b.vault.sync_now().await?;
    // b pulls a's version first and merges it into its pending state, or
    // its push conflicts and is merged then: either way nothing is lost.
    ensure!(
        report.pulled + report.conflicts_resolved >= 1,
        "b neither pulled nor merged a's concurrent edit: {report:?}"
    );
    settle(&[&a, &b]).await?;
    let chats = ensure_converged(&[&a, &b]).await?;
    expected.sort();
    ensure_eq!(
        sorted_texts(&chats[&chat.id]),
        expected,
        "messages after merging"
    );
    Ok(Verdict::Passed)
}

/// Two devices regenerate the same answer while offline from each other
/// (chat body format 3): after sync both hold all three answers, the same
/// tree and the same branch shown.
pub async fn branches_written_offline_on_two_devices_converge(
    backend: &dyn TestBackend,
) -> Outcome {
    let name = "sync_branches_written_offline_on_two_devices_converge";
    let dir = scratch()?;
    let a = Device::open(backend, name, dir.path(), "a").await?;
    let chat = a.vault.new_chat("Branches").await?;
    a.vault.add_message(chat.id, Role::User, "question").await?;
    let answer = a
        .vault
        .add_message(chat.id, Role::Assistant, "first answer")
        .await?;
    a.vault.sync_now().await?;
    let b = Device::open(backend, name, dir.path(), "b").await?;
    b.vault.load_sidebar().await?;
    b.vault.load_full_chat(chat.id).await?;

    a.vault.regenerate(chat.id, answer, "from a").await?;
    b.vault.regenerate(chat.id, answer, "from b").await?;
    b.vault
        .add_message(chat.id, Role::User, "b follows up")
        .await?;
    settle(&[&a, &b]).await?;
    let chats = ensure_converged(&[&a, &b]).await?;
    let merged = &chats[&chat.id];
    let mut answers: Vec<&str> = merged
        .alternatives(answer)
        .iter()
        .map(|m| m.content())
        .collect();
    answers.sort_unstable();
    ensure_eq!(
        answers,
        vec!["first answer", "from a", "from b"],
        "alternatives after merging"
    );
    ensure_eq!(merged.tree().len(), 5, "messages in the tree");
    for device in [&a, &b] {
        let shown = texts(&*device.vault.load_full_chat(chat.id).await?);
        ensure_eq!(shown, texts(merged), "the branch shown");
    }
    Ok(Verdict::Passed)
}

/// A deleted chat disappears on every device and stays deleted, even when
/// another device edited it offline without seeing the deletion.
pub async fn deletes_propagate_and_do_not_resurrect(backend: &dyn TestBackend) -> Outcome {
    let name = "sync_deletes_propagate_and_do_not_resurrect";
    let dir = scratch()?;
    let a = Device::open(backend, name, dir.path(), "a").await?;
    let doomed = a.vault.new_chat("Doomed").await?;
    let kept = a.vault.new_chat("Kept").await?;
    a.vault.add_message(doomed.id, Role::User, "before").await?;
    a.vault.sync_now().await?;
    let b = Device::open(backend, name, dir.path(), "b").await?;
    b.vault.load_sidebar().await?;
    b.vault.load_full_chat(doomed.id).await?;

    b.go_offline();
    a.vault.delete_chat(doomed.id).await?;
    a.vault.sync_now().await?;
    b.vault
        .add_message(doomed.id, Role::User, "edited offline")
        .await?;
    b.vault.rename(doomed.id, "Resurrected?").await?;
    b.go_online();

    let mut events = a.vault.changes();
    settle(&[&a, &b]).await?;
    for device in [&a, &b] {
        let ids: Vec<ChatId> = device.vault.sidebar().iter().map(|s| s.id).collect();
        ensure_eq!(ids, vec![kept.id], "sidebar after the delete");
        match device.vault.load_full_chat(doomed.id).await {
            Err(Error::NotFound { .. }) => {}
            other => {
                return Err(Failure(format!(
                    "loading the deleted chat: expected NotFound, got {other:?}"
                )))
            }
        }
    }
    while let Ok(event) = events.try_recv() {
        ensure!(
            event != Event::ChatUpserted(doomed.id),
            "the deleted chat was reported upserted again on the deleting device"
        );
    }
    let c = Device::open(backend, name, dir.path(), "c").await?;
    let sidebar = c.vault.load_sidebar().await?;
    ensure_eq!(
        sidebar.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![kept.id],
        "a new device's sidebar"
    );
    Ok(Verdict::Passed)
}

/// A device that committed changes locally and died before pushing them
/// pushes them after a restart: nothing lost, nothing duplicated.
pub async fn a_device_killed_before_pushing_replays_its_outbox_on_restart(
    backend: &dyn TestBackend,
) -> Outcome {
    let name = "sync_a_device_killed_before_pushing_replays_its_outbox_on_restart";
    let dir = scratch()?;
    let a = Device::open(backend, name, dir.path(), "a").await?;
    let existing = a.vault.new_chat("Existing").await?;
    a.vault
        .add_message(existing.id, Role::User, "pushed")
        .await?;
    a.vault.sync_now().await?;

    a.faults.fail_op(Op::Put, Fault::Unavailable);
    a.faults.fail_op(Op::PutBatch, Fault::Unavailable);
    let fresh = a.vault.new_chat("Made before the crash").await?;
    a.vault.add_message(fresh.id, Role::User, "one").await?;
    a.vault
        .add_message(fresh.id, Role::Assistant, "two")
        .await?;
    a.vault
        .add_message(existing.id, Role::User, "queued")
        .await?;
    ensure!(
        a.vault.sync_now().await.is_err_and(|e| e.is_retriable()),
        "pushes fail, so the sync must fail with a retriable error"
    );
    ensure_eq!(
        a.vault.pending_changes()?,
        2,
        "queued chats before the crash"
    );

    let a = a.restart(backend, name).await?;
    ensure_eq!(
        a.vault.pending_changes()?,
        2,
        "queued chats after the restart"
    );
    ensure_eq!(
        a.vault.sidebar().len(),
        2,
        "the restarted device's sidebar (from its replica)"
    );
    let report = a.vault.sync_now().await?;
    ensure_eq!(report.pushed, 2, "chats pushed after the restart");
    ensure_eq!(a.vault.pending_changes()?, 0, "queued chats after the push");

    let b = Device::open(backend, name, dir.path(), "b").await?;
    b.vault.load_sidebar().await?;
    ensure_eq!(
        texts(&*b.vault.load_full_chat(fresh.id).await?),
        vec!["one", "two"],
        "the chat created before the crash, on another device"
    );
    ensure_eq!(
        texts(&*b.vault.load_full_chat(existing.id).await?),
        vec!["pushed", "queued"],
        "the chat edited before the crash, on another device"
    );
    Ok(Verdict::Passed)
}

/// A push that reached the server but whose response was lost is replayed
/// after a restart without duplicating anything or losing later edits.
pub async fn a_push_whose_response_was_lost_is_not_duplicated(
    backend: &dyn TestBackend,
) -> Outcome {
    let name = "sync_a_push_whose_response_was_lost_is_not_duplicated";
    let dir = scratch()?;
    let a = Device::open(backend, name, dir.path(), "a").await?;
    let chat = a.vault.new_chat("Lost response").await?;
    a.vault.add_message(chat.id, Role::User, "first").await?;
    a.faults.fail_op(Op::Put, Fault::LostResponse);
    a.faults.fail_op(Op::PutBatch, Fault::LostResponse);
    ensure!(
        a.vault.sync_now().await.is_err(),
        "the push's response was lost, so the sync must report a failure"
    );
    ensure_eq!(
        a.vault.pending_changes()?,
        1,
        "the unconfirmed push stays queued"
    );

    let a = a.restart(backend, name).await?;
    a.vault
        .add_message(chat.id, Role::User, "after restart")
        .await?;
    a.vault.sync_now().await?;
    ensure_eq!(
        a.vault.pending_changes()?,
        0,
        "queued chats after the replay"
    );
    let b = Device::open(backend, name, dir.path(), "b").await?;
    b.vault.load_sidebar().await?;
    let seen = b.vault.load_full_chat(chat.id).await?;
    ensure_eq!(
        texts(&seen),
        vec!["first", "after restart"],
        "messages on another device"
    );
    ensure_eq!(b.vault.sidebar().len(), 1, "chats on another device");
    Ok(Verdict::Passed)
}

/// A new device that unlocks with the passphrase sees every chat, with the
/// same titles and messages.
pub async fn a_new_device_with_the_passphrase_sees_everything(
    backend: &dyn TestBackend,
) -> Outcome {
    let name = "sync_a_new_device_with_the_passphrase_sees_everything";
    let dir = scratch()?;
    let a = Device::open(backend, name, dir.path(), "a").await?;
    for i in 0..25 {
        let chat = a.vault.new_chat(format!("Chat {i}")).await?;
        for j in 0..(i % 4) {
            a.vault
                .add_message(chat.id, Role::User, format!("message {j} of chat {i}"))
                .await?;
        }
    }
    a.vault.sync_now().await?;
    let d = Device::open(backend, name, dir.path(), "d").await?;
    ensure_eq!(
        d.vault.vault_id(),
        a.vault.vault_id(),
        "vault id on the new device"
    );
    ensure_eq!(
        d.vault.load_sidebar().await?.len(),
        25,
        "chats on the new device"
    );
    ensure_converged(&[&a, &d]).await?;
    Ok(Verdict::Passed)
}

/// Unlocking with a wrong passphrase fails with `WrongKey`, and leaves no
/// trace that would stop the right passphrase from working.
pub async fn a_wrong_passphrase_is_refused_with_wrong_key(backend: &dyn TestBackend) -> Outcome {
    let name = "sync_a_wrong_passphrase_is_refused_with_wrong_key";
    let dir = scratch()?;
    let a = Device::open(backend, name, dir.path(), "a").await?;
    a.vault.new_chat("Secret").await?;
    a.vault.sync_now().await?;
    let storage = FaultyStorage::new(backend.open(name).await?);
    let replica = dir.path().join("b.redb");
    match open_vault(storage, &replica, "not the passphrase").await {
        Err(Error::WrongKey { .. }) => {}
        Err(other) => return Err(Failure(format!("expected WrongKey, got {other:?}"))),
        Ok(_) => return Err(Failure("a wrong passphrase unlocked the vault".into())),
    }
    let b = Device::open(backend, name, dir.path(), "b").await?;
    ensure_eq!(
        b.vault.load_sidebar().await?.len(),
        1,
        "chats after unlocking correctly"
    );
    Ok(Verdict::Passed)
}

/// A record that does not open (sealed for another chat, or garbage) is
/// reported as skipped once; every other chat still syncs, the status says
/// records are waiting, and later syncs retry it without reporting it again.
pub async fn a_record_that_fails_to_open_is_reported_and_the_rest_still_sync(
    backend: &dyn TestBackend,
) -> Outcome {
    let name = "sync_a_record_that_fails_to_open_is_reported_and_the_rest_still_sync";
    let dir = scratch()?;
    let a = Device::open(backend, name, dir.path(), "a").await?;
    let good = a.vault.new_chat("Good").await?;
    a.vault.add_message(good.id, Role::User, "intact").await?;
    a.vault.sync_now().await?;

    // A server that moves a valid record to another chat id, and a writer
    // that stores garbage: neither may stop the sync.
    let raw = backend.open(name).await?;
    let valid = raw
        .get(&[good.id], Part::Body)
        .await?
        .pop()
        .ok_or_else(|| Failure("the good chat is not on the server".into()))?;
    let (moved, garbage) = (ChatId::new(), ChatId::new());
    raw.put(
        SealedRecord {
            chat: moved,
            ..valid.clone()
        },
        PutPrecondition::Absent,
    )
    .await?;
    raw.put(
        SealedRecord {
            chat: garbage,
            version: 1,
            deleted: false,
            summary: Bytes::from_static(b"definitely not ciphertext"),
            body: Some(Bytes::from_static(b"nor this")),
        },
        PutPrecondition::Absent,
    )
    .await?;
    let later = a.vault.new_chat("Written after the bad records").await?;
    a.vault.sync_now().await?;

    let b = Device::open(backend, name, dir.path(), "b").await?;
    let mut events = b.vault.changes();
    let report = b.vault.sync_now().await?;
    let mut skipped: Vec<ChatId> = report.skipped.iter().map(|s| s.chat).collect();
    skipped.sort();
    let mut expected = vec![moved, garbage];
    expected.sort();
    ensure_eq!(skipped, expected, "skipped records");
    for s in &report.skipped {
        ensure!(
            matches!(
                s.error,
                Error::Tampered { .. }
                    | Error::Corrupt { .. }
                    | Error::UnsupportedFormat { .. }
                    | Error::UnknownKeyId { .. }
            ),
            "chat {} was skipped with {:?}, expected an error saying it does not open",
            s.chat,
            s.error
        );
    }
    let mut reported = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::RecordSkipped { chat, .. } = event {
            reported.push(chat);
        }
    }
    reported.sort();
    ensure_eq!(reported, expected, "RecordSkipped events");
    let ids: Vec<ChatId> = b.vault.sidebar().iter().map(|s| s.id).collect();
    ensure!(
        ids.len() == 2 && ids.contains(&good.id) && ids.contains(&later.id),
        "the readable chats must sync: sidebar {ids:?}"
    );
    ensure_eq!(
        texts(&*b.vault.load_full_chat(good.id).await?),
        vec!["intact"],
        "the good chat"
    );
    ensure_eq!(
        b.vault.status(),
        chatvault::SyncStatus::Incomplete { skipped: 2 },
        "status with two records that do not open"
    );
    let again = b.vault.sync_now().await?;
    ensure!(
        again.skipped.is_empty(),
        "records already known not to open were reported again: {again:?}"
    );
    let mut kept: Vec<ChatId> = b.vault.engine().skipped()?.iter().map(|s| s.chat).collect();
    kept.sort();
    ensure_eq!(
        kept,
        expected,
        "skipped records kept in the replica for retry"
    );
    Ok(Verdict::Passed)
}

/// A record the backend itself can no longer decode is reported as skipped;
/// every other chat still syncs.
pub async fn a_record_the_backend_cannot_decode_is_reported_and_the_rest_still_sync(
    backend: &dyn TestBackend,
) -> Outcome {
    let name = "sync_a_record_the_backend_cannot_decode_is_reported_and_the_rest_still_sync";
    let dir = scratch()?;
    let a = Device::open(backend, name, dir.path(), "a").await?;
    let bad = a.vault.new_chat("Damaged on the server").await?;
    let good = a.vault.new_chat("Intact").await?;
    a.vault
        .add_message(good.id, Role::User, "still here")
        .await?;
    a.vault.sync_now().await?;
    let b = Device::open(backend, name, dir.path(), "b").await?;
    b.vault.load_sidebar().await?;
    // b holds both chats in full, so its next pull fetches bodies.
    b.vault.load_full_chat(bad.id).await?;
    b.vault.load_full_chat(good.id).await?;
    let Some(damaged) = backend.corrupt_record(name, bad.id).await else {
        return Ok(Verdict::Skipped(
            "the test backend cannot damage stored records (TestBackend::corrupt_record)".into(),
        ));
    };
    damaged?;
    a.vault
        .add_message(good.id, Role::User, "added later")
        .await?;
    a.vault.sync_now().await?;

    let c = Device::open(backend, name, dir.path(), "c").await?;
    let report = c.vault.sync_now().await;
    ensure!(
        report.is_ok(),
        "a new device's sync fails because one record is damaged: {report:?}"
    );
    ensure!(
        c.vault.sidebar().iter().any(|s| s.id == good.id),
        "the intact chat did not reach a new device"
    );
    ensure_eq!(
        texts(&*c.vault.load_full_chat(good.id).await?),
        vec!["still here", "added later"],
        "the intact chat on a new device"
    );
    let report = b.vault.sync_now().await?;
    ensure!(
        report.pulled >= 1,
        "the device holding both chats pulled nothing: {report:?}"
    );
    ensure_eq!(
        texts(&*b.vault.load_full_chat(good.id).await?),
        vec!["still here", "added later"],
        "the intact chat on the device that holds the damaged one"
    );
    Ok(Verdict::Passed)
}

/// The sync status says Offline while the backend is unreachable (changes
/// stay queued), and Synced once the queue drained.
pub async fn sync_status_reports_offline_and_recovers(backend: &dyn TestBackend) -> Outcome {
    use chatvault::SyncStatus;
    let name = "sync_sync_status_reports_offline_and_recovers";
    let dir = scratch()?;
    let a = Device::open(backend, name, dir.path(), "a").await?;
    let mut events = a.vault.changes();
    a.go_offline();
    let chat = a.vault.new_chat("Written offline").await?;
    ensure!(
        a.vault.sync_now().await.is_err(),
        "sync while offline must fail"
    );
    ensure!(
        matches!(a.vault.status(), SyncStatus::Offline { .. }),
        "status while offline: {:?}",
        a.vault.status()
    );
    ensure_eq!(a.vault.pending_changes()?, 1, "queued chats while offline");
    a.go_online();
    a.vault.sync_now().await?;
    ensure_eq!(
        a.vault.status(),
        SyncStatus::Synced,
        "status after reconnecting"
    );
    ensure_eq!(
        a.vault.pending_changes()?,
        0,
        "queued chats after reconnecting"
    );
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    ensure!(
        seen.contains(&Event::ChatUpserted(chat.id)),
        "no ChatUpserted event for the local save: {seen:?}"
    );
    ensure!(
        seen.iter()
            .any(|e| matches!(e, Event::SyncStatus(SyncStatus::Offline { .. }))),
        "no Offline status event: {seen:?}"
    );
    ensure!(
        seen.contains(&Event::SyncStatus(SyncStatus::Synced)),
        "no Synced status event: {seen:?}"
    );
    Ok(Verdict::Passed)
}

/// With background sync running on two devices, a chat saved on one
/// reaches the other and is announced there as an event.
pub async fn background_sync_delivers_changes_to_another_device(
    backend: &dyn TestBackend,
) -> Outcome {
    let name = "sync_background_sync_delivers_changes_to_another_device";
    let dir = scratch()?;
    let a = Device::open(backend, name, dir.path(), "a").await?;
    let b = Device::open(backend, name, dir.path(), "b").await?;
    let mut events = b.vault.changes();
    a.vault.start_sync(Duration::from_millis(50))?;
    b.vault.start_sync(Duration::from_millis(50))?;
    let chat = a.vault.new_chat("Live").await?;
    // A safety net against a hang, not a timing assertion.
    let arrived = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match events.recv().await {
                Ok(Event::ChatUpserted(id)) if id == chat.id => return true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
            }
        }
    })
    .await;
    ensure!(
        matches!(arrived, Ok(true)),
        "the chat saved on a never reached b through background sync"
    );
    ensure_eq!(
        b.vault
            .sidebar()
            .iter()
            .map(|s| s.title.clone())
            .collect::<Vec<_>>(),
        vec!["Live".to_string()],
        "b's sidebar"
    );
    a.vault.stop_sync().await;
    b.vault.stop_sync().await;
    ensure!(
        !a.vault.is_syncing() && !b.vault.is_syncing(),
        "sync still running after stop_sync"
    );
    Ok(Verdict::Passed)
}

/// A device that was offline while history it had not read was pruned
/// (compaction, retention) still converges when it comes back: every
/// chat's latest state, deletions included, reaches it and a new device.
pub async fn a_device_offline_past_the_history_horizon_converges(
    backend: &dyn TestBackend,
) -> Outcome {
    let name = "sync_a_device_offline_past_the_history_horizon_converges";
    let dir = scratch()?;
    let a = Device::open(backend, name, dir.path(), "a").await?;
    let edited = a.vault.new_chat("Edited while b was away").await?;
    let doomed = a.vault.new_chat("Deleted while b was away").await?;
    a.vault.add_message(edited.id, Role::User, "first").await?;
    a.vault.sync_now().await?;
    let b = Device::open(backend, name, dir.path(), "b").await?;
    b.vault.load_sidebar().await?;
    b.vault.load_full_chat(edited.id).await?;
    b.vault.load_full_chat(doomed.id).await?;

    b.go_offline();
    // Many versions of one chat, one pushed per round: history to prune.
    for i in 0..20 {
        a.vault
            .add_message(edited.id, Role::Assistant, &format!("reply {i}"))
            .await?;
        a.vault.sync_now().await?;
    }
    a.vault.delete_chat(doomed.id).await?;
    let born = a.vault.new_chat("Created while b was away").await?;
    a.vault.add_message(born.id, Role::User, "hello").await?;
    a.vault.sync_now().await?;
    b.vault
        .add_message(edited.id, Role::User, "written offline by b")
        .await?;

    let Some(removed) = backend.expire_history(name).await else {
        return Ok(Verdict::Skipped(
            "the test backend cannot expire history (TestBackend::expire_history)".into(),
        ));
    };
    let removed = removed?;
    ensure!(
        removed >= 20,
        "expiring the history removed {removed} entries; at least the 20 superseded versions of one chat were expected, or this contract proves nothing"
    );

    b.go_online();
    settle(&[&a, &b]).await?;
    let state = ensure_converged(&[&a, &b]).await?;
    ensure_eq!(
        state
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        [edited.id, born.id].into_iter().collect(),
        "live chats after b came back"
    );
    let texts = sorted_texts(&state[&edited.id]);
    ensure!(
        texts.len() == 22
            && texts.iter().any(|t| t == "reply 19")
            && texts.iter().any(|t| t == "written offline by b"),
        "the edited chat after b came back: {texts:?}"
    );
    let c = Device::open(backend, name, dir.path(), "c").await?;
    c.vault.sync_now().await?;
    ensure_converged(&[&a, &b, &c]).await?;
    Ok(Verdict::Passed)
}
