//! Failover: a request that cannot connect to a peer goes on to a healthy peer it has not tried,
//! by the same rule on a route marked `sse` (the relay) and on a plain route (Pingora's proxy
//! loop, through `upstream_peer` and `fail_to_connect`).

mod common;

use std::time::Duration;

use common::client;
use common::gateway::Gateway;
use common::upstream::{Behavior, Upstream};

/// Requests per route. Round robin over two peers starts at least every other request on the
/// dead one, so each route meets it.
const REQUESTS: usize = 4;

fn two_routes_one_pool(dead: &str, live: &str) -> String {
    format!(
        "upstreams:\n  app:\n    peers: [{dead}, {live}]\n\
         routes:\n  \
         - {{ name: events, match: {{ path_prefix: /events }}, upstream: app, sse: true }}\n  \
         - {{ name: plain, match: {{ path_prefix: / }}, upstream: app }}\n"
    )
}

/// How often the log says connecting to `peer` failed.
fn failed_connects(gw: &Gateway, peer: &str) -> usize {
    gw.log()
        .matches(&format!("connecting to {peer} failed"))
        .count()
}

/// Sends `REQUESTS` requests to `path`; each must be answered in full by the live peer. Returns
/// the failed connects to the dead peer they caused.
async fn every_request_reaches_the_live_peer(gw: &Gateway, path: &str, dead: &str) -> usize {
    let before = failed_connects(gw, dead);
    for _ in 0..REQUESTS {
        let resp = client::get(gw.addr, path).await.unwrap();
        assert_eq!(resp.status, 200, "{path}");
        let body = resp.text().await.unwrap();
        assert_eq!(body.matches("data: ").count(), 2, "{path}: {body:?}");
    }
    failed_connects(gw, dead) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_skip_a_dead_peer_the_same_way() {
    let live = Upstream::start(Behavior::Sse {
        interval: Duration::from_millis(1),
        count: Some(2),
        end: true,
    })
    .await;
    let dead = common::dead_peer();
    let gw = Gateway::start(&two_routes_one_pool(&dead, &live.addr.to_string())).await;

    let plain = every_request_reaches_the_live_peer(&gw, "/plain", &dead).await;
    let relayed = every_request_reaches_the_live_peer(&gw, "/events", &dead).await;
    assert!(plain >= 1, "no plain request met the dead peer");
    assert!(relayed >= 1, "no relayed request met the dead peer");

    // A failover the client never saw is not an upstream error, on either path; and every
    // request is logged with the peer that answered it.
    let expected_lines = 2 * REQUESTS;
    assert!(
        common::eventually(Duration::from_secs(5), || gw.access_log().len()
            >= expected_lines)
        .await,
        "access log: {:?}",
        gw.access_log()
    );
    for line in gw.access_log() {
        assert!(line.contains("status=200"), "{line}");
        assert!(line.contains(&format!("peer={}", live.addr)), "{line}");
    }
    for route in ["plain", "events"] {
        let errors = gw
            .metric(&format!(
                "ssegate_upstream_errors_total{{kind=\"connect\",route=\"{route}\"}}"
            ))
            .await
            .unwrap_or(0.0);
        assert_eq!(errors, 0.0, "route {route}");
    }
    assert_eq!(live.proxied().len(), expected_lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_live_peer_left_both_paths_answer_502_after_trying_each_once() {
    let (first, second) = (common::dead_peer(), common::dead_peer());
    let gw = Gateway::start(&two_routes_one_pool(&first, &second)).await;
    for (path, route) in [("/plain", "plain"), ("/events", "events")] {
        let before = failed_connects(&gw, &first) + failed_connects(&gw, &second);
        let resp = client::get(gw.addr, path).await.unwrap();
        assert_eq!(resp.status, 502, "{path}");
        let after = failed_connects(&gw, &first) + failed_connects(&gw, &second);
        assert_eq!(after - before, 2, "{path}: each peer tried once");
        gw.expect_metric(
            &format!("ssegate_upstream_errors_total{{kind=\"connect\",route=\"{route}\"}}"),
            1.0,
        )
        .await;
    }
}
