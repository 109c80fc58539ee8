//! [`VaultError`]: chatvault's error kinds as one exception hierarchy.

use chatvault::Error;

/// Everything that can go wrong, one variant per kind of
/// [`chatvault::Error`]. `message` is the error's one-line text, the same
/// line the Rust library prints; some kinds add the fields a caller reacts
/// to. In Python each variant is an exception class (`VaultError.WrongKey`,
/// …) deriving from `VaultError`.
///
/// A storage backend written in another language raises these too; there
/// `message` is the detail only (the library adds the rest of the line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The backend could not be reached or failed transiently; the change
    /// stays queued and is retried.
    #[error("{message}")]
    Unavailable {
        /// The error's line.
        message: String,
    },
    /// The backend refused the credentials.
    #[error("{message}")]
    Unauthorized {
        /// The error's line.
        message: String,
    },
    /// A write lost a race: somebody else wrote this chat first.
    #[error("{message}")]
    Conflict {
        /// The error's line.
        message: String,
        /// The chat whose write lost.
        chat: String,
        /// The version currently stored (`None`: no record exists).
        current: Option<u64>,
    },
    /// The thing asked for does not exist.
    #[error("{message}")]
    NotFound {
        /// The error's line.
        message: String,
    },
    /// A record is larger than the backend accepts.
    #[error("{message}")]
    TooLarge {
        /// The error's line.
        message: String,
        /// Size of the rejected record in bytes.
        size: u64,
        /// The backend's limit in bytes.
        limit: u64,
    },
    /// The server refused the request (not retried).
    #[error("{message}")]
    Rejected {
        /// The error's line.
        message: String,
        /// The server's error code.
        code: String,
    },
    /// Stored data could not be decoded.
    #[error("{message}")]
    Corrupt {
        /// The error's line.
        message: String,
    },
    /// The passphrase or identity does not unlock this vault.
    #[error("{message}")]
    WrongKey {
        /// The error's line.
        message: String,
    },
    /// Ciphertext failed authentication (modified, truncated or moved).
    #[error("{message}")]
    Tampered {
        /// The error's line.
        message: String,
    },
    /// A record names a data key this vault's keyring does not hold.
    #[error("{message}")]
    UnknownKeyId {
        /// The error's line.
        message: String,
    },
    /// Data written by a newer chatvault.
    #[error("{message}")]
    UnsupportedFormat {
        /// The error's line.
        message: String,
    },
    /// Another device changed the vault's keys at the same moment.
    #[error("{message}")]
    KeyFileConflict {
        /// The error's line.
        message: String,
    },
    /// Something another device wrote has not fully arrived in this copy of
    /// a folder yet (retriable).
    #[error("{message}")]
    InTransit {
        /// The error's line.
        message: String,
    },
    /// The storage holds more than one vault.
    #[error("{message}")]
    TwoVaults {
        /// The error's line.
        message: String,
        /// The vaults' ids.
        vaults: Vec<String>,
    },
    /// The storage backend does not offer this operation.
    #[error("{message}")]
    Unsupported {
        /// The error's line.
        message: String,
    },
    /// The caller passed something invalid.
    #[error("{message}")]
    InvalidInput {
        /// The error's line.
        message: String,
    },
    /// The local replica (on this device) failed.
    #[error("{message}")]
    Local {
        /// The error's line.
        message: String,
    },
}

impl VaultError {
    /// A [`VaultError::Local`] with `message`.
    pub(crate) fn local(message: impl Into<String>) -> Self {
        VaultError::Local {
            message: message.into(),
        }
    }
}

impl From<Error> for VaultError {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Unavailable { .. } => VaultError::Unavailable { message },
            Error::Unauthorized { .. } => VaultError::Unauthorized { message },
            Error::Conflict { chat, current } => VaultError::Conflict {
                message,
                chat: chat.to_string(),
                current,
            },
            Error::NotFound { .. } => VaultError::NotFound { message },
            Error::TooLarge { size, limit } => VaultError::TooLarge {
                message,
                size: size as u64,
                limit: limit as u64,
            },
            Error::Rejected { code, .. } => VaultError::Rejected { message, code },
            Error::Corrupt { .. } => VaultError::Corrupt { message },
            Error::WrongKey { .. } => VaultError::WrongKey { message },
            Error::Tampered { .. } => VaultError::Tampered { message },
            Error::UnknownKeyId { .. } => VaultError::UnknownKeyId { message },
            Error::UnsupportedFormat { .. } => VaultError::UnsupportedFormat { message },
            Error::KeyFileConflict { .. } => VaultError::KeyFileConflict { message },
            Error::InTransit { .. } => VaultError::InTransit { message },
            Error::TwoVaults { vaults, .. } => VaultError::TwoVaults { message, vaults },
            Error::Unsupported { .. } => VaultError::Unsupported { message },
            Error::InvalidInput { .. } => VaultError::InvalidInput { message },
            Error::Local { .. } => VaultError::Local { message },
            _ => VaultError::Local { message },
        }
    }
}

/// An error a foreign storage backend raised, as the library's error:
/// `message` becomes the detail of the same kind.
impl From<VaultError> for Error {
    fn from(error: VaultError) -> Self {
        match error {
            VaultError::Unavailable { message } => Error::Unavailable {
                message,
                source: None,
            },
            VaultError::Unauthorized { message } => Error::Unauthorized { message },
            VaultError::Conflict {
                message,
                chat,
                current,
            } => match chat.parse() {
                Ok(chat) => Error::Conflict { chat, current },
                Err(_) => Error::corrupt(
                    "a storage backend's conflict error",
                    format!("chat id {chat:?} is not a chat id ({message})"),
                ),
            },
            VaultError::NotFound { message } => Error::NotFound { what: message },
            VaultError::TooLarge { size, limit, .. } => Error::TooLarge {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            },
            VaultError::Rejected { message, code } => Error::Rejected { code, message },
            VaultError::Corrupt { message } => Error::corrupt("a storage backend's data", message),
            VaultError::WrongKey { message } => Error::WrongKey { message },
            VaultError::Tampered { message } => Error::Tampered { what: message },
            VaultError::UnknownKeyId { message }
            | VaultError::UnsupportedFormat { message }
            | VaultError::KeyFileConflict { message } => {
                Error::corrupt("a storage backend's answer", message)
            }
            VaultError::InTransit { message } => Error::InTransit { what: message },
            VaultError::TwoVaults { message, vaults } => Error::TwoVaults { message, vaults },
            VaultError::Unsupported { message } => Error::Unsupported { what: message },
            VaultError::InvalidInput { message } => Error::InvalidInput { message },
            VaultError::Local { message } => Error::Local {
                message,
                source: None,
            },
        }
    }
}

/// A foreign callback that failed with something other than a
/// [`VaultError`] (a bug in the callback, e.g. a Python `KeyError`): the
/// server "refused" the request, so it is not retried forever.
impl From<uniffi::UnexpectedUniFFICallbackError> for VaultError {
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> Self {
        VaultError::Rejected {
            message: format!(
                "the foreign callback raised an unexpected error: {}",
                error.reason
            ),
            code: "callback".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatvault::ChatId;

    #[test]
    fn every_kind_keeps_its_one_line_message() {
        let errors = vec![
            Error::Unavailable {
                message: "down".into(),
                source: None,
            },
            Error::Unauthorized {
                message: "expired".into(),
            },
            Error::Conflict {
                chat: ChatId::new(),
                current: Some(3),
            },
            Error::NotFound {
                what: "chat x".into(),
            },
            Error::TooLarge { size: 10, limit: 5 },
            Error::Rejected {
                code: "400".into(),
                message: "no".into(),
            },
            Error::corrupt("record", "garbled"),
            Error::WrongKey {
                message: "no match".into(),
            },
            Error::Tampered {
                what: "blob".into(),
            },
            Error::UnknownKeyId { key_id: 7 },
            Error::UnsupportedFormat {
                what: "chat".into(),
                found: 9,
                supported: 4,
            },
            Error::KeyFileConflict { current: Some(2) },
            Error::InTransit {
                what: "a file".into(),
            },
            Error::TwoVaults {
                message: "two".into(),
                vaults: vec!["a".into(), "b".into()],
            },
            Error::Unsupported {
                what: "blobs".into(),
            },
            Error::invalid("empty passphrase"),
            Error::Local {
                message: "disk full".into(),
                source: None,
            },
        ];
        for error in errors {
            let line = error.to_string();
            let mirrored = VaultError::from(error);
            assert_eq!(mirrored.to_string(), line);
        }
    }

    #[test]
    fn kinds_map_to_their_variants() {
        let wrong = VaultError::from(Error::WrongKey {
            message: "x".into(),
        });
        assert!(matches!(wrong, VaultError::WrongKey { .. }));
        let chat = ChatId::new();
        let conflict = VaultError::from(Error::Conflict {
            chat,
            current: None,
        });
        assert_eq!(
            conflict,
            VaultError::Conflict {
                message: format!(
                    "conflict on chat {chat}: the stored version is None; fetch, merge and retry"
                ),
                chat: chat.to_string(),
                current: None,
            }
        );
    }

    #[test]
    fn a_backend_error_comes_back_as_the_same_kind() {
        let chat = ChatId::new();
        let back = Error::from(VaultError::Conflict {
            message: String::new(),
            chat: chat.to_string(),
            current: Some(4),
        });
        assert!(matches!(back, Error::Conflict { chat: c, current: Some(4) } if c == chat));
        let too_large = Error::from(VaultError::TooLarge {
            message: String::new(),
            size: 9,
            limit: 8,
        });
        assert!(matches!(too_large, Error::TooLarge { size: 9, limit: 8 }));
        let unavailable = Error::from(VaultError::Unavailable {
            message: "down".into(),
        });
        assert!(unavailable.is_retriable());
    }
}
