//! Mapping `object_store` errors onto chatvault's typed errors.
//!
//! Anything that may succeed on retry (network trouble, HTTP 5xx, throttling,
//! timeouts, a full local disk) becomes [`Error::Unavailable`] so the engine
//! keeps the change queued. `AlreadyExists` and `Precondition` are the log's
//! "slot taken" signal and are handled before they get here.
//!
//! `object_store` types most HTTP failures (`NotFound`, `PermissionDenied`,
//! `Unauthenticated`, `Precondition`…), but its S3 client leaves some,
//! notably every LIST, as `Generic` with the status deep in the source chain:
//! a refused LIST must still be [`Error::Unauthorized`], not a retriable
//! error that keeps a device with revoked keys retrying forever. So a
//! `Generic` error's chain is searched for the HTTP status and mapped like
//! it: 401/403 → `Unauthorized`, 404 → `NotFound`, 409/412 → a failed
//! precondition, 408/429/5xx → `Unavailable`, other 4xx → `Rejected`
//! (with S3's 400 `ExpiredToken` → `Unauthorized` and 400 `RequestTimeout` →
//! `Unavailable`). No status (connection refused, timeouts) → `Unavailable`.

use chatvault_core::Error;

/// Maps `err`, raised while working on `what`.
pub(crate) fn map_store_error(err: object_store::Error, what: &str) -> Error {
    use object_store::Error as E;
    match err {
        E::NotFound { path, .. } => Error::NotFound {
            what: format!("{what} ({path})"),
        },
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => Error::Unauthorized {
            message: format!("{what}: {err}"),
        },
        E::NotImplemented | E::NotSupported { .. } => Error::Rejected {
            code: "not_supported".into(),
            message: format!("{what}: the object store does not support this operation: {err}"),
        },
        E::AlreadyExists { .. } | E::Precondition { .. } => precondition_failed(what, &err),
        E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => {
            Error::invalid(format!("{what}: {err}"))
        }
        other => match http_status(&other) {
            Some(status) => map_status(status, other, what),
            None => Error::unavailable(format!("{what}: object store request failed"), other),
        },
    }
}

/// Maps an error that carries an HTTP status but that `object_store` left
/// `Generic` (its S3 client does so for LIST, DeleteObjects and a few
/// more).
fn map_status(status: Status, err: object_store::Error, what: &str) -> Error {
    match status.code {
        401 | 403 => Error::Unauthorized {
            message: format!("{what}: {err}"),
        },
        // S3 answers 400 for an expired or malformed session token...
        400 if status.s3_code.as_deref().is_some_and(|code| {
            matches!(
                code,
                "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired" | "InvalidAccessKeyId"
            )
        }) =>
        {
            Error::Unauthorized {
                message: format!("{what}: {err}"),
            }
        }
        // ...and for an idle connection it closed: both worth a retry.
        400 if status.s3_code.as_deref() == Some("RequestTimeout") => {
            Error::unavailable(format!("{what}: the server timed out the request"), err)
        }
        404 => Error::NotFound {
            what: format!("{what}: {err}"),
        },
        409 | 412 => precondition_failed(what, &err),
        408 | 429 | 500..=599 => Error::unavailable(
            format!("{what}: the server answered HTTP {}", status.code),
            err,
        ),
        code if (400..500).contains(&code) => Error::Rejected {
            code: match status.s3_code {
                Some(s3_code) => format!("http_{code}_{s3_code}"),
                None => format!("http_{code}"),
            },
            message: format!("{what}: {err}"),
        },
        _ => Error::unavailable(format!("{what}: object store request failed"), err),
    }
}

fn precondition_failed(what: &str, err: &object_store::Error) -> Error {
    Error::Rejected {
        code: "precondition_failed".into(),
        message: format!("{what}: {err}"),
    }
}

/// An HTTP error status found in an error's source chain.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Status {
    code: u16,
    /// The S3 error code of the response body (`<Code>…</Code>`), if any.
    s3_code: Option<String>,
}

/// What `object_store` 0.12's `RequestError::Status` displays as, the one
/// link of the chain that holds the status. Its `RetryError` (which has a
/// `status()` accessor) lives in a private module, so it cannot be
/// downcast to; the display is the only way to the status.
const STATUS_DISPLAY: &str = "Server returned non-2xx status code: ";

/// The HTTP status of the failed response behind `err`, looked up along its
/// source chain.
fn http_status(err: &(dyn std::error::Error + 'static)) -> Option<Status> {
    let mut link: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = link {
        let text = error.to_string();
        if let Some(rest) = text.strip_prefix(STATUS_DISPLAY) {
            let code = rest.get(..3).and_then(|digits| digits.parse::<u16>().ok());
            if let Some(code) = code.filter(|c| (100..600).contains(c)) {
                let s3_code = rest
                    .split_once("<Code>")
                    .and_then(|(_, tail)| tail.split_once("</Code>"))
                    .map(|(code, _)| code.trim().to_owned())
                    .filter(|code| !code.is_empty());
                return Some(Status { code, s3_code });
            }
        }
        link = error.source();
    }
    None
}

/// True for the error a `PutMode::Create` gets when the object exists.
pub(crate) fn is_taken(err: &object_store::Error) -> bool {
    matches!(
        err,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(msg: &str) -> Box<dyn std::error::Error + Send + Sync> {
        msg.into()
    }

    #[test]
    fn errors_map_to_what_the_caller_can_do() {
        let generic = object_store::Error::Generic {
            store: "S3",
            source: boxed("503 Slow Down"),
        };
        assert!(map_store_error(generic, "x").is_retriable());
        let denied = object_store::Error::PermissionDenied {
            path: "p".into(),
            source: boxed("403"),
        };
        assert!(matches!(
            map_store_error(denied, "x"),
            Error::Unauthorized { .. }
        ));
        let unauthenticated = object_store::Error::Unauthenticated {
            path: "p".into(),
            source: boxed("401"),
        };
        assert!(matches!(
            map_store_error(unauthenticated, "x"),
            Error::Unauthorized { .. }
        ));
        assert!(matches!(
            map_store_error(object_store::Error::NotImplemented, "x"),
            Error::Rejected { .. }
        ));
        let missing = object_store::Error::NotFound {
            path: "p".into(),
            source: boxed("404"),
        };
        assert!(matches!(
            map_store_error(missing, "x"),
            Error::NotFound { .. }
        ));
    }

    /// An error that wraps another, as `object_store`'s S3 client wraps its
    /// retry error in a crate-private `ListRequest` error.
    #[derive(Debug)]
    struct Wrapped {
        message: &'static str,
        inner: Box<dyn std::error::Error + Send + Sync>,
    }

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: {}", self.message, self.inner)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.inner)
        }
    }

    /// A `Generic` error shaped like the one a failed S3 LIST gives:
    /// `Generic { ListRequest { RetryError { RequestError::Status } } }`.
    fn failed_list(status: &str, body: &str) -> object_store::Error {
        let request = boxed(&format!("{STATUS_DISPLAY}{status}: {body}"));
        let retry = Wrapped {
            message: "Error performing GET http://127.0.0.1/b?list-type=2 in 3ms",
            inner: request,
        };
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(Wrapped {
                message: "Error performing list request",
                inner: Box::new(retry),
            }),
        }
    }

    fn s3_error(code: &str) -> String {
        format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>")
    }

    /// A status line, an S3 error code, and what the mapped error must be.
    type Case = (&'static str, &'static str, fn(&Error) -> bool);

    #[test]
    fn a_status_inside_a_generic_error_maps_like_the_status() {
        let cases: [Case; 10] = [
            ("403 Forbidden", "SignatureDoesNotMatch", |e| {
                matches!(e, Error::Unauthorized { .. })
            }),
            ("401 Unauthorized", "", |e| {
                matches!(e, Error::Unauthorized { .. })
            }),
            ("400 Bad Request", "ExpiredToken", |e| {
                matches!(e, Error::Unauthorized { .. })
            }),
            ("400 Bad Request", "RequestTimeout", Error::is_retriable),
            (
                "400 Bad Request",
                "InvalidArgument",
                |e| matches!(e, Error::Rejected { code, .. } if code == "http_400_InvalidArgument"),
            ),
            ("404 Not Found", "NoSuchBucket", |e| {
                matches!(e, Error::NotFound { .. })
            }),
            (
                "412 Precondition Failed",
                "PreconditionFailed",
                |e| matches!(e, Error::Rejected { code, .. } if code == "precondition_failed"),
            ),
            (
                "409 Conflict",
                "ConditionalRequestConflict",
                |e| matches!(e, Error::Rejected { code, .. } if code == "precondition_failed"),
            ),
            ("503 Service Unavailable", "SlowDown", Error::is_retriable),
            ("429 Too Many Requests", "", Error::is_retriable),
        ];
        for (status, code, expected) in cases {
            let mapped = map_store_error(failed_list(status, &s3_error(code)), "listing log");
            assert!(expected(&mapped), "{status} {code}: {mapped:?}");
        }
    }

    #[test]
    fn status_text_outside_the_status_link_is_not_taken_for_a_status() {
        // A connection error whose outer message happens to quote a status.
        let err = object_store::Error::Generic {
            store: "S3",
            source: Box::new(Wrapped {
                message: "proxy said: Server returned non-2xx status code: 403 Forbidden",
                inner: boxed("connection reset by peer"),
            }),
        };
        assert!(map_store_error(err, "x").is_retriable());
    }
}
