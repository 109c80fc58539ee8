//! The Syncthing fixture against real `syncthing` processes: clusters of two
//! and three start, files and deletions travel, offline concurrent edits
//! become a `.sync-conflict-` copy, and stopping cleans up. Each test skips
//! (printing why) when Syncthing is not installed, unless `CI` is set.

use chatvault_test_services::syncthing::SyncthingCluster;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SYNC_LIMIT: Duration = Duration::from_secs(30);

/// Polls `path` until it holds `content` (at most [`SYNC_LIMIT`]); returns
/// how long that took.
async fn wait_for_content(path: &Path, content: &[u8]) -> Duration {
    let started = Instant::now();
    loop {
        if std::fs::read(path).is_ok_and(|found| found == content) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < SYNC_LIMIT,
            "{} did not get its content within {SYNC_LIMIT:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_start_and_copy_a_small_file() {
    let started = Instant::now();
    let Some(cluster) = SyncthingCluster::start_for_test(2).await else {
        return;
    };
    eprintln!(
        "served by {:?}; 2 devices up and connected in {:?}",
        cluster.served(),
        started.elapsed()
    );
    assert_eq!(cluster.len(), 2);
    assert_ne!(cluster.device_id(0), cluster.device_id(1));

    // Left to the file-system watcher (fsWatcherDelayS 1), as a real
    // device would be.
    let content = b"a small record, 64 bytes long ..................................";
    std::fs::write(cluster.folder(0).join("watched.bin"), content).expect("write");
    let watched = wait_for_content(&cluster.folder(1).join("watched.bin"), content).await;

    // With an explicit rescan right after the write (what a test does).
    let written = Instant::now();
    std::fs::write(cluster.folder(1).join("scanned.bin"), content).expect("write");
    cluster.scan(1).await.expect("scan");
    wait_for_content(&cluster.folder(0).join("scanned.bin"), content).await;
    let scanned = written.elapsed();
    eprintln!(
        "syncthing copy of a {}-byte file: {watched:?} via the watcher, {scanned:?} with a rescan",
        content.len()
    );

    cluster.wait_in_sync(SYNC_LIMIT).await.expect("in sync");
    assert_eq!(
        cluster.files(0).expect("files"),
        cluster.files(1).expect("files")
    );
    cluster.stop().expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_copy_files_directories_deletions_and_catch_up() {
    let started = Instant::now();
    let Some(cluster) = SyncthingCluster::start_for_test(3).await else {
        return;
    };
    eprintln!("3 devices up and connected in {:?}", started.elapsed());

    let nested = PathBuf::from("log/device-a/00000000000000000001");
    std::fs::create_dir_all(cluster.folder(0).join("log/device-a")).expect("mkdir");
    std::fs::write(cluster.folder(0).join(&nested), b"entry one").expect("write");
    std::fs::write(cluster.folder(0).join("top.txt"), b"top").expect("write");
    let copied = Instant::now();
    cluster.wait_in_sync(SYNC_LIMIT).await.expect("in sync");
    eprintln!("2 files reached 2 devices in {:?}", copied.elapsed());
    for i in 1..3 {
        assert_eq!(
            std::fs::read(cluster.folder(i).join(&nested)).expect("copied"),
            b"entry one"
        );
        assert_eq!(
            std::fs::read(cluster.folder(i).join("top.txt")).expect("copied"),
            b"top"
        );
    }

    // Device 2 offline: it misses a new file, then catches up.
    let mut cluster = cluster;
    cluster.pause_device(2).await.expect("pause");
    std::fs::write(cluster.folder(1).join("while-away.txt"), b"news").expect("write");
    cluster
        .wait_in_sync(SYNC_LIMIT)
        .await
        .expect("0 and 1 in sync");
    assert_eq!(
        std::fs::read(cluster.folder(0).join("while-away.txt")).expect("copied"),
        b"news"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!cluster.folder(2).join("while-away.txt").exists());
    cluster.resume_device(2).await.expect("resume");
    cluster.wait_in_sync(SYNC_LIMIT).await.expect("in sync");
    assert_eq!(
        std::fs::read(cluster.folder(2).join("while-away.txt")).expect("copied"),
        b"news"
    );
    std::fs::remove_file(cluster.folder(1).join("while-away.txt")).expect("delete");
    std::fs::remove_file(cluster.folder(2).join("top.txt")).expect("delete");
    cluster.wait_in_sync(SYNC_LIMIT).await.expect("in sync");
    for i in 0..3 {
        let files = cluster.files(i).expect("files");
        assert_eq!(
            files.keys().cloned().collect::<Vec<_>>(),
            vec![nested.clone()],
            "device {i}"
        );
    }
    cluster.stop().expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_offline_edits_become_a_sync_conflict_copy() {
    let Some(mut cluster) = SyncthingCluster::start_for_test(2).await else {
        return;
    };
    std::fs::write(cluster.folder(0).join("chat.txt"), b"base").expect("write");
    cluster.wait_in_sync(SYNC_LIMIT).await.expect("in sync");

    cluster.pause_device(1).await.expect("pause");
    std::fs::write(cluster.folder(0).join("chat.txt"), b"edited on device 0").expect("write");
    std::fs::write(
        cluster.folder(1).join("chat.txt"),
        b"edited on device 1, offline",
    )
    .expect("write");
    let resumed = Instant::now();
    cluster.resume_device(1).await.expect("resume");
    cluster.wait_in_sync(SYNC_LIMIT).await.expect("in sync");
    eprintln!(
        "conflict resolved on both devices {:?} after resume",
        resumed.elapsed()
    );

    let files = cluster.files(0).expect("files");
    assert_eq!(files, cluster.files(1).expect("files"));
    let conflicts: Vec<_> = files
        .keys()
        .filter_map(|path| path.to_str())
        .filter(|name| name.starts_with("chat.sync-conflict-"))
        .collect();
    assert_eq!(conflicts.len(), 1, "one conflict copy in {files:?}");
    assert_eq!(files.len(), 2, "chat.txt and its conflict copy: {files:?}");
    // chat.sync-conflict-YYYYMMDD-HHMMSS-DEVICE7.txt, made on the loser's
    // device with the id of the device whose edit lost.
    let name = conflicts[0];
    let stamp = &name["chat.sync-conflict-".len()..name.len() - ".txt".len()];
    let (date, rest) = stamp.split_at(8);
    assert!(date.bytes().all(|b| b.is_ascii_digit()), "{name}");
    assert!(rest.starts_with('-') && rest[1..7].bytes().all(|b| b.is_ascii_digit()));
    let device = &rest[8..];
    assert_eq!(&rest[7..8], "-", "{name}");
    assert!(
        device == &cluster.device_id(0)[..7] || device == &cluster.device_id(1)[..7],
        "{name}: {device} names neither device"
    );
    let mut contents: Vec<&[u8]> = files.values().map(Vec::as_slice).collect();
    contents.sort();
    assert_eq!(
        contents,
        vec![
            b"edited on device 0".as_slice(),
            b"edited on device 1, offline".as_slice()
        ],
        "both edits survive, one in the conflict copy"
    );
    cluster.stop().expect("stop");
}

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_drop_kill_the_processes_and_remove_the_files() {
    let Some(cluster) = SyncthingCluster::start_for_test(2).await else {
        return;
    };
    let root = cluster.root().expect("root").to_owned();
    let pids = cluster.pids();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|pid| process_alive(*pid)));
    assert!(root.join("folder0/.stfolder").is_dir());
    cluster.stop().expect("stop");
    assert!(!root.exists(), "{} left behind", root.display());
    assert!(pids.iter().all(|pid| !process_alive(*pid)));

    let Some(cluster) = SyncthingCluster::start_for_test(2).await else {
        return;
    };
    let root = cluster.root().expect("root").to_owned();
    let pids = cluster.pids();
    drop(cluster);
    assert!(!root.exists(), "{} left behind", root.display());
    assert!(pids.iter().all(|pid| !process_alive(*pid)));
}
