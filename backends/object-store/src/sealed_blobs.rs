//! [`SealedBlobs`]: the content-addressed sealed blobs of a vault
//! (`blob/<first 2 hex>/<64 hex>`, `docs/design.md` §10.3), behind the blob
//! operations of [`Storage`](chatvault_core::Storage). Not to be confused
//! with the record objects (`rec/`, [`RecordObjects`](crate::record_objects::RecordObjects)),
//! which a log entry names.
//!
//! A blob is immutable and named by its id, so nothing here needs the log:
//! a put is one PUT (overwriting a stored sealing of the same plaintext, so
//! the object's last-modified time is the blob's touched time: §10.6), a
//! get one GET, a delete one DELETE, a list one LIST from an offset.

use crate::error::map_store_error;
use crate::objects::Objects;
use bytes::Bytes;
use chatvault_core::{BlobId, BlobPage, Error, Result};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;

/// HEAD requests `missing` keeps in flight.
const HEADS_IN_FLIGHT: usize = 8;

/// The sealed blobs under one prefix.
#[derive(Debug)]
pub(crate) struct SealedBlobs {
    objects: Arc<Objects>,
    /// Blobs larger than this are refused, written or read.
    max_bytes: usize,
}

impl SealedBlobs {
    /// The blobs under `objects`' prefix, each at most `max_bytes` long.
    pub(crate) fn new(objects: Arc<Objects>, max_bytes: usize) -> Self {
        Self { objects, max_bytes }
    }

    /// `Storage::put_blob`: writes the blob, replacing a stored sealing of
    /// the same plaintext, which touches it (stores keep no other
    /// modification time that a client can set).
    pub(crate) async fn put(&self, id: BlobId, sealed: Bytes) -> Result<()> {
        if sealed.len() > self.max_bytes {
            return Err(Error::TooLarge {
                size: sealed.len(),
                limit: self.max_bytes,
            });
        }
        let path = self.objects.layout().sealed_blob(&id);
        // A PUT is atomic on every store (local files: a temporary file
        // renamed), so a reader sees one whole sealing or the other, and
        // any sealing of the same plaintext opens alike.
        match self.objects.store().put(&path, sealed.into()).await {
            Ok(_) => Ok(()),
            Err(e) => Err(map_store_error(e, &format!("writing blob {path}"))),
        }
    }

    /// `Storage::get_blob`: the stored bytes, `None` if missing. A stored
    /// object longer than the limit is `Corrupt`, never read whole.
    pub(crate) async fn get(&self, id: BlobId) -> Result<Option<Bytes>> {
        let path = self.objects.layout().sealed_blob(&id);
        match self.objects.read_capped(&path, self.max_bytes as u64).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `Storage::list_blobs`: the ids after `after`, ascending, at most
    /// `limit` (at least one). Stores do not promise a listing order (local
    /// files come in directory order), so the whole listing after the
    /// offset is read and sorted: correct on every store, at the cost of
    /// listing the rest of `blob/` per page.
    pub(crate) async fn list(&self, after: Option<BlobId>, limit: usize) -> Result<BlobPage> {
        let limit = limit.max(1);
        let layout = self.objects.layout();
        let dir = layout.sealed_blob_dir();
        let mut listing = match &after {
            Some(after) => self
                .objects
                .store()
                .list_with_offset(Some(dir), &layout.sealed_blob(after)),
            None => self.objects.store().list(Some(dir)),
        };
        let mut ids = BTreeMap::new();
        while let Some(item) = listing.next().await {
            match item {
                Ok(meta) => match layout.parse_sealed_blob(&meta.location) {
                    Some(id) if after.is_none_or(|after| id > after) => {
                        // A time before 1970 is no time a put set: such a
                        // blob is never old enough to collect.
                        let touched = u64::try_from(meta.last_modified.timestamp_millis())
                            .unwrap_or(u64::MAX);
                        ids.insert(id, touched);
                    }
                    Some(_) => {}
                    None => self.objects.report_foreign(&meta.location),
                },
                Err(object_store::Error::InvalidPath { source }) => {
                    tracing::warn!(dir = %dir, error = %source, "ignoring an object with an invalid name");
                }
                Err(e) => return Err(map_store_error(e, &format!("listing {dir}"))),
            }
        }
        let has_more = ids.len() > limit;
        let (ids, touched_ms) = ids.into_iter().take(limit).unzip();
        Ok(BlobPage {
            ids,
            touched_ms,
            has_more,
        })
    }

    /// `Storage::missing_blobs`: one HEAD per id, a few at a time.
    pub(crate) async fn missing(&self, ids: &[BlobId]) -> Result<Vec<BlobId>> {
        let layout = self.objects.layout();
        let answers: Vec<Option<BlobId>> = futures::stream::iter(ids.iter().copied())
            .map(|id| async move {
                let path = layout.sealed_blob(&id);
                match self.objects.store().head(&path).await {
                    Ok(_) => Ok(None),
                    Err(object_store::Error::NotFound { .. }) => Ok(Some(id)),
                    Err(e) => Err(map_store_error(e, &format!("checking blob {path}"))),
                }
            })
            .buffer_unordered(HEADS_IN_FLIGHT)
            .collect::<Vec<Result<Option<BlobId>>>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// `Storage::delete_blob`: a missing blob is already deleted.
    pub(crate) async fn delete(&self, id: BlobId) -> Result<()> {
        let path = self.objects.layout().sealed_blob(&id);
        self.objects.delete_all(std::iter::once(path)).await?;
        Ok(())
    }
}
