//! Hybrid logical clocks: timestamps that order edits across devices.
//!
//! An [`Hlc`] is (wall-clock milliseconds, logical counter, device id),
//! compared in that order. The device id breaks ties, so two devices never
//! produce equal timestamps and every replica orders concurrent edits the
//! same way. A [`Clock`] never goes backwards, even if the system clock
//! does, and moves past every timestamp it observes from other devices.
//!
//! We keep our own small clock rather than `uhlc`: its timestamps carry a
//! 128-bit random id and an NTP64 fraction, while ours must be a stable,
//! compact serialized format under our version control, tie-break on our
//! [`DeviceId`], and accept an injected time source in tests.

use crate::ids::DeviceId;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// A hybrid logical clock timestamp. Totally ordered.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct Hlc {
    /// Wall-clock milliseconds since the Unix epoch (or later, if the clock
    /// observed a timestamp from the future).
    #[serde(rename = "t")]
    pub millis: u64,
    /// Logical counter for events within one millisecond.
    #[serde(rename = "c")]
    pub counter: u32,
    /// The device that made the timestamp: the tie-break.
    #[serde(rename = "d")]
    pub device: DeviceId,
}

impl Hlc {
    /// The smallest timestamp.
    pub const ZERO: Hlc = Hlc {
        millis: 0,
        counter: 0,
        device: DeviceId(0),
    };

    /// A timestamp from its parts.
    pub fn new(millis: u64, counter: u32, device: DeviceId) -> Self {
        Self {
            millis,
            counter,
            device,
        }
    }
}

/// A source of wall-clock milliseconds.
pub type TimeSource = Box<dyn Fn() -> u64 + Send + Sync>;

/// Produces monotonic [`Hlc`] timestamps for one device.
pub struct Clock {
    device: DeviceId,
    now: TimeSource,
    last: Mutex<(u64, u32)>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("device", &self.device)
            .finish()
    }
}

fn system_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Clock {
    /// A clock for `device` reading the system time.
    pub fn new(device: DeviceId) -> Self {
        Self::with_time_source(device, Box::new(system_millis))
    }

    /// A clock for `device` reading time from `now` (for tests).
    pub fn with_time_source(device: DeviceId, now: TimeSource) -> Self {
        Self {
            device,
            now,
            last: Mutex::new((0, 0)),
        }
    }

    /// The device this clock stamps.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// A new timestamp, greater than every one this clock made or observed.
    pub fn tick(&self) -> Hlc {
        let wall = (self.now)();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (millis, counter) = if wall > last.0 {
            (wall, 0)
        } else {
            match last.1.checked_add(1) {
                Some(c) => (last.0, c),
                // Only a stamp observed at the very end of time gets here;
                // staying there beats a panic on a peer's bogus clock.
                None => (last.0.saturating_add(1), 0),
            }
        };
        *last = (millis, counter);
        Hlc::new(millis, counter, self.device)
    }

    /// Moves the clock past `seen` (a timestamp from another device), so
    /// the next [`tick`](Self::tick) orders after it.
    pub fn observe(&self, seen: Hlc) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if (seen.millis, seen.counter) > *last {
            *last = (seen.millis, seen.counter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    proptest! {
        #[test]
        fn ticks_strictly_increase_whatever_the_wall_clock_does(
            walls in proptest::collection::vec(0u64..1_000, 1..200),
            observed in proptest::collection::vec(proptest::option::of((0u64..2_000, 0u32..5)), 1..200),
        ) {
            let wall = Arc::new(AtomicU64::new(0));
            let w = wall.clone();
            let clock = Clock::with_time_source(DeviceId(7), Box::new(move || w.load(Ordering::SeqCst)));
            let mut prev = Hlc::ZERO;
            for (i, t) in walls.iter().enumerate() {
                wall.store(*t, Ordering::SeqCst);
                if let Some(Some((m, c))) = observed.get(i) {
                    let seen = Hlc::new(*m, *c, DeviceId(9));
                    clock.observe(seen);
                    let next = clock.tick();
                    prop_assert!(next > seen);
                    prop_assert!(next > prev);
                    prev = next;
                } else {
                    let next = clock.tick();
                    prop_assert!(next > prev);
                    prev = next;
                }
            }
        }
    }

    #[test]
    fn device_id_breaks_ties() {
        let a = Hlc::new(5, 0, DeviceId(1));
        let b = Hlc::new(5, 0, DeviceId(2));
        assert!(a < b);
        assert_ne!(a, b);
    }
}
