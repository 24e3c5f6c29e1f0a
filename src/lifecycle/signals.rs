//! The process's signals: Pingora's (SIGQUIT upgrade, SIGTERM graceful stop, SIGINT fast stop)
//! plus SIGHUP, which Pingora does not handle and which would otherwise kill the process.
//!
//! [`ignore_hangup_until_ready`] runs first thing in `main`, so a SIGHUP that arrives while the
//! server starts is ignored rather than fatal; once the server runs, [`SignalWatch`] turns each
//! SIGHUP into an in-place reload. The reload runs elsewhere ([`ReloadQueue`]): the loop that
//! waits for signals only queues it, so a reload that hangs on the file or on name resolution
//! never delays a shutdown or an upgrade.
//!
//! Each shutdown signal is reported to the service manager ([`notify`]) as it arrives: SIGTERM
//! and SIGINT as `STOPPING=1`, SIGQUIT (an upgrade, the service goes on) as a status line.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::lifecycle::notify;
use crate::lifecycle::reload::{ReloadQueue, Reloader};
use crate::observe::readiness;

/// Sets SIGHUP to be ignored until [`SignalWatch`] installs its handler.
pub(crate) fn ignore_hangup_until_ready() {
    // SAFETY: setting a signal's disposition to SIG_IGN touches no memory of this program and
    // is done before any other thread exists.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

/// What `Server::run` waits on: shutdown signals for Pingora, reloads handled in between.
pub(crate) struct SignalWatch {
    reloader: Arc<Reloader>,
    /// `shutdown.unready_delay`: how long the listeners keep accepting after SIGTERM while
    /// `/healthz` already answers 503.
    unready_delay: Duration,
}

impl SignalWatch {
    pub(crate) fn new(reloader: Reloader, unready_delay: Duration) -> Self {
        SignalWatch {
            reloader: Arc::new(reloader),
            unready_delay,
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let mut hangup = listen(SignalKind::hangup());
        let mut quit = listen(SignalKind::quit());
        let mut terminate = listen(SignalKind::terminate());
        let mut interrupt = listen(SignalKind::interrupt());
        let mut reloads = ReloadQueue::new(self.reloader.clone());
        loop {
            tokio::select! {
                _ = next(&mut hangup) => reloads.request(),
                _ = next(&mut quit) => {
                    notify::handing_over();
                    return ShutdownSignal::GracefulUpgrade;
                }
                _ = next(&mut terminate) => {
                    notify::stopping();
                    readiness::draining_begins();
                    // Balancers see /healthz fail while the listeners still accept; SIGINT
                    // cuts the wait short.
                    tokio::select! {
                        () = tokio::time::sleep(self.unready_delay) => {}
                        _ = next(&mut interrupt) => return ShutdownSignal::FastShutdown,
                    }
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = next(&mut interrupt) => {
                    notify::stopping();
                    return ShutdownSignal::FastShutdown;
                }
            }
        }
    }
}

fn listen(kind: SignalKind) -> Option<Signal> {
    signal(kind)
        .inspect_err(|e| log::error!("cannot listen for signal {kind:?}: {e}"))
        .ok()
}

/// The next delivery of a signal; never, if it could not be listened for.
async fn next(signal: &mut Option<Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
