//! The shared Storage and sync suites against the layout on `object_store`'s
//! in-memory store, with request counting and record damage, so the cost and
//! corruption contracts run too.

use async_trait::async_trait;
use bytes::Bytes;
use chatvault_conformance::layers::{CountingObjectStore, RequestCounter};
use chatvault_conformance::{Suite, TestBackend};
use chatvault_core::{ChatId, DynStorage, Error, Result};
use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use std::sync::Arc;

/// Every vault is a prefix of one in-memory store; every `open` is a new
/// client with its own index, like another device.
struct Memory {
    store: Arc<InMemory>,
}

impl Memory {
    fn vault(&self, store: Arc<dyn ObjectStore>, vault: &str) -> DynStorage {
        Arc::new(ObjectStoreStorage::new(
            store,
            Path::from(vault),
            ObjectStoreOptions::default(),
        ))
    }
}

#[async_trait]
impl TestBackend for Memory {
    fn name(&self) -> String {
        "object-store-memory".into()
    }

    async fn open(&self, vault: &str) -> Result<DynStorage> {
        Ok(self.vault(self.store.clone(), vault))
    }

    async fn open_counting(
        &self,
        vault: &str,
        requests: RequestCounter,
    ) -> Option<Result<DynStorage>> {
        let counted = Arc::new(CountingObjectStore::new(self.store.clone(), requests));
        Some(Ok(self.vault(counted, vault)))
    }

    /// Tears every blob of `chat` in half, as a torn upload would.
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
                let torn = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
                self.store
                    .put(&blob.location, torn.into())
                    .await
                    .map_err(|e| Error::unavailable("overwrite blob", e))?;
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
    .with_storage_contracts()
    .with_sync_contracts()
    .run()
}
