//! [`TestBackend`]: how the suite opens a backend under test.

use crate::layers::RequestCounter;
use async_trait::async_trait;
use chatvault_core::{ChatId, DynStorage, Result};

/// A backend under test: opens vaults as independent clients.
///
/// The suite calls [`TestBackend::start`] once per run, then
/// [`TestBackend::open`] as often as it needs clients. Everything else is
/// optional: a hook left at its default makes the contracts that need it
/// report as skipped (never as passed).
///
/// # What `open` must do
///
/// `open(vault)` returns a *new, independent client* of the vault named
/// `vault`, the way a second device would connect: no in-process cache or
/// lock shared with earlier clients beyond what the real backend shares
/// (the same server, folder or database file). The vault is created on
/// first use and starts empty. Different names are different users: the
/// isolation contract checks that they never see each other's records.
/// Names are short ASCII (`[a-z0-9_-]`), unique per contract, and each run
/// of the suite must start from fresh vaults: backends that keep state
/// between runs (a shared bucket, a long-lived database) put a per-run
/// prefix in front of the name.
///
/// # Example
///
/// ```
/// use async_trait::async_trait;
/// use chatvault_conformance::TestBackend;
/// use chatvault_core::{DynStorage, Result};
///
/// struct MyBackend { root: std::path::PathBuf }
///
/// #[async_trait]
/// impl TestBackend for MyBackend {
///     fn name(&self) -> String {
///         "my-backend".into()
///     }
///     async fn open(&self, vault: &str) -> Result<DynStorage> {
///         # let _ = self.root.join(vault);
///         # Err(chatvault_core::Error::invalid("doc example"))
///         // e.g. Ok(Arc::new(MyStorage::open(self.root.join(vault))?))
///     }
/// }
/// ```
#[async_trait]
pub trait TestBackend: Send + Sync + 'static {
    /// Short name shown in the run header, e.g. `fs` or `s3`.
    fn name(&self) -> String;

    /// Starts or connects to whatever service the backend needs and returns
    /// a one-line description of what serves it (printed at the start of
    /// the run, e.g. `s3: testcontainers chatvault-test/s3:latest at
    /// http://127.0.0.1:32768`). An error means the service is missing: the
    /// run reports every contract as skipped, or as failed when the `CI`
    /// environment variable is set. The default needs no service.
    async fn start(&self) -> Result<String> {
        Ok(self.name())
    }

    /// A new, independent client of the vault named `vault` (see the
    /// trait docs).
    async fn open(&self, vault: &str) -> Result<DynStorage>;

    /// Like [`TestBackend::open`], but every request the client sends to its
    /// server (HTTP request, SQL statement, object-store call…) is recorded
    /// in `requests`. `None`: the backend cannot count, and the request-cost
    /// contracts are skipped.
    async fn open_counting(
        &self,
        vault: &str,
        requests: RequestCounter,
    ) -> Option<Result<DynStorage>> {
        let _ = (vault, requests);
        None
    }

    /// Damages, directly on the server, the stored copy of the current
    /// record of `chat` in `vault` so that the backend can no longer decode
    /// it (garbled or truncated bytes, as a faulty disk or a buggy tool
    /// would leave). `None`: the backend cannot, and the corruption contract
    /// is skipped.
    async fn corrupt_record(&self, vault: &str, chat: ChatId) -> Option<Result<()>> {
        let _ = (vault, chat);
        None
    }

    /// Moves the history of `vault` past the backend's retention horizon
    /// and prunes it the way the backend does in production, as if a long
    /// time had passed: superseded change-log entries (and what else the
    /// backend drops with them) go. Returns how many history entries were
    /// removed. For example: the object-store layout compacts through a
    /// handle whose compaction horizon is shorter than the time since the
    /// writes; Supabase ages the change log's timestamps past
    /// `chatvault_history_retention()` and runs `chatvault_maintain`.
    /// `None`: the backend cannot, and the history-horizon contract is
    /// skipped.
    async fn expire_history(&self, vault: &str) -> Option<Result<u64>> {
        let _ = vault;
        None
    }

    /// Releases the service (stops containers, removes scratch data). Called
    /// once after the last contract, inside the run's runtime.
    async fn stop(&self) {}
}
