//! Stable fuzz drivers (proptest) for the bodies this client parses from
//! PostgREST: the RPC answers (pull and get pages, push results, the key
//! file) and error bodies. Arbitrary and mutated valid bodies must give a
//! typed error or a value, never a panic; decoded records keep the bounds
//! the client relies on.
//!
//! CI runs proptest's default case count; `PROPTEST_CASES` raises it.

use crate::error::{is_token_rejection, map_error, PostgrestError};
use crate::wire::{parse_response, GetPage, PullPage, PushResult, WireKeyring};
use chatvault_core::{ChatId, Error, Result};
use proptest::prelude::*;

const PULL: &str = r#"{"changes":[
 {"chat":"0190a6c4-1a2b-7c3d-8e4f-5a6b7c8d9e0f","version":3,"deleted":false,"summary":"c3VtbWFyeQ==","body":"Ym9keQ=="},
 {"chat":"0190a6c4-1a2b-7c3d-8e4f-5a6b7c8d9e10","version":9,"deleted":true,"summary":"","body":null}],
 "cursor":41,"more":true,"head":57}"#;
const GET: &str = r#"{"records":[
 {"chat":"0190a6c4-1a2b-7c3d-8e4f-5a6b7c8d9e0f","version":3,"deleted":false,"summary":"c3VtbWFyeQ==","body":"Ym9keQ=="}],
 "deferred":["0190a6c4-1a2b-7c3d-8e4f-5a6b7c8d9e11"]}"#;
const PUSH: &str = r#"[{"ok":true,"version":4},{"ok":false,"current":7}]"#;
const KEYRING: &str = r#"{"version":2,"bytes":"Y2hhdHZhdWx0IGtleSBmaWxl"}"#;
const ERROR: &str = r#"{"code":"PT413","message":"record too large","details":"{\"size\":9000,\"limit\":4096}","hint":null}"#;

fn is_corrupt(error: &Error) -> bool {
    matches!(error, Error::Corrupt { .. })
}

/// Parses `body` as every answer the client reads, and decodes what
/// parses the way the storage does: each outcome typed, none a panic.
fn parse_all(body: &[u8]) -> std::result::Result<(), TestCaseError> {
    let decode_records =
        |records: Vec<crate::wire::WireRecord>| -> std::result::Result<(), TestCaseError> {
            for record in records {
                let base64_len = record.summary.len() + record.body.as_ref().map_or(0, String::len);
                for with_body in [false, true] {
                    let record = crate::wire::WireRecord {
                        chat: record.chat,
                        version: record.version,
                        deleted: record.deleted,
                        summary: record.summary.clone(),
                        body: record.body.clone(),
                    };
                    match record.into_record(with_body) {
                        Ok(sealed) => {
                            prop_assert!(i64::try_from(sealed.version).is_ok());
                            prop_assert!(sealed.size() <= base64_len);
                            prop_assert!(with_body || sealed.body.is_none());
                        }
                        Err(e) => prop_assert!(is_corrupt(&e), "{e}"),
                    }
                }
            }
            Ok(())
        };
    match parse_response::<PullPage>("chatvault_pull", body) {
        Ok(page) => decode_records(page.changes)?,
        Err(e) => prop_assert!(is_corrupt(&e), "{e}"),
    }
    match parse_response::<GetPage>("chatvault_get", body) {
        Ok(page) => decode_records(page.records)?,
        Err(e) => prop_assert!(is_corrupt(&e), "{e}"),
    }
    if let Err(e) = parse_response::<Vec<PushResult>>("chatvault_push", body) {
        prop_assert!(is_corrupt(&e), "{e}");
    }
    if let Err(e) = parse_response::<PushResult>("chatvault_keyring_put", body) {
        prop_assert!(is_corrupt(&e), "{e}");
    }
    match parse_response::<Option<WireKeyring>>("chatvault_keyring_get", body) {
        Ok(Some(keyring)) => match crate::wire::decode(&keyring.bytes, "key file") {
            Ok(bytes) => prop_assert!(bytes.len() <= keyring.bytes.len()),
            Err(e) => prop_assert!(is_corrupt(&e), "{e}"),
        },
        Ok(None) => {}
        Err(e) => prop_assert!(is_corrupt(&e), "{e}"),
    }
    Ok(())
}

/// An error body under every status class: always some typed error, and
/// the message keeps at most the first 200 bytes of a non-JSON body.
fn map_all(body: &[u8], status: u16) -> std::result::Result<(), TestCaseError> {
    let parsed = PostgrestError::parse(body);
    if serde_json::from_slice::<serde_json::Value>(body).is_err() {
        prop_assert!(parsed.message.as_ref().is_none_or(|m| m.len() <= 3 * 200));
    }
    let _ = is_token_rejection(status, &parsed);
    let error: Error = map_error(status, &parsed, Some(ChatId::new()));
    prop_assert!(!error.to_string().is_empty());
    Ok(())
}

/// Overwrites a few bytes and maybe truncates.
fn mutated(valid: &str, writes: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut out = valid.as_bytes().to_vec();
    for &(at, byte) in writes {
        let i = at % out.len();
        out[i] = byte;
    }
    if let Some(cut) = cut {
        out.truncate(cut % (out.len() + 1));
    }
    out
}

/// Bytes that look like JSON often enough to get past the first token.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"chat\"",
        "\"version\"",
        "\"changes\"",
        "\"records\"",
        "\"deferred\"",
        "\"summary\"",
        "\"body\"",
        "\"cursor\"",
        "\"ok\"",
        "\"bytes\"",
        "\"code\"",
        "\"details\"",
        "null",
        "true",
        "false",
        "0",
        "-1",
        "18446744073709551615",
        "9223372036854775808",
        "1e999",
        "\"\"",
        "\"=\"",
        "\"AAAA\"",
        "\"\\u0000\"",
        "\"0190a6c4-1a2b-7c3d-8e4f-5a6b7c8d9e0f\"",
        "\"not-a-uuid\"",
    ]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(token, 0..60).prop_map(|t| t.concat().into_bytes()),
    ]
}

proptest! {
    #[test]
    fn answers_never_panic_on_arbitrary_bodies(body in jsonish()) {
        parse_all(&body)?;
    }

    #[test]
    fn answers_never_panic_on_mutated_valid_bodies(
        which in 0usize..4,
        writes in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<Option<usize>>(),
    ) {
        let valid = [PULL, GET, PUSH, KEYRING][which];
        parse_all(&mutated(valid, &writes, cut))?;
    }

    #[test]
    fn error_bodies_never_panic(body in jsonish(), status in prop_oneof![Just(401u16), Just(409), Just(413), 100u16..600, any::<u16>()]) {
        map_all(&body, status)?;
    }

    #[test]
    fn mutated_error_bodies_never_panic(
        writes in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<Option<usize>>(),
        status in 100u16..600,
    ) {
        map_all(&mutated(ERROR, &writes, cut), status)?;
    }
}

#[test]
fn the_valid_bodies_parse() -> Result<()> {
    let pull: PullPage = parse_response("chatvault_pull", PULL.as_bytes())?;
    assert_eq!(
        (pull.changes.len(), pull.cursor, pull.head),
        (2, 41, Some(57))
    );
    let get: GetPage = parse_response("chatvault_get", GET.as_bytes())?;
    assert_eq!((get.records.len(), get.deferred.len()), (1, 1));
    let push: Vec<PushResult> = parse_response("chatvault_push", PUSH.as_bytes())?;
    assert_eq!(push.len(), 2);
    let keyring: Option<WireKeyring> = parse_response("chatvault_keyring_get", KEYRING.as_bytes())?;
    assert_eq!(keyring.map(|k| k.version), Some(2));
    assert!(matches!(
        map_error(400, &PostgrestError::parse(ERROR.as_bytes()), None),
        Error::TooLarge {
            size: 9000,
            limit: 4096
        }
    ));
    Ok(())
}
