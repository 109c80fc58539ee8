//! The shared Storage and sync suites against the layout on `object_store`'s
//! in-memory store, with request counting and record damage, so the cost and
//! corruption contracts run too.

use async_trait::async_trait;
use chatvault_conformance::layers::{CountingObjectStore, RequestCounter};
use chatvault_conformance::{Suite, TestBackend};
use chatvault_core::{ChatId, DynStorage, Result};
use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
use chatvault_test_services::tear_objects_under;
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
        let dir = Path::from(format!("{vault}/rec/{chat}"));
        Some(tear_objects_under(self.store.as_ref(), &dir).await)
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
