//! `sync`: pull every change, push every queued one.

use super::Session;
use crate::output;
use chatvault::Result;

/// Syncs once and prints what it did.
pub async fn exec(session: &Session) -> Result<()> {
    let report = session.vault.sync_now().await?;
    output::skipped(&report);
    output::report(&report, &session.vault.status());
    Ok(())
}
