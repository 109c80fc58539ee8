//! `migrate-folder`: move a folder vault to the per-device layout.

use super::Session;
use crate::output::out;
use chatvault::Result;

/// Moves the folder (once) and says what was moved.
pub async fn exec(session: &Session) -> Result<()> {
    let report = chatvault::migrate_folder(&session.server, session.vault.device_id()).await?;
    if report.already_moved {
        out!(
            "the folder already uses the per-device layout (moved at slot {})",
            report.sealed_at
        );
    } else {
        out!(
            "moved to the per-device layout: {} records and key file version {}; the \
             old files (log/, rec/, snap/, keyring/) can be deleted once every device \
             runs this release",
            report.records,
            report.key_file_version.unwrap_or(0)
        );
    }
    Ok(())
}
