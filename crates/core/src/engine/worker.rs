//! Background sync: a task that runs rounds when the transport says so and
//! pushes after local saves.

use super::{Engine, Round};
use crate::transport::{Polling, PullOutcome, Transport};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running background sync. [`stop`](Self::stop) ends it after the round in
/// progress; dropping it aborts the task.
#[derive(Debug)]
pub struct SyncWorker {
    stop: watch::Sender<bool>,
    handle: Option<JoinHandle<()>>,
}

impl SyncWorker {
    /// Stops syncing and waits for the task to end (a round in progress
    /// finishes first, so nothing is left half-applied in memory).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(handle) = self.handle.take() {
            // A panic in the task has already been logged by the runtime;
            // stopping it is all that is asked here.
            let _ = handle.await;
        }
    }

    /// True while the task runs.
    pub fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }
}

impl Drop for SyncWorker {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

pub(super) fn start(engine: Engine, transport: Arc<dyn Transport>) -> SyncWorker {
    let (stop, mut stopped) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let mut outcome = PullOutcome::Ok;
        loop {
            // Back from offline: changes queued meanwhile wait out no
            // per-entry backoff, since it was the network that failed them.
            let recovering = outcome == PullOutcome::Failed;
            outcome = match engine.round(Round::background(recovering)).await {
                // A successful round also starts the backend's maintenance
                // when it is due (`maintenance.rs`).
                Ok(_) => PullOutcome::Ok,
                Err(e) => {
                    tracing::debug!(error = %e, "sync round failed; will retry");
                    PullOutcome::Failed
                }
            };
            // One wait per full round: local saves push in between without
            // restarting it, so saving while offline neither postpones the
            // next pull nor counts as another failed pull in the backoff.
            let next_pull = transport.wait(outcome);
            tokio::pin!(next_pull);
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    () = &mut next_pull => break,
                    () = engine.inner.local.committed.notified() => {
                        if let Err(e) = engine.round(Round::AFTER_SAVE).await {
                            tracing::debug!(error = %e, "push after a local save failed; will retry");
                        }
                    }
                }
            }
        }
    });
    SyncWorker {
        stop,
        handle: Some(handle),
    }
}

/// The engine's default transport: the backend's change notifications when it
/// has them, always raced with polling every `interval` as a safety net
/// (a lost notification delays a change by at most one interval).
pub(super) struct PushOrPoll {
    push: Option<Arc<dyn Transport>>,
    polling: Polling,
}

impl PushOrPoll {
    pub(super) fn new(push: Option<Arc<dyn Transport>>, interval: Duration) -> Self {
        Self {
            push,
            polling: Polling::new(interval),
        }
    }
}

#[async_trait]
impl Transport for PushOrPoll {
    async fn wait(&self, previous: PullOutcome) {
        match &self.push {
            Some(push) => {
                tokio::select! {
                    () = push.wait(previous) => {}
                    () = self.polling.wait(previous) => {}
                }
            }
            None => self.polling.wait(previous).await,
        }
    }
}
