//! The proxy: the `ProxyHttp` phases, each a few lines that read like a request's life, and the
//! pieces they call on.
//!
//! Routes marked `sse` are served by the [`relay`] from `request_filter`; every other route
//! goes through Pingora's proxy loop, with the streaming policy applied to `text/event-stream`
//! responses in the response filters. A request on either path ends in [`report`]: one
//! access-log line and its request metrics.
//!
//! - [`relay`]: ssegate's own loop for marked routes;
//! - [`failure`]: errors as statuses, metric kinds and close reasons;
//! - [`responses`]: the responses ssegate writes itself;
//! - [`headers`]: hop-by-hop and forwarding headers;
//! - [`client_limits`]: per-connection limits on clients;
//! - [`report`]: what a finished request records;
//! - [`request_head`]: the deadline for a request head, and heads Pingora refuses itself;
//! - [`service`]: Pingora's HTTP app around [`Proxy`], with ssegate's loop for HTTP/1.1
//!   connections, which also takes back client connections the relay is done with.

mod client_limits;
mod failure;
mod headers;
pub mod relay;
mod report;
mod request_head;
mod responses;
mod service;

pub(crate) use service::proxy_service;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::config::model::ClientKey;
use crate::lifecycle::drain::{self, DrainSignal};
use crate::observe::metrics::{CloseReason, RouteMetrics};
use crate::routing::{self, ClientIdentity, Refusal, RouteEntry, RouteTable, StreamSlot};
use crate::sse::stream::{self, StreamMeter};
use relay::{ConnectionReturn, Finish, Relay};
use report::{Report, RequestLine, Served};

/// Seconds a client is told to wait when a route's stream limit, or its own, is reached.
const STREAM_LIMIT_RETRY_AFTER_SECS: u64 = 1;

/// The `ProxyHttp` of ssegate: routes each request by the route table in force.
pub(crate) struct Proxy {
    routes: Arc<ArcSwap<RouteTable>>,
    /// Serves marked routes.
    relay: Relay,
    /// Ends streams on unmarked routes at the drain deadline.
    drain: DrainSignal,
}

impl Proxy {
    /// `connections` is how the relay gives client connections back (see [`service`]).
    pub(crate) fn new(
        routes: Arc<ArcSwap<RouteTable>>,
        conf: &ServerConf,
        drain: DrainSignal,
        connections: Arc<ConnectionReturn>,
    ) -> Self {
        Proxy {
            routes,
            relay: Relay::new(conf, drain.clone(), connections),
            drain,
        }
    }
}

/// Per-request state.
pub(crate) struct RequestCtx {
    arrived: Instant,
    /// The table this request was routed with; kept for the request's whole life.
    routes: Arc<RouteTable>,
    route: Option<usize>,
    /// Held while a request is open on a route with `sse.max_streams`.
    slot: Option<StreamSlot>,
    served: Served,
    /// The relay took the client connection and reports the request itself.
    handed_over: bool,
    /// A stream on an unmarked route was sent its `retry:` at the drain deadline; it ends
    /// before its next chunk.
    drained: bool,
}

impl RequestCtx {
    fn route(&self) -> Option<&RouteEntry> {
        self.route.map(|i| self.routes.route(i))
    }

    fn metrics(&self) -> &Arc<RouteMetrics> {
        self.route().map_or(&self.routes.unmatched, |r| &r.metrics)
    }

    fn route_name(&self) -> &str {
        self.metrics().name()
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            arrived: Instant::now(),
            routes: self.routes.load_full(),
            route: None,
            slot: None,
            served: Served::default(),
            handed_over: false,
            drained: false,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        request_head::seen(&session.downstream_session);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        client_limits::apply(session);
        if let Some(reason) = routing::refusal(session.req_header()) {
            responses::send_error(session, 400, None, reason, None).await?;
            return Ok(true);
        }
        let req = session.req_header();
        ctx.route = ctx.routes.find(
            headers::request_host(req),
            req.uri.path(),
            req.method.as_str(),
        );
        let routes = ctx.routes.clone();
        let Some(route) = ctx.route.map(|i| routes.route(i)) else {
            responses::send_error(session, 404, None, "no route matches this request", None)
                .await?;
            return Ok(true);
        };
        let Some(policy) = &route.config.sse else {
            return Ok(false);
        };
        session.set_write_timeout(Some(policy.write_timeout));
        let slot = route.admit_stream(|key| client_identity(session, key));
        let slot = match slot {
            Ok(slot) => slot,
            Err(refusal) => {
                let (status, reason) = match refusal {
                    Refusal::RouteFull => (503, "stream limit reached"),
                    Refusal::ClientFull => (429, "this client's stream limit is reached"),
                };
                let retry_after = Some(STREAM_LIMIT_RETRY_AFTER_SECS);
                let name = &route.config.name;
                responses::send_error(session, status, Some(name), reason, retry_after).await?;
                return Ok(true);
            }
        };
        ctx.slot = Some(slot);
        let key = balancing_key(session, route);
        let finish = self
            .relay
            .serve(
                session,
                route,
                &key,
                ctx.arrived,
                &mut ctx.served,
                &mut ctx.slot,
            )
            .await?;
        ctx.handed_over = finish == Finish::HandedOver;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no route"))?;
        let addr = route
            .upstream
            .select(&balancing_key(session, route), &ctx.served.tried)?;
        let peer = route.upstream.http_peer(addr);
        ctx.served.peer = Some(addr);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let routes = ctx.routes.clone();
        if let (Some(route), Some(addr)) = (ctx.route.map(|i| routes.route(i)), ctx.served.peer) {
            // On retry Pingora calls `upstream_peer` again, which skips the peers tried.
            let retry = route
                .upstream
                .connect_failed(&mut ctx.served.tried, addr, &e);
            e.set_retry(retry);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Pingora strips the standard hop-by-hop fields; `Proxy-*` are ours to drop.
        headers::strip_hop_by_hop(upstream_request);
        headers::add_forwarded(session, upstream_request)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if stream::is_stream(upstream_response, false) {
            stream::prepare_response(upstream_response)?;
            let resumed = stream::is_resume(session.req_header());
            ctx.served.stream = Some(StreamMeter::open(ctx.metrics(), ctx.arrived, resumed));
            if let (Some(route), Some(peer)) = (ctx.route(), ctx.served.peer) {
                ctx.served.peer_stream = route.upstream.stream_opened(peer);
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let (Some(stream), Some(chunk)) = (ctx.served.stream.as_mut(), body.as_ref()) {
            stream.chunk_arrived(Instant::now(), chunk.len());
        }
        Ok(None)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let Some(stream) = ctx.served.stream.as_mut() else {
            return Ok(None);
        };
        if ctx.drained {
            return Err(Error::explain(ErrorType::InternalError, DRAINED));
        }
        if let Some(chunk) = body.as_ref() {
            stream.chunk_sent(chunk);
        }
        if !end_of_stream && self.drain.passed() && stream.at_boundary() {
            end_at_drain(stream, body);
            ctx.drained = true;
        }
        Ok(None)
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        // A client leaving an open stream is how streams usually end, and a drain ends the
        // others; the access log says so.
        ctx.drained
            || (failure::classify(e).status.is_none() && *e.esource() == ErrorSource::Downstream)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let failure = failure::classify(e);
        if let (Some(status), None) = (failure.status, session.response_written()) {
            let route = ctx.route_name().to_string();
            let sent =
                responses::send_error(session, status, Some(&route), failure.reason, None).await;
            if let Err(write_error) = sent {
                log::debug!("could not send error response: {write_error}");
            }
        }
        FailToProxy {
            // Pingora's code for "no response": the client is gone.
            error_code: failure.status.unwrap_or(0),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.handed_over {
            return;
        }
        let stream = ctx.served.stream.as_mut().map(|s| {
            let reason = report::close_reason(e, s.close_reason());
            s.set_close_reason(reason);
            (s.events(), reason)
        });
        Report {
            metrics: ctx.metrics(),
            status: session.response_written().map(|r| r.status.as_u16()),
            peer: ctx.served.peer,
            arrived: ctx.arrived,
            bytes: session.body_bytes_sent(),
            stream,
            error: e,
        }
        .emit(|| {
            let req = session.req_header();
            RequestLine {
                client: session.client_addr().map(|a| a.to_string()),
                method: req.method.as_str(),
                path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
            }
        });
        // Close the stream (metrics) and free its slots now rather than whenever ctx is dropped.
        ctx.served.stream = None;
        ctx.served.peer_stream = None;
        ctx.slot = None;
    }
}

/// Why a stream on an unmarked route ended after its `retry:` (in its access-log line).
const DRAINED: &str = "stream ended at the drain deadline";

/// Ends a stream on an unmarked route at the drain deadline, at an event boundary: `body` (the
/// chunk about to be written, which completes an event) gets the `retry:` block that tells the
/// client when to reconnect. Pingora's proxy loop has no way to end a response early, so the
/// request is ended with an error before the stream's next chunk, which closes the connection;
/// the client has every complete event and its `retry:` by then. A stream that sends nothing
/// after the deadline, or nothing that ends an event, is cut when the process stops. Marked
/// routes get the full drain from the relay (quiet streams too).
fn end_at_drain(stream: &mut StreamMeter, body: &mut Option<Bytes>) {
    let retry = drain::retry_block();
    let mut out = Vec::with_capacity(body.as_ref().map_or(0, Bytes::len) + retry.len());
    out.extend_from_slice(body.as_deref().unwrap_or_default());
    out.extend_from_slice(retry.as_bytes());
    *body = Some(Bytes::from(out));
    stream.set_close_reason(CloseReason::Drain);
}

/// Who a request comes from, as a route's `client_key` says: the client's IP address, or the
/// value of a header (the IP address when the request has no such header).
fn client_identity<'a>(session: &'a Session, key: &ClientKey) -> ClientIdentity<'a> {
    if let ClientKey::Header(name) = key {
        if let Some(value) = session.req_header().headers.get(name) {
            return ClientIdentity::Header(value.as_bytes());
        }
    }
    let ip = session.client_addr().and_then(|a| a.as_inet()).map_or(
        std::net::Ipv6Addr::UNSPECIFIED,
        |a| match a.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        },
    );
    ClientIdentity::Ip(ip.octets())
}

/// The balancing key of a request: the client's IP address for `consistent_hash`, nothing for
/// the strategies that ignore it (so most requests build none).
fn balancing_key(session: &Session, route: &RouteEntry) -> Vec<u8> {
    match session.client_addr().and_then(|a| a.as_inet()) {
        Some(addr) if route.upstream.uses_key() => addr.ip().to_string().into_bytes(),
        _ => Vec::new(),
    }
}
