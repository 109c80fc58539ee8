//! [`LayeredStorage`]: a storage that wraps another and forwards every call
//! to it unless it says otherwise, in the manner of OpenDAL's
//! `LayeredAccessor` and tracing-subscriber's `Layered`; and [`Op`], the
//! names of the [`Storage`] operations that layers count, trace and fault.

use crate::ids::{BlobId, ChatId};
use crate::storage::{
    BlobPage, Capabilities, ChangePage, Cursor, KeyringBlob, MaintenanceBudget, MaintenanceReport,
    Part, PutPrecondition, SealedRecord, Storage,
};
use crate::transport::Transport;
use crate::Result;
use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// One [`Storage`] operation, as layers count, trace and fault it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// [`Storage::changes`].
    Changes,
    /// [`Storage::get`].
    Get,
    /// [`Storage::put`].
    Put,
    /// [`Storage::put_batch`].
    PutBatch,
    /// [`Storage::get_keyring`].
    GetKeyring,
    /// [`Storage::put_keyring`].
    PutKeyring,
    /// [`Storage::maintain`].
    Maintain,
    /// [`Storage::put_blob`].
    PutBlob,
    /// [`Storage::get_blob`].
    GetBlob,
    /// [`Storage::list_blobs`].
    ListBlobs,
    /// [`Storage::delete_blob`].
    DeleteBlob,
}

impl Op {
    /// Every operation, in trait order.
    pub const ALL: [Op; 11] = [
        Op::Changes,
        Op::Get,
        Op::Put,
        Op::PutBatch,
        Op::GetKeyring,
        Op::PutKeyring,
        Op::Maintain,
        Op::PutBlob,
        Op::GetBlob,
        Op::ListBlobs,
        Op::DeleteBlob,
    ];

    /// The method's name (`"put_batch"`), as metrics and logs show it.
    pub fn name(self) -> &'static str {
        match self {
            Op::Changes => "changes",
            Op::Get => "get",
            Op::Put => "put",
            Op::PutBatch => "put_batch",
            Op::GetKeyring => "get_keyring",
            Op::PutKeyring => "put_keyring",
            Op::Maintain => "maintain",
            Op::PutBlob => "put_blob",
            Op::GetBlob => "get_blob",
            Op::ListBlobs => "list_blobs",
            Op::DeleteBlob => "delete_blob",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A storage wrapped around another ([`inner`](Self::inner)) that changes
/// only some of its behaviour. Every method forwards to the inner storage
/// by default, including those whose [`Storage`] default would otherwise
/// bypass it ([`put_batch`](Storage::put_batch),
/// [`maintain`](Storage::maintain), [`notifications`](Storage::notifications),
/// the blob operations); a layer
/// overrides what it changes and nothing else, and every `LayeredStorage`
/// is a [`Storage`] through a blanket implementation.
///
/// A layer that changes [`put`](Storage::put) usually changes
/// [`put_batch`](Storage::put_batch) too: it reaches the inner storage
/// directly, not through the layer's `put`. (A tombstone written with
/// [`StorageExt::delete`](crate::StorageExt::delete) is a `put`.)
///
/// ```
/// use chatvault_core::layer::LayeredStorage;
/// use chatvault_core::{DynStorage, Storage};
///
/// /// Says it cannot push, whatever the backend underneath can.
/// #[derive(Debug)]
/// struct NoPush(DynStorage);
///
/// impl LayeredStorage for NoPush {
///     fn inner(&self) -> &dyn Storage {
///         self.0.as_ref()
///     }
///
///     fn capabilities(&self) -> chatvault_core::Capabilities {
///         chatvault_core::Capabilities { notifications: false, ..self.0.capabilities() }
///     }
/// }
/// ```
#[async_trait]
pub trait LayeredStorage: Send + Sync + fmt::Debug {
    /// The storage this one wraps.
    fn inner(&self) -> &dyn Storage;

    /// [`Storage::capabilities`]; forwards by default.
    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }

    /// [`Storage::changes`]; forwards by default.
    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        self.inner().changes(since, limit).await
    }

    /// [`Storage::get`]; forwards by default.
    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        self.inner().get(chats, part).await
    }

    /// [`Storage::put`]; forwards by default.
    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        self.inner().put(record, precondition).await
    }

    /// [`Storage::put_batch`]; forwards by default.
    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        self.inner().put_batch(batch).await
    }

    /// [`Storage::get_keyring`]; forwards by default.
    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        self.inner().get_keyring().await
    }

    /// [`Storage::put_keyring`]; forwards by default.
    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        self.inner().put_keyring(bytes, precondition).await
    }

    /// [`Storage::maintain`]; forwards by default.
    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        self.inner().maintain(budget).await
    }

    /// [`Storage::put_blob`]; forwards by default.
    async fn put_blob(&self, id: BlobId, sealed: Bytes) -> Result<()> {
        self.inner().put_blob(id, sealed).await
    }

    /// [`Storage::get_blob`]; forwards by default.
    async fn get_blob(&self, id: BlobId) -> Result<Option<Bytes>> {
        self.inner().get_blob(id).await
    }

    /// [`Storage::list_blobs`]; forwards by default.
    async fn list_blobs(&self, after: Option<BlobId>, limit: usize) -> Result<BlobPage> {
        self.inner().list_blobs(after, limit).await
    }

    /// [`Storage::missing_blobs`]; forwards by default.
    async fn missing_blobs(&self, ids: &[BlobId]) -> Result<Vec<BlobId>> {
        self.inner().missing_blobs(ids).await
    }

    /// [`Storage::delete_blob`]; forwards by default.
    async fn delete_blob(&self, id: BlobId) -> Result<()> {
        self.inner().delete_blob(id).await
    }

    /// [`Storage::notifications`]; forwards by default.
    fn notifications(&self) -> Option<Arc<dyn Transport>> {
        self.inner().notifications()
    }
}

#[async_trait]
impl<T: LayeredStorage> Storage for T {
    fn capabilities(&self) -> Capabilities {
        LayeredStorage::capabilities(self)
    }

    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        LayeredStorage::changes(self, since, limit).await
    }

    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        LayeredStorage::get(self, chats, part).await
    }

    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        LayeredStorage::put(self, record, precondition).await
    }

    async fn put_batch(&self, batch: Vec<(SealedRecord, PutPrecondition)>) -> Vec<Result<()>> {
        LayeredStorage::put_batch(self, batch).await
    }

    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        LayeredStorage::get_keyring(self).await
    }

    async fn put_keyring(&self, bytes: Bytes, precondition: PutPrecondition) -> Result<u64> {
        LayeredStorage::put_keyring(self, bytes, precondition).await
    }

    async fn maintain(&self, budget: MaintenanceBudget) -> Result<MaintenanceReport> {
        LayeredStorage::maintain(self, budget).await
    }

    async fn put_blob(&self, id: BlobId, sealed: Bytes) -> Result<()> {
        LayeredStorage::put_blob(self, id, sealed).await
    }

    async fn get_blob(&self, id: BlobId) -> Result<Option<Bytes>> {
        LayeredStorage::get_blob(self, id).await
    }

    async fn list_blobs(&self, after: Option<BlobId>, limit: usize) -> Result<BlobPage> {
        LayeredStorage::list_blobs(self, after, limit).await
    }

    async fn missing_blobs(&self, ids: &[BlobId]) -> Result<Vec<BlobId>> {
        LayeredStorage::missing_blobs(self, ids).await
    }

    async fn delete_blob(&self, id: BlobId) -> Result<()> {
        LayeredStorage::delete_blob(self, id).await
    }

    fn notifications(&self) -> Option<Arc<dyn Transport>> {
        LayeredStorage::notifications(self)
    }
}
