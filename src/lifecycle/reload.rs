//! In-place reload on SIGHUP: re-read the config file and swap the route table atomically.
//!
//! New requests use the new routes and upstreams at once; requests already running keep the
//! table they started with (see [`crate::routing`]), so open streams are not touched at all.
//! Upstreams whose settings did not change keep their pools (and their peers' health). A config
//! that fails validation is logged with the same messages as `ssegate -t` and changes nothing.
//!
//! Listeners, the metrics address and the `pingora:` section belong to the running server and
//! its sockets: changing them needs a graceful upgrade (`ssegate -u`), and a reload that changes
//! them says so in the log and applies the rest.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{self, Config};
use crate::observe::metrics;
use crate::routing::RouteTable;

pub(crate) struct Reloader {
    path: PathBuf,
    routes: Arc<ArcSwap<RouteTable>>,
    /// What a reload cannot change, as it was at start-up.
    fixed: String,
}

impl Reloader {
    pub(crate) fn new(config: &Config, routes: Arc<ArcSwap<RouteTable>>) -> Self {
        Reloader {
            path: config.source.clone(),
            routes,
            fixed: fixed_settings(config),
        }
    }

    /// Re-reads the config file and, if it is valid, puts its routes and upstreams in force.
    pub(crate) fn reload(&self) {
        let config = match config::load(&self.path) {
            Ok(config) => config,
            Err(e) => {
                log::error!("reload: config rejected, the one in force stays:\n{e}");
                metrics::config_reloaded(false);
                return;
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
    }
}

/// The settings bound to the running server, in a comparable form.
fn fixed_settings(config: &Config) -> String {
    format!(
        "{:?} {} {}",
        config.listeners,
        config.metrics_address,
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
