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

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::lifecycle::notify;
use crate::lifecycle::reload::{ReloadQueue, Reloader};

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
}

impl SignalWatch {
    pub(crate) fn new(reloader: Reloader) -> Self {
        SignalWatch {
            reloader: Arc::new(reloader),
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
