//! The shared Storage and sync contract suites against `FsStorage`: each
//! vault is a folder under one temporary directory, each `open` a new
//! client of that folder.

use async_trait::async_trait;
use chatvault_conformance::layers::{CountingObjectStore, RequestCounter};
use chatvault_conformance::{Suite, TestBackend};
use chatvault_core::{ChatId, DynStorage, Error, MaintenanceBudget, Result};
use chatvault_fs::FsStorage;
use chatvault_object_store::{CompactOptions, MaintenancePolicy, ObjectStoreOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Folder {
    root: tempfile::TempDir,
}

impl Folder {
    fn dir(&self, vault: &str) -> PathBuf {
        self.root.path().join(vault)
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    Ok(found)
}

#[async_trait]
impl TestBackend for Folder {
    fn name(&self) -> String {
        "fs".into()
    }

    async fn start(&self) -> Result<String> {
        Ok(format!("fs in {}", self.root.path().display()))
    }

    async fn open(&self, vault: &str) -> Result<DynStorage> {
        Ok(Arc::new(FsStorage::open(self.dir(vault))?))
    }

    async fn open_counting(
        &self,
        vault: &str,
        requests: RequestCounter,
    ) -> Option<Result<DynStorage>> {
        let storage = FsStorage::builder(self.dir(vault))
            .layer(move |store| Arc::new(CountingObjectStore::new(store, requests.clone())))
            .open();
        Some(storage.map(|s| Arc::new(s) as DynStorage))
    }

    async fn expire_history(&self, vault: &str) -> Option<Result<u64>> {
        let storage = FsStorage::builder(self.dir(vault))
            .options(short_horizon())
            .open()
            .map(|s| Arc::new(s) as DynStorage);
        Some(expire(storage).await)
    }

    /// Truncates every blob file of `chat` to half its length, as a torn
    /// copy by a file-sync tool would.
    async fn corrupt_record(&self, vault: &str, chat: ChatId) -> Option<Result<()>> {
        let dir = self.dir(vault).join("rec").join(chat.to_string());
        let damage = || -> std::io::Result<usize> {
            let blobs = files(&dir)?;
            for blob in &blobs {
                let bytes = std::fs::read(blob)?;
                std::fs::write(blob, &bytes[..bytes.len() / 2])?;
            }
            Ok(blobs.len())
        };
        Some(match damage() {
            Ok(0) => Err(Error::NotFound {
                what: format!("blobs under {}", dir.display()),
            }),
            Ok(_) => Ok(()),
            Err(e) => Err(Error::invalid(format!("damaging {}: {e}", dir.display()))),
        })
    }
}

fn main() -> std::process::ExitCode {
    let root = match tempfile::tempdir() {
        Ok(root) => root,
        Err(e) => {
            eprintln!("cannot create a temporary directory: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    Suite::new(Folder { root })
        .with_storage_contracts()
        .with_sync_contracts()
        .run()
}

/// Options whose compaction horizon is 50 ms (claim delay 20 ms): a handle
/// that prunes everything written before a short pause, standing in for
/// the hour the default horizon waits. Safe here because no put of the
/// vault is in flight while the contract expires its history.
fn short_horizon() -> ObjectStoreOptions {
    ObjectStoreOptions::default()
        .with_max_claim_delay(std::time::Duration::from_millis(20))
        .with_maintenance(MaintenancePolicy::default().with_compact(
            CompactOptions::default().with_min_age(std::time::Duration::from_millis(50)),
        ))
}

/// Waits out [`short_horizon`] and runs forced maintenance through `storage`.
async fn expire(storage: Result<DynStorage>) -> Result<u64> {
    let storage = storage?;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let report = storage.maintain(MaintenanceBudget { force: true }).await?;
    Ok(report.removed_entries)
}
