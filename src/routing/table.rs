//! The route table the proxy serves from: validated routes joined to their upstream pools,
//! metric handles and stream counters.
//!
//! A request takes one snapshot of the [`RouteTable`] when it starts and keeps it to the end, so a
//! stream keeps the route it started with even if an in-place reload replaces the table.
//!
//! Metric handles are shared by name across tables ([`RouteMetrics::shared`]): a route a reload
//! keeps counts on in the same series, and the series of a route a reload removes go once the
//! old table and the last request on the route are gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::client_streams::{ClientIdentity, ClientSlot, ClientStreams};
use super::router::Router;
use crate::config::model::{ClientKey, Route};
use crate::config::Config;
use crate::observe::metrics::{RouteMetrics, UNMATCHED};
use crate::upstream::UpstreamPool;

/// Every route, its upstream pool and its metrics, as one config version defines them.
pub(crate) struct RouteTable {
    router: Router,
    routes: Vec<RouteEntry>,
    /// One per upstream, in config order.
    pools: Vec<Arc<UpstreamPool>>,
    /// Metrics for requests that match no route.
    pub(crate) unmatched: Arc<RouteMetrics>,
}

/// A route with everything a request on it needs.
pub(crate) struct RouteEntry {
    pub(crate) config: Route,
    pub(crate) upstream: Arc<UpstreamPool>,
    pub(crate) metrics: Arc<RouteMetrics>,
    /// Streams open on this route, for `sse.max_streams`; carried over by a reload, so streams
    /// opened before it still count.
    open_streams: Arc<AtomicU64>,
    /// Streams open per client, for `sse.max_streams_per_client`; carried over by a reload that
    /// keeps the route's `client_key`.
    clients: Option<Arc<ClientStreams>>,
}

/// Why a stream was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The route's `max_streams` is reached.
    RouteFull,
    /// The client holds `max_streams_per_client` streams on the route already.
    ClientFull,
}

impl RouteTable {
    /// Builds the table for `config`. Upstreams whose settings are unchanged from `previous` keep
    /// their pool, and with it their peers' health and balancing state.
    pub(crate) fn new(config: &Config, previous: Option<&RouteTable>) -> Self {
        let pools: Vec<Arc<UpstreamPool>> = config
            .upstreams
            .iter()
            .map(|u| {
                previous
                    .and_then(|g| g.pools.iter().find(|p| p.config == *u))
                    .cloned()
                    .unwrap_or_else(|| UpstreamPool::new(u))
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let old =
                    previous.and_then(|g| g.routes.iter().find(|old| old.config.name == r.name));
                RouteEntry {
                    config: r.clone(),
                    upstream: pools[r.upstream].clone(),
                    metrics: RouteMetrics::shared(&r.name),
                    open_streams: old.map_or_else(
                        || Arc::new(AtomicU64::new(0)),
                        |old| old.open_streams.clone(),
                    ),
                    clients: client_streams(r, old),
                }
            })
            .collect();
        RouteTable {
            router: Router::new(&config.routes),
            routes,
            pools,
            unmatched: RouteMetrics::shared(UNMATCHED),
        }
    }

    pub(crate) fn pools(&self) -> &[Arc<UpstreamPool>] {
        &self.pools
    }

    /// The route index for a request, if one matches.
    pub(crate) fn find(&self, host: Option<&str>, path: &str, method: &str) -> Option<usize> {
        self.router.find(host, path, method)
    }

    pub(crate) fn route(&self, index: usize) -> &RouteEntry {
        &self.routes[index]
    }
}

impl RouteEntry {
    /// Takes a stream slot if the route's `max_streams` allows one more and the client (as
    /// `client` reads it, asked only on routes with a per-client cap) holds fewer than
    /// `max_streams_per_client`; the slot is given back when the returned guard drops. Routes
    /// without limits always admit.
    pub(crate) fn admit_stream<'a>(
        &self,
        client: impl FnOnce(&ClientKey) -> ClientIdentity<'a>,
    ) -> Result<StreamSlot, Refusal> {
        let sse = self.config.sse.as_ref();
        let client = match (&self.clients, sse.and_then(|s| s.max_streams_per_client)) {
            (Some(table), Some(cap)) => {
                let slot = table.admit(client(table.key()), cap);
                Some(slot.ok_or(Refusal::ClientFull)?)
            }
            _ => None,
        };
        let limit = sse.and_then(|s| s.max_streams).unwrap_or(u64::MAX);
        self.open_streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| Refusal::RouteFull)?;
        Ok(StreamSlot {
            _route: RouteSlot(self.open_streams.clone()),
            _client: client,
        })
    }
}

/// The per-client table of route `r`: the one `old` had if it told clients apart the same way,
/// else a new one; none without a per-client cap.
fn client_streams(r: &Route, old: Option<&RouteEntry>) -> Option<Arc<ClientStreams>> {
    let sse = r.sse.as_ref()?;
    sse.max_streams_per_client?;
    let kept = old
        .and_then(|old| old.clients.as_ref())
        .filter(|table| table.keeps(&sse.client_key));
    Some(
        kept.cloned()
            .unwrap_or_else(|| Arc::new(ClientStreams::new(&r.name, &sse.client_key))),
    )
}

/// One admitted stream: its place in the route's count and, on a route with a per-client cap,
/// in its client's.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    _route: RouteSlot,
    _client: Option<ClientSlot>,
}

#[derive(Debug)]
struct RouteSlot(Arc<AtomicU64>);

impl Drop for RouteSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
