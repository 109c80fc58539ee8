//! `save-attachment CHAT NAME`: write an attachment's bytes to a file.

use super::Session;
use crate::output;
use chatvault::{Error, Result};
use std::path::{Path, PathBuf};

/// `save-attachment`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
    chat: String,
    /// The attachment: its file name, or a unique prefix of its blob id (4+
    /// hex digits), as `chatvault attachments` lists them
    attachment: String,
    /// Write here (a file, or a folder to write the file into) [default:
    /// the attachment's name, in the current folder]
    #[arg(short, long, visible_alias = "out", value_name = "PATH")]
    output: Option<PathBuf>,
    /// Overwrite the file if it exists
    #[arg(long, short)]
    force: bool,
}

/// Pulls, finds the attachment, and writes its bytes (fetched as needed
/// and verified, chunk by chunk) to the file: to a temporary file beside
/// it first, so the file is never partial or unverified.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    session.pull().await?;
    let chat = session.chat_id(&args.chat)?;
    let listed = session.vault.attachments(chat).await?;
    let attachment = crate::ids::resolve_attachment(&args.attachment, &listed)?;
    let path = match &args.output {
        Some(path) if path.is_dir() => path.join(file_name(&attachment.name)?),
        Some(path) => path.clone(),
        None => PathBuf::from(file_name(&attachment.name)?),
    };
    if !args.force && path.symlink_metadata().is_ok() {
        return Err(Error::invalid(format!(
            "{} exists: pass --force to overwrite it, or choose another file with -o",
            path.display()
        )));
    }
    // Bytes fetched, verified and written (hidden unless stderr is a
    // terminal).
    let progress = output::bytes_progress(attachment.size)?;
    progress.set_message(crate::terminal::terminal(&attachment.name).into_owned());
    let written = session
        .vault
        .save_attachment_with(attachment, &path, |done, total| {
            progress.set_length(total);
            progress.set_position(done);
        })
        .await;
    progress.finish_and_clear();
    let written = written?;
    eprintln!(
        "saved {} ({}) to {}",
        crate::terminal::terminal(&attachment.name),
        output::size(written),
        path.display()
    );
    Ok(())
}

/// The file name to save an attachment named `name` under: its last path
/// component (a name from another device never picks the folder).
///
/// Errors: [`Error::InvalidInput`] when `name` has no usable file name.
fn file_name(name: &str) -> Result<&Path> {
    Path::new(name).file_name().map(Path::new).ok_or_else(|| {
        Error::invalid(format!(
            "the attachment's name {:?} is not a file name: pass -o PATH",
            crate::terminal::terminal(name)
        ))
    })
}
