//! The attachment benchmark (issue 24): one large file attached on one
//! device, uploaded to a local folder, and read back on another, each step
//! beside a baseline measured in the same run, plus this process's peak
//! resident memory after each step (a 1 GiB file must never sit in memory
//! whole). Prints one markdown table.
//!
//! ```text
//! cargo bench -p chatvault --bench attachments -- --mib 1024
//! just bench-attachments 1024
//! ```
//!
//! - **attach**: `ChatVault::attach_file` (read, keyed hash, seal, stage
//!   every chunk) vs `std::fs::copy` of the same file (read + write, no
//!   crypto).
//! - **attach again**: the same file once more: hashed, nothing written
//!   (every chunk is already staged).
//! - **upload**: `sync_now` sending the staged blobs to the folder vs
//!   `std::fs::copy` of the file into the folder's file system.
//! - **read on another device**: `save_attachment` on a second device
//!   (fetch, open, verify, write) vs `std::fs::copy`.
//! - **peak RSS**: `VmHWM` of this process, after opening both vaults and
//!   after each step; the file size beside it.

use chatvault::{ChatVault, DynStorage, Role};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

fn copy_time(from: &Path, to: &Path) -> Duration {
    let _ = std::fs::remove_file(to);
    let started = Instant::now();
    std::fs::copy(from, to).expect("baseline copy");
    let took = started.elapsed();
    std::fs::remove_file(to).expect("remove the baseline copy");
    took
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

fn row(what: &str, ours: Duration, base: Duration, mib: f64, rss: f64) {
    println!(
        "| {what} | {:.2} s ({:.0} MiB/s) | {:.2} s | {:.1}× | {rss:.0} MiB |",
        ours.as_secs_f64(),
        mib / ours.as_secs_f64(),
        base.as_secs_f64(),
        ours.as_secs_f64() / base.as_secs_f64().max(1e-9),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args
        .iter()
        .position(|a| a == "--mib")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(mib));
}

async fn run(mib: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let file = dir.join("large.bin");
    write_noise(&file, mib << 20);
    let size = mib as f64;
    let storage: DynStorage =
        Arc::new(chatvault_fs::open(dir.join("server")).expect("open the folder"));
    let laptop = open(dir, "laptop", storage.clone()).await;
    let phone = open(dir, "phone", storage).await;
    let opened = peak_rss_mib();
    let chat = laptop.new_chat("Large file").await.expect("new chat").id;

    println!("### Attachments: one {mib} MiB file, local folder\n");
    println!("| step | chatvault | baseline (`std::fs::copy`) | ratio | peak RSS after |");
    println!("|---|---|---|---|---|");
    println!("| open two vaults | | | | {opened:.0} MiB |");

    let base = copy_time(&file, &dir.join("copy.bin"));
    let started = Instant::now();
    let attachment = laptop.attach_file(chat, &file).await.expect("attach");
    row("attach", started.elapsed(), base, size, peak_rss_mib());

    let started = Instant::now();
    let again = laptop.attach_file(chat, &file).await.expect("attach again");
    assert_eq!(again.id, attachment.id);
    row(
        "attach again (deduplicated)",
        started.elapsed(),
        base,
        size,
        peak_rss_mib(),
    );

    laptop
        .add_message_with_attachments(chat, Role::User, "the file", vec![attachment.clone()])
        .await
        .expect("send");
    let base = copy_time(&file, &dir.join("server").join("copy.bin"));
    let started = Instant::now();
    laptop.sync_now().await.expect("upload");
    row(
        "upload (`sync_now`)",
        started.elapsed(),
        base,
        size,
        peak_rss_mib(),
    );

    phone.sync_now().await.expect("sync the phone");
    let base = copy_time(&file, &dir.join("copy.bin"));
    let out = dir.join("read.bin");
    let started = Instant::now();
    let written = phone
        .save_attachment(&attachment, &out)
        .await
        .expect("read back");
    row(
        "read on another device (`save_attachment`)",
        started.elapsed(),
        base,
        size,
        peak_rss_mib(),
    );
    assert_eq!(written, mib << 20);
    println!(
        "\nFile {mib} MiB; peak RSS grew {:.0} MiB over the whole run past the open vaults.",
        peak_rss_mib() - opened
    );
}
