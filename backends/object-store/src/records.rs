//! [`Records`]: reading and writing records (`get`, `put`, `put_batch`):
//! a put writes its [`RecordObjects`], then claims the next log slot with one
//! entry (the commit point, `docs/design.md` §5.1); a get resolves each
//! chat in the [`Log`]'s index and reads what the index does not hold.

use crate::entry::{
    encode_blob, encode_entry, inline_cost, EntryItem, LogEntry, Position, Precondition,
    HEADER_LEN, ITEM_OVERHEAD, MAX_ENTRY_BYTES, MAX_INLINE_SUMMARY,
};
use crate::error::{is_taken, map_store_error};
use crate::index::Current;
use crate::layout::WriteId;
use crate::log::{Log, LogState};
use crate::options::ObjectStoreOptions;
use crate::record_objects::RecordObjects;
use chatvault_core::{ChatId, Error, Part, PutPrecondition, Result, SealedRecord};
use object_store::{PutMode, PutOptions};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Lost slot races in a row without the log advancing before a put gives up
/// (about five seconds of backoff).
const MAX_STUCK: u32 = 30;

/// One record of a put on its way to the log.
struct Pending {
    /// Its place in the caller's batch.
    slot: usize,
    record: SealedRecord,
    pre: Precondition,
    write: WriteId,
}

/// The records of a vault: its log and its blobs.
#[derive(Debug)]
pub(crate) struct Records {
    log: Arc<Log>,
    blobs: RecordObjects,
    max_record_bytes: usize,
    max_batch: usize,
    max_inline_summary: usize,
    max_claim_delay: Duration,
}

impl Records {
    /// Records committed to `log`, their bytes in `blobs`.
    pub(crate) fn new(log: Arc<Log>, blobs: RecordObjects, options: &ObjectStoreOptions) -> Self {
        Self {
            log,
            blobs,
            max_record_bytes: options.max_record_bytes,
            max_batch: options.max_batch,
            max_inline_summary: options.max_inline_summary,
            max_claim_delay: options.max_claim_delay,
        }
    }

    /// `get`: resolves each chat's current record from the index while,
    /// concurrently, one request (a HEAD of the next slot, or a LIST) checks
    /// the log for newer commits. A summary
    /// the log entry carried inline is served from the index; other records
    /// are read from their blobs (started with the cached index, alongside
    /// the LIST), and chats that turn out to have changed are read again.
    pub(crate) async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        let mut ids = chats.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let first: Vec<(ChatId, Current)> = {
            let mut state = self.log.lock().await;
            self.log.ensure_loaded(&mut state).await?;
            resolve(&state, &ids)
                .into_iter()
                .filter(|(chat, current)| inline_record(*chat, current, part).is_none())
                .collect()
        };
        let refresh = async {
            let mut state = self.log.lock().await;
            self.log.refresh_for_read(&mut state).await?;
            Ok::<_, Error>(resolve(&state, &ids))
        };
        let (latest, first_try) = futures::join!(refresh, self.blobs.fetch(&first, part));
        let latest = latest?;

        let mut first_try: HashMap<ChatId, (Current, Result<SealedRecord>)> = first
            .into_iter()
            .zip(first_try)
            .map(|((chat, current), result)| (chat, (current, result)))
            .collect();
        let mut records = Vec::with_capacity(latest.len());
        let mut again = Vec::new();
        for (chat, current) in latest {
            if let Some(record) = inline_record(chat, &current, part) {
                records.push(record);
                continue;
            }
            match first_try.remove(&chat) {
                Some((seen, result)) if seen.same_commit(&current) => records.push(result?),
                _ => again.push((chat, current)),
            }
        }
        for result in self.blobs.fetch(&again, part).await {
            records.push(result?);
        }
        Ok(records)
    }

    /// `put` and `put_batch`: blobs first, then one log entry per
    /// `max_batch` records.
    pub(crate) async fn put(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = (0..batch.len()).map(|_| None).collect();
        let mut pending = Vec::with_capacity(batch.len());
        for (slot, (record, pre)) in batch.into_iter().enumerate() {
            if record.size() > self.max_record_bytes {
                results[slot] = Some(Err(Error::TooLarge {
                    size: record.size(),
                    limit: self.max_record_bytes,
                }));
            } else if record.deleted && record.body.is_some() {
                results[slot] = Some(Err(Error::invalid(format!(
                    "tombstone for chat {} carries a body",
                    record.chat
                ))));
            } else {
                pending.push(Pending {
                    slot,
                    record,
                    pre: pre.into(),
                    write: WriteId::random(),
                });
            }
        }
        let mut pending = pending.into_iter().peekable();
        while pending.peek().is_some() {
            let chunk: Vec<Pending> = pending.by_ref().take(self.max_batch).collect();
            for (slot, result) in self.commit(chunk).await {
                results[slot] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::invalid("record was not processed"))))
            .collect()
    }

    /// Commits up to `max_batch` records in one log entry.
    async fn commit(&self, chunk: Vec<Pending>) -> Vec<(usize, Result<()>)> {
        let mut done = Vec::with_capacity(chunk.len());
        let admitted = match self.precheck(chunk, &mut done).await {
            Ok(admitted) => admitted,
            Err((chunk, e)) => return fail_all(chunk, &e, done),
        };
        if admitted.is_empty() {
            return done;
        }

        // Record objects first: once a slot names them they must exist. Their age is
        // bounded from before the first of them is written: that one is the
        // oldest, and compaction may delete it once it is older than its
        // horizon unless a slot names it by then.
        let started = Instant::now();
        let blobs: Vec<_> = admitted
            .iter()
            .map(|p| {
                let path = self.blobs.path(p.record.chat, p.record.version, p.write);
                (
                    path,
                    encode_blob(&p.record.summary, p.record.body.as_deref()),
                )
            })
            .collect();
        let uploads = self.blobs.put_all(blobs).await;
        let mut uploaded = Vec::with_capacity(admitted.len());
        for (p, result) in admitted.into_iter().zip(uploads) {
            match result {
                Ok(_) => uploaded.push(p),
                Err(e) => done.push((p.slot, Err(e))),
            }
        }
        if uploaded.is_empty() {
            return done;
        }

        let mut state = self.log.lock().await;
        match self.claim(&mut state, uploaded, started).await {
            Ok(claimed) => done.extend(claimed),
            Err((left, e)) => return fail_all(left, &e, done),
        }
        done
    }

    /// Drops the records whose precondition already fails (reporting
    /// `Conflict`), catching up first if the cached index says no.
    async fn precheck(
        &self,
        chunk: Vec<Pending>,
        done: &mut Vec<(usize, Result<()>)>,
    ) -> Result<Vec<Pending>, (Vec<Pending>, Error)> {
        let mut state = self.log.lock().await;
        if let Err(e) = self.log.ensure_loaded(&mut state).await {
            return Err((chunk, e));
        }
        // A conflict may come from a stale index; and an index not known to
        // be at the head recently must be brought there before `claim`.
        if !self.log.at_head_recently(&state) || !conflicts(&state, &chunk).is_empty() {
            if let Err(e) = self.log.refresh(&mut state, None).await {
                return Err((chunk, e));
            }
        }
        let losers = conflicts(&state, &chunk);
        let mut admitted = Vec::with_capacity(chunk.len());
        for (i, p) in chunk.into_iter().enumerate() {
            match losers.iter().find(|(j, _)| *j == i) {
                Some(&(_, current)) => done.push((p.slot, Err(conflict(p.record.chat, current)))),
                None => admitted.push(p),
            }
        }
        Ok(admitted)
    }

    /// Claims the next free slot for `items`, catching up and re-checking
    /// after every lost race. The index is at slot N when slot N+1 is tried,
    /// so a successful create is valid by construction; replaying it (as
    /// every reader will) confirms that.
    async fn claim(
        &self,
        state: &mut LogState,
        mut items: Vec<Pending>,
        blobs_started: Instant,
    ) -> Result<Vec<(usize, Result<()>)>, (Vec<Pending>, Error)> {
        let mut done = Vec::new();
        let mut stuck = 0u32;
        let blobs_deadline = blobs_started + self.max_claim_delay;
        loop {
            if Instant::now() >= blobs_deadline {
                let e = Error::Unavailable {
                    message: "the log was too busy to commit before the blobs could be compacted away; retry"
                        .into(),
                    source: None,
                };
                return Err((items, e));
            }
            // Slot `head + 1` is only known to be free (never created, not
            // created and compacted away) while the index was at the head
            // recently; blob uploads may have taken long since `precheck`.
            if !self.log.at_head_recently(state) {
                if let Err(e) = self.log.refresh(state, None).await {
                    return Err((items, e));
                }
            }
            let losers = conflicts(state, &items);
            for &(i, current) in losers.iter().rev() {
                let p = items.remove(i);
                done.push((p.slot, Err(conflict(p.record.chat, current))));
            }
            if items.is_empty() {
                return Ok(done);
            }
            let entry = self.entry_of(&items);
            let bytes = match encode_entry(&entry) {
                Ok(bytes) => bytes,
                Err(e) => return Err((items, e)),
            };
            let Some(seq) = state.index().head().checked_add(1) else {
                return Err((items, log_full(state.index().head())));
            };
            let path = self.log.slot(seq);
            // The create must land while both promises hold: the blobs are
            // younger than the claim delay (compaction spares them), and the
            // index was at the head within the claim delay (slot `seq` was
            // never created and compacted away). `object_store` retries a
            // failed request for minutes, so the wait is cut at the earlier
            // deadline and the outcome looked up like any ambiguous failure.
            let deadline = match state.at_head_since() {
                Some(since) if self.log.at_head_recently(state) => {
                    blobs_deadline.min(since + self.max_claim_delay)
                }
                _ => blobs_deadline,
            };
            let create =
                self.log
                    .store()
                    .put_opts(&path, bytes.into(), PutOptions::from(PutMode::Create));
            let created = match tokio::time::timeout_at(deadline, create).await {
                Ok(result) => result.map_err(Some),
                Err(_elapsed) => Err(None),
            };
            match created {
                Ok(_) => {
                    let validity = state.apply_own(seq, &entry);
                    done.extend(self.outcomes(state, items, &validity));
                    return Ok(done);
                }
                Err(Some(e)) if is_taken(&e) => {
                    // `object_store` retries a create whose response was
                    // lost (a 5xx after the write landed); the retry then
                    // finds the slot taken by this very entry.
                    let before = state.index().head();
                    match self.own_commit(state, seq, &items).await {
                        Ok(Some(validity)) => {
                            done.extend(self.outcomes(state, items, &validity));
                            return Ok(done);
                        }
                        Ok(None) => {}
                        Err(e) => return Err((items, e)),
                    }
                    if state.index().head() > before {
                        stuck = 0;
                        continue;
                    }
                    // The slot exists but the listing does not show it yet
                    // (or a hole stalls the replay): back off, then give up.
                    stuck += 1;
                    if stuck > MAX_STUCK {
                        let e = Error::Unavailable {
                            message: format!(
                                "log slot {path} exists but does not show in listings; retry later"
                            ),
                            source: None,
                        };
                        return Err((items, e));
                    }
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(stuck))).await;
                }
                Err(failure) => {
                    // The create may have happened before the error: look.
                    let error = match failure {
                        Some(e) => map_store_error(e, &format!("committing {path}")),
                        None => Error::Unavailable {
                            message: format!(
                                "committing {path} took longer than the claim delay; retry"
                            ),
                            source: None,
                        },
                    };
                    return match self.own_commit(state, seq, &items).await {
                        Ok(Some(validity)) => {
                            done.extend(self.outcomes(state, items, &validity));
                            Ok(done)
                        }
                        _ => Err((items, error)),
                    };
                }
            }
        }
    }

    /// After a create of slot `seq` that failed ambiguously or found the slot
    /// taken: the validity of `items` if the slot holds this very entry
    /// (recognised by its write ids, fresh random for every put), `None` if
    /// it holds another writer's entry or could not be read.
    async fn own_commit(
        &self,
        state: &mut LogState,
        seq: u64,
        items: &[Pending],
    ) -> Result<Option<Vec<bool>>> {
        let caught = self.log.refresh(state, Some(seq..=seq)).await?;
        let Some(Some(entry)) = caught.fetched.get(&seq) else {
            return Ok(None);
        };
        let ours = entry.items.len() == items.len()
            && entry
                .items
                .iter()
                .zip(items)
                .all(|(item, p)| item.write == p.write && item.chat == p.record.chat);
        if !ours {
            return Ok(None);
        }
        Ok(Some(
            (0..items.len())
                .map(|idx| state.index().is_valid(Position::of(seq, idx)))
                .collect(),
        ))
    }

    /// The log entry for `items`: summaries up to the inline limit are
    /// carried inline, in order, while the entry stays within the format's
    /// size limit; the rest are read from their blobs.
    fn entry_of(&self, items: &[Pending]) -> LogEntry {
        let limit = self.max_inline_summary.min(MAX_INLINE_SUMMARY);
        let mut budget = (MAX_ENTRY_BYTES as usize)
            .saturating_sub(HEADER_LEN)
            .saturating_sub(items.len().saturating_mul(ITEM_OVERHEAD));
        let items = items
            .iter()
            .map(|p| {
                let summary = &p.record.summary;
                let cost = inline_cost(summary.len());
                let inline = summary.len() <= limit && cost <= budget;
                if inline {
                    budget -= cost;
                }
                EntryItem {
                    chat: p.record.chat,
                    version: p.record.version,
                    write: p.write,
                    deleted: p.record.deleted,
                    pre: p.pre,
                    summary_len: summary.len() as u64,
                    body_len: p.record.body.as_ref().map(|b| b.len() as u64),
                    summary: inline.then(|| summary.clone()),
                }
            })
            .collect();
        LogEntry { items }
    }

    fn outcomes(
        &self,
        state: &LogState,
        items: Vec<Pending>,
        validity: &[bool],
    ) -> Vec<(usize, Result<()>)> {
        items
            .into_iter()
            .zip(validity.iter().copied().chain(std::iter::repeat(false)))
            .map(|(p, valid)| {
                let result = if valid {
                    Ok(())
                } else {
                    let current = state.index().version(&p.record.chat);
                    Err(conflict(p.record.chat, current))
                };
                (p.slot, result)
            })
            .collect()
    }
}

/// The records of `items` (by index, ascending) whose precondition fails
/// against the index, each with the version it found. Earlier records of the
/// same batch count, as they will when the entry is replayed.
fn conflicts(state: &LogState, items: &[Pending]) -> Vec<(usize, Option<u64>)> {
    let mut staged: HashMap<ChatId, u64> = HashMap::new();
    let mut losers = Vec::new();
    for (i, p) in items.iter().enumerate() {
        let chat = p.record.chat;
        let current = staged
            .get(&chat)
            .copied()
            .or_else(|| state.index().version(&chat));
        if p.pre.admits(current, p.record.version) {
            staged.insert(chat, p.record.version);
        } else {
            losers.push((i, current));
        }
    }
    losers
}

/// The log reached the largest slot number; no honest vault gets there.
fn log_full(head: u64) -> Error {
    Error::Rejected {
        code: "log_full".into(),
        message: format!("the change log is at slot {head} and cannot grow; the vault is damaged"),
    }
}

fn conflict(chat: ChatId, current: Option<u64>) -> Error {
    Error::Conflict { chat, current }
}

fn resolve(state: &LogState, ids: &[ChatId]) -> Vec<(ChatId, Current)> {
    ids.iter()
        .filter_map(|&chat| {
            state
                .index()
                .current(&chat)
                .map(|current| (chat, current.clone()))
        })
        .collect()
}

/// The record `get` returns for `current` without reading its blob: a
/// summary the log entry carried inline. The log entry is the commit, so
/// this is the committed summary, exactly what the blob holds.
fn inline_record(chat: ChatId, current: &Current, part: Part) -> Option<SealedRecord> {
    match (part, &current.summary) {
        (Part::Summary, Some(summary)) => Some(SealedRecord {
            chat,
            version: current.version,
            deleted: current.deleted,
            summary: summary.clone(),
            body: None,
        }),
        _ => None,
    }
}

fn fail_all(
    items: Vec<Pending>,
    error: &Error,
    mut done: Vec<(usize, Result<()>)>,
) -> Vec<(usize, Result<()>)> {
    for p in items {
        done.push((p.slot, Err(copy_error(error))));
    }
    done
}

/// `Error` is not `Clone` (it may hold a source); every record of a failed
/// batch gets an equivalent error.
fn copy_error(error: &Error) -> Error {
    match error {
        Error::Unavailable { message, source } => Error::Unavailable {
            message: match source {
                Some(source) => format!("{message}: {source}"),
                None => message.clone(),
            },
            source: None,
        },
        Error::Unauthorized { message } => Error::Unauthorized {
            message: message.clone(),
        },
        Error::Rejected { code, message } => Error::Rejected {
            code: code.clone(),
            message: message.clone(),
        },
        Error::NotFound { what } => Error::NotFound { what: what.clone() },
        Error::Corrupt { what, reason } => Error::corrupt(what.clone(), reason.clone()),
        Error::UnsupportedFormat {
            what,
            found,
            supported,
        } => Error::UnsupportedFormat {
            what: what.clone(),
            found: *found,
            supported: *supported,
        },
        Error::InvalidInput { message } => Error::invalid(message.clone()),
        other => Error::Unavailable {
            message: other.to_string(),
            source: None,
        },
    }
}
