//! `rm-message CHAT MESSAGE`: delete one message on every device.

use super::Session;
use chatvault::{MessageId, Result};

/// `rm-message`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
    chat: String,
    /// The message's id (see `show`), or a unique prefix of it (4+ hex digits)
    message: String,
}

/// Pulls, deletes the message and pushes the deletion.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    let online = session.pull().await?;
    let vault = &session.vault;
    let chat = session.chat_id(&args.chat)?;
    let message = match args.message.parse::<MessageId>() {
        Ok(id) => id,
        Err(_) => crate::ids::resolve_message(&args.message, &*vault.load_full_chat(chat).await?)?,
    };
    vault.delete_message(chat, message).await?;
    session.push_if(online).await
}
