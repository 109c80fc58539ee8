//! Object-store layout: `chatvault_object_store::fuzzing::log_entry`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chatvault_object_store::fuzzing::log_entry(data));
