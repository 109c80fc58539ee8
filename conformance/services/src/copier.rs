//! A deterministic, simulated file-sync service over N local folders (one
//! per device), for tests that need the anomalies of Syncthing, Dropbox and
//! the like on demand and replayable from a seed.
//!
//! # Model
//!
//! The copier runs in [`Copier::step`]s; a test writes into the folders
//! between steps (never during one). A step:
//!
//! 1. **Scans** every folder in device order. Each folder is read whole
//!    (every regular file, recursively, its full content: a file a device
//!    replaced by temp + rename is seen before or after, never torn) and
//!    compared, path by path, with the copier's last known state of that
//!    folder (what it saw at the previous scan or wrote itself since). Each
//!    difference is a local change (creation, modification, deletion) and
//!    becomes an *update* with a new id (numbered in scan order from 1), the
//!    step as its time and a version vector: the merge of the vectors of
//!    every version of that path the device held, with its own counter
//!    increased (a local change follows everything the device had seen).
//!    One delivery of the update is queued for every other device.
//! 2. **Delivers** queued deliveries whose time has come, in queue order.
//!    Each device holds, per path, the versions no other version it
//!    received dominates (usually one). An incoming version:
//!    - equal to one held: already there, nothing happens; dominated by one
//!      held: stale, dropped;
//!    - dominating every held version: **applied**: its content is written
//!      (temp file + rename, parent directories created) or the file is
//!      deleted (then the parent directories it emptied are removed);
//!    - else **concurrent** with some (both sides changed the path since
//!      they last agreed): a conflict. The device keeps the concurrent
//!      versions side by side; the path shows the *winner*: content beats
//!      a deletion (a modification beats a concurrent delete: the file is
//!      kept, or re-created on the device that deleted it), then the higher
//!      update id wins. Every version that loses with a content different
//!      from the winner's is written to a **conflict copy** named by
//!      [`Faults::service`] after the loser's device and time (see
//!      [`Service::conflict_name`]); the next scan finds the copy as an
//!      ordinary new file, so it reaches every device, as with real
//!      services. What a path shows depends only on the set of versions,
//!      not on the order they arrived, so every device ends up agreeing.
//!
//! Directories are not items: a directory appears when a file under it
//! arrives and goes when the copier deletes its last file. Symbolic links
//! and paths that are a file on one device and a directory on another are
//! not supported. The copier's own temporary files (`.NAME.copier-tmp`) exist
//! only during a step.
//!
//! # Anomalies
//!
//! Chosen per delivery by the seeded generator ([`Faults`] gives each its
//! probability; all are 0 in [`Faults::none`], which copies faithfully:
//! every change reaches every device in the step that scanned it):
//!
//! - **delay** ([`Faults::delay`]): a delivery waits 1 to
//!   [`Faults::max_delay`] steps, and holds back every later delivery from
//!   the same device to the same device (a slow link: order kept);
//! - **reorder** ([`Faults::reorder`]): a delivery waits 1 to `max_delay`
//!   steps but later deliveries on that link overtake it (files created A
//!   then B can arrive B then A). Two versions of one path never overtake
//!   each other;
//! - **partial** ([`Faults::partial`]): an applied non-empty content first
//!   appears truncated (a strict prefix, possibly empty) and becomes whole 1
//!   to `max_delay` steps later, unless the path changed meanwhile (then the
//!   completion is dropped);
//! - **duplicate** ([`Faults::duplicate`]): an applied content is delivered
//!   again 1 to `max_delay` steps later and rewritten (same bytes, new file
//!   by temp + rename) if the path still holds it, else dropped;
//! - **resurrect** ([`Faults::resurrect`]): a device receiving the deletion
//!   of a file it still holds unchanged ignores the deletion and sends its
//!   copy again as a new update, which re-creates the file on every device
//!   (a client that had not seen the delete re-uploading).
//!
//! Contents are never invented: every content a folder ever holds was
//! written by a device, or is a prefix of such a content (partial).
//! [`Copier::settle`] turns every anomaly off, delivers everything queued
//! at once and steps until quiet: then every folder holds the same files
//! (conflict copies included).
//!
//! Everything is deterministic: the same folders, seed, faults and writes
//! between steps give the same [`Event`] log and the same files. The
//! generator is ChaCha8 (its output is fixed across `rand_chacha` releases).

use crate::tree::read_tree;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

/// The time of step 0 in conflict names: 2025-01-01T00:00:00Z. Step `n` is
/// `n` seconds later.
pub const CLOCK_START: u64 = 1_735_689_600;

/// Whose conflict-copy names the copier writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// `name.sync-conflict-YYYYMMDD-HHMMSS-DEVICEID.ext` (7 uppercase
    /// characters of the losing device's id).
    Syncthing,
    /// `name (DEVICE's conflicted copy YYYY-MM-DD).ext`.
    Dropbox,
    /// `name (conflicted copy YYYY-MM-DD HHMMSS).ext`.
    Nextcloud,
    /// `name-DEVICENAME.ext`.
    OneDrive,
    /// `name 2.ext`.
    ICloud,
}

impl Service {
    /// Every service, in declaration order.
    pub const ALL: [Service; 5] = [
        Service::Syncthing,
        Service::Dropbox,
        Service::Nextcloud,
        Service::OneDrive,
        Service::ICloud,
    ];

    /// The conflict copy of `path` (relative, kept in the same directory)
    /// for a losing version written on the device `device_id`
    /// (`device_name`) at `unix_seconds` (UTC). The extension is what
    /// follows the last dot of the file name (none for `.name` or `name`).
    /// `variant` 0 is the service's own name; when it is taken by other
    /// content, variant `k` adds ` (k)` before the extension (iCloud counts
    /// on instead: `name 3.ext`, …).
    pub fn conflict_name(
        &self,
        path: &Path,
        device_id: &str,
        device_name: &str,
        unix_seconds: u64,
        variant: u32,
    ) -> PathBuf {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (stem, ext) = match name.rfind('.') {
            Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
            _ => (name.as_str(), ""),
        };
        let (year, month, day, hour, minute, second) = civil(unix_seconds);
        let mut copy = match self {
            Service::Syncthing => format!(
                "{stem}.sync-conflict-{year:04}{month:02}{day:02}-{hour:02}{minute:02}{second:02}-{device_id}"
            ),
            Service::Dropbox => format!(
                "{stem} ({device_name}'s conflicted copy {year:04}-{month:02}-{day:02})"
            ),
            Service::Nextcloud => format!(
                "{stem} (conflicted copy {year:04}-{month:02}-{day:02} {hour:02}{minute:02}{second:02})"
            ),
            Service::OneDrive => format!("{stem}-{device_name}"),
            Service::ICloud => format!("{stem} {}", 2 + variant),
        };
        if variant > 0 && *self != Service::ICloud {
            copy.push_str(&format!(" ({variant})"));
        }
        copy.push_str(ext);
        path.with_file_name(copy)
    }
}

/// `(year, month, day, hour, minute, second)` of a Unix time, UTC
/// (proleptic Gregorian; H. Hinnant's `civil_from_days`).
fn civil(unix_seconds: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = unix_seconds / 86_400;
    let rest = unix_seconds % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day, rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Which anomalies a [`Copier`] injects, each as the probability (0 to 1)
/// that it strikes one delivery; see the module documentation for what each
/// does. Out-of-range probabilities are clamped.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Whose conflict-copy names to write.
    pub service: Service,
    /// A delivery (and every later one on its link) waits.
    pub delay: f64,
    /// A delivery waits while later ones on its link overtake it.
    pub reorder: f64,
    /// A content first appears truncated, whole later.
    pub partial: f64,
    /// A content is delivered (rewritten) again later.
    pub duplicate: f64,
    /// A deletion is answered by re-sending the file, re-creating it.
    pub resurrect: f64,
    /// The longest wait, in steps, of a delay, reorder, completion of a
    /// partial file or duplicate (at least 1 is used).
    pub max_delay: u64,
}

impl Faults {
    /// No anomaly: a faithful copier with Syncthing's conflict names.
    pub fn none() -> Faults {
        Faults {
            service: Service::Syncthing,
            delay: 0.0,
            reorder: 0.0,
            partial: 0.0,
            duplicate: 0.0,
            resurrect: 0.0,
            max_delay: 1,
        }
    }

    /// Every anomaly at a moderate rate (delay and reorder 0.3, partial and
    /// duplicate 0.2, resurrect 0.1, waits up to 4 steps) with `service`'s
    /// conflict names.
    pub fn all(service: Service) -> Faults {
        Faults {
            service,
            delay: 0.3,
            reorder: 0.3,
            partial: 0.2,
            duplicate: 0.2,
            resurrect: 0.1,
            max_delay: 4,
        }
    }

    /// These faults with `service`'s conflict names.
    pub fn with_service(mut self, service: Service) -> Faults {
        self.service = service;
        self
    }
}

/// What a scan found changed in a folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A file that was not there.
    Created,
    /// A file whose content changed.
    Modified,
    /// A file that is gone.
    Deleted,
}

/// How a delivery was scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Due in the step that queued it.
    Now,
    /// Delayed, holding back later deliveries on its link.
    Delayed,
    /// Delayed, overtaken by later deliveries on its link.
    Reordered,
}

/// What a delivered update did on the receiving device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Newer than the device's version: written (or deleted).
    Applied,
    /// Applied, but the content appears truncated for now
    /// ([`Event::Completed`] follows unless the path changes).
    AppliedPartially,
    /// The device already had this version.
    AlreadyHad,
    /// Older than the device's version: dropped.
    Stale,
    /// Concurrent with a version the device holds, and what the path shows
    /// has the same content: kept side by side, no conflict copy.
    MergedEqual,
    /// Concurrent: the delivered version won (the versions it beat, if they
    /// had other content, went to conflict copies).
    ConflictWon,
    /// Concurrent: a version the device holds won (the delivered content,
    /// if any, went to a conflict copy).
    ConflictLost,
    /// A deletion the device answered by re-sending its copy
    /// ([`Event::Resurrected`] follows).
    Resurrected,
}

/// One thing the copier did; [`Copier::log`] keeps them all, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A scan found a local change and made update `id` of it.
    Scanned {
        /// The step.
        step: u64,
        /// The device whose folder changed.
        device: usize,
        /// The file.
        path: PathBuf,
        /// The new update's id.
        id: u64,
        /// What changed.
        change: Change,
    },
    /// A delivery of update `id` was queued.
    Queued {
        /// The step.
        step: u64,
        /// The update's device.
        from: usize,
        /// The receiving device.
        to: usize,
        /// The update.
        id: u64,
        /// When it is due.
        due: u64,
        /// Why then.
        schedule: Schedule,
    },
    /// Update `id` reached device `to`.
    Delivered {
        /// The step.
        step: u64,
        /// The update's device.
        from: usize,
        /// The receiving device.
        to: usize,
        /// The file.
        path: PathBuf,
        /// The update.
        id: u64,
        /// What it did.
        outcome: Outcome,
    },
    /// A truncated content (`len` of `of` bytes) was written.
    PartialWritten {
        /// The step.
        step: u64,
        /// The device.
        device: usize,
        /// The file.
        path: PathBuf,
        /// The update.
        id: u64,
        /// Bytes written.
        len: usize,
        /// Bytes of the whole content.
        of: usize,
    },
    /// A truncated content was made whole.
    Completed {
        /// The step.
        step: u64,
        /// The device.
        device: usize,
        /// The file.
        path: PathBuf,
        /// The update.
        id: u64,
    },
    /// A duplicate delivery rewrote a file with the content it held.
    DuplicateRewritten {
        /// The step.
        step: u64,
        /// The device.
        device: usize,
        /// The file.
        path: PathBuf,
        /// The update.
        id: u64,
    },
    /// A completion or duplicate found the path changed and was dropped.
    Dropped {
        /// The step.
        step: u64,
        /// The device.
        device: usize,
        /// The file.
        path: PathBuf,
        /// The update.
        id: u64,
    },
    /// A conflict copy was written.
    ConflictCopy {
        /// The step.
        step: u64,
        /// The device it was written on.
        device: usize,
        /// The contested file.
        path: PathBuf,
        /// The copy.
        copy: PathBuf,
        /// The losing update.
        loser: u64,
    },
    /// A device ignored deletion `deleted` and re-sent its copy as `id`.
    Resurrected {
        /// The step.
        step: u64,
        /// The device.
        device: usize,
        /// The file.
        path: PathBuf,
        /// The ignored deletion.
        deleted: u64,
        /// The new update.
        id: u64,
    },
}

/// Version vector: device → counter.
type Vector = BTreeMap<usize, u64>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    Equal,
    Before,
    After,
    Concurrent,
}

/// How `a` relates to `b`.
fn compare(a: &Vector, b: &Vector) -> Order {
    let (mut less, mut more) = (false, false);
    for device in a.keys().chain(b.keys()) {
        let (x, y) = (
            a.get(device).copied().unwrap_or(0),
            b.get(device).copied().unwrap_or(0),
        );
        less |= x < y;
        more |= x > y;
    }
    match (less, more) {
        (false, false) => Order::Equal,
        (true, false) => Order::Before,
        (false, true) => Order::After,
        (true, true) => Order::Concurrent,
    }
}

fn merge(a: &Vector, b: &Vector) -> Vector {
    let mut merged = a.clone();
    for (device, counter) in b {
        let slot = merged.entry(*device).or_insert(0);
        *slot = (*slot).max(*counter);
    }
    merged
}

/// The version whose content a path shows among concurrent `versions`:
/// content beats deletion, then the higher id wins.
fn winner(versions: &[Version]) -> Option<&Version> {
    versions.iter().max_by_key(|v| (v.content.is_some(), v.id))
}

/// The content a path shows among `versions` (`None`: deleted or unknown).
fn shown(versions: &[Version]) -> Option<&Vec<u8>> {
    winner(versions).and_then(|v| v.content.as_ref())
}

/// Every vector of `versions` merged.
fn merged(versions: &[Version]) -> Vector {
    versions
        .iter()
        .fold(Vector::new(), |acc, v| merge(&acc, &v.vector))
}

/// One version of one path.
#[derive(Clone, Debug)]
struct Version {
    id: u64,
    origin: usize,
    at: u64,
    path: PathBuf,
    /// `None`: deleted.
    content: Option<Vec<u8>>,
    vector: Vector,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Update,
    /// Make a partial content whole; `len` bytes were written.
    Complete {
        len: usize,
    },
    Duplicate,
}

#[derive(Clone, Debug)]
struct Delivery {
    to: usize,
    version: Version,
    kind: Kind,
    due: u64,
    /// Later updates on the same link wait for this one.
    blocks: bool,
}

#[derive(Debug, Default)]
struct Device {
    /// For every path the device knows, its current versions: those no
    /// other version it received dominates (one, unless concurrent versions
    /// met; deletions included), by id.
    versions: BTreeMap<PathBuf, Vec<Version>>,
    /// The folder as last scanned or written by the copier.
    known: BTreeMap<PathBuf, Vec<u8>>,
}

/// Whether `relative` is one of the copier's own temporary files.
fn is_copier_temp(relative: &Path) -> bool {
    relative
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with('.') && name.ends_with(".copier-tmp"))
}

/// A simulated file-sync service over one folder per device; see the
/// module documentation.
#[derive(Debug)]
pub struct Copier {
    folders: Vec<PathBuf>,
    faults: Faults,
    settling: bool,
    rng: ChaCha8Rng,
    step: u64,
    next_id: u64,
    device_ids: Vec<String>,
    devices: Vec<Device>,
    /// Queued deliveries, in queue order.
    queue: Vec<Delivery>,
    log: Vec<Event>,
}

impl Copier {
    /// A copier over `folders` (device `i` owns `folders[i]`; each is
    /// created if missing), its anomalies drawn from `seed`. Files already
    /// in the folders count as created at the first step.
    pub fn new(folders: Vec<PathBuf>, seed: u64, faults: Faults) -> io::Result<Copier> {
        for folder in &folders {
            std::fs::create_dir_all(folder)?;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let device_ids = folders
            .iter()
            .map(|_| {
                (0..7)
                    .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
                    .collect()
            })
            .collect();
        Ok(Copier {
            devices: folders.iter().map(|_| Device::default()).collect(),
            folders,
            faults,
            settling: false,
            rng,
            step: 0,
            next_id: 1,
            device_ids,
            queue: Vec::new(),
            log: Vec::new(),
        })
    }

    /// Device `i`'s folder. Panics when `i` is out of range.
    pub fn folder(&self, i: usize) -> &Path {
        &self.folders[i]
    }

    /// Device `i`'s 7-character id (in Syncthing conflict names). Panics
    /// when `i` is out of range.
    pub fn device_id(&self, i: usize) -> &str {
        &self.device_ids[i]
    }

    /// Device `i`'s name, `device<i>` (in Dropbox and OneDrive conflict
    /// names).
    pub fn device_name(&self, i: usize) -> String {
        format!("device{i}")
    }

    /// The anomalies in force.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Changes the anomalies from the next step on (queued deliveries keep
    /// their schedule).
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// How many steps have run.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// How many deliveries are queued.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Every event so far, in order.
    pub fn log(&self) -> &[Event] {
        &self.log
    }

    /// Every file of device `i`'s folder (recursively, by relative path,
    /// with its content).
    pub fn files(&self, i: usize) -> io::Result<BTreeMap<PathBuf, Vec<u8>>> {
        read_tree(&self.folders[i], &is_copier_temp)
    }

    /// Runs one step (scan every folder, then deliver what is due) and
    /// returns its events.
    pub fn step(&mut self) -> io::Result<&[Event]> {
        self.step += 1;
        let first = self.log.len();
        for device in 0..self.devices.len() {
            self.scan(device)?;
        }
        self.deliver()?;
        Ok(&self.log[first..])
    }

    /// Steps until a step has no event and nothing is queued; returns how
    /// many steps ran. Fails after `max_steps` steps without quiet.
    pub fn run_until_quiet(&mut self, max_steps: usize) -> io::Result<usize> {
        for ran in 1..=max_steps {
            let quiet = self.step()?.is_empty();
            if quiet && self.queue.is_empty() {
                return Ok(ran);
            }
        }
        Err(io::Error::other(format!(
            "the copier was not quiet after {max_steps} steps ({} deliveries queued)",
            self.queue.len()
        )))
    }

    /// Turns every anomaly off (the naming style stays), makes every queued
    /// delivery due at once and runs until quiet (at most `max_steps`
    /// steps). Afterwards every folder holds the same files, unless a test
    /// writes again.
    pub fn settle(&mut self, max_steps: usize) -> io::Result<usize> {
        self.faults = Faults::none().with_service(self.faults.service);
        self.settling = true;
        let result = self.run_until_quiet(max_steps);
        self.settling = false;
        result
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.rng.gen_bool(probability.clamp(0.0, 1.0))
    }

    fn wait(&mut self) -> u64 {
        self.rng.gen_range(1..=self.faults.max_delay.max(1))
    }

    /// Compares device `d`'s folder with what the copier knew of it and
    /// turns each difference into an update.
    fn scan(&mut self, d: usize) -> io::Result<()> {
        let now = read_tree(&self.folders[d], &is_copier_temp)?;
        let known = std::mem::take(&mut self.devices[d].known);
        let paths: BTreeSet<&PathBuf> = known.keys().chain(now.keys()).collect();
        for path in paths {
            let (before, after) = (known.get(path), now.get(path));
            if before == after {
                continue;
            }
            let change = match (before, after) {
                (None, _) => Change::Created,
                (_, None) => Change::Deleted,
                _ => Change::Modified,
            };
            // A local change follows every version the device had.
            let mut vector = self.devices[d]
                .versions
                .get(path)
                .map(|versions| merged(versions))
                .unwrap_or_default();
            *vector.entry(d).or_insert(0) += 1;
            let version = self.new_version(d, path.clone(), after.cloned(), vector);
            self.log.push(Event::Scanned {
                step: self.step,
                device: d,
                path: path.clone(),
                id: version.id,
                change,
            });
            self.devices[d]
                .versions
                .insert(path.clone(), vec![version.clone()]);
            self.broadcast(&version);
        }
        self.devices[d].known = now;
        Ok(())
    }

    fn new_version(
        &mut self,
        origin: usize,
        path: PathBuf,
        content: Option<Vec<u8>>,
        vector: Vector,
    ) -> Version {
        let id = self.next_id;
        self.next_id += 1;
        Version {
            id,
            origin,
            at: self.step,
            path,
            content,
            vector,
        }
    }

    /// Queues `version` for every device but its origin.
    fn broadcast(&mut self, version: &Version) {
        for to in 0..self.devices.len() {
            if to == version.origin {
                continue;
            }
            let (due, schedule, blocks) = if self.chance(self.faults.delay) {
                (self.step + self.wait(), Schedule::Delayed, true)
            } else if self.chance(self.faults.reorder) {
                (self.step + self.wait(), Schedule::Reordered, false)
            } else {
                (self.step, Schedule::Now, true)
            };
            self.log.push(Event::Queued {
                step: self.step,
                from: version.origin,
                to,
                id: version.id,
                due,
                schedule,
            });
            self.queue.push(Delivery {
                to,
                version: version.clone(),
                kind: Kind::Update,
                due,
                blocks,
            });
        }
    }

    /// Delivers, in queue order, every due delivery not held back by an
    /// earlier one (on the same link: a blocking one, or one of the same
    /// path). Deliveries queued meanwhile wait for the next step.
    fn deliver(&mut self) -> io::Result<()> {
        let queue = std::mem::take(&mut self.queue);
        let mut kept = Vec::new();
        let mut blocked_links = BTreeSet::new();
        let mut blocked_paths = BTreeSet::new();
        for delivery in queue {
            let link = (delivery.version.origin, delivery.to);
            let update = delivery.kind == Kind::Update;
            let held = update
                && (blocked_links.contains(&link)
                    || blocked_paths.contains(&(link, delivery.version.path.clone())));
            if held || (delivery.due > self.step && !self.settling) {
                if update {
                    blocked_paths.insert((link, delivery.version.path.clone()));
                    if delivery.blocks && !self.settling {
                        blocked_links.insert(link);
                    }
                }
                kept.push(delivery);
                continue;
            }
            match delivery.kind {
                Kind::Update => self.receive(delivery.to, &delivery.version)?,
                Kind::Complete { len } => self.complete(delivery.to, &delivery.version, len)?,
                Kind::Duplicate => self.duplicate(delivery.to, &delivery.version)?,
            }
        }
        kept.append(&mut self.queue);
        self.queue = kept;
        Ok(())
    }

    fn receive(&mut self, to: usize, incoming: &Version) -> io::Result<()> {
        let path = incoming.path.clone();
        let before = self.devices[to]
            .versions
            .get(&path)
            .cloned()
            .unwrap_or_default();
        let orders: Vec<Order> = before
            .iter()
            .map(|v| compare(&incoming.vector, &v.vector))
            .collect();
        let mut resurrected = None;
        let outcome = if orders.contains(&Order::Equal) {
            Outcome::AlreadyHad
        } else if orders.contains(&Order::Before) {
            Outcome::Stale
        } else if orders.iter().all(|order| *order == Order::After) {
            // Newer than everything the device had.
            let held = shown(&before).cloned();
            let holds_it = held.is_some() && self.devices[to].known.get(&path) == held.as_ref();
            if incoming.content.is_none() && holds_it && self.chance(self.faults.resurrect) {
                let mut vector = merge(&merged(&before), &incoming.vector);
                *vector.entry(to).or_insert(0) += 1;
                let resent = self.new_version(to, path.clone(), held, vector);
                self.devices[to]
                    .versions
                    .insert(path.clone(), vec![resent.clone()]);
                resurrected = Some(resent);
                Outcome::Resurrected
            } else {
                self.devices[to]
                    .versions
                    .insert(path.clone(), vec![incoming.clone()]);
                self.show(to, &path, true)?
            }
        } else {
            // Concurrent with some of the device's versions: they stay side
            // by side with it; what it dominates goes.
            let mut after: Vec<Version> = before
                .iter()
                .zip(&orders)
                .filter(|(_, order)| **order == Order::Concurrent)
                .map(|(v, _)| v.clone())
                .collect();
            after.push(incoming.clone());
            after.sort_by_key(|v| v.id);
            self.devices[to]
                .versions
                .insert(path.clone(), after.clone());
            self.show(to, &path, false)?;
            let losers_before: BTreeSet<u64> = match winner(&before) {
                Some(w) => before
                    .iter()
                    .filter(|v| v.id != w.id)
                    .map(|v| v.id)
                    .collect(),
                None => BTreeSet::new(),
            };
            let Some(won) = winner(&after).cloned() else {
                return Err(io::Error::other("a conflict without versions"));
            };
            for loser in &after {
                if loser.id == won.id || losers_before.contains(&loser.id) {
                    continue;
                }
                if let (Some(lost), Some(kept)) = (&loser.content, &won.content) {
                    if lost != kept {
                        self.conflict_copy(to, loser, lost)?;
                    }
                }
            }
            if won.id == incoming.id {
                Outcome::ConflictWon
            } else if won.content == incoming.content {
                Outcome::MergedEqual
            } else {
                Outcome::ConflictLost
            }
        };
        self.log.push(Event::Delivered {
            step: self.step,
            from: incoming.origin,
            to,
            path: path.clone(),
            id: incoming.id,
            outcome,
        });
        if let Some(resent) = resurrected {
            self.log.push(Event::Resurrected {
                step: self.step,
                device: to,
                path,
                deleted: incoming.id,
                id: resent.id,
            });
            self.broadcast(&resent);
        }
        Ok(())
    }

    /// Brings `path` on device `to`'s disk to the content its versions show
    /// (deleting it when they show none); with `faults`, a write may be
    /// partial or duplicated later. Returns `Applied` or `AppliedPartially`.
    fn show(&mut self, to: usize, path: &Path, faults: bool) -> io::Result<Outcome> {
        let versions = self.devices[to]
            .versions
            .get(path)
            .cloned()
            .unwrap_or_default();
        let Some(shown_version) = winner(&versions).cloned() else {
            return Ok(Outcome::Applied);
        };
        let Some(content) = &shown_version.content else {
            self.remove(to, path)?;
            return Ok(Outcome::Applied);
        };
        if self.devices[to].known.get(path) == Some(content) {
            return Ok(Outcome::Applied);
        }
        let mut outcome = Outcome::Applied;
        if faults && !content.is_empty() && self.chance(self.faults.partial) {
            let len = self.rng.gen_range(0..content.len());
            self.write(to, path, &content[..len])?;
            self.log.push(Event::PartialWritten {
                step: self.step,
                device: to,
                path: path.to_owned(),
                id: shown_version.id,
                len,
                of: content.len(),
            });
            let due = self.step + self.wait();
            self.queue.push(Delivery {
                to,
                version: shown_version.clone(),
                kind: Kind::Complete { len },
                due,
                blocks: false,
            });
            outcome = Outcome::AppliedPartially;
        } else {
            self.write(to, path, content)?;
        }
        if faults && self.chance(self.faults.duplicate) {
            let due = self.step + self.wait();
            self.queue.push(Delivery {
                to,
                version: shown_version,
                kind: Kind::Duplicate,
                due,
                blocks: false,
            });
        }
        Ok(outcome)
    }

    /// Writes `content` (the loser's) to its conflict copy on device `to`,
    /// unless that copy is already there. The copy is not recorded as known:
    /// the next scan finds it as a new file of this device.
    fn conflict_copy(&mut self, to: usize, loser: &Version, content: &[u8]) -> io::Result<()> {
        let folder = self.folders[to].clone();
        for variant in 0.. {
            let copy = self.faults.service.conflict_name(
                &loser.path,
                &self.device_ids[loser.origin],
                &self.device_name(loser.origin),
                CLOCK_START + loser.at,
                variant,
            );
            let on_disk = match std::fs::read(folder.join(&copy)) {
                Ok(found) => Some(found),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            // Already there, or arriving (a partial copy of that content
            // from a device that made the same copy).
            let arriving = || {
                self.devices[to]
                    .versions
                    .get(&copy)
                    .and_then(|versions| shown(versions))
                    .map(Vec::as_slice)
                    == Some(content)
            };
            match on_disk {
                Some(found) if found == content => return Ok(()),
                Some(found) if content.starts_with(&found) && arriving() => return Ok(()),
                Some(_) => continue,
                None => {
                    write_atomically(&folder, &copy, content)?;
                    self.log.push(Event::ConflictCopy {
                        step: self.step,
                        device: to,
                        path: loser.path.clone(),
                        copy,
                        loser: loser.id,
                    });
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn complete(&mut self, to: usize, version: &Version, len: usize) -> io::Result<()> {
        let path = version.path.clone();
        // Still that content (a merge may have renamed its version), still
        // truncated as written.
        let current = self.devices[to]
            .versions
            .get(&path)
            .and_then(|versions| shown(versions));
        let still = current.is_some()
            && current == version.content.as_ref()
            && self.devices[to].known.get(&path).map(Vec::as_slice)
                == current.map(|content| &content[..len.min(content.len())]);
        self.rewrite_if(to, version, still, |step, device, path, id| {
            Event::Completed {
                step,
                device,
                path,
                id,
            }
        })
    }

    fn duplicate(&mut self, to: usize, version: &Version) -> io::Result<()> {
        let path = version.path.clone();
        let still = version.content.is_some()
            && self.devices[to]
                .versions
                .get(&path)
                .and_then(|versions| shown(versions))
                == version.content.as_ref()
            && self.devices[to].known.get(&path) == version.content.as_ref();
        self.rewrite_if(to, version, still, |step, device, path, id| {
            Event::DuplicateRewritten {
                step,
                device,
                path,
                id,
            }
        })
    }

    /// Writes `version`'s content again at its path on device `to` and logs
    /// `done` if the path `still` shows it; else logs the delivery dropped.
    fn rewrite_if(
        &mut self,
        to: usize,
        version: &Version,
        still: bool,
        done: fn(u64, usize, PathBuf, u64) -> Event,
    ) -> io::Result<()> {
        let path = version.path.clone();
        let event = match (&version.content, still) {
            (Some(content), true) => {
                self.write(to, &path, content)?;
                done(self.step, to, path, version.id)
            }
            _ => Event::Dropped {
                step: self.step,
                device: to,
                path,
                id: version.id,
            },
        };
        self.log.push(event);
        Ok(())
    }

    /// Writes `content` at `path` in device `to`'s folder and records it as
    /// known (so the next scan does not take it for a local change).
    fn write(&mut self, to: usize, path: &Path, content: &[u8]) -> io::Result<()> {
        write_atomically(&self.folders[to], path, content)?;
        self.devices[to]
            .known
            .insert(path.to_owned(), content.to_vec());
        Ok(())
    }

    /// Deletes `path` from device `to`'s folder (if there), then every
    /// parent directory the deletion left empty.
    fn remove(&mut self, to: usize, path: &Path) -> io::Result<()> {
        let folder = &self.folders[to];
        match std::fs::remove_file(folder.join(path)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.devices[to].known.remove(path);
        let mut parent = path.parent();
        while let Some(dir) = parent.filter(|dir| !dir.as_os_str().is_empty()) {
            let full = folder.join(dir);
            let empty = match std::fs::read_dir(&full) {
                Ok(mut entries) => entries.next().is_none(),
                Err(_) => false,
            };
            if !empty || std::fs::remove_dir(&full).is_err() {
                break;
            }
            parent = dir.parent();
        }
        Ok(())
    }
}

/// Writes `content` to `folder/path` through a temporary file in the same
/// directory and a rename, creating parent directories.
fn write_atomically(folder: &Path, path: &Path, content: &[u8]) -> io::Result<()> {
    let target = folder.join(path);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = target.with_file_name(format!(".{name}.copier-tmp"));
    std::fs::write(&temp, content)?;
    std::fs::rename(&temp, &target)
}

#[cfg(test)]
mod tests {
    use super::{civil, compare, Order, Vector};

    #[test]
    fn civil_dates_match_known_instants() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(super::CLOCK_START, 1_735_689_600);
        assert_eq!(civil(1_735_689_600), (2025, 1, 1, 0, 0, 0));
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(civil(1_709_251_199), (2024, 2, 29, 23, 59, 59));
    }

    #[test]
    fn version_vectors_order() {
        let v = |pairs: &[(usize, u64)]| pairs.iter().copied().collect::<Vector>();
        assert_eq!(compare(&v(&[(0, 1)]), &v(&[(0, 1)])), Order::Equal);
        assert_eq!(compare(&v(&[(0, 1)]), &v(&[(0, 2)])), Order::Before);
        assert_eq!(compare(&v(&[(0, 2), (1, 1)]), &v(&[(0, 2)])), Order::After);
        assert_eq!(compare(&v(&[(0, 1)]), &v(&[(1, 1)])), Order::Concurrent);
    }
}
