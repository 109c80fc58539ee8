//! The `chatvault` binary keeps the vault compacted although every command
//! is a short process: a sync runs the housekeeping when it is due (issue
//! 21), and `chatvault maintain` forces it and says what it removed.

mod common;
use common::{failed_with, succeeded, Setup, PASSPHRASE};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

impl Setup {
    fn server_url(&self) -> String {
        format!("file://{}", self.path("server").display())
    }

    /// Runs `chatvault` as `device` (a replica file name); must succeed.
    fn ok(&self, device: &str, args: &[&str]) -> String {
        succeeded(self.output(device, args))
    }

    fn output(&self, device: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_chatvault"))
            .args(args)
            .arg("--replica")
            .arg(self.path(device))
            .env("CHATVAULT_NO_AGENT", "1")
            .env("CHATVAULT_SERVER", self.server_url())
            .env("CHATVAULT_PASSPHRASE", PASSPHRASE)
            .env("CHATVAULT_SCRYPT_WORK_FACTOR", "4")
            .env("XDG_DATA_HOME", self.path("data"))
            .env_remove("CHATVAULT_REPLICA")
            .env_remove("CHATVAULT_MAINTENANCE_BUDGET")
            .stdin(Stdio::null())
            .output()
            .expect("run chatvault")
    }

    /// Objects under `<sub>` (log entries, snapshots) of every device's
    /// log in the server folder (the per-device layout: `dev/*/<sub>`).
    fn objects(&self, sub: &str) -> usize {
        let count = |dir: &Path| match std::fs::read_dir(dir.join(sub)) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count(),
            Err(_) => 0,
        };
        match std::fs::read_dir(self.path("server").join("dev")) {
            Ok(devices) => devices
                .filter_map(|e| e.ok())
                .map(|e| count(&e.path()))
                .sum(),
            Err(_) => 0,
        }
    }

    /// Creates the vault and commits `edits` log entries through the
    /// library as device `writer.redb` (one `sync_now` per rename, no
    /// maintenance; in the per-device layout a device compacts its own
    /// log),
    /// faster than as many processes. Every object is then made two hours
    /// old: older than the compaction horizon (one hour), as a real
    /// vault's history is.
    fn history(&self, edits: usize) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let vault = chatvault::ChatVault::builder()
                .storage_url(self.server_url())
                .replica_path(self.path("writer.redb"))
                .passphrase(PASSPHRASE)
                .auto_maintenance(None)
                .open()
                .await
                .expect("open through the library");
            let chat = vault.new_chat("a long history").await.expect("new").id;
            vault.sync_now().await.expect("first sync");
            for i in 0..edits {
                vault
                    .rename(chat, format!("title {i}"))
                    .await
                    .expect("rename");
                vault.sync_now().await.expect("sync");
            }
            vault.close().await;
        });
        let old = SystemTime::now() - Duration::from_secs(2 * 3600);
        backdate(&self.path("server"), old);
    }
}

/// Sets the modification time of every file under `dir` to `when`.
fn backdate(dir: &Path, when: SystemTime) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            backdate(&path, when);
        } else {
            std::fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|f| f.set_modified(when))
                .expect("set the modification time");
        }
    }
}

#[test]
fn sync_on_a_device_that_never_maintained_compacts_a_long_log() {
    let setup = Setup::new();
    // Above the backend's threshold (256 entries after the newest
    // snapshot, stretched by up to half).
    setup.history(400);
    assert!(setup.objects("log") > 400);
    assert_eq!(setup.objects("snap"), 0);

    // A generous budget so the outcome does not depend on this machine's
    // speed; the default is 1.5 s.
    setup.ok("writer.redb", &["sync", "--maintenance-budget", "60"]);
    assert_eq!(setup.objects("snap"), 1, "the sync wrote a snapshot");
    assert!(
        setup.objects("log") <= 1,
        "{} log entries left: the sync did not compact",
        setup.objects("log")
    );
    let ls = setup.ok("phone.redb", &["ls"]);
    assert!(ls.contains(&format!("title {}", 399)), "{ls}");
}

#[test]
fn maintain_forces_compaction_and_prints_what_it_removed() {
    let setup = Setup::new();
    setup.history(30);
    let before = setup.objects("log");
    let out = setup.ok("writer.redb", &["maintain"]);
    let removed: usize = out
        .strip_prefix("compacted: removed ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {out}"));
    assert_eq!(removed, before - 1, "every entry but the newest: {out}");
    assert!(out.contains("other objects"), "{out}");
    assert_eq!(setup.objects("log"), 1);
    assert_eq!(setup.objects("snap"), 1);
}

#[test]
fn a_negative_budget_is_a_usage_error() {
    let setup = Setup::new();
    failed_with(
        setup.output("writer.redb", &["sync", "--maintenance-budget=-1"]),
        2,
        "not a non-negative number of seconds",
    );
}

/// `chatvault migrate-folder` moves a folder vault of an earlier release
/// (one shared log) to the per-device layout; the next commands use it and
/// see every chat, and a second run says the folder moved already.
#[test]
fn migrate_folder_moves_a_shared_log_vault_and_later_commands_use_it() {
    let setup = Setup::new();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let chat = runtime.block_on(async {
        let storage = chatvault_fs::FsStorageBuilder::new(setup.path("server"))
            .layout(chatvault_fs::FolderLayout::SharedLog)
            .open()
            .expect("a shared-log folder");
        let vault = chatvault::ChatVault::builder()
            .storage(std::sync::Arc::new(storage))
            .replica_path(setup.path("old.redb"))
            .passphrase(PASSPHRASE)
            .scrypt_work_factor(4)
            .open()
            .await
            .expect("open through the library");
        let chat = vault
            .new_chat("made before the move")
            .await
            .expect("new")
            .id;
        vault.sync_now().await.expect("sync");
        vault.close().await;
        chat
    });
    assert!(setup.path("server").join("log").is_dir());
    let out = setup.ok("writer.redb", &["migrate-folder"]);
    assert!(
        out.starts_with("moved to the per-device layout: 1 records"),
        "{out}"
    );
    assert!(setup.path("server").join("dev").is_dir());
    let ls = setup.ok("phone.redb", &["ls", "--full-ids"]);
    assert!(ls.contains(&chat.to_string()), "{ls}");
    setup.ok("phone.redb", &["new", "made after the move"]);
    assert!(setup
        .ok("writer.redb", &["ls"])
        .contains("made after the move"));
    let again = setup.ok("writer.redb", &["migrate-folder"]);
    assert!(
        again.contains("already uses the per-device layout"),
        "{again}"
    );
}

#[test]
fn maintain_also_reports_the_attachment_blobs_it_collected() {
    let setup = Setup::new();
    // Two chunks (1,000,000 and 500,000 bytes) and a manifest.
    std::fs::write(setup.path("photo.jpg"), vec![7u8; 1_500_000]).expect("write the photo");
    let chat = setup.ok("writer.redb", &["new", "Trip"]).trim().to_string();
    let photo = setup.path("photo.jpg");
    setup.ok(
        "writer.redb",
        &["attach", &chat, photo.to_str().expect("path")],
    );
    setup.ok("writer.redb", &["sync"]);
    let out = setup.ok("writer.redb", &["maintain"]);
    // Everything is younger than the 7-day grace period: nothing goes.
    assert!(
        out.contains(
            "attachments: 3 blobs stored, 0 past the grace period, 0 still named, 0 deleted"
        ),
        "{out}"
    );
}
