//! What the Supabase integration tests share: the fixture, clients signed
//! in as a user, raw RPC calls, and token sources that count refreshes.

#![allow(dead_code)]

use async_trait::async_trait;
use bytes::Bytes;
use chatvault_conformance::fixtures::postgres::SupabaseFixture;
use chatvault_conformance::services_required;
use chatvault_core::{ChatId, Result, SealedRecord};
use chatvault_supabase::{
    StaticToken, SupabaseStorage, SupabaseStorageBuilder, TokenSource, MIGRATIONS,
};
use serde_json::Value;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use uuid::Uuid;

/// The process-wide fixture, or `None` (test skipped, said on stderr) when
/// no PostgreSQL can be had and `CI` is not set. With `CI` set, a missing
/// service fails the test.
pub async fn fixture() -> Option<&'static SupabaseFixture> {
    match SupabaseFixture::shared(MIGRATIONS).await {
        Ok(fixture) => {
            static PRINTED: std::sync::Once = std::sync::Once::new();
            // Written past libtest's output capture, so every run shows it.
            PRINTED.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "chatvault-supabase tests: served by {}",
                    fixture.description()
                );
            });
            Some(fixture)
        }
        Err(e) if services_required() => {
            panic!("CI is set and the Supabase services are missing: {e}")
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: no PostgreSQL for the Supabase tests: {e}"
            );
            None
        }
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
