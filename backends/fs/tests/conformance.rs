//! The shared Storage and sync contract suites against `FsStorage`, once
//! per folder layout (per-device, the default, and the shared log): each
//! vault is a folder under one temporary directory, each `open` a new
//! client of that folder (in the per-device layout, a new device).

use async_trait::async_trait;
use chatvault_conformance::layers::{CountingObjectStore, RequestCounter};
use chatvault_conformance::{Suite, TestBackend};
use chatvault_core::{ChatId, DynStorage, Error, MaintenanceBudget, Result};
use chatvault_fs::{FolderLayout, FsStorageBuilder};
use chatvault_object_store::{CompactOptions, MaintenancePolicy, ObjectStoreOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Folder {
    root: tempfile::TempDir,
    layout: FolderLayout,
}

impl Folder {
    fn dir(&self, vault: &str) -> PathBuf {
        self.root.path().join(vault)
    }

    fn builder(&self, vault: &str) -> chatvault_fs::FsStorageBuilder {
        FsStorageBuilder::new(self.dir(vault)).layout(self.layout)
    }

    /// The folders that hold a shared-log vault each: the vault itself, or
    /// in the per-device layout every device's directory (each a complete
    /// shared-log vault that only its device writes).
    fn logs(&self, vault: &str) -> std::io::Result<Vec<PathBuf>> {
        match self.layout {
            FolderLayout::SharedLog => Ok(vec![self.dir(vault)]),
            FolderLayout::PerDevice => std::fs::read_dir(self.dir(vault).join("dev"))?
                .map(|entry| entry.map(|e| e.path()))
                .collect(),
        }
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
        match self.layout {
            FolderLayout::PerDevice => "fs".into(),
            FolderLayout::SharedLog => "fs-shared-log".into(),
        }
    }

    async fn start(&self) -> Result<String> {
        Ok(format!("fs in {}", self.root.path().display()))
    }

    async fn open(&self, vault: &str) -> Result<DynStorage> {
        Ok(Arc::new(self.builder(vault).open()?))
    }

    async fn open_counting(
        &self,
        vault: &str,
        requests: RequestCounter,
    ) -> Option<Result<DynStorage>> {
        let storage = self
            .builder(vault)
            .layer(move |store| Arc::new(CountingObjectStore::new(store, requests.clone())))
            .open();
        Some(storage.map(|s| Arc::new(s) as DynStorage))
    }

    /// Compacts every log of the vault: in the per-device layout a device
    /// compacts only its own, so the harness opens each device's directory
    /// as the shared-log vault it is.
    async fn expire_history(&self, vault: &str) -> Option<Result<u64>> {
        let logs = match self.logs(vault) {
            Ok(logs) => logs,
            Err(e) => return Some(Err(Error::invalid(format!("listing {vault}: {e}")))),
        };
        let mut removed = 0;
        for dir in logs {
            let storage = FsStorageBuilder::new(dir)
                .layout(FolderLayout::SharedLog)
                .options(short_horizon())
                .open()
                .map(|s| Arc::new(s) as DynStorage);
            match expire(storage).await {
                Ok(n) => removed += n,
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(removed))
    }

    /// Truncates every blob file of `chat` to half its length, as a torn
    /// copy by a file-sync tool would.
    async fn corrupt_record(&self, vault: &str, chat: ChatId) -> Option<Result<()>> {
        let dir = self.dir(vault);
        let damage = || -> std::io::Result<usize> {
            let mut blobs = Vec::new();
            for log in self.logs(vault)? {
                let chat_dir = log.join("rec").join(chat.to_string());
                if chat_dir.is_dir() {
                    blobs.extend(files(&chat_dir)?);
                }
            }
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
    let mut code = std::process::ExitCode::SUCCESS;
    for layout in [FolderLayout::PerDevice, FolderLayout::SharedLog] {
        let root = match tempfile::tempdir_in(root.path()) {
            Ok(root) => root,
            Err(e) => {
                eprintln!("cannot create a temporary directory: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let outcome = Suite::new(Folder { root, layout })
            .with_storage_contracts()
            .with_sync_contracts()
            .run();
        if outcome != std::process::ExitCode::SUCCESS {
            code = outcome;
        }
    }
    code
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
