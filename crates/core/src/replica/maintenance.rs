//! The `meta["maintenance"]` value: when this device last ran the backend's
//! housekeeping, so the schedule outlives the process (see
//! `docs/design.md` §7 and §8.4).

use crate::{Error, Result};

/// Layout byte of the encoded mark.
const LAYOUT: u8 = 1;
/// Encoded length: layout, start time, flags, resumes.
const LEN: usize = 1 + 8 + 1 + 1;
/// Flag bit: the run finished (its outcome, success or error, was recorded).
const FINISHED: u8 = 1;

/// When this device last ran the backend's maintenance
/// ([`Storage::maintain`](crate::Storage::maintain)), kept in the replica so
/// a short process (a command-line call, an app woken briefly) knows as
/// well as a long-lived one whether it is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaintenanceMark {
    /// When the latest run started, Unix milliseconds.
    pub started_ms: u64,
    /// False while the run is under way, and afterwards if it never
    /// finished (cut at its time budget, or the process ended first): the
    /// next sync resumes it.
    pub finished: bool,
    /// How many runs in a row started as resumptions of an unfinished one.
    pub resumes: u8,
}

impl MaintenanceMark {
    /// `layout u8 = 1 ‖ started_ms u64 BE ‖ flags u8 (bit 0 finished) ‖ resumes u8`.
    pub(crate) fn encode(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[0] = LAYOUT;
        out[1..9].copy_from_slice(&self.started_ms.to_be_bytes());
        out[9] = if self.finished { FINISHED } else { 0 };
        out[10] = self.resumes;
        out
    }

    /// Reads a value written by [`encode`](Self::encode).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes {
            [LAYOUT, started @ .., flags, resumes] if started.len() == 8 => {
                let mut ms = [0u8; 8];
                ms.copy_from_slice(started);
                Ok(Self {
                    started_ms: u64::from_be_bytes(ms),
                    finished: flags & FINISHED != 0,
                    resumes: *resumes,
                })
            }
            _ => Err(Error::local_message(
                "the replica's maintenance mark is truncated or malformed".to_string(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_round_trips_and_a_short_one_is_refused() {
        let mark = MaintenanceMark {
            started_ms: 1_796_000_000_123,
            finished: false,
            resumes: 2,
        };
        assert_eq!(MaintenanceMark::decode(&mark.encode()).ok(), Some(mark));
        assert!(MaintenanceMark::decode(&mark.encode()[..10]).is_err());
        assert!(MaintenanceMark::decode(&[2; LEN]).is_err());
    }
}
