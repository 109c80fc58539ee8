//! Runs the end-to-end sync contracts (and the Storage contracts) against
//! the shared-log layout over `object_store`'s in-memory store: the fastest
//! real backend, exercising the same engine paths as every other.

use async_trait::async_trait;
use chatvault_conformance::{Suite, TestBackend};
use chatvault_core::{ChatId, DynStorage, Error, Result};
use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use std::sync::Arc;

/// Every vault lives under its own prefix of one in-memory store; every
/// `open` is a new client with its own index, like another device.
struct Memory {
    store: Arc<InMemory>,
}

#[async_trait]
impl TestBackend for Memory {
    fn name(&self) -> String {
        "object-store-memory".into()
    }

    async fn open(&self, vault: &str) -> Result<DynStorage> {
        Ok(Arc::new(ObjectStoreStorage::new(
            self.store.clone(),
            Path::from(vault),
            ObjectStoreOptions::default(),
        )))
    }

    /// Tears every blob of the chat's records in half, as a faulty disk
    /// would; the log entries stay intact.
    async fn corrupt_record(&self, vault: &str, chat: ChatId) -> Option<Result<()>> {
        let damage = async {
            let dir = Path::from(format!("{vault}/rec/{chat}"));
            let blobs: Vec<_> = self
                .store
                .list(Some(&dir))
                .try_collect()
                .await
                .map_err(|e| Error::unavailable("list blobs", e))?;
            if blobs.is_empty() {
                return Err(Error::NotFound {
                    what: format!("blobs under {dir}"),
                });
            }
            for blob in blobs {
                let bytes = self
                    .store
                    .get(&blob.location)
                    .await
                    .map_err(|e| Error::unavailable("read blob", e))?
                    .bytes()
                    .await
                    .map_err(|e| Error::unavailable("read blob", e))?;
                let torn = bytes.slice(..bytes.len() / 2);
                self.store
                    .put(&blob.location, torn.into())
                    .await
                    .map_err(|e| Error::unavailable("write blob", e))?;
            }
            Ok(())
        };
        Some(damage.await)
    }
}

fn main() -> std::process::ExitCode {
    Suite::new(Memory {
        store: Arc::new(InMemory::new()),
    })
    .with_contracts(chatvault_conformance::sync::contracts())
    .run()
}
