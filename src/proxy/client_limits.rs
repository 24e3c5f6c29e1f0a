//! Limits on client connections that Pingora leaves open-ended.
//!
//! Out of the box a Pingora session lets a write to a client that reads nothing wait forever
//! (holding the upstream connection behind it), keeps an idle HTTP/1.1 connection open for as
//! long as the client likes, and answers only the first of several pipelined requests. ssegate
//! bounds the first two as nginx does (`send_timeout`, `keepalive_timeout`) and serves pipelined
//! requests in order, as RFC 9112 section 9.3.2 asks of a server.

use pingora_proxy::Session;

use crate::config::model::DEFAULT_CLIENT_WRITE_TIMEOUT;

/// Seconds an idle HTTP/1.1 client connection is kept open between requests.
pub(crate) const KEEPALIVE_TIMEOUT_SECS: u64 = 60;

/// Applies the connection limits to a request that has just been read. A marked route then
/// replaces the write timeout with its own `sse.write_timeout`.
pub(crate) fn apply(session: &mut Session) {
    session.set_write_timeout(Some(DEFAULT_CLIENT_WRITE_TIMEOUT));
    session.set_pipelining_enabled(true);
    // `Some(0)` is Pingora's "keep alive forever"; a client that asked to close keeps `None`.
    if session.get_keepalive() == Some(0) {
        session.set_keepalive(Some(KEEPALIVE_TIMEOUT_SECS));
    }
}
