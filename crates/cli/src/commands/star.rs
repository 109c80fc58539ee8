//! `star CHAT` and `unstar CHAT`.

use super::Session;
use chatvault::Result;

/// `star`'s and `unstar`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
    chat: String,
}

/// Pulls, stars (or with `starred` false unstars) the chat and pushes it.
pub async fn exec(session: &Session, args: &Args, starred: bool) -> Result<()> {
    let online = session.pull().await?;
    session
        .vault
        .star(session.chat_id(&args.chat)?, starred)
        .await?;
    session.push_if(online).await
}
