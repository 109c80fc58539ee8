//! [`ChatVault::import_chats`]: merging many whole chats into a vault at
//! once (an import from another app or from an export), without duplicates.

use crate::ChatVault;
use chatvault_core::{Chat, Error, Result};

/// How many chats one save batch holds.
pub const IMPORT_BATCH: usize = 256;

/// How far ahead of this device's clock an imported time may be (other
/// devices' clock skew); anything later is refused, as it would carry
/// every device's clock (and last-writer-wins) into the future for good.
pub const IMPORT_MAX_AHEAD_MILLIS: u64 = 24 * 3600 * 1000;

/// How [`ChatVault::import_chats_with`] treats an import.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Apply the deletions the imported chats carry (deleted chats and
    /// messages). Off by default: a file from elsewhere must not delete
    /// chats of this vault by naming their ids.
    pub apply_deletions: bool,
}

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
    /// Deleted chats and messages in the import that were left out
    /// because [`ImportOptions::apply_deletions`] was off.
    pub deletions_ignored: usize,
}

impl ChatVault {
    /// Merges `chats` into the vault in batches of [`IMPORT_BATCH`], calling
    /// `progress` with the number of chats handled after each batch. A chat
    /// whose id the vault already holds is merged (so importing the same
    /// chats twice writes nothing the second time); a chat the vault
    /// deleted stays deleted. Changes are queued for push like any save.
    ///
    /// An import never deletes: deleted chats and messages in `chats` are
    /// left out and counted in [`ImportReport::deletions_ignored`] (use
    /// [`import_chats_with`](Self::import_chats_with) to apply them).
    ///
    /// Errors: [`Error::InvalidInput`] naming the chat when one carries a
    /// time more than [`IMPORT_MAX_AHEAD_MILLIS`] ahead of this device's
    /// clock; nothing is imported then.
    pub async fn import_chats(
        &self,
        chats: Vec<Chat>,
        progress: impl FnMut(usize),
    ) -> Result<ImportReport> {
        self.import_chats_with(chats, ImportOptions::default(), progress)
            .await
    }

    /// [`import_chats`](Self::import_chats) with options.
    pub async fn import_chats_with(
        &self,
        chats: Vec<Chat>,
        options: ImportOptions,
        mut progress: impl FnMut(usize),
    ) -> Result<ImportReport> {
        let limit = now_millis().saturating_add(IMPORT_MAX_AHEAD_MILLIS);
        for chat in &chats {
            check_times(chat, limit)?;
        }
        let mut report = ImportReport::default();
        let mut to_save = Vec::with_capacity(chats.len());
        for mut chat in chats {
            if !options.apply_deletions {
                if chat.is_deleted() {
                    report.deletions_ignored += 1;
                    continue;
                }
                let before = chat.messages.len();
                chat.messages.retain(|_, m| m.deleted.is_none());
                report.deletions_ignored += before - chat.messages.len();
            }
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

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Refuses a chat any of whose times (stamps of the chat, its title, star,
/// deletion and messages, and the messages' written times) is past `limit`.
fn check_times(chat: &Chat, limit: u64) -> Result<()> {
    let mut times = vec![
        chat.created.millis,
        chat.title.at.millis,
        chat.starred.at.millis,
    ];
    times.extend(chat.deleted.map(|d| d.millis));
    for message in chat.messages.values() {
        times.push(message.created.millis);
        times.push(message.body.at.millis);
        times.extend(message.deleted.map(|d| d.millis));
        times.extend(message.written);
    }
    match times.into_iter().max() {
        Some(latest) if latest > limit => Err(Error::invalid(format!(
            "chat {} carries a time {} ms after the Unix epoch, more than a day in the future of \
             this device's clock; it would move every device's clock there for good, so nothing \
             was imported (check the file's times)",
            chat.id, latest
        ))),
        _ => Ok(()),
    }
}
