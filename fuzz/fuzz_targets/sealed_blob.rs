//! A sealed blob from the server, opened with the vault's key: a typed
//! error or, only for a blob this key sealed, the plaintext.
#![no_main]
use chatvault_core::envelope::EnvelopeCipher;
use chatvault_core::{Aad, ChatId, Cipher, Error, Part, VaultId};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn fixture() -> &'static (EnvelopeCipher, Aad) {
    static FIXTURE: OnceLock<(EnvelopeCipher, Aad)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let aad = Aad {
            vault: cipher.vault(),
            chat: ChatId::new(),
            part: Part::Body,
            version: 1,
        };
        (cipher, aad)
    })
}

fuzz_target!(|data: &[u8]| {
    let (cipher, aad) = fixture();
    let _ = EnvelopeCipher::sealed_key_id(data);
    match cipher.open(aad, data) {
        Ok(_) => panic!("forged a blob without the key"),
        Err(error) => assert!(matches!(
            error,
            Error::Corrupt { .. }
                | Error::UnsupportedFormat { .. }
                | Error::UnknownKeyId { .. }
                | Error::Tampered { .. }
        )),
    }
});
