//! Fault injection: upstreams and clients that misbehave. For every fault the client gets the
//! right status or a clean close, the request leaves an access-log line and the right metric,
//! and afterwards no stream is counted open and the process holds no more file descriptors than
//! before.

mod common;

use std::time::{Duration, Instant};

use common::client::{self, Response};
use common::gateway::Gateway;
use common::upstream::{Behavior, RawEnd, Upstream};
use testkit::http::chunk;
use testkit::upstream::STREAM_HEAD;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `sse` (marked, `/sse`) and `plain` (everything else) on one upstream with a 1 s
/// `read_timeout`; `sse_options` are the marked route's `sse:` value.
fn config(peer: &str, sse_options: &str) -> String {
    [
        "upstreams:",
        "  up:",
        &format!("    peers: [{peer}]"),
        "    read_timeout: 1s",
        "routes:",
        "  - name: sse",
        "    match: { path_prefix: /sse }",
        "    upstream: up",
        &format!("    sse: {sse_options}"),
        "  - name: plain",
        "    match: { path_prefix: / }",
        "    upstream: up",
        "",
    ]
    .join("\n")
}

/// A gateway in front of `upstream`, and its file descriptor count once it is serving.
async fn gateway(upstream: &Upstream, sse_options: &str) -> (Gateway, usize) {
    let gw = Gateway::start(&config(&upstream.addr.to_string(), sse_options)).await;
    gw.scrape().await;
    let fds = gw.open_fds();
    (gw, fds)
}

fn sse_event(n: u64) -> Vec<u8> {
    chunk(format!("id: {n}\ndata: {n} 0\n\n"))
}

fn raw(pieces: Vec<Vec<u8>>, then: RawEnd) -> Behavior {
    Behavior::Raw {
        pieces: pieces.into_iter().map(|p| (Duration::ZERO, p)).collect(),
        then,
    }
}

/// Waits for an access-log line that contains every one of `parts`.
async fn assert_logged(gw: &Gateway, parts: &[&str]) {
    let logged = common::eventually(Duration::from_secs(3), || {
        gw.access_log()
            .iter()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    })
    .await;
    assert!(logged, "no access-log line with {parts:?}:\n{}", gw.log());
}

/// A request on `route` left an access-log line containing `logged` and counted 1 in the sample
/// that `metric` begins (a family and its label before `route`, e.g.
/// `ssegate_upstream_errors_total{kind="reset"`).
async fn assert_recorded(gw: &Gateway, route: &str, logged: &str, metric: &str) {
    assert_logged(gw, &[&format!("route={route} "), logged]).await;
    gw.expect_metric(&format!("{metric},route=\"{route}\"}}"), 1.0)
        .await;
}

/// No stream counted open and no file descriptor left over from the fault. Connections that
/// the upstream still sees open are idle ones in ssegate's keep-alive pool, not leaks.
async fn assert_nothing_leaked(gw: &Gateway, baseline_fds: usize, upstream: Option<&Upstream>) {
    for route in ["sse", "plain"] {
        gw.expect_metric(&format!("ssegate_streams_active{{route=\"{route}\"}}"), 0.0)
            .await;
    }
    let pooled = || upstream.map_or(0, Upstream::open_connections);
    let settled = common::eventually(Duration::from_secs(5), || {
        gw.open_fds() <= baseline_fds + pooled()
    })
    .await;
    assert!(
        settled,
        "ssegate holds {} fds, {baseline_fds} before the fault and {} pooled",
        gw.open_fds(),
        pooled()
    );
}

/// Reads events until the stream ends; `Err` if it ended without the chunked terminator.
async fn read_events(resp: &mut Response) -> (u64, std::io::Result<()>) {
    let mut events = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), resp.next_event()).await {
            Ok(Ok(Some(_))) => events += 1,
            Ok(Ok(None)) => return (events, Ok(())),
            Ok(Err(e)) => return (events, Err(e)),
            Err(_) => panic!("stream neither sent nor ended within 5 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_502_connect() {
    let gw = Gateway::start(&config(&common::dead_peer(), "true")).await;
    gw.scrape().await;
    let fds = gw.open_fds();
    for (path, route) in [("/sse", "sse"), ("/plain", "plain")] {
        let resp = client::get(gw.addr, path).await.unwrap();
        assert_eq!(resp.status, 502, "{path}");
        assert_recorded(
            &gw,
            route,
            "status=502",
            "ssegate_upstream_errors_total{kind=\"connect\"",
        )
        .await;
    }
    assert_nothing_leaked(&gw, fds, None).await;
}

/// An upstream that accepts and never answers gets 504 at its `read_timeout`, on a marked route
/// too: the header wait is bounded even where the stream body is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_never_answers_is_504_at_read_timeout() {
    let upstream = Upstream::start(Behavior::Silent).await;
    let (gw, fds) = gateway(&upstream, "true").await;
    for (path, route) in [("/plain", "plain"), ("/sse", "sse")] {
        let asked = Instant::now();
        let resp = client::get(gw.addr, path).await.unwrap();
        let took = asked.elapsed();
        assert_eq!(resp.status, 504, "{path}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{path}: 504 after {took:?}, read_timeout is 1 s"
        );
        assert_recorded(
            &gw,
            route,
            "status=504",
            "ssegate_upstream_errors_total{kind=\"timeout\"",
        )
        .await;
    }
    let upstream_closed =
        common::eventually(Duration::from_secs(3), || upstream.open_connections() == 0).await;
    assert!(
        upstream_closed,
        "the timed-out upstream connections are closed"
    );
    assert_nothing_leaked(&gw, fds, Some(&upstream)).await;
}

/// A reset after three events ends the client's response without the chunked terminator, so
/// the client knows the stream broke (an EventSource reconnects with its last id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_stream_breaks_the_client_response() {
    let pieces = vec![
        STREAM_HEAD.to_vec(),
        sse_event(1),
        sse_event(2),
        sse_event(3),
    ];
    let upstream = Upstream::start(raw(pieces, RawEnd::Reset)).await;
    let (gw, fds) = gateway(&upstream, "true").await;
    let mut resp = client::get(gw.addr, "/sse").await.unwrap();
    assert_eq!(resp.status, 200);
    let (events, end) = read_events(&mut resp).await;
    assert_eq!(events, 3);
    assert!(end.is_err(), "no clean end after a reset");
    assert_logged(&gw, &["route=sse ", "events=3 close=upstream_error"]).await;
    gw.expect_metric(
        "ssegate_stream_closed_total{reason=\"upstream_error\",route=\"sse\"}",
        1.0,
    )
    .await;
    gw.expect_metric(
        "ssegate_upstream_errors_total{kind=\"reset\",route=\"sse\"}",
        1.0,
    )
    .await;
    drop(resp);
    assert_nothing_leaked(&gw, fds, Some(&upstream)).await;
}

/// Closing without the chunked terminator is a broken body, not an end: on both paths the
/// client's response ends without one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_close_without_terminator_is_passed_on_as_broken() {
    let pieces = vec![STREAM_HEAD.to_vec(), sse_event(1), sse_event(2)];
    let upstream = Upstream::start(raw(pieces, RawEnd::Close)).await;
    let (gw, fds) = gateway(&upstream, "true").await;
    for (path, route) in [("/sse", "sse"), ("/plain", "plain")] {
        let mut resp = client::get(gw.addr, path).await.unwrap();
        assert_eq!(resp.status, 200);
        let (events, end) = read_events(&mut resp).await;
        assert_eq!(events, 2, "{path}");
        assert!(end.is_err(), "{path}: the client saw a clean end");
        assert_recorded(
            &gw,
            route,
            "close=upstream_error",
            "ssegate_stream_closed_total{reason=\"upstream_error\"",
        )
        .await;
    }
    assert_nothing_leaked(&gw, fds, Some(&upstream)).await;
}

/// Responses no HTTP/1.1 parser should accept get 502 and count as `reset` (the upstream broke
/// the exchange), on both paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_responses_are_502() {
    let long_header = format!(
        "HTTP/1.1 200 OK\r\nX-Long: {}\r\nContent-Length: 2\r\n\r\nok",
        "a".repeat(2 << 20)
    );
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "bad status line",
            b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
        ("not http", b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()),
        (
            "header without colon",
            b"HTTP/1.1 200 OK\r\nBroken header\r\n\r\n".to_vec(),
        ),
        ("2 MiB header", long_header.into_bytes()),
    ];
    for (case, response) in cases {
        let upstream = Upstream::start(raw(vec![response], RawEnd::Close)).await;
        let (gw, fds) = gateway(&upstream, "true").await;
        for (path, route) in [("/sse", "sse"), ("/plain", "plain")] {
            let resp = client::get(gw.addr, path).await.unwrap();
            assert_eq!(resp.status, 502, "{case} on {path}");
            let body = resp.text().await.unwrap();
            assert!(
                !body.contains(&upstream.addr.to_string()),
                "{case}: the error body names the peer: {body}"
            );
            assert_recorded(
                &gw,
                route,
                "status=502",
                "ssegate_upstream_errors_total{kind=\"reset\"",
            )
            .await;
        }
        assert_nothing_leaked(&gw, fds, Some(&upstream)).await;
    }
}

/// A marked stream may stay quiet far longer than the upstream's `read_timeout` (1 s here; 4 s
/// of silence proves the timeout is off, minutes would prove nothing more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_marked_stream_outlives_read_timeout() {
    let upstream = Upstream::start(Behavior::Raw {
        pieces: vec![
            (Duration::ZERO, [STREAM_HEAD, &sse_event(1)].concat()),
            (Duration::from_secs(4), sse_event(2)),
        ],
        then: RawEnd::Hold,
    })
    .await;
    let (gw, fds) = gateway(&upstream, "true").await;
    let mut resp = client::get(gw.addr, "/sse").await.unwrap();
    let first = resp.next_event().await.unwrap().expect("first event");
    let second = resp
        .next_event()
        .await
        .unwrap()
        .expect("event after 4 s of silence");
    assert_eq!((first.id, second.id), (1, 2));
    assert!(second.received_micros - first.received_micros >= 3_900_000);
    gw.expect_metric("ssegate_streams_active{route=\"sse\"}", 1.0)
        .await;
    gw.expect_metric(
        "ssegate_upstream_errors_total{kind=\"timeout\",route=\"sse\"}",
        0.0,
    )
    .await;
    drop(resp);
    assert_logged(&gw, &["route=sse ", "events=2 close=client_gone"]).await;
    assert_nothing_leaked(&gw, fds, Some(&upstream)).await;
}

/// On an unmarked route a body that stalls past `read_timeout` is cut: the header is already
/// sent, so the client sees the response end without its terminator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_plain_body_is_cut_at_read_timeout() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
    let upstream = Upstream::start(raw(vec![head.to_vec(), chunk("partial")], RawEnd::Hold)).await;
    let (gw, fds) = gateway(&upstream, "true").await;
    let asked = Instant::now();
    let resp = client::get(gw.addr, "/plain").await.unwrap();
    assert_eq!(resp.status, 200);
    let body = tokio::time::timeout(Duration::from_secs(5), resp.text())
        .await
        .expect("cut within 5 s");
    assert!(body.is_err(), "a cut body has no terminator");
    let took = asked.elapsed();
    assert!(took >= Duration::from_millis(900), "cut after {took:?}");
    assert_logged(&gw, &["route=plain ", "status=200"]).await;
    gw.expect_metric(
        "ssegate_upstream_errors_total{kind=\"timeout\",route=\"plain\"}",
        1.0,
    )
    .await;
    assert_nothing_leaked(&gw, fds, Some(&upstream)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_stream_closes_its_upstream() {
    let upstream = Upstream::start(Behavior::endless(Duration::from_millis(100))).await;
    let (gw, fds) = gateway(&upstream, "true").await;
    let mut resp = client::get(gw.addr, "/sse").await.unwrap();
    for _ in 0..3 {
        resp.next_event().await.unwrap().expect("event");
    }
    drop(resp);
    let closed =
        common::eventually(Duration::from_secs(3), || upstream.open_connections() == 0).await;
    assert!(closed, "the upstream connection outlived its client");
    assert_logged(&gw, &["route=sse ", "close=client_gone"]).await;
    gw.expect_metric(
        "ssegate_stream_closed_total{reason=\"client_gone\",route=\"sse\"}",
        1.0,
    )
    .await;
    assert_nothing_leaked(&gw, fds, Some(&upstream)).await;
}

/// Sends a GET for `path` and never reads the response. Its receive buffer is small, so the
/// kernel holds little of what the upstream sends.
async fn stalled_reader(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut socket = socket.connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    socket
}

/// A client that stops reading is dropped after the route's `write_timeout`, and its upstream
/// connection with it, instead of holding both forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_is_dropped_at_write_timeout() {
    let upstream = Upstream::start(Behavior::Flood { event_size: 4096 }).await;
    let (gw, fds) = gateway(&upstream, "{ write_timeout: 2s }").await;
    let stalled = stalled_reader(gw.addr, "/sse").await;
    gw.expect_metric("ssegate_streams_active{route=\"sse\"}", 1.0)
        .await;
    let dropped =
        common::eventually(Duration::from_secs(8), || upstream.open_connections() == 0).await;
    assert!(
        dropped,
        "the upstream of a client that reads nothing is still open after 8 s"
    );
    assert_logged(&gw, &["route=sse ", "close=client_gone"]).await;
    gw.expect_metric(
        "ssegate_stream_closed_total{reason=\"client_gone\",route=\"sse\"}",
        1.0,
    )
    .await;
    drop(stalled);
    assert_nothing_leaked(&gw, fds, Some(&upstream)).await;
}

/// 500 clients that read nothing while the upstream writes as fast as it can: ssegate stops
/// reading the upstream (back-pressure) instead of buffering, so its memory stays bounded and
/// the upstream's writes stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_back_pressure_the_upstream_instead_of_filling_memory() {
    const READERS: usize = 500;
    let upstream = Upstream::start(Behavior::Flood { event_size: 4096 }).await;
    upstream.pause_floods(true);
    let (gw, fds) = gateway(&upstream, "true").await;
    let rss_before = gw.rss_kib();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(stalled_reader(gw.addr, "/sse").await);
    }
    let all_open = common::eventually(Duration::from_secs(60), || {
        upstream.open_connections() == READERS
    })
    .await;
    assert!(
        all_open,
        "{} of {READERS} streams open",
        upstream.open_connections()
    );
    upstream.pause_floods(false);
    // Once every buffer on the way is full the upstream cannot write any more: it stalls,
    // writing less than 1 MiB in a whole second.
    let mut window = (Instant::now(), upstream.sent_bytes());
    let stalled = common::eventually(Duration::from_secs(120), || {
        let now = (Instant::now(), upstream.sent_bytes());
        if now.0 - window.0 < Duration::from_secs(1) {
            return false;
        }
        let stalled = now.1 - window.1 < 1 << 20;
        window = now;
        stalled
    })
    .await;
    assert!(
        stalled,
        "the upstream never stalled: it wrote {} MiB",
        upstream.sent_bytes() >> 20
    );
    let grown_kib = gw.rss_kib().saturating_sub(rss_before);
    let per_stream_kib = grown_kib / READERS as u64;
    println!(
        "{READERS} stalled readers: upstream wrote {} MiB and stalled; ssegate RSS grew {} MiB ({per_stream_kib} KiB per stream)",
        upstream.sent_bytes() >> 20,
        grown_kib >> 10
    );
    // Kernel socket buffers hold most of what the upstream wrote; ssegate's own share per
    // stream is its read-ahead of a few chunks and one write buffer.
    assert!(
        per_stream_kib < 256,
        "ssegate holds {per_stream_kib} KiB per stalled stream"
    );
    gw.expect_metric("ssegate_streams_active{route=\"sse\"}", READERS as f64)
        .await;
    drop(readers);
    assert_logged(&gw, &["route=sse ", "close=client_gone"]).await;
    assert_nothing_leaked(&gw, fds, Some(&upstream)).await;
}

/// Slowloris: clients that trickle their headers a byte at a time hold only their own
/// connections; everyone else is served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_do_not_starve_other_clients() {
    let upstream = Upstream::start(Behavior::Text("ok".to_string())).await;
    let (gw, fds) = gateway(&upstream, "true").await;
    let mut trickling = Vec::new();
    for _ in 0..200 {
        let mut socket = TcpStream::connect(gw.addr).await.unwrap();
        socket
            .write_all(b"GET /plain HTTP/1.1\r\nX-A: ")
            .await
            .unwrap();
        trickling.push(socket);
    }
    for round in 0..10 {
        for socket in &mut trickling {
            socket.write_all(b"a").await.unwrap();
        }
        let asked = Instant::now();
        let resp = client::get(gw.addr, "/plain").await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text().await.unwrap(), "ok");
        // A blocked server would hold it for Pingora's 60 s read timeout; 3 s leaves room for a
        // loaded machine.
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "round {round}: a normal request took {:?}",
            asked.elapsed()
        );
        // The trickle's pace is the attack under test: a byte per client every 200 ms.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(trickling);
    assert_nothing_leaked(&gw, fds, Some(&upstream)).await;
}

/// Reads from `socket` until it is closed or quiet for a second.
async fn read_all(socket: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), socket.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Pipelined requests (sent together, before any response) are answered in order, on both
/// paths; Pingora alone would answer the first and drop the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let short_stream = Behavior::Sse {
        interval: Duration::from_millis(10),
        count: Some(2),
        end: true,
    };
    let cases = [
        (Behavior::Text("ok".to_string()), "/plain", "route=plain "),
        (short_stream, "/sse", "route=sse "),
    ];
    for (behavior, path, route) in cases {
        let upstream = Upstream::start(behavior).await;
        let (gw, fds) = gateway(&upstream, "true").await;
        let mut socket = TcpStream::connect(gw.addr).await.unwrap();
        let request = |n| format!("GET {path}/{n} HTTP/1.1\r\nHost: test\r\n\r\n");
        let requests = [request(1), request(2), request(3)].concat();
        socket.write_all(requests.as_bytes()).await.unwrap();
        let answer = read_all(&mut socket).await;
        assert_eq!(
            answer.matches("HTTP/1.1 200").count(),
            3,
            "three answers to three pipelined requests on {path}:\n{answer}"
        );
        let targets: Vec<String> = upstream.proxied().into_iter().map(|r| r.target).collect();
        assert_eq!(targets, [1, 2, 3].map(|n| format!("{path}/{n}")));
        assert_logged(&gw, &[route, &format!("path=\"{path}/3\""), "status=200"]).await;
        drop(socket);
        assert_nothing_leaked(&gw, fds, Some(&upstream)).await;
    }
}
