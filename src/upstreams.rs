//! Upstream pools: peers, load balancing and active health checks, all from
//! `pingora-load-balancing`, plus the per-request [`HttpPeer`] with the right timeouts.
//!
//! Health checks are pingora-load-balancing's own (`TcpHealthCheck`, `HttpHealthCheck`, run by
//! `Backends::run_health_check`); only their schedule is ssegate's: [`HealthCheckService`] checks
//! the pools of the route table in force, so pools that an in-place reload adds are checked from
//! then on and pools it drops stop being checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures::FutureExt;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{
    HealthCheck as PingoraHealthCheck, HealthObserve, HttpHealthCheck, TcpHealthCheck,
};
use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, Consistent, Random, RoundRobin,
};
use pingora_load_balancing::{Backend, LoadBalancer};

use tokio::task::JoinHandle;

use crate::config::model::{Balance, HealthCheck, Upstream};
use crate::gateway::Gateway;
use crate::metrics;

/// How many candidates `select` may look at before giving up (every peer, at most).
const MAX_SELECT_ITERATIONS: usize = 256;

/// One configured upstream: its settings and a balancer over its peers.
pub struct UpstreamPool {
    pub config: Upstream,
    balancer: Balancer,
}

enum Balancer {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Random(Arc<LoadBalancer<Random>>),
    Consistent(Arc<LoadBalancer<Consistent>>),
}

impl UpstreamPool {
    /// Builds the pool of one upstream; every peer starts out healthy.
    pub fn new(u: &Upstream) -> Arc<UpstreamPool> {
        for peer in &u.peers {
            metrics::set_peer_healthy(&u.name, &peer.to_string(), true);
        }
        let balancer = match u.balance {
            Balance::RoundRobin => Balancer::RoundRobin(balancer(u)),
            Balance::Random => Balancer::Random(balancer(u)),
            Balance::ConsistentHash => Balancer::Consistent(balancer(u)),
        };
        Arc::new(UpstreamPool {
            config: u.clone(),
            balancer,
        })
    }

    /// Runs one round of health checks over the peers (all at once).
    async fn check_health(&self) {
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.backends().run_health_check(true).await,
            Balancer::Random(lb) => lb.backends().run_health_check(true).await,
            Balancer::Consistent(lb) => lb.backends().run_health_check(true).await,
        }
    }

    /// A healthy peer other than those in `tried`, or `None` when there is none. `key` is hashed
    /// by `consistent_hash` and ignored by the other strategies.
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr> {
        let accept = |b: &Backend, healthy: bool| {
            healthy && b.addr.as_inet().is_some_and(|a| !tried.contains(a))
        };
        let backend = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::Random(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::Consistent(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
        }?;
        backend.addr.as_inet().copied()
    }

    /// Whether [`Self::select`] uses its key (`consistent_hash`); the others ignore it, so a
    /// caller need not build one.
    pub fn uses_key(&self) -> bool {
        matches!(self.balancer, Balancer::Consistent(_))
    }

    /// The peer to connect to for one request, with the upstream's timeouts.
    pub fn http_peer(&self, addr: SocketAddr) -> HttpPeer {
        let c = &self.config;
        let mut peer = HttpPeer::new(addr, c.tls.is_some(), c.tls.clone().unwrap_or_default());
        peer.options.connection_timeout = Some(c.connect_timeout);
        peer.options.read_timeout = Some(c.read_timeout);
        // Strip hop-by-hop headers and forward no protocol upgrade.
        peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::deny_upgrades();
        peer
    }
}

fn balancer<S>(u: &Upstream) -> Arc<LoadBalancer<S>>
where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    let backends = u.peers.iter().map(|addr| Backend {
        addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(*addr),
        weight: 1,
        ext: Default::default(),
    });
    let discovery = pingora_load_balancing::discovery::Static::new(backends.collect());
    let mut lb = LoadBalancer::<S>::from_backends(pingora_load_balancing::Backends::new(discovery));
    if let Some(hc) = &u.health_check {
        lb.set_health_check(health_check(u, hc));
    }
    refresh_now(&lb);
    Arc::new(lb)
}

/// Runs the health checks of every pool in the route table in force, each on its interval.
pub struct HealthCheckService {
    gateway: Arc<ArcSwap<Gateway>>,
}

impl HealthCheckService {
    pub fn new(gateway: Arc<ArcSwap<Gateway>>) -> Self {
        HealthCheckService { gateway }
    }
}

/// How soon the service looks again at a pool whose last check is still running.
const HEALTH_CHECK_TICK: Duration = Duration::from_millis(50);
/// The longest the service sleeps, so that pools a reload adds are checked within it.
const HEALTH_CHECK_IDLE: Duration = Duration::from_secs(1);

#[async_trait]
impl BackgroundService for HealthCheckService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Per pool (by address, i.e. identity): when its next check is due, and the check running now.
        let mut schedule: HashMap<usize, (Instant, Option<JoinHandle<()>>)> = HashMap::new();
        loop {
            let gateway = self.gateway.load_full();
            let now = Instant::now();
            let mut wake = now + HEALTH_CHECK_IDLE;
            let mut live = Vec::new();
            for pool in gateway.pools() {
                let Some(hc) = &pool.config.health_check else {
                    continue;
                };
                let key = Arc::as_ptr(pool) as usize;
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
            drop(gateway);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Fills the selector before the first request. Static discovery completes at once and cannot
/// fail, so this never waits.
fn refresh_now<S>(lb: &LoadBalancer<S>)
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    match lb.update().now_or_never() {
        Some(Ok(())) => {}
        Some(Err(e)) => log::error!("loading peers failed: {e}"),
        None => log::error!("loading peers did not complete at once"),
    }
}

fn health_check(u: &Upstream, hc: &HealthCheck) -> Box<dyn PingoraHealthCheck + Send + Sync> {
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
