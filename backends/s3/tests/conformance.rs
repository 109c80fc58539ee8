//! The Storage contract suite against `S3Storage` on a real S3 server: the
//! endpoint from `CHATVAULT_TEST_S3_ENDPOINT`, else a container, else the
//! in-process s3s-fs stand-in (see `chatvault_test_services::s3`).
//! The first line of output says which one served.

use async_trait::async_trait;
use bytes::Bytes;
use chatvault_conformance::layers::{CountingHttpConnector, RequestCounter};
use chatvault_conformance::{contract, ensure, Outcome, Suite, TestBackend, Verdict};
use chatvault_core::{
    ChatId, Cursor, DynStorage, Error, MaintenanceBudget, Part, PutPrecondition, Result,
    SealedRecord, Storage,
};
use chatvault_s3::{CompactOptions, MaintenancePolicy, ObjectStoreOptions, S3StorageBuilder};
use chatvault_test_services::s3::S3Fixture;
use chatvault_test_services::tear_objects_under;
use object_store::path::Path;
use object_store::RetryConfig;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The fixture shared by every contract of this binary.
static FIXTURE: OnceCell<S3Fixture> = OnceCell::const_new();

fn fixture() -> Result<&'static S3Fixture> {
    FIXTURE
        .get()
        .ok_or_else(|| Error::invalid("the S3 fixture was not started"))
}

/// A client of `vault` (where the fixture puts it: a prefix of its bucket,
/// or a bucket of its own on the stand-in).
async fn builder(vault: &str) -> Result<S3StorageBuilder> {
    let fixture = fixture()?;
    let location = fixture.vault(vault).await?;
    Ok(S3StorageBuilder::new()
        .with_endpoint(&fixture.endpoint)
        .with_region(&fixture.region)
        .with_credentials(&fixture.access_key_id, &fixture.secret_access_key)
        .with_bucket(location.bucket)
        .with_prefix(location.prefix)
        .with_atomic_conditional_put(fixture.atomic_conditional_put))
}

/// Opens vaults where the fixture puts them.
struct S3;

#[async_trait]
impl TestBackend for S3 {
    fn name(&self) -> String {
        "s3".into()
    }

    async fn start(&self) -> Result<String> {
        let fixture = FIXTURE.get_or_try_init(S3Fixture::start).await?;
        Ok(fixture.describe())
    }

    async fn open(&self, vault: &str) -> Result<DynStorage> {
        Ok(Arc::new(builder(vault).await?.build()?))
    }

    async fn open_counting(
        &self,
        vault: &str,
        requests: RequestCounter,
    ) -> Option<Result<DynStorage>> {
        let storage = builder(vault).await.and_then(|b| {
            b.with_http_connector(CountingHttpConnector::new(requests))
                .build()
        });
        Some(storage.map(|s| Arc::new(s) as DynStorage))
    }

    async fn corrupt_record(&self, vault: &str, chat: ChatId) -> Option<Result<()>> {
        Some(damage_blobs(vault, chat).await)
    }

    async fn expire_history(&self, vault: &str) -> Option<Result<u64>> {
        let storage = async {
            let atomic = fixture()?.atomic_conditional_put;
            let storage = builder(vault)
                .await?
                .with_options(short_horizon())
                .with_atomic_conditional_put(atomic)
                .build()?;
            Ok(Arc::new(storage) as DynStorage)
        }
        .await;
        Some(expire(storage).await)
    }

    async fn stop(&self) {
        if let Some(fixture) = FIXTURE.get() {
            fixture.stop().await;
        }
    }
}

/// Cuts every stored blob of `chat` (the layout's `rec/<chat>/…`) in half,
/// as a torn upload or a buggy sync tool would.
async fn damage_blobs(vault: &str, chat: ChatId) -> Result<()> {
    let fixture = fixture()?;
    let location = fixture.vault(vault).await?;
    let store = fixture
        .amazon_s3_builder()
        .with_bucket_name(&location.bucket)
        .build()
        .map_err(|e| Error::invalid(e.to_string()))?;
    let dir = Path::from(format!("{}/rec/{chat}", location.prefix));
    tear_objects_under(&store, &dir).await
}

fn record(chat: ChatId, version: u64) -> SealedRecord {
    SealedRecord {
        chat,
        version,
        deleted: false,
        summary: Bytes::from(format!("summary {chat} {version}")),
        body: Some(Bytes::from(format!("body {chat} {version}"))),
    }
}

/// `chatvault_s3::open_url("s3://bucket/prefix?endpoint=…")` opens the same
/// vault as the builder with that bucket and prefix.
async fn from_url_opens_the_vault_the_builder_wrote(backend: &dyn TestBackend) -> Outcome {
    let vault = "from_url_opens_the_vault_the_builder_wrote";
    let writer = backend.open(vault).await?;
    let chat = ChatId::new();
    writer.put(record(chat, 1), PutPrecondition::Absent).await?;
    let fixture = fixture()?;
    let location = fixture.vault(vault).await?;
    let url = format!(
        "s3://{}/{}?endpoint={}&region={}",
        location.bucket, location.prefix, fixture.endpoint, fixture.region
    );
    let reader = S3StorageBuilder::new()
        .with_credentials(&fixture.access_key_id, &fixture.secret_access_key)
        .with_atomic_conditional_put(fixture.atomic_conditional_put)
        .with_url(&url)?
        .build()?;
    let records = reader.get(&[chat], Part::Body).await?;
    ensure!(
        records == vec![record(chat, 1)],
        "read through {url}: {records:?}"
    );
    Ok(Verdict::Passed)
}

/// A wrong secret key fails every operation with `Unauthorized`, not a
/// retriable error (the server refuses the LIST each one starts with, which
/// `object_store` reports as a `Generic` error).
async fn wrong_secret_fails_unauthorized(backend: &dyn TestBackend) -> Outcome {
    let vault = "wrong_secret_fails_unauthorized";
    if !fixture()?.checks_credentials {
        return Ok(Verdict::Skipped(
            "the S3 server accepts any credentials (S3Fixture::checks_credentials is false)".into(),
        ));
    }
    let chat = ChatId::new();
    backend
        .open(vault)
        .await?
        .put(record(chat, 1), PutPrecondition::Absent)
        .await?;
    let storage = builder(vault)
        .await?
        .with_credentials("chatvault", "not-the-secret")
        .with_s3(|b| b.with_retry(no_retries()))
        .build()?;
    let outcomes = [
        ("changes", storage.changes(&Cursor::start(), 10).await.err()),
        ("get", storage.get(&[chat], Part::Body).await.err()),
        (
            "put",
            storage
                .put(record(chat, 2), PutPrecondition::Version(1))
                .await
                .err(),
        ),
        ("get_keyring", storage.get_keyring().await.err()),
        (
            "put_keyring",
            storage
                .put_keyring(Bytes::from_static(b"k"), PutPrecondition::Absent)
                .await
                .err(),
        ),
    ];
    for (operation, outcome) in outcomes {
        ensure!(
            matches!(outcome, Some(Error::Unauthorized { .. })),
            "{operation} with a wrong secret: expected Unauthorized, got {outcome:?}"
        );
    }
    Ok(Verdict::Passed)
}

/// An endpoint where nothing listens fails with the retriable
/// `Unavailable`, which keeps changes queued.
async fn unreachable_endpoint_fails_unavailable(_backend: &dyn TestBackend) -> Outcome {
    let storage = S3StorageBuilder::new()
        .with_endpoint("http://127.0.0.1:9")
        .with_credentials("k", "s")
        .with_bucket("nowhere")
        .with_prefix("alice")
        .with_s3(|b| b.with_retry(no_retries()))
        .build()?;
    let result = storage
        .put(record(ChatId::new(), 1), PutPrecondition::Absent)
        .await;
    ensure!(
        matches!(&result, Err(e) if e.is_retriable()),
        "expected a retriable Unavailable, got {result:?}"
    );
    Ok(Verdict::Passed)
}

fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    }
}

fn main() -> std::process::ExitCode {
    Suite::new(S3)
        .with_storage_contracts()
        .with_sync_contracts()
        .with_contracts([
            contract!("s3", from_url_opens_the_vault_the_builder_wrote),
            contract!("s3", wrong_secret_fails_unauthorized),
            contract!("s3", unreachable_endpoint_fails_unavailable),
        ])
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
