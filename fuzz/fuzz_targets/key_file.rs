//! A key file from the server, opened with a device identity: a typed
//! error, never a panic (passphrase slots cost scrypt per input, so the
//! identity path is what runs at fuzzing speed).
#![no_main]
use chatvault_core::envelope::{EnvelopeCipher, Unlock};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn unlock() -> &'static Unlock {
    static UNLOCK: OnceLock<Unlock> = OnceLock::new();
    UNLOCK.get_or_init(|| Unlock::Identity(age::x25519::Identity::generate()))
}

fuzz_target!(|data: &[u8]| {
    let _ = EnvelopeCipher::from_key_file(data, unlock());
});
