//! SSE streams through the real binary: every event arrives as it is sent, requests reach the
//! upstream unchanged, and either side ending the stream ends the other promptly.

mod common;

use std::time::{Duration, Instant};

use common::client::{self, Response};
use common::gateway::Gateway;
use common::upstream::{Behavior, Upstream};

/// An event "arrives as it is sent" when it takes less than this through the proxy. A buffering
/// proxy holds events until the stream ends (seconds here), so this bound cannot pass by luck.
const STREAMING_BOUND: Duration = Duration::from_millis(50);

fn every_100ms(count: u64, end: bool) -> Behavior {
    Behavior::Sse {
        interval: Duration::from_millis(100),
        count: Some(count),
        end,
    }
}

fn config(upstream: &Upstream, sse: &str) -> String {
    let peer = upstream.addr;
    [
        "upstreams:",
        "  events:",
        &format!("    peers: [{peer}]"),
        "    read_timeout: 5s",
        "routes:",
        "  - name: stream",
        "    match: { path_prefix: /events }",
        "    upstream: events",
        sse,
        "  - name: plain",
        "    match: { path_prefix: / }",
        "    upstream: events",
        "",
    ]
    .join("\n")
}

async fn assert_events_stream(resp: &mut Response, count: u64) {
    for expected in 1..=count {
        let event = resp
            .next_event()
            .await
            .expect("read event")
            .unwrap_or_else(|| panic!("stream ended before event {expected}"));
        assert_eq!(event.id, expected, "events arrive in order");
        assert!(
            event.latency() < STREAMING_BOUND,
            "event {expected} took {:?} through the proxy",
            event.latency()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_route_streams_each_event_as_it_is_sent() {
    let upstream = Upstream::start(every_100ms(10, false)).await;
    let gw = Gateway::start(&config(&upstream, "    sse: true")).await;
    let mut resp = client::get(gw.addr, "/events").await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-accel-buffering"), Some("no"));
    assert_eq!(resp.header("cache-control"), Some("no-cache"));
    assert_eq!(resp.header("content-length"), None);
    assert_events_stream(&mut resp, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_stream_carries_body_and_last_event_id_unchanged() {
    let upstream = Upstream::start(every_100ms(5, true)).await;
    let gw = Gateway::start(&config(&upstream, "    sse: true")).await;
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi \u00e9"}],"stream":true}"#;
    let mut resp: Response = client::request(
        gw.addr,
        "POST",
        "/events/chat?x=1",
        &[
            ("Last-Event-ID", "abc-41"),
            ("Content-Type", "application/json"),
        ],
        Some(body),
    )
    .await
    .unwrap()
    .into();
    assert_eq!(resp.status, 200);
    assert_events_stream(&mut resp, 5).await;
    assert!(
        resp.next_event().await.unwrap().is_none(),
        "stream ends cleanly"
    );
    let seen = upstream.proxied();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].version, "HTTP/1.1");
    assert_eq!(seen[0].target, "/events/chat?x=1");
    assert_eq!(seen[0].body, body.to_vec());
    assert_eq!(seen[0].header("last-event-id"), Some("abc-41"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmarked_route_streams_event_stream_responses() {
    let upstream = Upstream::start(every_100ms(8, true)).await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    let mut resp = client::get(gw.addr, "/other").await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-accel-buffering"), Some("no"));
    assert_events_stream(&mut resp, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_framed_event_stream_is_reframed_and_streamed() {
    let upstream = Upstream::start(Behavior::SseWithLength {
        interval: Duration::from_millis(100),
        count: 6,
    })
    .await;
    let gw = Gateway::start(&config(&upstream, "    sse: true")).await;
    let mut resp = client::get(gw.addr, "/events").await.unwrap();
    assert_eq!(resp.header("content-length"), None, "length removed");
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_events_stream(&mut resp, 6).await;
    assert!(
        resp.next_event().await.unwrap().is_none(),
        "stream ends cleanly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_closes_the_upstream_connection_within_a_second() {
    let upstream = Upstream::start(Behavior::endless(Duration::from_secs(5))).await;
    let gw = Gateway::start(&config(&upstream, "    sse: true")).await;
    let mut resp = client::get(gw.addr, "/events").await.unwrap();
    resp.next_event().await.unwrap().expect("first event");
    assert_eq!(upstream.open_connections(), 1);
    let dropped = Instant::now();
    drop(resp);
    let closed =
        common::eventually(Duration::from_secs(3), || upstream.open_connections() == 0).await;
    assert!(
        closed,
        "upstream connection still open 3 s after the client left"
    );
    let took = upstream.closed()[0].duration_since(dropped);
    assert!(
        took < Duration::from_secs(1),
        "upstream closed after {took:?}"
    );
    let gone = common::eventually(Duration::from_secs(2), || {
        gw.access_log()
            .iter()
            .any(|l| l.contains("close=client_gone"))
    })
    .await;
    assert!(gone, "access log records the close:\n{}", gw.log());
    gw.expect_metric("ssegate_streams_active{route=\"stream\"}", 0.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_end_ends_the_client_response_cleanly() {
    let upstream = Upstream::start(every_100ms(3, true)).await;
    let gw = Gateway::start(&config(&upstream, "    sse: true")).await;
    let mut resp = client::get(gw.addr, "/events").await.unwrap();
    assert_events_stream(&mut resp, 3).await;
    let end = tokio::time::timeout(Duration::from_secs(2), resp.next_event())
        .await
        .expect("end of stream within 2 s");
    assert!(end.unwrap().is_none(), "chunked terminator received");
    let logged = common::eventually(Duration::from_secs(2), || {
        gw.access_log()
            .iter()
            .any(|l| l.contains("route=stream") && l.contains("events=3 close=upstream_end"))
    })
    .await;
    assert!(logged, "access log:\n{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_route_has_no_read_timeout_for_quiet_streams() {
    // read_timeout is 1 s on the upstream; a marked stream quiet for 2.5 s must survive it.
    let upstream = Upstream::start(Behavior::Sse {
        interval: Duration::from_millis(2500),
        count: Some(2),
        end: true,
    })
    .await;
    let body = config(&upstream, "    sse: true").replace("read_timeout: 5s", "read_timeout: 1s");
    let gw = Gateway::start(&body).await;
    let mut resp = client::get(gw.addr, "/events").await.unwrap();
    for id in 1..=2 {
        let event = resp
            .next_event()
            .await
            .unwrap()
            .expect("event after a quiet spell");
        assert_eq!(event.id, id);
    }
    assert!(resp.next_event().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_answers_503_with_retry_after_and_frees_slots() {
    let upstream = Upstream::start(Behavior::endless(Duration::from_secs(5))).await;
    let gw = Gateway::start(&config(&upstream, "    sse: { max_streams: 3 }")).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut resp = client::get(gw.addr, "/events").await.unwrap();
        resp.next_event()
            .await
            .unwrap()
            .expect("stream within the limit runs");
        open.push(resp);
    }
    let fourth = client::get(gw.addr, "/events").await.unwrap();
    assert_eq!(fourth.status, 503);
    assert_eq!(fourth.header("retry-after"), Some("1"));
    assert!(fourth.text().await.unwrap().contains("stream limit"));
    gw.expect_metric(
        "ssegate_requests_total{route=\"stream\",status=\"503\"}",
        1.0,
    )
    .await;
    drop(open.pop());
    gw.expect_metric("ssegate_streams_active{route=\"stream\"}", 2.0)
        .await;
    let mut again = client::get(gw.addr, "/events").await.unwrap();
    assert_eq!(again.status, 200);
    again
        .next_event()
        .await
        .unwrap()
        .expect("a freed slot admits a new stream");
}
