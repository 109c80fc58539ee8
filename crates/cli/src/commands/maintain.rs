//! `maintain`: compact the vault now, and collect unnamed attachment
//! blobs.

use super::Session;
use crate::output::out;
use chatvault::Result;

/// Compacts whatever the backend's thresholds, collects attachment blobs
/// no chat names, and prints what was removed.
pub async fn exec(session: &Session) -> Result<()> {
    let report = session.vault.maintain(true).await?;
    if report.ran {
        out!(
            "compacted: removed {} log entries and {} other objects ({} requests)",
            report.removed_entries,
            report.removed_objects,
            report.requests
        );
    } else {
        out!("nothing to compact on this backend");
    }
    if session.vault.engine().storage().capabilities().blobs {
        let blobs = session.vault.collect_attachments().await?;
        out!(
            "attachments: {} blobs stored, {} past the grace period, {} still named, {} deleted",
            blobs.listed,
            blobs.candidates,
            blobs.referenced,
            blobs.deleted
        );
        if let Some(why) = blobs.stopped {
            out!("attachments: {why}");
        }
    }
    Ok(())
}
