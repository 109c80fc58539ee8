//! Wall-clock time and retry backoff shared by the push and the pull.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest wait between retries of one outbox entry or skipped record.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Milliseconds since the Unix epoch (0 before it).
pub(super) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Delay before retry number `attempts` (1 s, 2 s, 4 s … capped).
pub(super) fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1)
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(16)))
        .min(MAX_BACKOFF)
}
