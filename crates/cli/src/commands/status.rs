//! `status`: queued changes and the sync status.

use super::Session;
use crate::output::{self, out};
use chatvault::Result;

/// Pulls, then prints how many changes wait and the sync status.
pub async fn exec(session: &Session) -> Result<()> {
    session.pull().await?;
    out!("pending {}", session.vault.pending_changes()?);
    out!("status {}", output::status(&session.vault.status()));
    Ok(())
}
