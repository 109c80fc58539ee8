//! The real `chatvault` binary against a folder server, with one replica
//! file per simulated device.

mod common;
use age::secrecy::{ExposeSecret, SecretString};
use common::{failed_with, succeeded, Setup, PASSPHRASE};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

impl Setup {
    /// The command for `device` (a replica file name; `None`: the default
    /// replica under the data directory), unlocked with [`PASSPHRASE`].
    fn command(&self, device: Option<&str>, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatvault"));
        command
            .args(args)
            // No unlock agent: these tests unlock every time (tests/agent.rs covers it).
            .env("CHATVAULT_NO_AGENT", "1")
            .env(
                "CHATVAULT_SERVER",
                format!("file://{}", self.path("server").display()),
            )
            .env("CHATVAULT_PASSPHRASE", PASSPHRASE)
            .env("CHATVAULT_SCRYPT_WORK_FACTOR", "4")
            .env("XDG_DATA_HOME", self.path("data"))
            .env_remove("CHATVAULT_REPLICA")
            .stdin(Stdio::null());
        if let Some(device) = device {
            command.arg("--replica").arg(self.path(device));
        }
        command
    }

    fn output(&self, device: Option<&str>, args: &[&str]) -> Output {
        self.command(device, args).output().expect("run chatvault")
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, device: &str, args: &[&str]) -> String {
        succeeded(self.output(Some(device), args))
    }
}

#[test]
fn new_add_ls_show_round_trip_in_the_default_replica() {
    let setup = Setup::new();
    let run = |args: &[&str]| succeeded(setup.output(None, args));
    let id = run(&["new", "Trip plans"]).trim().to_string();
    let first = run(&["add", &id, "Book the train"]);
    run(&["add", &id, "--role", "assistant", "Booked: 9:14 to Lyon"]);

    let ls = run(&["ls", "--full-ids"]);
    let line = ls
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("chat listed");
    assert!(line.ends_with("Trip plans"), "{line}");
    assert!(line.contains("  2  "), "two messages: {line}");

    let show = run(&["show", &id]);
    let user = show.find("Book the train").expect("first message");
    let assistant = show.find("Booked: 9:14 to Lyon").expect("second message");
    assert!(user < assistant, "in order: {show}");
    assert!(show.contains(&format!("{}  user", first.trim())), "{show}");
    assert!(show.contains("assistant"), "{show}");
    let replicas = setup.path("data").join("chatvault").join("replicas");
    assert_eq!(replicas.read_dir().expect("replica folder").count(), 1);
}

#[test]
fn a_second_device_sees_the_chat_after_sync_and_its_edits_come_back() {
    let setup = Setup::new();
    let id = setup
        .ok("laptop.redb", &["new", "Trip plans"])
        .trim()
        .to_string();
    setup.ok("laptop.redb", &["add", &id, "Book the train"]);

    let sync = setup.ok("phone.redb", &["sync"]);
    assert!(sync.starts_with("pulled 1,"), "{sync}");
    assert!(sync.ends_with("synced\n"), "{sync}");
    assert!(setup
        .ok("phone.redb", &["show", &id])
        .contains("Book the train"));

    setup.ok("phone.redb", &["star", &id]);
    setup.ok("phone.redb", &["rename", &id, "Lyon trip"]);
    let ls = setup.ok("laptop.redb", &["ls", "--full-ids"]);
    assert!(ls.contains(&format!("{id}  *")), "starred: {ls}");
    assert!(ls.contains("Lyon trip"), "{ls}");
}

#[test]
fn deletions_reach_every_device() {
    let setup = Setup::new();
    let keep = setup.ok("a.redb", &["new", "keep"]).trim().to_string();
    let gone = setup.ok("a.redb", &["new", "gone"]).trim().to_string();
    let kept = setup
        .ok("a.redb", &["add", &keep, "kept"])
        .trim()
        .to_string();
    let removed = setup
        .ok("a.redb", &["add", &keep, "removed"])
        .trim()
        .to_string();
    setup.ok("b.redb", &["sync"]);

    setup.ok("a.redb", &["rm", &gone]);
    setup.ok("a.redb", &["rm-message", &keep, &removed]);
    let ls = setup.ok("b.redb", &["ls", "--full-ids"]);
    assert!(!ls.contains(&gone) && ls.contains(&keep), "{ls}");
    let show = setup.ok("b.redb", &["show", &keep]);
    assert!(show.contains(&kept) && !show.contains(&removed), "{show}");
    failed_with(
        setup.output(Some("b.redb"), &["show", &gone]),
        1,
        "not found",
    );
}

#[test]
fn a_write_with_no_sync_stays_queued_until_the_next_sync() {
    let setup = Setup::new();
    setup.ok("a.redb", &["new", "first"]);
    let id = setup
        .ok("a.redb", &["--no-sync", "new", "offline"])
        .trim()
        .to_string();
    let status = setup.ok("a.redb", &["--no-sync", "status"]);
    assert!(status.starts_with("pending 1\n"), "{status}");
    assert!(!setup.ok("b.redb", &["ls", "--full-ids"]).contains(&id));

    let sync = setup.ok("a.redb", &["sync"]);
    assert!(
        sync.contains("pushed 1,") && sync.contains("pending 0"),
        "{sync}"
    );
    assert!(setup.ok("b.redb", &["ls", "--full-ids"]).contains(&id));
}

#[test]
fn export_is_an_age_file_the_passphrase_decrypts() {
    let setup = Setup::new();
    let id = setup
        .ok("a.redb", &["new", "Trip plans"])
        .trim()
        .to_string();
    setup.ok("a.redb", &["add", &id, "Book the train"]);
    let file = setup.path("export.age");
    let output = format!("--output={}", file.display());
    let out = setup
        .command(
            Some("a.redb"),
            &["export", "--passphrase-env", "EXPORT_PASS", &output],
        )
        .env("EXPORT_PASS", "export secret")
        .output()
        .expect("run");
    succeeded(out);

    let json = decrypt_with_passphrase(&file, "export secret");
    let export: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(export["format"], "chatvault-export/1");
    let text = String::from_utf8(json).expect("UTF-8");
    assert!(
        text.contains("Book the train") && text.contains(&id),
        "{text}"
    );
}

#[test]
fn export_to_a_recipient_writes_to_stdout() {
    let setup = Setup::new();
    let id = setup
        .ok("a.redb", &["new", "Trip plans"])
        .trim()
        .to_string();
    let key = age::x25519::Identity::generate();
    let out = setup.output(
        Some("a.redb"),
        &["export", "--recipient", &key.to_public().to_string()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decryptor = age::Decryptor::new(&out.stdout[..]).expect("an age file");
    let mut json = String::new();
    decryptor
        .decrypt(std::iter::once(&key as &dyn age::Identity))
        .expect("decrypts")
        .read_to_string(&mut json)
        .expect("read");
    assert!(json.contains(&id), "{json}");
}

fn decrypt_with_passphrase(file: &Path, passphrase: &str) -> Vec<u8> {
    let bytes = std::fs::read(file).expect("export file");
    let decryptor = age::Decryptor::new(&bytes[..]).expect("an age file");
    let identity = age::scrypt::Identity::new(SecretString::from(passphrase.to_string()));
    let mut plaintext = Vec::new();
    decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .expect("the passphrase decrypts")
        .read_to_end(&mut plaintext)
        .expect("read");
    plaintext
}

#[test]
fn a_wrong_passphrase_exits_3_with_the_wrong_key_message() {
    let setup = Setup::new();
    setup.ok("a.redb", &["new", "secret"]);
    let out = setup
        .command(Some("b.redb"), &["ls", "--full-ids"])
        .env("CHATVAULT_PASSPHRASE", "not it")
        .output()
        .expect("run");
    assert!(out.stdout.is_empty());
    failed_with(out, 3, "wrong key");
}

#[test]
fn the_passphrase_is_read_from_stdin_when_the_variable_is_unset() {
    let setup = Setup::new();
    let id = setup.ok("a.redb", &["new", "typed"]).trim().to_string();
    let mut child = setup
        .command(Some("b.redb"), &["ls", "--full-ids"])
        .env_remove("CHATVAULT_PASSPHRASE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{PASSPHRASE}").expect("type the passphrase");
    drop(stdin);
    let ls = succeeded(child.wait_with_output().expect("wait"));
    assert!(ls.contains(&id), "{ls}");

    let out = setup
        .command(Some("b.redb"), &["ls", "--full-ids"])
        .env_remove("CHATVAULT_PASSPHRASE")
        .output()
        .expect("run");
    failed_with(out, 2, "no passphrase");
}

#[test]
fn an_identity_file_unlocks_the_vault_created_for_it() {
    let setup = Setup::new();
    let key = age::x25519::Identity::generate();
    let file = setup.path("key.txt");
    let secret = key.to_string();
    std::fs::write(
        &file,
        format!("# created: today\n{}\n", secret.expose_secret()),
    )
    .expect("write the identity");
    let with_key = |device: &str, args: &[&str]| {
        let mut command = setup.command(Some(device), args);
        command
            .arg("--identity")
            .arg(&file)
            .env_remove("CHATVAULT_PASSPHRASE");
        command.output().expect("run")
    };
    let id = succeeded(with_key("a.redb", &["new", "by key"]));
    assert!(succeeded(with_key("b.redb", &["ls", "--full-ids"])).contains(id.trim()));
    failed_with(
        setup.output(Some("c.redb"), &["ls", "--full-ids"]),
        3,
        "wrong key",
    );
}

#[test]
fn watch_prints_chats_another_device_wrote() {
    let setup = Setup::new();
    let id = setup.ok("a.redb", &["new", "from a"]).trim().to_string();
    // --for only bounds a broken run; --count ends a working one.
    let out = setup.ok(
        "b.redb",
        &["watch", "--interval", "1", "--for", "300", "--count", "1"],
    );
    assert!(out.contains(&format!("upserted {id}  from a")), "{out}");
}

#[test]
fn a_malformed_chat_id_exits_2_naming_it() {
    let setup = Setup::new();
    failed_with(
        setup.output(Some("a.redb"), &["show", "nope"]),
        2,
        "no chat \"nope\": give a chat id, a unique prefix",
    );
}

/// An unreachable backend: an S3 endpoint on a local port nobody listens on.
#[cfg(feature = "s3")]
fn offline(command: &mut Command) -> &mut Command {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    command
        .arg("--server=s3://bucket/vault")
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "offline")
        .env("AWS_SECRET_ACCESS_KEY", "offline")
        .env("AWS_REGION", "us-east-1")
}

#[cfg(feature = "s3")]
#[test]
fn offline_writes_stay_queued_and_the_next_sync_pushes_them() {
    let setup = Setup::new();
    let first = setup.ok("a.redb", &["new", "online"]).trim().to_string();
    let out = offline(&mut setup.command(Some("a.redb"), &["new", "offline"]))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let second = succeeded(out).trim().to_string();
    assert!(stderr.contains("queued: 1 change(s)"), "{stderr}");

    let out = offline(&mut setup.command(Some("a.redb"), &["ls", "--full-ids"]))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let ls = succeeded(out);
    assert!(ls.contains(&first) && ls.contains(&second), "{ls}");
    assert!(stderr.contains("working offline"), "{stderr}");
    assert!(!setup.ok("b.redb", &["ls", "--full-ids"]).contains(&second));

    let sync = setup.ok("a.redb", &["sync"]);
    assert!(sync.contains("pushed 1,"), "{sync}");
    assert!(setup.ok("b.redb", &["ls", "--full-ids"]).contains(&second));
}

#[test]
fn exports_written_to_a_file_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new();
    setup.ok("a.redb", &["new", "Secret plans"]);
    let json = setup.path("export.json");
    // Through a shell, to run under the usual umask whatever the test
    // harness set.
    let script = "umask 022 && exec \"$0\" --replica \"$1\" export --format json --out \"$2\"";
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_chatvault"))
        .arg(setup.path("a.redb"))
        .arg(&json)
        .envs(
            setup
                .command(None, &[])
                .get_envs()
                .filter_map(|(k, v)| Some((k, v?))),
        )
        .stdin(Stdio::null())
        .output()
        .expect("run");
    succeeded(out);
    let mode = std::fs::metadata(&json)
        .expect("export")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "plaintext export mode {mode:o}");

    // An existing file keeps no wider mode either.
    std::fs::set_permissions(&json, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let path = json.to_str().expect("path");
    setup.ok(
        "a.redb",
        &["export", "--format", "json", "--out", path, "--force"],
    );
    let mode = std::fs::metadata(&json)
        .expect("export")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "rewritten export mode {mode:o}");
}

#[test]
fn titles_and_messages_reach_the_terminal_without_control_characters() {
    let setup = Setup::new();
    let title = "Trip\u{1b}]0;owned\u{7} plans\u{1b}[2J\u{9b}31m";
    let id = setup.ok("a.redb", &["new", title]).trim().to_string();
    setup.ok(
        "a.redb",
        &[
            "add",
            &id,
            "Book\u{1b}[31m the train\r\nand\u{8}\u{8}\u{8} the hotel",
        ],
    );
    let clean = |out: &str| {
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "control characters reach the terminal: {out:?}"
        );
    };
    let ls = setup.ok("a.redb", &["ls", "--full-ids"]);
    clean(&ls);
    assert!(ls.contains("Trip]0;owned plans[2J31m"), "{ls}");
    let show = setup.ok("a.redb", &["show", &id]);
    clean(&show);
    assert!(show.contains("Book[31m the train"), "{show}");
    assert!(show.contains("and the hotel"), "{show}");
    let search = setup.ok("a.redb", &["search", "train"]);
    clean(&search);
    assert!(search.contains("Trip]0;owned plans"), "{search}");
}
