//! chatvault's export schema, owned here so that every application (and
//! the `chatvault` CLI) writes and reads the same documents; documented in
//! `docs/design.md` §4.1. An export is one [`Export`] document:
//! `{"format", "vault"?, "chats", "skipped"?}` (and `files`, below),
//! whose `format` says how its chats are written:
//!
//! - [`JSON_FORMAT`] (`chatvault-json/1`), plain JSON for people and other
//!   programs: what `chatvault export --format json`, `show --json` and
//!   `ls --json` print ([`ChatVault::export_json`]), and what
//!   [`import::json`](crate::import::json) reads back (exactly: exporting,
//!   importing into a fresh vault and exporting again gives the same
//!   file, but for the ids of attachments, which are the new vault's);
//! - [`EXPORT_FORMAT`] (`chatvault-export/1`), whole chat states (every
//!   stamp and deletion, so an import merges them as they are), with the
//!   vault's id and the chats left out: the plaintext of
//!   [`ChatVault::export_age`], a standard age file.
//!
//! Plain JSON:
//!
//! ```json
//! {"format": "chatvault-json/1",
//!  "chats": [{"id": "<uuid>", "title": "…", "starred": false,
//!             "created": "2024-05-01T09:30:00.000Z",
//!             "updated": "2024-05-01T09:31:12.345Z",
//!             "messages": [{"id": "<uuid>", "role": "user",
//!                           "content": "…",
//!                           "created": "2024-05-01T09:30:00.000Z"}]}]}
//! ```
//!
//! Times are UTC, RFC 3339 with milliseconds. `role` is one of user,
//! assistant, system, tool. Only live chats and messages are written, in
//! display order. `updated` is the latest change of title or star.
//!
//! A chat with branches (regenerated answers, edited prompts) carries its
//! tree: `messages` is still the current path, `branches` holds the live
//! messages off it (in tree order), every message names the message it
//! follows (`parent`) and the one it replaces (`alternative_of`) where it
//! has them, and `selected` names the last message of the current path. A
//! document with such a chat is [`JSON_FORMAT_BRANCHES`]
//! (`chatvault-json/2`), and an age export with one
//! [`EXPORT_FORMAT_BRANCHES`] (`chatvault-export/2`), so that releases
//! from before branches refuse them by name instead of dropping the tree.
//!
//! A message that carries files names them under `attachments`:
//! `[{"id": "<64 hex>", "name": "…", "media_type": "…", "size": …}]`, the
//! references a device of the vault fetches and verifies the bytes by. A
//! document with such a message is [`JSON_FORMAT_ATTACHMENTS`]
//! (`chatvault-json/3`), and an age export with one
//! [`EXPORT_FORMAT_ATTACHMENTS`] (`chatvault-export/3`), whether or not a
//! chat in it has branches, so that releases from before attachments
//! refuse them by name instead of dropping the references.
//!
//! By default an export also carries the files' bytes, so that it is a
//! complete backup: [`JSON_FORMAT_FILES`] (`chatvault-json/4`) and
//! [`EXPORT_FORMAT_FILES`] (`chatvault-export/4`) add, after `chats`, every
//! file a message names, once per attachment id:
//!
//! ```json
//! "files": [{"id": "<64 hex>", "name": "photo.jpg", "media_type": "image/jpeg",
//!            "size": 2400000, "data": ["<base64>", "<base64>", "<base64>"]}]
//! ```
//!
//! `id` is the id the messages' references use (the exporting vault's),
//! and `data` the file in standard base64 (with padding), one string per
//! [`FILE_DATA_CHUNK`] (1 MiB) of it, whose decodings concatenated are the
//! file (`[]` when empty); `data` comes after the other fields. Both sides
//! stream: [`ChatVault::write_export_json`] and
//! [`ChatVault::write_export_age`] write to a [`std::io::Write`] one chunk
//! at a time (read with [`ChatVault::read_attachment`], encoded, and for
//! age encrypted as it goes), and an import parses one `data` string at a
//! time, so a 1 GiB attachment is never in memory whole, nor its base64;
//! a list of strings rather than one is what lets an ordinary streaming
//! JSON parser do that. [`import::json`](crate::import::json) checks every
//! file (base64, exactly `size` bytes) while it reads the chats, and
//! [`ChatVault::attach_export_files`] attaches them under the importing
//! vault's keys and rewrites the references to its ids (ids are keyed per
//! vault). Exporting a `/4` file's import again gives the same bytes but
//! for those ids. [`ExportOptions`] leaves the bytes out (`/3`), for the
//! text alone.

use crate::task::blocking;
use crate::{
    Attachment, Chat, ChatId, ChatSummary, ChatVault, Error, Message, MessageId, Result, Role,
    SkippedRecord,
};
use chatvault_core::engine::AllChats;
use chatvault_core::envelope::ExportTarget;
use chatvault_core::BlobId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The format name of chatvault's plain JSON.
pub const JSON_FORMAT: &str = "chatvault-json/1";

/// The format name of chatvault's plain JSON when a chat in it has
/// branches.
pub const JSON_FORMAT_BRANCHES: &str = "chatvault-json/2";

/// The format name of chatvault's plain JSON when a message in it carries
/// attachments (references only; a chat in it may also have branches).
pub const JSON_FORMAT_ATTACHMENTS: &str = "chatvault-json/3";

/// The format name of [`ChatVault::export_age`]'s plaintext: whole chat
/// states.
pub const EXPORT_FORMAT: &str = "chatvault-export/1";

/// The format name of [`ChatVault::export_age`]'s plaintext when a chat in
/// it has branches.
pub const EXPORT_FORMAT_BRANCHES: &str = "chatvault-export/2";

/// The format name of [`ChatVault::export_age`]'s plaintext when a message
/// in it carries attachments (the references, in the body encoding of
/// chat format 4; not the bytes).
pub const EXPORT_FORMAT_ATTACHMENTS: &str = "chatvault-export/3";

/// The format name of chatvault's plain JSON when it carries the bytes of
/// the attachments its messages name, under `files`.
pub const JSON_FORMAT_FILES: &str = "chatvault-json/4";

/// The format name of [`ChatVault::export_age`]'s plaintext when it
/// carries the bytes of the attachments its messages name, under `files`.
pub const EXPORT_FORMAT_FILES: &str = "chatvault-export/4";

/// The most bytes of a file one element of its `data` list holds in an
/// export this version writes (1 MiB; readers take any size).
pub const FILE_DATA_CHUNK: usize = 1 << 20;

/// An export document, of either format: `chats` are [`JsonChat`]s under
/// [`JSON_FORMAT`], whole [`Chat`] states under [`EXPORT_FORMAT`]. The
/// `files` of the `/4` formats are not a field: they are written and read
/// as streams (see the [module docs](self)).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export<C = JsonChat> {
    /// [`JSON_FORMAT`] or [`EXPORT_FORMAT`].
    pub format: String,
    /// The vault's id ([`EXPORT_FORMAT`] only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<String>,
    /// The chats.
    pub chats: Vec<C>,
    /// Chats left out because their record does not open
    /// ([`EXPORT_FORMAT`] only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Vec<SkippedChat>>,
}

/// A chat an export left out because its record does not open.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkippedChat {
    /// The chat's id.
    pub chat: String,
    /// The version whose record does not open.
    pub version: u64,
    /// Why it does not open.
    pub reason: String,
}

/// One chat.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonChat {
    /// The chat's id.
    pub id: ChatId,
    /// Its title.
    pub title: String,
    /// Starred or not.
    pub starred: bool,
    /// When it was created ([`time`]).
    pub created: String,
    /// The latest change of its title or star ([`time`]).
    pub updated: String,
    /// Its current path: the live messages shown, in display order.
    pub messages: Vec<JsonMessage>,
    /// The live messages off the current path (other branches), in tree
    /// order: a message after the one it follows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<JsonMessage>,
    /// The last message of the current path, for a chat with branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<MessageId>,
}

/// One message of a [`JsonChat`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonMessage {
    /// The message's id.
    pub id: MessageId,
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// When it was written ([`time`]).
    pub created: String,
    /// The message it follows, in a chat with branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<MessageId>,
    /// The message it is an alternative of (a regenerated answer, an
    /// edited prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternative_of: Option<MessageId>,
    /// The files it carries: references to their sealed bytes in the
    /// vault (the bytes, if the export carries them, are under `files`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<JsonAttachment>,
}

/// A file a [`JsonMessage`] carries: the reference an
/// [`Attachment`] holds. Its bytes are in the vault, where a device of the
/// vault reads them by `id` (`chatvault save-attachment`), and in an
/// export that carries `files`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonAttachment {
    /// The manifest blob's id, 64 hex digits.
    pub id: BlobId,
    /// The file's name.
    pub name: String,
    /// Its media type, e.g. `image/png`.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

impl From<&Attachment> for JsonAttachment {
    fn from(attachment: &Attachment) -> Self {
        Self {
            id: attachment.id,
            name: attachment.name.clone(),
            media_type: attachment.media_type.clone(),
            size: attachment.size,
        }
    }
}

impl From<JsonAttachment> for Attachment {
    fn from(attachment: JsonAttachment) -> Self {
        Self {
            id: attachment.id,
            name: attachment.name,
            media_type: attachment.media_type,
            size: attachment.size,
        }
    }
}

/// A sidebar entry in plain JSON (one element of `chatvault ls --json`).
#[derive(Serialize)]
pub struct JsonSummary {
    id: ChatId,
    title: String,
    starred: bool,
    messages: u32,
    created: String,
    last_activity: String,
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn time(millis: u64) -> String {
    i64::try_from(millis)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// `chat` in plain JSON: its current path in display order, and its other
/// branches if it has any.
pub fn chat(chat: &Chat) -> JsonChat {
    let message = |m: &Message| JsonMessage {
        id: m.id,
        role: m.role().clone(),
        content: m.content().to_string(),
        created: time(m.written_millis()),
        parent: m.parent,
        alternative_of: m.alternative_of,
        attachments: m.attachments().iter().map(JsonAttachment::from).collect(),
    };
    let path = chat.messages();
    let (branches, selected) = if chat.is_branched() {
        let branches = chat
            .tree()
            .into_iter()
            .filter(|e| !e.on_path)
            .map(|e| message(e.message))
            .collect();
        (branches, path.last().map(|m| m.id))
    } else {
        (Vec::new(), None)
    };
    JsonChat {
        id: chat.id,
        title: chat.title().to_string(),
        starred: chat.is_starred(),
        created: time(chat.created.millis),
        updated: time(chat.title.at.max(chat.starred.at).millis),
        messages: path.into_iter().map(message).collect(),
        branches,
        selected,
    }
}

/// A sidebar entry in plain JSON.
pub fn summary(summary: &ChatSummary) -> JsonSummary {
    JsonSummary {
        id: summary.id,
        title: summary.title.clone(),
        starred: summary.starred,
        messages: summary.message_count,
        created: time(summary.created.millis),
        last_activity: time(summary.last_activity.millis),
    }
}

/// `chats` as one plain JSON export document ([`JSON_FORMAT`];
/// [`JSON_FORMAT_BRANCHES`] if a chat has branches;
/// [`JSON_FORMAT_ATTACHMENTS`] if a message carries attachments).
pub fn export<'a>(chats: impl IntoIterator<Item = &'a Chat>) -> Export {
    let chats: Vec<JsonChat> = chats.into_iter().map(chat).collect();
    let branched = chats.iter().any(|c| c.selected.is_some());
    let attached = chats
        .iter()
        .flat_map(|c| c.messages.iter().chain(&c.branches))
        .any(|m| !m.attachments.is_empty());
    Export {
        format: if attached {
            JSON_FORMAT_ATTACHMENTS
        } else if branched {
            JSON_FORMAT_BRANCHES
        } else {
            JSON_FORMAT
        }
        .into(),
        vault: None,
        chats,
        skipped: None,
    }
}

/// A plain JSON export ([`ChatVault::export_json`]): the file's bytes and
/// what was left out of it.
#[derive(Debug)]
pub struct JsonExportFile {
    /// The document ([`Export`]), pretty-printed, ending with a line break.
    pub bytes: Vec<u8>,
    /// How many chats it holds.
    pub chats: usize,
    /// Chats left out because their record does not open, with why.
    pub skipped: Vec<SkippedRecord>,
}

/// What an export holds besides the chats.
#[derive(Clone, Copy, Debug)]
pub struct ExportOptions {
    /// Whether the bytes of the attachments go in (under `files`, format
    /// [`JSON_FORMAT_FILES`] / [`EXPORT_FORMAT_FILES`]): the default, so an
    /// export is a complete backup. Without them the messages keep only
    /// their references, which open on the devices of this vault alone.
    pub attachments: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self { attachments: true }
    }
}

/// What a streamed export ([`ChatVault::write_export_json`],
/// [`ChatVault::write_export_age`]) wrote, with the writer given back.
#[derive(Debug)]
pub struct Exported<W> {
    /// The writer, flushed (for an age export, after the age file's end).
    pub out: W,
    /// How many chats the export holds.
    pub chats: usize,
    /// How many files' bytes it holds.
    pub files: usize,
    /// Their bytes (before encoding).
    pub file_bytes: u64,
    /// Chats left out because their record does not open, with why.
    pub skipped: Vec<SkippedRecord>,
}

/// A piece of an export on its way to the writer's thread.
enum Piece {
    /// Text of the document.
    Text(Vec<u8>),
    /// The document is complete: finish the file.
    End,
}

/// The writer an export goes to: plain, or through age.
enum Sink<W: std::io::Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: std::io::Write> Sink<W> {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        match self {
            Sink::Plain(out) => out.write_all(bytes),
            Sink::Age(out) => out.write_all(bytes),
        }
    }

    fn finish(self) -> std::io::Result<W> {
        let mut out = match self {
            Sink::Plain(out) => out,
            Sink::Age(out) => out.finish()?,
        };
        out.flush()?;
        Ok(out)
    }
}

/// Every distinct attachment (by id) of `chats`, in the order the export
/// names them: chat by chat, message by message.
fn distinct_attachments(refs: impl Iterator<Item = Attachment>) -> Vec<Attachment> {
    let mut seen = std::collections::HashSet::new();
    refs.filter(|a| seen.insert(a.id)).collect()
}

/// The text before a file's `data` elements: `,` between files, its
/// fields, and the opening of `data`.
fn file_head(file: &Attachment, first: bool, pretty: bool) -> Result<Vec<u8>> {
    let text = |value: &str| {
        serde_json::to_string(value)
            .map_err(|e| Error::invalid(format!("cannot encode the export: {e}")))
    };
    let (id, name, media_type) = (
        text(&file.id.to_string())?,
        text(&file.name)?,
        text(&file.media_type)?,
    );
    let comma = if first { "" } else { "," };
    let size = file.size;
    Ok(if pretty {
        format!(
            "{comma}\n    {{\n      \"id\": {id},\n      \"name\": {name},\n      \
             \"media_type\": {media_type},\n      \"size\": {size},\n      \"data\": ["
        )
    } else {
        format!(
            "{comma}{{\"id\":{id},\"name\":{name},\"media_type\":{media_type},\
             \"size\":{size},\"data\":["
        )
    }
    .into_bytes())
}

impl ChatVault {
    /// Every live chat in full, most recently active first, with the chats
    /// whose record does not open (and why) beside them: bodies this device
    /// lacks are fetched from the server in batches.
    ///
    /// Errors: the replica's, and the server's when it cannot be reached
    /// for a body this device lacks (sync later, or work from what is
    /// loaded).
    pub async fn all_chats(&self) -> Result<AllChats> {
        self.engine().all_chats().await
    }

    /// Every live chat as plain JSON, in memory: the document
    /// [`write_export_json`](Self::write_export_json) writes with the
    /// default [`ExportOptions`] (so with the bytes of every attachment:
    /// for a vault with large files, stream the export to a file with that
    /// instead). Importing it into a fresh vault and exporting again gives
    /// the same bytes, but for the attachments' ids, which are the new
    /// vault's. A chat whose record does not open is left out and named in
    /// [`JsonExportFile::skipped`]. The file is plaintext: store it with
    /// care.
    ///
    /// Errors: those of [`write_export_json`](Self::write_export_json).
    pub async fn export_json(&self) -> Result<JsonExportFile> {
        let exported = self
            .write_export_json(Vec::new(), ExportOptions::default(), |_, _| {})
            .await?;
        Ok(JsonExportFile {
            bytes: exported.out,
            chats: exported.chats,
            skipped: exported.skipped,
        })
    }

    /// Writes every live chat as plain JSON to `out` (the file
    /// `chatvault export --format json` writes): [`JSON_FORMAT`], or the
    /// later format its content needs (see the [module docs](self)); with
    /// [`ExportOptions::attachments`], the bytes of every attachment a
    /// message names, once each, under `files` ([`JSON_FORMAT_FILES`]).
    /// Streamed: one chunk of a file is in memory at a time, whatever its
    /// size (the chats' text is encoded whole). `progress` gets the file
    /// bytes written so far and their total. A chat whose record does not
    /// open is left out and named in [`Exported::skipped`]. The file is
    /// plaintext: store it with care.
    ///
    /// Errors: those of [`all_chats`](Self::all_chats), of
    /// [`read_attachment`](Self::read_attachment) (a file this device
    /// cannot fetch: sync, or export with `attachments: false`), and
    /// [`Error::Local`] when `out` cannot be written.
    pub async fn write_export_json<W: std::io::Write + Send + 'static>(
        &self,
        out: W,
        options: ExportOptions,
        progress: impl FnMut(u64, u64),
    ) -> Result<Exported<W>> {
        self.write_export(None, out, options, progress).await
    }

    /// Exports every live chat as a standard age file (decrypt it with the
    /// `age` or `rage` tools), in memory: what
    /// [`write_export_age`](Self::write_export_age) writes with the
    /// default [`ExportOptions`] (so with the bytes of every attachment:
    /// for a vault with large files, stream it to a file with that
    /// instead).
    ///
    /// Errors: those of [`write_export_age`](Self::write_export_age).
    pub async fn export_age(&self, to: &ExportTarget) -> Result<Vec<u8>> {
        Ok(self
            .write_export_age(to, Vec::new(), ExportOptions::default(), |_, _| {})
            .await?
            .out)
    }

    /// Writes every live chat to `out` as a standard age file encrypted to
    /// `to` (decrypt it with the `age` or `rage` tools), whose plaintext is
    /// an [`EXPORT_FORMAT`] document (`chatvault-export/2` if a chat has
    /// branches, `chatvault-export/3` if a message carries attachments and
    /// their bytes are left out, `chatvault-export/4` with the bytes of
    /// every attachment under `files`):
    /// `{"format": "chatvault-export/1", "vault": …, "chats": [...],
    /// "skipped": [{"chat", "version", "reason"}], "files"?: [...]}`.
    /// Streamed and encrypted as it is written, one chunk of a file in
    /// memory at a time; `progress` gets the file bytes written so far and
    /// their total. Loads chat bodies from the server as needed; a chat
    /// whose record does not open is named under `skipped` instead of
    /// failing the export.
    ///
    /// Errors: those of [`write_export_json`](Self::write_export_json) and
    /// of encrypting to `to`.
    pub async fn write_export_age<W: std::io::Write + Send + 'static>(
        &self,
        to: &ExportTarget,
        out: W,
        options: ExportOptions,
        progress: impl FnMut(u64, u64),
    ) -> Result<Exported<W>> {
        self.write_export(Some(to), out, options, progress).await
    }

    /// Both exports: the document's chats encoded whole, then each file's
    /// bytes read, base64-encoded and sent chunk by chunk to a blocking
    /// thread that writes them (through age when `age` names a target).
    async fn write_export<W: std::io::Write + Send + 'static>(
        &self,
        age: Option<&ExportTarget>,
        out: W,
        options: ExportOptions,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Exported<W>> {
        let all = self.all_chats().await?;
        let pretty = age.is_none();
        let vault = self.vault_id().to_string();
        let chats = all.chats;
        let unreadable = all.unreadable;
        let with_bytes = options.attachments;
        // Encoding every chat is CPU-bound.
        let (head, files, chats, unreadable) = blocking(move || {
            let mut files = Vec::new();
            let head = if pretty {
                let mut export = export(chats.iter().map(AsRef::as_ref));
                if with_bytes {
                    // In the order the document names them.
                    files = distinct_attachments(
                        export
                            .chats
                            .iter()
                            .flat_map(|c| c.messages.iter().chain(&c.branches))
                            .flat_map(|m| &m.attachments)
                            .map(|a| Attachment::from(a.clone())),
                    );
                }
                if !files.is_empty() {
                    export.format = JSON_FORMAT_FILES.into();
                }
                serde_json::to_vec_pretty(&export)
            } else {
                if with_bytes {
                    files = distinct_attachments(
                        chats
                            .iter()
                            .flat_map(|c| c.messages.values())
                            .flat_map(|m| m.attachments())
                            .cloned(),
                    );
                }
                let with_files = !files.is_empty();
                let branched = chats.iter().any(|c| c.is_branched());
                let attached = chats.iter().any(|c| c.has_attachments());
                let export = Export {
                    format: if with_files {
                        EXPORT_FORMAT_FILES
                    } else if attached {
                        EXPORT_FORMAT_ATTACHMENTS
                    } else if branched {
                        EXPORT_FORMAT_BRANCHES
                    } else {
                        EXPORT_FORMAT
                    }
                    .into(),
                    vault: Some(vault),
                    chats: chats.iter().map(Arc::as_ref).collect::<Vec<&Chat>>(),
                    skipped: Some(
                        unreadable
                            .iter()
                            .map(|s| SkippedChat {
                                chat: s.chat.to_string(),
                                version: s.version,
                                reason: s.error.to_string(),
                            })
                            .collect(),
                    ),
                };
                serde_json::to_vec(&export)
            }
            .map_err(|e| Error::invalid(format!("cannot encode the export: {e}")))?;
            Ok((head, files, chats.len(), unreadable))
        })
        .await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(4);
        let to = age.cloned();
        let writer = tokio::task::spawn_blocking(move || -> Result<W> {
            let failed = |e: std::io::Error| Error::local("cannot write the export", e);
            let mut sink = match &to {
                Some(to) => Sink::Age(chatvault_core::envelope::export_age_writer(to, out)?),
                None => Sink::Plain(out),
            };
            while let Some(piece) = rx.blocking_recv() {
                match piece {
                    Piece::Text(text) => sink.write_all(&text).map_err(failed)?,
                    Piece::End => return sink.finish().map_err(failed),
                }
            }
            Err(Error::invalid(
                "the export stopped before its end; nothing complete was written",
            ))
        });
        let total: u64 = files.iter().map(|f| f.size).sum();
        let written = self
            .send_export(&tx, head, &files, pretty, total, &mut progress)
            .await;
        if written.is_ok() {
            // A closed channel means the writer failed: its error follows.
            let _ = tx.send(Piece::End).await;
        }
        let writer_failed = tx.is_closed();
        drop(tx);
        let out = writer
            .await
            .map_err(|e| Error::local("the export task failed", e))?;
        let out = match (written, out) {
            (Ok(()), out) => out?,
            // The writer's own error explains why sending stopped.
            (Err(_), Err(e)) if writer_failed => return Err(e),
            (Err(e), _) => return Err(e),
        };
        Ok(Exported {
            out,
            chats,
            files: files.len(),
            file_bytes: total,
            skipped: unreadable,
        })
    }

    /// Sends the document to the writer: `head` (the chats), then each of
    /// `files` with its bytes in base64, chunk by chunk.
    async fn send_export(
        &self,
        tx: &tokio::sync::mpsc::Sender<Piece>,
        head: Vec<u8>,
        files: &[Attachment],
        pretty: bool,
        total: u64,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<()> {
        use base64::Engine as _;
        use tokio::io::AsyncReadExt as _;
        let stopped = || Error::invalid("the export's writer stopped");
        let send =
            |text: Vec<u8>| async move { tx.send(Piece::Text(text)).await.map_err(|_| stopped()) };
        if files.is_empty() {
            let mut head = head;
            if pretty {
                head.push(b'\n');
            }
            return send(head).await;
        }
        // The document up to its closing brace, then `files`.
        let open = if pretty { &b"\n}"[..] } else { &b"}"[..] };
        let mut text = head
            .strip_suffix(open)
            .ok_or_else(|| Error::invalid("the export's document does not end in `}`"))?
            .to_vec();
        text.extend_from_slice(if pretty {
            b",\n  \"files\": ["
        } else {
            b",\"files\":["
        });
        send(text).await?;
        let mut done = 0u64;
        progress(done, total);
        for (n, file) in files.iter().enumerate() {
            send(file_head(file, n == 0, pretty)?).await?;
            let (mut bytes_in, mut bytes_out) = tokio::io::duplex(FILE_DATA_CHUNK);
            let read = async move {
                let n = self.read_attachment(file, &mut bytes_in).await?;
                // Dropping the pipe's end tells the encoder the file ended.
                drop(bytes_in);
                Ok::<u64, Error>(n)
            };
            let encode = async {
                let mut buf = vec![0u8; FILE_DATA_CHUNK];
                let mut elements = 0usize;
                loop {
                    let mut filled = 0;
                    while filled < buf.len() {
                        let read = bytes_out
                            .read(&mut buf[filled..])
                            .await
                            .map_err(|e| Error::local("cannot read the attachment", e))?;
                        if read == 0 {
                            break;
                        }
                        filled += read;
                    }
                    if filled == 0 {
                        break;
                    }
                    let mut text = Vec::with_capacity(filled / 3 * 4 + 16);
                    if elements > 0 {
                        text.push(b',');
                    }
                    text.extend_from_slice(if pretty { b"\n        \"" } else { b"\"" });
                    text.extend_from_slice(
                        base64::engine::general_purpose::STANDARD
                            .encode(&buf[..filled])
                            .as_bytes(),
                    );
                    text.push(b'"');
                    send(text).await?;
                    elements += 1;
                    done += filled as u64;
                    progress(done, total);
                }
                let close: &[u8] = match (pretty, elements) {
                    (true, 0) => b"]\n    }",
                    (true, _) => b"\n      ]\n    }",
                    (false, _) => b"]}",
                };
                send(close.to_vec()).await
            };
            tokio::try_join!(read, encode)?;
        }
        send(if pretty {
            b"\n  ]\n}\n".to_vec()
        } else {
            b"]}".to_vec()
        })
        .await
    }
}
