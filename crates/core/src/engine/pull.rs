//! The pull flow: change feed → fetch → open off the runtime → merge → store
//! with the cursor → notify.

use super::fetch::{fetch, Wanted};
use super::keyring::reread_for_unknown_key;
use super::local::LocalStore;
use super::local::Publish;
use super::retry::{backoff, now_millis};
use super::status::{Event, SkippedRecord, SyncReport};
use super::{blocking, Inner};
use crate::ids::ChatId;
use crate::replica::{LocalState, SkipReason, SkippedEntry};
use crate::storage::{Change, Cursor, Part, SealedRecord};
use crate::{Error, Result};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What a pulled change needs before it can be applied.
enum Need {
    /// Nothing: this device already holds that version (often its own push).
    Nothing,
    /// [`Need::Nothing`] for a known chat (when needs are grouped by chat).
    NothingFor(ChatId),
    /// The change carried its summary; no request needed.
    Inline(SealedRecord),
    /// The summary must be fetched.
    Summary(ChatId),
    /// Summary and body must be fetched: the chat is held in full here, or
    /// has local changes to merge with.
    Full(ChatId),
}

/// What `change` needs, given the chat's local state and (on a backend with
/// concurrent writers) the sealed summary of the record held here.
impl Need {
    /// `Need::Nothing` carries no chat: it is given one here so that needs
    /// can be grouped by chat.
    fn or_nothing(self, chat: ChatId) -> Need {
        match self {
            Need::Nothing => Need::NothingFor(chat),
            other => other,
        }
    }

    fn chat(&self) -> ChatId {
        match self {
            Need::NothingFor(chat) | Need::Summary(chat) | Need::Full(chat) => *chat,
            Need::Inline(record) => record.chat,
            Need::Nothing => ChatId(uuid::Uuid::nil()),
        }
    }
}

fn plan(change: Change, local: &LocalState, held: Option<&Bytes>, concurrent: bool) -> Need {
    let known = match local.pending {
        Some(entry) => entry.base.is_some_and(|base| base >= change.version),
        None => local.header.is_some_and(|h| h.version >= change.version),
    };
    // A tombstone held here is a whole state: with concurrent writers a
    // record that is not newer in fact may be, so it is merged with the
    // tombstone rather than taken over it.
    let deleted_here = concurrent && local.header.is_some_and(|h| h.deleted);
    if known && concurrent {
        // Not newer, but perhaps concurrent with what is held: unless it is
        // the held record itself, merge it where there is a body to merge
        // with; a summary-only chat merges it when its body loads.
        let same = matches!((&change.summary, held), (Some(theirs), Some(ours)) if theirs == ours);
        let mergeable = local.pending.is_some() || local.has_body || deleted_here;
        return match change.summary {
            _ if same => Need::Nothing,
            _ if mergeable => Need::Full(change.chat),
            // A deletion needs no body to merge: it wins over every edit.
            Some(summary) if change.deleted && !deleted_here => Need::Inline(SealedRecord {
                chat: change.chat,
                version: change.version,
                deleted: true,
                summary,
                body: None,
            }),
            None if change.deleted && !deleted_here => Need::Summary(change.chat),
            _ => Need::Nothing,
        };
    }
    if known {
        return Need::Nothing;
    }
    let wants_body = !change.deleted && (local.pending.is_some() || local.has_body || deleted_here);
    match change.summary {
        _ if wants_body => Need::Full(change.chat),
        Some(summary) => Need::Inline(SealedRecord {
            chat: change.chat,
            version: change.version,
            deleted: change.deleted,
            summary,
            body: None,
        }),
        None => Need::Summary(change.chat),
    }
}

/// Pulls every change after the stored cursor, page by page, in a
/// `pull` span that records what it did (pages, records applied and
/// skipped, bytes fetched, requests).
pub(super) async fn pull(inner: &Arc<Inner>, report: &mut SyncReport, force: bool) -> Result<()> {
    use tracing::field::Empty;
    use tracing::Instrument;
    let span = tracing::info_span!(
        "pull",
        pages = Empty,
        pulled = Empty,
        skipped = Empty,
        bytes = Empty,
        requests = Empty,
    );
    let before = (
        report.pulled,
        report.skipped.len(),
        report.bytes_pulled,
        report.requests,
    );
    let mut pages = 0u64;
    let result = pull_pages(inner, report, force, &mut pages)
        .instrument(span.clone())
        .await;
    span.record("pages", pages);
    span.record("pulled", report.pulled - before.0);
    span.record("skipped", report.skipped.len() - before.1);
    span.record("bytes", report.bytes_pulled - before.2);
    span.record("requests", report.requests - before.3);
    result
}

async fn pull_pages(
    inner: &Arc<Inner>,
    report: &mut SyncReport,
    force: bool,
    pages: &mut u64,
) -> Result<()> {
    // Records skipped earlier are retried when their backoff is over; all
    // of them at the first pull after the engine opens (this build may read
    // what an older one could not) and in a forced round (a manual sync, or
    // back from offline: a key that arrived since may open them now).
    let after_open = inner.retry_all_skipped.swap(false, Ordering::AcqRel);
    // The keyring is re-read at most once per round.
    let mut keyring_read = false;
    retry_skipped(inner, report, after_open || force, &mut keyring_read).await?;
    let skipped_before = report.skipped.len();
    let mut cursor = blocking(inner, |inner| inner.local.replica.cursor()).await?;
    loop {
        let page = inner
            .storage
            .changes(&cursor, inner.config.page_size.max(1))
            .await?;
        page.check_progress(&cursor)?;
        *pages += 1;
        if page.waiting.is_some() {
            report.waiting.clone_from(&page.waiting);
        }
        report.requests += 1;
        // Within a page the last change of a chat wins, unless writers are
        // concurrent: then each change may hold something the others lack.
        let concurrent = inner.capabilities.concurrent_writers;
        let changes: Vec<Change> = if concurrent {
            page.changes
        } else {
            let mut latest: HashMap<ChatId, Change> = HashMap::with_capacity(page.changes.len());
            for change in page.changes {
                latest.insert(change.chat, change);
            }
            latest.into_values().collect()
        };
        let versions: HashMap<ChatId, u64> = changes.iter().map(|c| (c.chat, c.version)).collect();
        let needs = blocking(inner, move |inner| {
            let ids: Vec<ChatId> = changes.iter().map(|c| c.chat).collect();
            let locals = inner.local.replica.local_states(&ids)?;
            let held = if concurrent {
                inner.local.replica.records(&ids, false)?
            } else {
                vec![None; ids.len()]
            };
            Ok(changes
                .into_iter()
                .zip(locals.iter().zip(&held))
                .map(|(change, (local, held))| {
                    let (chat, version, writer) = (change.chat, change.version, change.writer);
                    let need = plan(change, local, held.as_ref().map(|r| &r.summary), concurrent);
                    (need.or_nothing(chat), version, writer)
                })
                .collect::<Vec<(Need, u64, Option<u64>)>>())
        })
        .await?;

        // With concurrent writers a page may hold several changes of a chat
        // (each writer's, and one writer's successive versions). A full fetch
        // returns every writer's current record, so one covers them all;
        // otherwise only the newest summary is taken (older ones are merged
        // when the body loads), and no replaced version is ever opened.
        let needs: Vec<Need> = if concurrent {
            // Per chat: a full fetch covers everything; otherwise each
            // writer's newest change (one writer's later change replaces
            // its earlier ones, another writer's may be concurrent).
            let mut full: HashMap<ChatId, Need> = HashMap::new();
            let mut newest: HashMap<(ChatId, Option<u64>), (u64, Need)> = HashMap::new();
            for (need, version, writer) in needs {
                let chat = need.chat();
                if matches!(need, Need::Full(_)) {
                    full.insert(chat, need);
                    continue;
                }
                match newest.get(&(chat, writer)) {
                    Some((held, _)) if *held >= version => {}
                    _ => {
                        newest.insert((chat, writer), (version, need));
                    }
                }
            }
            let mut out: Vec<Need> = newest
                .into_iter()
                .filter(|((chat, _), _)| !full.contains_key(chat))
                .map(|(_, (_, need))| need)
                .collect();
            out.extend(full.into_values());
            out
        } else {
            needs.into_iter().map(|(need, _, _)| need).collect()
        };
        let mut records = Vec::new();
        let (mut summaries, mut fulls) = (Vec::new(), Vec::new());
        for need in needs {
            match need {
                Need::Nothing | Need::NothingFor(_) => {}
                Need::Inline(record) => records.push(record),
                Need::Summary(id) => summaries.push(id),
                Need::Full(id) => fulls.push(id),
            }
        }
        for ids in [&mut summaries, &mut fulls] {
            ids.sort_unstable();
            ids.dedup();
        }
        // A chat fetched in full needs no summary-only fetch or inline record.
        summaries.retain(|id| fulls.binary_search(id).is_err());
        records.retain(|r: &SealedRecord| fulls.binary_search(&r.chat).is_err());
        let wanted = |ids: Vec<ChatId>| -> Vec<Wanted> {
            ids.into_iter()
                .map(|chat| Wanted {
                    chat,
                    version: versions.get(&chat).copied().unwrap_or(0),
                })
                .collect()
        };
        let mut unreadable = Vec::new();
        for (ids, part) in [(fulls, Part::Body), (summaries, Part::Summary)] {
            let fetched = fetch(inner, &wanted(ids), part).await?;
            report.requests += fetched.requests;
            records.extend(fetched.records);
            unreadable.extend(fetched.unreadable);
        }
        report.bytes_pulled += records.iter().map(|r| r.size() as u64).sum::<u64>();

        let next = page.cursor.clone();
        if !records.is_empty() || !unreadable.is_empty() || next != cursor {
            let applied = blocking(inner, move |inner| {
                apply_pulled(&inner.local, records, Some(&next), unreadable)
            })
            .await?;
            report.pulled += applied.pulled;
            report.skipped.extend(applied.skipped);
        }
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    // A record sealed under a key id this device does not hold yet: the
    // vault's keys changed (a rotation on another device). Re-read the
    // keyring once and retry at once if it brought new keys.
    let new_key_needed = report.skipped[skipped_before..]
        .iter()
        .any(|s| SkipReason::of(&s.error) == SkipReason::UnknownKeyId);
    if !new_key_needed || keyring_read {
        return Ok(());
    }
    keyring_read = true;
    if reread_for_unknown_key(inner).await? {
        retry_skipped(inner, report, true, &mut keyring_read).await?;
        // The report lists what is still skipped, not what the retry opened.
        let still: Vec<ChatId> = blocking(inner, |inner| {
            Ok(inner
                .local
                .replica
                .skipped()?
                .into_iter()
                .map(|e| e.chat)
                .collect())
        })
        .await?;
        report.skipped.retain(|s| still.contains(&s.chat));
    }
    Ok(())
}

/// Fetches and applies again the records this device skipped: those whose
/// backoff is over, or all of them with `force`. What opens now is merged
/// and forgotten; what still fails is kept with a longer backoff.
/// Re-reads the keyring first (once per round, tracked by `keyring_read`)
/// when a due record was sealed under an unknown key id (the keyring may
/// have been read in an earlier round whose retry then failed). A record is
/// fetched in full only where this device holds the chat in full or has
/// changes to merge; otherwise its summary is enough, as in a pull.
async fn retry_skipped(
    inner: &Arc<Inner>,
    report: &mut SyncReport,
    force: bool,
    keyring_read: &mut bool,
) -> Result<()> {
    let now = now_millis();
    let entries = blocking(inner, |inner| inner.local.replica.skipped()).await?;
    let due: Vec<SkippedEntry> = entries
        .into_iter()
        .filter(|e| force || e.not_before <= now)
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    if !*keyring_read && due.iter().any(|e| e.reason == SkipReason::UnknownKeyId) {
        *keyring_read = true;
        if reread_for_unknown_key(inner).await? {
            tracing::debug!("keyring re-read before retrying skipped records");
        }
    }
    let ids: Vec<ChatId> = due.iter().map(|e| e.chat).collect();
    let locals = blocking(inner, move |inner| inner.local.replica.local_states(&ids)).await?;
    let (mut fulls, mut summaries) = (Vec::new(), Vec::new());
    for (entry, local) in due.iter().zip(&locals) {
        let wanted = Wanted {
            chat: entry.chat,
            version: entry.version,
        };
        if local.pending.is_some() || local.has_body {
            fulls.push(wanted);
        } else {
            summaries.push(wanted);
        }
    }
    let mut records = Vec::new();
    let mut unreadable = Vec::new();
    for (wanted, part) in [(fulls, Part::Body), (summaries, Part::Summary)] {
        let fetched = fetch(inner, &wanted, part).await?;
        report.requests += fetched.requests;
        report.bytes_pulled += fetched.records.iter().map(|r| r.size() as u64).sum::<u64>();
        records.extend(fetched.records);
        unreadable.extend(fetched.unreadable);
    }
    let applied = blocking(inner, move |inner| {
        apply_pulled(&inner.local, records, None, unreadable)
    })
    .await?;
    report.pulled += applied.pulled;
    report.skipped.extend(applied.skipped);
    Ok(())
}

pub(super) struct Applied {
    pulled: usize,
    skipped: Vec<SkippedRecord>,
}

/// Opens `records`, merges them into local state and stores them together
/// with `cursor` (if it moves) in one transaction. Records that do not
/// open, and `unreadable` ones the backend could not even decode, are
/// kept in the replica's skipped table in the same transaction, so the
/// cursor moving past them forgets nothing.
pub(super) fn apply_pulled(
    local: &LocalStore,
    records: Vec<SealedRecord>,
    cursor: Option<&Cursor>,
    unreadable: Vec<SkippedRecord>,
) -> Result<Applied> {
    // What each record's parts name as their key: a skipped record keeps
    // it, so no key it needs is retired while it waits.
    // Concurrent versions of one chat are merged oldest first, so the
    // last merge is based on the newest version seen.
    let mut records = records;
    if local.concurrent_writers() {
        records.sort_by_key(|r| (r.chat, r.version));
    }
    let key_ids: HashMap<(ChatId, u64), Vec<u32>> = records
        .iter()
        .map(|r| ((r.chat, r.version), local.sealer.record_key_ids(r)))
        .collect();
    let opened = local.sealer.open_all(records);
    let _writes = local.lock_writes();
    let mut write = local.write()?;
    let mut published: Vec<Publish> = Vec::new();
    let mut skipped = unreadable;
    for (chat, version, result) in opened {
        let record = match result {
            Ok(record) => record,
            Err(error) => {
                skipped.push(SkippedRecord {
                    chat,
                    version,
                    error,
                });
                continue;
            }
        };
        write.resolve_skipped(chat, version)?;
        match local.fold_pulled(&mut write, record) {
            Ok(Some(state)) => published.push(state),
            Ok(None) => {}
            // Merged with this device's pending edits the chat outgrows
            // the backend's limit: kept and retried like a record that
            // does not open, reported for this chat alone.
            Err(error @ Error::TooLarge { .. }) => skipped.push(SkippedRecord {
                chat,
                version,
                error,
            }),
            Err(e) => return Err(e),
        }
    }
    let now = now_millis();
    // Only records not already known to fail are reported again.
    let mut fresh = Vec::new();
    for s in skipped {
        let attempts = match write.skipped(s.chat)? {
            Some(prior) if prior.version > s.version => continue,
            Some(prior) if prior.version == s.version => prior.attempts.saturating_add(1),
            _ => 1,
        };
        let delay = u64::try_from(backoff(attempts).as_millis()).unwrap_or(u64::MAX);
        write.put_skipped(&SkippedEntry {
            chat: s.chat,
            version: s.version,
            reason: SkipReason::of(&s.error),
            message: s.error.to_string(),
            attempts,
            not_before: now.saturating_add(delay),
            key_ids: key_ids
                .get(&(s.chat, s.version))
                .cloned()
                .unwrap_or_default(),
        })?;
        if attempts == 1 {
            tracing::warn!(chat = %s.chat, version = s.version, error = %s.error, "skipping a record that does not open; it is kept and retried");
            fresh.push(s);
        }
    }
    let skipped = fresh;
    if let Some(cursor) = cursor {
        write.set_cursor(cursor)?;
    }
    write.commit()?;
    let pulled = published.len();
    for state in published {
        local.publish(state);
    }
    for s in &skipped {
        local.events.emit(Event::RecordSkipped {
            chat: s.chat,
            reason: s.error.to_string(),
        });
    }
    Ok(Applied { pulled, skipped })
}
