//! Where the vault is and how to unlock it: the global options, their
//! defaults under the user's data directory, and the passphrase or identity.

use crate::config::Config;
use crate::Cli;
use age::secrecy::SecretString;
use chatvault::core::envelope::Unlock;
use chatvault::{ChatVault, ChatVaultBuilder, Error, Result};
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable that holds the passphrase (for scripts).
pub const PASSPHRASE_VAR: &str = "CHATVAULT_PASSPHRASE";

/// The environment variable tests use to make scrypt cheap.
const WORK_FACTOR_VAR: &str = "CHATVAULT_SCRYPT_WORK_FACTOR";

/// The lowest scrypt work factor (log2 N) a new passphrase gets unless
/// [`WORK_FACTOR_VAR`] says otherwise: 2^18 (256 MiB, about a second of a
/// current machine), in every build.
const MIN_WORK_FACTOR: u8 = 18;

/// The highest work factor every device accepts when unlocking.
const MAX_WORK_FACTOR: u8 = 22;

/// The lowest zxcvbn score (0..=4) a new passphrase needs without
/// `--allow-weak-passphrase`.
const MIN_SCORE: u8 = 3;

/// Where a command's vault lives and this device's replica of it.
#[derive(Clone, Debug)]
pub struct Location {
    /// The vault's URL.
    pub server: String,
    /// This device's replica file.
    pub replica: PathBuf,
    /// The age identity file to unlock with: `--identity` /
    /// `CHATVAULT_IDENTITY`, else the one remembered for the vault (unless
    /// `CHATVAULT_PASSPHRASE` is set); `None`: the passphrase.
    pub identity: Option<PathBuf>,
    /// The name of the remembered vault this is, if it is one.
    pub name: Option<String>,
}

/// The vault from `--server` (or `init`'s URL), else `--vault NAME` or the
/// default vault `init` remembered, else the default folder server.
pub fn location(cli: &Cli, server: Option<&str>) -> Result<Location> {
    let explicit = server.map(str::to_string).or_else(|| cli.server.clone());
    let (name, remembered) = match &explicit {
        Some(_) => (None, None),
        None => {
            let config = Config::load()?;
            let name = cli.vault.clone().or_else(|| config.default.clone());
            (name, config.vault(cli.vault.as_deref())?)
        }
    };
    let name = name.filter(|_| remembered.is_some());
    let remembered_identity = remembered.as_ref().and_then(|e| e.identity.clone());
    let (server, replica) = match (explicit, remembered) {
        (Some(server), _) => (server, None),
        (None, Some(entry)) => (entry.server, Some(entry.replica)),
        (None, None) => (
            format!("file://{}", data_dir()?.join("server").display()),
            None,
        ),
    };
    let identity = match &cli.identity {
        Some(file) => Some(std::path::absolute(file).unwrap_or_else(|_| file.clone())),
        None if std::env::var_os(PASSPHRASE_VAR).is_some() => None,
        None => remembered_identity,
    };
    let replica = match (&cli.replica, replica) {
        (Some(path), _) => path.clone(),
        (None, Some(path)) => path,
        // One replica per server: switching --server never reuses a replica
        // of another vault (the library refuses that).
        (None, None) => data_dir()?
            .join("replicas")
            .join(format!("{:016x}.redb", fnv1a(server.as_bytes()))),
    };
    Ok(Location {
        server,
        replica,
        identity,
        name,
    })
}

/// An S3 URL needs credentials from the environment: say which, before
/// any request fails with a less helpful message.
pub fn check_credentials(server: &str) -> Result<()> {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let has_credentials = (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY"))
        || set("AWS_WEB_IDENTITY_TOKEN_FILE")
        || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if server.starts_with("s3://") && !has_credentials {
        return Err(Error::Unauthorized {
            message: format!(
                "{server} needs S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                 (and AWS_REGION; AWS_ENDPOINT for MinIO or another S3-compatible store)"
            ),
        });
    }
    Ok(())
}

/// A builder with storage, replica and unlock taken from `location` and the
/// options.
pub fn builder(location: &Location) -> Result<ChatVaultBuilder> {
    let builder = locked_builder(location)?;
    match &location.identity {
        Some(file) => Ok(builder.identity(read_identity(file)?)),
        None => Ok(builder.passphrase(passphrase()?.as_str())),
    }
}

/// A builder with storage and replica taken from `location`, and no unlock
/// yet (the caller adds one: [`builder`], or a cached unlock).
pub fn locked_builder(location: &Location) -> Result<ChatVaultBuilder> {
    check_credentials(&location.server)?;
    let server = location.server.clone();
    let replica = location.replica.clone();
    if let Some(parent) = replica.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::local(format!("cannot create {}", parent.display()), e))?;
    }
    Ok(ChatVault::builder()
        .storage_url(server)
        .replica_path(replica)
        .scrypt_work_factor(work_factor()?))
}

/// Whether opening `location` creates the vault: this device never opened
/// it, and the server holds no key file. `false` when that cannot be told
/// (a Supabase vault before sign-in, an unreachable server): opening then
/// says what is wrong.
pub async fn creates_vault(location: &Location) -> bool {
    if location.replica.exists() || location.server.starts_with("supabase+") {
        return false;
    }
    match chatvault::open_url(&location.server).await {
        Ok(storage) => matches!(storage.get_keyring().await, Ok(None)),
        Err(_) => false,
    }
}

/// A builder that unlocks `location` as [`builder`] does, except that
/// when this open creates the vault (`creating`), the passphrase is a new
/// one: typed twice at a terminal, and refused if weak (see
/// [`new_passphrase`]).
pub fn builder_to_create(
    cli: &Cli,
    location: &Location,
    creating: bool,
) -> Result<ChatVaultBuilder> {
    if !creating || location.identity.is_some() {
        return builder(location);
    }
    let passphrase = new_passphrase(PASSPHRASE_VAR, cli.allow_weak_passphrase)?;
    Ok(locked_builder(location)?.passphrase(passphrase.as_str()))
}

/// The secret that unlocks the vault's key file: `--identity FILE`, else the
/// passphrase (as [`builder`] takes it), for commands that open key files
/// themselves (`verify`).
pub fn unlock(location: &Location) -> Result<Unlock> {
    match &location.identity {
        Some(file) => Ok(Unlock::Identity(read_identity(file)?)),
        None => Ok(Unlock::Passphrase(SecretString::from(
            passphrase()?.as_str().to_string(),
        ))),
    }
}

/// The scrypt work factor (log2 N) of a new passphrase slot or passphrase
/// export: [`WORK_FACTOR_VAR`] if set (tests), else about one second of
/// this machine's work, as age picks it, but never below
/// [`MIN_WORK_FACTOR`]: a debug build, whose scrypt is many times slower,
/// does not protect a vault with a weaker passphrase than a release build.
pub fn work_factor() -> Result<u8> {
    work_factor_from(std::env::var(WORK_FACTOR_VAR).ok())
}

/// [`work_factor`], given [`WORK_FACTOR_VAR`]'s value.
fn work_factor_from(var: Option<String>) -> Result<u8> {
    match var {
        Some(value) => value.trim().parse().map_err(|_| {
            Error::invalid(format!(
                "{WORK_FACTOR_VAR}={value:?} is not a number in 1..=22"
            ))
        }),
        None => Ok(calibrated_work_factor().clamp(MIN_WORK_FACTOR, MAX_WORK_FACTOR)),
    }
}

/// The work factor that takes about a second here, measured as age does:
/// one scrypt at N = 2^10, doubled until it would take a second.
fn calibrated_work_factor() -> u8 {
    let mut recipient = age::scrypt::Recipient::new(SecretString::from(String::new()));
    recipient.set_work_factor(10);
    let started = std::time::Instant::now();
    if age::encrypt(&recipient, &[]).is_err() {
        return MIN_WORK_FACTOR;
    }
    let mut took = started.elapsed();
    let mut log_n = 10;
    while took < std::time::Duration::from_secs(1) && log_n < MAX_WORK_FACTOR {
        log_n += 1;
        took = took
            .saturating_mul(2)
            .max(std::time::Duration::from_nanos(1));
    }
    log_n
}

/// `$XDG_DATA_HOME/chatvault`, `~/.local/share/chatvault` or
/// `%APPDATA%\chatvault`.
pub fn data_dir() -> Result<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base = var("XDG_DATA_HOME")
        .or_else(|| var("HOME").map(|home| home.join(".local").join("share")))
        .or_else(|| var("APPDATA"))
        .ok_or_else(|| {
            Error::invalid("no data directory (HOME is not set): pass --server and --replica")
        })?;
    Ok(base.join("chatvault"))
}

/// The passphrase from `CHATVAULT_PASSPHRASE`, else typed at the terminal
/// (not shown), else one line of standard input.
fn passphrase() -> Result<Zeroizing<String>> {
    if let Ok(passphrase) = std::env::var(PASSPHRASE_VAR) {
        return Ok(Zeroizing::new(passphrase));
    }
    let passphrase = read_secret("passphrase: ")?;
    if passphrase.is_empty() {
        return Err(Error::invalid(
            "no passphrase: set CHATVAULT_PASSPHRASE, type it on standard input, \
             or pass --identity FILE",
        ));
    }
    Ok(passphrase)
}

/// A new passphrase: from the environment variable `var` if set, else
/// typed twice at the terminal (not shown; two that differ are refused),
/// else one line of standard input. Refused if zxcvbn scores it below
/// [`MIN_SCORE`] (with its reason), unless `allow_weak`.
pub fn new_passphrase(var: &str, allow_weak: bool) -> Result<Zeroizing<String>> {
    let typed = std::env::var(var).is_err() && std::io::stdin().is_terminal();
    let passphrase = match std::env::var(var) {
        Ok(passphrase) => Zeroizing::new(passphrase),
        Err(_) if typed => read_secret("new passphrase: ")?,
        Err(_) => read_secret("")?,
    };
    if passphrase.is_empty() {
        return Err(Error::invalid(format!(
            "no new passphrase: set {var} or type it on standard input"
        )));
    }
    // Judged before it is asked again: a weak one is not typed twice.
    if !allow_weak {
        check_strength(&passphrase)?;
    }
    if typed && *read_secret("the same passphrase again: ")? != *passphrase {
        return Err(Error::invalid(
            "the two passphrases differ: nothing was changed; run the command again",
        ));
    }
    Ok(passphrase)
}

/// Refuses a passphrase zxcvbn scores below [`MIN_SCORE`], saying why.
fn check_strength(passphrase: &str) -> Result<()> {
    let estimate = zxcvbn::zxcvbn(passphrase, &["chatvault", "chat", "vault"]);
    let score = u8::from(estimate.score());
    if score >= MIN_SCORE {
        return Ok(());
    }
    let mut reasons = Vec::new();
    if let Some(feedback) = estimate.feedback() {
        if let Some(warning) = feedback.warning() {
            reasons.push(warning.to_string());
        }
        reasons.extend(feedback.suggestions().iter().map(ToString::to_string));
    }
    if reasons.is_empty() {
        reasons.push(format!(
            "it could be guessed in about {} of offline attack.",
            estimate.crack_times().offline_slow_hashing_1e4_per_second()
        ));
    }
    Err(Error::invalid(format!(
        "the passphrase is too weak (strength {score} of 4, needs {MIN_SCORE}): {} Choose a \
         longer one (several uncommon words), or pass --allow-weak-passphrase",
        reasons.join(" ")
    )))
}

/// A secret typed at the terminal without echo (the prompt goes to the
/// terminal too), or one line of standard input when that is not a
/// terminal (scripts, pipes).
fn read_secret(prompt: &str) -> Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        return read_hidden(prompt).map_err(|e| {
            crate::output::file_error("cannot read the passphrase from the terminal", e)
        });
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line).map_err(|e| {
        crate::output::file_error("cannot read the passphrase from standard input", e)
    })?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_string(),
    ))
}

/// The first `AGE-SECRET-KEY-` line of an age identity file.
fn read_identity(file: &Path) -> Result<age::x25519::Identity> {
    let text = Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
        Error::invalid(format!(
            "cannot read the identity file {}: {e}",
            file.display()
        ))
    })?);
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("AGE-SECRET-KEY-"))
        .ok_or_else(|| {
            Error::invalid(format!(
                "{} holds no age identity (a line starting with AGE-SECRET-KEY-)",
                file.display()
            ))
        })?;
    line.parse().map_err(|e| {
        Error::invalid(format!(
            "{} holds an invalid age identity: {e}",
            file.display()
        ))
    })
}

/// Reads a line from the controlling terminal with echo off (the line
/// break still shows), after writing `prompt` to it; the terminal's modes
/// are restored afterwards. Echo goes off before the prompt is written, so
/// nothing typed after the prompt appears is ever shown.
fn read_hidden(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    use std::io::{Read, Write};
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let saved = tcgetattr(&tty)?;
    let mut hidden = saved.clone();
    hidden.local_modes.remove(LocalModes::ECHO);
    hidden.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&tty, OptionalActions::Now, &hidden)?;
    let mut read = || -> std::io::Result<Zeroizing<Vec<u8>>> {
        tty.write_all(prompt.as_bytes())?;
        tty.flush()?;
        let mut line = Zeroizing::new(Vec::new());
        let mut byte = [0u8; 1];
        while tty.read(&mut byte)? == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        zeroize::Zeroize::zeroize(&mut byte);
        Ok(line)
    };
    let line = read();
    let restored = tcsetattr(&tty, OptionalActions::Now, &saved);
    let mut line = line?;
    restored?;
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(std::mem::take(&mut *line))
        .map(Zeroizing::new)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()))
}

/// FNV-1a: a stable, dependency-free name for a server's replica file.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_names_differ_per_server_and_stay_stable() {
        assert_eq!(fnv1a(b"file:///a"), fnv1a(b"file:///a"));
        assert_ne!(fnv1a(b"file:///a"), fnv1a(b"file:///b"));
        // The published FNV-1a 64 test vector: names never change between
        // releases, or users would lose track of their replicas.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_new_passphrase_costs_at_least_2_to_the_18_in_every_build_unless_set() {
        // A debug build's scrypt is many times slower: its calibration alone
        // would pick about 2^14.
        let log_n = work_factor_from(None).expect("a work factor");
        assert!(
            (MIN_WORK_FACTOR..=MAX_WORK_FACTOR).contains(&log_n),
            "{log_n}"
        );
        assert_eq!(work_factor_from(Some("4".into())).expect("set"), 4);
        assert!(work_factor_from(Some("x".into())).is_err());
    }

    #[test]
    fn weak_passphrases_are_refused_with_the_estimators_reason() {
        let weak = check_strength("password1").expect_err("weak");
        assert!(weak.to_string().contains("too weak"), "{weak}");
        assert!(weak.to_string().contains("common password"), "{weak}");
        check_strength("correct horse battery staple").expect("strong enough");
    }
}
