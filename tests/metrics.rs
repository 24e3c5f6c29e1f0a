//! The Prometheus metrics of a running ssegate: exact counts after known traffic, and no
//! dashboard panel that asks for a metric the binary does not export.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::client;
use common::gateway::{sample_value, Gateway};
use common::upstream::{Behavior, Upstream};

/// Every metric name the Grafana dashboard's queries use.
pub fn dashboard_metric_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string("grafana/dashboards/ssegate.json").expect("dashboard");
    let mut names = BTreeSet::new();
    for prefix in ["ssegate_", "process_"] {
        for (i, _) in text.match_indices(prefix) {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_gauges_and_histograms_match_the_traffic_sent() {
    let upstream = Upstream::start(Behavior::Sse {
        interval: Duration::from_millis(100),
        count: Some(5),
        end: true,
    })
    .await;
    let dead = common::dead_peer();
    let gw = Gateway::start(&format!(
        "upstreams:\n  events:\n    peers: [{}]\n  dead:\n    peers: [{dead}]\n\
         routes:\n  - {{ name: stream, match: {{ path_prefix: /events }}, upstream: events, sse: true }}\n  \
         - {{ name: dead, match: {{ path_prefix: /dead }}, upstream: dead }}\n",
        upstream.addr
    ))
    .await;

    // Three streams open at once, each read to its end.
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(client::get(gw.addr, "/events").await.unwrap());
    }
    let mut total_bytes = 0;
    for resp in streams {
        assert_eq!(resp.status, 200);
        total_bytes += resp.text().await.unwrap().len();
    }
    assert_eq!(client::get(gw.addr, "/nowhere").await.unwrap().status, 404);
    assert_eq!(client::get(gw.addr, "/dead").await.unwrap().status, 502);

    let settled = common::eventually(Duration::from_secs(3), || gw.access_log().len() == 5).await;
    assert!(settled, "{}", gw.log());
    let text = gw.scrape().await;
    let value =
        |sample: &str| sample_value(&text, sample).unwrap_or_else(|| panic!("{sample} missing"));
    let expected = [
        ("ssegate_streams_total{route=\"stream\"}", 3.0),
        ("ssegate_streams_active{route=\"stream\"}", 0.0),
        ("ssegate_stream_events_total{route=\"stream\"}", 15.0),
        (
            "ssegate_stream_bytes_total{route=\"stream\"}",
            total_bytes as f64,
        ),
        (
            "ssegate_stream_closed_total{reason=\"upstream_end\",route=\"stream\"}",
            3.0,
        ),
        (
            "ssegate_stream_closed_total{reason=\"client_gone\",route=\"stream\"}",
            0.0,
        ),
        (
            "ssegate_stream_first_event_seconds_count{route=\"stream\"}",
            3.0,
        ),
        (
            "ssegate_stream_duration_seconds_count{route=\"stream\"}",
            3.0,
        ),
        (
            "ssegate_stream_flush_latency_seconds_count{route=\"stream\"}",
            15.0,
        ),
        (
            "ssegate_requests_total{route=\"stream\",status=\"200\"}",
            3.0,
        ),
        (
            "ssegate_requests_total{route=\"unmatched\",status=\"404\"}",
            1.0,
        ),
        ("ssegate_requests_total{route=\"dead\",status=\"502\"}", 1.0),
        (
            "ssegate_upstream_errors_total{kind=\"connect\",route=\"dead\"}",
            1.0,
        ),
        (
            "ssegate_upstream_errors_total{kind=\"connect\",route=\"stream\"}",
            0.0,
        ),
        (
            "ssegate_request_duration_seconds_count{route=\"dead\"}",
            1.0,
        ),
        (
            "ssegate_request_duration_seconds_count{route=\"unmatched\"}",
            1.0,
        ),
        (
            "ssegate_request_duration_seconds_count{route=\"stream\"}",
            0.0,
        ),
        ("ssegate_stream_heartbeats_total{route=\"stream\"}", 0.0),
        ("ssegate_build_info{version=\"0.1.0\"}", 1.0),
    ];
    for (sample, want) in expected {
        assert_eq!(value(sample), want, "{sample}");
    }
    let peer = format!(
        "ssegate_upstream_peer_healthy{{peer=\"{}\",upstream=\"events\"}}",
        upstream.addr
    );
    assert_eq!(value(&peer), 1.0);
    assert!(
        text.contains("ssegate_config_info{sha256=\""),
        "config info exported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_uses_is_exported() {
    let upstream = Upstream::start(Behavior::Text("ok".into())).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    peers: [{}]\nroutes:\n  - {{ name: app, match: {{ path_prefix: / }}, upstream: app, sse: true }}\n",
        upstream.addr
    ))
    .await;
    client::get(gw.addr, "/")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The request is counted in ssegate's logging phase, just after the client has its answer.
    let logged = common::eventually(Duration::from_secs(3), || gw.access_log().len() == 1).await;
    assert!(logged, "{}", gw.log());
    let text = gw.scrape().await;
    let names = dashboard_metric_names();
    assert!(names.len() >= 15, "{names:?}");
    for name in names {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| text.contains(&format!("# TYPE {base} histogram")))
            .unwrap_or(&name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the dashboard uses {name}, which ssegate does not export"
        );
    }
}
