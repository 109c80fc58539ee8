//! Mapping `object_store` errors onto chatvault's typed errors.
//!
//! Anything that may succeed on retry (network trouble, HTTP 5xx, throttling,
//! timeouts, a full local disk) becomes [`Error::Unavailable`] so the engine
//! keeps the change queued. `AlreadyExists` and `Precondition` are the log's
//! "slot taken" signal and are handled before they get here.

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
        E::AlreadyExists { .. } | E::Precondition { .. } => Error::Rejected {
            code: "precondition_failed".into(),
            message: format!("{what}: {err}"),
        },
        E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => {
            Error::invalid(format!("{what}: {err}"))
        }
        other => Error::unavailable(format!("{what}: object store request failed"), other),
    }
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
}
