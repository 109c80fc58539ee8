//! Versioned encodings of what gets sealed: chats and summaries.
//!
//! Every stored encoding starts with a one-byte format version followed by
//! JSON or (newer formats) a binary encoding (`crate::binary`), so records
//! written today still open after an upgrade, and a record written by a
//! newer chatvault fails with [`Error::UnsupportedFormat`] instead of
//! being misread.
//!
//! Chat bodies: format 1 is the original JSON; format 2 adds the optional
//! per-message original time (`messages.*.written`); format 3 adds
//! branches (`messages.*.parent`, `messages.*.alternative_of` and the
//! chat's `selected` register); format 4 adds attachments. While the
//! vault's format floor is 1, a chat is written in the oldest of these
//! that holds everything it carries, so chats without branches or original
//! times stay readable by older releases, and releases that predate a
//! format refuse (rather than silently drop, then re-save without) what it
//! adds. From floor 2 every chat is written in format 5, the binary
//! encoding of the whole chat. The history lives in `docs/design.md` §4.

use crate::chat::{Chat, ChatSummary};
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Newest format version of encoded chats (record bodies): 5, the binary
/// encoding (`docs/design.md` §4), written once the vault's format floor
/// is 2.
pub const CHAT_FORMAT: u8 = 5;
/// The newest JSON chat format, written (while the vault's format floor is
/// 1) for a chat whose messages carry attachments.
pub const CHAT_FORMAT_JSON: u8 = 4;
/// The chat format written for a chat whose messages carry no attachment
/// but that has a branch (`parent`, `alternative_of`, `selected`).
pub const CHAT_FORMAT_WITHOUT_ATTACHMENTS: u8 = 3;
/// The chat format written for a chat with original times but no branches.
pub const CHAT_FORMAT_WITHOUT_BRANCHES: u8 = 2;
/// The chat format written when no message carries an original time and
/// the chat has no branches.
pub const CHAT_FORMAT_WITHOUT_ORIGINAL_TIMES: u8 = 1;
/// Newest format version of encoded summaries: 2, the binary encoding
/// (`docs/design.md` §4), written once the vault's format floor is 2.
pub const SUMMARY_FORMAT: u8 = 2;
/// The summary format every release reads: JSON, written while the vault's
/// format floor is 1.
pub const SUMMARY_FORMAT_JSON: u8 = 1;

/// Newest *vault format* this build reads and writes. A vault's format
/// floor, recorded in its authenticated key file (`docs/design.md` §3.6),
/// is the vault format every device writes; a release that reads only
/// older vault formats refuses the vault instead of misreading it.
///
/// | vault format | devices write |
/// |---|---|
/// | 1 | chat formats 1–4, JSON summaries (format 1) |
/// | 2 | + binary summaries (summary format 2) and binary chat bodies (chat format 5) |
pub const VAULT_FORMAT: u8 = 2;

/// The newest chat format a device reading vault formats up to
/// `vault_format` reads; from floor 2 it is the one every chat is written
/// in.
pub fn chat_format_of(vault_format: u8) -> u8 {
    if vault_format >= 2 {
        CHAT_FORMAT
    } else {
        CHAT_FORMAT_JSON
    }
}

/// The newest summary format a device reading vault formats up to
/// `vault_format` reads, and the one it writes at format floor
/// `vault_format`.
pub fn summary_format_of(vault_format: u8) -> u8 {
    if vault_format >= 2 {
        SUMMARY_FORMAT
    } else {
        SUMMARY_FORMAT_JSON
    }
}

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

/// Encodes a chat (the record body) in the JSON format every release
/// reading its features reads (formats 1–4, the oldest that holds the
/// chat): what a vault at format floor 1 writes.
pub fn encode_chat(chat: &Chat) -> Result<Vec<u8>> {
    let format = if chat.has_attachments() {
        CHAT_FORMAT_JSON
    } else if chat.is_branched() {
        CHAT_FORMAT_WITHOUT_ATTACHMENTS
    } else if chat.messages.values().any(|m| m.written.is_some()) {
        CHAT_FORMAT_WITHOUT_BRANCHES
    } else {
        CHAT_FORMAT_WITHOUT_ORIGINAL_TIMES
    };
    encode(format, chat)
}

/// Encodes a chat in the format a vault at format floor `floor` writes:
/// binary (format 5) from floor 2, else exactly [`encode_chat`].
///
/// Errors: [`Error::InvalidInput`] for a value the encoding cannot hold.
pub fn encode_chat_at(chat: &Chat, floor: u8) -> Result<Vec<u8>> {
    if chat_format_of(floor) < CHAT_FORMAT {
        return encode_chat(chat);
    }
    let mut out = vec![CHAT_FORMAT];
    crate::binary::put_chat(&mut out, chat)?;
    Ok(out)
}

/// Decodes a chat body of any format this build reads.
pub fn decode_chat(bytes: &[u8]) -> Result<Chat> {
    decode_chat_up_to(bytes, CHAT_FORMAT)
}

/// Decodes a chat body as a release reading chat formats up to `supported`
/// does: a newer one is [`Error::UnsupportedFormat`].
pub fn decode_chat_up_to(bytes: &[u8], supported: u8) -> Result<Chat> {
    const WHAT: &str = "chat body";
    match bytes.split_first() {
        Some((&CHAT_FORMAT, rest)) if supported >= CHAT_FORMAT => {
            crate::binary::Reader::new(WHAT, rest).chat()
        }
        _ => decode(WHAT, supported.min(CHAT_FORMAT), bytes),
    }
}

/// The text of an encoded chat body, as [`body_text`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyText<'a> {
    /// Bytes holding every title and message text of the chat (and maybe
    /// more); UTF-8 unless the body is corrupt.
    pub bytes: &'a [u8],
    /// True if strings appear in `bytes` as JSON writes them: verbatim
    /// except `"`, `\` and control characters, which are escaped. False:
    /// every string appears verbatim (a binary body's text).
    pub escaped: bool,
}

/// The text of an encoded chat body, for filters that look at bodies
/// before decoding them (a search prefilter given to
/// `Engine::all_chats_where`): the JSON of a JSON body (formats 1–4), the
/// concatenated strings of a binary one (format 5). `None` when `encoded`
/// is not a body of a format this version decodes; such a body must be
/// kept, so that decoding reports what is wrong with it.
pub fn body_text(encoded: &[u8]) -> Option<BodyText<'_>> {
    match encoded.split_first() {
        Some((&CHAT_FORMAT, rest)) => crate::binary::chat_text(rest).map(|bytes| BodyText {
            bytes,
            escaped: false,
        }),
        Some((&format, json)) if (1..=CHAT_FORMAT_JSON).contains(&format) => Some(BodyText {
            bytes: json,
            escaped: true,
        }),
        _ => None,
    }
}

/// Encodes a summary (the record's summary part) in the format every
/// release reads (JSON, format 1).
pub fn encode_summary(summary: &ChatSummary) -> Result<Vec<u8>> {
    encode(SUMMARY_FORMAT_JSON, summary)
}

/// Encodes a summary in the format a vault at format floor `floor` writes:
/// binary (format 2) from floor 2, else JSON.
pub fn encode_summary_at(summary: &ChatSummary, floor: u8) -> Result<Vec<u8>> {
    if summary_format_of(floor) == SUMMARY_FORMAT_JSON {
        return encode_summary(summary);
    }
    let mut out = Vec::with_capacity(1 + crate::binary::MIN_SUMMARY_LEN + summary.title.len());
    out.push(SUMMARY_FORMAT);
    crate::binary::put_summary(&mut out, summary)?;
    Ok(out)
}

/// Decodes a summary of any format this build reads.
pub fn decode_summary(bytes: &[u8]) -> Result<ChatSummary> {
    decode_summary_up_to(bytes, SUMMARY_FORMAT)
}

/// Decodes a summary as a release reading summary formats up to
/// `supported` does: a newer one is [`Error::UnsupportedFormat`].
pub fn decode_summary_up_to(bytes: &[u8], supported: u8) -> Result<ChatSummary> {
    const WHAT: &str = "chat summary";
    match bytes.split_first() {
        Some((&2, rest)) if supported >= 2 => {
            let mut reader = crate::binary::Reader::new(WHAT, rest);
            let summary = reader.summary()?;
            reader.finish()?;
            Ok(summary)
        }
        _ => decode(WHAT, supported, bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Role;
    use crate::hlc::Hlc;
    use crate::ids::{ChatId, DeviceId, MessageId};
    use proptest::prelude::*;

    #[test]
    fn a_release_reading_json_summaries_only_refuses_binary_ones_by_format() {
        let chat = Chat::new(ChatId::new(), "t", Hlc::new(1, 0, DeviceId(1)));
        let binary = encode_summary_at(&chat.summary(), 2).expect("encode");
        assert!(matches!(
            decode_summary_up_to(&binary, SUMMARY_FORMAT_JSON),
            Err(Error::UnsupportedFormat {
                found: 2,
                supported: 1,
                ..
            })
        ));
        let json = encode_summary_at(&chat.summary(), 1).expect("encode");
        assert_eq!(
            decode_summary_up_to(&json, SUMMARY_FORMAT_JSON).expect("JSON reads"),
            chat.summary()
        );
        let mut newer = binary;
        newer[0] = SUMMARY_FORMAT + 1;
        assert!(matches!(
            decode_summary(&newer),
            Err(Error::UnsupportedFormat { .. })
        ));
    }

    #[test]
    fn body_text_is_the_json_or_the_strings_of_a_known_body_format_only() {
        let mut chat = Chat::new(
            ChatId::new(),
            "a \"quoted\" title",
            Hlc::new(1, 0, DeviceId(1)),
        );
        let encoded = encode_chat(&chat).expect("encode");
        let text = body_text(&encoded).expect("a known format");
        assert!(text.escaped);
        let value: serde_json::Value = serde_json::from_slice(text.bytes).expect("JSON");
        assert_eq!(value["id"], serde_json::json!(chat.id));
        chat.add_message(Role::User, "Kraków\n", Hlc::new(2, 0, DeviceId(1)));
        let binary = encode_chat_at(&chat, 2).expect("encode");
        let text = body_text(&binary).expect("a known format");
        assert!(!text.escaped);
        assert_eq!(text.bytes, "a \"quoted\" titleKraków\n".as_bytes());
        assert_eq!(body_text(&[]), None);
        assert_eq!(body_text(&[0, b'{', b'}']), None);
        assert_eq!(body_text(&[CHAT_FORMAT, 0, 0, 0, 9, b'x']), None);
        assert_eq!(body_text(&[CHAT_FORMAT + 1, b'{', b'}']), None);
    }

    #[test]
    fn floor_1_writes_the_json_formats_and_floor_2_the_binary_one() {
        let device = DeviceId(1);
        let mut chat = Chat::new(ChatId::new(), "t", Hlc::new(1, 0, device));
        chat.add_message(Role::User, "hi", Hlc::new(2, 0, device));
        assert_eq!(
            encode_chat_at(&chat, 1).expect("encode"),
            encode_chat(&chat).expect("encode")
        );
        let binary = encode_chat_at(&chat, 2).expect("encode");
        assert_eq!(binary[0], CHAT_FORMAT);
        assert_eq!(decode_chat(&binary).expect("decode"), chat);
        assert_eq!(chat_format_of(1), CHAT_FORMAT_JSON);
        assert_eq!(chat_format_of(2), CHAT_FORMAT);
        // What a release reading vault format 1 (chat formats up to 4)
        // does with it: refuses, by number.
        let err = decode_chat_up_to(&binary, chat_format_of(1)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnsupportedFormat {
                    found: 5,
                    supported: 4,
                    ..
                }
            ),
            "{err}"
        );
        let json = encode_chat_at(&chat, 1).expect("encode");
        assert_eq!(
            decode_chat_up_to(&json, chat_format_of(1)).expect("JSON reads"),
            chat
        );
    }

    #[test]
    fn unknown_roles_and_flags_in_a_binary_body_are_corrupt() {
        let device = DeviceId(1);
        let mut chat = Chat::new(ChatId::new(), "", Hlc::new(1, 0, device));
        chat.add_message(Role::Tool, "", Hlc::new(2, 0, device));
        let encoded = encode_chat_at(&chat, 2).expect("encode");
        // format, text_len, id, created, title_len, title, starred: flags.
        let chat_flags = 1 + 4 + 16 + 20 + 4 + 20 + 20;
        let mut bad = encoded.clone();
        bad[chat_flags] |= 0x80;
        assert!(matches!(decode_chat(&bad), Err(Error::Corrupt { .. })));
        // flags, selected, count, then the message: id, created, body: role.
        let role = chat_flags + 1 + 20 + 4 + 16 + 20 + 20;
        assert_eq!(encoded[role], 3);
        let mut bad = encoded.clone();
        bad[role] = 4;
        assert!(matches!(decode_chat(&bad), Err(Error::Corrupt { .. })));
        let message_flags = role + 1 + 4 + 4;
        assert_eq!(message_flags, encoded.len() - 1);
        let mut bad = encoded;
        bad[message_flags] = 0x10;
        assert!(matches!(decode_chat(&bad), Err(Error::Corrupt { .. })));
    }

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
            matches!(err, Error::UnsupportedFormat { found, .. } if found == u32::from(CHAT_FORMAT) + 1),
            "{err}"
        );
    }

    #[test]
    fn chats_without_original_times_keep_format_1_and_imported_ones_use_2() {
        let device = DeviceId(1);
        let mut chat = Chat::new(ChatId::new(), "t", Hlc::new(1, 0, device));
        chat.add_message(Role::User, "typed here", Hlc::new(2, 0, device));
        assert_eq!(encode_chat(&chat).expect("encode")[0], 1);
        chat.insert_written_message(
            MessageId::new(),
            Role::Assistant,
            "imported",
            Hlc::new(3, 0, device),
            Some(1_700_000_000_123),
        );
        let bytes = encode_chat(&chat).expect("encode");
        assert_eq!(bytes[0], 2);
        assert_eq!(decode_chat(&bytes).expect("decode"), chat);
    }

    #[test]
    fn a_format_1_body_written_before_original_times_still_opens() {
        // Bytes as release 0.1 wrote them (no `written` field).
        let old = br#"{"id":"0190f5f0-0000-7000-8000-000000000001","created":{"t":1,"c":0,"d":1},"title":{"v":"old","at":{"t":1,"c":0,"d":1}},"starred":{"v":false,"at":{"t":1,"c":0,"d":1}},"messages":{"0190f5f0-0000-7000-8000-000000000002":{"id":"0190f5f0-0000-7000-8000-000000000002","created":{"t":2,"c":0,"d":1},"body":{"v":{"role":"user","content":"hi"},"at":{"t":2,"c":0,"d":1}}}}}"#;
        let mut bytes = vec![1];
        bytes.extend_from_slice(old);
        let chat = decode_chat(&bytes).expect("a format 1 body opens");
        let message = chat.messages()[0];
        assert_eq!(message.written, None);
        assert_eq!(message.written_millis(), 2);
        assert_eq!(encode_chat(&chat).expect("encode"), bytes);
    }

    #[test]
    fn a_branched_chat_is_format_3_and_a_format_2_reader_refuses_it_by_number() {
        let device = DeviceId(1);
        let mut chat = Chat::new(ChatId::new(), "t", Hlc::new(1, 0, device));
        let answer = chat.add_message(Role::Assistant, "first", Hlc::new(2, 0, device));
        assert_eq!(encode_chat(&chat).expect("encode")[0], 1);
        chat.add_alternative(answer, "regenerated", Hlc::new(3, 0, device));
        let bytes = encode_chat(&chat).expect("encode");
        assert_eq!(bytes[0], CHAT_FORMAT_WITHOUT_ATTACHMENTS);
        assert_eq!(decode_chat(&bytes).expect("decode"), chat);
        // What a release that reads up to format 2 does with it.
        let err = decode::<Chat>("chat body", CHAT_FORMAT_WITHOUT_BRANCHES, &bytes).unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnsupportedFormat {
                    found: 3,
                    supported: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("format version 3"), "{err}");
    }

    #[test]
    fn a_chat_with_an_attachment_is_format_4_and_a_format_3_reader_refuses_it_by_number() {
        let device = DeviceId(1);
        let mut chat = Chat::new(ChatId::new(), "t", Hlc::new(1, 0, device));
        chat.add_message(Role::User, "text only", Hlc::new(2, 0, device));
        assert_eq!(encode_chat(&chat).expect("encode")[0], 1);
        let attachment = crate::chat::Attachment {
            id: crate::ids::BlobId([3; 32]),
            name: "plan.pdf".to_string(),
            media_type: "application/pdf".to_string(),
            size: 12_345,
        };
        let id = chat.add_message_with_attachments(
            Role::User,
            "see the plan",
            vec![attachment.clone()],
            Hlc::new(3, 0, device),
        );
        let bytes = encode_chat(&chat).expect("encode");
        assert_eq!(bytes[0], CHAT_FORMAT_JSON);
        let decoded = decode_chat(&bytes).expect("decode");
        assert_eq!(decoded, chat);
        assert_eq!(decoded.attachments(), vec![(id, &attachment)]);
        // Editing the text keeps the attachment.
        chat.edit_message(id, "see the new plan", Hlc::new(4, 0, device));
        assert_eq!(chat.messages[&id].attachments(), [attachment]);
        // What a release that reads up to format 3 does with it: refuses,
        // by number, rather than dropping the attachment and re-saving.
        let err = decode::<Chat>("chat body", CHAT_FORMAT_WITHOUT_ATTACHMENTS, &bytes).unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnsupportedFormat {
                    found: 4,
                    supported: 3,
                    ..
                }
            ),
            "{err}"
        );
        // Deleting the message drops its attachment from the state.
        chat.delete_message(id, Hlc::new(5, 0, device));
        assert!(!chat.has_attachments());
        assert!(chat.attachments().is_empty());
    }

    #[test]
    fn empty_and_malformed_json_are_corrupt() {
        assert!(matches!(decode_chat(&[]), Err(Error::Corrupt { .. })));
        assert!(matches!(
            decode_chat(&[CHAT_FORMAT_JSON, b'{']),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            decode_summary(&[SUMMARY_FORMAT, b'[', b']']),
            Err(Error::Corrupt { .. })
        ));
    }

    fn any_chat() -> impl Strategy<Value = Chat> {
        let message = (
            any::<u8>(),
            "\\PC{0,12}",
            0u64..1000,
            proptest::option::of(any::<u64>()),
            any::<bool>(),
        );
        (
            any::<[u8; 16]>(),
            "\\PC{0,12}",
            proptest::collection::vec(message, 0..6),
        )
            .prop_map(|(id, title, messages)| {
                let device = DeviceId(9);
                let mut chat = Chat::new(ChatId::from_bytes(id), title, Hlc::new(1, 0, device));
                for (n, text, at, written, deleted) in messages {
                    let id = MessageId::from_bytes([n; 16]);
                    let at = Hlc::new(at, 0, device);
                    // Some messages get a place in a tree (format 3).
                    let place = |k: u8| (n % k == 0).then(|| MessageId::from_bytes([n / 2; 16]));
                    chat.insert(crate::chat::NewMessage {
                        id,
                        role: Role::Tool,
                        content: text,
                        created: at,
                        written,
                        parent: place(3),
                        alternative_of: place(5),
                        // Some carry an attachment (format 4).
                        attachments: (n % 4 == 1)
                            .then(|| crate::chat::Attachment {
                                id: crate::ids::BlobId([n; 32]),
                                name: format!("f{n}.png"),
                                media_type: "image/png".to_string(),
                                size: u64::from(n),
                            })
                            .into_iter()
                            .collect(),
                    });
                    if n % 7 == 0 {
                        chat.select(id, at);
                    }
                    if deleted {
                        chat.delete_message(id, at);
                    }
                }
                chat
            })
    }

    proptest! {
        #[test]
        fn chats_round_trip_through_the_encoding(chat in any_chat()) {
            prop_assert_eq!(decode_chat(&encode_chat(&chat).expect("encode")).expect("decode"), chat.clone());
            let summary = chat.summary();
            prop_assert_eq!(decode_summary(&encode_summary(&summary).expect("encode")).expect("decode"), summary.clone());
            for floor in 1..=VAULT_FORMAT {
                let encoded = encode_summary_at(&summary, floor).expect("encode");
                prop_assert_eq!(encoded[0], summary_format_of(floor));
                prop_assert_eq!(decode_summary(&encoded).expect("decode"), summary.clone());
            }
        }

        #[test]
        fn binary_chats_round_trip_deterministically_and_merge_alike(
            chat in any_chat(),
            other in any_chat(),
        ) {
            let encoded = encode_chat_at(&chat, 2).expect("encode");
            prop_assert_eq!(encoded[0], CHAT_FORMAT);
            let decoded = decode_chat(&encoded).expect("decode");
            prop_assert_eq!(&decoded, &chat);
            prop_assert_eq!(encode_chat_at(&decoded, 2).expect("encode"), encoded.clone());
            prop_assert_eq!(encode_chat_at(&chat.clone(), 2).expect("encode"), encoded);
            // Merging decoded states is merging the states.
            let mut other = other;
            other.id = chat.id;
            let mut merged = chat.clone();
            merged.merge(&other);
            let mut decoded_merged = decoded;
            decoded_merged.merge(
                &decode_chat(&encode_chat_at(&other, 2).expect("encode")).expect("decode"),
            );
            prop_assert_eq!(&decoded_merged, &merged);
            let remerged = decode_chat(&encode_chat_at(&merged, 2).expect("encode")).expect("decode");
            prop_assert_eq!(remerged, merged);
        }

        #[test]
        fn truncated_or_extended_binary_chats_are_errors(
            chat in any_chat(),
            cut in any::<prop::sample::Index>(),
            extra in any::<u8>(),
        ) {
            let encoded = encode_chat_at(&chat, 2).expect("encode");
            let cut = cut.index(encoded.len());
            prop_assert!(decode_chat(&encoded[..cut]).is_err());
            let mut longer = encoded.clone();
            longer.push(extra);
            prop_assert!(decode_chat(&longer).is_err());
        }

        #[test]
        fn truncated_or_extended_binary_summaries_are_errors(
            chat in any_chat(),
            cut in any::<prop::sample::Index>(),
            extra in any::<u8>(),
        ) {
            let encoded = encode_summary_at(&chat.summary(), 2).expect("encode");
            let cut = cut.index(encoded.len());
            prop_assert!(decode_summary(&encoded[..cut]).is_err());
            let mut longer = encoded.clone();
            longer.push(extra);
            prop_assert!(decode_summary(&longer).is_err());
        }

        #[test]
        fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_chat(&bytes);
            let mut binary = vec![CHAT_FORMAT];
            binary.extend_from_slice(&bytes);
            let _ = decode_chat(&binary);
            let _ = body_text(&binary);
            let _ = decode_summary(&bytes);
        }
    }
}
