//! `chatvault verify` against a server that damages or replays the vault's
//! key file: each is reported (exit 5) and the records are still checked
//! with the key file this device trusts.

use assert_cmd::Command;
use chatvault::core::envelope::{EnvelopeCipher, KeyProtection, Unlock};
use std::path::{Path, PathBuf};
use std::process::Output;

const PASSPHRASE: &str = "correct horse battery staple";

/// A temporary folder vault and one device's config and data directories.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let world = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let server = format!("file://{}", world.server().display());
        world.ok(&["init", "--create", &server]);
        world.ok(&["new", "kept safe"]);
        world
    }

    fn server(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_chatvault"))
            .args(args)
            // No unlock agent: these tests unlock every time (tests/agent.rs covers it).
            .env("CHATVAULT_NO_AGENT", "1")
            .env("CHATVAULT_CONFIG_DIR", self.dir.path().join("config"))
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("HOME", self.dir.path().join("home"))
            .env("CHATVAULT_PASSPHRASE", PASSPHRASE)
            .env("CHATVAULT_SCRYPT_WORK_FACTOR", "4")
            .env_remove("CHATVAULT_SERVER")
            .env_remove("CHATVAULT_REPLICA")
            .env_remove("CHATVAULT_VAULT")
            .env_remove("RUST_LOG")
            .write_stdin("")
            .output()
            .expect("run chatvault")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: exit {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    }

    /// `verify`, which must exit 5; returns its stdout.
    fn verify_fails(&self) -> String {
        let out = self.run(&["verify"]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(5),
            "stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// The key file objects on the server, oldest version first: those of
    /// the devices (the per-device layout's `dev/`), not the markers at the
    /// root that stop older releases.
    fn key_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut folders = vec![self.server().join("dev")];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(folder).expect("read").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.parent().and_then(Path::file_name) == Some("keyring".as_ref()) {
                    found.push(path);
                }
            }
        }
        found.sort();
        assert!(!found.is_empty(), "no key file under the server folder");
        found
    }

    /// Writes `bytes` as the server's next key file object, the way the
    /// folder backend stores a new version (or a hostile server replays).
    fn put_key_file(&self, bytes: &[u8]) {
        let latest = self.key_files().pop().expect("a key file");
        let number: u64 = latest
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .expect("numbered key file");
        let next = latest.with_file_name(format!("{:020}", number + 1));
        std::fs::write(next, bytes).expect("write key file");
    }
}

fn passphrase() -> Unlock {
    Unlock::Passphrase(PASSPHRASE.to_string().into())
}

/// The key file another device would write after rotating the data key.
fn rotated(key_file: &[u8]) -> Vec<u8> {
    let cipher = EnvelopeCipher::from_key_file(key_file, &passphrase()).expect("open key file");
    cipher.rotate();
    let protection =
        KeyProtection::for_passphrase(PASSPHRASE.to_string().into()).with_work_factor(4);
    cipher.to_key_file(&protection).expect("write key file")
}

#[test]
fn verify_reports_the_key_file_it_checked() {
    let world = World::new();
    let out = world.ok(&["verify"]);
    assert!(
        out.contains("key file  version 1, fingerprint ")
            && out.contains("the same as this device's copy"),
        "{out}"
    );
    assert!(
        out.contains("1 server records") && out.contains("all open and agree"),
        "{out}"
    );

    // Another device rotates: the server's newer key file is a valid
    // successor of this device's copy.
    let v1 = std::fs::read(world.key_files().pop().expect("key file")).expect("read");
    world.put_key_file(&rotated(&v1));
    let out = world.ok(&["verify"]);
    assert!(
        out.contains("key file  version 2,")
            && out.contains("valid successor")
            && out.contains("(version 1)"),
        "{out}"
    );
}

#[test]
fn verify_catches_a_replayed_older_key_file() {
    let world = World::new();
    let v1 = std::fs::read(world.key_files().pop().expect("key file")).expect("read");
    world.put_key_file(&rotated(&v1));
    // This device adopts version 2 (a normal command keeps its copy).
    world.ok(&["ls", "--full-ids"]);
    // The server now serves version 1 again.
    world.put_key_file(&v1);
    let out = world.verify_fails();
    assert!(out.contains("key file  server version 1"), "{out}");
    assert!(out.contains("rollback"), "{out}");
    assert!(out.contains("this device holds version 2"), "{out}");
    // The records are still checked, with the key file this device trusts.
    assert!(
        out.contains("1 server records") && out.contains("1 problem(s)"),
        "{out}"
    );
    // Nothing was written: the replica's copy is still version 2, so the
    // replay stays detected.
    assert!(world.verify_fails().contains("rollback"));
}

#[test]
fn verify_catches_a_tampered_key_file() {
    let world = World::new();
    let latest = world.key_files().pop().expect("key file");
    let mut bytes = std::fs::read(&latest).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&latest, bytes).expect("tamper");
    let out = world.verify_fails();
    assert!(
        out.contains("key file  server: does not open with the secret that opens this device's copy (version 1"),
        "{out}"
    );
    assert!(out.contains("damaged or replaced"), "{out}");
    assert!(
        out.contains("1 server records") && out.contains("1 problem(s)"),
        "{out}"
    );
}

#[test]
fn verify_with_a_wrong_passphrase_is_a_key_error_not_an_integrity_one() {
    let world = World::new();
    let out = Command::new(env!("CARGO_BIN_EXE_chatvault"))
        .arg("verify")
        .env("CHATVAULT_CONFIG_DIR", world.dir.path().join("config"))
        .env("XDG_DATA_HOME", world.dir.path().join("data"))
        .env("HOME", world.dir.path().join("home"))
        .env("CHATVAULT_PASSPHRASE", "not it")
        .env_remove("CHATVAULT_SERVER")
        .env_remove("CHATVAULT_REPLICA")
        .env_remove("CHATVAULT_VAULT")
        .write_stdin("")
        .output()
        .expect("run verify");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes, as the next version of the only chat on the server, a record
/// sealed with the vault's key whose `body_of` chat is another chat, or
/// whose deleted flag says `deleted`: records the engine refuses.
fn put_inconsistent_record(world: &World, body_of: Option<chatvault::ChatId>, deleted: bool) {
    use chatvault::core::raw::codec::{encode_chat, encode_summary};
    use chatvault::core::storage::{Part, PutPrecondition, SealedRecord};
    use chatvault::core::{Aad, Cipher};
    let key_file = std::fs::read(world.key_files().pop().expect("key file")).expect("read");
    let cipher = EnvelopeCipher::from_key_file(&key_file, &passphrase()).expect("open key file");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let storage = chatvault::open_url(&format!("file://{}", world.server().display()))
            .await
            .expect("folder");
        let page = storage
            .changes(&chatvault::core::storage::Cursor::start(), 100)
            .await
            .expect("feed");
        let change = page.changes.last().expect("one chat");
        let (chat, version) = (change.chat, change.version);
        let clock = chatvault::core::Clock::new(chatvault::DeviceId(9));
        let mut state = chatvault::Chat::new(body_of.unwrap_or(chat), "inconsistent", clock.tick());
        state.add_message(chatvault::Role::User, "hello", clock.tick());
        let mut summary = state.summary();
        summary.id = chat;
        let aad = |part| Aad {
            vault: cipher.vault(),
            chat,
            part,
            version: version + 1,
        };
        let record = SealedRecord {
            chat,
            version: version + 1,
            deleted,
            summary: cipher
                .seal(
                    &aad(Part::Summary),
                    &encode_summary(&summary).expect("encode"),
                )
                .expect("seal")
                .into(),
            body: (!deleted).then(|| {
                cipher
                    .seal(&aad(Part::Body), &encode_chat(&state).expect("encode"))
                    .expect("seal")
                    .into()
            }),
        };
        storage
            .put(record, PutPrecondition::Version(version))
            .await
            .expect("put");
    });
}

#[test]
fn verify_refuses_what_the_engine_refuses_a_body_of_another_chat() {
    let world = World::new();
    put_inconsistent_record(&world, Some(chatvault::ChatId::new()), false);
    let out = world.verify_fails();
    assert!(out.contains("it holds chat"), "{out}");
}

#[test]
fn verify_refuses_what_the_engine_refuses_a_deleted_flag_against_the_summary() {
    let world = World::new();
    put_inconsistent_record(&world, None, true);
    let out = world.verify_fails();
    assert!(out.contains("deleted flag disagrees"), "{out}");
}
