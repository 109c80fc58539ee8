//! chatvault: end-to-end encrypted chat storage that syncs every device.
//!
//! ```
//! use chatvault::{ChatVault, Role};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! // The "server": a local folder (any backend works the same way).
//! let server = format!("file://{}", dir.path().join("server").display());
//!
//! // First device: creates the vault, protected by a passphrase.
//! let laptop = ChatVault::builder()
//!     .storage_url(&server)
//!     .replica_path(dir.path().join("laptop.redb"))
//!     .passphrase("correct horse battery staple")
//!     .scrypt_work_factor(10) // fast for the example; omit in an app
//!     .open()
//!     .await?;
//! let chat = laptop.new_chat("Trip plans").await?;
//! laptop.add_message(chat.id, Role::User, "Book the train").await?;
//! laptop.sync_now().await?;
//!
//! // Second device: unlocks with the same passphrase and sees everything.
//! let phone = ChatVault::builder()
//!     .storage_url(&server)
//!     .replica_path(dir.path().join("phone.redb"))
//!     .passphrase("correct horse battery staple")
//!     .open()
//!     .await?;
//! let sidebar = phone.load_sidebar().await?;
//! assert_eq!(sidebar[0].title, "Trip plans");
//! let full = phone.load_full_chat(chat.id).await?;
//! assert_eq!(full.messages()[0].content(), "Book the train");
//! # Ok(())
//! # }
//! ```
//!
//! A [`ChatVault`] is the storage layer of a chat application:
//!
//! - **Progressive loading.** The sidebar comes from the local replica the
//!   moment the vault opens, even offline ([`ChatVault::sidebar`]); a pull
//!   brings it up to date ([`ChatVault::load_sidebar`]); a chat's messages
//!   load when it is opened ([`ChatVault::load_full_chat`]) and stay in a
//!   memory cache bounded by bytes ([`ChatVault::chat`]).
//! - **Local-first writes.** [`save_chat`](ChatVault::save_chat),
//!   [`new_chat`](ChatVault::new_chat), [`rename`](ChatVault::rename),
//!   [`star`](ChatVault::star), [`add_message`](ChatVault::add_message),
//!   [`delete_message`](ChatVault::delete_message) and
//!   [`delete_chat`](ChatVault::delete_chat) return once the change is
//!   durable on this device (a crash-safe redb file, encrypted at rest like
//!   the server copy) and queued for push. Offline is normal: the queue
//!   survives restarts.
//! - **Sync.** [`start_sync`](ChatVault::start_sync) polls (5 s is the
//!   usual interval; change notifications wake it early where the backend
//!   has them); [`sync_now`](ChatVault::sync_now) syncs once. Chats are
//!   CRDTs: edits of one chat on several devices merge without losing a
//!   message, deletions win, and every device converges.
//! - **Branches.** [`regenerate`](ChatVault::regenerate) keeps the old
//!   answer beside the new one, [`edit_and_resend`](ChatVault::edit_and_resend)
//!   starts a branch at an edited question; [`alternatives`](ChatVault::alternatives)
//!   gives "2 of 3", [`select_branch`](ChatVault::select_branch) switches.
//!   A chat's [`messages`](Chat::messages) are the branch shown; branches
//!   written on several devices merge like everything else.
//! - **Notifications.** [`changes`](ChatVault::changes) delivers
//!   [`Event`]s: a chat upserted or deleted, the [`SyncStatus`] (Offline,
//!   Syncing, Synced, Error), a record that could not be opened.
//! - **Encryption.** The server only sees ids, versions, sizes and
//!   ciphertext. One data key per vault, kept in an age-encrypted key file
//!   on the server; a new device unlocks it once with the passphrase (or an
//!   age identity). [`export_age`](ChatVault::export_age) writes a standard
//!   age file of every chat.
//!
//! # Backends
//!
//! Cargo features pick the backends compiled in: `fs` (default: a local
//! folder, also one that Syncthing or Dropbox shares), `s3` (S3 and
//! S3-compatible stores), `supabase`. At run time [`open_url`] (or
//! [`ChatVaultBuilder::storage_url`]) picks one from a URL; any other
//! [`Storage`] implementation goes in through [`ChatVaultBuilder::storage`].

mod attachments;
mod branches;
mod builder;
pub mod export;
pub mod import;
mod keys;
pub mod search;
#[cfg(feature = "supabase")]
mod supabase_session;
mod task;
mod url;
mod vault;
pub mod verify;

pub use attachments::media_type_of;
pub use branches::Alternatives;
pub use builder::ChatVaultBuilder;
pub use import::{ImportOptions, ImportReport, IMPORT_BATCH, IMPORT_MAX_AHEAD_MILLIS};
#[cfg(feature = "fs")]
pub use url::migrate_folder;
pub use url::{open_url, open_url_as};

/// Supabase sign-in: the session store trait an application may implement
/// (the default keeps the session sealed in the vault's replica) and the
/// environment variables a `supabase+https://` URL reads credentials from.
#[cfg(feature = "supabase")]
pub mod supabase {
    pub use crate::supabase_session::{EMAIL_VAR, PASSWORD_VAR};
    pub use chatvault_supabase::{Session, SessionStore, SignOutScope, SupabaseAuth};
}
pub use export::{
    ExportOptions, Exported, EXPORT_FORMAT, EXPORT_FORMAT_ATTACHMENTS, EXPORT_FORMAT_BRANCHES,
    EXPORT_FORMAT_FILES,
};
pub use vault::ChatVault;

pub use chatvault_core::attachments::BlobCollection;
pub use chatvault_core::engine::{
    AllChats, Event, ResealReport, SettledMaintenance, Sidebar, SkippedRecord, SyncReport,
    SyncStatus, DEFAULT_MAINTENANCE_BUDGET,
};
pub use chatvault_core::envelope::{ExportTarget, Padding, Protection, ProtectionKind};
pub use chatvault_core::keys::{RecoveryKey, Removed};
pub use chatvault_core::{
    Attachment, Chat, ChatId, ChatSummary, DeviceId, DynStorage, Error, Message, MessageId,
    PathEntry, Result, Role, Storage, TreeEntry, VaultId,
};

/// The core crate, for backends and advanced use (the engine, the replica,
/// the traits).
pub use chatvault_core as core;
