//! One PostgREST RPC call: `POST {url}/rest/v1/rpc/<function>` with the
//! project's anon key and the user's access token, one token refresh on a
//! rejected token, and the request and byte counts a caller can read back.

use crate::error::{is_token_rejection, map_error, PostgrestError};
use crate::token::TokenSource;
use chatvault_core::{ChatId, Error, Result};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Requests and bytes this backend exchanged with the server, counted on the
/// HTTP level (request line, headers and body; TLS overhead excluded).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// HTTP requests sent, retries after a token refresh included.
    pub requests: u64,
    /// Bytes sent: request line, headers and body.
    pub bytes_sent: u64,
    /// Bytes received: status line, headers and body.
    pub bytes_received: u64,
}

/// One HTTP request the backend made, reported to the observer set with
/// [`SupabaseStorageBuilder::on_request`](crate::SupabaseStorageBuilder::on_request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestEvent {
    /// The RPC function called, e.g. `chatvault_pull`.
    pub function: String,
    /// The HTTP status, or `None` when no response arrived.
    pub status: Option<u16>,
    /// Bytes sent: request line, headers and body.
    pub bytes_sent: u64,
    /// Bytes received: status line, headers and body.
    pub bytes_received: u64,
}

/// A callback told about every HTTP request (metrics, tests).
pub(crate) type RequestObserver = Arc<dyn Fn(&RequestEvent) + Send + Sync>;

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

pub(crate) struct RpcClient {
    http: reqwest::Client,
    rest: Url,
    anon_key: String,
    tokens: Arc<dyn TokenSource>,
    counters: Counters,
    observer: Option<RequestObserver>,
    /// Most bytes one response body may have; a larger one is refused
    /// without being read whole.
    max_response: usize,
}

impl fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field("rest", &self.rest.as_str())
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Done(bytes::Bytes),
    TokenRejected(String),
}

impl RpcClient {
    pub(crate) fn new(
        http: reqwest::Client,
        rest: Url,
        anon_key: String,
        tokens: Arc<dyn TokenSource>,
        observer: Option<RequestObserver>,
        max_response: usize,
    ) -> Self {
        Self {
            http,
            rest,
            anon_key,
            tokens,
            counters: Counters::default(),
            observer,
            max_response,
        }
    }

    fn observe(&self, function: &str, status: Option<u16>, sent: usize, received: usize) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters.sent.fetch_add(sent as u64, Ordering::Relaxed);
        self.counters
            .received
            .fetch_add(received as u64, Ordering::Relaxed);
        if let Some(observer) = &self.observer {
            observer(&RequestEvent {
                function: function.to_owned(),
                status,
                bytes_sent: sent as u64,
                bytes_received: received as u64,
            });
        }
    }

    pub(crate) fn stats(&self) -> TransferStats {
        TransferStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            bytes_sent: self.counters.sent.load(Ordering::Relaxed),
            bytes_received: self.counters.received.load(Ordering::Relaxed),
        }
    }

    /// Calls `function` with named arguments and decodes its JSON result.
    /// `chat` names the record a conflict would be about, if one.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        function: &str,
        args: &serde_json::Value,
        chat: Option<ChatId>,
    ) -> Result<T> {
        let body = serde_json::to_vec(args)
            .map_err(|e| Error::invalid(format!("arguments of {function}: {e}")))?;
        let token = self.tokens.access_token().await?;
        let bytes = match self.attempt(function, &body, &token, chat).await? {
            Attempt::Done(bytes) => bytes,
            Attempt::TokenRejected(first) => {
                tracing::debug!(function, reason = %first, "access token rejected; refreshing once");
                let token = self.tokens.refresh().await?;
                match self.attempt(function, &body, &token, chat).await? {
                    Attempt::Done(bytes) => bytes,
                    Attempt::TokenRejected(again) => {
                        return Err(Error::Unauthorized {
                            message: format!(
                            "the server rejected the access token, also after a refresh: {again}"
                        ),
                        })
                    }
                }
            }
        };
        crate::wire::parse_response(function, &bytes)
    }

    async fn attempt(
        &self,
        function: &str,
        body: &[u8],
        token: &str,
        chat: Option<ChatId>,
    ) -> Result<Attempt> {
        let url = self
            .rest
            .join(function)
            .map_err(|e| Error::invalid(format!("RPC name {function:?}: {e}")))?;
        let request = self
            .http
            .post(url)
            .header("apikey", &self.anon_key)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(body.to_vec())
            .build()
            .map_err(|e| Error::invalid(format!("request for {function}: {e}")))?;
        let sent = request_line_len(&request) + headers_len(request.headers()) + body.len();
        let response = match self.http.execute(request).await {
            Ok(response) => response,
            Err(e) => {
                self.observe(function, None, sent, 0);
                return Err(transport_error(function, e));
            }
        };
        let status = response.status().as_u16();
        let head = 17 + headers_len(response.headers());
        let bytes = match self.read_body(function, response).await {
            Ok(bytes) => bytes,
            Err(e) => {
                self.observe(function, Some(status), sent, head);
                return Err(e);
            }
        };
        self.observe(function, Some(status), sent, head + bytes.len());

        if (200..300).contains(&status) {
            return Ok(Attempt::Done(bytes));
        }
        let error = PostgrestError::parse(&bytes);
        if is_token_rejection(status, &error) {
            return Ok(Attempt::TokenRejected(
                error
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("HTTP {status}")),
            ));
        }
        Err(map_error(status, &error, chat))
    }
}

impl RpcClient {
    /// Reads a response body of at most `max_response` bytes.
    async fn read_body(&self, function: &str, response: reqwest::Response) -> Result<bytes::Bytes> {
        read_capped(
            function,
            &format!("response of {function}"),
            response,
            self.max_response,
        )
        .await
    }
}

/// Reads a response body of at most `max` bytes, chunk by chunk: a larger
/// one (announced or not) is [`Error::Corrupt`] naming `what` as soon as it
/// passes the cap, never buffered whole. Every answer of the Supabase
/// servers (PostgREST and Auth) is read through it; `function` names the
/// call in transport errors.
pub(crate) async fn read_capped(
    function: &str,
    what: &str,
    mut response: reqwest::Response,
    max: usize,
) -> Result<bytes::Bytes> {
    let too_large = || {
        Error::corrupt(
            what,
            format!("larger than the {max} bytes any chatvault answer can have"),
        )
    };
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(function, e))?
    {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

fn transport_error(function: &str, e: reqwest::Error) -> Error {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "transport failed"
    };
    Error::unavailable(format!("{function}: {what}"), e)
}

fn request_line_len(request: &reqwest::Request) -> usize {
    // "POST /rest/v1/rpc/f HTTP/1.1\r\nHost: …\r\n" plus the blank line.
    let url = request.url();
    request.method().as_str().len()
        + url.path().len()
        + 12
        + url.host_str().map_or(0, str::len)
        + 8
        + 2
}

fn headers_len(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}
