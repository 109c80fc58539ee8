//! `new TITLE`: create a chat and print its id.

use super::Session;
use crate::output::out;
use chatvault::Result;

/// `new`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Its title
    title: String,
}

/// Creates the chat, prints its id and pushes it.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    out!("{}", session.vault.new_chat(args.title.clone()).await?.id);
    session.push().await
}
