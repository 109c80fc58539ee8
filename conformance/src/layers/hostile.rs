//! [`HostileLayer`]: a server that lies.

use super::{lock, SeededRng};
use async_trait::async_trait;
use bytes::Bytes;
use chatvault_core::layer::{LayeredStorage, StorageLayer};
use chatvault_core::{
    ChangePage, ChatId, Cursor, DynStorage, KeyringBlob, Part, PutPrecondition, Result,
    SealedRecord, Storage,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One way a [`HostileLayer`] lies. Tampering applies to what the server
/// hands out (`get`, `changes`, `get_keyring`); writes pass through and are
/// remembered, so older versions can be replayed later.
#[derive(Clone, Debug)]
pub enum Tamper {
    /// `get` of either chat returns the other chat's sealed summary and body
    /// under the asked chat's id and version.
    SwapBlobs(ChatId, ChatId),
    /// `get` of `to` returns `from`'s sealed body (its own summary).
    MoveBody {
        /// Whose body is served.
        from: ChatId,
        /// The chat it is served as.
        to: ChatId,
    },
    /// `get` of `chat` returns the sealed summary and body of `source` read
    /// from another vault's storage `from`, under `chat`'s id and version.
    MoveFromVault {
        /// The chat it is served as.
        chat: ChatId,
        /// The other vault's storage.
        from: DynStorage,
        /// The other vault's chat whose blobs are served.
        source: ChatId,
    },
    /// `get` of `chat` returns the oldest version of it this layer has seen,
    /// with its true (older) version number: a rollback.
    Rollback(ChatId),
    /// `get` of `chat` returns the oldest version seen, relabelled with the
    /// current version number: a replay claiming to be new.
    ReplayAsNew(ChatId),
    /// `get_keyring` returns the oldest key file this layer has seen.
    RollbackKeyring,
    /// The sealed summary and body of `chat` lose their second half.
    Truncate(ChatId),
    /// One bit of the sealed summary and one of the body of `chat` flip
    /// (positions drawn from the layer's seed).
    FlipBits(ChatId),
    /// The format byte of `chat`'s sealed blobs claims a future format.
    FutureFormat(ChatId),
    /// `chat` is left out of `get` and `changes`, as if never written.
    Withhold(ChatId),
}

impl Tamper {
    /// The chats whose records this tampering changes.
    fn targets(&self) -> Vec<ChatId> {
        match self {
            Tamper::SwapBlobs(a, b) => vec![*a, *b],
            Tamper::MoveBody { to, .. } => vec![*to],
            Tamper::MoveFromVault { chat, .. }
            | Tamper::Rollback(chat)
            | Tamper::ReplayAsNew(chat)
            | Tamper::Truncate(chat)
            | Tamper::FlipBits(chat)
            | Tamper::FutureFormat(chat)
            | Tamper::Withhold(chat) => vec![*chat],
            Tamper::RollbackKeyring => Vec::new(),
        }
    }
}

#[derive(Debug)]
struct HostileState {
    tampers: Vec<Tamper>,
    /// Every record version seen passing through, by chat and version.
    history: BTreeMap<ChatId, BTreeMap<u64, SealedRecord>>,
    /// Every key file seen, oldest first.
    keyrings: Vec<KeyringBlob>,
    rng: SeededRng,
    tampered: u64,
}

/// A server that lies: it swaps, moves, rolls back, truncates, flips bits,
/// fakes format versions and withholds records (see [`Tamper`]), so tests
/// can check a device refuses all of it. Clones share the armed tampering
/// and the history of records seen.
#[derive(Clone, Debug)]
pub struct HostileLayer {
    state: Arc<Mutex<HostileState>>,
}

impl HostileLayer {
    /// An honest layer (nothing armed) remembering what passes through; bit
    /// positions are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(HostileState {
                tampers: Vec::new(),
                history: BTreeMap::new(),
                keyrings: Vec::new(),
                rng: SeededRng::new(seed),
                tampered: 0,
            })),
        }
    }

    /// Starts lying in this way too.
    pub fn arm(&self, tamper: Tamper) {
        lock(&self.state).tampers.push(tamper);
    }

    /// Stops every lie; the history is kept.
    pub fn disarm(&self) {
        lock(&self.state).tampers.clear();
    }

    /// How many records, pages or key files were served tampered.
    pub fn tampered(&self) -> u64 {
        lock(&self.state).tampered
    }
}

impl StorageLayer for HostileLayer {
    fn layer(&self, inner: DynStorage) -> DynStorage {
        Arc::new(HostileStorage {
            inner,
            state: self.state.clone(),
        })
    }
}

/// The storage [`HostileLayer`] builds.
#[derive(Debug)]
pub struct HostileStorage {
    inner: DynStorage,
    state: Arc<Mutex<HostileState>>,
}

fn truncated(bytes: &Bytes) -> Bytes {
    bytes.slice(..bytes.len() / 2)
}

fn flipped(bytes: &Bytes, rng: &mut SeededRng) -> Bytes {
    if bytes.is_empty() {
        return bytes.clone();
    }
    let mut out = bytes.to_vec();
    let bit = rng.below(out.len() as u64 * 8);
    out[(bit / 8) as usize] ^= 1 << (bit % 8);
    Bytes::from(out)
}

fn future_format(bytes: &Bytes) -> Bytes {
    let mut out = bytes.to_vec();
    if let Some(first) = out.first_mut() {
        *first = first.wrapping_add(1);
    }
    Bytes::from(out)
}

impl HostileStorage {
    fn remember(&self, records: &[SealedRecord]) {
        let mut state = lock(&self.state);
        for record in records {
            let versions = state.history.entry(record.chat).or_default();
            // A summary-only copy never replaces a full one.
            let keep_full = versions
                .get(&record.version)
                .is_some_and(|known| known.body.is_some() && record.body.is_none());
            if !keep_full {
                versions.insert(record.version, record.clone());
            }
        }
    }

    fn tampers(&self) -> Vec<Tamper> {
        lock(&self.state).tampers.clone()
    }

    fn oldest(&self, chat: ChatId) -> Option<SealedRecord> {
        lock(&self.state)
            .history
            .get(&chat)
            .and_then(|v| v.values().next().cloned())
    }

    /// Applies every armed tampering to one honest record; `None` withholds
    /// it.
    async fn corrupt(
        &self,
        mut record: SealedRecord,
        part: Part,
        tampers: &[Tamper],
    ) -> Result<Option<SealedRecord>> {
        let chat = record.chat;
        let mut touched = false;
        for tamper in tampers {
            if !tamper.targets().contains(&chat) {
                continue;
            }
            touched = true;
            match tamper {
                Tamper::SwapBlobs(a, b) => {
                    let other = if chat == *a { *b } else { *a };
                    if let Some(o) = self.inner.get(&[other], part).await?.pop() {
                        record.summary = o.summary;
                        record.body = o.body;
                    }
                }
                Tamper::MoveBody { from, .. } => {
                    if let Some(o) = self.inner.get(&[*from], Part::Body).await?.pop() {
                        if part == Part::Body {
                            record.body = o.body;
                        }
                    }
                }
                Tamper::MoveFromVault { from, source, .. } => {
                    if let Some(o) = from.get(&[*source], part).await?.pop() {
                        record.summary = o.summary;
                        record.body = o.body;
                    }
                }
                Tamper::Rollback(_) => {
                    if let Some(old) = self.oldest(chat) {
                        record = old;
                    }
                }
                Tamper::ReplayAsNew(_) => {
                    if let Some(old) = self.oldest(chat) {
                        let version = record.version;
                        record = old;
                        record.version = version;
                    }
                }
                Tamper::Truncate(_) => {
                    record.summary = truncated(&record.summary);
                    record.body = record.body.as_ref().map(truncated);
                }
                Tamper::FlipBits(_) => {
                    let mut state = lock(&self.state);
                    record.summary = flipped(&record.summary, &mut state.rng);
                    record.body = record.body.as_ref().map(|b| flipped(b, &mut state.rng));
                }
                Tamper::FutureFormat(_) => {
                    record.summary = future_format(&record.summary);
                    record.body = record.body.as_ref().map(future_format);
                }
                Tamper::Withhold(_) => return Ok(None),
                Tamper::RollbackKeyring => {}
            }
        }
        if part == Part::Summary {
            record.body = None;
        }
        if touched {
            lock(&self.state).tampered += 1;
        }
        Ok(Some(record))
    }
}

#[async_trait]
impl LayeredStorage for HostileStorage {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        let mut page = self.inner.changes(since, limit).await?;
        let tampers = self.tampers();
        let targets: Vec<ChatId> = tampers.iter().flat_map(Tamper::targets).collect();
        let withheld: Vec<ChatId> = tampers
            .iter()
            .filter_map(|t| match t {
                Tamper::Withhold(chat) => Some(*chat),
                _ => None,
            })
            .collect();
        page.changes.retain(|c| !withheld.contains(&c.chat));
        for change in &mut page.changes {
            if targets.contains(&change.chat) {
                // Make the device fetch the record, where the lie is told.
                change.summary = None;
            }
        }
        Ok(page)
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        let records = self.inner.get(chats, part).await?;
        self.remember(&records);
        let tampers = self.tampers();
        if tampers.is_empty() {
            return Ok(records);
        }
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            if let Some(record) = self.corrupt(record, part, &tampers).await? {
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        let copy = record.clone();
        self.inner.put(record, precondition).await?;
        self.remember(&[copy]);
        Ok(())
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let copies: Vec<SealedRecord> = batch.iter().map(|(r, _)| r.clone()).collect();
        let results = self.inner.put_batch(batch).await;
        let landed: Vec<SealedRecord> = copies
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(c, _)| c)
            .collect();
        self.remember(&landed);
        results
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        let keyring = self.inner.get_keyring().await?;
        let mut state = lock(&self.state);
        if let Some(k) = &keyring {
            if !state.keyrings.iter().any(|seen| seen.version == k.version) {
                state.keyrings.push(k.clone());
            }
        }
        if state
            .tampers
            .iter()
            .any(|t| matches!(t, Tamper::RollbackKeyring))
        {
            if let Some(oldest) = state.keyrings.first().cloned() {
                state.tampered += 1;
                return Ok(Some(oldest));
            }
        }
        Ok(keyring)
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        let version = self.inner.put_keyring(bytes.clone(), precondition).await?;
        lock(&self.state)
            .keyrings
            .push(KeyringBlob { bytes, version });
        Ok(version)
    }
}
