//! Helpers shared by the facade's integration tests (each test binary
//! uses part of them).
#![allow(dead_code)]

use chatvault::core::layer::SeededRng;

/// `len` bytes from `seed` that neither repeat nor compress.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The seeds of a run of crash trials: the one in `replay_var` if it is
/// set (replaying a failure), else as many as `count_var` says (default
/// `default`), drawn from the clock.
pub fn trial_seeds(replay_var: &str, count_var: &str, default: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var(replay_var) {
        return vec![seed
            .parse()
            .unwrap_or_else(|_| panic!("{replay_var} is a number"))];
    }
    let trials: u64 = std::env::var(count_var)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = SeededRng::new(base);
    (0..trials).map(|_| rng.next_u64()).collect()
}
