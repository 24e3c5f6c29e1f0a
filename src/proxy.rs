//! The `ProxyHttp` implementation: each phase is a few lines that read like a request's life,
//! calling into routing, upstreams, streaming and metrics for the work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::access_log;
use crate::failure::{self, NO_HEALTHY_PEER};
use crate::gateway::{Gateway, RouteEntry, StreamSlot};
use crate::metrics::RouteMetrics;
use crate::responses;
use crate::streaming::{self, Stream};

/// Seconds a client is told to wait when a route's stream limit is reached.
const STREAM_LIMIT_RETRY_AFTER_SECS: u64 = 1;

pub struct Proxy {
    gateway: Arc<ArcSwap<Gateway>>,
}

impl Proxy {
    pub fn new(gateway: Arc<ArcSwap<Gateway>>) -> Self {
        Proxy { gateway }
    }
}

/// Per-request state.
pub struct RequestCtx {
    arrived: Instant,
    /// The table this request was routed with; kept for the request's whole life.
    gateway: Arc<Gateway>,
    route: Option<usize>,
    peer: Option<SocketAddr>,
    /// Held while a stream is open on a route with `max_streams`.
    slot: Option<StreamSlot>,
    stream: Option<Stream>,
}

impl RequestCtx {
    fn route(&self) -> Option<&RouteEntry> {
        self.route.map(|i| self.gateway.route(i))
    }

    fn metrics(&self) -> &RouteMetrics {
        self.route().map_or(&self.gateway.unmatched, |r| &r.metrics)
    }

    fn route_name(&self) -> &str {
        self.metrics().name()
    }

    fn is_marked_stream(&self) -> bool {
        self.route().is_some_and(|r| r.config.sse.is_some())
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            arrived: Instant::now(),
            gateway: self.gateway.load_full(),
            route: None,
            peer: None,
            slot: None,
            stream: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        ctx.route = ctx
            .gateway
            .find(request_host(req), req.uri.path(), req.method.as_str());
        let Some(route) = ctx.route() else {
            responses::send_error(session, 404, None, "no route matches this request", None)
                .await?;
            return Ok(true);
        };
        if route.config.sse.is_some() {
            match route.admit_stream() {
                Some(slot) => ctx.slot = Some(slot),
                None => {
                    let name = route.config.name.clone();
                    responses::send_error(
                        session,
                        503,
                        Some(&name),
                        "stream limit reached",
                        Some(STREAM_LIMIT_RETRY_AFTER_SECS),
                    )
                    .await?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route()
            .ok_or_else(|| Error::explain(NO_HEALTHY_PEER, "request has no route"))?;
        let key = client_key(session);
        let addr = route
            .upstream
            .select(&key)
            .ok_or_else(|| Error::explain(NO_HEALTHY_PEER, "every peer is unhealthy"))?;
        let stream_timeout = route.config.sse.as_ref().map(|s| s.idle_timeout);
        let peer = route.upstream.http_peer(addr, stream_timeout);
        ctx.peer = Some(addr);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        add_forwarded_headers(session, upstream_request)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let informational = upstream_response.status.is_informational();
        if !informational
            && (ctx.is_marked_stream() || streaming::is_event_stream(upstream_response))
        {
            streaming::prepare_response(upstream_response)?;
            ctx.stream = Some(Stream::open(ctx.metrics(), ctx.arrived));
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
        if let (Some(stream), Some(chunk)) = (ctx.stream.as_mut(), body.as_ref()) {
            stream.chunk_arrived(chunk.len());
        }
        Ok(None)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let (Some(stream), Some(chunk)) = (ctx.stream.as_mut(), body.as_ref()) {
            stream.chunk_sent(chunk);
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let failure = failure::classify(e);
        if failure.status != 0 && session.response_written().is_none() {
            let route = ctx.route_name().to_string();
            if let Err(write_error) =
                responses::send_error(session, failure.status, Some(&route), failure.reason, None)
                    .await
            {
                log::debug!("could not send error response: {write_error}");
            }
        }
        FailToProxy {
            error_code: failure.status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let stream = ctx.stream.as_mut().map(|s| {
            s.set_close_reason(failure::close_reason(e));
            (s.events(), s.close_reason().as_str())
        });
        let metrics = ctx.metrics();
        if status != 0 {
            metrics.response(status);
        }
        if let Some(kind) = e.and_then(|e| failure::classify(e).upstream_kind) {
            metrics.upstream_error(kind);
        }
        if stream.is_none() && status != 0 {
            metrics
                .request_duration
                .observe(ctx.arrived.elapsed().as_secs_f64());
        }
        let req = session.req_header();
        access_log::write(&access_log::Entry {
            client: session.client_addr().map(|a| a.to_string()),
            method: req.method.as_str(),
            path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
            route: ctx.route_name(),
            status,
            peer: ctx.peer,
            duration: ctx.arrived.elapsed(),
            bytes: session.body_bytes_sent(),
            stream,
            error: e.map(|e| e.to_string()),
        });
        // Close the stream (metrics) and free its slot now rather than whenever ctx is dropped.
        ctx.stream = None;
        ctx.slot = None;
    }
}

/// The request's host: the `Host` header (HTTP/1.1) or the URI authority (HTTP/2).
fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// The `consistent_hash` key: the client's IP address.
fn client_key(session: &Session) -> Vec<u8> {
    match session.client_addr().and_then(|a| a.as_inet()) {
        Some(addr) => addr.ip().to_string().into_bytes(),
        None => Vec::new(),
    }
}

/// `X-Forwarded-For` appended, `X-Forwarded-Proto` and `X-Forwarded-Host` set (SPEC §4).
fn add_forwarded_headers(session: &Session, req: &mut RequestHeader) -> Result<()> {
    if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
        let ip = client.ip().to_string();
        let forwarded_for = match req
            .headers
            .get("X-Forwarded-For")
            .and_then(|v| v.to_str().ok())
        {
            Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
            _ => ip,
        };
        req.insert_header("X-Forwarded-For", forwarded_for)?;
    }
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    req.insert_header("X-Forwarded-Proto", if tls { "https" } else { "http" })?;
    if let Some(host) = request_host(session.req_header()).map(str::to_owned) {
        req.insert_header("X-Forwarded-Host", host)?;
    }
    // Pingora strips the standard hop-by-hop fields; `Proxy-*` are ours to drop.
    let proxy_headers: Vec<_> = req
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy_headers {
        req.remove_header(&name);
    }
    Ok(())
}
