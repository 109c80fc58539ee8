//! Garbage collection of blobs (`docs/design.md` §10.6): a device that has
//! pulled everything deletes the blobs that no chat names and that no put
//! renewed for the grace period. The server cannot do it: references sit
//! in sealed bodies.

use super::local::collect_deadline;
use super::Attachments;
use crate::engine::Engine;
use crate::ids::BlobId;
use crate::{Error, Result};
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};

/// Deletions in flight at once.
const DELETES_IN_FLIGHT: usize = 8;

/// What one [`Attachments::collect_garbage`] run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobCollection {
    /// Blobs on the server at the first listing.
    pub listed: usize,
    /// Of those, untouched for the grace period.
    pub candidates: usize,
    /// Candidates a chat (or this device's queued messages) still names.
    pub referenced: usize,
    /// Blobs deleted.
    pub deleted: usize,
    /// Why the run deleted nothing or stopped early, if it did.
    pub stopped: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Attachments {
    /// Every blob on the server with its touched time; `None` if the
    /// backend lists no touched times (then nothing is ever collected).
    async fn list_touched(&self) -> Result<Option<BTreeMap<BlobId, u64>>> {
        let mut all = BTreeMap::new();
        let mut after = None;
        loop {
            let page = self.storage.list_blobs(after, 1000).await?;
            if page.touched_ms.len() != page.ids.len() {
                return Ok(None);
            }
            after = page.ids.last().copied();
            all.extend(page.ids.into_iter().zip(page.touched_ms));
            if !page.has_more || after.is_none() {
                return Ok(Some(all));
            }
        }
    }

    /// Deletes the blobs no chat names that no put renewed for the grace
    /// period ([`BlobDir::grace`](super::BlobDir::grace)), as
    /// `docs/design.md` §10.6 argues is safe:
    ///
    /// 1. lists every blob with its touched time; the candidates are those
    ///    touched before now − grace;
    /// 2. **then** pulls to the end and reads every live chat in full
    ///    (fetching bodies this device lacks), collecting every attachment
    ///    they name, the chunks its manifest lists, and every blob this
    ///    device's own queued messages wait for; a record that does not
    ///    open here (a newer format, a key this device lacks) stops the run
    ///    with nothing deleted, since it may name blobs;
    /// 3. lists again and deletes each unnamed candidate whose touched time
    ///    has not moved, stopping [`collect_deadline`] after that listing
    ///    (a device that pushed a record naming a blob checks it is still
    ///    there twice as long after its put, and puts it back if not).
    ///
    /// Errors: the server's (nothing more is deleted; run it again later),
    /// and [`Error::Corrupt`] / [`Error::Tampered`] for a manifest that
    /// does not open (nothing is deleted).
    pub async fn collect_garbage(&self, engine: &Engine) -> Result<BlobCollection> {
        let mut report = BlobCollection::default();
        if !self.storage.capabilities().blobs {
            report.stopped = Some("the backend stores no blobs".into());
            return Ok(report);
        }
        let grace = u64::try_from(self.dir.grace().as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms().saturating_sub(grace);
        let Some(listed) = self.list_touched().await? else {
            report.stopped = Some(
                "the backend lists no touched times for its blobs, so none is ever collected"
                    .into(),
            );
            return Ok(report);
        };
        report.listed = listed.len();
        let candidates: BTreeSet<BlobId> = listed
            .iter()
            .filter(|(_, touched)| **touched < cutoff)
            .map(|(id, _)| *id)
            .collect();
        report.candidates = candidates.len();
        if candidates.is_empty() {
            return Ok(report);
        }
        // Step 2 starts only now, after the first listing.
        engine.pull().await?;
        let skipped = engine.skipped()?;
        if let Some(first) = skipped.first() {
            report.stopped = Some(format!(
                "{} record(s) do not open on this device (chat {} first), and they may name \
                 attachments: nothing deleted (update chatvault, or collect from a device \
                 that reads every record)",
                skipped.len(),
                first.chat
            ));
            return Ok(report);
        }
        let all = engine.all_chats().await?;
        if let Some(first) = all.unreadable.first() {
            report.stopped = Some(format!(
                "{} chat(s) do not open on this device (chat {} first: {}), and they may name \
                 attachments: nothing deleted",
                all.unreadable.len(),
                first.chat,
                first.error
            ));
            return Ok(report);
        }
        let mut named = self.dir.held_blobs()?;
        let manifests: BTreeSet<BlobId> = all
            .chats
            .iter()
            .flat_map(|chat| {
                chat.attachments()
                    .into_iter()
                    .map(|(_, attachment)| attachment.id)
                    .collect::<Vec<_>>()
            })
            .collect();
        for manifest in manifests {
            named.insert(manifest);
            match self.chunks_of(manifest).await? {
                Some(chunks) => named.extend(chunks),
                None => tracing::warn!(
                    %manifest,
                    "a chat names an attachment whose manifest is on no device any more"
                ),
            }
        }
        let unnamed: Vec<BlobId> = candidates.difference(&named).copied().collect();
        report.referenced = candidates.len() - unnamed.len();
        if unnamed.is_empty() {
            return Ok(report);
        }
        // Step 3: only what no put renewed since the first listing.
        let Some(relisted) = self.list_touched().await? else {
            report.stopped = Some("the backend stopped listing touched times".into());
            return Ok(report);
        };
        let listed_again = Instant::now();
        let deadline = collect_deadline(self.dir.grace());
        let doomed: Vec<BlobId> = unnamed
            .into_iter()
            .filter(|id| relisted.get(id).is_some_and(|touched| *touched < cutoff))
            .collect();
        let deleted = futures::stream::iter(doomed)
            .map(|id| async move {
                if listed_again.elapsed() > deadline {
                    return Ok(false);
                }
                self.storage.delete_blob(id).await?;
                // A cached copy of a deleted blob is only wasted space.
                if let Err(e) = self.dir.forget(&id) {
                    tracing::debug!(%id, error = %e, "cannot drop the cached copy of a collected blob");
                }
                Ok::<bool, Error>(true)
            })
            .buffer_unordered(DELETES_IN_FLIGHT)
            .try_collect::<Vec<bool>>()
            .await?;
        report.deleted = deleted.iter().filter(|d| **d).count();
        if report.deleted < deleted.len() {
            report.stopped = Some(format!(
                "stopped {:?} after the second listing, {} candidate(s) left for the next run",
                deadline,
                deleted.len() - report.deleted
            ));
        }
        tracing::info!(
            listed = report.listed,
            candidates = report.candidates,
            referenced = report.referenced,
            deleted = report.deleted,
            "blob garbage collection"
        );
        Ok(report)
    }
}
