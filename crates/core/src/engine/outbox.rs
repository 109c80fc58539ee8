//! The push flow: the outbox → conditional puts → confirm, or resolve
//! conflicts by fetch → merge → re-seal → retry.
//!
//! Every put carries the precondition "the server holds the version this
//! state was built on" ([`PutPrecondition::Version`], or
//! [`PutPrecondition::Absent`] for a chat new to the server), so a push
//! never overwrites a change it has not merged. Replaying an entry whose
//! push already landed (the process died before confirming it) conflicts
//! with our own record; the engine recognises it byte for byte and simply
//! confirms.

use super::fetch::{fetch, Wanted};
use super::local::LocalStore;
use super::local::Publish;
use super::reseal::restage_due;
use super::retry::{backoff, now_millis};
use super::status::{Event, SyncReport};
use super::{blocking, Inner};
use crate::ids::ChatId;
use crate::replica::OutboxEntry;
use crate::storage::{Part, PutPrecondition, SealedRecord};
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

fn precondition(entry: &OutboxEntry) -> PutPrecondition {
    entry
        .base
        .map_or(PutPrecondition::Absent, PutPrecondition::Version)
}

/// Pushes due outbox entries (all of them with `force`). Stops at the first
/// retriable failure and returns it; other failures leave their entries
/// queued with backoff and the first of them is returned at the end. Runs
/// in a `push` span that records what it did.
pub(super) async fn push(inner: &Arc<Inner>, report: &mut SyncReport, force: bool) -> Result<()> {
    use tracing::field::Empty;
    use tracing::Instrument;
    let span = tracing::info_span!(
        "push",
        force,
        pushed = Empty,
        conflicts_resolved = Empty,
        bytes = Empty,
        requests = Empty,
    );
    let before = (
        report.pushed,
        report.conflicts_resolved,
        report.bytes_pushed,
        report.requests,
    );
    // Streamed appends become a version to push: all of them when asked
    // to push now, those older than the fold delay in the background.
    let fold_after = if force {
        std::time::Duration::ZERO
    } else {
        inner.config.stream_fold_after
    };
    let folded = if inner.local.journal.is_empty() {
        Ok(())
    } else {
        blocking(inner, move |inner| {
            super::save::fold_streams(&inner.local, fold_after)
        })
        .await
    };
    let result = match folded {
        Ok(()) => {
            push_outbox(inner, report, force)
                .instrument(span.clone())
                .await
        }
        Err(e) => Err(e),
    };
    span.record("pushed", report.pushed - before.0);
    span.record("conflicts_resolved", report.conflicts_resolved - before.1);
    span.record("bytes", report.bytes_pushed - before.2);
    span.record("requests", report.requests - before.3);
    result
}

async fn push_outbox(inner: &Arc<Inner>, report: &mut SyncReport, force: bool) -> Result<()> {
    let mut refused: Option<Error> = None;
    upload_attachments(inner, report, &mut refused).await?;
    let now = (!force).then(now_millis);
    let limit = inner.max_batch().saturating_mul(8);
    // First the whole outbox, page by page; then only chats whose push lost
    // a race and was merged, for a bounded number of rounds.
    let mut conflicts = Vec::new();
    let mut after = None;
    let mut first = true;
    loop {
        let due = blocking(inner, move |inner| {
            inner.local.replica.due(now, after, limit)
        })
        .await?;
        let Some((last, _)) = due.last() else {
            break;
        };
        after = Some(last.chat);
        if first {
            first = false;
            super::keyring::recheck_before_push(inner).await?;
        }
        // Read after the page: a record in it was saved after its
        // attachment was staged, so a file attached while this push was
        // uploading holds its chat here until the next push uploads it (an
        // attachment refused for good holds its chats the same way).
        let staged = inner.blobs.waiting_chats()?;
        let due: Vec<_> = due
            .into_iter()
            .filter(|(entry, _)| !staged.contains(&entry.chat))
            .collect();
        let due = restage(inner, due, &mut refused).await?;
        conflicts.extend(push_batch(inner, due, report, &mut refused).await?);
    }
    for _ in 0..inner.config.max_conflict_rounds {
        if conflicts.is_empty() {
            break;
        }
        let chats = resolve(inner, std::mem::take(&mut conflicts), report, &mut refused).await?;
        let retry = blocking(inner, move |inner| {
            inner.local.replica.pending_records(&chats)
        })
        .await?;
        // A merged chat may have been given an attachment meanwhile.
        let staged = inner.blobs.waiting_chats()?;
        let retry = retry
            .into_iter()
            .filter(|(entry, _)| !staged.contains(&entry.chat))
            .collect();
        conflicts = push_batch(inner, retry, report, &mut refused).await?;
    }
    // Attachments whose chats have nothing queued any more stop holding
    // them (their leases run on for a message naming them soon after).
    blocking(inner, |inner| {
        inner.blobs.settle(&|chat| {
            // A replica that does not answer keeps the chat held: safe.
            !matches!(inner.local.replica.pending(chat), Ok(None))
        })
    })
    .await?;
    refused.map_or(Ok(()), Err)
}

/// Uploads the attachments staged on this device before any record is
/// pushed (a record that names a blob never reaches the server before the
/// blob). The chats holding an attachment the server refused for good are
/// reported as refused, and wait ([`BlobDir::waiting_chats`] still names
/// them); the others go on. A retriable failure stops the push.
///
/// [`BlobDir::waiting_chats`]: crate::attachments::BlobDir::waiting_chats
async fn upload_attachments(
    inner: &Arc<Inner>,
    report: &mut SyncReport,
    refused: &mut Option<Error>,
) -> Result<()> {
    let uploaded = inner.blobs.upload(&inner.storage).await?;
    report.requests += uploaded.blobs as u64;
    report.bytes_pushed += uploaded.bytes;
    let mut seen = HashSet::new();
    let rejected: Vec<(ChatId, String)> = uploaded
        .waiting
        .into_iter()
        .filter(|(chat, _)| seen.insert(*chat))
        .collect();
    if let Some(e) = uploaded.refused {
        refused.get_or_insert(e);
    }
    announce_refused(&inner.local, rejected);
    Ok(())
}

/// Re-seals the entries of `due` sealed under an older key before they are
/// pushed; entries that do not open on this device are kept queued with
/// backoff and reported, never pushed.
async fn restage(
    inner: &Arc<Inner>,
    due: Vec<(OutboxEntry, SealedRecord)>,
    refused: &mut Option<Error>,
) -> Result<Vec<(OutboxEntry, SealedRecord)>> {
    let current = inner.keyring.current_key_id();
    let restaged = blocking(inner, move |inner| restage_due(&inner.local, due, current)).await?;
    if restaged.refused.is_empty() {
        return Ok(restaged.push);
    }
    let mut failed = Vec::new();
    let mut rejected = Vec::new();
    for (entry, error) in restaged.refused {
        let reason = format!(
            "the queued change is sealed under a data key this device no longer holds \
             ({error}); it is not pushed, since no device could open it"
        );
        tracing::warn!(chat = %entry.chat, %reason, "queued change not pushed");
        rejected.push((entry.chat, reason));
        failed.push(entry);
        refused.get_or_insert(error);
    }
    blocking(inner, move |inner| record_push(&inner.local, &[], &failed)).await?;
    announce_refused(&inner.local, rejected);
    Ok(restaged.push)
}

/// Puts `due` in batches; returns the entries whose push conflicted.
async fn push_batch(
    inner: &Arc<Inner>,
    due: Vec<(OutboxEntry, SealedRecord)>,
    report: &mut SyncReport,
    refused: &mut Option<Error>,
) -> Result<Vec<(OutboxEntry, SealedRecord)>> {
    let mut conflicts = Vec::new();
    for chunk in due.chunks(inner.max_batch()) {
        let puts = chunk
            .iter()
            .map(|(entry, record)| (record.clone(), precondition(entry)))
            .collect();
        report.requests += 1;
        report.bytes_pushed += chunk.iter().map(|(_, r)| r.size() as u64).sum::<u64>();
        let results = inner.storage.put_batch(puts).await;
        let mut confirmed = Vec::new();
        let mut failed = Vec::new();
        let mut offline = None;
        let mut rejected: Vec<(ChatId, String)> = Vec::new();
        for ((entry, record), result) in chunk.iter().zip(results) {
            match result {
                Ok(()) => confirmed.push((entry.chat, record.version)),
                Err(Error::Conflict { .. }) => conflicts.push((*entry, record.clone())),
                Err(e) if e.is_retriable() => {
                    failed.push(*entry);
                    offline.get_or_insert(e);
                }
                Err(e) => {
                    tracing::warn!(chat = %entry.chat, error = %e, "push refused; the change stays queued");
                    failed.push(*entry);
                    rejected.push((entry.chat, e.to_string()));
                    refused.get_or_insert(e);
                }
            }
        }
        report.pushed += confirmed.len();
        blocking(inner, move |inner| {
            record_push(&inner.local, &confirmed, &failed)
        })
        .await?;
        announce_refused(&inner.local, rejected);
        if let Some(e) = offline {
            return Err(e);
        }
    }
    Ok(conflicts)
}

/// Fetches the server's records of conflicting chats and merges them in;
/// returns the chats merged successfully (to push again). Runs in a
/// `resolve_conflicts` span.
async fn resolve(
    inner: &Arc<Inner>,
    conflicts: Vec<(OutboxEntry, SealedRecord)>,
    report: &mut SyncReport,
    refused: &mut Option<Error>,
) -> Result<Vec<ChatId>> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "resolve_conflicts",
        chats = conflicts.len(),
        merged = tracing::field::Empty,
        failed = tracing::field::Empty,
    );
    let resolved = resolve_all(inner, conflicts, report, refused)
        .instrument(span.clone())
        .await?;
    span.record("merged", resolved.len());
    Ok(resolved)
}

async fn resolve_all(
    inner: &Arc<Inner>,
    conflicts: Vec<(OutboxEntry, SealedRecord)>,
    report: &mut SyncReport,
    refused: &mut Option<Error>,
) -> Result<Vec<ChatId>> {
    let wanted: Vec<Wanted> = conflicts
        .iter()
        .map(|(entry, _)| Wanted {
            chat: entry.chat,
            version: entry.base.unwrap_or(0),
        })
        .collect();
    // A server record the backend cannot decode fails only its own chat's
    // resolution; read as absent it would be overwritten as a new chat.
    let fetched = fetch(inner, &wanted, Part::Body).await?;
    report.requests += fetched.requests;
    report.bytes_pulled += fetched.records.iter().map(|r| r.size() as u64).sum::<u64>();
    // With concurrent writers a chat may come back once per writer: the
    // newest is merged here (the others arrive through the feed).
    let mut theirs: HashMap<ChatId, SealedRecord> = HashMap::new();
    for record in fetched.records {
        match theirs.get(&record.chat) {
            Some(held) if held.version >= record.version => {}
            _ => {
                theirs.insert(record.chat, record);
            }
        }
    }
    let mut unreadable: HashMap<ChatId, Error> = fetched
        .unreadable
        .into_iter()
        .map(|s| (s.chat, s.error))
        .collect();
    let outcomes = blocking(inner, move |inner| {
        Ok(conflicts
            .into_iter()
            .map(|(entry, ours)| {
                let chat = entry.chat;
                let result = match unreadable.remove(&chat) {
                    Some(error) => Err(error),
                    None => resolve_conflict(&inner.local, &ours, theirs.remove(&chat)),
                };
                (entry, result)
            })
            .collect::<Vec<_>>())
    })
    .await?;
    let mut failed = Vec::new();
    let mut resolved = Vec::new();
    let mut rejected = Vec::new();
    for (entry, outcome) in outcomes {
        match outcome {
            Ok(()) => {
                report.conflicts_resolved += 1;
                resolved.push(entry.chat);
            }
            // With concurrent writers in a copied folder, another device's
            // record that does not read yet is usually a file still being
            // copied: the change waits for it, like one that is offline.
            Err(e @ Error::Corrupt { .. }) if inner.capabilities.concurrent_writers => {
                tracing::info!(chat = %entry.chat, error = %e, "another device's record is not whole yet; the change stays queued");
                report.waiting.get_or_insert_with(|| e.to_string());
                failed.push(entry);
            }
            Err(e) => {
                tracing::warn!(chat = %entry.chat, error = %e, "cannot merge the server's record; the change stays queued");
                failed.push(entry);
                rejected.push((entry.chat, e.to_string()));
                refused.get_or_insert(e);
            }
        }
    }
    if !failed.is_empty() {
        tracing::Span::current().record("failed", failed.len());
        blocking(inner, move |inner| record_push(&inner.local, &[], &failed)).await?;
    }
    announce_refused(&inner.local, rejected);
    Ok(resolved)
}

/// Tells subscribers which chats' pushes were refused, one event per
/// distinct reason.
fn announce_refused(local: &LocalStore, refused: Vec<(ChatId, String)>) {
    let mut by_reason: Vec<(String, Vec<ChatId>)> = Vec::new();
    for (chat, reason) in refused {
        match by_reason.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, chats)) => chats.push(chat),
            None => by_reason.push((reason, vec![chat])),
        }
    }
    for (reason, chats) in by_reason {
        local.events.emit(Event::PushRefused { chats, reason });
    }
}

/// Confirms pushed versions and schedules retries, in one transaction.
fn record_push(
    local: &LocalStore,
    confirmed: &[(ChatId, u64)],
    failed: &[OutboxEntry],
) -> Result<()> {
    if confirmed.is_empty() && failed.is_empty() {
        return Ok(());
    }
    let _writes = local.lock_writes();
    let mut write = local.write()?;
    for &(chat, version) in confirmed {
        write.mark_pushed(chat, version)?;
    }
    let now = now_millis();
    for entry in failed {
        let attempts = entry.attempts.saturating_add(1);
        let delay = u64::try_from(backoff(attempts).as_millis()).unwrap_or(u64::MAX);
        write.reschedule(entry.chat, attempts, now.saturating_add(delay))?;
    }
    write.commit()
}

/// Our push of `ours` lost to the server's record `theirs`: fold the
/// server's state into the local one so the next push can win.
fn resolve_conflict(
    local: &LocalStore,
    ours: &SealedRecord,
    theirs: Option<SealedRecord>,
) -> Result<()> {
    let chat = ours.chat;
    let opened = match &theirs {
        Some(t) if t.version == ours.version && t.summary == ours.summary => None,
        Some(t) => Some(local.sealer.open(t.clone())?),
        None => None,
    };
    let _writes = local.lock_writes();
    let mut write = local.write()?;
    if write.pending(chat)?.is_none() {
        return Ok(());
    }
    let Some(theirs) = theirs else {
        // The precondition failed yet the server holds nothing: whatever
        // we built on is gone, so push as a new chat.
        write.rebase(chat, None)?;
        return write.commit();
    };
    let Some(remote) = opened else {
        // Our own earlier push, replayed after a crash: it landed.
        write.mark_pushed(chat, ours.version)?;
        return write.commit();
    };
    local.clock.observe(remote.summary.last_activity);
    let header = write.header(chat)?;
    let version = theirs.version;
    if theirs.deleted {
        write.put_remote(&remote.sealed)?;
        write.commit()?;
        local.publish(Publish {
            summary: remote.summary,
            version,
            full: remote.chat.map(Arc::new),
        });
        return Ok(());
    }
    let remote_chat = remote.chat.map(Arc::new).ok_or_else(|| {
        Error::corrupt(
            format!("record of chat {chat} version {version}"),
            "the server returned no body for a full get",
        )
    })?;
    let state = local
        .fold_remote(
            &mut write,
            header,
            &remote.sealed,
            remote.summary,
            remote_chat,
        )?
        .ok_or_else(|| {
            Error::local_message(format!(
                "chat {chat} is queued for push but its body is missing"
            ))
        })?;
    write.commit()?;
    local.publish(state);
    Ok(())
}
