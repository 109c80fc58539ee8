//! [`Storage::maintain`](chatvault_core::Storage::maintain) for the layout:
//! compaction when enough has been committed since the newest snapshot and
//! no device compacted lately, both thresholds jittered so devices sharing a
//! vault spread out. Several devices compacting at once is safe (see
//! `docs/design.md` §5.2), only wasteful, which the jitter makes rare.

use crate::compaction::CompactOptions;
use crate::counted::count_requests;
use crate::ObjectStoreStorage;
use chatvault_core::{MaintenanceBudget, MaintenanceReport, Result};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// When [`Storage::maintain`](chatvault_core::Storage::maintain) compacts.
///
/// ```
/// use chatvault_object_store::{CompactOptions, MaintenancePolicy, ObjectStoreOptions};
/// use std::time::Duration;
/// let options = ObjectStoreOptions::default().with_maintenance(
///     MaintenancePolicy::default()
///         .with_entries(1_000)
///         .with_min_interval(Duration::from_secs(3600))
///         .with_compact(CompactOptions::default().with_min_age(Duration::from_secs(7200))),
/// );
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct MaintenancePolicy {
    entries: u64,
    min_interval: Duration,
    compact: CompactOptions,
}

impl Default for MaintenancePolicy {
    fn default() -> Self {
        Self {
            entries: 256,
            min_interval: Duration::from_secs(600),
            compact: CompactOptions::default(),
        }
    }
}

impl MaintenancePolicy {
    /// Compact once this many log entries were committed after the newest
    /// snapshot (jittered up to +50 %). It bounds what a new device replays
    /// entry by entry (one GET each) on top of the snapshot. Default 256.
    pub fn with_entries(mut self, entries: u64) -> Self {
        self.entries = entries.max(1);
        self
    }

    /// Compact at most this often: not if this handle ran, or the newest
    /// snapshot was written (by any device), more recently (jittered up to
    /// +50 %). Default 10 minutes.
    pub fn with_min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self
    }

    /// The compaction to run; its horizon must exceed the claim delay
    /// ([`ObjectStoreStorage::compact`] checks). Default
    /// [`CompactOptions::default`] (one hour).
    pub fn with_compact(mut self, compact: CompactOptions) -> Self {
        self.compact = compact;
        self
    }
}

/// `value` stretched by a random factor in `[1, 1.5)`.
fn jittered<T: Into<f64>>(value: T) -> f64 {
    value.into() * (1.0 + rand::random::<f64>() / 2.0)
}

impl ObjectStoreStorage {
    /// Compacts if the policy says it is due (or `budget.force`).
    pub(crate) async fn maintain_layout(
        &self,
        budget: MaintenanceBudget,
    ) -> Result<MaintenanceReport> {
        let (outcome, requests) = count_requests(self.maintain_counted(budget)).await;
        let mut report = outcome?;
        report.requests = requests;
        Ok(report)
    }

    async fn maintain_counted(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        let policy = &self.options.maintenance;
        if !budget.force && !self.due(policy).await? {
            return Ok(MaintenanceReport::default());
        }
        let compacted = self.compact(policy.compact.clone()).await?;
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
            let mut state = self.state.lock().await;
            self.ensure_loaded(&mut state).await?;
            // After a sync round (the engine's schedule) the index is at the
            // head and this costs nothing; otherwise one LIST brings it there.
            if !self.at_head_recently(&state) {
                self.refresh(&mut state, None).await?;
            }
            if state
                .maintained_at
                .is_some_and(|at| at.elapsed() < min_interval)
            {
                return Ok(false);
            }
            let since = state.index.head().saturating_sub(state.snapshot_seq);
            if (since as f64) < threshold {
                return Ok(false);
            }
            state.index.head()
        };
        let newest = self.list_numbered(self.layout.snap_dir(), 0).await?.pop();
        if let Some((seq, meta)) = newest {
            let mut state = self.state.lock().await;
            state.snapshot_seq = state.snapshot_seq.max(seq);
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
        self.state.lock().await.maintained_at = Some(Instant::now());
        Ok(true)
    }
}
