//! [`Vault`]: a chatvault vault as an object of the target language.

use crate::error::VaultError;
use crate::runtime::{parse_chat, parse_message, run};
use crate::types::{
    Alternatives, Attachment, Chat, ChatSummary, ImportReport, Message, Protection, Role,
    SearchHit, Status, SyncReport, VaultEvent,
};
use chatvault::{ChatVault, ExportTarget, ImportOptions};
use secrecy::SecretString;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How to open a vault.
#[derive(Debug, Clone, uniffi::Record)]
pub struct OpenOptions {
    /// Where the vault lives: `file:///path`, and with the matching build
    /// features `s3://bucket/prefix` or `supabase+https://project.supabase.co`.
    pub storage_url: String,
    /// This device's replica file (created if missing).
    pub replica_path: String,
    /// The passphrase, or a recovery key (`AGE-SECRET-KEY-1…`). A new
    /// vault is created protected by it.
    #[uniffi(default = None)]
    pub passphrase: Option<String>,
    /// An age X25519 identity (`AGE-SECRET-KEY-1…`: a device's, or the
    /// recovery key) instead of a passphrase.
    #[uniffi(default = None)]
    pub identity: Option<String>,
    /// scrypt work factor (`log2 N`) of a passphrase set by this open; only
    /// for tests and demos (default: about a second per unlock).
    #[uniffi(default = None)]
    pub scrypt_work_factor: Option<u8>,
    /// Start background sync at once, polling every so many milliseconds.
    #[uniffi(default = None)]
    pub poll_interval_ms: Option<u64>,
}

/// Opens (or, on an empty storage, creates) a vault.
///
/// Errors: `WrongKey` when the passphrase or identity does not unlock it;
/// `InvalidInput` for a bad URL or neither/both of passphrase and
/// identity; `Unavailable` when the storage cannot be reached and this
/// device never unlocked the vault before.
#[uniffi::export]
pub async fn open_vault(options: OpenOptions) -> Result<Arc<Vault>, VaultError> {
    run(async move {
        let builder = ChatVault::builder().storage_url(options.storage_url.clone());
        open_on(builder, options).await
    })
    .await
}

/// Finishes opening with `builder` (its storage set) and `options`.
pub(crate) async fn open_on(
    builder: chatvault::ChatVaultBuilder,
    options: OpenOptions,
) -> Result<Arc<Vault>, VaultError> {
    let builder = builder.replica_path(options.replica_path);
    let mut builder = match (options.passphrase, options.identity) {
        (Some(passphrase), None) => builder.passphrase(passphrase),
        (None, Some(identity)) => {
            let identity = identity
                .trim()
                .parse::<age::x25519::Identity>()
                .map_err(|_| VaultError::InvalidInput {
                    message: "invalid input: the identity is not an age X25519 identity \
                              (AGE-SECRET-KEY-1…)"
                        .to_owned(),
                })?;
            builder.identity(identity)
        }
        _ => {
            return Err(VaultError::InvalidInput {
                message: "invalid input: give exactly one of passphrase and identity".to_owned(),
            })
        }
    };
    if let Some(log_n) = options.scrypt_work_factor {
        builder = builder.scrypt_work_factor(log_n);
    }
    if let Some(ms) = options.poll_interval_ms {
        builder = builder.poll_interval(Duration::from_millis(ms));
    }
    let vault = builder.open().await?;
    Ok(Arc::new(Vault::new(vault)))
}

/// Receives a vault's changes (see [`Vault::subscribe`]). Implemented in
/// the target language; called on a background thread, one event at a
/// time, in order.
#[uniffi::export(with_foreign)]
pub trait ChangeListener: Send + Sync {
    /// One change.
    fn on_event(&self, event: VaultEvent);
}

/// A running subscription; [`cancel`](Self::cancel) it (or drop it) to
/// stop the events.
#[derive(Debug, uniffi::Object)]
pub struct Subscription {
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[uniffi::export]
impl Subscription {
    /// Stops delivering events.
    pub fn cancel(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// One user's chats: local-first, end-to-end encrypted, synced. Reads come
/// from memory; writes return once durable on this device and are pushed
/// by sync. Safe to share between threads.
#[derive(Debug, uniffi::Object)]
pub struct Vault {
    inner: Arc<ChatVault>,
}

impl Vault {
    fn new(vault: ChatVault) -> Self {
        Self {
            inner: Arc::new(vault),
        }
    }

    /// Runs `f` with the vault on the bindings' runtime.
    async fn with<T, F, Fut>(&self, f: F) -> Result<T, VaultError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<ChatVault>) -> Fut,
        Fut: std::future::Future<Output = Result<T, VaultError>> + Send + 'static,
    {
        run(f(self.inner.clone())).await
    }
}

#[uniffi::export]
impl Vault {
    /// The vault's id.
    pub fn vault_id(&self) -> String {
        self.inner.vault_id().to_string()
    }

    /// This device's id.
    pub fn device_id(&self) -> String {
        self.inner.device_id().to_string()
    }

    /// Live chats' summaries, most recently active first: from memory, no
    /// I/O, available offline.
    pub fn sidebar(&self) -> Vec<ChatSummary> {
        self.inner
            .sidebar()
            .iter()
            .map(|s| ChatSummary::from(&**s))
            .collect()
    }

    /// The current sync status.
    pub fn status(&self) -> Status {
        self.inner.status().into()
    }

    /// Chats with local changes the server has not confirmed yet.
    pub fn pending_changes(&self) -> Result<u64, VaultError> {
        Ok(self.inner.pending_changes()?)
    }

    /// True while background sync runs.
    pub fn is_syncing(&self) -> bool {
        self.inner.is_syncing()
    }

    /// Syncs in the background, polling every `interval_ms` milliseconds
    /// (woken early by local saves and by the backend's notifications).
    /// Replaces a sync already running.
    pub fn start_sync(&self, interval_ms: u64) -> Result<(), VaultError> {
        let _context = crate::runtime::runtime()?.enter();
        Ok(self.inner.start_sync(Duration::from_millis(interval_ms))?)
    }

    /// Calls `listener` with every change from now on (local writes, pulled
    /// changes, status changes) until the subscription is cancelled.
    pub fn subscribe(
        &self,
        listener: Arc<dyn ChangeListener>,
    ) -> Result<Arc<Subscription>, VaultError> {
        let mut changes = self.inner.changes();
        let task = crate::runtime::runtime()?.spawn(async move {
            loop {
                let event = match changes.recv().await {
                    Ok(event) => VaultEvent::from(event),
                    Err(RecvError::Lagged(missed)) => VaultEvent::Lagged { missed },
                    Err(RecvError::Closed) => break,
                };
                let listener = listener.clone();
                // The listener may block (a Python callback waits for the
                // GIL): off the async workers.
                if tokio::task::spawn_blocking(move || listener.on_event(event))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Arc::new(Subscription {
            task: Mutex::new(Some(task)),
        }))
    }
}

#[uniffi::export]
impl Vault {
    /// Brings the sidebar up to date with the server (one pull; offline is
    /// not an error) and returns it.
    pub async fn load_sidebar(&self) -> Result<Vec<ChatSummary>, VaultError> {
        self.with(|v| async move {
            let sidebar = v.load_sidebar().await?;
            Ok(sidebar.iter().map(|s| ChatSummary::from(&**s)).collect())
        })
        .await
    }

    /// Loads a chat in full. `NotFound` for an unknown or deleted chat.
    pub async fn load_chat(&self, chat: String) -> Result<Chat, VaultError> {
        self.with(|v| async move {
            let chat = v.load_full_chat(parse_chat(&chat)?).await?;
            Ok(Chat::from(&*chat))
        })
        .await
    }

    /// Creates an empty chat titled `title` and returns its id.
    pub async fn new_chat(&self, title: String) -> Result<String, VaultError> {
        self.with(|v| async move { Ok(v.new_chat(title).await?.id.to_string()) })
            .await
    }

    /// Appends a message to a chat and returns its id.
    pub async fn add_message(
        &self,
        chat: String,
        role: Role,
        content: String,
    ) -> Result<String, VaultError> {
        self.with(|v| async move {
            let id = v
                .add_message(parse_chat(&chat)?, role.into(), content)
                .await?;
            Ok(id.to_string())
        })
        .await
    }

    /// Seals the file at `path` in chunks and stages it for upload (works
    /// offline); name it in a message with
    /// [`add_message_with_attachments`](Self::add_message_with_attachments).
    pub async fn attach_file(&self, chat: String, path: String) -> Result<Attachment, VaultError> {
        self.with(|v| async move {
            Ok(Attachment::from(
                &v.attach_file(parse_chat(&chat)?, &path).await?,
            ))
        })
        .await
    }

    /// Appends a message carrying `attachments` (from
    /// [`attach_file`](Self::attach_file)) and returns its id.
    pub async fn add_message_with_attachments(
        &self,
        chat: String,
        role: Role,
        content: String,
        attachments: Vec<Attachment>,
    ) -> Result<String, VaultError> {
        self.with(|v| async move {
            let attachments = attachments
                .into_iter()
                .map(chatvault::Attachment::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            let id = v
                .add_message_with_attachments(parse_chat(&chat)?, role.into(), content, attachments)
                .await?;
            Ok(id.to_string())
        })
        .await
    }

    /// Writes an attachment's bytes to the file `path` (fetched and
    /// verified; `path` never holds a partial file) and returns its size.
    pub async fn save_attachment(
        &self,
        attachment: Attachment,
        path: String,
    ) -> Result<u64, VaultError> {
        self.with(|v| async move {
            let attachment = chatvault::Attachment::try_from(attachment)?;
            Ok(v.save_attachment(&attachment, &path).await?)
        })
        .await
    }

    /// An attachment's bytes, in memory (for small files; large ones with
    /// [`save_attachment`](Self::save_attachment)).
    pub async fn attachment_bytes(&self, attachment: Attachment) -> Result<Vec<u8>, VaultError> {
        self.with(|v| async move {
            let attachment = chatvault::Attachment::try_from(attachment)?;
            Ok(v.attachment_bytes(&attachment).await?)
        })
        .await
    }

    /// Renames a chat.
    pub async fn rename(&self, chat: String, title: String) -> Result<(), VaultError> {
        self.with(|v| async move { Ok(v.rename(parse_chat(&chat)?, title).await?) })
            .await
    }

    /// Stars or unstars a chat.
    pub async fn star(&self, chat: String, starred: bool) -> Result<(), VaultError> {
        self.with(|v| async move { Ok(v.star(parse_chat(&chat)?, starred).await?) })
            .await
    }

    /// Replaces a message's text.
    pub async fn edit_message(
        &self,
        chat: String,
        message: String,
        content: String,
    ) -> Result<(), VaultError> {
        self.with(|v| async move {
            Ok(
                v.edit_message(parse_chat(&chat)?, parse_message(&message)?, content)
                    .await?,
            )
        })
        .await
    }

    /// Appends `text` to a message: one token of a streamed reply. Costs
    /// a small journal entry, not a re-seal of the chat; durable when it
    /// returns. Call `flush_streams` when the reply is complete.
    pub async fn append_to_message(
        &self,
        chat: String,
        message: String,
        text: String,
    ) -> Result<(), VaultError> {
        self.with(|v| async move {
            Ok(
                v.append_to_message(parse_chat(&chat)?, parse_message(&message)?, text)
                    .await?,
            )
        })
        .await
    }

    /// Folds every streamed reply into a new version of its chat now,
    /// queued for the next push.
    pub async fn flush_streams(&self) -> Result<(), VaultError> {
        self.with(|v| async move { Ok(v.flush_streams().await?) })
            .await
    }

    /// Deletes a message on every device.
    pub async fn delete_message(&self, chat: String, message: String) -> Result<(), VaultError> {
        self.with(|v| async move {
            Ok(
                v.delete_message(parse_chat(&chat)?, parse_message(&message)?)
                    .await?,
            )
        })
        .await
    }

    /// Deletes a chat on every device.
    pub async fn delete_chat(&self, chat: String) -> Result<(), VaultError> {
        self.with(|v| async move { Ok(v.delete_chat(parse_chat(&chat)?).await?) })
            .await
    }

    /// Stores `content` as a new answer in place of assistant message
    /// `answer` (the old one stays as an alternative) and returns its id.
    pub async fn regenerate(
        &self,
        chat: String,
        answer: String,
        content: String,
    ) -> Result<String, VaultError> {
        self.with(|v| async move {
            let id = v
                .regenerate(parse_chat(&chat)?, parse_message(&answer)?, content)
                .await?;
            Ok(id.to_string())
        })
        .await
    }

    /// Starts a branch at an edited version of user message `question` and
    /// returns the new message's id.
    pub async fn edit_and_resend(
        &self,
        chat: String,
        question: String,
        content: String,
    ) -> Result<String, VaultError> {
        self.with(|v| async move {
            let id = v
                .edit_and_resend(parse_chat(&chat)?, parse_message(&question)?, content)
                .await?;
            Ok(id.to_string())
        })
        .await
    }

    /// The alternatives in a message's place ("2 of 3").
    pub async fn alternatives(
        &self,
        chat: String,
        message: String,
    ) -> Result<Alternatives, VaultError> {
        self.with(|v| async move {
            let found = v
                .alternatives(parse_chat(&chat)?, parse_message(&message)?)
                .await?;
            Ok(Alternatives {
                messages: found.messages.iter().map(Message::from).collect(),
                shown: found.shown.map(|n| n as u64),
                position: found.position as u64,
            })
        })
        .await
    }

    /// Shows the branch through `message`.
    pub async fn select_branch(&self, chat: String, message: String) -> Result<(), VaultError> {
        self.with(|v| async move {
            Ok(
                v.select_branch(parse_chat(&chat)?, parse_message(&message)?)
                    .await?,
            )
        })
        .await
    }

    /// Syncs once: pulls every change, then pushes every queued one.
    pub async fn sync_now(&self) -> Result<SyncReport, VaultError> {
        self.with(|v| async move { Ok(v.sync_now().await?.into()) })
            .await
    }

    /// Stops background sync (after the round in progress).
    pub async fn stop_sync(&self) -> Result<(), VaultError> {
        self.with(|v| async move {
            v.stop_sync().await;
            Ok(())
        })
        .await
    }

    /// Stops background sync and lets housekeeping a sync started finish
    /// briefly: call before the process exits.
    pub async fn close(&self) -> Result<(), VaultError> {
        self.with(|v| async move {
            v.stop_sync().await;
            v.settle_maintenance(chatvault::DEFAULT_MAINTENANCE_BUDGET)
                .await;
            Ok(())
        })
        .await
    }

    /// Finds `text` in every live chat's title and messages, ignoring case
    /// and diacritics.
    pub async fn search(&self, text: String) -> Result<Vec<SearchHit>, VaultError> {
        self.with(|v| async move {
            let results = v.search(&text).await?;
            Ok(results
                .hits
                .into_iter()
                .map(|hit| SearchHit {
                    chat: hit.chat.to_string(),
                    title: hit.title,
                    message_index: hit.message.as_ref().map(|(n, _)| *n as u64),
                    role: hit
                        .message
                        .as_ref()
                        .map(|(_, role)| role)
                        .or(hit.other_branch.as_ref().map(|(_, role)| role))
                        .map(Role::from),
                    at_ms: hit.at,
                    snippet: hit.snippet,
                })
                .collect())
        })
        .await
    }

    /// Imports an export file (ChatGPT, Claude or chatvault JSON, zipped or
    /// not); with `apply_deletions`, chats the file marks deleted are
    /// deleted here too.
    pub async fn import_file(
        &self,
        path: String,
        apply_deletions: bool,
    ) -> Result<ImportReport, VaultError> {
        self.with(|v| async move {
            let options = ImportOptions { apply_deletions };
            let (report, skipped, attached) =
                v.import_file(std::path::Path::new(&path), options).await?;
            Ok(ImportReport {
                added: report.added as u64,
                updated: report.updated as u64,
                unchanged: report.unchanged as u64,
                deletions_ignored: report.deletions_ignored as u64,
                attached_files: attached as u64,
                left_out: skipped.describe(),
            })
        })
        .await
    }

    /// Every live chat as a plain JSON document (the file `chatvault
    /// export --format json` writes). Plaintext: store it with care.
    pub async fn export_json(&self) -> Result<Vec<u8>, VaultError> {
        self.with(|v| async move { Ok(v.export_json().await?.bytes) })
            .await
    }

    /// Every live chat as a standard age file that `passphrase` decrypts
    /// (`age -d`); `work_factor` is scrypt's `log2 N` (`None`: age's).
    pub async fn export_age(
        &self,
        passphrase: String,
        work_factor: Option<u8>,
    ) -> Result<Vec<u8>, VaultError> {
        self.with(|v| async move {
            let target = ExportTarget::Passphrase {
                passphrase: SecretString::from(passphrase),
                work_factor,
            };
            Ok(v.export_age(&target).await?)
        })
        .await
    }

    /// What unlocks the vault (passphrase, devices, recovery key), as of
    /// the server's key file.
    pub async fn list_protections(&self) -> Result<Vec<Protection>, VaultError> {
        self.with(|v| async move {
            Ok(v.list_protections()
                .await?
                .iter()
                .map(Protection::from)
                .collect())
        })
        .await
    }

    /// Lets the device whose age recipient is `recipient` (`age1…`) unlock
    /// the vault, named `label`.
    pub async fn add_device(
        &self,
        recipient: String,
        label: String,
    ) -> Result<Protection, VaultError> {
        self.with(|v| async move { Ok(Protection::from(&v.add_device(&recipient, &label).await?)) })
            .await
    }

    /// Removes a device, the recovery key or the passphrase (by id, label
    /// or recipient); rotates the data key. Returns what was removed.
    pub async fn remove_protection(&self, which: String) -> Result<Protection, VaultError> {
        self.with(|v| async move {
            Ok(Protection::from(
                &v.remove_protection(&which).await?.protection,
            ))
        })
        .await
    }

    /// Sets a new passphrase; the old one stops unlocking the vault.
    pub async fn change_passphrase(&self, passphrase: String) -> Result<(), VaultError> {
        self.with(|v| async move { Ok(v.change_passphrase(passphrase).await?) })
            .await
    }

    /// Creates a recovery key (replacing any earlier one) and returns its
    /// secret (`AGE-SECRET-KEY-1…`): show it once; it opens the vault
    /// where a passphrase is asked for.
    pub async fn create_recovery_key(&self) -> Result<String, VaultError> {
        self.with(|v| async move {
            use secrecy::ExposeSecret;
            Ok(v.create_recovery_key()
                .await?
                .secret()
                .expose_secret()
                .to_owned())
        })
        .await
    }

    /// Rotates the data key and returns the new key id.
    pub async fn rotate_key(&self) -> Result<u32, VaultError> {
        self.with(|v| async move { Ok(v.rotate_key().await?) })
            .await
    }

    /// Moves the vault to the newest format this release writes (raises
    /// its format floor; upgrade every device first). False if it already
    /// was there.
    pub async fn upgrade_format(&self) -> Result<bool, VaultError> {
        self.with(|v| async move { Ok(v.upgrade_format().await?) })
            .await
    }

    /// The vault format every device writes (1 until upgraded).
    pub async fn format_floor(&self) -> Result<u8, VaultError> {
        self.with(|v| async move { Ok(v.format_floor()) }).await
    }
}
