//! Builds replicas for the engine benches directly (one transaction per
//! batch), sealing records exactly as the engine does: summary bound to
//! `Part::Summary`, body to `Part::Body`, both at the record's version.
//! Each bench uses part of it.

#![allow(dead_code)]

use age::secrecy::SecretString;
use chatvault::core::engine::{Engine, EngineConfig};
use chatvault::core::envelope::{EnvelopeCipher, KeyProtection, KeyTrust, Unlock};
use chatvault::core::raw::codec::{encode_chat_at, encode_summary_at};
use chatvault::core::{Aad, Cipher, Clock, Part, Replica, SealedRecord};
use chatvault::{Chat, ChatId, DeviceId, DynStorage, Role, VaultId};
use std::path::Path;
use std::sync::Arc;

pub const PASSPHRASE: &str = "bench";
const BATCH: usize = 5_000;

/// A chat like a real one: a title and a few short messages.
pub fn sample_chat(clock: &Clock, i: usize, messages: usize, message_len: usize) -> Chat {
    let mut chat = Chat::new(
        ChatId::new(),
        format!("Chat {i}: questions about topic {}", i % 97),
        clock.tick(),
    );
    let text: String = "lorem ipsum dolor sit amet "
        .chars()
        .cycle()
        .take(message_len)
        .collect();
    for m in 0..messages {
        let role = if m % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        chat.add_message(role, format!("{m}: {text}"), clock.tick());
    }
    chat
}

/// Seals `chat` as version `version` in the formats of the cipher's format
/// floor, as `Sealer::seal` does.
pub fn seal(cipher: &EnvelopeCipher, chat: &Chat, version: u64) -> SealedRecord {
    let aad = |part| Aad {
        vault: cipher.vault(),
        chat: chat.id,
        part,
        version,
    };
    let floor = cipher.format_floor();
    let summary = encode_summary_at(&chat.summary(), floor).expect("encode summary");
    let body = encode_chat_at(chat, floor).expect("encode chat");
    SealedRecord {
        chat: chat.id,
        version,
        deleted: false,
        summary: cipher
            .seal(&aad(Part::Summary), &summary)
            .expect("seal")
            .into(),
        body: Some(cipher.seal(&aad(Part::Body), &body).expect("seal").into()),
    }
}

/// A new vault's data key and its key file (passphrase [`PASSPHRASE`],
/// cheapest work factor: unlocking is not what the benches measure).
pub fn new_vault_key() -> (EnvelopeCipher, Vec<u8>) {
    new_vault_key_at(1)
}

/// [`new_vault_key`] of a vault at format floor `floor` (`docs/design.md`
/// §3.6): what [`seal`] writes with its cipher is that vault format.
pub fn new_vault_key_at(floor: u8) -> (EnvelopeCipher, Vec<u8>) {
    let cipher = EnvelopeCipher::generate(VaultId::new());
    cipher
        .raise_format_floor(floor)
        .expect("a known vault format");
    let key_file = cipher
        .to_key_file(
            &KeyProtection::for_passphrase(SecretString::from(PASSPHRASE)).with_work_factor(1),
        )
        .expect("key file");
    (cipher, key_file)
}

/// Writes a replica at `path` holding `chats` small chats plus, if
/// `big_messages > 0`, one chat with that many messages; returns the key
/// file and the big chat's id.
pub fn build_replica(path: &Path, chats: usize, big_messages: usize) -> (Vec<u8>, ChatId) {
    let (cipher, key_file) = new_vault_key();
    let replica = Replica::open(path).expect("replica");
    let clock = Clock::new(DeviceId(1));
    replica
        .set_key_file(&key_file, &KeyTrust::of(&cipher))
        .expect("key file");
    let big = sample_chat(&clock, usize::MAX, big_messages, 200);
    replica
        .store_server_records(&[seal(&cipher, &big, 1)])
        .expect("store");
    for start in (0..chats).step_by(BATCH) {
        let records: Vec<_> = (start..(start + BATCH).min(chats))
            .map(|i| seal(&cipher, &sample_chat(&clock, i, 2, 60), 1))
            .collect();
        replica.store_server_records(&records).expect("store");
    }
    (key_file, big.id)
}

/// Unlocks the fixture's key file (excluded from timings: it is the KDF).
pub fn unlock(key_file: &[u8]) -> Arc<EnvelopeCipher> {
    Arc::new(
        EnvelopeCipher::from_key_file(
            key_file,
            &Unlock::Passphrase(SecretString::from(PASSPHRASE)),
        )
        .expect("unlock"),
    )
}

/// An empty folder backend: cold start never touches it.
pub fn storage(dir: &Path) -> DynStorage {
    Arc::new(chatvault_fs::open(dir.join("server")).expect("folder"))
}

/// Cold start: open the replica and the engine, which loads the sidebar.
pub async fn open_engine(
    path: &Path,
    storage: DynStorage,
    cipher: Arc<EnvelopeCipher>,
    cache_bytes: u64,
) -> Engine {
    let replica = Replica::open(path).expect("replica");
    let mut config = EngineConfig::new(cipher.vault(), DeviceId(1));
    config.cache_bytes = cache_bytes;
    Engine::open(storage, replica, cipher, config)
        .await
        .expect("engine")
}
