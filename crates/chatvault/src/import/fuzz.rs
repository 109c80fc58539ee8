//! Stable fuzz drivers (proptest) for the import parsers: ChatGPT and
//! Claude exports (JSON or zip) and chatvault JSON. Arbitrary bytes,
//! JSON-shaped token soup and mutated valid exports must give
//! [`Error::InvalidInput`] or chats, never a panic; what parses stays
//! proportional to the input, and a zip never unpacks past its bound.
//!
//! CI runs proptest's default case count; `PROPTEST_CASES` raises it.

use super::{read_bytes, MAX_UNZIPPED_BYTES};
use crate::{Chat, Error};
use proptest::prelude::*;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

const CHATGPT: &[u8] = include_bytes!("../../tests/fixtures/chatgpt-conversations.json");
const CLAUDE: &[u8] = include_bytes!("../../tests/fixtures/claude-conversations.json");

fn file() -> &'static Path {
    Path::new("fuzz.json")
}

/// The valid exports mutations start from: both fixtures and the chatvault
/// JSON export of the ChatGPT one.
fn valid() -> &'static [Vec<u8>; 3] {
    static VALID: OnceLock<[Vec<u8>; 3]> = OnceLock::new();
    VALID.get_or_init(|| {
        let (chats, _) = read_bytes(file(), CHATGPT.to_vec(), MAX_UNZIPPED_BYTES).expect("fixture");
        let export = crate::export::export(chats.iter());
        let own = serde_json::to_vec_pretty(&export).expect("export");
        [CHATGPT.to_vec(), CLAUDE.to_vec(), own]
    })
}

fn zip_of(json: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("export/conversations.json", options)
        .expect("entry");
    zip.write_all(json).expect("write");
    zip.finish().expect("finish").into_inner()
}

/// Parses `bytes`; a typed error or chats no larger than the input.
fn check(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let len = bytes.len();
    match read_bytes(file(), bytes, MAX_UNZIPPED_BYTES) {
        Ok((chats, _)) => {
            let text: usize = chats
                .iter()
                .flat_map(Chat::messages)
                .map(|m| m.content().len())
                .sum();
            // Placeholders ("[image]", "[file: …]") may exceed what they
            // replace, a bounded amount per part.
            prop_assert!(
                text <= 32 * len + 64,
                "{text} text bytes from {len} input bytes"
            );
        }
        Err(e) => prop_assert!(matches!(e, Error::InvalidInput { .. }), "{e}"),
    }
    Ok(())
}

fn mutated(valid: &[u8], writes: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut out = valid.to_vec();
    for &(at, byte) in writes {
        let i = at % out.len();
        out[i] = byte;
    }
    if let Some(cut) = cut {
        out.truncate(cut % (out.len() + 1));
    }
    out
}

/// Token soup in the exports' vocabulary, so that inputs get past the
/// JSON parser and into the format readers.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop::sample::select(vec![
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "\"mapping\"",
        "\"current_node\"",
        "\"parent\"",
        "\"children\"",
        "\"message\"",
        "\"author\"",
        "\"role\"",
        "\"user\"",
        "\"tool\"",
        "\"content\"",
        "\"content_type\"",
        "\"parts\"",
        "\"text\"",
        "\"create_time\"",
        "\"conversation_id\"",
        "\"chat_messages\"",
        "\"sender\"",
        "\"human\"",
        "\"uuid\"",
        "\"created_at\"",
        "\"2024-03-01T12:00:00Z\"",
        "\"format\"",
        "\"chatvault-json/1\"",
        "\"chats\"",
        "\"a\"",
        "\"b\"",
        "null",
        "true",
        "1e300",
        "-1",
        "0.5",
        "\"\"",
    ]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        prop::collection::vec(token, 0..80).prop_map(|t| t.concat().into_bytes()),
    ]
}

proptest! {
    #[test]
    fn imports_never_panic_on_arbitrary_input(bytes in jsonish(), zipped in any::<bool>()) {
        check(if zipped { zip_of(&bytes) } else { bytes })?;
    }

    #[test]
    fn imports_never_panic_on_mutated_exports(
        which in 0usize..3,
        writes in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<Option<usize>>(),
        zipped in any::<bool>(),
    ) {
        let bytes = mutated(&valid()[which], &writes, cut);
        check(if zipped { zip_of(&bytes) } else { bytes })?;
    }

    #[test]
    fn imports_never_panic_on_mutated_zips(
        which in 0usize..3,
        writes in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<Option<usize>>(),
    ) {
        check(mutated(&zip_of(&valid()[which]), &writes, cut))?;
    }
}

#[test]
fn the_valid_exports_import() {
    for (n, bytes) in valid().iter().enumerate() {
        let (chats, skipped) =
            read_bytes(file(), bytes.clone(), MAX_UNZIPPED_BYTES).expect("valid export");
        assert!(!chats.is_empty(), "export {n}");
        let zipped = read_bytes(file(), zip_of(bytes), MAX_UNZIPPED_BYTES).expect("zipped");
        assert_eq!(zipped, (chats, skipped), "export {n}");
    }
}

#[test]
fn a_zip_that_unpacks_past_the_bound_is_refused_unread() {
    // 1 MiB of one byte deflates to about a kilobyte.
    let bomb = zip_of(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < 16 << 10, "{}", bomb.len());
    match read_bytes(file(), bomb, 64 << 10) {
        Err(Error::InvalidInput { message }) => {
            assert!(
                message.contains("unpacks to more than 65536 bytes"),
                "{message}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
