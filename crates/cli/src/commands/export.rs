//! `export`: every chat as a standard age file, to a passphrase or to age
//! recipients, or as plain JSON, with the bytes of every attachment
//! (unless `--no-attachments`), streamed to a file or to standard output.

use super::Session;
use crate::settings;
use age::secrecy::SecretString;
use chatvault::{ChatVault, Error, ExportOptions, ExportTarget, Exported, Result};
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
    /// Leave the attachments' bytes out (the messages keep their
    /// references, which open only on this vault's devices)
    #[arg(long)]
    no_attachments: bool,
}

/// Checks the arguments, pulls, and writes the export.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    // Bad arguments fail before any network round trip.
    check_output(args)?;
    match args.format {
        ExportFormat::Age => {
            let target = target(args)?;
            session.pull().await?;
            write(&session.vault, Some(&target), args).await
        }
        ExportFormat::Json => {
            if args.passphrase_env.is_some() || !args.recipient.is_empty() {
                return Err(Error::invalid(
                    "--format json is plain text: drop --passphrase-env and \
                     --recipient, or use --format age",
                ));
            }
            session.pull().await?;
            write(&session.vault, None, args).await
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

/// Exports the vault as an age file to `target`, or as plain JSON when
/// `None`, streamed to `--output` (through a temporary file beside it,
/// renamed into place once complete) or to standard output, with a
/// progress bar while the attachments' bytes are written.
async fn write(vault: &ChatVault, target: Option<&ExportTarget>, args: &Args) -> Result<()> {
    let options = ExportOptions {
        attachments: !args.no_attachments,
    };
    let progress = crate::output::bytes_progress(0)?;
    progress.set_message("attachments");
    let report = |done, total| {
        progress.set_length(total);
        progress.set_position(done);
    };
    let summary = |e: Exported<_>| (e.chats, e.files, e.file_bytes, e.skipped);
    let (chats, files, file_bytes, skipped) = match &args.output {
        Some(path) => {
            let tmp = partial(path);
            let file = create_private(&tmp)?;
            let written = export_to(vault, target, file, options, report).await;
            let exported = written.and_then(|exported| {
                exported.out.sync_all().map_err(|e| {
                    crate::output::file_error(format!("cannot write {}", tmp.display()), e)
                })?;
                std::fs::rename(&tmp, path).map_err(|e| {
                    crate::output::file_error(format!("cannot write {}", path.display()), e)
                })?;
                Ok(exported)
            });
            if exported.is_err() {
                // Best effort: the partial file is only wasted space.
                let _ = std::fs::remove_file(&tmp);
            }
            let exported = exported?;
            (
                exported.chats,
                exported.files,
                exported.file_bytes,
                exported.skipped,
            )
        }
        None => summary(export_to(vault, target, crate::output::Stdout, options, report).await?),
    };
    progress.finish_and_clear();
    for skipped in &skipped {
        eprintln!(
            "warning: chat {} left out of the export: {}",
            skipped.chat, skipped.error
        );
    }
    let files = if files > 0 {
        format!(
            " and {files} attachments ({})",
            crate::output::size(file_bytes)
        )
    } else {
        String::new()
    };
    eprintln!("exported {chats} chats{files}");
    Ok(())
}

/// [`ChatVault::write_export_age`] or [`ChatVault::write_export_json`]; a
/// file that cannot be fetched is named with the way out.
async fn export_to<W: Write + Send + 'static>(
    vault: &ChatVault,
    target: Option<&ExportTarget>,
    out: W,
    options: ExportOptions,
    progress: impl FnMut(u64, u64),
) -> Result<Exported<W>> {
    let exported = match target {
        Some(target) => vault.write_export_age(target, out, options, progress).await,
        None => vault.write_export_json(out, options, progress).await,
    };
    exported.map_err(|e| match e {
        // A file this device cannot fetch: the way to export the rest.
        Error::NotFound { what } => Error::NotFound {
            what: format!(
                "{what}; sync the device that attached it, or pass --no-attachments to export \
                 without the files' bytes"
            ),
        },
        e => e,
    })
}

/// The temporary file an export to `path` is written to first.
fn partial(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(ToOwned::to_owned).unwrap_or_default();
    name.push(".chatvault-partial");
    path.with_file_name(name)
}

/// Creates the file `path` readable by this user only (mode 0600, whatever
/// the umask, also when the file existed with a wider mode): a JSON export
/// is every chat in plaintext.
fn create_private(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed = |e| crate::output::file_error(format!("cannot write {}", path.display()), e);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(failed)?;
    Ok(file)
}
