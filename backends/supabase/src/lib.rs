//! chatvault backend: Supabase (PostgREST + SQL migrations with RLS).
//!
//! [`SupabaseStorage`] keeps one user's sealed records in a Supabase project.
//! It talks to PostgREST only through the RPC functions that this crate's
//! migrations create (`supabase/migrations/`, in the layout `supabase db
//! push` applies), with the project's anon key and the signed-in user's
//! access token; row-level security on `auth.uid()` scopes every row to its
//! user, and the server only ever holds ciphertext.
//!
//! - **Change feed.** Each user has a head row whose lock every writer of
//!   that user takes first, so that user's commits get sequence numbers in
//!   commit order; [`Storage::changes`](chatvault_core::Storage::changes)
//!   pages by `seq > cursor` and never skips a commit still in flight. An
//!   idle poll is one request whose answer does not grow with the number of
//!   chats.
//! - **Paging.** Supabase caps set-returning responses at its max rows
//!   (1,000); the RPCs return one JSON value and say explicitly whether more
//!   follows, so nothing is ever inferred from a row's absence.
//! - **Tokens.** A [`TokenSource`] supplies the access token; a rejected
//!   token (HTTP 401) is refreshed once and the request retried, then the
//!   call fails with [`Error::Unauthorized`](chatvault_core::Error::Unauthorized).
//! - **Errors.** PostgREST's `{code, message, details, hint}` and the HTTP
//!   status map to chatvault's typed errors: connection and 5xx failures are
//!   retriable, an over-size record is `TooLarge`, and so on.
//!
//! # Setting up a project
//!
//! Copy `supabase/migrations/*.sql` from this crate into your project's
//! `supabase/migrations/` and run `supabase db push` (or apply
//! [`MIGRATIONS`] in order with any migration tool, as the project owner).
//! They create `chatvault_*` tables and functions in `public` and revoke
//! Supabase's default grants to `anon`. The RPC functions are the only
//! write path: they are `SECURITY DEFINER` with an empty `search_path`, and
//! select every row by `auth.uid()`; `authenticated` may only read its own
//! rows of the tables (row-level security), so a token used against the
//! table endpoints can neither reset the feed nor bypass the size limits.
//! Realtime is not used: the engine polls, and an idle poll is one small
//! request.
//!
//! ```no_run
//! use chatvault_supabase::{StaticToken, SupabaseStorage};
//!
//! # fn demo() -> chatvault_core::Result<()> {
//! let storage = SupabaseStorage::builder("supabase+https://abcd.supabase.co")?
//!     .anon_key("<the project's anon key>")
//!     .token_source(StaticToken::new("<the user's access token>"))
//!     .build()?;
//! # Ok(()) }
//! ```

mod auth;
mod client;
mod error;
#[cfg(test)]
mod fuzz;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod storage;
mod token;
mod wire;

pub use auth::{
    MemorySessionStore, Session, SessionStore, SignOutScope, SupabaseAuth, SupabaseAuthBuilder,
    DEFAULT_REFRESH_MARGIN,
};
pub use client::{RequestEvent, TransferStats};
pub use storage::{SupabaseStorage, MAX_BATCH, MAX_KEYRING_BYTES, MAX_PULL, MAX_RECORD_BYTES};
pub use token::{StaticToken, TokenSource};

use chatvault_core::{ChatId, Error, Result};
use reqwest::Url;
use std::sync::Arc;
use std::time::Duration;

/// The SQL migrations, in the order they apply: `(file name, SQL)`. The same
/// files live in `supabase/migrations/` for `supabase db push`; tools that
/// apply migrations themselves (test fixtures, self-hosted setups) use these.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "20250601000000_chatvault.sql",
        include_str!("../supabase/migrations/20250601000000_chatvault.sql"),
    ),
    (
        "20261129000000_chatvault_feed_guards.sql",
        include_str!("../supabase/migrations/20261129000000_chatvault_feed_guards.sql"),
    ),
    (
        "20261129100000_chatvault_history_bound.sql",
        include_str!("../supabase/migrations/20261129100000_chatvault_history_bound.sql"),
    ),
    (
        "20261207000000_chatvault_feed_restore_stamp.sql",
        include_str!("../supabase/migrations/20261207000000_chatvault_feed_restore_stamp.sql"),
    ),
    (
        "20261208000000_chatvault_blobs.sql",
        include_str!("../supabase/migrations/20261208000000_chatvault_blobs.sql"),
    ),
    (
        "20261209000000_chatvault_blob_touch.sql",
        include_str!("../supabase/migrations/20261209000000_chatvault_blob_touch.sql"),
    ),
];

/// The chat id a key file conflict reports: key files belong to no chat.
pub const KEYRING_CHAT: ChatId = ChatId(uuid::Uuid::nil());

/// Default time one request may take, connecting included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a [`SupabaseStorage`].
pub struct SupabaseStorageBuilder {
    base: Url,
    anon_key: Option<String>,
    tokens: Option<Arc<dyn TokenSource>>,
    timeout: Duration,
    connect_timeout: Duration,
    max_record_bytes: usize,
    observer: Option<client::RequestObserver>,
}

impl std::fmt::Debug for SupabaseStorageBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupabaseStorageBuilder")
            .field("base", &self.base.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SupabaseStorage {
    /// Starts a builder for the project at `url`: `supabase+https://<project>.supabase.co`
    /// (also `supabase+http://…` for a local stack on a loopback address, or a plain
    /// `https://…`).
    pub fn builder(url: &str) -> Result<SupabaseStorageBuilder> {
        Ok(SupabaseStorageBuilder {
            base: parse_project_url(url)?,
            anon_key: None,
            tokens: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_record_bytes: MAX_RECORD_BYTES,
            observer: None,
        })
    }
}

impl SupabaseStorageBuilder {
    /// The project's anon (publishable) key, sent as the `apikey` header.
    pub fn anon_key(mut self, key: impl Into<String>) -> Self {
        self.anon_key = Some(key.into());
        self
    }

    /// Where the user's access token comes from.
    pub fn token_source(mut self, tokens: impl TokenSource + 'static) -> Self {
        self.tokens = Some(Arc::new(tokens));
        self
    }

    /// Like [`Self::token_source`], for a source the application shares.
    pub fn shared_token_source(mut self, tokens: Arc<dyn TokenSource>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Time one request may take, connecting included (default 30 s); an
    /// expired request fails as retriable `Unavailable`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time to establish a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The record size limit, for a project whose migration raised
    /// `chatvault_max_record_bytes()`; keep both equal. Records over it fail
    /// with `TooLarge` before any upload; the server enforces its own limit
    /// with the same error.
    pub fn max_record_bytes(mut self, limit: usize) -> Self {
        self.max_record_bytes = limit;
        self
    }

    /// Calls `observer` after every HTTP request with its function, status
    /// and sizes (for metrics; keep it cheap, it runs on the request path).
    pub fn on_request(mut self, observer: impl Fn(&RequestEvent) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Builds the storage.
    pub fn build(self) -> Result<SupabaseStorage> {
        let anon_key = self
            .anon_key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::invalid("a Supabase storage needs the project's anon key"))?;
        let tokens = self.tokens.ok_or_else(|| {
            Error::invalid("a Supabase storage needs a token source for the user's access token")
        })?;
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(|e| Error::invalid(format!("HTTP client: {e}")))?;
        let rest = self
            .base
            .join("rest/v1/rpc/")
            .map_err(|e| Error::invalid(format!("Supabase URL: {e}")))?;
        Ok(SupabaseStorage {
            rpc: client::RpcClient::new(
                http,
                rest,
                anon_key,
                tokens,
                self.observer,
                storage::max_response_bytes(self.max_record_bytes),
            ),
            max_record_bytes: self.max_record_bytes,
            server_limit: std::sync::atomic::AtomicUsize::new(usize::MAX),
        })
    }
}

/// `supabase+https://host[:port][/path]` → `https://host[:port][/path]/`.
fn parse_project_url(url: &str) -> Result<Url> {
    let plain = url.strip_prefix("supabase+").unwrap_or(url);
    let mut parsed = Url::parse(plain)
        .map_err(|e| Error::invalid(format!("not a Supabase URL: {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
        return Err(Error::invalid(format!(
            "not a Supabase URL: {url:?} (expected supabase+https://<project>.supabase.co)"
        )));
    }
    if parsed.scheme() == "http" && !is_loopback(&parsed) {
        return Err(Error::invalid(format!(
            "{url:?} would send the access token and the anon key in the clear: plain http is \
             only for a local project (127.0.0.0/8, ::1, localhost); use supabase+https://"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(Error::invalid(format!(
            "a Supabase URL takes no query or fragment: {url:?}"
        )));
    }
    if !parsed.path().ends_with('/') {
        let path = format!("{}/", parsed.path());
        parsed.set_path(&path);
    }
    Ok(parsed)
}

/// Whether `url`'s host is this machine: `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_urls_resolve_to_the_rpc_endpoint() {
        for (given, rpc) in [
            (
                "supabase+https://abcd.supabase.co",
                "https://abcd.supabase.co/rest/v1/rpc/chatvault_pull",
            ),
            (
                "supabase+http://127.0.0.1:54321/",
                "http://127.0.0.1:54321/rest/v1/rpc/chatvault_pull",
            ),
            (
                "https://example.org/proxy",
                "https://example.org/proxy/rest/v1/rpc/chatvault_pull",
            ),
        ] {
            let base = parse_project_url(given).unwrap();
            assert_eq!(
                base.join("rest/v1/rpc/chatvault_pull").unwrap().as_str(),
                rpc
            );
        }
    }

    #[test]
    fn plain_http_is_accepted_for_loopback_hosts_only() {
        for local in [
            "supabase+http://127.0.0.1:54321",
            "supabase+http://127.8.9.10",
            "supabase+http://[::1]:54321/",
            "supabase+http://localhost:54321",
            "http://LOCALHOST",
        ] {
            assert!(parse_project_url(local).is_ok(), "{local}");
        }
        for remote in [
            "supabase+http://abcd.supabase.co",
            "supabase+http://10.0.0.1:54321",
            "supabase+http://[2001:db8::1]/",
            "http://localhost.example.org",
            "supabase+http://128.0.0.1",
        ] {
            match parse_project_url(remote) {
                Err(Error::InvalidInput { message }) => {
                    assert!(message.contains("https"), "{remote}: {message}")
                }
                other => panic!("{remote}: expected InvalidInput, got {other:?}"),
            }
        }
    }

    #[test]
    fn urls_that_are_not_supabase_projects_are_invalid_input() {
        for bad in [
            "supabase+ftp://x",
            "s3://bucket",
            "supabase+https://",
            "https://x.co/?a=1",
            "nonsense",
        ] {
            assert!(
                matches!(parse_project_url(bad), Err(Error::InvalidInput { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn building_without_a_key_or_token_source_is_invalid_input() {
        let no_key = SupabaseStorage::builder("supabase+https://abcd.supabase.co")
            .unwrap()
            .token_source(StaticToken::new("t"))
            .build();
        assert!(matches!(no_key, Err(Error::InvalidInput { .. })));
        let no_tokens = SupabaseStorage::builder("supabase+https://abcd.supabase.co")
            .unwrap()
            .anon_key("k")
            .build();
        assert!(matches!(no_tokens, Err(Error::InvalidInput { .. })));
    }
}
