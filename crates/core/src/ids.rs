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

/// Length of a [`BlobId`] in bytes.
pub const BLOB_ID_LEN: usize = 32;

/// Identifies an immutable, content-addressed sealed blob (an attachment
/// chunk): a keyed hash of the blob's plaintext under the vault's blob
/// secret (`docs/design.md` §10), so identical plaintexts in one vault share
/// one id while the server, which lacks the secret, cannot confirm a guessed
/// file. Visible to the server; 64 lowercase hex digits in text and in
/// serde formats. Ids order by their bytes, which is the order
/// [`Storage::list_blobs`](crate::Storage::list_blobs) pages in (and the
/// order of their hex text).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId(pub [u8; BLOB_ID_LEN]);

impl BlobId {
    /// The id's 32 bytes, as bound into the sealed blob.
    pub fn as_bytes(&self) -> &[u8; BLOB_ID_LEN] {
        &self.0
    }

    /// The id as 64 lowercase hex digits (its [`Display`](fmt::Display)).
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

impl FromStr for BlobId {
    type Err = crate::Error;

    /// Parses 64 hex digits (either case).
    ///
    /// Errors: [`Error::InvalidInput`](crate::Error::InvalidInput) naming
    /// the text for anything else.
    fn from_str(s: &str) -> crate::Result<Self> {
        let invalid = || {
            crate::Error::invalid(format!(
                "not a BlobId: {s:?}: expected {} hex digits",
                2 * BLOB_ID_LEN
            ))
        };
        let digits = s.as_bytes();
        if digits.len() != 2 * BLOB_ID_LEN {
            return Err(invalid());
        }
        let mut out = [0u8; BLOB_ID_LEN];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let high = hex_digit(pair[0]).ok_or_else(invalid)?;
            let low = hex_digit(pair[1]).ok_or_else(invalid)?;
            *byte = (high << 4) | low;
        }
        Ok(Self(out))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Serialize for BlobId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod blob_id_tests {
    use super::*;

    #[test]
    fn blob_id_hex_round_trips_and_sorts_like_its_bytes() {
        let low = BlobId([0x0a; BLOB_ID_LEN]);
        let high = BlobId([0xf0; BLOB_ID_LEN]);
        assert_eq!(low.to_hex(), "0a".repeat(BLOB_ID_LEN));
        assert_eq!(low.to_hex().parse::<BlobId>().ok(), Some(low));
        assert_eq!("F0".repeat(BLOB_ID_LEN).parse::<BlobId>().ok(), Some(high));
        assert!(low < high && low.to_hex() < high.to_hex());
        let json = serde_json::to_string(&high).expect("serialize");
        assert_eq!(json, format!("\"{}\"", high.to_hex()));
        assert_eq!(serde_json::from_str::<BlobId>(&json).ok(), Some(high));
        assert!("zz".parse::<BlobId>().is_err());
        assert!("g".repeat(2 * BLOB_ID_LEN).parse::<BlobId>().is_err());
    }
}
