//! The bindings' Tokio runtime and the helpers that run the library on it.

use crate::error::VaultError;
use chatvault::{ChatId, MessageId};
use std::future::Future;
use std::sync::OnceLock;
use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The runtime every vault runs on (started at first use, multi-threaded).
/// The target language's event loop only awaits its tasks, so any loop
/// (asyncio, coroutines, Swift's) and plain threads work alike.
pub(crate) fn runtime() -> Result<&'static Runtime, VaultError> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("chatvault")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            VaultError::local(format!(
                "local replica error: cannot start the async runtime: {e}"
            ))
        })
}

/// Runs `task` on the bindings' runtime and waits for it.
pub(crate) async fn run<T, F>(task: F) -> Result<T, VaultError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, VaultError>> + Send + 'static,
{
    match runtime()?.spawn(task).await {
        Ok(result) => result,
        Err(error) => Err(VaultError::local(format!(
            "local replica error: the task failed: {error}"
        ))),
    }
}

/// Runs `task` on the bindings' runtime, blocking this (foreign) thread.
pub(crate) fn block_on<T, F>(task: F) -> Result<T, VaultError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, VaultError>> + Send + 'static,
{
    let runtime = runtime()?;
    runtime.block_on(async move {
        match runtime.spawn(task).await {
            Ok(result) => result,
            Err(error) => Err(VaultError::local(format!(
                "local replica error: the task failed: {error}"
            ))),
        }
    })
}

/// A chat id from its text.
pub(crate) fn parse_chat(id: &str) -> Result<ChatId, VaultError> {
    id.parse().map_err(|_| VaultError::InvalidInput {
        message: format!("invalid input: {id:?} is not a chat id"),
    })
}

/// A message id from its text.
pub(crate) fn parse_message(id: &str) -> Result<MessageId, VaultError> {
    id.parse().map_err(|_| VaultError::InvalidInput {
        message: format!("invalid input: {id:?} is not a message id"),
    })
}
