//! `export`: every chat as a standard age file, to a passphrase or to age
//! recipients, written to a file or to standard output.

use super::Session;
use crate::settings;
use age::secrecy::SecretString;
use chatvault::{ChatVault, Error, ExportTarget, Result};
use clap::{ArgGroup, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// What `export` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    /// A standard age file of every chat (needs --passphrase-env or --recipient)
    #[default]
    Age,
    /// Plain chatvault JSON (unencrypted: handle with care)
    Json,
}

/// `export`'s arguments.
#[derive(Clone, Debug, clap::Args)]
#[group(skip)]
#[command(group = ArgGroup::new("to").args(["passphrase_env", "recipient"]).multiple(true))]
pub struct Args {
    /// age: encrypted to a passphrase or recipients; json: plain chatvault JSON
    #[arg(long, value_enum, default_value_t = ExportFormat::Age)]
    format: ExportFormat,
    /// Encrypt to the passphrase held in this environment variable
    #[arg(long, value_name = "VAR")]
    passphrase_env: Option<String>,
    /// Encrypt to this age recipient (age1…); repeat for several
    #[arg(long, value_name = "AGE1…")]
    recipient: Vec<String>,
    /// Write here instead of standard output
    #[arg(short, long, visible_alias = "out", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Overwrite the --output file if it exists
    #[arg(long, short)]
    force: bool,
}

/// Checks the arguments, pulls, and writes the export.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    // Bad arguments fail before any network round trip.
    check_output(args)?;
    match args.format {
        ExportFormat::Age => {
            let target = target(args)?;
            session.pull().await?;
            write(&session.vault, &target, args.output.as_deref()).await
        }
        ExportFormat::Json => {
            if args.passphrase_env.is_some() || !args.recipient.is_empty() {
                return Err(Error::invalid(
                    "--format json is plain text: drop --passphrase-env and \
                     --recipient, or use --format age",
                ));
            }
            session.pull().await?;
            write_json(&session.vault, args.output.as_deref()).await
        }
    }
}

/// Refuses to overwrite an existing `--output` file without `--force`,
/// before any work is done.
fn check_output(args: &Args) -> Result<()> {
    match &args.output {
        Some(path) if !args.force && path.symlink_metadata().is_ok() => {
            Err(Error::invalid(format!(
                "{} exists: pass --force to overwrite it, or choose another file",
                path.display()
            )))
        }
        _ => Ok(()),
    }
}

/// Whom the export is encrypted to, checked before any work is done.
fn target(args: &Args) -> Result<ExportTarget> {
    if args.passphrase_env.is_none() && args.recipient.is_empty() {
        return Err(Error::invalid(
            "an age export needs --passphrase-env VAR or --recipient AGE1… (or use --format json)",
        ));
    }
    if args.output.is_none() && std::io::stdout().is_terminal() {
        return Err(Error::invalid(
            "an export is a binary age file: pass -o FILE or redirect standard output",
        ));
    }
    if let Some(var) = &args.passphrase_env {
        let passphrase = std::env::var(var).map_err(|_| {
            Error::invalid(format!(
                "the environment variable {var} (the export passphrase) is not set"
            ))
        })?;
        return Ok(ExportTarget::Passphrase {
            passphrase: SecretString::from(passphrase),
            work_factor: Some(settings::work_factor()?),
        });
    }
    let recipients = args
        .recipient
        .iter()
        .map(|r| {
            r.parse()
                .map_err(|e| Error::invalid(format!("{r:?} is not an age recipient (age1…): {e}")))
        })
        .collect::<Result<_>>()?;
    Ok(ExportTarget::Recipients(recipients))
}

/// Exports the vault to `output`, or to standard output.
async fn write(vault: &ChatVault, target: &ExportTarget, output: Option<&Path>) -> Result<()> {
    let file = vault.export_age(target).await?;
    match output {
        Some(path) => write_private(path, &file)?,
        None => crate::output::raw(&file),
    }
    eprintln!("exported {} chats", vault.sidebar().len());
    Ok(())
}

/// Writes every chat as chatvault JSON ([`ChatVault::export_json`]) to
/// `output`, or to standard output.
async fn write_json(vault: &ChatVault, output: Option<&Path>) -> Result<()> {
    let export = vault.export_json().await?;
    for skipped in &export.skipped {
        eprintln!(
            "warning: chat {} left out of the export: {}",
            skipped.chat, skipped.error
        );
    }
    match output {
        Some(path) => write_private(path, &export.bytes)?,
        None => crate::output::raw(&export.bytes),
    }
    eprintln!("exported {} chats", export.chats);
    Ok(())
}

/// Writes an export to `path` readable by this user only (mode 0600,
/// whatever the umask, also when the file existed with a wider mode): a
/// JSON export is every chat in plaintext.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed = |e| crate::output::file_error(format!("cannot write {}", path.display()), e);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(failed)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(failed)
}
