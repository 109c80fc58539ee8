//! Key management on [`ChatVault`]: devices, passphrase, recovery key,
//! rotation. Each call is one change of the vault's key file on the server
//! (see [`VaultKeys`] for the protocol and its errors); the running vault
//! adopts it at once and the replica's copy follows.

use crate::vault::ChatVault;
use age::secrecy::SecretString;
use chatvault_core::engine::ResealReport;
use chatvault_core::envelope::Protection;
use chatvault_core::keys::{RecoveryKey, Removed, VaultKeys};
use chatvault_core::{Error, Result};

impl ChatVault {
    /// Key management underneath the methods below.
    pub fn keys(&self) -> &VaultKeys {
        &self.keys
    }

    /// Re-reads the server's key file and adopts what changed: new data
    /// keys, the current key (queued changes are re-sealed under it) and the
    /// list of protections; the replica's copy follows. True if anything
    /// changed. Sync does this by itself when a record needs a key this
    /// device does not hold yet.
    ///
    /// Errors: [`Error::WrongKey`](crate::Error::WrongKey) when this
    /// device's secret no longer opens the key file (it was removed, or the
    /// passphrase changed on another device);
    /// [`Error::Tampered`](crate::Error::Tampered) for a rolled-back or
    /// substituted file; network errors.
    pub async fn refresh_keys(&self) -> Result<bool> {
        self.engine().refresh_keyring().await
    }

    /// What unlocks the vault (passphrase, devices, recovery key), as of the
    /// server's key file: re-read first when the server answers.
    pub async fn list_protections(&self) -> Result<Vec<Protection>> {
        match self.refresh_keys().await {
            Ok(_) => {}
            Err(e) if e.is_retriable() => {}
            Err(e) => return Err(e),
        }
        Ok(self.keys.protections())
    }

    /// Lets the device whose age X25519 recipient is `recipient` (`age1…`)
    /// unlock the vault; `label` names it in listings. The device then opens
    /// the vault with `ChatVaultBuilder::identity`.
    ///
    /// Errors: [`Error::InvalidInput`](crate::Error::InvalidInput) for a
    /// malformed recipient or one already added;
    /// [`Error::KeyFileConflict`](crate::Error::KeyFileConflict) when
    /// another device kept changing the keys.
    pub async fn add_device(&self, recipient: &str, label: &str) -> Result<Protection> {
        self.keys.add_device(recipient, label).await
    }

    /// Removes a device, the recovery key or the passphrase (by id, label or
    /// recipient, as [`VaultKeys::remove`] matches them). Removing a device
    /// or the recovery key rotates the data key: records written from now on
    /// are unreadable with it; what it already downloaded is not taken back.
    /// The last protection is refused.
    pub async fn remove_protection(&self, which: &str) -> Result<Removed> {
        self.keys.remove(which).await
    }

    /// Sets a new passphrase; the old one stops unlocking the vault. Other
    /// devices that unlocked with the old passphrase get
    /// [`Error::WrongKey`](crate::Error::WrongKey) at their next key
    /// re-read and must be opened again with the new one.
    pub async fn change_passphrase(&self, passphrase: impl Into<String>) -> Result<()> {
        self.keys
            .change_passphrase(SecretString::from(passphrase.into()))
            .await
    }

    /// Creates a recovery key (replacing any earlier one) and returns it:
    /// shown this once. It unlocks the vault where a passphrase is asked for.
    pub async fn create_recovery_key(&self) -> Result<RecoveryKey> {
        self.keys.create_recovery_key().await
    }

    /// Rotates the data key and returns the new key id: this device seals
    /// every new write with it at once; other devices pick it up at the
    /// first record they cannot open. Old keys stay so old records open.
    pub async fn rotate_key(&self) -> Result<u32> {
        self.keys.rotate().await
    }

    /// The vault's format floor (`docs/design.md` §3.6): the vault format
    /// every device writes, 1 until [`upgrade_format`](Self::upgrade_format)
    /// raised it.
    pub fn format_floor(&self) -> u8 {
        self.cipher().format_floor()
    }

    /// Moves the vault to the newest vault format this release writes
    /// ([`VAULT_FORMAT`](chatvault_core::raw::codec::VAULT_FORMAT)): one
    /// key-file change raising the format floor. Every device writes the
    /// new format from its next key re-read (this one at once); a device
    /// on a release that does not read it refuses to open the vault with
    /// [`Error::UnsupportedFormat`](crate::Error::UnsupportedFormat) naming
    /// the vault format it needs, and one already running skips the new
    /// records (reported, retried) and never overwrites them. Upgrade
    /// every device first. Returns false if the vault already was at that
    /// format. Records written earlier keep their format and stay readable.
    pub async fn upgrade_format(&self) -> Result<bool> {
        self.keys
            .raise_format_floor(chatvault_core::raw::codec::VAULT_FORMAT)
            .await
    }

    /// Re-seals up to `batch` records (chats, and tombstones of deleted
    /// chats) still sealed under an older data key (after
    /// [`rotate_key`](Self::rotate_key) or a removal), through the normal
    /// save path, then pushes them (offline they stay queued). Each call
    /// sends an [`Event::ResealProgress`](crate::Event::ResealProgress) on
    /// [`changes`](Self::changes). Call it until
    /// [`ResealReport::remaining`] is 0: each call starts from what the
    /// replica still holds under an old key, so it resumes after a crash or
    /// restart.
    pub async fn reseal_stale(&self, batch: usize) -> Result<ResealReport> {
        let report = self
            .engine()
            .reseal_stale(self.cipher().current_key_id(), batch)
            .await?;
        if report.resealed > 0 {
            match self.engine().push().await {
                Ok(_) => {}
                Err(e) if e.is_retriable() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Retires every data key that no record references any more: syncs
    /// first (so this device knows every record on the server and has
    /// pushed its own), then retires the keys, other than the current one,
    /// that no record in the replica and no stored attachment blob is
    /// sealed under (reading every blob's header: blobs this device does
    /// not hold are fetched once). Returns the retired
    /// ids (empty: nothing to retire). A device that was away meanwhile
    /// accepts the new key file by the retired keys' tags and re-seals the
    /// changes it queued under a retired key before pushing them
    /// (`docs/design.md` §3.4 says which cases stay unsafe).
    ///
    /// Errors: [`Error::InvalidInput`] while changes are still queued on
    /// this device (they may be sealed under an old key), or while a record
    /// this device skipped may need one of the keys (the message names
    /// them); [`Error::Corrupt`] when a stored record's key id cannot be
    /// read; sync errors.
    pub async fn retire_unused_keys(&self) -> Result<Vec<u32>> {
        self.sync_now().await?;
        let pending = self.pending_changes()?;
        if pending > 0 {
            return Err(Error::invalid(format!(
                "{pending} change(s) are still queued on this device; sync before retiring keys"
            )));
        }
        let mut referenced = self.engine().referenced_key_ids().await?;
        // Attachment chunks cannot be re-sealed in place (their ids are
        // content hashes, written once), so the keys they are under stay.
        referenced.extend(self.attachment_key_ids().await?);
        let current = self.cipher().current_key_id();
        let unused: Vec<u32> = self
            .cipher()
            .key_ids()
            .into_iter()
            .filter(|id| *id != current && !referenced.contains(id))
            .collect();
        if unused.is_empty() {
            return Ok(Vec::new());
        }
        // A record this device skipped may be sealed under one of them; every
        // other device drops a retired key too, so it would be lost
        // everywhere.
        let waiting: Vec<String> = self
            .engine()
            .skipped()?
            .iter()
            .filter(|s| unused.iter().any(|id| s.may_need(*id)))
            .map(|s| {
                let keys = if s.key_ids.is_empty() {
                    "an unreadable key id".to_string()
                } else {
                    format!("key {:?}", s.key_ids)
                };
                format!(
                    "chat {} version {} ({keys}: {})",
                    s.chat, s.version, s.message
                )
            })
            .collect();
        if !waiting.is_empty() {
            return Err(Error::invalid(format!(
                "{} record(s) this device could not open may need data key(s) {unused:?}, so none \
                 was retired (it would be lost on every device): {}. Sync again once they open \
                 (after an upgrade, or once the server repairs them), then retire",
                waiting.len(),
                waiting.join("; ")
            )));
        }
        self.keys.retire(unused).await
    }
}
