//! Hostile requests, sent as raw bytes: request smuggling, malformed heads, path tricks, oversized
//! heads. For each: what the client gets back, what the upstream received, and that ssegate is
//! still serving afterwards.
//!
//! The test upstream reads a body by `Content-Length` before `Transfer-Encoding` — the order a
//! smuggling-prone backend uses — so if ssegate ever forwarded both, a hidden request would show
//! up in its log as a request of its own.
//!
//! What Pingora 0.9.1 does before any ssegate code runs (`pingora-core`
//! `protocols/http/v1/server.rs` `read_request` and `validate_request`, `authority.rs`; the proxy
//! answers its errors with an empty `400` and closes):
//! - `Content-Length` with `Transfer-Encoding`: CL is removed, the body is read chunked, and
//!   keep-alive is turned off for the connection (RFC 9112 §6.1);
//! - differing or unparsable `Content-Length`s, a final coding other than `chunked`, or
//!   `Transfer-Encoding` on HTTP/1.0: 400;
//! - a header line httparse rejects (space in or before the name, obs-fold, NUL in a value),
//!   more than 256 headers, or a head over 1 MiB: 400;
//! - control characters, spaces, `<`, `>` and `"` in the request target are percent-encoded,
//!   not rejected; a target longer than 65 534 bytes (the `http` crate's URI limit) is a 400;
//! - an absolute-form target whose authority is not byte-for-byte the `Host` header, two `Host`
//!   headers, or userinfo in either: 400. An absolute-form target is forwarded verbatim; for
//!   routing, its path is the URI's path and its authority is *not* set (only `Host` is used);
//! - any other target that does not start with `/` (`admin/x`, `a:b://h/x`, `?q`) gets the
//!   URI `/` for routing but is forwarded verbatim.

mod common;

use std::time::Duration;

use common::client;
use common::gateway::Gateway;
use common::raw::{self, End, Reply};
use common::upstream::{Behavior, Upstream};

/// How long to wait for more bytes once a response seems complete.
const QUIET: Duration = Duration::from_millis(1500);

/// A hidden request that no route serves: an upstream that ever receives it was smuggled to.
const HIDDEN: &str = "GET /admin HTTP/1.1\r\nHost: a\r\n\r\n";

struct Setup {
    gw: Gateway,
    /// Behind `/public` (no host) — a prefix route that must not be escaped.
    api: Upstream,
    /// Behind `/stream`, a marked route served by ssegate's relay rather than Pingora's loop.
    events: Upstream,
    /// Behind the exact path `/`.
    home: Upstream,
    /// Behind host `good.example` (any path).
    good: Upstream,
}

impl Setup {
    async fn start() -> Setup {
        let api = Upstream::start(Behavior::Text("api".into())).await;
        let events = Upstream::start(Behavior::Sse {
            interval: Duration::from_millis(10),
            count: Some(1),
            end: true,
        })
        .await;
        let home = Upstream::start(Behavior::Text("home".into())).await;
        let good = Upstream::start(Behavior::Text("good".into())).await;
        let gw = Gateway::start(&format!(
            "upstreams:
  api: {{ peers: [{}] }}
  events: {{ peers: [{}] }}
  home: {{ peers: [{}] }}
  good: {{ peers: [{}] }}
routes:
  - {{ name: public, match: {{ path_prefix: /public }}, upstream: api }}
  - {{ name: stream, match: {{ path_prefix: /stream }}, upstream: events, sse: true }}
  - {{ name: home, match: {{ path: / }}, upstream: home }}
  - {{ name: good, match: {{ host: good.example, path_prefix: / }}, upstream: good }}
",
            api.addr, events.addr, home.addr, good.addr
        ))
        .await;
        Setup {
            gw,
            api,
            events,
            home,
            good,
        }
    }

    async fn send(&self, request: &[u8]) -> Reply {
        raw::send(self.gw.addr, request, QUIET).await
    }

    /// Every request any upstream received (health checks aside), as `upstream target`.
    fn received(&self) -> Vec<String> {
        [
            ("api", &self.api),
            ("events", &self.events),
            ("home", &self.home),
            ("good", &self.good),
        ]
        .iter()
        .flat_map(|(name, up)| {
            up.proxied()
                .into_iter()
                .map(move |r| format!("{name} {}", r.target))
        })
        .collect()
    }

    /// No upstream saw the hidden `/admin` request, and ssegate still serves.
    async fn assert_nothing_smuggled(&self) {
        let received = self.received();
        assert!(
            !received.iter().any(|r| r.ends_with("/admin")),
            "{received:?}"
        );
        self.assert_still_serving().await;
    }

    /// ssegate still answers an ordinary request.
    async fn assert_still_serving(&self) {
        let resp = client::get(self.gw.addr, "/public/ok").await.unwrap();
        assert_eq!(resp.status, 200, "ssegate stopped serving");
        assert_eq!(resp.text().await.unwrap(), "api");
    }
}

/// The connection was refused: only 4xx answers (Pingora answers 400 and closes; a server that
/// stops reading may also reset the connection before the answer is read), and it was closed.
fn assert_refused(reply: &Reply, what: &str) {
    assert!(
        reply.statuses().iter().all(|s| (400..500).contains(s)),
        "{what}: expected a 4xx, got {:?}\n{}",
        reply.statuses(),
        reply.text()
    );
    assert_ne!(reply.end, End::Open, "{what}: connection left open");
}

/// CL.TE smuggling: a `Content-Length` that covers a hidden request after the chunked body's
/// terminator. A proxy that framed by `Content-Length` and a backend that framed by chunks (or
/// the reverse) would disagree on where the request ends, and the backend would run the hidden
/// request on a connection it shares with other clients. Expected: ssegate frames by chunks
/// only (RFC 9112 §6.3), forwards `Transfer-Encoding: chunked` without `Content-Length`,
/// answers once and closes the connection, so the hidden tail is never read as a request —
/// on Pingora's proxy path and on the relay of marked routes alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_is_framed_by_chunks_and_smuggles_nothing() {
    let s = Setup::start().await;
    for (path, upstream) in [("/public/x", &s.api), ("/stream", &s.events)] {
        let body = format!("0\r\n\r\n{HIDDEN}");
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
            body.len()
        );
        let reply = s.send(request.as_bytes()).await;
        assert_eq!(reply.statuses(), [200], "{path}:\n{}", reply.text());
        assert_eq!(reply.end, End::Closed, "{path}: keep-alive after CL+TE");
        let seen = upstream.proxied();
        assert_eq!(seen.len(), 1, "{path}: {seen:?}");
        assert_eq!(seen[0].target, path);
        assert_eq!(seen[0].header("transfer-encoding"), Some("chunked"));
        assert_eq!(
            seen[0].header("content-length"),
            None,
            "{path}: both framings forwarded"
        );
        assert!(seen[0].body.is_empty(), "{path}: {:?}", seen[0].body);
    }
    s.assert_nothing_smuggled().await;
}

/// TE.CL smuggling: a hidden request inside a chunk, with a short `Content-Length`. A backend
/// that framed by the `Content-Length` would take the rest of the chunk for a new request.
/// Expected: the hidden request reaches the upstream as body bytes only, framed by chunks, with
/// no `Content-Length` (the test upstream would split the body if it got one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_hidden_in_a_chunk_stays_body() {
    let s = Setup::start().await;
    for (path, upstream) in [("/public/x", &s.api), ("/stream", &s.events)] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n\
             {:x}\r\n{HIDDEN}\r\n0\r\n\r\n",
            HIDDEN.len()
        );
        let reply = s.send(request.as_bytes()).await;
        assert_eq!(reply.statuses(), [200], "{path}:\n{}", reply.text());
        let seen = upstream.proxied();
        assert_eq!(seen.len(), 1, "{path}: {seen:?}");
        assert_eq!(
            seen[0].header("content-length"),
            None,
            "{path}: both framings forwarded"
        );
        assert_eq!(String::from_utf8_lossy(&seen[0].body), HIDDEN, "{path}");
    }
    s.assert_nothing_smuggled().await;
}

/// Framing that two parsers could read two ways is refused, not guessed at: conflicting
/// `Content-Length`s, signed or listed ones, a `Transfer-Encoding` whose last coding is not
/// `chunked` (or is spelled so that some parsers ignore it), `Transfer-Encoding` on HTTP/1.0,
/// and malformed chunks. Expected: 400 (or a reset), the connection closed, nothing complete
/// reaches an upstream, and the proxy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused() {
    let s = Setup::start().await;
    let cases: [(&str, String); 10] = [
        (
            "two different Content-Lengths",
            "Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".into(),
        ),
        (
            "a Content-Length list that disagrees",
            "Content-Length: 4, 5\r\n\r\nabcde".into(),
        ),
        (
            "a signed Content-Length",
            "Content-Length: +4\r\n\r\nabcd".into(),
        ),
        (
            "a negative Content-Length",
            "Content-Length: -1\r\n\r\nabcd".into(),
        ),
        (
            "chunked not the final coding",
            "Transfer-Encoding: chunked, identity\r\nContent-Length: 4\r\n\r\nabcd".into(),
        ),
        (
            "an unknown coding",
            "Transfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\nabcd".into(),
        ),
        (
            "a space before the colon of Transfer-Encoding",
            "Transfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\nabcd".into(),
        ),
        (
            "a chunk size that overflows",
            "Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n".into(),
        ),
        (
            "chunk lines ended by a bare LF",
            format!("Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n{HIDDEN}"),
        ),
        (
            "a chunk longer than its size",
            format!("Transfer-Encoding: chunked\r\n\r\n1\r\nhello\r\n0\r\n\r\n{HIDDEN}"),
        ),
    ];
    for (what, rest) in &cases {
        let request = format!("POST /public/x HTTP/1.1\r\nHost: a\r\n{rest}");
        assert_refused(&s.send(request.as_bytes()).await, what);
    }
    let http10 =
        "POST /public/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_refused(
        &s.send(http10.as_bytes()).await,
        "Transfer-Encoding on HTTP/1.0",
    );
    assert!(s.received().is_empty(), "{:?}", s.received());
    s.assert_still_serving().await;
}

/// Identical duplicate `Content-Length`s are one unambiguous framing (RFC 9110 §8.6).
/// Expected: accepted; the upstream gets exactly that body, and every `Content-Length` it sees
/// says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_content_lengths_are_one_framing() {
    let s = Setup::start().await;
    let request =
        "POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\
                   Connection: close\r\n\r\nabcd";
    let reply = s.send(request.as_bytes()).await;
    assert_eq!(reply.statuses(), [200], "{}", reply.text());
    let seen = s.api.proxied();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"abcd");
    assert!(seen[0]
        .headers
        .iter()
        .filter(|(k, _)| k == "content-length")
        .all(|(_, v)| v == "4"));
}

/// Header lines that parsers disagree about — a space inside or before the name, an obsolete
/// line fold, a NUL in a value, a line without a colon — are how a header hides from one parser
/// and not another (e.g. `Transfer-Encoding : chunked`). Expected: 400 and close; nothing
/// reaches an upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_header_lines_are_refused() {
    let s = Setup::start().await;
    for (what, line) in [
        ("a space in a header name", "Foo Bar: x\r\n"),
        ("a space before the colon", "Foo : x\r\n"),
        ("a tab before the colon", "Foo\t: x\r\n"),
        ("an obsolete line fold", "Foo: x\r\n bar\r\n"),
        ("a NUL in a value", "Foo: a\0b\r\n"),
        ("a line without a colon", "Foo\r\n"),
        ("an empty header name", ": x\r\n"),
    ] {
        let request = format!("GET /public/x HTTP/1.1\r\nHost: a\r\n{line}\r\n");
        assert_refused(&s.send(request.as_bytes()).await, what);
    }
    assert!(s.received().is_empty(), "{:?}", s.received());
    s.assert_still_serving().await;
}

/// An absolute-form target names a host of its own. If routing used one host and the upstream
/// (or a cache) another, a request could be routed as `good` and served as `evil`, or the
/// reverse. Expected: a target whose authority differs from `Host` (even only by an explicit
/// port), two `Host` headers, or userinfo are refused with 400; a matching one is routed by
/// that host; an authority without a `Host` header is not trusted for routing (400, as any
/// HTTP/1.1 request without `Host`); nothing reaches an upstream but the one request that
/// matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_cannot_pick_another_host() {
    let s = Setup::start().await;
    for (what, head) in [
        (
            "authority differs from Host",
            "GET http://evil.example/admin HTTP/1.1\r\nHost: good.example\r\n",
        ),
        (
            "Host differs from authority",
            "GET http://good.example/admin HTTP/1.1\r\nHost: evil.example\r\n",
        ),
        (
            "authority with an explicit port",
            "GET http://good.example:80/admin HTTP/1.1\r\nHost: good.example\r\n",
        ),
        (
            "userinfo in the target",
            "GET http://evil.example@good.example/admin HTTP/1.1\r\nHost: good.example\r\n",
        ),
        (
            "userinfo in Host",
            "GET /admin HTTP/1.1\r\nHost: evil.example@good.example\r\n",
        ),
        (
            "two Host headers",
            "GET /admin HTTP/1.1\r\nHost: good.example\r\nHost: evil.example\r\n",
        ),
    ] {
        assert_refused(&s.send(format!("{head}\r\n").as_bytes()).await, what);
    }
    assert!(s.received().is_empty(), "{:?}", s.received());

    // Without a Host header the target's authority does not route: Pingora keeps an
    // absolute-form authority out of the request's URI, so ssegate sees an HTTP/1.1 request
    // with no host at all and refuses it with 400, before any routing.
    let reply = s
        .send(b"GET http://good.example/admin HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(reply.statuses(), [400], "{}", reply.text());
    assert!(s.good.proxied().is_empty());

    // A matching one is routed by its host; the upstream gets the target as sent.
    let reply = s
        .send(b"GET http://good.example/admin HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(reply.statuses(), [200], "{}", reply.text());
    assert_eq!(reply.responses[0].body_text(), "good");
    let seen = s.good.proxied();
    assert_eq!(seen.len(), 1);
    assert!(
        ["/admin", "http://good.example/admin"].contains(&seen[0].target.as_str()),
        "{}",
        seen[0].target
    );
    assert_eq!(seen[0].header("host"), Some("good.example"));
    s.assert_still_serving().await;
}

/// A `Host` that matches no host route must not fall through to some default upstream: that
/// would expose an internal service to anyone who sends a made-up or look-alike host. Expected:
/// 404 with nothing forwarded, unless a route without `host` matches the path (here `/public`),
/// which by definition serves every host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_matches_no_route_is_a_404() {
    let s = Setup::start().await;
    for host in [
        "evil.example",
        "good.example.evil.example",
        "xgood.example",
        "evil.example#good.example",
        "good.example evil",
        "good.example/evil",
        "",
    ] {
        let request = format!("GET /admin HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let reply = s.send(request.as_bytes()).await;
        assert_eq!(reply.statuses(), [404], "Host {host:?}:\n{}", reply.text());
        assert!(reply.responses[0].body_text().contains("no route"));
    }
    assert!(s.received().is_empty(), "{:?}", s.received());
    // The host route's own spellings still reach it.
    for host in [
        "good.example",
        "GOOD.Example",
        "good.example.",
        "good.example:8080",
    ] {
        let request = format!("GET /admin HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let reply = s.send(request.as_bytes()).await;
        assert_eq!(reply.statuses(), [200], "Host {host:?}");
        assert_eq!(reply.responses[0].body_text(), "good");
    }
    // A route without a host serves any host.
    let reply = s
        .send(b"GET /public/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(reply.statuses(), [200]);
    assert_eq!(reply.responses[0].body_text(), "api");
}

/// Dot segments in every spelling an upstream might resolve: `/public/../admin` matches the
/// prefix route `/public` and an upstream that normalises the path serves `/admin`, outside the
/// route. ssegate refuses them rather than routing them (a normalised path would still reach
/// upstreams that read the raw path differently). Covered: plain, percent-encoded in either
/// case and half-encoded, encoded twice (`%252e`), in absolute-form, on the relay path, and the spellings lenient
/// servers also resolve: `..;` (Tomcat, Spring), `..%2f`, `..%5c`, `..\`. Expected: 400 and
/// nothing forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_cannot_escape_a_prefix_route() {
    let s = Setup::start().await;
    let head = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: good.example\r\n\r\n");
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/.%2e/admin",
        "/public/%2e./admin",
        "/public/./x",
        "/public/..",
        "/public/x/../../admin",
        "/public/..?x=1",
        "/stream/../admin",
        "http://good.example/public/../admin",
        "/public/..;/admin",
        "/public/..;x=1/admin",
        "/public/..%2fadmin",
        "/public/%2e%2e%2Fadmin",
        "/public/..%5cadmin",
        "/public/..\\admin",
        "/public/%252e%252e/admin",
        "/public/%252E%252e%252fadmin",
    ] {
        let reply = s.send(head(target).as_bytes()).await;
        assert_eq!(reply.statuses(), [400], "{target}:\n{}", reply.text());
        assert!(
            reply.responses[0].body_text().contains("dot segments"),
            "{target}: {}",
            reply.text()
        );
    }
    assert!(s.received().is_empty(), "{:?}", s.received());
    // Dots that are not whole segments are ordinary names.
    for target in ["/public/..x", "/public/a..b/c.txt", "/public/x?y=/../"] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert_eq!(
            s.send(request.as_bytes()).await.statuses(),
            [200],
            "{target}"
        );
    }
}

/// Pingora routes any target that is neither origin-form (`/…`) nor absolute-form as if it were
/// `/`, yet forwards it verbatim: `x/../admin` passes the dot-segment check (which sees `/`),
/// matches the exact route `/`, and reaches that route's upstream, which may well resolve it to
/// `/admin`. Expected: 400 and nothing forwarded (RFC 9112 §3.2: only `CONNECT` uses
/// authority-form and only `OPTIONS` asterisk-form).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_not_in_origin_form_are_refused() {
    let s = Setup::start().await;
    for (target, host) in [
        ("admin/secret", "a"),
        ("x/../admin", "a"),
        ("foo:bar://good.example/admin", "good.example"),
        ("ftp://good.example/admin", "good.example"),
        ("?x=1", "a"),
        ("good.example:80", "good.example:80"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let reply = s.send(request.as_bytes()).await;
        assert_eq!(
            reply.statuses(),
            [400],
            "{target} was routed; upstreams received {:?}",
            s.received()
        );
    }
    assert!(s.received().is_empty(), "{:?}", s.received());
    s.assert_still_serving().await;
}

/// Control characters in the request line are how a header is injected into the proxy's
/// request to the upstream (`/x\rX-Injected: 1`) or a log line is forged. Expected: a line
/// feed ends the request line, so the request is malformed (400); every other control byte,
/// space or quote is percent-encoded by Pingora before routing, so the upstream gets a target
/// with no raw control bytes and no injected header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_the_target_never_reach_the_upstream_raw() {
    let s = Setup::start().await;
    let refused = s
        .send(b"GET /public/a\nX-Injected: 1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    assert_refused(&refused, "LF in the target");
    for target in [
        &b"/public/a\0b"[..],
        b"/public/a\x01b",
        b"/public/a\x7fb",
        b"/public/a\rX-Injected: 1",
        b"/public/a b",
        b"/public/a\"<b>",
    ] {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let reply = s.send(&request).await;
        let shown = String::from_utf8_lossy(target);
        assert!(
            matches!(reply.statuses()[..], [200] | [400]),
            "{shown:?}: {}",
            reply.text()
        );
    }
    for seen in s.api.proxied() {
        assert!(
            !seen
                .target
                .bytes()
                .any(|b| b < 0x21 || b == 0x7f || b == b'"' || b == b'<'),
            "raw byte forwarded: {:?}",
            seen.target
        );
        assert_eq!(seen.header("x-injected"), None, "header injected: {seen:?}");
    }
    s.assert_still_serving().await;
}

/// A head with thousands of headers costs the proxy memory and parse time per request, and some
/// upstreams crash on it. Expected: more than Pingora's 256 headers is a 400 (or a reset, if
/// ssegate closes while the client is still writing), nothing is forwarded, and ssegate keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_are_refused() {
    let s = Setup::start().await;
    for count in [300, 10_000] {
        let headers: String = (0..count).map(|i| format!("X-H{i}: v\r\n")).collect();
        let request = format!("GET /public/x HTTP/1.1\r\nHost: a\r\n{headers}\r\n");
        assert_refused(
            &s.send(request.as_bytes()).await,
            &format!("{count} headers"),
        );
    }
    assert!(s.received().is_empty(), "{:?}", s.received());
    s.assert_still_serving().await;
}

/// An over-long header is a memory lever on the proxy. Pingora refuses a head over 1 MiB
/// (400, or a reset while the client is still writing) and accepts anything under it:
/// a 100 KB header is forwarded intact, for the upstream to judge. Either way ssegate keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_header_is_refused_past_pingoras_limit() {
    let s = Setup::start().await;
    let big = "a".repeat(100 * 1024);
    let request =
        format!("GET /public/x HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let reply = s.send(request.as_bytes()).await;
    assert_eq!(reply.statuses(), [200], "100 KB header");
    assert_eq!(s.api.proxied()[0].header("x-big"), Some(big.as_str()));

    let huge = "a".repeat(2 * 1024 * 1024);
    let request = format!("GET /public/y HTTP/1.1\r\nHost: a\r\nX-Big: {huge}\r\n\r\n");
    assert_refused(&s.send(request.as_bytes()).await, "2 MiB header");
    assert_eq!(s.api.proxied().len(), 1, "the 2 MiB header was forwarded");
    s.assert_still_serving().await;
}

/// An over-long request target is refused once it passes the `http` crate's URI limit
/// (65 534 bytes); below it, the target is forwarded intact. Expected: 400 for 70 000 bytes,
/// 200 with the target unchanged for 60 000, and ssegate keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_target_is_refused() {
    let s = Setup::start().await;
    let long = format!("/public/{}", "a".repeat(70_000));
    let request = format!("GET {long} HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_refused(&s.send(request.as_bytes()).await, "70 000-byte target");
    assert!(s.received().is_empty());

    let fits = format!("/public/{}", "a".repeat(60_000));
    let request = format!("GET {fits} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(s.send(request.as_bytes()).await.statuses(), [200]);
    assert_eq!(s.api.proxied()[0].target, fits);
    s.assert_still_serving().await;
}

/// When ssegate refuses a request itself (400 for a dot segment, 404 for no route) it has not
/// read the body; if it then read on, the body would be parsed as the next request, which is
/// smuggling through the error path. Expected: one answer, the connection closed, and the
/// request hidden in the body never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_of_a_refused_request_is_never_read_as_a_request() {
    let s = Setup::start().await;
    let hidden = "GET /public/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    for (target, status) in [("/public/../x", 400), ("/nowhere", 404)] {
        let request = format!(
            "POST {target} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{hidden}",
            hidden.len()
        );
        let reply = s.send(request.as_bytes()).await;
        assert_eq!(reply.statuses(), [status], "{target}:\n{}", reply.text());
        assert_eq!(reply.end, End::Closed, "{target}");
    }
    assert!(s.received().is_empty(), "{:?}", s.received());
    s.assert_still_serving().await;
}

/// RFC 9112 section 3.2: a server must answer 400 to an HTTP/1.1 request without `Host`.
/// Forwarding it would let a client reach an upstream's default virtual host, which routing by
/// host was meant to keep it from. HTTP/1.0 requests have no `Host` requirement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_request_without_host_is_refused() {
    let s = Setup::start().await;
    let reply = s
        .send(b"GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(reply.statuses(), [400], "{}", reply.text());
    assert!(s.received().is_empty(), "{:?}", s.received());
    let reply = s.send(b"GET /public/x HTTP/1.0\r\n\r\n").await;
    assert_eq!(reply.statuses(), [200], "HTTP/1.0: {}", reply.text());
    s.assert_still_serving().await;
}
