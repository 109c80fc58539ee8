//! chatvault backend for S3 and S3-compatible stores (MinIO, Cloudflare R2,
//! Supabase Storage, Ceph, Garage…).
//!
//! [`S3StorageBuilder`] configures chatvault's shared-log record layout
//! ([`chatvault_object_store`]) over `object_store`'s S3 client and returns
//! it as an [`S3Storage`] ([`ObjectStoreVault`]); this crate adds no
//! [`Storage`](chatvault_core::Storage) of its own. The commit
//! point of every put is creating the next log object with
//! `If-None-Match: *`, so the bucket needs conditional writes (AWS S3 since
//! 2024, MinIO, R2). One vault lives under one key prefix: give each user
//! their own (`users/<user id>`).
//!
//! ```no_run
//! use chatvault_s3::S3StorageBuilder;
//!
//! # fn demo() -> chatvault_core::Result<()> {
//! // Credentials and region from the usual AWS_* environment variables.
//! let vault = S3StorageBuilder::from_env()
//!     .with_bucket("chat-backups")
//!     .with_prefix("users/3f1c…")
//!     .build()?;
//!
//! // A local MinIO: custom endpoint, path-style requests, plain HTTP.
//! let local = S3StorageBuilder::from_env()
//!     .with_endpoint("http://127.0.0.1:9000")
//!     .with_credentials("minioadmin", "minioadmin")
//!     .with_bucket("chats")
//!     .with_prefix("alice")
//!     .build()?;
//!
//! // Or from a URL, as `ChatVault::open_url` does.
//! let from_url = chatvault_s3::open_url("s3://chat-backups/users/alice?endpoint=http://127.0.0.1:9000")?;
//! # Ok(()) }
//! ```
//!
//! # Servers
//!
//! | server | settings |
//! |---|---|
//! | AWS S3 | `from_env()`, bucket, prefix |
//! | MinIO | `with_endpoint("http://host:9000")` (path-style and HTTP follow) |
//! | Cloudflare R2 | `with_endpoint("https://<account>.r2.cloudflarestorage.com")`, region `auto` |
//! | Supabase Storage | `with_endpoint("https://<project>.supabase.co/storage/v1/s3")`, the project's S3 access keys, region of the project |
//!
//! A server whose `If-None-Match: *` is checked before the write instead of
//! atomically with it (some small test servers) must be declared with
//! [`S3StorageBuilder::with_atomic_conditional_put`]`(false)`: two devices
//! writing at the same moment could then both claim one log slot, and the
//! backend says so in `Capabilities::atomic_preconditions`.

mod builder;

pub use builder::S3StorageBuilder;
pub use chatvault_object_store::{
    CompactOptions, CompactReport, MaintenancePolicy, ObjectStoreOptions,
};
pub use object_store::aws::S3ConditionalPut;

pub use chatvault_object_store::ObjectStoreVault;

use chatvault_core::Result;
use chatvault_object_store::ObjectStoreStorage;
use object_store::path::Path;
use object_store::ObjectStore;
use std::sync::Arc;

/// One vault in an S3 bucket, under one key prefix: the shared-log layout
/// ([`ObjectStoreVault`]) that [`S3StorageBuilder::build`] configures.
pub type S3Storage = ObjectStoreVault;

/// Opens `s3://bucket/prefix`, with credentials and region from the
/// `AWS_*` environment. Query parameters `endpoint`, `region` and
/// `allow_http` (`true`/`false`) override the environment, e.g.
/// `s3://chats/users/alice?endpoint=http://127.0.0.1:9000`.
pub fn open_url(url: &str) -> Result<S3Storage> {
    S3StorageBuilder::from_env().with_url(url)?.build()
}

/// The layout over an already configured store (e.g. an `AmazonS3`
/// wrapped in a counting or throttling layer, see
/// [`S3StorageBuilder::build_store`]), under `prefix`.
pub fn from_store(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    options: ObjectStoreOptions,
) -> S3Storage {
    let prefix = Path::from(prefix);
    ObjectStoreVault::shared_log(ObjectStoreStorage::new(store, prefix, options))
}
