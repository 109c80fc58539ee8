//! Chat and summary encodings as they come out of a blob: a value that
//! re-encodes and decodes the same, or a typed error.
#![no_main]
use chatvault_core::raw::codec::{decode_chat, decode_summary, encode_chat, encode_summary};
use chatvault_core::Error;
use libfuzzer_sys::fuzz_target;

fn typed(error: &Error) -> bool {
    matches!(
        error,
        Error::Corrupt { .. } | Error::UnsupportedFormat { .. }
    )
}

fuzz_target!(|data: &[u8]| {
    match decode_chat(data) {
        Ok(chat) => {
            let again = encode_chat(&chat)
                .and_then(|b| decode_chat(&b))
                .expect("round trip");
            assert_eq!(again, chat);
        }
        Err(error) => assert!(typed(&error), "{error:?}"),
    }
    match decode_summary(data) {
        Ok(summary) => {
            let again = encode_summary(&summary)
                .and_then(|b| decode_summary(&b))
                .expect("round trip");
            assert_eq!(again, summary);
        }
        Err(error) => assert!(typed(&error), "{error:?}"),
    }
});
