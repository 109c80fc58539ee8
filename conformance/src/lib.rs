//! The chatvault conformance suite: one set of contracts that every
//! [`Storage`](chatvault_core::Storage) backend, ours or yours, runs
//! against itself, plus the test layers that make that cheap.
//!
//! - [`storage`]: the Storage contract, one `pub async fn` per behaviour,
//!   one module per operation (get, put, batch, delete, the change feed,
//!   isolation, the keyring, volume, concurrent writers, corruption); it
//!   depends on `chatvault-core` alone;
//! - `sync` (feature `sync`): end-to-end sync through the `chatvault`
//!   facade and its engine (several devices, offline edits, lost responses,
//!   crashes, convergence);
//! - [`TestBackend`]: how the suite opens your backend;
//! - [`run`] / [`Suite`] / [`storage_suite!`]: turn the contracts into named
//!   libtest trials (`storage::put_absent_conflicts_when_record_exists`…);
//!   a contract the backend cannot meet for lack of a capability ([`Needs`])
//!   or a hook is reported as *ignored* with the reason, never counted as
//!   passed;
//! - [`layers`]: counting, fault-injecting, chaos and hostile layers
//!   ([`StorageLayer`](chatvault_core::layer::StorageLayer)s) for tests and
//!   benches.
//!
//! # Features
//!
//! - none (the default): the Storage contracts, the runner and the layers,
//!   over `chatvault-core` without its default features: no engine, redb,
//!   age, HTTP stack or containers to compile.
//! - `sync`: the end-to-end sync contracts; [`run`] adds them. Pulls in the
//!   `chatvault` facade (engine, replica, envelope cipher).
//! - `object-store`: `layers::CountingObjectStore` and
//!   `layers::CountingHttpConnector`, for backends built on `object_store`.
//!
//! The S3 and PostgreSQL fixtures chatvault's own backends are tested
//! against live in the repository's unpublished `chatvault-test-services`
//! crate, not here.
//!
//! # Writing a backend
//!
//! A backend is a type that implements [`chatvault_core::Storage`] for one
//! vault. The contract is written on the trait; in short:
//!
//! 1. **Commit order is the feed.** `changes(since, limit)` returns changes
//!    in the order they committed and never skips one, even while other
//!    clients commit concurrently. Number commits with something that
//!    cannot become visible out of order: a sequence assigned inside the
//!    committing transaction under a per-vault lock, or a log whose next
//!    slot is claimed with create-if-absent. A plain `updated_at > t` or a
//!    global sequence read under concurrent transactions skips commits.
//! 2. **Preconditions decide, never overwrite.** `Absent`, `Version(v)` and
//!    the always-on rule "new version > stored version" are checked in the
//!    same atomic step as the write; a mismatch is
//!    `Error::Conflict { current }` with the stored version. If your store
//!    cannot make that atomic under concurrent writers, say so with
//!    `Capabilities::atomic_preconditions: false`.
//! 3. **Deletes are records.** A tombstone is stored, returned by `get`, and
//!    reported by `changes` like any other version.
//! 4. **An idle poll is one small request**, however many chats exist:
//!    index the feed by commit position, not by scanning.
//! 5. **Errors are typed**: `Unavailable` for anything worth retrying,
//!    `Corrupt` for stored data you cannot decode (and keep serving the
//!    other records), `TooLarge` above `max_record_bytes`.
//!
//! Then test it: add the suite as a dev-dependency and a test target
//! without the default harness,
//!
//! ```toml
//! [dependencies]
//! chatvault-core = { version = "0.1", default-features = false }
//!
//! [dev-dependencies]
//! chatvault-conformance = "0.1"
//! # To hold it to the end-to-end sync contracts too:
//! # chatvault-conformance = { version = "0.1", features = ["sync"] }
//!
//! [[test]]
//! name = "conformance"
//! harness = false
//! ```
//!
//! and in `tests/conformance.rs` implement [`TestBackend`] (how to open a
//! fresh vault as a new client) and hand it to the suite:
//!
//! ```no_run
//! use async_trait::async_trait;
//! use chatvault_conformance::TestBackend;
//! use chatvault_core::{DynStorage, Result};
//!
//! struct MyBackend;
//!
//! #[async_trait]
//! impl TestBackend for MyBackend {
//!     fn name(&self) -> String {
//!         "my-backend".into()
//!     }
//!     async fn open(&self, vault: &str) -> Result<DynStorage> {
//!         // A new client of `vault`, created empty on first use.
//!         # let _ = vault;
//!         # Err(chatvault_core::Error::invalid("doc example"))
//!     }
//! }
//!
//! chatvault_conformance::storage_suite!(MyBackend);
//! ```
//!
//! [`run`] holds it to the Storage contracts, and with the `sync` feature
//! to the end-to-end sync contracts too (three devices, offline edits, lost
//! responses, crashes); use [`Suite`] to pick contracts or add your own.
//! `cargo test --test conformance` then prints one line per contract:
//!
//! ```text
//! chatvault-conformance: backend my-backend, served by my-backend
//! test [my-backend] storage::put_absent_conflicts_when_record_exists ... ok
//! test [my-backend] storage::corrupt_record_fails_corrupt_and_others_stay_readable ... ignored, the test backend cannot damage stored records (TestBackend::corrupt_record)
//! ```
//!
//! Implement [`TestBackend::open_counting`] and
//! [`TestBackend::corrupt_record`] to run the request-cost and corruption
//! contracts too. `examples/custom_backend.rs` in this repository is a
//! complete backend over redb in one file that passes the whole suite.
//!
//! # Environment
//!
//! - `CI` (set and not `0`/`false`): a service that [`TestBackend::start`]
//!   cannot find fails the run instead of skipping it.
//! - `CHATVAULT_CONFORMANCE_RECORDS`: records in the large-vault contracts
//!   (default 10,000).
//! - `CHATVAULT_CONFORMANCE_TIMEOUT_SECS`: per-contract safety net against
//!   hangs (default 600).

mod backend;
pub mod layers;
mod runner;
pub mod storage;
#[cfg(feature = "sync")]
pub mod sync;

pub use backend::TestBackend;
pub use runner::{
    run, services_required, Contract, ContractFn, Failure, Needs, Outcome, Suite, Verdict,
};

/// Defines `fn main()` for a `harness = false` test target that runs the
/// Storage and sync contracts ([`run`]) against a [`TestBackend`] built by
/// the expression.
///
/// ```no_run
/// # use chatvault_conformance::TestBackend;
/// # struct MyBackend;
/// # #[async_trait::async_trait]
/// # impl TestBackend for MyBackend {
/// #     fn name(&self) -> String { "mine".into() }
/// #     async fn open(&self, _: &str) -> chatvault_core::Result<chatvault_core::DynStorage> {
/// #         Err(chatvault_core::Error::invalid("doc example"))
/// #     }
/// # }
/// chatvault_conformance::storage_suite!(MyBackend);
/// ```
#[macro_export]
macro_rules! storage_suite {
    ($backend:expr) => {
        fn main() -> ::std::process::ExitCode {
            $crate::run($backend)
        }
    };
}
