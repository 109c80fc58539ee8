//! The convergence simulation over a simulated file-sync service (issue 20):
//! three devices, each with its own copy of a vault folder in the per-device
//! layout (as `file://` opens it), make random edits (new chat, add, edit
//! and delete messages, rename, star, delete chats) and forced compactions
//! (`maintain(true)`, horizon compressed to 2 s) interleaved with
//! `sync_now` and steps of the seeded
//! [`Copier`] with every anomaly on (delays, reordering, partial files,
//! duplicates, resurrected deletes, conflict copies). Each seed picks the
//! conflict-copy naming of one service (Syncthing, Dropbox, Nextcloud,
//! OneDrive, iCloud: `seed % 5`). At the end the copier settles and sync
//! rounds run until every device shows the same state with nothing queued
//! (bounded), and the run asserts: every device equal; every message whose
//! save returned `Ok` present unless it or its chat was deleted on purpose;
//! nothing pending; nothing skipped (the last `sync_now` report and the
//! engine's list); every chat loads on every device.
//!
//! A second test places conflict copies, in each service's naming, of every
//! file of a device's directory (log entries, records, key files) into the
//! folder copies: syncs never fail, nothing is added or lost, a fresh
//! device reads the same, and writing goes on.
//!
//! `CHATVAULT_SIM_SEED` replays one run (every failure prints its seed);
//! `CHATVAULT_SIM_OPS` sets the operations per device (60 by default over
//! 5 consecutive seeds, one per naming service; `just file-sync-sim` runs
//! 1,000 per device).

mod folders;

use chatvault::{ChatId, ChatVault, DeviceId, MessageId, Role};
use chatvault_conformance::layers::SeededRng;
use chatvault_fs::{FsStorageBuilder, WriterId};
use chatvault_object_store::{CompactOptions, MaintenancePolicy, ObjectStoreOptions};
use chatvault_test_services::copier::{Copier, Event, Faults, Service, CLOCK_START};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const PASSPHRASE: &str = "file sync sim";
const DEVICES: usize = 3;
/// Copier steps `settle` may take before it must be quiet.
const SETTLE_STEPS: usize = 200;
/// Sync rounds (sync all, settle, sync all) before the devices must agree.
const ROUNDS: usize = 8;
/// The compaction horizon of the run (default one hour): far longer than
/// the copier's longest delay in real time (a step takes milliseconds).
const HORIZON: Duration = Duration::from_secs(2);
/// The claim delay, compressed below the horizon as compaction requires.
const CLAIM_DELAY: Duration = Duration::from_millis(500);

/// Device `device` on its copy `folder`, written as `file://` opens it
/// (its own `dev/<vault>.<device>/`), but with the compaction horizon
/// compressed from one hour to [`HORIZON`] so that the forced compactions
/// of the run delete files while the copier still copies (and resurrects)
/// them; fsync off (a throwaway vault).
async fn open(folder: &Path, replica: &Path, device: u64) -> Result<ChatVault, String> {
    let storage = FsStorageBuilder::new(folder)
        .writer(WriterId(device))
        .fsync(false)
        .options(
            ObjectStoreOptions::default()
                .with_max_claim_delay(CLAIM_DELAY)
                .with_maintenance(
                    MaintenancePolicy::default()
                        .with_min_interval(Duration::ZERO)
                        .with_compact(CompactOptions::default().with_min_age(HORIZON)),
                ),
        )
        .open()
        .map_err(|e| format!("open {}: {e}", folder.display()))?;
    ChatVault::builder()
        .storage(Arc::new(storage))
        .device_id(DeviceId(device))
        .replica_path(replica)
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .open()
        .await
        .map_err(|e| format!("open {}: {e}", folder.display()))
}

use folders::{state, View};

/// What the run promised: acknowledged messages and what was deleted.
#[derive(Default)]
struct Ledger {
    added: BTreeMap<MessageId, ChatId>,
    deleted_messages: BTreeSet<MessageId>,
    deleted_chats: BTreeSet<ChatId>,
    ops: BTreeMap<&'static str, u64>,
    /// Errors `sync_now` returned while the copier misbehaved.
    sync_errors: Vec<String>,
    /// Edits that failed while the copier misbehaved (not acknowledged).
    op_errors: Vec<String>,
    /// Records reported skipped by some `sync_now` during the run.
    skipped_during_run: u64,
}

impl Ledger {
    fn count(&mut self, op: &'static str) {
        *self.ops.entry(op).or_default() += 1;
    }
}

/// How many of each copier event kind the run saw.
fn copier_tally(copier: &Copier) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for event in copier.log() {
        let kind = match event {
            Event::Scanned { .. } => "scanned",
            Event::Queued { .. } => "queued",
            Event::Delivered { .. } => "delivered",
            Event::PartialWritten { .. } => "partial",
            Event::Completed { .. } => "completed",
            Event::DuplicateRewritten { .. } => "duplicate",
            Event::Dropped { .. } => "dropped",
            Event::ConflictCopy { .. } => "conflict_copy",
            Event::Resurrected { .. } => "resurrected",
        };
        *out.entry(kind).or_default() += 1;
    }
    out
}

/// The devices' states once they agree and have nothing queued or
/// skipped, after at most [`ROUNDS`] rounds of: sync every device, settle
/// the copier, sync every device again.
async fn converge(
    devices: &[ChatVault],
    copier: &mut Copier,
    what: &str,
) -> Result<BTreeMap<ChatId, View>, String> {
    copier
        .settle(SETTLE_STEPS)
        .map_err(|e| format!("{what}: the copier did not settle: {e}"))?;
    let mut last = String::new();
    for round in 0..ROUNDS {
        let mut skipped = Vec::new();
        for half in 0..2 {
            for (d, vault) in devices.iter().enumerate() {
                let report = vault
                    .sync_now()
                    .await
                    .map_err(|e| format!("{what}, round {round}, device {d}: sync: {e}"))?;
                if half == 1 && !report.skipped.is_empty() {
                    skipped.push(format!("device {d}: {:?}", report.skipped));
                }
            }
            if half == 0 {
                copier
                    .settle(SETTLE_STEPS)
                    .map_err(|e| format!("{what}: the copier did not settle: {e}"))?;
            }
        }
        let mut states = Vec::new();
        for (d, vault) in devices.iter().enumerate() {
            states.push(
                state(vault)
                    .await
                    .map_err(|e| format!("{what}, round {round}, device {d}: {e}"))?,
            );
        }
        let mut pending = Vec::new();
        let mut engine_skipped = Vec::new();
        for (d, vault) in devices.iter().enumerate() {
            let queued = vault.pending_changes().map_err(|e| e.to_string())?;
            if queued > 0 {
                pending.push(format!("device {d}: {queued}"));
            }
            let held = vault.engine().skipped().map_err(|e| e.to_string())?;
            if !held.is_empty() {
                engine_skipped.push(format!("device {d}: {held:?}"));
            }
        }
        let differing = differences(&states);
        if differing.is_empty()
            && pending.is_empty()
            && skipped.is_empty()
            && engine_skipped.is_empty()
        {
            return Ok(states.swap_remove(0));
        }
        last = format!(
            "differing chats: {differing:#?}; pending: {pending:?}; skipped in the last \
             sync: {skipped:?}; engine skipped: {engine_skipped:?}"
        );
    }
    Err(format!("{what}: no convergence in {ROUNDS} rounds: {last}"))
}

/// The chats on which some device differs from device 0.
fn differences(states: &[BTreeMap<ChatId, View>]) -> Vec<String> {
    let first = &states[0];
    let mut out = Vec::new();
    for (d, other) in states.iter().enumerate().skip(1) {
        let ids: BTreeSet<_> = first.keys().chain(other.keys()).collect();
        for id in ids {
            if first.get(id) != other.get(id) {
                out.push(format!(
                    "{id}: device 0 {:?} vs device {d} {:?}",
                    first.get(id),
                    other.get(id)
                ));
            }
        }
    }
    out
}

/// Every message whose save returned `Ok` is in `state` unless it (or its
/// chat) was deleted on purpose.
fn check_acknowledged(ledger: &Ledger, state: &BTreeMap<ChatId, View>) -> Result<(), String> {
    let mut missing = Vec::new();
    for (message, chat) in &ledger.added {
        if ledger.deleted_messages.contains(message) || ledger.deleted_chats.contains(chat) {
            continue;
        }
        if !state
            .get(chat)
            .is_some_and(|(_, _, m)| m.contains_key(message))
        {
            missing.push(format!("message {message} of chat {chat}"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} acknowledged message(s) lost: {}",
            missing.len(),
            missing.join(", ")
        ))
    }
}

/// Three devices on three folder copies under `root`, the first creating
/// the vault; the others open once a faithful copy gave them its files.
/// Returns the copier with `faults` in force.
async fn three_devices(
    root: &Path,
    seed: u64,
    faults: Faults,
) -> Result<(Vec<ChatVault>, Copier), String> {
    let folders: Vec<PathBuf> = (0..DEVICES)
        .map(|d| root.join(format!("copy-{d}")))
        .collect();
    let mut copier = Copier::new(
        folders.clone(),
        seed,
        Faults::none().with_service(faults.service),
    )
    .map_err(|e| e.to_string())?;
    let mut devices = vec![open(&folders[0], &root.join("replica-0.redb"), 1).await?];
    devices[0].sync_now().await.map_err(|e| e.to_string())?;
    copier.settle(SETTLE_STEPS).map_err(|e| e.to_string())?;
    for (d, folder) in folders.iter().enumerate().skip(1) {
        devices.push(
            open(
                folder,
                &root.join(format!("replica-{d}.redb")),
                1 + d as u64,
            )
            .await?,
        );
    }
    copier.set_faults(faults);
    Ok((devices, copier))
}

async fn simulate(seed: u64, ops_per_device: usize) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let service = Service::ALL[(seed % Service::ALL.len() as u64) as usize];
    let (devices, mut copier) = three_devices(dir.path(), seed, Faults::all(service)).await?;
    let mut rng = SeededRng::new(seed);
    let mut ledger = Ledger::default();
    let mut step = 0usize;
    while step < ops_per_device * DEVICES {
        // About one copier step per four device operations.
        if rng.below(5) == 0 {
            copier
                .step()
                .map_err(|e| format!("op {step}: copier step: {e}"))?;
            ledger.count("copier_step");
            continue;
        }
        let d = rng.below(DEVICES as u64) as usize;
        let vault = &devices[d];
        let live: Vec<ChatId> = vault
            .sidebar()
            .iter()
            .filter(|s| s.deleted.is_none())
            .map(|s| s.id)
            .collect();
        let pick = |rng: &mut SeededRng| live[rng.below(live.len() as u64) as usize];
        let roll = rng.below(100);
        // A chat whose summary arrived before its body (or whose body is
        // still partial) cannot be loaded or edited yet: such an operation
        // fails, is not acknowledged, and is counted.
        let outcome: Result<(), String> = match roll {
            _ if live.is_empty() || roll < 6 => vault
                .new_chat(format!("d{d} chat {step}"))
                .await
                .map(|_| ledger.count("new_chat"))
                .map_err(|e| format!("new chat: {e}")),
            6..=45 => {
                let chat = pick(&mut rng);
                match vault
                    .add_message(chat, Role::User, format!("d{d} s{step}"))
                    .await
                {
                    Ok(id) => {
                        ledger.added.insert(id, chat);
                        ledger.count("add_message");
                        Ok(())
                    }
                    Err(e) => Err(format!("add message: {e}")),
                }
            }
            46..=60 => {
                let chat = pick(&mut rng);
                match vault.load_full_chat(chat).await {
                    Err(e) => Err(format!("load: {e}")),
                    Ok(full) => {
                        let ids: Vec<MessageId> = full.messages().iter().map(|m| m.id).collect();
                        if ids.is_empty() {
                            Ok(())
                        } else {
                            let message = ids[rng.below(ids.len() as u64) as usize];
                            if roll <= 54 {
                                vault
                                    .edit_message(chat, message, format!("edited by d{d} s{step}"))
                                    .await
                                    .map(|_| ledger.count("edit_message"))
                                    .map_err(|e| format!("edit: {e}"))
                            } else {
                                match vault.delete_message(chat, message).await {
                                    Ok(()) => {
                                        ledger.deleted_messages.insert(message);
                                        ledger.count("delete_message");
                                        Ok(())
                                    }
                                    Err(e) => Err(format!("delete message: {e}")),
                                }
                            }
                        }
                    }
                }
            }
            61..=65 => vault
                .rename(pick(&mut rng), format!("renamed d{d} s{step}"))
                .await
                .map(|_| ledger.count("rename"))
                .map_err(|e| format!("rename: {e}")),
            66..=70 => vault
                .star(pick(&mut rng), rng.below(2) == 0)
                .await
                .map(|_| ledger.count("star"))
                .map_err(|e| format!("star: {e}")),
            71..=72 => {
                let chat = pick(&mut rng);
                match vault.delete_chat(chat).await {
                    Ok(()) => {
                        ledger.deleted_chats.insert(chat);
                        ledger.count("delete_chat");
                        Ok(())
                    }
                    Err(e) => Err(format!("delete chat: {e}")),
                }
            }
            73..=75 => {
                // Compaction and garbage collection of this device's log,
                // while the copier may still be copying (or resurrect)
                // the files it deletes.
                vault
                    .maintain(true)
                    .await
                    .map(|_| ledger.count("maintain"))
                    .map_err(|e| format!("maintain: {e}"))
            }
            _ => {
                // The copier's anomalies may make a round fail or skip a
                // record for now; the final rounds must clear both.
                match vault.sync_now().await {
                    Ok(report) => ledger.skipped_during_run += report.skipped.len() as u64,
                    Err(e) => ledger
                        .sync_errors
                        .push(format!("op {step}, device {d}: {e}")),
                }
                ledger.count("sync");
                Ok(())
            }
        };
        if let Err(why) = outcome {
            ledger
                .op_errors
                .push(format!("op {step}, device {d}: {why}"));
        }
        step += 1;
    }

    let converged = converge(&devices, &mut copier, "after the run").await?;
    check_acknowledged(&ledger, &converged)?;

    // A fresh device on a fourth copy reads the same, once the service
    // has copied what the last round wrote (a compaction's new snapshot,
    // a merge pushed in the last round): before that, copy 0 may rightly
    // hold an older state.
    copier
        .settle(SETTLE_STEPS)
        .map_err(|e| format!("before the fresh device: the copier did not settle: {e}"))?;
    let fresh_folder = dir.path().join("copy-fresh");
    std::fs::create_dir_all(&fresh_folder).map_err(|e| e.to_string())?;
    for (path, bytes) in copier.files(0).map_err(|e| e.to_string())? {
        let target = fresh_folder.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).map_err(|e| e.to_string())?;
        std::fs::write(target, bytes).map_err(|e| e.to_string())?;
    }
    let fresh = open(&fresh_folder, &dir.path().join("replica-fresh.redb"), 100).await?;
    let report = fresh
        .sync_now()
        .await
        .map_err(|e| format!("fresh device: {e}"))?;
    if !report.skipped.is_empty() {
        return Err(format!("the fresh device skips {:?}", report.skipped));
    }
    let seen = state(&fresh)
        .await
        .map_err(|e| format!("fresh device: {e}"))?;
    if seen != converged {
        return Err(format!(
            "a fresh device reads another state: {:#?}",
            differences(&[converged, seen])
        ));
    }
    fresh.close().await;
    for vault in devices {
        vault.close().await;
    }
    Ok(format!(
        "{service:?} naming, {} chats at the end; ops {:?}; {} sync errors during the run \
         (first: {:?}); {} failed operations (first: {:?}); {} records skipped for a while; \
         copier {:?} over {} steps",
        converged.len(),
        ledger.ops,
        ledger.sync_errors.len(),
        ledger.sync_errors.first(),
        ledger.op_errors.len(),
        ledger.op_errors.first(),
        ledger.skipped_during_run,
        copier_tally(&copier),
        copier.steps()
    ))
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
}

#[tokio::test]
async fn three_devices_on_copies_of_a_folder_converge_through_a_misbehaving_copier() {
    let ops = env_number("CHATVAULT_SIM_OPS").unwrap_or(60) as usize;
    // One seed replays; otherwise consecutive seeds cover every naming.
    let seeds: Vec<u64> = match env_number("CHATVAULT_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                / 5
                * 5;
            (base..base + Service::ALL.len() as u64).collect()
        }
    };
    for seed in seeds {
        let started = std::time::Instant::now();
        match simulate(seed, ops).await {
            Ok(summary) => println!(
                "file-sync sim seed {seed}: {DEVICES} devices x {ops} ops in {:.1?}; {summary}",
                started.elapsed()
            ),
            Err(why) => panic!("seed {seed} (replay with CHATVAULT_SIM_SEED={seed}): {why}"),
        }
    }
}

/// Every file under `dev/` of a folder, by relative path.
fn device_files(folder: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    folders::files(folder, "dev")
}

/// Conflict copies of every file of every device directory, named as each
/// service names them, with the file's own content, with another file's
/// content of the same directory (a different version of the path), and
/// truncated: syncs never fail, nothing is added or lost, a fresh device
/// reads the same, and writes go on.
#[tokio::test]
async fn conflict_copies_in_every_service_naming_never_fail_a_sync_nor_change_data() {
    let dir = tempfile::tempdir().unwrap();
    let (devices, mut copier) = three_devices(dir.path(), 20, Faults::none()).await.unwrap();
    // Some history on every device, one chat deleted, one message edited.
    let mut chats = Vec::new();
    for (d, vault) in devices.iter().enumerate() {
        let chat = vault.new_chat(format!("from device {d}")).await.unwrap().id;
        for n in 0..3 {
            vault
                .add_message(chat, Role::User, format!("d{d} m{n}"))
                .await
                .unwrap();
        }
        chats.push(chat);
    }
    let doomed = devices[1].new_chat("doomed").await.unwrap().id;
    converge(&devices, &mut copier, "before the copies")
        .await
        .unwrap();
    devices[2].delete_chat(doomed).await.unwrap();
    devices[0].rename(chats[1], "renamed by 0").await.unwrap();
    let before = converge(&devices, &mut copier, "before the copies")
        .await
        .unwrap();
    assert_eq!(before.len(), DEVICES);

    for (s, service) in Service::ALL.iter().enumerate() {
        // The copies go into device 1's folder; the copier spreads them.
        let folder = copier.folder(1).to_path_buf();
        let files = device_files(&folder);
        assert!(files
            .keys()
            .any(|p| p.components().any(|c| c.as_os_str() == "log")));
        let by_dir: BTreeMap<PathBuf, Vec<&Vec<u8>>> =
            files
                .iter()
                .fold(BTreeMap::new(), |mut acc, (path, bytes)| {
                    acc.entry(path.parent().unwrap().to_path_buf())
                        .or_default()
                        .push(bytes);
                    acc
                });
        let mut placed = 0;
        for (i, (path, bytes)) in files.iter().enumerate() {
            let siblings = &by_dir[path.parent().unwrap()];
            let other = siblings[(i + 1) % siblings.len()];
            let contents = [
                bytes.clone(),
                other.clone(),
                bytes[..bytes.len() / 2].to_vec(),
            ];
            for (variant, content) in contents.iter().enumerate() {
                let copy = service.conflict_name(
                    path,
                    "ABCDEFG",
                    "device9",
                    CLOCK_START + 86_400 * s as u64 + 3_661,
                    variant as u32,
                );
                assert_ne!(&copy, path);
                std::fs::write(folder.join(&copy), content).unwrap();
                placed += 1;
            }
        }
        let after = converge(&devices, &mut copier, &format!("{service:?} copies"))
            .await
            .unwrap_or_else(|e| panic!("{service:?}: {placed} conflict copies placed: {e}"));
        assert_eq!(
            after,
            before,
            "{service:?} conflict copies changed the data: {:#?}",
            differences(&[before.clone(), after.clone()])
        );
    }

    // A fresh device on a copy full of conflict copies reads the same.
    let fresh_folder = dir.path().join("copy-fresh");
    for (path, bytes) in copier.files(0).unwrap() {
        let target = fresh_folder.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    let fresh = open(&fresh_folder, &dir.path().join("replica-fresh.redb"), 100)
        .await
        .unwrap();
    let report = fresh.sync_now().await.expect("a fresh device syncs");
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(state(&fresh).await.unwrap(), before);

    // Writing goes on and reaches everyone.
    let later = devices[2]
        .add_message(chats[0], Role::Assistant, "after the conflict copies")
        .await
        .unwrap();
    let end = converge(&devices, &mut copier, "after a later write")
        .await
        .unwrap();
    assert_eq!(
        end[&chats[0]].2.get(&later).map(String::as_str),
        Some("after the conflict copies")
    );
    assert_eq!(end.len(), before.len());
}
