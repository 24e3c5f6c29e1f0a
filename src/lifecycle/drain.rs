//! Graceful shutdown of open streams.
//!
//! Pingora's graceful stop (SIGTERM, or SIGQUIT after the listening sockets were handed to a new
//! process) flips its `ShutdownWatch`, sleeps `grace_period_seconds`, then drops its runtimes,
//! which cuts whatever is still open mid-flight. [`DrainService`] watches for that flip and
//! publishes a drain deadline a little before the runtimes go: streams relayed by ssegate keep
//! running until they end by themselves or the deadline passes, and a stream still open then ends
//! at an event boundary after a `retry:` line, so EventSource clients reconnect (to the new
//! process, on an upgrade) with `Last-Event-ID` and lose nothing.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::Notify;

/// Streams end this long before Pingora drops its runtimes, so the `retry:` line and the end of
/// the response are written in time.
const MARGIN: Duration = Duration::from_secs(1);

/// The reconnection delay sent to clients is this plus up to [`RETRY_JITTER_MS`], so clients of
/// one process do not all come back in the same millisecond.
const RETRY_BASE_MS: u64 = 1000;
const RETRY_JITTER_MS: u64 = 2000;

/// Tells streams when to end: no deadline while running, a deadline once the process drains.
///
/// Checking it is one atomic load ([`Self::deadline_now`]), so a stream's loop can look on every
/// event; a quiet stream waits in [`Self::deadline`], which wakes it when the drain begins.
#[derive(Clone)]
pub(crate) struct DrainSignal(Arc<Shared>);

struct Shared {
    deadline: OnceLock<Instant>,
    begun: Notify,
}

impl DrainSignal {
    /// The deadline, if the drain has begun.
    pub(crate) fn deadline_now(&self) -> Option<Instant> {
        self.0.deadline.get().copied()
    }

    /// Whether the drain deadline has passed.
    pub(crate) fn passed(&self) -> bool {
        self.deadline_now()
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Waits until draining begins and returns the deadline for open streams.
    pub(crate) async fn deadline(&self) -> Instant {
        let begun = self.0.begun.notified();
        let mut begun = std::pin::pin!(begun);
        // Registered before the check, so a drain that begins in between still wakes us.
        begun.as_mut().enable();
        if let Some(deadline) = self.deadline_now() {
            return deadline;
        }
        begun.await;
        // Set before the notification; a notification without it cannot happen.
        self.deadline_now().unwrap_or_else(Instant::now)
    }
}

/// A background service that turns Pingora's shutdown into a drain deadline.
pub(crate) struct DrainService {
    signal: DrainSignal,
    window: Duration,
}

impl DrainService {
    /// `grace_period` is Pingora's `grace_period_seconds`.
    pub(crate) fn new(grace_period: Duration) -> (DrainService, DrainSignal) {
        let signal = DrainSignal(Arc::new(Shared {
            deadline: OnceLock::new(),
            begun: Notify::new(),
        }));
        let service = DrainService {
            signal: signal.clone(),
            window: grace_period.saturating_sub(MARGIN),
        };
        (service, signal)
    }
}

#[async_trait]
impl BackgroundService for DrainService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        log::info!(
            "draining: open streams end within {:.1}s",
            self.window.as_secs_f64()
        );
        // A grace period too long to add to the clock means: never end streams early.
        if let Some(deadline) = Instant::now().checked_add(self.window) {
            let _ = self.signal.0.deadline.set(deadline);
            self.signal.0.begun.notify_waiters();
        }
    }
}

/// The `retry:` block sent to a stream ended by the drain: a field that sets the client's
/// reconnection delay, then a blank line. It carries no `data`, so no event is dispatched.
pub(crate) fn retry_block() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    format!(
        "retry: {}\n\n",
        RETRY_BASE_MS + nanos % (RETRY_JITTER_MS + 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_registered_before_the_drain_is_woken_by_it() {
        let (service, signal) = DrainService::new(Duration::from_secs(10));
        let mut wait = Box::pin(signal.deadline());
        assert!(futures::poll!(wait.as_mut()).is_pending());
        assert_eq!(signal.deadline_now(), None);
        let (tx, rx) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(async move { service.start(rx).await });
        tx.send(true).unwrap();
        let deadline = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("woken by the drain");
        assert_eq!(Some(deadline), signal.deadline_now());
        running.await.unwrap();
    }
}
