//! [`CappedStream`]: an object read in chunks with a cap. Every object is
//! read with a limit the format sets (a log entry, a snapshot, a record
//! blob, a key file), so a damaged or hostile store cannot make a device
//! download or hold more than a well-formed vault ever needs. See
//! `docs/design.md` §5; [`Objects::open_capped`](crate::objects::Objects::open_capped)
//! opens one.

use crate::error::map_store_error;
use bytes::{Bytes, BytesMut};
use chatvault_core::{Error, Result};
use futures::stream::BoxStream;
use futures::StreamExt;

/// An object opened for reading in chunks, with its size checked against
/// a cap up front and again as the chunks arrive.
pub(crate) struct CappedStream {
    what: String,
    cap: u64,
    read: u64,
    chunks: BoxStream<'static, object_store::Result<Bytes>>,
}

impl CappedStream {
    /// The chunks of `what`, whose response announced `size` bytes; refused
    /// as `Corrupt` when that is over `cap`.
    pub(crate) fn new(
        what: String,
        size: u64,
        cap: u64,
        chunks: BoxStream<'static, object_store::Result<Bytes>>,
    ) -> Result<Self> {
        if size > cap {
            return Err(over_cap(&what, size, cap));
        }
        Ok(Self {
            what,
            cap,
            read: 0,
            chunks,
        })
    }

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
