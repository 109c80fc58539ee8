//! Versioned encodings of what gets sealed: chats and summaries.
//!
//! Every stored encoding starts with a one-byte format version followed by
//! JSON, so records written today still open after an upgrade, and a record
//! written by a newer chatvault fails with
//! [`Error::UnsupportedFormat`](crate::Error::UnsupportedFormat) instead of
//! being misread.

use crate::chat::{Chat, ChatSummary};
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Format version of encoded chats (record bodies).
pub const CHAT_FORMAT: u8 = 1;
/// Format version of encoded summaries.
pub const SUMMARY_FORMAT: u8 = 1;

fn encode<T: Serialize>(format: u8, value: &T) -> Result<Vec<u8>> {
    let mut out = vec![format];
    serde_json::to_writer(&mut out, value)
        .map_err(|e| Error::invalid(format!("cannot encode value as JSON: {e}")))?;
    Ok(out)
}

fn decode<T: DeserializeOwned>(what: &str, supported: u8, bytes: &[u8]) -> Result<T> {
    let (&format, json) = bytes
        .split_first()
        .ok_or_else(|| Error::corrupt(what, "empty encoding"))?;
    if format == 0 {
        return Err(Error::corrupt(what, "format version 0 is not valid"));
    }
    if format > supported {
        return Err(Error::UnsupportedFormat {
            what: what.to_string(),
            found: u32::from(format),
            supported: u32::from(supported),
        });
    }
    serde_json::from_slice(json).map_err(|e| Error::corrupt(what, format!("malformed JSON: {e}")))
}

/// Encodes a chat (the record body).
pub fn encode_chat(chat: &Chat) -> Result<Vec<u8>> {
    encode(CHAT_FORMAT, chat)
}

/// Decodes a chat body.
pub fn decode_chat(bytes: &[u8]) -> Result<Chat> {
    decode("chat body", CHAT_FORMAT, bytes)
}

/// Encodes a summary (the record's summary part).
pub fn encode_summary(summary: &ChatSummary) -> Result<Vec<u8>> {
    encode(SUMMARY_FORMAT, summary)
}

/// Decodes a summary.
pub fn decode_summary(bytes: &[u8]) -> Result<ChatSummary> {
    decode("chat summary", SUMMARY_FORMAT, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Role;
    use crate::hlc::Hlc;
    use crate::ids::{ChatId, DeviceId};
    use proptest::prelude::*;

    #[test]
    fn chat_round_trips() {
        let mut chat = Chat::new(ChatId::new(), "hello", Hlc::new(1, 0, DeviceId(1)));
        chat.add_message(Role::Assistant, "hi there", Hlc::new(2, 0, DeviceId(1)));
        let decoded = decode_chat(&encode_chat(&chat).expect("encode")).expect("decode");
        assert_eq!(decoded, chat);
        let summary = chat.summary();
        assert_eq!(
            decode_summary(&encode_summary(&summary).expect("encode")).expect("decode"),
            summary
        );
    }

    #[test]
    fn newer_format_is_refused_with_a_typed_error() {
        let err = decode_chat(&[CHAT_FORMAT + 1, b'{', b'}']).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedFormat { found: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn empty_and_malformed_json_are_corrupt() {
        assert!(matches!(decode_chat(&[]), Err(Error::Corrupt { .. })));
        assert!(matches!(
            decode_chat(&[CHAT_FORMAT, b'{']),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            decode_summary(&[SUMMARY_FORMAT, b'[', b']']),
            Err(Error::Corrupt { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_chat(&bytes);
            let _ = decode_summary(&bytes);
        }
    }
}
