//! The one error type of chatvault.
//!
//! Every variant says what happened and what the caller can do about it.
//! [`Error::is_retriable`] tells the sync engine which failures keep a change
//! queued in the outbox (network trouble) and which need a person or a code
//! change (a wrong key, a record the server refuses).

use crate::ids::ChatId;

/// A boxed source error from a backend library (object_store, reqwest, redb…).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with chatvault's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in chatvault, typed so callers can react.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend could not be reached or answered with a transient failure
    /// (connection refused, timeout, HTTP 5xx, 429). Retriable: the sync
    /// engine keeps the change in the outbox and retries with backoff.
    #[error("backend unavailable: {message}; the change stays queued and is retried with backoff")]
    Unavailable {
        /// What failed, in words.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The backend refused the credentials (expired or revoked token, missing
    /// key, row-level security). Sign in again or refresh the token.
    #[error("not authorized: {message}; sign in again or refresh the access token")]
    Unauthorized {
        /// The backend's explanation.
        message: String,
    },

    /// A put's precondition did not hold: somebody else wrote this chat first.
    /// Fetch the current record, merge, re-seal and retry.
    #[error("conflict on chat {chat}: the stored version is {current:?}; fetch, merge and retry")]
    Conflict {
        /// The chat whose write lost.
        chat: ChatId,
        /// The version currently stored (`None`: no record exists).
        current: Option<u64>,
    },

    /// The thing asked for does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },

    /// A record is larger than the backend accepts.
    #[error("record too large: {size} bytes exceeds the limit of {limit} bytes; split the chat or use a backend with a larger limit")]
    TooLarge {
        /// Size of the rejected record in bytes.
        size: usize,
        /// The backend's limit in bytes.
        limit: usize,
    },

    /// The server understood the request and refused it (a constraint, a bad
    /// argument, an unexpected status). Not retried.
    #[error("server rejected the request ({code}): {message}")]
    Rejected {
        /// The server's error code (SQLSTATE, HTTP status, S3 code…).
        code: String,
        /// The server's message.
        message: String,
    },

    /// Stored data could not be decoded: truncated, garbled, malformed JSON,
    /// or a record that is not what its name claims. The record is skipped
    /// and reported; other records still sync.
    #[error("corrupt data in {what}: {reason}")]
    Corrupt {
        /// Which object or record.
        what: String,
        /// Why it could not be decoded.
        reason: String,
    },

    /// The passphrase or identity does not unlock this vault's key file.
    #[error("wrong key: {message}; check the passphrase or identity for this vault")]
    WrongKey {
        /// Details from the key envelope.
        message: String,
    },

    /// A sealed blob failed authentication: it was modified, truncated, or
    /// moved to another vault, chat, part or version by the server.
    #[error("ciphertext of {what} failed authentication: it was tampered with, truncated or moved by the server")]
    Tampered {
        /// Which blob (chat id and part).
        what: String,
    },

    /// A blob names a data key the keyring does not hold. Unlock with a
    /// keyring that contains it (it may have been rotated away too early).
    #[error("unknown data key id {key_id}; the keyring of this vault does not contain it")]
    UnknownKeyId {
        /// The key id found in the blob header.
        key_id: u32,
    },

    /// Data written by a newer chatvault. Upgrade the library to read it.
    #[error("unsupported {what} format version {found} (this build reads up to {supported}); upgrade chatvault")]
    UnsupportedFormat {
        /// Which encoding (sealed blob, chat, keyring, log entry…).
        what: String,
        /// The version found in the data.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },

    /// Another device changed the vault's keys (its key file) at the same
    /// moment, twice in a row: this key change was not made. Run it again;
    /// it starts from the other device's key file.
    #[error("another device changed the vault's keys at the same time (the key file is now at version {current:?}); nothing was changed here, run the key command again")]
    KeyFileConflict {
        /// The key file's version on the server when this change gave up.
        current: Option<u64>,
    },

    /// Something another device wrote has not fully arrived in this copy of
    /// a folder yet: a file-sync service is still copying it (or its copy
    /// was torn and will be copied again). Retriable: nothing was changed,
    /// and trying again once the file is whole succeeds.
    #[error("{what} has not fully arrived in this copy of the folder yet (a file-sync service may still be copying it); nothing was changed: try again shortly")]
    InTransit {
        /// What is missing or incomplete, and how.
        what: String,
    },

    /// The storage holds more than one vault and nothing says which this
    /// device belongs to: a folder where a second device created a vault
    /// before its copy had synced, or a mistyped path that met another
    /// vault. `message` names each vault (when it was created, its chats
    /// and devices) and how to keep one.
    #[error("{message}")]
    TwoVaults {
        /// What the storage holds and what to do.
        message: String,
        /// The vaults' ids as the storage names them.
        vaults: Vec<String>,
    },

    /// The storage backend does not offer this operation (a custom backend
    /// without blob storage: [`Capabilities::blobs`](crate::Capabilities::blobs)
    /// is false). Records still work; for attachments use a backend that
    /// stores blobs (folder, S3, Supabase) or implement the blob methods of
    /// [`Storage`](crate::Storage).
    #[error("this storage backend does not support {what}; records still sync, but attachments need a backend whose capabilities report blobs (folder, S3, Supabase) or an implementation of the Storage blob methods")]
    Unsupported {
        /// The operation that is missing.
        what: String,
    },

    /// The caller passed something invalid (an empty passphrase, a bad URL).
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong with it.
        message: String,
    },

    /// The local replica (on this device) failed: disk full, permissions, a
    /// corrupted or newer replica file. Nothing was half-written.
    #[error("local replica error: {message}")]
    Local {
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// True when retrying the same request later may succeed (network
    /// trouble, a server that is down or overloaded).
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::InTransit { .. })
    }

    /// Shorthand for [`Error::Unavailable`] with a source.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(what: impl Into<String>) -> Self {
        Error::Unsupported { what: what.into() }
    }

    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput {
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Local`] with a source.
    pub fn local(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Local {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// [`Error::Local`] without a source.
    #[cfg(feature = "engine")]
    pub(crate) fn local_message(message: String) -> Self {
        Error::Local {
            message,
            source: None,
        }
    }
}
