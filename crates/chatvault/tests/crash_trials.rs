//! Crash trials: a child process saves into several chats with background
//! sync running and is killed with SIGKILL at a random point, over and
//! over. After every kill the replica must open, hold every save that
//! returned `Ok` before the kill, push it after the restart, and another
//! device must see each message exactly once.
//!
//! Two backends: the local folder, and S3 (the endpoint from
//! `CHATVAULT_TEST_S3_ENDPOINT`, else a container, else the in-process
//! stand-in, which the parent serves to its child over loopback).
//!
//! `CHATVAULT_CRASH_TRIALS` sets the number of trials per backend (20 on
//! the folder and 10 over S3 by default; the long mode, `just
//! crash-trials`, runs 200 on each). `CHATVAULT_CRASH_SEED` replays one
//! trial: every failure prints its seed.

use chatvault::core::layer::SeededRng;
use chatvault::core::DynStorage;
use chatvault::{ChatId, ChatVault, Role};
use chatvault_test_services::s3::S3Fixture;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

const CHILD_DIR: &str = "CHATVAULT_CRASH_TRIAL_DIR";
const CHILD_SEED: &str = "CHATVAULT_CRASH_TRIAL_SEED";
/// In the child: the S3 location to use, as [`Server::to_env`] writes it.
const CHILD_S3: &str = "CHATVAULT_CRASH_TRIAL_S3";
const FOLDER_TEST: &str = "saves_that_returned_survive_random_kills_and_sync_exactly_once";
const S3_TEST: &str = "saves_that_returned_survive_random_kills_over_s3";
const PASSPHRASE: &str = "crash trials";

/// Where a trial's vault lives.
#[derive(Clone, Debug)]
enum Server {
    /// `<trial dir>/server`.
    Folder,
    /// One vault of an S3 service.
    S3 {
        endpoint: String,
        region: String,
        key: String,
        secret: String,
        bucket: String,
        prefix: String,
        atomic: bool,
    },
}

impl Server {
    fn to_env(&self) -> Option<String> {
        match self {
            Server::Folder => None,
            Server::S3 {
                endpoint,
                region,
                key,
                secret,
                bucket,
                prefix,
                atomic,
            } => Some(format!(
                "{endpoint}\n{region}\n{key}\n{secret}\n{bucket}\n{prefix}\n{atomic}"
            )),
        }
    }

    fn from_env(value: Option<String>) -> Self {
        let Some(value) = value else {
            return Server::Folder;
        };
        let parts: Vec<&str> = value.split('\n').collect();
        let [endpoint, region, key, secret, bucket, prefix, atomic] = parts[..] else {
            panic!("{CHILD_S3} holds seven lines");
        };
        Server::S3 {
            endpoint: endpoint.into(),
            region: region.into(),
            key: key.into(),
            secret: secret.into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            atomic: atomic == "true",
        }
    }

    fn test_name(&self) -> &'static str {
        match self {
            Server::Folder => FOLDER_TEST,
            Server::S3 { .. } => S3_TEST,
        }
    }
}

async fn open(server: &Server, dir: &Path, replica: &str) -> chatvault::Result<ChatVault> {
    let builder = match server {
        Server::Folder => {
            ChatVault::builder().storage_url(format!("file://{}", dir.join("server").display()))
        }
        Server::S3 {
            endpoint,
            region,
            key,
            secret,
            bucket,
            prefix,
            atomic,
        } => {
            let storage = chatvault_s3::S3StorageBuilder::new()
                .with_endpoint(endpoint)
                .with_region(region)
                .with_credentials(key, secret)
                .with_bucket(bucket)
                .with_prefix(prefix)
                .with_atomic_conditional_put(*atomic)
                .build()?;
            ChatVault::builder().storage(Arc::new(storage) as DynStorage)
        }
    };
    builder
        .replica_path(dir.join(replica))
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(4)
        .open()
        .await
}

/// The child: creates up to four chats and saves numbered messages into
/// them at random, printing each save once it returned, until killed.
async fn save_until_killed(server: &Server, dir: &Path, seed: u64) {
    let vault = open(server, dir, "crashing.redb")
        .await
        .expect("open in the child");
    let mut rng = SeededRng::new(seed);
    let interval = Duration::from_millis(1 + rng.below(10));
    vault.start_sync(interval).expect("start sync");
    let mut chats: Vec<ChatId> = Vec::new();
    for i in 0u64.. {
        if chats.len() < 4 && (chats.is_empty() || rng.below(10) == 0) {
            let chat = vault
                .new_chat(format!("trial chat {}", chats.len()))
                .await
                .expect("chat");
            println!("chat {}", chat.id);
            chats.push(chat.id);
        }
        let chat = chats[rng.below(chats.len() as u64) as usize];
        vault
            .add_message(chat, Role::User, format!("message {i}"))
            .await
            .expect("save");
        println!("saved {chat} {i}");
        if rng.below(4) == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// One trial: spawn, kill after a random number of returned saves (or a
/// random time), restart, check.
async fn trial(server: &Server, seed: u64) -> Result<usize, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut rng = SeededRng::new(seed ^ 0xC3A5_C85C_97CB_3127);
    let kill_after_saves = 1 + rng.below(80);
    let kill_after_time = Duration::from_millis(rng.below(300));
    let mut command = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    command
        .args([
            "--exact",
            server.test_name(),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_SEED, seed.to_string());
    if let Some(s3) = server.to_env() {
        command.env(CHILD_S3, s3);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut started = Instant::now();
    let mut saved: BTreeMap<ChatId, Vec<String>> = BTreeMap::new();
    let mut count = 0u64;
    let mut opened = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some((_, id)) = line.split_once("chat ") {
            if !line.contains("saved ") {
                let chat = id.trim().parse::<ChatId>().map_err(|e| e.to_string())?;
                saved.entry(chat).or_default();
                if !opened {
                    // The clock runs from the moment the vault is open.
                    started = Instant::now();
                }
                opened = true;
                continue;
            }
        }
        if let Some((_, rest)) = line.split_once("saved ") {
            let (chat, n) = rest.trim().split_once(' ').ok_or("bad line")?;
            let chat = chat.parse::<ChatId>().map_err(|e| e.to_string())?;
            saved.entry(chat).or_default().push(format!("message {n}"));
            count += 1;
        }
        if opened && (count >= kill_after_saves || started.elapsed() >= kill_after_time) {
            break;
        }
    }
    child.kill().map_err(|e| format!("SIGKILL: {e}"))?;
    child.wait().map_err(|e| e.to_string())?;
    if !opened {
        // Killed before the vault existed: nothing was promised.
        return Ok(0);
    }

    let restarted = open(server, dir.path(), "crashing.redb")
        .await
        .map_err(|e| format!("the replica must open after a kill: {e}"))?;
    let mut local: BTreeMap<ChatId, Vec<String>> = BTreeMap::new();
    for (&chat, acknowledged) in &saved {
        let texts: Vec<String> = match restarted.load_full_chat(chat).await {
            Ok(full) => full
                .messages()
                .iter()
                .map(|m| m.content().to_string())
                .collect(),
            Err(e) if acknowledged.is_empty() => {
                // A chat whose creation printed but whose first save did not
                // return may still be absent only if creation itself was
                // rolled back, which a returned new_chat forbids.
                return Err(format!("chat {chat} created before the kill is gone: {e}"));
            }
            Err(e) => return Err(format!("chat {chat}: {e}")),
        };
        for text in acknowledged {
            if !texts.contains(text) {
                return Err(format!(
                    "{chat}: acknowledged {text:?} is missing after restart"
                ));
            }
        }
        let unique: BTreeSet<&String> = texts.iter().collect();
        if unique.len() != texts.len() {
            return Err(format!(
                "{chat}: duplicated messages in the replica: {texts:?}"
            ));
        }
        local.insert(chat, texts);
    }
    restarted
        .sync_now()
        .await
        .map_err(|e| format!("push after restart: {e}"))?;
    let pending = restarted.pending_changes().map_err(|e| e.to_string())?;
    if pending != 0 {
        return Err(format!(
            "{pending} changes still queued after a clean round"
        ));
    }
    restarted.close().await;

    let other = open(server, dir.path(), "other.redb")
        .await
        .map_err(|e| format!("second device: {e}"))?;
    other.sync_now().await.map_err(|e| e.to_string())?;
    for (chat, texts) in &local {
        let seen: Vec<String> = other
            .load_full_chat(*chat)
            .await
            .map_err(|e| format!("{chat} on another device: {e}"))?
            .messages()
            .iter()
            .map(|m| m.content().to_string())
            .collect();
        if &seen != texts {
            return Err(format!(
                "{chat}: the other device sees {seen:?}, the restarted one holds {texts:?}"
            ));
        }
    }
    other.close().await;
    Ok(count as usize)
}

/// In a child, runs its part and returns true.
async fn child_part() -> bool {
    let (Ok(dir), Ok(seed)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_SEED)) else {
        return false;
    };
    let server = Server::from_env(std::env::var(CHILD_S3).ok());
    let seed = seed.parse().expect("seed");
    save_until_killed(&server, Path::new(&dir), seed).await;
    true
}

/// Runs the trials against the vault `server_for(seed)` names, and fails
/// with every failing seed.
async fn run_trials<F, Fut>(what: &str, default_trials: u64, server_for: F)
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Server>,
{
    let seeds: Vec<u64> = common::trial_seeds(
        "CHATVAULT_CRASH_SEED",
        "CHATVAULT_CRASH_TRIALS",
        default_trials,
    );
    let started = Instant::now();
    let mut saves = 0;
    let mut failures = Vec::new();
    for &seed in &seeds {
        let server = server_for(seed).await;
        match trial(&server, seed).await {
            Ok(n) => saves += n,
            Err(why) => failures.push(format!("seed {seed}: {why}")),
        }
    }
    println!(
        "crash trials ({what}): {} kills, {saves} acknowledged saves checked, {:.1?}",
        seeds.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} trials ({what}) failed (replay one with CHATVAULT_CRASH_SEED=<seed>):\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn saves_that_returned_survive_random_kills_and_sync_exactly_once() {
    if child_part().await {
        return;
    }
    run_trials("local folder", 20, |_| async { Server::Folder }).await;
}

// Multi-threaded: the parent reads its child's output with blocking reads
// while the in-process S3 stand-in, if that is what serves, runs on this
// runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_that_returned_survive_random_kills_over_s3() {
    if child_part().await {
        return;
    }
    let fixture = S3Fixture::start().await.expect("an S3 service");
    println!("s3 served by {}", fixture.describe());
    let run = chatvault_test_services::run_id();
    let fixture = &fixture;
    run_trials("S3", 10, |seed| {
        let run = run.clone();
        async move {
            let location = fixture
                .vault(&format!("crash-{run}-{seed:016x}"))
                .await
                .expect("vault location");
            Server::S3 {
                endpoint: fixture.endpoint.clone(),
                region: fixture.region.clone(),
                key: fixture.access_key_id.clone(),
                secret: fixture.secret_access_key.clone(),
                bucket: location.bucket,
                prefix: location.prefix,
                atomic: fixture.atomic_conditional_put,
            }
        }
    })
    .await;
    fixture.stop().await;
}
