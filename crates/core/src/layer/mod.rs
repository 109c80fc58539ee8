//! Layers: behaviour stacked around any [`Storage`](crate::Storage) without the backend
//! knowing, in the spirit of OpenDAL's layers.
//!
//! A [`StorageLayer`] turns one storage into another that forwards every call
//! to the one inside, adding something on the way: retries ([`RetryLayer`]),
//! tracing and metrics ([`TracingLayer`]), seeded fault injection
//! ([`ChaosLayer`]: retriable and non-retriable errors, latency, timeouts,
//! responses lost after a successful write, duplicated and reordered feed
//! pages), and in tests the counting, fault and hostile layers of
//! `chatvault-conformance`. Layers compose with [`LayerExt::layer`]; the
//! last one added is the outermost, so it sees a call first:
//!
//! ```
//! use chatvault_core::layer::{RetryLayer, LayerExt, TracingLayer};
//! # fn demo(backend: chatvault_core::DynStorage) -> chatvault_core::DynStorage {
//! let tracing = TracingLayer::new();
//! let metrics = tracing.metrics();
//! let storage = backend
//!     .layer(RetryLayer::new().with_max_attempts(4))
//!     .layer(tracing);
//! // …hand `storage` to the engine; read `metrics.snapshot()` for figures.
//! # let _ = metrics;
//! # storage
//! # }
//! ```
//!
//! Writing your own layer takes a struct that implements [`LayeredStorage`]
//! (its [`inner`](LayeredStorage::inner) storage, and the methods it
//! changes: everything else forwards by itself, so a layer cannot forget a
//! method and silently bypass the backend's own implementation), and a
//! [`StorageLayer`] that builds it. [`Op`] names the operations.

use crate::storage::DynStorage;
use std::sync::{Mutex, MutexGuard};

mod chaos;
mod layered;
mod retry;
mod tracing;

pub use self::tracing::{CallStats, StorageMetrics, TracingLayer, TracingStorage};
pub use chaos::{ChaosConfig, ChaosLayer, ChaosStats, ChaosStorage, SeededRng};
pub use layered::{LayeredStorage, Op};
pub use retry::{RetryLayer, RetryStorage};

/// Locks a layer's shared figures; a poisoned lock still holds valid
/// figures (a panicking thread must not hide them from the others).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Something that wraps a storage in another: a retry policy, tracing,
/// fault injection… See the [module docs](self).
pub trait StorageLayer {
    /// Wraps `inner`; the result forwards every call to it.
    fn layer(&self, inner: DynStorage) -> DynStorage;
}

/// Stacks layers on a [`DynStorage`]: `storage.layer(a).layer(b)` makes `b`
/// the outermost.
pub trait LayerExt {
    /// Wraps `self` in `layer`.
    fn layer<L: StorageLayer>(self, layer: L) -> DynStorage;
}

impl LayerExt for DynStorage {
    fn layer<L: StorageLayer>(self, layer: L) -> DynStorage {
        layer.layer(self)
    }
}
