//! The markers that stop releases before the per-device layout from
//! misreading or writing a folder that uses it (`docs/design.md` §5.4).
//!
//! Both markers are objects in the shared-log places an older release
//! reads, in a format newer than it knows, so it fails with
//! `UnsupportedFormat` instead of seeing an empty vault (and creating one):
//!
//! - `keyring/<n>`: `CVKF`, format byte 128, then a line of text;
//! - `log/<n>`: `cvl`, format byte 128, then the same text.
//!
//! Their bytes are constant, so two devices writing them in their own
//! copies write the same file.

use crate::entry::ENTRY_MAGIC;
use crate::error::{is_taken, map_store_error};
use crate::layout::Layout;
use bytes::Bytes;
use chatvault_core::Result;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions};

/// The format byte of both markers: above any format a shared-log release
/// reads (and far from the next real one).
pub const MARKER_FORMAT: u8 = 128;
/// The text after the marker header.
const MARKER_TEXT: &[u8] =
    b"\nthis vault uses the per-device folder layout: open it with chatvault 0.2 or later\n";

fn marker(magic: &[u8]) -> Bytes {
    let mut bytes = magic.to_vec();
    bytes.push(MARKER_FORMAT);
    bytes.extend_from_slice(MARKER_TEXT);
    Bytes::from(bytes)
}

/// The key-file marker's bytes.
pub fn key_file_marker() -> Bytes {
    marker(b"CVKF")
}

/// The log-entry marker's bytes.
pub fn log_marker() -> Bytes {
    marker(ENTRY_MAGIC)
}

/// True if `bytes` are one of the markers.
pub fn is_marker(bytes: &[u8]) -> bool {
    bytes == key_file_marker() || bytes == log_marker()
}

/// Creates `path` holding `bytes` unless it exists. True if it now holds
/// exactly `bytes`.
pub(crate) async fn create(store: &dyn ObjectStore, path: &Path, bytes: Bytes) -> Result<bool> {
    match store
        .put_opts(
            path,
            bytes.clone().into(),
            PutOptions::from(PutMode::Create),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_taken(&e) => {
            let held = store
                .get(path)
                .await
                .map_err(|e| map_store_error(e, &format!("reading {path}")))?
                .bytes()
                .await
                .map_err(|e| map_store_error(e, &format!("reading {path}")))?;
            Ok(held == bytes)
        }
        Err(e) => Err(map_store_error(e, &format!("writing {path}"))),
    }
}

/// Writes both markers at slot and version 1 of a new per-device vault's
/// shared-log places (`prefix`), where a shared-log release looks first.
pub(crate) async fn write_markers(store: &dyn ObjectStore, prefix: &Path) -> Result<()> {
    let layout = Layout::new(prefix);
    create(store, &layout.keyring(1), key_file_marker()).await?;
    create(store, &layout.log_entry(1), log_marker()).await?;
    Ok(())
}
