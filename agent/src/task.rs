//! Stopping a background task: the agent runs on one runtime thread, so a task told to
//! stop is only dropped — its listener or its spool handle released — when the runtime
//! turns to it. A reload binds the admin address and opens the spool again at once, so the
//! stop waits for the task to end, and aborts it after a grace period.

use std::time::Duration;

use tokio::task::JoinHandle;

/// Waits up to `grace` for `task` to end; then aborts it and waits for the abort.
pub async fn stop_within(mut task: JoinHandle<()>, grace: Duration) {
    if tokio::time::timeout(grace, &mut task).await.is_err() {
        task.abort();
        let _ = task.await;
    }
}
