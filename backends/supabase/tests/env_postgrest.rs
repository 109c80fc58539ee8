//! The fixture's environment path: a PostgreSQL and a PostgREST that it did
//! not start, named by `CHATVAULT_TEST_PG_URL`,
//! `CHATVAULT_TEST_POSTGREST_URL` and `CHATVAULT_TEST_POSTGREST_JWT_SECRET`.
//! The "external" stack here is a server from the fixture plus a gateway
//! started by the test, standing where a real PostgREST would; this binary
//! holds one test because it sets process environment variables.

use chatvault_core::{ChatId, Part, PutPrecondition, SealedRecord, Storage};
use chatvault_supabase::{StaticToken, SupabaseStorage, MIGRATIONS};
use chatvault_test_services::postgres::{Postgres, SupabaseFixture};
use chatvault_test_services::postgrest_gateway::{GatewayConfig, PostgrestGateway};
use chatvault_test_services::Served;

mod common;

fn main() -> std::process::ExitCode {
    // The server lives for the whole process (a watchdog removes it after).
    common::run_with(
        || async { Ok(&*Box::leak(Box::new(Postgres::start().await?))) },
        vec![(
            "the_fixture_takes_postgres_and_postgrest_from_the_environment",
            |external| {
                Box::pin(the_fixture_takes_postgres_and_postgrest_from_the_environment(external))
            },
        )],
    )
}

async fn the_fixture_takes_postgres_and_postgrest_from_the_environment(
    external: &'static Postgres,
) {
    let secret = "the external project's JWT secret";
    let postgrest = PostgrestGateway::start(GatewayConfig {
        db: external.config().clone(),
        jwt_secret: secret.as_bytes().to_vec(),
        anon_role: "anon".into(),
        schema: "public".into(),
        max_rows: Some(1000),
        pool_size: 4,
    })
    .unwrap();
    std::env::set_var("CHATVAULT_TEST_PG_URL", external.url());
    std::env::set_var("CHATVAULT_TEST_POSTGREST_URL", postgrest.url());
    std::env::set_var("CHATVAULT_TEST_POSTGREST_JWT_SECRET", secret);

    let fixture = SupabaseFixture::start(MIGRATIONS).await.unwrap();
    eprintln!("served by {}", fixture.description());
    assert_eq!(fixture.postgres.served, Served::Environment);
    assert_eq!(fixture.http_served, Served::Environment);
    assert_eq!(fixture.url, postgrest.url());

    // Tokens the fixture signs are accepted by the external API, and the
    // migrations it applied are what that API serves.
    let storage = SupabaseStorage::builder(&format!("supabase+{}", fixture.url))
        .unwrap()
        .anon_key(fixture.anon_key.clone())
        .token_source(StaticToken::new(
            fixture.user_token(uuid::Uuid::now_v7(), 600),
        ))
        .build()
        .unwrap();
    let chat = ChatId::new();
    let record = SealedRecord {
        chat,
        version: 1,
        deleted: false,
        summary: bytes::Bytes::from_static(b"summary"),
        body: Some(bytes::Bytes::from_static(b"body")),
    };
    storage
        .put(record.clone(), PutPrecondition::Absent)
        .await
        .unwrap();
    assert_eq!(
        storage.get(&[chat], Part::Body).await.unwrap(),
        vec![record]
    );

    // Starting again on the same database applies no migration twice.
    let again = SupabaseFixture::start(MIGRATIONS).await.unwrap();
    let applied: i64 = again
        .postgres
        .connect()
        .await
        .unwrap()
        .query_one(
            "select count(*) from supabase_migrations.schema_migrations",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, MIGRATIONS.len() as i64);
}
