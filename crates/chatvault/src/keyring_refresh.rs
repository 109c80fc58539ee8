//! Re-reading the vault's key file while the vault is open, so a device
//! keeps opening records after another device rotated the data key.

use crate::builder::blocking;
use async_trait::async_trait;
use chatvault_core::engine::KeyringRefresh;
use chatvault_core::envelope::{EnvelopeCipher, Unlock};
use chatvault_core::{DynStorage, Result};
use std::sync::Arc;

/// Fetches the server's key file, opens it with the secret this session
/// unlocked with, and adds the keys it brings to the running cipher.
pub(crate) struct ServerKeyring {
    pub(crate) storage: DynStorage,
    pub(crate) unlock: Unlock,
    pub(crate) cipher: Arc<EnvelopeCipher>,
}

#[async_trait]
impl KeyringRefresh for ServerKeyring {
    async fn refresh(&self) -> Result<bool> {
        let Some(blob) = self.storage.get_keyring().await? else {
            return Ok(false);
        };
        let unlock = self.unlock.clone();
        let bytes = blob.bytes.to_vec();
        // Opening a passphrase slot runs scrypt: keep it off the runtime.
        let newer = blocking(move || EnvelopeCipher::from_key_file(&bytes, &unlock)).await?;
        self.cipher.adopt_keys(&newer)
    }
}
