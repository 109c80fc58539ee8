//! Wrappers for tests and benches that add behaviour around any backend
//! without the backend knowing: counting and fault injection.
//!
//! Every one of them is a [`StorageLayer`](chatvault_core::layer::StorageLayer) like the production layers of
//! [`chatvault_core::layer`] (retry, tracing), so they stack on any backend
//! with [`LayerExt::layer`](chatvault_core::layer::LayerExt::layer) and
//! keep a cloneable handle to read or steer them:
//!
//! - [`CountingLayer`] counts [`Storage`](chatvault_core::Storage) calls, the sealed bytes they carry
//!   and, optionally, [`RoundTrips`];
//! - [`FaultLayer`] makes chosen calls fail the way networks and servers
//!   fail (unavailable, timed out, HTTP 500, a response lost after the
//!   server committed), until healed;
//! - [`ChaosLayer`] (from `chatvault_core::layer`, re-exported) injects
//!   seeded random trouble: retriable and non-retriable errors, latency,
//!   timeouts, lost write responses, duplicated and reordered feed pages;
//! - [`HostileLayer`] is a server that lies (swapped, moved, rolled back,
//!   truncated or withheld records);
//! - with the `object-store` feature, `CountingObjectStore` counts the calls
//!   an object-store layout makes, and `CountingHttpConnector` counts the
//!   HTTP requests an `object_store` client really sends (list pages and
//!   retries included): what "an idle poll costs one request" is measured
//!   with.
//!
//! Counts go into a [`RequestCounter`], a cheap, cloneable handle that
//! tests keep to read the numbers.
//!
//! ```
//! use chatvault_conformance::layers::{CountingLayer, Fault, FaultLayer, Op, RequestCounter};
//! use chatvault_core::layer::LayerExt;
//! # fn demo(backend: chatvault_core::DynStorage) {
//! let requests = RequestCounter::new();
//! let faults = FaultLayer::new();
//! let storage = backend
//!     .layer(faults.clone())
//!     .layer(CountingLayer::new(requests.clone()));
//! // The second put from now answers 500, then the device is offline.
//! faults.fail_nth(Op::Put, 2, Fault::ServerError);
//! faults.fail_all(Fault::Unavailable);
//! faults.heal();
//! # let _ = storage;
//! println!("{} calls", requests.total());
//! # }
//! ```

mod counting;
mod fault;
mod hostile;
#[cfg(feature = "object-store")]
mod object_store;

/// The seeded chaos layer lives in `chatvault-core` (production code can
/// stack it too); re-exported here where tests have always found it.
pub use chatvault_core::layer::{ChaosConfig, ChaosLayer, ChaosStats, ChaosStorage, SeededRng};
pub use counting::{CountingLayer, CountingStorage, InFlight, RoundTrips};
pub use fault::{Fault, FaultLayer, FaultyStorage};
pub use hostile::{HostileLayer, HostileStorage, Tamper};
#[cfg(feature = "object-store")]
pub use object_store::{CountingHttpConnector, CountingObjectStore};

use chatvault_core::SealedRecord;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// Calls and bytes recorded for one kind of operation.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct OpCount {
    /// How many calls (or HTTP requests) were made.
    pub calls: u64,
    /// Bytes sent to the server by those calls.
    pub bytes_sent: u64,
    /// Bytes received from the server by those calls.
    pub bytes_received: u64,
}

/// A shared tally of requests by operation name. Clones share the tally.
#[derive(Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, OpCount>>>,
}

impl RequestCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, OpCount>> {
        // A poisoned tally is still a tally: a panicking test thread must not
        // hide the numbers from the others.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one call of `op` that sent and received the given bytes.
    pub fn record(&self, op: &str, bytes_sent: u64, bytes_received: u64) {
        let mut counts = self.lock();
        let entry = counts.entry(op.to_owned()).or_default();
        entry.calls += 1;
        entry.bytes_sent += bytes_sent;
        entry.bytes_received += bytes_received;
    }

    /// Adds received bytes to `op` without counting a call (a response body
    /// that arrived after the call was recorded).
    pub fn add_received(&self, op: &str, bytes: u64) {
        self.lock().entry(op.to_owned()).or_default().bytes_received += bytes;
    }

    /// Calls of every operation.
    pub fn total(&self) -> u64 {
        self.lock().values().map(|c| c.calls).sum()
    }

    /// Bytes sent plus bytes received, over every operation.
    pub fn total_bytes(&self) -> u64 {
        self.lock()
            .values()
            .map(|c| c.bytes_sent + c.bytes_received)
            .sum()
    }

    /// The tally of one operation (zero if it never ran).
    pub fn get(&self, op: &str) -> OpCount {
        self.lock().get(op).copied().unwrap_or_default()
    }

    /// A copy of the whole tally, by operation name.
    pub fn snapshot(&self) -> BTreeMap<String, OpCount> {
        self.lock().clone()
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        self.lock().clear();
    }
}

impl fmt::Debug for RequestCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.snapshot()).finish()
    }
}

/// The [`Storage`](chatvault_core::Storage) operations a layer can count or
/// fail: core's one operation enum.
pub use chatvault_core::layer::Op;

pub(crate) fn records_bytes(records: &[SealedRecord]) -> u64 {
    records.iter().map(|r| r.size() as u64).sum()
}

/// Locks a layer's shared state; a poisoned lock still holds valid figures
/// (a panicking test thread must not hide them from the others).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
