//! Work that must not run on the async runtime.

use chatvault_core::{Error, Result};

/// Runs `f` on a blocking thread (scrypt, encoding, replica I/O), mapping a
/// failed task to [`Error::Local`].
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Local {
            message: format!("a background task failed: {e}"),
            source: None,
        })?
}
