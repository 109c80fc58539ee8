//! Re-sealing after a key rotation: chats whose stored record is sealed
//! under an older data key are saved again, unchanged, through the normal
//! save and push path, so they end up under the current key. Nothing is
//! remembered between calls: each call scans the replica for what is still
//! stale, so a crash or restart resumes where the last committed save left
//! off (a re-sealed chat sits in the outbox like any save until pushed).

use super::apply::Current;
use super::save::Edit;
use super::{blocking, Engine};
use crate::envelope::EnvelopeCipher;
use crate::ids::ChatId;
use crate::Result;
use std::collections::BTreeSet;

/// What one [`Engine::reseal_stale`] call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Chats saved again under the current key in this call (queued for push).
    pub resealed: usize,
    /// Live chats still sealed under an older key after this call.
    pub remaining: usize,
    /// Tombstones sealed under an older key (they keep it until garbage
    /// collection; retiring that key waits for them).
    pub stale_tombstones: usize,
}

impl Engine {
    /// Key ids that records held in this device's replica are sealed under
    /// (summaries of every chat, tombstones included, and the bodies this
    /// device holds). A key in the keyring but not in this set is referenced
    /// by no record this device knows of.
    pub async fn referenced_key_ids(&self) -> Result<BTreeSet<u32>> {
        blocking(&self.inner, |inner| {
            let mut ids = BTreeSet::new();
            for summary in inner.replica.summaries()? {
                if let Ok(id) = EnvelopeCipher::sealed_key_id(&summary.sealed) {
                    ids.insert(id);
                }
                if summary.deleted {
                    continue;
                }
                if let Some(record) = inner.replica.record(summary.chat, true)? {
                    if let Some(body) = record.body.as_deref() {
                        if let Ok(id) = EnvelopeCipher::sealed_key_id(body) {
                            ids.insert(id);
                        }
                    }
                }
            }
            Ok(ids)
        })
        .await
    }

    /// Re-seals up to `batch` live chats whose stored summary is sealed under
    /// a key other than `current_key` (the cipher's current key id): each is
    /// saved again unchanged, as a new version under the current key, and
    /// queued for push like any save ([`push`](Self::push) or background
    /// sync sends it; a conflict merges and re-seals as usual). Call it
    /// until [`ResealReport::remaining`] is 0; it is resumable by
    /// construction.
    pub async fn reseal_stale(&self, current_key: u32, batch: usize) -> Result<ResealReport> {
        let (stale, stale_tombstones) = blocking(&self.inner, move |inner| {
            let mut live = Vec::new();
            let mut tombstones = 0usize;
            for summary in inner.replica.summaries()? {
                match EnvelopeCipher::sealed_key_id(&summary.sealed) {
                    Ok(id) if id != current_key => {
                        if summary.deleted {
                            tombstones += 1;
                        } else {
                            live.push(summary.chat);
                        }
                    }
                    _ => {}
                }
            }
            Ok((live, tombstones))
        })
        .await?;
        let mut report = ResealReport {
            stale_tombstones,
            ..ResealReport::default()
        };
        for chat in stale.iter().take(batch.max(1)) {
            self.reseal_one(*chat).await?;
            report.resealed += 1;
        }
        report.remaining = stale.len() - report.resealed;
        Ok(report)
    }

    async fn reseal_one(&self, chat: ChatId) -> Result<()> {
        super::save::run_edit(&self.inner, chat, true, move |current, _| {
            Ok(match current {
                // Saving the same state again seals it under the current key.
                Current::Full(stored) if !stored.is_deleted() => {
                    Edit::to(Some((*stored).clone()), ())
                }
                _ => Edit::unchanged(()),
            })
        })
        .await
        .map(|_| ())
    }
}
