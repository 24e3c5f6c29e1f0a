//! Responses ssegate writes itself, short plain text naming the route and the reason, never an
//! internal address or a stack:
//! - 400: a request target refused before routing, or a malformed request;
//! - 404: no route matches;
//! - 408: the client was too slow to send its request;
//! - 500: an internal error;
//! - 502: no peer could be connected to, or the upstream reset or sent an invalid response;
//! - 503: the route's `max_streams` is reached (with `Retry-After`), or no peer is healthy;
//! - 504: the upstream did not answer within `read_timeout`;
//! - any other status a Pingora error carries (`HTTPStatus`).
//!
//! Which error gets which status is [`super::failure::classify`].

use bytes::Bytes;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Writes an error response. `route` is `None` when no route matched.
pub(crate) async fn send_error(
    session: &mut Session,
    status: u16,
    route: Option<&str>,
    reason: &str,
    retry_after_secs: Option<u64>,
) -> Result<()> {
    let canonical = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = match route {
        Some(route) => format!("{status} {canonical}: route {route}: {reason}\n"),
        None => format!("{status} {canonical}: {reason}\n"),
    };
    let mut resp = ResponseHeader::build(status, Some(5))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    if let Some(secs) = retry_after_secs {
        resp.insert_header(http::header::RETRY_AFTER, secs)?;
    }
    // The request body may be unread; do not try to reuse the connection.
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}
