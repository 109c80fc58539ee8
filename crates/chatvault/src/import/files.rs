//! The files an export zip holds for its messages (ChatGPT: uploaded
//! images and files, generated images), found by the ids the messages name
//! (`asset_pointer`, `metadata.attachments[].id`) and attached on import by
//! [`ChatVault::attach_export_files`](crate::ChatVault::attach_export_files).

use crate::{ChatId, Error, MessageId, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most bytes one file of an export zip may unpack to on import (far
/// above any upload a chat app takes; a bound on a hostile zip).
pub const MAX_EXPORT_FILE_BYTES: u64 = 1 << 30;

/// The file names in an export zip, to find a message's file by its id.
#[derive(Debug, Default)]
pub(crate) struct FileIndex {
    /// (base name, full entry name), sorted by base name.
    names: Vec<(String, String)>,
}

impl FileIndex {
    /// The index of the zip `bytes` (empty if it is not a readable zip).
    pub(crate) fn of_zip(bytes: &[u8]) -> Self {
        let Ok(archive) = zip::ZipArchive::new(std::io::Cursor::new(bytes)) else {
            return Self::default();
        };
        let mut names: Vec<(String, String)> = archive
            .file_names()
            .filter_map(std::result::Result::ok)
            .filter(|name| !name.ends_with('/'))
            .map(|name| {
                let name: &str = &name;
                let base = name.rsplit('/').next().unwrap_or(name).to_string();
                (base, name.to_string())
            })
            .collect();
        names.sort();
        Self { names }
    }

    /// The entry holding the file with id `pointer` (`file-service://file-abc`,
    /// `sediment://file_00ab…` or a bare `file-abc`): one whose base name is
    /// the id, or the id followed by `-` or `.` (ChatGPT names them
    /// `<id>-<original name>`). Returns (entry, the original name).
    pub(crate) fn find(&self, pointer: &str) -> Option<(&str, String)> {
        let id = pointer.rsplit("://").next().unwrap_or(pointer);
        if id.is_empty() {
            return None;
        }
        let start = self.names.partition_point(|(base, _)| base.as_str() < id);
        self.names[start..]
            .iter()
            .take_while(|(base, _)| base.starts_with(id))
            .find_map(|(base, entry)| {
                let rest = &base[id.len()..];
                let original = match rest.chars().next() {
                    None => base.clone(),
                    Some('-') => rest[1..].to_string(),
                    Some('.') => base.clone(),
                    Some(_) => return None,
                };
                let original = if original.is_empty() {
                    base.clone()
                } else {
                    original
                };
                Some((entry.as_str(), original))
            })
    }
}

/// A file of an export for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportFile {
    /// The chat of the message.
    pub chat: ChatId,
    /// The message that carried the file.
    pub message: MessageId,
    /// Its entry in the zip.
    pub entry: String,
    /// Its name as the user knew it.
    pub name: String,
    /// Its media type (from the export, else guessed from the name).
    pub media_type: String,
}

/// The files an export zip holds for its messages, found while reading it
/// ([`read_with_files`](super::read_with_files)); attach them with
/// [`ChatVault::attach_export_files`](crate::ChatVault::attach_export_files)
/// before importing the chats.
#[derive(Debug, Default)]
pub struct ExportFiles {
    pub(crate) path: PathBuf,
    pub(crate) zip: Vec<u8>,
    /// The files, in export order.
    pub files: Vec<ExportFile>,
}

impl ExportFiles {
    /// The bytes of `file`, read from the zip (at most
    /// [`MAX_EXPORT_FILE_BYTES`]).
    pub(crate) fn bytes(&self, file: &ExportFile) -> Result<Vec<u8>> {
        let unreadable = |e: &dyn std::fmt::Display| {
            Error::invalid(format!(
                "{}: cannot read {} from the zip: {e}",
                self.path.display(),
                file.entry
            ))
        };
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&self.zip[..]))
            .map_err(|e| unreadable(&e))?;
        let entry = archive.by_name(&file.entry).map_err(|e| unreadable(&e))?;
        let mut bytes = Vec::new();
        entry
            .take(MAX_EXPORT_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| unreadable(&e))?;
        if bytes.len() as u64 > MAX_EXPORT_FILE_BYTES {
            return Err(Error::invalid(format!(
                "{}: {} unpacks to more than {MAX_EXPORT_FILE_BYTES} bytes; attach it by hand",
                self.path.display(),
                file.entry
            )));
        }
        Ok(bytes)
    }

    /// The zip the files are in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl crate::ChatVault {
    /// Attaches every file of `files` (from [`read_with_files`](super::read_with_files))
    /// to the message of `chats` that carried it, one file at a time (read
    /// from the zip, sealed and staged like [`attach`](Self::attach)); call
    /// it before importing `chats`. `progress` gets the bytes of each file
    /// as it is attached. Returns how many files were attached. Attaching
    /// is idempotent: a file imported again is the same attachment, and the
    /// message's body is the same, so re-importing adds nothing.
    pub async fn attach_export_files(
        &self,
        chats: &mut [crate::Chat],
        files: &ExportFiles,
        mut progress: impl FnMut(u64),
    ) -> Result<usize> {
        let mut attached = 0;
        for file in &files.files {
            let Some(message) = chats
                .iter_mut()
                .find(|c| c.id == file.chat)
                .and_then(|c| c.messages.get_mut(&file.message))
            else {
                continue;
            };
            let bytes = files.bytes(file)?;
            let attachment = self
                .attach(
                    file.chat,
                    &bytes[..],
                    file.name.clone(),
                    file.media_type.clone(),
                )
                .await?;
            progress(bytes.len() as u64);
            message.body.value.attachments.push(attachment);
            attached += 1;
        }
        Ok(attached)
    }

    /// Imports the export at `path` with its files: [`read_with_files`](super::read_with_files),
    /// [`attach_export_files`](Self::attach_export_files), then
    /// [`import_chats_with`](Self::import_chats_with). Returns the import's
    /// report, what was left out, and how many files were attached.
    pub async fn import_file(
        &self,
        path: &Path,
        options: super::ImportOptions,
    ) -> Result<(super::ImportReport, super::Skipped, usize)> {
        let (mut chats, skipped, files) = super::read_with_files(path)?;
        let attached = self.attach_export_files(&mut chats, &files, |_| {}).await?;
        let report = self.import_chats_with(chats, options, |_| {}).await?;
        Ok((report, skipped, attached))
    }
}

#[cfg(test)]
mod tests {
    use super::FileIndex;

    #[test]
    fn a_pointer_finds_its_file_and_the_original_name() {
        let index = FileIndex {
            names: {
                let mut names: Vec<(String, String)> = [
                    "file-abc-photo.png",
                    "file-abcd-other.png",
                    "dalle-generations/file-xyz.webp",
                    "file_00ff-notes.pdf",
                ]
                .iter()
                .map(|n| (n.rsplit('/').next().unwrap_or(n).to_string(), n.to_string()))
                .collect();
                names.sort();
                names
            },
        };
        assert_eq!(
            index.find("file-service://file-abc"),
            Some(("file-abc-photo.png", "photo.png".to_string()))
        );
        assert_eq!(
            index.find("file-service://file-xyz"),
            Some((
                "dalle-generations/file-xyz.webp",
                "file-xyz.webp".to_string()
            ))
        );
        assert_eq!(
            index.find("sediment://file_00ff"),
            Some(("file_00ff-notes.pdf", "notes.pdf".to_string()))
        );
        assert_eq!(index.find("file-service://file-ab"), None);
        assert_eq!(index.find("file-service://"), None);
    }
}
