//! Upstream behaviour end to end: error statuses, load balancing, health checks, and the
//! headers ssegate adds and drops.

mod common;

use std::time::Duration;

use common::client;
use common::gateway::Gateway;
use common::upstream::{Behavior, Upstream};

fn single_route(peers: &str, upstream_extra: &str) -> String {
    format!(
        "upstreams:\n  app:\n    peers: [{peers}]\n{upstream_extra}\
         routes:\n  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_a_502_that_names_no_address() {
    let peer = common::dead_peer();
    let gw = Gateway::start(&single_route(&peer, "")).await;
    let resp = client::get(gw.addr, "/x").await.unwrap();
    assert_eq!(resp.status, 502);
    let body = resp.text().await.unwrap();
    assert!(body.contains("route app"), "{body}");
    assert!(!body.contains("127.0.0.1"), "body leaks an address: {body}");
    gw.expect_metric(
        "ssegate_upstream_errors_total{kind=\"connect\",route=\"app\"}",
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_within_read_timeout_is_a_504() {
    let up = Upstream::start(Behavior::Silent).await;
    let gw = Gateway::start(&single_route(
        &up.addr.to_string(),
        "    read_timeout: 500ms\n",
    ))
    .await;
    let started = std::time::Instant::now();
    let resp = client::get(gw.addr, "/slow").await.unwrap();
    assert_eq!(resp.status, 504);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(resp.text().await.unwrap().contains("did not answer"));
    gw.expect_metric(
        "ssegate_upstream_errors_total{kind=\"timeout\",route=\"app\"}",
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_unhealthy_is_a_503() {
    let peers = format!("{}, {}", common::dead_peer(), common::dead_peer());
    let gw = Gateway::start(&single_route(
        &peers,
        "    health_check: { interval: 200ms }\n",
    ))
    .await;
    let marked_down = common::eventually_async(Duration::from_secs(10), || async {
        client::get(gw.addr, "/").await.unwrap().status == 503
    })
    .await;
    assert!(
        marked_down,
        "health checks never marked the dead peers down"
    );
    let body = client::get(gw.addr, "/")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("no healthy upstream peer"), "{body}");
}

/// Two text upstreams, `a` and `b`, as the peers of one upstream with `upstream_extra` settings.
async fn two_peers(upstream_extra: &str) -> (Upstream, Upstream, Gateway) {
    let a = Upstream::start(Behavior::Text("a".into())).await;
    let b = Upstream::start(Behavior::Text("b".into())).await;
    let peers = format!("{}, {}", a.addr, b.addr);
    let gw = Gateway::start(&single_route(&peers, upstream_extra)).await;
    (a, b, gw)
}

/// Sends `n` requests and returns how many reached `a` and `b`.
async fn spread(gw: &Gateway, a: &Upstream, b: &Upstream, n: usize) -> (usize, usize) {
    let before = (a.proxied().len(), b.proxied().len());
    for _ in 0..n {
        assert_eq!(client::get(gw.addr, "/").await.unwrap().status, 200);
    }
    (a.proxied().len() - before.0, b.proxied().len() - before.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_over_peers() {
    let (a, b, gw) = two_peers("    balance: round_robin\n").await;
    assert_eq!(spread(&gw, &a, &b, 10).await, (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_a_client_on_one_peer() {
    let (a, b, gw) = two_peers("    balance: consistent_hash\n").await;
    let counts = spread(&gw, &a, &b, 8).await;
    assert!(counts == (8, 0) || counts == (0, 8), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_takes_a_failing_peer_out_and_puts_it_back() {
    let (a, b, gw) = two_peers("    health_check: { path: /healthz, interval: 200ms }\n").await;
    let healthy = format!(
        "ssegate_upstream_peer_healthy{{peer=\"{}\",upstream=\"app\"}}",
        a.addr
    );
    assert_eq!(spread(&gw, &a, &b, 4).await, (2, 2));

    a.set_health_status(500);
    gw.expect_metric(&healthy, 0.0).await;
    let to_failing = spread(&gw, &a, &b, 6).await;
    assert_eq!(to_failing, (0, 6), "a failing peer gets no traffic");

    a.set_health_status(200);
    gw.expect_metric(&healthy, 1.0).await;
    let (to_a, to_b) = spread(&gw, &a, &b, 6).await;
    assert!(
        to_a >= 2 && to_b >= 2,
        "a recovered peer shares traffic again: {to_a}/{to_b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_and_hop_by_hop_headers_dropped() {
    let up = Upstream::start(Behavior::Text("ok".into())).await;
    let gw = Gateway::start(&single_route(&up.addr.to_string(), "")).await;
    let resp = client::request(
        gw.addr,
        "GET",
        "/h",
        &[
            ("Host", "app.example.com"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "hop"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("X-Custom", "kept"),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    let seen = &up.proxied()[0];
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("app.example.com"));
    assert_eq!(seen.header("x-custom"), Some("kept"));
    for hop in [
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "x-secret",
    ] {
        assert_eq!(seen.header(hop), None, "{hop} was forwarded");
    }
    assert_ne!(seen.header("connection"), Some("keep-alive, X-Secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_access_log_line() {
    let up = Upstream::start(Behavior::Text("ok".into())).await;
    let gw = Gateway::start(&single_route(&up.addr.to_string(), "")).await;
    for path in ["/one", "/two?q=a%20b"] {
        client::get(gw.addr, path)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    let logged = common::eventually(Duration::from_secs(2), || gw.access_log().len() == 2).await;
    assert!(logged, "{}", gw.log());
    // A request's line is written after its response is sent, so the client may already have
    // the next response by then: the lines are found by path, not by order.
    let lines = gw.access_log();
    let line = |path: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("path={path:?}")))
            .unwrap_or_else(|| panic!("no line for {path}:\n{}", lines.join("\n")))
    };
    let one = line("/one");
    assert!(one.contains("route=app status=200"), "{one}");
    assert!(one.contains(&format!("peer={}", up.addr)), "{one}");
    let two = line("/two?q=a%20b");
    assert!(two.contains("route=app status=200"), "{two}");
}
