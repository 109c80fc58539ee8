//! `verify`: runs [`chatvault::verify::verify`] on the vault and prints
//! what it found, then a summary line.

use crate::output::out;
use crate::settings::{self, Location};
use chatvault::{Error, Result};

/// Runs the check; `Err` (exit code 5) if anything is wrong.
pub async fn exec(location: &Location) -> Result<()> {
    settings::check_credentials(&location.server)?;
    let unlock = settings::unlock(location)?;
    let storage = chatvault::open_url(&location.server).await?;
    let report = chatvault::verify::verify(&storage, &location.replica, &unlock).await?;
    for finding in &report.findings {
        // Findings quote errors, whose text may come from the server.
        out!("{}", crate::output::terminal(finding.text()));
    }
    let problems = report.problems();
    out!(
        "checked the key file, {} server records and {} replica records: {}",
        report.server_records,
        report.replica_records,
        if problems == 0 {
            "all open and agree".to_string()
        } else {
            format!("{problems} problem(s)")
        }
    );
    if problems > 0 {
        return Err(Error::corrupt(
            format!("{problems} problem(s)"),
            "see the lines above; restore the damaged copy (e.g. `sync` from a good device) \
             or report it",
        ));
    }
    Ok(())
}
