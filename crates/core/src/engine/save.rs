//! Local changes and on-demand loading.
//!
//! Every local change runs [`Inner::commit_local`] on a blocking thread under
//! the write lock: read the current state (cache, else the replica), apply
//! the edit, seal the result as the next version, and store the record with
//! its outbox entry in one replica transaction. Only then does memory change
//! and do listeners hear of it.

use super::{blocking, Inner};
use crate::chat::{Chat, ChatSummary};
use crate::hlc::{Clock, Hlc};
use crate::ids::{ChatId, DeviceId};
use crate::replica::{RecordHeader, ReplicaWrite};
use crate::storage::{Part, SealedRecord};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// How often a change that needs a chat's body fetches it before giving up
/// (each fetch races only with pulls replacing that same chat).
const BODY_ATTEMPTS: usize = 3;

/// A chat's current state as a local change sees it.
pub(super) enum Current {
    /// No record of the chat exists here.
    Missing,
    /// Only the summary is held locally (the body was never loaded).
    Summary(ChatSummary),
    /// The whole state (a deleted chat is its tombstone).
    Full(Arc<Chat>),
}

/// What an edit decided: the new state, if it changed anything, and the
/// value handed back to the caller.
pub(super) type Decision<T> = (Option<Chat>, T);

/// A committed state to show: summary, version, and the whole chat if known.
pub(super) type Published = (ChatSummary, u64, Option<Arc<Chat>>);

/// A committed edit's value and the chat's state afterwards (`None` when
/// only its summary is held).
type Committed<T> = (T, Option<Arc<Chat>>);

/// What [`Inner::commit_batch`] did: the saved states by chat, and the chats
/// it could not merge without first fetching their bodies.
struct BatchCommitted {
    saved: HashMap<ChatId, Arc<Chat>>,
    needs_body: Vec<Chat>,
}

/// The version a new local state of `chat` is sealed as: above both the
/// stored version and `at_least`.
fn next_version(chat: ChatId, header: Option<RecordHeader>, at_least: u64) -> Result<u64> {
    header
        .map_or(0, |h| h.version)
        .max(at_least)
        .checked_add(1)
        .ok_or_else(|| Error::invalid(format!("chat {chat} has reached the last version")))
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

/// What the replica holds of a chat's body.
enum LocalBody {
    Loaded(Arc<Chat>),
    Missing,
    Deleted,
    NotLocal,
}

impl Inner {
    /// The current state of `chat` inside write transaction `header`'s view.
    /// `None` when `needs_body` and only the summary is held.
    pub(super) fn current(
        &self,
        chat: ChatId,
        header: Option<RecordHeader>,
        record: impl FnOnce() -> Result<Option<SealedRecord>>,
        needs_body: bool,
    ) -> Result<Option<Current>> {
        let Some(header) = header else {
            return Ok(Some(Current::Missing));
        };
        if let Some(cached) = self.state.cached_at(chat, header.version) {
            return Ok(Some(Current::Full(cached)));
        }
        let record = record()?.ok_or_else(|| not_found(chat))?;
        if header.deleted {
            let summary = self
                .sealer
                .open_summary(chat, record.version, &record.summary)?;
            let at = summary.deleted.unwrap_or(summary.last_activity);
            return Ok(Some(Current::Full(Arc::new(Chat::tombstone(
                chat,
                summary.created,
                at,
            )))));
        }
        match &record.body {
            Some(body) => Ok(Some(Current::Full(Arc::new(self.sealer.open_body(
                chat,
                record.version,
                body,
            )?)))),
            None if needs_body => Ok(None),
            None => Ok(Some(Current::Summary(self.sealer.open_summary(
                chat,
                record.version,
                &record.summary,
            )?))),
        }
    }

    /// Applies `edit` to `chat` and commits the result with its outbox entry;
    /// returns the edit's value and the chat's state afterwards (`None` if
    /// only its summary is held). Hands `edit` back unused if it needs the
    /// body and this device does not hold it.
    pub(super) fn commit_local<T, F>(
        &self,
        chat: ChatId,
        needs_body: bool,
        edit: F,
    ) -> Result<Result<Committed<T>, F>>
    where
        F: FnOnce(Current, &Clock) -> Result<Decision<T>>,
    {
        let _writes = self.lock_writes();
        let mut write = self.replica.write()?;
        let header = write.header(chat)?;
        let current = self.current(chat, header, || write.record(chat, true), needs_body)?;
        let Some(current) = current else {
            return Ok(Err(edit));
        };
        let before = match &current {
            Current::Full(state) => Some(state.clone()),
            _ => None,
        };
        let (next, out) = edit(current, &self.clock)?;
        // Dropping the transaction unused aborts it: nothing changed.
        let Some(next) = next else {
            return Ok(Ok((out, before)));
        };
        let (committed, version) = self.stage_local(&mut write, header, next)?;
        write.commit()?;
        self.publish(committed.summary(), version, Some(committed.clone()));
        self.wake.notify_one();
        Ok(Ok((out, Some(committed))))
    }

    /// Seals `next` (a new local state of its chat, whose stored header in
    /// `write` is `header`) as the next version and stores it with its outbox
    /// entry in `write`. Returns the state and its version, to publish once
    /// `write` commits.
    fn stage_local(
        &self,
        write: &mut ReplicaWrite,
        header: Option<RecordHeader>,
        mut next: Chat,
    ) -> Result<(Arc<Chat>, u64)> {
        let chat = next.id;
        if let Some(horizon) = self.tombstone_horizon() {
            next.collect_garbage(horizon);
        }
        let base = match write.pending(chat)? {
            Some(entry) => entry.base,
            None => header.map(|h| h.version),
        };
        let version = next_version(chat, header, base.unwrap_or(0))?;
        let record = self.sealer.seal(&next, version)?;
        // A record the backend would refuse must not enter the outbox: it
        // would fail every push forever. Dropping `write` changes nothing.
        self.check_size(&record)?;
        write.put_local(&record, base)?;
        Ok((Arc::new(next), version))
    }

    /// Merges every chat of `chats` into its stored state and commits all
    /// of them, with their outbox entries, in one transaction: all or
    /// nothing. Chats whose body this device does not hold (only their
    /// summary) are handed back to be saved one by one after fetching it.
    fn commit_batch(&self, chats: Vec<Chat>) -> Result<BatchCommitted> {
        let _writes = self.lock_writes();
        let mut write = self.replica.write()?;
        let mut saved = HashMap::with_capacity(chats.len());
        let mut needs_body = Vec::new();
        let mut published = Vec::new();
        for chat in chats {
            let id = chat.id;
            let header = write.header(id)?;
            let next = match self.current(id, header, || write.record(id, true), true)? {
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
            let (committed, version) = self.stage_local(&mut write, header, next)?;
            published.push((committed.clone(), version));
            saved.insert(id, committed);
        }
        write.commit()?;
        for (chat, version) in &published {
            self.publish(chat.summary(), *version, Some(chat.clone()));
        }
        if !published.is_empty() {
            self.wake.notify_one();
        }
        Ok(BatchCommitted { saved, needs_body })
    }

    /// Folds the server's record `sealed` (opened: `summary`, `remote`) into
    /// the pending local state of its chat within `write`, the one place a
    /// pull and a conflicting push merge. If the merge adds nothing to the
    /// server's state, that record is stored and nothing is left to push;
    /// otherwise the merge is sealed as the next version and queued on top of
    /// the server's. `None` when the local body is missing.
    pub(super) fn fold_remote(
        &self,
        write: &mut ReplicaWrite,
        header: Option<RecordHeader>,
        sealed: &SealedRecord,
        summary: ChatSummary,
        remote: Arc<Chat>,
    ) -> Result<Option<Published>> {
        let chat = sealed.chat;
        let version = sealed.version;
        let local = match self.current(chat, header, || write.record(chat, true), true)? {
            Some(Current::Full(local)) => local,
            _ => return Ok(None),
        };
        let merged = Chat::merged(&local, &remote);
        if merged == *remote {
            write.put_remote(sealed)?;
            return Ok(Some((summary, version, Some(remote))));
        }
        let next = next_version(chat, header, version)?;
        write.put_local(&self.sealer.seal(&merged, next)?, Some(version))?;
        Ok(Some((merged.summary(), next, Some(Arc::new(merged)))))
    }

    /// Fails with [`Error::TooLarge`] if the backend would refuse `record`.
    pub(super) fn check_size(&self, record: &SealedRecord) -> Result<()> {
        let limit = self.capabilities.max_record_bytes;
        if record.size() > limit {
            return Err(Error::TooLarge {
                size: record.size(),
                limit,
            });
        }
        Ok(())
    }

    /// The stamp before which message tombstones are dropped, if any.
    fn tombstone_horizon(&self) -> Option<Hlc> {
        let horizon = self.config.tombstone_horizon?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        let cutoff = now.checked_sub(horizon)?;
        let millis = u64::try_from(cutoff.as_millis()).ok()?;
        Some(Hlc::new(millis, 0, DeviceId(0)))
    }

    /// Reads `chat`'s body from the replica and caches it.
    fn load_local_body(&self, chat: ChatId) -> Result<LocalBody> {
        let Some(record) = self.replica.record(chat, true)? else {
            return Ok(LocalBody::Missing);
        };
        if record.deleted {
            return Ok(LocalBody::Deleted);
        }
        let Some(body) = &record.body else {
            return Ok(LocalBody::NotLocal);
        };
        let loaded = Arc::new(self.sealer.open_body(chat, record.version, body)?);
        let _writes = self.lock_writes();
        // Cache only if no commit replaced the record meanwhile.
        if self.replica.header(chat)?.map(|h| h.version) == Some(record.version) {
            self.state.cache(record.version, loaded.clone());
        }
        Ok(LocalBody::Loaded(loaded))
    }

    /// Stores a record fetched on demand: its body if it matches the local
    /// version, or the whole record if the server is ahead and nothing local
    /// is pending (then it is what the next pull would have brought).
    pub(super) fn store_fetched(&self, record: SealedRecord) -> Result<()> {
        let opened = self.sealer.open(record)?;
        let chat = opened.sealed.chat;
        let version = opened.sealed.version;
        let _writes = self.lock_writes();
        let mut write = self.replica.write()?;
        let header = write.header(chat)?;
        let pending = write.pending(chat)?;
        let full = opened.chat.map(Arc::new);
        match header {
            Some(h) if h.version == version => {
                if let (Some(body), Some(chat_state)) = (&opened.sealed.body, &full) {
                    if write.put_body(chat, version, body)? {
                        write.commit()?;
                        self.state.cache(version, chat_state.clone());
                    }
                }
            }
            Some(h) if h.version > version || pending.is_some() => {}
            _ => {
                write.put_remote(&opened.sealed)?;
                write.commit()?;
                if let Some(c) = &full {
                    self.clock.observe(c.last_activity());
                }
                self.publish(opened.summary, version, full);
            }
        }
        Ok(())
    }
}

/// Fetches `chat` in full from the server and keeps it locally.
async fn fetch_body(inner: &Arc<Inner>, chat: ChatId) -> Result<()> {
    let records = inner.storage.get(&[chat], Part::Full).await?;
    let record = records
        .into_iter()
        .find(|r| r.chat == chat)
        .ok_or_else(|| Error::NotFound {
            what: format!("chat {chat} on the server"),
        })?;
    blocking(inner, move |inner| inner.store_fetched(record)).await
}

pub(super) async fn load_full_chat(inner: &Arc<Inner>, chat: ChatId) -> Result<Arc<Chat>> {
    if let Some(cached) = inner.state.cached(chat) {
        return if cached.is_deleted() {
            Err(deleted(chat))
        } else {
            Ok(cached)
        };
    }
    for _ in 0..BODY_ATTEMPTS {
        match blocking(inner, move |inner| inner.load_local_body(chat)).await? {
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
    F: FnOnce(Current, &Clock) -> Result<Decision<T>> + Send + 'static,
{
    let mut edit = edit;
    for _ in 0..BODY_ATTEMPTS {
        match blocking(inner, move |inner| {
            inner.commit_local(chat, needs_body, edit)
        })
        .await?
        {
            Ok(out) => return Ok(out),
            Err(unused) => {
                edit = unused;
                fetch_body(inner, chat).await?;
            }
        }
    }
    Err(body_keeps_changing(chat))
}

pub(super) async fn save_chat(inner: &Arc<Inner>, chat: Chat) -> Result<Arc<Chat>> {
    inner.clock.observe(chat.last_activity());
    let id = chat.id;
    let (_, state) = run_edit(inner, id, true, move |current, _| match current {
        Current::Missing => Ok((Some(chat), ())),
        Current::Full(stored) => {
            let merged = Chat::merged(&stored, &chat);
            Ok(((merged != *stored).then_some(merged), ()))
        }
        Current::Summary(_) => Err(missing_body(id)),
    })
    .await?;
    state.ok_or_else(|| missing_body(id))
}

/// Saves many chats: one replica transaction for all whose body this device
/// holds (or that are new), then one save per chat whose body must first be
/// fetched. Returns the merged states in the order given.
pub(super) async fn save_chats(inner: &Arc<Inner>, chats: Vec<Chat>) -> Result<Vec<Arc<Chat>>> {
    for chat in &chats {
        inner.clock.observe(chat.last_activity());
    }
    let order: Vec<ChatId> = chats.iter().map(|c| c.id).collect();
    let BatchCommitted {
        mut saved,
        needs_body,
    } = blocking(inner, move |inner| inner.commit_batch(chats)).await?;
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
            Ok((if next == *stored { None } else { Some(next) }, out))
        }
        Current::Summary(_) => Err(missing_body(chat)),
    })
    .await
    .map(|(out, _)| out)
}

pub(super) async fn delete_chat(inner: &Arc<Inner>, chat: ChatId) -> Result<()> {
    run_edit(inner, chat, false, move |current, clock| match current {
        Current::Missing => Err(not_found(chat)),
        Current::Full(stored) if stored.is_deleted() => Ok((None, ())),
        Current::Full(stored) => {
            let mut next = (*stored).clone();
            next.delete(clock.tick());
            Ok((Some(next), ()))
        }
        Current::Summary(summary) => Ok((
            Some(Chat::tombstone(chat, summary.created, clock.tick())),
            (),
        )),
    })
    .await
    .map(|_| ())
}
