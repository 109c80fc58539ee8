//! `attach CHAT FILE...`: attach files to a chat and send one message
//! carrying them.

use super::add::CliRole;
use super::Session;
use crate::output::{self, out};
use chatvault::Result;
use std::path::PathBuf;

/// `attach`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
    chat: String,
    /// The files to attach (each read in chunks, sealed and uploaded by the sync)
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The message text sent with the files
    #[arg(long, default_value = "")]
    text: String,
    /// Who wrote it
    #[arg(long, value_enum, default_value_t = CliRole::User)]
    role: CliRole,
}

/// Pulls, attaches every file (streamed, sealed and staged on this
/// device), appends one message carrying them, prints its id and one line
/// per attachment, and pushes: the sync uploads the files before the
/// message.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    // A file that cannot be read fails before any network round trip.
    for file in &args.files {
        std::fs::File::open(file)
            .map_err(|e| output::file_error(format!("cannot read {}", file.display()), e))?;
    }
    let online = session.pull().await?;
    let chat = session.chat_id(&args.chat)?;
    let vault = &session.vault;
    let mut attachments = Vec::with_capacity(args.files.len());
    for file in &args.files {
        // Bytes read and sealed, per file (hidden unless stderr is a
        // terminal).
        let progress = output::bytes_progress(0)?;
        progress.set_message(
            crate::terminal::terminal(&file.file_name().unwrap_or_default().to_string_lossy())
                .into_owned(),
        );
        let attachment = vault
            .attach_file_with(chat, file, |done, total| {
                progress.set_length(total);
                progress.set_position(done);
            })
            .await;
        progress.finish_and_clear();
        attachments.push(attachment?);
    }
    let id = vault
        .add_message_with_attachments(
            chat,
            args.role.into(),
            args.text.clone(),
            attachments.clone(),
        )
        .await?;
    out!("{id}");
    for attachment in &attachments {
        out!("  {}", output::attachment_line(attachment));
    }
    session.push_if(online).await
}
