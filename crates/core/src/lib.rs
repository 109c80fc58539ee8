//! chatvault-core: the pieces every chatvault backend and application share.
//!
//! - [`attachments`]: files in chats as chunked, sealed, content-addressed
//!   blobs, staged for upload and cached on this device;
//! - [`chat`]: the chat model, a CRDT whose [`Chat::merge`] lets devices
//!   converge whatever order they sync in;
//! - [`hlc`]: hybrid logical clocks that order edits across devices;
//! - [`storage`]: the [`Storage`] trait backends implement, with its contract;
//! - [`cipher`] and [`envelope`]: sealing record parts, and the default
//!   envelope cipher (an age-encrypted key file plus XChaCha20-Poly1305);
//! - [`keys`]: key management (devices, passphrase, recovery key, rotation);
//! - [`engine`]: the sync engine (save, push, pull, in-memory sidebar);
//! - [`Replica`]: this device's crash-safe copy of the vault and its outbox;
//! - [`transport`]: when the sync engine pulls (polling, or a backend's push);
//! - [`layer`]: behaviour stacked around any storage (retries, tracing);
//! - [`raw`]: beneath the engine (encodings, the replica's record types,
//!   opening one sealed record), for tests and tools.
//!
//! # Features
//!
//! - `engine` (default): the sync engine, the local replica (redb) and key
//!   management; turns on `envelope`.
//! - `envelope`: the default cipher (age key file, XChaCha20-Poly1305).
//!
//! A backend, or anything else that only implements or calls the traits,
//! depends on `chatvault-core` with `default-features = false`: the model,
//! merge, codec, ids, clocks, errors, the `Storage`/`Cipher`/`Transport`
//! traits and the layers, without the engine's, redb's and age's
//! dependencies.
//!
//! ```
//! use chatvault_core::{Chat, ChatId, Clock, DeviceId, Role};
//!
//! let (laptop, phone) = (Clock::new(DeviceId(1)), Clock::new(DeviceId(2)));
//! let mut on_laptop = Chat::new(ChatId::new(), "Trip plans", laptop.tick());
//! let mut on_phone = on_laptop.clone();
//!
//! // Both devices add a message while offline…
//! on_laptop.add_message(Role::User, "Book the train", laptop.tick());
//! on_phone.add_message(Role::User, "Pack the tent", phone.tick());
//!
//! // …and after syncing, in either order, both keep every message.
//! let mut a = on_laptop.clone();
//! a.merge(&on_phone);
//! let mut b = on_phone.clone();
//! b.merge(&on_laptop);
//! assert_eq!(a, b);
//! assert_eq!(a.message_count(), 2);
//! ```

#[cfg(feature = "engine")]
pub mod attachments;
mod binary;
pub mod chat;
mod chunked;
pub mod cipher;
mod codec;
#[cfg(feature = "engine")]
pub mod engine;
#[cfg(feature = "envelope")]
// Some key-file queries serve only key management (`keys`, with `engine`).
#[cfg_attr(not(feature = "engine"), allow(dead_code, unused_imports))]
pub mod envelope;
pub mod error;
pub mod hlc;
pub mod ids;
#[cfg(feature = "engine")]
pub mod keys;
pub mod layer;
mod parallel;
pub mod raw;
#[cfg(feature = "engine")]
mod replica;
pub mod storage;
pub mod transport;

pub use chat::{
    Attachment, Chat, ChatSummary, Lww, Message, MessageBody, NewMessage, PathEntry, Role,
    TreeEntry,
};
pub use cipher::{Aad, Cipher};
#[cfg(feature = "engine")]
pub use engine::{Engine, EngineConfig, Event, SyncReport, SyncStatus};
pub use error::{BoxError, Error, Result};
pub use hlc::{Clock, Hlc};
pub use ids::{BlobId, ChatId, DeviceId, MessageId, VaultId};
#[cfg(feature = "engine")]
pub use replica::Replica;
pub use storage::{
    BlobPage, Capabilities, Change, ChangePage, Cursor, DynStorage, KeyringBlob, MaintenanceBudget,
    MaintenanceReport, Part, PutPrecondition, SealedRecord, Storage, StorageExt,
};
pub use transport::{Polling, PullOutcome, Transport};
