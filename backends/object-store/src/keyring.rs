//! [`KeyFile`]: the vault's key file, `keyring/<version>`, one immutable object per
//! version, each claimed with create-if-absent exactly like a log slot (a
//! writer tries version N+1 only after seeing N). The newest version is the
//! key file; compaction removes older ones.
//!
//! The key file is not a chat, but [`Error::Conflict`] names one: conflicts
//! on the keyring carry the nil chat id.

use crate::entry::Precondition;
use crate::error::{is_taken, map_store_error};
use crate::objects::Objects;
use bytes::Bytes;
use chatvault_core::{ChatId, Error, KeyringBlob, PutPrecondition, Result};
use std::sync::Arc;

/// Attempts before a put under heavy contention gives up (retriable).
const MAX_ATTEMPTS: usize = 64;

/// The key file's versions under a vault's prefix.
#[derive(Debug)]
pub(crate) struct KeyFile {
    objects: Arc<Objects>,
    /// Key files larger than this are refused.
    max_bytes: usize,
}

impl KeyFile {
    /// The key file in `objects`, at most `max_bytes` long.
    pub(crate) fn new(objects: Arc<Objects>, max_bytes: usize) -> Self {
        Self { objects, max_bytes }
    }

    /// The path of `version`.
    pub(crate) fn path(&self, version: u64) -> object_store::path::Path {
        self.objects.layout().keyring(version)
    }

    /// The newest version, if any (`Storage::get_keyring`).
    pub(crate) async fn read(&self) -> Result<Option<KeyringBlob>> {
        for _ in 0..MAX_ATTEMPTS {
            let listed = self
                .objects
                .list_numbered(self.objects.layout().keyring_dir(), 0)
                .await?;
            let Some((version, meta)) = listed.into_iter().next_back() else {
                return Ok(None);
            };
            match self
                .objects
                .read_capped(&meta.location, self.max_bytes as u64)
                .await
            {
                Ok(bytes) => return Ok(Some(KeyringBlob { bytes, version })),
                // Superseded and compacted between the LIST and the GET.
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable {
            message: "the keyring kept changing while being read; retry".into(),
            source: None,
        })
    }

    /// Writes the next version if `precondition` admits it
    /// (`Storage::put_keyring`); the version written.
    pub(crate) async fn write(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        if bytes.len() > self.max_bytes {
            return Err(Error::TooLarge {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        let pre = Precondition::from(precondition);
        for _ in 0..MAX_ATTEMPTS {
            let listed = self
                .objects
                .list_numbered(self.objects.layout().keyring_dir(), 0)
                .await?;
            let current = listed.last().map(|(version, _)| *version);
            let Some(version) = current.map_or(Some(1), |v| v.checked_add(1)) else {
                return Err(Error::corrupt(
                    self.objects.layout().keyring_dir().to_string(),
                    "keyring version numbers are exhausted",
                ));
            };
            if !pre.admits(current, version) {
                return Err(Error::Conflict {
                    chat: ChatId(uuid::Uuid::nil()),
                    current,
                });
            }
            let path = self.path(version);
            match self.objects.create(&path, bytes.clone()).await {
                Ok(_) => return Ok(version),
                // `object_store` retries a create whose response was lost;
                // the retry finds the version this very write created. Two
                // writes of the same bytes at the same version are the same
                // key file, so equal bytes mean success.
                Err(e) if is_taken(&e) => {
                    if self.holds(&path, &bytes).await? {
                        return Ok(version);
                    }
                }
                Err(e) => {
                    let error = map_store_error(e, &format!("writing {path}"));
                    return match self.holds(&path, &bytes).await {
                        Ok(true) => Ok(version),
                        _ => Err(error),
                    };
                }
            }
        }
        Err(Error::Unavailable {
            message: "the keyring kept changing while being written; retry".into(),
            source: None,
        })
    }

    /// Creates `keyring/<version>` holding `bytes` if no newer version is
    /// in this log (create-if-absent; equal bytes already there count as
    /// done). Used by [`DeviceLogStorage`](crate::DeviceLogStorage), whose
    /// version numbers are chosen across every device's key files.
    ///
    /// Errors: [`Error::Conflict`] (nil chat) when this log already holds
    /// `version` with other bytes, or a newer one.
    pub(crate) async fn create_version(&self, bytes: Bytes, version: u64) -> Result<()> {
        if bytes.len() > self.max_bytes {
            return Err(Error::TooLarge {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        let conflict = |current| Error::Conflict {
            chat: ChatId(uuid::Uuid::nil()),
            current,
        };
        let listed = self
            .objects
            .list_numbered(self.objects.layout().keyring_dir(), 0)
            .await?;
        if let Some(&(newest, _)) = listed.last() {
            if newest > version {
                return Err(conflict(Some(newest)));
            }
        }
        let path = self.path(version);
        let created = self.objects.create(&path, bytes.clone()).await;
        match created {
            Ok(_) => Ok(()),
            Err(e) => {
                let taken = is_taken(&e);
                let error = map_store_error(e, &format!("writing {path}"));
                match self.holds(&path, &bytes).await {
                    Ok(true) => Ok(()),
                    Ok(false) if taken => Err(conflict(Some(version))),
                    _ => Err(error),
                }
            }
        }
    }

    /// Whether the keyring object at `path` holds exactly `bytes`.
    async fn holds(&self, path: &object_store::path::Path, bytes: &Bytes) -> Result<bool> {
        match self.objects.read_capped(path, self.max_bytes as u64).await {
            Ok(stored) => Ok(stored == *bytes),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
