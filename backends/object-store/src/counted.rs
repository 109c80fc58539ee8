//! Counting the requests one task makes, for
//! [`MaintenanceReport::requests`](chatvault_core::MaintenanceReport::requests):
//! every handle talks to its store through a [`HookedStore`](crate::HookedStore)
//! with the [`Counted`] hook, which adds one to the counter of the task it
//! runs in, if that task set one with [`count_requests`]. Other tasks sharing
//! the handle are not counted.

use crate::hooked::{StoreHook, StoreOp};
use object_store::path::Path;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

tokio::task_local! {
    static REQUESTS: Arc<AtomicU64>;
}

/// Runs `work`, returning its output and the requests it made.
pub(crate) async fn count_requests<T>(work: impl Future<Output = T>) -> (T, u64) {
    let counter = Arc::new(AtomicU64::new(0));
    let output = REQUESTS.scope(Arc::clone(&counter), work).await;
    (output, counter.load(Ordering::Relaxed))
}

/// Counts each request for the task that makes it.
#[derive(Debug)]
pub(crate) struct Counted;

impl StoreHook for Counted {
    fn before(&self, _: StoreOp, _: Option<&Path>) -> object_store::Result<()> {
        let _ = REQUESTS.try_with(|counter| counter.fetch_add(1, Ordering::Relaxed));
        Ok(())
    }
}
