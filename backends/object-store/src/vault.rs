//! [`ObjectStoreVault`]: a vault on an object store in either layout, plus
//! the notification transport its backend configures. It is what the `fs` and `s3`
//! builders return; the one place that dispatches between the layouts.

use crate::compaction::CompactReport;
use crate::devices::DeviceLogStorage;
use crate::options::CompactOptions;
use crate::storage::ObjectStoreStorage;
use chatvault_core::layer::LayeredStorage;
use chatvault_core::{Capabilities, Result, Storage, Transport};
use object_store::path::Path;
use std::fmt;
use std::sync::Arc;

/// How a vault lays out its objects (`docs/design.md` §5 and §5.4).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum VaultLayout {
    /// One log per device under `dev/<vault>.<writer>/`
    /// ([`DeviceLogStorage`]): no two devices ever create or change the same
    /// object, so a file-sync service that gives each device its own copy of
    /// a folder (Syncthing, Dropbox, a NAS client) never has two versions of
    /// one file to choose between. The default for a new folder.
    PerDevice,
    /// One shared log at the vault's prefix ([`ObjectStoreStorage`]),
    /// committed by create-if-absent: for a store every writer sees at once
    /// (S3, a local disk, NFS). Folders created by releases before the
    /// per-device layout use it, and keep it when opened.
    SharedLog,
}

/// Makes the notification transport of an [`ObjectStoreVault`]
/// ([`Storage::notifications`]): set by a backend whose store can say when objects
/// appear (a folder's file-system notifications).
pub trait NotificationSource: Send + Sync + fmt::Debug {
    /// A transport that wakes the sync engine when the vault may have
    /// changed.
    fn transport(&self) -> Arc<dyn Transport>;
}

/// The storage of one layout.
#[derive(Debug)]
enum Layout {
    SharedLog(ObjectStoreStorage),
    PerDevice(DeviceLogStorage),
}

/// A vault on an object store in either [`VaultLayout`], with an optional
/// notification transport. The `fs` and `s3` backends configure one; every
/// [`Storage`] call goes to the layout's storage, and only
/// [`Storage::capabilities`] and [`Storage::notifications`] add the transport.
///
/// ```
/// use chatvault_core::Storage;
/// use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage, ObjectStoreVault, VaultLayout};
/// use object_store::{memory::InMemory, path::Path};
/// use std::sync::Arc;
///
/// let log = ObjectStoreStorage::new(Arc::new(InMemory::new()), Path::from("alice"), ObjectStoreOptions::default());
/// let vault = ObjectStoreVault::shared_log(log);
/// assert_eq!(vault.folder_layout(), VaultLayout::SharedLog);
/// assert!(!vault.capabilities().notifications);
/// ```
#[derive(Debug)]
pub struct ObjectStoreVault {
    layout: Layout,
    notifications: Option<Box<dyn NotificationSource>>,
}

impl ObjectStoreVault {
    /// A vault in the shared-log layout.
    pub fn shared_log(storage: ObjectStoreStorage) -> Self {
        Self {
            layout: Layout::SharedLog(storage),
            notifications: None,
        }
    }

    /// A vault in the per-device layout.
    pub fn per_device(storage: DeviceLogStorage) -> Self {
        Self {
            layout: Layout::PerDevice(storage),
            notifications: None,
        }
    }

    /// Pushes with transports from `source`; the vault's capabilities then
    /// report `notifications`.
    pub fn with_push(mut self, source: impl NotificationSource + 'static) -> Self {
        self.notifications = Some(Box::new(source));
        self
    }

    /// The layout this vault uses.
    pub fn folder_layout(&self) -> VaultLayout {
        match &self.layout {
            Layout::SharedLog(_) => VaultLayout::SharedLog,
            Layout::PerDevice(_) => VaultLayout::PerDevice,
        }
    }

    /// The shared log, for what [`Storage`] does not cover; `None` in the
    /// per-device layout (see [`ObjectStoreVault::devices`]).
    pub fn layout(&self) -> Option<&ObjectStoreStorage> {
        match &self.layout {
            Layout::SharedLog(storage) => Some(storage),
            Layout::PerDevice(_) => None,
        }
    }

    /// The per-device vault, when the vault uses that layout.
    pub fn devices(&self) -> Option<&DeviceLogStorage> {
        match &self.layout {
            Layout::SharedLog(_) => None,
            Layout::PerDevice(storage) => Some(storage),
        }
    }

    /// The prefix the vault lives under.
    pub fn prefix(&self) -> &Path {
        match &self.layout {
            Layout::SharedLog(storage) => storage.prefix(),
            Layout::PerDevice(storage) => storage.prefix(),
        }
    }

    /// Compacts the log this handle writes (in the per-device layout, this
    /// device's own); see [`ObjectStoreStorage::compact`].
    pub async fn compact(&self, options: CompactOptions) -> Result<CompactReport> {
        match &self.layout {
            Layout::SharedLog(storage) => storage.compact(options).await,
            Layout::PerDevice(storage) => storage.own().await?.compact(options).await,
        }
    }
}

impl LayeredStorage for ObjectStoreVault {
    fn inner(&self) -> &dyn Storage {
        match &self.layout {
            Layout::SharedLog(storage) => storage,
            Layout::PerDevice(storage) => storage,
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            notifications: self.notifications.is_some(),
            ..self.inner().capabilities()
        }
    }

    fn notifications(&self) -> Option<Arc<dyn Transport>> {
        self.notifications.as_ref().map(|source| source.transport())
    }
}
