//! `chatvault keys …`: what unlocks the vault, and changing it. Each change
//! is one new key file on the server, written only if no other device
//! changed it in between (else re-read and tried once more).

use super::Session;
use crate::output::out;
use chatvault::{ChatVault, Error, Event, Protection, Result};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The `keys` subcommands.
#[derive(Clone, Debug, Subcommand)]
pub enum KeysCommand {
    /// List what unlocks the vault: the passphrase, each device's age key, the
    /// recovery key (kind, id, label, age recipient, when added)
    List,
    /// Let another device unlock the vault with its age identity. On the new
    /// device, `chatvault keys device-key phone.key` writes one and prints its
    /// age1… recipient; run this with it here, then open the vault there with
    /// `--identity phone.key`
    AddDevice {
        /// The new device's age X25519 recipient (age1…, as `age-keygen -y` prints it)
        recipient: String,
        /// A name for listings
        #[arg(long, default_value = "device")]
        label: String,
    },
    /// Remove a device (or the recovery key, or the passphrase) by the id,
    /// label or recipient `keys list` shows. Rotates the data key, so records
    /// written from now on are unreadable with the removed key; what that
    /// device already downloaded cannot be taken back. The last protection,
    /// and the one this command unlocked with, are refused
    RemoveDevice {
        /// An id, label, full recipient or unique recipient prefix from `keys list`
        id: String,
    },
    /// Change the passphrase: the new one comes from CHATVAULT_NEW_PASSPHRASE,
    /// else is typed twice at the terminal (not shown), else is the next line
    /// of standard input (after the current passphrase, if that is read from
    /// standard input too). A weak one is refused (--allow-weak-passphrase).
    /// The old one stops working on every device
    Passwd,
    /// Create a recovery key, replacing any earlier one, and print it once:
    /// write it down. It unlocks the vault where a passphrase is asked for
    /// (CHATVAULT_PASSPHRASE or standard input)
    Recovery,
    /// Rotate the data key: new records are sealed with a new key from now
    /// on, and every chat is re-sealed with it and pushed, in batches (with
    /// progress; interrupted, run `keys reseal` to resume). Other devices
    /// pick the new key up at their next sync. Old keys stay until `keys
    /// retire`
    Rotate {
        /// Only rotate; re-seal later with `keys reseal`
        #[arg(long)]
        no_reseal: bool,
        /// No progress bar (it is shown only when standard error is a terminal)
        #[arg(long, short)]
        quiet: bool,
    },
    /// Re-seal, in batches, every chat (and deleted chat's tombstone) still
    /// sealed under an older data key (resumes an interrupted `keys rotate`)
    Reseal {
        /// No progress bar (it is shown only when standard error is a terminal)
        #[arg(long, short)]
        quiet: bool,
    },
    /// Drop the data keys no record references any more (after `keys
    /// reseal` finished). Run it once every device has synced since the
    /// rotation: a device with changes queued under an old key would push
    /// records nobody can open
    Retire,
    /// Move the vault to the newest format this release writes (raise its
    /// format floor). Upgrade chatvault on every device first: a device on
    /// an older release then refuses the vault, naming the version it
    /// needs, rather than misread it. Records already written stay as they
    /// are; the floor never goes down
    Upgrade,
    /// Write a new age identity for this device to FILE (mode 0600; missing
    /// folders are created, mode 0700) and print its recipient, for `keys
    /// add-device` on a device that already unlocks the vault. Needs no vault
    DeviceKey {
        /// Where to write the identity (refused if it exists)
        file: PathBuf,
    },
}

/// `keys device-key FILE`: runs before any vault is opened.
pub fn write_device_key(file: &Path) -> Result<()> {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let secret = Zeroizing::new(
        age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_string(),
    );
    let text = Zeroizing::new(format!(
        "# chatvault device key\n# public key: {recipient}\n{}\n",
        secret.as_str()
    ));
    if let Some(folder) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(folder).map_err(|e| {
            crate::output::file_error(format!("cannot create the folder {}", folder.display()), e)
        })?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut out = options
        .open(file)
        .map_err(|e| crate::output::file_error(format!("cannot create {}", file.display()), e))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(|e| crate::output::file_error(format!("cannot write {}", file.display()), e))?;
    out!("{recipient}");
    eprintln!(
        "wrote the identity to {}; on a device that unlocks the vault run: chatvault keys \
         add-device {recipient} --label NAME",
        file.display()
    );
    Ok(())
}

/// Runs one `keys` subcommand on the open vault; `allow_weak_passphrase`
/// lets `passwd` accept a passphrase the strength estimate calls weak.
pub async fn exec(
    session: &Session,
    command: &KeysCommand,
    allow_weak_passphrase: bool,
) -> Result<()> {
    run(&session.vault, command.clone(), allow_weak_passphrase).await
}

async fn run(vault: &ChatVault, command: KeysCommand, allow_weak_passphrase: bool) -> Result<()> {
    match command {
        KeysCommand::List => {
            for p in vault.list_protections().await? {
                print_protection(&p);
            }
            if vault.keys().protections().is_empty() {
                out!(
                    "(this key file predates the list; the first key change writes it: \
                     passphrase and/or this device's key)"
                );
            }
            out!(
                "data key {} (keys held: {:?}); fingerprint {}; vault format {}",
                vault.cipher().current_key_id(),
                vault.cipher().key_ids(),
                vault.cipher().fingerprint(),
                vault.format_floor()
            );
        }
        KeysCommand::AddDevice { recipient, label } => {
            let added = vault.add_device(&recipient, &label).await?;
            print_protection(&added);
            eprintln!("added; that device now opens the vault with --identity FILE");
        }
        KeysCommand::RemoveDevice { id } => {
            let removed = vault.remove_protection(&id).await?;
            print_protection(&removed.protection);
            eprintln!(
                "removed; new records are sealed with data key {}, which the removed secret \
                 cannot open (what it already downloaded stays with it; `chatvault keys reseal` \
                 then `keys retire` take the old key out of use)",
                removed.new_key_id
            );
        }
        KeysCommand::Passwd => {
            let new = crate::settings::new_passphrase(NEW_PASSPHRASE_VAR, allow_weak_passphrase)?;
            vault.change_passphrase(new.as_str()).await?;
            eprintln!(
                "passphrase changed and the data key rotated to key {}: the old passphrase opens \
                 nothing written from now on; other devices that used it must unlock again",
                vault.cipher().current_key_id()
            );
        }
        KeysCommand::Recovery => {
            let key = vault.create_recovery_key().await?;
            out!(
                "{}",
                age::secrecy::ExposeSecret::expose_secret(&key.secret())
            );
            eprintln!(
                "this is the vault's recovery key, shown once: write it down and keep it \
                 offline. It unlocks the vault where a passphrase is asked for; any earlier \
                 recovery key no longer does"
            );
        }
        KeysCommand::Rotate { no_reseal, quiet } => {
            let key = vault.rotate_key().await?;
            out!("{key}");
            eprintln!("data key {key} is current; new records are sealed with it");
            if !no_reseal {
                reseal(vault, quiet).await?;
            }
        }
        KeysCommand::Reseal { quiet } => reseal(vault, quiet).await?,
        KeysCommand::Retire => {
            let retired = vault.retire_unused_keys().await?;
            if retired.is_empty() {
                eprintln!(
                    "no key to retire: every older key still seals some record (run `chatvault \
                     keys reseal` first)"
                );
            }
            for id in retired {
                out!("{id}");
            }
        }
        KeysCommand::Upgrade => {
            let raised = vault.upgrade_format().await?;
            out!("{}", vault.format_floor());
            if raised {
                eprintln!(
                    "the vault is at format {} now: every device writes it from its next key \
                     re-read; releases that do not read it refuse the vault",
                    vault.format_floor()
                );
            } else {
                eprintln!(
                    "the vault already is at format {}; nothing changed",
                    vault.format_floor()
                );
            }
        }
        KeysCommand::DeviceKey { file } => write_device_key(&file)?,
    }
    Ok(())
}

/// Re-seals every stale record in batches, with a progress bar on stderr
/// (driven by the vault's re-seal progress events; hidden with `--quiet` or
/// when stderr is not a terminal), then one summary line.
async fn reseal(vault: &ChatVault, quiet: bool) -> Result<()> {
    const BATCH: usize = 512;
    let progress = if quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "re-sealing under key {msg}: {bar:40} {pos}/{len} records, {per_sec}, {eta} left",
            )
            .map_err(|e| Error::invalid(format!("progress template: {e}")))?,
        );
        bar
    };
    let mut events = vault.changes();
    let started = std::time::Instant::now();
    let mut resealed = 0usize;
    let mut refused = std::collections::BTreeMap::new();
    let last = loop {
        let report = vault.reseal_stale(BATCH).await?;
        resealed += report.resealed;
        refused.extend(report.refused.iter().cloned());
        while let Ok(event) = events.try_recv() {
            if let Event::ResealProgress {
                key_id,
                done,
                total,
            } = event
            {
                progress.set_message(key_id.to_string());
                progress.set_length(total as u64);
                progress.set_position(done as u64);
            }
        }
        if report.remaining == 0 || report.resealed == 0 {
            break report;
        }
    };
    progress.finish_and_clear();
    let pending = vault.pending_changes()?;
    eprintln!(
        "re-sealed {resealed} records in {:.1} s; {}/{} under the current key{}{}",
        started.elapsed().as_secs_f64(),
        last.done,
        last.total,
        if last.remaining > 0 {
            format!(
                " ({} could not be re-sealed here and were left as they are)",
                last.remaining
            )
        } else {
            String::new()
        },
        if pending > 0 {
            format!("; {pending} change(s) wait to be pushed (run `chatvault sync`)")
        } else {
            String::new()
        }
    );
    let titles: std::collections::HashMap<_, _> = vault
        .sidebar()
        .into_iter()
        .map(|s| (s.id, s.title.clone()))
        .collect();
    for (chat, why) in &refused {
        let title = titles
            .get(chat)
            .map(String::as_str)
            .unwrap_or("(deleted chat)");
        eprintln!(
            "not re-sealed: {:?} ({chat}): {}",
            crate::output::terminal(title),
            crate::output::terminal(why)
        );
    }
    Ok(())
}

fn print_protection(p: &Protection) {
    out!(
        "{:<10}  {:<12}  {:<20}  {}  {}",
        p.kind.as_str(),
        p.id(),
        crate::output::terminal(&p.label),
        crate::output::terminal(&p.recipient),
        added(p.added_ms)
    );
}

/// When a protection was added, as UTC.
fn added(millis: u64) -> String {
    i64::try_from(millis)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".to_string())
}

/// Where `keys passwd` takes the new passphrase from (scripts).
const NEW_PASSPHRASE_VAR: &str = "CHATVAULT_NEW_PASSPHRASE";
