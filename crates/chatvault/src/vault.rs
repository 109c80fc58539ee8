//! [`ChatVault`]: what an application holds.

use chatvault_core::engine::{Engine, Event, Sidebar, SyncReport, SyncStatus, SyncWorker};
use chatvault_core::envelope::EnvelopeCipher;
use chatvault_core::{Chat, ChatId, Error, MessageId, Result, Role};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// One user's chats: local-first, end-to-end encrypted, synced.
///
/// Reads ([`sidebar`](Self::sidebar), [`chat`](Self::chat)) come from memory;
/// writes return once they are durable on this device and are pushed by
/// background sync once it runs ([`start_sync`](Self::start_sync), or
/// [`ChatVaultBuilder::poll_interval`](crate::ChatVaultBuilder::poll_interval)),
/// or by [`sync_now`](Self::sync_now). Cheap to share behind an
/// `Arc`; every method takes `&self`. See the [crate docs](crate) for an
/// example.
pub struct ChatVault {
    engine: Engine,
    cipher: Arc<EnvelopeCipher>,
    pub(crate) keys: Arc<chatvault_core::keys::VaultKeys>,
    worker: Mutex<Option<SyncWorker>>,
    /// The X25519 identity that opened the key file (see
    /// [`ChatVault::unlocked_identity`]).
    unlocked_identity: Option<age::x25519::Identity>,
    /// The Supabase session the storage signs in with, if it is one.
    #[cfg(feature = "supabase")]
    supabase: Option<Arc<chatvault_supabase::SupabaseAuth>>,
}

impl std::fmt::Debug for ChatVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatVault")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl ChatVault {
    pub(crate) fn new(
        engine: Engine,
        cipher: Arc<EnvelopeCipher>,
        keys: Arc<chatvault_core::keys::VaultKeys>,
    ) -> Self {
        // Cached blobs are checked with this vault's keys before a late
        // push puts them again.
        chatvault_core::attachments::Attachments::verify_with(&cipher, &engine.blob_dir());
        Self {
            engine,
            cipher,
            keys,
            worker: Mutex::new(None),
            unlocked_identity: None,
            #[cfg(feature = "supabase")]
            supabase: None,
        }
    }

    pub(crate) fn set_unlocked_identity(&mut self, identity: Option<age::x25519::Identity>) {
        self.unlocked_identity = identity;
    }

    /// The age X25519 identity that opened the vault's key file when it was
    /// opened: for a passphrase, the *passphrase identity* the key file's
    /// scrypt slot holds; for an identity or a recovery key, that identity.
    /// `None` when this open created the vault, or for an old (format-1)
    /// key file opened with a passphrase.
    ///
    /// [`ChatVaultBuilder::identity`](crate::ChatVaultBuilder::identity)
    /// with it reopens the vault without the passphrase's key derivation
    /// (about a second): the `chatvault` CLI keeps it in memory, in its
    /// agent, to unlock once per session. It is as secret as the passphrase
    /// and stops working when the passphrase is changed or removed; never
    /// write it to disk in the clear.
    pub fn unlocked_identity(&self) -> Option<&age::x25519::Identity> {
        self.unlocked_identity.as_ref()
    }

    #[cfg(feature = "supabase")]
    pub(crate) fn set_supabase_auth(&mut self, auth: Arc<chatvault_supabase::SupabaseAuth>) {
        self.supabase = Some(auth);
    }

    /// The Supabase session this vault syncs with (`None`: another
    /// backend, or a static token). Its access token is current; its
    /// email and user id say who is signed in.
    #[cfg(feature = "supabase")]
    pub async fn supabase_session(&self) -> Option<chatvault_supabase::Session> {
        match &self.supabase {
            Some(auth) => auth.session().await,
            None => None,
        }
    }

    /// Signs out of Supabase: stops background sync, revokes the session on
    /// the server (`scope`: this session, or every session of the user) and
    /// removes the stored one (by default from the replica). Local writes
    /// stay queued in the replica for the next sign-in. The session is
    /// forgotten here even when the server cannot be reached (the error
    /// says so). [`Error::InvalidInput`] if the vault has no Supabase
    /// session to end.
    #[cfg(feature = "supabase")]
    pub async fn sign_out(&self, scope: chatvault_supabase::SignOutScope) -> Result<()> {
        let Some(auth) = &self.supabase else {
            return Err(Error::invalid(
                "this vault has no Supabase session to sign out of (another backend, or a \
                 static SUPABASE_ACCESS_TOKEN)",
            ));
        };
        self.stop_sync().await;
        auth.sign_out(scope).await
    }

    fn worker(&self) -> MutexGuard<'_, Option<SyncWorker>> {
        // Only an Option<SyncWorker> is guarded; a panic cannot leave it
        // half-updated.
        self.worker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sync engine underneath, for what the facade does not cover.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The vault's cipher (key ids, fingerprint). Change keys through
    /// [`keys`](Self::keys) and the key methods (`add_device`,
    /// `rotate_key`, …), which also store the key file.
    pub fn cipher(&self) -> &Arc<EnvelopeCipher> {
        &self.cipher
    }

    /// The vault's id.
    pub fn vault_id(&self) -> chatvault_core::VaultId {
        self.engine.vault()
    }

    /// This device's id.
    pub fn device_id(&self) -> chatvault_core::DeviceId {
        self.engine.device()
    }

    // ----- loading ---------------------------------------------------------

    /// Brings the sidebar up to date with the server (one pull; offline is
    /// not an error, the replica's sidebar is returned) and returns it.
    pub async fn load_sidebar(&self) -> Result<Sidebar> {
        match self.engine.pull().await {
            Ok(_) => {}
            Err(e) if e.is_retriable() => {}
            Err(e) => return Err(e),
        }
        Ok(self.sidebar())
    }

    /// Live chats' summaries (title, last activity, message count, star),
    /// most recently active first. In memory, no I/O; available offline from
    /// the moment the vault is open. A shared snapshot: cheap to call as
    /// often as a UI redraws (it is rebuilt only after a chat changed).
    pub fn sidebar(&self) -> Sidebar {
        self.engine.sidebar()
    }

    /// Loads `chat` in full (memory → replica → server) and returns it.
    /// [`Error::NotFound`] for an unknown or deleted chat.
    pub async fn load_full_chat(&self, chat: ChatId) -> Result<Arc<Chat>> {
        self.engine.load_full_chat(chat).await
    }

    /// The full chat if it is loaded (see [`load_full_chat`](Self::load_full_chat)).
    pub fn chat(&self, chat: ChatId) -> Option<Arc<Chat>> {
        self.engine.chat(chat)
    }

    // ----- writing ---------------------------------------------------------

    /// Saves a whole chat state: merged with what is stored (so nothing
    /// written concurrently elsewhere is lost) and queued for push. Returns
    /// the merged state.
    pub async fn save_chat(&self, chat: Chat) -> Result<Arc<Chat>> {
        self.engine.save_chat(chat).await
    }

    /// Creates an empty chat titled `title`.
    pub async fn new_chat(&self, title: impl Into<String>) -> Result<Arc<Chat>> {
        let chat = Chat::new(ChatId::new(), title, self.engine.clock().tick());
        self.engine.save_chat(chat).await
    }

    /// Renames `chat`.
    pub async fn rename(&self, chat: ChatId, title: impl Into<String>) -> Result<()> {
        let title = title.into();
        self.engine
            .update(chat, move |c, clock| {
                c.rename(title, clock.tick());
                Ok(())
            })
            .await
    }

    /// Stars or unstars `chat`.
    pub async fn star(&self, chat: ChatId, starred: bool) -> Result<()> {
        self.engine
            .update(chat, move |c, clock| {
                c.star(starred, clock.tick());
                Ok(())
            })
            .await
    }

    /// Appends a message to `chat` and returns its id.
    pub async fn add_message(
        &self,
        chat: ChatId,
        role: Role,
        content: impl Into<String>,
    ) -> Result<MessageId> {
        let content = content.into();
        self.engine
            .update(chat, move |c, clock| {
                Ok(c.add_message(role, content, clock.tick()))
            })
            .await
    }

    /// Replaces the text of message `message` in `chat`.
    /// [`Error::NotFound`] if there is no such live message.
    pub async fn edit_message(
        &self,
        chat: ChatId,
        message: MessageId,
        content: impl Into<String>,
    ) -> Result<()> {
        let content = content.into();
        self.engine
            .update(chat, move |c, clock| {
                if c.edit_message(message, content, clock.tick()) {
                    Ok(())
                } else {
                    Err(message_not_found(chat, message))
                }
            })
            .await
    }

    /// Appends `text` to message `message` of `chat`: one token of a
    /// streamed reply (start it with an empty
    /// [`add_message`](Self::add_message)). Each call costs what the token
    /// costs: a small sealed entry in the stream journal beside the
    /// replica, not a re-seal of the whole chat, and is durable when it
    /// returns. The chat is sealed in full and queued for push once the
    /// stream is folded: by [`flush_streams`](Self::flush_streams) (call it
    /// when the reply is complete), [`sync_now`](Self::sync_now), another
    /// edit of the chat, background sync after 30 seconds, or closing the
    /// vault. [`Error::NotFound`] if there is no such chat or message.
    pub async fn append_to_message(
        &self,
        chat: ChatId,
        message: MessageId,
        text: impl Into<String>,
    ) -> Result<()> {
        self.engine.append_to_message(chat, message, text).await
    }

    /// Folds every streamed reply ([`append_to_message`](Self::append_to_message))
    /// into a new version of its chat now, queued for the next push.
    pub async fn flush_streams(&self) -> Result<()> {
        self.engine.flush_streams().await
    }

    /// Deletes message `message` from `chat` (a tombstone: it stays deleted
    /// on every device). [`Error::NotFound`] if there is no such message.
    pub async fn delete_message(&self, chat: ChatId, message: MessageId) -> Result<()> {
        self.engine
            .update(chat, move |c, clock| {
                if c.delete_message(message, clock.tick()) {
                    Ok(())
                } else {
                    Err(message_not_found(chat, message))
                }
            })
            .await
    }

    /// Deletes `chat` on every device; edits made elsewhere without having
    /// seen the deletion do not bring it back.
    pub async fn delete_chat(&self, chat: ChatId) -> Result<()> {
        self.engine.delete_chat(chat).await
    }

    // ----- sync and notifications -------------------------------------------

    /// Events: [`Event::ChatUpserted`], [`Event::ChatDeleted`],
    /// [`Event::SyncStatus`], [`Event::RecordSkipped`].
    pub fn changes(&self) -> broadcast::Receiver<Event> {
        self.engine.subscribe()
    }

    /// The current sync status.
    pub fn status(&self) -> SyncStatus {
        self.engine.status()
    }

    /// A receiver that always holds the latest sync status.
    pub fn watch_status(&self) -> watch::Receiver<SyncStatus> {
        self.engine.watch_status()
    }

    /// Chats with local changes the server has not confirmed yet.
    pub fn pending_changes(&self) -> Result<u64> {
        self.engine.pending()
    }

    /// Runs the backend's housekeeping now (compaction of the object-store
    /// change log, for instance) and waits for it; with `force` even below
    /// the backend's thresholds. Every successful sync ([`sync_now`](Self::sync_now)
    /// or background sync) starts it by itself when it is due (see
    /// [`ChatVaultBuilder::auto_maintenance`](crate::ChatVaultBuilder::auto_maintenance)).
    pub async fn maintain(&self, force: bool) -> Result<chatvault_core::MaintenanceReport> {
        self.engine.maintain(force).await
    }

    /// Gives the housekeeping a sync started at most `budget` to finish,
    /// then stops it (safely: the next sync resumes it). For a process
    /// about to exit; [`close`](Self::close) does it with
    /// [`DEFAULT_MAINTENANCE_BUDGET`](crate::DEFAULT_MAINTENANCE_BUDGET).
    pub async fn settle_maintenance(&self, budget: Duration) -> crate::SettledMaintenance {
        self.engine.settle_maintenance(budget).await
    }

    /// Syncs now: pulls every change, then pushes every queued one. Records
    /// that did not open before are tried again at once, backoff or not.
    pub async fn sync_now(&self) -> Result<SyncReport> {
        self.engine.sync_now().await
    }

    /// Syncs in the background, polling every `interval` (5 s is the usual
    /// choice), woken early by the backend's change notifications if it has
    /// them and by local saves. Replaces a sync already running. Must be
    /// called within a Tokio runtime ([`Error::InvalidInput`] otherwise).
    pub fn start_sync(&self, interval: Duration) -> Result<()> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::invalid(
                "start_sync must be called from within a Tokio runtime",
            ));
        }
        let worker = self.engine.start_polling(interval);
        *self.worker() = Some(worker);
        Ok(())
    }

    /// Stops background sync (after the round in progress). Queued changes
    /// stay queued.
    pub async fn stop_sync(&self) {
        let worker = self.worker().take();
        if let Some(worker) = worker {
            worker.stop().await;
        }
    }

    /// True while background sync runs.
    pub fn is_syncing(&self) -> bool {
        self.worker().as_ref().is_some_and(SyncWorker::is_running)
    }

    /// Stops background sync, gives housekeeping a sync started at most
    /// [`DEFAULT_MAINTENANCE_BUDGET`](crate::DEFAULT_MAINTENANCE_BUDGET) to
    /// finish ([`settle_maintenance`](Self::settle_maintenance)), and closes
    /// the vault, releasing the replica file (it can then be opened again,
    /// e.g. by a new `ChatVault`).
    pub async fn close(self) {
        self.stop_sync().await;
        self.settle_maintenance(chatvault_core::engine::DEFAULT_MAINTENANCE_BUDGET)
            .await;
    }
}

/// The error for a message `chat` does not hold (alive).
pub(crate) fn message_not_found(chat: ChatId, message: MessageId) -> Error {
    Error::NotFound {
        what: format!("message {message} in chat {chat}"),
    }
}
