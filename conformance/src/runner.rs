//! Runs contracts as named libtest trials, reporting capability-gated ones
//! as skipped (`ignored`), never as passed.

use crate::backend::TestBackend;
use chatvault_core::Capabilities;
use futures::future::BoxFuture;
use libtest_mimic::{Arguments, Completion, Conclusion, Failed, Trial};
use std::fmt;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// A contract that held, or one the backend was not asked to meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The contract held.
    Passed,
    /// The contract does not apply (a capability or hook is missing); the
    /// reason is printed and the trial is counted as ignored.
    Skipped(String),
}

/// Why a contract failed, with the place in the suite that noticed.
#[derive(Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<chatvault_core::Error> for Failure {
    fn from(error: chatvault_core::Error) -> Self {
        Failure(format!("unexpected error: {error} ({error:?})"))
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure(message)
    }
}

/// What a contract returns: `Ok(Verdict)` or the failure.
pub type Outcome = Result<Verdict, Failure>;

/// The function behind a contract: runs it against a backend.
pub type ContractFn = for<'a> fn(&'a dyn TestBackend) -> BoxFuture<'a, Outcome>;

/// The capability a contract needs beyond the base Storage contract, as
/// declared by [`Storage::capabilities`](chatvault_core::Storage::capabilities).
///
/// The runner reads the backend's capabilities once per run (from one client
/// opened after [`TestBackend::start`]) and reports a contract whose
/// capability is absent as skipped, with the reason, without running it:
/// never as passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Nothing beyond the base contract: always runs.
    Nothing,
    /// [`Capabilities::atomic_preconditions`]: racing writers, exactly one
    /// commits.
    AtomicPreconditions,
    /// [`Capabilities::inline_summaries`]: the feed carries summaries.
    InlineSummaries,
    /// [`Capabilities::blobs`]: the backend stores sealed blobs.
    Blobs,
}

impl Needs {
    /// Why a backend with `capabilities` cannot be held to a contract with
    /// this need (`None`: it can).
    pub fn missing(self, capabilities: &Capabilities) -> Option<String> {
        match self {
            Needs::Nothing => None,
            Needs::AtomicPreconditions => (!capabilities.atomic_preconditions)
                .then(|| "capabilities().atomic_preconditions is false".to_owned()),
            Needs::InlineSummaries => (!capabilities.inline_summaries)
                .then(|| "capabilities().inline_summaries is false".to_owned()),
            Needs::Blobs => {
                (!capabilities.blobs).then(|| "capabilities().blobs is false".to_owned())
            }
        }
    }
}

/// One named contract of a suite.
#[derive(Clone, Copy)]
pub struct Contract {
    /// The trial name, `module::behaviour` (e.g.
    /// `storage::put_absent_conflicts_when_record_exists`).
    pub name: &'static str,
    /// Runs the contract.
    pub run: ContractFn,
    /// The capability it needs; without it the runner reports the contract
    /// as skipped.
    pub needs: Needs,
}

impl Contract {
    /// The same contract, gated on `needs`.
    pub fn needing(self, needs: Needs) -> Self {
        Self { needs, ..self }
    }
}

impl fmt::Debug for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contract")
            .field("name", &self.name)
            .field("needs", &self.needs)
            .finish()
    }
}

/// Builds a [`Contract`] from an `async fn(&dyn TestBackend) -> Outcome` in
/// scope, named `<module>::<fn name>`, needing nothing beyond the base
/// contract (gate it with [`Contract::needing`]).
///
/// ```
/// use chatvault_conformance::{contract, Outcome, TestBackend, Verdict};
///
/// /// Opening a vault works.
/// pub async fn open_works(backend: &dyn TestBackend) -> Outcome {
///     backend.open("open_works").await?;
///     Ok(Verdict::Passed)
/// }
///
/// let contracts = vec![contract!("mine", open_works)];
/// assert_eq!(contracts[0].name, "mine::open_works");
/// ```
#[macro_export]
macro_rules! contract {
    ($module:literal, $function:ident) => {
        $crate::Contract {
            name: concat!($module, "::", stringify!($function)),
            run: |backend| ::std::boxed::Box::pin($function(backend)),
            needs: $crate::Needs::Nothing,
        }
    };
}

/// Fails the contract with a message unless `condition` holds.
#[macro_export]
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return ::std::result::Result::Err($crate::Failure(format!(
                "{}:{}: {}",
                file!(),
                line!(),
                format!($($message)+)
            )));
        }
    };
}

/// Fails the contract unless `left == right`, showing both.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($message:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return ::std::result::Result::Err($crate::Failure(format!(
                "{}:{}: {}\n  left: {:?}\n right: {:?}",
                file!(),
                line!(),
                format!($($message)+),
                left,
                right
            )));
        }
    }};
}

/// A backend and the contracts to hold it to; [`Suite::run`] turns each
/// contract into a libtest trial and returns the process exit code.
pub struct Suite {
    backend: Arc<dyn TestBackend>,
    contracts: Vec<Contract>,
}

impl Suite {
    /// A suite over `backend` with no contracts yet.
    pub fn new(backend: impl TestBackend) -> Self {
        Self {
            backend: Arc::new(backend),
            contracts: Vec::new(),
        }
    }

    /// Adds the Storage contracts ([`crate::storage::contracts`]).
    pub fn with_storage_contracts(self) -> Self {
        self.with_contracts(crate::storage::contracts())
    }

    /// Adds the end-to-end sync contracts ([`crate::sync::contracts`];
    /// feature `sync`).
    #[cfg(feature = "sync")]
    pub fn with_sync_contracts(self) -> Self {
        self.with_contracts(crate::sync::contracts())
    }

    /// Adds more contracts (e.g. the sync suite, or a backend's own).
    pub fn with_contracts(mut self, contracts: impl IntoIterator<Item = Contract>) -> Self {
        self.contracts.extend(contracts);
        self
    }

    /// Runs the contracts with the command line's libtest arguments
    /// (filters, `--list`, `--test-threads`…) and returns the exit code.
    pub fn run(self) -> ExitCode {
        self.run_with_args(&Arguments::from_args())
    }

    /// Runs the contracts with explicit libtest arguments.
    pub fn run_with_args(self, args: &Arguments) -> ExitCode {
        self.conclude(args).exit_code()
    }

    /// Runs the contracts with explicit libtest arguments and returns the
    /// tally (passed, failed, ignored…), e.g. for a test of the suite
    /// itself.
    pub fn conclude(self, args: &Arguments) -> Conclusion {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("chatvault-conformance: cannot start a tokio runtime: {error}");
                return Conclusion {
                    num_filtered_out: 0,
                    num_passed: 0,
                    num_failed: self.contracts.len() as u64,
                    num_ignored: 0,
                    num_measured: 0,
                };
            }
        };
        let backend = self.backend;
        let name = backend.name();
        let service = if args.list {
            Ok(String::from("(not started for --list)"))
        } else {
            runtime.block_on(backend.start())
        };
        let unavailable = match &service {
            Ok(description) => {
                println!("chatvault-conformance: backend {name}, served by {description}");
                None
            }
            Err(error) => {
                let reason = format!("{name}: service unavailable: {error}");
                if services_required() {
                    println!("chatvault-conformance: {reason}; CI is set, so every contract fails");
                } else {
                    println!("chatvault-conformance: {reason}; every contract is skipped (set CI to make this fail)");
                }
                Some(reason)
            }
        };
        // One client tells the capabilities every gated contract is checked
        // against, the way OpenDAL's behavior tests read `op.info()`.
        let capabilities: Result<Capabilities, String> = if unavailable.is_some()
            || args.list
            || !self.contracts.iter().any(|c| c.needs != Needs::Nothing)
        {
            Err(String::from("not read"))
        } else {
            runtime
                .block_on(backend.open(CAPABILITIES_VAULT))
                .map(|storage| storage.capabilities())
                .map_err(|error| {
                    format!("could not open a client to read the backend's capabilities: {error}")
                })
        };
        let limit = contract_timeout();
        let trials = self
            .contracts
            .into_iter()
            .map(|contract| {
                let backend = Arc::clone(&backend);
                let handle = runtime.handle().clone();
                let unavailable = unavailable.clone();
                let gate = match (&capabilities, contract.needs) {
                    (_, Needs::Nothing) => Ok(None),
                    (Ok(capabilities), needs) => Ok(needs.missing(capabilities)),
                    (Err(error), _) => Err(error.clone()),
                };
                Trial::ignorable_test(contract.name, move || {
                    if let Some(reason) = unavailable {
                        return if services_required() {
                            Err(Failed::from(reason))
                        } else {
                            Ok(Completion::ignored_with(reason))
                        };
                    }
                    match gate {
                        Ok(None) => {}
                        Ok(Some(reason)) => return Ok(Completion::ignored_with(reason)),
                        Err(error) => return Err(Failed::from(error)),
                    }
                    let outcome = handle.block_on(async move {
                        // A safety net against hangs, not a performance
                        // assertion: the limit is minutes.
                        match tokio::time::timeout(limit, (contract.run)(&*backend)).await {
                            Ok(outcome) => outcome,
                            Err(_) => Err(Failure(format!(
                                "did not finish within {limit:?} (CHATVAULT_CONFORMANCE_TIMEOUT_SECS)"
                            ))),
                        }
                    });
                    match outcome {
                        Ok(Verdict::Passed) => Ok(Completion::Completed),
                        Ok(Verdict::Skipped(reason)) => Ok(Completion::ignored_with(reason)),
                        Err(failure) => Err(Failed::from(failure.0)),
                    }
                })
                .with_kind(name.clone())
            })
            .collect();
        let conclusion = libtest_mimic::run(args, trials);
        runtime.block_on(async move {
            backend.stop().await;
            // Fixtures that clean up on drop (containers) need the runtime.
            drop(backend);
        });
        conclusion
    }
}

/// Runs the Storage contracts, and with the `sync` feature the end-to-end
/// sync contracts too, against `backend`: the one call an out-of-tree
/// backend needs in its `harness = false` test target.
pub fn run(backend: impl TestBackend) -> ExitCode {
    let suite = Suite::new(backend).with_storage_contracts();
    #[cfg(feature = "sync")]
    let suite = suite.with_sync_contracts();
    suite.run()
}

/// The vault the runner opens to read the backend's capabilities.
const CAPABILITIES_VAULT: &str = "capabilities_probe";

/// True when the `CI` environment variable asks for every service to be
/// present (a missing service fails instead of skipping).
pub fn services_required() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn contract_timeout() -> Duration {
    let seconds = std::env::var("CHATVAULT_CONFORMANCE_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(seconds)
}
