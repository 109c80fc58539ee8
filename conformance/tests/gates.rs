//! Capability gates: a backend that lacks a capability has the contracts
//! needing it reported as skipped (ignored), never run and never passed.

#[allow(dead_code)]
#[path = "../../examples/custom_backend.rs"]
mod custom_backend;

use async_trait::async_trait;
use chatvault_conformance::{Needs, Suite, TestBackend};
use chatvault_core::{
    Capabilities, ChangePage, ChatId, Cursor, DynStorage, KeyringBlob, Part, PutPrecondition,
    Result, SealedRecord, Storage,
};
use custom_backend::RedbStorage;
use libtest_mimic::Arguments;
use redb::Database;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The redb example backend, declaring neither atomic preconditions nor
/// inline summaries.
#[derive(Debug)]
struct Modest(RedbStorage);

#[async_trait]
impl Storage for Modest {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_preconditions: false,
            inline_summaries: false,
            concurrent_writers: false,
            ..self.0.capabilities()
        }
    }
    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        self.0.changes(since, limit).await
    }
    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        self.0.get(chats, part).await
    }
    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        self.0.put(record, precondition).await
    }
    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        self.0.get_keyring().await
    }
    async fn put_keyring(&self, bytes: bytes::Bytes, precondition: PutPrecondition) -> Result<u64> {
        self.0.put_keyring(bytes, precondition).await
    }
}

/// Opens each vault's redb file once (redb allows one handle per process)
/// and hands every client a storage over it.
struct ModestBackend {
    dir: tempfile::TempDir,
    vaults: Mutex<HashMap<String, Arc<Database>>>,
}

impl ModestBackend {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            vaults: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl TestBackend for ModestBackend {
    fn name(&self) -> String {
        "modest".into()
    }
    async fn open(&self, vault: &str) -> Result<DynStorage> {
        let db = {
            let mut vaults = self.vaults.lock().unwrap();
            match vaults.get(vault) {
                Some(db) => db.clone(),
                None => {
                    let path = self.dir.path().join(format!("{vault}.redb"));
                    let db = Arc::new(Database::create(path).unwrap());
                    vaults.insert(vault.to_owned(), db.clone());
                    db
                }
            }
        };
        Ok(Arc::new(Modest(RedbStorage::new(db)?)))
    }
}

fn args(filter: &str) -> Arguments {
    Arguments {
        filter: Some(filter.to_owned()),
        test_threads: Some(1),
        ..Arguments::default()
    }
}

#[test]
fn contracts_needing_a_missing_capability_are_reported_skipped() {
    let storage_contracts = chatvault_conformance::storage::contracts();
    let gated: Vec<_> = storage_contracts
        .iter()
        .filter(|c| c.needs != Needs::Nothing)
        .map(|c| c.name)
        .collect();
    assert_eq!(
        gated.len(),
        14,
        "three concurrency contracts, inline summaries and ten blob contracts: {gated:?}"
    );

    let concurrency = Suite::new(ModestBackend::new())
        .with_storage_contracts()
        .conclude(&args("storage::concurrent_"));
    assert_eq!(concurrency.num_ignored, 3, "{concurrency:?}");
    assert_eq!(concurrency.num_passed, 0, "{concurrency:?}");
    assert_eq!(concurrency.num_failed, 0, "{concurrency:?}");

    let inline = Suite::new(ModestBackend::new())
        .with_storage_contracts()
        .conclude(&args("storage::changes_inline_summaries"));
    assert_eq!(inline.num_ignored, 1, "{inline:?}");
    assert_eq!(inline.num_passed, 0, "{inline:?}");

    let blobs = Suite::new(ModestBackend::new())
        .with_storage_contracts()
        .conclude(&args("blob"));
    assert_eq!(blobs.num_ignored, 10, "{blobs:?}");
    assert_eq!(blobs.num_passed, 0, "{blobs:?}");
    assert_eq!(blobs.num_failed, 0, "{blobs:?}");
}

#[tokio::test]
async fn a_backend_without_blobs_answers_unsupported_and_still_stores_records() {
    let storage = ModestBackend::new()
        .open("without_blobs")
        .await
        .expect("open");
    assert!(!storage.capabilities().blobs);
    let id = chatvault_core::BlobId([1; 32]);
    for result in [
        storage.put_blob(id, bytes::Bytes::new()).await.map(|_| ()),
        storage.get_blob(id).await.map(|_| ()),
        storage.list_blobs(None, 10).await.map(|_| ()),
        storage.delete_blob(id).await,
    ] {
        match result {
            Err(error @ chatvault_core::Error::Unsupported { .. }) => {
                assert!(error.to_string().contains("blobs"), "{error}");
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
    let chat = ChatId::new();
    storage
        .put(
            chatvault_conformance::storage::record(chat, 1, "a"),
            PutPrecondition::Absent,
        )
        .await
        .expect("records still work");
}

#[test]
fn ungated_contracts_still_run_on_a_modest_backend() {
    let outcome = Suite::new(ModestBackend::new())
        .with_storage_contracts()
        .conclude(&args("storage::put_"));
    assert!(outcome.num_passed >= 9, "{outcome:?}");
    assert_eq!(outcome.num_failed, 0, "{outcome:?}");
    assert_eq!(outcome.num_ignored, 0, "{outcome:?}");
}
