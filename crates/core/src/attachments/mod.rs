//! Attachments: files carried by messages, stored as sealed,
//! content-addressed blobs (`docs/design.md` §10.6).
//!
//! A file is cut into fixed chunks of [`CHUNK_BYTES`]; each chunk is a blob
//! named by the keyed hash of its plaintext ([`BlobId`]), so identical
//! chunks, within a file or across files, are stored once. A sealed
//! *manifest* blob lists the chunks; its id is the
//! [`Attachment::id`](crate::Attachment) a message carries. Uploads are
//! staged in this device's [`BlobDir`] and sent by the engine's push before
//! any record that waits for them, so a record that names a blob never
//! reaches the server before the blob. Reads fetch lazily, verify every
//! chunk, and keep what they fetched in the same directory within a byte
//! budget.
//!
//! Fixed rather than content-defined chunks: attachments are whole files
//! that are attached again unchanged, not edited in place, so fixed
//! boundaries already store a re-attached file once; they need no
//! dependency, every device computes the same ones, and a resumed upload
//! knows every chunk's extent without re-reading the file.

mod collect;
mod local;

pub use collect::BlobCollection;
pub use local::{
    collect_deadline, verify_after, BlobDir, BlobVerifier, Staged, Uploaded, DEFAULT_BLOB_GRACE,
};

use crate::chat::Attachment;
use crate::envelope::EnvelopeCipher;
use crate::ids::{BlobId, ChatId};
use crate::storage::DynStorage;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Plaintext bytes per chunk (the last chunk of a file may be shorter).
/// Chosen so that a sealed chunk, padded under any [`Padding`](crate::envelope::Padding),
/// stays at about 1 MiB, well inside every backend's record limit (the
/// smallest, Supabase's, is 2 MiB).
pub const CHUNK_BYTES: usize = 1_000_000;

/// Chunks one attach keeps being hashed, sealed and written while it
/// reads the next (memory: this many chunks and their sealed copies).
const SEALS_IN_FLIGHT: usize = 3;

/// Chunks one read keeps in flight (fetched and opened ahead of the one
/// being written): memory stays a few chunks whatever the file's size.
const DOWNLOADS_IN_FLIGHT: usize = 4;

/// Format version of encoded manifests.
pub const MANIFEST_FORMAT: u8 = 1;

/// What a manifest blob holds: the file's size and its chunks in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    size: u64,
    chunks: Vec<(BlobId, u32)>,
}

impl Manifest {
    fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![MANIFEST_FORMAT];
        serde_json::to_writer(&mut out, self)
            .map_err(|e| Error::local("cannot encode an attachment manifest", e))?;
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let what = "attachment manifest";
        match bytes.split_first() {
            None => Err(Error::corrupt(what, "empty encoding")),
            Some((&MANIFEST_FORMAT, json)) => serde_json::from_slice(json)
                .map_err(|e| Error::corrupt(what, format!("malformed JSON: {e}"))),
            Some((&0, _)) => Err(Error::corrupt(what, "format version 0 is not valid")),
            Some((&found, _)) => Err(Error::UnsupportedFormat {
                what: what.to_string(),
                found: u32::from(found),
                supported: u32::from(MANIFEST_FORMAT),
            }),
        }
    }
}

/// Attaching and reading files: the sealing cipher, the storage and this
/// device's blob directory together.
#[derive(Clone, Debug)]
pub struct Attachments {
    cipher: Arc<EnvelopeCipher>,
    storage: DynStorage,
    dir: Arc<BlobDir>,
}

impl Attachments {
    /// Attachments sealed by `cipher`, stored on `storage`, staged and
    /// cached in `dir`.
    /// Also gives `dir` its verifier ([`verify_with`](Self::verify_with)).
    pub fn new(cipher: Arc<EnvelopeCipher>, storage: DynStorage, dir: Arc<BlobDir>) -> Self {
        Self::verify_with(&cipher, &dir);
        Self {
            cipher,
            storage,
            dir,
        }
    }

    /// Gives `dir` the check a cached copy passes before it is put again:
    /// it opens under `cipher` and hashes to its id.
    pub fn verify_with(cipher: &Arc<EnvelopeCipher>, dir: &BlobDir) {
        let cipher = cipher.clone();
        dir.set_verifier(Arc::new(move |id: &BlobId, sealed: &[u8]| {
            cipher
                .open_blob(id, sealed)
                .is_ok_and(|plain| cipher.blob_id(&plain) == *id)
        }));
    }

    fn check_backend(&self) -> Result<()> {
        let caps = self.storage.capabilities();
        if !caps.blobs {
            return Err(Error::unsupported("attachments (blob storage)"));
        }
        let sealed = self.cipher.padding().padded_len(CHUNK_BYTES) + crate::envelope::BLOB_OVERHEAD;
        if sealed > caps.max_record_bytes {
            return Err(Error::TooLarge {
                size: sealed,
                limit: caps.max_record_bytes,
            });
        }
        Ok(())
    }

    /// Seals `plaintext` as the blob `id` and writes it for staging (see
    /// [`BlobDir::stage`]); `None` if the blob is here already.
    fn stage(&self, id: &BlobId, plaintext: &[u8]) -> Result<Option<Staged>> {
        if self.dir.contains(id) {
            return Ok(None);
        }
        let sealed = self.cipher.seal_blob(id, plaintext)?;
        self.dir.stage(id, &sealed)
    }

    /// Reads `file` to its end in chunks, seals and stages each chunk and
    /// then the manifest, and records that `chat`'s records wait for them:
    /// the engine's next push uploads them before any record of `chat`.
    /// Holds one chunk in memory at a time, whatever the file's size.
    /// Works offline. [`Error::Unsupported`] on a backend without blobs.
    pub async fn attach<R: AsyncRead + Unpin>(
        &self,
        chat: ChatId,
        mut file: R,
        name: impl Into<String>,
        media_type: impl Into<String>,
    ) -> Result<Attachment> {
        self.check_backend()?;
        let mut chunks = Vec::new();
        let mut sealing = std::collections::VecDeque::new();
        let mut staged = Vec::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let mut filled = 0;
            while filled < CHUNK_BYTES {
                let read = file
                    .read(&mut buf[filled..])
                    .await
                    .map_err(|e| Error::local("cannot read the file to attach", e))?;
                if read == 0 {
                    break;
                }
                filled += read;
            }
            if filled == 0 && size > 0 {
                break;
            }
            let chunk = buf[..filled].to_vec();
            let this = self.clone();
            // Hashed, sealed and written while the next chunk is read.
            sealing.push_back(tokio::task::spawn_blocking(move || {
                let id = this.cipher.blob_id(&chunk);
                // `len` is at most CHUNK_BYTES, which fits u32.
                let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
                this.stage(&id, &chunk).map(|staged| (id, len, staged))
            }));
            if sealing.len() >= SEALS_IN_FLIGHT {
                if let Some(next) = sealing.pop_front() {
                    let (id, len, written) = next
                        .await
                        .map_err(|e| Error::local("the attachment task failed", e))??;
                    staged.extend(written);
                    chunks.push((id, len));
                }
            }
            size += filled as u64;
            if filled < CHUNK_BYTES {
                break;
            }
        }
        for next in sealing {
            let (id, len, written) = next
                .await
                .map_err(|e| Error::local("the attachment task failed", e))??;
            staged.extend(written);
            chunks.push((id, len));
        }
        let manifest = Manifest { size, chunks }.encode()?;
        let manifest_id = self.cipher.blob_id(&manifest);
        staged.extend(self.stage(&manifest_id, &manifest)?);
        // Durable before the upload marker names them.
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || dir.commit_staged(staged))
            .await
            .map_err(|e| Error::local("the attachment task failed", e))??;
        let mut blobs: Vec<BlobId> = Manifest::decode(&manifest)?
            .chunks
            .iter()
            .map(|(id, _)| *id)
            .collect();
        blobs.push(manifest_id);
        self.dir.hold(&manifest_id, blobs, chat)?;
        Ok(Attachment {
            id: manifest_id,
            name: name.into(),
            media_type: media_type.into(),
            size,
        })
    }

    /// The plaintext of blob `id`: from this device's directory, else
    /// fetched (and cached). Verified twice: the seal binds it to the vault
    /// and `id`, and its keyed hash must be `id`.
    async fn blob(&self, id: BlobId) -> Result<Vec<u8>> {
        if let Some(sealed) = self.dir.get(&id)? {
            match self.open(id, sealed, false).await {
                Ok(plain) => return Ok(plain),
                // A torn cache entry (cached blobs are not synced): fetch
                // it again. A staged blob is this device's only copy: the
                // error stands.
                Err(e) if !self.dir.forget(&id)? => return Err(e),
                Err(e) => {
                    tracing::warn!(%id, error = %e, "cached blob does not open; fetching it again")
                }
            }
        }
        let sealed = self
            .storage
            .get_blob(id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!(
                    "blob {id} of an attachment (not on the server: the device that \
                 attached it has not uploaded it yet, or it was collected)"
                ),
            })?;
        self.open(id, sealed.to_vec(), true).await
    }

    /// Opens and verifies the sealed blob `id` on a blocking thread; keeps
    /// it in the cache once verified when `fetched`.
    async fn open(&self, id: BlobId, sealed: Vec<u8>, fetched: bool) -> Result<Vec<u8>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let plain = this.cipher.open_blob(&id, &sealed)?;
            if this.cipher.blob_id(&plain) != id {
                return Err(Error::Tampered {
                    what: format!("blob {id}: its content does not hash to its id"),
                });
            }
            if fetched {
                this.dir.cache(&id, &sealed)?;
            }
            Ok(plain)
        })
        .await
        .map_err(|e| Error::local("the attachment task failed", e))?
    }

    /// The manifest of `attachment`: staged or cached here, or fetched
    /// (it is small), opened under this vault and hashed to its id, and
    /// checked against the reference's size ([`Error::Corrupt`] if they
    /// disagree).
    async fn manifest(&self, attachment: &Attachment) -> Result<Manifest> {
        let manifest = Manifest::decode(&self.blob(attachment.id).await?)?;
        if manifest.size != attachment.size {
            return Err(Error::corrupt(
                format!("attachment {}", attachment.name),
                format!(
                    "the manifest says {} bytes, the reference {}",
                    manifest.size, attachment.size
                ),
            ));
        }
        Ok(manifest)
    }

    /// Checks that `attachment` belongs to this vault and is complete
    /// before a message in `chat` names it (see [`manifest`](Self::manifest)),
    /// and makes `chat`'s records wait until its blobs were put within half
    /// the grace period of garbage collection ([`BlobDir::hold`]: a file
    /// attached long ago is put again first). [`Error::NotFound`] for an
    /// attachment this vault does not hold (attach the file first),
    /// [`Error::Corrupt`] for a reference whose size disagrees with its
    /// manifest.
    pub async fn hold_for(&self, attachment: &Attachment, chat: ChatId) -> Result<()> {
        let manifest = self.manifest(attachment).await?;
        let mut blobs: Vec<BlobId> = manifest.chunks.iter().map(|(id, _)| *id).collect();
        blobs.push(attachment.id);
        self.dir.hold(&attachment.id, blobs, chat)
    }

    /// The ids of the chunks the manifest `id` lists, for garbage
    /// collection. `Ok(None)` when the manifest is on neither this device
    /// nor the server.
    pub async fn chunks_of(&self, id: BlobId) -> Result<Option<Vec<BlobId>>> {
        match self.blob(id).await {
            Ok(manifest) => Ok(Some(
                Manifest::decode(&manifest)?
                    .chunks
                    .iter()
                    .map(|(id, _)| *id)
                    .collect(),
            )),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the bytes of `attachment` to `out`, chunk by chunk (a few in
    /// flight, written in order), fetching what this device does not hold and
    /// verifying each chunk. Returns the bytes written.
    /// [`Error::NotFound`] if a blob is not on the server,
    /// [`Error::Tampered`] or [`Error::Corrupt`] if one was altered.
    pub async fn read<W: AsyncWrite + Unpin>(
        &self,
        attachment: &Attachment,
        mut out: W,
    ) -> Result<u64> {
        let manifest = self.manifest(attachment).await?;
        use futures::StreamExt;
        let mut written = 0u64;
        // A few chunks fetched and opened ahead, written in order.
        let mut chunks = futures::stream::iter(manifest.chunks.iter().copied())
            .map(|(id, len)| async move { self.blob(id).await.map(|chunk| (id, len, chunk)) })
            .buffered(DOWNLOADS_IN_FLIGHT);
        while let Some(next) = chunks.next().await {
            let (id, len, chunk) = next?;
            let (id, len) = (&id, &len);
            if chunk.len() != *len as usize {
                return Err(Error::corrupt(
                    format!("attachment {}", attachment.name),
                    format!("chunk {id} holds {} bytes, not {len}", chunk.len()),
                ));
            }
            out.write_all(&chunk)
                .await
                .map_err(|e| Error::local("cannot write the attachment out", e))?;
            written += chunk.len() as u64;
        }
        out.flush()
            .await
            .map_err(|e| Error::local("cannot write the attachment out", e))?;
        if written != manifest.size {
            return Err(Error::corrupt(
                format!("attachment {}", attachment.name),
                format!(
                    "its chunks hold {written} bytes, the manifest says {}",
                    manifest.size
                ),
            ));
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || dir.evict())
            .await
            .map_err(|e| Error::local("the attachment task failed", e))??;
        Ok(written)
    }

    /// The data key ids the stored blobs (every blob on the server, and
    /// those staged here for upload) are sealed under, read from their
    /// headers: a key in this set must not be retired, or the attachment
    /// chunks sealed under it would no longer open anywhere. Fetches every
    /// blob this device does not hold (once; retiring keys is rare).
    /// [`Error::Corrupt`] when a blob's header does not say its key.
    pub async fn key_ids_in_use(&self) -> Result<BTreeSet<u32>> {
        let mut ids = BTreeSet::new();
        if !self.storage.capabilities().blobs {
            return Ok(ids);
        }
        let mut blobs: BTreeSet<BlobId> = self.dir.staged()?.into_iter().collect();
        let mut after = None;
        loop {
            let page = self.storage.list_blobs(after, 1000).await?;
            after = page.ids.last().copied();
            blobs.extend(page.ids);
            if !page.has_more || after.is_none() {
                break;
            }
        }
        for id in blobs {
            let sealed = match self.dir.get(&id)? {
                Some(sealed) => sealed,
                None => match self.storage.get_blob(id).await? {
                    Some(sealed) => sealed.to_vec(),
                    None => continue,
                },
            };
            let key = EnvelopeCipher::sealed_key_id(&sealed).map_err(|e| {
                Error::corrupt(
                    format!("stored blob {id}"),
                    format!(
                        "its header does not say which data key sealed it ({e}), so no key \
                         can be judged unused"
                    ),
                )
            })?;
            ids.insert(key);
        }
        Ok(ids)
    }

    /// This device's blob directory.
    pub fn dir(&self) -> &BlobDir {
        &self.dir
    }
}
