//! Attachments on [`ChatVault`]: attach a file to a chat (streamed, sealed,
//! chunked, deduplicated; works offline), send a message that carries it,
//! and read it back on any device (fetched lazily, verified, cached within
//! a budget). The format and the upload order live in
//! `chatvault_core::attachments` and `docs/design.md` §10.3.

use crate::ChatVault;
use chatvault_core::attachments::Attachments;
use chatvault_core::{Attachment, ChatId, Error, MessageId, Result, Role};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

impl ChatVault {
    fn attachment_store(&self) -> Attachments {
        Attachments::new(
            self.cipher().clone(),
            self.engine().storage().clone(),
            self.engine().blob_dir(),
        )
    }

    /// The data key ids attachment blobs are sealed under (see
    /// [`Attachments::key_ids_in_use`]).
    pub(crate) async fn attachment_key_ids(&self) -> Result<std::collections::BTreeSet<u32>> {
        self.attachment_store().key_ids_in_use().await
    }

    /// Attaches the bytes `file` yields to `chat`: they are read to the end
    /// one chunk (about 1 MB) at a time, sealed and staged on this device,
    /// and the next sync uploads them before any change of `chat` (so a
    /// device that sees the message can always fetch the bytes). Returns
    /// the reference to put on a message with
    /// [`add_message_with_attachments`](Self::add_message_with_attachments).
    /// Works offline. [`Error::Unsupported`] if the backend stores no blobs.
    pub async fn attach<R: AsyncRead + Unpin>(
        &self,
        chat: ChatId,
        file: R,
        name: impl Into<String>,
        media_type: impl Into<String>,
    ) -> Result<Attachment> {
        self.attachment_store()
            .attach(chat, file, name, media_type)
            .await
    }

    /// Attaches the file at `path` to `chat` (see [`attach`](Self::attach)),
    /// named after the file, with a media type guessed from its extension
    /// (`application/octet-stream` when unknown).
    pub async fn attach_file(&self, chat: ChatId, path: impl AsRef<Path>) -> Result<Attachment> {
        self.attach_file_with(chat, path, |_, _| {}).await
    }

    /// [`attach_file`](Self::attach_file), calling `progress` with the
    /// bytes read so far and the file's size as it is read (for a
    /// progress bar).
    pub async fn attach_file_with(
        &self,
        chat: ChatId,
        path: impl AsRef<Path>,
        progress: impl FnMut(u64, u64) + Send,
    ) -> Result<Attachment> {
        let path = path.as_ref();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::invalid(format!("{} names no file", path.display())))?
            .to_string();
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::local(format!("cannot open {}", path.display()), e))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| Error::local(format!("cannot read {}", path.display()), e))?
            .len();
        let media_type = media_type_of(&name);
        let file = Counting::new(file, size, progress);
        self.attach(chat, file, name, media_type).await
    }

    /// Appends a message carrying `attachments` (from [`attach`](Self::attach))
    /// to `chat` and returns its id. Each attachment is checked first: its
    /// manifest must be staged or cached here or on the server, and open
    /// under this vault ([`Error::NotFound`] otherwise, e.g. a reference
    /// from another vault), so no message names bytes no device can fetch.
    /// An attachment last uploaded more than half the garbage-collection
    /// grace period ago (a file attached again long after) is put again by
    /// the next sync before the message, so no collector can have deleted
    /// it (`docs/design.md` §10.6).
    pub async fn add_message_with_attachments(
        &self,
        chat: ChatId,
        role: Role,
        content: impl Into<String>,
        attachments: Vec<Attachment>,
    ) -> Result<MessageId> {
        // Only attachments of this vault; one staged for another chat
        // makes this chat's changes wait for its upload too.
        let store = self.attachment_store();
        for attachment in &attachments {
            store.hold_for(attachment, chat).await?;
        }
        let content = content.into();
        self.engine()
            .update(chat, move |c, clock| {
                Ok(c.add_message_with_attachments(role, content, attachments, clock.tick()))
            })
            .await
    }

    /// Deletes the attachment blobs no chat names any more (a deleted
    /// message's, a file attached and never sent) once no put renewed them
    /// for the grace period ([`ChatVaultBuilder::blob_grace`](crate::ChatVaultBuilder::blob_grace),
    /// 7 days by default): pulls everything, reads every chat (fetching
    /// bodies this device lacks) and the manifests they name, and deletes
    /// the rest. Safe to run on any device at any time: a device offline
    /// with a message naming a blob puts it again before that message is
    /// pushed (`docs/design.md` §10.6). Deletes nothing, and says why in
    /// [`BlobCollection::stopped`], when a record does not open on this
    /// device. `chatvault maintain` runs it.
    ///
    /// Errors: the server's (run it again later), and a manifest that does
    /// not open ([`Error::Corrupt`], [`Error::Tampered`]).
    ///
    /// [`BlobCollection::stopped`]: crate::BlobCollection::stopped
    pub async fn collect_attachments(&self) -> Result<crate::BlobCollection> {
        self.attachment_store().collect_garbage(self.engine()).await
    }

    /// Records that `chat`'s changes wait for the blobs of `attachment`
    /// too (one attached to another chat): see
    /// [`Attachments::hold_for`].
    pub(crate) async fn hold_attachment(
        &self,
        attachment: &Attachment,
        chat: ChatId,
    ) -> Result<()> {
        self.attachment_store().hold_for(attachment, chat).await
    }

    /// Every attachment of a live message of `chat` (any branch), with the
    /// message carrying it. No bytes are fetched.
    pub async fn attachments(&self, chat: ChatId) -> Result<Vec<(MessageId, Attachment)>> {
        let full = self.load_full_chat(chat).await?;
        Ok(full
            .attachments()
            .into_iter()
            .map(|(message, attachment)| (message, attachment.clone()))
            .collect())
    }

    /// Writes the bytes of `attachment` to `out`, one chunk at a time,
    /// fetching what this device does not hold and verifying every chunk;
    /// returns the bytes written. [`Error::NotFound`] when a blob is not on
    /// the server (yet), [`Error::Tampered`] or [`Error::Corrupt`] when one
    /// was altered, [`Error::Unavailable`] when the server is unreachable.
    pub async fn read_attachment<W: AsyncWrite + Unpin>(
        &self,
        attachment: &Attachment,
        out: W,
    ) -> Result<u64> {
        self.attachment_store().read(attachment, out).await
    }

    /// The bytes of `attachment` in memory (for small files; stream large
    /// ones with [`read_attachment`](Self::read_attachment) or
    /// [`save_attachment`](Self::save_attachment)).
    pub async fn attachment_bytes(&self, attachment: &Attachment) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_attachment(attachment, &mut out).await?;
        Ok(out)
    }

    /// Writes `attachment` to the file `path`: to a temporary file beside
    /// it first, renamed into place once every chunk verified, so `path`
    /// never holds a partial or unverified file.
    pub async fn save_attachment(
        &self,
        attachment: &Attachment,
        path: impl AsRef<Path>,
    ) -> Result<u64> {
        self.save_attachment_with(attachment, path, |_, _| {}).await
    }

    /// [`save_attachment`](Self::save_attachment), calling `progress` with
    /// the bytes written so far and the attachment's size as they are
    /// written (for a progress bar).
    pub async fn save_attachment_with(
        &self,
        attachment: &Attachment,
        path: impl AsRef<Path>,
        progress: impl FnMut(u64, u64) + Send,
    ) -> Result<u64> {
        let path = path.as_ref();
        let mut tmp_name = path.file_name().map(ToOwned::to_owned).unwrap_or_default();
        tmp_name.push(".chatvault-partial");
        let tmp = path.with_file_name(tmp_name);
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| Error::local(format!("cannot create {}", tmp.display()), e))?;
        let mut file = Counting::new(file, attachment.size, progress);
        let read = async {
            let written = self.read_attachment(attachment, &mut file).await?;
            file.inner
                .sync_all()
                .await
                .map_err(|e| Error::local(format!("cannot write {}", tmp.display()), e))?;
            Ok::<u64, Error>(written)
        };
        let written = match read.await {
            Ok(written) => written,
            Err(e) => {
                // Best effort: the partial file is only wasted space.
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        tokio::fs::rename(&tmp, path)
            .await
            .map_err(|e| Error::local(format!("cannot move the file to {}", path.display()), e))?;
        Ok(written)
    }
}

/// A reader or writer that reports the bytes through it so far, and a
/// total, to a progress callback.
struct Counting<'a, T> {
    inner: T,
    done: u64,
    total: u64,
    progress: Box<dyn FnMut(u64, u64) + Send + 'a>,
}

impl<'a, T> Counting<'a, T> {
    fn new(inner: T, total: u64, progress: impl FnMut(u64, u64) + Send + 'a) -> Self {
        Self {
            inner,
            done: 0,
            total,
            progress: Box::new(progress),
        }
    }

    fn count(&mut self, n: usize) {
        if n > 0 {
            self.done += n as u64;
            (self.progress)(self.done, self.total.max(self.done));
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.count(buf.filled().len() - before);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.count(n);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A media type for a file name's extension; `application/octet-stream`
/// for anything not listed.
pub fn media_type_of(name: &str) -> &'static str {
    let extension = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "heic" => "image/heic",
        "pdf" => "application/pdf",
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "zip" => "application/zip",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}
