//! `ls`: the chats, newest first.

use super::Session;
use crate::output;
use chatvault::Result;

/// `ls`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// One JSON array of chats instead of lines
    #[arg(long)]
    json: bool,
    /// Print whole chat ids instead of short ones
    #[arg(long, short = 'l')]
    full_ids: bool,
}

/// Pulls, then prints the sidebar as lines or as plain JSON.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    session.pull().await?;
    let vault = &session.vault;
    if args.json {
        let chats: Vec<_> = vault
            .sidebar()
            .iter()
            .map(|s| chatvault::export::summary(s))
            .collect();
        output::json(&chats)
    } else {
        output::sidebar(&vault.sidebar(), args.full_ids);
        Ok(())
    }
}
