//! Local changes and on-demand loading.
//!
//! Every local change runs [`commit_local`] on a blocking thread under
//! the write lock: read the current state (cache, else the replica), apply
//! the edit, seal the result as the next version, and store the record with
//! its outbox entry in one replica transaction. Only then does memory change
//! and do listeners hear of it.

use super::journal::{self, Append};
use super::local::{Current, LocalStore, Publish};
use super::pull::apply_pulled;
use super::{blocking, Inner};
use crate::chat::Chat;
use crate::hlc::Clock;
use crate::ids::{ChatId, MessageId};
use crate::storage::{Part, SealedRecord};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// How often a change that needs a chat's body fetches it before giving up
/// (each fetch races only with pulls replacing that same chat).
const BODY_ATTEMPTS: usize = 3;

/// What an edit decided: the new state, if it changed anything, and the
/// value handed back to the caller.
pub(super) struct Edit<T> {
    next: Option<Chat>,
    out: T,
}

impl<T> Edit<T> {
    /// The edit changed nothing.
    pub(super) fn unchanged(out: T) -> Self {
        Self { next: None, out }
    }

    /// The edit produced `next` (or nothing, if `next` is `None`).
    pub(super) fn to(next: Option<Chat>, out: T) -> Self {
        Self { next, out }
    }
}

/// A committed edit's value and the chat's state afterwards (`None` when
/// only its summary is held).
pub(super) struct Committed<T> {
    pub(super) out: T,
    pub(super) state: Option<Arc<Chat>>,
}

/// What [`commit_local`] did.
enum Commit<T, F> {
    /// The edit ran (and committed, if it changed anything).
    Done(Committed<T>),
    /// The edit needs the chat's body, which this device does not hold:
    /// handed back unused, to run again after fetching the body.
    NeedsBody(F),
}

/// What [`commit_batch`] did: the saved states by chat, and the chats
/// it could not merge without first fetching their bodies.
struct BatchCommitted {
    saved: HashMap<ChatId, Arc<Chat>>,
    needs_body: Vec<Chat>,
}

fn not_found(chat: ChatId) -> Error {
    Error::NotFound {
        what: format!("chat {chat}"),
    }
}

fn deleted(chat: ChatId) -> Error {
    Error::NotFound {
        what: format!("chat {chat} (it was deleted)"),
    }
}

/// A filter on a chat's opened, undecoded body (see
/// [`Engine::all_chats_where`](super::Engine::all_chats_where)).
pub(super) type Keep = dyn Fn(&[u8]) -> bool + Send + Sync;

/// One chat of a bulk load from the replica.
pub(super) enum BulkLoad {
    /// What [`load_full_chat`] would have answered.
    Loaded(Result<Arc<Chat>>),
    /// Its plaintext did not pass the filter.
    Excluded,
    /// Its body is not held here.
    NotLocal,
}

/// What the replica holds of a chat's body.
enum LocalBody {
    Loaded(Arc<Chat>),
    Missing,
    Deleted,
    NotLocal,
}

/// Applies `edit` to `chat` and commits the result with its outbox entry;
/// returns the edit's value and the chat's state afterwards (`None` if
/// only its summary is held). Hands `edit` back unused if it needs the
/// body and this device does not hold it.
fn commit_local<T, F>(
    local: &LocalStore,
    chat: ChatId,
    needs_body: bool,
    edit: F,
) -> Result<Commit<T, F>>
where
    F: FnOnce(Current, &Clock) -> Result<Edit<T>>,
{
    let _writes = local.lock_writes();
    let mut write = local.write()?;
    let header = write.header(chat)?;
    let current = local.current(chat, header, || write.record(chat, true), needs_body)?;
    let Some(current) = current else {
        return Ok(Commit::NeedsBody(edit));
    };
    let before = match &current {
        Current::Full(state) => Some(state.clone()),
        _ => None,
    };
    let Edit { next, out } = edit(current, &local.clock)?;
    // Dropping the transaction unused aborts it: nothing changed.
    let Some(next) = next else {
        return Ok(Commit::Done(Committed { out, state: before }));
    };
    let staged = local.stage_local(&mut write, header, next)?;
    write.commit()?;
    local.publish(staged.publish());
    local.committed.notify_one();
    Ok(Commit::Done(Committed {
        out,
        state: Some(staged.chat),
    }))
}

/// Merges every chat of `chats` into its stored state and commits all
/// of them, with their outbox entries, in one transaction: all or
/// nothing. Chats whose body this device does not hold (only their
/// summary) are handed back to be saved one by one after fetching it.
fn commit_batch(local: &LocalStore, chats: Vec<Chat>) -> Result<BatchCommitted> {
    let _writes = local.lock_writes();
    let mut write = local.write()?;
    let mut saved = HashMap::with_capacity(chats.len());
    let mut needs_body = Vec::new();
    let mut published = Vec::new();
    for chat in chats {
        let id = chat.id;
        let header = write.header(id)?;
        let next = match local.current(id, header, || write.record(id, true), true)? {
            None | Some(Current::Summary(_)) => {
                needs_body.push(chat);
                continue;
            }
            Some(Current::Missing) => chat,
            Some(Current::Full(stored)) => {
                let merged = Chat::merged(&stored, &chat);
                if merged == *stored {
                    saved.insert(id, stored);
                    continue;
                }
                merged
            }
        };
        let staged = local.stage_local(&mut write, header, next)?;
        published.push(staged.publish());
        saved.insert(id, staged.chat);
    }
    write.commit()?;
    let woke = !published.is_empty();
    for state in published {
        local.publish(state);
    }
    if woke {
        local.committed.notify_one();
    }
    Ok(BatchCommitted { saved, needs_body })
}

/// Reads `chat`'s body from the replica and caches it.
fn load_local_body(local: &LocalStore, chat: ChatId) -> Result<LocalBody> {
    let Some(record) = local.replica.record(chat, true)? else {
        return Ok(LocalBody::Missing);
    };
    if record.deleted {
        return Ok(LocalBody::Deleted);
    }
    let Some(body) = &record.body else {
        return Ok(LocalBody::NotLocal);
    };
    let mut loaded = local.sealer.open_body(chat, record.version, body)?;
    local.journal.apply_to(chat, record.version, &mut loaded);
    let loaded = Arc::new(loaded);
    let _writes = local.lock_writes();
    // Cache only if no commit replaced the record meanwhile.
    if local.replica.header(chat)?.map(|h| h.version) == Some(record.version) {
        local.state.cache(record.version, loaded.clone());
    }
    Ok(LocalBody::Loaded(loaded))
}

/// Reads the bodies of `chats` from the replica in one snapshot and opens
/// them on every core (for [`Engine::all_chats_where`](super::Engine::all_chats_where)),
/// in the order given. A body whose plaintext `keep` rejects is not
/// decoded. What it opens is not cached: a bulk read would only evict
/// the chats in use.
pub(super) fn load_local_bodies(
    local: &LocalStore,
    chats: &[ChatId],
    keep: &Keep,
) -> Result<Vec<BulkLoad>> {
    let mut out = Vec::with_capacity(chats.len());
    let mut uncached = Vec::new();
    for (i, &chat) in chats.iter().enumerate() {
        match local.state.cached(chat) {
            Some(cached) if cached.is_deleted() => out.push(BulkLoad::Loaded(Err(deleted(chat)))),
            Some(cached) => out.push(BulkLoad::Loaded(Ok(cached))),
            None => {
                out.push(BulkLoad::NotLocal);
                uncached.push((i, chat));
            }
        }
    }
    let ids: Vec<ChatId> = uncached.iter().map(|&(_, chat)| chat).collect();
    let records = local.replica.records(&ids, true)?;
    let mut to_open = Vec::with_capacity(records.len());
    for ((i, chat), record) in uncached.into_iter().zip(records) {
        match record {
            None => out[i] = BulkLoad::Loaded(Err(not_found(chat))),
            Some(record) if record.deleted => out[i] = BulkLoad::Loaded(Err(deleted(chat))),
            Some(record) => {
                if let Some(body) = record.body {
                    to_open.push((i, chat, record.version, body));
                }
            }
        }
    }
    let opened = super::sealing::par_map(to_open, |(i, chat, version, body)| {
        let load = match local.sealer.open_body_plain(chat, version, &body) {
            Ok(plain) if !keep(&plain) => BulkLoad::Excluded,
            Ok(plain) => BulkLoad::Loaded(local.sealer.decode_body(chat, &plain).map(|mut c| {
                local.journal.apply_to(chat, version, &mut c);
                Arc::new(c)
            })),
            Err(e) => BulkLoad::Loaded(Err(e)),
        };
        (i, load)
    });
    for (i, load) in opened {
        out[i] = load;
    }
    Ok(out)
}

/// Fetches `chat` in full from the server and keeps it locally.
///
/// With concurrent writers the server may hold one current record per
/// writer: the one whose summary is held here (else the newest) is stored,
/// then the others are merged into it.
pub(super) async fn fetch_body(inner: &Arc<Inner>, chat: ChatId) -> Result<()> {
    let fetched = match inner.storage.get(&[chat], Part::Body).await {
        // With concurrent writers in a copied folder, a record that does not
        // read is usually a file still on its way from another device.
        Err(Error::Corrupt { what, reason }) if inner.capabilities.concurrent_writers => {
            return Err(Error::InTransit {
                what: format!("{what} ({reason})"),
            })
        }
        other => other?,
    };
    let mut records: Vec<SealedRecord> = fetched.into_iter().filter(|r| r.chat == chat).collect();
    let held = blocking(inner, move |inner| inner.local.replica.record(chat, false)).await?;
    let first = records
        .iter()
        .position(|r| held.as_ref().is_some_and(|h| h.summary == r.summary))
        .or_else(|| {
            records
                .iter()
                .enumerate()
                .max_by_key(|(_, r)| r.version)
                .map(|(i, _)| i)
        })
        .ok_or_else(|| Error::NotFound {
            what: format!("chat {chat} on the server"),
        })?;
    let record = records.swap_remove(first);
    blocking(inner, move |inner| {
        inner.local.store_fetched(record)?;
        if !records.is_empty() {
            apply_pulled(&inner.local, records, None, Vec::new())?;
        }
        Ok(())
    })
    .await
}

pub(super) async fn load_full_chat(inner: &Arc<Inner>, chat: ChatId) -> Result<Arc<Chat>> {
    if let Some(cached) = inner.local.state.cached(chat) {
        return if cached.is_deleted() {
            Err(deleted(chat))
        } else {
            Ok(cached)
        };
    }
    for _ in 0..BODY_ATTEMPTS {
        match blocking(inner, move |inner| load_local_body(&inner.local, chat)).await? {
            LocalBody::Loaded(loaded) => return Ok(loaded),
            LocalBody::Missing => return Err(not_found(chat)),
            LocalBody::Deleted => return Err(deleted(chat)),
            LocalBody::NotLocal => fetch_body(inner, chat).await?,
        }
    }
    Err(body_keeps_changing(chat))
}

fn body_keeps_changing(chat: ChatId) -> Error {
    Error::Unavailable {
        message: format!("chat {chat} changed on the server while it was being loaded; try again"),
        source: None,
    }
}

/// Runs a local edit, fetching the chat's body first when the edit needs it
/// and this device does not hold it.
pub(super) async fn run_edit<T, F>(
    inner: &Arc<Inner>,
    chat: ChatId,
    needs_body: bool,
    edit: F,
) -> Result<Committed<T>>
where
    T: Send + 'static,
    F: FnOnce(Current, &Clock) -> Result<Edit<T>> + Send + 'static,
{
    let mut edit = edit;
    for _ in 0..BODY_ATTEMPTS {
        match blocking(inner, move |inner| {
            commit_local(&inner.local, chat, needs_body, edit)
        })
        .await?
        {
            Commit::Done(committed) => return Ok(committed),
            Commit::NeedsBody(unused) => {
                edit = unused;
                fetch_body(inner, chat).await?;
            }
        }
    }
    Err(body_keeps_changing(chat))
}

pub(super) async fn save_chat(inner: &Arc<Inner>, chat: Chat) -> Result<Arc<Chat>> {
    inner.local.clock.observe(chat.last_activity());
    let id = chat.id;
    let committed = run_edit(inner, id, true, move |current, _| match current {
        Current::Missing => Ok(Edit::to(Some(chat), ())),
        Current::Full(stored) => {
            let merged = Chat::merged(&stored, &chat);
            Ok(Edit::to((merged != *stored).then_some(merged), ()))
        }
        Current::Summary(_) => Err(missing_body(id)),
    })
    .await?;
    committed.state.ok_or_else(|| missing_body(id))
}

/// Saves many chats: one replica transaction for all whose body this device
/// holds (or that are new), then one save per chat whose body must first be
/// fetched. Returns the merged states in the order given.
pub(super) async fn save_chats(inner: &Arc<Inner>, chats: Vec<Chat>) -> Result<Vec<Arc<Chat>>> {
    for chat in &chats {
        inner.local.clock.observe(chat.last_activity());
    }
    let order: Vec<ChatId> = chats.iter().map(|c| c.id).collect();
    let BatchCommitted {
        mut saved,
        needs_body,
    } = blocking(inner, move |inner| commit_batch(&inner.local, chats)).await?;
    for chat in needs_body {
        let id = chat.id;
        saved.insert(id, save_chat(inner, chat).await?);
    }
    order
        .into_iter()
        .map(|id| saved.get(&id).cloned().ok_or_else(|| missing_body(id)))
        .collect()
}

fn missing_body(chat: ChatId) -> Error {
    Error::local_message(format!("chat {chat} has no local body after loading it"))
}

pub(super) async fn update<T, F>(inner: &Arc<Inner>, chat: ChatId, edit: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Chat, &Clock) -> Result<T> + Send + 'static,
{
    run_edit(inner, chat, true, move |current, clock| match current {
        Current::Missing => Err(not_found(chat)),
        Current::Full(stored) if stored.is_deleted() => Err(deleted(chat)),
        Current::Full(stored) => {
            let mut next = (*stored).clone();
            let out = edit(&mut next, clock)?;
            Ok(Edit::to((next != *stored).then_some(next), out))
        }
        Current::Summary(_) => Err(missing_body(chat)),
    })
    .await
    .map(|committed| committed.out)
}

pub(super) async fn delete_chat(inner: &Arc<Inner>, chat: ChatId) -> Result<()> {
    run_edit(inner, chat, false, move |current, clock| match current {
        Current::Missing => Err(not_found(chat)),
        Current::Full(stored) if stored.is_deleted() => Ok(Edit::unchanged(())),
        Current::Full(stored) => {
            let mut next = (*stored).clone();
            next.delete(clock.tick());
            Ok(Edit::to(Some(next), ()))
        }
        Current::Summary(summary) => Ok(Edit::to(
            Some(Chat::tombstone(chat, summary.created, clock.tick())),
            (),
        )),
    })
    .await
    .map(|_| ())
}

/// Unfolded streamed text of one chat above which an append folds it at
/// once (a fold re-seals the chat; below this the journal grows instead).
const FOLD_BYTES: usize = 256 << 10;

/// What [`append_local`] did.
enum Appended {
    /// The append is durable; true if the chat's journal should be folded.
    Done(bool),
    /// The chat's body is not held here: fetch it, then append.
    NeedsBody,
}

/// Appends `text` to `message` of `chat` through the stream journal: one
/// sealed entry of about the text's size, not a new sealed version of the
/// chat (docs/design.md §8.5).
fn append_local(
    local: &LocalStore,
    chat: ChatId,
    message: MessageId,
    text: &str,
) -> Result<Appended> {
    let _writes = local.lock_writes();
    let header = local.replica.header(chat)?;
    let Some(version) = header.map(|h| h.version) else {
        return Err(not_found(chat));
    };
    let state = match local.current(chat, header, || local.replica.record(chat, true), true)? {
        None | Some(Current::Summary(_)) => return Ok(Appended::NeedsBody),
        Some(Current::Missing) => return Err(not_found(chat)),
        Some(Current::Full(state)) if state.is_deleted() => return Err(deleted(chat)),
        Some(Current::Full(state)) => state,
    };
    if state.messages.get(&message).is_none_or(|m| m.is_deleted()) {
        return Err(Error::NotFound {
            what: format!("message {message} in chat {chat}"),
        });
    }
    let append = Append {
        message,
        stamp: local.clock.tick(),
        text: text.to_string(),
    };
    let mut next = (*state).clone();
    journal::apply(&mut next, std::slice::from_ref(&append));
    let (_, unfolded) = local.journal.append(&local.sealer, chat, version, append)?;
    let next = Arc::new(next);
    local.publish(Publish {
        summary: next.summary(),
        version,
        full: Some(next),
    });
    Ok(Appended::Done(unfolded > FOLD_BYTES))
}

/// Appends `text` to `message` of `chat` as one streamed token
/// ([`Engine::append_to_message`](super::Engine::append_to_message)).
pub(super) async fn append_to_message(
    inner: &Arc<Inner>,
    chat: ChatId,
    message: MessageId,
    text: String,
) -> Result<()> {
    let text = Arc::new(text);
    for _ in 0..BODY_ATTEMPTS {
        let token = text.clone();
        match blocking(inner, move |inner| {
            append_local(&inner.local, chat, message, &token)
        })
        .await?
        {
            Appended::Done(fold) => {
                if fold {
                    blocking(inner, move |inner| fold_stream(&inner.local, chat)).await?;
                }
                return Ok(());
            }
            Appended::NeedsBody => fetch_body(inner, chat).await?,
        }
    }
    Err(body_keeps_changing(chat))
}

/// Folds `chat`'s streamed appends into a new version, sealed and queued
/// for push like any save, then forgets them. Appends that build on an
/// older version than the stored one were folded already (the newer
/// version was made from the journal-applied state) and are only
/// forgotten.
pub(super) fn fold_stream(local: &LocalStore, chat: ChatId) -> Result<()> {
    let Some(base) = local.journal.base(chat) else {
        return Ok(());
    };
    let stored = local.replica.header(chat)?.map(|h| h.version);
    if stored == Some(base) {
        let committed = commit_local(local, chat, true, |current, _| match current {
            Current::Full(state) if !state.is_deleted() => Ok(Edit::to(Some((*state).clone()), ())),
            _ => Ok(Edit::unchanged(())),
        })?;
        if matches!(committed, Commit::NeedsBody(_)) {
            tracing::warn!(%chat, "streamed appends to a chat whose body is not held here are dropped");
        }
    }
    local.journal.forget(chat, base)
}

/// Folds the streamed appends of every chat whose first unfolded append is
/// at least `min_age` old (and forgets stale ones).
pub(super) fn fold_streams(local: &LocalStore, min_age: std::time::Duration) -> Result<()> {
    for chat in local.journal.chats(min_age) {
        fold_stream(local, chat)?;
    }
    for chat in local.journal.chats(std::time::Duration::ZERO) {
        let stored = local.replica.header(chat)?.map(|h| h.version);
        if let Some(base) = local.journal.base(chat).filter(|b| Some(*b) != stored) {
            local.journal.forget(chat, base)?;
        }
    }
    Ok(())
}
