//! One upstream's pool: its peers and a balancer over them (`pingora-load-balancing`), the one
//! peer-selection rule every request follows, and the per-request [`HttpPeer`] with the
//! upstream's timeouts.
//!
//! # Streams per peer
//! Every stream a request opens to a peer is counted in that peer's gauge
//! (`ssegate_upstream_streams_active`) for as long as it is open ([`PeerStream`]), whatever the
//! balance. `least_streams` picks from those counts: the healthy untried peer with the fewest,
//! ties broken by a rotating start, which is round robin among equals. The counts are the
//! gauges themselves, shared by label, so a pool a reload rebuilds sees the streams the old pool
//! still carries.
//!
//! # Failover
//! A request tries a healthy peer it has not tried yet ([`UpstreamPool::select`] with the
//! request's [`Tried`] list); when connecting fails, [`UpstreamPool::connect_failed`] logs it,
//! adds the peer to the list and says whether a healthy untried peer is left to try. Both
//! ways a request reaches an upstream follow it: Pingora's proxy loop through `upstream_peer`
//! and `fail_to_connect`, and the relay's own connector.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::FutureExt;
use pingora_core::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};
use pingora_core::{Error, ErrorType};
use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, Consistent, Random, RoundRobin,
};
use pingora_load_balancing::{Backend, LoadBalancer};
use prometheus::IntGauge;

use super::health;
use crate::config::model::{Balance, Upstream};
use crate::observe::metrics;

/// The error a request gets when no healthy peer it has not tried is left.
pub(crate) const NO_HEALTHY_PEER: ErrorType = ErrorType::Custom("no healthy peer");

/// How many candidates `select` may look at before giving up (every peer, at most).
const MAX_SELECT_ITERATIONS: usize = 256;

/// One configured upstream: its settings and a balancer over its peers.
pub(crate) struct UpstreamPool {
    /// Unique for the life of the process, so that a pool is never mistaken for one a reload
    /// dropped (an address could be reused).
    id: u64,
    pub(crate) config: Upstream,
    balancer: Balancer,
    /// Each peer with its open-stream count, in config order.
    peers: Vec<Peer>,
    /// Where `least_streams` starts looking, moved on by each pick.
    next: AtomicUsize,
}

struct Peer {
    addr: SocketAddr,
    /// The balancer's entry for this peer, to ask its health.
    backend: Backend,
    streams: IntGauge,
}

/// One stream open to a peer, counted in the peer's `ssegate_upstream_streams_active` until
/// dropped.
#[derive(Debug)]
pub(crate) struct PeerStream(IntGauge);

impl Drop for PeerStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The peers one request has tried and failed to connect to; empty (and unallocated) for
/// nearly every request.
pub(crate) type Tried = Vec<SocketAddr>;

enum Balancer {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Random(Arc<LoadBalancer<Random>>),
    Consistent(Arc<LoadBalancer<Consistent>>),
    /// The balancer holds the peers and their health; [`UpstreamPool::least_streams`] picks.
    LeastStreams(Arc<LoadBalancer<RoundRobin>>),
}

impl UpstreamPool {
    /// Builds the pool of one upstream; every peer starts out healthy.
    pub(crate) fn new(u: &Upstream) -> Arc<UpstreamPool> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        for peer in &u.peers {
            metrics::set_peer_healthy(&u.name, &peer.to_string(), true);
        }
        let balancer = match u.balance {
            Balance::RoundRobin => Balancer::RoundRobin(balancer(u)),
            Balance::Random => Balancer::Random(balancer(u)),
            Balance::ConsistentHash => Balancer::Consistent(balancer(u)),
            Balance::LeastStreams => Balancer::LeastStreams(balancer(u)),
        };
        let peers = u
            .peers
            .iter()
            .map(|addr| Peer {
                addr: *addr,
                backend: backend(*addr),
                streams: metrics::peer_streams(&u.name, &addr.to_string()),
            })
            .collect();
        Arc::new(UpstreamPool {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            config: u.clone(),
            balancer,
            peers,
            next: AtomicUsize::new(0),
        })
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Runs one round of health checks over the peers (all at once).
    pub(crate) async fn check_health(&self) {
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.backends().run_health_check(true).await,
            Balancer::Random(lb) => lb.backends().run_health_check(true).await,
            Balancer::Consistent(lb) => lb.backends().run_health_check(true).await,
            Balancer::LeastStreams(lb) => lb.backends().run_health_check(true).await,
        }
    }

    /// A healthy peer other than those in `tried`, or [`NO_HEALTHY_PEER`]. `key` is hashed by
    /// `consistent_hash` and ignored by the other strategies.
    pub(crate) fn select(
        &self,
        key: &[u8],
        tried: &[SocketAddr],
    ) -> pingora_core::Result<SocketAddr> {
        self.pick(key, tried)
            .ok_or_else(|| Error::explain(NO_HEALTHY_PEER, "no healthy peer is left to try"))
    }

    fn pick(&self, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr> {
        let accept = |b: &Backend, healthy: bool| {
            healthy && b.addr.as_inet().is_some_and(|a| !tried.contains(a))
        };
        let backend = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::Random(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::Consistent(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::LeastStreams(lb) => return self.least_streams(lb.backends(), tried),
        }?;
        backend.addr.as_inet().copied()
    }

    /// The healthy peer not in `tried` with the fewest open streams; among equals, the first
    /// from a start that moves on at every pick.
    fn least_streams(
        &self,
        backends: &pingora_load_balancing::Backends,
        tried: &[SocketAddr],
    ) -> Option<SocketAddr> {
        let n = self.peers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(i64, SocketAddr)> = None;
        for i in 0..n {
            let peer = &self.peers[(start + i) % n];
            if tried.contains(&peer.addr) || !backends.ready(&peer.backend) {
                continue;
            }
            let open = peer.streams.get();
            if best.is_none_or(|(fewest, _)| open < fewest) {
                best = Some((open, peer.addr));
            }
        }
        best.map(|(_, addr)| addr)
    }

    /// Counts a stream opened to `addr` until the returned guard drops; `None` for an address
    /// that is not a peer of this pool.
    pub(crate) fn stream_opened(&self, addr: SocketAddr) -> Option<PeerStream> {
        let peer = self.peers.iter().find(|p| p.addr == addr)?;
        peer.streams.inc();
        Some(PeerStream(peer.streams.clone()))
    }

    /// Records that connecting to `addr` failed with `error`: logs it and adds the peer to the
    /// request's `tried`. Returns whether the request may go on to another peer.
    pub(crate) fn connect_failed(
        &self,
        tried: &mut Tried,
        addr: SocketAddr,
        error: &dyn std::fmt::Display,
    ) -> bool {
        log::warn!(
            "upstream {}: connecting to {addr} failed: {error}",
            self.config.name
        );
        tried.push(addr);
        self.can_fail_over(tried)
    }

    /// Whether a request that failed to connect to every peer in `tried` has a healthy peer left
    /// to try. Asks the peers' health without moving the balancer on.
    fn can_fail_over(&self, tried: &[SocketAddr]) -> bool {
        let untried_healthy = |backends: &pingora_load_balancing::Backends| {
            backends
                .get_backend()
                .iter()
                .any(|b| backends.ready(b) && b.addr.as_inet().is_some_and(|a| !tried.contains(a)))
        };
        match &self.balancer {
            Balancer::RoundRobin(lb) => untried_healthy(lb.backends()),
            Balancer::Random(lb) => untried_healthy(lb.backends()),
            Balancer::Consistent(lb) => untried_healthy(lb.backends()),
            Balancer::LeastStreams(lb) => untried_healthy(lb.backends()),
        }
    }

    /// Whether [`Self::select`] uses its key (`consistent_hash`); the others ignore it, so a
    /// caller need not build one.
    pub(crate) fn uses_key(&self) -> bool {
        matches!(self.balancer, Balancer::Consistent(_))
    }

    /// The peer to connect to for one request, with the upstream's timeouts.
    pub(crate) fn http_peer(&self, addr: SocketAddr) -> HttpPeer {
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
    let backends = u.peers.iter().map(|addr| backend(*addr));
    let discovery = pingora_load_balancing::discovery::Static::new(backends.collect());
    let mut lb = LoadBalancer::<S>::from_backends(pingora_load_balancing::Backends::new(discovery));
    if let Some(hc) = &u.health_check {
        lb.set_health_check(health::check_for(u, hc));
    }
    refresh_now(&lb);
    Arc::new(lb)
}

/// The balancer's entry for peer `addr`: every peer weighs the same.
fn backend(addr: SocketAddr) -> Backend {
    Backend {
        addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(addr),
        weight: 1,
        ext: Default::default(),
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
