//! The Storage conformance suite, run against a backend written in the
//! target language.

use crate::error::VaultError;
use crate::storage::{ForeignStorage, StorageBackend};
use async_trait::async_trait;
use chatvault::DynStorage;
use chatvault_conformance::{TestBackend, Verdict};
use std::sync::Arc;
use std::time::Duration;

/// Opens clients of named vaults for the conformance suite: `open(vault)`
/// returns a new, independent client of the vault named `vault` (created
/// empty on first use), the way a second device would connect; different
/// names are different, isolated vaults.
#[uniffi::export(with_foreign)]
pub trait BackendFactory: Send + Sync {
    /// A short name for the report, e.g. `python-memory`.
    fn name(&self) -> String;
    /// A new client of the vault named `vault`.
    fn open(&self, vault: String) -> Result<Arc<dyn StorageBackend>, VaultError>;
}

/// How one contract went.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ContractOutcome {
    /// The contract held.
    Passed,
    /// The contract does not apply to this backend (a capability it does
    /// not declare, a test hook it lacks).
    Skipped {
        /// Why.
        reason: String,
    },
    /// The contract was broken.
    Failed {
        /// What the suite saw, and where.
        message: String,
    },
}

/// One contract of the suite and how it went.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ContractResult {
    /// The contract's name, e.g. `storage::put_absent_conflicts_when_record_exists`.
    pub name: String,
    /// How it went.
    pub outcome: ContractOutcome,
}

/// Every contract: the Storage contracts (`storage::…`), then the
/// end-to-end sync contracts (`sync::…`: several devices through the
/// facade over the backend).
fn all_contracts() -> Vec<chatvault_conformance::Contract> {
    let mut contracts = chatvault_conformance::storage::contracts();
    contracts.extend(chatvault_conformance::sync::contracts());
    contracts
}

/// The names of the contracts, in the order they run: the Storage
/// contracts (`storage::…`), then the end-to-end sync contracts
/// (`sync::…`).
#[uniffi::export]
pub fn conformance_contracts() -> Vec<String> {
    all_contracts().iter().map(|c| c.name.to_owned()).collect()
}

/// Runs the contracts whose name contains `filter` (all with `None`):
/// the Storage contracts, then the end-to-end sync contracts, against the
/// backend `factory` opens, one after another, and returns each one's
/// outcome. Blocks the calling thread until the last
/// contract is done; each contract may take at most `timeout_secs`
/// seconds.
#[uniffi::export]
pub fn run_conformance(
    factory: Arc<dyn BackendFactory>,
    filter: Option<String>,
    timeout_secs: u64,
) -> Result<Vec<ContractResult>, VaultError> {
    crate::runtime::block_on(async move {
        let backend: Arc<dyn TestBackend> = Arc::new(Foreign { factory });
        let contracts: Vec<_> = all_contracts()
            .into_iter()
            .filter(|c| filter.as_deref().is_none_or(|f| c.name.contains(f)))
            .collect();
        let capabilities = backend
            .open("capabilities_probe")
            .await
            .map_err(VaultError::from)?
            .capabilities();
        let limit = Duration::from_secs(timeout_secs.max(1));
        let mut results = Vec::with_capacity(contracts.len());
        for contract in contracts {
            let outcome = if let Some(reason) = contract.needs.missing(&capabilities) {
                ContractOutcome::Skipped { reason }
            } else {
                let backend = backend.clone();
                let run = contract.run;
                let task =
                    tokio::spawn(async move { tokio::time::timeout(limit, run(&*backend)).await });
                match task.await {
                    Ok(Ok(Ok(Verdict::Passed))) => ContractOutcome::Passed,
                    Ok(Ok(Ok(Verdict::Skipped(reason)))) => ContractOutcome::Skipped { reason },
                    Ok(Ok(Err(failure))) => ContractOutcome::Failed { message: failure.0 },
                    Ok(Err(_)) => ContractOutcome::Failed {
                        message: format!("did not finish within {limit:?}"),
                    },
                    Err(error) => ContractOutcome::Failed {
                        message: format!("the contract panicked: {error}"),
                    },
                }
            };
            results.push(ContractResult {
                name: contract.name.to_owned(),
                outcome,
            });
        }
        Ok(results)
    })
}

/// A [`BackendFactory`] as the suite's [`TestBackend`].
struct Foreign {
    factory: Arc<dyn BackendFactory>,
}

#[async_trait]
impl TestBackend for Foreign {
    fn name(&self) -> String {
        self.factory.name()
    }

    async fn open(&self, vault: &str) -> chatvault::Result<DynStorage> {
        let factory = self.factory.clone();
        let vault = vault.to_owned();
        let backend = match tokio::task::spawn_blocking(move || factory.open(vault)).await {
            Ok(result) => result?,
            Err(error) => {
                return Err(chatvault::Error::Rejected {
                    code: "callback".to_owned(),
                    message: format!("the backend factory's open failed: {error}"),
                })
            }
        };
        Ok(Arc::new(ForeignStorage::adopt(backend).await?))
    }
}
