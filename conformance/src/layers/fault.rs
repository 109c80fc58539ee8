//! [`FaultLayer`]: chosen calls fail like a flaky network or server.

use super::{lock, Op};
use async_trait::async_trait;
use bytes::Bytes;
use chatvault_core::layer::{LayeredStorage, StorageLayer};
use chatvault_core::{
    BlobId, BlobPage, ChangePage, ChatId, Cursor, DynStorage, Error, KeyringBlob,
    MaintenanceBudget, MaintenanceReport, Part, PutPrecondition, Result, SealedRecord, Storage,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How an injected failure looks to the caller.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The network is down: [`Error::Unavailable`] at once, nothing reaches
    /// the server.
    Unavailable,
    /// The request hangs for this long, then fails as a timeout
    /// ([`Error::Unavailable`]); nothing reaches the server.
    Timeout(Duration),
    /// The server answers HTTP 500 ([`Error::Unavailable`]); nothing was
    /// committed.
    ServerError,
    /// The request reaches the server and commits, but the response is lost:
    /// the caller sees [`Error::Unavailable`] although the change happened.
    /// Replaying it must be harmless.
    LostResponse,
}

impl Fault {
    pub(crate) fn error(self, op: Op) -> Error {
        let message = match self {
            Fault::Unavailable => {
                format!("injected fault: network unreachable during {}", op.name())
            }
            Fault::Timeout(after) => {
                format!("injected fault: {} timed out after {after:?}", op.name())
            }
            Fault::ServerError => {
                format!(
                    "injected fault: HTTP 500 Internal Server Error on {}",
                    op.name()
                )
            }
            Fault::LostResponse => format!(
                "injected fault: connection reset after the server committed {}",
                op.name()
            ),
        };
        Error::Unavailable {
            message,
            source: None,
        }
    }
}

#[derive(Debug, Default)]
struct FaultPlan {
    /// Failures armed for one call: (op, calls of `op` still to let pass).
    nth: Vec<(Op, u64, Fault)>,
    /// Every call of these ops fails until healed.
    ops: BTreeMap<Op, Fault>,
    /// Every call fails until healed.
    all: Option<Fault>,
    calls: BTreeMap<Op, u64>,
    injected: u64,
}

impl FaultPlan {
    fn fail_nth(&mut self, op: Op, n: u64, fault: Fault) {
        self.nth.push((op, n.saturating_sub(1), fault));
    }

    fn heal(&mut self) {
        self.nth.clear();
        self.ops.clear();
        self.all = None;
    }

    /// Counts a call of `op` and says whether it must fail, and how.
    fn decide(&mut self, op: Op) -> Option<Fault> {
        *self.calls.entry(op).or_default() += 1;
        let mut fault = self.all.or_else(|| self.ops.get(&op).copied());
        let mut fired = None;
        for (index, (armed_op, remaining, armed_fault)) in self.nth.iter_mut().enumerate() {
            if *armed_op != op {
                continue;
            }
            if *remaining == 0 {
                if fired.is_none() {
                    fired = Some(index);
                    fault = fault.or(Some(*armed_fault));
                }
            } else {
                *remaining -= 1;
            }
        }
        if let Some(index) = fired {
            self.nth.remove(index);
        }
        if fault.is_some() {
            self.injected += 1;
        }
        fault
    }
}

/// Makes chosen calls of the wrapped [`Storage`] fail like a flaky network
/// or server would; every other call passes through.
///
/// Faults are armed and healed at any time through `&self`, so a test keeps
/// an `Arc<FaultyStorage>` and hands clones of it to the code under test.
///
/// [`FaultLayer`] builds it; [`FaultyStorage::new`] wraps one storage with a
/// plan of its own. It dereferences to the [`FaultLayer`] whose plan it
/// follows, so the arming methods (`fail_nth`, `fail_all`, `heal`, `calls`…)
/// are that layer's.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: DynStorage,
    handle: FaultLayer,
}

impl std::ops::Deref for FaultyStorage {
    type Target = FaultLayer;

    fn deref(&self) -> &FaultLayer {
        &self.handle
    }
}

/// Stacks [`FaultyStorage`] on any backend: chosen calls fail like a flaky
/// network or server would, until healed. The layer is also the handle that
/// arms the faults; clones share one plan, so faults armed on the layer hit
/// every storage it wrapped (and call counts add up over them).
///
/// ```
/// use chatvault_conformance::layers::{Fault, FaultLayer, Op};
/// use chatvault_core::layer::LayerExt;
/// # fn demo(backend: chatvault_core::DynStorage) {
/// let faults = FaultLayer::new();
/// let storage = backend.layer(faults.clone());
/// faults.fail_nth(Op::Put, 1, Fault::LostResponse);
/// // …the next put commits, but its caller sees a retriable error.
/// # let _ = storage;
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct FaultLayer {
    plan: Arc<Mutex<FaultPlan>>,
}

impl FaultLayer {
    /// A layer with nothing armed.
    pub fn new() -> Self {
        Self::default()
    }

    fn plan(&self) -> MutexGuard<'_, FaultPlan> {
        lock(&self.plan)
    }

    /// The `n`-th call of `op` from now (1 = the next one) fails with
    /// `fault`; the calls before and after it pass.
    pub fn fail_nth(&self, op: Op, n: u64, fault: Fault) {
        self.plan().fail_nth(op, n, fault);
    }

    /// Every call of `op` fails with `fault` until [`FaultLayer::heal`].
    pub fn fail_op(&self, op: Op, fault: Fault) {
        self.plan().ops.insert(op, fault);
    }

    /// Every call fails with `fault` until [`FaultLayer::heal`]: the device
    /// is offline.
    pub fn fail_all(&self, fault: Fault) {
        self.plan().all = Some(fault);
    }

    /// Disarms every fault; calls pass through again.
    pub fn heal(&self) {
        self.plan().heal();
    }

    /// Calls of `op` made so far, failed ones included.
    pub fn calls(&self, op: Op) -> u64 {
        self.plan().calls.get(&op).copied().unwrap_or(0)
    }

    /// How many calls failed on purpose so far.
    pub fn injected(&self) -> u64 {
        self.plan().injected
    }
}

impl StorageLayer for FaultLayer {
    fn layer(&self, inner: DynStorage) -> DynStorage {
        Arc::new(FaultyStorage {
            inner,
            handle: self.clone(),
        })
    }
}

impl FaultyStorage {
    /// Wraps `inner` with a plan of its own; nothing fails until a fault is
    /// armed. The returned `Arc` is the handle that arms faults; hand clones
    /// of it to the code under test.
    pub fn new(inner: DynStorage) -> Arc<Self> {
        Arc::new(Self {
            inner,
            handle: FaultLayer::new(),
        })
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &DynStorage {
        &self.inner
    }

    /// Runs `call` unless a fault is armed for `op`; `LostResponse` runs it
    /// and then reports a failure anyway.
    async fn guard<T, F>(&self, op: Op, call: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let fault = self.handle.plan().decide(op);
        match fault {
            None => call.await,
            Some(Fault::LostResponse) => {
                // The outcome is dropped on purpose: the caller must not
                // learn whether the server committed.
                let _committed = call.await;
                Err(Fault::LostResponse.error(op))
            }
            Some(Fault::Timeout(after)) => {
                tokio::time::sleep(after).await;
                Err(Fault::Timeout(after).error(op))
            }
            Some(fault) => Err(fault.error(op)),
        }
    }
}

#[async_trait]
impl LayeredStorage for FaultyStorage {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        self.guard(Op::Changes, self.inner.changes(since, limit))
            .await
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        self.guard(Op::Get, self.inner.get(chats, part)).await
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        self.guard(Op::Put, self.inner.put(record, precondition))
            .await
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let len = batch.len();
        match self
            .guard(Op::PutBatch, async {
                Ok(self.inner.put_batch(batch).await)
            })
            .await
        {
            Ok(results) => results,
            Err(error) => {
                let message = error.to_string();
                (0..len)
                    .map(|_| {
                        Err(Error::Unavailable {
                            message: message.clone(),
                            source: None,
                        })
                    })
                    .collect()
            }
        }
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        self.guard(Op::GetKeyring, self.inner.get_keyring()).await
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        self.guard(Op::PutKeyring, self.inner.put_keyring(bytes, precondition))
            .await
    }

    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        self.guard(Op::Maintain, self.inner.maintain(budget)).await
    }

    async fn put_blob(&self, id: BlobId, sealed: Bytes) -> Result<()> {
        self.guard(Op::PutBlob, self.inner.put_blob(id, sealed))
            .await
    }

    async fn get_blob(&self, id: BlobId) -> Result<Option<Bytes>> {
        self.guard(Op::GetBlob, self.inner.get_blob(id)).await
    }

    async fn list_blobs(&self, after: Option<BlobId>, limit: usize) -> Result<BlobPage> {
        self.guard(Op::ListBlobs, self.inner.list_blobs(after, limit))
            .await
    }

    async fn delete_blob(&self, id: BlobId) -> Result<()> {
        self.guard(Op::DeleteBlob, self.inner.delete_blob(id)).await
    }
}
