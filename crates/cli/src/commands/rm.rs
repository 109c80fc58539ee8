//! `rm CHAT`: delete a chat on every device.

use super::Session;
use chatvault::Result;

/// `rm`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
    chat: String,
}

/// Pulls, deletes the chat and pushes the deletion.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    let online = session.pull().await?;
    session
        .vault
        .delete_chat(session.chat_id(&args.chat)?)
        .await?;
    session.push_if(online).await
}
