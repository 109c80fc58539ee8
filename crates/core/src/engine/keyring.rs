//! The engine's side of the vault's keyring: where new keys come from
//! ([`KeyringSource`], given in [`EngineConfig::keyring`](super::EngineConfig::keyring))
//! and what the engine does when they change.
//!
//! A re-read returns what changed; the engine then re-seals its own
//! outbox under the new current key and only after that replaces the
//! replica's copy of the key file (what a restart unlocks with), so a crash
//! in between never leaves a queued change under a key the copy dropped.
//! Nothing here calls back into the key management.

use super::{blocking, Engine, Inner};
use crate::envelope::KeyTrust;
use crate::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A key file re-read that brought new keys: the running cipher already
/// holds them; the replica's copy follows once the engine re-staged its
/// outbox.
#[derive(Clone, Debug)]
pub struct KeyringUpdate {
    /// The data key id new records are sealed under from now on.
    pub current_key_id: u32,
    /// The key file as the server holds it, for the replica's copy.
    pub key_file: Vec<u8>,
    /// What this device trusts of it from now on.
    pub trust: KeyTrust,
}

/// Re-reads the vault's key file when a pulled record names a data key id
/// this device does not hold (another device rotated the keys), or after
/// the network was away. The engine asks at most once per round, then
/// retries the records it had to skip.
#[async_trait::async_trait]
pub trait KeyringSource: Send + Sync + std::fmt::Debug {
    /// Loads any new keys into the running cipher and returns the key file
    /// they came from; `None` when nothing changed.
    async fn reread(&self) -> Result<Option<KeyringUpdate>>;

    /// The data key id new records are sealed under, if the cipher has key
    /// ids (the envelope cipher does). When known, a push re-seals queued
    /// changes sealed under another key before sending them, and refuses
    /// to send one this device cannot open (see `docs/design.md` §3).
    fn current_key_id(&self) -> Option<u32> {
        None
    }
}

/// The engine's keyring state: the source, and whether the next push
/// re-reads it first.
pub(super) struct Keyring {
    source: Option<Arc<dyn KeyringSource>>,
    /// Set when a round fails for the network: the next push that has
    /// changes to send re-reads the keyring first, since keys may have
    /// been rotated and retired while this device was away.
    recheck: AtomicBool,
}

impl Keyring {
    pub(super) fn new(source: Option<Arc<dyn KeyringSource>>) -> Self {
        Self {
            source,
            recheck: AtomicBool::new(false),
        }
    }

    /// The data key id new records are sealed under, if known.
    pub(super) fn current_key_id(&self) -> Option<u32> {
        self.source.as_ref().and_then(|s| s.current_key_id())
    }

    /// The network was away: re-read before the next push.
    pub(super) fn recheck_later(&self) {
        self.recheck.store(true, Ordering::Release);
    }
}

impl Engine {
    /// Re-reads the vault's key file and adopts what changed: the running
    /// cipher takes the new keys, queued changes are re-sealed under the new
    /// current key, and the replica's copy of the key file follows. True if
    /// anything changed; false also for an engine opened without a
    /// [`KeyringSource`].
    ///
    /// Errors: those of the source ([`Error::WrongKey`](crate::Error::WrongKey)
    /// when this device was removed or the passphrase changed elsewhere,
    /// [`Error::Tampered`](crate::Error::Tampered) for a rolled-back or
    /// substituted file, network errors) and replica failures.
    pub async fn refresh_keyring(&self) -> Result<bool> {
        let Some(source) = &self.inner.keyring.source else {
            return Ok(false);
        };
        let Some(update) = source.reread().await? else {
            return Ok(false);
        };
        self.restage_outbox(update.current_key_id).await?;
        blocking(&self.inner, move |inner| {
            inner
                .local
                .replica
                .set_key_file(&update.key_file, &update.trust)
        })
        .await?;
        Ok(true)
    }
}

/// Re-reads the keyring for a record under an unknown key id.
pub(super) async fn reread_for_unknown_key(inner: &Arc<Inner>) -> Result<bool> {
    if inner.keyring.source.is_none() {
        return Ok(false);
    }
    let found = Engine {
        inner: inner.clone(),
    }
    .refresh_keyring()
    .await?;
    tracing::info!(
        found,
        "re-read the vault's keyring for a record under an unknown key id"
    );
    Ok(found)
}

/// Back from the network being away with changes to push: re-read the
/// keyring first (keys may have been rotated and retired meanwhile, and the
/// changes must be sealed under a key the other devices still hold).
pub(super) async fn recheck_before_push(inner: &Arc<Inner>) -> Result<()> {
    if !inner.keyring.recheck.swap(false, Ordering::AcqRel) {
        return Ok(());
    }
    match reread_for_unknown_key(inner).await {
        Ok(_) => Ok(()),
        // Still away: the push finds out itself; re-read next time.
        Err(e) => {
            inner.keyring.recheck_later();
            if e.is_retriable() {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}
