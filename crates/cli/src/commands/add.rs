//! `add CHAT TEXT`: append a message and print its id.

use super::Session;
use crate::output::out;
use chatvault::{Result, Role};
use clap::ValueEnum;

/// `add`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
    chat: String,
    /// Who wrote it
    #[arg(long, value_enum, default_value_t = CliRole::User)]
    role: CliRole,
    /// The message text
    text: String,
}

/// The message roles, as command-line values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CliRole {
    User,
    Assistant,
    System,
    Tool,
}

impl From<CliRole> for Role {
    fn from(role: CliRole) -> Role {
        match role {
            CliRole::User => Role::User,
            CliRole::Assistant => Role::Assistant,
            CliRole::System => Role::System,
            CliRole::Tool => Role::Tool,
        }
    }
}

/// Pulls, appends the message, prints its id and pushes it.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    let online = session.pull().await?;
    let chat = session.chat_id(&args.chat)?;
    let id = session
        .vault
        .add_message(chat, args.role.into(), args.text.clone())
        .await?;
    out!("{id}");
    session.push_if(online).await
}
