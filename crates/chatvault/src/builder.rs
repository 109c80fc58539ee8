//! [`ChatVaultBuilder`]: storage, replica path and unlock → [`ChatVault`].

use crate::url::open_url;
use crate::vault::ChatVault;
use age::secrecy::SecretString;
use chatvault_core::engine::{Engine, EngineConfig};
use chatvault_core::envelope::{EnvelopeCipher, KeyProtection, KeyTrust, Padding, Unlock};
use chatvault_core::keys::{unlock_from_secret, VaultKeys};
use chatvault_core::{DeviceId, DynStorage, Error, PutPrecondition, Replica, Result, VaultId};
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
    work_factor: Option<u8>,
    maintenance: Option<Option<Duration>>,
    padding: Padding,
    #[cfg(feature = "supabase")]
    supabase: crate::supabase_session::SupabaseOptions,
}

#[cfg(feature = "supabase")]
use crate::supabase_session::Login;

/// A build without Supabase never signs in.
#[cfg(not(feature = "supabase"))]
enum Login {}

#[cfg(not(feature = "supabase"))]
impl Login {
    fn known(&self) -> Option<(Vec<u8>, Opened)> {
        match *self {}
    }
    fn unlocked(&self, _: &Arc<EnvelopeCipher>) {
        match *self {}
    }
    fn detach(&self) {
        match *self {}
    }
    fn attach(&self, _: &Engine) {
        match *self {}
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

    /// The backend, from a URL ([`open_url`]): `file:///path`,
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
    /// (or woken by the backend's push notifications, with polling as a
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

    /// How often background sync runs the backend's housekeeping (compacting
    /// the object-store change log so idle polls and new devices stay cheap
    /// however long the history); `None` switches it off. Default: every 10
    /// minutes of background sync. [`ChatVault::maintain`] runs it on demand.
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
        let replica = Arc::new(replica);
        let (storage, login): (DynStorage, Option<Login>) = match source {
            StorageSource::Shared(storage) => (storage, None),
            #[cfg(feature = "supabase")]
            StorageSource::Url(url) if url.starts_with("supabase+") => {
                crate::supabase_session::open(&url, Some(&replica), Some(&unlock), self.supabase)
                    .await?
            }
            StorageSource::Url(url) => (open_url(&url).await?, None),
        };
        let known = login.as_ref().and_then(Login::known);
        let (cipher, unlocked_identity) =
            unlock_vault(&storage, &replica, unlock.clone(), self.work_factor, known).await?;
        cipher.set_padding(self.padding);
        if let Some(login) = &login {
            login.unlocked(&cipher);
            login.detach();
        }
        let replica = Arc::try_unwrap(replica).map_err(|_| Error::Local {
            message: "the replica is still in use after unlocking".into(),
            source: None,
        })?;
        let device = match self.device {
            Some(device) => device,
            None => match replica.identity()? {
                Some((_, device)) => device,
                None => DeviceId::random(),
            },
        };
        let mut config = EngineConfig::new(cipher.vault(), device);
        if let Some(bytes) = self.cache_bytes {
            config.cache_bytes = bytes;
        }
        if let Some(every) = self.maintenance {
            config.maintenance_every = every;
        }
        let engine = Engine::open(storage.clone(), replica, cipher.clone(), config).await?;
        if let Some(login) = &login {
            login.attach(&engine);
        }
        let keys = Arc::new(
            VaultKeys::new(storage, cipher.clone(), unlock).with_work_factor(self.work_factor),
        );
        keys.keep_copy_in(&engine);
        engine.set_keyring_refresh(keys.clone());
        let mut vault = ChatVault::new(engine, cipher, keys);
        vault.set_unlocked_identity(unlocked_identity);
        #[cfg(feature = "supabase")]
        if let Some(login) = login {
            vault.set_supabase_auth(login.auth);
        }
        if let Some(interval) = self.sync_every {
            vault.start_sync(interval)?;
        }
        Ok(vault)
    }
}

/// Runs `f` on a blocking thread (scrypt, encoding, replica I/O), mapping a
/// failed task to [`Error::Local`].
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Local {
            message: format!("a background task failed: {e}"),
            source: None,
        })?
}

fn protection(unlock: &Unlock, work_factor: Option<u8>) -> KeyProtection {
    let protection = match unlock {
        Unlock::Passphrase(passphrase) => KeyProtection::for_passphrase(passphrase.clone()),
        Unlock::Identity(identity) => KeyProtection::for_recipients([identity.to_public()]),
    };
    match work_factor {
        Some(log_n) => protection.with_work_factor(log_n),
        None => protection,
    }
}

/// Decrypts a key file off the runtime (scrypt is deliberately slow).
pub(crate) async fn open_key_file(key_file: Vec<u8>, unlock: Unlock) -> Result<EnvelopeCipher> {
    blocking(move || EnvelopeCipher::from_key_file(&key_file, &unlock)).await
}

/// A cipher opened from a key file, and the X25519 identity that opened it
/// (see [`EnvelopeCipher::from_key_file_with_identity`]).
pub(crate) type Opened = (Arc<EnvelopeCipher>, Option<age::x25519::Identity>);

/// [`open_key_file`], keeping the identity that opened the key file.
pub(crate) async fn open_key_file_with_identity(
    key_file: Vec<u8>,
    unlock: Unlock,
) -> Result<Opened> {
    blocking(move || EnvelopeCipher::from_key_file_with_identity(&key_file, &unlock))
        .await
        .map(|(cipher, identity)| (Arc::new(cipher), identity))
}

/// Unlocks the vault's key file from the backend (keeping a copy in the
/// replica for offline unlock), or from that copy when the backend is
/// unreachable, or creates the vault when the backend has no key file.
///
/// `known` is a key file already opened while opening (the replica's copy,
/// to read the stored Supabase session): the same file is not opened again.
async fn unlock_vault(
    storage: &DynStorage,
    replica: &Arc<Replica>,
    unlock: Unlock,
    work_factor: Option<u8>,
    known: Option<(Vec<u8>, Opened)>,
) -> Result<Opened> {
    let open = |key_file: Vec<u8>, unlock: Unlock| {
        let known = known.clone();
        async move {
            match known {
                Some((bytes, opened)) if bytes == key_file => Ok(opened),
                _ => open_key_file_with_identity(key_file, unlock).await,
            }
        }
    };
    // Two devices creating the same vault at once: one key file wins, the
    // other device unlocks it on the second pass.
    for _ in 0..2 {
        let key_file = match storage.get_keyring().await {
            Ok(Some(blob)) => blob.bytes.to_vec(),
            Ok(None) => {
                if let Some((vault, _)) = replica.identity()? {
                    // Recreating the vault here would give this backend a
                    // key file but none of the vault's records.
                    return Err(Error::invalid(format!(
                        "the replica {} belongs to vault {vault}, but the backend holds no \
                         vault; use another replica path for this backend",
                        replica.path().display()
                    )));
                }
                let protection = protection(&unlock, work_factor);
                // Sealing the key file runs scrypt: keep it off the runtime.
                let (cipher, key_file) = blocking(move || {
                    let cipher = EnvelopeCipher::generate(VaultId::new());
                    let key_file = cipher.to_key_file(&protection)?;
                    Ok((cipher, key_file))
                })
                .await?;
                match storage
                    .put_keyring(key_file.clone().into(), PutPrecondition::Absent)
                    .await
                {
                    Ok(_) => {
                        keep_key_file(replica, &cipher, key_file).await?;
                        // The new passphrase identity is not kept: the
                        // next open finds it.
                        return Ok((Arc::new(cipher), None));
                    }
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.is_retriable() => match replica.key_file()? {
                Some(local) => {
                    tracing::info!(error = %e, "backend unreachable; unlocking with the replica's copy of the key file");
                    return open(local, unlock).await;
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let (cipher, identity) = open(key_file.clone(), unlock.clone()).await?;
        // The local copy opens with the same identity when only the keys
        // changed since: no second scrypt.
        let check_with = match &identity {
            Some(identity) => Unlock::Identity(identity.clone()),
            None => unlock.clone(),
        };
        let trusted =
            check_against_local_copy(replica, &cipher, &key_file, &check_with, &unlock).await?;
        if let Some(trusted) = trusted {
            if hold_keys_of_queued_changes(replica, &cipher, &trusted)? {
                // The replica's copy keeps the retired keys until the queued
                // changes are re-sealed (the first push does it): a crash
                // before then must not lose them.
                return Ok((cipher, identity));
            }
        }
        keep_key_file(replica, &cipher, key_file).await?;
        return Ok((cipher, identity));
    }
    Err(Error::Unavailable {
        message: "the vault's key file changed twice while unlocking; try again".into(),
        source: None,
    })
}

/// Refuses a key file from the server that rolls back, replaces or forges
/// the one this device last trusted: the replica's [`KeyTrust`] must admit
/// it (`docs/design.md` §3.3). The trust holds key ids and tags, not keys,
/// so it is checked even when the current secret no longer opens the
/// replica's copy (the passphrase was changed on another device). A
/// replica from before the trust was kept falls back to opening its copy
/// and [`EnvelopeCipher::check_successor`].
///
/// Returns the copy's keyring when the server's file differs and the copy
/// opens (its keys may still be needed for queued changes). `fast` (the
/// identity that opened the server's file) is tried first; `unlock` (the
/// secret given) only if that does not open the copy.
async fn check_against_local_copy(
    replica: &Arc<Replica>,
    cipher: &EnvelopeCipher,
    key_file: &[u8],
    fast: &Unlock,
    unlock: &Unlock,
) -> Result<Option<EnvelopeCipher>> {
    let trust = replica.key_trust()?;
    if let Some(trust) = &trust {
        trust.admits(cipher)?;
    }
    let Some(local) = replica.key_file()? else {
        return Ok(None);
    };
    if local == key_file {
        return Ok(None);
    }
    let opened = match open_key_file(local.clone(), fast.clone()).await {
        Err(Error::WrongKey { .. }) if !matches!(fast, Unlock::Passphrase(_)) => {
            open_key_file(local, unlock.clone()).await
        }
        other => other,
    };
    match opened {
        Ok(trusted) => {
            if trust.is_none() {
                trusted.check_successor(cipher)?;
            }
            Ok(Some(trusted))
        }
        Err(Error::WrongKey { .. }) => {
            if trust.is_none() {
                tracing::warn!("the replica's key file copy does not open with this secret and the replica keeps no record of what it trusted (written by an older release); the server's key file is taken as it is");
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Changes queued on this device under a data key the server's key file
/// retired since (another device rotated, re-sealed and retired while this
/// one was away): the running cipher takes those keys back from the
/// replica's copy (`trusted`), so the first push can re-seal the changes
/// under the current key. True if it did (the copy must then be kept).
fn hold_keys_of_queued_changes(
    replica: &Replica,
    cipher: &EnvelopeCipher,
    trusted: &EnvelopeCipher,
) -> Result<bool> {
    let held = cipher.key_ids();
    let mut missing: Vec<u32> = replica
        .due(None, None, usize::MAX)?
        .iter()
        .filter_map(|(_, record)| EnvelopeCipher::sealed_key_id(&record.summary).ok())
        .filter(|id| !held.contains(id))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(false);
    }
    let taken = cipher.hold_retired_from(trusted, &missing);
    if !taken.is_empty() {
        tracing::info!(keys = ?taken, "queued changes are sealed under retired data keys; they are re-sealed under the current key before they are pushed");
    }
    Ok(!taken.is_empty())
}

/// Keeps a copy of the key file in the replica, unless the replica belongs to
/// another vault (then opening fails, before anything is overwritten).
async fn keep_key_file(
    replica: &Arc<Replica>,
    cipher: &EnvelopeCipher,
    key_file: Vec<u8>,
) -> Result<()> {
    if let Some((vault, _)) = replica.identity()? {
        if vault != cipher.vault() {
            return Err(Error::invalid(format!(
                "the replica {} belongs to vault {vault}, but the backend holds vault {}; \
                 use another replica path for this backend",
                replica.path().display(),
                cipher.vault()
            )));
        }
    }
    let trust = KeyTrust::of(cipher);
    if replica.key_file()?.as_deref() == Some(key_file.as_slice())
        && replica.key_trust()?.as_ref() == Some(&trust)
    {
        return Ok(());
    }
    let replica = replica.clone();
    blocking(move || replica.set_key_file(&key_file, &trust)).await
}
