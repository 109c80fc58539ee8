//! Reads chatvault's own export files back: the plain JSON
//! ([`JSON_FORMAT`], see [`crate::export`]) and the plaintext of an age
//! export ([`EXPORT_FORMAT`], e.g. after `age -d`), whose whole chat states
//! are merged as they are. Attachment references are kept; the bytes an
//! export carries under `files` ([`JSON_FORMAT_FILES`],
//! [`EXPORT_FORMAT_FILES`]) are checked while the chats are read (base64,
//! and exactly the size each file declares) and attached by
//! [`ChatVault::attach_export_files`](crate::ChatVault::attach_export_files),
//! streamed from the file one chunk at a time, which rewrites the messages'
//! references to the importing vault's ids.

use super::parse::{parse_list, Conversation, ImportedMessage, ListAt, Naming};
use crate::export::{
    JsonChat, EXPORT_FORMAT_ATTACHMENTS, EXPORT_FORMAT_BRANCHES, EXPORT_FORMAT_FILES, JSON_FORMAT,
    JSON_FORMAT_ATTACHMENTS, JSON_FORMAT_BRANCHES, JSON_FORMAT_FILES,
};
use crate::{Chat, Error, Result, EXPORT_FORMAT};
use chatvault_core::BlobId;
use serde::de::{DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::path::Path;

/// A file a chatvault export carries under `files`: its fields, its bytes
/// still in the export (checked: base64, and `size` bytes in all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EmbeddedFile {
    /// Its id in the vault that exported it.
    pub(crate) id: BlobId,
    /// Its name.
    pub(crate) name: String,
    /// Its media type.
    pub(crate) media_type: String,
    /// Its size in bytes.
    pub(crate) size: u64,
}

/// What [`scan`] meets in a document's `files`, in order.
pub(crate) enum Event<'a> {
    /// A file's fields, before its bytes.
    Start(&'a EmbeddedFile),
    /// The next bytes of that file.
    Bytes(Vec<u8>),
    /// Its last bytes were given.
    End,
}

/// A document's top-level fields, read from a stream.
pub(crate) struct Scanned {
    format: Option<String>,
    chats: Option<Box<serde_json::value::RawValue>>,
}

/// Reads a chatvault export document from `reader` (called `file` in
/// errors) in one pass: its `format`, its `chats` kept as text when
/// `keep_chats`, and every file under `files` given to `sink` as it is
/// decoded, one `data` element at a time; nothing else is kept.
pub(crate) fn scan<R: std::io::Read>(
    file: &Path,
    reader: R,
    keep_chats: bool,
    sink: &mut dyn FnMut(Event<'_>) -> std::result::Result<(), String>,
) -> Result<Scanned> {
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let scanned = deserializer
        .deserialize_map(Top { keep_chats, sink })
        .and_then(|scanned| deserializer.end().map(|()| scanned))
        .map_err(|e| {
            Error::invalid(format!(
                "{} is not a readable chatvault export: {e}; nothing was imported",
                file.display()
            ))
        })?;
    Ok(scanned)
}

struct Top<'s> {
    keep_chats: bool,
    sink: &'s mut dyn FnMut(Event<'_>) -> std::result::Result<(), String>,
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Scanned;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a chatvault export (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Scanned, A::Error> {
        let mut scanned = Scanned {
            format: None,
            chats: None,
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "format" => scanned.format = map.next_value()?,
                "chats" if self.keep_chats => scanned.chats = Some(map.next_value()?),
                "files" => map.next_value_seed(Files { sink: self.sink })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(scanned)
    }
}

/// The `files` list.
struct Files<'s> {
    sink: &'s mut dyn FnMut(Event<'_>) -> std::result::Result<(), String>,
}

impl<'de> DeserializeSeed<'de> for Files<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Files<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of files")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let mut n = 0usize;
        while seq
            .next_element_seed(OneFile {
                sink: &mut *self.sink,
                n,
            })?
            .is_some()
        {
            n += 1;
        }
        Ok(())
    }
}

/// One element of `files`: its fields, then `data`.
struct OneFile<'s> {
    sink: &'s mut dyn FnMut(Event<'_>) -> std::result::Result<(), String>,
    n: usize,
}

impl<'de> DeserializeSeed<'de> for OneFile<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OneFile<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a file: {id, name, media_type, size, data}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        use serde::de::Error as _;
        let n = self.n;
        let (mut id, mut name, mut media_type, mut size) = (None, None, None, None);
        let mut data = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "id" => id = Some(map.next_value::<BlobId>()?),
                "name" => name = Some(map.next_value::<String>()?),
                "media_type" => media_type = Some(map.next_value::<String>()?),
                "size" => size = Some(map.next_value::<u64>()?),
                "data" => {
                    let (Some(id), Some(name), Some(media_type), Some(size)) =
                        (id, name.take(), media_type.take(), size)
                    else {
                        return Err(A::Error::custom(format!(
                            "files[{n}]: `data` comes before one of id, name, media_type and \
                             size; a file names those first"
                        )));
                    };
                    let file = EmbeddedFile {
                        id,
                        name,
                        media_type,
                        size,
                    };
                    (self.sink)(Event::Start(&file)).map_err(A::Error::custom)?;
                    map.next_value_seed(Data {
                        sink: &mut *self.sink,
                        file: &file,
                        n,
                    })?;
                    (self.sink)(Event::End).map_err(A::Error::custom)?;
                    data = true;
                }
                other => {
                    return Err(A::Error::custom(format!(
                        "files[{n}]: unknown field `{other}` (a file has id, name, \
                         media_type, size and data)"
                    )))
                }
            }
        }
        if !data {
            return Err(A::Error::custom(format!(
                "files[{n}]: no `data` (the file's bytes, a list of base64 strings)"
            )));
        }
        Ok(())
    }
}

/// A file's `data`: base64 strings, decoded one at a time.
struct Data<'s, 'f> {
    sink: &'s mut dyn FnMut(Event<'_>) -> std::result::Result<(), String>,
    file: &'f EmbeddedFile,
    n: usize,
}

impl<'de> DeserializeSeed<'de> for Data<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Data<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of base64 strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        use base64::Engine as _;
        use serde::de::Error as _;
        let (file, n) = (self.file, self.n);
        let what = || format!("files[{n}] ({}, {})", file.id, file.name);
        let mut total = 0u64;
        let mut element = 0usize;
        while let Some(text) = seq.next_element::<std::borrow::Cow<'_, str>>()? {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|e| {
                    A::Error::custom(format!(
                        "{}: data[{element}] is not base64 ({e}); the export is damaged",
                        what()
                    ))
                })?;
            total = total.saturating_add(bytes.len() as u64);
            if total > file.size {
                return Err(A::Error::custom(format!(
                    "{}: its data holds more than the {} bytes its size says; the export is \
                     damaged",
                    what(),
                    file.size
                )));
            }
            (self.sink)(Event::Bytes(bytes)).map_err(A::Error::custom)?;
            element += 1;
        }
        if total != file.size {
            return Err(A::Error::custom(format!(
                "{}: its data holds {total} bytes, its size says {}; the export is damaged",
                what(),
                file.size
            )));
        }
        Ok(())
    }
}

/// Reads a chatvault export document (a JSON object with a `format` field,
/// `json`, read from `file`, which errors name), without a
/// `serde_json::Value` of it; the bytes of the files it carries are checked
/// and left out.
///
/// Errors: [`Error::InvalidInput`] for another format, naming the ones this
/// version reads, naming the chat and field that is wrong, or the file
/// whose bytes are not base64 or not of its size.
pub fn read(file: &Path, json: &[u8]) -> Result<Vec<Chat>> {
    read_from(file, json).map(|(chats, _)| chats)
}

/// [`read`] from a stream, one pass: the chats, and the files the document
/// carries (checked: each once, base64, exactly its size).
pub(crate) fn read_from<R: std::io::Read>(
    file: &Path,
    reader: R,
) -> Result<(Vec<Chat>, Vec<EmbeddedFile>)> {
    let mut files: Vec<EmbeddedFile> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let scanned = scan(file, reader, true, &mut |event| {
        if let Event::Start(f) = event {
            if !seen.insert(f.id) {
                return Err(format!("file {} is listed twice under `files`", f.id));
            }
            files.push(f.clone());
        }
        Ok(())
    })?;
    let format = scanned.format.unwrap_or_default();
    let chats = scanned.chats.ok_or_else(|| {
        Error::invalid(format!(
            "{}: no `chats`; is it a chatvault export?",
            file.display()
        ))
    })?;
    // Only `chats` again, for the errors that name a chat and a field.
    let json = format!("{{\"chats\":{}}}", chats.get()).into_bytes();
    drop(chats);
    if [
        EXPORT_FORMAT,
        EXPORT_FORMAT_BRANCHES,
        EXPORT_FORMAT_ATTACHMENTS,
        EXPORT_FORMAT_FILES,
    ]
    .contains(&format.as_str())
    {
        // The plaintext of an age export: whole chat states, merged as
        // they are.
        return Ok((
            parse_list::<Chat, Names>(file, &json, ListAt::Chats)?,
            files,
        ));
    }
    if ![
        JSON_FORMAT,
        JSON_FORMAT_BRANCHES,
        JSON_FORMAT_ATTACHMENTS,
        JSON_FORMAT_FILES,
    ]
    .contains(&format.as_str())
    {
        return Err(Error::invalid(format!(
            "{}: format {format:?} is not one this version reads ({JSON_FORMAT}, \
             {JSON_FORMAT_BRANCHES}, {JSON_FORMAT_ATTACHMENTS}, {JSON_FORMAT_FILES}, \
             {EXPORT_FORMAT}, {EXPORT_FORMAT_BRANCHES}, {EXPORT_FORMAT_ATTACHMENTS} or \
             {EXPORT_FORMAT_FILES})",
            file.display()
        )));
    }
    let chats = parse_list::<JsonChat, Names>(file, &json, ListAt::Chats)?
        .into_iter()
        .enumerate()
        .map(|(n, chat)| {
            let name = format!("#{n} ({})", chat.id);
            let millis = |field: &str, text: &str| {
                super::parse::rfc3339_millis(text)
                    .ok_or_else(|| super::parse::bad(file, &name, field, "not an RFC 3339 time"))
            };
            let mut messages = Vec::with_capacity(chat.messages.len() + chat.branches.len());
            // The current path, then the other branches: a message after
            // the one it follows.
            for (list, items) in [("messages", chat.messages), ("branches", chat.branches)] {
                for (i, m) in items.into_iter().enumerate() {
                    messages.push(ImportedMessage {
                        id: m.id,
                        role: m.role,
                        content: m.content,
                        written: millis(&format!("{list}[{i}].created"), &m.created)?,
                        parent: m.parent,
                        alternative_of: m.alternative_of,
                        files: Vec::new(),
                        attachments: m.attachments.into_iter().map(Into::into).collect(),
                    });
                }
            }
            Ok(Conversation {
                id: chat.id,
                title: chat.title,
                starred: chat.starred,
                created: millis("created", &chat.created)?,
                updated: millis("updated", &chat.updated)?,
                messages,
                selected: chat.selected,
            }
            .into_chat())
        })
        .collect::<Result<Vec<Chat>>>()?;
    Ok((chats, files))
}

/// The field that names a chat in errors: its id.
#[derive(Deserialize)]
struct Names {
    #[serde(default)]
    id: Option<String>,
}

impl Naming for Names {
    /// Its position and id.
    fn name(&self, n: usize) -> String {
        format!("#{n} ({})", self.id.as_deref().unwrap_or("?"))
    }
}
