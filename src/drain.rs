//! Graceful shutdown of open streams.
//!
//! Pingora's graceful stop (SIGTERM, or SIGQUIT after the listening sockets were handed to a new
//! process) flips its `ShutdownWatch`, sleeps `grace_period_seconds`, then drops its runtimes,
//! which cuts whatever is still open mid-flight. [`DrainService`] watches for that flip and
//! publishes a drain deadline a little before the runtimes go: streams relayed by ssegate keep
//! running until they end by themselves or the deadline passes, and a stream still open then ends
//! at an event boundary after a `retry:` line, so EventSource clients reconnect (to the new
//! process, on an upgrade) with `Last-Event-ID` and lose nothing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::watch;

/// Streams end this long before Pingora drops its runtimes, so the `retry:` line and the end of
/// the response are written in time.
const MARGIN: Duration = Duration::from_secs(1);

/// The reconnection delay sent to clients is this plus up to [`RETRY_JITTER_MS`], so clients of
/// one process do not all come back in the same millisecond.
const RETRY_BASE_MS: u64 = 1000;
const RETRY_JITTER_MS: u64 = 2000;

/// Tells streams when to end: `None` while running, `Some(deadline)` once the process drains.
#[derive(Clone)]
pub struct DrainSignal(watch::Receiver<Option<Instant>>);

impl DrainSignal {
    /// Waits until draining begins and returns the deadline for open streams.
    pub async fn deadline(&mut self) -> Instant {
        loop {
            if let Some(deadline) = *self.0.borrow_and_update() {
                return deadline;
            }
            if self.0.changed().await.is_err() {
                // The service is gone without draining: never drain.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A background service that turns Pingora's shutdown into a drain deadline.
pub struct DrainService {
    tx: watch::Sender<Option<Instant>>,
    window: Duration,
}

impl DrainService {
    /// `grace_period` is Pingora's `grace_period_seconds`.
    pub fn new(grace_period: Duration) -> (DrainService, DrainSignal) {
        let (tx, rx) = watch::channel(None);
        let service = DrainService {
            tx,
            window: grace_period.saturating_sub(MARGIN),
        };
        (service, DrainSignal(rx))
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
            let _ = self.tx.send(Some(deadline));
        }
    }
}

/// The `retry:` block sent to a stream ended by the drain: a field that sets the client's
/// reconnection delay, then a blank line. It carries no `data`, so no event is dispatched.
pub fn retry_block() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    format!(
        "retry: {}\n\n",
        RETRY_BASE_MS + nanos % (RETRY_JITTER_MS + 1)
    )
}
