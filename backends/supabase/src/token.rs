//! Where the user's access token comes from.
//!
//! Supabase Auth issues short-lived access tokens (JWTs); the application
//! owns the session and refreshes it. The backend asks a [`TokenSource`] for
//! the current token before each request and, when the server rejects it as
//! expired or invalid, asks for a fresh one exactly once.

use async_trait::async_trait;
use chatvault_core::{Error, Result};
use std::fmt;

/// Supplies the signed-in user's access token (the JWT that Supabase Auth
/// issued); the application implements it over its auth session.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// The current access token.
    async fn access_token(&self) -> Result<String>;

    /// Called when the server rejected the current token (expired, revoked):
    /// refresh the session and return the new access token. Return
    /// [`Error::Unauthorized`] if the user must sign in again.
    async fn refresh(&self) -> Result<String>;
}

/// A fixed access token that cannot be refreshed: for scripts, tests and
/// service tools that mint their own short-lived tokens.
#[derive(Clone)]
pub struct StaticToken(String);

impl StaticToken {
    /// Wraps an access token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(..)")
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    async fn access_token(&self) -> Result<String> {
        Ok(self.0.clone())
    }

    async fn refresh(&self) -> Result<String> {
        Err(Error::Unauthorized {
            message: "the access token was rejected and a static token cannot be refreshed".into(),
        })
    }
}
