//! In-place reload on SIGHUP: new routes answer at once, open streams carry on untouched, and a
//! broken config changes nothing.

mod common;

use std::time::Duration;

use common::client::{self, Response};
use common::gateway::Gateway;
use common::upstream::{Behavior, Upstream};

const STREAMS: usize = 20;

fn config(events: &Upstream) -> String {
    format!(
        "upstreams:\n  events:\n    peers: [{}]\n\
         routes:\n  - {{ name: events, match: {{ path_prefix: /events }}, upstream: events, sse: true }}\n",
        events.addr
    )
}

/// Reads the next `n` events of every stream and checks their ids continue without a gap.
async fn read_on(streams: &mut [Response], last_ids: &mut [u64], n: usize) {
    for (resp, last) in streams.iter_mut().zip(last_ids.iter_mut()) {
        for _ in 0..n {
            let event = resp
                .next_event()
                .await
                .expect("stream still readable")
                .expect("stream still open");
            assert_eq!(event.id, *last + 1, "no gap, no repeat");
            *last = event.id;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_route_and_leaves_open_streams_alone() {
    let events = Upstream::start(Behavior::endless(Duration::from_millis(50))).await;
    let added = Upstream::start(Behavior::Text("added".into())).await;
    let gw = Gateway::start(&config(&events)).await;
    let sha_before = config_sha(&gw).await;

    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(client::get(gw.addr, "/events").await.unwrap());
    }
    let mut last_ids = vec![0; STREAMS];
    read_on(&mut streams, &mut last_ids, 2).await;
    assert_eq!(client::get(gw.addr, "/added").await.unwrap().status, 404);

    gw.rewrite_config(&format!(
        "upstreams:\n  events:\n    peers: [{}]\n  added:\n    peers: [{}]\n\
         routes:\n  - {{ name: events, match: {{ path_prefix: /events }}, upstream: events, sse: true }}\n  \
         - {{ name: added, match: {{ path_prefix: /added }}, upstream: added }}\n",
        events.addr, added.addr
    ));
    gw.signal("HUP");

    let answer = common::poll(Duration::from_secs(10), || async {
        let resp = client::get(gw.addr, "/added").await.unwrap();
        match resp.status {
            200 => Some(resp.text().await.unwrap()),
            _ => None,
        }
    })
    .await;
    assert_eq!(
        answer.as_deref(),
        Some("added"),
        "the new route never answered:\n{}",
        gw.log()
    );

    // The streams opened before the reload run on, on their original connections.
    read_on(&mut streams, &mut last_ids, 5).await;
    assert_eq!(events.proxied().len(), STREAMS, "no stream reconnected");
    gw.expect_metric("ssegate_config_reloads_total{result=\"ok\"}", 1.0)
        .await;
    gw.expect_metric("ssegate_streams_active{route=\"events\"}", STREAMS as f64)
        .await;
    assert_ne!(
        config_sha(&gw).await,
        sha_before,
        "ssegate_config_info follows the file"
    );
    assert!(
        !gw.log().contains("take effect with a graceful upgrade"),
        "only routes and upstreams changed:\n{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_config_changes_nothing_and_says_why() {
    let events = Upstream::start(Behavior::endless(Duration::from_millis(50))).await;
    let mut gw = Gateway::start(&config(&events)).await;
    let sha_before = config_sha(&gw).await;
    let mut stream = client::get(gw.addr, "/events").await.unwrap();
    let mut last = [0];
    read_on(std::slice::from_mut(&mut stream), &mut last, 2).await;

    gw.rewrite_config(
        "upstreams:\n  events:\n    peers: []\nroutes:\n  - { name: x, upstream: nowhere }\n",
    );
    gw.signal("HUP");
    gw.expect_metric("ssegate_config_reloads_total{result=\"invalid\"}", 1.0)
        .await;
    let log = gw.log();
    assert!(log.contains("reload: config rejected"), "{log}");
    assert!(
        log.contains("upstreams.events.peers: at least one peer is required"),
        "{log}"
    );

    assert!(gw.is_running());
    read_on(std::slice::from_mut(&mut stream), &mut last, 3).await;
    let mut second = client::get(gw.addr, "/events").await.unwrap();
    assert_eq!(second.status, 200, "the old routes are still in force");
    second.next_event().await.unwrap().expect("an event");
    assert_eq!(config_sha(&gw).await, sha_before);
    gw.expect_metric("ssegate_config_reloads_total{result=\"ok\"}", 0.0)
        .await;
}

async fn config_sha(gw: &Gateway) -> String {
    let text = gw.scrape().await;
    text.lines()
        .find_map(|l| l.strip_prefix("ssegate_config_info{sha256=\""))
        .and_then(|rest| rest.split('"').next())
        .expect("ssegate_config_info")
        .to_string()
}
