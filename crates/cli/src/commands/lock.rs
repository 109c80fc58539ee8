//! `lock`: forget every cached unlock and stop the agent.

use chatvault::Result;

/// Asks the agent to forget everything and stop.
pub async fn exec() -> Result<()> {
    crate::unlock::lock().await
}
