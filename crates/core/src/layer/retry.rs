//! [`RetryLayer`]: retries with backoff, and resolves the ambiguous
//! conflict of a retried write by reading it back.

use crate::ids::{BlobId, ChatId};
use crate::storage::{
    BlobPage, ChangePage, Cursor, DynStorage, KeyringBlob, MaintenanceBudget, MaintenanceReport,
    Part, PutPrecondition, SealedRecord, Storage,
};
use crate::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{LayeredStorage, Op, StorageLayer};

/// Retries calls that failed with a retriable error ([`Error::is_retriable`]:
/// network trouble, 5xx, 429) with exponential backoff and jitter, a bounded
/// number of times. Other errors (conflicts, refusals, corrupt data) return
/// at once.
///
/// # Writes whose outcome is unknown
///
/// A put that failed with a retriable error may still have committed (the
/// response was lost). Retrying it is safe because versions are strictly
/// increasing and every put carries its version: a retry of a put that
/// landed fails with [`Error::Conflict`] whose `current` is the record's own
/// version. That conflict is ambiguous (another device may have committed
/// the same version first), so the layer reads the stored record back and
/// compares the sealed bytes: sealed blobs carry a fresh random nonce, so
/// equal bytes mean this very put landed and the layer reports success;
/// different bytes (or a failed read) return the conflict unchanged, and the
/// engine merges as for any conflict. The read-back is retried under the
/// same policy, so a flaky network does not turn a landed put into a
/// conflict as long as attempts remain. The keyring is handled the same way
/// (read back and compare). Only a conflict that follows a retriable failure
/// of the same call is resolved like this; a first-attempt conflict is
/// returned as is.
///
/// Blob operations are retried like reads: `put_blob` and `delete_blob` are
/// idempotent (a retried put of a blob that landed finds it stored and
/// succeeds), so no read-back is needed.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryLayer {
    /// Three attempts, 50 ms first backoff doubling up to 2 s.
    pub fn new() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }

    /// Attempts per call, the first included (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Wait before the first retry; doubles after each retry.
    pub fn with_initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// Longest wait between two attempts.
    pub fn with_max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }
}

impl StorageLayer for RetryLayer {
    fn layer(&self, inner: DynStorage) -> DynStorage {
        Arc::new(RetryStorage {
            inner,
            policy: self.clone(),
        })
    }
}

/// The storage [`RetryLayer`] builds.
#[derive(Debug)]
pub struct RetryStorage {
    inner: DynStorage,
    policy: RetryLayer,
}

impl RetryStorage {
    /// Backoff before retry number `retry` (1-based), with ±25 % jitter.
    fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .policy
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)));
        let base = exp.min(self.policy.max_backoff);
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        base.mul_f64(jitter)
    }

    /// Runs `call` until it succeeds, fails for good, or attempts run out.
    /// Returns the last result and whether any attempt failed retriably.
    async fn retry<T, F, Fut>(&self, op: Op, mut call: F) -> (Result<T>, bool)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        let mut had_retriable = false;
        loop {
            match call().await {
                Err(error) if error.is_retriable() && attempt < self.policy.max_attempts => {
                    had_retriable = true;
                    let wait = self.backoff(attempt);
                    tracing::debug!(op = op.name(), attempt, ?wait, %error, "retrying a storage call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(error) => return (Err(error), had_retriable || attempt > 1),
                Ok(value) => return (Ok(value), had_retriable),
            }
        }
    }

    /// After a retried put ends in a conflict naming the put's own version,
    /// reads the record back: identical sealed bytes mean the put landed.
    async fn settle_put(
        &self,
        record: &SealedRecord,
        result: Result<()>,
        retried: bool,
    ) -> Result<()> {
        match result {
            Err(Error::Conflict { chat, current })
                if retried && current == Some(record.version) =>
            {
                let part = if record.body.is_some() {
                    Part::Body
                } else {
                    Part::Summary
                };
                // The read-back crosses the same flaky network: retry it
                // under the same policy rather than give up on the first
                // failure.
                let ids = [record.chat];
                let stored = self.retry(Op::Get, || self.inner.get(&ids, part)).await.0;
                match stored {
                    Ok(stored)
                        if stored.iter().any(|s| {
                            s.chat == record.chat
                                && s.version == record.version
                                && s.deleted == record.deleted
                                && s.summary == record.summary
                                && (record.body.is_none() || s.body == record.body)
                        }) =>
                    {
                        tracing::debug!(%chat, version = record.version, "a retried put had landed before; reporting success");
                        Ok(())
                    }
                    _ => Err(Error::Conflict { chat, current }),
                }
            }
            other => other,
        }
    }
}

#[async_trait]
impl LayeredStorage for RetryStorage {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        self.retry(Op::Changes, || self.inner.changes(since, limit))
            .await
            .0
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        self.retry(Op::Get, || self.inner.get(chats, part)).await.0
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        let (result, retried) = self
            .retry(Op::Put, || self.inner.put(record.clone(), precondition))
            .await;
        self.settle_put(&record, result, retried).await
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = (0..batch.len()).map(|_| None).collect();
        let mut retried = vec![false; batch.len()];
        let mut todo: Vec<usize> = (0..batch.len()).collect();
        let mut attempt = 1;
        while !todo.is_empty() {
            let sent: Vec<(SealedRecord, PutPrecondition)> =
                todo.iter().map(|&i| batch[i].clone()).collect();
            let answers = self.inner.put_batch(sent).await;
            let mut again = Vec::new();
            let mut answers = answers.into_iter();
            for &index in &todo {
                let answer = answers.next().unwrap_or_else(|| {
                    Err(Error::Unavailable {
                        message: "the backend answered fewer results than records sent".to_owned(),
                        source: None,
                    })
                });
                match answer {
                    Err(error) if error.is_retriable() && attempt < self.policy.max_attempts => {
                        retried[index] = true;
                        again.push(index);
                    }
                    other => results[index] = Some(other),
                }
            }
            if again.is_empty() {
                break;
            }
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt += 1;
            todo = again;
        }
        let mut out = Vec::with_capacity(batch.len());
        for (index, (record, _)) in batch.iter().enumerate() {
            let result = results[index].take().unwrap_or_else(|| {
                Err(Error::Unavailable {
                    message: "retries exhausted".to_owned(),
                    source: None,
                })
            });
            out.push(self.settle_put(record, result, retried[index]).await);
        }
        out
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        self.retry(Op::GetKeyring, || self.inner.get_keyring())
            .await
            .0
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        let (result, retried) = self
            .retry(Op::PutKeyring, || {
                self.inner.put_keyring(bytes.clone(), precondition)
            })
            .await;
        match result {
            Err(Error::Conflict { chat, current }) if retried => {
                match self
                    .retry(Op::GetKeyring, || self.inner.get_keyring())
                    .await
                    .0
                {
                    Ok(Some(stored)) if stored.bytes == bytes => Ok(stored.version),
                    _ => Err(Error::Conflict { chat, current }),
                }
            }
            other => other,
        }
    }

    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        self.retry(Op::Maintain, || self.inner.maintain(budget))
            .await
            .0
    }

    async fn put_blob(&self, id: BlobId, sealed: Bytes) -> Result<()> {
        self.retry(Op::PutBlob, || self.inner.put_blob(id, sealed.clone()))
            .await
            .0
    }

    async fn get_blob(&self, id: BlobId) -> Result<Option<Bytes>> {
        self.retry(Op::GetBlob, || self.inner.get_blob(id)).await.0
    }

    async fn list_blobs(&self, after: Option<BlobId>, limit: usize) -> Result<BlobPage> {
        self.retry(Op::ListBlobs, || self.inner.list_blobs(after, limit))
            .await
            .0
    }

    async fn delete_blob(&self, id: BlobId) -> Result<()> {
        self.retry(Op::DeleteBlob, || self.inner.delete_blob(id))
            .await
            .0
    }
}
