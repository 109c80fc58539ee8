//! Supabase client: every RPC answer parser (`fuzzing::answer`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chatvault_supabase::fuzzing::answer(data));
