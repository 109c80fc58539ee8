//! A vault in a folder that a file-sync service copies between devices,
//! each device working on its own copy (Syncthing, Dropbox, a NAS client):
//! changes made while the copies differ are never lost, whatever order the
//! service copies them in. The copier here is faithful (whole files, by
//! temporary file and rename, as Syncthing does); the seeded copier with
//! delays, truncation and conflict copies runs in `file_sync_sim.rs`.

mod folders;

use chatvault::{ChatId, ChatVault, Role};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const PASSPHRASE: &str = "file sync";

/// One device: its copy of the folder, its replica, its open vault.
struct Device {
    folder: PathBuf,
    vault: ChatVault,
}

async fn open(folder: &Path, replica: &Path) -> ChatVault {
    ChatVault::builder()
        .storage_url(format!("file://{}", folder.display()))
        .replica_path(replica)
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .open()
        .await
        .expect("open a device")
}

/// Every file of a folder copy by its path relative to the folder.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    folders::files(dir, "")
}

/// Copies every file of `from` that `to` lacks or holds differently, as a
/// file-sync service does: into a temporary name, then renamed into place.
/// Returns how many files it copied.
fn copy(from: &Path, to: &Path) -> usize {
    let theirs = files(to);
    let mut copied = 0;
    for (name, bytes) in files(from) {
        if theirs.get(&name) == Some(&bytes) {
            continue;
        }
        let target = to.join(&name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let staging = target.with_file_name(format!(
            ".syncthing.{}.tmp",
            target.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&staging, &bytes).unwrap();
        std::fs::rename(&staging, &target).unwrap();
        copied += 1;
    }
    copied
}

/// Copies every folder to every other until nothing is left to copy.
fn copy_all(devices: &[&Device]) {
    for from in devices {
        for to in devices {
            if from.folder != to.folder {
                copy(&from.folder, &to.folder);
            }
        }
    }
}

/// What a device shows: each live chat's title and its messages' text,
/// loading bodies it does not hold.
async fn view(vault: &ChatVault) -> BTreeMap<ChatId, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for summary in vault.sidebar() {
        if summary.deleted.is_some() {
            continue;
        }
        let chat = vault.load_full_chat(summary.id).await.expect("load a chat");
        let texts = chat
            .messages()
            .iter()
            .map(|m| m.content().to_string())
            .collect();
        out.insert(summary.id, (chat.title().to_string(), texts));
    }
    out
}

/// Sync rounds with copies in between until every device shows the same
/// thing and has nothing queued (at most `rounds` rounds).
async fn settle(devices: &[&Device], rounds: usize) -> BTreeMap<ChatId, (String, Vec<String>)> {
    for _ in 0..rounds {
        for device in devices {
            device.vault.sync_now().await.expect("sync");
        }
        copy_all(devices);
        for device in devices {
            device.vault.sync_now().await.expect("sync");
        }
        let first = view(&devices[0].vault).await;
        let mut same = true;
        for device in &devices[1..] {
            same &= view(&device.vault).await == first;
        }
        let queued: u64 = devices
            .iter()
            .map(|d| d.vault.pending_changes().expect("pending"))
            .sum();
        if same && queued == 0 {
            return first;
        }
    }
    let views: Vec<_> = futures::future::join_all(devices.iter().map(|d| view(&d.vault))).await;
    panic!("devices did not converge in {rounds} rounds: {views:#?}");
}

/// A first device creates the vault; the others open their own copies after
/// the service copied the key file.
async fn devices(root: &Path, count: usize) -> Vec<Device> {
    let mut out: Vec<Device> = Vec::new();
    for i in 0..count {
        let folder = root.join(format!("copy-{i}"));
        std::fs::create_dir_all(&folder).unwrap();
        if let Some(first) = out.first() {
            copy(&first.folder, &folder);
        }
        let vault = open(&folder, &root.join(format!("replica-{i}"))).await;
        out.push(Device { folder, vault });
    }
    out
}

/// The first case of issue 20: two devices each create a chat in their own
/// copy. In the shared-log layout both claimed `log/…02`, the service kept
/// one and renamed the other to a conflict copy, and the chat was gone from
/// every other device while `sync` said "synced".
#[tokio::test]
async fn chats_created_on_two_devices_in_their_own_copies_both_survive() {
    let root = tempfile::tempdir().unwrap();
    let devices = devices(root.path(), 2).await;
    let (a, b) = (&devices[0], &devices[1]);
    let from_a = a.vault.new_chat("from a").await.unwrap().id;
    a.vault
        .add_message(from_a, Role::User, "written on a")
        .await
        .unwrap();
    let from_b = b.vault.new_chat("from b").await.unwrap().id;
    b.vault
        .add_message(from_b, Role::User, "written on b")
        .await
        .unwrap();
    a.vault.sync_now().await.unwrap();
    b.vault.sync_now().await.unwrap();
    copy_all(&[a, b]);
    // No file was written by both devices: nothing for a service to turn
    // into a conflict copy.
    for device in [a, b] {
        let conflicts: Vec<_> = files(&device.folder)
            .into_keys()
            .filter(|p| p.to_string_lossy().contains("conflict"))
            .collect();
        assert!(conflicts.is_empty(), "{conflicts:?}");
    }
    let state = settle(&[a, b], 3).await;
    assert_eq!(state.len(), 2, "{state:#?}");
    assert_eq!(state[&from_a].1, vec!["written on a"]);
    assert_eq!(state[&from_b].1, vec!["written on b"]);

    // A device that joins later sees both.
    let fresh_folder = root.path().join("copy-fresh");
    std::fs::create_dir_all(&fresh_folder).unwrap();
    copy(&a.folder, &fresh_folder);
    let fresh = Device {
        vault: open(&fresh_folder, &root.path().join("replica-fresh")).await,
        folder: fresh_folder,
    };
    fresh.vault.sync_now().await.unwrap();
    assert_eq!(view(&fresh.vault).await, state);
}

/// Two devices append to the same chat while their copies differ: both
/// messages stay, on both devices and in the summary.
#[tokio::test]
async fn concurrent_edits_of_one_chat_on_two_copies_merge() {
    let root = tempfile::tempdir().unwrap();
    let devices = devices(root.path(), 3).await;
    let (a, b, c) = (&devices[0], &devices[1], &devices[2]);
    let chat = a.vault.new_chat("shared").await.unwrap().id;
    a.vault.add_message(chat, Role::User, "one").await.unwrap();
    settle(&[a, b, c], 3).await;

    a.vault
        .add_message(chat, Role::User, "two from a")
        .await
        .unwrap();
    b.vault
        .add_message(chat, Role::Assistant, "two from b")
        .await
        .unwrap();
    b.vault.rename(chat, "renamed on b").await.unwrap();
    b.vault
        .add_message(chat, Role::User, "three from b")
        .await
        .unwrap();
    a.vault.sync_now().await.unwrap();
    b.vault.sync_now().await.unwrap();
    // c only ever holds the summary until the end: it learns of both
    // versions through the feed.
    let state = settle(&[a, b, c], 4).await;
    let (title, mut texts) = state[&chat].clone();
    texts.sort();
    assert_eq!(title, "renamed on b");
    assert_eq!(
        texts,
        vec!["one", "three from b", "two from a", "two from b"]
    );
    for device in [a, b, c] {
        let summary = device
            .vault
            .sidebar()
            .into_iter()
            .find(|s| s.id == chat)
            .unwrap();
        assert_eq!(summary.message_count, 4, "summary on {:?}", device.folder);
        assert_eq!(summary.title, "renamed on b");
    }
}

/// A chat deleted on one copy while another device edits it: the deletion
/// wins everywhere, and nothing is left queued.
#[tokio::test]
async fn a_deletion_on_one_copy_wins_over_a_concurrent_edit() {
    let root = tempfile::tempdir().unwrap();
    let devices = devices(root.path(), 2).await;
    let (a, b) = (&devices[0], &devices[1]);
    let chat = a.vault.new_chat("doomed").await.unwrap().id;
    let kept = a.vault.new_chat("kept").await.unwrap().id;
    settle(&[a, b], 3).await;
    a.vault.delete_chat(chat).await.unwrap();
    b.vault
        .add_message(chat, Role::User, "too late")
        .await
        .unwrap();
    b.vault
        .add_message(chat, Role::User, "still too late")
        .await
        .unwrap();
    let state = settle(&[a, b], 4).await;
    assert_eq!(state.keys().copied().collect::<Vec<_>>(), vec![kept]);
}

/// Copies that arrive in pieces: a device's log entry copied before the
/// record it names, and an entry that is still partly written when the
/// other device looks. Nothing is skipped for good: once the files are
/// whole, the change arrives.
#[tokio::test]
async fn a_log_entry_copied_before_its_record_or_only_in_part_is_waited_for() {
    let root = tempfile::tempdir().unwrap();
    let devices = devices(root.path(), 2).await;
    let (a, b) = (&devices[0], &devices[1]);
    settle(&[a, b], 3).await;
    let chat = a.vault.new_chat("arrives late").await.unwrap().id;
    a.vault
        .add_message(chat, Role::User, "hello")
        .await
        .unwrap();
    a.vault.sync_now().await.unwrap();

    let missing: Vec<(PathBuf, Vec<u8>)> = files(&a.folder)
        .into_iter()
        .filter(|(name, bytes)| files(&b.folder).get(name) != Some(bytes))
        .collect();
    let (logs, others): (Vec<_>, Vec<_>) = missing
        .into_iter()
        .partition(|(name, _)| name.components().any(|c| c.as_os_str() == "log"));
    assert!(!logs.is_empty() && !others.is_empty());
    // The log entry, torn in half.
    for (name, bytes) in &logs {
        let target = b.folder.join(name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, &bytes[..bytes.len() / 2]).unwrap();
    }
    let report = b.vault.sync_now().await.unwrap();
    assert!(b.vault.sidebar().iter().all(|s| s.id != chat));
    // Not "synced": the status says something is on its way.
    assert!(report.waiting.is_some(), "{report:?}");
    assert!(
        matches!(b.vault.status(), chatvault::SyncStatus::Waiting { .. }),
        "{:?}",
        b.vault.status()
    );
    // Whole now, but the record blob is still missing.
    for (name, bytes) in &logs {
        std::fs::write(b.folder.join(name), bytes).unwrap();
    }
    b.vault.sync_now().await.unwrap();
    assert!(
        b.vault.sidebar().iter().any(|s| s.id == chat),
        "the summary travels in the log entry"
    );
    // Loading the body waits for its file with a retriable error.
    let early = b.vault.load_full_chat(chat).await.unwrap_err();
    assert!(early.is_retriable(), "{early:?}");
    // Then the rest arrives and the body loads.
    for (name, bytes) in &others {
        let target = b.folder.join(name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, bytes).unwrap();
    }
    let state = settle(&[a, b], 3).await;
    assert_eq!(state[&chat].1, vec!["hello"]);
}

/// The `dev/` directory names of a folder copy.
fn device_dirs(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder.join("dev"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The second case of issue 20: a second device runs `init` on its copy
/// before the copy has synced and so creates a rival vault. Once the copies
/// meet, each original device keeps working on its own vault; a new device
/// is told the folder holds two, with their chats and creation times, and
/// can pick one.
#[tokio::test]
async fn a_rival_vault_created_on_an_unsynced_copy_is_detected_and_explained() {
    let root = tempfile::tempdir().unwrap();
    let copy_a = root.path().join("copy-a");
    let copy_b = root.path().join("copy-b");
    std::fs::create_dir_all(&copy_a).unwrap();
    std::fs::create_dir_all(&copy_b).unwrap();
    let a = Device {
        vault: open(&copy_a, &root.path().join("replica-a")).await,
        folder: copy_a.clone(),
    };
    let mine = a.vault.new_chat("the original").await.unwrap().id;
    a.vault.add_message(mine, Role::User, "kept").await.unwrap();
    a.vault.sync_now().await.unwrap();
    // Device b's copy has not synced yet: opening creates another vault.
    let b = Device {
        vault: open(&copy_b, &root.path().join("replica-b")).await,
        folder: copy_b.clone(),
    };
    assert_ne!(a.vault.vault_id(), b.vault.vault_id());
    let rival = b.vault.new_chat("the rival").await.unwrap().id;
    b.vault.sync_now().await.unwrap();
    copy_all(&[&a, &b]);
    assert_eq!(device_dirs(&copy_a), device_dirs(&copy_b));
    assert_eq!(device_dirs(&copy_a).len(), 2);

    // Both keep working, each on its own vault, and neither sees the other's.
    for _ in 0..2 {
        a.vault
            .sync_now()
            .await
            .expect("the original device keeps syncing");
        b.vault
            .sync_now()
            .await
            .expect("the rival device keeps syncing");
        copy_all(&[&a, &b]);
    }
    let second = a.vault.new_chat("after the meeting").await.unwrap().id;
    a.vault.sync_now().await.unwrap();
    let ids = |vault: &ChatVault| -> Vec<ChatId> {
        let mut ids: Vec<ChatId> = vault.sidebar().into_iter().map(|s| s.id).collect();
        ids.sort();
        ids
    };
    let mut expected = vec![mine, second];
    expected.sort();
    assert_eq!(ids(&a.vault), expected);
    assert_eq!(ids(&b.vault), vec![rival]);

    // A new device must choose, and is told what it chooses between.
    copy_all(&[&a, &b]);
    let copy_c = root.path().join("copy-c");
    std::fs::create_dir_all(&copy_c).unwrap();
    copy(&copy_a, &copy_c);
    let refused = match ChatVault::builder()
        .storage_url(format!("file://{}", copy_c.display()))
        .replica_path(root.path().join("replica-c"))
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .open()
        .await
    {
        Ok(_) => panic!("a folder with two vaults is refused"),
        Err(e) => e,
    };
    let message = refused.to_string();
    assert!(
        matches!(refused, chatvault::Error::TwoVaults { ref vaults, .. } if vaults.len() == 2),
        "{refused:?}"
    );
    for expected in ["2 chat(s)", "1 chat(s)", "created 20", "?vault="] {
        assert!(
            message.contains(expected),
            "{expected:?} missing from: {message}"
        );
    }
    // Either vault opens by its id.
    let mut chosen = None;
    for name in device_dirs(&copy_a) {
        let vault = name.split_once('.').unwrap().0.to_string();
        let opened = ChatVault::builder()
            .storage_url(format!("file://{}?vault={vault}", copy_c.display()))
            .replica_path(root.path().join(format!("replica-c-{vault}")))
            .passphrase(PASSPHRASE)
            .scrypt_work_factor(4)
            .open()
            .await
            .expect("open one of the two vaults by its id");
        opened.sync_now().await.unwrap();
        if opened.vault_id() == a.vault.vault_id() {
            assert_eq!(ids(&opened), expected);
            chosen = Some(vault);
        } else {
            assert_eq!(opened.vault_id(), b.vault.vault_id());
            assert_eq!(ids(&opened), vec![rival]);
        }
    }
    assert!(chosen.is_some(), "the original vault was one of the two");
}

/// A folder vault from a release before the per-device layout (one shared
/// log, two devices on one file system, one with a change still queued)
/// moves with `migrate_folder`: older releases then stop with a typed
/// error naming the format they lack, the devices reopened by this release
/// keep every chat and the queued change, and moving again changes nothing.
#[tokio::test]
async fn a_shared_log_folder_moves_to_the_per_device_layout_and_older_releases_stop() {
    use chatvault_fs::{FolderLayout, FsStorageBuilder};
    use std::sync::Arc;
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("vault");
    let url = format!("file://{}", folder.display());
    let shared = |folder: &Path| -> chatvault::DynStorage {
        Arc::new(
            FsStorageBuilder::new(folder)
                .layout(FolderLayout::SharedLog)
                .open()
                .unwrap(),
        )
    };
    let open_shared = |replica: PathBuf| {
        let storage = shared(&folder);
        async move {
            ChatVault::builder()
                .storage(storage)
                .replica_path(replica)
                .passphrase(PASSPHRASE)
                .scrypt_work_factor(4)
                .open()
                .await
        }
    };
    let a = open_shared(root.path().join("replica-a")).await.unwrap();
    let b = open_shared(root.path().join("replica-b")).await.unwrap();
    let first = a.new_chat("before the move").await.unwrap().id;
    a.add_message(first, Role::User, "one").await.unwrap();
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();
    b.add_message(first, Role::Assistant, "queued on b")
        .await
        .unwrap();
    assert_eq!(b.pending_changes().unwrap(), 1);
    let (a_device, b_device) = (a.device_id(), b.device_id());
    b.close().await;

    let report = chatvault::migrate_folder(&url, a_device).await.unwrap();
    assert!(!report.already_moved && report.records >= 1, "{report:?}");
    assert!(folder.join("dev").is_dir());

    // The running old-layout handle, and an older release opening the
    // folder afresh, stop with a typed error instead of writing.
    let stopped = a.sync_now().await.unwrap_err();
    assert!(
        matches!(
            stopped,
            chatvault::Error::UnsupportedFormat { found: 128, .. }
        ),
        "{stopped:?}"
    );
    a.close().await;
    let old = chatvault_object_store::ObjectStoreStorage::new(
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&folder).unwrap()),
        object_store::path::Path::default(),
        chatvault_object_store::ObjectStoreOptions::default(),
    );
    let refused = match ChatVault::builder()
        .storage(Arc::new(old))
        .replica_path(root.path().join("replica-old"))
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .open()
        .await
    {
        Ok(_) => panic!("an older release cannot open a moved folder"),
        Err(e) => e,
    };
    assert!(
        matches!(
            refused,
            chatvault::Error::UnsupportedFormat { found: 128, .. }
        ),
        "{refused:?}"
    );

    // This release reopens both devices on the per-device layout.
    let a = Device {
        vault: open(&folder, &root.path().join("replica-a")).await,
        folder: folder.clone(),
    };
    let b = Device {
        vault: open(&folder, &root.path().join("replica-b")).await,
        folder: folder.clone(),
    };
    assert_eq!(a.vault.device_id(), a_device);
    assert_eq!(b.vault.device_id(), b_device);
    let state = settle(&[&a, &b], 3).await;
    let mut texts = state[&first].1.clone();
    texts.sort();
    assert_eq!(texts, vec!["one", "queued on b"]);
    let dirs = device_dirs(&folder);
    assert!(
        dirs.iter().all(|d| d.starts_with("0000000000000000.")),
        "every device follows the moved vault: {dirs:?}"
    );
    let again = chatvault::migrate_folder(&url, b_device).await.unwrap();
    assert!(again.already_moved, "{again:?}");
}

/// Compaction in the per-device layout: each device compacts only its own
/// log, the others read on from its snapshot, and log entries the service
/// brings back after the delete (from a copy that had not seen it) change
/// nothing and are removed again.
#[tokio::test]
async fn each_device_compacts_its_own_log_and_resurrected_entries_are_harmless() {
    use chatvault_fs::{FsStorageBuilder, WriterId};
    use chatvault_object_store::{CompactOptions, MaintenancePolicy, ObjectStoreOptions};
    use std::sync::Arc;
    use std::time::Duration;
    let root = tempfile::tempdir().unwrap();
    // Short, so the test is quick, but with room for a put on a loaded
    // machine (at 20 ms a busy CI machine made a sync give up with
    // "too busy to commit").
    let claim_delay = Duration::from_millis(200);
    let min_age = 2 * claim_delay;
    let options = ObjectStoreOptions::default()
        .with_max_claim_delay(claim_delay)
        .with_maintenance(
            MaintenancePolicy::default()
                .with_compact(CompactOptions::default().with_min_age(min_age)),
        );
    let open_as = |i: u64| {
        let folder = root.path().join(format!("copy-{i}"));
        std::fs::create_dir_all(&folder).unwrap();
        let storage = FsStorageBuilder::new(&folder)
            .writer(WriterId(i))
            .options(options.clone())
            .fsync(false)
            .open()
            .unwrap();
        let replica = root.path().join(format!("replica-{i}"));
        async move {
            let vault = ChatVault::builder()
                .storage(Arc::new(storage))
                .replica_path(replica)
                .device_id(chatvault::DeviceId(i))
                .passphrase(PASSPHRASE)
                .scrypt_work_factor(4)
                .open()
                .await
                .unwrap();
            Device { folder, vault }
        }
    };
    let a = open_as(1).await;
    copy(&a.folder, &root.path().join("copy-2"));
    let b = open_as(2).await;
    let chat = a.vault.new_chat("long").await.unwrap().id;
    for i in 0..30 {
        a.vault.rename(chat, format!("title {i}")).await.unwrap();
        a.vault.sync_now().await.unwrap();
    }
    settle(&[&a, &b], 3).await;
    let a_log = |folder: &Path| -> usize {
        let dev = folder.join("dev");
        let dir = std::fs::read_dir(&dev)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .ends_with("0000000000000001")
            })
            .unwrap();
        std::fs::read_dir(dir.join("log")).unwrap().count()
    };
    let before = a_log(&a.folder);
    assert!(before >= 30, "{before}");
    let b_own_before = files(&b.folder)
        .keys()
        .filter(|p| p.to_string_lossy().contains(".0000000000000002/"))
        .count();
    tokio::time::sleep(min_age + claim_delay).await;
    let report = a.vault.maintain(true).await.unwrap();
    assert!(report.ran && report.removed_entries >= 29, "{report:?}");
    assert_eq!(a_log(&a.folder), 1, "only the newest entry stays");
    // b's copy still has them; b compacts nothing of a's.
    assert_eq!(a_log(&b.folder), before);
    b.vault.maintain(true).await.unwrap();
    assert_eq!(a_log(&b.folder), before);
    let b_own_after = files(&b.folder)
        .keys()
        .filter(|p| p.to_string_lossy().contains(".0000000000000002/"))
        .count();
    assert!(b_own_after <= b_own_before.max(1) + 1);

    // The service re-creates in a's copy what b's copy still holds.
    copy(&b.folder, &a.folder);
    assert_eq!(a_log(&a.folder), before, "the deleted entries are back");
    a.vault
        .rename(chat, "after the resurrection")
        .await
        .unwrap();
    let state = settle(&[&a, &b], 3).await;
    assert_eq!(state[&chat].0, "after the resurrection");
    // A device that joins now reads a's log from its snapshot.
    let fresh_folder = root.path().join("copy-3");
    std::fs::create_dir_all(&fresh_folder).unwrap();
    copy(&a.folder, &fresh_folder);
    let fresh = open_as(3).await;
    fresh.vault.sync_now().await.unwrap();
    assert_eq!(view(&fresh.vault).await, state);
    tokio::time::sleep(min_age + claim_delay).await;
    a.vault.maintain(true).await.unwrap();
    assert!(
        a_log(&a.folder) <= 2,
        "compacted again: {}",
        a_log(&a.folder)
    );
}

/// A device that holds a chat as a summary only meets, in one page, an
/// older deletion from one device and a newer edit from another (made
/// while their copies differed): the deletion wins there too, without
/// loading the body, and the sidebar drops the chat.
#[tokio::test]
async fn a_summary_only_device_applies_an_older_concurrent_deletion() {
    let root = tempfile::tempdir().unwrap();
    let devices = devices(root.path(), 3).await;
    let (a, b, c) = (&devices[0], &devices[1], &devices[2]);
    let chat = a.vault.new_chat("doomed").await.unwrap().id;
    a.vault.add_message(chat, Role::User, "hi").await.unwrap();
    a.vault.sync_now().await.unwrap();
    copy_all(&[a, b, c]);
    b.vault.sync_now().await.unwrap();
    c.vault.sync_now().await.unwrap();
    assert!(c.vault.sidebar().iter().any(|s| s.id == chat));
    b.vault.load_full_chat(chat).await.unwrap();

    a.vault.delete_chat(chat).await.unwrap();
    b.vault.add_message(chat, Role::User, "one").await.unwrap();
    b.vault.add_message(chat, Role::User, "two").await.unwrap();
    a.vault.sync_now().await.unwrap();
    b.vault.sync_now().await.unwrap();
    copy(&a.folder, &c.folder);
    copy(&b.folder, &c.folder);
    c.vault.sync_now().await.unwrap();
    assert!(
        c.vault
            .sidebar()
            .iter()
            .all(|s| s.id != chat || s.deleted.is_some()),
        "the deletion is applied without the body: {:?}",
        c.vault.sidebar()
    );
    let state = settle(&[a, b, c], 4).await;
    assert!(!state.contains_key(&chat));
}
