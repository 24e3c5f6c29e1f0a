//! What a finished request reports: its request metrics and its access-log line.
//!
//! Requests end in two places: Pingora's `logging` phase, and the relay's own task for a stream
//! whose client connection it took over (see [`crate::proxy::relay`]). Both end through [`Report`], so
//! both count and log alike.

use std::net::SocketAddr;
use std::time::Instant;

use pingora_core::Error;

use crate::observe::access_log;
use crate::observe::metrics::{CloseReason, RouteMetrics};
use crate::proxy::failure;
use crate::sse::stream::StreamMeter;
use crate::upstream::{PeerStream, Tried};

/// What serving a request produced, besides the response: the peer it went to, the peers it
/// failed to connect to first, and, for a stream, its meter and its place in the peer's count.
#[derive(Default)]
pub(crate) struct Served {
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) tried: Tried,
    pub(crate) stream: Option<StreamMeter>,
    pub(crate) peer_stream: Option<PeerStream>,
}

/// The request as the access log names it.
pub(crate) struct RequestLine<'a> {
    pub(crate) client: Option<String>,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
}

/// One finished request.
pub(crate) struct Report<'a> {
    pub(crate) metrics: &'a RouteMetrics,
    /// The status sent, or `None` when no response could be sent.
    pub(crate) status: Option<u16>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) arrived: Instant,
    /// Response body bytes sent to the client.
    pub(crate) bytes: usize,
    /// For a stream: events sent and why it closed.
    pub(crate) stream: Option<(u64, CloseReason)>,
    pub(crate) error: Option<&'a Error>,
}

impl Report<'_> {
    /// Counts the request in the metrics and writes its access-log line; `line` is only asked
    /// for when the access log is on.
    pub(crate) fn emit<'l>(&self, line: impl FnOnce() -> RequestLine<'l>) {
        if let Some(status) = self.status {
            self.metrics.response(status);
        }
        if let Some(kind) = self.error.and_then(|e| failure::classify(e).upstream_kind) {
            self.metrics.upstream_error(kind);
        }
        if self.stream.is_none() && self.status.is_some() {
            self.metrics
                .request_duration
                .observe(self.arrived.elapsed().as_secs_f64());
        }
        if access_log::enabled() {
            let line = line();
            access_log::write(&access_log::Entry {
                client: line.client,
                method: line.method,
                path: line.path,
                route: self.metrics.name(),
                status: self.status,
                peer: self.peer,
                duration: self.arrived.elapsed(),
                bytes: self.bytes,
                stream: self
                    .stream
                    .map(|(events, reason)| (events, reason.as_str())),
                error: self.error.map(|e| e.to_string()),
            });
        }
    }
}

/// Why a stream ended, from how its relay or proxy loop ended: the drain or `max_lifetime` if it
/// ended the stream, else the error if there was one, else the reason recorded while it ran, else the
/// upstream ended it.
pub(crate) fn close_reason(error: Option<&Error>, recorded: Option<CloseReason>) -> CloseReason {
    match (error, recorded) {
        (_, Some(reason @ (CloseReason::Drain | CloseReason::MaxLifetime))) => reason,
        (Some(e), _) => failure::close_reason(Some(e)),
        (None, Some(reason)) => reason,
        (None, None) => CloseReason::UpstreamEnd,
    }
}
