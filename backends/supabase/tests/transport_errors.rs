//! How the client maps what a server, a proxy or the network does to typed
//! errors. A tiny local HTTP server plays the failing server: it answers
//! with fixed responses and is not a stand-in for PostgreSQL.

use chatvault_core::{ChatId, Cursor, Error, Part, PutPrecondition, SealedRecord, Storage};
use chatvault_supabase::{StaticToken, SupabaseStorage};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server does with every request.
#[derive(Clone)]
enum Behaviour {
    Respond { status: u16, body: &'static str },
    Stall,
}

/// Serves `behaviour` on 127.0.0.1 until the test ends; counts requests.
async fn serve(behaviour: Behaviour) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("supabase+http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let behaviour = behaviour.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                if read_request(&mut stream).await.is_none() {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                match behaviour {
                    Behaviour::Stall => tokio::time::sleep(Duration::from_secs(3600)).await,
                    Behaviour::Respond { status, body } => {
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                }
            });
        }
    });
    (url, hits)
}

/// Reads one request (headers, then `content-length` bytes of body).
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<()> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while data.len() < end + 4 + length {
                let n = stream.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                data.extend_from_slice(&buf[..n]);
            }
            return Some(());
        }
    }
}

fn storage(url: &str) -> SupabaseStorage {
    SupabaseStorage::builder(url)
        .unwrap()
        .anon_key("anon")
        .token_source(StaticToken::new("token"))
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn record(chat: ChatId) -> SealedRecord {
    SealedRecord {
        chat,
        version: 1,
        deleted: false,
        summary: bytes::Bytes::from_static(b"s"),
        body: None,
    }
}

#[tokio::test]
async fn server_error_500_is_retriable_unavailable() {
    let (url, _) = serve(Behaviour::Respond {
        status: 500,
        body: r#"{"code":"XX000","message":"internal error","details":null,"hint":null}"#,
    })
    .await;
    let error = storage(&url)
        .changes(&Cursor::start(), 10)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    assert!(error.is_retriable());
}

#[tokio::test]
async fn a_proxys_503_page_and_pool_timeout_are_retriable() {
    let (url, _) = serve(Behaviour::Respond {
        status: 503,
        body: "<html>Service Unavailable</html>",
    })
    .await;
    assert!(storage(&url)
        .get(&[ChatId::new()], Part::Summary)
        .await
        .unwrap_err()
        .is_retriable());
    let (url, _) = serve(Behaviour::Respond {
        status: 504,
        body: r#"{"code":"PGRST003","message":"Timed out acquiring connection from connection pool.","details":null,"hint":null}"#,
    })
    .await;
    assert!(storage(&url)
        .get_keyring()
        .await
        .unwrap_err()
        .is_retriable());
}

#[tokio::test]
async fn a_request_that_times_out_is_retriable_unavailable() {
    let (url, hits) = serve(Behaviour::Stall).await;
    let error = storage(&url)
        .changes(&Cursor::start(), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Unavailable { message, .. } if message.contains("timed out")),
        "{error:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_connection_is_retriable_unavailable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let error = storage(&format!("supabase+http://127.0.0.1:{port}"))
        .put(record(ChatId::new()), PutPrecondition::Absent)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
}

#[tokio::test]
async fn malformed_json_in_a_success_response_is_corrupt() {
    let (url, _) = serve(Behaviour::Respond {
        status: 200,
        body: "{\"changes\": [",
    })
    .await;
    let error = storage(&url)
        .changes(&Cursor::start(), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt { what, .. } if what.contains("chatvault_pull")),
        "{error:?}"
    );
    assert!(!error.is_retriable());
}

#[tokio::test]
async fn well_formed_json_of_the_wrong_shape_is_corrupt() {
    let (url, _) = serve(Behaviour::Respond {
        status: 200,
        body: r#"{"records":[{"chat":"not-a-uuid"}]}"#,
    })
    .await;
    let error = storage(&url)
        .get(&[ChatId::new()], Part::Body)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Corrupt { .. }), "{error:?}");
    let (url, _) = serve(Behaviour::Respond {
        status: 200,
        body: r#"{"changes":[{"chat":"01a2b3c4-0000-7000-8000-000000000000","version":1,"deleted":false,"summary":"%%%"}],"cursor":1,"more":false}"#,
    })
    .await;
    let error = storage(&url)
        .changes(&Cursor::start(), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt { reason, .. } if reason.contains("base64")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_push_answer_with_the_wrong_number_of_results_is_corrupt_for_each_record() {
    let (url, _) = serve(Behaviour::Respond {
        status: 200,
        body: r#"[{"ok":true,"seq":1}]"#,
    })
    .await;
    let results = storage(&url)
        .put_batch(vec![
            (record(ChatId::new()), PutPrecondition::Absent),
            (record(ChatId::new()), PutPrecondition::Absent),
        ])
        .await;
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(Error::Corrupt { .. }))),
        "{results:?}"
    );
}

/// Always refreshes successfully, counting refreshes.
#[derive(Default)]
struct Refreshing(AtomicUsize);

#[async_trait::async_trait]
impl chatvault_supabase::TokenSource for Refreshing {
    async fn access_token(&self) -> chatvault_core::Result<String> {
        Ok("old".into())
    }
    async fn refresh(&self) -> chatvault_core::Result<String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok("new".into())
    }
}

#[tokio::test]
async fn a_401_is_retried_once_after_a_refresh_then_unauthorized() {
    let (url, hits) = serve(Behaviour::Respond {
        status: 401,
        body: r#"{"code":"PGRST303","message":"JWT expired","details":null,"hint":null}"#,
    })
    .await;
    let tokens = Arc::new(Refreshing::default());
    let refreshing = SupabaseStorage::builder(&url)
        .unwrap()
        .anon_key("anon")
        .shared_token_source(tokens.clone())
        .build()
        .unwrap();
    let error = refreshing.changes(&Cursor::start(), 10).await.unwrap_err();
    assert!(
        matches!(&error, Error::Unauthorized { message } if message.contains("JWT expired")),
        "{error:?}"
    );
    assert_eq!(
        (tokens.0.load(Ordering::SeqCst), hits.load(Ordering::SeqCst)),
        (1, 2)
    );
    // A static token cannot refresh: one request, then Unauthorized.
    let (url, hits) = serve(Behaviour::Respond {
        status: 401,
        body: "",
    })
    .await;
    let error = storage(&url)
        .changes(&Cursor::start(), 10)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn forbidden_is_unauthorized_without_a_refresh() {
    let (url, hits) = serve(Behaviour::Respond {
        status: 403,
        body: r#"{"code":"42501","message":"permission denied for function chatvault_pull","details":null,"hint":null}"#,
    })
    .await;
    let error = storage(&url)
        .changes(&Cursor::start(), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Unauthorized { message } if message.contains("permission denied")),
        "{error:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_unique_violation_is_a_conflict_on_the_chat_and_a_bad_argument_is_rejected() {
    let (url, _) = serve(Behaviour::Respond {
        status: 409,
        body: r#"{"code":"23505","message":"duplicate key value violates unique constraint","details":null,"hint":null}"#,
    })
    .await;
    let chat = ChatId::new();
    match storage(&url)
        .put(record(chat), PutPrecondition::Absent)
        .await
    {
        Err(Error::Conflict { chat: c, .. }) => assert_eq!(c, chat),
        other => panic!("expected Conflict, got {other:?}"),
    }
    let (url, _) = serve(Behaviour::Respond {
        status: 400,
        body: r#"{"code":"22P02","message":"invalid input syntax for type uuid","details":null,"hint":null}"#,
    })
    .await;
    match storage(&url).get(&[ChatId::new()], Part::Body).await {
        Err(Error::Rejected { code, .. }) => assert_eq!(code, "22P02"),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

/// A server that keeps deferring the same ids (while returning one of them)
/// makes no progress: `get` stops with `Corrupt` instead of looping.
#[tokio::test]
async fn a_get_that_keeps_deferring_the_same_ids_stops_with_corrupt() {
    let (a, b) = (ChatId::new(), ChatId::new());
    let body: &'static str = Box::leak(
        format!(
            r#"{{"records":[{{"chat":"{a}","version":1,"deleted":false,"summary":"eA=="}}],"deferred":["{a}","{b}"]}}"#
        )
        .into_boxed_str(),
    );
    let (url, hits) = serve(Behaviour::Respond { status: 200, body }).await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        storage(&url).get(&[a, b], Part::Summary),
    )
    .await
    .expect("get must stop when the server makes no progress");
    assert!(matches!(outcome, Err(Error::Corrupt { .. })), "{outcome:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// Sequence numbers and versions outside what PostgreSQL's bigint holds
/// are hostile: a cursor or version near `u64::MAX` is `Corrupt`, never a
/// number later arithmetic overflows on.
#[tokio::test]
async fn sequence_numbers_and_versions_beyond_bigint_are_corrupt() {
    let (url, _) = serve(Behaviour::Respond {
        status: 200,
        body: r#"{"changes":[],"cursor":18446744073709551615,"more":false,"head":18446744073709551615}"#,
    })
    .await;
    let error = storage(&url)
        .changes(&Cursor::start(), 10)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Corrupt { .. }), "{error:?}");

    let chat = ChatId::new();
    let body: &'static str = Box::leak(
        format!(
            r#"{{"records":[{{"chat":"{chat}","version":18446744073709551615,"deleted":false,"summary":"eA=="}}],"deferred":[]}}"#
        )
        .into_boxed_str(),
    );
    let (url, _) = serve(Behaviour::Respond { status: 200, body }).await;
    let error = storage(&url).get(&[chat], Part::Summary).await.unwrap_err();
    assert!(matches!(error, Error::Corrupt { .. }), "{error:?}");
}

/// A response larger than any answer the format allows is refused without
/// being read whole.
#[tokio::test]
async fn a_response_larger_than_the_format_allows_is_corrupt() {
    // 40 MB of JSON: a page holds at most 8 MiB of sealed bytes.
    let body: &'static str = Box::leak(
        format!(
            r#"{{"changes":[],"cursor":0,"more":false,"pad":"{}"}}"#,
            "x".repeat(40 * 1024 * 1024)
        )
        .into_boxed_str(),
    );
    let (url, _) = serve(Behaviour::Respond { status: 200, body }).await;
    let error = SupabaseStorage::builder(&url)
        .unwrap()
        .anon_key("anon")
        .token_source(StaticToken::new("token"))
        .build()
        .unwrap()
        .changes(&Cursor::start(), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt { reason, .. } if reason.contains("larger")),
        "{error:?}"
    );

    // A key file over the 1 MiB the format allows is refused too.
    let body: &'static str = Box::leak(
        format!(
            r#"{{"version":1,"bytes":"{}"}}"#,
            "A".repeat(2 * 1024 * 1024)
        )
        .into_boxed_str(),
    );
    let (url, _) = serve(Behaviour::Respond { status: 200, body }).await;
    let error = storage(&url).get_keyring().await.unwrap_err();
    assert!(matches!(error, Error::Corrupt { .. }), "{error:?}");
}
