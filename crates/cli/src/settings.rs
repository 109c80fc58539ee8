//! Where the vault is and how to unlock it: the global options, their
//! defaults under the user's data directory, and the passphrase or identity.

use crate::config::Config;
use crate::Cli;
use age::secrecy::SecretString;
use chatvault::core::envelope::Unlock;
use chatvault::{ChatVault, ChatVaultBuilder, Error, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable that holds the passphrase (for scripts).
pub const PASSPHRASE_VAR: &str = "CHATVAULT_PASSPHRASE";

/// The environment variable tests use to make scrypt cheap.
const WORK_FACTOR_VAR: &str = "CHATVAULT_SCRYPT_WORK_FACTOR";

/// Where a command's vault lives and this device's replica of it.
#[derive(Clone, Debug)]
pub struct Location {
    /// The vault's URL.
    pub server: String,
    /// This device's replica file.
    pub replica: PathBuf,
}

/// The vault from `--server` (or `init`'s URL), else `--vault NAME` or the
/// default vault `init` remembered, else the default folder server.
pub fn location(cli: &Cli, server: Option<&str>) -> Result<Location> {
    let explicit = server.map(str::to_string).or_else(|| cli.server.clone());
    let remembered = match &explicit {
        Some(_) => None,
        None => Config::load()?.vault(cli.vault.as_deref())?,
    };
    let (server, replica) = match (explicit, remembered) {
        (Some(server), _) => (server, None),
        (None, Some(entry)) => (entry.server, Some(entry.replica)),
        (None, None) => (
            format!("file://{}", data_dir()?.join("server").display()),
            None,
        ),
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
    Ok(Location { server, replica })
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
pub fn builder(cli: &Cli, location: &Location) -> Result<ChatVaultBuilder> {
    let builder = locked_builder(location)?;
    match &cli.identity {
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
    let builder = ChatVault::builder()
        .storage_url(server)
        .replica_path(replica);
    Ok(match work_factor()? {
        Some(log_n) => builder.scrypt_work_factor(log_n),
        None => builder,
    })
}

/// The secret that unlocks the vault's key file: `--identity FILE`, else the
/// passphrase (as [`builder`] takes it), for commands that open key files
/// themselves (`verify`).
pub fn unlock(cli: &Cli) -> Result<Unlock> {
    match &cli.identity {
        Some(file) => Ok(Unlock::Identity(read_identity(file)?)),
        None => Ok(Unlock::Passphrase(SecretString::from(
            passphrase()?.as_str().to_string(),
        ))),
    }
}

/// The scrypt work factor from [`WORK_FACTOR_VAR`], if set.
pub fn work_factor() -> Result<Option<u8>> {
    match std::env::var(WORK_FACTOR_VAR) {
        Ok(value) => value.trim().parse().map(Some).map_err(|_| {
            Error::invalid(format!(
                "{WORK_FACTOR_VAR}={value:?} is not a number in 1..=22"
            ))
        }),
        Err(_) => Ok(None),
    }
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

/// The passphrase from `CHATVAULT_PASSPHRASE`, or one line of stdin.
fn passphrase() -> Result<Zeroizing<String>> {
    if let Ok(passphrase) = std::env::var(PASSPHRASE_VAR) {
        return Ok(Zeroizing::new(passphrase));
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("passphrase (shown as you type): ");
        // The prompt is a courtesy; reading works without it.
        let _ = std::io::stderr().flush();
    }
    let mut line = Zeroizing::new(String::new());
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::local("cannot read the passphrase from standard input", e))?;
    let passphrase = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
    if passphrase.is_empty() {
        return Err(Error::invalid(
            "no passphrase: set CHATVAULT_PASSPHRASE, type it on standard input, \
             or pass --identity FILE",
        ));
    }
    Ok(passphrase)
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
}
