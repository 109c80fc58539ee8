//! Push for a local folder: filesystem notifications on `log/` (or, in the
//! per-device layout, everything under `dev/`), with
//! polling as the safety net.
//!
//! [`FolderNotifications`] is the push source the builder gives a folder vault: one
//! watcher, started on first use, feeds every transport it hands out. A transport wakes when anything appears in `log/` (a local
//! writer, another process, a file-sync tool renaming a file into place) or
//! when its polling interval elapses, whichever comes first. Notifications
//! can be lost (a full kernel queue, a network file system that sends none);
//! the interval bounds the delay then.

use crate::FolderLayout;
use async_trait::async_trait;
use chatvault_core::{Polling, PullOutcome, Transport};
use chatvault_object_store::{NotificationSource, DEVICES_DIR};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// The notification transports of a folder vault: [`FsNotifications`] fed by one watcher
/// of the folder's `log/` (per-device layout: everything under `dev/`),
/// started when the first transport is asked for.
#[derive(Debug)]
pub struct FolderNotifications {
    /// The directory to watch.
    dir: PathBuf,
    /// Whether to watch below it too (the per-device layout).
    recursive: bool,
    poll_interval: Duration,
    watcher: OnceLock<Arc<LogWatcher>>,
}

impl FolderNotifications {
    /// The push source of the vault in `folder`, laid out as `layout`,
    /// polling every `poll_interval` when no notification arrives.
    pub fn new(folder: &Path, layout: FolderLayout, poll_interval: Duration) -> Self {
        let (dir, recursive) = match layout {
            FolderLayout::SharedLog => (folder.join("log"), false),
            FolderLayout::PerDevice => (folder.join(DEVICES_DIR), true),
        };
        Self {
            dir,
            recursive,
            poll_interval,
            watcher: OnceLock::new(),
        }
    }
}

impl NotificationSource for FolderNotifications {
    fn transport(&self) -> Arc<dyn Transport> {
        let watcher = self
            .watcher
            .get_or_init(|| LogWatcher::start(&self.dir, self.recursive));
        Arc::new(watcher.transport(self.poll_interval))
    }
}

/// The folder watcher shared by a storage's transports.
pub(crate) struct LogWatcher {
    changes: watch::Sender<u64>,
    /// Kept alive for as long as a transport may wait on it; `None` if the
    /// platform refused a watch (then transports only poll).
    _watcher: Mutex<Option<RecommendedWatcher>>,
}

impl std::fmt::Debug for LogWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWatcher").finish_non_exhaustive()
    }
}

impl LogWatcher {
    /// Starts watching `log_dir` (created if missing); with `recursive`,
    /// everything below it too (the per-device layout's `dev/`, where each
    /// device's log is a subdirectory that may appear at any time).
    pub(crate) fn start(log_dir: &Path, recursive: bool) -> Arc<Self> {
        let (changes, _) = watch::channel(0u64);
        let notifier = changes.clone();
        let watcher = std::fs::create_dir_all(log_dir)
            .map_err(notify::Error::io)
            .and_then(|()| {
                notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event
                {
                    Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
                    Ok(_) => notifier.send_modify(|n| *n = n.wrapping_add(1)),
                    // A lost event (queue overflow): wake up and look.
                    Err(_) => notifier.send_modify(|n| *n = n.wrapping_add(1)),
                })
            })
            .and_then(|mut watcher| {
                let mode = if recursive {
                    RecursiveMode::Recursive
                } else {
                    RecursiveMode::NonRecursive
                };
                watcher.watch(log_dir, mode)?;
                Ok(watcher)
            });
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(dir = %log_dir.display(), error = %e, "cannot watch the vault folder; polling only");
                None
            }
        };
        Arc::new(Self {
            changes,
            _watcher: Mutex::new(watcher),
        })
    }

    pub(crate) fn transport(self: &Arc<Self>, interval: Duration) -> FsNotifications {
        FsNotifications {
            changes: tokio::sync::Mutex::new(self.changes.subscribe()),
            polling: Polling::new(interval),
            _watcher: Arc::clone(self),
        }
    }
}

/// A [`Transport`] that wakes on filesystem notifications or, at the latest,
/// after its polling interval (with jitter and backoff while pulls fail).
pub struct FsNotifications {
    changes: tokio::sync::Mutex<watch::Receiver<u64>>,
    polling: Polling,
    _watcher: Arc<LogWatcher>,
}

impl std::fmt::Debug for FsNotifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsNotifications")
            .field("polling", &self.polling)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Transport for FsNotifications {
    async fn wait(&self, previous: PullOutcome) {
        let notified = async {
            let mut changes = self.changes.lock().await;
            if changes.changed().await.is_err() {
                // The sender lives in `_watcher`, which this transport owns;
                // if it is ever gone, fall back to the interval alone.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = notified => {}
            () = self.polling.wait(previous) => {}
        }
    }
}
