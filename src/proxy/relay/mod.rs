//! ssegate's own relay for routes marked `sse`: it owns the path between the upstream and the
//! client, so that it can write to a stream that is quiet and carry each event at the least cost.
//!
//! # Why a relay of its own
//! Pingora's proxy loop calls the body filters only when data arrives; nothing in `ProxyHttp`
//! runs while a stream is quiet, and no hook can write to the client then. Heartbeats, the idle
//! timeout and ending a quiet stream during a drain all need exactly that. Pingora's loop also
//! spends, per stream, a 64 KiB upstream body buffer and its whole per-request state for as long
//! as the stream lives, and per event a reader task hop and several timer registrations.
//!
//! So for marked routes `request_filter` hands the request to [`Relay::serve`]:
//! - [`upstream`]: Pingora's `TransportConnector` connects (pooling, TLS) and Pingora's HTTP/1.1
//!   client session writes the request; the relay reads the response itself, the body straight
//!   off the socket, decoded by [`framing`] with no buffer held between reads;
//! - the response head goes to the client through Pingora's session; then, for HTTP/1.1, the
//!   relay takes the client connection over ([`handover`]) and carries the stream in a task of
//!   its own, so Pingora's per-request state is freed; HTTP/2 streams stay on Pingora's session;
//! - [`pump`] is the loop: one upstream read, one client write ([`client`]), with the timers of
//!   the route's `sse:` options and a watch for a client that leaves.
//!
//! Responses that are not streams (an error on a marked route, say) are copied through Pingora's
//! session. The streaming policy (headers, `Content-Length` removal), the per-stream bookkeeping
//! and the error classification are the code the Pingora path uses for unmarked routes.

mod client;
pub mod framing;
mod handover;
mod pump;
mod upstream;

pub(crate) use handover::ConnectionReturn;

use std::sync::Arc;
use std::time::Instant;

use pingora_core::server::configuration::ServerConf;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::config::model::SsePolicy;
use crate::lifecycle::drain::DrainSignal;
use crate::observe::metrics::CloseReason;
use crate::proxy::headers;
use crate::proxy::report::{self, Report, RequestLine, Served};
use crate::routing::{RouteEntry, StreamSlot};
use crate::sse::stream::{self, StreamMeter};
use crate::upstream::PeerStream;
use client::{ClientSide, OwnedClient, SessionClient};
use upstream::{Connector, Response, UpstreamBody};

/// How many pooled connections a request may find closed by the upstream before it uses a new
/// one.
const STALE_POOLED_RETRIES: usize = 2;

/// The relay: its upstream connections, the drain signal, and the way back to Pingora for
/// client connections it took over.
pub(crate) struct Relay {
    connector: Arc<Connector>,
    drain: DrainSignal,
    connections: Arc<ConnectionReturn>,
}

/// Who finishes a request the relay served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Pingora's logging phase, as for any request.
    Pingora,
    /// The relay's own task, which took the client connection; Pingora has nothing to log.
    HandedOver,
}

impl Relay {
    pub(crate) fn new(
        conf: &ServerConf,
        drain: DrainSignal,
        connections: Arc<ConnectionReturn>,
    ) -> Self {
        Relay {
            connector: Arc::new(Connector::new(conf)),
            drain,
            connections,
        }
    }

    /// Serves one request on a route marked `sse`. `key` is the balancing key, `slot` the
    /// request's `max_streams` slot (kept until the stream ends). On `Err` nothing or only part of the
    /// response was sent; Pingora's failure path answers and logs it.
    pub(crate) async fn serve(
        &self,
        session: &mut Session,
        route: &RouteEntry,
        key: &[u8],
        arrived: Instant,
        served: &mut Served,
        slot: &mut Option<StreamSlot>,
    ) -> Result<Finish> {
        let policy = route.config.sse.as_ref().ok_or_else(|| {
            Error::explain(
                ErrorType::InternalError,
                "the relay serves only routes marked sse",
            )
        })?;
        let Response { mut header, body } = self.exchange(session, route, key, served).await?;
        let head_request = session.req_header().method == http::Method::HEAD;
        let has_body = !head_request && !matches!(header.status.as_u16(), 204 | 304);

        if !(has_body && stream::is_stream(&header, true)) {
            stream::frame_for_client(&mut header, session.req_header())?;
            header_to_client(session, header).await?;
            let body = copy_body(session, body, route).await?;
            self.connector.release(body);
            return Ok(Finish::Pingora);
        }

        stream::prepare_response(&mut header)?;
        stream::frame_for_client(&mut header, session.req_header())?;
        let status = header.status.as_u16();
        header_to_client(session, header).await?;
        let resumed = stream::is_resume(session.req_header());
        let stats = StreamMeter::open(&route.metrics, arrived, resumed);

        let chunked = session.response_written().is_some_and(is_chunked);
        let line = access_log_line(session);
        let taken = match handover::take(session).await {
            Some(Ok(taken)) => taken,
            Some(Err(e)) => {
                served.stream = Some(stats);
                return Err(e);
            }
            None => {
                // HTTP/2: the stream stays on Pingora's session.
                let stream = served.stream.insert(stats);
                let mut body = body;
                let mut client = SessionClient { session };
                let reason =
                    pump::pump(&mut client, &mut body, stream, policy, &self.drain).await?;
                stream.set_close_reason(reason);
                if reason == CloseReason::UpstreamEnd {
                    self.connector.release(body);
                }
                return Ok(Finish::Pingora);
            }
        };
        let task = StreamTask {
            client: OwnedClient::new(taken.stream, chunked, policy.write_timeout),
            next: taken.next,
            body,
            stats,
            policy: policy.clone(),
            drain: self.drain.clone(),
            connector: self.connector.clone(),
            connections: self.connections.clone(),
            slot: slot.take(),
            peer_stream: served.peer_stream.take(),
            line,
            status,
            peer: served.peer,
            arrived,
        };
        tokio::spawn(task.run());
        Ok(Finish::HandedOver)
    }

    /// Connects, sends the request and reads the response head. A pooled connection that the
    /// upstream had already closed fails before any response; then a request without a body is
    /// sent again, as Pingora's proxy does, rather than failing the client.
    async fn exchange(
        &self,
        session: &mut Session,
        route: &RouteEntry,
        key: &[u8],
        served: &mut Served,
    ) -> Result<Response> {
        // The relay reads the whole body before the upstream answers, so it answers a client's
        // `Expect: 100-continue` itself instead of forwarding it.
        if session
            .req_header()
            .headers
            .contains_key(http::header::EXPECT)
        {
            session
                .write_continue_response()
                .await
                .map_err(|e| e.into_down())?;
        }
        let mut retries = 0;
        loop {
            let connection = self
                .connector
                .connect(&route.upstream, key, &mut served.tried, |addr| {
                    // On a marked route a request counts as a stream to its peer from the
                    // moment the peer is chosen, so a burst of streams spreads at once.
                    served.peer = Some(addr);
                    served.peer_stream = route.upstream.stream_opened(addr);
                })
                .await?;
            let reused = connection.reused;
            // Built for each attempt: a retry is rare, a copy kept for it would not be.
            let req = upstream_request(session)?;
            match connection.exchange(session, req).await {
                Ok(response) => return Ok(response),
                Err(e)
                    if reused
                        && retries < STALE_POOLED_RETRIES
                        && *e.esource() == ErrorSource::Upstream
                        && matches!(
                            e.etype(),
                            ErrorType::ConnectionClosed
                                | ErrorType::ReadError
                                | ErrorType::WriteError
                        )
                        && session.is_body_empty() =>
                {
                    log::debug!(
                        "route {}: pooled connection failed, retrying: {e}",
                        route.config.name
                    );
                    retries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The request to send upstream: HTTP/1.1, forwarding headers added, hop-by-hop ones and
/// `Expect` (answered by the relay) removed.
fn upstream_request(session: &mut Session) -> Result<RequestHeader> {
    let mut req = session.req_header().clone();
    headers::to_http11(&mut req)?;
    headers::strip_hop_by_hop(&mut req);
    req.remove_header(&http::header::EXPECT);
    headers::add_forwarded(session, &mut req)?;
    if !session.is_body_empty()
        && !req.headers.contains_key(http::header::CONTENT_LENGTH)
        && !req.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        // An HTTP/2 request body has no length of its own; frame it for an HTTP/1.1 peer.
        req.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(req)
}

/// Copies a response that is not a stream (an error answer on a marked route, say), each read
/// bounded by the upstream's `read_timeout`.
async fn copy_body(
    session: &mut Session,
    mut body: UpstreamBody,
    route: &RouteEntry,
) -> Result<UpstreamBody> {
    let limit = Some(route.upstream.config.read_timeout);
    while let Some(chunk) = body.next(0, limit).await? {
        session
            .write_response_body(Some(chunk.freeze()), false)
            .await
            .map_err(|e| e.into_down())?;
    }
    session
        .write_response_body(None, true)
        .await
        .map_err(|e| e.into_down())?;
    Ok(body)
}

/// Writes the response header to the client; a failure is the client's.
async fn header_to_client(session: &mut Session, resp: ResponseHeader) -> Result<()> {
    session
        .write_response_header(Box::new(resp), false)
        .await
        .map_err(|e| e.into_down())
}

/// Whether the head Pingora wrote frames the body as chunks (else it runs until the close, as
/// for an HTTP/1.0 client).
fn is_chunked(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(http::header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
}

/// The request's access-log fields, kept for a stream that outlives Pingora's request (only
/// when the access log is on).
struct OwnedLine {
    client: Option<String>,
    method: String,
    path: String,
}

fn access_log_line(session: &Session) -> Option<OwnedLine> {
    crate::observe::access_log::enabled().then(|| {
        let req = session.req_header();
        OwnedLine {
            client: session.client_addr().map(|a| a.to_string()),
            method: req.method.as_str().to_string(),
            path: req
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
        }
    })
}

/// A stream whose client connection the relay took over: everything it needs until it ends,
/// and nothing more.
struct StreamTask {
    client: OwnedClient,
    /// How the client connection carries on after the stream, if the client keeps it alive.
    next: Option<handover::NextRequest>,
    body: UpstreamBody,
    stats: StreamMeter,
    policy: SsePolicy,
    drain: DrainSignal,
    connector: Arc<Connector>,
    connections: Arc<ConnectionReturn>,
    slot: Option<StreamSlot>,
    peer_stream: Option<PeerStream>,
    line: Option<OwnedLine>,
    status: u16,
    peer: Option<std::net::SocketAddr>,
    arrived: Instant,
}

impl StreamTask {
    /// Carries the stream to its end, reports it, and gives the client connection back if it
    /// can carry another request. (A plain function returning a future, so the task holds one
    /// copy of `self`, not two as an `async fn` taking `self` would.)
    #[allow(clippy::manual_async_fn)]
    fn run(mut self) -> impl std::future::Future<Output = ()> + Send {
        async move {
            let ended = async {
                self.client.flush_head().await?;
                pump::pump(
                    &mut self.client,
                    &mut self.body,
                    &mut self.stats,
                    &self.policy,
                    &self.drain,
                )
                .await
            }
            .await;
            let error = ended.as_ref().err().map(|e| &**e);
            let reason = report::close_reason(error, ended.as_ref().ok().copied());
            self.stats.set_close_reason(reason);
            Report {
                metrics: self.stats.metrics(),
                status: Some(self.status),
                peer: self.peer,
                arrived: self.arrived,
                bytes: self.client.body_bytes_sent(),
                stream: Some((self.stats.events(), reason)),
                error,
            }
            .emit(|| match &self.line {
                Some(line) => RequestLine {
                    client: line.client.clone(),
                    method: &line.method,
                    path: &line.path,
                },
                None => RequestLine {
                    client: None,
                    method: "-",
                    path: "-",
                },
            });
            // Close the stream (metrics) and free its slots before serving anything else.
            drop(self.stats);
            drop(self.slot);
            drop(self.peer_stream);
            if reason != CloseReason::UpstreamEnd {
                return;
            }
            self.connector.release(self.body);
            if let (Some(next), Some((stream, early))) = (self.next, self.client.into_reusable()) {
                // Boxed: it lives as long as the connection, not the stream.
                Box::pin(self.connections.give_back(stream, next, early.as_slice())).await;
            }
        }
    }
}
