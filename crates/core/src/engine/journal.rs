//! The stream journal: a streamed reply costs what its tokens cost
//! (docs/design.md §8.5).
//!
//! [`Engine::append_to_message`](super::Engine::append_to_message) does not
//! re-seal the whole chat per token. It appends one sealed entry (the
//! token, the message, the edit's stamp and the record version it builds
//! on) to an append-only file beside the replica,
//! `<replica file>.journal`, syncs it, and updates memory. The chat is
//! sealed in full only when the journal is *folded*: the journal-applied
//! state is saved as an ordinary new version (one replica commit, queued
//! for push) and its entries become stale.
//!
//! Entries apply only on top of the version they name (`base`): once any
//! newer version of the chat is stored, which the engine derives from the
//! journal-applied state (`LocalStore::current` applies the journal), the
//! entries are stale and never applied again. So a crash anywhere, between
//! a fold's commit and the file's truncation included, neither loses an
//! acknowledged token nor applies one twice.
//!
//! File layout (integers big-endian):
//!
//! ```text
//! entry  = length u32 ‖ chat [16] ‖ seq u64 ‖ sealed (length − 24 bytes)
//! sealed = the vault cipher's seal of plain, AAD {vault, chat, Body, seq | 1 << 63}
//! plain  = format u8 (1) ‖ base u64 ‖ message [16] ‖ stamp hlc ‖ text (UTF-8)
//! ```
//!
//! Record versions never reach 2^63 (one per save), so no record body's
//! AAD equals an entry's. Reading stops at the first entry that is cut
//! short or does not open (a write the crash interrupted); the file is cut
//! there.

use super::sealing::Sealer;
use crate::binary::Reader;
use crate::chat::Chat;
use crate::hlc::Hlc;
use crate::ids::{ChatId, MessageId};
use crate::{Error, Result};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// The bit that marks an AAD version as a journal entry's.
pub(crate) const JOURNAL_BIT: u64 = 1 << 63;
const ENTRY_FORMAT: u8 = 1;
const HEADER_LEN: usize = 16 + 8;
/// Largest entry read back; anything longer is a damaged length.
const MAX_ENTRY: usize = 16 << 20;

/// One streamed append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Append {
    /// The message it extends.
    pub(crate) message: MessageId,
    /// The edit's stamp (the message body's new last-writer-wins stamp).
    pub(crate) stamp: Hlc,
    /// The text appended.
    pub(crate) text: String,
}

/// The unfolded appends of one chat.
#[derive(Debug)]
struct Pending {
    /// The record version they build on.
    base: u64,
    appends: Vec<Append>,
    bytes: usize,
    since: Instant,
}

/// The journal file and its unfolded appends, by chat.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    inner: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: Option<File>,
    next_seq: u64,
    pending: HashMap<ChatId, Pending>,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::local_message(format!(
        "cannot {what} the stream journal {}: {e}",
        path.display()
    ))
}

/// Applies `appends` to `chat`. An append to a message the chat does not
/// hold (or holds deleted) changes nothing.
pub(crate) fn apply(chat: &mut Chat, appends: &[Append]) {
    for a in appends {
        let Some(content) = chat
            .messages
            .get(&a.message)
            .filter(|m| !m.is_deleted())
            .map(|m| m.content().to_string())
        else {
            continue;
        };
        chat.edit_message(a.message, content + &a.text, a.stamp);
    }
}

fn encode(base: u64, append: &Append) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + 16 + 20 + append.text.len());
    out.push(ENTRY_FORMAT);
    out.extend_from_slice(&base.to_be_bytes());
    out.extend_from_slice(append.message.as_bytes());
    crate::binary::put_hlc(&mut out, &append.stamp);
    out.extend_from_slice(append.text.as_bytes());
    out
}

fn decode(plain: &[u8]) -> Result<(u64, Append)> {
    let mut r = Reader::new("stream journal entry", plain);
    let format = r.u8()?;
    if format != ENTRY_FORMAT {
        return Err(Error::UnsupportedFormat {
            what: "stream journal entry".to_string(),
            found: u32::from(format),
            supported: u32::from(ENTRY_FORMAT),
        });
    }
    let base = r.u64()?;
    let message = MessageId::from_bytes(r.array()?);
    let stamp = r.hlc()?;
    let text = std::str::from_utf8(r.bytes)
        .map_err(|_| r.malformed("the text is not UTF-8"))?
        .to_string();
    Ok((
        base,
        Append {
            message,
            stamp,
            text,
        },
    ))
}

impl Journal {
    /// The journal of the replica at `replica`: `<file name>.journal`
    /// beside it. Nothing is read until [`recover`](Self::recover).
    pub(crate) fn new(replica: &Path) -> Self {
        let mut name = replica
            .file_name()
            .map(ToOwned::to_owned)
            .unwrap_or_default();
        name.push(".journal");
        Self {
            path: replica.with_file_name(name),
            inner: Mutex::new(State {
                file: None,
                next_seq: 0,
                pending: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the journal a previous session left (after a crash: a clean
    /// close folds and empties it), cutting it after the last whole entry
    /// that opens, and holds its appends as unfolded. Returns the chats
    /// that have some: the caller folds each.
    pub(crate) fn recover(&self, sealer: &Sealer) -> Result<Vec<ChatId>> {
        let mut state = self.state();
        let mut file = match OpenOptions::new().read(true).write(true).open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("open", &self.path, e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| io_error("read", &self.path, e))?;
        let mut found: HashMap<ChatId, (u64, Vec<Append>)> = HashMap::new();
        let mut at = 0usize;
        let mut max_seq = 0u64;
        while let Some(entry) = self.entry_at(sealer, &bytes, at) {
            let (next, chat, seq, base, append) = entry;
            max_seq = max_seq.max(seq);
            let slot = found.entry(chat).or_insert((base, Vec::new()));
            if slot.0 != base {
                // A newer base: what came before it was folded.
                *slot = (base, Vec::new());
            }
            slot.1.push(append);
            at = next;
        }
        if at < bytes.len() {
            tracing::warn!(
                kept = at,
                dropped = bytes.len() - at,
                "the stream journal ends in an entry a crash cut short; it is dropped"
            );
            file.set_len(at as u64)
                .map_err(|e| io_error("cut", &self.path, e))?;
        }
        state.next_seq = max_seq.saturating_add(1);
        let chats = found.keys().copied().collect();
        for (chat, (base, appends)) in found {
            let bytes = appends.iter().map(|a| a.text.len()).sum();
            state.pending.insert(
                chat,
                Pending {
                    base,
                    appends,
                    bytes,
                    since: Instant::now(),
                },
            );
        }
        Ok(chats)
    }

    /// The entry at byte `at` of `bytes`: where the next starts, its chat,
    /// seq, base and append; `None` where the whole entries end.
    fn entry_at(
        &self,
        sealer: &Sealer,
        bytes: &[u8],
        at: usize,
    ) -> Option<(usize, ChatId, u64, u64, Append)> {
        let len = bytes.get(at..at + 4)?;
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        if !(HEADER_LEN..=MAX_ENTRY).contains(&len) {
            return None;
        }
        let body = bytes.get(at + 4..at + 4 + len)?;
        let chat = ChatId::from_bytes(body[..16].try_into().ok()?);
        let seq = u64::from_be_bytes(body[16..24].try_into().ok()?);
        let plain = sealer.open_journal(chat, seq, &body[HEADER_LEN..]).ok()?;
        let (base, append) = decode(&plain).ok()?;
        Some((at + 4 + len, chat, seq, base, append))
    }

    /// Keeps `append` to `chat`, whose stored version is `base`, durably:
    /// one sealed entry appended to the file and synced. Returns the bytes
    /// written and how many bytes of appends `chat` now has unfolded.
    pub(crate) fn append(
        &self,
        sealer: &Sealer,
        chat: ChatId,
        base: u64,
        append: Append,
    ) -> Result<(usize, usize)> {
        let mut state = self.state();
        let seq = state.next_seq;
        let sealed = sealer.seal_journal(chat, seq, &encode(base, &append))?;
        let len = u32::try_from(HEADER_LEN + sealed.len())
            .map_err(|_| Error::invalid("a streamed append over 4 GiB"))?;
        let mut entry = Vec::with_capacity(4 + len as usize);
        entry.extend_from_slice(&len.to_be_bytes());
        entry.extend_from_slice(chat.as_bytes());
        entry.extend_from_slice(&seq.to_be_bytes());
        entry.extend_from_slice(&sealed);
        if state.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| io_error("open", &self.path, e))?;
            state.file = Some(file);
        }
        if let Some(file) = state.file.as_mut() {
            file.write_all(&entry)
                .and_then(|()| file.sync_data())
                .map_err(|e| io_error("write", &self.path, e))?;
        }
        state.next_seq = seq.saturating_add(1);
        let pending = state.pending.entry(chat).or_insert_with(|| Pending {
            base,
            appends: Vec::new(),
            bytes: 0,
            since: Instant::now(),
        });
        if pending.base != base {
            // Stale appends of an older version (folded meanwhile).
            *pending = Pending {
                base,
                appends: Vec::new(),
                bytes: 0,
                since: Instant::now(),
            };
        }
        pending.bytes += append.text.len();
        pending.appends.push(append);
        Ok((entry.len(), pending.bytes))
    }

    /// Applies `chat`'s unfolded appends to `state`, the chat as stored at
    /// `version`; appends that build on another version are stale and
    /// dropped.
    pub(crate) fn apply_to(&self, chat: ChatId, version: u64, state: &mut Chat) {
        let mut journal = self.state();
        match journal.pending.get(&chat) {
            Some(p) if p.base == version => apply(state, &p.appends),
            Some(_) => {
                journal.pending.remove(&chat);
            }
            None => {}
        }
    }

    /// The version `chat`'s unfolded appends build on, if it has any.
    pub(crate) fn base(&self, chat: ChatId) -> Option<u64> {
        self.state().pending.get(&chat).map(|p| p.base)
    }

    /// True if no chat has unfolded appends.
    pub(crate) fn is_empty(&self) -> bool {
        self.state().pending.is_empty()
    }

    /// The chats with unfolded appends, those held at least `min_age` only.
    pub(crate) fn chats(&self, min_age: std::time::Duration) -> Vec<ChatId> {
        self.state()
            .pending
            .iter()
            .filter(|(_, p)| p.since.elapsed() >= min_age)
            .map(|(chat, _)| *chat)
            .collect()
    }

    /// Forgets `chat`'s appends that build on version `base`, once a fold
    /// stored them in a newer version (appends made since build on that
    /// newer one and stay); empties the file when no chat has any left
    /// (its entries are all stale by then: each names an older version).
    pub(crate) fn forget(&self, chat: ChatId, base: u64) -> Result<()> {
        let mut state = self.state();
        if state.pending.get(&chat).is_some_and(|p| p.base == base) {
            state.pending.remove(&chat);
        }
        if state.pending.is_empty() {
            state.file = None;
            match OpenOptions::new().write(true).open(&self.path) {
                Ok(file) => file
                    .set_len(0)
                    .map_err(|e| io_error("empty", &self.path, e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("open", &self.path, e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Role;
    use crate::envelope::EnvelopeCipher;
    use crate::ids::{DeviceId, VaultId};
    use std::sync::Arc;

    fn at(ms: u64) -> Hlc {
        Hlc::new(ms, 0, DeviceId(1))
    }

    fn setup() -> (tempfile::TempDir, Sealer, Chat, MessageId) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cipher = Arc::new(EnvelopeCipher::generate(VaultId::new()));
        let sealer = Sealer::new(cipher.clone(), cipher.vault());
        let mut chat = Chat::new(ChatId::new(), "t", at(1));
        let reply = chat.add_message(Role::Assistant, "", at(2));
        (dir, sealer, chat, reply)
    }

    fn token(message: MessageId, ms: u64, text: &str) -> Append {
        Append {
            message,
            stamp: at(ms),
            text: text.to_string(),
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_whole_entries_are_recovered_in_order() {
        let (dir, sealer, chat, reply) = setup();
        let replica = dir.path().join("r.redb");
        let journal = Journal::new(&replica);
        for (i, text) in ["a", "b", "c"].into_iter().enumerate() {
            journal
                .append(&sealer, chat.id, 4, token(reply, 10 + i as u64, text))
                .expect("append");
        }
        let path = dir.path().join("r.redb.journal");
        let whole = std::fs::metadata(&path).expect("file").len();
        // A crash in the middle of a fourth write.
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&[0, 0, 0, 90, 1, 2, 3]).expect("torn");
        drop(file);

        let again = Journal::new(&replica);
        assert_eq!(again.recover(&sealer).expect("recover"), vec![chat.id]);
        assert_eq!(std::fs::metadata(&path).expect("file").len(), whole);
        let mut state = chat.clone();
        again.apply_to(chat.id, 4, &mut state);
        assert_eq!(state.messages[&reply].content(), "abc");
        // Appends go on after the recovered ones.
        again
            .append(&sealer, chat.id, 4, token(reply, 20, "d"))
            .expect("append");
        let mut state = chat.clone();
        again.apply_to(chat.id, 4, &mut state);
        assert_eq!(state.messages[&reply].content(), "abcd");
    }

    #[test]
    fn appends_apply_only_on_the_version_they_build_on() {
        let (dir, sealer, chat, reply) = setup();
        let journal = Journal::new(&dir.path().join("r.redb"));
        journal
            .append(&sealer, chat.id, 4, token(reply, 10, "x"))
            .expect("append");
        let mut newer = chat.clone();
        journal.apply_to(chat.id, 5, &mut newer);
        assert_eq!(newer, chat, "stale on another version");
        assert_eq!(journal.base(chat.id), None, "and forgotten");
        journal.forget(chat.id, 4).expect("forget");
        assert_eq!(
            std::fs::metadata(dir.path().join("r.redb.journal"))
                .expect("file")
                .len(),
            0,
            "emptied once nothing is unfolded"
        );
    }

    #[test]
    fn a_fold_forgets_only_the_appends_it_folded() {
        let (dir, sealer, chat, reply) = setup();
        let journal = Journal::new(&dir.path().join("r.redb"));
        journal
            .append(&sealer, chat.id, 4, token(reply, 10, "folded"))
            .expect("append");
        // Version 5 was committed from the journal-applied state; an append
        // made before the fold forgets builds on it.
        journal
            .append(&sealer, chat.id, 5, token(reply, 11, "after"))
            .expect("append");
        journal.forget(chat.id, 4).expect("forget");
        assert_eq!(journal.base(chat.id), Some(5), "the later append stays");
        assert!(
            std::fs::metadata(dir.path().join("r.redb.journal"))
                .expect("file")
                .len()
                > 0
        );
    }

    #[test]
    fn an_entry_of_another_vault_or_place_does_not_open() {
        let (dir, sealer, chat, reply) = setup();
        let replica = dir.path().join("r.redb");
        Journal::new(&replica)
            .append(&sealer, chat.id, 4, token(reply, 10, "x"))
            .expect("append");
        let other = Arc::new(EnvelopeCipher::generate(VaultId::new()));
        let stranger = Sealer::new(other.clone(), other.vault());
        assert!(Journal::new(&replica)
            .recover(&stranger)
            .expect("recover")
            .is_empty());
        // Nor does a record body open as an entry, or the reverse.
        let record = sealer.seal(&chat, 0).expect("seal");
        let body = record.body.expect("body");
        assert!(sealer.open_journal(chat.id, 0, &body).is_err());
    }

    #[test]
    fn random_entry_plaintexts_never_panic() {
        for len in 0..80 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = decode(&bytes);
        }
    }
}
