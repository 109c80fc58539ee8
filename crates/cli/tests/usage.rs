//! The `chatvault` command as people use it (issue 26): pipes that close
//! early, short chat ids, passphrases typed at a terminal, and the small
//! things around them.

mod common;
use common::{failed_with, succeeded};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const PASSPHRASE: &str = "correct horse battery staple";

/// A folder server, a data directory and a config directory.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The command, unlocked with [`PASSPHRASE`], on the default replica.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatvault"));
        command
            .args(args)
            .env("CHATVAULT_NO_AGENT", "1")
            .env(
                "CHATVAULT_SERVER",
                format!("file://{}", self.path("server").display()),
            )
            .env("CHATVAULT_PASSPHRASE", PASSPHRASE)
            .env("CHATVAULT_SCRYPT_WORK_FACTOR", "4")
            .env("XDG_DATA_HOME", self.path("data"))
            .env("CHATVAULT_CONFIG_DIR", self.path("config"))
            .env_remove("CHATVAULT_REPLICA")
            .env_remove("CHATVAULT_VAULT")
            .env_remove("CHATVAULT_NEW_PASSPHRASE")
            .env_remove("CHATVAULT_IDENTITY")
            .env_remove("CHATVAULT_ALLOW_WEAK_PASSPHRASE")
            .stdin(Stdio::null());
        command
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run chatvault")
    }

    fn ok(&self, args: &[&str]) -> String {
        succeeded(self.output(args))
    }

    /// Imports chats given as (id, title, message count).
    fn import(&self, chats: &[(String, String, usize)]) {
        let file = self.path("import.json");
        std::fs::write(&file, export_json(chats)).expect("write the import file");
        self.ok(&["import", file.to_str().expect("UTF-8 path")]);
    }
}

/// A chatvault JSON export of `chats` (id, title, message count).
fn export_json(chats: &[(String, String, usize)]) -> String {
    let chats: Vec<serde_json::Value> = chats
        .iter()
        .enumerate()
        .map(|(n, (id, title, messages))| {
            let messages: Vec<serde_json::Value> = (0..*messages)
                .map(|m| {
                    serde_json::json!({
                        "id": format!("{:08x}-0000-4000-8000-{:012x}", m, n),
                        "role": if m % 2 == 0 { "user" } else { "assistant" },
                        "content": format!("message {m} of chat {n}: findme, with some more words to fill a line"),
                        "created": format!("2024-05-01T09:{:02}:{:02}.000Z", (m / 60) % 60, m % 60),
                    })
                })
                .collect();
            serde_json::json!({
                "id": id,
                "title": title,
                "starred": false,
                "created": "2024-05-01T09:00:00.000Z",
                "updated": "2024-05-01T09:00:00.000Z",
                "messages": messages,
            })
        })
        .collect();
    serde_json::json!({"format": "chatvault-json/1", "chats": chats}).to_string()
}

/// A chat id whose first 8 hex digits are `prefix` (zero-padded).
fn id(prefix: &str, n: usize) -> String {
    format!("{prefix:0<8}-1111-4111-8111-{n:012x}")
}

/// Runs `command` with its standard output read by a reader that closes
/// it after the first line; returns the exit code and standard error.
fn first_line_only(mut command: Command) -> (Option<i32>, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chatvault");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).expect("read stdout") == 1 && byte[0] != b'\n' {}
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("wait");
    (status.code(), stderr)
}

#[test]
fn every_listing_command_ends_quietly_when_the_reader_closes_the_pipe() {
    let setup = Setup::new();
    // More than a pipe buffer (64 KiB) from each listing.
    let mut chats: Vec<_> = (0..1500)
        .map(|n| (id("5eed", n), format!("chat number {n} findme"), 1))
        .collect();
    chats.push((id("b16", 0), "the long one".into(), 2500));
    setup.import(&chats);
    let big = id("b16", 0);
    let listings: &[&[&str]] = &[
        &["ls"],
        &["ls", "--json"],
        &["show", &big],
        &["show", &big, "--json"],
        &["search", "findme"],
        &["keys", "list"],
        &["completions", "bash"],
        &["export", "--format", "json"],
    ];
    for args in listings {
        for _ in 0..3 {
            let (code, stderr) = first_line_only(setup.command(args));
            assert_eq!(code, Some(0), "{args:?}: {stderr}");
            assert!(
                !stderr.contains("panick") && !stderr.contains("Broken pipe"),
                "{args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn a_failed_write_to_standard_output_is_an_error_not_a_panic() {
    let setup = Setup::new();
    setup.ok(&["new", "one chat"]);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = setup.command(&["ls"]).stdout(full).output().expect("run");
    failed_with(out, 6, "cannot write to standard output");
}
