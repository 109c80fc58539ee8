//! `attachments CHAT`: every file the chat's messages carry, on any
//! branch, without fetching their bytes.

use super::Session;
use crate::output::{self, out};
use crate::terminal::terminal;
use chatvault::{Attachment, MessageId, Result};
use serde::Serialize;

/// `attachments`' arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
    chat: String,
    /// One JSON array of attachments instead of lines
    #[arg(long)]
    json: bool,
}

/// The hex digits of a blob id `attachments` prints (`save-attachment`
/// takes any unique prefix of 4 or more).
pub const SHORT_BLOB: usize = 12;

/// One element of `attachments --json`: the export's attachment reference
/// and the message that carries it.
#[derive(Serialize)]
struct JsonListed {
    message: MessageId,
    #[serde(flatten)]
    attachment: chatvault::export::JsonAttachment,
}

/// Pulls, then prints one line per attachment (message id prefix, size,
/// media type, blob id prefix, name) or a JSON array.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    session.pull().await?;
    let chat = session.chat_id(&args.chat)?;
    let full = session.vault.load_full_chat(chat).await?;
    let listed = full.attachments();
    // Message ids as short as tells them apart among every message of the
    // chat (so `rm-message` and `select` take them).
    let width = crate::ids::short_message_len(full.all_messages().iter().map(|m| &m.id));
    if args.json {
        let listed: Vec<JsonListed> = listed
            .iter()
            .map(|(message, attachment)| JsonListed {
                message: *message,
                attachment: (*attachment).into(),
            })
            .collect();
        return output::json(&listed);
    }
    for (message, attachment) in &listed {
        out!("{}", line(message, width, attachment));
    }
    Ok(())
}

/// `MESSAGE  SIZE  MEDIA-TYPE  BLOB  NAME`: short ids (the message's
/// `width` hex digits), the name last (it may hold spaces).
fn line(message: &MessageId, width: usize, attachment: &Attachment) -> String {
    let blob = attachment.id.to_hex();
    format!(
        "{}  {:>9}  {}  {}  {}",
        crate::ids::short(message, width),
        output::size(attachment.size),
        terminal(&attachment.media_type),
        &blob[..SHORT_BLOB],
        terminal(&attachment.name)
    )
}
