//! `rename CHAT TITLE`.

use super::Session;
use chatvault::Result;

/// `rename`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
    chat: String,
    /// The new title
    title: String,
}

/// Pulls, renames the chat and pushes it.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    let online = session.pull().await?;
    session
        .vault
        .rename(session.chat_id(&args.chat)?, args.title.clone())
        .await?;
    session.push_if(online).await
}
