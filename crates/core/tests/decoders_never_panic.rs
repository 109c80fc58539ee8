//! Stable fuzz drivers (proptest): every decoder that reads bytes from the
//! server gets arbitrary bytes and mutated valid encodings, and must answer
//! with a typed error or a value, never a panic; a mutated sealed blob must
//! never open to a plaintext other than the original.
//!
//! CI runs proptest's default case count; a long run sets `PROPTEST_CASES`
//! (`just fuzz-long`). `cargo fuzz` needs nightly and the cargo-fuzz tool,
//! which this workspace does not require.

use age::x25519;
use chatvault_core::envelope::{EnvelopeCipher, KeyProtection, Unlock};
use chatvault_core::raw::codec::{
    body_text, decode_chat, decode_summary, encode_chat, encode_chat_at, encode_summary,
    CHAT_FORMAT,
};
use chatvault_core::{Aad, Chat, ChatId, Cipher, Clock, DeviceId, Part, Role, VaultId};
use proptest::prelude::*;
use std::sync::OnceLock;

/// One mutation of a valid encoding.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Overwrite(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Overwrite(at, bytes)),
    ]
}

fn mutate(valid: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = valid.to_vec();
    for m in mutations {
        let len = out.len().max(1);
        match m {
            Mutation::Flip(at, bits) => {
                if !out.is_empty() {
                    let i = at % out.len();
                    out[i] ^= bits;
                }
            }
            Mutation::Truncate(at) => out.truncate(at % len),
            Mutation::Insert(at, bytes) => {
                let i = at % (out.len() + 1);
                out.splice(i..i, bytes.iter().copied());
            }
            Mutation::Overwrite(at, bytes) => {
                for (k, b) in bytes.iter().enumerate() {
                    let i = (at + k) % len;
                    if let Some(slot) = out.get_mut(i) {
                        *slot = *b;
                    }
                }
            }
        }
    }
    out
}

struct Fixtures {
    chat: Vec<u8>,
    /// A binary body (chat format 5) with an attachment and a branch.
    binary_chat: Vec<u8>,
    summary: Vec<u8>,
    cipher: EnvelopeCipher,
    aad: Aad,
    plaintext: Vec<u8>,
    sealed: Vec<u8>,
    identity: x25519::Identity,
    key_file: Vec<u8>,
}

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let clock = Clock::new(DeviceId(3));
        let mut chat = Chat::new(ChatId::new(), "Fuzz me", clock.tick());
        chat.add_message(Role::User, "hello", clock.tick());
        chat.add_message(Role::Assistant, "hi there, ünïcödé", clock.tick());
        let cipher = EnvelopeCipher::generate(VaultId::new());
        let aad = Aad {
            vault: cipher.vault(),
            chat: chat.id,
            part: Part::Body,
            version: 3,
        };
        let plaintext = encode_chat(&chat).expect("encode");
        let sealed = cipher.seal(&aad, &plaintext).expect("seal");
        let identity = x25519::Identity::generate();
        let key_file = cipher
            .to_key_file(&KeyProtection::for_recipients([identity.to_public()]))
            .expect("key file");
        let mut branched = chat.clone();
        let answer = branched.add_message_with_attachments(
            Role::User,
            "see the plan",
            vec![chatvault_core::Attachment {
                id: chatvault_core::BlobId([7; 32]),
                name: "plan.pdf".to_string(),
                media_type: "application/pdf".to_string(),
                size: 12_345,
            }],
            clock.tick(),
        );
        branched.add_alternative(answer, "regenerated", clock.tick());
        Fixtures {
            binary_chat: encode_chat_at(&branched, 2).expect("encode binary"),
            summary: encode_summary(&chat.summary()).expect("encode summary"),
            chat: plaintext.clone(),
            cipher,
            aad,
            plaintext,
            sealed,
            identity,
            key_file,
        }
    })
}

proptest! {
    #[test]
    fn codec_decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_chat(&bytes);
        let _ = decode_summary(&bytes);
        let mut binary = vec![CHAT_FORMAT];
        binary.extend_from_slice(&bytes);
        let _ = decode_chat(&binary);
        let _ = body_text(&binary);
    }

    #[test]
    fn codec_decoders_never_panic_on_mutated_encodings(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let f = fixtures();
        let _ = decode_chat(&mutate(&f.chat, &mutations));
        let _ = decode_summary(&mutate(&f.summary, &mutations));
        // A binary body decodes only from the bytes it encodes to.
        let binary = mutate(&f.binary_chat, &mutations);
        let _ = body_text(&binary);
        if let Ok(chat) = decode_chat(&binary) {
            if binary.first() == Some(&CHAT_FORMAT) {
                prop_assert_eq!(encode_chat_at(&chat, 2).expect("encode"), binary);
            }
        }
    }

    #[test]
    fn sealed_blob_readers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let f = fixtures();
        let _ = EnvelopeCipher::sealed_key_id(&bytes);
        prop_assert!(f.cipher.open(&f.aad, &bytes).is_err(), "random bytes must not authenticate");
    }

    #[test]
    fn a_mutated_sealed_blob_never_opens_to_other_plaintext(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let f = fixtures();
        let blob = mutate(&f.sealed, &mutations);
        let _ = EnvelopeCipher::sealed_key_id(&blob);
        match f.cipher.open(&f.aad, &blob) {
            Ok(plaintext) => {
                prop_assert_eq!(&blob, &f.sealed, "only the untouched blob may open");
                prop_assert_eq!(plaintext, f.plaintext.clone());
            }
            Err(error) => prop_assert!(
                matches!(
                    error,
                    chatvault_core::Error::Tampered { .. }
                        | chatvault_core::Error::UnsupportedFormat { .. }
                        | chatvault_core::Error::UnknownKeyId { .. }
                        | chatvault_core::Error::Corrupt { .. }
                ),
                "unexpected error kind: {error}"
            ),
        }
    }

    #[test]
    fn key_file_reader_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let f = fixtures();
        let _ = EnvelopeCipher::from_key_file(&bytes, &Unlock::Identity(f.identity.clone()));
    }

    #[test]
    fn key_file_reader_never_panics_on_mutated_key_files(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let f = fixtures();
        let file = mutate(&f.key_file, &mutations);
        if let Ok(cipher) = EnvelopeCipher::from_key_file(&file, &Unlock::Identity(f.identity.clone())) {
            // Whatever a mutated file unlocks to, it must not open the
            // original blob to anything but the original plaintext.
            if let Ok(plaintext) = cipher.open(&f.aad, &f.sealed) {
                prop_assert_eq!(plaintext, f.plaintext.clone());
            }
        }
    }
}
