//! `init URL`: create (or open) the vault at URL, sync once and remember it
//! in config.json for later commands.

use super::{with_vault, Session};
use crate::config::{Config, VaultEntry};
use crate::output::{self, out};
use crate::{settings, Cli};
use chatvault::{Error, Result};

/// The name `init` gives a vault without `--vault`.
const DEFAULT_VAULT: &str = "default";

/// `init`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// file:///folder, s3://bucket/prefix or supabase+https://project.supabase.co
    url: String,
    /// Stands in for the global --server, hidden here: `init` takes the
    /// URL as its argument (the same URL twice is accepted)
    #[arg(long, hide = true, value_name = "URL")]
    server: Option<String>,
    /// Create a new vault if the URL holds none, without asking (scripts;
    /// at a terminal `init` asks first)
    #[arg(long)]
    create: bool,
}

/// Opens the vault at the URL (creating it if the server holds none, after
/// asking), syncs once and remembers it under `--vault` (or `default`).
pub async fn exec(cli: &Cli, args: &Args) -> Result<()> {
    let url = &args.url;
    if args.server.as_ref().is_some_and(|server| server != url) {
        return Err(Error::invalid(
            "init takes the vault's URL as its argument: drop --server",
        ));
    }
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
    let mut cli = cli.clone();
    cli.replica = Some(replica);
    let location = settings::location(&cli, Some(url))?;
    if !args.create && settings::creates_vault(&location).await {
        confirm_new_vault(&location.server)?;
    }
    let name = cli.vault.clone();
    with_vault(&cli, location.clone(), async |session| {
        remember(session, name.as_deref(), location).await
    })
    .await
}

/// The vault is open (created if the server was empty): syncs once and
/// remembers it.
async fn remember(
    session: &Session,
    name: Option<&str>,
    location: settings::Location,
) -> Result<()> {
    session.pull().await?;
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
        session.vault.sidebar().len(),
        if config.default.as_deref() == Some(name) {
            ", the default"
        } else {
            ""
        }
    );
    Ok(())
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
