//! In-place reload on SIGHUP: re-read the config file and swap the route table atomically.
//!
//! New requests use the new routes and upstreams at once; requests already running keep the
//! table they started with (see [`crate::routing`]), so open streams are not touched at all.
//! Upstreams whose settings did not change keep their pools (and their peers' health). A config
//! that fails validation is logged with the same messages as `ssegate -t` and changes nothing.
//!
//! Listeners, the metrics address, `shutdown:` and the `pingora:` section belong to the running
//! server and its sockets: changing them needs a graceful upgrade (`ssegate -u`), and a reload
//! that changes them says so in the log and applies the rest.
//!
//! Reading the file and resolving peer host names can block (a slow disk, a slow resolver), so
//! reloads run on a thread of their own ([`ReloadQueue`]), never on the task that waits for
//! signals: SIGTERM, SIGQUIT and SIGINT are acted on at once even while a reload hangs. It is a
//! plain thread rather than a runtime's blocking pool because dropping a Tokio runtime waits for
//! its blocking tasks, and a reload stuck on a read would then keep the process from exiting.
//!
//! Under systemd each reload is bracketed by `RELOADING=1` and `READY=1` ([`notify`]), so
//! `systemctl status` shows it as reloading until it has ended.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{self, Config};
use crate::lifecycle::notify;
use crate::observe::metrics;
use crate::routing::RouteTable;

pub(crate) struct Reloader {
    path: PathBuf,
    routes: Arc<ArcSwap<RouteTable>>,
    /// What a reload cannot change, as it was at start-up.
    fixed: String,
    /// `--strict`: a config with warnings is rejected.
    strict: bool,
}

impl Reloader {
    pub(crate) fn new(config: &Config, routes: Arc<ArcSwap<RouteTable>>, strict: bool) -> Self {
        Reloader {
            path: config.source.clone(),
            routes,
            fixed: fixed_settings(config),
            strict,
        }
    }

    /// Re-reads the config file and, if it is valid, puts its routes and upstreams in force,
    /// telling the service manager before and after ([`notify`]).
    pub(crate) fn reload(&self) {
        notify::reloading();
        let applied = self.apply();
        notify::reloaded(applied);
    }

    /// The reload itself; `false` if the file was rejected and nothing changed.
    fn apply(&self) -> bool {
        let config = match config::load_checked(&self.path, self.strict) {
            Ok(config) => config,
            Err(e) => {
                log::error!("reload: config rejected, the one in force stays:\n{e}");
                metrics::config_reloaded(false);
                return false;
            }
        };
        if fixed_settings(&config) != self.fixed {
            log::warn!(
                "reload: listeners, metrics and pingora settings changed in {}; they take effect \
                 with a graceful upgrade (ssegate -u), routes and upstreams take effect now",
                self.path.display()
            );
        }
        let previous = self.routes.load_full();
        let next = RouteTable::new(&config, Some(&previous));
        forget_removed_peers(&previous, &next);
        self.routes.store(Arc::new(next));
        metrics::set_info(&config.sha256);
        metrics::config_reloaded(true);
        log::info!("reload: {}", config.summary());
        true
    }
}

/// Runs reloads one after another on a thread of their own, started at the first request (after
/// Pingora's daemon fork, which a thread would not survive).
///
/// At most one reload waits while another runs: a SIGHUP that arrives during a reload is
/// followed by one more reload once it ends, and further SIGHUPs meanwhile are covered by that
/// one, since it reads the file as it is when it starts.
pub(crate) struct ReloadQueue {
    reloader: Arc<Reloader>,
    /// Wakes the thread; holds at most one waiting request.
    worker: Option<SyncSender<()>>,
    /// Set while the thread runs a reload; only for the log.
    running: Arc<AtomicBool>,
}

impl ReloadQueue {
    pub(crate) fn new(reloader: Arc<Reloader>) -> Self {
        ReloadQueue {
            reloader,
            worker: None,
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Asks for a reload and returns at once; the reload runs after the one running, if any.
    pub(crate) fn request(&mut self) {
        if let Some(worker) = &self.worker {
            match worker.try_send(()) {
                Ok(()) => {
                    if self.running.load(Ordering::Acquire) {
                        log::info!("reload: SIGHUP during a reload; another reload follows it");
                    }
                    return;
                }
                Err(TrySendError::Full(())) => {
                    log::info!(
                        "reload: SIGHUP during a reload; the reload already queued after it \
                         covers this one"
                    );
                    return;
                }
                // The thread is gone (a reload panicked): start another.
                Err(TrySendError::Disconnected(())) => self.worker = None,
            }
        }
        match self.start_worker() {
            Ok(worker) => self.worker = Some(worker),
            Err(e) => {
                log::error!("reload: cannot start the reload thread ({e}); reloading in place");
                self.reloader.reload();
            }
        }
    }

    /// Starts the thread with one request already queued.
    fn start_worker(&self) -> std::io::Result<SyncSender<()>> {
        let (worker, requests) = mpsc::sync_channel(1);
        // The buffer is empty and the receiver alive, so this cannot fail.
        let _ = worker.try_send(());
        let reloader = self.reloader.clone();
        let running = self.running.clone();
        std::thread::Builder::new()
            .name("ssegate-reload".into())
            .spawn(move || {
                // Ends when the queue is dropped, i.e. when the server stops waiting for signals.
                while requests.recv().is_ok() {
                    running.store(true, Ordering::Release);
                    reloader.reload();
                    running.store(false, Ordering::Release);
                }
            })?;
        Ok(worker)
    }
}

/// The settings bound to the running server, in a comparable form.
fn fixed_settings(config: &Config) -> String {
    format!(
        "{:?} {} {:?} {}",
        config.listeners,
        config.metrics_address,
        config.unready_delay,
        config.server.to_yaml()
    )
}

/// Drops the health series of peers that the new table no longer has, so a peer removed while
/// unhealthy does not keep an alert firing.
fn forget_removed_peers(previous: &RouteTable, next: &RouteTable) {
    let peers = |g: &RouteTable| -> Vec<(String, String)> {
        g.pools()
            .iter()
            .flat_map(|p| {
                p.config
                    .peers
                    .iter()
                    .map(|peer| (p.config.name.clone(), peer.to_string()))
            })
            .collect()
    };
    let kept = peers(next);
    for (upstream, peer) in peers(previous) {
        if !kept.contains(&(upstream.clone(), peer.clone())) {
            metrics::forget_peer(&upstream, &peer);
        }
    }
}
