//! Active health checks: pingora-load-balancing's own (`TcpHealthCheck`, `HttpHealthCheck`, run
//! by `Backends::run_health_check`), built from an upstream's `health_check:` settings, with
//! results mirrored into `ssegate_upstream_peer_healthy`.
//!
//! Only the schedule is ssegate's: [`HealthCheckService`] checks the pools in force, asked
//! afresh on every round, so pools that an in-place reload adds are checked from then on and
//! pools it drops stop being checked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{
    HealthCheck as PingoraHealthCheck, HealthObserve, HttpHealthCheck, TcpHealthCheck,
};
use pingora_load_balancing::Backend;
use tokio::task::JoinHandle;

use super::pool::UpstreamPool;
use crate::config::model::{HealthCheck, Upstream};
use crate::observe::metrics;

/// The pools in force, asked for on every round.
pub(crate) type PoolSource = Box<dyn Fn() -> Vec<Arc<UpstreamPool>> + Send + Sync>;

/// Runs the health checks of every pool in force, each on its interval.
pub(crate) struct HealthCheckService {
    pools: PoolSource,
}

impl HealthCheckService {
    pub(crate) fn new(pools: PoolSource) -> Self {
        HealthCheckService { pools }
    }
}

/// How soon the service looks again at a pool whose last check is still running.
const HEALTH_CHECK_TICK: Duration = Duration::from_millis(50);
/// The longest the service sleeps, so that pools a reload adds are checked within it.
const HEALTH_CHECK_IDLE: Duration = Duration::from_secs(1);

#[async_trait]
impl BackgroundService for HealthCheckService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Per pool (by id): when its next check is due, and the check running now.
        let mut schedule: HashMap<u64, (Instant, Option<JoinHandle<()>>)> = HashMap::new();
        loop {
            let pools = (self.pools)();
            let now = Instant::now();
            let mut wake = now + HEALTH_CHECK_IDLE;
            let mut live = Vec::new();
            for pool in &pools {
                let Some(hc) = &pool.config.health_check else {
                    continue;
                };
                let key = pool.id();
                live.push(key);
                let (due, running) = schedule.entry(key).or_insert((now, None));
                let busy = running.as_ref().is_some_and(|r| !r.is_finished());
                if now >= *due && !busy {
                    let pool = pool.clone();
                    *running = Some(tokio::spawn(async move { pool.check_health().await }));
                    *due = now + hc.interval;
                }
                wake = wake.min(if busy { now + HEALTH_CHECK_TICK } else { *due });
            }
            // Pools a reload dropped are no longer checked.
            schedule.retain(|key, _| live.contains(key));
            drop(pools);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The check `hc` describes for the peers of `u`.
pub(super) fn check_for(
    u: &Upstream,
    hc: &HealthCheck,
) -> Box<dyn PingoraHealthCheck + Send + Sync> {
    let observer = Box::new(PeerHealthGauge {
        upstream: u.name.clone(),
    });
    let sni = u.tls.clone().unwrap_or_default();
    match &hc.http_path {
        None => {
            let mut check = if u.tls.is_some() {
                TcpHealthCheck::new_tls(&sni)
            } else {
                TcpHealthCheck::new()
            };
            check.peer_template.options.connection_timeout = Some(u.connect_timeout);
            check.health_changed_callback = Some(observer);
            check
        }
        Some(path) => {
            let host = if sni.is_empty() {
                "localhost"
            } else {
                sni.as_str()
            };
            let mut check = HttpHealthCheck::new(host, u.tls.is_some());
            // Verify the peers as proxied requests do: with the upstream's `sni`, if any.
            check.peer_template.sni = sni.clone();
            if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                // Both values are fixed ASCII, so these cannot fail.
                let _ = req.insert_header("Host", host);
                let _ = req.insert_header("User-Agent", "ssegate-health-check");
                check.req = req;
            }
            check.peer_template.options.connection_timeout = Some(u.connect_timeout);
            check.peer_template.options.read_timeout =
                Some(hc.interval.min(Duration::from_secs(5)));
            check.health_changed_callback = Some(observer);
            Box::new(check)
        }
    }
}

/// Mirrors health-check results into `ssegate_upstream_peer_healthy` and the log.
struct PeerHealthGauge {
    upstream: String,
}

#[async_trait]
impl HealthObserve for PeerHealthGauge {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let peer = target.addr.to_string();
        if healthy {
            log::info!("upstream {}: peer {peer} is healthy", self.upstream);
        } else {
            log::warn!(
                "upstream {}: peer {peer} failed its health check",
                self.upstream
            );
        }
        metrics::set_peer_healthy(&self.upstream, &peer, healthy);
    }
}
