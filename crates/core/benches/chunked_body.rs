//! Chat body format 6 (a head and content-addressed chunks, docs/design.md
//! §4.3) against the whole-chat body of format 5, on the same chat in the
//! same run, sealed by the envelope cipher with its default padding:
//!
//! 1. **Bytes.** 1,000 messages of 300 bytes added one by one, then 100
//!    more to the 1,000-message chat and one old message edited. Per
//!    change, what a device uploads (and writes to its replica): the sealed
//!    summary and body for format 5; the sealed summary, the sealed head and
//!    every blob not uploaded before for format 6. The server's bytes before
//!    compaction are the sum (every record version and blob kept), after it
//!    the last record and the blobs it names.
//! 2. **Open.** A redb database holds the sealed format-5 body and the
//!    sealed head and blobs. The baseline is the raw read of the format-5
//!    body (one read transaction, one get, one copy); then opening it whole
//!    (read, AEAD, decode), opening the chunked chat whole, and opening its
//!    newest 50 messages (the head and the last chunks only).
//!
//! `cargo bench -p chatvault-core --bench chunked_body`

use chatvault_core::envelope::EnvelopeCipher;
use chatvault_core::raw::chunked::{self, Split};
use chatvault_core::raw::codec::{decode_chat, encode_chat_at, encode_summary_at};
use chatvault_core::{Aad, BlobId, Chat, ChatId, Cipher, DeviceId, Hlc, MessageId, Part, Role};
use criterion::{black_box, Criterion};
use redb::{Database, TableDefinition};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MESSAGES: u64 = 1_000;
const MORE: u64 = 100;
const NEWEST: usize = 50;
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bodies");

/// Seconds per operation of every batch criterion ran, per benchmark.
static MEASURED: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn text(i: u64) -> String {
    let mut text = format!("Message {i}: ");
    while text.len() < 290 {
        text.push_str("Let's compare the \"night train\" with flying,\nthen book. ");
    }
    text.truncate(300);
    text
}

fn add(chat: &mut Chat, i: u64) -> MessageId {
    let role = if i.is_multiple_of(2) {
        Role::User
    } else {
        Role::Assistant
    };
    chat.add_message(
        role,
        text(i),
        Hlc::new(1_700_000_000_001 + i, 0, DeviceId(7)),
    )
}

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
        let head = s
            .cipher
            .seal(&s.aad(Part::Body, version), &split.head)
            .expect("seal")
            .len();
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
        let head = s
            .cipher
            .seal(&s.aad(Part::Body, version), &split.head)
            .expect("seal")
            .len();
        s.summary(chat, version)
            + head
            + split
                .blobs
                .iter()
                .map(|b| self.blobs.get(&b.id).copied().unwrap_or(0))
                .sum::<usize>()
    }
}

fn stats(values: &mut [usize]) -> (usize, usize, usize) {
    values.sort_unstable();
    let mean = values.iter().sum::<usize>() / values.len().max(1);
    (
        mean,
        values[values.len() / 2],
        values.last().copied().unwrap_or(0),
    )
}

fn bytes(cipher: &EnvelopeCipher) -> Chat {
    let mut chat = Chat::new(
        ChatId::new(),
        "Trip plans for the summer",
        Hlc::new(1_700_000_000_000, 0, DeviceId(7)),
    );
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
    let before_whole = server.total_whole;
    let before_chunked = server.total_chunked;
    let compacted = server.compacted(&s, &chat, version);
    let (mut whole, mut chunked) = (Vec::new(), Vec::new());
    for i in MESSAGES..MESSAGES + MORE {
        add(&mut chat, i);
        version += 1;
        let cost = server.change(&s, &chat, version);
        whole.push(cost.whole);
        chunked.push(cost.chunked);
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
    let (wm, wmed, wmax) = stats(&mut whole);
    let (cm, cmed, cmax) = stats(&mut chunked);
    let split = s.split(&chat);
    let refs = chunked::refs(&split.head).expect("refs");
    println!();
    println!(
        "Chunked layout of the final chat: {} blobs ({} index nodes named by the head, {} chunks \
         inline), head {} bytes before sealing",
        split.blobs.len(),
        refs.index.len(),
        refs.chunks.len(),
        split.head.len()
    );
    println!();
    println!("| bytes (sealed, default padding) | format 5, whole body | format 6, chunked | chunked / whole |");
    println!("|---|---|---|---|");
    println!(
        "| upload for one 300-byte message added to the 1,000-message chat (summary + body), mean of {MORE} | {wm} | {cm} | {:.3} |",
        cm as f64 / wm as f64
    );
    println!(
        "| the same, median | {wmed} | {cmed} | {:.3} |",
        cmed as f64 / wmed as f64
    );
    println!(
        "| the same, largest | {wmax} | {cmax} | {:.3} |",
        cmax as f64 / wmax as f64
    );
    println!(
        "| upload for editing the oldest message | {} | {} | {:.3} |",
        edit.whole,
        edit.chunked,
        edit.chunked as f64 / edit.whole as f64
    );
    println!(
        "| server bytes after 1,000 messages added one by one, before compaction | {before_whole} ({:.1}× the final chat) | {before_chunked} ({:.2}× the final chat) | {:.4} |",
        before_whole as f64 / final_whole as f64,
        before_chunked as f64 / final_whole as f64,
        before_chunked as f64 / before_whole as f64
    );
    println!(
        "| the same after compaction (last record + blobs it names) | {} | {compacted} ({:.2}× the final chat) | {:.3} |",
        final_whole + final_summary,
        compacted as f64 / final_whole as f64,
        compacted as f64 / (final_whole + final_summary) as f64
    );
    println!("| final chat: sealed format-5 body of 1,000 messages | {final_whole} | | |");
    println!();
    chat
}

fn timed(name: &str, iters: u64, f: impl Fn()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let elapsed = start.elapsed();
    if iters > 0 {
        MEASURED
            .lock()
            .expect("lock")
            .entry(name.to_string())
            .or_default()
            .push(elapsed.as_secs_f64() / iters as f64);
    }
    elapsed
}

fn get(db: &Database, key: &[u8]) -> Vec<u8> {
    let read = db.begin_read().expect("read");
    let table = read.open_table(TABLE).expect("table");
    let value = table.get(key).expect("get").expect("stored");
    value.value().to_vec()
}

fn open(c: &mut Criterion, cipher: &EnvelopeCipher, chat: &Chat) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::create(dir.path().join("bench.redb")).expect("db");
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
    let aad = s.aad(Part::Body, 1);
    let open_chunked = |newest: Option<usize>| {
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
        &open_chunked(None),
        chat,
        "the chunked chat opens to the chat"
    );
    assert!(open_chunked(Some(NEWEST)).messages.len() >= NEWEST);
    let mut group = c.benchmark_group("open the 1,101-message chat");
    group.bench_function("raw read", |b| {
        b.iter_custom(|iters| {
            timed("raw", iters, || {
                black_box(get(&db, b"whole"));
            })
        })
    });
    group.bench_function("format 5 whole", |b| {
        b.iter_custom(|iters| {
            timed("whole", iters, || {
                let sealed = get(&db, b"whole");
                let plain = cipher.open(&aad, &sealed).expect("open");
                black_box(decode_chat(&plain).expect("decode"));
            })
        })
    });
    group.bench_function("format 6 whole", |b| {
        b.iter_custom(|iters| {
            timed("chunked", iters, || {
                black_box(open_chunked(None));
            })
        })
    });
    group.bench_function("format 6 newest 50", |b| {
        b.iter_custom(|iters| {
            timed("newest", iters, || {
                black_box(open_chunked(Some(NEWEST)));
            })
        })
    });
    group.finish();
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let cipher = EnvelopeCipher::generate(chatvault_core::VaultId::new());
    let chat = bytes(&cipher);
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    open(&mut c, &cipher, &chat);
    c.final_summary();
    let all = MEASURED.lock().expect("lock");
    let Some(raw) = all.get("raw").map(|v| median(v)) else {
        return;
    };
    println!(
        "| open the {}-message chat | time | × the raw read |",
        MESSAGES + MORE
    );
    println!("|---|---|---|");
    println!(
        "| raw redb read of the sealed format-5 body (baseline) | {:.1} µs | 1.00 |",
        raw * 1e6
    );
    for (key, label) in [
        ("whole", "format 5: read, open, decode the whole body"),
        ("chunked", "format 6: the head and every chunk"),
        ("newest", "format 6: the newest 50 messages"),
    ] {
        if let Some(v) = all.get(key) {
            let t = median(v);
            println!("| {label} | {:.1} µs | {:.2} |", t * 1e6, t / raw);
        }
    }
}
