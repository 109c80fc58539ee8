//! Identifiers: vaults, chats, messages and devices.
//!
//! Chat and message ids are UUIDv7: unique without coordination and roughly
//! time-ordered, so new chats sort last in listings.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The id's 16 bytes, as bound into sealed blobs.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// Builds an id from 16 raw bytes.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = crate::Error;
            fn from_str(s: &str) -> crate::Result<Self> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|e| crate::Error::invalid(format!("not a {}: {s:?}: {e}", stringify!($name))))
            }
        }
    };
}

uuid_id!(
    /// Identifies a chat. Visible to the server (records are keyed by it).
    ChatId
);
uuid_id!(
    /// Identifies a message inside a chat. Only inside ciphertext.
    MessageId
);
uuid_id!(
    /// Identifies a vault: one user's encrypted collection of chats. Bound
    /// into every sealed blob so blobs cannot be moved between vaults.
    VaultId
);

/// Identifies a device (one replica). Breaks ties between equal clock
/// readings, so every device orders concurrent edits the same way.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
#[serde(transparent)]
pub struct DeviceId(pub u64);

impl DeviceId {
    /// A random device id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
