//! The vaults `init` remembers: `config.json` in the platform's config
//! directory (`CHATVAULT_CONFIG_DIR` overrides it), so later commands need
//! no `--server`.
//!
//! ```json
//! {"default": "personal",
//!  "vaults": {"personal": {"server": "file:///…", "replica": "/…/personal.redb",
//!                          "identity": "/…/phone.key"}}}
//! ```
//!
//! `identity` is there only for a vault this device unlocks with an age
//! identity file (a device key) instead of the passphrase.

use chatvault::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The variable that moves the config directory (tests, portable setups).
pub const CONFIG_DIR_VAR: &str = "CHATVAULT_CONFIG_DIR";

/// The remembered vaults.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Config {
    /// The vault used without `--vault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Vaults by name.
    #[serde(default)]
    pub vaults: BTreeMap<String, VaultEntry>,
}

/// One remembered vault.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VaultEntry {
    /// Its URL.
    pub server: String,
    /// This device's replica of it.
    pub replica: PathBuf,
    /// The age identity file this device unlocks it with, once a command
    /// was given `--identity` (or `CHATVAULT_IDENTITY`) for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<PathBuf>,
}

/// The config directory.
pub fn dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(CONFIG_DIR_VAR).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "chatvault")
        .map(|dirs| dirs.config_dir().to_path_buf())
        .ok_or_else(|| {
            Error::invalid(format!(
                "no config directory (HOME is not set): set {CONFIG_DIR_VAR} or pass --server"
            ))
        })
}

fn file() -> Result<PathBuf> {
    Ok(dir()?.join("config.json"))
}

impl Config {
    /// Reads the config (empty if there is none yet).
    pub fn load() -> Result<Config> {
        let path = file()?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::invalid(format!(
                    "{} is not a valid chatvault config ({e}): fix or delete it",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(crate::output::file_error(
                format!("cannot read {}", path.display()),
                e,
            )),
        }
    }

    /// Writes the config atomically (temporary file, then rename).
    pub fn save(&self) -> Result<()> {
        let path = file()?;
        let dir = dir()?;
        std::fs::create_dir_all(&dir).map_err(|e| {
            crate::output::file_error(format!("cannot create {}", dir.display()), e)
        })?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::invalid(format!("cannot encode the config: {e}")))?;
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, json)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|e| crate::output::file_error(format!("cannot write {}", path.display()), e))
    }

    /// The vault named `name`, or the default one; `None` if no vault was
    /// ever initialised (and no name was asked for).
    pub fn vault(&self, name: Option<&str>) -> Result<Option<VaultEntry>> {
        match name.or(self.default.as_deref()) {
            Some(name) => match self.vaults.get(name) {
                Some(entry) => Ok(Some(entry.clone())),
                None => Err(Error::invalid(format!(
                    "no vault named {name:?} (known: {}): run `chatvault init URL --vault {name}` first",
                    if self.vaults.is_empty() {
                        "none".to_string()
                    } else {
                        self.vaults.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ))),
            },
            None => Ok(None),
        }
    }
}
