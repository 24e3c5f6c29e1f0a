//! The Prometheus metrics of a running ssegate: exact counts after known traffic, resumes and
//! event gaps on both paths (the relay and Pingora's proxy loop), and no dashboard panel that
//! asks for a metric the binary does not export.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::client::{self, Response};
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
        ("ssegate_stream_resumes_total{route=\"stream\"}", 0.0),
        // Five events in five deliveries per stream: four gaps each.
        (
            "ssegate_stream_event_gap_seconds_count{route=\"stream\"}",
            12.0,
        ),
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
        "upstreams:\n  app:\n    peers: [{}]\nroutes:\n  - {{ name: app, match: {{ path_prefix: / }}, upstream: app, sse: {{ max_streams_per_client: 5 }} }}\n",
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

/// Routes to `upstream` on both paths: `relayed` is marked `sse` (with the options `sse`), so
/// ssegate's relay serves it; `proxied` is not, so Pingora's proxy loop does.
fn both_paths(upstream: &Upstream, sse: &str) -> String {
    format!(
        "upstreams:\n  events:\n    peers: [{}]\n\
         routes:\n  - {{ name: relayed, match: {{ path_prefix: /relayed }}, upstream: events, sse: {sse} }}\n  \
         - {{ name: proxied, match: {{ path_prefix: /proxied }}, upstream: events }}\n",
        upstream.addr
    )
}

async fn get_with_last_event_id(gw: &Gateway, path: &str, id: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = id.map(|id| ("Last-Event-ID", id)).into_iter().collect();
    client::request(gw.addr, "GET", path, &headers, None)
        .await
        .unwrap()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_with_a_last_event_id_count_as_resumes_on_both_paths() {
    let upstream = Upstream::start(Behavior::Sse {
        interval: Duration::from_millis(10),
        count: Some(1),
        end: true,
    })
    .await;
    let gw = Gateway::start(&both_paths(&upstream, "true")).await;
    for route in ["relayed", "proxied"] {
        // A fresh stream, a reconnection, and an empty id (no position to resume from).
        for id in [None, Some("41"), Some("")] {
            let resp = get_with_last_event_id(&gw, &format!("/{route}"), id).await;
            assert_eq!(resp.status, 200, "{route} {id:?}");
            assert!(resp.text().await.unwrap().contains("data: "), "{route}");
        }
    }
    // A reconnection that opens no stream is no resume.
    let missed = get_with_last_event_id(&gw, "/nowhere", Some("41")).await;
    assert_eq!(missed.status, 404);

    for route in ["relayed", "proxied"] {
        gw.expect_metric(&format!("ssegate_streams_total{{route=\"{route}\"}}"), 3.0)
            .await;
        gw.expect_metric(
            &format!("ssegate_stream_resumes_total{{route=\"{route}\"}}"),
            1.0,
        )
        .await;
    }
    gw.expect_metric(
        "ssegate_requests_total{route=\"unmatched\",status=\"404\"}",
        1.0,
    )
    .await;
    assert_eq!(
        gw.metric("ssegate_stream_resumes_total{route=\"unmatched\"}")
            .await,
        Some(0.0)
    );
    // The upstream saw each id as sent: counting a resume changes nothing on the wire.
    let ids: Vec<Option<String>> = upstream
        .proxied()
        .iter()
        .map(|r| r.header("last-event-id").map(str::to_string))
        .collect();
    let sent = [None, Some("41".to_string()), Some(String::new())];
    assert_eq!(ids, [sent.clone(), sent].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_gaps_are_observed_once_per_delivery_with_events_on_both_paths() {
    // Five events in four deliveries with events: gaps of about 160 ms, 160 ms (one delivery
    // with two events) and 600 ms (over an upstream comment and an event sent in two halves).
    let ms = Duration::from_millis;
    let upstream = Upstream::start(Behavior::Script {
        pieces: vec![
            (ms(0), "data: 1\n\n"),
            (ms(160), "data: 2\n\n"),
            (ms(160), "data: 3\n\ndata: 4\n\n"),
            (ms(200), ": upstream comment\n\n"),
            (ms(200), "data: 5"),
            (ms(200), "\n\n"),
        ],
        end: true,
    })
    .await;
    // Heartbeats on the relayed route fill the spells between events; they are no events.
    let gw = Gateway::start(&both_paths(&upstream, "{ heartbeat: 50ms }")).await;

    let read_all = |route: &'static str| {
        let gw = &gw;
        async move {
            let start = std::time::Instant::now();
            let body = client::get(gw.addr, &format!("/{route}"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            (start.elapsed(), body)
        }
    };
    let (relayed, proxied) = tokio::join!(read_all("relayed"), read_all("proxied"));
    assert!(relayed.1.contains(": keepalive"), "{}", relayed.1);

    for (route, (elapsed, body)) in [("relayed", relayed), ("proxied", proxied)] {
        assert!(body.contains("data: 5\n\n"), "{route}: {body}");
        let series = |suffix: &str, le: Option<&str>| match le {
            Some(le) => format!(
                "ssegate_stream_event_gap_seconds_{suffix}{{route=\"{route}\",le=\"{le}\"}}"
            ),
            None => format!("ssegate_stream_event_gap_seconds_{suffix}{{route=\"{route}\"}}"),
        };
        gw.expect_metric(&series("count", None), 3.0).await;
        gw.expect_metric(
            &format!("ssegate_stream_events_total{{route=\"{route}\"}}"),
            5.0,
        )
        .await;
        let text = gw.scrape().await;
        let value = |sample: &str| {
            sample_value(&text, sample).unwrap_or_else(|| panic!("{sample} missing:\n{text}"))
        };
        // Each gap in its bucket: none under 100 ms (so no zero for the second event of a
        // delivery, no heartbeat), two up to 250 ms, the long one between 500 ms and 1 s.
        for (le, want) in [("0.1", 0.0), ("0.25", 2.0), ("0.5", 2.0), ("1", 3.0)] {
            assert_eq!(value(&series("bucket", Some(le))), want, "{route} le={le}");
        }
        // The gaps add up to the time from the first event's delivery to the last one's:
        // at least the upstream's spacing (less a little for unequal latencies), at most the
        // whole request as the client saw it.
        let sum = value(&series("sum", None));
        assert!(sum >= 0.92 - 0.05, "{route}: sum {sum}");
        assert!(
            sum <= elapsed.as_secs_f64(),
            "{route}: sum {sum} > {elapsed:?}"
        );
    }
}
