//! `import`: reads an export file with [`chatvault::import::read_with_files`],
//! attaches the images and files a ChatGPT export zip holds or a chatvault
//! export carries, and merges its chats into the vault, with progress bars
//! and a summary line.

use super::Session;
use crate::output::out;
use chatvault::{ChatVault, Error, ImportOptions, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// `import`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The export file
    file: PathBuf,
    /// Also apply the deletions a chatvault export carries (deleted
    /// chats and messages); without it an import never deletes anything
    #[arg(long)]
    apply_deletions: bool,
}

/// Imports the file, then pushes what it added.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    run(&session.vault, &args.file, args.apply_deletions).await?;
    session.push().await
}

/// Imports every chat of `file` through the batched save path; deletions
/// in it (a chatvault export's deleted chats and messages) only with
/// `apply_deletions`.
async fn run(vault: &ChatVault, file: &Path, apply_deletions: bool) -> Result<()> {
    let (mut chats, skipped, files) = chatvault::import::read_with_files(file)?;
    let attached = if files.is_empty() {
        0
    } else {
        // The images and files the export holds (a ChatGPT zip's, or
        // those a chatvault export carries), attached before the chats
        // are saved (sealed and staged; the push uploads them first).
        let progress = crate::output::bytes_progress(files.total_bytes())?;
        progress.set_message(format!("{} files", files.len()));
        let attached = vault
            .attach_export_files(&mut chats, &files, |bytes| progress.inc(bytes))
            .await;
        progress.finish_and_clear();
        attached?
    };
    // Every branch's messages, not only the ones each chat shows.
    let messages: usize = chats.iter().map(|c| c.all_messages().len()).sum();
    let progress = ProgressBar::new(chats.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} chats, {per_sec}, {eta} left")
            .map_err(|e| Error::invalid(format!("progress template: {e}")))?,
    );
    let options = ImportOptions { apply_deletions };
    let report = vault
        .import_chats_with(chats, options, |done| progress.inc(done as u64))
        .await?;
    progress.finish_and_clear();
    if report.deletions_ignored > 0 {
        eprintln!(
            "note: {} deleted chat(s) or message(s) in the file were not applied \
             (--apply-deletions applies them)",
            report.deletions_ignored
        );
    }
    let left_out = skipped
        .describe()
        .map_or_else(String::new, |text| format!("; {text}"));
    let files = if attached > 0 {
        format!(", {attached} files attached")
    } else {
        String::new()
    };
    out!(
        "imported {} new chats ({messages} messages in the file{files}), updated {}, unchanged {}{left_out}",
        report.added,
        report.updated,
        report.unchanged
    );
    Ok(())
}
