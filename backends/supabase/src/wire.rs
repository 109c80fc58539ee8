//! The JSON the chatvault RPCs exchange, and base64 for sealed bytes.
//!
//! Sealed bytes travel as standard base64 without line breaks: the SQL
//! functions `encode`/`decode` them, so PostgREST's hex rendering of bytea
//! (`"\x…"`, twice the size) is never used.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use chatvault_core::{ChatId, Error, PutPrecondition, Result, SealedRecord};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `chatvault_pull`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct PullPage {
    pub changes: Vec<WireRecord>,
    pub cursor: u64,
    pub more: bool,
    /// The user's last assigned sequence number (absent from servers
    /// without the second migration).
    #[serde(default)]
    pub head: Option<u64>,
    /// The commit stamp (microseconds since the Unix epoch) of the commit
    /// at `cursor`, for the next cursor (absent from servers without the
    /// fourth migration, null for entries written before it).
    #[serde(default)]
    pub cursor_at: Option<i64>,
    /// The entry numbered at or before `since` was stamped after the
    /// cursor's stamp: the database was restored and those numbers were
    /// handed out again.
    #[serde(default)]
    pub diverged: bool,
}

/// `chatvault_get`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct GetPage {
    pub records: Vec<WireRecord>,
    pub deferred: Vec<Uuid>,
}

/// One record as the RPCs return it.
#[derive(Debug, Deserialize)]
pub(crate) struct WireRecord {
    pub chat: Uuid,
    pub version: u64,
    pub deleted: bool,
    pub summary: String,
    #[serde(default)]
    pub body: Option<String>,
}

impl WireRecord {
    /// Decodes the base64 parts; `with_body` false drops any body.
    pub(crate) fn into_record(self, with_body: bool) -> Result<SealedRecord> {
        let what = format!("record of chat {}", self.chat);
        check_bigint(self.version, &what)?;
        let summary = decode(&self.summary, &what)?;
        let body = match (with_body, self.body) {
            (true, Some(body)) => Some(decode(&body, &what)?),
            _ => None,
        };
        Ok(SealedRecord {
            chat: ChatId(self.chat),
            version: self.version,
            deleted: self.deleted,
            summary,
            body,
        })
    }
}

/// One record of a `chatvault_push` request.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PushItem {
    pub chat: Uuid,
    pub version: i64,
    pub deleted: bool,
    pub summary: String,
    pub body: Option<String>,
    pub pre: &'static str,
    pub expected: Option<i64>,
    /// Sealed bytes of the record (summary + body), for size checks.
    #[serde(skip)]
    pub record_bytes: usize,
}

impl PushItem {
    pub(crate) fn new(record: &SealedRecord, precondition: PutPrecondition) -> Result<Self> {
        let (pre, expected) = match precondition {
            PutPrecondition::None => ("none", None),
            PutPrecondition::Absent => ("absent", None),
            PutPrecondition::Version(v) => ("version", Some(to_bigint(v)?)),
        };
        Ok(Self {
            chat: record.chat.0,
            version: to_bigint(record.version)?,
            deleted: record.deleted,
            summary: STANDARD.encode(&record.summary),
            body: if record.deleted {
                None
            } else {
                record.body.as_ref().map(|b| STANDARD.encode(b))
            },
            pre,
            expected,
            record_bytes: record.size(),
        })
    }

    /// Bytes this item adds to a request body, roughly.
    pub(crate) fn wire_len(&self) -> usize {
        self.summary.len() + self.body.as_ref().map_or(0, String::len) + 160
    }
}

/// One result of `chatvault_push` (or `chatvault_keyring_put`).
#[derive(Debug, Deserialize)]
pub(crate) struct PushResult {
    pub ok: bool,
    #[serde(default)]
    pub current: Option<u64>,
    #[serde(default)]
    pub version: Option<u64>,
}

/// `chatvault_keyring_get`'s answer (JSON null when none is stored).
#[derive(Debug, Deserialize)]
pub(crate) struct WireKeyring {
    pub version: u64,
    pub bytes: String,
}

/// `chatvault_blob_put`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct BlobPutResult {
    /// True when this call stored the blob, false when it was there.
    pub stored: bool,
}

/// `chatvault_blob_get`'s answer (JSON null when the blob is missing).
#[derive(Debug, Deserialize)]
pub(crate) struct WireBlob {
    pub bytes: String,
}

/// `chatvault_blob_list`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct BlobListPage {
    /// Blob ids, hex, ascending.
    pub ids: Vec<String>,
    /// Each id's touched time (ms since the epoch); missing from a server
    /// without the `chatvault_blob_touch` migration.
    #[serde(default)]
    pub touched: Option<Vec<i64>>,
    /// True if more ids follow the last.
    pub more: bool,
}

/// `chatvault_blob_missing`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct BlobMissing {
    /// The ids asked for that are not stored, hex.
    pub missing: Vec<String>,
}

/// `chatvault_blob_delete`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct BlobDeleteResult {
    /// True when this call removed the blob.
    pub deleted: bool,
}

/// `chatvault_maintain`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct MaintainResult {
    /// Change-log entries pruned.
    pub removed: i64,
}

/// Parses the JSON body of a successful RPC answer; anything else is
/// [`Error::Corrupt`] naming `function`.
pub(crate) fn parse_response<T: serde::de::DeserializeOwned>(
    function: &str,
    body: &[u8],
) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        Error::corrupt(
            format!("response of {function}"),
            format!("not the JSON chatvault expects: {e}"),
        )
    })
}

pub(crate) fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(crate) fn decode(text: &str, what: &str) -> Result<Bytes> {
    STANDARD
        .decode(text)
        .map(Bytes::from)
        .map_err(|e| Error::corrupt(what, format!("invalid base64 from the server: {e}")))
}

/// Versions are `bigint` in SQL: the top half of `u64` cannot be stored.
pub(crate) fn to_bigint(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| {
        Error::invalid(format!(
            "version {n} exceeds the largest version PostgreSQL stores ({})",
            i64::MAX
        ))
    })
}

/// A number from the server that must fit PostgreSQL's `bigint` (sequence
/// numbers, versions): anything larger is a hostile or broken answer, and
/// refusing it keeps later `+ 1`s from overflowing.
pub(crate) fn check_bigint(n: u64, what: &str) -> Result<u64> {
    if i64::try_from(n).is_err() {
        return Err(Error::corrupt(
            what,
            format!("number {n} from the server is beyond PostgreSQL's bigint"),
        ));
    }
    Ok(n)
}
