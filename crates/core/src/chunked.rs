//! Chat body format 6: a chat as a small *head* and immutable, content-
//! addressed *chunks* of messages (docs/design.md §4.3).
//!
//! The messages, in (created, id) order, are cut into chunks where a
//! message's id says so (content-defined, so the cut does not depend on
//! how the state was reached): after message `m` when `mix(m.id) %
//! SPREAD == 0` and the chunk holds at least [`MIN_MESSAGES`], or once it
//! holds [`MAX_MESSAGES`] or [`MAX_CHUNK_BYTES`]. The messages after the
//! last cut, the *tail*, stay inline in the head. The ids of the closed
//! chunks are cut the same way (by the chunk id) into level-1 *index
//! nodes*, their ids into level-2 nodes, and so on until a level closes no
//! node; the ids after the last cut of every level stay inline in the head
//! (a tree whose open right edge is the head, so it stays about
//! `INDEX_SPREAD` ids per level, a few levels for any chat). So:
//!
//! ```text
//! head  = 6 ‖ chat (format 5 layout, holding the tail messages only) ‖
//!         level_count u8 ‖ (count u32 ‖ id [32]*) per level, the top first ‖
//!         message_count u32 (of the whole chat)
//! blob  = BODY_BLOB_FORMAT (1) ‖ kind u8 ‖ chat id [16] ‖ payload
//! chunk = kind 1, payload = text_len ‖ text ‖ count ‖ message* (format 5 message layout)
//! node  = kind 2, payload = level u8 (1: names chunks) ‖ count u32 ‖ id [32]*
//! ```
//!
//! Blob ids are the vault's keyed hash of the blob's plaintext (§10.2), so
//! two devices that hold the same state make the same chunks, index nodes
//! and head, byte for byte, and upload nothing twice. Appending a message
//! changes the head only, until a cut closes the tail into one new chunk
//! (and, now and then, an index node); editing an old message changes its
//! chunk, the index node naming it and the head. The merge is untouched:
//! it runs on the assembled [`Chat`].
//!
//! This module is the format (split, assemble, the newest messages first,
//! the blobs a head names); the functions that fetch and open blobs are
//! the caller's.

use crate::binary::{self, Reader};
use crate::chat::{Chat, Message};
use crate::ids::{BlobId, ChatId};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// The chat body format of a head.
pub const CHAT_FORMAT_CHUNKED: u8 = 6;
/// The format byte of a body blob (chunk or index node).
pub const BODY_BLOB_FORMAT: u8 = 1;
/// A message closes its chunk when its mixed id is 0 modulo this (so a
/// chunk holds about this many messages).
pub const SPREAD: u64 = 4;
/// The fewest messages a chunk closes with (by id).
pub const MIN_MESSAGES: usize = 2;
/// The most messages a chunk holds.
pub const MAX_MESSAGES: usize = 16;
/// A chunk closes once its messages encode to this many bytes or more.
pub const MAX_CHUNK_BYTES: usize = 256 * 1024;
/// An id closes its index node when its mixed value is 0 modulo this.
pub const INDEX_SPREAD: u64 = 8;
/// The fewest ids an index node closes with (by id).
pub const INDEX_MIN: usize = 2;
/// The most ids an index node holds.
pub const INDEX_MAX: usize = 64;
/// The most index levels (far more than any chat needs: each level holds
/// at most half as many ids as the one below).
const MAX_LEVELS: usize = 32;

const KIND_CHUNK: u8 = 1;
const KIND_INDEX: u8 = 2;
const BLOB_HEADER_LEN: usize = 2 + 16;

/// One blob a head needs: its id and its plaintext (before sealing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyBlob {
    /// The keyed hash of `plaintext`.
    pub id: BlobId,
    /// The plaintext to seal under `id`.
    pub plaintext: Vec<u8>,
}

/// A chat in format 6: the head and every blob it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The head's plaintext (format byte included), sealed as the record's body.
    pub head: Vec<u8>,
    /// The index nodes and the chunks, in the order the head names them
    /// (each index node before its chunks).
    pub blobs: Vec<BodyBlob>,
}

/// What a head names, read without fetching anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadRefs {
    /// The ids inline in the head per level, the bottom first: chunk ids
    /// at 0, the ids of level-`l` index nodes at `l`. The chat's chunks are
    /// what the top level's ids expand to, then the next level's, down to
    /// level 0's.
    pub levels: Vec<Vec<BlobId>>,
    /// The messages of the whole chat.
    pub message_count: u32,
}

/// The newest messages of a chat, opened without the rest.
#[derive(Clone, Debug, PartialEq)]
pub struct Newest {
    /// The chat holding only the newest messages (at least the number asked
    /// for, when the chat has that many).
    pub chat: Chat,
    /// The messages of the whole chat.
    pub message_count: u32,
}

/// SplitMix64's finaliser: spreads an id's bits so every bit of the cut
/// decision depends on all of them (UUIDv7 ids start with a timestamp).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn halves(bytes: &[u8]) -> u64 {
    let mut a = [0; 8];
    let mut b = [0; 8];
    a.copy_from_slice(&bytes[..8]);
    b.copy_from_slice(&bytes[8..16]);
    mix(u64::from_be_bytes(a) ^ mix(u64::from_be_bytes(b)))
}

/// Where the messages (in order) are cut into chunks: the end (exclusive)
/// of each closed chunk. The messages after the last one are the tail.
fn chunk_ends(messages: &[&Message]) -> Vec<usize> {
    let mut ends = Vec::new();
    let (mut count, mut bytes) = (0, 0);
    for (i, m) in messages.iter().enumerate() {
        count += 1;
        bytes += binary::message_len(m);
        let by_id = count >= MIN_MESSAGES && halves(m.id.as_bytes()).is_multiple_of(SPREAD);
        if by_id || count >= MAX_MESSAGES || bytes >= MAX_CHUNK_BYTES {
            ends.push(i + 1);
            (count, bytes) = (0, 0);
        }
    }
    ends
}

/// Where ids are cut into index nodes (as [`chunk_ends`]).
fn index_ends(ids: &[BlobId]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut count = 0;
    for (i, id) in ids.iter().enumerate() {
        count += 1;
        let by_id = count >= INDEX_MIN && halves(id.as_bytes()).is_multiple_of(INDEX_SPREAD);
        if by_id || count >= INDEX_MAX {
            ends.push(i + 1);
            count = 0;
        }
    }
    ends
}

fn blob_start(kind: u8, chat: ChatId, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOB_HEADER_LEN + capacity);
    out.push(BODY_BLOB_FORMAT);
    out.push(kind);
    out.extend_from_slice(chat.as_bytes());
    out
}

fn put_ids(out: &mut Vec<u8>, ids: &[BlobId]) -> Result<()> {
    let count = u32::try_from(ids.len())
        .map_err(|_| Error::invalid("a chunked body names over 4 billion blobs"))?;
    out.extend_from_slice(&count.to_be_bytes());
    for id in ids {
        out.extend_from_slice(id.as_bytes());
    }
    Ok(())
}

/// Splits `chat` into its head and blobs; `id_of` names a blob by its
/// plaintext (the vault's keyed hash, `EnvelopeCipher::blob_id`). The same
/// state always gives the same head and blobs.
///
/// Errors: [`Error::InvalidInput`] for a string, text or count over 4 GiB.
pub fn split(chat: &Chat, id_of: &dyn Fn(&[u8]) -> BlobId) -> Result<Split> {
    let mut messages: Vec<&Message> = chat.messages.values().collect();
    messages.sort_by_key(|m| (m.created, m.id));
    let ends = chunk_ends(&messages);
    let mut chunks = Vec::with_capacity(ends.len());
    let mut start = 0;
    for &end in &ends {
        let run = &messages[start..end];
        let len: usize = run.iter().map(|m| binary::message_len(m)).sum();
        let mut plaintext = blob_start(KIND_CHUNK, chat.id, 8 + len);
        binary::put_messages(&mut plaintext, run)?;
        chunks.push(BodyBlob {
            id: id_of(&plaintext),
            plaintext,
        });
        start = end;
    }
    let mut items: Vec<BlobId> = chunks.iter().map(|c| c.id).collect();
    let mut blobs = chunks;
    // The open ids of each level, the bottom first.
    let mut levels: Vec<Vec<BlobId>> = Vec::new();
    while !items.is_empty() {
        let level = u8::try_from(levels.len() + 1)
            .map_err(|_| Error::invalid(format!("chat {} needs too many index levels", chat.id)))?;
        let mut nodes = Vec::new();
        let mut from = 0;
        for end in index_ends(&items) {
            let mut plaintext = blob_start(KIND_INDEX, chat.id, 5 + 32 * (end - from));
            plaintext.push(level);
            put_ids(&mut plaintext, &items[from..end])?;
            let id = id_of(&plaintext);
            nodes.push(id);
            blobs.push(BodyBlob { id, plaintext });
            from = end;
        }
        levels.push(items.split_off(from));
        items = nodes;
    }
    let tail = Chat {
        messages: messages[start..]
            .iter()
            .map(|m| (m.id, (*m).clone()))
            .collect(),
        ..chat_fields(chat)
    };
    let mut head = vec![CHAT_FORMAT_CHUNKED];
    binary::put_chat(&mut head, &tail)?;
    // Never more than MAX_LEVELS: each level closes at most half as many
    // nodes as it has ids.
    head.push(
        u8::try_from(levels.len())
            .map_err(|_| Error::invalid(format!("chat {} needs too many index levels", chat.id)))?,
    );
    for open in levels.iter().rev() {
        put_ids(&mut head, open)?;
    }
    let count = u32::try_from(messages.len())
        .map_err(|_| Error::invalid(format!("chat {} has over 4 billion messages", chat.id)))?;
    head.extend_from_slice(&count.to_be_bytes());
    Ok(Split { head, blobs })
}

/// `chat` without its messages.
fn chat_fields(chat: &Chat) -> Chat {
    Chat {
        id: chat.id,
        created: chat.created,
        title: chat.title.clone(),
        starred: chat.starred.clone(),
        messages: BTreeMap::new(),
        deleted: chat.deleted,
        selected: chat.selected.clone(),
    }
}

fn read_ids(reader: &mut Reader<'_>) -> Result<Vec<BlobId>> {
    let count = reader.count(32)?;
    (0..count).map(|_| Ok(BlobId(reader.array()?))).collect()
}

/// A head, read: the chat with its tail messages and what it names.
struct Head {
    tail: Chat,
    refs: HeadRefs,
}

fn read_head(head: &[u8]) -> Result<Head> {
    let Some((&format, bytes)) = head.split_first() else {
        return Err(Error::corrupt("chunked chat head", "empty"));
    };
    if format != CHAT_FORMAT_CHUNKED {
        return Err(Error::corrupt(
            "chunked chat head",
            format!("format byte {format}, not {CHAT_FORMAT_CHUNKED}"),
        ));
    }
    let mut reader = Reader::new("chunked chat head", bytes);
    let tail = reader.chat_then_more()?;
    let level_count = usize::from(reader.u8()?);
    if level_count > MAX_LEVELS {
        return Err(reader.malformed(format!("{level_count} index levels")));
    }
    let mut levels = (0..level_count)
        .map(|_| read_ids(&mut reader))
        .collect::<Result<Vec<_>>>()?;
    levels.reverse();
    let message_count = reader.u32()?;
    reader.finish()?;
    if u64::from(message_count) < tail.messages.len() as u64 {
        return Err(reader.malformed("fewer messages announced than its tail holds"));
    }
    Ok(Head {
        tail,
        refs: HeadRefs {
            levels,
            message_count,
        },
    })
}

/// What `head` names, without fetching anything.
///
/// Errors: [`Error::Corrupt`] for a head that does not read.
pub fn refs(head: &[u8]) -> Result<HeadRefs> {
    read_head(head).map(|h| h.refs)
}

/// The payload of body blob `id` of `chat`, of `kind`.
fn blob_payload<'a>(id: &BlobId, chat: ChatId, kind: u8, plaintext: &'a [u8]) -> Result<&'a [u8]> {
    let what = if kind == KIND_CHUNK {
        "body chunk"
    } else {
        "body index node"
    };
    let corrupt = |why: String| Error::corrupt(what, format!("{id}: {why}"));
    if plaintext.len() < BLOB_HEADER_LEN {
        return Err(corrupt("truncated".into()));
    }
    if plaintext[0] != BODY_BLOB_FORMAT {
        return Err(Error::UnsupportedFormat {
            what: "body blob".into(),
            found: plaintext[0].into(),
            supported: BODY_BLOB_FORMAT.into(),
        });
    }
    if plaintext[1] != kind {
        return Err(corrupt(format!("kind {}, not {kind}", plaintext[1])));
    }
    if plaintext[2..BLOB_HEADER_LEN] != chat.as_bytes()[..] {
        return Err(corrupt(format!("it belongs to another chat, not {chat}")));
    }
    Ok(&plaintext[BLOB_HEADER_LEN..])
}

/// The ids index node `id` of `chat` names, which must be of `level`
/// (1: chunk ids; `l`: ids of level `l - 1` nodes).
pub fn node_ids(id: &BlobId, chat: ChatId, level: u8, plaintext: &[u8]) -> Result<Vec<BlobId>> {
    let payload = blob_payload(id, chat, KIND_INDEX, plaintext)?;
    let mut reader = Reader::new("body index node", payload);
    let found = reader.u8()?;
    if found != level {
        return Err(reader.malformed(format!("{id} is of level {found}, not {level}")));
    }
    let ids = read_ids(&mut reader)?;
    reader.finish()?;
    if ids.is_empty() {
        return Err(reader.malformed("an index node names nothing"));
    }
    Ok(ids)
}

/// The messages of chunk `id` of `chat`, in (created, id) order.
pub fn chunk_messages(id: &BlobId, chat: ChatId, plaintext: &[u8]) -> Result<Vec<Message>> {
    let payload = blob_payload(id, chat, KIND_CHUNK, plaintext)?;
    let mut reader = Reader::new("body chunk", payload);
    let messages = reader.messages()?;
    reader.finish()?;
    if messages.is_empty() {
        return Err(reader.malformed("a chunk holds no message"));
    }
    Ok(messages)
}

/// Fetches a blob's opened plaintext by id (the caller opens it and checks
/// that it is the blob asked for). Called from several threads at once by
/// [`assemble`].
pub type Fetch<'a> = dyn Fn(&BlobId) -> Result<Vec<u8>> + Sync + 'a;

/// Chunks each thread of [`assemble`] opens at least (so a chat of fewer
/// than twice this many is opened on the calling thread only).
const PER_THREAD: usize = 8;

/// The messages of `chunks` of `chat`, in order: fetched, opened and
/// decoded on every core for a long chat (each chunk is sealed and decoded
/// on its own, which a whole-chat body cannot be).
fn open_runs(chat: ChatId, chunks: &[BlobId], fetch: &Fetch<'_>) -> Result<Vec<Vec<Message>>> {
    crate::parallel::par_map(chunks.iter().collect(), PER_THREAD, |id| {
        chunk_messages(id, chat, &fetch(id)?)
    })
    .into_iter()
    .collect()
}

/// The chunk ids `ids` (of `level`: 0 for chunks, else index nodes)
/// expand to, oldest first, added to `out`.
fn expand(
    chat: ChatId,
    level: usize,
    ids: &[BlobId],
    fetch: &Fetch<'_>,
    out: &mut Vec<BlobId>,
) -> Result<()> {
    if level == 0 {
        out.extend_from_slice(ids);
        return Ok(());
    }
    let node_level =
        u8::try_from(level).map_err(|_| Error::corrupt("chunked chat", "too many levels"))?;
    for id in ids {
        let below = node_ids(id, chat, node_level, &fetch(id)?)?;
        expand(chat, level - 1, &below, fetch, out)?;
    }
    Ok(())
}

/// Every chunk id `refs` names, oldest first, fetching its index nodes.
pub fn all_chunks(chat: ChatId, refs: &HeadRefs, fetch: &Fetch<'_>) -> Result<Vec<BlobId>> {
    let mut out = Vec::new();
    for (level, ids) in refs.levels.iter().enumerate().rev() {
        expand(chat, level, ids, fetch, &mut out)?;
    }
    Ok(out)
}

/// Adds `messages` (a run, in order) before the messages of `chat`,
/// checking they are older than every message already there.
fn prepend(
    chat: &mut Chat,
    earliest: &mut Option<(crate::Hlc, crate::MessageId)>,
    run: Vec<Message>,
) -> Result<()> {
    if let (Some(last), Some(first)) = (run.last(), *earliest) {
        if (last.created, last.id) >= first {
            return Err(Error::corrupt(
                "chunked chat",
                format!("message {} is out of order across chunks", last.id),
            ));
        }
    }
    if let Some(first) = run.first() {
        *earliest = Some((first.created, first.id));
    }
    for m in run {
        if chat.messages.insert(m.id, m).is_some() {
            return Err(Error::corrupt("chunked chat", "a message id appears twice"));
        }
    }
    Ok(())
}

/// The whole chat from its head, fetching every blob it names.
///
/// Errors: [`Error::Corrupt`] for a head or blob that does not read, a blob
/// of another chat or kind, messages out of order or repeated, or a count
/// that does not match; what `fetch` returns.
pub fn assemble(head: &[u8], fetch: &Fetch<'_>) -> Result<Chat> {
    let Head { mut tail, refs } = read_head(head)?;
    let chunks = all_chunks(tail.id, &refs, fetch)?;
    let mut earliest = tail.messages.values().map(|m| (m.created, m.id)).min();
    for run in open_runs(tail.id, &chunks, fetch)?.into_iter().rev() {
        prepend(&mut tail, &mut earliest, run)?;
    }
    if tail.messages.len() as u64 != u64::from(refs.message_count) {
        return Err(Error::corrupt(
            "chunked chat",
            format!(
                "{} messages found, the head announces {}",
                tail.messages.len(),
                refs.message_count
            ),
        ));
    }
    Ok(tail)
}

/// The newest `n` messages (or all, in a shorter chat), fetching only the
/// blobs that hold them: the head's tail, then chunks from the newest back.
///
/// Errors: as [`assemble`].
pub fn newest(head: &[u8], n: usize, fetch: &Fetch<'_>) -> Result<Newest> {
    let Head { mut tail, refs } = read_head(head)?;
    let mut earliest = tail.messages.values().map(|m| (m.created, m.id)).min();
    // Ids still to open, per level, the bottom (chunks) last: the newest
    // chunk is the last id of the lowest level that has one.
    let mut stack: Vec<(usize, Vec<BlobId>)> =
        refs.levels.iter().cloned().enumerate().rev().collect();
    while tail.messages.len() < n {
        let Some((level, ids)) = stack.last_mut() else {
            break;
        };
        let level = *level;
        let Some(id) = ids.pop() else {
            stack.pop();
            continue;
        };
        if level == 0 {
            let run = chunk_messages(&id, tail.id, &fetch(&id)?)?;
            prepend(&mut tail, &mut earliest, run)?;
        } else {
            let node_level = u8::try_from(level)
                .map_err(|_| Error::corrupt("chunked chat", "too many levels"))?;
            stack.push((level - 1, node_ids(&id, tail.id, node_level, &fetch(&id)?)?));
        }
    }
    Ok(Newest {
        chat: tail,
        message_count: refs.message_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{NewMessage, Role};
    use crate::hlc::Hlc;
    use crate::ids::{DeviceId, MessageId};
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::hash::{Hash, Hasher};

    /// A stand-in for the vault's keyed hash: deterministic, 32 bytes.
    fn id_of(bytes: &[u8]) -> BlobId {
        let mut out = [0; 32];
        for (i, part) in out.chunks_mut(8).enumerate() {
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new_with_keys(i as u64, 7);
            bytes.hash(&mut h);
            part.copy_from_slice(&h.finish().to_be_bytes());
        }
        BlobId(out)
    }

    /// The blobs of `split` by id.
    fn store(split: &Split) -> HashMap<BlobId, Vec<u8>> {
        split
            .blobs
            .iter()
            .map(|b| (b.id, b.plaintext.clone()))
            .collect()
    }

    fn fetcher(
        blobs: &HashMap<BlobId, Vec<u8>>,
    ) -> impl Fn(&BlobId) -> Result<Vec<u8>> + Sync + '_ {
        |id| {
            blobs.get(id).cloned().ok_or_else(|| Error::NotFound {
                what: format!("blob {id}"),
            })
        }
    }

    fn message(n: u32, seed: u64, at: u64, text: String) -> NewMessage {
        let mut id = [0; 16];
        id[..8].copy_from_slice(&mix(seed ^ u64::from(n)).to_be_bytes());
        id[8..12].copy_from_slice(&n.to_be_bytes());
        NewMessage {
            id: MessageId::from_bytes(id),
            role: if n.is_multiple_of(2) {
                Role::User
            } else {
                Role::Assistant
            },
            content: text,
            created: Hlc::new(at, 0, DeviceId(3)),
            written: None,
            parent: None,
            alternative_of: None,
            attachments: Vec::new(),
        }
    }

    /// A chat of `count` messages of about `len` bytes, one a millisecond.
    fn long_chat(count: u32, len: usize, seed: u64) -> Chat {
        let mut chat = Chat::new(
            ChatId::from_bytes([5; 16]),
            "long",
            Hlc::new(1, 0, DeviceId(3)),
        );
        for n in 0..count {
            chat.insert(message(n, seed, 10 + u64::from(n), "x".repeat(len)));
        }
        chat
    }

    fn any_long_chat() -> impl Strategy<Value = Chat> {
        (
            any::<u64>(),
            proptest::collection::vec((0u64..5_000, "\\PC{0,40}", any::<bool>()), 0..300),
            "\\PC{0,12}",
        )
            .prop_map(|(seed, messages, title)| {
                let device = DeviceId(9);
                let mut chat =
                    Chat::new(ChatId::from_bytes([7; 16]), title, Hlc::new(1, 0, device));
                for (n, (at, text, deleted)) in messages.into_iter().enumerate() {
                    let n = n as u32;
                    let mut m = message(n, seed, at, text);
                    if n % 5 == 3 {
                        m.parent = Some(MessageId::from_bytes([1; 16]));
                    }
                    let id = m.id;
                    chat.insert(m);
                    if deleted {
                        chat.delete_message(id, Hlc::new(at + 1, 0, device));
                    }
                }
                chat
            })
    }

    #[test]
    fn a_long_chat_is_cut_into_chunks_and_index_nodes_and_reassembles() {
        let chat = long_chat(1_000, 300, 1);
        let split = split(&chat, &id_of).expect("split");
        let refs = refs(&split.head).expect("refs");
        let chunks = split
            .blobs
            .iter()
            .filter(|b| b.plaintext[1] == KIND_CHUNK)
            .count();
        assert!(
            (60..=250).contains(&chunks),
            "{chunks} chunks for 1,000 messages (about 1,000 / {SPREAD} expected)"
        );
        assert!(refs.levels.len() >= 2, "1,000 messages need index nodes");
        let inline: usize = refs.levels.iter().map(Vec::len).sum();
        assert!(inline < 40, "{inline} ids inline in the head");
        assert_eq!(refs.message_count, 1_000);
        assert!(
            split.head.len() < 4_096,
            "the head of a 1,000-message chat is {} bytes",
            split.head.len()
        );
        let blobs = store(&split);
        assert_eq!(
            assemble(&split.head, &fetcher(&blobs)).expect("assemble"),
            chat
        );
    }

    #[test]
    fn appending_a_message_changes_the_head_and_at_most_one_chunk_and_one_node_per_level() {
        let mut chat = long_chat(1_000, 300, 2);
        let mut held: HashMap<BlobId, Vec<u8>> = store(&split(&chat, &id_of).expect("split"));
        let mut closed = 0;
        for n in 1_000..1_200 {
            chat.insert(message(n, 2, 10 + u64::from(n), "y".repeat(300)));
            let next = split(&chat, &id_of).expect("split");
            let new: Vec<&BodyBlob> = next
                .blobs
                .iter()
                .filter(|b| !held.contains_key(&b.id))
                .collect();
            let chunks = new.iter().filter(|b| b.plaintext[1] == KIND_CHUNK).count();
            let nodes = new.len() - chunks;
            let levels = refs(&next.head).expect("refs").levels.len();
            assert!(
                chunks <= 1 && nodes < levels.max(1),
                "append {n}: {chunks} new chunks, {nodes} new index nodes, {levels} levels"
            );
            closed += chunks;
            held.extend(store(&next));
            assert_eq!(
                assemble(&next.head, &fetcher(&held)).expect("assemble"),
                chat
            );
        }
        assert!(closed > 5, "200 appends closed only {closed} chunks");
    }

    #[test]
    fn editing_an_old_message_changes_only_its_chunk_and_the_nodes_above_it() {
        let mut chat = long_chat(1_000, 300, 3);
        let before = split(&chat, &id_of).expect("split");
        let held = store(&before);
        let old = *chat
            .messages
            .values()
            .min_by_key(|m| (m.created, m.id))
            .map(|m| &m.id)
            .expect("a message");
        assert!(chat.edit_message(old, "edited", Hlc::new(99_999, 0, DeviceId(3))));
        let after = split(&chat, &id_of).expect("split");
        let new: Vec<&BodyBlob> = after
            .blobs
            .iter()
            .filter(|b| !held.contains_key(&b.id))
            .collect();
        // The chunk and the node above it on each level: one, or two where
        // the chunk's new id moves a cut of that level.
        let levels = refs(&after.head).expect("refs").levels.len();
        assert!(
            new.len() <= 1 + 2 * (levels - 1),
            "{} new blobs for one edited message ({levels} levels)",
            new.len()
        );
        assert_eq!(
            new.iter().filter(|b| b.plaintext[1] == KIND_CHUNK).count(),
            1
        );
    }

    #[test]
    fn a_head_is_refused_by_number_where_a_whole_body_is_expected() {
        let split = split(&long_chat(40, 10, 6), &id_of).expect("split");
        match crate::codec::decode_chat(&split.head) {
            Err(Error::UnsupportedFormat {
                found, supported, ..
            }) => assert_eq!((found, supported), (6, 5)),
            other => panic!("a format-6 head decoded as a whole body: {other:?}"),
        }
        assert!(crate::codec::body_text(&split.head).is_none());
    }

    #[test]
    fn the_newest_messages_open_from_the_last_chunks_only() {
        let chat = long_chat(1_000, 300, 4);
        let split = split(&chat, &id_of).expect("split");
        let blobs = store(&split);
        let fetched = std::sync::atomic::AtomicUsize::new(0);
        let newest = newest(&split.head, 50, &|id: &BlobId| {
            fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            fetcher(&blobs)(id)
        })
        .expect("newest");
        let fetched = fetched.into_inner();
        assert_eq!(newest.message_count, 1_000);
        assert!(newest.chat.messages.len() >= 50);
        assert!(fetched < 20, "{fetched} blobs fetched for 50 messages");
        let mut ordered: Vec<&Message> = chat.messages.values().collect();
        ordered.sort_by_key(|m| (m.created, m.id));
        let want: Vec<MessageId> = ordered[1_000 - newest.chat.messages.len()..]
            .iter()
            .map(|m| m.id)
            .collect();
        let mut got: Vec<&Message> = newest.chat.messages.values().collect();
        got.sort_by_key(|m| (m.created, m.id));
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), want);
        // Asking for more than there are gives the whole chat.
        let all = super::newest(&split.head, 5_000, &fetcher(&blobs)).expect("all");
        assert_eq!(all.chat, chat);
    }

    #[test]
    fn a_missing_swapped_or_foreign_blob_is_an_error_not_a_shorter_chat() {
        let chat = long_chat(300, 100, 5);
        let split = split(&chat, &id_of).expect("split");
        let blobs = store(&split);
        let chunk_ids: Vec<BlobId> = split
            .blobs
            .iter()
            .filter(|b| b.plaintext[1] == KIND_CHUNK)
            .map(|b| b.id)
            .collect();
        let mut missing = blobs.clone();
        missing.remove(&chunk_ids[3]);
        assert!(matches!(
            assemble(&split.head, &fetcher(&missing)),
            Err(Error::NotFound { .. })
        ));
        // Two chunks swapped: messages out of order.
        let mut swapped = blobs.clone();
        let (a, b) = (blobs[&chunk_ids[1]].clone(), blobs[&chunk_ids[2]].clone());
        swapped.insert(chunk_ids[1], b);
        swapped.insert(chunk_ids[2], a);
        assert!(matches!(
            assemble(&split.head, &fetcher(&swapped)),
            Err(Error::Corrupt { .. })
        ));
        // A chunk of another chat with the same messages.
        let mut other = chat.clone();
        other.id = ChatId::from_bytes([6; 16]);
        let foreign = super::split(&other, &id_of).expect("split");
        let mut mixed = blobs.clone();
        let first_foreign = foreign
            .blobs
            .iter()
            .find(|b| b.plaintext[1] == KIND_CHUNK)
            .expect("a chunk");
        mixed.insert(chunk_ids[0], first_foreign.plaintext.clone());
        assert!(matches!(
            assemble(&split.head, &fetcher(&mixed)),
            Err(Error::Corrupt { .. })
        ));
        // A chunk offered as an index node.
        let mut kinds = blobs.clone();
        let node = split
            .blobs
            .iter()
            .find(|b| b.plaintext[1] == KIND_INDEX)
            .map(|b| b.id);
        if let Some(node) = node.as_ref() {
            kinds.insert(*node, blobs[&chunk_ids[0]].clone());
            assert!(matches!(
                assemble(&split.head, &fetcher(&kinds)),
                Err(Error::Corrupt { .. })
            ));
        }
    }

    proptest! {
        #[test]
        fn split_then_assemble_is_the_chat_and_the_same_state_splits_alike(
            chat in any_long_chat(),
            other in any_long_chat(),
        ) {
            let a = split(&chat, &id_of).expect("split");
            let blobs = store(&a);
            prop_assert_eq!(&assemble(&a.head, &fetcher(&blobs)).expect("assemble"), &chat);
            // The merge law holds through the format: merging assembled
            // states is merging the states, and both orders of a merge
            // split to the same bytes.
            let mut other = other;
            other.id = chat.id;
            let ab = Chat::merged(&chat, &other);
            let ba = Chat::merged(&other, &chat);
            let (sab, sba) = (split(&ab, &id_of).expect("split"), split(&ba, &id_of).expect("split"));
            prop_assert_eq!(&sab, &sba);
            let b = split(&other, &id_of).expect("split");
            let mut all = blobs.clone();
            all.extend(store(&b));
            let mut reassembled = assemble(&a.head, &fetcher(&all)).expect("assemble");
            reassembled.merge(&assemble(&b.head, &fetcher(&all)).expect("assemble"));
            prop_assert_eq!(reassembled, ab);
        }

        #[test]
        fn cut_or_extended_heads_and_blobs_are_errors(
            chat in any_long_chat(),
            cut in any::<prop::sample::Index>(),
            which in any::<prop::sample::Index>(),
            extra in any::<u8>(),
        ) {
            let s = split(&chat, &id_of).expect("split");
            let blobs = store(&s);
            let at = cut.index(s.head.len());
            prop_assert!(assemble(&s.head[..at], &fetcher(&blobs)).is_err());
            let mut longer = s.head.clone();
            longer.push(extra);
            prop_assert!(assemble(&longer, &fetcher(&blobs)).is_err());
            if !s.blobs.is_empty() {
                let blob = &s.blobs[which.index(s.blobs.len())];
                let mut damaged = blobs.clone();
                let at = cut.index(blob.plaintext.len());
                damaged.insert(blob.id, blob.plaintext[..at].to_vec());
                prop_assert!(assemble(&s.head, &fetcher(&damaged)).is_err());
                let mut longer = blob.plaintext.clone();
                longer.push(extra);
                damaged.insert(blob.id, longer);
                prop_assert!(assemble(&s.head, &fetcher(&damaged)).is_err());
            }
        }

        #[test]
        fn random_bytes_never_panic_the_readers(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut head = vec![CHAT_FORMAT_CHUNKED];
            head.extend_from_slice(&bytes);
            let _ = refs(&head);
            let _ = assemble(&head, &|_: &BlobId| Ok(bytes.clone()));
            let _ = newest(&head, 3, &|_: &BlobId| Ok(bytes.clone()));
            let id = BlobId([1; 32]);
            let _ = chunk_messages(&id, ChatId::from_bytes([0; 16]), &bytes);
            let _ = node_ids(&id, ChatId::from_bytes([0; 16]), 1, &bytes);
        }
    }
}
