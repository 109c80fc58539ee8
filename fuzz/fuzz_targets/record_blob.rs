//! Object-store layout: `chatvault_object_store::fuzzing::record_blob`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chatvault_object_store::fuzzing::record_blob(data));
