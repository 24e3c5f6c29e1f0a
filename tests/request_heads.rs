//! Request heads: a head must be complete within the deadline (10 s) or its connection is
//! closed, however slowly its bytes trickle in; a kept-alive connection may idle longer than that
//! between requests; and heads that Pingora refuses before routing are counted and logged.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::gateway::Gateway;
use common::raw;
use common::upstream::{Behavior, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// ssegate's request-head deadline.
const HEAD_DEADLINE: Duration = Duration::from_secs(10);

async fn gateway(upstream: &Upstream) -> Gateway {
    Gateway::start(&format!(
        "upstreams:\n  u:\n    peers: [{}]\n\
         routes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n",
        upstream.addr
    ))
    .await
}

/// A slowloris client: opens a connection, then sends a request head a line at a time, one
/// line a second, never finishing it. Returns how long the connection lived, or `None` if it
/// was still open after `give_up`.
async fn trickle(addr: SocketAddr, give_up: Duration) -> Option<Duration> {
    let opened = Instant::now();
    let mut conn = TcpStream::connect(addr).await.ok()?;
    let mut line = 0u32;
    let mut buf = [0u8; 512];
    while opened.elapsed() < give_up {
        let piece = match line {
            0 => "GET / HTTP/1.1\r\nHost: slow\r\n".to_string(),
            n => format!("X-Slow-{n}: 1\r\n"),
        };
        line += 1;
        if conn.write_all(piece.as_bytes()).await.is_err() {
            return Some(opened.elapsed());
        }
        // The pause between lines is the client's behaviour, and also when it sees the close.
        match tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(opened.elapsed()),
            Ok(Ok(n)) => panic!(
                "a partial head got an answer: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
    None
}

/// 1 000 slowloris connections are each closed at the deadline, while ordinary requests on
/// other connections are answered as usual throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_heads_are_closed_at_the_deadline_and_others_are_served() {
    const SLOW: usize = 1_000;
    let upstream = Upstream::start(Behavior::Text("ok".into())).await;
    let gw = gateway(&upstream).await;
    let give_up = HEAD_DEADLINE * 3;
    let slow: Vec<_> = (0..SLOW)
        .map(|_| tokio::spawn(trickle(gw.addr, give_up)))
        .collect();

    // Ordinary requests while the slow ones hold their connections.
    let attack = Instant::now();
    let mut served = 0;
    let mut slowest = Duration::ZERO;
    while attack.elapsed() < HEAD_DEADLINE + Duration::from_secs(2) {
        let sent = Instant::now();
        let resp = common::client::get(gw.addr, "/plain")
            .await
            .expect("request");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text().await.expect("body"), "ok");
        slowest = slowest.max(sent.elapsed());
        served += 1;
    }

    let mut lived = Vec::new();
    for task in slow {
        lived.push(task.await.expect("slow client task"));
    }
    let open: usize = lived.iter().filter(|l| l.is_none()).count();
    assert_eq!(open, 0, "{open} slowloris connections outlived {give_up:?}");
    let mut lived: Vec<Duration> = lived.into_iter().flatten().collect();
    lived.sort();
    let (first, median, last) = (lived[0], lived[SLOW / 2], lived[SLOW - 1]);
    println!(
        "slowloris x{SLOW}: closed after {first:?} (first), {median:?} (median), {last:?} (last); \
         {served} ordinary requests meanwhile, slowest {slowest:?}"
    );
    assert!(
        first >= HEAD_DEADLINE - Duration::from_millis(100),
        "a slow head was closed early, after {first:?}"
    );
    // The deadline is checked on a timer of its own; only scheduling delays it.
    assert!(
        last < HEAD_DEADLINE + Duration::from_secs(5),
        "a slow head lived {last:?}"
    );
    // Far below the deadline: no ordinary request waited behind the slow ones.
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request {slowest:?}"
    );
    assert!(served > 10, "{served} requests served");
    gw.expect_metric("ssegate_request_head_timeouts_total", SLOW as f64)
        .await;
    // The access log is written at least once a second.
    let timed_out_lines = || {
        gw.access_log()
            .iter()
            .filter(|l| l.contains("status=0") && l.contains("request head not complete"))
            .count()
    };
    let logged = common::eventually(Duration::from_secs(5), || timed_out_lines() == SLOW).await;
    assert!(logged, "{} of {SLOW} timeouts logged", timed_out_lines());
}

/// A kept-alive connection idles between requests for longer than the head deadline (the
/// keep-alive timeout governs that), and its next request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_may_idle_past_the_head_deadline() {
    let upstream = Upstream::start(Behavior::Text("ok".into())).await;
    let gw = gateway(&upstream).await;
    let mut conn = TcpStream::connect(gw.addr).await.expect("connect");
    let request = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n";
    conn.write_all(request).await.expect("write");
    let first = read_response(&mut conn).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    let idle = HEAD_DEADLINE + Duration::from_secs(2);
    // Nothing must arrive while the connection idles; a close would show here.
    let mut buf = [0u8; 64];
    match tokio::time::timeout(idle, conn.read(&mut buf)).await {
        Err(_) => {}
        Ok(got) => panic!("idle kept-alive connection ended after {idle:?}: {got:?}"),
    }
    conn.write_all(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write after idling");
    let second = read_response(&mut conn).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    gw.expect_metric("ssegate_request_head_timeouts_total", 0.0)
        .await;
}

async fn read_response(conn: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while raw::parse_responses(&got).is_empty() {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).to_string()
}

/// Heads Pingora answers before any routing (a malformed header line, `CONNECT`) are counted
/// on the `unmatched` route with their status and get an access-log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_refused_before_routing_are_counted_and_logged() {
    let upstream = Upstream::start(Behavior::Text("ok".into())).await;
    let gw = gateway(&upstream).await;
    let quiet = Duration::from_millis(500);

    let malformed = raw::send(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
        quiet,
    )
    .await;
    assert_eq!(malformed.statuses(), [400], "{}", malformed.text());
    let connect = raw::send(
        gw.addr,
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        quiet,
    )
    .await;
    assert_eq!(connect.statuses(), [405], "{}", connect.text());

    gw.expect_metric(
        "ssegate_requests_total{route=\"unmatched\",status=\"400\"}",
        1.0,
    )
    .await;
    gw.expect_metric(
        "ssegate_requests_total{route=\"unmatched\",status=\"405\"}",
        1.0,
    )
    .await;
    for status in ["status=400", "status=405"] {
        let line = || {
            gw.access_log()
                .iter()
                .any(|l| l.contains(status) && l.contains("route=unmatched"))
        };
        let found = common::eventually(Duration::from_secs(5), line).await;
        assert!(
            found,
            "no {status} line in:\n{}",
            gw.access_log().join("\n")
        );
    }
    assert!(upstream.proxied().is_empty(), "{:?}", upstream.proxied());
    // A connection that closes without a byte is no request: nothing more is counted.
    drop(TcpStream::connect(gw.addr).await.expect("connect"));
    let resp = common::client::get(gw.addr, "/").await.expect("request");
    assert_eq!(resp.status, 200);
    gw.expect_metric("ssegate_requests_total{route=\"all\",status=\"200\"}", 1.0)
        .await;
    let logged = || {
        gw.access_log()
            .iter()
            .filter(|l| l.contains("route=all"))
            .count()
    };
    assert!(common::eventually(Duration::from_secs(5), || logged() == 1).await);
    let refused = gw
        .access_log()
        .iter()
        .filter(|l| l.contains("route=unmatched"))
        .count();
    assert_eq!(refused, 2, "{}", gw.access_log().join("\n"));
}
