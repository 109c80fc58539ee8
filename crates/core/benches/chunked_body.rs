//! Chat body format 6 (a head and content-addressed chunks, docs/design.md
//! §4.3) against the whole-chat body of format 5, on the same chat in the
//! same run, sealed by the envelope cipher with its default padding:
//!
//! 1. **Bytes.** Ten chats of random message ids (the chunk cuts depend on
//!    them): 1,000 messages of 300 bytes added one by one, then 100
//!    more to the 1,000-message chat and one old message edited. Per
//!    change, what a device uploads (and writes to its replica): the sealed
//!    summary and body for format 5; the sealed summary, the sealed head and
//!    every blob not uploaded before for format 6. The server's bytes before
//!    compaction are the sum (every record version and blob kept), after it
//!    the last record and the blobs it names.
//! 2. **Open.** A redb database holds the sealed format-5 body and the
//!    sealed head and blobs. The baseline is the raw read of the format-5
//!    body, the first on a newly opened database as in the scale bench (one
//!    read transaction, one get, one copy); then opening it whole
//!    (read, AEAD, decode), opening the chunked chat whole, and opening its
//!    newest 50 messages (the head and the last chunks only).
//!
//! `cargo bench -p chatvault-core --bench chunked_body`

mod common;

use chatvault_core::envelope::EnvelopeCipher;
use chatvault_core::raw::chunked::{self, Split};
use chatvault_core::raw::codec::{decode_chat, encode_chat_at, encode_summary_at};
use chatvault_core::{Aad, BlobId, Chat, ChatId, Cipher, DeviceId, Hlc, Part};
use common::{add, criterion, long_chat, median, timed_each};
use criterion::{black_box, Criterion};
use redb::{Database, TableDefinition};
use std::collections::BTreeMap;

const MESSAGES: u64 = 1_000;
const MORE: u64 = 100;
const TRIALS: usize = 10;
const NEWEST: usize = 50;
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bodies");

struct Sealer<'a> {
    cipher: &'a EnvelopeCipher,
    chat: ChatId,
}

impl Sealer<'_> {
    fn aad(&self, part: Part, version: u64) -> Aad {
        Aad {
            vault: self.cipher.vault(),
            chat: self.chat,
            part,
            version,
        }
    }

    fn summary(&self, chat: &Chat, version: u64) -> usize {
        let plain = encode_summary_at(&chat.summary(), 2).expect("encode");
        let aad = self.aad(Part::Summary, version);
        self.cipher.seal(&aad, &plain).expect("seal").len()
    }

    fn whole(&self, chat: &Chat, version: u64) -> Vec<u8> {
        let plain = encode_chat_at(chat, 2).expect("encode");
        let aad = self.aad(Part::Body, version);
        self.cipher.seal(&aad, &plain).expect("seal")
    }

    /// The sealed length of `split`'s head as version `version`'s body.
    fn head(&self, split: &Split, version: u64) -> usize {
        let aad = self.aad(Part::Body, version);
        self.cipher.seal(&aad, &split.head).expect("seal").len()
    }

    fn split(&self, chat: &Chat) -> Split {
        chunked::split(chat, &|bytes: &[u8]| self.cipher.blob_id(bytes)).expect("split")
    }
}

/// Bytes one change costs, in each format.
#[derive(Default, Clone, Copy)]
struct Cost {
    whole: usize,
    chunked: usize,
}

/// Tracks what format 6 has uploaded (blob ids and their sealed sizes).
#[derive(Default)]
struct Server {
    blobs: BTreeMap<BlobId, usize>,
    total_whole: usize,
    total_chunked: usize,
}

impl Server {
    fn change(&mut self, s: &Sealer<'_>, chat: &Chat, version: u64) -> Cost {
        let summary = s.summary(chat, version);
        let whole = summary + s.whole(chat, version).len();
        let split = s.split(chat);
        let head = s.head(&split, version);
        let mut chunked = summary + head;
        for blob in &split.blobs {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.blobs.entry(blob.id) {
                let sealed = s.cipher.seal_blob(&blob.id, &blob.plaintext).expect("seal");
                chunked += sealed.len();
                slot.insert(sealed.len());
            }
        }
        self.total_whole += whole;
        self.total_chunked += chunked;
        Cost { whole, chunked }
    }

    /// What format 6 keeps after compaction: the last summary and head and
    /// the blobs they name.
    fn compacted(&self, s: &Sealer<'_>, chat: &Chat, version: u64) -> usize {
        let split = s.split(chat);
        let head = s.head(&split, version);
        s.summary(chat, version)
            + head
            + split
                .blobs
                .iter()
                .map(|b| self.blobs.get(&b.id).copied().unwrap_or(0))
                .sum::<usize>()
    }
}

/// What one chat of random message ids cost, in both formats.
struct Trial {
    chat: Chat,
    /// Upload per append to the 1,000-message chat: (whole, chunked).
    appends: Vec<Cost>,
    edit: Cost,
    /// Server bytes after the first 1,000 appends: (whole, chunked).
    before: Cost,
    compacted: usize,
    final_whole: usize,
    final_summary: usize,
}

fn trial(cipher: &EnvelopeCipher) -> Trial {
    let mut chat = long_chat(0);
    let s = Sealer {
        cipher,
        chat: chat.id,
    };
    let mut server = Server::default();
    let mut version = 0;
    for i in 0..MESSAGES {
        add(&mut chat, i);
        version += 1;
        server.change(&s, &chat, version);
    }
    let final_whole = s.whole(&chat, version).len();
    let final_summary = s.summary(&chat, version);
    let before = Cost {
        whole: server.total_whole,
        chunked: server.total_chunked,
    };
    let compacted = server.compacted(&s, &chat, version);
    let mut appends = Vec::new();
    for i in MESSAGES..MESSAGES + MORE {
        add(&mut chat, i);
        version += 1;
        appends.push(server.change(&s, &chat, version));
    }
    let old = chat
        .messages
        .values()
        .min_by_key(|m| (m.created, m.id))
        .map(|m| m.id)
        .expect("a message");
    chat.edit_message(old, "edited", Hlc::new(1_800_000_000_000, 0, DeviceId(7)));
    version += 1;
    let edit = server.change(&s, &chat, version);
    Trial {
        chat,
        appends,
        edit,
        before,
        compacted,
        final_whole,
        final_summary,
    }
}

/// Mean, median, 95th percentile and largest of `values`.
fn stats(mut values: Vec<usize>) -> [usize; 4] {
    values.sort_unstable();
    let at = |q: f64| values[((values.len() - 1) as f64 * q) as usize];
    [
        values.iter().sum::<usize>() / values.len().max(1),
        at(0.5),
        at(0.95),
        at(1.0),
    ]
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn bytes(cipher: &EnvelopeCipher) -> Chat {
    let trials: Vec<Trial> = (0..TRIALS).map(|_| trial(cipher)).collect();
    let whole = stats(
        trials
            .iter()
            .flat_map(|t| t.appends.iter().map(|c| c.whole))
            .collect(),
    );
    let chunked = stats(
        trials
            .iter()
            .flat_map(|t| t.appends.iter().map(|c| c.chunked))
            .collect(),
    );
    let last = trials.last().expect("a trial");
    let split = Sealer {
        cipher,
        chat: last.chat.id,
    }
    .split(&last.chat);
    let refs = chunked::refs(&split.head).expect("refs");
    println!();
    println!(
        "{TRIALS} chats of random message ids. The last one's layout at {} messages: {} blobs \
         (ids inline in the head per level, chunks first: {:?}), head {} bytes before sealing",
        last.chat.messages.len(),
        split.blobs.len(),
        refs.levels.iter().map(Vec::len).collect::<Vec<_>>(),
        split.head.len()
    );
    println!();
    println!(
        "| bytes (sealed, default padding) | format 5, whole body | format 6, chunked | chunked / whole |"
    );
    println!("|---|---|---|---|");
    for (i, label) in ["mean", "median", "95th percentile", "largest"]
        .iter()
        .enumerate()
    {
        println!(
            "| upload for one 300-byte message added to the 1,000-message chat (summary + body), {label} of {} | {} | {} | {:.4} |",
            TRIALS as u64 * MORE,
            whole[i],
            chunked[i],
            chunked[i] as f64 / whole[i] as f64
        );
    }
    let edit = |f: fn(&Cost) -> usize| mean(trials.iter().map(|t| f(&t.edit) as f64));
    println!(
        "| upload for editing the oldest message, mean | {:.0} | {:.0} | {:.4} |",
        edit(|c| c.whole),
        edit(|c| c.chunked),
        edit(|c| c.chunked) / edit(|c| c.whole)
    );
    let times =
        |f: fn(&Trial) -> usize| mean(trials.iter().map(|t| f(t) as f64 / t.final_whole as f64));
    println!(
        "| server bytes after 1,000 messages added one by one, before compaction, × the final chat (mean) | {:.1}× | {:.2}× | {:.4} |",
        times(|t| t.before.whole),
        times(|t| t.before.chunked),
        times(|t| t.before.chunked) / times(|t| t.before.whole)
    );
    println!(
        "| the same after compaction (last record + blobs it names) | {:.2}× | {:.2}× | {:.3} |",
        times(|t| t.final_whole + t.final_summary),
        times(|t| t.compacted),
        times(|t| t.compacted) / times(|t| t.final_whole + t.final_summary)
    );
    println!(
        "| final chat: sealed format-5 body of 1,000 messages (mean) | {:.0} | | |",
        mean(trials.iter().map(|t| t.final_whole as f64))
    );
    println!();
    trials.into_iter().last().expect("a trial").chat
}

fn get(db: &Database, key: &[u8]) -> Vec<u8> {
    let read = db.begin_read().expect("read");
    let table = read.open_table(TABLE).expect("table");
    let value = table.get(key).expect("get").expect("stored");
    value.value().to_vec()
}

fn open(c: &mut Criterion, cipher: &EnvelopeCipher, chat: &Chat) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.redb");
    let db = Database::create(&path).expect("db");
    let s = Sealer {
        cipher,
        chat: chat.id,
    };
    let whole = s.whole(chat, 1);
    let split = s.split(chat);
    let head = cipher
        .seal(&s.aad(Part::Body, 1), &split.head)
        .expect("seal");
    let write = db.begin_write().expect("write");
    {
        let mut table = write.open_table(TABLE).expect("table");
        table
            .insert(&b"whole"[..], whole.as_slice())
            .expect("insert");
        table.insert(&b"head"[..], head.as_slice()).expect("insert");
        for blob in &split.blobs {
            let sealed = cipher.seal_blob(&blob.id, &blob.plaintext).expect("seal");
            table
                .insert(&blob.id.as_bytes()[..], sealed.as_slice())
                .expect("insert");
        }
    }
    write.commit().expect("commit");
    drop(db);
    // Every measured read is the first on a newly opened database, as the
    // scale bench's raw read of a record is (the OS page cache is warm, the
    // database's own cache is empty).
    let fresh = || Database::open(&path).expect("db");
    let aad = s.aad(Part::Body, 1);
    let open_chunked = |db: &Database, newest: Option<usize>| {
        let read = db.begin_read().expect("read");
        let table = read.open_table(TABLE).expect("table");
        let head = table.get(&b"head"[..]).expect("get").expect("stored");
        let head = cipher.open(&aad, head.value()).expect("open");
        let fetch = |id: &BlobId| {
            let sealed = table
                .get(&id.as_bytes()[..])
                .ok()
                .flatten()
                .ok_or_else(|| chatvault_core::Error::NotFound {
                    what: format!("blob {id}"),
                })?;
            cipher.open_blob(id, sealed.value())
        };
        match newest {
            Some(n) => chunked::newest(&head, n, &fetch).expect("newest").chat,
            None => chunked::assemble(&head, &fetch).expect("assemble"),
        }
    };
    assert_eq!(
        &open_chunked(&fresh(), None),
        chat,
        "the chunked chat opens to the chat"
    );
    assert!(open_chunked(&fresh(), Some(NEWEST)).messages.len() >= NEWEST);
    let mut group = c.benchmark_group("open the 1,101-message chat");
    group.bench_function("raw read", |b| {
        b.iter_custom(|iters| {
            timed_each("raw", iters, fresh, |db| {
                black_box(get(db, b"whole"));
            })
        })
    });
    group.bench_function("format 5 whole", |b| {
        b.iter_custom(|iters| {
            timed_each("whole", iters, fresh, |db| {
                let sealed = get(db, b"whole");
                let plain = cipher.open(&aad, &sealed).expect("open");
                black_box(decode_chat(&plain).expect("decode"));
            })
        })
    });
    group.bench_function("format 6 whole", |b| {
        b.iter_custom(|iters| {
            timed_each("chunked", iters, fresh, |db| {
                black_box(open_chunked(db, None));
            })
        })
    });
    group.bench_function("format 6 newest 50", |b| {
        b.iter_custom(|iters| {
            timed_each("newest", iters, fresh, |db| {
                black_box(open_chunked(db, Some(NEWEST)));
            })
        })
    });
    group.finish();
}

fn main() {
    let cipher = EnvelopeCipher::generate(chatvault_core::VaultId::new());
    let chat = bytes(&cipher);
    let mut c = criterion();
    open(&mut c, &cipher, &chat);
    c.final_summary();
    let Some(raw) = median("raw") else {
        return;
    };
    println!(
        "| open the {}-message chat | time | × the raw read |",
        MESSAGES + MORE
    );
    println!("|---|---|---|");
    println!(
        "| raw read of the sealed format-5 body, first read of a newly opened redb (baseline) | {:.1} µs | 1.00 |",
        raw * 1e6
    );
    for (key, label) in [
        ("whole", "format 5: read, open, decode the whole body"),
        ("chunked", "format 6: the head and every chunk"),
        ("newest", "format 6: the newest 50 messages"),
    ] {
        if let Some(t) = median(key) {
            println!("| {label} | {:.1} µs | {:.2} |", t * 1e6, t / raw);
        }
    }
}
