//! Supabase client: PostgREST error bodies under any status (`fuzzing::error_body`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chatvault_supabase::fuzzing::error_body(data));
