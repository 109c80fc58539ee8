//! Runs the end-to-end sync contracts (and the Storage contracts) against
//! the shared-log layout over `object_store`'s in-memory store: the fastest
//! real backend, exercising the same engine paths as every other.

use async_trait::async_trait;
use chatvault_conformance::{Suite, TestBackend};
use chatvault_core::{DynStorage, Result};
use chatvault_object_store::{ObjectStoreOptions, ObjectStoreStorage};
use object_store::memory::InMemory;
use object_store::path::Path;
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
}

fn main() -> std::process::ExitCode {
    Suite::new(Memory {
        store: Arc::new(InMemory::new()),
    })
    .with_contracts(chatvault_conformance::sync::contracts())
    .run()
}
