//! [`Compactor`]: compaction, a snapshot of every chat at the head, then deletion of what
//! it makes unnecessary, only of objects older than the horizon. The steps,
//! the safety argument (`min_age > max_claim_delay`) and the crash analysis
//! are in `docs/design.md` §5.2 and §5.3.

use crate::entry::{EntryItem, Position, Precondition};
use crate::error::map_store_error;
use crate::index::Index;
use crate::layout::WriteId;
use crate::log::Log;
use crate::objects::Objects;
use crate::options::CompactOptions;
use crate::snapshot::{encode_snapshot, Snapshot, SnapshotChat};
use chatvault_core::{ChatId, Error, Result};
use object_store::path::Path;
use object_store::ObjectMeta;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Compactions started over before giving up when other devices compact
/// at the same time.
const COMPACT_ATTEMPTS: usize = 4;

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// The slot the newest snapshot describes (0: the log is empty).
    pub snapshot_seq: u64,
    /// Log entries deleted.
    pub log_entries_deleted: usize,
    /// Superseded snapshots deleted.
    pub snapshots_deleted: usize,
    /// Record blobs deleted: superseded versions and orphans of puts that
    /// never committed.
    pub blobs_deleted: usize,
    /// Superseded keyring versions deleted.
    pub keyring_versions_deleted: usize,
}

/// The rule compaction's safety rests on (see `docs/design.md` §5.2):
/// everything it deletes must be older than anything a writer may still
/// commit or rely on.
fn check_horizon(compact: &CompactOptions, max_claim_delay: Duration) -> Result<()> {
    if compact.min_age > max_claim_delay {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "compaction horizon {:?} must exceed the claim delay {:?} (CompactOptions::with_min_age \
         vs ObjectStoreOptions::with_max_claim_delay), or it may delete a put that is committing; \
         raise the horizon or lower the claim delay",
        compact.min_age, max_claim_delay
    )))
}

/// Compacts one vault's log: writes snapshots, deletes what they cover.
#[derive(Debug)]
pub(crate) struct Compactor {
    objects: Arc<Objects>,
    log: Arc<Log>,
    /// See [`ObjectStoreOptions::with_max_claim_delay`](crate::ObjectStoreOptions::with_max_claim_delay).
    max_claim_delay: Duration,
}

impl Compactor {
    /// Compacts `log`, whose objects are `objects`, for handles that wait
    /// up to `max_claim_delay` to claim a slot.
    pub(crate) fn new(objects: Arc<Objects>, log: Arc<Log>, max_claim_delay: Duration) -> Self {
        Self {
            objects,
            log,
            max_claim_delay,
        }
    }

    /// Writes a snapshot at the head of the log, then deletes log entries
    /// (all but the newest), older snapshots, blobs no current record references, and superseded
    /// keyring versions, all only if older than
    /// [`CompactOptions::with_min_age`]. Safe to run while other devices
    /// read and write, and from several devices at once; run it now and then
    /// (say daily) from one of them to keep storage and first-use cost
    /// bounded.
    ///
    /// # Errors
    ///
    /// `InvalidInput` unless [`CompactOptions::with_min_age`] exceeds this
    /// handle's [`ObjectStoreOptions::with_max_claim_delay`](crate::ObjectStoreOptions::with_max_claim_delay):
    /// with a shorter horizon, compaction could delete the blobs of a put
    /// that is about to commit, or a log slot a writer still takes for free.
    pub(crate) async fn compact(&self, options: CompactOptions) -> Result<CompactReport> {
        check_horizon(&options, self.max_claim_delay)?;
        // Another device compacting at the same time may delete entries
        // this one listed: start again from its newer snapshot.
        for _ in 0..COMPACT_ATTEMPTS {
            if let Some(report) = self.compact_once(&options).await? {
                return Ok(report);
            }
        }
        Err(Error::Unavailable {
            message: "other devices kept compacting the vault at the same time; retry".into(),
            source: None,
        })
    }

    /// One compaction; `None` if log entries vanished under it.
    async fn compact_once(&self, options: &CompactOptions) -> Result<Option<CompactReport>> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let min_age_ms = i64::try_from(options.min_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff_ms = now_ms.saturating_sub(min_age_ms);
        let old = |meta: &ObjectMeta| meta.last_modified.timestamp_millis() <= cutoff_ms;

        let base = self.log.latest_snapshot().await?;
        let base_seq = base.as_ref().map(|s| s.seq);
        let (mut index, mut chats) = match base {
            Some(snapshot) => (
                Index::from_snapshot(&snapshot),
                snapshot
                    .chats
                    .into_iter()
                    .map(|c| (c.item.chat, c))
                    .collect(),
            ),
            None => (Index::genesis(), HashMap::new()),
        };
        let log = self.objects.list_numbered(self.log.dir(), 0).await?;
        let tail: Vec<u64> = log
            .iter()
            .map(|(seq, _)| *seq)
            .skip_while(|&seq| seq <= index.head())
            .enumerate()
            .take_while(|&(i, seq)| seq == index.head() + 1 + i as u64)
            .map(|(_, seq)| seq)
            .collect();
        for chunk in tail.chunks(512) {
            let Some(fetched) = self.log.fetch_entries_if_present(chunk).await? else {
                return Ok(None);
            };
            for (seq, entry) in fetched {
                let validity = index.apply(seq, entry.as_ref());
                let Some(entry) = entry else { continue };
                for (idx, (item, valid)) in entry.items.into_iter().zip(validity).enumerate() {
                    if valid {
                        let at = Position::of(seq, idx);
                        let item = EntryItem {
                            pre: Precondition::None,
                            ..item
                        };
                        chats.insert(item.chat, SnapshotChat { at, item });
                    }
                }
            }
        }
        let head = index.head();
        let mut report = CompactReport {
            snapshot_seq: head,
            ..CompactReport::default()
        };
        if head == 0 {
            return Ok(Some(report));
        }

        // Delete a prefix of the log, only entries the snapshot covers, and
        // never the newest: a handle whose index predates the snapshot
        // learns from the LIST after its head that the log moved on (a gap:
        // it restarts from the snapshot) instead of seeing an empty log,
        // missing every commit since, and re-creating deleted slots.
        let deletable: Vec<(u64, Path)> = log
            .iter()
            .take_while(|(seq, meta)| *seq < head && old(meta))
            .map(|(seq, meta)| (*seq, meta.location.clone()))
            .collect();
        let delete_through = deletable.last().map_or(0, |(seq, _)| *seq);

        if base_seq != Some(head) {
            let validity_from = (delete_through + 1).max(index.validity_from());
            let mut chats: Vec<SnapshotChat> = chats.values().cloned().collect();
            chats.sort_by_key(|c| c.at);
            let snapshot = Snapshot {
                seq: head,
                validity_from,
                invalid: index.invalid_from(validity_from).collect(),
                chats,
            };
            let path = self.objects.layout().snapshot(head);
            match self
                .objects
                .create(&path, encode_snapshot(&snapshot)?)
                .await
            {
                Ok(_) => {}
                // Another device compacted at the same head; replay is
                // deterministic, so its snapshot says the same.
                Err(e) if crate::error::is_taken(&e) => {}
                Err(e) => return Err(map_store_error(e, &format!("writing {path}"))),
            }
        }

        report.log_entries_deleted = self
            .objects
            .delete_all(deletable.into_iter().map(|(_, p)| p))
            .await?;

        let snapshots = self
            .objects
            .list_numbered(self.objects.layout().snap_dir(), 0)
            .await?;
        let superseded = snapshots
            .into_iter()
            .filter(|(seq, _)| *seq < head)
            .map(|(_, meta)| meta.location);
        report.snapshots_deleted = self.objects.delete_all(superseded).await?;

        let keep: HashSet<(ChatId, u64, WriteId)> = chats
            .values()
            .map(|c| (c.item.chat, c.item.version, c.item.write))
            .collect();
        let blobs = self
            .objects
            .list_blobs()
            .await?
            .into_iter()
            .filter(|(key, meta)| !keep.contains(key) && old(meta))
            .map(|(_, meta)| meta.location);
        report.blobs_deleted = self.objects.delete_all(blobs).await?;

        let mut keyrings = self
            .objects
            .list_numbered(self.objects.layout().keyring_dir(), 0)
            .await?;
        keyrings.pop();
        let superseded = keyrings
            .into_iter()
            .filter(|(_, meta)| old(meta))
            .map(|(_, meta)| meta.location);
        report.keyring_versions_deleted = self.objects.delete_all(superseded).await?;

        self.log.compacted(head).await;
        tracing::info!(?report, "compacted the vault");
        Ok(Some(report))
    }
}
