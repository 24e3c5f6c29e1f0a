//! ssegate's own relay for routes marked `sse`: it owns the loop between the upstream and the
//! client so that it can write to a stream that is quiet.
//!
//! # Why a relay of its own
//! Pingora's proxy loop calls the body filters only when data arrives; nothing in `ProxyHttp`
//! runs while a stream is quiet, and no hook can write to the client then. Heartbeats, the idle
//! timeout and ending a quiet stream during a drain all need exactly that. So for marked routes
//! `request_filter` hands the request to [`run`], which uses Pingora's own pieces — the pooled
//! `HttpConnector` for the upstream connection (TLS, keep-alive pool), the upstream
//! `HttpSession` to send the request and read the response, and the downstream `Session`'s
//! write API — and adds one loop with timers:
//!
//! - a reader future moves upstream body chunks into a small channel (as Pingora's loop does);
//! - the writer loop waits on that channel, the heartbeat timer, the idle timer, the drain
//!   deadline and the client connection, whichever comes first.
//!
//! The streaming policy (headers, `Content-Length` removal), the per-stream bookkeeping and the
//! error classification are the same code the Pingora path uses for unmarked routes, so a
//! `text/event-stream` response streams the same way on either path; only the options of a
//! marked route (heartbeat, idle timeout, drain) need the relay.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_core::connectors::http::Connector as HttpConnector;
use pingora_core::protocols::http::client::HttpSession as UpstreamSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, OkOrErr, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use crate::config::model::SsePolicy;
use crate::drain::{self, DrainSignal};
use crate::failure::NO_HEALTHY_PEER;
use crate::gateway::RouteEntry;
use crate::headers;
use crate::metrics::CloseReason;
use crate::proxy::{client_key, Served};
use crate::streaming::{self, Stream};

/// The comment a quiet stream gets every `sse.heartbeat`.
const HEARTBEAT: &[u8] = b": keepalive\n\n";
/// How long an idle upstream connection may wait in the pool for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Chunks read ahead of the client, as in Pingora's own loop.
const READ_AHEAD: usize = 4;

/// Serves one request on a marked route. On `Err` nothing or only part of the response was
/// sent; Pingora's failure path answers and logs it.
pub async fn run(
    connector: &HttpConnector,
    drain: DrainSignal,
    session: &mut Session,
    route: &RouteEntry,
    arrived: Instant,
    out: &mut Served,
) -> Result<()> {
    let (mut upstream, peer, mut resp) = exchange(connector, session, route, out).await?;
    let head_request = session.req_header().method == http::Method::HEAD;

    if !streaming::is_stream(&resp, true) {
        streaming::frame_unframed(&mut resp, head_request)?;
        header_to_client(session, resp).await?;
        copy_body(session, &mut upstream).await?;
        connector
            .release_http_session(upstream, &peer, Some(POOL_IDLE_TIMEOUT))
            .await;
        return Ok(());
    }

    streaming::prepare_response(&mut resp)?;
    streaming::frame_unframed(&mut resp, head_request)?;
    header_to_client(session, resp).await?;
    let stream = out.stream.insert(Stream::open(&route.metrics, arrived));
    let policy = route.config.sse.clone().unwrap_or_default();
    let reason = pump(session, &mut upstream, stream, &policy, drain).await?;
    stream.set_close_reason(reason);
    if reason == CloseReason::UpstreamEnd {
        connector
            .release_http_session(upstream, &peer, Some(POOL_IDLE_TIMEOUT))
            .await;
    }
    Ok(())
}

/// How many pooled connections a request may find closed by the upstream before it uses a new
/// one.
const STALE_POOLED_RETRIES: usize = 2;

/// Sends the request and reads the response header. A pooled connection that the upstream had
/// already closed fails before any response; then a request without a body is sent again, as
/// Pingora's proxy does, rather than failing the client.
async fn exchange(
    connector: &HttpConnector,
    session: &mut Session,
    route: &RouteEntry,
    out: &mut Served,
) -> Result<(UpstreamSession, HttpPeer, ResponseHeader)> {
    let mut retries = 0;
    loop {
        let (mut upstream, peer, reused) = connect(connector, session, route, out).await?;
        let sent = send_request(session, &mut upstream).await;
        let response = match sent {
            Ok(()) => read_response_header(&mut upstream).await,
            Err(e) => Err(e),
        };
        match response {
            Ok(resp) => return Ok((upstream, peer, resp)),
            Err(e)
                if reused
                    && retries < STALE_POOLED_RETRIES
                    && *e.esource() == ErrorSource::Upstream
                    && matches!(
                        e.etype(),
                        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
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

/// Connects to a healthy peer, trying each peer at most once. The flag says whether the
/// connection came from the pool.
async fn connect(
    connector: &HttpConnector,
    session: &Session,
    route: &RouteEntry,
    out: &mut Served,
) -> Result<(UpstreamSession, HttpPeer, bool)> {
    let key = client_key(session);
    let mut tried = Vec::new();
    let mut last_error = Error::explain(NO_HEALTHY_PEER, "every peer is unhealthy");
    while let Some(addr) = route.upstream.select(&key, &tried) {
        tried.push(addr);
        out.peer = Some(addr);
        // The upstream's read_timeout bounds the wait for the response header; `pump` takes
        // over the timing of a stream's body.
        let peer = route.upstream.http_peer(addr);
        match connector.get_http_session(&peer).await {
            Ok((mut upstream, reused)) => {
                // The connector leaves per-request timeouts to its caller, as Pingora's proxy does.
                upstream.set_read_timeout(peer.options.read_timeout);
                upstream.set_write_timeout(peer.options.write_timeout);
                return Ok((upstream, peer, reused));
            }
            Err(e) => {
                log::warn!(
                    "route {}: connecting to {addr} failed: {e}",
                    route.config.name
                );
                last_error = e.into_up();
            }
        }
    }
    Err(last_error)
}

/// Sends the request header (with forwarding headers, without hop-by-hop ones) and the body.
async fn send_request(session: &mut Session, upstream: &mut UpstreamSession) -> Result<()> {
    let mut req = session.req_header().clone();
    headers::to_http11(&mut req)?;
    headers::strip_hop_by_hop(&mut req);
    // The relay reads the whole body before the upstream answers, so it answers a client's
    // `Expect: 100-continue` itself instead of forwarding it.
    if req.remove_header(&http::header::EXPECT).is_some() {
        session
            .write_continue_response()
            .await
            .map_err(|e| e.into_down())?;
    }
    headers::add_forwarded(session, &mut req)?;
    let has_body = !session.is_body_empty();
    if has_body
        && !req.headers.contains_key(http::header::CONTENT_LENGTH)
        && !req.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        // An HTTP/2 request body has no length of its own; frame it for an HTTP/1.1 peer.
        req.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    upstream
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| e.into_up())?;
    if has_body {
        while let Some(chunk) = session
            .read_request_body()
            .await
            .map_err(|e| e.into_down())?
        {
            upstream
                .write_request_body(chunk, false)
                .await
                .map_err(|e| e.into_up())?;
        }
    }
    upstream
        .finish_request_body()
        .await
        .map_err(|e| e.into_up())
}

/// Reads the final response header, skipping informational (1xx) ones.
async fn read_response_header(upstream: &mut UpstreamSession) -> Result<ResponseHeader> {
    loop {
        upstream
            .read_response_header()
            .await
            .map_err(|e| e.into_up())?;
        let resp = upstream
            .response_header()
            .or_err(
                ErrorType::InvalidHTTPHeader,
                "upstream sent no response header",
            )
            .map_err(|e| e.into_up())?;
        if !resp.status.is_informational() {
            return Ok(resp.clone());
        }
    }
}

/// Copies a response that is not a stream (an error answer on a marked route, say).
async fn copy_body(session: &mut Session, upstream: &mut UpstreamSession) -> Result<()> {
    while let Some(chunk) = upstream
        .read_response_body()
        .await
        .map_err(|e| e.into_up())?
    {
        to_client(session, Some(chunk), false).await?;
    }
    to_client(session, None, true).await
}

/// Writes the response header to the client; a failure is the client's.
async fn header_to_client(session: &mut Session, resp: ResponseHeader) -> Result<()> {
    session
        .write_response_header(Box::new(resp), false)
        .await
        .map_err(|e| e.into_down())
}

/// Writes body bytes (or the end) to the client; a failure is the client's, so the stream is
/// counted as `client_gone` (Pingora leaves HTTP/1 write errors without a source).
async fn to_client(session: &mut Session, data: Option<Bytes>, end: bool) -> Result<()> {
    session
        .write_response_body(data, end)
        .await
        .map_err(|e| e.into_down())
}

/// Relays the body of a stream until it ends; returns why it ended.
async fn pump(
    session: &mut Session,
    upstream: &mut UpstreamSession,
    stream: &mut Stream,
    policy: &SsePolicy,
    mut drain: DrainSignal,
) -> Result<CloseReason> {
    // Marked routes time idleness here, where heartbeats can be told apart from upstream data.
    upstream.set_read_timeout(None);
    // Each chunk travels with the time it was read, for the flush-latency metric.
    let (tx, mut rx) = mpsc::channel::<(Instant, Result<Option<Bytes>>)>(READ_AHEAD);
    let reader = async move {
        loop {
            let chunk = upstream.read_response_body().await;
            let last = !matches!(chunk, Ok(Some(_)));
            if tx.send((Instant::now(), chunk)).await.is_err() || last {
                break;
            }
        }
        // Stay parked: the writer decides when the relay ends.
        std::future::pending::<()>().await;
    };

    let writer = async {
        let mut last_write = Instant::now();
        let mut last_upstream = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        let mut watch_client = true;
        loop {
            let heartbeat_at = policy.heartbeat.map(|h| last_write + h);
            let idle_at = policy.idle_timeout.map(|t| last_upstream + t);
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some((read_at, Ok(Some(data)))) => {
                        stream.chunk_arrived(read_at, data.len());
                        to_client(session, Some(data.clone()), false).await?;
                        stream.chunk_sent(&data);
                        last_write = Instant::now();
                        last_upstream = last_write;
                        if drain_deadline.is_some_and(|d| last_write >= d) && stream.at_boundary() {
                            return end_with_retry(session).await;
                        }
                    }
                    Some((_, Ok(None))) | None => {
                        to_client(session, None, true).await?;
                        return Ok(CloseReason::UpstreamEnd);
                    }
                    Some((_, Err(e))) => return Err(e.into_up()),
                },
                _ = sleep_until(heartbeat_at.unwrap_or(far_future()).into()),
                    if heartbeat_at.is_some() && stream.at_boundary() => {
                    to_client(session, Some(Bytes::from_static(HEARTBEAT)), false).await?;
                    stream.heartbeat_sent();
                    last_write = Instant::now();
                }
                _ = sleep_until(idle_at.unwrap_or(far_future()).into()), if idle_at.is_some() => {
                    // The upstream went quiet: end the response cleanly. An event it left half
                    // sent is discarded by the client, which reconnects with its last id.
                    to_client(session, None, true).await?;
                    return Ok(CloseReason::IdleTimeout);
                }
                deadline = drain.deadline(), if drain_deadline.is_none() => {
                    drain_deadline = Some(deadline);
                }
                _ = sleep_until(drain_deadline.unwrap_or(far_future()).into()),
                    if drain_deadline.is_some() && stream.at_boundary() => {
                    return end_with_retry(session).await;
                }
                closed = session.downstream_session.read_body_or_idle(true), if watch_client => {
                    match closed {
                        Err(e) => return Err(e.into_down()),
                        // Data after a complete request: nothing to do with it; stop polling.
                        Ok(_) => watch_client = false,
                    }
                }
            }
        }
    };

    tokio::select! {
        ended = writer => ended,
        () = reader => Err(Error::explain(ErrorType::InternalError, "upstream reader stopped")),
    }
}

/// Ends a stream during a drain: a `retry:` line, then the end of the response.
async fn end_with_retry(session: &mut Session) -> Result<CloseReason> {
    let retry = Bytes::from(drain::retry_block());
    to_client(session, Some(retry), false).await?;
    to_client(session, None, true).await?;
    Ok(CloseReason::Drain)
}

/// A deadline for timers whose branch is disabled.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}
