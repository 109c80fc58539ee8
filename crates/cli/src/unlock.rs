//! Opening the vault for a command, through the unlock cache: a cached
//! unlock from the agent if there is one, else the passphrase (or recovery
//! key), whose unlocked identity is then handed to the agent for the next
//! commands. See [`crate::agent`].

use crate::agent::client::Agent;
use crate::settings::{self, Location};
use crate::Cli;
use chatvault::{ChatVault, Error, Result};
use zeroize::Zeroizing;

/// Whether a command may use the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// Read a cached unlock; cache a fresh one.
    Use,
    /// Neither: the command must be unlocked with the secret itself.
    Bypass,
}

/// The agent, unless `--no-agent` / `CHATVAULT_NO_AGENT` or an identity
/// file (which already unlocks without a key derivation).
fn agent(cli: &Cli, location: &Location) -> Option<Agent> {
    if cli.no_agent || location.identity.is_some() {
        return None;
    }
    Agent::locate()
}

/// What the agent caches a vault's unlock under: the vault's URL and this
/// device's replica (two replicas of one vault are two devices).
fn cache_key(location: &Location) -> String {
    let replica = std::path::absolute(&location.replica).unwrap_or(location.replica.clone());
    format!("{}\n{}", location.server, replica.display())
}

/// Opens the vault at `location`; `true` with it when this open created
/// the vault (the server held none).
pub async fn open(cli: &Cli, location: &Location, cache: Cache) -> Result<(ChatVault, bool)> {
    let agent = match cache {
        Cache::Use => agent(cli, location),
        Cache::Bypass => None,
    };
    let key = cache_key(location);
    // A replica that does not exist yet has never been opened with this
    // unlock; a cached identity must never create a vault. A passphrase
    // given explicitly is checked, not passed over: a wrong one is refused
    // even while the agent holds the unlock (a right one is cached anew).
    let explicit = std::env::var_os(settings::PASSPHRASE_VAR).is_some();
    if let Some(agent) = agent
        .as_ref()
        .filter(|_| !explicit && location.replica.exists())
    {
        if let Some(secret) = agent.get(&key).await {
            match parse_identity(&secret) {
                Some(identity) => {
                    match settings::locked_builder(location)?
                        .identity(identity)
                        .open()
                        .await
                    {
                        Ok(vault) => return Ok((vault, false)),
                        Err(Error::WrongKey { message }) => {
                            tracing::info!(%message, "the cached unlock no longer opens the vault (passphrase changed or removed): forgetting it and asking");
                            agent.forget(&key).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                None => {
                    tracing::info!(
                        "the agent held no valid identity for this vault: forgetting it and asking"
                    );
                    agent.forget(&key).await;
                }
            }
        }
    }
    let creating = settings::creates_vault(location).await;
    let vault = settings::builder_to_create(cli, location, creating)?
        .open()
        .await?;
    if let (Some(agent), Some(identity)) = (&agent, vault.unlocked_identity()) {
        let secret = Zeroizing::new(
            age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_string(),
        );
        let idle = crate::agent::timeout(cli.agent_timeout);
        agent.put(&key, secret.as_bytes(), idle).await;
    }
    Ok((vault, creating))
}

/// Forgets the cached unlock of `location` (after `keys passwd`: the old
/// passphrase identity no longer opens the key file).
pub async fn forget(no_agent: bool, location: &Location) {
    if let Some(agent) = Agent::locate().filter(|_| !no_agent) {
        agent.forget(&cache_key(location)).await;
    }
}

fn parse_identity(secret: &[u8]) -> Option<age::x25519::Identity> {
    std::str::from_utf8(secret).ok()?.trim().parse().ok()
}

/// `chatvault lock`: the agent forgets every cached unlock and exits.
pub async fn lock() -> Result<()> {
    match Agent::locate() {
        Some(agent) => match agent.lock().await {
            Some(count) => eprintln!(
                "locked: the agent forgot {count} cached unlock(s) and stopped; the next command \
                 asks for the passphrase"
            ),
            None => eprintln!("locked: no agent was running, nothing was cached"),
        },
        None => eprintln!("locked: no agent socket location (no XDG_RUNTIME_DIR or HOME)"),
    }
    Ok(())
}
