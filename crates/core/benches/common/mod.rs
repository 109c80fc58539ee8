//! What the core benches share: criterion set up for short runs, timings
//! recorded per benchmark so the ratios against a baseline of the same run
//! can be printed after criterion's own report, and the long chat they
//! measure.

#![allow(dead_code)]

use chatvault_core::chat::{Chat, Role};
use chatvault_core::{ChatId, DeviceId, Hlc, MessageId};
use criterion::Criterion;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds per unit of every batch criterion ran, per benchmark name.
static MEASURED: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

/// Criterion for these benches: 20 samples, short warm-up and measurement.
pub fn criterion() -> Criterion {
    Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

/// Runs `f` `iters` times (for `Bencher::iter_custom`) and records the
/// seconds per unit under `name`, `units` being what one call handles.
pub fn timed(name: &str, iters: u64, units: u64, f: impl Fn()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    record(name, iters * units.max(1), start.elapsed())
}

/// Like [`timed`], one unit per call, but each call first runs `setup`
/// untimed and hands its value to `f`: what is measured excludes it.
pub fn timed_each<S>(name: &str, iters: u64, setup: impl Fn() -> S, f: impl Fn(&S)) -> Duration {
    let mut elapsed = Duration::ZERO;
    for _ in 0..iters {
        let state = setup();
        let start = Instant::now();
        f(&state);
        elapsed += start.elapsed();
    }
    record(name, iters, elapsed)
}

/// Records `elapsed` over `units` under `name` (nothing for no units) and
/// hands it back.
fn record(name: &str, units: u64, elapsed: Duration) -> Duration {
    if units > 0 {
        MEASURED
            .lock()
            .expect("lock")
            .entry(name.to_string())
            .or_default()
            .push(elapsed.as_secs_f64() / units as f64);
    }
    elapsed
}

/// The median of the seconds recorded under `name`, if it ran.
pub fn median(name: &str) -> Option<f64> {
    let all = MEASURED.lock().expect("lock");
    let mut v = all.get(name)?.clone();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// The text of message `i`: 300 bytes with the line breaks and quotes chat
/// text has.
pub fn text(i: u64) -> String {
    let mut text = format!("Message {i}: ");
    while text.len() < 290 {
        text.push_str("Let's compare the \"night train\" with flying,\nthen book. ");
    }
    text.truncate(300);
    text
}

/// Adds message `i` (user and assistant in turn, one a millisecond).
pub fn add(chat: &mut Chat, i: u64) -> MessageId {
    let role = if i.is_multiple_of(2) {
        Role::User
    } else {
        Role::Assistant
    };
    chat.add_message(
        role,
        text(i),
        Hlc::new(1_700_000_000_001 + i, 0, DeviceId(7)),
    )
}

/// A chat of `messages` messages of 300 bytes.
pub fn long_chat(messages: u64) -> Chat {
    let mut chat = Chat::new(
        ChatId::new(),
        "Trip plans for the summer",
        Hlc::new(1_700_000_000_000, 0, DeviceId(7)),
    );
    for i in 0..messages {
        add(&mut chat, i);
    }
    chat
}

/// Prints, for encode and decode, the medians of `"{op} json"` and
/// `"{op} binary"` per `unit` (scaled by `scale`, named `scale_name`) and
/// their ratio.
pub fn print_json_vs_binary(unit: &str, scale: f64, scale_name: &str) {
    for op in ["encode", "decode"] {
        let (Some(json), Some(binary)) = (
            median(&format!("{op} json")),
            median(&format!("{op} binary")),
        ) else {
            continue;
        };
        println!(
            "{op}: json {:.1} {scale_name}, binary {:.1} {scale_name} per {unit}: binary takes {:.2}x the JSON time",
            json * scale,
            binary * scale,
            binary / json
        );
    }
}
