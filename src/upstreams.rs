//! Upstream pools: peers, load balancing and active health checks, all from
//! `pingora-load-balancing`, plus the per-request [`HttpPeer`] with the right timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use pingora_core::services::background::background_service;
use pingora_core::services::ServiceWithDependents;
use pingora_core::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{
    HealthCheck as PingoraHealthCheck, HealthObserve, HttpHealthCheck, TcpHealthCheck,
};
use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, Consistent, Random, RoundRobin,
};
use pingora_load_balancing::{Backend, LoadBalancer};

use crate::config::model::{Balance, HealthCheck, Upstream};
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
    /// A healthy peer, or `None` when every peer is unhealthy. `key` is hashed by
    /// `consistent_hash` and ignored by the other strategies.
    pub fn select(&self, key: &[u8]) -> Option<SocketAddr> {
        let backend = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select(key, MAX_SELECT_ITERATIONS),
            Balancer::Random(lb) => lb.select(key, MAX_SELECT_ITERATIONS),
            Balancer::Consistent(lb) => lb.select(key, MAX_SELECT_ITERATIONS),
        }?;
        backend.addr.as_inet().copied()
    }

    /// The peer to connect to for one request. `stream_read_timeout` is `Some` on routes marked
    /// SSE: it replaces the upstream's `read_timeout` (and `Some(None)` means no timeout).
    pub fn http_peer(
        &self,
        addr: SocketAddr,
        stream_read_timeout: Option<Option<Duration>>,
    ) -> HttpPeer {
        let c = &self.config;
        let mut peer = HttpPeer::new(addr, c.tls.is_some(), c.tls.clone().unwrap_or_default());
        peer.options.connection_timeout = Some(c.connect_timeout);
        peer.options.read_timeout = stream_read_timeout.unwrap_or(Some(c.read_timeout));
        // Strip hop-by-hop headers and forward no protocol upgrade (SPEC §4).
        peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::deny_upgrades();
        peer
    }
}

/// Builds a pool per upstream, plus the background services that run their health checks.
pub fn build(
    upstreams: &[Upstream],
) -> (Vec<Arc<UpstreamPool>>, Vec<Box<dyn ServiceWithDependents>>) {
    let mut services: Vec<Box<dyn ServiceWithDependents>> = Vec::new();
    let pools = upstreams
        .iter()
        .map(|u| {
            for peer in &u.peers {
                metrics::set_peer_healthy(&u.name, &peer.to_string(), true);
            }
            let balancer = match u.balance {
                Balance::RoundRobin => Balancer::RoundRobin(balancer(u, &mut services)),
                Balance::Random => Balancer::Random(balancer(u, &mut services)),
                Balance::ConsistentHash => Balancer::Consistent(balancer(u, &mut services)),
            };
            Arc::new(UpstreamPool {
                config: u.clone(),
                balancer,
            })
        })
        .collect();
    (pools, services)
}

fn balancer<S>(
    u: &Upstream,
    services: &mut Vec<Box<dyn ServiceWithDependents>>,
) -> Arc<LoadBalancer<S>>
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
    let Some(hc) = &u.health_check else {
        // No health check: every peer counts as healthy; fill the selector once, now.
        refresh_now(&lb);
        return Arc::new(lb);
    };
    lb.set_health_check(health_check(u, hc));
    lb.health_check_frequency = Some(hc.interval);
    refresh_now(&lb);
    let service = background_service(&format!("health check {}", u.name), lb);
    let lb = service.task();
    services.push(Box::new(service));
    lb
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
