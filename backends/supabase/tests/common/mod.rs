//! What the Supabase integration tests share: a libtest runner that reports
//! tests as skipped (never passed) when no PostgreSQL can be had, clients
//! signed in as a user, raw RPC calls, and token sources that count refreshes.

#![allow(dead_code)]

use async_trait::async_trait;
use bytes::Bytes;
use chatvault_conformance::services_required;
use chatvault_core::{ChatId, Result, SealedRecord};
use chatvault_supabase::{
    StaticToken, SupabaseStorage, SupabaseStorageBuilder, TokenSource, MIGRATIONS,
};
use chatvault_test_services::postgres::SupabaseFixture;
use futures::future::BoxFuture;
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use serde_json::Value;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use uuid::Uuid;

/// A test of this crate against a service `S` started once per process.
pub type ServiceTest<S> = fn(&'static S) -> BoxFuture<'static, ()>;

/// A test of this crate against the shared fixture.
pub type FixtureTest = ServiceTest<SupabaseFixture>;

/// Names an `async fn(&'static SupabaseFixture)` as a trial for [`run`].
#[macro_export]
macro_rules! trial {
    ($test:ident) => {
        (
            stringify!($test),
            (|fixture| ::std::boxed::Box::pin($test(fixture))) as $crate::common::FixtureTest,
        )
    };
}

/// The `main` of a `harness = false` test binary: starts the shared fixture
/// once, then runs each test as a libtest trial on its own runtime. When no
/// PostgreSQL can be had, every test is reported as ignored with the reason
/// (and, with `CI` set, as failed), never as passed.
pub fn run(tests: Vec<(&'static str, FixtureTest)>) -> ExitCode {
    run_with(
        || async {
            let fixture = SupabaseFixture::shared(MIGRATIONS).await?;
            eprintln!(
                "chatvault-supabase tests: served by {}",
                fixture.description()
            );
            Ok(fixture)
        },
        tests,
    )
}

/// Like [`run`], with any service `start` provides instead of the shared
/// fixture (kept for the whole process).
pub fn run_with<S, F, Fut>(start: F, tests: Vec<(&'static str, ServiceTest<S>)>) -> ExitCode
where
    S: Send + Sync + 'static + ?Sized,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<&'static S>>,
{
    let args = Arguments::from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let service: std::result::Result<&'static S, String> = if args.list {
        Err("not started for --list".into())
    } else {
        runtime.block_on(start()).map_err(|e| e.to_string())
    };
    match &service {
        Ok(_) => {}
        Err(e) if services_required() => {
            eprintln!("chatvault-supabase tests: CI is set and no PostgreSQL could be had: {e}")
        }
        Err(e) => eprintln!(
            "chatvault-supabase tests: no PostgreSQL, every test is skipped (set CI to fail instead): {e}"
        ),
    }
    let trials = tests
        .into_iter()
        .map(|(name, test)| {
            let service = service.clone();
            Trial::ignorable_test(name, move || match service {
                Ok(service) => {
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(4)
                        .enable_all()
                        .build()
                        .map_err(|e| Failed::from(format!("tokio runtime: {e}")))?;
                    runtime.block_on(test(service));
                    Ok(Completion::Completed)
                }
                Err(reason) if services_required() => Err(Failed::from(format!(
                    "CI is set and no PostgreSQL could be had: {reason}"
                ))),
                Err(_) => Ok(Completion::ignored_with(
                    "skipped: no PostgreSQL for the Supabase tests (the reason is printed above)",
                )),
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(runtime);
    conclusion.exit_code()
}

/// The shared fixture, for `#[tokio::test]`s that need PostgreSQL in a
/// binary whose other tests do not. A missing PostgreSQL fails the test with
/// what to install, never passes it.
pub async fn fixture() -> &'static SupabaseFixture {
    match SupabaseFixture::shared(MIGRATIONS).await {
        Ok(fixture) => fixture,
        Err(e) => panic!(
            "this test needs PostgreSQL (install postgresql-15, or set CHATVAULT_TEST_PG_URL): {e}"
        ),
    }
}

/// A builder for `fixture`'s project, without a token source yet.
pub fn builder(fixture: &SupabaseFixture) -> SupabaseStorageBuilder {
    SupabaseStorage::builder(&format!("supabase+{}", fixture.url))
        .expect("fixture URL")
        .anon_key(fixture.anon_key.clone())
}

/// A client signed in as `user` with an hour-long token.
pub fn client(fixture: &SupabaseFixture, user: Uuid) -> SupabaseStorage {
    builder(fixture)
        .token_source(StaticToken::new(fixture.user_token(user, 3600)))
        .build()
        .expect("client")
}

/// A record whose bytes name chat, version and writer.
pub fn record(chat: ChatId, version: u64, writer: &str) -> SealedRecord {
    SealedRecord {
        chat,
        version,
        deleted: false,
        summary: Bytes::from(format!("summary|{chat}|{version}|{writer}")),
        body: Some(Bytes::from(format!("body|{chat}|{version}|{writer}"))),
    }
}

/// A raw RPC call: status and parsed JSON body (`Value::Null` for none).
pub async fn rpc(
    fixture: &SupabaseFixture,
    bearer: Option<&str>,
    function: &str,
    args: Value,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/rest/v1/rpc/{function}", fixture.url))
        .header("apikey", &fixture.anon_key)
        .json(&args);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("gateway answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("JSON body")
    };
    (status, body)
}

/// A token source that hands out a scripted sequence of tokens: the first
/// as the current token, the rest one per refresh.
pub struct ScriptedTokens {
    tokens: Mutex<Vec<String>>,
    refreshes: AtomicUsize,
}

impl ScriptedTokens {
    pub fn new(current: String, refreshed: Vec<String>) -> Self {
        let mut tokens = refreshed;
        tokens.reverse();
        tokens.push(current);
        Self {
            tokens: Mutex::new(tokens),
            refreshes: AtomicUsize::new(0),
        }
    }

    pub fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenSource for ScriptedTokens {
    async fn access_token(&self) -> Result<String> {
        Ok(self
            .tokens
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default())
    }

    async fn refresh(&self) -> Result<String> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        let mut tokens = self.tokens.lock().unwrap();
        if tokens.len() > 1 {
            tokens.pop();
        }
        Ok(tokens.last().cloned().unwrap_or_default())
    }
}

/// A raw PostgREST table request (`/rest/v1/<table_and_query>`) with
/// `Prefer: return=representation`: status and parsed JSON body
/// (`Value::Null` for none).
pub async fn table(
    fixture: &SupabaseFixture,
    bearer: &str,
    method: reqwest::Method,
    table_and_query: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}/rest/v1/{table_and_query}", fixture.url))
        .header("apikey", &fixture.anon_key)
        .header("prefer", "return=representation")
        .bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("gateway answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("JSON body")
    };
    (status, body)
}
