//! The request head of an HTTP/1.1 client connection: a total deadline for reading it, and an
//! account of heads that never became a request.
//!
//! # Why
//! Pingora reads a request head with a timeout per read (60 s), and no total: a client that
//! sends a byte a minute holds its connection, and a slot of the proxy, for as long as it likes
//! (slowloris). And a head that Pingora refuses itself (malformed, larger than its limit,
//! `CONNECT`) is answered before any `ProxyHttp` phase runs, so it would reach neither the access
//! log nor the metrics; Pingora has no hook for it.
//!
//! # How
//! ssegate serves HTTP/1.1 connections in its own loop ([`super::service`]), which wraps the
//! client's stream in a [`WatchedStream`]. The wrapper notes, for the request being read, when its
//! first byte arrived and the status of any response written before `ProxyHttp` saw the
//! request. [`serve_request`] runs Pingora's request handling under the deadline and, when it ends
//! with no request seen, reports what the wrapper noted:
//!
//! - a head still incomplete [`HEAD_DEADLINE`] after it began is dropped with its connection,
//!   counted in `ssegate_request_head_timeouts_total` and logged with `status=0`. The first
//!   request on a connection begins when the connection is accepted; a later one with its first
//!   byte, so a kept-alive connection may idle between requests for the keep-alive timeout;
//! - a head Pingora answered itself is counted and logged like any response, on the `unmatched`
//!   route (it matched none).
//!
//! A connection that sends nothing before it closes or times out is not a request, and leaves
//! no trace, as in nginx. HTTP/2 connections are Pingora's own: there each request is a stream
//! of an already established connection, with its own limits.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::{Error, ErrorType};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::observe::metrics::{self, RouteMetrics};
use crate::proxy::report::{Report, RequestLine};

/// How long a client has to send a complete request head. Real clients send a head in one
/// packet, or a few: ten seconds leave room for a slow mobile link that loses a packet or two
/// (each retransmission waits a second or more), and are what HAProxy setups commonly give
/// `timeout http-request`. nginx's `client_header_timeout` is 60 s, but it counts from the last
/// read, not in total, so a trickling client outlives it just the same.
pub(crate) const HEAD_DEADLINE: Duration = Duration::from_secs(10);

/// What the loop learns about the request being read, shared with the stream's [`WatchedStream`].
#[derive(Debug)]
pub(crate) struct HeadWatch {
    origin: Instant,
    /// `ProxyHttp` has the request: nothing more to watch until the next one.
    seen: AtomicBool,
    /// When the head's first byte was read, in nanoseconds after `origin` plus one; 0: none yet.
    first_byte: AtomicU64,
    /// The status of a response written before the request was seen; 0: none.
    early_status: AtomicU16,
    /// For the access log, should a head be refused.
    socket: Option<Arc<SocketDigest>>,
}

impl HeadWatch {
    /// Starts watching the next request on the connection.
    fn begin(&self) {
        self.seen.store(false, Relaxed);
        self.first_byte.store(0, Relaxed);
        self.early_status.store(0, Relaxed);
    }

    fn first_byte(&self) -> Option<Instant> {
        match self.first_byte.load(Relaxed) {
            0 => None,
            n => Some(self.origin + Duration::from_nanos(n - 1)),
        }
    }

    fn read(&self) {
        if self.first_byte.load(Relaxed) == 0 {
            let n = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            self.first_byte.store(n + 1, Relaxed);
        }
    }

    /// Notes the status of a response head that Pingora writes before `ProxyHttp` ran.
    fn wrote(&self, bytes: &[u8]) {
        if self.early_status.load(Relaxed) != 0 {
            return;
        }
        let status = bytes
            .strip_prefix(b"HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| std::str::from_utf8(code).ok()?.parse().ok());
        if let Some(status) = status {
            self.early_status.store(status, Relaxed);
        }
    }

    fn client(&self) -> Option<String> {
        let addr: &SocketAddr = self.socket.as_ref()?.peer_addr()?;
        Some(addr.to_string())
    }
}

/// Marks the session's request as seen by `ProxyHttp`; a no-op for HTTP/2 sessions.
pub(crate) fn seen(session: &ServerSession) {
    if let Some(watch) = watch_of(session) {
        watch.seen.store(true, Relaxed);
    }
}

/// The watch of an HTTP/1.1 session served by ssegate's loop.
pub(crate) fn watch_of(session: &ServerSession) -> Option<&Arc<HeadWatch>> {
    let stream = session.stream()?;
    let watched = stream.as_ref().as_any().downcast_ref::<WatchedStream>()?;
    Some(&watched.watch)
}

/// Where the head's deadline counts from.
#[derive(Clone, Copy)]
pub(crate) enum HeadStart {
    /// The connection's first request: from the accept.
    Accepted(Instant),
    /// A later request on a kept-alive connection: from its first byte.
    FirstByte,
}

/// Runs `handle` (Pingora's handling of the session's next request) under the head deadline,
/// and reports a head that never became a request. `unmatched` counts refused heads.
pub(crate) async fn serve_request<T>(
    watch: Arc<HeadWatch>,
    start: HeadStart,
    unmatched: impl FnOnce() -> Arc<RouteMetrics>,
    handle: impl std::future::Future<Output = Option<T>>,
) -> Option<T> {
    watch.begin();
    let mut handle = std::pin::pin!(handle);
    let mut check = match start {
        HeadStart::Accepted(at) => at + HEAD_DEADLINE,
        HeadStart::FirstByte => Instant::now() + HEAD_DEADLINE,
    };
    let began = Instant::now();
    loop {
        tokio::select! {
            biased;
            done = &mut handle => {
                if done.is_none() && !watch.seen.load(Relaxed) {
                    report_refused(&watch, began, unmatched);
                }
                return done;
            }
            _ = tokio::time::sleep_until(check.into()) => {}
        }
        if watch.seen.load(Relaxed) {
            return handle.await;
        }
        let since = match (start, watch.first_byte()) {
            (HeadStart::Accepted(at), first) => first.map(|_| at),
            (HeadStart::FirstByte, first) => first,
        };
        match since {
            Some(since) if since.elapsed() >= HEAD_DEADLINE => {
                report_timeout(&watch, since, unmatched);
                return None;
            }
            Some(since) => check = since + HEAD_DEADLINE,
            // Nothing sent yet: a new connection that never speaks is closed now, quietly; a
            // kept-alive one idles on until Pingora's keep-alive timeout.
            None if matches!(start, HeadStart::Accepted(_)) => return None,
            None => check = Instant::now() + HEAD_DEADLINE,
        }
    }
}

/// A head Pingora answered itself (a response was written, no request seen).
fn report_refused(
    watch: &HeadWatch,
    began: Instant,
    unmatched: impl FnOnce() -> Arc<RouteMetrics>,
) {
    let status = watch.early_status.load(Relaxed);
    if status == 0 {
        // The client closed the connection, or went away mid-head; Pingora logs the latter.
        return;
    }
    let error = Error::explain(
        ErrorType::InvalidHTTPHeader,
        "request head refused by the HTTP parser",
    );
    report(watch, began, Some(status), error, unmatched);
}

fn report_timeout(
    watch: &HeadWatch,
    since: Instant,
    unmatched: impl FnOnce() -> Arc<RouteMetrics>,
) {
    metrics::request_head_timed_out();
    let error = Error::explain(
        ErrorType::ReadTimedout,
        format!("request head not complete within {HEAD_DEADLINE:?}"),
    );
    report(watch, since, None, error, unmatched);
}

fn report(
    watch: &HeadWatch,
    arrived: Instant,
    status: Option<u16>,
    mut error: Box<Error>,
    unmatched: impl FnOnce() -> Arc<RouteMetrics>,
) {
    error.as_down();
    let metrics = unmatched();
    Report {
        metrics: &metrics,
        status,
        peer: None,
        arrived,
        bytes: 0,
        stream: None,
        error: Some(&error),
    }
    .emit(|| RequestLine {
        client: watch.client(),
        method: "-",
        path: "-",
    });
}

/// A client connection as ssegate's HTTP/1.1 loop serves it: the stream itself, and what its
/// [`HeadWatch`] needs to see of it.
#[derive(Debug)]
pub(crate) struct WatchedStream {
    inner: Stream,
    watch: Arc<HeadWatch>,
}

impl WatchedStream {
    /// Wraps an accepted connection.
    pub(crate) fn wrap(inner: Stream) -> Stream {
        let watch = Arc::new(HeadWatch {
            origin: Instant::now(),
            seen: AtomicBool::new(false),
            first_byte: AtomicU64::new(0),
            early_status: AtomicU16::new(0),
            socket: inner.get_socket_digest(),
        });
        Box::new(WatchedStream { inner, watch })
    }

    /// Whether the bytes passing now belong to a request head not yet seen.
    fn watching(&self) -> bool {
        !self.watch.seen.load(Relaxed)
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.watching() && buf.filled().len() > before {
            self.watch.read();
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.watching() {
            self.watch.wrote(buf);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.watching() {
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                self.watch.wrote(first);
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// The rest passes straight through to the stream, every method of each trait included (their
// defaults would hide what the stream knows).

#[async_trait]
impl Shutdown for WatchedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for WatchedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for WatchedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for WatchedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for WatchedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for WatchedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest);
    }
}

#[async_trait]
impl Peek for WatchedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> HeadWatch {
        HeadWatch {
            origin: Instant::now(),
            seen: AtomicBool::new(false),
            first_byte: AtomicU64::new(0),
            early_status: AtomicU16::new(0),
            socket: None,
        }
    }

    #[test]
    fn the_status_of_the_first_response_head_written_is_kept() {
        let w = watch();
        w.wrote(b"garbage");
        assert_eq!(w.early_status.load(Relaxed), 0);
        w.wrote(b"HTTP/1.1 400 Bad Request\r\n");
        w.wrote(b"HTTP/1.1 405 Method Not Allowed\r\n");
        assert_eq!(w.early_status.load(Relaxed), 400);
        w.begin();
        assert_eq!(w.early_status.load(Relaxed), 0);
    }

    #[test]
    fn the_first_byte_is_timed_once_per_request() {
        let w = watch();
        assert_eq!(w.first_byte(), None);
        w.read();
        let first = w.first_byte().expect("timed");
        w.read();
        assert_eq!(w.first_byte(), Some(first));
        w.begin();
        assert_eq!(w.first_byte(), None);
    }
}
