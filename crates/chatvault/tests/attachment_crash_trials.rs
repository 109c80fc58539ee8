//! Crash trials for attachment upload: a child process attaches files of
//! random sizes (empty to about 3.5 MB, some the same bytes as an earlier
//! file), sends messages carrying them and syncs all the while from a
//! second task, until it is killed with SIGKILL at a random point. Then:
//!
//! 1. before anything restarts, a fresh observer device syncs from the
//!    server and reads every attachment of every message it sees: a blob
//!    missing there means a record reached the server before its blob;
//! 2. the child's replica reopens as the same device, holds every message
//!    whose save returned, and syncs until nothing is queued; its upload
//!    sends only blobs still marked pending (nothing that landed is sent
//!    again);
//! 3. a fresh second device sees every acknowledged message with its
//!    attachments, and each reads back byte for byte.
//!
//! The child prints each acknowledged attachment as
//! `ok <chat> <message> <manifest> <bytes seed> <len>` (flushed at once),
//! so the parent regenerates the expected bytes from the seed.
//!
//! `CHATVAULT_ATTACH_CRASH_TRIALS` sets the number of trials (12 by
//! default; `just attachment-crash-trials` runs 100).
//! `CHATVAULT_ATTACH_CRASH_SEED` replays one trial: every failure prints
//! its seed.
//!
//! Garbage collection has its own trials (below): 6 to 12 files are sent,
//! some of their messages deleted, some never sent; past the grace period
//! a child collects over and over and is SIGKILLed at a random point while
//! the writing device names one unnamed file again in a new message. Then
//! every named file must read, byte for byte, on a fresh device, and the
//! killed collector's replica reopens and a full run leaves exactly the
//! named files on the server. `CHATVAULT_GC_CRASH_TRIALS` (4 by default;
//! `just gc-crash-trials` runs 50) and `CHATVAULT_GC_CRASH_SEED`.

use chatvault::core::layer::{Op, SeededRng};
use chatvault::core::BlobId;
use chatvault::{Attachment, ChatId, ChatVault, DeviceId, DynStorage, Error, MessageId, Role};
use chatvault_conformance::layers::FaultyStorage;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

const CHILD_DIR: &str = "CHATVAULT_ATTACH_CRASH_TRIAL_DIR";
const CHILD_SEED: &str = "CHATVAULT_ATTACH_CRASH_TRIAL_SEED";
const TEST: &str = "attachments_that_returned_survive_random_kills_and_never_trail_their_records";
const PASSPHRASE: &str = "attachment crash trials";
const REPLICA: &str = "crashing.redb";
/// Sync rounds the restarted device gets to push everything.
const RESTART_ROUNDS: usize = 5;

fn server_url(dir: &Path) -> String {
    format!("file://{}", dir.join("server").display())
}

async fn open(dir: &Path, replica: &str) -> chatvault::Result<ChatVault> {
    ChatVault::builder()
        .storage_url(server_url(dir))
        .replica_path(dir.join(replica))
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .auto_maintenance(None)
        .open()
        .await
}

/// `len` bytes from `seed` that neither repeat nor compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A file size: empty, tiny, at a chunk boundary, or up to 3.5 MB.
fn file_len(rng: &mut SeededRng) -> usize {
    const CHUNK: u64 = 1_000_000;
    let len = match rng.below(10) {
        0 => 0,
        1..=3 => rng.below(2_000),
        4 => (1 + rng.below(3)) * CHUNK + rng.below(3) - 1,
        _ => rng.below(3_500_000),
    };
    len as usize
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    // The parent may already be gone: nothing to do about it.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The child: creates up to three chats, attaches files and sends messages
/// carrying them, while another task syncs in a loop; until killed.
async fn attach_until_killed(dir: &Path, seed: u64) {
    let vault = Arc::new(open(dir, REPLICA).await.expect("open in the child"));
    say(format!("device {}", vault.device_id().0));
    let mut rng = SeededRng::new(seed);
    // Up to 100 ms between sync rounds: an upload and the push after it
    // interleave with attaches in every order.
    let pause = rng.below(100);
    let syncing = vault.clone();
    tokio::spawn(async move {
        let mut rng = SeededRng::new(seed ^ 0x5EED);
        loop {
            // Failures (a busy folder) are retried by the next round.
            let _ = syncing.sync_now().await;
            tokio::time::sleep(Duration::from_millis(rng.below(pause + 1))).await;
        }
    });
    let mut chats: Vec<ChatId> = Vec::new();
    let mut files: Vec<(u64, usize)> = Vec::new();
    for i in 0u64.. {
        if chats.len() < 3 && (chats.is_empty() || rng.below(6) == 0) {
            let chat = vault
                .new_chat(format!("trial chat {}", chats.len()))
                .await
                .expect("chat");
            say(format!("chat {}", chat.id));
            chats.push(chat.id);
        }
        let chat = chats[rng.below(chats.len() as u64) as usize];
        let mut attached: Vec<(Attachment, u64, usize)> = Vec::new();
        for _ in 0..1 + rng.below(3) / 2 {
            let (bytes_seed, len) = if !files.is_empty() && rng.below(4) == 0 {
                files[rng.below(files.len() as u64) as usize]
            } else {
                (rng.next_u64(), file_len(&mut rng))
            };
            files.push((bytes_seed, len));
            // Now and then attached to one chat and sent in another.
            let to = if rng.below(8) == 0 {
                chats[rng.below(chats.len() as u64) as usize]
            } else {
                chat
            };
            let bytes = noise(len, bytes_seed);
            let attachment = vault
                .attach(
                    to,
                    &bytes[..],
                    format!("file {i}.bin"),
                    "application/octet-stream",
                )
                .await
                .expect("attach");
            attached.push((attachment, bytes_seed, len));
        }
        let message = vault
            .add_message_with_attachments(
                chat,
                Role::User,
                format!("message {i}"),
                attached.iter().map(|(a, _, _)| a.clone()).collect(),
            )
            .await
            .expect("send");
        for (attachment, bytes_seed, len) in &attached {
            say(format!(
                "ok {chat} {message} {} {bytes_seed} {len}",
                attachment.id
            ));
        }
        if rng.below(3) == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// An acknowledged attachment: its manifest, the seed of its bytes, its
/// length.
type Acked = (BlobId, u64, usize);

/// What the child acknowledged: per message, its attachments as
/// (manifest, bytes seed, length).
#[derive(Default)]
struct Acknowledged {
    chats: BTreeSet<ChatId>,
    messages: BTreeMap<(ChatId, String), Vec<Acked>>,
}

fn parse<T: std::str::FromStr>(word: Option<&str>, line: &str) -> Result<T, String> {
    word.and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("bad line from the child: {line:?}"))
}

/// The blobs a device's directory still marks as not on the server.
fn pending_markers(dir: &Path) -> usize {
    let mut path = PathBuf::from(dir);
    path.push(format!("{REPLICA}.blobs"));
    path.push("pending");
    std::fs::read_dir(&path)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| !n.starts_with('.')))
                .count()
        })
        .unwrap_or(0)
}

/// The attachments whose upload still holds back a chat's records (an
/// entry without chats is only a lease, kept for a message naming the file
/// again soon: §10.6).
fn outgoing_markers(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(format!("{REPLICA}.blobs")).join("outgoing"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| !n.starts_with('.')))
                .filter(|e| {
                    let entry: serde_json::Value = std::fs::read(e.path())
                        .ok()
                        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                        .unwrap_or_default();
                    entry["chats"].as_array().is_some_and(|c| !c.is_empty())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Checks one attachment a device sees on the server: it must read, and
/// if the child acknowledged it, read as the bytes attached.
async fn check_readable(
    device: &ChatVault,
    chat: ChatId,
    message: MessageId,
    attachment: &Attachment,
    expected: Option<(u64, usize)>,
) -> Result<(), String> {
    let bytes = match device.attachment_bytes(attachment).await {
        Ok(bytes) => bytes,
        Err(e @ Error::NotFound { .. }) => {
            return Err(format!(
                "BUG: the server holds message {message} of chat {chat} naming attachment {} \
                 whose blobs it lacks (a record went before its blob): {e}",
                attachment.id
            ))
        }
        Err(e) => {
            return Err(format!(
                "reading attachment {} of {message}: {e}",
                attachment.id
            ))
        }
    };
    if let Some((seed, len)) = expected {
        if bytes != noise(len, seed) {
            return Err(format!("attachment {} reads other bytes", attachment.id));
        }
    }
    Ok(())
}

/// While the child runs: a device that syncs from the server over and
/// over and reads every attachment it has not read yet. Returns how many
/// it read, or the first one that did not read.
async fn watch(dir: &Path, stop: &AtomicBool) -> Result<usize, String> {
    let watcher = open(dir, "watcher.redb")
        .await
        .map_err(|e| format!("watcher: {e}"))?;
    let mut read: BTreeSet<(MessageId, BlobId)> = BTreeSet::new();
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if watcher.sync_now().await.is_err() {
            // The child is writing the folder: try the next round.
            continue;
        }
        for summary in watcher.sidebar().to_vec() {
            let Ok(attachments) = watcher.attachments(summary.id).await else {
                continue;
            };
            for (message, attachment) in attachments {
                if read.insert((message, attachment.id)) {
                    check_readable(&watcher, summary.id, message, &attachment, None)
                        .await
                        .map_err(|e| format!("while the child ran: {e}"))?;
                }
            }
        }
    }
    watcher.close().await;
    Ok(read.len())
}

/// A fresh device on the server, before the crashed one restarts: every
/// attachment of every message it sees must read (its blobs went first).
async fn observe(dir: &Path, expected: &BTreeMap<BlobId, (u64, usize)>) -> Result<usize, String> {
    let observer = open(dir, "observer.redb")
        .await
        .map_err(|e| format!("observer: {e}"))?;
    observer
        .sync_now()
        .await
        .map_err(|e| format!("observer sync: {e}"))?;
    let mut read = 0;
    for summary in observer.sidebar().to_vec() {
        let attachments = observer
            .attachments(summary.id)
            .await
            .map_err(|e| format!("observer, chat {}: {e}", summary.id))?;
        for (message, attachment) in attachments {
            let expected = expected.get(&attachment.id).copied();
            check_readable(&observer, summary.id, message, &attachment, expected)
                .await
                .map_err(|e| format!("after the kill: {e}"))?;
            read += 1;
        }
    }
    observer.close().await;
    Ok(read)
}

/// One trial: spawn, kill after a random number of acknowledged
/// attachments (or a random time), observe, restart, check.
async fn trial(seed: u64) -> Result<(usize, usize), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut rng = SeededRng::new(seed ^ 0xC3A5_C85C_97CB_3127);
    let kill_after_acks = 1 + rng.below(30);
    let kill_after_time = Duration::from_millis(rng.below(1_500));
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_SEED, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    // Lines arrive through a thread, so a child that hangs is still killed.
    let (lines, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut started = Instant::now();
    let mut device = None;
    let stop = Arc::new(AtomicBool::new(false));
    let mut watcher = None;
    let mut acked = Acknowledged::default();
    let mut count = 0u64;
    loop {
        let deadline = if device.is_some() {
            kill_after_time
        } else {
            Duration::from_secs(60)
        };
        let Some(wait) = deadline.checked_sub(started.elapsed()) else {
            break;
        };
        let line = match tokio::time::timeout(wait, arrived.recv()).await {
            Ok(Some(line)) => line.map_err(|e| e.to_string())?,
            Ok(None) | Err(_) => break,
        };
        // libtest may print "test <name> ... " before the child's first line.
        if let Some((_, id)) = line.split_once("device ") {
            device = Some(DeviceId(parse(Some(id.trim()), &line)?));
            // The clock runs from the moment the vault is open.
            started = Instant::now();
            // From now on the vault exists: watch the server while the
            // child writes to it.
            let dir = dir.path().to_path_buf();
            let stop = stop.clone();
            watcher = Some(tokio::spawn(async move { watch(&dir, &stop).await }));
            continue;
        }
        if let Some((_, id)) = line.split_once("chat ") {
            acked.chats.insert(parse(Some(id.trim()), &line)?);
            continue;
        }
        let Some((_, rest)) = line.split_once("ok ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let chat: ChatId = parse(words.next(), &line)?;
        let message: String = parse(words.next(), &line)?;
        let manifest: BlobId = parse(words.next(), &line)?;
        let bytes_seed: u64 = parse(words.next(), &line)?;
        let len: usize = parse(words.next(), &line)?;
        acked
            .messages
            .entry((chat, message))
            .or_default()
            .push((manifest, bytes_seed, len));
        count += 1;
        if count >= kill_after_acks {
            break;
        }
    }
    child.kill().map_err(|e| format!("SIGKILL: {e}"))?;
    child.wait().map_err(|e| e.to_string())?;
    stop.store(true, Ordering::SeqCst);
    let watched = match watcher {
        Some(watcher) => watcher.await.map_err(|e| format!("the watcher: {e}"))??,
        None => 0,
    };
    let Some(device) = device else {
        // Killed before the vault existed: nothing was promised.
        return Ok((0, 0));
    };
    let expected: BTreeMap<BlobId, (u64, usize)> = acked
        .messages
        .values()
        .flatten()
        .map(|&(manifest, seed, len)| (manifest, (seed, len)))
        .collect();

    // 1. The server as it was at the kill: no record ahead of its blobs.
    observe(dir.path(), &expected).await?;

    // 2. The same device again, counting what its upload sends.
    let pending = pending_markers(dir.path());
    let storage = chatvault::open_url_as(&server_url(dir.path()), device)
        .await
        .map_err(|e| format!("storage for the restart: {e}"))?;
    let counted = FaultyStorage::new(storage);
    let restarted = ChatVault::builder()
        .storage(counted.clone() as DynStorage)
        .replica_path(dir.path().join(REPLICA))
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .auto_maintenance(None)
        .open()
        .await
        .map_err(|e| format!("the replica must open after a kill: {e}"))?;
    for chat in &acked.chats {
        restarted
            .load_full_chat(*chat)
            .await
            .map_err(|e| format!("chat {chat} created before the kill is gone: {e}"))?;
    }
    for ((chat, message), attachments) in &acked.messages {
        let held: BTreeSet<(String, BlobId)> = restarted
            .attachments(*chat)
            .await
            .map_err(|e| format!("restarted, chat {chat}: {e}"))?
            .into_iter()
            .map(|(m, a)| (m.to_string(), a.id))
            .collect();
        for (manifest, _, _) in attachments {
            if !held.contains(&(message.clone(), *manifest)) {
                return Err(format!(
                    "{chat}: acknowledged message {message} with attachment {manifest} is \
                     missing after restart"
                ));
            }
        }
    }
    let mut clean = false;
    let mut last = String::new();
    for _ in 0..RESTART_ROUNDS {
        match restarted.sync_now().await {
            Ok(_) => {}
            Err(e) => last = e.to_string(),
        }
        let queued = restarted.pending_changes().map_err(|e| e.to_string())?;
        if queued == 0 && outgoing_markers(dir.path()) == 0 {
            clean = true;
            break;
        }
        last = format!(
            "{queued} changes and {} staged attachments still queued ({last})",
            outgoing_markers(dir.path())
        );
    }
    if !clean {
        return Err(format!(
            "not clean after {RESTART_ROUNDS} sync rounds: {last}"
        ));
    }
    let puts = counted.calls(Op::PutBlob);
    if puts as usize > pending {
        return Err(format!(
            "the restarted upload sent {puts} blobs, but only {pending} were still marked \
             pending: landed blobs were sent again"
        ));
    }
    restarted.close().await;

    // 3. A new device sees every acknowledged message and reads its files.
    let other = open(dir.path(), "other.redb")
        .await
        .map_err(|e| format!("second device: {e}"))?;
    other.sync_now().await.map_err(|e| e.to_string())?;
    let mut checked: BTreeMap<BlobId, ()> = BTreeMap::new();
    for ((chat, message), attachments) in &acked.messages {
        let seen: Vec<(String, Attachment)> = other
            .attachments(*chat)
            .await
            .map_err(|e| format!("{chat} on another device: {e}"))?
            .into_iter()
            .map(|(m, a)| (m.to_string(), a))
            .collect();
        for &(manifest, bytes_seed, len) in attachments {
            let Some((_, attachment)) = seen.iter().find(|(m, a)| m == message && a.id == manifest)
            else {
                return Err(format!(
                    "{chat}: message {message} with attachment {manifest} is not on another \
                     device"
                ));
            };
            if attachment.size != len as u64 {
                return Err(format!(
                    "{chat}: attachment {manifest} says {} bytes, {len} were attached",
                    attachment.size
                ));
            }
            if checked.insert(manifest, ()).is_some() {
                continue;
            }
            let bytes = other
                .attachment_bytes(attachment)
                .await
                .map_err(|e| format!("{chat}: attachment {manifest} on another device: {e}"))?;
            if bytes != noise(len, bytes_seed) {
                return Err(format!(
                    "{chat}: attachment {manifest} reads back other bytes on another device"
                ));
            }
        }
    }
    other.close().await;
    Ok((count as usize, watched))
}

/// In a child, runs its part and returns true.
async fn child_part() -> bool {
    let (Ok(dir), Ok(seed)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_SEED)) else {
        return false;
    };
    let seed = seed.parse().expect("seed");
    attach_until_killed(Path::new(&dir), seed).await;
    true
}

// Multi-threaded: the child's sync task runs beside its attaches, as an
// application's background sync would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_that_returned_survive_random_kills_and_never_trail_their_records() {
    if child_part().await {
        return;
    }
    let seeds: Vec<u64> = common::trial_seeds(
        "CHATVAULT_ATTACH_CRASH_SEED",
        "CHATVAULT_ATTACH_CRASH_TRIALS",
        12,
    );
    let started = Instant::now();
    let mut acknowledged = 0;
    let mut watched = 0;
    let mut failures = Vec::new();
    for &seed in &seeds {
        match trial(seed).await {
            Ok((n, w)) => {
                acknowledged += n;
                watched += w;
            }
            Err(why) => failures.push(format!("seed {seed}: {why}")),
        }
    }
    println!(
        "attachment crash trials: {} kills, {acknowledged} acknowledged attachments checked, \
         {watched} read on the server while the child ran, {:.1?}",
        seeds.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} attachment crash trials failed (replay one with \
         CHATVAULT_ATTACH_CRASH_SEED=<seed>):\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}

// Garbage collection trials: a child collecting blobs is killed at a
// random point while another device names an old, unnamed attachment
// again. Every named attachment must read afterwards, and a restarted
// collection must leave exactly the named blobs.

const GC_CHILD_DIR: &str = "CHATVAULT_GC_CRASH_TRIAL_DIR";
const GC_TEST: &str = "blob_collections_killed_at_random_points_never_lose_a_named_attachment";
/// The grace period of the GC trials: short, so a trial waits little.
const GC_GRACE: Duration = Duration::from_secs(2);
const COLLECTOR: &str = "collector.redb";

async fn open_gc(dir: &Path, replica: &str) -> chatvault::Result<ChatVault> {
    ChatVault::builder()
        .storage_url(server_url(dir))
        .replica_path(dir.join(replica))
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .auto_maintenance(None)
        .blob_grace(GC_GRACE)
        .open()
        .await
}

/// The child: collects over and over until killed.
async fn collect_until_killed(dir: &Path) {
    let collector = open_gc(dir, COLLECTOR).await.expect("open the collector");
    say("collecting".into());
    loop {
        match collector.collect_attachments().await {
            Ok(run) => say(format!("deleted {}", run.deleted)),
            // A folder being written: the next run starts over.
            Err(e) => say(format!("failed {e}")),
        }
    }
}

async fn stored(dir: &Path) -> Result<BTreeSet<BlobId>, String> {
    let storage = chatvault::open_url(&server_url(dir))
        .await
        .map_err(|e| e.to_string())?;
    let mut all = BTreeSet::new();
    let mut after = None;
    loop {
        let page = storage
            .list_blobs(after, 1000)
            .await
            .map_err(|e| e.to_string())?;
        after = page.ids.last().copied();
        all.extend(page.ids);
        if !page.has_more || after.is_none() {
            return Ok(all);
        }
    }
}

/// One GC trial: files sent, some of their messages deleted, some never
/// sent; past the grace period a child collects and is killed at a random
/// point while the writer names one unnamed file again.
async fn gc_trial(seed: u64) -> Result<usize, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut rng = SeededRng::new(seed ^ 0x9E37_79B9_7F4A_7C15);
    let writer = open_gc(dir.path(), "writer.redb")
        .await
        .map_err(|e| e.to_string())?;
    let chat = writer
        .new_chat("gc trial")
        .await
        .map_err(|e| e.to_string())?
        .id;
    // (attachment, bytes seed, length, still named)
    let mut files: Vec<(Attachment, u64, usize, bool)> = Vec::new();
    for i in 0..6 + rng.below(7) {
        let (bytes_seed, len) = (rng.next_u64(), rng.below(1_600_000) as usize);
        let attachment = writer
            .attach(
                chat,
                &noise(len, bytes_seed)[..],
                format!("f{i}"),
                "application/octet-stream",
            )
            .await
            .map_err(|e| e.to_string())?;
        let sent = rng.below(4) != 0;
        if sent {
            let message = writer
                .add_message_with_attachments(
                    chat,
                    Role::User,
                    format!("m{i}"),
                    vec![attachment.clone()],
                )
                .await
                .map_err(|e| e.to_string())?;
            if rng.below(2) == 0 {
                writer
                    .delete_message(chat, message)
                    .await
                    .map_err(|e| e.to_string())?;
                files.push((attachment, bytes_seed, len, false));
                continue;
            }
        }
        files.push((attachment, bytes_seed, len, sent));
    }
    writer.sync_now().await.map_err(|e| e.to_string())?;
    tokio::time::sleep(GC_GRACE + Duration::from_millis(200)).await;

    let kill_after = Duration::from_millis(rng.below(1_200));
    let spawned = Instant::now();
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["--exact", GC_TEST, "--nocapture", "--test-threads=1"])
        .env(GC_CHILD_DIR, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    // Meanwhile the writer names an unnamed file again, in a new message.
    let again = files.iter().position(|f| !f.3);
    if let Some(i) = again {
        tokio::time::sleep(Duration::from_millis(rng.below(600))).await;
        writer
            .add_message_with_attachments(chat, Role::User, "again", vec![files[i].0.clone()])
            .await
            .map_err(|e| e.to_string())?;
        files[i].3 = true;
        // A collector may be deleting while this push puts the blobs back.
        let _ = writer.sync_now().await;
    }
    tokio::time::sleep(kill_after.saturating_sub(spawned.elapsed())).await;
    child.kill().map_err(|e| format!("SIGKILL: {e}"))?;
    child.wait().map_err(|e| e.to_string())?;

    // The writer checks what it pushed, once that check is due.
    tokio::time::sleep(chatvault::core::attachments::verify_after(GC_GRACE)).await;
    writer.sync_now().await.map_err(|e| e.to_string())?;
    writer.sync_now().await.map_err(|e| e.to_string())?;

    // Every named file reads on a fresh device.
    let reader = open_gc(dir.path(), "reader.redb")
        .await
        .map_err(|e| e.to_string())?;
    reader.sync_now().await.map_err(|e| e.to_string())?;
    let named: BTreeSet<BlobId> = reader
        .attachments(chat)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(_, a)| a.id)
        .collect();
    for (attachment, bytes_seed, len, still_named) in &files {
        if *still_named != named.contains(&attachment.id) {
            return Err(format!(
                "attachment {} should {}be named",
                attachment.id,
                if *still_named { "" } else { "not " }
            ));
        }
        if !still_named {
            continue;
        }
        let bytes = reader
            .attachment_bytes(attachment)
            .await
            .map_err(|e| format!("BUG: named attachment {} lost: {e}", attachment.id))?;
        if bytes != noise(*len, *bytes_seed) {
            return Err(format!("attachment {} reads other bytes", attachment.id));
        }
    }

    // The killed collector's replica opens, and a full run leaves exactly
    // the named files' blobs.
    let collector = open_gc(dir.path(), COLLECTOR)
        .await
        .map_err(|e| format!("the collector's replica after the kill: {e}"))?;
    // The writer's check may have put back a blob a collector deleted
    // just after its put, whatever names it now: such a blob is garbage
    // again one grace period later.
    tokio::time::sleep(GC_GRACE + Duration::from_millis(200)).await;
    let run = collector
        .collect_attachments()
        .await
        .map_err(|e| format!("collection after the kill: {e}"))?;
    if let Some(why) = run.stopped {
        return Err(format!("the collection after the kill stopped: {why}"));
    }
    let left = stored(dir.path()).await?;
    for (attachment, _, len, still_named) in &files {
        if left.contains(&attachment.id) != *still_named {
            return Err(format!(
                "after a full collection, attachment {} ({len} bytes, named: {still_named}) \
                 is {}on the server",
                attachment.id,
                if *still_named { "not " } else { "still " }
            ));
        }
    }
    let chunks: usize = files
        .iter()
        .filter(|f| f.3)
        .map(|f| f.2.div_ceil(1_000_000) + 1)
        .sum();
    if left.len() > chunks {
        return Err(format!(
            "{} blobs left after a full collection, but the named files have at most {chunks}",
            left.len()
        ));
    }
    collector.close().await;
    reader.close().await;
    writer.close().await;
    Ok(files.iter().filter(|f| f.3).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_collections_killed_at_random_points_never_lose_a_named_attachment() {
    if let Ok(dir) = std::env::var(GC_CHILD_DIR) {
        collect_until_killed(Path::new(&dir)).await;
        return;
    }
    let seeds: Vec<u64> =
        common::trial_seeds("CHATVAULT_GC_CRASH_SEED", "CHATVAULT_GC_CRASH_TRIALS", 4);
    let started = Instant::now();
    let mut named = 0;
    let mut failures = Vec::new();
    for &seed in &seeds {
        match gc_trial(seed).await {
            Ok(n) => named += n,
            Err(why) => failures.push(format!("seed {seed}: {why}")),
        }
    }
    println!(
        "blob collection crash trials: {} kills, {named} named attachments read back, {:.1?}",
        seeds.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} collection crash trials failed (replay one with CHATVAULT_GC_CRASH_SEED=<seed>):\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}
