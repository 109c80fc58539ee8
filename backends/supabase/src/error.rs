//! PostgREST's error responses, mapped to [`chatvault_core::Error`].
//!
//! PostgREST answers a failed request with an HTTP status and a JSON body
//! `{code, message, details, hint}`, where `code` is a PostgreSQL SQLSTATE,
//! a `PGRSTxxx` code of PostgREST itself, or a `PTxxx` code raised by SQL to
//! pick the status. The mapping is by code first and status second, so a
//! proxy's bare 502 and a database's `53300` both come out as retriable.

use chatvault_core::{ChatId, Error};
use serde::Deserialize;

/// The SQLSTATE the migrations raise for an over-size record or key file.
pub(crate) const TOO_LARGE_CODE: &str = "PT413";
/// The SQLSTATE the record trigger raises when a version does not increase.
pub(crate) const VERSION_CODE: &str = "PT409";

/// PostgREST's error body.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PostgrestError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub details: Option<String>,
    #[serde(default)]
    pub hint: Option<String>,
}

impl PostgrestError {
    /// Parses an error body; a body that is not PostgREST's JSON (a proxy's
    /// HTML page, an empty body) keeps its first bytes as the message.
    pub(crate) fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_string();
            PostgrestError {
                message: (!text.is_empty()).then_some(text),
                ..PostgrestError::default()
            }
        })
    }

    fn describe(&self, status: u16) -> String {
        let mut text = self
            .message
            .clone()
            .unwrap_or_else(|| format!("HTTP {status}"));
        if let Some(details) = self.details.as_deref().filter(|d| !d.is_empty()) {
            text.push_str(" (");
            text.push_str(details);
            text.push(')');
        }
        if let Some(hint) = self.hint.as_deref().filter(|h| !h.is_empty()) {
            text.push_str("; hint: ");
            text.push_str(hint);
        }
        text
    }

    fn detail_number(&self, key: &str) -> Option<u64> {
        let details: serde_json::Value = serde_json::from_str(self.details.as_deref()?).ok()?;
        details.get(key)?.as_u64()
    }
}

/// True when a refreshed token may fix the failure: PostgREST answers 401
/// for a missing, invalid or expired JWT (PGRST301/302/303).
pub(crate) fn is_token_rejection(status: u16, error: &PostgrestError) -> bool {
    status == 401
        || error
            .code
            .as_deref()
            .is_some_and(|c| c.starts_with("PGRST30"))
}

/// Maps a failed response to a typed error. `chat` names the record a
/// conflict is about, when the request carried exactly one.
pub(crate) fn map_error(status: u16, error: &PostgrestError, chat: Option<ChatId>) -> Error {
    let code = error.code.as_deref().unwrap_or("");
    let message = error.describe(status);
    if code == TOO_LARGE_CODE || status == 413 {
        return Error::TooLarge {
            size: error.detail_number("size").map_or(0, saturating_usize),
            limit: error.detail_number("limit").map_or(0, saturating_usize),
        };
    }
    if code == "42501"
        || code.starts_with("PGRST30")
        || code.starts_with("28")
        || status == 401
        || status == 403
    {
        return Error::Unauthorized { message };
    }
    if code == "23505" || code == VERSION_CODE || status == 409 {
        return Error::Conflict {
            chat: chat.unwrap_or(ChatId(uuid::Uuid::nil())),
            current: error.detail_number("current"),
        };
    }
    let transient_code = code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code == "40001"
        || code == "40P01"
        || matches!(code, "PGRST000" | "PGRST001" | "PGRST002" | "PGRST003");
    if transient_code || status == 429 || (500..600).contains(&status) {
        return Error::Unavailable {
            message: format!("HTTP {status} {code}: {message}"),
            source: None,
        };
    }
    Error::Rejected {
        code: if code.is_empty() {
            status.to_string()
        } else {
            code.to_string()
        },
        message,
    }
}

fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> PostgrestError {
        PostgrestError::parse(json.as_bytes())
    }

    #[test]
    fn size_limit_code_maps_to_too_large_with_the_servers_numbers() {
        let e = body(
            r#"{"code":"PT413","message":"chatvault record too large","details":"{\"size\": 3000000, \"limit\": 2097152}","hint":null}"#,
        );
        match map_error(413, &e, None) {
            Error::TooLarge { size, limit } => assert_eq!((size, limit), (3_000_000, 2_097_152)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn privilege_and_jwt_codes_map_to_unauthorized() {
        for (status, code) in [
            (401, "42501"),
            (403, "42501"),
            (401, "PGRST301"),
            (401, "PGRST303"),
            (403, "28000"),
        ] {
            let e = body(&format!(r#"{{"code":"{code}","message":"no"}}"#));
            assert!(
                matches!(map_error(status, &e, None), Error::Unauthorized { .. }),
                "{status} {code}"
            );
        }
    }

    #[test]
    fn unique_violation_maps_to_conflict_on_the_named_chat() {
        let chat = ChatId::new();
        let e = body(r#"{"code":"23505","message":"duplicate key","details":null,"hint":null}"#);
        match map_error(409, &e, Some(chat)) {
            Error::Conflict { chat: c, current } => assert_eq!((c, current), (chat, None)),
            other => panic!("expected Conflict, got {other:?}"),
        }
    }

    #[test]
    fn connection_resource_and_server_failures_are_retriable() {
        for (status, code) in [
            (503, "08006"),
            (503, "53300"),
            (500, "57P01"),
            (500, "40001"),
            (503, "PGRST000"),
            (504, "PGRST003"),
            (500, ""),
            (502, ""),
            (429, ""),
        ] {
            let e = body(&format!(r#"{{"code":"{code}","message":"down"}}"#));
            assert!(
                map_error(status, &e, None).is_retriable(),
                "{status} {code}"
            );
        }
    }

    #[test]
    fn bad_arguments_are_rejected_with_the_sqlstate() {
        let e = body(
            r#"{"code":"22023","message":"unknown precondition 'maybe'","details":null,"hint":null}"#,
        );
        match map_error(400, &e, None) {
            Error::Rejected { code, message } => {
                assert_eq!(code, "22023");
                assert!(message.contains("unknown precondition"));
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    #[test]
    fn a_non_json_error_page_keeps_its_status_and_text() {
        let e = PostgrestError::parse(b"<html>Bad Gateway</html>");
        assert!(map_error(502, &e, None).is_retriable());
        match map_error(418, &e, None) {
            Error::Rejected { code, message } => {
                assert_eq!(code, "418");
                assert!(message.contains("Bad Gateway"));
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
    }
}
