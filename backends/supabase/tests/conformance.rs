//! The chatvault conformance suites (Storage contracts and end-to-end sync
//! through the facade) against Supabase: real PostgreSQL with
//! the crate's migrations, behind PostgREST or the PostgREST-compatible
//! gateway (see `chatvault_test_services::postgres`).

use async_trait::async_trait;
use chatvault_conformance::layers::RequestCounter;
use chatvault_conformance::{Contract, TestBackend, Verdict};
use chatvault_core::{ChatId, DynStorage, Error, MaintenanceBudget, Result};
use chatvault_supabase::{StaticToken, SupabaseStorage, MIGRATIONS};
use chatvault_test_services::postgres::SupabaseFixture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Each vault is a Supabase user; each `open` is a new client signed in as
/// that user.
#[derive(Default)]
struct Supabase {
    users: Mutex<HashMap<String, Uuid>>,
}

impl Supabase {
    async fn fixture(&self) -> Result<&'static SupabaseFixture> {
        SupabaseFixture::shared(MIGRATIONS).await
    }

    /// The user behind `vault`: new and random on first use, so every run
    /// starts from empty vaults even on a long-lived database.
    fn user(&self, vault: &str) -> Uuid {
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *users.entry(vault.to_owned()).or_insert_with(Uuid::now_v7)
    }

    async fn client(&self, vault: &str, requests: Option<RequestCounter>) -> Result<DynStorage> {
        let fixture = self.fixture().await?;
        let mut builder = SupabaseStorage::builder(&format!("supabase+{}", fixture.url))?
            .anon_key(fixture.anon_key.clone())
            .token_source(StaticToken::new(fixture.user_token(self.user(vault), 3600)));
        if let Some(requests) = requests {
            builder = builder.on_request(move |event| {
                requests.record(&event.function, event.bytes_sent, event.bytes_received)
            });
        }
        Ok(Arc::new(builder.build()?))
    }

    /// Cuts the current record of `chat` to half its sealed bytes, as the
    /// database's superuser: the summary in the record row and in the change
    /// log entry the feed serves it from, and the body. Triggers are off for
    /// the transaction (`session_replication_role = replica`) so the record
    /// keeps its version and feed position, as bytes damaged at rest would,
    /// instead of being stamped as a new commit.
    async fn truncate_sealed_bytes(&self, vault: &str, chat: ChatId) -> Result<()> {
        let fixture = self.fixture().await?;
        let owner = self.user(vault);
        let failed = |e: tokio_postgres::Error| {
            Error::unavailable(format!("damaging the record of chat {chat} failed"), e)
        };
        let mut admin = fixture.postgres.connect().await?;
        let tx = admin.transaction().await.map_err(failed)?;
        tx.batch_execute("set local session_replication_role = replica")
            .await
            .map_err(failed)?;
        tx.execute(
            "update public.chatvault_changes c \
             set summary = substring(c.summary from 1 for octet_length(c.summary) / 2) \
             from public.chatvault_records r \
             where r.owner = $1 and r.chat = $2 and c.owner = r.owner and c.seq = r.seq",
            &[&owner, &chat.0],
        )
        .await
        .map_err(failed)?;
        let damaged = tx
            .execute(
                "update public.chatvault_records \
                 set summary = substring(summary from 1 for octet_length(summary) / 2), \
                     body = substring(body from 1 for octet_length(body) / 2) \
                 where owner = $1 and chat = $2",
                &[&owner, &chat.0],
            )
            .await
            .map_err(failed)?;
        if damaged != 1 {
            return Err(Error::NotFound {
                what: format!("record of chat {chat} in vault {vault}"),
            });
        }
        tx.commit().await.map_err(failed)
    }
}

impl Supabase {
    /// Ages every change-log entry of `vault` past
    /// `chatvault_history_retention()` (as the database's superuser, as if
    /// that long had passed), then prunes through a client of the vault as
    /// its maintenance does in production (`chatvault_maintain`).
    async fn age_and_prune_history(&self, vault: &str) -> Result<u64> {
        let fixture = self.fixture().await?;
        let owner = self.user(vault);
        let admin = fixture.postgres.connect().await?;
        admin
            .execute(
                "update public.chatvault_changes \
                 set created_at = created_at - public.chatvault_history_retention() - interval '1 day' \
                 where owner = $1",
                &[&owner],
            )
            .await
            .map_err(|e| Error::unavailable(format!("ageing the history of {vault} failed"), e))?;
        let storage = self.client(vault, None).await?;
        let report = storage.maintain(MaintenanceBudget { force: true }).await?;
        Ok(report.removed_entries)
    }
}

#[async_trait]
impl TestBackend for Supabase {
    fn name(&self) -> String {
        "supabase".into()
    }

    async fn start(&self) -> Result<String> {
        Ok(self.fixture().await?.description())
    }

    async fn open(&self, vault: &str) -> Result<DynStorage> {
        self.client(vault, None).await
    }

    async fn open_counting(
        &self,
        vault: &str,
        requests: RequestCounter,
    ) -> Option<Result<DynStorage>> {
        Some(self.client(vault, Some(requests)).await)
    }

    async fn corrupt_record(&self, vault: &str, chat: ChatId) -> Option<Result<()>> {
        Some(self.truncate_sealed_bytes(vault, chat).await)
    }

    async fn expire_history(&self, vault: &str) -> Option<Result<u64>> {
        Some(self.age_and_prune_history(vault).await)
    }
}

/// Why the storage-level corruption contract does not apply here.
const NO_BACKEND_CORRUPTION: &str = "Supabase keeps sealed bytes in bytea \
     columns without framing or checksums of its own, so damaged bytes read back \
     without error and only the cipher can reject them (that path runs in \
     sync::a_record_the_backend_cannot_decode_is_reported_and_the_rest_still_sync)";

/// The Storage contracts, with the one that expects the backend itself to
/// detect damaged bytes reported as skipped: `corrupt_record` truncates the
/// bytes, the client returns them as stored, and the contract's `Corrupt`
/// cannot come from a typed bytea column.
fn storage_contracts() -> Vec<Contract> {
    chatvault_conformance::storage::contracts()
        .into_iter()
        .map(|contract| {
            if contract.name == "storage::corrupt_record_fails_corrupt_and_others_stay_readable" {
                Contract {
                    run: |_| Box::pin(async { Ok(Verdict::Skipped(NO_BACKEND_CORRUPTION.into())) }),
                    ..contract
                }
            } else {
                contract
            }
        })
        .collect()
}

fn main() -> std::process::ExitCode {
    chatvault_conformance::Suite::new(Supabase::default())
        .with_contracts(storage_contracts())
        .with_contracts(chatvault_conformance::sync::contracts())
        .run()
}
