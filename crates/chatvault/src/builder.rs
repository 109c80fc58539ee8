//! [`ChatVaultBuilder`]: storage, replica path and unlock → [`ChatVault`].

use crate::task::blocking;
use crate::url::open_url_as;
use crate::vault::ChatVault;
use age::secrecy::SecretString;
use chatvault_core::engine::{Engine, EngineConfig};
use chatvault_core::envelope::{Padding, Unlock};
use chatvault_core::keys::Opened;
use chatvault_core::keys::{unlock_from_secret, unlock_vault, VaultKeys};
use chatvault_core::{DeviceId, DynStorage, Error, Replica, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the builder gets its storage from.
enum StorageSource {
    Shared(DynStorage),
    Url(String),
}

/// Configures and opens a [`ChatVault`]; see [`ChatVault::builder`].
///
/// Required: a storage ([`storage`](Self::storage) or
/// [`storage_url`](Self::storage_url)), a [`replica_path`](Self::replica_path)
/// and a way to unlock ([`passphrase`](Self::passphrase) or
/// [`identity`](Self::identity)).
pub struct ChatVaultBuilder {
    storage: Option<StorageSource>,
    replica_path: Option<PathBuf>,
    unlock: Option<Unlock>,
    device: Option<DeviceId>,
    sync_every: Option<Duration>,
    cache_bytes: Option<u64>,
    attachment_cache_bytes: Option<u64>,
    blob_grace: Option<Duration>,
    max_vault_format: Option<u8>,
    work_factor: Option<u8>,
    maintenance: Option<Option<Duration>>,
    padding: Padding,
    #[cfg(feature = "supabase")]
    supabase: crate::supabase_session::SupabaseOptions,
}

/// The backend opened for a vault, and the replica's key file copy its
/// sign-in already opened (to read a stored Supabase session).
struct Backend {
    storage: DynStorage,
    known: Option<(Vec<u8>, Opened)>,
    #[cfg(feature = "supabase")]
    login: Option<crate::supabase_session::Login>,
}

impl Backend {
    fn of(storage: DynStorage) -> Self {
        Self {
            storage,
            known: None,
            #[cfg(feature = "supabase")]
            login: None,
        }
    }
}

impl ChatVault {
    /// Starts configuring a vault: storage, replica path, unlock.
    pub fn builder() -> ChatVaultBuilder {
        ChatVaultBuilder::new()
    }
}

impl std::fmt::Debug for ChatVaultBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatVaultBuilder")
            .field("replica_path", &self.replica_path)
            .field("unlock", &self.unlock)
            .field("device", &self.device)
            .field("sync_every", &self.sync_every)
            .finish_non_exhaustive()
    }
}

impl ChatVaultBuilder {
    pub(crate) fn new() -> Self {
        Self {
            storage: None,
            replica_path: None,
            unlock: None,
            device: None,
            sync_every: None,
            cache_bytes: None,
            attachment_cache_bytes: None,
            blob_grace: None,
            max_vault_format: None,
            work_factor: None,
            maintenance: None,
            padding: Padding::default(),
            #[cfg(feature = "supabase")]
            supabase: Default::default(),
        }
    }

    /// Signs in to Supabase with this email and password when the storage
    /// URL is `supabase+https://…`, replacing any stored session (what
    /// `chatvault login` does). Without it, a session stored by an earlier
    /// open is used, else `CHATVAULT_SUPABASE_EMAIL` and
    /// `CHATVAULT_SUPABASE_PASSWORD`, else `SUPABASE_ACCESS_TOKEN`'s static
    /// token. The session refreshes itself and is saved after every refresh.
    #[cfg(feature = "supabase")]
    pub fn supabase_sign_in(
        mut self,
        email: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.supabase.sign_in = Some(crate::supabase_session::Credentials {
            email: email.into(),
            password: password.into(),
        });
        self
    }

    /// Where the Supabase session is kept between runs. Default: this
    /// vault's replica, sealed with the vault's cipher (never in the clear).
    /// Give your own [`SessionStore`](chatvault_supabase::SessionStore) to
    /// keep it in the platform's keychain instead, or a
    /// [`MemorySessionStore`](chatvault_supabase::MemorySessionStore) to
    /// sign in on every start.
    #[cfg(feature = "supabase")]
    pub fn supabase_session_store(
        mut self,
        store: Arc<dyn chatvault_supabase::SessionStore>,
    ) -> Self {
        self.supabase.store = Some(store);
        self
    }

    /// The backend, already built (any [`Storage`](chatvault_core::Storage)
    /// implementation, wrapped or not).
    pub fn storage(mut self, storage: DynStorage) -> Self {
        self.storage = Some(StorageSource::Shared(storage));
        self
    }

    /// The backend, from a URL ([`open_url`](crate::open_url)): `file:///path`,
    /// `s3://bucket/prefix`, `supabase+https://project.supabase.co`.
    pub fn storage_url(mut self, url: impl Into<String>) -> Self {
        self.storage = Some(StorageSource::Url(url.into()));
        self
    }

    /// Where this device keeps its replica file (created if missing). One
    /// file per vault and device; it holds only ciphertext.
    pub fn replica_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.replica_path = Some(path.into());
        self
    }

    /// Unlocks with a passphrase. On the first device, a new vault's key
    /// file is created protected by it. A recovery key
    /// (`AGE-SECRET-KEY-1…`, from [`ChatVault::create_recovery_key`]) given
    /// here unlocks as that identity.
    pub fn passphrase(mut self, passphrase: impl Into<String>) -> Self {
        self.unlock = Some(unlock_from_secret(SecretString::from(passphrase.into())));
        self
    }

    /// Unlocks with an age X25519 identity. On the first device, a new
    /// vault's key file is created for its public key.
    pub fn identity(mut self, identity: age::x25519::Identity) -> Self {
        self.unlock = Some(Unlock::Identity(identity));
        self
    }

    /// This device's id (the tie-break of its clock). Default: the id stored
    /// in the replica, or a random one recorded there on first open.
    pub fn device_id(mut self, device: DeviceId) -> Self {
        self.device = Some(device);
        self
    }

    /// Starts background sync right after opening, polling every `interval`
    /// (or woken by the backend's change notifications, with polling as a
    /// safety net). Without it, sync runs on [`ChatVault::sync_now`] and
    /// after [`ChatVault::start_sync`].
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.sync_every = Some(interval);
        self
    }

    /// Byte bound of the in-memory cache of full chats (default 32 MiB).
    pub fn cache_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = Some(bytes);
        self
    }

    /// Byte budget of the attachment cache: fetched attachment chunks kept
    /// on this device (in `<replica file>.blobs` beside the replica),
    /// least recently used evicted first (default 512 MiB). Attachments
    /// still waiting for upload are never evicted and do not count.
    pub fn attachment_cache_bytes(mut self, bytes: u64) -> Self {
        self.attachment_cache_bytes = Some(bytes);
        self
    }

    /// Grace period of attachment garbage collection
    /// ([`ChatVault::collect_attachments`]): a blob that no chat names and
    /// no put renewed for this long may be deleted (default 7 days). Every
    /// device of a vault must use the same one: a shorter one on a
    /// collecting device could delete a blob another device is about to
    /// name.
    pub fn blob_grace(mut self, grace: Duration) -> Self {
        self.blob_grace = Some(grace);
        self
    }

    /// Makes this device behave as a release that reads and writes vault
    /// formats up to `format` only (`docs/design.md` §3.6): it refuses a
    /// vault whose format floor is higher and skips records written in
    /// newer formats. For testing a mixed fleet (a device that was not
    /// upgraded beside one that was); an application never needs it.
    pub fn max_vault_format(mut self, format: u8) -> Self {
        self.max_vault_format = Some(format);
        self
    }

    /// How often a successful sync ([`ChatVault::sync_now`] or background
    /// sync) starts the backend's housekeeping (compacting the object-store
    /// change log so idle polls and new devices stay cheap however long the
    /// history), counted from the latest run recorded in the replica, so
    /// short-lived processes keep the schedule; `None` switches it off.
    /// Default: every 10 minutes, and at the first sync of a device that
    /// never ran it. [`ChatVault::maintain`] runs it on demand.
    pub fn auto_maintenance(mut self, every: Option<Duration>) -> Self {
        self.maintenance = Some(every);
        self
    }

    /// scrypt work factor (`log2 N`, 1..=22) of the passphrase slot when this
    /// open creates a new vault or later changes the passphrase. Default: age's, about one second per unlock.
    /// Lower only for tests and demos.
    pub fn scrypt_work_factor(mut self, log_n: u8) -> Self {
        self.work_factor = Some(log_n);
        self
    }

    /// How this device pads what it seals, so that a record's size tells the
    /// server less about the length of its messages. Default:
    /// [`Padding::default`] (Padmé over a 256-byte floor, at most 12 % extra
    /// bytes); [`Padding::Off`] gives exact sizes away. Devices of one vault
    /// may differ: every device reads every setting.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Opens the vault: opens the replica, unlocks the key file (creating
    /// the vault if the backend has none), and loads the sidebar from the
    /// replica.
    ///
    /// Errors: [`Error::InvalidInput`] for a missing setting or a replica of
    /// another vault; [`Error::WrongKey`] when the passphrase or identity
    /// does not unlock the vault; [`Error::Local`] or
    /// [`Error::UnsupportedFormat`] for an unusable replica file;
    /// [`Error::Unavailable`] when the backend is unreachable and this
    /// device has never unlocked the vault before.
    pub async fn open(self) -> Result<ChatVault> {
        let Some(source) = self.storage else {
            return Err(Error::invalid(
                "no storage: call ChatVaultBuilder::storage or ::storage_url",
            ));
        };
        let path = self.replica_path.ok_or_else(|| {
            Error::invalid("no replica path: call ChatVaultBuilder::replica_path")
        })?;
        let unlock = self.unlock.ok_or_else(|| {
            Error::invalid("no key: call ChatVaultBuilder::passphrase or ::identity")
        })?;
        let replica = blocking(move || Replica::open(path)).await?;
        // The device id is known before the backend opens: a folder in the
        // per-device layout names this device's directory after it.
        let device = match self.device {
            Some(device) => device,
            None => match replica.identity()? {
                Some((_, device)) => device,
                None => DeviceId::random(),
            },
        };
        let backend = match source {
            StorageSource::Shared(storage) => Backend::of(storage),
            #[cfg(feature = "supabase")]
            StorageSource::Url(url) if url.starts_with("supabase+") => {
                let (storage, login) = crate::supabase_session::open(
                    &url,
                    Some(&replica),
                    Some(&unlock),
                    self.supabase,
                )
                .await?;
                Backend {
                    storage,
                    known: login.as_ref().and_then(|l| l.known()),
                    login,
                }
            }
            StorageSource::Url(url) => Backend::of(open_url_as(&url, device).await?),
        };
        let storage = backend.storage;
        let (cipher, unlocked_identity) = unlock_vault(
            &storage,
            &replica,
            unlock.clone(),
            self.work_factor,
            backend.known,
        )
        .await?;
        cipher.set_padding(self.padding);
        #[cfg(feature = "supabase")]
        if let Some(login) = &backend.login {
            login.unlocked(&cipher);
        }
        let keys = Arc::new(
            VaultKeys::new(storage.clone(), cipher.clone(), unlock, replica.clone())
                .with_work_factor(self.work_factor),
        );
        let mut config = EngineConfig::new(cipher.vault(), device);
        if let Some(bytes) = self.cache_bytes {
            config.cache_bytes = bytes;
        }
        if let Some(every) = self.maintenance {
            config.maintenance_every = every;
        }
        if let Some(bytes) = self.attachment_cache_bytes {
            config.attachment_cache_bytes = bytes;
        }
        if let Some(grace) = self.blob_grace {
            config.blob_grace = grace;
        }
        if let Some(format) = self.max_vault_format {
            config.max_vault_format = format;
        }
        config.keyring = Some(keys.clone());
        let engine = Engine::open(storage, replica, cipher.clone(), config).await?;
        let mut vault = ChatVault::new(engine, cipher, keys);
        vault.set_unlocked_identity(unlocked_identity);
        #[cfg(feature = "supabase")]
        if let Some(login) = backend.login {
            vault.set_supabase_auth(login.auth);
        }
        if let Some(interval) = self.sync_every {
            vault.start_sync(interval)?;
        }
        Ok(vault)
    }
}
