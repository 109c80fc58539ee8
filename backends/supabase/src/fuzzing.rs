//! Entry points for coverage-guided fuzzing (`cargo fuzz`, see `fuzz/` at
//! the workspace root): bodies as PostgREST would send them, fed to every
//! parser of this client. A panic is a finding; a typed error is a pass.
//! Built only with the `fuzzing` feature; not a stable API.

use crate::error::{is_token_rejection, map_error, PostgrestError};
use crate::wire::{decode, parse_response, GetPage, PullPage, PushResult, WireKeyring, WireRecord};
use chatvault_core::{ChatId, Error};

fn assert_corrupt(error: &Error) {
    assert!(matches!(error, Error::Corrupt { .. }), "untyped: {error:?}");
}

fn records(records: Vec<WireRecord>) {
    for record in records {
        let base64_len = record.summary.len() + record.body.as_ref().map_or(0, String::len);
        match record.into_record(true) {
            Ok(sealed) => {
                assert!(i64::try_from(sealed.version).is_ok());
                assert!(sealed.size() <= base64_len);
            }
            Err(error) => assert_corrupt(&error),
        }
    }
}

/// A successful RPC answer, read as each answer the client parses.
pub fn answer(body: &[u8]) {
    match parse_response::<PullPage>("chatvault_pull", body) {
        Ok(page) => records(page.changes),
        Err(error) => assert_corrupt(&error),
    }
    match parse_response::<GetPage>("chatvault_get", body) {
        Ok(page) => records(page.records),
        Err(error) => assert_corrupt(&error),
    }
    if let Err(error) = parse_response::<Vec<PushResult>>("chatvault_push", body) {
        assert_corrupt(&error);
    }
    match parse_response::<Option<WireKeyring>>("chatvault_keyring_get", body) {
        Ok(Some(keyring)) => {
            if let Err(error) = decode(&keyring.bytes, "key file") {
                assert_corrupt(&error);
            }
        }
        Ok(None) => {}
        Err(error) => assert_corrupt(&error),
    }
}

/// An error body with the status in its first two bytes: always a typed
/// error with a message.
pub fn error_body(bytes: &[u8]) {
    let (status, body) = bytes.split_at(bytes.len().min(2));
    let status = match status {
        [a, b] => u16::from_be_bytes([*a, *b]),
        _ => 500,
    };
    let parsed = PostgrestError::parse(body);
    let _ = is_token_rejection(status, &parsed);
    let error = map_error(status, &parsed, Some(ChatId::new()));
    assert!(!error.to_string().is_empty());
}
