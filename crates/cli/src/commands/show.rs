//! `show CHAT`: a chat's messages in order: the branch shown, with
//! messages that have alternatives marked `[2/3]`, or every branch
//! (`--all`).

use super::Session;
use crate::output;
use chatvault::Result;

/// `show`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
    chat: String,
    /// The chat as chatvault JSON (the export schema) instead of text
    #[arg(long)]
    json: bool,
    /// Start at message number N (1-based, as `search` numbers its hits)
    #[arg(long, value_name = "N", conflicts_with_all = ["json", "all"])]
    at: Option<usize>,
    /// Every branch as a tree: alternatives (regenerated answers, edited
    /// questions) indented under their place, the branch shown marked `*`
    #[arg(long, conflicts_with = "json")]
    all: bool,
}

/// Pulls, then prints the chat as text or as plain JSON.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    session.pull().await?;
    let chat = session
        .vault
        .load_full_chat(session.chat_id(&args.chat)?)
        .await?;
    if args.json {
        output::json(&chatvault::export::chat(&chat))
    } else if args.all {
        output::tree(&chat);
        Ok(())
    } else {
        output::chat(&chat, args.at.unwrap_or(1));
        Ok(())
    }
}
