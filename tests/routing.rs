//! Routing end to end: host, path and method rules pick the upstream; no match is a 404.

mod common;

use common::client;
use common::gateway::Gateway;
use common::upstream::{Behavior, Upstream};

async fn text_upstream(name: &str) -> Upstream {
    Upstream::start(Behavior::Text(name.to_string())).await
}

/// Which upstream answered `method path` with `Host: host`.
async fn answer(gw: &Gateway, host: &str, method: &str, path: &str) -> (u16, String) {
    let resp = client::request(gw.addr, method, path, &[("Host", host)], None)
        .await
        .unwrap();
    let status = resp.status;
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_path_and_method_rules_pick_the_most_specific_route() {
    let names = [
        "root",
        "v1",
        "chat",
        "chat-exact",
        "api",
        "wild",
        "post-only",
    ];
    let mut upstreams = Vec::new();
    for name in names {
        upstreams.push(text_upstream(name).await);
    }
    let mut yaml = String::from("upstreams:\n");
    for (name, u) in names.iter().zip(&upstreams) {
        yaml.push_str(&format!("  {name}:\n    peers: [{}]\n", u.addr));
    }
    yaml.push_str(
        "routes:
  - { name: root, match: { path_prefix: / }, upstream: root }
  - { name: v1, match: { path_prefix: /v1 }, upstream: v1 }
  - { name: chat, match: { path_prefix: /v1/chat/ }, upstream: chat }
  - { name: chat-exact, match: { path: /v1/chat }, upstream: chat-exact }
  - { name: api, match: { host: API.example.com, path_prefix: / }, upstream: api }
  - { name: wild, match: { host: '*.example.com', path_prefix: / }, upstream: wild }
  - { name: post-only, match: { path_prefix: /submit, methods: [post] }, upstream: post-only }
",
    );
    let gw = Gateway::start(&yaml).await;
    let cases = [
        ("other.org", "GET", "/", "root"),
        ("other.org", "GET", "/v1/models", "v1"),
        ("other.org", "GET", "/v1/chat/completions", "chat"),
        ("other.org", "GET", "/v1/chat", "chat-exact"),
        ("other.org", "GET", "/v1/chatter", "v1"),
        ("api.example.com:8080", "GET", "/x", "api"),
        ("www.example.com", "GET", "/x", "wild"),
        ("a.b.example.com", "GET", "/x", "wild"),
        ("example.com", "GET", "/x", "root"),
        ("api.example.com", "GET", "/v1/chat/x", "chat"),
        ("other.org", "POST", "/submit", "post-only"),
        ("other.org", "GET", "/submit", "root"),
    ];
    for (host, method, path, expected) in cases {
        let (status, body) = answer(&gw, host, method, path).await;
        assert_eq!(
            (status, body.as_str()),
            (200, expected),
            "{method} {host}{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_is_a_plain_text_404() {
    let up = text_upstream("api").await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  api:\n    peers: [{}]\nroutes:\n  - {{ name: api, match: {{ host: api.example.com, path_prefix: /api }}, upstream: api }}\n",
        up.addr
    ))
    .await;
    for (host, path) in [
        ("api.example.com", "/other"),
        ("evil.example.org", "/api/x"),
    ] {
        let resp = client::request(gw.addr, "GET", path, &[("Host", host)], None)
            .await
            .unwrap();
        assert_eq!(resp.status, 404);
        assert!(resp
            .header("content-type")
            .unwrap()
            .starts_with("text/plain"));
        let body = resp.text().await.unwrap();
        assert!(body.contains("no route"), "{body}");
    }
    assert!(up.proxied().is_empty(), "nothing reached the upstream");
    gw.expect_metric(
        "ssegate_requests_total{route=\"unmatched\",status=\"404\"}",
        2.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_cannot_escape_a_prefix_route() {
    let api = text_upstream("api").await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  api:\n    peers: [{}]\nroutes:\n  - {{ name: api, match: {{ path_prefix: /api }}, upstream: api }}\n",
        api.addr
    ))
    .await;
    for path in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/%2E%2e/admin",
        "/api/./x",
    ] {
        let resp = client::get(gw.addr, path).await.unwrap();
        assert_eq!(resp.status, 400, "{path}");
        assert!(resp.text().await.unwrap().contains("dot segments"));
    }
    assert!(api.proxied().is_empty(), "nothing reached the upstream");
    assert_eq!(client::get(gw.addr, "/api/ok").await.unwrap().status, 200);
}
