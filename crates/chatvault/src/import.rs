//! [`ChatVault::import_chats`]: bringing many whole chats in at once (an
//! import from another app or from an export), without duplicates.

use crate::ChatVault;
use chatvault_core::{Chat, Result};

/// How many chats one save batch holds.
pub const IMPORT_BATCH: usize = 256;

/// What [`ChatVault::import_chats`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Chats this vault did not hold.
    pub added: usize,
    /// Chats it held, into which the import merged something new.
    pub updated: usize,
    /// Chats it already held exactly as imported (a re-import), or had
    /// deleted: nothing was written for them.
    pub unchanged: usize,
}

impl ChatVault {
    /// Merges `chats` into the vault in batches of [`IMPORT_BATCH`], calling
    /// `progress` with the number of chats handled after each batch. A chat
    /// whose id the vault already holds is merged (so importing the same
    /// chats twice writes nothing the second time); a chat the vault
    /// deleted stays deleted. Changes are queued for push like any save.
    pub async fn import_chats(
        &self,
        chats: Vec<Chat>,
        mut progress: impl FnMut(usize),
    ) -> Result<ImportReport> {
        let mut report = ImportReport::default();
        let mut to_save = Vec::with_capacity(chats.len());
        for chat in chats {
            // The replica answers whether the chat exists without a request.
            match self.engine().replica().header(chat.id)? {
                None => {
                    report.added += 1;
                    to_save.push(chat);
                }
                Some(header) if header.deleted => report.unchanged += 1,
                Some(_) => {
                    let stored = self.load_full_chat(chat.id).await?;
                    if Chat::merged(&stored, &chat) == *stored {
                        report.unchanged += 1;
                    } else {
                        report.updated += 1;
                        to_save.push(chat);
                    }
                }
            }
        }
        progress(report.unchanged);
        let mut batch = Vec::with_capacity(IMPORT_BATCH);
        let mut chats = to_save.into_iter().peekable();
        while chats.peek().is_some() {
            batch.extend(chats.by_ref().take(IMPORT_BATCH));
            let saved = batch.len();
            self.save_batch(std::mem::take(&mut batch)).await?;
            progress(saved);
        }
        Ok(report)
    }

    /// Saves one batch of chats in one replica transaction with their outbox
    /// entries: a batch lands whole or not at all, and a chat too large for
    /// the backend fails it with `Error::TooLarge` before anything changes.
    async fn save_batch(&self, chats: Vec<Chat>) -> Result<()> {
        self.engine().save_chats(chats).await.map(|_| ())
    }
}
