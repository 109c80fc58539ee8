//! The commands, one module each (as cargo's `src/bin/cargo/commands`):
//! its arguments (`Args`, parsed by clap) and its `exec`, over the
//! `chatvault` facade. `main.rs` holds the one dispatch. A command on the
//! vault runs in [`with_vault`]: it opens the vault, syncs before reading
//! (so `ls` shows what other devices wrote) and after writing (so the
//! change reaches the server before the process exits); offline, writes
//! stay queued.

pub mod add;
pub mod agent;
pub mod attach;
pub mod attachments;
pub mod completions;
pub mod export;
pub mod import;
pub mod init;
pub mod keys;
pub mod lock;
pub mod login;
pub mod logout;
pub mod ls;
pub mod maintain;
pub mod migrate_folder;
pub mod new;
pub mod rename;
pub mod rm;
pub mod rm_message;
pub mod save_attachment;
pub mod search;
pub mod select;
pub mod show;
pub mod star;
pub mod status;
pub mod sync;
pub mod verify;
pub mod watch;

use crate::config::Config;
use crate::unlock::Cache;
use crate::{output, settings, Cli, Command, KeysCommand};
use chatvault::{ChatId, ChatVault, Result, SettledMaintenance};

/// Opens the vault at `location` (creating it on an empty server), runs
/// `command` on it, gives the housekeeping a sync started the
/// `--maintenance-budget`, and closes the vault.
pub async fn with_vault(
    cli: &Cli,
    location: settings::Location,
    command: impl AsyncFnOnce(&Session) -> Result<()>,
) -> Result<()> {
    // `keys passwd` asks for the current passphrase (the new one is read
    // after it from standard input) and replaces the cached identity.
    let passwd = matches!(cli.command, Command::Keys(KeysCommand::Passwd));
    let cache = if passwd { Cache::Bypass } else { Cache::Use };
    let forget_after = passwd.then(|| (cli.no_agent, location.clone()));
    let (vault, created) = crate::unlock::open(cli, &location, cache).await?;
    if cli.identity.is_some() {
        remember_identity(&location)?;
    }
    let session = Session {
        vault,
        sync: !cli.no_sync,
        server: location.server.clone(),
    };
    let result = command(&session).await;
    // A sync may have started the vault's housekeeping (compaction, when
    // due): it gets the budget, and the next command resumes what is left.
    if let SettledMaintenance::Finished(Err(e)) = session
        .vault
        .settle_maintenance(cli.maintenance_budget)
        .await
    {
        tracing::debug!(error = %e, "maintenance failed; a later sync retries it");
    }
    if created && result.is_ok() {
        eprintln!(
            "created a new vault. Next, run `chatvault keys recovery` and write the recovery key \
             it prints down: it unlocks the vault if the passphrase is ever forgotten"
        );
    }
    session.vault.close().await;
    if let (Some((no_agent, location)), Ok(())) = (&forget_after, &result) {
        // The old passphrase identity no longer opens the key file.
        crate::unlock::forget(*no_agent, location).await;
    }
    result
}

/// Remembers the identity file that just opened a remembered vault, so the
/// next commands need no `--identity`.
fn remember_identity(location: &settings::Location) -> Result<()> {
    let (Some(name), Some(identity)) = (&location.name, &location.identity) else {
        return Ok(());
    };
    let mut config = Config::load()?;
    match config.vaults.get_mut(name) {
        Some(entry) if entry.identity.as_ref() != Some(identity) => {
            entry.identity = Some(identity.clone());
            config.save()?;
            eprintln!(
                "vault {name:?} now unlocks with {} on this device (no --identity needed)",
                identity.display()
            );
        }
        _ => {}
    }
    Ok(())
}

/// An open vault and how the command line asked to sync it.
pub struct Session {
    /// The vault.
    pub vault: ChatVault,
    /// Sync before reads and after writes (no `--no-sync`).
    sync: bool,
    /// The vault's URL.
    pub server: String,
}

impl Session {
    /// Syncs before a read or an edit. Offline is a warning, not an error:
    /// the replica still answers. Returns whether the server answered.
    async fn pull(&self) -> Result<bool> {
        if !self.sync {
            return Ok(false);
        }
        match self.vault.sync_now().await {
            Ok(report) => {
                output::skipped(&report);
                Ok(true)
            }
            Err(e) if e.is_retriable() => {
                eprintln!("warning: working offline from this device's copy: {e}");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Pushes a write, unless the sync before it already found the server
    /// unreachable (one warning is enough).
    async fn push_if(&self, online: bool) -> Result<()> {
        if online {
            self.push().await
        } else {
            self.queued();
            Ok(())
        }
    }

    /// Pushes a write before exiting; offline, it stays queued.
    async fn push(&self) -> Result<()> {
        if !self.sync {
            self.queued();
            return Ok(());
        }
        match self.vault.sync_now().await {
            Ok(report) => {
                output::skipped(&report);
                Ok(())
            }
            Err(e) if e.is_retriable() => {
                eprintln!("warning: {e}");
                self.queued();
                Ok(())
            }
            Err(e) => {
                eprintln!("note: the change is saved on this device and stays queued");
                Err(e)
            }
        }
    }

    /// The chat `text` names among the chats this device knows (after the
    /// pull): an id, a unique id prefix or an exact title.
    fn chat_id(&self, text: &str) -> Result<ChatId> {
        crate::ids::resolve(text, &self.vault.sidebar())
    }

    fn queued(&self) {
        let pending = self.vault.pending_changes().unwrap_or(0);
        eprintln!("queued: {pending} change(s) wait on this device; the next sync pushes them");
    }
}
