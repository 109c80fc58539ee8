//! A Supabase Auth session that keeps itself fresh: a [`TokenSource`] for
//! apps that sign a user in once and sync for days.
//!
//! [`SupabaseAuth`] talks to the project's Auth server (GoTrue) over its
//! documented HTTP API: `POST /auth/v1/token?grant_type=password` to sign in,
//! `grant_type=refresh_token` to refresh, `POST /auth/v1/logout` to sign out.
//!
//! - **Refresh.** The access token is refreshed before it expires (a margin,
//!   default 60 s, ahead of `expires_in` as measured on this device's clock
//!   from when the token arrived, so a device clock that is off does not
//!   matter) and once more when the API rejects it (HTTP 401).
//! - **Rotation.** Each refresh returns a new refresh token that replaces
//!   the old one, which the server then treats as used. Refreshes are
//!   single-flight: concurrent requests that find the token stale wait for
//!   one refresh and share its result, so a rotated refresh token is never
//!   sent twice (the server would revoke the whole session for reuse).
//! - **Sign-in again.** A refresh token the server no longer accepts (used,
//!   revoked by sign-out elsewhere, expired) clears the session and fails
//!   with [`Error::Unauthorized`] saying to sign in again; sync stops on it.
//! - **Persistence.** The session goes to a [`SessionStore`] after every
//!   sign-in and refresh and is removed on sign-out; the default keeps it in
//!   memory only.
//!
//! ```no_run
//! use chatvault_supabase::{SupabaseAuth, SupabaseStorage};
//! use std::sync::Arc;
//!
//! # async fn demo() -> chatvault_core::Result<()> {
//! let auth = Arc::new(
//!     SupabaseAuth::builder("supabase+https://abcd.supabase.co")?
//!         .anon_key("<the project's anon key>")
//!         .build()?,
//! );
//! auth.sign_in_with_password("ada@example.org", "correct horse").await?;
//! let storage = SupabaseStorage::builder("supabase+https://abcd.supabase.co")?
//!     .anon_key("<the project's anon key>")
//!     .shared_token_source(auth.clone())
//!     .build()?;
//! # Ok(()) }
//! ```

use crate::token::TokenSource;
use async_trait::async_trait;
use chatvault_core::{Error, Result};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default time before expiry at which the access token is refreshed.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// The largest answer read from the Auth server: a token answer with the
/// user's metadata is a few kilobytes; anything larger is refused as
/// corrupt instead of being buffered.
const MAX_AUTH_RESPONSE: usize = 256 * 1024;

/// A signed-in user's session as Supabase Auth issued it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The access token (a JWT) sent to the API.
    pub access_token: String,
    /// The refresh token; single use, replaced on every refresh.
    pub refresh_token: String,
    /// When the access token expires, in seconds since the Unix epoch on
    /// this device's clock (`expires_in` added to the time it arrived).
    pub expires_at: u64,
    /// The user's id (`auth.uid()`), when the server named it.
    pub user_id: Option<uuid::Uuid>,
    /// The user's email, when the server named it.
    pub email: Option<String>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("expires_at", &self.expires_at)
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// Where the application keeps the session between runs.
///
/// `save` is called after every sign-in and refresh (the refresh token
/// rotates, so a store that misses a save holds a used token and the user
/// signs in again next run), `clear` on sign-out and when the server
/// revoked the session. Keep the session as secret as a password.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The stored session, if any.
    async fn load(&self) -> Result<Option<Session>>;
    /// Replaces the stored session.
    async fn save(&self, session: &Session) -> Result<()>;
    /// Removes the stored session.
    async fn clear(&self) -> Result<()>;
}

/// Keeps the session in memory only: the user signs in on every start.
#[derive(Default)]
pub struct MemorySessionStore(std::sync::Mutex<Option<Session>>);

impl fmt::Debug for MemorySessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemorySessionStore(..)")
    }
}

impl MemorySessionStore {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        // A panic while holding this lock cannot leave a half-written
        // session: assignments are whole.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn load(&self) -> Result<Option<Session>> {
        Ok(self.slot().clone())
    }

    async fn save(&self, session: &Session) -> Result<()> {
        *self.slot() = Some(session.clone());
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        *self.slot() = None;
        Ok(())
    }
}

/// Builds a [`SupabaseAuth`].
pub struct SupabaseAuthBuilder {
    base: Url,
    anon_key: Option<String>,
    store: Option<Arc<dyn SessionStore>>,
    refresh_margin: Duration,
    timeout: Duration,
}

impl fmt::Debug for SupabaseAuthBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupabaseAuthBuilder")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl SupabaseAuthBuilder {
    /// The project's anon (publishable) key, sent as the `apikey` header.
    pub fn anon_key(mut self, key: impl Into<String>) -> Self {
        self.anon_key = Some(key.into());
        self
    }

    /// Where the session is kept between runs (default: memory only).
    pub fn session_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// How long before expiry the access token is refreshed (default 60 s).
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// Time one Auth request may take (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the session holder, signed out until a sign-in or
    /// [`SupabaseAuth::restore`].
    pub fn build(self) -> Result<SupabaseAuth> {
        let anon_key = self
            .anon_key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::invalid("Supabase Auth needs the project's anon key"))?;
        let auth = self
            .base
            .join("auth/v1/")
            .map_err(|e| Error::invalid(format!("Supabase URL: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(crate::DEFAULT_CONNECT_TIMEOUT)
            .build()
            .map_err(|e| Error::invalid(format!("HTTP client: {e}")))?;
        Ok(SupabaseAuth {
            http,
            auth,
            anon_key,
            store: self
                .store
                .unwrap_or_else(|| Arc::new(MemorySessionStore::default())),
            refresh_margin: self.refresh_margin,
            state: tokio::sync::Mutex::new(State::default()),
            generation: AtomicU64::new(0),
        })
    }
}

#[derive(Default)]
struct State {
    session: Option<Session>,
}

/// A Supabase Auth session that refreshes itself; use it as the storage's
/// [`TokenSource`] (share it with `Arc` to sign out later).
pub struct SupabaseAuth {
    http: reqwest::Client,
    auth: Url,
    anon_key: String,
    store: Arc<dyn SessionStore>,
    refresh_margin: Duration,
    state: tokio::sync::Mutex<State>,
    /// Bumped (under the lock) by every sign-in, refresh and sign-out, so
    /// that callers who waited for a refresh in progress take its result
    /// instead of refreshing again.
    generation: AtomicU64,
}

impl fmt::Debug for SupabaseAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupabaseAuth")
            .field("auth", &self.auth.as_str())
            .finish_non_exhaustive()
    }
}

impl SupabaseAuth {
    /// Starts a builder for the project at `url`
    /// (`supabase+https://<project>.supabase.co`, as for the storage).
    pub fn builder(url: &str) -> Result<SupabaseAuthBuilder> {
        Ok(SupabaseAuthBuilder {
            base: crate::parse_project_url(url)?,
            anon_key: None,
            store: None,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            timeout: crate::DEFAULT_TIMEOUT,
        })
    }

    /// Signs in with email and password and stores the session.
    /// Wrong credentials are [`Error::Unauthorized`].
    pub async fn sign_in_with_password(&self, email: &str, password: &str) -> Result<Session> {
        // Borrowed, so that no copy of the password is left behind in a
        // JSON value (the request body itself is reqwest's).
        #[derive(Serialize)]
        struct PasswordGrant<'a> {
            email: &'a str,
            password: &'a str,
        }
        let body = PasswordGrant { email, password };
        let mut state = self.state.lock().await;
        let session = self.grant("password", &body).await?;
        self.install(&mut state, session).await
    }

    /// Starts from a refresh token the application already holds (from
    /// another client, a previous run); it is used once and replaced.
    pub async fn sign_in_with_refresh_token(&self, refresh_token: &str) -> Result<Session> {
        let mut state = self.state.lock().await;
        let session = self.refresh_grant(refresh_token).await?;
        self.install(&mut state, session).await
    }

    /// Loads the session the [`SessionStore`] holds; returns whether there
    /// was one. An expired access token is refreshed on first use.
    pub async fn restore(&self) -> Result<bool> {
        let stored = self.store.load().await?;
        let mut state = self.state.lock().await;
        let found = stored.is_some();
        state.session = stored;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(found)
    }

    /// The current session, if signed in.
    pub async fn session(&self) -> Option<Session> {
        self.state.lock().await.session.clone()
    }

    /// Signs out: revokes the session on the server (`scope` `global`
    /// ends every session of the user, `local` only this one), forgets it
    /// here and clears the store. Afterwards every request fails with
    /// [`Error::Unauthorized`], which stops sync. The session is forgotten
    /// locally even when the server cannot be reached (the error says so).
    pub async fn sign_out(&self, scope: SignOutScope) -> Result<()> {
        let mut state = self.state.lock().await;
        let session = state.session.take();
        self.generation.fetch_add(1, Ordering::AcqRel);
        let cleared = self.store.clear().await;
        if let Some(session) = session {
            let mut url = self.endpoint("logout")?;
            url.query_pairs_mut().append_pair("scope", scope.as_str());
            let response = self
                .http
                .post(url)
                .header("apikey", &self.anon_key)
                .bearer_auth(&session.access_token)
                .send()
                .await
                .map_err(|e| {
                    Error::unavailable("sign-out: the Auth server could not be reached", e)
                })?;
            let status = response.status().as_u16();
            // 401/403/404: the session was already gone on the server.
            if !(200..300).contains(&status) && !matches!(status, 401 | 403 | 404) {
                let body = crate::client::read_capped(
                    "sign-out",
                    "sign-out response",
                    response,
                    MAX_AUTH_RESPONSE,
                )
                .await?;
                return Err(auth_error("sign-out", status, &body));
            }
        }
        cleared
    }

    fn endpoint(&self, path: &str) -> Result<Url> {
        self.auth
            .join(path)
            .map_err(|e| Error::invalid(format!("Auth URL: {e}")))
    }

    async fn install(&self, state: &mut State, session: Session) -> Result<Session> {
        state.session = Some(session.clone());
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.store.save(&session).await {
            // The session works; only the next run will have to sign in.
            tracing::warn!(error = %e, "could not save the refreshed Supabase session");
        }
        Ok(session)
    }

    async fn refresh_grant(&self, refresh_token: &str) -> Result<Session> {
        self.grant(
            "refresh_token",
            &serde_json::json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    async fn grant(&self, grant_type: &str, body: &(impl Serialize + Sync)) -> Result<Session> {
        let what = if grant_type == "password" {
            "sign-in"
        } else {
            "session refresh"
        };
        let mut url = self.endpoint("token")?;
        url.query_pairs_mut().append_pair("grant_type", grant_type);
        let sent_at = SystemTime::now();
        let response = self
            .http
            .post(url)
            .header("apikey", &self.anon_key)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                Error::unavailable(format!("{what}: the Auth server could not be reached"), e)
            })?;
        let status = response.status().as_u16();
        let bytes = crate::client::read_capped(
            what,
            &format!("{what} response"),
            response,
            MAX_AUTH_RESPONSE,
        )
        .await?;
        if !(200..300).contains(&status) {
            return Err(auth_error(what, status, &bytes));
        }
        let token: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(
                format!("{what} response"),
                format!("not Supabase Auth's token JSON: {e}"),
            )
        })?;
        if token.access_token.is_empty() || token.refresh_token.is_empty() {
            return Err(Error::corrupt(
                format!("{what} response"),
                "no access or refresh token in it",
            ));
        }
        // Expiry from `expires_in` on this device's clock, counted from when
        // the request left: never later than the server meant, whatever
        // the two clocks say.
        let now = unix_secs(sent_at);
        Ok(Session {
            access_token: token.access_token,
            refresh_token: token.refresh_token,
            expires_at: now.saturating_add(token.expires_in.unwrap_or(0).max(0) as u64),
            user_id: token.user.as_ref().and_then(|u| u.id),
            email: token.user.and_then(|u| u.email),
        })
    }

    /// Refreshes with the held refresh token, unless a refresh that
    /// finished since `seen` already did (single flight). A refresh token
    /// the server refuses ends the session.
    async fn refresh_from(&self, state: &mut State, seen: u64) -> Result<String> {
        let Some(session) = state.session.clone() else {
            return Err(signed_out());
        };
        if self.generation.load(Ordering::Acquire) != seen {
            return Ok(session.access_token);
        }
        match self.refresh_grant(&session.refresh_token).await {
            Ok(fresh) => Ok(self.install(state, fresh).await?.access_token),
            Err(e @ Error::Unauthorized { .. }) => {
                state.session = None;
                self.generation.fetch_add(1, Ordering::AcqRel);
                if let Err(clear) = self.store.clear().await {
                    tracing::warn!(error = %clear, "could not clear the revoked Supabase session");
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn is_fresh(&self, session: &Session) -> bool {
        let now = unix_secs(SystemTime::now());
        session.expires_at > now.saturating_add(self.refresh_margin.as_secs())
    }
}

#[async_trait]
impl TokenSource for SupabaseAuth {
    async fn access_token(&self) -> Result<String> {
        let mut state = self.state.lock().await;
        match &state.session {
            None => Err(signed_out()),
            Some(session) if self.is_fresh(session) => Ok(session.access_token.clone()),
            Some(_) => {
                let seen = self.generation.load(Ordering::Acquire);
                self.refresh_from(&mut state, seen).await
            }
        }
    }

    async fn refresh(&self) -> Result<String> {
        // Callers rejected together read the generation before queueing on
        // the lock: the first refreshes, the rest find it bumped and take
        // that refresh's token.
        let seen = self.generation.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        self.refresh_from(&mut state, seen).await
    }
}

/// Which sessions a sign-out ends (Supabase Auth's `scope`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum SignOutScope {
    /// Every session of the user, on every device (Supabase's default).
    #[default]
    Global,
    /// Only this session.
    Local,
    /// Every session except this one.
    Others,
}

impl SignOutScope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Local => "local",
            Self::Others => "others",
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    refresh_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    user: Option<TokenUser>,
}

#[derive(Deserialize)]
struct TokenUser {
    #[serde(default)]
    id: Option<uuid::Uuid>,
    #[serde(default)]
    email: Option<String>,
}

/// Supabase Auth's error body in any of its shapes: the OAuth one
/// (`{"error":"invalid_grant","error_description":"…"}`), the current one
/// (`{"code":400,"error_code":"invalid_credentials","msg":"…"}`) and the
/// versioned API's (`{"code":"invalid_credentials","message":"…"}`).
#[derive(Debug, Default, Deserialize)]
struct AuthErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl AuthErrorBody {
    fn code(&self) -> Option<String> {
        self.error_code
            .clone()
            .or_else(|| match &self.code {
                Some(serde_json::Value::String(code)) => Some(code.clone()),
                _ => None,
            })
            .or_else(|| self.error.clone())
    }

    fn message(&self) -> Option<String> {
        self.msg
            .clone()
            .or_else(|| self.message.clone())
            .or_else(|| self.error_description.clone())
    }
}

/// Maps a failed Auth response: refused credentials or refresh tokens are
/// `Unauthorized` (sign in again), overload and server failures retriable.
fn auth_error(what: &str, status: u16, body: &[u8]) -> Error {
    let parsed: AuthErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed.code().unwrap_or_default();
    let message = parsed.message().unwrap_or_else(|| {
        String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_string()
    });
    let detail = if code.is_empty() {
        format!("HTTP {status}: {message}")
    } else {
        format!("HTTP {status} {code}: {message}")
    };
    if status == 429 || status >= 500 {
        return Error::Unavailable {
            message: format!("{what}: Supabase Auth is unavailable ({detail}); retry later"),
            source: None,
        };
    }
    if matches!(status, 400 | 401 | 403 | 404) {
        let next = if what == "sign-in" {
            "check the email and password"
        } else {
            "the session ended (signed out, revoked, or its refresh token was already used); sign in again"
        };
        return Error::Unauthorized {
            message: format!("{what} refused ({detail}): {next}"),
        };
    }
    Error::Rejected {
        code: if code.is_empty() {
            status.to_string()
        } else {
            code
        },
        message: format!("{what}: {detail}"),
    }
}

fn signed_out() -> Error {
    Error::Unauthorized {
        message: "not signed in to Supabase (signed out or the session ended): sign in again"
            .into(),
    }
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_auth_error_shape_names_its_code_and_message() {
        let shapes: [&[u8]; 3] = [
            br#"{"error":"invalid_grant","error_description":"Invalid login credentials"}"#,
            br#"{"code":400,"error_code":"invalid_credentials","msg":"Invalid login credentials"}"#,
            br#"{"code":"invalid_credentials","message":"Invalid login credentials"}"#,
        ];
        for body in shapes {
            match auth_error("sign-in", 400, body) {
                Error::Unauthorized { message } => {
                    assert!(message.contains("Invalid login credentials"), "{message}");
                    assert!(message.contains("invalid_"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn overload_and_server_failures_are_retriable() {
        for status in [429, 500, 503] {
            assert!(auth_error("session refresh", status, b"<html>").is_retriable());
        }
        assert!(matches!(
            auth_error("session refresh", 400, br#"{"code":400,"error_code":"refresh_token_already_used","msg":"Invalid Refresh Token: Already Used"}"#),
            Error::Unauthorized { message } if message.contains("sign in again")
        ));
    }
}
