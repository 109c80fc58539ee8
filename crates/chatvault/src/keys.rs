//! Key management on [`ChatVault`]: devices, passphrase, recovery key,
//! rotation. Each call is one change of the vault's key file on the server
//! (see [`VaultKeys`] for the protocol and its errors); the running vault
//! adopts it at once and the replica's copy follows.

use crate::vault::ChatVault;
use age::secrecy::SecretString;
use chatvault_core::envelope::Protection;
use chatvault_core::keys::{RecoveryKey, Removed, VaultKeys};
use chatvault_core::Result;

impl ChatVault {
    /// Key management underneath the methods below.
    pub fn keys(&self) -> &VaultKeys {
        &self.keys
    }

    /// What unlocks the vault (passphrase, devices, recovery key), as of the
    /// server's key file: re-read first when the server answers.
    pub async fn list_protections(&self) -> Result<Vec<Protection>> {
        match self.keys.refresh().await {
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
}
