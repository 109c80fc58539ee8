//! Unlock once per session through the real binary: the first command that
//! unlocks with the passphrase starts `chatvault agent`, later commands need
//! no passphrase; `lock`, the idle timeout, `keys passwd` (here and on
//! another device) and a wrong cached secret fall back to asking; a socket
//! that is not the agent's, or a directory others can enter, is not used.
//! Each test has its own runtime directory (XDG_RUNTIME_DIR), so its own
//! agent, and locks it at the end.

mod common;
use common::{failed_with, succeeded};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASSPHRASE: &str = "correct horse battery staple";

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let setup = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let run = setup.path("run");
        std::fs::create_dir(&run).expect("runtime dir");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        setup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn socket(&self) -> PathBuf {
        self.path("run").join("chatvault").join("agent.sock")
    }

    /// `chatvault ARGS` as `device` (its replica file), with this test's
    /// agent; `passphrase` `None`: none in the environment, standard input
    /// empty.
    fn command(&self, device: &str, passphrase: Option<&str>, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatvault"));
        command
            .args(args)
            .env(
                "CHATVAULT_SERVER",
                format!("file://{}", self.path("server").display()),
            )
            .env("CHATVAULT_SCRYPT_WORK_FACTOR", "4")
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("CHATVAULT_CONFIG_DIR", self.path("config"))
            .env_remove("CHATVAULT_NO_AGENT")
            .env_remove("CHATVAULT_AGENT_TIMEOUT")
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

    fn run(&self, device: &str, passphrase: Option<&str>, args: &[&str]) -> Output {
        self.command(device, passphrase, args)
            .output()
            .expect("run chatvault")
    }

    fn ok(&self, device: &str, passphrase: Option<&str>, args: &[&str]) -> String {
        succeeded(self.run(device, passphrase, args))
    }

    /// A vault with one chat, created by `laptop`; then one more unlock
    /// with the passphrase (creating a vault caches nothing), which starts
    /// the agent.
    fn cached(&self) -> String {
        let id = self.ok("laptop", Some(PASSPHRASE), &["new", "groceries"]);
        assert!(!self.socket().exists(), "creating the vault caches nothing");
        self.ok("laptop", Some(PASSPHRASE), &["ls"]);
        assert!(self.socket().exists(), "the unlock started the agent");
        id.trim().to_string()
    }

    /// The agent's socket is gone within a few seconds (it exited).
    fn wait_agent_gone(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.socket().exists() {
            assert!(Instant::now() < deadline, "the agent did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Setup {
    /// Stops this test's agent whatever the outcome.
    fn drop(&mut self) {
        let _ = self.run("laptop", None, &["lock"]);
    }
}

/// Without a passphrase (none in the environment, empty standard input),
/// the command asks for one and fails: the cache did not unlock it.
fn asks_for_the_passphrase(out: Output) {
    failed_with(out, 2, "no passphrase");
}

#[test]
fn later_commands_need_no_passphrase_once_one_unlocked() {
    let setup = Setup::new();
    let id = setup.cached();
    let listing = setup.ok("laptop", None, &["ls"]);
    assert!(listing.contains("groceries"), "{listing}");
    setup.ok("laptop", None, &["add", &id, "milk"]);
    let shown = setup.ok("laptop", None, &["show", &id]);
    assert!(shown.contains("milk"), "{shown}");
    // A passphrase given explicitly is checked even while the cache
    // unlocks: a wrong one is refused, the right one works.
    failed_with(
        setup.run("laptop", Some("not the passphrase"), &["ls"]),
        3,
        "wrong key",
    );
    setup.ok("laptop", Some(PASSPHRASE), &["ls"]);
    setup.ok("laptop", None, &["ls"]);
}

#[test]
fn lock_forgets_the_unlock_and_stops_the_agent() {
    let setup = Setup::new();
    setup.cached();
    let out = setup.run("laptop", None, &["lock"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("forgot 1 cached unlock"), "{stderr}");
    setup.wait_agent_gone();
    asks_for_the_passphrase(setup.run("laptop", None, &["ls"]));
    failed_with(
        setup.run("laptop", Some("not the passphrase"), &["ls"]),
        3,
        "",
    );
    // Locking again is harmless.
    let out = setup.run("laptop", None, &["lock"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent was running"));
}

#[test]
fn an_expired_unlock_falls_back_to_asking_and_the_empty_agent_exits() {
    let setup = Setup::new();
    setup.ok("laptop", Some(PASSPHRASE), &["new", "groceries"]);
    setup.ok("laptop", Some(PASSPHRASE), &["ls", "--agent-timeout", "1"]);
    assert!(setup.socket().exists());
    std::thread::sleep(Duration::from_millis(1500));
    asks_for_the_passphrase(setup.run("laptop", None, &["ls"]));
    setup.wait_agent_gone();
    // Each use renews the timeout: used every half second, it lasts.
    setup.ok("laptop", Some(PASSPHRASE), &["ls", "--agent-timeout", "2"]);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(700));
        setup.ok("laptop", None, &["ls"]);
    }
}

#[test]
fn passwd_here_forgets_the_cached_unlock_and_the_new_passphrase_caches_again() {
    let setup = Setup::new();
    setup.cached();
    // passwd asks for the current passphrase even with a cached unlock.
    asks_for_the_passphrase(setup.run("laptop", None, &["keys", "passwd"]));
    succeeded(
        setup
            .command("laptop", Some(PASSPHRASE), &["keys", "passwd"])
            .env("CHATVAULT_NEW_PASSPHRASE", "a brand new passphrase")
            .output()
            .expect("run"),
    );
    // The old passphrase identity no longer opens the key file: forgotten.
    asks_for_the_passphrase(setup.run("laptop", None, &["ls"]));
    setup.ok("laptop", Some("a brand new passphrase"), &["ls"]);
    let listing = setup.ok("laptop", None, &["ls"]);
    assert!(listing.contains("groceries"), "{listing}");
}

#[test]
fn passwd_on_another_device_makes_the_cached_unlock_fall_back_to_asking() {
    let setup = Setup::new();
    setup.cached();
    // The phone runs without an agent and changes the passphrase.
    succeeded(
        setup
            .command("phone", Some(PASSPHRASE), &["keys", "passwd", "--no-agent"])
            .env("CHATVAULT_NEW_PASSPHRASE", "a brand new passphrase")
            .output()
            .expect("run"),
    );
    // The laptop's cached identity is now wrong: asked, not an error.
    asks_for_the_passphrase(setup.run("laptop", None, &["ls"]));
    failed_with(setup.run("laptop", Some(PASSPHRASE), &["ls"]), 3, "");
    let listing = setup.ok("laptop", Some("a brand new passphrase"), &["ls"]);
    assert!(listing.contains("groceries"), "{listing}");
    setup.ok("laptop", None, &["ls"]);
    // Rotating the data key keeps the passphrase identity: still cached.
    setup.ok("laptop", None, &["keys", "rotate"]);
    setup.ok("laptop", None, &["ls"]);
}

/// Puts `secret` under the laptop's key straight through the protocol.
fn put_raw(setup: &Setup, secret: &[u8]) {
    let key = format!(
        "file://{}\n{}",
        setup.path("server").display(),
        setup.path("laptop").display()
    );
    let mut frame = b"CVAGENT1".to_vec();
    frame.push(2);
    frame.extend_from_slice(&(key.len() as u16).to_be_bytes());
    frame.extend_from_slice(key.as_bytes());
    frame.extend_from_slice(&(secret.len() as u16).to_be_bytes());
    frame.extend_from_slice(secret);
    frame.extend_from_slice(&600u32.to_be_bytes());
    let mut stream = UnixStream::connect(setup.socket()).expect("connect to the agent");
    stream.write_all(&frame).expect("send");
    let mut answer = [0u8; 11];
    stream.read_exact(&mut answer).expect("answer");
    assert_eq!(&answer[..9], b"CVAGENT1\0", "the agent took the secret");
}

#[test]
fn a_wrong_cached_secret_falls_back_to_asking_and_damages_nothing() {
    let setup = Setup::new();
    let id = setup.cached();
    setup.ok("laptop", None, &["add", &id, "milk"]);
    for secret in [
        // Another identity: a valid age key that opens nothing here.
        age::secrecy::ExposeSecret::expose_secret(&age::x25519::Identity::generate().to_string())
            .as_bytes()
            .to_vec(),
        b"not an identity at all".to_vec(),
    ] {
        put_raw(&setup, &secret);
        asks_for_the_passphrase(setup.run("laptop", None, &["ls"]));
        // Forgotten, not kept: the agent held only that entry and exited.
        setup.wait_agent_gone();
        let shown = setup.ok("laptop", Some(PASSPHRASE), &["show", &id]);
        assert!(shown.contains("milk"), "{shown}");
        setup.ok("laptop", None, &["ls"]);
    }
    let report = setup.ok("laptop", Some(PASSPHRASE), &["verify"]);
    assert!(report.contains("all open and agree"), "{report}");
}

#[test]
fn a_listener_that_is_not_the_agent_never_gets_the_secret() {
    let setup = Setup::new();
    setup.ok("laptop", Some(PASSPHRASE), &["new", "groceries"]);
    let dir = setup.socket().parent().expect("dir").to_path_buf();
    std::fs::create_dir(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let listener = UnixListener::bind(setup.socket()).expect("bind");
    let received = std::thread::spawn(move || {
        let mut all = Vec::new();
        listener.set_nonblocking(false).expect("blocking");
        // Answers every connection with garbage, and keeps what it was sent.
        for _ in 0..4 {
            let Ok((mut stream, _)) = listener.accept() else {
                break;
            };
            stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
            }
        }
        all
    });
    setup.ok("laptop", Some(PASSPHRASE), &["ls"]);
    asks_for_the_passphrase(setup.run("laptop", None, &["ls"]));
    // Unblock the thread's remaining accepts.
    for _ in 0..4 {
        let _ = UnixStream::connect(setup.socket());
    }
    let received = received.join().expect("listener thread");
    assert!(
        !received
            .windows(b"AGE-SECRET-KEY".len())
            .any(|w| w == b"AGE-SECRET-KEY"),
        "the secret reached a listener that is not the agent"
    );
}

/// The socket's directory must be this user's alone.
fn assert_directory_refused(setup: &Setup, dir: &Path) {
    setup.ok("laptop", Some(PASSPHRASE), &["ls"]);
    assert!(!setup.socket().exists(), "no agent in {}", dir.display());
    asks_for_the_passphrase(setup.run("laptop", None, &["ls"]));
}

#[test]
fn a_socket_directory_others_can_enter_or_own_is_not_used() {
    let setup = Setup::new();
    setup.ok("laptop", Some(PASSPHRASE), &["new", "groceries"]);
    let dir = setup.socket().parent().expect("dir").to_path_buf();
    std::fs::create_dir(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_directory_refused(&setup, &dir);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // Owned by another user (only root can give a directory away).
    if std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).is_ok() {
        assert_directory_refused(&setup, &dir);
    }
}

#[test]
fn no_agent_neither_starts_nor_asks_the_agent() {
    let setup = Setup::new();
    setup.ok("laptop", Some(PASSPHRASE), &["new", "groceries"]);
    setup.ok("laptop", Some(PASSPHRASE), &["ls", "--no-agent"]);
    assert!(!setup.socket().exists(), "--no-agent started no agent");
    succeeded(
        setup
            .command("laptop", Some(PASSPHRASE), &["ls"])
            .env("CHATVAULT_NO_AGENT", "1")
            .output()
            .expect("run"),
    );
    assert!(
        !setup.socket().exists(),
        "CHATVAULT_NO_AGENT=1 started no agent"
    );
    setup.ok("laptop", Some(PASSPHRASE), &["ls"]);
    assert!(setup.socket().exists());
    asks_for_the_passphrase(
        setup
            .command("laptop", None, &["ls"])
            .env("CHATVAULT_NO_AGENT", "1")
            .output()
            .expect("run"),
    );
    setup.ok("laptop", None, &["ls"]);
}
