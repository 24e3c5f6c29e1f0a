//! Request headers on their way upstream: `X-Forwarded-*` set, hop-by-hop headers dropped
//! (see docs/security.md, "Headers").

use http::HeaderValue;
use pingora_core::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1), plus `Proxy-*`.
/// `Transfer-Encoding` is left alone: it frames the body that follows.
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "te", "upgrade", "trailer"];

/// The request's host: the `Host` header (HTTP/1.1) or the URI authority (HTTP/2).
pub(crate) fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// `X-Forwarded-For` appended, `X-Forwarded-Proto` and `X-Forwarded-Host` set.
pub(crate) fn add_forwarded(session: &Session, req: &mut RequestHeader) -> Result<()> {
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
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    req.insert_header("X-Forwarded-Proto", proto)?;
    // The client's own `Host` value is shared, not copied; HTTP/2 has `:authority` instead.
    let client_req = session.req_header();
    let host = match client_req.headers.get(http::header::HOST) {
        Some(host) => Some(host.clone()),
        None => client_req
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    if let Some(host) = host {
        req.insert_header("X-Forwarded-Host", host)?;
    }
    Ok(())
}

/// Makes a request (perhaps an HTTP/2 one) fit to send to an HTTP/1.1 peer: version 1.1, and a
/// `Host` header from the `:authority` where the request has none, as Pingora's proxy loop does.
pub(crate) fn to_http11(req: &mut RequestHeader) -> Result<()> {
    let authority = req.uri.authority().map(|a| a.as_str().to_owned());
    req.set_version(http::Version::HTTP_11);
    if let (false, Some(authority)) = (req.headers.contains_key(http::header::HOST), authority) {
        req.insert_header(http::header::HOST, authority)?;
    }
    Ok(())
}

/// Removes hop-by-hop headers, `Proxy-*` headers and every header the `Connection` header names.
pub(crate) fn strip_hop_by_hop(req: &mut RequestHeader) {
    let nominated: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        // `Connection` may not nominate the fields that say where and how much: those stay.
        .filter(|name| {
            ![
                "",
                "close",
                "keep-alive",
                "host",
                "content-length",
                "transfer-encoding",
            ]
            .contains(&name.as_str())
        })
        .collect();
    let doomed: Vec<_> = req
        .headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            HOP_BY_HOP.contains(&k) || k.starts_with("proxy-") || nominated.iter().any(|n| n == k)
        })
        .cloned()
        .collect();
    for name in doomed {
        req.remove_header(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/events", None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    fn names(req: &RequestHeader) -> Vec<String> {
        let mut names: Vec<String> = req.headers.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn hop_by_hop_and_proxy_headers_are_dropped_end_to_end_ones_kept() {
        let mut req = request(&[
            ("Host", "example.com"),
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "websocket"),
            ("Trailer", "X-Checksum"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Proxy-Connection", "keep-alive"),
            ("Accept", "text/event-stream"),
            ("Last-Event-ID", "41"),
            ("Transfer-Encoding", "chunked"),
        ]);
        strip_hop_by_hop(&mut req);
        assert_eq!(
            names(&req),
            ["accept", "host", "last-event-id", "transfer-encoding"]
        );
    }

    #[test]
    fn connection_removes_the_headers_it_names_but_not_host_or_framing() {
        let mut req = request(&[
            ("Host", "example.com"),
            ("Content-Length", "0"),
            ("Connection", "X-Trace, close"),
            (
                "Connection",
                " host ,Content-Length, transfer-encoding, x-debug",
            ),
            ("X-Trace", "abc"),
            ("X-Debug", "1"),
            ("X-Kept", "yes"),
        ]);
        strip_hop_by_hop(&mut req);
        assert_eq!(names(&req), ["content-length", "host", "x-kept"]);
    }

    #[test]
    fn an_http2_request_gets_http11_and_a_host_from_its_authority() {
        let mut req = RequestHeader::build("GET", b"/v1/chat", None).unwrap();
        req.set_uri(http::Uri::from_static("https://api.example.com/v1/chat"));
        req.set_version(http::Version::HTTP_2);
        to_http11(&mut req).unwrap();
        assert_eq!(req.version, http::Version::HTTP_11);
        assert_eq!(request_host(&req), Some("api.example.com"));
        assert_eq!(req.headers.get("host").unwrap(), "api.example.com");

        let mut with_host = request(&[("Host", "kept.example.com")]);
        to_http11(&mut with_host).unwrap();
        assert_eq!(with_host.headers.get_all("host").iter().count(), 1);
        assert_eq!(request_host(&with_host), Some("kept.example.com"));
    }
}
