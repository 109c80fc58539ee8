//! The subcommands. Each opens the vault, syncs before reading (so `ls`
//! shows what other devices wrote) and after writing (so the change reaches
//! the server before the process exits); offline, writes stay queued.

use crate::config::{Config, VaultEntry};
use crate::output::out;
use crate::unlock::Cache;
use crate::{output, settings, Cli, Command, ExportFormat};
use chatvault::{ChatId, ChatVault, Error, MessageId, Result, SettledMaintenance};
use clap::CommandFactory;

/// The name `init` gives a vault without `--vault`.
const DEFAULT_VAULT: &str = "default";

/// Runs one command line.
pub async fn run(mut cli: Cli) -> Result<()> {
    if let Command::Completions { shell } = cli.command {
        // Generated whole first: clap_complete panics on a failed write.
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "chatvault", &mut script);
        output::raw(&script);
        return Ok(());
    }
    if let Command::Lock = cli.command {
        return crate::unlock::lock().await;
    }
    if let Command::Keys(crate::keys::KeysCommand::DeviceKey { file }) = &cli.command {
        return crate::keys::write_device_key(file);
    }
    let init_url = match &cli.command {
        Command::Init { url, server, .. } => {
            if server.as_ref().is_some_and(|server| server != url) {
                return Err(Error::invalid(
                    "init takes the vault's URL as its argument: drop --server",
                ));
            }
            Some(url.clone())
        }
        _ => None,
    };
    let location = match &init_url {
        Some(url) => {
            let name = cli.vault.as_deref().unwrap_or(DEFAULT_VAULT);
            let replica = cli.replica.clone().map_or_else(
                || {
                    settings::data_dir().map(|dir| {
                        dir.join("replicas").join(format!(
                            "{name}-{:016x}.redb",
                            settings::fnv1a(url.as_bytes())
                        ))
                    })
                },
                Ok,
            )?;
            cli.replica = Some(replica);
            settings::location(&cli, Some(url))?
        }
        None => settings::location(&cli, None)?,
    };
    if let Command::Init { create: false, .. } = &cli.command {
        if settings::creates_vault(&location).await {
            confirm_new_vault(&location.server)?;
        }
    }
    match &cli.command {
        // Checks the key file itself, so it must not open the vault first.
        Command::Verify => return crate::verify::run(&location).await,
        Command::Login(args) => return crate::login::login(&cli, &location, args).await,
        Command::Logout(args) => return crate::login::logout(&cli, &location, args).await,
        _ => {}
    }
    // `keys passwd` asks for the current passphrase (the new one is read
    // after it from standard input) and replaces the cached identity.
    let passwd = matches!(cli.command, Command::Keys(crate::keys::KeysCommand::Passwd));
    let cache = if passwd { Cache::Bypass } else { Cache::Use };
    let forget_after = passwd.then(|| (cli.no_agent, location.clone()));
    let (vault, created) = crate::unlock::open(&cli, &location, cache).await?;
    if cli.identity.is_some() {
        remember_identity(&location)?;
    }
    let session = Session {
        vault,
        sync: !cli.no_sync,
        server: location.server.clone(),
    };
    let allow_weak = cli.allow_weak_passphrase;
    let result = match init_url {
        Some(_) => session.init(cli.vault.as_deref(), location).await,
        None => session.execute(cli.command, allow_weak).await,
    };
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

/// `init` on a URL that holds no vault: a typo, or a folder whose copy on
/// this device has not synced yet, would otherwise start a second vault
/// silently. At a terminal the user confirms; elsewhere `--create` must say
/// so (standard input may carry the passphrase).
fn confirm_new_vault(server: &str) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let advice = "if another device created the vault in a folder that Syncthing, Dropbox or \
                  the like shares, wait until this device's copy has synced instead";
    if !std::io::stdin().is_terminal() {
        return Err(Error::invalid(format!(
            "{} holds no vault: pass --create to create a new one there ({advice})",
            output::terminal(server)
        )));
    }
    eprint!(
        "{} holds no vault. Create a new one there? ({advice}) [y/N] ",
        output::terminal(server)
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| output::file_error("cannot read the answer", e))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
        Ok(())
    } else {
        Err(Error::invalid("no vault created"))
    }
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

struct Session {
    vault: ChatVault,
    sync: bool,
    /// The vault's URL.
    server: String,
}

impl Session {
    /// `init`: the vault is open (created if the server was empty); sync
    /// once and remember it.
    async fn init(&self, name: Option<&str>, location: settings::Location) -> Result<()> {
        self.pull().await?;
        let name = name.unwrap_or(DEFAULT_VAULT);
        let mut config = Config::load()?;
        // Opened with an identity file: later commands use it too.
        let identity = location.identity.clone().or_else(|| {
            config
                .vaults
                .get(name)
                .filter(|entry| entry.server == location.server)
                .and_then(|entry| entry.identity.clone())
        });
        config.vaults.insert(
            name.to_string(),
            VaultEntry {
                server: location.server.clone(),
                replica: location.replica,
                identity,
            },
        );
        if config.default.is_none() {
            config.default = Some(name.to_string());
        }
        config.save()?;
        out!(
            "vault {name:?} at {} ({} chats){}",
            location.server,
            self.vault.sidebar().len(),
            if config.default.as_deref() == Some(name) {
                ", the default"
            } else {
                ""
            }
        );
        Ok(())
    }

    async fn execute(&self, command: Command, allow_weak_passphrase: bool) -> Result<()> {
        let vault = &self.vault;
        match command {
            Command::Init { .. }
            | Command::Completions { .. }
            | Command::Verify
            | Command::Login(_)
            | Command::Logout(_)
            | Command::Lock
            | Command::Agent { .. } => {}
            Command::Ls { json, full_ids } => {
                self.pull().await?;
                if json {
                    let chats: Vec<_> = vault
                        .sidebar()
                        .iter()
                        .map(chatvault::export::summary)
                        .collect();
                    output::json(&chats)?;
                } else {
                    output::sidebar(&vault.sidebar(), full_ids);
                }
            }
            Command::Show { chat, json, at } => {
                self.pull().await?;
                let chat = vault.load_full_chat(self.chat_id(&chat)?).await?;
                if json {
                    output::json(&chatvault::export::chat(&chat))?;
                } else {
                    output::chat(&chat, at.unwrap_or(1));
                }
            }
            Command::New { title } => {
                out!("{}", vault.new_chat(title).await?.id);
                self.push().await?;
            }
            Command::Add { chat, role, text } => {
                let online = self.pull().await?;
                let chat = self.chat_id(&chat)?;
                out!("{}", vault.add_message(chat, role.into(), text).await?);
                self.push_if(online).await?;
            }
            Command::Rename { chat, title } => {
                let online = self.pull().await?;
                vault.rename(self.chat_id(&chat)?, title).await?;
                self.push_if(online).await?;
            }
            Command::Star { chat } => self.star(&chat, true).await?,
            Command::Unstar { chat } => self.star(&chat, false).await?,
            Command::Rm { chat } => {
                let online = self.pull().await?;
                vault.delete_chat(self.chat_id(&chat)?).await?;
                self.push_if(online).await?;
            }
            Command::RmMessage { chat, message } => {
                let online = self.pull().await?;
                let chat = self.chat_id(&chat)?;
                let message = match message.parse::<MessageId>() {
                    Ok(id) => id,
                    Err(_) => {
                        crate::ids::resolve_message(&message, &*vault.load_full_chat(chat).await?)?
                    }
                };
                vault.delete_message(chat, message).await?;
                self.push_if(online).await?;
            }
            Command::Sync => {
                let report = vault.sync_now().await?;
                output::skipped(&report);
                output::report(&report, &vault.status());
            }
            Command::Watch(args) => crate::watch::run(vault, args).await?,
            Command::Maintain => {
                let report = vault.maintain(true).await?;
                if report.ran {
                    out!(
                        "compacted: removed {} log entries and {} other objects ({} requests)",
                        report.removed_entries,
                        report.removed_objects,
                        report.requests
                    );
                } else {
                    out!("nothing to compact on this backend");
                }
            }
            Command::MigrateFolder => {
                let report = chatvault::migrate_folder(&self.server, vault.device_id()).await?;
                if report.already_moved {
                    out!(
                        "the folder already uses the per-device layout (moved at slot {})",
                        report.sealed_at
                    );
                } else {
                    out!(
                        "moved to the per-device layout: {} records and key file version {}; the \
                         old files (log/, rec/, snap/, keyring/) can be deleted once every device \
                         runs this release",
                        report.records,
                        report.key_file_version.unwrap_or(0)
                    );
                }
            }
            Command::Export(args) => {
                // Bad arguments fail before any network round trip.
                crate::export::check_output(&args)?;
                match args.format {
                    ExportFormat::Age => {
                        let target = crate::export::target(&args)?;
                        self.pull().await?;
                        crate::export::write(vault, &target, args.output.as_deref()).await?;
                    }
                    ExportFormat::Json => {
                        if args.passphrase_env.is_some() || !args.recipient.is_empty() {
                            return Err(Error::invalid(
                                "--format json is plain text: drop --passphrase-env and \
                                 --recipient, or use --format age",
                            ));
                        }
                        self.pull().await?;
                        crate::export::write_json(vault, args.output.as_deref()).await?;
                    }
                }
            }
            Command::Search { text, full_ids } => {
                self.pull().await?;
                crate::search::run(vault, &text, full_ids).await?;
            }
            Command::Keys(command) => {
                crate::keys::run(vault, command, allow_weak_passphrase).await?
            }
            Command::Import {
                file,
                apply_deletions,
            } => {
                crate::import::run(vault, &file, apply_deletions).await?;
                self.push().await?;
            }
            Command::Status => {
                self.pull().await?;
                out!("pending {}", vault.pending_changes()?);
                out!("status {}", output::status(&vault.status()));
            }
        }
        Ok(())
    }

    async fn star(&self, chat: &str, starred: bool) -> Result<()> {
        let online = self.pull().await?;
        self.vault.star(self.chat_id(chat)?, starred).await?;
        self.push_if(online).await
    }

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
