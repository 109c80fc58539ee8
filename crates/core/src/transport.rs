//! The [`Transport`] trait: when the sync engine should pull.
//!
//! [`Polling`] is the built-in transport: a configurable interval (5 s by
//! default) with jitter, and exponential backoff while pulls fail. A backend
//! with push (filesystem notifications, Realtime) wraps polling as a safety
//! net, so a lost notification delays a change by at most one interval.

use async_trait::async_trait;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How the previous pull went; transports use it for backoff.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PullOutcome {
    /// The pull succeeded (with or without changes).
    Ok,
    /// The pull failed with a retriable error.
    Failed,
}

/// A source of wake-ups for the sync engine.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Returns when the engine should pull next. `previous` is how the last
    /// pull went.
    async fn wait(&self, previous: PullOutcome);
}

/// Polls on an interval with jitter, backing off exponentially while pulls
/// fail.
///
/// ```
/// use chatvault_core::transport::Polling;
/// use std::time::Duration;
/// let polling = Polling::new(Duration::from_secs(5)).with_max_backoff(Duration::from_secs(120));
/// assert_eq!(polling.interval(), Duration::from_secs(5));
/// ```
#[derive(Debug)]
pub struct Polling {
    interval: Duration,
    jitter: f64,
    max_backoff: Duration,
    failures: AtomicU32,
}

impl Default for Polling {
    fn default() -> Self {
        Self::new(Duration::from_secs(5))
    }
}

impl Polling {
    /// Polls every `interval` (±10 % jitter), backing off up to 5 minutes.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            jitter: 0.1,
            max_backoff: Duration::from_secs(300),
            failures: AtomicU32::new(0),
        }
    }

    /// Sets the jitter as a fraction of the interval (0.0 to 1.0).
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// Sets the longest delay backoff may reach.
    pub fn with_max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// The base interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The delay before the next pull after `failures` consecutive failed
    /// pulls, before jitter: `interval × 2^failures`, capped.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.min(20));
        self.interval
            .saturating_mul(factor)
            .min(self.max_backoff.max(self.interval))
    }

    /// Records `previous` and returns the delay to wait, jitter included.
    pub fn next_delay(&self, previous: PullOutcome) -> Duration {
        let failures = match previous {
            PullOutcome::Ok => {
                self.failures.store(0, Ordering::Relaxed);
                0
            }
            PullOutcome::Failed => self
                .failures
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1),
        };
        let base = self.backoff(failures);
        let spread = base.as_secs_f64() * self.jitter;
        let offset = if spread > 0.0 {
            rand::random::<f64>() * 2.0 * spread - spread
        } else {
            0.0
        };
        // Jitter above a near-`Duration::MAX` interval would not fit in a
        // Duration; such an interval needs no jitter anyway.
        Duration::try_from_secs_f64((base.as_secs_f64() + offset).max(0.0)).unwrap_or(base)
    }
}

#[async_trait]
impl Transport for Polling {
    async fn wait(&self, previous: PullOutcome) {
        tokio::time::sleep(self.next_delay(previous)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_failure_and_is_capped() {
        let p = Polling::new(Duration::from_secs(5)).with_max_backoff(Duration::from_secs(60));
        assert_eq!(p.backoff(0), Duration::from_secs(5));
        assert_eq!(p.backoff(1), Duration::from_secs(10));
        assert_eq!(p.backoff(3), Duration::from_secs(40));
        assert_eq!(p.backoff(4), Duration::from_secs(60));
        assert_eq!(p.backoff(1000), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_success_resets_backoff() {
        let p = Polling::new(Duration::from_secs(10)).with_jitter(0.2);
        for _ in 0..200 {
            let d = p.next_delay(PullOutcome::Ok).as_secs_f64();
            assert!((8.0..=12.0).contains(&d), "{d}");
        }
        p.next_delay(PullOutcome::Failed);
        let after_two = p.next_delay(PullOutcome::Failed).as_secs_f64();
        assert!((32.0..=48.0).contains(&after_two), "{after_two}");
        let reset = p.next_delay(PullOutcome::Ok).as_secs_f64();
        assert!((8.0..=12.0).contains(&reset), "{reset}");
    }

    #[tokio::test(start_paused = true)]
    async fn polling_waits_about_one_interval() {
        let p = Polling::new(Duration::from_secs(5)).with_jitter(0.0);
        let start = tokio::time::Instant::now();
        p.wait(PullOutcome::Ok).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[test]
    fn jitter_on_the_longest_interval_stays_within_a_duration() {
        let p = Polling::new(Duration::MAX).with_jitter(0.1);
        let least = Duration::MAX.as_secs_f64() * 0.9;
        for _ in 0..50 {
            let d = p.next_delay(PullOutcome::Failed).as_secs_f64();
            assert!(d >= least, "{d}");
        }
    }
}
