//! The attachment benchmark (issue 24): one large file attached on one
//! device, uploaded, and read back on another, on the local folder and on
//! S3 (the test image, an endpoint from the environment, or the in-process
//! stand-in), each beside the raw object-store baseline measured in the
//! same run, plus this process's peak resident memory (a 1 GiB file must
//! never sit in memory whole). Prints one markdown table per backend.
//!
//! ```text
//! cargo bench -p chatvault --bench attachments -- --mib 256 --backends fs,s3
//! just bench-attachments 256
//! ```
//!
//! - **upload**: `ChatVault::attach_file` (read, keyed hash, seal, stage
//!   every chunk) plus the `sync_now` that sends the blobs and the record,
//!   vs the raw baseline: the file read in 1,000,000-byte pieces, each put
//!   as one object through the same object store (fsync included on the
//!   folder), four requests in flight as the upload sends them.
//! - **download**: `save_attachment` on a second device (fetch, open,
//!   verify, write, fsync; four chunks in flight) vs getting the raw pieces
//!   back, four in flight, and writing them to a file in order (fsync
//!   included).
//! - **attach again**: the same file once more: hashed, nothing stored.
//! - **peak RSS**: `VmHWM` of this process after each step, beside the
//!   file size (the first backend's rows show the attachment code alone).
//! - **one file in ten chats**: a `--dedup-mib` file (50 by default)
//!   attached to ten chats in a fresh vault: the sealed bytes the server
//!   holds afterwards vs the file's size.
//! - **100 images**: a chat with 100 image messages (30 kB each) synced by
//!   a new device: blob requests during the sync (goal: none), and reading
//!   one image afterwards.

#[path = "common/servers.rs"]
#[allow(dead_code)]
mod servers;

use chatvault::core::attachments::CHUNK_BYTES;
use chatvault::core::layer::Op;
use chatvault::core::BlobId;
use chatvault::{ChatVault, DynStorage, Role};
use chatvault_conformance::layers::FaultyStorage;
use servers::Server;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Requests the raw baseline keeps in flight: as many as the attachment
/// upload and read do.
const IN_FLIGHT: usize = 4;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn write_noise(path: &Path, bytes: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create the file"));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).expect("write the file");
        left -= n as u64;
    }
    file.flush().expect("flush the file");
}

async fn open(dir: &Path, device: &str, storage: DynStorage) -> ChatVault {
    ChatVault::builder()
        .storage(storage)
        .replica_path(dir.join(format!("{device}.redb")))
        .passphrase("attachment bench")
        .scrypt_work_factor(4)
        .auto_maintenance(None)
        .open()
        .await
        .expect("open the vault")
}

fn row(what: &str, ours: Duration, base: Option<Duration>, mib: f64) {
    let (base, ratio) = match base {
        Some(base) => (
            format!(
                "{:.2} s ({:.0} MiB/s)",
                base.as_secs_f64(),
                mib / base.as_secs_f64()
            ),
            format!(
                "{:.0} %",
                100.0 * base.as_secs_f64() / ours.as_secs_f64().max(1e-9)
            ),
        ),
        None => ("not measured".to_string(), "–".to_string()),
    };
    println!(
        "| {what} | {:.2} s ({:.0} MiB/s) | {base} | {ratio} | {:.0} MiB |",
        ours.as_secs_f64(),
        mib / ours.as_secs_f64(),
        peak_rss_mib(),
    );
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = flag(&args, "--mib")
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let dedup_mib: u64 = flag(&args, "--dedup-mib")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let backends: Vec<String> = flag(&args, "--backends")
        .unwrap_or("fs,s3")
        .split(',')
        .map(str::to_string)
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("large.bin");
        write_noise(&file, mib << 20);
        println!("File: {mib} MiB of random bytes; chunks of {CHUNK_BYTES} bytes.\n");
        for backend in &backends {
            let server = match backend.as_str() {
                "fs" => Server::folder(),
                "s3" => match Server::s3().await {
                    Ok(server) => server,
                    Err(e) => {
                        println!("NOT RUN: S3 ({e})\n");
                        continue;
                    }
                },
                other => panic!("unknown backend {other}: use fs or s3"),
            };
            run(&server, dir.path(), &file, mib).await;
            stored_once(&server, dir.path(), dedup_mib).await;
            hundred_images(&server, dir.path()).await;
        }
    });
}

async fn run(server: &Server, dir: &Path, file: &Path, mib: u64) {
    let size = mib as f64;
    let name = server.name();
    let work = dir.join(name.replace(' ', "-"));
    std::fs::create_dir_all(&work).expect("work dir");
    let vault = server.vault("attachments", true).await.expect("a vault");
    let laptop = open(&work, "laptop", vault.writer.clone()).await;
    let phone = open(&work, "phone", vault.reader.clone()).await;
    let chat = laptop.new_chat("Large file").await.expect("new chat").id;

    println!("### {name}\n");
    println!("{}\n", server.describe());
    println!("| step | chatvault | raw baseline | chatvault vs raw | peak RSS after |");
    println!("|---|---|---|---|---|");
    println!("| open two vaults | | | | {:.0} MiB |", peak_rss_mib());

    let raw = vault
        .raw_file_round_trip(file, CHUNK_BYTES, IN_FLIGHT, &work.join("raw.bin"))
        .await
        .expect("raw baseline");

    let started = Instant::now();
    let attachment = laptop.attach_file(chat, file).await.expect("attach");
    let attached = started.elapsed();
    laptop
        .add_message_with_attachments(chat, Role::User, "the file", vec![attachment.clone()])
        .await
        .expect("send");
    let started = Instant::now();
    laptop.sync_now().await.expect("upload");
    let uploaded = started.elapsed();
    row(
        "upload (`attach_file` + `sync_now`)",
        attached + uploaded,
        raw.map(|r| r.0),
        size,
    );
    println!(
        "| … of which `attach_file` / `sync_now` | {:.2} s / {:.2} s | | | |",
        attached.as_secs_f64(),
        uploaded.as_secs_f64()
    );

    let started = Instant::now();
    let again = laptop.attach_file(chat, file).await.expect("attach again");
    assert_eq!(again.id, attachment.id);
    row("attach again (deduplicated)", started.elapsed(), None, size);

    phone.sync_now().await.expect("sync the phone");
    let out = work.join("read.bin");
    let started = Instant::now();
    let written = phone
        .save_attachment(&attachment, &out)
        .await
        .expect("read back");
    row(
        "download (`save_attachment`)",
        started.elapsed(),
        raw.map(|r| r.1),
        size,
    );
    assert_eq!(written, mib << 20);
    println!();
}

/// Every blob id in `storage`.
async fn blob_ids(storage: &DynStorage) -> Vec<BlobId> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = storage.list_blobs(after, 1000).await.expect("list blobs");
        after = page.ids.last().copied();
        all.extend(page.ids);
        if !page.has_more || after.is_none() {
            return all;
        }
    }
}

/// One `mib` MiB file attached to ten chats: the sealed bytes stored vs
/// the file's size.
async fn stored_once(server: &Server, dir: &Path, mib: u64) {
    let work = dir.join(format!("{}-dedup", server.name().replace(' ', "-")));
    std::fs::create_dir_all(&work).expect("work dir");
    let file = work.join("same.bin");
    // Other bytes than the large file's, so nothing dedupes against it.
    let mut bytes = vec![0u8; (mib << 20) as usize];
    let mut x: u64 = 0xD1B5_4A32_D192_ED03;
    for b in bytes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    std::fs::write(&file, &bytes).expect("write the file");
    drop(bytes);
    let vault = server.vault("dedup", true).await.expect("a vault");
    let laptop = open(&work, "laptop", vault.writer.clone()).await;
    for i in 0..10 {
        let chat = laptop.new_chat(format!("chat {i}")).await.expect("chat").id;
        let attachment = laptop.attach_file(chat, &file).await.expect("attach");
        laptop
            .add_message_with_attachments(chat, Role::User, "the same file", vec![attachment])
            .await
            .expect("send");
    }
    laptop.sync_now().await.expect("sync");
    let mut stored = 0u64;
    let ids = blob_ids(&vault.writer).await;
    for id in &ids {
        stored += vault
            .writer
            .get_blob(*id)
            .await
            .expect("get a blob")
            .map_or(0, |b| b.len() as u64);
    }
    let file_bytes = mib << 20;
    println!(
        "One {mib} MiB file attached to ten chats: the server holds {} blobs, {:.2} MiB, \
         = {:.3} × the file ({:.2} MiB) (goal ≤ 1.05 ×).\n",
        ids.len(),
        stored as f64 / f64::from(1 << 20),
        stored as f64 / file_bytes as f64,
        file_bytes as f64 / f64::from(1 << 20),
    );
}

/// A chat of 100 image messages, synced by a new device: blob requests
/// during the sync, then reading one image.
async fn hundred_images(server: &Server, dir: &Path) {
    let work = dir.join(format!("{}-images", server.name().replace(' ', "-")));
    std::fs::create_dir_all(&work).expect("work dir");
    let vault = server.vault("images", true).await.expect("a vault");
    let laptop = open(&work, "laptop", vault.writer.clone()).await;
    let chat = laptop.new_chat("holiday").await.expect("chat").id;
    let mut first = None;
    for i in 0..100u32 {
        let image: Vec<u8> = (0..30_000u32)
            .map(|j| (j.wrapping_mul(2_654_435_761) ^ i.wrapping_mul(40_503)) as u8)
            .collect();
        let attachment = laptop
            .attach(chat, &image[..], format!("IMG_{i:04}.jpg"), "image/jpeg")
            .await
            .expect("attach");
        first.get_or_insert(attachment.clone());
        laptop
            .add_message_with_attachments(chat, Role::User, format!("photo {i}"), vec![attachment])
            .await
            .expect("send");
    }
    laptop.sync_now().await.expect("sync");
    let counted = FaultyStorage::new(vault.reader.clone());
    let tablet = open(&work, "tablet", counted.clone() as DynStorage).await;
    let started = Instant::now();
    tablet.sync_now().await.expect("sync the new device");
    let synced = started.elapsed();
    let messages = tablet
        .load_full_chat(chat)
        .await
        .expect("chat")
        .messages()
        .len();
    let blob_calls =
        |c: &FaultyStorage| c.calls(Op::GetBlob) + c.calls(Op::ListBlobs) + c.calls(Op::PutBlob);
    let during_sync = blob_calls(&counted);
    let started = Instant::now();
    let first = first.expect("an image");
    tablet
        .attachment_bytes(&first)
        .await
        .expect("read one image");
    println!(
        "A chat with 100 image messages on a new device: {messages} messages after a sync of \
         {:.0} ms with {during_sync} blob requests (goal: none); reading one image then took \
         {} blob requests and {:.1} ms.\n",
        synced.as_secs_f64() * 1e3,
        blob_calls(&counted) - during_sync,
        started.elapsed().as_secs_f64() * 1e3,
    );
}
