//! `search`: prints what [`ChatVault::search`] finds, one hit a line.

use super::Session;
use chatvault::export::time;
use chatvault::{ChatVault, Result};
use std::io::Write;

/// `search`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The text to look for
    text: String,
    /// Print whole chat ids instead of short ones
    #[arg(long, short = 'l')]
    full_ids: bool,
}

/// Pulls, then prints every hit.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    session.pull().await?;
    run(&session.vault, &args.text, args.full_ids).await
}

/// Prints every hit: chat id, time, title, where (the title, or message
/// number and role) and snippet. Chat ids are short ones
/// ([`crate::ids::short`]), unless `full_ids`.
///
/// Errors: [`chatvault::Error::NotFound`] when nothing matched (exit 1, as
/// `grep` does); replica and output errors.
async fn run(vault: &ChatVault, text: &str, full_ids: bool) -> Result<()> {
    let found = vault.search(text).await?;
    for skipped in &found.unreadable {
        eprintln!(
            "warning: chat {} not searched: {}",
            skipped.chat, skipped.error
        );
    }
    let len = if full_ids {
        32
    } else {
        crate::ids::short_len(vault.sidebar().iter().map(|c| &c.id))
    };
    let hits = found.hits;
    if hits.is_empty() {
        return Err(chatvault::Error::NotFound {
            what: format!("no matches for {:?}", crate::output::terminal(text)),
        });
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = hits.iter().try_for_each(|hit| {
        let place = match (&hit.message, &hit.other_branch) {
            (Some((number, role)), _) => format!("#{number} {}", crate::output::role(role)),
            (None, Some((id, role))) => {
                format!("branch {} {}", id.0.simple(), crate::output::role(role))
            }
            (None, None) => "title".to_string(),
        };
        writeln!(
            out,
            "{}  {}  {}  {place}: {}",
            crate::ids::short(&hit.chat, len),
            time(hit.at),
            crate::output::terminal(&hit.title),
            crate::output::terminal(&hit.snippet)
        )
    });
    match written.and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // A reader that stopped early (`| head`) is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(crate::output::file_error(
            "cannot write the results to standard output",
            e,
        )),
    }
}
