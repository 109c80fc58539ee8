//! Bringing chats in: from another app's export, one source format per
//! module (a ChatGPT data export, [`chatgpt`]; a Claude export,
//! [`claude`]; chatvault's own export files, [`json`]), read by [`read`],
//! and merged into a vault without duplicates by
//! [`ChatVault::import_chats`](crate::ChatVault::import_chats).
//!
//! Every format is read and checked in full before the first chat is saved,
//! so a bad file leaves the vault untouched; the error names the
//! conversation and the field. Chat and message ids are derived from the
//! source's own ids (UUIDv5), so importing the same file again adds nothing.
//! Original times are kept: each message's `written` time, and creation
//! stamps derived from them so the original order holds.
//!
//! Nothing with words in it is dropped. What is not plain text is kept in
//! the message under a stable marker, a fenced block whose info string
//! names what it holds: ```` ```thinking ````, ```` ```tool_use NAME ````
//! (the tool's input), ```` ```tool_result NAME ```` (its output) and
//! ```` ```attachment FILE ```` (the text the model was given from a file).
//! What an importer leaves out on purpose is counted in [`Skipped`].

pub mod chatgpt;
pub mod claude;
mod files;
#[cfg(test)]
mod fuzz;
pub mod json;
mod merge;
mod parse;

pub use files::{ExportFile, ExportFiles, MAX_EXPORT_FILE_BYTES};
pub use merge::{ImportOptions, ImportReport, IMPORT_BATCH, IMPORT_MAX_AHEAD_MILLIS};
pub use parse::Skipped;

use crate::{Chat, Error, Result};
use std::io::Read;
use std::path::Path;

/// The most `conversations.json` bytes read out of an export zip: far above
/// any real export, and a bound on what a small, highly compressed zip can
/// make this process allocate.
pub const MAX_UNZIPPED_BYTES: u64 = 4 << 30;

/// Reads `file` (a zip as a ChatGPT or Claude export is downloaded, a
/// ChatGPT or Claude `conversations.json`, or a chatvault export file) and
/// returns its chats, checked in full, with what was left out on purpose;
/// give them to [`ChatVault::import_chats`](crate::ChatVault::import_chats).
///
/// Errors: [`Error::InvalidInput`] saying what is wrong with the file
/// (naming the conversation and field) or that it cannot be read.
pub fn read(file: &Path) -> Result<(Vec<Chat>, Skipped)> {
    read_path(file, false).map(|(chats, skipped, _)| (chats, skipped))
}

/// Reads `file`: a chatvault export (a JSON object) streamed from the
/// file, so the bytes of the files it carries are never in memory whole;
/// anything else read whole, by [`read_parts`].
fn read_path(file: &Path, with_files: bool) -> Result<(Vec<Chat>, Skipped, ExportFiles)> {
    use std::io::BufRead as _;
    let cannot_read =
        |e: std::io::Error| Error::invalid(format!("cannot read {}: {e}", file.display()));
    let mut reader =
        std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(file).map_err(cannot_read)?);
    let head = reader.fill_buf().map_err(cannot_read)?;
    let is_object = !head.starts_with(b"age-encryption.org/v1")
        && head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !is_object {
        drop(reader);
        let bytes = std::fs::read(file).map_err(cannot_read)?;
        return read_parts(file, bytes, MAX_UNZIPPED_BYTES, with_files);
    }
    let (chats, embedded) = json::read_from(file, reader)?;
    let files = ExportFiles {
        path: file.to_path_buf(),
        embedded: if with_files { embedded } else { Vec::new() },
        ..ExportFiles::default()
    };
    Ok((chats, Skipped::default(), files))
}

/// [`read`] on the bytes of `file` (which errors name); a zip's `conversations.json` may
/// unpack to at most `max_unzipped` bytes. Every failure is
/// [`Error::InvalidInput`]; an age-encrypted file is refused saying to
/// decrypt it first.
pub fn read_bytes(file: &Path, bytes: Vec<u8>, max_unzipped: u64) -> Result<(Vec<Chat>, Skipped)> {
    read_parts(file, bytes, max_unzipped, false).map(|(chats, skipped, _)| (chats, skipped))
}

/// [`read`], also finding the files a ChatGPT export zip holds for its
/// messages (uploaded images and files, generated images), and the files
/// a chatvault export carries (checked, but left in the file): those come
/// back in [`ExportFiles`] instead of as placeholders in the text. Attach them
/// with [`ChatVault::attach_export_files`](crate::ChatVault::attach_export_files),
/// then import the chats; or use
/// [`ChatVault::import_file`](crate::ChatVault::import_file), which does all
/// three. A file that is not in the zip (or a `conversations.json` read on
/// its own) keeps its placeholder.
pub fn read_with_files(file: &Path) -> Result<(Vec<Chat>, Skipped, ExportFiles)> {
    read_path(file, true)
}

fn read_parts(
    file: &Path,
    bytes: Vec<u8>,
    max_unzipped: u64,
    with_files: bool,
) -> Result<(Vec<Chat>, Skipped, ExportFiles)> {
    if bytes.starts_with(b"age-encryption.org/v1")
        || bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
    {
        return Err(age_encrypted(file));
    }
    let mut files = ExportFiles {
        path: file.to_path_buf(),
        ..ExportFiles::default()
    };
    let (json, index) = if bytes.starts_with(b"PK\x03\x04") {
        let json = conversations_from_zip(file, &bytes, max_unzipped)?;
        let index = if with_files {
            files::FileIndex::of_zip(&bytes)
        } else {
            files::FileIndex::default()
        };
        files.zip = bytes;
        (json, index)
    } else {
        (bytes, files::FileIndex::default())
    };
    let not_json = || {
        Error::invalid(format!(
            "{} is not JSON: pass a ChatGPT or Claude export (zip or conversations.json) \
             or a chatvault JSON export",
            file.display()
        ))
    };
    let first = json
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .ok_or_else(not_json)?;
    let conversations = match first {
        b'{' => return Ok((json::read(file, &json)?, Skipped::default(), files)),
        b'[' => Source::of_first(&json).map_err(|e| {
            Error::invalid(format!(
                "{}: not an export this version knows ({e})",
                file.display()
            ))
        })?,
        _ => return Err(not_json()),
    };
    match conversations {
        Some(Source::ChatGpt) => {
            let (chats, skipped, found) = chatgpt::read_with(file, &json, &index)?;
            files.files = found;
            Ok((chats, skipped, files))
        }
        Some(Source::Claude) => Ok((claude::read(file, &json)?, Skipped::default(), files)),
        None => Ok((Vec::new(), Skipped::default(), files)),
    }
}

/// The error for an age-encrypted file (a chatvault export, or any other):
/// the command to decrypt it, naming the file.
fn age_encrypted(file: &Path) -> Error {
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let stem = file.file_stem().map_or_else(
        || "backup".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    Error::invalid(format!(
        "{} is age-encrypted: decrypt it first (`age -d {name} > {stem}.json`) and import \
         the JSON file",
        file.display()
    ))
}

/// Which app wrote a list of conversations, told by its first one.
enum Source {
    ChatGpt,
    Claude,
}

impl Source {
    /// The source of the list `json` (`None` when empty), reading only the
    /// first conversation's keys.
    fn of_first(json: &[u8]) -> std::result::Result<Option<Source>, String> {
        #[derive(serde::Deserialize)]
        struct Probe {
            mapping: Option<serde::de::IgnoredAny>,
            chat_messages: Option<serde::de::IgnoredAny>,
        }
        struct First;
        impl<'de> serde::de::Visitor<'de> for First {
            type Value = Option<Probe>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of conversations")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Option<Probe>, A::Error> {
                let first = seq.next_element::<Probe>()?;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(first)
            }
        }
        use serde::Deserializer as _;
        let first = serde_json::Deserializer::from_slice(json)
            .deserialize_seq(First)
            .map_err(|e| e.to_string())?;
        match first {
            None => Ok(None),
            Some(Probe {
                mapping: Some(_), ..
            }) => Ok(Some(Source::ChatGpt)),
            Some(Probe {
                chat_messages: Some(_),
                ..
            }) => Ok(Some(Source::Claude)),
            Some(_) => Err(
                "conversation 0 has neither `mapping` (ChatGPT) nor `chat_messages` (Claude)"
                    .into(),
            ),
        }
    }
}

/// The `conversations.json` inside an export zip, if it unpacks to at most
/// `max` bytes.
fn conversations_from_zip(file: &Path, bytes: &[u8], max: u64) -> Result<Vec<u8>> {
    let not_an_export = |e: &dyn std::fmt::Display| {
        Error::invalid(format!("{}: not a readable zip: {e}", file.display()))
    };
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| not_an_export(&e))?;
    let name = archive
        .file_names()
        .filter_map(std::result::Result::ok)
        .filter(|name| name.rsplit('/').next() == Some("conversations.json"))
        .min_by_key(|name| name.len())
        .map(|name| name.to_string())
        .ok_or_else(|| {
            Error::invalid(format!(
                "{} holds no conversations.json: is it a ChatGPT or Claude data export?",
                file.display()
            ))
        })?;
    let entry = archive.by_name(&name).map_err(|e| not_an_export(&e))?;
    // The size the zip declares is not trusted: read up to the bound.
    let mut json = Vec::new();
    entry
        .take(max.saturating_add(1))
        .read_to_end(&mut json)
        .map_err(|e| not_an_export(&e))?;
    if json.len() as u64 > max {
        return Err(Error::invalid(format!(
            "{}: {name} unpacks to more than {max} bytes; unzip it and import the JSON file \
             in parts",
            file.display()
        )));
    }
    Ok(json)
}

#[cfg(all(test, target_os = "linux"))]
mod memory {
    use super::{read_bytes, MAX_UNZIPPED_BYTES};
    use std::path::Path;

    /// This process's peak resident memory (VmHWM), in bytes, after
    /// resetting it when `reset`.
    fn peak_rss(reset: bool) -> u64 {
        if reset {
            std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak");
        }
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM");
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("kB");
        kb * 1024
    }

    /// An export whose first conversation carries `values` small numbers
    /// in a field the importer ignores, written for each `kind`.
    fn padded(fixture: &[u8], values: usize) -> Vec<u8> {
        let mut conversations: serde_json::Value =
            serde_json::from_slice(fixture).expect("fixture");
        conversations[0]["padding"] = serde_json::Value::from("PADDING");
        let text = conversations.to_string();
        let numbers = format!("[{}0]", "0,".repeat(values));
        text.replacen("\"PADDING\"", &numbers, 1).into_bytes()
    }

    #[test]
    fn an_export_is_read_without_expanding_it_tenfold_in_memory() {
        for fixture in [
            &include_bytes!("../../tests/fixtures/chatgpt-conversations.json")[..],
            &include_bytes!("../../tests/fixtures/claude-conversations.json")[..],
        ] {
            let json = padded(fixture, 8_000_000);
            let size = json.len() as u64;
            let before = peak_rss(true);
            let (chats, _) = read_bytes(Path::new("padded.json"), json, MAX_UNZIPPED_BYTES)
                .expect("the padded export imports");
            let grown = peak_rss(false).saturating_sub(before);
            assert!(!chats.is_empty());
            assert!(
                grown < size,
                "reading a {size}-byte export took {grown} more bytes at its peak"
            );
        }
    }
}
