//! `chatvault keys …` through the real binary: a second device added with
//! `device-key` + `add-device`, `passwd`, `recovery`, `rotate`, `reseal`, `retire`,
//! `remove-device`, and `keys --help` documenting every command.

mod common;
use common::{failed_with, succeeded, Setup, PASSPHRASE};
use std::path::Path;
use std::process::{Command, Output, Stdio};

impl Setup {
    /// `chatvault ARGS` for the device with replica `device`, unlocked with
    /// `passphrase` (`None`: no passphrase in the environment).
    fn command(&self, device: &str, passphrase: Option<&str>, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatvault"));
        command
            .args(args)
            // No unlock agent: these tests unlock every time (tests/agent.rs covers it).
            .env("CHATVAULT_NO_AGENT", "1")
            .env(
                "CHATVAULT_SERVER",
                format!("file://{}", self.path("server").display()),
            )
            .env("CHATVAULT_SCRYPT_WORK_FACTOR", "4")
            .env("XDG_DATA_HOME", self.path("data"))
            .env_remove("CHATVAULT_REPLICA")
            .env_remove("CHATVAULT_NEW_PASSPHRASE")
            .env_remove("CHATVAULT_PASSPHRASE")
            .stdin(Stdio::null())
            .arg("--replica")
            .arg(self.path(device));
        if let Some(passphrase) = passphrase {
            command.env("CHATVAULT_PASSPHRASE", passphrase);
        }
        command
    }

    fn ok(&self, device: &str, passphrase: &str, args: &[&str]) -> String {
        succeeded(
            self.command(device, Some(passphrase), args)
                .output()
                .expect("run"),
        )
    }
}

fn with_identity(setup: &Setup, device: &str, key: &Path, args: &[&str]) -> Output {
    setup
        .command(device, None, args)
        .arg("--identity")
        .arg(key)
        .output()
        .expect("run")
}

#[test]
fn keys_help_documents_every_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_chatvault"))
        .args(["keys", "--help"])
        .output()
        .expect("run");
    let help = succeeded(out);
    for command in [
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
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(command))
            .unwrap_or_else(|| panic!("{command} missing from:\n{help}"));
        assert!(
            line.trim_start().len() > command.len() + 10,
            "{command} has no description: {line}"
        );
    }
}

#[test]
fn keys_upgrade_raises_the_vault_format_once_and_list_shows_it() {
    let setup = Setup::new();
    let chat = setup.ok("laptop.redb", PASSPHRASE, &["new", "Before"]);
    let listed = setup.ok("laptop.redb", PASSPHRASE, &["keys", "list"]);
    assert!(listed.contains("vault format 1"), "{listed}");
    let out = setup
        .command("laptop.redb", Some(PASSPHRASE), &["keys", "upgrade"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(succeeded(out).trim(), "2");
    assert!(stderr.contains("format 2 now"), "{stderr}");
    let again = setup
        .command("laptop.redb", Some(PASSPHRASE), &["keys", "upgrade"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&again.stderr).to_string();
    assert_eq!(succeeded(again).trim(), "2");
    assert!(stderr.contains("nothing changed"), "{stderr}");
    // Another device opens the upgraded vault and reads the chat.
    let listed = setup.ok("phone.redb", PASSPHRASE, &["keys", "list"]);
    assert!(listed.contains("vault format 2"), "{listed}");
    let shown = setup.ok("phone.redb", PASSPHRASE, &["show", chat.trim()]);
    assert!(shown.starts_with("Before"), "{shown}");
}

#[test]
fn a_second_device_added_from_the_first_reads_its_chats_then_is_removed() {
    let setup = Setup::new();
    let chat = setup.ok("laptop.redb", PASSPHRASE, &["new", "Trip plans"]);
    let chat = chat.trim();

    // On the phone: a device key; on the laptop: add it.
    let key = setup.path("phone.key");
    let recipient = succeeded(
        setup
            .command("phone.redb", None, &["keys", "device-key"])
            .arg(&key)
            .output()
            .expect("run"),
    );
    let recipient = recipient.trim();
    assert!(recipient.starts_with("age1"), "{recipient}");
    failed_with(
        with_identity(&setup, "phone.redb", &key, &["ls", "--full-ids"]),
        3,
        "wrong key",
    );
    setup.ok(
        "laptop.redb",
        PASSPHRASE,
        &["keys", "add-device", recipient, "--label", "phone"],
    );
    let listed = succeeded(with_identity(&setup, "phone.redb", &key, &["keys", "list"]));
    assert!(
        listed.contains("passphrase") && listed.contains("phone"),
        "{listed}"
    );
    let ls = succeeded(with_identity(
        &setup,
        "phone.redb",
        &key,
        &["ls", "--full-ids"],
    ));
    assert!(ls.contains(chat) && ls.contains("Trip plans"), "{ls}");

    // A malformed recipient changes nothing.
    failed_with(
        setup
            .command(
                "laptop.redb",
                Some(PASSPHRASE),
                &["keys", "add-device", "age1nope"],
            )
            .output()
            .expect("run"),
        2,
        "not an age X25519 recipient",
    );

    // The phone is lost: remove it; a chat written afterwards stays sealed.
    setup.ok(
        "laptop.redb",
        PASSPHRASE,
        &["keys", "remove-device", "phone"],
    );
    setup.ok("laptop.redb", PASSPHRASE, &["new", "after the phone"]);
    failed_with(
        with_identity(&setup, "phone.redb", &key, &["ls", "--full-ids"]),
        3,
        "wrong key",
    );
}

#[test]
fn passwd_recovery_and_rotate_from_the_command_line() {
    let setup = Setup::new();
    setup.ok("laptop.redb", PASSPHRASE, &["new", "Sourdough"]);

    // passwd: the current passphrase and the new one both on stdin.
    let mut passwd = setup.command("laptop.redb", None, &["keys", "passwd"]);
    passwd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = passwd.spawn().expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{PASSPHRASE}\nnew and improved").expect("write");
    }
    succeeded(child.wait_with_output().expect("wait"));
    failed_with(
        setup
            .command("desktop.redb", Some(PASSPHRASE), &["ls", "--full-ids"])
            .output()
            .expect("run"),
        3,
        "wrong key",
    );
    assert!(setup
        .ok("desktop.redb", "new and improved", &["ls", "--full-ids"])
        .contains("Sourdough"));

    // recovery: printed once; it unlocks where the passphrase goes.
    let recovery = setup.ok("laptop.redb", "new and improved", &["keys", "recovery"]);
    let recovery = recovery.trim();
    assert!(recovery.starts_with("AGE-SECRET-KEY-1"), "{recovery}");
    assert!(setup
        .ok("rescue.redb", recovery, &["ls", "--full-ids"])
        .contains("Sourdough"));

    // rotate: the new key id (passwd already rotated to key 2), and every
    // device keeps reading.
    assert_eq!(
        setup
            .ok("laptop.redb", "new and improved", &["keys", "rotate"])
            .trim(),
        "3"
    );
    setup.ok(
        "laptop.redb",
        "new and improved",
        &["new", "after rotating"],
    );
    let ls = setup.ok("desktop.redb", "new and improved", &["ls", "--full-ids"]);
    assert!(
        ls.contains("after rotating") && ls.contains("Sourdough"),
        "{ls}"
    );

    // rotate --no-reseal, then reseal (no bar off a terminal: one summary
    // line), then retire frees every older key.
    assert_eq!(
        setup
            .ok(
                "laptop.redb",
                "new and improved",
                &["keys", "rotate", "--no-reseal"]
            )
            .trim(),
        "4"
    );
    let reseal = setup
        .command(
            "laptop.redb",
            Some("new and improved"),
            &["keys", "reseal", "--quiet"],
        )
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&reseal.stderr).to_string();
    succeeded(reseal);
    assert!(
        stderr.contains("re-sealed 2 records") && stderr.contains("2/2 under the current key"),
        "{stderr}"
    );
    assert_eq!(
        setup
            .ok("laptop.redb", "new and improved", &["keys", "retire"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["1", "2", "3"]
    );
    let ls = setup.ok("desktop.redb", "new and improved", &["ls", "--full-ids"]);
    assert!(
        ls.contains("after rotating") && ls.contains("Sourdough"),
        "{ls}"
    );

    // Refused: removing the passphrase this command unlocked with.
    failed_with(
        setup
            .command(
                "laptop.redb",
                Some("new and improved"),
                &["keys", "remove-device", "passphrase"],
            )
            .output()
            .expect("run"),
        2,
        "this session unlocked with",
    );
}
