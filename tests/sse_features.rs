//! The options of routes marked `sse`, through the real binary: heartbeats on quiet streams,
//! the idle timeout, `max_lifetime`, and the drain of open streams on graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::client::{self, Response};
use common::gateway::Gateway;
use common::upstream::{Behavior, Upstream};

const HEARTBEAT: &str = ": keepalive\n\n";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn route(upstream: &Upstream, sse: &str) -> String {
    format!(
        "upstreams:\n  events:\n    peers: [{}]\n\
         routes:\n  - {{ name: events, match: {{ path_prefix: / }}, upstream: events, sse: {sse} }}\n",
        upstream.addr
    )
}

/// Reads body chunks for up to `duration` (or until the body ends), with their arrival times
/// relative to `start`. The second value says whether the body ended cleanly.
async fn collect(
    resp: &mut Response,
    start: Instant,
    duration: Duration,
) -> (Vec<(Duration, String)>, bool) {
    let mut chunks = Vec::new();
    let deadline = start + duration;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, resp.next_chunk()).await {
            Err(_) => return (chunks, false),
            Ok(Ok(Some(chunk))) => {
                chunks.push((start.elapsed(), String::from_utf8_lossy(&chunk).to_string()))
            }
            Ok(Ok(None)) => return (chunks, true),
            Ok(Err(e)) => panic!("stream broke: {e}; got {chunks:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_fill_quiet_spells_but_never_split_an_event() {
    // One event, 3.5 s of silence, then an event sent in two halves 2.5 s apart.
    let upstream = Upstream::start(Behavior::Script {
        pieces: vec![
            (ms(0), "data: one\n\n"),
            (ms(3500), "data: par"),
            (ms(2500), "tial\n\n"),
        ],
        end: false,
    })
    .await;
    let gw = Gateway::start(&route(&upstream, "{ heartbeat: 1s }")).await;
    let start = Instant::now();
    let mut resp = client::get(gw.addr, "/").await.unwrap();
    let (chunks, ended) = collect(&mut resp, start, ms(8500)).await;
    assert!(!ended, "the stream stays open");

    let at = |text: &str| {
        chunks
            .iter()
            .find(|(_, c)| c.contains(text))
            .map(|(t, _)| *t)
    };
    let half = at("data: par").expect("first half of the split event");
    let rest = at("tial").expect("second half of the split event");
    let beats: Vec<Duration> = chunks
        .iter()
        .filter(|(_, c)| c == HEARTBEAT)
        .map(|(t, _)| *t)
        .collect();
    assert!(
        beats.iter().all(|t| *t < half || *t > rest),
        "a heartbeat landed inside the split event: {chunks:?}"
    );
    let before: Vec<_> = beats.iter().filter(|t| **t < half).collect();
    assert!(
        before.len() >= 2,
        "heartbeats during 3.5 s of silence: {chunks:?}"
    );
    for pair in before.windows(2) {
        let gap = *pair[1] - *pair[0];
        assert!(
            gap > ms(500) && gap < ms(2000),
            "heartbeat gap {gap:?}: {chunks:?}"
        );
    }
    assert!(
        beats.iter().any(|t| *t > rest),
        "heartbeats resume after the event: {chunks:?}"
    );
    let body: String = chunks.iter().map(|(_, c)| c.as_str()).collect();
    assert!(body.contains("data: partial\n\n"), "{body:?}");
    drop(resp); // no more heartbeats after the count below is taken
    gw.expect_metric(
        "ssegate_stream_heartbeats_total{route=\"events\"}",
        beats.len() as f64,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_ends_the_stream_despite_heartbeats() {
    let upstream = Upstream::start(Behavior::Script {
        pieces: vec![(ms(0), "data: one\n\n")],
        end: false,
    })
    .await;
    let gw = Gateway::start(&route(&upstream, "{ idle_timeout: 1s, heartbeat: 300ms }")).await;
    let start = Instant::now();
    let mut resp = client::get(gw.addr, "/").await.unwrap();
    let (chunks, ended) = collect(&mut resp, start, ms(5000)).await;
    assert!(ended, "the stream ended cleanly: {chunks:?}");
    let end = start.elapsed();
    assert!(end > ms(900) && end < ms(2500), "ended after {end:?}");
    assert!(
        chunks.iter().any(|(_, c)| c == HEARTBEAT),
        "heartbeats were sent: {chunks:?}"
    );
    let closed =
        common::eventually(Duration::from_secs(2), || upstream.open_connections() == 0).await;
    assert!(closed, "the upstream connection was closed");
    gw.expect_metric(
        "ssegate_stream_closed_total{reason=\"idle_timeout\",route=\"events\"}",
        1.0,
    )
    .await;
    gw.expect_metric("ssegate_streams_active{route=\"events\"}", 0.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_on_marked_routes_get_the_same_statuses() {
    let dead = common::dead_peer();
    let silent = Upstream::start(Behavior::Silent).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  dead:\n    peers: [{dead}]\n  silent:\n    peers: [{}]\n    read_timeout: 500ms\n\
         routes:\n  - {{ name: dead, match: {{ path_prefix: /dead }}, upstream: dead, sse: true }}\n  \
         - {{ name: silent, match: {{ path_prefix: /silent }}, upstream: silent, sse: {{ idle_timeout: 1h }} }}\n",
        silent.addr
    ))
    .await;
    let resp = client::get(gw.addr, "/dead").await.unwrap();
    assert_eq!(resp.status, 502);
    assert!(resp.text().await.unwrap().contains("route dead"));
    let resp = client::get(gw.addr, "/silent").await.unwrap();
    assert_eq!(resp.status, 504);
    gw.expect_metric(
        "ssegate_upstream_errors_total{kind=\"timeout\",route=\"silent\"}",
        1.0,
    )
    .await;
}

const QUICK_SHUTDOWN: &str = "  grace_period_seconds: 2\n  graceful_shutdown_timeout_seconds: 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_quiet_stream_with_retry_and_lets_short_streams_finish() {
    let quiet = Upstream::start(Behavior::Script {
        pieces: vec![(ms(0), "id: 1\ndata: one\n\n")],
        end: false,
    })
    .await;
    let finishing = Upstream::start(Behavior::Sse {
        interval: ms(200),
        count: Some(3),
        end: true,
    })
    .await;
    let mut gw = Gateway::start_with(
        QUICK_SHUTDOWN,
        &format!(
            "upstreams:\n  quiet:\n    peers: [{}]\n  finishing:\n    peers: [{}]\n\
             routes:\n  - {{ name: quiet, match: {{ path_prefix: /quiet }}, upstream: quiet, sse: true }}\n  \
             - {{ name: finishing, match: {{ path_prefix: /finishing }}, upstream: finishing, sse: true }}\n",
            quiet.addr, finishing.addr
        ),
    )
    .await;
    let mut quiet_resp = client::get(gw.addr, "/quiet").await.unwrap();
    quiet_resp.next_chunk().await.unwrap().expect("first event");
    let mut short = client::get(gw.addr, "/finishing").await.unwrap();

    let signalled = Instant::now();
    gw.signal("TERM");
    let (chunks, ended) = collect(&mut quiet_resp, signalled, ms(4000)).await;
    assert!(ended, "the quiet stream was ended cleanly: {chunks:?}");
    let took = signalled.elapsed();
    assert!(took < ms(2000), "quiet stream ended {took:?} after SIGTERM");
    let body: String = chunks.iter().map(|(_, c)| c.as_str()).collect();
    let retry: u64 = body
        .strip_prefix("retry: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected only a retry block, got {body:?}"));
    assert!((1000..=3000).contains(&retry), "retry {retry}");

    let mut ids = Vec::new();
    while let Some(event) = short.next_event().await.unwrap() {
        ids.push(event.id);
    }
    assert_eq!(
        ids,
        vec![1, 2, 3],
        "a stream that ends by itself is not cut"
    );

    let exited = gw.wait_exit(Duration::from_secs(8)).await;
    assert!(exited.is_some(), "ssegate exited after its grace period");
    let log = gw.access_log().join("\n");
    assert!(
        log.contains("route=quiet") && log.contains("close=drain"),
        "{log}"
    );
    assert!(
        log.contains("route=finishing") && log.contains("events=3 close=upstream_end"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_the_event_in_flight_to_complete() {
    // The upstream is in the middle of an event when the drain deadline passes.
    let upstream = Upstream::start(Behavior::Script {
        pieces: vec![
            (ms(0), "data: one\n\n"),
            (ms(300), "data: par"),
            (ms(1500), "tial\n\n"),
        ],
        end: false,
    })
    .await;
    let mut gw = Gateway::start_with(QUICK_SHUTDOWN, &route(&upstream, "true")).await;
    let start = Instant::now();
    let mut resp = client::get(gw.addr, "/").await.unwrap();
    let mut body = String::new();
    while !body.contains("data: par") {
        let chunk = resp.next_chunk().await.unwrap().expect("upstream data");
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    gw.signal("TERM");
    let (chunks, ended) = collect(&mut resp, start, ms(5000)).await;
    assert!(ended, "{chunks:?}");
    body.extend(chunks.iter().map(|(_, c)| c.clone()));
    let retry_at = body.find("retry: ").expect("a retry line");
    assert!(
        body[..retry_at].ends_with("data: partial\n\n"),
        "retry came before the event in flight completed: {body:?}"
    );
    gw.wait_exit(Duration::from_secs(8)).await;
}

/// A `text/event-stream` response on a route not marked `sse` goes through Pingora's proxy
/// loop, not the relay; at the drain deadline it still ends after a complete event with a
/// `retry:` block, rather than being cut when the process stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ends_an_unmarked_event_stream_after_an_event_with_retry() {
    let upstream = Upstream::start(Behavior::endless(ms(100))).await;
    let mut gw = Gateway::start_with(QUICK_SHUTDOWN, &route(&upstream, "false")).await;
    let mut resp = client::get(gw.addr, "/").await.unwrap();
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    resp.next_event().await.unwrap().expect("a first event");
    gw.signal("TERM");
    let mut body = String::new();
    // Until the connection ends: Pingora's loop closes it mid-body, after the retry block.
    while let Ok(Some(chunk)) = resp.next_chunk().await {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let retry_at = body
        .find("retry: ")
        .unwrap_or_else(|| panic!("no retry block before the stream ended: {body:?}"));
    let (events, retry) = body.split_at(retry_at);
    assert!(
        events.ends_with("\n\n") && events.contains("data: "),
        "the retry did not follow a complete event: {body:?}"
    );
    let delay: u64 = retry
        .strip_prefix("retry: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("nothing may follow the retry block: {retry:?}"));
    assert!((1000..=3000).contains(&delay), "retry {delay}");
    gw.wait_exit(Duration::from_secs(8)).await;
    let log = gw.access_log().join("\n");
    assert!(
        log.contains("route=events") && log.contains("close=drain"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_upstream_closed_is_retried_not_failed() {
    let upstream = Upstream::start(Behavior::TextOncePerConnection("fine".into())).await;
    let gw = Gateway::start(&route(&upstream, "true")).await;
    for i in 0..5 {
        let resp = client::get(gw.addr, "/").await.unwrap();
        assert_eq!(resp.status, 200, "request {i}");
        assert_eq!(resp.text().await.unwrap(), "fine");
        // ssegate counts a request once its upstream connection is back in the pool: only
        // then does the next request find it there (and closed).
        gw.expect_metric(
            "ssegate_requests_total{route=\"events\",status=\"200\"}",
            (i + 1) as f64,
        )
        .await;
    }
    // Requests 2 to 5 each found their pooled connection closed and were sent again. The
    // upstream notes a close only after the retried request is answered, so wait for it.
    assert_eq!(upstream.proxied().len(), 5);
    let reused = common::eventually(Duration::from_secs(3), || upstream.closed().len() == 4).await;
    assert!(
        reused,
        "a pooled connection was reused each time: {} closes",
        upstream.closed().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_fails_over_from_a_dead_peer() {
    let alive = Upstream::start(Behavior::Text("alive".into())).await;
    let dead = common::dead_peer();
    let gw = Gateway::start(&format!(
        "upstreams:\n  events:\n    peers: [{dead}, {}]\n    balance: consistent_hash\n\
         routes:\n  - {{ name: events, match: {{ path_prefix: / }}, upstream: events, sse: true }}\n",
        alive.addr
    ))
    .await;
    for _ in 0..4 {
        let resp = client::get(gw.addr, "/").await.unwrap();
        assert_eq!(
            resp.status, 200,
            "the live peer answers whatever the hash picks"
        );
    }
}

/// `max_lifetime` ends each stream after its lifetime (±10 %) at an event boundary with a
/// `retry:` line; an `EventSource` reconnects with `Last-Event-ID` and misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_ends_streams_with_retry_and_clients_resume_without_a_gap() {
    let up = Upstream::start(Behavior::Resumable { interval: ms(50) }).await;
    let gw = Gateway::start(&route(&up, "{ max_lifetime: 1s }")).await;
    let mut source = testkit::client::EventSource::new(gw.addr, "/feed", ms(3000));
    let mut ids: Vec<u64> = Vec::new();
    let mut lifetimes = Vec::new();
    for _ in 0..4 {
        let opened = Instant::now();
        let connection = source
            .connect_once(|| false, |event| ids.push(event.id.parse().unwrap()))
            .await;
        lifetimes.push(opened.elapsed());
        assert_eq!(connection.status, 200);
        assert_eq!(
            connection.end,
            testkit::client::End::Ended,
            "{connection:?}"
        );
        assert!(!connection.cut_event, "ended mid-event");
        assert!(connection.retry.is_some(), "no retry: line");
    }
    println!("stream lifetimes with max_lifetime 1s: {lifetimes:?}");
    for lifetime in &lifetimes {
        // 0.9 s at the earliest; at the latest 1.1 s, then the next boundary (one interval).
        assert!(
            *lifetime >= ms(900) && *lifetime < ms(1300),
            "lifetimes {lifetimes:?}"
        );
    }
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(
        ids, expected,
        "every event once, in order, across the reconnections"
    );
    gw.expect_metric(
        "ssegate_stream_closed_total{reason=\"max_lifetime\",route=\"events\"}",
        4.0,
    )
    .await;
    gw.expect_metric("ssegate_stream_resumes_total{route=\"events\"}", 3.0)
        .await;
    let ended = || {
        gw.access_log()
            .iter()
            .filter(|l| l.contains("close=max_lifetime"))
            .count()
    };
    let logged = common::eventually(ms(3000), || ended() == 4).await;
    assert!(logged, "{:?}", gw.access_log());
}
