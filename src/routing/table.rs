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

use super::router::Router;
use crate::config::model::Route;
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
            .map(|r| RouteEntry {
                config: r.clone(),
                upstream: pools[r.upstream].clone(),
                metrics: RouteMetrics::shared(&r.name),
                open_streams: previous
                    .and_then(|g| g.routes.iter().find(|old| old.config.name == r.name))
                    .map_or_else(
                        || Arc::new(AtomicU64::new(0)),
                        |old| old.open_streams.clone(),
                    ),
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
    /// Takes a stream slot if the route's `max_streams` allows one more; the slot is given back
    /// when the returned guard drops. Routes without a limit always admit.
    pub(crate) fn admit_stream(&self) -> Option<StreamSlot> {
        let limit = self
            .config
            .sse
            .as_ref()
            .and_then(|s| s.max_streams)
            .unwrap_or(u64::MAX);
        let admitted = self
            .open_streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| StreamSlot(self.open_streams.clone()))
    }
}

/// One admitted stream on a limited route.
#[derive(Debug)]
pub(crate) struct StreamSlot(Arc<AtomicU64>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
