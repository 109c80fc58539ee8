//! The compact binary encoding of a [`ChatSummary`], shared by summary
//! format 2 (`codec`) and the sidebar snapshot (`engine::snapshot`).
//!
//! Hand-written rather than serde-based: seven fixed fields, a general
//! binary format crate would be a new dependency for that, and JSON is
//! what made opening summaries slow. Layout (integers big-endian):
//!
//! ```text
//! summary = id [16] ‖ created hlc ‖ last_activity hlc ‖ message_count u32 ‖
//!           flags u8 (bit 0: starred, bit 1: deleted hlc follows) ‖
//!           [deleted hlc] ‖ title_len u32 ‖ title (UTF-8)
//! hlc     = millis u64 ‖ counter u32 ‖ device u64
//! ```
//!
//! The reader checks every length against the bytes left and refuses
//! unknown flags: any input is a value or an error, never a panic.

use crate::chat::ChatSummary;
use crate::hlc::Hlc;
use crate::ids::{ChatId, DeviceId};
use crate::{Error, Result};

const FLAG_STARRED: u8 = 1;
const FLAG_DELETED: u8 = 2;
const HLC_LEN: usize = 8 + 4 + 8;
/// The smallest encoded summary: id, two stamps, count, flags, empty title.
pub(crate) const MIN_SUMMARY_LEN: usize = 16 + 2 * HLC_LEN + 4 + 1 + 4;

/// Appends `hlc` (20 bytes).
pub(crate) fn put_hlc(out: &mut Vec<u8>, hlc: &Hlc) {
    out.extend_from_slice(&hlc.millis.to_be_bytes());
    out.extend_from_slice(&hlc.counter.to_be_bytes());
    out.extend_from_slice(&hlc.device.0.to_be_bytes());
}

/// Appends the binary encoding of `s` to `out`.
///
/// Errors: [`Error::InvalidInput`] for a title over 4 GiB.
pub(crate) fn put_summary(out: &mut Vec<u8>, s: &ChatSummary) -> Result<()> {
    out.extend_from_slice(s.id.as_bytes());
    put_hlc(out, &s.created);
    put_hlc(out, &s.last_activity);
    out.extend_from_slice(&s.message_count.to_be_bytes());
    let mut flags = 0;
    if s.starred {
        flags |= FLAG_STARRED;
    }
    if s.deleted.is_some() {
        flags |= FLAG_DELETED;
    }
    out.push(flags);
    if let Some(deleted) = &s.deleted {
        put_hlc(out, deleted);
    }
    let title_len = u32::try_from(s.title.len())
        .map_err(|_| Error::invalid(format!("the title of chat {} is too long", s.id)))?;
    out.extend_from_slice(&title_len.to_be_bytes());
    out.extend_from_slice(s.title.as_bytes());
    Ok(())
}

/// Reads a binary encoding front to back; errors name `what` is read.
pub(crate) struct Reader<'a> {
    /// The bytes not read yet.
    pub(crate) bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader of `bytes`, which hold a `what` (for error messages).
    pub(crate) fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Self { bytes, what }
    }

    /// [`Error::Corrupt`] about the value being read.
    pub(crate) fn malformed(&self, why: impl Into<String>) -> Error {
        Error::corrupt(self.what, why)
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(self.malformed("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| self.malformed("truncated"))
    }

    /// The next byte.
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// The next big-endian u32.
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// The next big-endian u64.
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// The next HLC.
    pub(crate) fn hlc(&mut self) -> Result<Hlc> {
        Ok(Hlc::new(self.u64()?, self.u32()?, DeviceId(self.u64()?)))
    }

    /// The next summary, as [`put_summary`] wrote it.
    pub(crate) fn summary(&mut self) -> Result<ChatSummary> {
        let id = ChatId::from_bytes(self.array()?);
        let created = self.hlc()?;
        let last_activity = self.hlc()?;
        let message_count = self.u32()?;
        let flags = self.u8()?;
        if flags & !(FLAG_STARRED | FLAG_DELETED) != 0 {
            return Err(self.malformed(format!("unknown flags {flags:#04x}")));
        }
        let deleted = if flags & FLAG_DELETED != 0 {
            Some(self.hlc()?)
        } else {
            None
        };
        let title_len =
            usize::try_from(self.u32()?).map_err(|_| self.malformed("title too long"))?;
        let title = std::str::from_utf8(self.take(title_len)?)
            .map_err(|_| self.malformed(format!("the title of chat {id} is not UTF-8")))?
            .to_owned();
        Ok(ChatSummary {
            id,
            title,
            created,
            last_activity,
            message_count,
            starred: flags & FLAG_STARRED != 0,
            deleted,
        })
    }

    /// Refuses bytes left after the value.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.malformed(format!("{} bytes after the end", self.bytes.len())))
        }
    }
}
