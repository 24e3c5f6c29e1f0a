//! Prometheus metrics: definitions, and per-route handles resolved once per config.
//!
//! Everything is registered in the `prometheus` crate's default registry, which Pingora's
//! Prometheus service serves at `metrics.address`. The `route` label only ever takes a configured
//! route name or `unmatched`, so cardinality is bounded by the config, not by clients.
//!
//! The streaming path touches only [`RouteMetrics`]: plain handles looked up when the config is
//! loaded, so a body chunk costs a few atomic adds and no label lookup or lock.
//!
//! A route's series live as long as its [`RouteMetrics`]: one shared handle per route name
//! ([`RouteMetrics::shared`]), kept by every route table that has the route and by every request
//! still running on it. A reload that keeps a route hands the same handle to the new table, so
//! its counters go on; a reload that removes a route leaves the series in place until the last
//! request on it ends, then drops them, so a scrape never shows a route that is gone for good.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use once_cell::sync::Lazy;
use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge_vec,
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

/// The label value for requests that matched no route.
pub(crate) const UNMATCHED: &str = "unmatched";

/// From 50 µs to 1 s: a loopback relay flushes in tens of µs, a stalled client in seconds.
const FLUSH_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const FIRST_EVENT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const STREAM_DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
];
/// From 1 ms to 1 h: tokens of an LLM stream come tens of ms apart, a notification feed may be
/// quiet for minutes; 15, 30, 60, 120, 300 and 600 s are the usual heartbeat and idle settings.
const EVENT_GAP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Why a stream ended: the `reason` label of `ssegate_stream_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    UpstreamEnd,
    ClientGone,
    IdleTimeout,
    UpstreamError,
    Drain,
    /// `sse.max_lifetime` ended it, with a `retry:` line.
    MaxLifetime,
}

impl CloseReason {
    const ALL: [CloseReason; 6] = [
        CloseReason::UpstreamEnd,
        CloseReason::ClientGone,
        CloseReason::IdleTimeout,
        CloseReason::UpstreamError,
        CloseReason::Drain,
        CloseReason::MaxLifetime,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::UpstreamEnd => "upstream_end",
            CloseReason::ClientGone => "client_gone",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::UpstreamError => "upstream_error",
            CloseReason::Drain => "drain",
            CloseReason::MaxLifetime => "max_lifetime",
        }
    }
}

/// The `kind` label of `ssegate_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamErrorKind {
    Connect,
    Timeout,
    Reset,
    Unhealthy,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 4] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Unhealthy,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Unhealthy => "unhealthy",
        }
    }
}

struct Families {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    streams_active: IntGaugeVec,
    streams_total: IntCounterVec,
    stream_clients: IntGaugeVec,
    stream_resumes: IntCounterVec,
    stream_events: IntCounterVec,
    stream_bytes: IntCounterVec,
    flush_latency: HistogramVec,
    first_event: HistogramVec,
    event_gap: HistogramVec,
    stream_duration: HistogramVec,
    stream_closed: IntCounterVec,
    heartbeats: IntCounterVec,
    upstream_errors: IntCounterVec,
    peer_healthy: IntGaugeVec,
    peer_streams: IntGaugeVec,
    build_info: IntGaugeVec,
    config_info: IntGaugeVec,
    config_reloads: IntCounterVec,
    request_head_timeouts: IntCounter,
}

/// Registration can only fail on a duplicate name, which is a bug in this file, not bad input.
static FAMILIES: Lazy<Families> = Lazy::new(|| {
    const BUG: &str = "metric families are registered once with distinct names";
    Families {
        requests: register_int_counter_vec!(
            "ssegate_requests_total",
            "Responses sent, by route and status code.",
            &["route", "status"]
        )
        .expect(BUG),
        request_duration: register_histogram_vec!(
            "ssegate_request_duration_seconds",
            "Request start to response end for non-streaming responses.",
            &["route"],
            REQUEST_BUCKETS.to_vec()
        )
        .expect(BUG),
        streams_active: register_int_gauge_vec!(
            "ssegate_streams_active",
            "SSE streams open now.",
            &["route"]
        )
        .expect(BUG),
        streams_total: register_int_counter_vec!(
            "ssegate_streams_total",
            "SSE streams opened.",
            &["route"]
        )
        .expect(BUG),
        stream_clients: register_int_gauge_vec!(
            "ssegate_stream_clients",
            "Clients with at least one SSE stream open, on routes with a per-client stream cap.",
            &["route"]
        )
        .expect(BUG),
        stream_resumes: register_int_counter_vec!(
            "ssegate_stream_resumes_total",
            "SSE streams opened with a non-empty Last-Event-ID request header (reconnections).",
            &["route"]
        )
        .expect(BUG),
        stream_events: register_int_counter_vec!(
            "ssegate_stream_events_total",
            "SSE events passed to clients, counted at event boundaries.",
            &["route"]
        )
        .expect(BUG),
        stream_bytes: register_int_counter_vec!(
            "ssegate_stream_bytes_total",
            "Body bytes passed to clients on SSE streams.",
            &["route"]
        )
        .expect(BUG),
        flush_latency: register_histogram_vec!(
            "ssegate_stream_flush_latency_seconds",
            "From a chunk's arrival from the upstream to its hand-off to the client connection.",
            &["route"],
            FLUSH_BUCKETS.to_vec()
        )
        .expect(BUG),
        first_event: register_histogram_vec!(
            "ssegate_stream_first_event_seconds",
            "From request arrival to the first SSE event passed to the client.",
            &["route"],
            FIRST_EVENT_BUCKETS.to_vec()
        )
        .expect(BUG),
        event_gap: register_histogram_vec!(
            "ssegate_stream_event_gap_seconds",
            "Time between deliveries of SSE events on one stream (heartbeats excluded).",
            &["route"],
            EVENT_GAP_BUCKETS.to_vec()
        )
        .expect(BUG),
        stream_duration: register_histogram_vec!(
            "ssegate_stream_duration_seconds",
            "How long SSE streams stayed open.",
            &["route"],
            STREAM_DURATION_BUCKETS.to_vec()
        )
        .expect(BUG),
        stream_closed: register_int_counter_vec!(
            "ssegate_stream_closed_total",
            "SSE streams closed, by reason.",
            &["route", "reason"]
        )
        .expect(BUG),
        heartbeats: register_int_counter_vec!(
            "ssegate_stream_heartbeats_total",
            "Heartbeat comments sent on quiet SSE streams.",
            &["route"]
        )
        .expect(BUG),
        upstream_errors: register_int_counter_vec!(
            "ssegate_upstream_errors_total",
            "Upstream failures, by kind.",
            &["route", "kind"]
        )
        .expect(BUG),
        peer_healthy: register_int_gauge_vec!(
            "ssegate_upstream_peer_healthy",
            "Health of each upstream peer: 1 healthy, 0 not.",
            &["upstream", "peer"]
        )
        .expect(BUG),
        peer_streams: register_int_gauge_vec!(
            "ssegate_upstream_streams_active",
            "SSE streams open through this process to each upstream peer.",
            &["upstream", "peer"]
        )
        .expect(BUG),
        build_info: register_int_gauge_vec!(
            "ssegate_build_info",
            "Always 1; the version label says which build runs.",
            &["version"]
        )
        .expect(BUG),
        config_info: register_int_gauge_vec!(
            "ssegate_config_info",
            "1 for the config in force, by the SHA-256 of its file.",
            &["sha256"]
        )
        .expect(BUG),
        config_reloads: register_int_counter_vec!(
            "ssegate_config_reloads_total",
            "In-place reloads (SIGHUP), by result: ok or invalid.",
            &["result"]
        )
        .expect(BUG),
        request_head_timeouts: register_int_counter!(
            "ssegate_request_head_timeouts_total",
            "Client connections closed because a request head was not complete in time."
        )
        .expect(BUG),
    }
});

/// The live handle of each route name, so that tables built by reloads share it while it lives.
/// Taken only when a handle is made or dropped, never per request.
static LIVE: Lazy<Mutex<HashMap<String, Weak<RouteMetrics>>>> =
    Lazy::new(|| Mutex::new(HashMap::new()));

/// Handles for one route, resolved once so the per-chunk path does no label lookups.
///
/// Not `Clone`: dropping a handle may drop the route's series, so each route has one, behind an
/// `Arc` ([`Self::shared`]).
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    name: String,
    pub(crate) streams_active: IntGauge,
    pub(crate) streams_total: IntCounter,
    pub(crate) resumes: IntCounter,
    pub(crate) events: IntCounter,
    pub(crate) bytes: IntCounter,
    pub(crate) flush_latency: Histogram,
    pub(crate) first_event: Histogram,
    pub(crate) event_gap: Histogram,
    pub(crate) stream_duration: Histogram,
    pub(crate) request_duration: Histogram,
    pub(crate) heartbeats: IntCounter,
    closed: [IntCounter; 6],
    /// `requests_total{status="200"}`, resolved on first use: the one status nearly every
    /// request has, so it skips the label lookup.
    ok: std::sync::OnceLock<IntCounter>,
}

impl RouteMetrics {
    /// The handle of route `name` (or [`UNMATCHED`]): the one in use if the route has one (it
    /// was in the table a reload replaces, or requests still run on it), else a new one.
    pub(crate) fn shared(name: &str) -> Arc<RouteMetrics> {
        let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(metrics) = live.get(name).and_then(Weak::upgrade) {
            return metrics;
        }
        // Made under the lock, so a handle of the same name that is being dropped cannot remove
        // the series this one exports.
        let metrics = Arc::new(RouteMetrics::new(name));
        live.insert(name.to_string(), Arc::downgrade(&metrics));
        metrics
    }

    /// Handles for route `name` (or [`UNMATCHED`]), not shared with other tables: for unit
    /// tests; the server uses [`Self::shared`].
    pub(crate) fn new(name: &str) -> Self {
        let f = &*FAMILIES;
        let route = [name];
        let closed =
            CloseReason::ALL.map(|r| f.stream_closed.with_label_values(&[name, r.as_str()]));
        // Create the series that may stay at zero, so dashboards show 0 rather than no data.
        for kind in UpstreamErrorKind::ALL {
            f.upstream_errors.with_label_values(&[name, kind.as_str()]);
        }
        RouteMetrics {
            name: name.to_string(),
            streams_active: f.streams_active.with_label_values(&route),
            streams_total: f.streams_total.with_label_values(&route),
            resumes: f.stream_resumes.with_label_values(&route),
            events: f.stream_events.with_label_values(&route),
            bytes: f.stream_bytes.with_label_values(&route),
            flush_latency: f.flush_latency.with_label_values(&route),
            first_event: f.first_event.with_label_values(&route),
            event_gap: f.event_gap.with_label_values(&route),
            stream_duration: f.stream_duration.with_label_values(&route),
            request_duration: f.request_duration.with_label_values(&route),
            heartbeats: f.heartbeats.with_label_values(&route),
            closed,
            ok: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn closed(&self, reason: CloseReason) -> &IntCounter {
        let i = CloseReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        &self.closed[i]
    }

    /// Counts a response by status; once per request.
    pub(crate) fn response(&self, status: u16) {
        let count = |status: u16| {
            FAMILIES
                .requests
                .with_label_values(&[self.name.as_str(), status.to_string().as_str()])
        };
        if status == 200 {
            self.ok.get_or_init(|| count(200)).inc();
        } else {
            count(status).inc();
        }
    }

    pub(crate) fn upstream_error(&self, kind: UpstreamErrorKind) {
        FAMILIES
            .upstream_errors
            .with_label_values(&[self.name.as_str(), kind.as_str()])
            .inc();
    }
}

impl Drop for RouteMetrics {
    /// The last user of a route is gone (no table has it, no request runs on it): its series
    /// go, unless the route is back in a newer table, whose handle exports the same series.
    fn drop(&mut self) {
        let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
        if live.get(&self.name).is_some_and(|w| w.strong_count() > 0) {
            return;
        }
        live.remove(&self.name);
        let f = &*FAMILIES;
        let name = self.name.as_str();
        remove_route(&f.requests, name);
        remove_route(&f.request_duration, name);
        remove_route(&f.streams_active, name);
        remove_route(&f.streams_total, name);
        remove_route(&f.stream_clients, name);
        remove_route(&f.stream_resumes, name);
        remove_route(&f.stream_events, name);
        remove_route(&f.stream_bytes, name);
        remove_route(&f.flush_latency, name);
        remove_route(&f.first_event, name);
        remove_route(&f.event_gap, name);
        remove_route(&f.stream_duration, name);
        remove_route(&f.stream_closed, name);
        remove_route(&f.heartbeats, name);
        remove_route(&f.upstream_errors, name);
    }
}

/// Removes every series of `family` whose `route` label is `name`, whatever its other labels.
fn remove_route<T: MetricVecBuilder>(family: &MetricVec<T>, name: &str) {
    let mut doomed = Vec::new();
    for collected in family.collect() {
        for metric in collected.get_metric() {
            let labels = metric.get_label();
            if labels
                .iter()
                .any(|l| l.name() == "route" && l.value() == name)
            {
                doomed.push(
                    labels
                        .iter()
                        .map(|l| (l.name().to_string(), l.value().to_string()))
                        .collect::<Vec<_>>(),
                );
            }
        }
    }
    for labels in doomed {
        let labels: HashMap<&str, &str> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let _ = family.remove(&labels);
    }
}

/// Sets the health gauge of one peer.
pub(crate) fn set_peer_healthy(upstream: &str, peer: &str, healthy: bool) {
    FAMILIES
        .peer_healthy
        .with_label_values(&[upstream, peer])
        .set(i64::from(healthy));
}

/// The count of clients with streams open on a route with a per-client cap (see
/// `routing::client_streams`).
pub(crate) fn stream_clients(route: &str) -> IntGauge {
    FAMILIES.stream_clients.with_label_values(&[route])
}

/// The open-stream count of one peer (see `upstream::pool`).
pub(crate) fn peer_streams(upstream: &str, peer: &str) -> IntGauge {
    FAMILIES.peer_streams.with_label_values(&[upstream, peer])
}

/// Drops the series of a peer that is no longer configured. Streams still open to it keep
/// counting in a handle no scrape shows; a peer added back starts a new series.
pub(crate) fn forget_peer(upstream: &str, peer: &str) {
    let _ = FAMILIES.peer_healthy.remove_label_values(&[upstream, peer]);
    let _ = FAMILIES.peer_streams.remove_label_values(&[upstream, peer]);
}

/// Publishes the build version and the config in force (only `sha256` is set to 1).
pub(crate) fn set_info(config_sha256: &str) {
    let f = &*FAMILIES;
    f.build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    f.config_info.reset();
    f.config_info.with_label_values(&[config_sha256]).set(1);
    for result in ["ok", "invalid"] {
        f.config_reloads.with_label_values(&[result]);
    }
}

/// Counts an in-place reload.
pub(crate) fn config_reloaded(ok: bool) {
    FAMILIES
        .config_reloads
        .with_label_values(&[if ok { "ok" } else { "invalid" }])
        .inc();
}

/// Counts a request head dropped at its deadline (see `proxy::request_head`).
pub(crate) fn request_head_timed_out() {
    FAMILIES.request_head_timeouts.inc();
}
