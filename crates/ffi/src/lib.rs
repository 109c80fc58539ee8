//! chatvault for Python, Kotlin and Swift: the facade of the `chatvault`
//! crate as a UniFFI interface (proc-macros, no UDL).
//!
//! - [`open_vault`] opens a vault by URL with a passphrase, identity or
//!   recovery key; [`open_vault_with_backend`] on a [`StorageBackend`]
//!   written in the target language.
//! - [`Vault`]: sidebar, chats, every mutation, branches, sync, change
//!   notifications ([`ChangeListener`]), keys, import, search, export.
//! - [`verify_vault`] checks a vault without opening it.
//! - [`run_conformance`] runs the Storage conformance suite against a
//!   backend written in the target language.
//! - Errors are one [`VaultError`] enum, a variant per kind of
//!   `chatvault::Error`, carrying the same one-line message.
//!
//! Every I/O method is async in the target language (Python `asyncio`,
//! Kotlin coroutines, Swift `async`) and runs on one Tokio runtime owned by
//! the library, so the caller's event loop or thread only waits.

mod conformance;
mod error;
mod runtime;
mod storage;
mod types;
mod vault;

pub use conformance::{
    conformance_contracts, run_conformance, BackendFactory, ContractOutcome, ContractResult,
};
pub use error::VaultError;
pub use storage::{
    BlobListing, FeedChange, FeedPage, KeyFile, Precondition, StorageBackend, StorageCapabilities,
    StoredRecord,
};
pub use types::{
    Alternatives, Attachment, Chat, ChatSummary, ImportReport, Message, Protection, ProtectionKind,
    Role, SearchHit, Status, SyncReport, VaultEvent, VerifyReport,
};
pub use vault::{open_vault, ChangeListener, OpenOptions, Subscription, Vault};

use chatvault::ChatVault;
use secrecy::SecretString;
use std::sync::Arc;

uniffi::setup_scaffolding!();

/// Opens (or creates) a vault whose records live in `backend`, a storage
/// backend written in the target language; `options.storage_url` is not
/// used.
#[uniffi::export]
pub async fn open_vault_with_backend(
    backend: Arc<dyn StorageBackend>,
    options: OpenOptions,
) -> Result<Arc<Vault>, VaultError> {
    runtime::run(async move {
        let storage = storage::ForeignStorage::adopt(backend).await?;
        vault::open_on(ChatVault::builder().storage(Arc::new(storage)), options).await
    })
    .await
}

/// Checks the vault at `storage_url` without opening it: its key file
/// opens with `secret` (passphrase, recovery key or identity), and every
/// record on the server and in the replica at `replica_path` (if it
/// exists; the vault must not be open there) opens as the engine opens it.
/// What is wrong is a line of the report, not an error.
#[uniffi::export]
pub async fn verify_vault(
    storage_url: String,
    replica_path: String,
    secret: String,
) -> Result<VerifyReport, VaultError> {
    runtime::run(async move {
        let storage = chatvault::open_url(&storage_url).await?;
        let unlock = chatvault::core::keys::unlock_from_secret(SecretString::from(secret));
        let report =
            chatvault::verify::verify(&storage, std::path::Path::new(&replica_path), &unlock)
                .await?;
        Ok(VerifyReport {
            ok: report.is_ok(),
            problems: report
                .findings
                .iter()
                .filter(|f| matches!(f, chatvault::verify::Finding::Problem(_)))
                .map(|f| f.text().to_owned())
                .collect(),
            lines: report
                .findings
                .iter()
                .map(|f| f.text().to_owned())
                .collect(),
            server_records: report.server_records as u64,
            replica_records: report.replica_records as u64,
        })
    })
    .await
}
