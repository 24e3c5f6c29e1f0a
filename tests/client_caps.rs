//! `sse.max_streams_per_client`: a client over its cap gets `429` with `Retry-After`, counted in
//! `ssegate_requests_total`; other clients are not affected; a slot comes back when a stream
//! closes; `client_key: header:NAME` keys on a header, never logged; and the per-client table
//! holds only clients with a stream open, so memory returns after 10 000 distinct clients.

mod common;

use std::time::Duration;

use common::client;
use common::gateway::Gateway;
use common::tls;
use common::upstream::{Behavior, Upstream};

fn capped_route(upstream: &Upstream, sse: &str) -> String {
    format!(
        "upstreams:\n  app:\n    peers: [{}]\n\
         routes:\n  - {{ name: feed, match: {{ path_prefix: / }}, upstream: app, sse: {sse} }}\n",
        upstream.addr
    )
}

async fn open(gw: &Gateway, headers: &[(&str, &str)]) -> client::Response {
    let resp: client::Response = client::request(gw.addr, "GET", "/feed", headers, None)
        .await
        .expect("request")
        .into();
    resp
}

async fn open_stream(gw: &Gateway, headers: &[(&str, &str)]) -> client::Response {
    let mut s = open(gw, headers).await;
    assert_eq!(s.status, 200, "{headers:?}");
    s.next_event().await.expect("read").expect("an event");
    s
}

async fn expect_refused(gw: &Gateway, headers: &[(&str, &str)]) {
    let resp = open(gw, headers).await;
    assert_eq!(resp.status, 429, "{headers:?}");
    assert_eq!(resp.header("retry-after"), Some("1"));
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("route feed: this client's stream limit is reached"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_cap_gets_429_until_one_of_its_streams_closes() {
    let up = Upstream::start(Behavior::endless(Duration::from_millis(50))).await;
    let gw = Gateway::start(&capped_route(
        &up,
        "{ max_streams_per_client: 2, max_streams: 10 }",
    ))
    .await;
    let first = open_stream(&gw, &[]).await;
    let _second = open_stream(&gw, &[]).await;
    expect_refused(&gw, &[]).await;
    gw.expect_metric("ssegate_requests_total{route=\"feed\",status=\"429\"}", 1.0)
        .await;
    gw.expect_metric("ssegate_stream_clients{route=\"feed\"}", 1.0)
        .await;
    // The refused request never reached the upstream.
    assert_eq!(up.proxied().len(), 2);

    drop(first);
    gw.expect_metric("ssegate_streams_active{route=\"feed\"}", 1.0)
        .await;
    let _third = open_stream(&gw, &[]).await;
    expect_refused(&gw, &[]).await;
    gw.expect_metric("ssegate_requests_total{route=\"feed\",status=\"429\"}", 2.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_key_caps_each_key_and_requests_without_it_fall_back_to_the_address() {
    let up = Upstream::start(Behavior::endless(Duration::from_millis(50))).await;
    let gw = Gateway::start(&capped_route(
        &up,
        "{ max_streams_per_client: 1, client_key: \"header:X-Api-Key\" }",
    ))
    .await;
    let secret_a = "key-a-5f1c9e0d";
    let _a = open_stream(&gw, &[("X-Api-Key", secret_a)]).await;
    expect_refused(&gw, &[("x-api-key", secret_a)]).await;
    let _b = open_stream(&gw, &[("X-Api-Key", "key-b")]).await;
    // Without the header: keyed by the client's address, which holds no stream yet.
    let _anonymous = open_stream(&gw, &[]).await;
    expect_refused(&gw, &[]).await;
    gw.expect_metric("ssegate_stream_clients{route=\"feed\"}", 3.0)
        .await;
    gw.expect_metric("ssegate_requests_total{route=\"feed\",status=\"429\"}", 2.0)
        .await;
    let log = gw.log();
    assert!(
        !log.contains(secret_a),
        "the key is logged in clear:\n{log}"
    );
}

/// 10 000 streams over HTTP/1.1 would take 20 000 descriptors in the proxy (client and upstream
/// ends), the machine's whole limit; over HTTP/2 the clients share 100 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_distinct_clients_leave_no_state_and_their_memory_returns() {
    const CLIENTS: usize = 10_000;
    let certs = tempfile::tempdir().unwrap();
    let cert = tls::self_signed(certs.path());
    let up = Upstream::start(Behavior::endless(Duration::from_secs(3600))).await;
    let gw = Gateway::start_full(
        "",
        &tls::listener_yaml(certs.path()),
        &capped_route(
            &up,
            "{ max_streams_per_client: 1, client_key: \"header:Authorization\" }",
        ),
    )
    .await;
    let clients = "ssegate_stream_clients{route=\"feed\"}";

    // Open and close 2 000 first, so the baseline includes what any burst of streams leaves in
    // the allocator's caches.
    let warm = open_many(&gw, &cert, 0..2_000).await;
    drop(warm);
    wait_for(&gw, clients, 0.0, Duration::from_secs(30)).await;
    let baseline = settled_rss(&gw).await;

    let streams = open_many(&gw, &cert, 0..CLIENTS).await;
    wait_for(&gw, clients, CLIENTS as f64, Duration::from_secs(30)).await;
    // Each key has exactly one slot: a second stream for any of them is refused.
    let mut again = tls::h2_connect(gw.addr, cert.clone()).await;
    assert_eq!(h2_open(&mut again, 17).await.status(), 429);
    let peak = gw.rss_kib();
    drop(streams);
    wait_for(&gw, clients, 0.0, Duration::from_secs(60)).await;
    gw.expect_metric("ssegate_streams_active{route=\"feed\"}", 0.0)
        .await;

    // The allocator hands freed pages back within seconds; wait for it, within a minute.
    let grown = peak.saturating_sub(baseline);
    let limit = baseline + grown / 10;
    let returned = common::eventually(Duration::from_secs(60), || gw.rss_kib() <= limit).await;
    let after = gw.rss_kib();
    println!(
        "RSS: {baseline} KiB before, {peak} KiB with {CLIENTS} clients holding one stream each, \
         {after} KiB after they closed"
    );
    assert!(
        returned,
        "RSS stayed at {after} KiB after {CLIENTS} clients closed (before: {baseline} KiB, \
         peak: {peak} KiB; limit {limit} KiB)"
    );
    // A key that held a stream before is admitted again.
    assert_eq!(h2_open(&mut again, 17).await.status(), 200);
}

/// Opens one stream per key `Bearer client-N` over HTTP/2, 100 to a connection (Pingora's
/// limit per connection), and waits for every response head.
async fn open_many(
    gw: &Gateway,
    cert: &openssl::x509::X509,
    keys: std::ops::Range<usize>,
) -> Vec<(h2::client::SendRequest<bytes::Bytes>, Vec<h2::RecvStream>)> {
    let keys: Vec<usize> = keys.collect();
    let connections = keys.chunks(100).map(|batch| async move {
        let mut client = tls::h2_connect(gw.addr, cert.clone()).await;
        let mut bodies = Vec::new();
        for n in batch {
            let response = h2_open(&mut client, *n).await;
            assert_eq!(response.status(), 200, "client {n}");
            bodies.push(response.into_body());
        }
        (client, bodies)
    });
    let mut opened = Vec::new();
    // Ten connections at a time.
    let connections: Vec<_> = connections.collect();
    let mut connections = connections.into_iter();
    loop {
        let wave: Vec<_> = connections.by_ref().take(10).collect();
        if wave.is_empty() {
            break;
        }
        opened.extend(futures::future::join_all(wave).await);
    }
    opened
}

/// Requests `/feed` as client `Bearer client-N` on an HTTP/2 connection.
async fn h2_open(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    n: usize,
) -> http::Response<h2::RecvStream> {
    let request = http::Request::get("https://localhost/feed")
        .header("authorization", format!("Bearer client-{n}"))
        .body(())
        .unwrap();
    let mut ready = client.clone().ready().await.expect("stream capacity");
    let (response, _) = ready.send_request(request, true).expect("send request");
    response.await.expect("response head")
}

async fn wait_for(gw: &Gateway, sample: &str, want: f64, timeout: Duration) {
    let got = std::cell::Cell::new(None);
    let reached = common::eventually_async(timeout, || async {
        got.set(gw.metric(sample).await);
        got.get() == Some(want)
    })
    .await;
    assert!(reached, "{sample} is {:?}, expected {want}", got.get());
}

/// RSS once it has stopped falling (three readings 1 s apart within 1 %): freed pages go back
/// to the system over a few seconds.
async fn settled_rss(gw: &Gateway) -> u64 {
    let readings = std::cell::RefCell::new(vec![gw.rss_kib()]);
    let settled = common::eventually_async(Duration::from_secs(60), || async {
        // Paced: a reading a second apart shows the trend.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut readings = readings.borrow_mut();
        readings.push(gw.rss_kib());
        let last: Vec<u64> = readings.iter().rev().take(3).copied().collect();
        last.len() == 3 && last.iter().max().unwrap() - last.iter().min().unwrap() <= last[0] / 100
    })
    .await;
    let readings = readings.into_inner();
    assert!(settled, "RSS did not settle: {readings:?}");
    *readings.last().unwrap()
}
