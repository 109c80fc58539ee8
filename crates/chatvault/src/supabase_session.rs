//! Signing in to Supabase for a vault opened from a `supabase+https://` URL,
//! and keeping the session in the vault's replica, sealed.
//!
//! [`ChatVaultBuilder::open`](crate::ChatVaultBuilder::open) picks the
//! access, in order:
//!
//! 1. credentials given to
//!    [`ChatVaultBuilder::supabase_sign_in`](crate::ChatVaultBuilder::supabase_sign_in):
//!    a new sign-in, replacing any stored session;
//! 2. `SUPABASE_ACCESS_TOKEN`: a static token (it expires; for scripts);
//! 3. the stored session (from the session store, by default this replica);
//! 4. `CHATVAULT_SUPABASE_EMAIL` and `CHATVAULT_SUPABASE_PASSWORD`: a sign-in.
//!
//! The session then refreshes itself ([`SupabaseAuth`]) and every refresh is
//! saved. The default store is the replica: the session (JSON) is sealed
//! with the vault's cipher, like every record, under a reserved chat id, so
//! the replica file never holds it in the clear. Opening a vault with a
//! stored session therefore needs the vault key first: it comes from the
//! replica's copy of the key file (the secret unlocks it once; the server's
//! key file is not opened a second time when it is the same file).

use async_trait::async_trait;
use chatvault_core::cipher::{Aad, Cipher};
use chatvault_core::envelope::{EnvelopeCipher, Unlock};
use chatvault_core::keys::{open_key_file_with_identity, Opened};
use chatvault_core::{ChatId, DynStorage, Error, Part, Replica, Result};
use chatvault_supabase::{Session, SessionStore, SupabaseAuth, SupabaseStorage};
use std::sync::{Arc, Mutex, MutexGuard};

/// The environment variable holding the email to sign in with.
pub const EMAIL_VAR: &str = "CHATVAULT_SUPABASE_EMAIL";
/// The environment variable holding the password to sign in with.
pub const PASSWORD_VAR: &str = "CHATVAULT_SUPABASE_PASSWORD";

/// Where the sealed session lives in the replica
/// ([`Replica::sealed_value`]).
const SESSION_NAME: &str = "supabase-session";

/// The blob's binding: the vault (from the cipher), this reserved chat id (16
/// ASCII bytes; not a UUIDv7, so no chat has it), the full part and version
/// 0. A record blob cannot pass for the session, nor the reverse.
fn session_aad(cipher: &EnvelopeCipher) -> Aad {
    Aad {
        vault: cipher.vault(),
        chat: ChatId::from_bytes(*b"supabase-session"),
        part: Part::Body,
        version: 0,
    }
}

/// Email and password for a Supabase sign-in; wiped from memory when
/// dropped (every clone too).
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub(crate) struct Credentials {
    pub(crate) email: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// The builder's Supabase settings.
#[derive(Default)]
pub(crate) struct SupabaseOptions {
    pub(crate) sign_in: Option<Credentials>,
    pub(crate) store: Option<Arc<dyn SessionStore>>,
}

/// A vault's Supabase sign-in while it opens: the session, the replica
/// store (if it is the one in use) and the cipher already opened from the
/// replica's key file copy.
pub(crate) struct Login {
    pub(crate) auth: Arc<SupabaseAuth>,
    store: Option<Arc<ReplicaSessionStore>>,
    /// The replica's key file copy, the cipher it opened to and the
    /// identity that opened it.
    known: Option<(Vec<u8>, Opened)>,
}

impl Login {
    /// The key file opened to read the stored session, and its cipher.
    pub(crate) fn known(&self) -> Option<(Vec<u8>, Opened)> {
        self.known.clone()
    }

    /// The vault is unlocked: a session signed in before could not be
    /// sealed yet; now it is.
    pub(crate) fn unlocked(&self, cipher: &Arc<EnvelopeCipher>) {
        if let Some(store) = &self.store {
            store.set_cipher(cipher.clone());
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn anon_key(url: &str) -> Result<String> {
    env("SUPABASE_ANON_KEY").ok_or_else(|| {
        Error::invalid(format!(
            "{url:?}: set the environment variable SUPABASE_ANON_KEY (the project's anon key)"
        ))
    })
}

/// The storage for a `supabase+https://` URL, signed in as the module docs
/// describe; `replica` and `unlock` serve the stored session. `None` as
/// login: a static token.
pub(crate) async fn open(
    url: &str,
    replica: Option<&Replica>,
    unlock: Option<&Unlock>,
    options: SupabaseOptions,
) -> Result<(DynStorage, Option<Login>)> {
    let anon_key = anon_key(url)?;
    let builder = SupabaseStorage::builder(url)?.anon_key(anon_key.clone());
    if options.sign_in.is_none() {
        if let Some(token) = env("SUPABASE_ACCESS_TOKEN") {
            let storage = builder
                .token_source(chatvault_supabase::StaticToken::new(token))
                .build()?;
            return Ok((Arc::new(storage), None));
        }
    }
    let replica_store = match (&options.store, replica) {
        (None, Some(replica)) => Some(Arc::new(ReplicaSessionStore::new(replica.clone()))),
        _ => None,
    };
    let store: Arc<dyn SessionStore> = match (&options.store, &replica_store) {
        (Some(store), _) => store.clone(),
        (None, Some(store)) => store.clone(),
        (None, None) => Arc::new(chatvault_supabase::MemorySessionStore::default()),
    };
    let auth = Arc::new(
        SupabaseAuth::builder(url)?
            .anon_key(anon_key)
            .session_store(store)
            .build()?,
    );
    let mut known = None;
    let credentials = match options.sign_in {
        Some(credentials) => Some(credentials),
        None => {
            // The replica store opens the session with the vault key, which
            // the replica's key file copy gives without the server.
            if let (Some(store), Some(replica), Some(unlock)) = (&replica_store, replica, unlock) {
                if let Some(key_file) = replica.key_file()? {
                    let (cipher, identity) =
                        open_key_file_with_identity(key_file.clone(), unlock.clone()).await?;
                    store.set_cipher(cipher.clone());
                    known = Some((key_file, (cipher, identity)));
                }
            }
            if auth.restore().await? {
                None
            } else {
                match (env(EMAIL_VAR), env(PASSWORD_VAR)) {
                    (Some(email), Some(password)) => Some(Credentials { email, password }),
                    _ => {
                        return Err(Error::Unauthorized {
                            message: format!(
                            "{url}: not signed in to Supabase: set {EMAIL_VAR} and {PASSWORD_VAR} \
                                 (or `chatvault login`), or SUPABASE_ACCESS_TOKEN"
                        ),
                        })
                    }
                }
            }
        }
    };
    if let Some(credentials) = credentials {
        auth.sign_in_with_password(&credentials.email, &credentials.password)
            .await?;
    }
    let storage = builder.shared_token_source(auth.clone()).build()?;
    Ok((
        Arc::new(storage),
        Some(Login {
            auth,
            store: replica_store,
            known,
        }),
    ))
}

/// Keeps the session in the vault's replica, sealed with the vault's
/// cipher. While the vault opens, the cipher may not be known yet: the
/// latest change then waits in memory and is written as soon as it is.
pub(crate) struct ReplicaSessionStore {
    replica: Replica,
    inner: Mutex<StoreState>,
}

enum Change {
    Save(Box<Session>),
    Clear,
}

struct StoreState {
    cipher: Option<Arc<EnvelopeCipher>>,
    unsaved: Option<Change>,
}

impl StoreState {
    /// Writes the unsaved change to `replica` if it can be written now.
    /// Redb writes are small and rare here (a sign-in, an hourly refresh):
    /// they run inline, under the lock, so two saves never race.
    fn flush(&mut self, replica: &Replica) {
        let sealed = match &self.unsaved {
            None => return,
            Some(Change::Clear) => None,
            Some(Change::Save(session)) => {
                let Some(cipher) = &self.cipher else {
                    return;
                };
                let sealed = serde_json::to_vec(session)
                    .map_err(|e| Error::invalid(format!("cannot encode the session: {e}")))
                    .and_then(|json| cipher.seal(&session_aad(cipher), &json));
                match sealed {
                    Ok(sealed) => Some(sealed),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not seal the Supabase session; it is not saved");
                        self.unsaved = None;
                        return;
                    }
                }
            }
        };
        if let Err(e) = replica.set_sealed_value(SESSION_NAME, sealed.as_deref()) {
            tracing::warn!(error = %e, "could not write the Supabase session to the replica");
        }
        self.unsaved = None;
    }
}

impl ReplicaSessionStore {
    fn new(replica: Replica) -> Self {
        Self {
            replica,
            inner: Mutex::new(StoreState {
                cipher: None,
                unsaved: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StoreState> {
        // Every update of the state is a whole assignment.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_cipher(&self, cipher: Arc<EnvelopeCipher>) {
        let mut inner = self.lock();
        inner.cipher = Some(cipher);
        inner.flush(&self.replica);
    }

    /// Records `change` and writes it when it can be.
    fn record(&self, change: Change) {
        let mut inner = self.lock();
        inner.unsaved = Some(change);
        inner.flush(&self.replica);
    }
}

#[async_trait]
impl SessionStore for ReplicaSessionStore {
    async fn load(&self) -> Result<Option<Session>> {
        let inner = self.lock();
        match &inner.unsaved {
            Some(Change::Save(session)) => return Ok(Some((**session).clone())),
            Some(Change::Clear) => return Ok(None),
            None => {}
        }
        let Some(cipher) = &inner.cipher else {
            return Ok(None);
        };
        let Some(sealed) = self.replica.sealed_value(SESSION_NAME)? else {
            return Ok(None);
        };
        // A session sealed under a retired key, or damaged, is no session:
        // the user signs in again.
        match cipher.open(&session_aad(cipher), &sealed).and_then(|json| {
            serde_json::from_slice(&json).map_err(|e| {
                Error::corrupt("stored Supabase session", format!("not a session: {e}"))
            })
        }) {
            Ok(session) => Ok(Some(session)),
            Err(e) => {
                tracing::warn!(error = %e, "the stored Supabase session does not open; sign in again");
                Ok(None)
            }
        }
    }

    async fn save(&self, session: &Session) -> Result<()> {
        self.record(Change::Save(Box::new(session.clone())));
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        self.record(Change::Clear);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Credentials;

    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}

    #[test]
    fn sign_in_credentials_are_wiped_from_memory_when_dropped() {
        wiped_on_drop::<Credentials>();
    }
}
