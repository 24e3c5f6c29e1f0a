//! Waiting on observable state: a check polled until it holds or a deadline passes, instead of a
//! fixed sleep that is either too short on a loaded machine or needlessly long on an idle one.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a check runs.
pub const INTERVAL: Duration = Duration::from_millis(20);

/// Runs `check` every [`INTERVAL`] until it yields a value or `timeout` passes; the value, or
/// `None` if the deadline passed first. The check always runs at least once, and once more at
/// the deadline.
pub async fn poll<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(INTERVAL.min(deadline - now)).await;
    }
}

/// Whether the async `check` became true within `timeout`.
pub async fn eventually_async<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll(timeout, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await
    .is_some()
}

/// Whether `check` became true within `timeout`.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    poll(timeout, || std::future::ready(check().then_some(())))
        .await
        .is_some()
}
