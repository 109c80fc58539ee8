//! [`ChaosLayer`]: seeded random trouble around any backend, for tests,
//! staging and game days.

use super::{lock, LayeredStorage, Op, StorageLayer};
use crate::ids::{BlobId, ChatId};
use crate::storage::{
    BlobPage, Change, ChangePage, Cursor, DynStorage, KeyringBlob, MaintenanceBudget,
    MaintenanceReport, Part, PutPrecondition, SealedRecord, Storage,
};
use crate::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A small, fast, seedable generator (SplitMix64): every random choice of
/// [`ChaosLayer`] and `HostileLayer` (in chatvault-conformance) comes from one seed, so a failing run
/// replays exactly (given the same sequence of calls).
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `p` (0.0 never, 1.0 always).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// What a [`ChaosLayer`] does, and how often. Every probability is per call
/// (0.0 = never). Start from [`ChaosConfig::calm`] or [`ChaosConfig::stormy`]
/// and adjust the fields.
#[derive(Clone, Debug, PartialEq)]
pub struct ChaosConfig {
    /// The seed of every choice.
    pub seed: u64,
    /// A call fails with retriable [`Error::Unavailable`] before reaching the
    /// server.
    pub unavailable: f64,
    /// A call fails with non-retriable [`Error::Rejected`] before reaching
    /// the server (a 4xx the client cannot fix by waiting).
    pub rejected: f64,
    /// A call hangs for [`ChaosConfig::timeout_after`], then fails with
    /// [`Error::Unavailable`]; nothing reaches the server.
    pub timeout: f64,
    /// How long a timed-out call hangs.
    pub timeout_after: Duration,
    /// A write (put, put_batch, delete, put_keyring) commits on the server
    /// but its response is lost: the caller sees [`Error::Unavailable`].
    pub lost_response: f64,
    /// Every call first waits a random time up to this long.
    pub max_latency: Duration,
    /// A feed call answers with the page of the previous call again (its
    /// cursor included): at-least-once delivery, the cursor moves back.
    pub duplicate_page: f64,
    /// A feed page's changes are shuffled across chats (each chat's own
    /// changes keep their order).
    pub reorder_page: f64,
}

impl ChaosConfig {
    /// Seeded, with nothing enabled.
    pub fn calm(seed: u64) -> Self {
        Self {
            seed,
            unavailable: 0.0,
            rejected: 0.0,
            timeout: 0.0,
            timeout_after: Duration::from_millis(5),
            lost_response: 0.0,
            max_latency: Duration::ZERO,
            duplicate_page: 0.0,
            reorder_page: 0.0,
        }
    }

    /// Seeded, with every kind of trouble at a rate a sync loop must survive:
    /// 10 % unavailable, 2 % rejected, 3 % timeouts, 10 % lost write
    /// responses, up to 2 ms latency, 10 % duplicated and 20 % reordered
    /// feed pages.
    pub fn stormy(seed: u64) -> Self {
        Self {
            seed,
            unavailable: 0.10,
            rejected: 0.02,
            timeout: 0.03,
            timeout_after: Duration::from_millis(5),
            lost_response: 0.10,
            max_latency: Duration::from_millis(2),
            duplicate_page: 0.10,
            reorder_page: 0.20,
        }
    }
}

/// How many faults a [`ChaosStorage`] injected, by kind.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ChaosStats {
    /// Calls failed with [`Error::Unavailable`] before reaching the server.
    pub unavailable: u64,
    /// Calls failed with [`Error::Rejected`].
    pub rejected: u64,
    /// Calls that hung, then failed.
    pub timeouts: u64,
    /// Writes that committed but answered [`Error::Unavailable`].
    pub lost_responses: u64,
    /// Calls delayed by latency.
    pub delayed: u64,
    /// Feed pages delivered twice.
    pub duplicated_pages: u64,
    /// Feed pages reordered.
    pub reordered_pages: u64,
}

impl ChaosStats {
    /// Every injected fault (latency not counted: it does not fail a call).
    pub fn faults(&self) -> u64 {
        self.unavailable
            + self.rejected
            + self.timeouts
            + self.lost_responses
            + self.duplicated_pages
            + self.reordered_pages
    }
}

/// Seeded chaos around any backend: retriable and non-retriable errors,
/// latency, timeouts, responses lost after a successful write, duplicated
/// and reordered feed pages, all drawn from [`ChaosConfig::seed`].
///
/// ```
/// use chatvault_core::layer::{ChaosConfig, ChaosLayer};
/// use chatvault_core::layer::LayerExt;
/// # fn demo(backend: chatvault_core::DynStorage) {
/// let chaos = ChaosLayer::new(ChaosConfig::stormy(7));
/// let storage = backend.layer(chaos.clone());
/// // …run the code under test, then:
/// println!("{:?}", chaos.stats());
/// # let _ = storage;
/// # }
/// ```
///
/// Clones of a layer share one generator and one tally, so every storage
/// it wraps draws from the same seeded sequence.
#[derive(Clone, Debug)]
pub struct ChaosLayer {
    shared: Arc<ChaosShared>,
}

#[derive(Debug)]
struct ChaosShared {
    config: ChaosConfig,
    rng: Mutex<SeededRng>,
    stats: Mutex<ChaosStats>,
    /// Chaos on/off without rebuilding the stack (1 = on).
    enabled: AtomicU64,
}

impl ChaosLayer {
    /// A layer injecting what `config` says.
    pub fn new(config: ChaosConfig) -> Self {
        Self {
            shared: Arc::new(ChaosShared {
                rng: Mutex::new(SeededRng::new(config.seed)),
                config,
                stats: Mutex::new(ChaosStats::default()),
                enabled: AtomicU64::new(1),
            }),
        }
    }

    /// What was injected so far, through every storage of this layer.
    pub fn stats(&self) -> ChaosStats {
        *lock(&self.shared.stats)
    }

    /// Turns the chaos off (calls pass through untouched) or back on: a
    /// test heals the network before checking convergence.
    pub fn set_enabled(&self, enabled: bool) {
        self.shared
            .enabled
            .store(u64::from(enabled), Ordering::SeqCst);
    }

    /// The configuration.
    pub fn config(&self) -> &ChaosConfig {
        &self.shared.config
    }
}

impl StorageLayer for ChaosLayer {
    fn layer(&self, inner: DynStorage) -> DynStorage {
        Arc::new(ChaosStorage {
            inner,
            shared: self.shared.clone(),
            previous_since: Mutex::new(None),
        })
    }
}

/// The storage [`ChaosLayer`] builds.
#[derive(Debug)]
pub struct ChaosStorage {
    inner: DynStorage,
    shared: Arc<ChaosShared>,
    previous_since: Mutex<Option<Cursor>>,
}

/// What the dice decided for one call.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Unavailable,
    Rejected,
    Timeout,
    LostResponse,
}

impl ChaosStorage {
    fn enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::SeqCst) == 1
    }

    /// Rolls the dice for one call: latency first, then at most one fault.
    fn roll(&self, write: bool) -> (Duration, Verdict) {
        if !self.enabled() {
            return (Duration::ZERO, Verdict::Pass);
        }
        let config = &self.shared.config;
        let mut rng = lock(&self.shared.rng);
        let latency = if config.max_latency.is_zero() {
            Duration::ZERO
        } else {
            let micros = config.max_latency.as_micros().min(u128::from(u64::MAX)) as u64;
            Duration::from_micros(rng.below(micros + 1))
        };
        let verdict = if rng.chance(config.unavailable) {
            Verdict::Unavailable
        } else if rng.chance(config.rejected) {
            Verdict::Rejected
        } else if rng.chance(config.timeout) {
            Verdict::Timeout
        } else if write && rng.chance(config.lost_response) {
            Verdict::LostResponse
        } else {
            Verdict::Pass
        };
        drop(rng);
        let mut stats = lock(&self.shared.stats);
        if !latency.is_zero() {
            stats.delayed += 1;
        }
        match verdict {
            Verdict::Pass => {}
            Verdict::Unavailable => stats.unavailable += 1,
            Verdict::Rejected => stats.rejected += 1,
            Verdict::Timeout => stats.timeouts += 1,
            Verdict::LostResponse => stats.lost_responses += 1,
        }
        (latency, verdict)
    }

    async fn run<T, F>(&self, op: Op, write: bool, call: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let (latency, verdict) = self.roll(write);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match verdict {
            Verdict::Pass => call.await,
            Verdict::Unavailable => Err(unavailable(format!(
                "injected fault: network unreachable during {op}"
            ))),
            Verdict::Rejected => Err(Error::Rejected {
                code: "chaos-400".to_owned(),
                message: format!("injected fault: the server refused {op}"),
            }),
            Verdict::Timeout => {
                let after = self.shared.config.timeout_after;
                tokio::time::sleep(after).await;
                Err(unavailable(format!(
                    "injected fault: {op} timed out after {after:?}"
                )))
            }
            Verdict::LostResponse => {
                let _committed = call.await;
                Err(unavailable(format!(
                    "injected fault: connection reset after the server committed {op}"
                )))
            }
        }
    }

    /// Shuffles `changes` across chats, keeping each chat's own order.
    fn reorder(&self, changes: &mut [Change]) {
        let mut rng = lock(&self.shared.rng);
        let mut order: Vec<usize> = (0..changes.len()).collect();
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        drop(rng);
        // Slots keep their chat; each chat's changes are dealt back into its
        // slots in their original order, so only the interleaving changes.
        let mut by_chat: BTreeMap<ChatId, std::collections::VecDeque<Change>> = BTreeMap::new();
        for change in changes.iter() {
            by_chat
                .entry(change.chat)
                .or_default()
                .push_back(change.clone());
        }
        let slots: Vec<ChatId> = order.iter().map(|&i| changes[i].chat).collect();
        for (slot, chat) in changes.iter_mut().zip(slots) {
            if let Some(next) = by_chat.get_mut(&chat).and_then(|q| q.pop_front()) {
                *slot = next;
            }
        }
    }
}

#[async_trait]
impl LayeredStorage for ChaosStorage {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        let (duplicate, reorder) = if self.enabled() {
            let mut rng = lock(&self.shared.rng);
            (
                rng.chance(self.shared.config.duplicate_page),
                rng.chance(self.shared.config.reorder_page),
            )
        } else {
            (false, false)
        };
        let previous = lock(&self.previous_since).replace(since.clone());
        let asked = match previous {
            Some(previous) if duplicate && previous != *since => {
                lock(&self.shared.stats).duplicated_pages += 1;
                previous
            }
            _ => since.clone(),
        };
        let mut page = self
            .run(Op::Changes, false, self.inner.changes(&asked, limit))
            .await?;
        if reorder && page.changes.len() > 1 {
            lock(&self.shared.stats).reordered_pages += 1;
            self.reorder(&mut page.changes);
        }
        Ok(page)
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        self.run(Op::Get, false, self.inner.get(chats, part)).await
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        self.run(Op::Put, true, self.inner.put(record, precondition))
            .await
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let len = batch.len();
        match self
            .run(Op::PutBatch, true, async {
                Ok(self.inner.put_batch(batch).await)
            })
            .await
        {
            Ok(results) => results,
            Err(error) => {
                let retriable = error.is_retriable();
                let message = error.to_string();
                (0..len)
                    .map(|_| {
                        if retriable {
                            Err(Error::Unavailable {
                                message: message.clone(),
                                source: None,
                            })
                        } else {
                            Err(Error::Rejected {
                                code: "chaos-400".to_owned(),
                                message: message.clone(),
                            })
                        }
                    })
                    .collect()
            }
        }
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        self.run(Op::GetKeyring, false, self.inner.get_keyring())
            .await
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        self.run(
            Op::PutKeyring,
            true,
            self.inner.put_keyring(bytes, precondition),
        )
        .await
    }

    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        self.run(Op::Maintain, false, self.inner.maintain(budget))
            .await
    }

    async fn put_blob(&self, id: BlobId, sealed: Bytes) -> Result<()> {
        self.run(Op::PutBlob, true, self.inner.put_blob(id, sealed))
            .await
    }

    async fn get_blob(&self, id: BlobId) -> Result<Option<Bytes>> {
        self.run(Op::GetBlob, false, self.inner.get_blob(id)).await
    }

    async fn list_blobs(&self, after: Option<BlobId>, limit: usize) -> Result<BlobPage> {
        self.run(Op::ListBlobs, false, self.inner.list_blobs(after, limit))
            .await
    }

    async fn delete_blob(&self, id: BlobId) -> Result<()> {
        self.run(Op::DeleteBlob, true, self.inner.delete_blob(id))
            .await
    }
}

fn unavailable(message: String) -> Error {
    Error::Unavailable {
        message,
        source: None,
    }
}
