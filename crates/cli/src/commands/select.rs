//! `select CHAT MESSAGE`: show the branch of a chat that goes through a
//! message (one of its alternatives, as `show` marks them `[2/3]`), on
//! every device.

use super::Session;
use chatvault::Result;

/// `select`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
    chat: String,
    /// The message whose branch to show: its id (see `show --all`), or a
    /// unique prefix of it (4+ hex digits)
    message: String,
}

/// Pulls, selects the branch, pushes the selection and prints the chat as
/// it now reads.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    let online = session.pull().await?;
    let vault = &session.vault;
    let chat = session.chat_id(&args.chat)?;
    let message = crate::ids::resolve_message(&args.message, &*vault.load_full_chat(chat).await?)?;
    vault.select_branch(chat, message).await?;
    session.push_if(online).await?;
    crate::output::chat(&*vault.load_full_chat(chat).await?, 1);
    Ok(())
}
