//! `GET /healthz` on the metrics listener, and the order of a stop: at `SIGTERM` the health
//! check turns to `503` at once while the listeners keep accepting for `shutdown.unready_delay`,
//! so a balancer that checks it stops sending new clients before the listeners close. A graceful
//! upgrade does not turn it: the new process answers for the instance.

mod common;

use std::time::{Duration, Instant};

use common::client;
use common::gateway::Gateway;
use common::upstream::{Behavior, Upstream};

fn plain_route(upstream: &Upstream, extra: &str) -> String {
    format!(
        "{extra}upstreams:\n  app:\n    peers: [{}]\n\
         routes:\n  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}\n",
        upstream.addr
    )
}

async fn health(gw: &Gateway) -> Option<(u16, String)> {
    let resp = client::get(gw.metrics_addr, "/healthz").await.ok()?;
    let status = resp.status;
    Some((status, resp.text().await.ok()?))
}

async fn plain_ok(gw: &Gateway) -> bool {
    match client::get(gw.addr, "/").await {
        Ok(resp) => resp.status == 200 && resp.text().await.is_ok_and(|t| t == "hello"),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_health_at_once_and_the_listener_accepts_until_the_delay_ends() {
    let up = Upstream::start(Behavior::Text("hello".into())).await;
    let gw = Gateway::start(&plain_route(&up, "shutdown:\n  unready_delay: 2s\n")).await;
    assert_eq!(health(&gw).await, Some((200, "ok\n".to_string())));

    gw.signal("TERM");
    let signalled = Instant::now();
    let unready = common::eventually_async(Duration::from_secs(1), || async {
        health(&gw).await == Some((503, "draining\n".to_string()))
    })
    .await;
    assert!(unready, "/healthz did not turn within 1 s:\n{}", gw.log());
    // Still serving new clients while the balancer takes the instance out.
    assert!(plain_ok(&gw).await, "a request during the delay failed");
    assert!(signalled.elapsed() < Duration::from_millis(1500));

    let closed = common::eventually_async(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(gw.addr).await.is_err()
    })
    .await;
    let after = signalled.elapsed();
    assert!(closed, "the listener never closed:\n{}", gw.log());
    assert!(
        after >= Duration::from_millis(1900),
        "the listener closed {after:?} after SIGTERM, before the 2 s delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_delay_sigterm_closes_the_listener_promptly() {
    let up = Upstream::start(Behavior::Text("hello".into())).await;
    let gw = Gateway::start(&plain_route(&up, "")).await;
    gw.signal("TERM");
    let signalled = Instant::now();
    let closed = common::eventually_async(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(gw.addr).await.is_err()
    })
    .await;
    assert!(closed, "{}", gw.log());
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "{:?}",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_upgrade_keeps_the_instance_healthy() {
    let up = Upstream::start(Behavior::Text("hello".into())).await;
    let body = plain_route(&up, "");
    let quick_exit = "  grace_period_seconds: 2\n  graceful_shutdown_timeout_seconds: 1\n";
    let mut old = Gateway::start_with(quick_exit, &body).await;
    let mut new = old.start_upgrade(&body);
    new.wait_upgrade_listening().await;
    old.signal("QUIT");
    // Whichever process answers, through the handover and until the old one is gone (5 s of
    // overlap, then its grace period), the instance is healthy.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut checks = 0;
    while old.is_running() {
        assert!(
            Instant::now() < deadline,
            "the old process did not exit:\n{}",
            old.log()
        );
        assert_eq!(
            health(&new).await,
            Some((200, "ok\n".to_string())),
            "after {checks} checks"
        );
        checks += 1;
        // Paced: one check every 100 ms while the old process winds down.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(checks > 20, "only {checks} checks during the handover");
    assert_eq!(health(&new).await, Some((200, "ok\n".to_string())));
    assert!(plain_ok(&new).await);
}
