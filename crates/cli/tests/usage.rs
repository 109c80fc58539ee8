//! The `chatvault` command as people use it (issue 26): pipes that close
//! early, short chat ids, passphrases typed at a terminal, and the small
//! things around them.

mod common;
use common::{failed_with, succeeded, Setup, PASSPHRASE};
use std::io::Read;
use std::process::{Command, Output, Stdio};

impl Setup {
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

/// Three chats, two of whose ids share their first four hex digits.
fn three_chats(setup: &Setup) {
    setup.import(&[
        (id("652ce30c", 1), "Trip to München".into(), 2),
        (id("652cf00d", 2), "Bread".into(), 1),
        (id("0f3c", 3), "Sourdough schedule".into(), 1),
    ]);
}

#[test]
fn a_unique_id_prefix_or_an_exact_title_names_a_chat() {
    let setup = Setup::new();
    three_chats(&setup);
    let shown = setup.ok(&["show", "652ce30c"]);
    assert!(shown.starts_with("Trip to München"), "{shown}");
    assert_eq!(setup.ok(&["show", "652CE30C-1111"]), shown, "case, hyphens");
    assert_eq!(setup.ok(&["show", "652ce"]), shown);
    assert_eq!(setup.ok(&["show", "Trip to München"]), shown, "exact title");

    setup.ok(&["rename", "0f3c", "Sourdough, week 2"]);
    setup.ok(&["star", "Sourdough, week 2"]);
    setup.ok(&["add", "652cf", "rye this time"]);
    assert!(setup.ok(&["show", "652cf00d"]).contains("rye this time"));
    setup.ok(&["rm", "652cf00d"]);

    let ls = setup.ok(&["ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 2, "{ls}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("0f3c0000  *") && l.ends_with("Sourdough, week 2")),
        "short ids of 8 hex digits: {ls}"
    );
    assert!(lines.iter().any(|l| l.starts_with("652ce30c  ")), "{ls}");
    let full = setup.ok(&["ls", "--full-ids"]);
    assert!(full.contains(&format!("{}  *", id("0f3c", 3))), "{full}");
    let hits = setup.ok(&["search", "sourdough"]);
    assert!(hits.starts_with("0f3c0000  "), "{hits}");
}

#[test]
fn an_ambiguous_prefix_lists_the_candidates_and_a_short_one_is_no_prefix() {
    let setup = Setup::new();
    three_chats(&setup);
    let out = setup.output(&["show", "652c"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    failed_with(out, 2, "matches 2 chats");
    assert!(stderr.contains("652ce30c  Trip to München"), "{stderr}");
    assert!(stderr.contains("652cf00d  Bread"), "{stderr}");
    // Fewer than four digits: not taken as a prefix, and no chat has that title.
    failed_with(setup.output(&["rm", "652"]), 2, "no chat \"652\"");
    assert_eq!(setup.ok(&["ls"]).lines().count(), 3);
}

#[test]
fn listings_lengthen_short_ids_that_would_be_ambiguous() {
    let setup = Setup::new();
    setup.import(&[
        (id("652ce30c", 1), "one".into(), 1),
        (
            "652ce30c-1122-4111-8111-000000000002".into(),
            "two".into(),
            1,
        ),
    ]);
    let ls = setup.ok(&["ls"]);
    assert!(ls.contains("652ce30c-111  "), "{ls}");
    assert!(ls.contains("652ce30c-112  "), "{ls}");
    assert!(setup.ok(&["show", "652ce30c-112"]).starts_with("two"));
}

#[test]
fn init_help_offers_the_url_once_and_keys_help_names_every_subcommand() {
    let setup = Setup::new();
    let init = setup.ok(&["init", "--help"]);
    assert!(init.contains("<URL>"), "{init}");
    assert!(!init.contains("--server"), "{init}");
    let help = setup.ok(&["--help"]);
    let keys = help
        .lines()
        .find(|l| l.trim_start().starts_with("keys "))
        .expect("keys in the help");
    for sub in [
        "list",
        "add-device",
        "remove-device",
        "passwd",
        "recovery",
        "rotate",
        "reseal",
        "retire",
        "upgrade",
        "device-key",
    ] {
        assert!(keys.contains(sub), "{sub} missing from: {keys}");
    }
    // The same URL twice is fine; two different ones are refused.
    let server = format!("file://{}", setup.path("server").display());
    setup.ok(&["init", "--create", &server, "--server", &server]);
    failed_with(
        setup.output(&["init", "--create", &server, "--server", "file:///elsewhere"]),
        2,
        "drop --server",
    );
}

#[test]
fn export_refuses_to_overwrite_a_file_without_force() {
    let setup = Setup::new();
    setup.ok(&["new", "keep me"]);
    let file = setup.path("chats.json");
    std::fs::write(&file, "precious").expect("write");
    let path = file.to_str().expect("UTF-8 path");
    failed_with(
        setup.output(&["export", "--format", "json", "-o", path]),
        2,
        "exists: pass --force",
    );
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "precious");
    setup.ok(&["export", "--format", "json", "-o", path, "--force"]);
    assert!(std::fs::read_to_string(&file)
        .expect("read")
        .contains("keep me"));
}

#[test]
fn watch_prints_the_status_when_it_changes_not_at_every_poll() {
    let setup = Setup::new();
    setup.ok(&["new", "quiet"]);
    let watched = setup.ok(&["watch", "--interval", "1", "--for", "4"]);
    let statuses: Vec<&str> = watched
        .lines()
        .filter(|l| l.starts_with("status "))
        .collect();
    assert_eq!(statuses, ["status synced"], "{watched}");
}

/// A passphrase zxcvbn scores 4 of 4.
const TYPED: &str = "Quokka lantern 47 brisk orbit";

/// `chatvault ARGS` on a pseudo-terminal (util-linux `script`), with the
/// setup's environment less CHATVAULT_PASSPHRASE: each `(prompt, line)`
/// is typed once `prompt` has appeared. Returns the exit code and
/// everything the terminal showed.
fn on_a_terminal(setup: &Setup, args: &[&str], typing: &[(&str, &str)]) -> (Option<i32>, String) {
    use std::io::Write;
    use std::sync::mpsc;
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_chatvault"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let command = setup.command(&[]);
    let mut child = Command::new("script")
        .args(["-qec", &format!("exec {}", quoted.join(" ")), "/dev/null"])
        .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env_remove("CHATVAULT_PASSPHRASE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script (util-linux)");
    let mut stdout = child.stdout.take().expect("stdout");
    let (sender, chunks) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 || sender.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut shown = Vec::new();
    let mut stdin = child.stdin.take().expect("stdin");
    for (prompt, line) in typing {
        while !String::from_utf8_lossy(&shown).contains(prompt) {
            // A bound against a hang, not a timing assertion.
            match chunks.recv_timeout(std::time::Duration::from_secs(120)) {
                Ok(chunk) => shown.extend(chunk),
                Err(_) => panic!(
                    "no {prompt:?} on the terminal: {}",
                    String::from_utf8_lossy(&shown)
                ),
            }
        }
        // What the prompt asked has been seen: the next prompt must be new.
        shown.extend(b"\n--typed--\n");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("type");
    }
    let status = child.wait().expect("wait");
    drop(stdin);
    reader.join().expect("reader");
    shown.extend(chunks.try_iter().flatten());
    (status.code(), String::from_utf8_lossy(&shown).into_owned())
}

#[test]
fn a_passphrase_typed_at_a_terminal_is_not_shown_and_a_new_one_is_asked_twice() {
    let setup = Setup::new();
    let server = format!("file://{}", setup.path("server").display());
    let (code, shown) = on_a_terminal(
        &setup,
        &["init", "--create", &server],
        &[
            ("new passphrase: ", TYPED),
            ("the same passphrase again: ", TYPED),
        ],
    );
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        !shown.contains("Quokka"),
        "the passphrase was shown: {shown}"
    );
    assert!(shown.contains("chatvault keys recovery"), "{shown}");

    // Opening asks once, and does not show it either.
    let (code, shown) = on_a_terminal(&setup, &["ls"], &[("passphrase: ", TYPED)]);
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        !shown.contains("Quokka"),
        "the passphrase was shown: {shown}"
    );
    assert!(!shown.contains("again"), "{shown}");
    // The typed passphrase is the vault's: a script opens it with the variable.
    setup
        .command(&["ls"])
        .env("CHATVAULT_PASSPHRASE", TYPED)
        .output()
        .map(succeeded)
        .expect("run");
}

#[test]
fn two_different_new_passphrases_are_refused_and_create_nothing() {
    let setup = Setup::new();
    let server = format!("file://{}", setup.path("server").display());
    let (code, shown) = on_a_terminal(
        &setup,
        &["init", "--create", &server],
        &[
            ("new passphrase: ", TYPED),
            (
                "the same passphrase again: ",
                "Quokka lantern 47 brisk orbiT",
            ),
        ],
    );
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("the two passphrases differ"), "{shown}");
    assert!(
        !setup.path("server").join("keyring").exists(),
        "no vault was created"
    );
}

#[test]
fn a_weak_new_passphrase_is_refused_with_the_reason_unless_allowed() {
    let setup = Setup::new();
    let weak = |args: &[&str]| {
        setup
            .command(args)
            .env("CHATVAULT_PASSPHRASE", "password1")
            .output()
            .expect("run")
    };
    let server = format!("file://{}", setup.path("server").display());
    failed_with(
        weak(&["init", "--create", &server]),
        2,
        "the passphrase is too weak",
    );
    assert!(!setup.path("server").join("keyring").exists());
    succeeded(weak(&[
        "init",
        "--create",
        &server,
        "--allow-weak-passphrase",
    ]));
    // Opening an existing vault judges nothing.
    succeeded(weak(&["ls"]));

    let passwd = |allow: bool| {
        let mut command = setup.command(&["keys", "passwd"]);
        command
            .env("CHATVAULT_PASSPHRASE", "password1")
            .env("CHATVAULT_NEW_PASSPHRASE", "qwerty123");
        if allow {
            command.env("CHATVAULT_ALLOW_WEAK_PASSPHRASE", "1");
        }
        command.output().expect("run")
    };
    failed_with(passwd(false), 2, "too weak");
    succeeded(passwd(true));
}

#[test]
fn device_key_creates_its_folders_privately_and_names_a_file_error_as_such() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new();
    let key = setup.path("keys").join("deeper").join("phone.key");
    let recipient = setup.ok(&["keys", "device-key", key.to_str().expect("UTF-8")]);
    assert!(recipient.starts_with("age1"), "{recipient}");
    for (path, mode) in [
        (setup.path("keys"), 0o700),
        (setup.path("keys").join("deeper"), 0o700),
        (key.clone(), 0o600),
    ] {
        let found = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(found, mode, "{}: {found:o}", path.display());
    }
    std::fs::write(setup.path("a-file"), "").expect("write");
    let blocked = setup.path("a-file").join("phone.key");
    let out = setup.output(&["keys", "device-key", blocked.to_str().expect("UTF-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    failed_with(out, 6, "file error: cannot create the folder");
    assert!(!stderr.contains("replica"), "{stderr}");
}

#[test]
fn a_device_opened_once_with_its_identity_file_needs_no_identity_option_after() {
    let setup = Setup::new();
    let server = format!("file://{}", setup.path("server").display());
    setup.ok(&["init", "--create", &server]);
    setup.ok(&["new", "shared with the phone"]);
    let key = setup.path("phone.key");
    let recipient = setup.ok(&["keys", "device-key", key.to_str().expect("UTF-8")]);
    setup.ok(&["keys", "add-device", recipient.trim(), "--label", "phone"]);

    // The phone: its own data and config folders, no passphrase at all.
    let phone = |config: &str, args: &[&str]| {
        let mut command = setup.command(args);
        command
            .env_remove("CHATVAULT_SERVER")
            .env_remove("CHATVAULT_PASSPHRASE")
            .env("XDG_DATA_HOME", setup.path(&format!("{config}-data")))
            .env("CHATVAULT_CONFIG_DIR", setup.path(config));
        command.output().expect("run chatvault")
    };
    let key = key.to_str().expect("UTF-8");
    succeeded(phone(
        "phone",
        &["--identity", key, "init", "--create", &server],
    ));
    let ls = succeeded(phone("phone", &["ls"]));
    assert!(ls.contains("shared with the phone"), "{ls}");

    // CHATVAULT_IDENTITY does the same.
    let mut with_variable = setup.command(&["init", "--create", &server]);
    with_variable
        .env_remove("CHATVAULT_SERVER")
        .env_remove("CHATVAULT_PASSPHRASE")
        .env("CHATVAULT_IDENTITY", key)
        .env("XDG_DATA_HOME", setup.path("tablet-data"))
        .env("CHATVAULT_CONFIG_DIR", setup.path("tablet"));
    succeeded(with_variable.output().expect("run"));
    let ls = succeeded(phone("tablet", &["ls"]));
    assert!(ls.contains("shared with the phone"), "{ls}");

    // A vault first opened with the passphrase learns the identity file the
    // first time a command is given it.
    let laptop_ls = |args: &[&str]| {
        let mut command = setup.command(args);
        command
            .env_remove("CHATVAULT_SERVER")
            .env_remove("CHATVAULT_PASSPHRASE")
            .env("XDG_DATA_HOME", setup.path("desk-data"))
            .env("CHATVAULT_CONFIG_DIR", setup.path("desk"));
        command
    };
    succeeded(
        laptop_ls(&["init", "--create", &server])
            .env("CHATVAULT_PASSPHRASE", PASSPHRASE)
            .output()
            .expect("run"),
    );
    failed_with(
        laptop_ls(&["ls"]).output().expect("run"),
        2,
        "no passphrase",
    );
    succeeded(laptop_ls(&["ls", "--identity", key]).output().expect("run"));
    let ls = succeeded(laptop_ls(&["ls"]).output().expect("run"));
    assert!(ls.contains("shared with the phone"), "{ls}");
}

#[test]
fn rm_message_takes_a_unique_prefix_of_the_message_id() {
    let setup = Setup::new();
    setup.import(&[(id("652ce30c", 0), "Trip".into(), 3)]);
    // Message m of chat 0 has the id {m:08x}-0000-4000-8000-000000000000.
    setup.ok(&["rm-message", "652ce30c", "00000001"]);
    let shown = setup.ok(&["show", "Trip"]);
    assert!(!shown.contains("message 1 of chat 0"), "{shown}");
    assert!(shown.contains("message 2 of chat 0"), "{shown}");
    let out = setup.output(&["rm-message", "Trip", "0000"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    failed_with(out, 2, "matches 2 messages");
    assert!(stderr.contains("message 0 of chat 0"), "{stderr}");
    failed_with(
        setup.output(&["rm-message", "Trip", "ffff"]),
        2,
        "no message \"ffff\"",
    );
}

#[test]
fn a_weak_typed_passphrase_is_refused_before_it_is_asked_again() {
    let setup = Setup::new();
    let server = format!("file://{}", setup.path("server").display());
    let (code, shown) = on_a_terminal(
        &setup,
        &["init", "--create", &server],
        &[("new passphrase: ", "password1")],
    );
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("too weak"), "{shown}");
    assert!(!shown.contains("again"), "{shown}");
    assert!(!shown.contains("password1"), "{shown}");
}

#[test]
fn search_folds_diacritics_says_where_each_hit_is_and_exits_1_on_nothing() {
    let setup = Setup::new();
    let file = setup.path("trip.json");
    std::fs::write(
        &file,
        serde_json::json!({
            "format": "chatvault-json/1",
            "chats": [{
                "id": id("0a1b", 1),
                "title": "Weekend",
                "starred": false,
                "created": "2024-05-01T09:00:00.000Z",
                "updated": "2024-05-01T09:00:03.000Z",
                "messages": [
                    {"id": id("1111", 11), "role": "user", "content": "Book the train", "created": "2024-05-01T09:00:01.000Z"},
                    {"id": id("2222", 12), "role": "assistant", "content": "Which city?", "created": "2024-05-01T09:00:02.000Z"},
                    {"id": id("3333", 13), "role": "user", "content": "Kraków, and then les réseaux in Lyon", "created": "2024-05-01T09:00:03.000Z"}
                ]
            }]
        })
        .to_string(),
    )
    .expect("write");
    setup.ok(&["import", file.to_str().expect("UTF-8 path")]);

    for query in ["krakow", "KRAKÓW", "RESEAUX"] {
        let hits = setup.ok(&["search", query]);
        assert_eq!(hits.lines().count(), 1, "{query}: {hits}");
        assert!(hits.contains("#3 user:"), "{query}: {hits}");
        assert!(
            hits.contains("Kraków, and then les réseaux"),
            "{query}: {hits}"
        );
    }
    let shown = setup.ok(&["show", "Weekend", "--at", "3"]);
    assert!(shown.contains("2 earlier message(s) not shown"), "{shown}");
    assert!(
        shown.contains("Kraków") && !shown.contains("Book the train"),
        "{shown}"
    );

    let out = setup.output(&["search", "zürich"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no matches for \"zürich\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
