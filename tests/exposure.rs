//! What ssegate shows to whoever can reach it: metrics stay on their own loopback listener, and
//! the answers ssegate writes itself name no internal address, upstream or error internals.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::client;
use common::gateway::{check, Gateway, BIN};
use common::raw::{self, RawResponse};
use common::upstream::{Behavior, Upstream};

/// What Prometheus exposition text starts with; the proxy listener must never serve it.
const EXPOSITION: &str = "# HELP ssegate_";

/// A config with no `metrics:` section. Metrics carry route names, upstream peers, versions and
/// the config's hash, so by default they must be reachable from this machine only: `-t` reports
/// the default `127.0.0.1:9464`. (The shipped configs keep them on loopback too.) A running
/// instance binds exactly the metrics address `-t` reports and no wildcard: checked on a free
/// loopback port, since 9464 itself may be held by anything else on the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_on_loopback_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let config = dir.path().join("ssegate.yaml");
    std::fs::write(
        &config,
        format!(
            "pingora:\n  threads: 1\n  pid_file: {d}/ssegate.pid\n  upgrade_sock: {d}/upgrade.sock\n\
             listeners:\n  - address: {proxy}\n\
             upstreams:\n  app:\n    peers: [{}]\n\
             routes:\n  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}\n",
            common::dead_peer(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = check(&config);
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        summary.trim_end().ends_with("metrics 127.0.0.1:9464"),
        "{summary}"
    );

    for shipped in ["conf/ssegate.yaml", "conf/demo.yaml"] {
        let out = check(Path::new(shipped));
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(
            summary.contains("metrics 127.0.0.1:"),
            "{shipped}: {summary}"
        );
    }

    let metrics_port = common::free_port();
    let running = dir.path().join("running.yaml");
    std::fs::write(
        &running,
        format!(
            "{}metrics:\n  address: 127.0.0.1:{metrics_port}\n",
            std::fs::read_to_string(&config).unwrap()
        ),
    )
    .unwrap();
    let out = check(&running);
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        summary
            .trim_end()
            .ends_with(&format!("metrics 127.0.0.1:{metrics_port}")),
        "{summary}"
    );
    let mut child = Command::new(BIN)
        .arg("-c")
        .arg(&running)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssegate");
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let scraped = common::poll(Duration::from_secs(15), || async move {
        client::get(metrics, "/metrics")
            .await
            .ok()?
            .text()
            .await
            .ok()
    })
    .await;
    let listeners = listening_on(metrics_port);
    let _ = child.kill();
    let _ = child.wait();
    let scraped = scraped.unwrap_or_else(|| panic!("metrics on {metrics}"));
    assert!(scraped.contains(EXPOSITION), "{scraped}");
    assert_eq!(
        listeners,
        ["127.0.0.1"],
        "sockets listening on port {metrics_port}"
    );
}

/// The local addresses of the IPv4 and IPv6 sockets listening on `port` (from /proc/net).
fn listening_on(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(table) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
                continue;
            };
            let Some((ip, p)) = local.split_once(':') else {
                continue;
            };
            // 0A: LISTEN.
            if *state != "0A" || u16::from_str_radix(p, 16) != Ok(port) {
                continue;
            }
            found.push(match (v6, ip) {
                (false, "0100007F") => "127.0.0.1".to_string(),
                (false, "00000000") => "0.0.0.0".to_string(),
                (true, "00000000000000000000000001000000") => "::1".to_string(),
                (true, "00000000000000000000000000000000") => "::".to_string(),
                (_, other) => other.to_string(),
            });
        }
    }
    found
}

/// Metrics live on their own listener only. On a proxy listener `/metrics` is an ordinary path:
/// a route's upstream answers it or it is a 404 — never the exposition, which would hand the
/// world route names, peers and traffic. Nor can an absolute-form target make the proxy fetch
/// the metrics listener for the client (ssegate is not a forward proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_never_served_on_a_proxy_listener() {
    let web = Upstream::start(Behavior::Text("web".into())).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  web:\n    peers: [{}]\n\
         routes:\n  - {{ name: web, match: {{ host: www.example, path_prefix: / }}, upstream: web }}\n",
        web.addr
    ))
    .await;
    assert!(
        gw.scrape().await.contains(EXPOSITION),
        "the marker is right"
    );
    let metrics = gw.metrics_addr;
    let requests = [
        format!("GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr),
        format!("GET /metrics HTTP/1.1\r\nHost: {metrics}\r\n\r\n"),
        format!("GET http://{metrics}/metrics HTTP/1.1\r\nHost: {metrics}\r\n\r\n"),
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".to_string(),
    ];
    for request in &requests {
        let reply = raw::send(gw.addr, request.as_bytes(), Duration::from_millis(500)).await;
        assert_eq!(reply.statuses(), [404], "{request}\n{}", reply.text());
        assert!(
            !reply.text().contains("# HELP"),
            "{request}: {}",
            reply.text()
        );
        assert!(
            !reply.text().contains("# TYPE"),
            "{request}: {}",
            reply.text()
        );
    }
    let routed = client::request(gw.addr, "GET", "/metrics", &[("Host", "www.example")], None)
        .await
        .unwrap();
    assert_eq!(routed.status, 200);
    assert_eq!(
        routed.text().await.unwrap(),
        "web",
        "the route's upstream answers"
    );
}

/// The metrics listener answers `GET /metrics` and `GET /healthz` only. Pingora's own Prometheus
/// service (`pingora-prometheus` 0.9.1) answers every path with the exposition, so any probe of
/// the port, or a mistyped scrape path, got the whole of it; ssegate's endpoint gives other paths
/// a 404 without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listener_serves_the_exposition_at_metrics_only() {
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    peers: [{}]\n\
         routes:\n  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}\n",
        common::dead_peer()
    ))
    .await;
    for path in ["/metrics", "/metrics?x=1"] {
        let resp = client::get(gw.metrics_addr, path).await.unwrap();
        assert_eq!(resp.status, 200, "{path}");
        assert!(resp.text().await.unwrap().contains(EXPOSITION), "{path}");
    }
    let health = client::get(gw.metrics_addr, "/healthz").await.unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(health.text().await.unwrap(), "ok\n");
    for path in [
        "/",
        "/anything",
        "/metrics/x",
        "/metricsx",
        "/x/../metrics",
        "/healthz/x",
    ] {
        let resp = client::get(gw.metrics_addr, path).await.unwrap();
        assert_eq!(resp.status, 404, "{path}");
        assert!(!resp.text().await.unwrap().contains("# HELP"), "{path}");
    }
}

/// Every answer ssegate writes itself — 404 no route, 400 from ssegate (dot segments) and from
/// Pingora (malformed head), 502 unreachable peer, 503 no healthy peer, 503 stream limit, 504
/// no answer in time, on Pingora's proxy path and on the relay of marked routes — must not tell
/// a client anything about the inside: no peer address or port, no upstream name from the
/// config, no Rust or Pingora error text (`ConnectRefused`, `Error {`, `panicked`, file paths),
/// and nothing of the request echoed back (no reflection of a path or host into a body).
/// Bodies name the route and the reason. Headers neither: ssegate's own answers carry
/// no `Server` header; Pingora's own 400 for a malformed head says `Server: Pingora`, a product
/// name without a version, which is allowed (a version would point at known bugs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_name_no_internal_address_or_error_text() {
    let dead = common::dead_peer();
    let sick = [common::dead_peer(), common::dead_peer()];
    let silent = Upstream::start(Behavior::Silent).await;
    let streams = Upstream::start(Behavior::endless(Duration::from_secs(5))).await;
    let gw = Gateway::start(&format!(
        "upstreams:
  secret-pool-dead: {{ peers: [{dead}] }}
  secret-pool-silent: {{ peers: [{silent}], read_timeout: 300ms }}
  secret-pool-sick: {{ peers: [{}, {}], health_check: {{ interval: 200ms }} }}
  secret-pool-streams: {{ peers: [{streams}] }}
routes:
  - {{ name: dead, match: {{ path_prefix: /dead }}, upstream: secret-pool-dead }}
  - {{ name: dead-sse, match: {{ path_prefix: /sse-dead }}, upstream: secret-pool-dead, sse: true }}
  - {{ name: slow, match: {{ path_prefix: /slow }}, upstream: secret-pool-silent }}
  - {{ name: slow-sse, match: {{ path_prefix: /sse-slow }}, upstream: secret-pool-silent, sse: true }}
  - {{ name: sick, match: {{ path_prefix: /sick }}, upstream: secret-pool-sick }}
  - {{ name: limited, match: {{ path_prefix: /limited }}, upstream: secret-pool-streams, sse: {{ max_streams: 1 }} }}
",
        sick[0],
        sick[1],
        silent = silent.addr,
        streams = streams.addr,
    ))
    .await;
    let mut forbidden: Vec<String> = vec![
        dead.clone(),
        sick[0].clone(),
        sick[1].clone(),
        silent.addr.to_string(),
        streams.addr.to_string(),
        gw.metrics_addr.to_string(),
    ];
    for addr in &forbidden.clone() {
        forbidden.push(addr.rsplit_once(':').unwrap().1.to_string());
    }
    forbidden.extend(
        [
            "127.0.0.1",
            "secret-pool",
            "pingora",
            "panicked",
            "error {",
            "error:",
            "errno",
            "os {",
            "kind:",
            "refused",
            "connectrefused",
            "timedout",
            "backtrace",
            ".rs:",
            "src/",
            "marker",
        ]
        .map(String::from),
    );
    let check = |what: &str, resp: &RawResponse, status: u16| {
        assert_eq!(resp.status, status, "{what}: {}", resp.body_text());
        let body = resp.body_text().to_ascii_lowercase();
        for word in &forbidden {
            assert!(
                !body.contains(word.as_str()),
                "{what}: body has {word:?}: {body}"
            );
        }
        assert!(
            body.len() < 120 && body.lines().count() <= 1,
            "{what}: {body}"
        );
        for (name, value) in &resp.headers {
            let value = value.to_ascii_lowercase();
            if name == "server" {
                assert_eq!(value, "pingora", "{what}: Server header");
                continue;
            }
            for word in &forbidden {
                assert!(
                    !value.contains(word.as_str()),
                    "{what}: header {name}: {value}"
                );
            }
        }
    };
    let addr = gw.addr;
    let one = |request: String| async move {
        let reply = raw::send(addr, request.as_bytes(), Duration::from_secs(3)).await;
        assert_eq!(reply.responses.len(), 1, "{request}\n{}", reply.text());
        reply.responses[0].clone()
    };
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: evil-marker.example\r\n\r\n");

    let resp = one(get("/nowhere-marker")).await;
    check("404", &resp, 404);
    assert_eq!(resp.header("server"), None, "404 carries a Server header");
    check("400 dot segments", &one(get("/dead/../marker")).await, 400);
    let malformed = "GET /dead HTTP/1.1\r\nHost: a\r\nBad Header: marker\r\n\r\n".to_string();
    check("400 malformed head", &one(malformed).await, 400);
    for path in ["/dead", "/sse-dead"] {
        let resp = one(get(path)).await;
        check(&format!("502 {path}"), &resp, 502);
        assert_eq!(resp.header("server"), None, "{path}: Server header");
    }
    for path in ["/slow", "/sse-slow"] {
        check(&format!("504 {path}"), &one(get(path)).await, 504);
    }

    // The health check marks the peer down after its first failures.
    let unhealthy = common::poll(Duration::from_secs(10), || async {
        let resp = one(get("/sick")).await;
        (resp.status == 503).then_some(resp)
    })
    .await;
    let unhealthy = match unhealthy {
        Some(resp) => resp,
        None => one(get("/sick")).await,
    };
    check("503 no healthy peer", &unhealthy, 503);

    let mut open = client::get(gw.addr, "/limited").await.unwrap();
    open.next_event()
        .await
        .unwrap()
        .expect("the first stream runs");
    let limited = one(get("/limited")).await;
    check("503 stream limit", &limited, 503);
    assert_eq!(limited.header("retry-after"), Some("1"));
}
