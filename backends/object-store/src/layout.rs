//! Where each kind of object lives under a vault's prefix, and how names are
//! parsed back.
//!
//! ```text
//! <prefix>/log/<seq, 20 digits>                   change log entries (commit points)
//! <prefix>/rec/<chat>/<version, 20 digits>-<write> immutable record blobs
//! <prefix>/snap/<seq, 20 digits>                  compaction snapshots
//! <prefix>/keyring/<version, 20 digits>           the vault's key file, one object per version
//! <prefix>/blob/<first 2 hex>/<64 hex>            sealed blobs, named by their BlobId
//! ```
//!
//! Zero-padded numbers make lexicographic order equal numeric order, which is
//! what lets `list_with_offset` start right after a cursor. Anything that does
//! not parse (a stray `log/notes.txt`, a Syncthing `.syncthing.*.tmp`, a
//! `*.sync-conflict-*` copy) is foreign: reported once and otherwise ignored.

use chatvault_core::{BlobId, ChatId};
use object_store::path::Path;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashSet;
use std::fmt;
use std::sync::Mutex;

/// The directory of sealed blobs under a vault's prefix (in the per-device
/// layout: under the folder's prefix, shared by every device).
pub(crate) const BLOB_DIR: &str = "blob";

/// Digits of every sequence or version number in an object name.
const WIDTH: usize = 20;
/// The largest log slot, snapshot or keyring version number a name may
/// carry: far beyond any real vault, and low enough that `n + 1` never
/// overflows. Larger numbers are foreign names (a damaged or hostile store).
pub(crate) const MAX_SEQ: u64 = i64::MAX as u64;

/// Names one attempt to write a record: blobs of a put that lost a race or
/// whose writer died are never confused with the committed ones.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub(crate) struct WriteId(pub(crate) u64);

impl WriteId {
    pub(crate) fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for WriteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for WriteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriteId({self})")
    }
}

impl Serialize for WriteId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WriteId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_write_id(&text)
            .ok_or_else(|| serde::de::Error::custom("write id is not 16 hex digits"))
    }
}

fn parse_write_id(text: &str) -> Option<WriteId> {
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok().map(WriteId)
}

/// The object names of one vault.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    log: Path,
    rec: Path,
    snap: Path,
    keyring: Path,
    blob: Path,
}

impl Layout {
    pub(crate) fn new(prefix: &Path) -> Self {
        Self {
            log: prefix.child("log"),
            rec: prefix.child("rec"),
            snap: prefix.child("snap"),
            keyring: prefix.child("keyring"),
            blob: prefix.child(BLOB_DIR),
        }
    }

    pub(crate) fn log_dir(&self) -> &Path {
        &self.log
    }

    pub(crate) fn rec_dir(&self) -> &Path {
        &self.rec
    }

    pub(crate) fn snap_dir(&self) -> &Path {
        &self.snap
    }

    pub(crate) fn keyring_dir(&self) -> &Path {
        &self.keyring
    }

    pub(crate) fn sealed_blob_dir(&self) -> &Path {
        &self.blob
    }

    /// `blob/<first 2 hex digits>/<64 hex digits>`: the fan-out directory
    /// keeps folders small, and because it is the id's own first digits the
    /// names sort exactly like the ids.
    pub(crate) fn sealed_blob(&self, id: &BlobId) -> Path {
        let hex = id.to_hex();
        self.blob.child(&hex[..2]).child(hex.as_str())
    }

    /// The id a `blob/` object name encodes; `None` for anything else (a
    /// staging file, a file-sync conflict copy, a misplaced name).
    pub(crate) fn parse_sealed_blob(&self, location: &Path) -> Option<BlobId> {
        let mut parts = location.prefix_match(&self.blob)?;
        let fan = parts.next()?;
        let name = parts.next()?;
        if parts.next().is_some() || name.as_ref().get(..2) != Some(fan.as_ref()) {
            return None;
        }
        let id: BlobId = name.as_ref().parse().ok()?;
        // Upper-case digits parse too, but are not the name this layout
        // writes for the id.
        (id.to_hex() == name.as_ref()).then_some(id)
    }

    /// Log slot `seq`; slot 0 never exists and serves as the listing offset
    /// "before everything".
    pub(crate) fn log_entry(&self, seq: u64) -> Path {
        self.log.child(numbered(seq).as_str())
    }

    pub(crate) fn blob(&self, chat: ChatId, version: u64, write: WriteId) -> Path {
        self.rec
            .child(chat.to_string().as_str())
            .child(format!("{}-{write}", numbered(version)).as_str())
    }

    pub(crate) fn snapshot(&self, seq: u64) -> Path {
        self.snap.child(numbered(seq).as_str())
    }

    pub(crate) fn keyring(&self, version: u64) -> Path {
        self.keyring.child(numbered(version).as_str())
    }

    /// `dir/<n, 20 digits>`: the listing offset that starts right after `n`.
    pub(crate) fn numbered_path(dir: &Path, n: u64) -> Path {
        dir.child(numbered(n).as_str())
    }

    /// The number of a `log/`, `snap/` or `keyring/` object directly inside
    /// `dir`; `None` for anything else.
    pub(crate) fn numbered_child(dir: &Path, location: &Path) -> Option<u64> {
        let mut parts = location.prefix_match(dir)?;
        let name = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        parse_numbered(name.as_ref())
    }

    /// The chat, version and write id a `rec/` blob name encodes.
    pub(crate) fn parse_blob(&self, location: &Path) -> Option<(ChatId, u64, WriteId)> {
        let mut parts = location.prefix_match(&self.rec)?;
        let chat = parts.next()?.as_ref().parse::<ChatId>().ok()?;
        let name = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let (version, write) = name.as_ref().split_once('-')?;
        Some((chat, parse_numbered(version)?, parse_write_id(write)?))
    }
}

fn numbered(n: u64) -> String {
    format!("{n:0WIDTH$}")
}

fn parse_numbered(name: &str) -> Option<u64> {
    if name.len() != WIDTH || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|&n| n <= MAX_SEQ)
}

/// Reports each foreign object once per process, so an idle poll over a
/// folder with a stray file does not warn every five seconds.
#[derive(Debug, Default)]
pub(crate) struct ForeignFiles {
    seen: Mutex<HashSet<String>>,
}

impl ForeignFiles {
    pub(crate) fn report(&self, location: &Path) {
        let name = location.as_ref();
        let first_time = match self.seen.lock() {
            Ok(mut seen) => seen.insert(name.to_owned()),
            Err(_) => true,
        };
        if !first_time {
            return;
        }
        if name.contains(".sync-conflict-") || name.contains("conflicted copy") {
            tracing::warn!(
                object = name,
                "ignoring a file-sync conflict copy: two devices wrote the same object before \
                 the folder synced; the copy is not part of the vault (see the chatvault-fs docs)"
            );
        } else {
            tracing::warn!(object = name, "ignoring a foreign object in the vault");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_names_sort_like_their_numbers() {
        let layout = Layout::new(&Path::from("v"));
        let names: Vec<String> = [1u64, 9, 10, 100, MAX_SEQ]
            .iter()
            .map(|&n| layout.log_entry(n).to_string())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(
            Layout::numbered_child(layout.log_dir(), &layout.log_entry(MAX_SEQ)),
            Some(MAX_SEQ)
        );
        assert_eq!(
            Layout::numbered_child(layout.log_dir(), &layout.log_entry(MAX_SEQ + 1)),
            None,
            "numbers whose successor could overflow are foreign"
        );
    }

    #[test]
    fn foreign_names_do_not_parse_as_log_slots() {
        let layout = Layout::new(&Path::from("v"));
        for name in [
            "v/log/notes.txt",
            "v/log/.syncthing.00000000000000000001.tmp",
            "v/log/00000000000000000001.sync-conflict-20240101-120000-ABCDEFG",
            "v/log/0000000000000000001",
            "v/log/99999999999999999999",
            "v/log/sub/00000000000000000001",
            "v/snap/00000000000000000001",
        ] {
            assert_eq!(
                Layout::numbered_child(layout.log_dir(), &Path::from(name)),
                None,
                "{name}"
            );
        }
    }

    #[test]
    fn sealed_blob_names_round_trip_and_sort_like_ids() {
        let layout = Layout::new(&Path::from("users/a"));
        let low = BlobId([0x0f; 32]);
        let high = BlobId([0xa0; 32]);
        let (low_path, high_path) = (layout.sealed_blob(&low), layout.sealed_blob(&high));
        assert_eq!(
            low_path.as_ref(),
            format!("users/a/blob/0f/{}", low.to_hex())
        );
        assert_eq!(layout.parse_sealed_blob(&low_path), Some(low));
        assert!(low_path.as_ref() < high_path.as_ref());
        for foreign in [
            format!(
                "users/a/blob/0f/{}.sync-conflict-20240101-120000-ABCDEFG",
                low.to_hex()
            ),
            format!("users/a/blob/0f/{}#1", low.to_hex()),
            format!("users/a/blob/aa/{}", low.to_hex()),
            format!("users/a/blob/0F/{}", low.to_hex().to_uppercase()),
            format!("users/a/blob/{}", low.to_hex()),
        ] {
            assert_eq!(
                layout.parse_sealed_blob(&Path::from(foreign.as_str())),
                None,
                "{foreign}"
            );
        }
    }

    #[test]
    fn blob_names_round_trip() {
        let layout = Layout::new(&Path::from("users/a"));
        let chat = ChatId::new();
        let write = WriteId::random();
        let path = layout.blob(chat, 42, write);
        assert_eq!(layout.parse_blob(&path), Some((chat, 42, write)));
        assert_eq!(layout.parse_blob(&Path::from("users/a/rec/x/y")), None);
    }
}
