//! A `supabase+http://` vault signs in with email and password from the
//! environment, keeps its session sealed in the replica (rotated refresh
//! tokens included), reopens with no password, and signs out. Served by the
//! conformance fixtures: PostgreSQL with the migrations, the
//! PostgREST-compatible gateway and the Auth stand-in behind one project
//! URL. One test: it sets process environment variables.

use chatvault::supabase::{SignOutScope, EMAIL_VAR, PASSWORD_VAR};
use chatvault::{ChatVault, Error, Role};
use chatvault_supabase::MIGRATIONS;
use chatvault_test_services::gotrue::{GoTrueConfig, GoTrueStandIn};
use chatvault_test_services::postgres::SupabaseFixture;
use chatvault_test_services::project_front::ProjectFront;
use std::sync::Arc;

const PASSPHRASE: &str = "session test passphrase";

async fn open(url: &str, replica: &std::path::Path) -> chatvault::Result<ChatVault> {
    ChatVault::builder()
        .storage_url(url)
        .replica_path(replica)
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(10)
        .open()
        .await
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supabase_url_signs_in_keeps_the_session_sealed_in_the_replica_and_signs_out() {
    let fixture = match SupabaseFixture::shared(MIGRATIONS).await {
        Ok(fixture) => fixture,
        Err(e) => panic!("this test needs PostgreSQL (install postgresql-15): {e}"),
    };
    let auth = GoTrueStandIn::start(GoTrueConfig::new(Arc::new(move |claims| {
        fixture.sign(claims)
    })))
    .expect("Auth stand-in starts");
    // Every access token is already inside the refresh margin: each request
    // refreshes, so the refresh token rotates many times per run.
    auth.set_access_ttl(1);
    let front = ProjectFront::start(&fixture.url, &auth.url()).expect("project front starts");
    let url = format!("supabase+{}", front.url());
    let email = format!("{}@example.org", uuid::Uuid::now_v7().simple());
    let password = "correct horse battery";
    auth.add_user(&email, password);

    std::env::remove_var("SUPABASE_ACCESS_TOKEN");
    std::env::set_var("SUPABASE_ANON_KEY", &fixture.anon_key);
    std::env::set_var(EMAIL_VAR, &email);
    std::env::set_var(PASSWORD_VAR, password);
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = dir.path().join("laptop.redb");

    // First run: signs in from the environment, creates the vault, pushes.
    let vault = open(&url, &replica).await.expect("signed in and opened");
    let session = vault.supabase_session().await.expect("a Supabase session");
    assert_eq!(session.email.as_deref(), Some(email.as_str()));
    let chat = vault.new_chat("Signed in").await.expect("new chat");
    vault
        .add_message(chat.id, Role::User, "synced under a session")
        .await
        .expect("add");
    vault.sync_now().await.expect("sync");
    let last = vault.supabase_session().await.expect("still signed in");
    assert_ne!(
        last.refresh_token, session.refresh_token,
        "the refresh token rotated during the run"
    );
    vault.close().await;
    assert_eq!(auth.stats().password_grants, 1);
    assert!(auth.stats().refresh_grants >= 1);

    // The replica holds the session sealed: neither token appears in it.
    let bytes = std::fs::read(&replica).expect("replica bytes");
    assert!(
        !contains(&bytes, &last.refresh_token),
        "refresh token in the clear"
    );
    assert!(
        !contains(&bytes, &last.access_token),
        "access token in the clear"
    );
    assert!(!contains(&bytes, &email), "email in the clear");

    // Second run, no password: the stored session (its latest, rotated
    // refresh token; an older one would be refused as reused) signs in.
    std::env::remove_var(EMAIL_VAR);
    std::env::remove_var(PASSWORD_VAR);
    let vault = open(&url, &replica)
        .await
        .expect("reopened with the stored session");
    vault
        .sync_now()
        .await
        .expect("sync with the stored session");
    let full = vault.load_full_chat(chat.id).await.expect("chat");
    assert_eq!(full.messages()[0].content(), "synced under a session");
    assert_eq!(auth.stats().password_grants, 1, "no new sign-in");

    // Sign-out revokes the session and removes it from the replica.
    vault
        .sign_out(SignOutScope::Local)
        .await
        .expect("signed out");
    assert!(vault.supabase_session().await.is_none());
    let err = vault.sync_now().await.expect_err("signed out: no sync");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    vault.close().await;

    // Third run: nothing stored, no credentials: a clear Unauthorized.
    let err = open(&url, &replica).await.expect_err("not signed in");
    assert!(
        matches!(err, Error::Unauthorized { ref message } if message.contains(EMAIL_VAR)),
        "{err}"
    );

    // A wrong password is Unauthorized too, and stores nothing.
    std::env::set_var(EMAIL_VAR, &email);
    std::env::set_var(PASSWORD_VAR, "wrong");
    let err = open(&url, &replica).await.expect_err("wrong password");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");

    // The app's own credentials (what `chatvault login` passes) win over
    // the environment's.
    let vault = ChatVault::builder()
        .storage_url(&url)
        .replica_path(&replica)
        .passphrase(PASSPHRASE)
        .supabase_sign_in(&email, password)
        .open()
        .await
        .expect("signed in with explicit credentials");
    vault.sync_now().await.expect("sync");
    assert_eq!(vault.sidebar().len(), 1);
    vault.close().await;
}
