//! Supabase Auth sessions: sign-in, refresh ahead of expiry and on a 401,
//! refresh-token rotation, revocation, sign-out, and pushes that cross a
//! token expiry. Served by the in-process Auth stand-in, or by the Auth
//! server at `CHATVAULT_TEST_GOTRUE_URL` (with its anon key in
//! `CHATVAULT_TEST_GOTRUE_ANON_KEY`; cases that need the stand-in's knobs
//! say SKIPPED there).

mod common;

use chatvault_core::{ChatId, Cursor, Error, PutPrecondition, Storage};
use chatvault_supabase::{
    MemorySessionStore, SessionStore, SignOutScope, SupabaseAuth, TokenSource,
};
use chatvault_test_services::gotrue::{GoTrueConfig, GoTrueStandIn};
use chatvault_test_services::postgres::SupabaseFixture;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery";

/// The Auth server under test.
enum AuthServer {
    StandIn(GoTrueStandIn),
    Environment { url: String, anon_key: String },
}

impl AuthServer {
    /// The stand-in signing like `fixture`'s API (so the API accepts its
    /// tokens), or the server from the environment.
    fn for_fixture(fixture: &'static SupabaseFixture) -> Self {
        Self::from_env().unwrap_or_else(|| {
            Self::StandIn(
                GoTrueStandIn::start(GoTrueConfig::new(Arc::new(move |claims| {
                    fixture.sign(claims)
                })))
                .expect("Auth stand-in starts"),
            )
        })
    }

    /// A server whose tokens no API checks (for cases about Auth alone).
    fn alone(config: impl FnOnce(GoTrueConfig) -> GoTrueConfig) -> Self {
        Self::from_env().unwrap_or_else(|| {
            Self::StandIn(
                GoTrueStandIn::start(config(GoTrueConfig::with_secret(b"auth-tests")))
                    .expect("Auth stand-in starts"),
            )
        })
    }

    fn from_env() -> Option<Self> {
        let url = std::env::var("CHATVAULT_TEST_GOTRUE_URL").ok()?;
        let anon_key = std::env::var("CHATVAULT_TEST_GOTRUE_ANON_KEY").unwrap_or_default();
        Some(Self::Environment { url, anon_key })
    }

    fn url(&self) -> String {
        match self {
            Self::StandIn(stand_in) => stand_in.url(),
            Self::Environment { url, .. } => url.trim_end_matches('/').to_owned(),
        }
    }

    fn anon_key(&self) -> String {
        match self {
            Self::StandIn(_) => "anon-key".into(),
            Self::Environment { anon_key, .. } => anon_key.clone(),
        }
    }

    /// The stand-in, or `None` after saying the case is skipped.
    fn stand_in(&self, case: &str) -> Option<&GoTrueStandIn> {
        match self {
            Self::StandIn(stand_in) => Some(stand_in),
            Self::Environment { .. } => {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {case}: needs the Auth stand-in's clock and revocation knobs"
                );
                None
            }
        }
    }

    /// Signs a new user up (through the documented endpoint, so a real
    /// server with email confirmation off works too); returns its email.
    async fn new_user(&self) -> String {
        let email = format!("user-{}@chatvault.test", Uuid::new_v4().simple());
        let response = reqwest::Client::new()
            .post(format!("{}/auth/v1/signup", self.url()))
            .header("apikey", self.anon_key())
            .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
            .send()
            .await
            .expect("Auth server answers");
        assert!(
            response.status().is_success(),
            "signup: {}",
            response.text().await.unwrap_or_default()
        );
        email
    }

    fn auth(&self, store: Arc<dyn SessionStore>) -> SupabaseAuth {
        SupabaseAuth::builder(&format!("supabase+{}", self.url()))
            .expect("Auth URL")
            .anon_key(self.anon_key())
            .session_store(store)
            .build()
            .expect("auth client")
    }
}

/// The storage of `fixture`'s API with `auth` as its token source, or
/// `None` when an Auth server from the environment cannot sign for the
/// stand-in API.
fn storage(
    fixture: &SupabaseFixture,
    server: &AuthServer,
    auth: Arc<SupabaseAuth>,
) -> Option<chatvault_supabase::SupabaseStorage> {
    if matches!(server, AuthServer::Environment { .. })
        && std::env::var("CHATVAULT_TEST_POSTGREST_URL").is_err()
    {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: an Auth server from the environment needs the API from CHATVAULT_TEST_POSTGREST_URL (same JWT secret)"
        );
        return None;
    }
    Some(
        common::builder(fixture)
            .shared_token_source(auth)
            .build()
            .expect("storage"),
    )
}

async fn all_changes(storage: &dyn Storage) -> Vec<(ChatId, u64)> {
    let mut cursor = Cursor::start();
    let mut seen = Vec::new();
    loop {
        let page = storage.changes(&cursor, 500).await.expect("changes");
        seen.extend(page.changes.iter().map(|c| (c.chat, c.version)));
        cursor = page.cursor;
        if !page.has_more {
            return seen;
        }
    }
}

fn assert_unauthorized_saying(result: chatvault_core::Result<impl std::fmt::Debug>, words: &str) {
    match result {
        Err(Error::Unauthorized { message }) => {
            assert!(message.contains(words), "{message:?} should say {words:?}")
        }
        other => panic!("expected Unauthorized saying {words:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn signing_in_with_a_password_syncs_as_that_user() {
    let fixture = common::fixture().await;
    let server = AuthServer::for_fixture(fixture);
    let email = server.new_user().await;
    let store = Arc::new(MemorySessionStore::default());
    let auth = Arc::new(server.auth(store.clone()));
    let session = auth
        .sign_in_with_password(&email, PASSWORD)
        .await
        .expect("sign in");
    assert_eq!(session.email.as_deref(), Some(email.as_str()));
    assert!(session.user_id.is_some());
    assert_eq!(store.load().await.unwrap(), Some(session));

    let Some(storage) = storage(fixture, &server, auth) else {
        return;
    };
    let chat = ChatId(Uuid::new_v4());
    storage
        .put(common::record(chat, 1, "a"), PutPrecondition::None)
        .await
        .expect("push with the session's token");
    assert_eq!(all_changes(&storage).await, vec![(chat, 1)]);
}

#[tokio::test]
async fn a_wrong_password_is_unauthorized_in_either_error_shape() {
    for legacy in [false, true] {
        let server = AuthServer::alone(|c| GoTrueConfig {
            legacy_errors: legacy,
            ..c
        });
        let email = server.new_user().await;
        let store = Arc::new(MemorySessionStore::default());
        let auth = server.auth(store.clone());
        assert_unauthorized_saying(
            auth.sign_in_with_password(&email, "wrong password").await,
            "Invalid login credentials",
        );
        assert_unauthorized_saying(auth.access_token().await, "sign in again");
        assert_eq!(store.load().await.unwrap(), None);
    }
}

#[tokio::test]
async fn a_refresh_rotates_the_refresh_token_and_reusing_the_old_one_ends_the_session() {
    let server = AuthServer::alone(|c| c);
    let email = server.new_user().await;
    let store = Arc::new(MemorySessionStore::default());
    let auth = server.auth(store.clone());
    let first = auth.sign_in_with_password(&email, PASSWORD).await.unwrap();

    let token = auth.refresh().await.expect("refresh");
    let second = store.load().await.unwrap().expect("stored after refresh");
    assert_eq!(second.access_token, token);
    assert_ne!(second.refresh_token, first.refresh_token, "rotated");
    assert_eq!(auth.session().await, Some(second.clone()));

    // A stolen copy of the used refresh token is refused, and the reuse
    // ends the session it belonged to.
    let thief = server.auth(Arc::new(MemorySessionStore::default()));
    assert_unauthorized_saying(
        thief.sign_in_with_refresh_token(&first.refresh_token).await,
        "sign in again",
    );
    if let AuthServer::StandIn(_) = server {
        assert_unauthorized_saying(auth.refresh().await, "sign in again");
        assert_eq!(
            store.load().await.unwrap(),
            None,
            "a dead session is cleared"
        );
    }
}

#[tokio::test]
async fn a_held_refresh_token_signs_in_once() {
    let server = AuthServer::alone(|c| c);
    let email = server.new_user().await;
    let first = server.auth(Arc::new(MemorySessionStore::default()));
    let held = first.sign_in_with_password(&email, PASSWORD).await.unwrap();

    let app = server.auth(Arc::new(MemorySessionStore::default()));
    let session = app
        .sign_in_with_refresh_token(&held.refresh_token)
        .await
        .expect("sign in with a held refresh token");
    assert_eq!(session.email, held.email);
    assert_ne!(session.refresh_token, held.refresh_token);
    assert!(!app.access_token().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_revoked_session_asks_to_sign_in_again_and_is_cleared() {
    let server = AuthServer::alone(|c| c);
    let Some(stand_in) = server.stand_in("a_revoked_session_asks_to_sign_in_again") else {
        return;
    };
    let email = server.new_user().await;
    let store = Arc::new(MemorySessionStore::default());
    let auth = server.auth(store.clone());
    let session = auth.sign_in_with_password(&email, PASSWORD).await.unwrap();
    stand_in.revoke_sessions(session.user_id.unwrap());

    assert_unauthorized_saying(auth.refresh().await, "sign in again");
    assert_eq!(store.load().await.unwrap(), None);
    assert_unauthorized_saying(auth.access_token().await, "sign in again");
}

#[tokio::test]
async fn signing_out_revokes_the_session_and_stops_requests() {
    let server = AuthServer::alone(|c| c);
    let email = server.new_user().await;
    let store = Arc::new(MemorySessionStore::default());
    let auth = server.auth(store.clone());
    let session = auth.sign_in_with_password(&email, PASSWORD).await.unwrap();

    auth.sign_out(SignOutScope::Global).await.expect("sign out");
    assert_eq!(store.load().await.unwrap(), None);
    assert_unauthorized_saying(auth.access_token().await, "sign in again");
    let other = server.auth(Arc::new(MemorySessionStore::default()));
    assert_unauthorized_saying(
        other
            .sign_in_with_refresh_token(&session.refresh_token)
            .await,
        "sign in again",
    );
}

#[tokio::test]
async fn a_stored_session_is_restored_on_the_next_start() {
    let server = AuthServer::alone(|c| c);
    let email = server.new_user().await;
    let store: Arc<MemorySessionStore> = Arc::new(MemorySessionStore::default());
    let first_run = server.auth(store.clone());
    let session = first_run
        .sign_in_with_password(&email, PASSWORD)
        .await
        .unwrap();
    drop(first_run);

    let next_run = server.auth(store.clone());
    assert!(next_run.restore().await.unwrap());
    assert_eq!(next_run.access_token().await.unwrap(), session.access_token);
}

#[tokio::test]
async fn the_access_token_is_refreshed_ahead_of_expiry_and_not_before() {
    let server = AuthServer::alone(|c| GoTrueConfig {
        access_ttl_secs: 30,
        ..c
    });
    let Some(stand_in) = server.stand_in("the_access_token_is_refreshed_ahead_of_expiry") else {
        return;
    };
    let email = server.new_user().await;
    let auth = server.auth(Arc::new(MemorySessionStore::default()));
    let signed_in = auth.sign_in_with_password(&email, PASSWORD).await.unwrap();

    // 30 s left is inside the 60 s margin: the next use refreshes first.
    // (Tokens minted within the same second can be byte-identical, so the
    // rotated refresh token and the server's count show the refresh.)
    auth.access_token().await.unwrap();
    assert_eq!(stand_in.stats().refresh_grants, 1);
    let refreshed = auth.session().await.unwrap();
    assert_ne!(refreshed.refresh_token, signed_in.refresh_token);

    // An hour-long token is used as it is.
    stand_in.set_access_ttl(3600);
    let fresh = auth.refresh().await.unwrap();
    for _ in 0..5 {
        assert_eq!(auth.access_token().await.unwrap(), fresh);
    }
    assert_eq!(stand_in.stats().refresh_grants, 2);
}

#[tokio::test]
async fn a_device_clock_far_from_the_servers_neither_refreshes_early_nor_late() {
    for offset in [-7200, 7200] {
        let server = AuthServer::alone(|c| c);
        let Some(stand_in) = server.stand_in("a_device_clock_far_from_the_servers") else {
            return;
        };
        stand_in.set_clock_offset(offset);
        let email = server.new_user().await;
        let auth = server.auth(Arc::new(MemorySessionStore::default()));
        let session = auth.sign_in_with_password(&email, PASSWORD).await.unwrap();
        // The server's `expires_at` is two hours off this device's clock;
        // the session counts `expires_in` from its own clock instead.
        for _ in 0..3 {
            assert_eq!(auth.access_token().await.unwrap(), session.access_token);
        }
        assert_eq!(stand_in.stats().refresh_grants, 0, "offset {offset}");
    }
}

#[tokio::test]
async fn a_token_expiring_mid_sync_is_refreshed_once_and_no_push_is_lost_or_doubled() {
    let fixture = common::fixture().await;
    let server = AuthServer::for_fixture(fixture);
    let Some(stand_in) = server.stand_in("a_token_expiring_mid_sync") else {
        return;
    };
    let email = server.new_user().await;
    let auth = Arc::new(server.auth(Arc::new(MemorySessionStore::default())));
    auth.sign_in_with_password(&email, PASSWORD).await.unwrap();
    let Some(storage) = storage(fixture, &server, auth.clone()) else {
        return;
    };
    let storage = Arc::new(storage);

    let first: Vec<ChatId> = (0..4).map(|_| ChatId(Uuid::new_v4())).collect();
    for chat in &first {
        storage
            .put(common::record(*chat, 1, "before"), PutPrecondition::None)
            .await
            .unwrap();
    }

    // The device sleeps through the expiry: the token it holds still looks
    // good to it, but the API rejects it. Eight pushes meet the 401 at once.
    stand_in.expire_next_access_tokens(1);
    auth.refresh().await.unwrap();
    let before = stand_in.stats();
    let second: Vec<ChatId> = (0..8).map(|_| ChatId(Uuid::new_v4())).collect();
    let pushes = second.iter().map(|chat| {
        let storage = storage.clone();
        let chat = *chat;
        tokio::spawn(async move {
            storage
                .put(common::record(chat, 1, "after"), PutPrecondition::None)
                .await
        })
    });
    for push in futures::future::join_all(pushes).await {
        push.expect("task").expect("push across the expiry");
    }
    let after = stand_in.stats();
    let refreshes = after.refresh_grants - before.refresh_grants;
    assert!(
        (1..8).contains(&refreshes),
        "the rejected pushes share refreshes: {refreshes}"
    );
    assert_eq!(after.refused, before.refused, "no refresh token was reused");

    let mut counts: HashMap<ChatId, usize> = HashMap::new();
    for (chat, version) in all_changes(storage.as_ref()).await {
        assert_eq!(version, 1);
        *counts.entry(chat).or_default() += 1;
    }
    assert_eq!(counts.len(), 12, "every push arrived");
    assert!(counts.values().all(|n| *n == 1), "no push doubled");
    for chat in first.iter().chain(&second) {
        assert!(counts.contains_key(chat));
    }
}

#[tokio::test]
async fn without_a_session_every_request_is_unauthorized() {
    let fixture = common::fixture().await;
    let server = AuthServer::for_fixture(fixture);
    let auth = Arc::new(server.auth(Arc::new(MemorySessionStore::default())));
    let Some(storage) = storage(fixture, &server, auth) else {
        return;
    };
    let result = storage.changes(&Cursor::start(), 10).await;
    assert!(matches!(result, Err(Error::Unauthorized { .. })));
}

/// An Auth server (or something in its place) that answers a sign-in with
/// a valid token JSON padded to `padding` bytes, without a Content-Length
/// (the body ends when the connection closes).
async fn oversized_auth_server(padding: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let spaces = vec![b' '; 64 * 1024];
                let mut sent = 0;
                while sent < padding {
                    if stream.write_all(&spaces).await.is_err() {
                        return;
                    }
                    sent += spaces.len();
                }
                let token = br#"{"access_token":"a","refresh_token":"r","expires_in":3600}"#;
                let _ = stream.write_all(token).await;
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn an_oversized_auth_answer_is_refused_as_corrupt_not_buffered() {
    let url = oversized_auth_server(8 * 1024 * 1024).await;
    let auth = SupabaseAuth::builder(&url)
        .expect("url")
        .anon_key("anon-key")
        .build()
        .expect("auth");
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        auth.sign_in_with_password("ada@example.org", PASSWORD),
    )
    .await
    .expect("the answer is cut off, not read to the end");
    match result {
        Err(Error::Corrupt { what, reason }) => {
            assert!(what.contains("sign-in"), "{what}");
            assert!(reason.contains("larger than"), "{reason}");
        }
        other => panic!("expected Corrupt for an oversized answer, got {other:?}"),
    }
    assert!(auth.session().await.is_none());
}
