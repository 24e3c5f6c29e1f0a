//! TLS listeners offer HTTP/2 over ALPN, and SSE streams the same way on it: many streams share
//! one connection (no 6-per-host limit in browsers) and every event arrives as it is sent.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::client::EventReader;
use common::gateway::Gateway;
use common::tls;
use common::upstream::{Behavior, Upstream};

const STREAMS: usize = 20;
const EVENTS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sse_streams_share_one_h2_connection_and_stream_every_event() {
    let certs = tempfile::tempdir().unwrap();
    let cert = tls::self_signed(certs.path());
    let upstream = Upstream::start(Behavior::Sse {
        interval: Duration::from_millis(100),
        count: Some(EVENTS),
        end: true,
    })
    .await;
    let tls = tls::listener_yaml(certs.path());
    let gw = Gateway::start_full(
        "",
        &tls,
        &format!(
            "upstreams:\n  events:\n    peers: [{}]\n\
             routes:\n  - {{ name: events, match: {{ path_prefix: / }}, upstream: events, sse: {{ heartbeat: 10s }} }}\n",
            upstream.addr
        ),
    )
    .await;

    let client = tls::h2_connect(gw.addr, cert).await;
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let mut client = client.clone().ready().await.unwrap();
        let request = http::Request::get(format!("https://localhost/events/{i}"))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        streams.push(tokio::spawn(async move {
            let response = response.await.expect("response");
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["x-accel-buffering"], "no");
            let mut body = response.into_body();
            let mut reader = EventReader::default();
            let mut events = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk: Bytes = chunk.expect("body data");
                let _ = body.flow_control().release_capacity(chunk.len());
                events.extend(reader.feed(&chunk));
            }
            events
        }));
    }
    for stream in streams {
        let events = stream.await.unwrap();
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids, (1..=EVENTS).collect::<Vec<_>>());
        for event in events {
            assert!(
                event.latency() < Duration::from_millis(50),
                "event {} took {:?} over h2",
                event.id,
                event.latency()
            );
        }
    }
    // Every stream was served on the same client connection.
    let settled =
        common::eventually(Duration::from_secs(2), || gw.access_log().len() == STREAMS).await;
    assert!(settled, "{}", gw.log());
    let clients: std::collections::BTreeSet<String> = gw
        .access_log()
        .iter()
        .filter_map(|l| {
            l.split(' ')
                .find(|f| f.starts_with("client="))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(clients.len(), 1, "{clients:?}");
    // The upstream got well-formed HTTP/1.1 requests for them.
    for req in upstream.proxied() {
        assert_eq!(req.version, "HTTP/1.1");
        assert!(req.target.starts_with("/events/"), "{}", req.target);
        assert_eq!(req.header("host"), Some("localhost"));
        assert_eq!(req.header("x-forwarded-proto"), Some("https"));
    }
}
