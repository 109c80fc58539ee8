//! The files an export holds for its messages, attached on import by
//! [`ChatVault::attach_export_files`](crate::ChatVault::attach_export_files):
//! those of a zip (ChatGPT: uploaded images and files, generated images),
//! found by the ids the messages name (`asset_pointer`,
//! `metadata.attachments[].id`), and those a chatvault export carries
//! under `files`, streamed from the export file.

use super::json::{EmbeddedFile, Event};
use crate::{Attachment, ChatId, Error, MessageId, Result};
use chatvault_core::BlobId;
use std::collections::HashMap;
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
    /// The files of a zip, in export order.
    pub files: Vec<ExportFile>,
    /// The files a chatvault export carries, in export order.
    pub(crate) embedded: Vec<EmbeddedFile>,
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

    /// The export the files are in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many files the export holds (those of a zip, and those a
    /// chatvault export carries).
    pub fn len(&self) -> usize {
        self.files.len() + self.embedded.len()
    }

    /// True if the export holds no files.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of every file (as the zip declares them, or as a
    /// chatvault export does): the total of what
    /// [`attach_export_files`](crate::ChatVault::attach_export_files)
    /// reports to its `progress`.
    pub fn total_bytes(&self) -> u64 {
        let embedded: u64 = self.embedded.iter().map(|f| f.size).sum();
        if self.files.is_empty() {
            return embedded;
        }
        let Ok(mut archive) = zip::ZipArchive::new(std::io::Cursor::new(&self.zip[..])) else {
            return embedded;
        };
        self.files.iter().fold(embedded, |total, file| {
            let size = archive.by_name(&file.entry).map_or(0, |e| e.size());
            total.saturating_add(size.min(MAX_EXPORT_FILE_BYTES))
        })
    }
}

impl crate::ChatVault {
    /// Attaches every file of `files` (from [`read_with_files`](super::read_with_files))
    /// to the messages of `chats` that carry it, one file at a time, sealed
    /// and staged like [`attach`](Self::attach); call it before importing
    /// `chats`. A file of a zip is read from it; a file a chatvault export
    /// carries is streamed from the export file, one chunk in memory at a
    /// time, and every reference to it in `chats` is rewritten to the id
    /// it has in this vault (ids are keyed per vault); a file no message
    /// of `chats` names is skipped. `progress` gets the bytes attached, as
    /// they are. Returns how many files were attached. Attaching is
    /// idempotent: a file imported again is the same attachment, and the
    /// message's body is the same, so re-importing adds nothing.
    ///
    /// Errors: [`Error::InvalidInput`] when the export cannot be read or
    /// changed since it was read (a file's bytes not base64 or not of its
    /// size), and those of [`attach`](Self::attach).
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
        if !files.embedded.is_empty() {
            attached += self
                .attach_embedded(chats, files.path.clone(), &mut progress)
                .await?;
        }
        Ok(attached)
    }

    /// Attaches the files the chatvault export at `path` carries: a
    /// blocking thread reads the export again and sends each file's bytes
    /// as they are decoded; each is attached to the first chat naming it
    /// (held for the others too), then the references are rewritten.
    async fn attach_embedded(
        &self,
        chats: &mut [crate::Chat],
        path: std::path::PathBuf,
        progress: &mut impl FnMut(u64),
    ) -> Result<usize> {
        // The chats naming each file, in order.
        let mut naming: HashMap<BlobId, Vec<ChatId>> = HashMap::new();
        for chat in chats.iter() {
            for message in chat.messages.values() {
                for attachment in message.attachments() {
                    let holders = naming.entry(attachment.id).or_default();
                    if !holders.contains(&chat.id) {
                        holders.push(chat.id);
                    }
                }
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(4);
        // Set when the reading thread stops because attaching stopped.
        let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped_here = stopped.clone();
        let parser = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path)
                .map_err(|e| Error::invalid(format!("cannot read {}: {e}", path.display())))?;
            let reader = std::io::BufReader::with_capacity(1 << 16, file);
            let stopped = |_| {
                stopped_here.store(true, std::sync::atomic::Ordering::SeqCst);
                "the import stopped".to_string()
            };
            super::json::scan(&path, reader, false, &mut |event| match event {
                Event::Start(file) => tx
                    .blocking_send(Piece::Start(file.clone()))
                    .map_err(stopped),
                Event::Bytes(bytes) => tx.blocking_send(Piece::Bytes(bytes)).map_err(stopped),
                Event::End => tx.blocking_send(Piece::End).map_err(stopped),
            })
            .map(|_| ())
        });
        let mut new_ids: HashMap<BlobId, Attachment> = HashMap::new();
        let attaching = async {
            let mut attached = 0;
            while let Some(piece) = rx.recv().await {
                let Piece::Start(file) = piece else {
                    return Err(Error::invalid("the export's files are out of order"));
                };
                let mut reader = PieceReader {
                    rx: &mut rx,
                    bytes: Vec::new(),
                    at: 0,
                    ended: false,
                    progress: &mut *progress,
                };
                let Some(holders) = naming.get(&file.id) else {
                    // No message names it: read past its bytes.
                    tokio::io::copy(&mut reader, &mut tokio::io::sink())
                        .await
                        .map_err(|e| Error::invalid(format!("cannot read the export: {e}")))?;
                    continue;
                };
                let attachment = self
                    .attach(
                        holders[0],
                        &mut reader,
                        file.name.clone(),
                        file.media_type.clone(),
                    )
                    .await?;
                if !reader.ended || attachment.size != file.size {
                    return Err(Error::corrupt(
                        format!("file {} ({}) of the export", file.id, file.name),
                        format!(
                            "{} bytes were read, its size says {}",
                            attachment.size, file.size
                        ),
                    ));
                }
                for chat in &holders[1..] {
                    self.hold_attachment(&attachment, *chat).await?;
                }
                new_ids.insert(file.id, attachment);
                attached += 1;
            }
            Ok(attached)
        };
        let attached = attaching.await;
        drop(rx);
        let parsed = parser
            .await
            .map_err(|e| Error::local("the import task failed", e))?;
        let stopped = stopped.load(std::sync::atomic::Ordering::SeqCst);
        let attached = match (attached, parsed) {
            (Ok(attached), Ok(())) => attached,
            // Attaching failed, and the reading thread stopped for it.
            (Err(e), Err(_)) if stopped => return Err(e),
            // The reading thread's error explains a stream that ended.
            (_, Err(e)) => return Err(e),
            (Err(e), Ok(())) => return Err(e),
        };
        for chat in chats.iter_mut() {
            for message in chat.messages.values_mut() {
                for attachment in &mut message.body.value.attachments {
                    if let Some(new) = new_ids.get(&attachment.id) {
                        attachment.id = new.id;
                    }
                }
            }
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

/// What the thread reading an export sends for its files.
enum Piece {
    Start(EmbeddedFile),
    Bytes(Vec<u8>),
    End,
}

/// The bytes of one file as the reading thread sends them, as a reader
/// (at its end once the file's last bytes were read).
struct PieceReader<'a, P> {
    rx: &'a mut tokio::sync::mpsc::Receiver<Piece>,
    bytes: Vec<u8>,
    at: usize,
    ended: bool,
    progress: &'a mut P,
}

impl<P: FnMut(u64)> tokio::io::AsyncRead for PieceReader<'_, P> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if this.at < this.bytes.len() {
                let n = buf.remaining().min(this.bytes.len() - this.at);
                buf.put_slice(&this.bytes[this.at..this.at + n]);
                this.at += n;
                (this.progress)(n as u64);
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Piece::Bytes(bytes))) => {
                    this.bytes = bytes;
                    this.at = 0;
                }
                Poll::Ready(Some(Piece::End)) => this.ended = true,
                Poll::Ready(Some(Piece::Start(_)) | None) => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the export ended inside a file",
                    )))
                }
            }
        }
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
