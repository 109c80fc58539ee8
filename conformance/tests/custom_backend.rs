//! Runs the Storage contracts against the one-file redb backend in
//! `examples/custom_backend.rs`, exactly as an out-of-tree backend would.

#[allow(dead_code)]
#[path = "../../examples/custom_backend.rs"]
mod custom_backend;

use async_trait::async_trait;
use chatvault_conformance::layers::RequestCounter;
use chatvault_conformance::TestBackend;
use chatvault_core::{
    Capabilities, ChangePage, ChatId, Cursor, DynStorage, KeyringBlob, Part, PutPrecondition,
    Result, SealedRecord, Storage,
};
use custom_backend::{RedbStorage, RECORDS};
use redb::{Database, ReadableTable};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One database file per vault in a temporary folder; every `open` is a new
/// client over the vault's database.
struct Redb {
    dir: tempfile::TempDir,
    vaults: Mutex<HashMap<String, Arc<Database>>>,
}

impl Redb {
    fn database(&self, vault: &str) -> Result<Arc<Database>> {
        let mut vaults = self
            .vaults
            .lock()
            .map_err(|_| chatvault_core::Error::invalid("poisoned"))?;
        if let Some(db) = vaults.get(vault) {
            return Ok(Arc::clone(db));
        }
        let db = Database::create(self.dir.path().join(format!("{vault}.redb")))
            .map_err(|e| chatvault_core::Error::local("create vault", e))?;
        let db = Arc::new(db);
        vaults.insert(vault.to_owned(), Arc::clone(&db));
        Ok(db)
    }
}

#[async_trait]
impl TestBackend for Redb {
    fn name(&self) -> String {
        "redb-example".into()
    }

    async fn start(&self) -> Result<String> {
        Ok(format!("redb files in {}", self.dir.path().display()))
    }

    async fn open(&self, vault: &str) -> Result<DynStorage> {
        Ok(Arc::new(RedbStorage::new(self.database(vault)?)?))
    }

    async fn open_counting(
        &self,
        vault: &str,
        requests: RequestCounter,
    ) -> Option<Result<DynStorage>> {
        let storage = match self.database(vault).and_then(RedbStorage::new) {
            Ok(storage) => storage,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(Arc::new(CountTransactions { storage, requests })))
    }

    async fn corrupt_record(&self, vault: &str, chat: ChatId) -> Option<Result<()>> {
        let db = match self.database(vault) {
            Ok(db) => db,
            Err(e) => return Some(Err(e)),
        };
        let damage = || -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let tx = db.begin_write()?;
            {
                let mut records = tx.open_table(RECORDS)?;
                let stored = records.get(chat.as_bytes())?.map(|v| v.value().to_vec());
                let stored = stored.ok_or("no record to damage")?;
                // Cut the record short, as a torn write would.
                let torn = stored[..stored.len() / 2].to_vec();
                records.insert(chat.as_bytes(), torn.as_slice())?;
            }
            tx.commit()?;
            Ok(())
        };
        Some(damage().map_err(|e| chatvault_core::Error::local("damage record", e)))
    }
}

/// Records each database transaction of the wrapped client as one request.
#[derive(Debug)]
struct CountTransactions {
    storage: RedbStorage,
    requests: RequestCounter,
}

impl CountTransactions {
    fn count<T>(&self, before: u64, op: &str, result: T) -> T {
        for _ in before..self.storage.transactions() {
            self.requests.record(op, 0, 0);
        }
        result
    }
}

#[async_trait]
impl Storage for CountTransactions {
    fn capabilities(&self) -> Capabilities {
        self.storage.capabilities()
    }
    async fn changes(&self, since: &Cursor, limit: usize) -> Result<ChangePage> {
        let before = self.storage.transactions();
        let page = self.storage.changes(since, limit).await;
        self.count(before, "transaction", page)
    }
    async fn get(&self, chats: &[ChatId], part: Part) -> Result<Vec<SealedRecord>> {
        let before = self.storage.transactions();
        let records = self.storage.get(chats, part).await;
        self.count(before, "transaction", records)
    }
    async fn put(&self, record: SealedRecord, precondition: PutPrecondition) -> Result<()> {
        let before = self.storage.transactions();
        let result = self.storage.put(record, precondition).await;
        self.count(before, "transaction", result)
    }
    async fn get_keyring(&self) -> Result<Option<KeyringBlob>> {
        let before = self.storage.transactions();
        let keyring = self.storage.get_keyring().await;
        self.count(before, "transaction", keyring)
    }
    async fn put_keyring(&self, bytes: bytes::Bytes, precondition: PutPrecondition) -> Result<u64> {
        let before = self.storage.transactions();
        let version = self.storage.put_keyring(bytes, precondition).await;
        self.count(before, "transaction", version)
    }
}

fn main() -> std::process::ExitCode {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("cannot create a temporary folder: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    chatvault_conformance::run(Redb {
        dir,
        vaults: Mutex::new(HashMap::new()),
    })
}
