//! [`SupabaseStorage`]: the [`Storage`] contract over the chatvault RPCs.

use crate::client::{RpcClient, TransferStats};
use crate::wire::{
    self, check_bigint, BlobDeleteResult, BlobListPage, BlobMissing, BlobPutResult, GetPage,
    PullPage, PushItem, PushResult, WireBlob, WireKeyring,
};
use async_trait::async_trait;
use bytes::Bytes;
use chatvault_core::{
    BlobId, BlobPage, Capabilities, Change, ChangePage, ChatId, Cursor, Error, KeyringBlob,
    MaintenanceBudget, MaintenanceReport, Part, PutPrecondition, Result, SealedRecord, Storage,
};
use serde_json::json;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use uuid::Uuid;

/// Largest record (summary + body) the shipped migration accepts:
/// `chatvault_max_record_bytes()` in SQL.
pub const MAX_RECORD_BYTES: usize = 2 * 1024 * 1024;

/// Largest key file the shipped migration accepts:
/// `chatvault_max_keyring_bytes()` in SQL. A larger one from the server is
/// refused as `Corrupt`.
pub const MAX_KEYRING_BYTES: usize = 1024 * 1024;

/// Sealed bytes one pull or get page carries at most:
/// `chatvault_page_bytes()` in SQL.
const PAGE_BYTES: usize = 8 * 1024 * 1024;

/// The largest response body any chatvault RPC can send when records are at
/// most `max_record_bytes`: a page of sealed bytes (or one record larger
/// than a page) in base64, plus the JSON around up to [`MAX_PULL`] entries.
pub(crate) fn max_response_bytes(max_record_bytes: usize) -> usize {
    let sealed = PAGE_BYTES.max(max_record_bytes).max(MAX_KEYRING_BYTES);
    (sealed / 3 + 1)
        .saturating_mul(4)
        .saturating_add(MAX_PULL * 512)
        .saturating_add(64 * 1024)
}

/// Most changes one `chatvault_pull` returns (the SQL caps `lim` there too;
/// Supabase's max-rows never cuts it because the RPC returns one JSON value).
pub const MAX_PULL: usize = 1000;

/// Most ids or records this client puts in one request.
pub const MAX_BATCH: usize = 500;

/// Most base64 bytes of records this client puts in one push request.
const PUSH_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// A vault stored in a Supabase project (or any PostgREST in front of a
/// PostgreSQL with chatvault's migrations), scoped to the signed-in user by
/// row-level security. Build it with [`SupabaseStorage::builder`].
pub struct SupabaseStorage {
    pub(crate) rpc: RpcClient,
    pub(crate) max_record_bytes: usize,
    /// The server's record limit once a refusal named it (`usize::MAX`
    /// until then): records over it fail before they are sent.
    pub(crate) server_limit: AtomicUsize,
}

impl fmt::Debug for SupabaseStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupabaseStorage")
            .field("rpc", &self.rpc)
            .field("max_record_bytes", &self.max_record_bytes)
            .finish()
    }
}

impl SupabaseStorage {
    /// Requests and bytes exchanged with the server so far.
    pub fn transfer_stats(&self) -> TransferStats {
        self.rpc.stats()
    }

    /// One `chatvault_pull` page after `since`, checked for sense.
    async fn pull(&self, since: FeedCursor, limit: usize) -> Result<PullPage> {
        let FeedCursor { seq: since, at } = since;
        let mut args = json!({ "since": since, "lim": limit.min(MAX_PULL), "with_bodies": false });
        // Only a cursor a stamping server handed out has a stamp, so a
        // server without the fourth migration never sees the argument.
        if let Some(at) = at {
            args["since_at"] = json!(at);
        }
        let page: PullPage = self.rpc.call("chatvault_pull", &args, None).await?;
        check_bigint(page.cursor, "cursor of chatvault_pull")?;
        if let Some(head) = page.head {
            check_bigint(head, "head of chatvault_pull")?;
        }
        if page.cursor < since || page.changes.len() > limit {
            return Err(Error::corrupt(
                "response of chatvault_pull",
                format!(
                    "cursor {} before {since} or {} changes over the limit {limit}",
                    page.cursor,
                    page.changes.len()
                ),
            ));
        }
        Ok(page)
    }

    /// The record limit in force: the configured one, or the server's if a
    /// refusal showed it to be lower.
    fn record_limit(&self) -> usize {
        self.max_record_bytes
            .min(self.server_limit.load(Ordering::Relaxed))
    }

    /// Sends `items` (already validated) and returns one result per item.
    ///
    /// The server commits a push request whole or not at all, so when it
    /// refuses a request of several records as too large, nothing was
    /// written: the records over the limit it names fail alone and the rest
    /// are sent again (halving the chunk when the refusal names no limit),
    /// so one over-size record never fails its neighbours.
    fn push_chunk<'a>(
        &'a self,
        items: &'a [(ChatId, PushItem)],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Result<()>>> + Send + 'a>> {
        Box::pin(async move {
            let results = self.push_request(items).await;
            let refused_whole = items.len() > 1
                && results
                    .first()
                    .is_some_and(|r| matches!(r, Err(Error::TooLarge { .. })));
            if !refused_whole {
                return results;
            }
            let limit = match results.first() {
                Some(Err(Error::TooLarge { limit, .. })) => *limit,
                _ => 0,
            };
            if limit > 0 && items.iter().any(|(_, item)| item.record_bytes > limit) {
                self.server_limit.fetch_min(limit, Ordering::Relaxed);
                let (over, fits): (Vec<usize>, Vec<usize>) =
                    (0..items.len()).partition(|&i| items[i].1.record_bytes > limit);
                let rest: Vec<(ChatId, PushItem)> =
                    fits.iter().map(|&i| items[i].clone()).collect();
                let mut out: Vec<Option<Result<()>>> = (0..items.len()).map(|_| None).collect();
                for i in over {
                    out[i] = Some(Err(Error::TooLarge {
                        size: items[i].1.record_bytes,
                        limit,
                    }));
                }
                for (i, result) in fits.into_iter().zip(self.push_chunk(&rest).await) {
                    out[i] = Some(result);
                }
                return out
                    .into_iter()
                    .map(|r| {
                        r.unwrap_or_else(|| {
                            Err(Error::corrupt("chatvault_push", "no result for the record"))
                        })
                    })
                    .collect();
            }
            let (left, right) = items.split_at(items.len() / 2);
            let mut out = self.push_chunk(left).await;
            out.extend(self.push_chunk(right).await);
            out
        })
    }

    /// Sends `items` as one push request and returns one result per item.
    async fn push_request(&self, items: &[(ChatId, PushItem)]) -> Vec<Result<()>> {
        let only = (items.len() == 1).then(|| items[0].0);
        let records: Vec<&PushItem> = items.iter().map(|(_, item)| item).collect();
        let answer: Result<Vec<PushResult>> = self
            .rpc
            .call("chatvault_push", &json!({ "records": records }), only)
            .await;
        match answer {
            Ok(results) if results.len() == items.len() => items
                .iter()
                .zip(results)
                .map(|((chat, _), result)| {
                    if result.ok {
                        return Ok(());
                    }
                    if let Some(current) = result.current {
                        check_bigint(current, "current version from chatvault_push")?;
                    }
                    Err(Error::Conflict {
                        chat: *chat,
                        current: result.current,
                    })
                })
                .collect(),
            Ok(results) => {
                let reason = format!("{} results for {} records", results.len(), items.len());
                items
                    .iter()
                    .map(|_| Err(Error::corrupt("response of chatvault_push", reason.clone())))
                    .collect()
            }
            Err(error) => items.iter().map(|_| Err(same_error(&error))).collect(),
        }
    }
}

/// The error a whole request failed with, once per record it carried.
fn same_error(error: &Error) -> Error {
    match error {
        Error::Unavailable { message, .. } => Error::Unavailable {
            message: message.clone(),
            source: None,
        },
        Error::Unauthorized { message } => Error::Unauthorized {
            message: message.clone(),
        },
        Error::Conflict { chat, current } => Error::Conflict {
            chat: *chat,
            current: *current,
        },
        Error::NotFound { what } => Error::NotFound { what: what.clone() },
        Error::TooLarge { size, limit } => Error::TooLarge {
            size: *size,
            limit: *limit,
        },
        Error::Rejected { code, message } => Error::Rejected {
            code: code.clone(),
            message: message.clone(),
        },
        Error::Corrupt { what, reason } => Error::corrupt(what.clone(), reason.clone()),
        other => Error::Rejected {
            code: "batch".into(),
            message: other.to_string(),
        },
    }
}

/// A position in the change feed: the sequence number of the last commit
/// read and, from servers with the fourth migration, that commit's stamp
/// (microseconds since the Unix epoch), which tells a restored database
/// that handed the number out again (`docs/design.md` §6). Written as
/// `seq` or `seq@stamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FeedCursor {
    seq: u64,
    at: Option<i64>,
}

impl FeedCursor {
    const START: FeedCursor = FeedCursor { seq: 0, at: None };

    fn to_cursor(self) -> Cursor {
        match self.at {
            Some(at) => Cursor(format!("{}@{at}", self.seq)),
            None => Cursor(self.seq.to_string()),
        }
    }
}

fn parse_cursor(cursor: &Cursor) -> Result<FeedCursor> {
    if cursor.is_start() {
        return Ok(FeedCursor::START);
    }
    let invalid = || Error::invalid(format!("not a Supabase change cursor: {:?}", cursor.0));
    let (seq, at) = match cursor.0.split_once('@') {
        Some((seq, at)) => (seq, Some(at.parse().map_err(|_| invalid())?)),
        None => (cursor.0.as_str(), None),
    };
    Ok(FeedCursor {
        seq: seq.parse().map_err(|_| invalid())?,
        at,
    })
}

#[async_trait]
impl Storage for SupabaseStorage {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            notifications: false,
            max_batch: MAX_BATCH,
            max_record_bytes: self.record_limit(),
            atomic_preconditions: true,
            inline_summaries: true,
            concurrent_writers: false,
            blobs: true,
        }
    }

    /// Prunes this user's change-log entries superseded by a later version
    /// of their chat and older than the server's history retention
    /// (`chatvault_maintain`, one request). The server keeps each chat's
    /// latest entry, so a device offline for longer still converges.
    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        let _ = budget;
        let result: wire::MaintainResult = self
            .rpc
            .call("chatvault_maintain", &json!({}), None)
            .await?;
        let removed = u64::try_from(result.removed).map_err(|_| {
            Error::corrupt(
                "chatvault_maintain",
                format!("a negative count of removed entries: {}", result.removed),
            )
        })?;
        Ok(MaintenanceReport {
            ran: true,
            removed_entries: removed,
            removed_objects: 0,
            requests: 1,
        })
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        let since = parse_cursor(since)?;
        if limit == 0 {
            return Err(Error::invalid("changes needs a limit of at least 1"));
        }
        let mut page = self.pull(since, limit).await?;
        if page.diverged || page.head.is_some_and(|head| since.seq > head) {
            // The database lost commits this device had read (restored
            // from a backup): numbers past its restored head are (or will
            // be) handed out again to other commits, so carrying on from
            // the old cursor would skip them.
            tracing::warn!(
                cursor = since.seq,
                head = page.head,
                diverged = page.diverged,
                "the change feed no longer holds the commit at this cursor (was the database restored?); restarting the feed"
            );
            page = self.pull(FeedCursor::START, limit).await?;
        }
        let changes = page
            .changes
            .into_iter()
            .map(|row| {
                let record = row.into_record(false)?;
                Ok(Change {
                    chat: record.chat,
                    version: record.version,
                    deleted: record.deleted,
                    summary: Some(record.summary),
                    writer: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ChangePage {
            changes,
            cursor: FeedCursor {
                seq: page.cursor,
                at: page.cursor_at,
            }
            .to_cursor(),
            has_more: page.more,
            waiting: None,
        })
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        let with_bodies = part == Part::Body;
        let mut seen = HashSet::new();
        let wanted: Vec<Uuid> = chats
            .iter()
            .filter(|c| seen.insert(**c))
            .map(|c| c.0)
            .collect();
        let mut records = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(MAX_BATCH) {
            let mut ask: Vec<Uuid> = chunk.to_vec();
            while !ask.is_empty() {
                let page: GetPage = self
                    .rpc
                    .call(
                        "chatvault_get",
                        &json!({ "ids": ask, "with_bodies": with_bodies }),
                        None,
                    )
                    .await?;
                let asked: HashSet<Uuid> = ask.iter().copied().collect();
                let returned: HashSet<Uuid> = page.records.iter().map(|r| r.chat).collect();
                let deferred: HashSet<Uuid> = page.deferred.iter().copied().collect();
                // Progress: every deferred id was asked for and not returned,
                // so each round asks for strictly fewer ids and the loop ends.
                if page.records.is_empty() && !page.deferred.is_empty()
                    || page.records.len() > ask.len()
                    || returned.iter().any(|id| !asked.contains(id))
                    || deferred
                        .iter()
                        .any(|id| !asked.contains(id) || returned.contains(id))
                    || deferred.len() != page.deferred.len()
                {
                    return Err(Error::corrupt(
                        "response of chatvault_get",
                        "records that were not asked for, or deferral without progress",
                    ));
                }
                for row in page.records {
                    records.push(row.into_record(with_bodies)?);
                }
                ask = page.deferred;
            }
        }
        Ok(records)
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        self.put_batch(vec![(record, precondition)])
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::corrupt("chatvault_push", "no result for the record")))
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = Vec::with_capacity(batch.len());
        // Index into `batch` and the validated request item, in order.
        let mut pending: Vec<(usize, ChatId, PushItem)> = Vec::new();
        for (index, (record, precondition)) in batch.iter().enumerate() {
            let size = record.size();
            let limit = self.record_limit();
            if size > limit {
                results.push(Some(Err(Error::TooLarge { size, limit })));
                continue;
            }
            match PushItem::new(record, *precondition) {
                Ok(item) => {
                    results.push(None);
                    pending.push((index, record.chat, item));
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut chunk: Vec<(ChatId, PushItem)> = Vec::new();
        let mut chunk_indices: Vec<usize> = Vec::new();
        let mut chunk_bytes = 0;
        let mut pending = pending.into_iter().peekable();
        while let Some((index, chat, item)) = pending.next() {
            chunk_bytes += item.wire_len();
            chunk.push((chat, item));
            chunk_indices.push(index);
            let full = match pending.peek() {
                None => true,
                Some((_, _, next)) => {
                    chunk.len() >= MAX_BATCH || chunk_bytes + next.wire_len() > PUSH_REQUEST_BYTES
                }
            };
            if full {
                let outcome = self.push_chunk(&chunk).await;
                for (i, result) in chunk_indices.drain(..).zip(outcome) {
                    results[i] = Some(result);
                }
                chunk.clear();
                chunk_bytes = 0;
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::corrupt("chatvault_push", "no result for the record"))
                })
            })
            .collect()
    }

    /// `chatvault_blob_put`: one request; a blob over the record limit fails
    /// with `TooLarge` before it is sent.
    async fn put_blob(&self, id: BlobId, sealed: Bytes) -> Result<()> {
        let limit = self.record_limit();
        if sealed.len() > limit {
            return Err(Error::TooLarge {
                size: sealed.len(),
                limit,
            });
        }
        let result: BlobPutResult = self
            .rpc
            .call(
                "chatvault_blob_put",
                &json!({ "id": id.to_hex(), "blob": wire::encode(&sealed) }),
                None,
            )
            .await?;
        tracing::debug!(blob = %id, stored = result.stored, "put_blob (stored: false means it was there)");
        Ok(())
    }

    /// `chatvault_blob_get`: one request; an answer longer than the record
    /// limit allows is refused as `Corrupt` before it is decoded.
    async fn get_blob(&self, id: BlobId) -> Result<Option<Bytes>> {
        let blob: Option<WireBlob> = self
            .rpc
            .call("chatvault_blob_get", &json!({ "id": id.to_hex() }), None)
            .await?;
        let Some(blob) = blob else {
            return Ok(None);
        };
        let what = format!("blob {id} from chatvault_blob_get");
        if blob.bytes.len() > self.max_record_bytes.div_ceil(3).saturating_mul(4) {
            return Err(Error::corrupt(
                what,
                format!(
                    "larger than the {} bytes a blob can have",
                    self.max_record_bytes
                ),
            ));
        }
        wire::decode(&blob.bytes, &what).map(Some)
    }

    /// `chatvault_blob_list`: one request per page (at most 1,000 ids, as
    /// the SQL caps it).
    async fn list_blobs(&self, after: Option<BlobId>, limit: usize) -> Result<BlobPage> {
        let limit = limit.clamp(1, MAX_PULL);
        let page: BlobListPage = self
            .rpc
            .call(
                "chatvault_blob_list",
                &json!({ "after_id": after.map(|id| id.to_hex()), "lim": limit }),
                None,
            )
            .await?;
        let what = "response of chatvault_blob_list";
        if page.ids.len() > limit {
            return Err(Error::corrupt(
                what,
                format!("{} ids for a limit of {limit}", page.ids.len()),
            ));
        }
        let mut ids = Vec::with_capacity(page.ids.len());
        for text in &page.ids {
            let id: BlobId = text
                .parse()
                .map_err(|_| Error::corrupt(what, format!("not a blob id: {text:?}")))?;
            let previous = ids.last().copied().or(after);
            if previous.is_some_and(|previous| id <= previous) {
                return Err(Error::corrupt(
                    what,
                    format!("id {id} is not after {previous:?}: the page is out of order"),
                ));
            }
            ids.push(id);
        }
        if page.more && ids.is_empty() {
            return Err(Error::corrupt(
                what,
                "an empty page that claims more ids (it would be asked for forever)",
            ));
        }
        let touched_ms = match page.touched {
            // A server without the touch migration: no blob of it is ever
            // collected.
            None => Vec::new(),
            Some(touched) if touched.len() == ids.len() => touched
                .into_iter()
                // A time before 1970 is none a put set: never collected.
                .map(|ms| u64::try_from(ms).unwrap_or(u64::MAX))
                .collect(),
            Some(touched) => {
                return Err(Error::corrupt(
                    what,
                    format!("{} touched times for {} ids", touched.len(), ids.len()),
                ))
            }
        };
        Ok(BlobPage {
            ids,
            touched_ms,
            has_more: page.more,
        })
    }

    /// `chatvault_blob_missing`: one request per 1,000 ids. An answer naming
    /// an id not asked for is `Corrupt`.
    async fn missing_blobs(&self, ids: &[BlobId]) -> Result<Vec<BlobId>> {
        let mut missing = Vec::new();
        for part in ids.chunks(MAX_PULL) {
            let hex: Vec<String> = part.iter().map(BlobId::to_hex).collect();
            let answer: BlobMissing = self
                .rpc
                .call("chatvault_blob_missing", &json!({ "ids": hex }), None)
                .await?;
            for text in answer.missing {
                let id: BlobId = text.parse().map_err(|_| {
                    Error::corrupt(
                        "response of chatvault_blob_missing",
                        format!("not a blob id: {text:?}"),
                    )
                })?;
                if !part.contains(&id) {
                    return Err(Error::corrupt(
                        "response of chatvault_blob_missing",
                        format!("{id} was not asked for"),
                    ));
                }
                missing.push(id);
            }
        }
        Ok(missing)
    }

    /// `chatvault_blob_delete`: one request; a missing blob is no error.
    async fn delete_blob(&self, id: BlobId) -> Result<()> {
        let result: BlobDeleteResult = self
            .rpc
            .call("chatvault_blob_delete", &json!({ "id": id.to_hex() }), None)
            .await?;
        tracing::debug!(blob = %id, deleted = result.deleted, "delete_blob (deleted: false means it was gone)");
        Ok(())
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        let keyring: Option<WireKeyring> = self
            .rpc
            .call("chatvault_keyring_get", &json!({}), None)
            .await?;
        keyring
            .map(|k| {
                check_bigint(k.version, "version of the key file")?;
                // Base64 of MAX_KEYRING_BYTES, checked before decoding.
                if k.bytes.len() > MAX_KEYRING_BYTES.div_ceil(3) * 4 {
                    return Err(Error::corrupt(
                        "key file from chatvault_keyring_get",
                        format!("larger than the {MAX_KEYRING_BYTES} bytes a key file can have"),
                    ));
                }
                Ok(KeyringBlob {
                    bytes: wire::decode(&k.bytes, "key file")?,
                    version: k.version,
                })
            })
            .transpose()
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        let (pre, expected) = match precondition {
            PutPrecondition::None => ("none", None),
            PutPrecondition::Absent => ("absent", None),
            PutPrecondition::Version(v) => ("version", Some(wire::to_bigint(v)?)),
        };
        let result: PushResult = self
            .rpc
            .call(
                "chatvault_keyring_put",
                &json!({ "keyring": wire::encode(&bytes), "pre": pre, "expected": expected }),
                Some(crate::KEYRING_CHAT),
            )
            .await?;
        match (result.ok, result.version) {
            (true, Some(version)) => check_bigint(version, "version of the key file"),
            (true, None) => Err(Error::corrupt(
                "response of chatvault_keyring_put",
                "no version",
            )),
            (false, _) => {
                if let Some(current) = result.current {
                    check_bigint(current, "current version from chatvault_keyring_put")?;
                }
                Err(Error::Conflict {
                    chat: crate::KEYRING_CHAT,
                    current: result.current,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_with_and_without_a_stamp() {
        for (text, cursor) in [
            ("", FeedCursor::START),
            ("42", FeedCursor { seq: 42, at: None }),
            (
                "42@1796628750123456",
                FeedCursor {
                    seq: 42,
                    at: Some(1_796_628_750_123_456),
                },
            ),
        ] {
            let parsed = parse_cursor(&Cursor(text.to_string())).expect(text);
            assert_eq!(parsed, cursor);
            if !text.is_empty() {
                assert_eq!(parsed.to_cursor().0, text);
            }
        }
        for bad in ["x", "42@", "@5", "42@x", "-1"] {
            assert!(parse_cursor(&Cursor(bad.to_string())).is_err(), "{bad}");
        }
    }
}
