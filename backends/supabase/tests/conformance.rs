//! The chatvault conformance suites (Storage contracts and end-to-end sync
//! through the facade) against Supabase: real PostgreSQL with
//! the crate's migrations, behind PostgREST or the PostgREST-compatible
//! gateway (see `chatvault_conformance::fixtures::postgres`).

use async_trait::async_trait;
use chatvault_conformance::fixtures::postgres::SupabaseFixture;
use chatvault_conformance::layers::RequestCounter;
use chatvault_conformance::TestBackend;
use chatvault_core::{DynStorage, Result};
use chatvault_supabase::{StaticToken, SupabaseStorage, MIGRATIONS};
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
}

fn main() -> std::process::ExitCode {
    chatvault_conformance::Suite::new(Supabase::default())
        .with_storage_contracts()
        .with_contracts(chatvault_conformance::sync::contracts())
        .run()
}
