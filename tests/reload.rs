//! In-place reload on SIGHUP: new routes answer at once, open streams carry on untouched, a
//! broken config changes nothing, a reload that hangs does not hold up a shutdown, and the
//! metric series of a removed route go once nothing uses them.
//!
//! A reload is made to hang by turning the config file into a FIFO: reading it blocks until the
//! test writes the config into it, and the test can tell that a reload is reading it (opening
//! the FIFO for writing without blocking succeeds only while a reader has it open).

mod common;

use std::time::{Duration, Instant};

use common::client::{self, Response};
use common::gateway::Gateway;
use common::held_reload::{feed, make_fifo, reload_reading};
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

const QUICK_SHUTDOWN: &str = "  grace_period_seconds: 1\n  graceful_shutdown_timeout_seconds: 1\n";

/// The harness's part of the config file, which `body` follows.
fn header(gw: &Gateway, body: &str) -> String {
    let text = std::fs::read_to_string(gw.config_path()).expect("read config");
    text.strip_suffix(body)
        .expect("config ends with the body")
        .to_string()
}

async fn wait_log(gw: &Gateway, needle: &str) {
    let seen = common::eventually(Duration::from_secs(10), || gw.log().contains(needle)).await;
    assert!(seen, "the log never said {needle:?}:\n{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_hanging_reload_stops_the_process_at_once() {
    let events = Upstream::start(Behavior::endless(Duration::from_millis(50))).await;
    let mut gw = Gateway::start_with(QUICK_SHUTDOWN, &config(&events)).await;
    make_fifo(gw.config_path());
    gw.signal("HUP");
    // The reload has opened the file and waits for content that never comes.
    let _hanging = reload_reading(&gw).await;
    let mut stream = client::get(gw.addr, "/events").await.unwrap();
    assert_eq!(stream.status, 200, "requests are served during the reload");
    stream.next_event().await.unwrap().expect("an event");

    let signalled = Instant::now();
    gw.signal("TERM");
    let exited = gw.wait_exit(Duration::from_secs(10)).await;
    let log = gw.log();
    let status = exited.unwrap_or_else(|| panic!("SIGTERM went unheeded during a reload:\n{log}"));
    assert!(status.success(), "exit {status}:\n{log}");
    // One second of grace, one to stop the runtimes, and some slack for a busy machine.
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "exit took {:?}:\n{log}",
        signalled.elapsed()
    );
    assert!(
        log.contains("SIGTERM received, gracefully exiting"),
        "{log}"
    );
    assert!(
        !log.contains("reload: "),
        "the reload was still waiting when the process stopped:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighups_during_a_reload_are_followed_by_exactly_one_more() {
    let events = Upstream::start(Behavior::endless(Duration::from_millis(50))).await;
    let added = Upstream::start(Behavior::Text("added".into())).await;
    let body = config(&events);
    let gw = Gateway::start(&body).await;
    let header = header(&gw, &body);
    let with_added = format!(
        "{header}upstreams:\n  events:\n    peers: [{}]\n  added:\n    peers: [{}]\n\
         routes:\n  - {{ name: events, match: {{ path_prefix: /events }}, upstream: events, sse: true }}\n  \
         - {{ name: added, match: {{ path_prefix: /added }}, upstream: added }}\n",
        events.addr, added.addr
    );
    make_fifo(gw.config_path());
    gw.signal("HUP");
    let first = reload_reading(&gw).await;

    // Both are taken in while the first reload waits: one queues a reload, the other joins it.
    gw.signal("HUP");
    wait_log(&gw, "another reload follows it").await;
    gw.signal("HUP");
    wait_log(&gw, "already queued after it covers this one").await;

    feed(first, &with_added);
    gw.expect_metric("ssegate_config_reloads_total{result=\"ok\"}", 1.0)
        .await;
    let added_status = client::get(gw.addr, "/added").await.unwrap().status;
    assert_eq!(added_status, 200, "the first reload is in force");

    // The queued reload reads the file after the first one ended.
    let second = reload_reading(&gw).await;
    // Any reload after this one would read a broken config, and count it.
    let broken = gw.config_path().with_extension("broken");
    std::fs::write(&broken, format!("{header}routes: nonsense\n")).expect("write config");
    std::fs::rename(&broken, gw.config_path()).expect("replace the FIFO");
    feed(second, &with_added);
    gw.expect_metric("ssegate_config_reloads_total{result=\"ok\"}", 1.0 + 1.0)
        .await;
    let invalid = "ssegate_config_reloads_total{result=\"invalid\"}";
    let third = common::eventually_async(Duration::from_secs(1), || async {
        gw.metric(invalid).await != Some(0.0)
    })
    .await;
    assert!(!third, "a third reload ran:\n{}", gw.log());

    // The broken file is there to be read: a SIGHUP now does count it.
    gw.signal("HUP");
    gw.expect_metric(invalid, 1.0).await;
}

/// Two plain routes, `a` and `b`, each with its own upstream; `b` only if `with_b`.
fn two_routes(a: &Upstream, b: &Upstream, b_sse: bool, with_b: bool) -> String {
    let mut text = format!(
        "upstreams:\n  a:\n    peers: [{}]\n  b:\n    peers: [{}]\n\
         routes:\n  - {{ name: a, match: {{ path_prefix: /a }}, upstream: a }}\n",
        a.addr, b.addr
    );
    if with_b {
        text.push_str(&format!(
            "  - {{ name: b, match: {{ path_prefix: /b }}, upstream: b, sse: {b_sse} }}\n"
        ));
    }
    text
}

/// The exported lines that carry the label `route="b"`.
async fn route_b_series(gw: &Gateway) -> Vec<String> {
    gw.scrape()
        .await
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("route=\"b\""))
        .map(str::to_string)
        .collect()
}

/// Waits until no series of route `b` is exported.
async fn expect_no_route_b(gw: &Gateway) {
    let left = std::cell::RefCell::new(Vec::new());
    let gone = common::eventually_async(Duration::from_secs(10), || async {
        *left.borrow_mut() = route_b_series(gw).await;
        left.borrow().is_empty()
    })
    .await;
    let left = left.borrow();
    assert!(
        gone,
        "{} series of the removed route remain, e.g. {:?}",
        left.len(),
        &left[..left.len().min(3)]
    );
}

async fn get_ok(gw: &Gateway, path: &str) {
    let resp = client::get(gw.addr, path).await.unwrap();
    assert_eq!(resp.status, 200, "GET {path}");
    resp.text().await.unwrap();
}

const A_OK: &str = "ssegate_requests_total{route=\"a\",status=\"200\"}";
const A_DURATIONS: &str = "ssegate_request_duration_seconds_count{route=\"a\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_a_route_drops_its_series_and_keeps_the_others_counting() {
    let a = Upstream::start(Behavior::Text("a".into())).await;
    let b = Upstream::start(Behavior::Text("b".into())).await;
    let gw = Gateway::start(&two_routes(&a, &b, false, true)).await;
    for _ in 0..3 {
        get_ok(&gw, "/a").await;
    }
    for _ in 0..2 {
        get_ok(&gw, "/b").await;
    }
    gw.expect_metric(A_OK, 3.0).await;
    gw.expect_metric(A_DURATIONS, 3.0).await;
    gw.expect_metric("ssegate_requests_total{route=\"b\",status=\"200\"}", 2.0)
        .await;
    assert!(
        route_b_series(&gw).await.len() > 5,
        "route b exports its series before the reload"
    );

    gw.rewrite_config(&two_routes(&a, &b, false, false));
    gw.signal("HUP");
    gw.expect_metric("ssegate_config_reloads_total{result=\"ok\"}", 1.0)
        .await;
    expect_no_route_b(&gw).await;
    assert_eq!(client::get(gw.addr, "/b").await.unwrap().status, 404);

    // Route a kept its series: the counts go on from where they were.
    assert_eq!(
        gw.metric(A_OK).await,
        Some(3.0),
        "route a's count was reset"
    );
    assert_eq!(gw.metric(A_DURATIONS).await, Some(3.0));
    get_ok(&gw, "/a").await;
    gw.expect_metric(A_OK, 4.0).await;
    gw.expect_metric(A_DURATIONS, 4.0).await;
}

/// Routes `a` and `b`, a stream open on `b`, then a reload that removes `b`.
struct StreamOnRemovedRoute {
    a: Upstream,
    b: Upstream,
    gw: Gateway,
    stream: Response,
    /// The id of the stream's last event read.
    last: [u64; 1],
}

async fn stream_on_removed_route() -> StreamOnRemovedRoute {
    let a = Upstream::start(Behavior::Text("a".into())).await;
    let b = Upstream::start(Behavior::endless(Duration::from_millis(50))).await;
    let gw = Gateway::start(&two_routes(&a, &b, true, true)).await;
    let mut stream = client::get(gw.addr, "/b").await.unwrap();
    let mut last = [0];
    read_on(std::slice::from_mut(&mut stream), &mut last, 2).await;

    gw.rewrite_config(&two_routes(&a, &b, true, false));
    gw.signal("HUP");
    gw.expect_metric("ssegate_config_reloads_total{result=\"ok\"}", 1.0)
        .await;
    StreamOnRemovedRoute {
        a,
        b,
        gw,
        stream,
        last,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_route_keeps_its_series_until_its_last_stream_ends() {
    // The upstreams are held to the end: dropping them stops them.
    let StreamOnRemovedRoute {
        a: _a,
        b: _b,
        gw,
        mut stream,
        mut last,
    } = stream_on_removed_route().await;
    assert_eq!(client::get(gw.addr, "/b").await.unwrap().status, 404);

    // The stream runs on and is still counted under its route.
    read_on(std::slice::from_mut(&mut stream), &mut last, 3).await;
    gw.expect_metric("ssegate_streams_active{route=\"b\"}", 1.0)
        .await;
    let events = gw
        .metric("ssegate_stream_events_total{route=\"b\"}")
        .await
        .expect("route b's event count while its stream is open");
    assert!(events >= 5.0, "{events} events counted");

    drop(stream);
    expect_no_route_b(&gw).await;
    gw.expect_metric("ssegate_streams_total{route=\"a\"}", 0.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_removed_and_added_back_while_its_stream_is_open_keeps_its_series() {
    let StreamOnRemovedRoute {
        a, b, gw, stream, ..
    } = stream_on_removed_route().await;
    gw.rewrite_config(&two_routes(&a, &b, true, true));
    gw.signal("HUP");
    gw.expect_metric("ssegate_config_reloads_total{result=\"ok\"}", 2.0)
        .await;

    // The stream opened before both reloads ends; route b is configured again, so its series
    // stay, and go on counting.
    drop(stream);
    gw.expect_metric("ssegate_streams_active{route=\"b\"}", 0.0)
        .await;
    gw.expect_metric(
        "ssegate_stream_closed_total{reason=\"client_gone\",route=\"b\"}",
        1.0,
    )
    .await;
    let mut again = client::get(gw.addr, "/b").await.unwrap();
    again.next_event().await.unwrap().expect("an event");
    gw.expect_metric("ssegate_streams_total{route=\"b\"}", 2.0)
        .await;
    gw.expect_metric("ssegate_streams_active{route=\"b\"}", 1.0)
        .await;
}
