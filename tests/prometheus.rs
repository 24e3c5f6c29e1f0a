//! A real Prometheus scraping a running ssegate under SSE traffic: `promtool check metrics`
//! accepts the exposition, and every query of the Grafana dashboard returns data.
//!
//! Needs the `prometheus` and `promtool` binaries (Debian package `prometheus`; `.ci/run` and
//! README's test command install it). Without them the test fails and says so: it never passes
//! by skipping.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::client;
use common::gateway::{sample_value, Gateway};
use common::upstream::{Behavior, Upstream};

struct Prometheus {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: ssegate\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run `prometheus` (apt-get install -y prometheus)");
        let prometheus = Prometheus {
            addr,
            child,
            _dir: dir,
        };
        let ready = common::eventually_async(Duration::from_secs(10), || async move {
            client::get(addr, "/-/ready")
                .await
                .is_ok_and(|resp| resp.status == 200)
        })
        .await;
        assert!(ready, "prometheus did not become ready");
        prometheus
    }

    /// Runs an API GET and returns the `data` field.
    async fn api(&self, path_and_query: &str) -> serde_json::Value {
        let body = client::get(self.addr, path_and_query)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&body).expect("prometheus answers JSON");
        assert_eq!(json["status"], "success", "{path_and_query}: {body}");
        json["data"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The dashboard's panel queries and variable queries.
fn dashboard_queries() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string("grafana/dashboards/ssegate.json").unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    let variables = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["query"]["query"].as_str().map(str::to_string))
        .collect();
    (exprs, variables)
}

/// Substitutes variables as Grafana would with "All" selected and a 1 s scrape interval.
fn as_grafana_sends_it(expr: &str) -> String {
    expr.replace("$__rate_interval", "5s")
        .replace("$route", ".*")
        .replace("$job", ".*")
}

/// Keeps SSE traffic of every kind flowing: long streams, short ones the client drops, a
/// reconnection with `Last-Event-ID`, streams of several events the upstream ends, 404s and
/// 502s.
async fn traffic(gw: SocketAddr) {
    loop {
        if let Ok(mut resp) = client::get(gw, "/events").await {
            let _ = resp.next_event().await;
        }
        let resume = [("Last-Event-ID", "1")];
        if let Ok(resp) = client::request(gw, "GET", "/events", &resume, None).await {
            let _ = client::Response::from(resp).next_event().await;
        }
        if let Ok(resp) = client::get(gw, "/finite").await {
            let _ = resp.text().await;
        }
        let _ = client::get(gw, "/nowhere").await;
        let _ = client::get(gw, "/dead").await;
        // Paces the traffic: a steady trickle of every kind for the whole test.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Fails the test, saying what to install, unless `binary` runs.
fn require(binary: &str) {
    let ran = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        ran.as_ref().is_ok_and(|s| s.success()),
        "`{binary}` is missing or does not run ({ran:?}): this test needs a real Prometheus; \
         install the Debian package with `apt-get install -y prometheus` (README's test command)"
    );
}

/// Whether a scrape has counted traffic of every kind: a finished stream, an upstream error,
/// a 404, a resumed stream and a gap between events.
fn counts_every_kind(scrape: &str) -> bool {
    let has = |family: &str, label: &str| {
        scrape
            .lines()
            .any(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
    };
    has("ssegate_stream_closed_total", "route=\"finite\"")
        && has("ssegate_upstream_errors_total", "route=\"dead\"")
        && has("ssegate_requests_total", "status=\"404\"")
        && has("ssegate_streams_active", "route=\"events\"")
        && sample_value(scrape, "ssegate_stream_resumes_total{route=\"events\"}")
            .is_some_and(|n| n > 0.0)
        && sample_value(
            scrape,
            "ssegate_stream_event_gap_seconds_count{route=\"finite\"}",
        )
        .is_some_and(|n| n > 0.0)
}

/// The dashboard's queries (and variables) that return no data from `prometheus` yet.
async fn queries_without_data(
    prometheus: &Prometheus,
    exprs: &[String],
    variables: &[String],
) -> Vec<String> {
    let mut empty = Vec::new();
    for expr in exprs {
        let query = as_grafana_sends_it(expr);
        let data = prometheus
            .api(&format!("/api/v1/query?query={}", url_encode(&query)))
            .await;
        let results = data["result"].as_array().cloned().unwrap_or_default();
        let has_number = results.iter().any(|r| {
            r["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(f64::is_finite)
        });
        if !has_number {
            empty.push(format!("{query} -> {data}"));
        }
    }
    for variable in variables {
        // label_values(METRIC, LABEL)
        let inner = variable
            .trim_start_matches("label_values(")
            .trim_end_matches(')');
        let (metric, label) = inner.split_once(',').unwrap();
        let data = prometheus
            .api(&format!(
                "/api/v1/label/{}/values?match[]={}",
                label.trim(),
                url_encode(metric.trim())
            ))
            .await;
        if data.as_array().is_none_or(|a| a.is_empty()) {
            empty.push(format!("{variable} -> {data}"));
        }
    }
    empty
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_ssegate_and_every_dashboard_query_has_data() {
    require("prometheus");
    require("promtool");
    let endless = Upstream::start(Behavior::endless(Duration::from_millis(100))).await;
    let finite = Upstream::start(Behavior::Sse {
        interval: Duration::from_millis(20),
        count: Some(3),
        end: true,
    })
    .await;
    let dead = common::dead_peer();
    let gw = Gateway::start(&format!(
        "upstreams:\n  endless:\n    peers: [{}]\n    balance: least_streams\n    health_check: {{ interval: 1s }}\n  \
         finite:\n    peers: [{}]\n  dead:\n    peers: [{dead}]\n\
         routes:\n  - {{ name: events, match: {{ path_prefix: /events }}, upstream: endless, sse: {{ max_streams_per_client: 100 }} }}\n  \
         - {{ name: finite, match: {{ path_prefix: /finite }}, upstream: finite, sse: true }}\n  \
         - {{ name: dead, match: {{ path_prefix: /dead }}, upstream: dead }}\n",
        endless.addr, finite.addr
    ))
    .await;
    // Three streams held open for the whole test.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(client::get(gw.addr, "/events").await.unwrap());
    }
    let background = tokio::spawn(traffic(gw.addr));
    let scrape = common::poll(Duration::from_secs(15), || async {
        let scrape = gw.scrape().await;
        counts_every_kind(&scrape).then_some(scrape)
    })
    .await
    .unwrap_or_else(|| panic!("traffic of every kind counted:\n{}", gw.log()));
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run `promtool` (apt-get install -y prometheus)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let prometheus = Prometheus::start(gw.metrics_addr).await;
    let (exprs, variables) = dashboard_queries();
    assert!(exprs.len() >= 15);
    // Rates need two scrapes in their window: wait until every query has data.
    let empty = std::cell::RefCell::new(Vec::new());
    common::eventually_async(Duration::from_secs(60), || async {
        let now_empty = queries_without_data(&prometheus, &exprs, &variables).await;
        *empty.borrow_mut() = now_empty;
        empty.borrow().is_empty()
    })
    .await;
    background.abort();
    drop(held);
    let empty = empty.into_inner();
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );
}
