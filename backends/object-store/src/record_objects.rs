//! [`RecordObjects`]: the record blobs of a vault (`rec/<chat>/<version>-<write>`):
//! written before the log entry that names them, read with the lengths the
//! entry promised.

use crate::entry::{decode_blob, HEADER_LEN};
use crate::error::map_store_error;
use crate::index::Current;
use crate::layout::WriteId;
use crate::objects::Objects;
use crate::options::ObjectStoreOptions;
use bytes::Bytes;
use chatvault_core::{ChatId, Error, Part, Result, SealedRecord};
use futures::StreamExt;
use object_store::path::Path;
use std::sync::Arc;

/// The record blobs under a vault's prefix.
#[derive(Debug)]
pub(crate) struct RecordObjects {
    objects: Arc<Objects>,
    /// Records larger than this are refused unread.
    max_record_bytes: usize,
    /// Requests in flight at once.
    concurrency: usize,
}

impl RecordObjects {
    /// The blobs in `objects`, read and written as `options` say.
    pub(crate) fn new(objects: Arc<Objects>, options: &ObjectStoreOptions) -> Self {
        Self {
            objects,
            max_record_bytes: options.max_record_bytes,
            concurrency: options.concurrency,
        }
    }

    /// Where the blob of one write of a record lives.
    pub(crate) fn path(&self, chat: ChatId, version: u64, write: WriteId) -> Path {
        self.objects.layout().blob(chat, version, write)
    }

    /// Writes `blobs` concurrently, one result each, in order.
    pub(crate) async fn put_all(&self, blobs: Vec<(Path, Bytes)>) -> Vec<Result<()>> {
        futures::stream::iter(blobs)
            .map(|(path, blob)| async move {
                self.objects
                    .store()
                    .put(&path, blob.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| map_store_error(e, &format!("writing {path}")))
            })
            .buffered(self.concurrency)
            .collect()
            .await
    }

    /// Fetches the blobs of `resolved`, one result per entry, in order.
    pub(crate) async fn fetch(
        &self,
        resolved: &[(ChatId, Current)],
        part: Part,
    ) -> Vec<Result<SealedRecord>> {
        futures::stream::iter(resolved.iter().cloned())
            .map(|(chat, current)| async move { self.fetch_one(chat, &current, part).await })
            .buffered(self.concurrency)
            .collect()
            .await
    }

    /// Reads the blob of `chat`'s `current` record: its summary, and its
    /// body for [`Part::Body`].
    async fn fetch_one(&self, chat: ChatId, current: &Current, part: Part) -> Result<SealedRecord> {
        let path = self
            .objects
            .layout()
            .blob(chat, current.version, current.write);
        let what = format!("chat {chat} version {} ({path})", current.version);
        let full = part == Part::Body && current.body_len.is_some();
        // The log entry says how long the blob is; a record longer than this
        // handle accepts is refused before anything is read, and no read
        // goes past what the entry promised.
        let summary_end = (HEADER_LEN as u64).checked_add(current.summary_len);
        let blob_len = summary_end.and_then(|end| end.checked_add(current.body_len.unwrap_or(0)));
        let record_len = current
            .summary_len
            .checked_add(current.body_len.unwrap_or(0));
        let (Some(summary_end), Some(blob_len), Some(record_len)) =
            (summary_end, blob_len, record_len)
        else {
            return Err(Error::corrupt(what, "record length out of range"));
        };
        if record_len > self.max_record_bytes as u64 {
            return Err(Error::corrupt(
                what,
                format!(
                    "the log names a record of {record_len} bytes, over this device's limit of {} \
                     (ObjectStoreOptions::with_max_record_bytes); not read",
                    self.max_record_bytes
                ),
            ));
        }
        let whole = async { self.objects.read_capped(&path, blob_len).await };
        let bytes = if full {
            whole.await
        } else {
            let ranged = async {
                self.objects
                    .open_capped(&path, Some(0..summary_end), summary_end)
                    .await?
                    .collect()
                    .await
            };
            match ranged.await {
                // An empty or short object makes some stores refuse the
                // range; reading it whole lets the decoder say what is wrong.
                Err(e) if !matches!(e, Error::NotFound { .. }) => whole.await,
                other => other,
            }
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(Error::NotFound { .. }) => {
                return Err(Error::corrupt(what, "the record's blob is missing"));
            }
            Err(Error::Corrupt { reason, .. }) => return Err(Error::corrupt(what, reason)),
            Err(e) => return Err(e),
        };
        let (summary, body) =
            decode_blob(bytes, current.summary_len, current.body_len, full, &what)?;
        Ok(SealedRecord {
            chat,
            version: current.version,
            deleted: current.deleted,
            summary,
            body: if part == Part::Body { body } else { None },
        })
    }
}
