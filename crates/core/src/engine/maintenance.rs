//! Automatic maintenance for every client: when this device last ran the
//! backend's housekeeping ([`Storage::maintain`]) is kept in the replica
//! ([`MaintenanceMark`]), so a process that lives for one command is as
//! likely to compact as one that syncs in the background for days.
//!
//! [`due`] is the one place that decides whether a successful sync round
//! asks the backend; the backend still decides from its own thresholds
//! (log entries since the newest snapshot, time since any device
//! compacted) whether there is work. A run is spawned off the round, at
//! most one at a time; [`Engine::settle_maintenance`] bounds how long a
//! process about to exit waits for it. See `docs/design.md` §8.4.
//!
//! [`Storage::maintain`]: crate::Storage::maintain

use super::{blocking, Engine};
use crate::replica::MaintenanceMark;
use crate::storage::{DynStorage, MaintenanceBudget, MaintenanceReport};
use crate::{Error, Result};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// How long a process about to exit lets a running maintenance finish by
/// default ([`Engine::settle_maintenance`]; `ChatVault::close` and the
/// `chatvault` command use it).
pub const DEFAULT_MAINTENANCE_BUDGET: Duration = Duration::from_millis(1500);

/// Runs in a row that resume an unfinished one at the very next sync;
/// after that, an unfinished run waits for its regular slot, so a vault
/// whose maintenance never fits the budget does not cost every short
/// process its whole budget.
const MAX_RESUMES: u8 = 3;

/// Whether a successful sync round should ask the backend for maintenance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Not now.
    No,
    /// Ask; the backend's thresholds decide whether there is work.
    Ask,
    /// The latest run never finished: run it again regardless of the
    /// backend's thresholds, which no longer see what it left undone
    /// (after its snapshot, the deletions).
    Resume,
}

/// The schedule, for every caller (background sync, `sync_now`, the CLI):
/// never when `every` is `None`; on the first sync of a device that never
/// ran maintenance; at once after a run that did not finish (at most
/// [`MAX_RESUMES`] times in a row); otherwise once `every` (±20 %, jittered
/// per run so devices spread out) has passed since the latest run started.
pub(crate) fn due(every: Option<Duration>, mark: Option<MaintenanceMark>, now_ms: u64) -> Due {
    let Some(every) = every else {
        return Due::No;
    };
    let Some(mark) = mark else {
        return Due::Ask;
    };
    if !mark.finished && mark.resumes < MAX_RESUMES {
        return Due::Resume;
    }
    let period_ms = u64::try_from(jittered(every, mark.started_ms).as_millis()).unwrap_or(u64::MAX);
    let slot = match now_ms.checked_sub(mark.started_ms) {
        Some(elapsed) => elapsed >= period_ms,
        // The clock went back: a mark further ahead than one period is
        // stale, not a reason to wait for years.
        None => mark.started_ms - now_ms > period_ms,
    };
    match (slot, mark.finished) {
        (false, _) => Due::No,
        (true, true) => Due::Ask,
        (true, false) => Due::Resume,
    }
}

/// `every` scaled by a factor in `[0.8, 1.2)` derived from `seed` (the
/// latest run's start), so the period is fixed between two runs.
fn jittered(every: Duration, seed: u64) -> Duration {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    every.mul_f64(0.8 + 0.4 * unit)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What [`Engine::settle_maintenance`] found.
#[derive(Debug)]
pub enum SettledMaintenance {
    /// No automatic maintenance was running.
    Idle,
    /// It finished within the budget, with this outcome.
    Finished(Result<MaintenanceReport>),
    /// It was still running when the budget ran out and was stopped; the
    /// next sync resumes it (stopping is safe at any point: each step of a
    /// compaction leaves the vault consistent, `docs/design.md` §5.3).
    Cut,
}

/// The engine's maintenance state: the replica's mark, mirrored in memory
/// (only this process writes the replica), the running task, and the mark
/// of a spawned run that finished, still to be written.
pub(crate) struct Scheduler {
    mark: Mutex<Option<MaintenanceMark>>,
    task: Mutex<Option<JoinHandle<Result<MaintenanceReport>>>>,
    finished: Arc<Mutex<Option<MaintenanceMark>>>,
}

/// Locks a mutex whose data stays consistent across a panic (plain values).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scheduler {
    /// The schedule as the replica left it.
    pub(crate) fn new(mark: Option<MaintenanceMark>) -> Self {
        Self {
            mark: Mutex::new(mark),
            task: Mutex::new(None),
            finished: Arc::new(Mutex::new(None)),
        }
    }
}

impl Engine {
    /// After a successful round (under the sync lock, so one at a time):
    /// records a spawned run that finished since; then, if [`due`] says so
    /// and no run is under way, marks a run started in the replica and
    /// spawns it. The task holds the storage, never the engine or the
    /// replica, so dropping the engine releases the replica file at once
    /// even while the backend works; its "finished" mark is written by the
    /// next round or [`settle_maintenance`](Self::settle_maintenance) (a
    /// process that ends first leaves it "started": resumed next time).
    pub(super) async fn maintain_when_due(&self) {
        self.record_finished().await;
        let scheduler = &self.inner.maintenance;
        if lock(&scheduler.task)
            .as_ref()
            .is_some_and(|t| !t.is_finished())
        {
            return;
        }
        let mark = *lock(&scheduler.mark);
        let force = match due(self.inner.config.maintenance_every, mark, now_ms()) {
            Due::No => return,
            Due::Ask => false,
            Due::Resume => true,
        };
        let started = self.mark_started().await;
        let storage = self.inner.storage.clone();
        let finished = scheduler.finished.clone();
        let task = tokio::spawn(async move {
            let report = maintain_span(&storage, force).await;
            *lock(&finished) = Some(finished_mark(started));
            report
        });
        *lock(&scheduler.task) = Some(task);
    }

    /// Waits at most `budget` for a maintenance run that a sync round
    /// started, and stops it if it is still running then (the next sync
    /// resumes it). Call it before a short-lived process exits, so it
    /// spends a bounded time on housekeeping and leaves the rest for later;
    /// a process that keeps running need not call it.
    pub async fn settle_maintenance(&self, budget: Duration) -> SettledMaintenance {
        let handle = lock(&self.inner.maintenance.task).take();
        let Some(mut handle) = handle else {
            return SettledMaintenance::Idle;
        };
        match tokio::time::timeout(budget, &mut handle).await {
            Ok(Ok(outcome)) => {
                self.record_finished().await;
                SettledMaintenance::Finished(outcome)
            }
            Ok(Err(e)) => SettledMaintenance::Finished(Err(Error::local_message(format!(
                "the maintenance task failed: {e}"
            )))),
            Err(_) => {
                handle.abort();
                // Returns at the task's next await point: at once.
                let _ = handle.await;
                tracing::info!(
                    ?budget,
                    "maintenance did not finish within its budget; the next sync resumes it"
                );
                SettledMaintenance::Cut
            }
        }
    }

    /// One run on demand: marked started, the backend's `maintain`, marked
    /// finished (also after an error, which waits for the next slot).
    pub(super) async fn run_maintenance(&self, force: bool) -> Result<MaintenanceReport> {
        let started = self.mark_started().await;
        let report = maintain_span(&self.inner.storage, force).await;
        self.mark_finished(started).await;
        report
    }

    /// Records a run as started (and not finished): a run that never
    /// reaches [`mark_finished`](Self::mark_finished) is resumed.
    async fn mark_started(&self) -> MaintenanceMark {
        let previous = *lock(&self.inner.maintenance.mark);
        let started = MaintenanceMark {
            started_ms: now_ms(),
            finished: false,
            resumes: match previous {
                Some(p) if !p.finished => p.resumes.saturating_add(1),
                _ => 0,
            },
        };
        self.record_mark(started).await;
        started
    }

    async fn mark_finished(&self, started: MaintenanceMark) {
        self.record_mark(finished_mark(started)).await;
    }

    /// Writes the mark of a spawned run that finished, if any, unless a
    /// later run (on demand) has been marked since.
    async fn record_finished(&self) {
        let finished = lock(&self.inner.maintenance.finished).take();
        let current = *lock(&self.inner.maintenance.mark);
        if let Some(mark) = finished {
            if current.is_some_and(|c| c.started_ms == mark.started_ms) {
                self.record_mark(mark).await;
            }
        }
    }

    async fn record_mark(&self, mark: MaintenanceMark) {
        *lock(&self.inner.maintenance.mark) = Some(mark);
        let written = blocking(&self.inner, move |inner| {
            let mut write = inner.local.replica.write()?;
            write.set_maintenance(&mark)?;
            write.commit()
        })
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot record the maintenance schedule in the replica");
        }
    }
}

/// The mark of a run that started as `started` and has finished.
fn finished_mark(started: MaintenanceMark) -> MaintenanceMark {
    MaintenanceMark {
        finished: true,
        resumes: 0,
        ..started
    }
}

/// The backend's `maintain` in a `maintenance` span with its counts.
async fn maintain_span(storage: &DynStorage, force: bool) -> Result<MaintenanceReport> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "maintenance",
        force,
        ran = tracing::field::Empty,
        removed_entries = tracing::field::Empty,
        removed_objects = tracing::field::Empty,
        requests = tracing::field::Empty,
    );
    async move {
        let report = storage.maintain(MaintenanceBudget { force }).await;
        let span = tracing::Span::current();
        match &report {
            Ok(r) => {
                span.record("ran", r.ran);
                span.record("removed_entries", r.removed_entries);
                span.record("removed_objects", r.removed_objects);
                span.record("requests", r.requests);
            }
            Err(e) => tracing::warn!(error = %e, "maintenance failed; it runs again later"),
        }
        report
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;
    const EVERY: Option<Duration> = Some(Duration::from_secs(600));

    fn mark(started_ms: u64, finished: bool, resumes: u8) -> Option<MaintenanceMark> {
        Some(MaintenanceMark {
            started_ms,
            finished,
            resumes,
        })
    }

    #[test]
    fn switched_off_is_never_due() {
        assert_eq!(due(None, None, 0), Due::No);
        assert_eq!(due(None, mark(0, false, 0), u64::MAX), Due::No);
    }

    #[test]
    fn a_device_that_never_ran_it_asks_at_its_first_sync() {
        assert_eq!(due(EVERY, None, 1_000 * MINUTE), Due::Ask);
    }

    #[test]
    fn a_finished_run_is_due_again_after_the_jittered_period() {
        let start = 1_000 * MINUTE;
        assert_eq!(
            due(EVERY, mark(start, true, 0), start + 7 * MINUTE),
            Due::No
        );
        assert_eq!(
            due(EVERY, mark(start, true, 0), start + 13 * MINUTE),
            Due::Ask
        );
        let periods: std::collections::HashSet<u128> = (0..50)
            .map(|i| jittered(Duration::from_secs(600), start + i * 997).as_millis())
            .collect();
        assert!(periods.len() > 40, "the period varies from run to run");
        assert!(periods.iter().all(|&p| (480_000..720_000).contains(&p)));
    }

    #[test]
    fn an_unfinished_run_resumes_at_once_a_few_times_then_waits_for_its_slot() {
        let start = 1_000 * MINUTE;
        assert_eq!(due(EVERY, mark(start, false, 0), start + 1), Due::Resume);
        assert_eq!(
            due(EVERY, mark(start, false, MAX_RESUMES - 1), start + 1),
            Due::Resume
        );
        assert_eq!(
            due(EVERY, mark(start, false, MAX_RESUMES), start + 1),
            Due::No
        );
        assert_eq!(
            due(EVERY, mark(start, false, MAX_RESUMES), start + 13 * MINUTE),
            Due::Resume
        );
    }

    #[test]
    fn a_mark_from_the_future_is_stale_after_one_period() {
        let start = 1_000 * MINUTE;
        assert_eq!(due(EVERY, mark(start, true, 0), start - MINUTE), Due::No);
        assert_eq!(
            due(EVERY, mark(start, true, 0), start - 20 * MINUTE),
            Due::Ask
        );
    }
}
