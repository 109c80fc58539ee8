//! Re-sealing after a key rotation: records whose stored summary or body is
//! sealed under an older data key are saved again, unchanged, through the normal
//! save and push path, so they end up under the current key. Live chats
//! and tombstones alike: a deleted chat's tombstone is re-sealed too, so a
//! rotate → re-seal → retire cycle leaves no record under the old key.
//!
//! Nothing is remembered between calls: each call scans the replica for
//! what is still stale, so a crash or restart resumes where the last
//! committed batch left off (a re-sealed chat sits in the outbox like any
//! save until pushed). A batch commits in one replica transaction.
//!
//! The same step keeps an offline device's queued changes openable after
//! another device retired the key they were sealed under
//! ([`Engine::restage_outbox`]): the push re-seals every outbox entry not
//! under the current key before sending it, and refuses to send one this
//! device cannot open itself.

use super::local::{Current, LocalStore};
use super::save::Edit;
use super::status::Event;
use super::{blocking, opens_later, Engine};
use crate::ids::ChatId;
use crate::replica::OutboxEntry;
use crate::storage::SealedRecord;
use crate::{Error, Result};
use std::collections::{BTreeSet, HashMap};

/// What one [`Engine::reseal_stale`] call did, and where the whole re-seal
/// stands (the figures of [`Event::ResealProgress`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Records (chats and tombstones) saved again under the current key in
    /// this call (queued for push).
    pub resealed: usize,
    /// Records still sealed under an older key after this call.
    pub remaining: usize,
    /// Of [`remaining`](Self::remaining), how many are tombstones of
    /// deleted chats (re-sealed like live chats; counted apart for display).
    pub stale_tombstones: usize,
    /// Records in the replica sealed under the current key after this call.
    pub done: usize,
    /// Records in the replica (live chats and tombstones).
    pub total: usize,
    /// Chats this call could not re-seal, with why: one that grows past the
    /// backend's record limit when sealed again (written unpadded or by an
    /// older build), or that does not open on this device. They stay under
    /// their old key (so it cannot retire yet) while the others go on.
    pub refused: Vec<(ChatId, String)>,
}

/// What [`reseal_batch`] did.
#[derive(Default)]
struct BatchResealed {
    /// Chats re-sealed in the batch's transaction.
    resealed: usize,
    /// Chats whose body this device does not hold: re-sealed one by one
    /// after fetching it.
    needs_body: Vec<ChatId>,
    /// Chats whose stored record does not open here, or that grow past the
    /// backend's record limit when sealed again (with why).
    unopenable: Vec<(ChatId, Error)>,
}

/// What [`Engine::reseal_chats`] did.
#[derive(Default)]
struct Resealed {
    /// Chats re-sealed.
    count: usize,
    /// Chats left as they are, with why.
    refused: Vec<(ChatId, Error)>,
}

impl Engine {
    /// Key ids that records held in this device's replica are sealed under
    /// (summaries of every chat, tombstones included, and the bodies this
    /// device holds). A key in the keyring but not in this set is referenced
    /// by no record this device knows of.
    ///
    /// Errors: [`Error::Corrupt`] when a stored blob's header does not parse
    /// (its key is unknown, so no key may be judged unused); replica errors.
    pub async fn referenced_key_ids(&self) -> Result<BTreeSet<u32>> {
        blocking(&self.inner, |inner| {
            let mut ids = BTreeSet::new();
            let unparsed = |chat: ChatId, part: &str, e: Error| {
                Error::corrupt(
                    format!("the stored {part} of chat {chat}"),
                    format!(
                        "its header does not say which data key sealed it ({e}), so no key can be \
                         judged unused; `chatvault verify` lists what is damaged"
                    ),
                )
            };
            let summaries = inner.local.replica.summaries()?;
            let mut live = Vec::new();
            for summary in summaries {
                let id = inner
                    .local
                    .sealer
                    .key_id(&summary.sealed)
                    .map_err(|e| unparsed(summary.chat, "summary", e))?;
                ids.extend(id);
                if !summary.deleted {
                    live.push(summary.chat);
                }
            }
            for (chat, record) in live.iter().zip(inner.local.replica.records(&live, true)?) {
                if let Some(body) = record.as_ref().and_then(|r| r.body.as_deref()) {
                    ids.extend(
                        inner
                            .local
                            .sealer
                            .key_id(body)
                            .map_err(|e| unparsed(*chat, "body", e))?,
                    );
                }
            }
            Ok(ids)
        })
        .await
    }

    /// Re-seals up to `batch` records (live chats and tombstones) whose
    /// stored summary is sealed under a key other than `current_key` (the
    /// cipher's current key id): each is saved again unchanged, as a new
    /// version under the current key, and queued for push like any save
    /// ([`push`](Self::push) or background sync sends it; a conflict merges
    /// and re-seals as usual). The batch commits in one replica transaction
    /// (a chat whose body must first be fetched is saved on its own), and
    /// then [`Event::ResealProgress`] reports where the whole re-seal stands.
    /// Call it until [`ResealReport::remaining`] is 0; it is resumable by
    /// construction.
    pub async fn reseal_stale(&self, current_key: u32, batch: usize) -> Result<ResealReport> {
        let (stale, tombstones, total) = blocking(&self.inner, move |inner| {
            let mut stale = Vec::new();
            let mut tombstones = BTreeSet::new();
            let summaries = inner.local.replica.summaries()?;
            let total = summaries.len();
            // A live chat whose summary is current may still hold its body
            // under an older key (sealed by a build that sealed the parts
            // one by one while a rotation was adopted). Finding one reads
            // every body, so it is looked for only once the summaries left
            // to re-seal fit in this call: a long re-seal does not read all
            // bodies per batch, and the call that reports nothing left has
            // looked.
            let mut current_live = Vec::new();
            for summary in summaries {
                match inner.local.sealer.key_id(&summary.sealed) {
                    Ok(Some(id)) if id != current_key => {
                        if summary.deleted {
                            tombstones.insert(summary.chat);
                        }
                        stale.push(summary.chat);
                    }
                    _ if !summary.deleted => current_live.push(summary.chat),
                    _ => {}
                }
            }
            if stale.len() >= batch.max(1) {
                return Ok((stale, tombstones, total));
            }
            let bodies = inner.local.replica.body_key_ids(&current_live, |sealed| {
                inner.local.sealer.key_id(sealed).ok().flatten()
            })?;
            for (chat, body_key) in current_live.into_iter().zip(bodies) {
                if body_key.is_some_and(|id| id != current_key) {
                    stale.push(chat);
                }
            }
            Ok((stale, tombstones, total))
        })
        .await?;
        // A chat that cannot be re-sealed does not use up the batch: the
        // call goes on down the list, so each call makes progress while any
        // stale chat can be re-sealed.
        let batch = batch.max(1);
        let mut resealed = 0usize;
        let mut done_tombstones = 0usize;
        let mut refused = Vec::new();
        let mut rest = stale.as_slice();
        while resealed < batch && !rest.is_empty() {
            let (chosen, tail) = rest.split_at((batch - resealed).min(rest.len()));
            rest = tail;
            let outcome = self.reseal_chats(chosen.to_vec(), current_key).await?;
            let refused_now: BTreeSet<ChatId> = outcome.refused.iter().map(|(c, _)| *c).collect();
            done_tombstones += chosen
                .iter()
                .filter(|c| tombstones.contains(c) && !refused_now.contains(c))
                .count();
            resealed += outcome.count;
            refused.extend(outcome.refused.into_iter().map(|(c, e)| (c, e.to_string())));
        }
        let remaining = stale.len() - resealed;
        let report = ResealReport {
            resealed,
            remaining,
            stale_tombstones: tombstones.len().saturating_sub(done_tombstones),
            done: total - remaining,
            total,
            refused,
        };
        self.inner.notifier.emit(Event::ResealProgress {
            key_id: current_key,
            done: report.done,
            total: report.total,
        });
        Ok(report)
    }

    /// Re-seals every outbox entry sealed under a key other than
    /// `current_key`, so what this device pushes opens with the vault's
    /// current keys (another device may have retired the old one meanwhile).
    /// Returns how many were re-sealed. The push does this by itself before
    /// sending; the keyring re-read calls it before the replica's copy of
    /// the key file drops a retired key, so a crash in between loses nothing.
    ///
    /// Errors: replica failures. An entry this device cannot open (its key
    /// is no longer held here) stays queued as it is: the push refuses it.
    pub async fn restage_outbox(&self, current_key: u32) -> Result<usize> {
        let entries = blocking(&self.inner, |inner| {
            inner.local.replica.due(None, None, usize::MAX)
        })
        .await?;
        let stale: Vec<ChatId> = entries
            .iter()
            .filter(|(_, record)| self.inner.local.sealer.is_stale(record, current_key))
            .map(|(entry, _)| entry.chat)
            .collect();
        Ok(self.reseal_chats(stale, current_key).await?.count)
    }

    /// Re-seals `chats` (one transaction, then one by one those whose body
    /// must be fetched). Chats that do not open here, or that would grow
    /// past the backend's record limit, are left as they are and returned
    /// as refused; the others go on.
    async fn reseal_chats(&self, chats: Vec<ChatId>, current_key: u32) -> Result<Resealed> {
        if chats.is_empty() {
            return Ok(Resealed::default());
        }
        let batch = blocking(&self.inner, move |inner| {
            reseal_batch(&inner.local, &chats, current_key)
        })
        .await?;
        let mut out = Resealed {
            count: batch.resealed,
            refused: batch.unopenable,
        };
        for chat in batch.needs_body {
            match self.reseal_one(chat).await {
                Ok(()) => out.count += 1,
                Err(e) if opens_later(&e) || matches!(e, Error::TooLarge { .. }) => {
                    out.refused.push((chat, e));
                }
                Err(e) => return Err(e),
            }
        }
        for (chat, error) in &out.refused {
            tracing::warn!(%chat, %error, "a chat to re-seal cannot be re-sealed here; left as it is");
        }
        Ok(out)
    }

    async fn reseal_one(&self, chat: ChatId) -> Result<()> {
        super::save::run_edit(&self.inner, chat, true, move |current, _| {
            Ok(match current {
                // Saving the same state again seals it under the current key
                // (a deleted chat's state is its tombstone).
                Current::Full(stored) => Edit::to(Some((*stored).clone()), ()),
                _ => Edit::unchanged(()),
            })
        })
        .await
        .map(|_| ())
    }
}

/// Re-seals `chats` still stale under `current_key` in one transaction.
/// In-memory state follows without change events: the content is the
/// same.
fn reseal_batch(local: &LocalStore, chats: &[ChatId], current_key: u32) -> Result<BatchResealed> {
    let _writes = local.lock_writes();
    let mut write = local.write()?;
    let mut out = BatchResealed::default();
    let mut staged_all = Vec::new();
    for &chat in chats {
        let header = write.header(chat)?;
        if header.is_none() {
            continue;
        }
        let Some(record) = write.record(chat, true)? else {
            continue;
        };
        // A pull or a save since the scan may have re-sealed it already.
        if !local.sealer.is_stale(&record, current_key) {
            continue;
        }
        let current = match local.current(chat, header, || Ok(Some(record)), true) {
            Ok(current) => current,
            Err(e) if opens_later(&e) => {
                out.unopenable.push((chat, e));
                continue;
            }
            Err(e) => return Err(e),
        };
        match current {
            Some(Current::Full(stored)) => {
                match local.stage_local(&mut write, header, (*stored).clone()) {
                    Ok(staged) => {
                        staged_all.push(staged);
                        out.resealed += 1;
                    }
                    // Re-padded (or sealed by a newer format) it no longer
                    // fits: this chat stays as it is, the batch goes on.
                    Err(e @ Error::TooLarge { .. }) => out.unopenable.push((chat, e)),
                    Err(e) => return Err(e),
                }
            }
            None | Some(Current::Summary(_)) => out.needs_body.push(chat),
            Some(Current::Missing) => {}
        }
    }
    if staged_all.is_empty() {
        return Ok(out);
    }
    write.commit()?;
    for staged in staged_all {
        let publish = staged.publish();
        local
            .state
            .apply(publish.summary, publish.version, publish.full);
    }
    local.committed.notify_one();
    Ok(out)
}

/// The outbox entries of `due` this device can push as they are, after
/// re-sealing those under a key other than the current one (when the
/// keyring tells which that is); entries that do not open here are
/// returned apart with the error, never pushed: nobody might open them.
pub(super) fn restage_due(
    local: &LocalStore,
    due: Vec<(OutboxEntry, SealedRecord)>,
    current_key: Option<u32>,
) -> Result<Restaged> {
    let Some(current_key) = current_key else {
        return Ok(Restaged {
            push: due,
            refused: Vec::new(),
        });
    };
    let stale: Vec<ChatId> = due
        .iter()
        .filter(|(_, record)| local.sealer.is_stale(record, current_key))
        .map(|(entry, _)| entry.chat)
        .collect();
    if stale.is_empty() {
        return Ok(Restaged {
            push: due,
            refused: Vec::new(),
        });
    }
    let batch = reseal_batch(local, &stale, current_key)?;
    let too_large: HashMap<ChatId, (usize, usize)> = batch
        .unopenable
        .into_iter()
        .filter_map(|(chat, e)| match e {
            Error::TooLarge { size, limit } => Some((chat, (size, limit))),
            _ => None,
        })
        .collect();
    if batch.resealed > 0 {
        tracing::info!(
            resealed = batch.resealed,
            key = current_key,
            "queued changes re-sealed under the current data key before pushing"
        );
    }
    let mut refused: Vec<(OutboxEntry, Error)> = Vec::new();
    let chats: Vec<ChatId> = due.iter().map(|(entry, _)| entry.chat).collect();
    let mut push = Vec::with_capacity(due.len());
    for (entry, record) in local.replica.pending_records(&chats)? {
        if !local.sealer.is_stale(&record, current_key) {
            push.push((entry, record));
            continue;
        }
        if let Some(&(size, limit)) = too_large.get(&entry.chat) {
            refused.push((entry, Error::TooLarge { size, limit }));
            continue;
        }
        // Still stale: it does not open here (or needs a body we lack,
        // which a pending local state never does). Opening tells which.
        match local
            .sealer
            .open_summary(record.chat, record.version, &record.summary)
        {
            Ok(_) => push.push((entry, record)),
            Err(error) => refused.push((entry, error)),
        }
    }
    Ok(Restaged { push, refused })
}

/// What [`restage_due`] left to push and what it refused.
pub(super) struct Restaged {
    /// Entries to push, with their (possibly re-sealed) records.
    pub push: Vec<(OutboxEntry, SealedRecord)>,
    /// Entries that do not open on this device, with why.
    pub refused: Vec<(OutboxEntry, Error)>,
}
