//! Reading server content with a cap: every object is read with a limit
//! the format sets (a log entry, a snapshot, a record blob, a key file), so a
//! damaged or hostile store cannot make a device download or hold more than
//! a well-formed vault ever needs. See `docs/design.md` §5.

use crate::error::map_store_error;
use crate::ObjectStoreStorage;
use bytes::{Bytes, BytesMut};
use chatvault_core::{Error, Result};
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange};
use std::ops::Range;

/// An object opened for reading in chunks, with its size checked against
/// a cap up front and again as the chunks arrive.
pub(crate) struct CappedStream {
    what: String,
    cap: u64,
    read: u64,
    chunks: BoxStream<'static, object_store::Result<Bytes>>,
}

impl CappedStream {
    /// The next chunk, `None` at the end of the object.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        match self.chunks.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(map_store_error(e, &format!("reading {}", self.what))),
            Some(Ok(chunk)) => {
                self.read = self.read.saturating_add(chunk.len() as u64);
                if self.read > self.cap {
                    return Err(over_cap(&self.what, self.read, self.cap));
                }
                Ok(Some(chunk))
            }
        }
    }

    /// Everything left, as one buffer.
    pub(crate) async fn collect(mut self) -> Result<Bytes> {
        let mut chunks = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            chunks.push(chunk);
        }
        if chunks.len() <= 1 {
            return Ok(chunks.pop().unwrap_or_default());
        }
        let mut buffer = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
        for chunk in chunks {
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer.freeze())
    }
}

fn over_cap(what: &str, size: u64, cap: u64) -> Error {
    Error::corrupt(
        what,
        format!("{size} bytes, more than the {cap} the format allows; not read"),
    )
}

impl ObjectStoreStorage {
    /// Opens `path` (or a range of it) for reading in chunks, refusing it
    /// as `Corrupt` if it is (or turns out to be) larger than `cap` bytes.
    /// A missing object is `NotFound`.
    pub(crate) async fn open_capped(
        &self,
        path: &Path,
        range: Option<Range<u64>>,
        cap: u64,
    ) -> Result<CappedStream> {
        let what = path.to_string();
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(path, options)
            .await
            .map_err(|e| map_store_error(e, &format!("reading {what}")))?;
        let size = match range {
            Some(range) => range.end.saturating_sub(range.start).min(result.meta.size),
            None => result.meta.size,
        };
        if size > cap {
            return Err(over_cap(&what, size, cap));
        }
        Ok(CappedStream {
            what,
            cap,
            read: 0,
            chunks: result.into_stream(),
        })
    }

    /// Reads `path` whole, at most `cap` bytes (see
    /// [`ObjectStoreStorage::open_capped`]).
    pub(crate) async fn read_capped(&self, path: &Path, cap: u64) -> Result<Bytes> {
        self.open_capped(path, None, cap).await?.collect().await
    }
}
