//! [`Maintainer`]: [`Storage::maintain`](chatvault_core::Storage::maintain) for the layout:
//! compaction when enough has been committed since the newest snapshot and
//! no device compacted lately, both thresholds jittered so devices sharing a
//! vault spread out. Several devices compacting at once is safe (see
//! `docs/design.md` §5.2), only wasteful, which the jitter makes rare.

use crate::compaction::Compactor;
use crate::counted::count_requests;
use crate::log::Log;
use crate::objects::Objects;
use crate::options::MaintenancePolicy;
use chatvault_core::{MaintenanceBudget, MaintenanceReport, Result};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// `value` stretched by a random factor in `[1, 1.5)`.
fn jittered<T: Into<f64>>(value: T) -> f64 {
    value.into() * (1.0 + rand::random::<f64>() / 2.0)
}

/// Decides when to compact a vault, and does.
#[derive(Debug)]
pub(crate) struct Maintainer {
    objects: Arc<Objects>,
    log: Arc<Log>,
    compactor: Compactor,
    policy: MaintenancePolicy,
    /// When this handle last decided to compact.
    maintained_at: Mutex<Option<Instant>>,
}

impl Maintainer {
    /// Maintains `log` with `compactor` as `policy` says.
    pub(crate) fn new(
        objects: Arc<Objects>,
        log: Arc<Log>,
        compactor: Compactor,
        policy: MaintenancePolicy,
    ) -> Self {
        Self {
            objects,
            log,
            compactor,
            policy,
            maintained_at: Mutex::new(None),
        }
    }

    /// The compaction it runs.
    pub(crate) fn compactor(&self) -> &Compactor {
        &self.compactor
    }

    /// Compacts if the policy says it is due (or `budget.force`).
    pub(crate) async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        let (outcome, requests) = count_requests(self.maintain_counted(budget)).await;
        let mut report = outcome?;
        report.requests = requests;
        Ok(report)
    }

    async fn maintain_counted(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        let policy = &self.policy;
        if !budget.force && !self.due(policy).await? {
            return Ok(MaintenanceReport::default());
        }
        let compacted = self.compactor.compact(policy.compact.clone()).await?;
        Ok(MaintenanceReport {
            ran: true,
            removed_entries: compacted.log_entries_deleted as u64,
            removed_objects: (compacted.snapshots_deleted
                + compacted.blobs_deleted
                + compacted.keyring_versions_deleted) as u64,
            requests: 0,
        })
    }

    /// Whether compaction is due: first from what this handle knows (no
    /// request when it synced within the claim delay), then confirmed with one LIST of the snapshots, which also
    /// shows another device's recent compaction.
    async fn due(&self, policy: &MaintenancePolicy) -> Result<bool> {
        let min_interval = Duration::from_secs_f64(jittered(policy.min_interval.as_secs_f64()));
        let threshold = jittered(policy.entries as f64);
        let head = {
            let mut state = self.log.lock().await;
            self.log.ensure_loaded(&mut state).await?;
            // After a sync round (the engine's schedule) the index is at the
            // head and this costs nothing; otherwise one LIST brings it there.
            if !self.log.at_head_recently(&state) {
                self.log.refresh(&mut state, None).await?;
            }
            if self
                .maintained_at
                .lock()
                .await
                .is_some_and(|at| at.elapsed() < min_interval)
            {
                return Ok(false);
            }
            let since = state.index().head().saturating_sub(state.snapshot_seq());
            if (since as f64) < threshold {
                return Ok(false);
            }
            state.index().head()
        };
        let newest = self
            .objects
            .list_numbered(self.objects.layout().snap_dir(), 0)
            .await?
            .pop();
        if let Some((seq, meta)) = newest {
            self.log.lock().await.note_snapshot(seq);
            if (head.saturating_sub(seq) as f64) < threshold {
                return Ok(false);
            }
            let age = SystemTime::now()
                .duration_since(SystemTime::from(meta.last_modified))
                .unwrap_or_default();
            if age < min_interval {
                return Ok(false);
            }
        }
        *self.maintained_at.lock().await = Some(Instant::now());
        Ok(true)
    }
}
