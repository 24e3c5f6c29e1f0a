//! Graceful upgrade (`ssegate -u`, then SIGQUIT to the old process) under load: no plain request
//! fails, and SSE clients that reconnect with `Last-Event-ID`, as EventSource does, receive every
//! event exactly once, in order, across the hand-over.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::client;
use common::gateway::Gateway;
use common::upstream::{Behavior, Upstream};
use testkit::client::{End, EventSource};

const SSE_CLIENTS: usize = 20;
const QUICK_SHUTDOWN: &str = "  grace_period_seconds: 2\n  graceful_shutdown_timeout_seconds: 2\n";

fn config(events: &Upstream, plain: &Upstream, added: Option<&Upstream>) -> String {
    let mut yaml = format!(
        "upstreams:\n  events:\n    peers: [{}]\n  plain:\n    peers: [{}]\n",
        events.addr, plain.addr
    );
    if let Some(added) = added {
        yaml.push_str(&format!("  added:\n    peers: [{}]\n", added.addr));
    }
    yaml.push_str(
        "routes:\n  - { name: events, match: { path_prefix: /events }, upstream: events, sse: true }\n  \
         - { name: plain, match: { path_prefix: /plain }, upstream: plain }\n",
    );
    if added.is_some() {
        yaml.push_str("  - { name: added, match: { path_prefix: /added }, upstream: added }\n");
    }
    yaml
}

/// What one EventSource-like client saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    ids: Vec<u64>,
    retries: Vec<u64>,
    /// Ends of a response that came without a `retry:` line first.
    ends_without_retry: usize,
    /// Events received on a connection after a reconnect.
    after_reconnect: usize,
}

/// Behaves like a browser's EventSource (the kit's): reads events, remembers the last id, and
/// when the response ends reconnects after the `retry:` delay with `Last-Event-ID`. What it saw
/// so far is in `seen`.
async fn event_source(addr: SocketAddr, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut source = EventSource::new(addr, "/events", Duration::ZERO);
    while !stop.load(Ordering::Relaxed) {
        let reconnected = !seen.lock().unwrap().retries.is_empty();
        let connection = source
            .connect_once(
                || stop.load(Ordering::Relaxed),
                |event| {
                    let mut seen = seen.lock().unwrap();
                    seen.ids.push(event.id.parse().expect("numeric id"));
                    seen.after_reconnect += usize::from(reconnected);
                },
            )
            .await;
        match connection.status {
            // Not connected (the listener is being handed over): try again shortly, at the pace
            // of an EventSource after a network error; not a wait for state.
            0 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            status => assert_eq!(status, 200),
        }
        if connection.end == End::Stopped {
            return;
        }
        assert!(!connection.cut_event, "a response ended inside an event");
        match connection.retry {
            Some(ms) => {
                seen.lock().unwrap().retries.push(ms);
                // The reconnection delay is EventSource's behaviour under test, not a wait.
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            None => seen.lock().unwrap().ends_without_retry += 1,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_load_loses_no_request_and_no_event() {
    let events = Upstream::start(Behavior::Resumable {
        interval: Duration::from_millis(100),
    })
    .await;
    let plain = Upstream::start(Behavior::Text("plain".into())).await;
    let added = Upstream::start(Behavior::Text("added".into())).await;
    let mut old = Gateway::start_with(QUICK_SHUTDOWN, &config(&events, &plain, None)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let plain_ok = Arc::new(AtomicUsize::new(0));
    let plain_failed = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, ok, failed, addr) = (
            stop.clone(),
            plain_ok.clone(),
            plain_failed.clone(),
            old.addr,
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = match client::get(addr, "/plain").await {
                    Ok(resp) if resp.status == 200 => resp.text().await.ok(),
                    _ => None,
                };
                match answer.as_deref() {
                    Some("plain") => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                // Paces the load: a steady stream of requests across the hand-over.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let seen: Vec<Arc<Mutex<Seen>>> = (0..SSE_CLIENTS).map(|_| Arc::default()).collect();
    let clients: Vec<_> = seen
        .iter()
        .map(|seen| tokio::spawn(event_source(old.addr, stop.clone(), seen.clone())))
        .collect();
    // Every stream is open and flowing, and plain requests are being answered.
    let flowing = common::eventually(Duration::from_secs(10), || {
        plain_ok.load(Ordering::Relaxed) > 0
            && seen.iter().all(|s| !s.lock().unwrap().ids.is_empty())
    })
    .await;
    assert!(flowing, "streams and plain requests before the upgrade");

    let mut new = old.start_upgrade(&config(&events, &plain, Some(&added)));
    new.wait_upgrade_listening().await;
    old.signal("QUIT");

    // Pingora: 5 s with both processes accepting, then the 2 s grace period, then up to 2 s for
    // the runtimes to stop.
    let exited = old.wait_exit(Duration::from_secs(15)).await;
    assert!(
        exited.is_some_and(|s| s.success()),
        "old process exit: {exited:?}\n{}",
        old.log()
    );
    let added_answers = client::get(new.addr, "/added").await.unwrap();
    assert_eq!(
        added_answers.status, 200,
        "the new process serves the new route"
    );
    // Every client comes back after its retry delay and gets events from the new process.
    let plain_before = plain_ok.load(Ordering::Relaxed);
    let resumed = common::eventually(Duration::from_secs(15), || {
        plain_ok.load(Ordering::Relaxed) > plain_before
            && seen.iter().all(|s| s.lock().unwrap().after_reconnect > 0)
    })
    .await;
    let unresumed: Vec<Seen> = seen
        .iter()
        .map(|s| s.lock().unwrap().clone())
        .filter(|s| s.after_reconnect == 0)
        .collect();
    assert!(
        resumed,
        "clients without events after the upgrade: {unresumed:?}"
    );

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let mut reconnected = 0;
    for (client, seen) in clients.into_iter().zip(&seen) {
        client.await.unwrap();
        let seen = seen.lock().unwrap().clone();
        let expected: Vec<u64> = (1..=seen.ids.len() as u64).collect();
        assert_eq!(seen.ids, expected, "every event once, in order: {seen:?}");
        assert_eq!(seen.ends_without_retry, 0, "{seen:?}");
        assert!(
            seen.retries.iter().all(|ms| (1000..=3000).contains(ms)),
            "{seen:?}"
        );
        reconnected += usize::from(!seen.retries.is_empty());
    }
    assert_eq!(reconnected, SSE_CLIENTS, "every stream was handed over");
    assert_eq!(
        plain_failed.load(Ordering::Relaxed),
        0,
        "plain requests failed"
    );
    assert!(plain_ok.load(Ordering::Relaxed) > 100);
    assert!(new.is_running(), "{}", new.log());
    let old_log = old.access_log().join("\n");
    assert!(old_log.contains("close=drain"), "{old_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_with_a_broken_config_exits_and_leaves_the_old_process_serving() {
    let plain = Upstream::start(Behavior::Text("plain".into())).await;
    let mut old = Gateway::start(&format!(
        "upstreams:\n  plain:\n    peers: [{}]\nroutes:\n  - {{ name: plain, match: {{ path_prefix: / }}, upstream: plain }}\n",
        plain.addr
    ))
    .await;
    let mut new = old.start_upgrade("upstreams: {}\nroutes:\n  - { name: x, upstream: nowhere }\n");
    let status = new.wait_exit(Duration::from_secs(5)).await;
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    assert!(
        new.log().contains("no upstream named `nowhere`"),
        "{}",
        new.log()
    );
    assert!(old.is_running());
    for _ in 0..20 {
        assert_eq!(client::get(old.addr, "/").await.unwrap().status, 200);
    }
}
