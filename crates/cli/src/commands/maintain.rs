//! `maintain`: compact the vault now.

use super::Session;
use crate::output::out;
use chatvault::Result;

/// Compacts whatever the backend's thresholds and prints what was removed.
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
    Ok(())
}
