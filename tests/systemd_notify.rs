//! systemd's notify protocol, against a socket the test binds as `NOTIFY_SOCKET`: `READY=1` only
//! once the listeners accept, `RELOADING=1` … `READY=1` around a SIGHUP reload, `STOPPING=1` on
//! SIGTERM, `MAINPID=` and `READY=1` from the new process of a graceful upgrade (and no
//! `STOPPING=1` from the old one), `WATCHDOG=1` pings with `WATCHDOG_USEC` set; and silence
//! without `NOTIFY_SOCKET`.
//!
//! Each message is recorded with its sender's PID as the kernel reports it, as systemd reads it.

mod common;

use std::io::Write;
use std::time::Duration;

use common::client;
use common::gateway::Gateway;
use common::held_reload::{make_fifo, reload_reading};
use common::notify::{Message, NotifySocket};
use common::upstream::{Behavior, Upstream};

const QUICK_SHUTDOWN: &str = "  grace_period_seconds: 2\n  graceful_shutdown_timeout_seconds: 1\n";
const WAIT: Duration = Duration::from_secs(15);

fn config(plain: &Upstream, added: Option<&Upstream>) -> String {
    let mut yaml = format!("upstreams:\n  plain:\n    peers: [{}]\n", plain.addr);
    if let Some(added) = added {
        yaml.push_str(&format!("  added:\n    peers: [{}]\n", added.addr));
    }
    yaml.push_str(
        "routes:\n  - { name: plain, match: { path_prefix: /plain }, upstream: plain }\n",
    );
    if added.is_some() {
        yaml.push_str("  - { name: added, match: { path_prefix: /added }, upstream: added }\n");
    }
    yaml
}

async fn start(notify: &NotifySocket, extra_env: &[(&str, &str)], body: &str) -> Gateway {
    let mut env = vec![("NOTIFY_SOCKET", notify.path())];
    env.extend_from_slice(extra_env);
    Gateway::start_env(QUICK_SHUTDOWN, "", &env, body).await
}

fn is_ready(m: &Message) -> bool {
    m.has("READY", "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_sent_once_every_listener_accepts() {
    let plain = Upstream::start(Behavior::Text("plain".into())).await;
    let notify = NotifySocket::bind();
    let gw = start(&notify, &[], &config(&plain, None)).await;

    let ready = notify.wait_for(gw.pid(), "READY", "1", WAIT).await;
    assert!(
        ready.accepting.contains(&gw.addr) && ready.accepting.contains(&gw.metrics_addr),
        "READY=1 came before {} and {} both accepted: accepting then {:?}",
        gw.addr,
        gw.metrics_addr,
        ready.accepting
    );
    assert_eq!(ready.get("MAINPID"), Some(gw.pid().to_string().as_str()));
    let first = &notify.from(gw.pid())[0];
    assert!(is_ready(first), "READY=1 is the first message: {first:?}");
    assert_eq!(client::get(gw.addr, "/plain").await.unwrap().status, 200);
    // No watchdog without WATCHDOG_USEC, and nothing else while serving.
    assert_eq!(notify.from(gw.pid()).len(), 1, "{:#?}", notify.messages());
    assert!(gw.log().contains("told the service manager: ready"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_reload_is_reported_as_reloading_until_it_ends() {
    let plain = Upstream::start(Behavior::Text("plain".into())).await;
    let added = Upstream::start(Behavior::Text("added".into())).await;
    let notify = NotifySocket::bind();
    let body = config(&plain, None);
    let gw = start(&notify, &[], &body).await;
    let pid = gw.pid();
    notify.wait_for(pid, "READY", "1", WAIT).await;

    // A reload that hangs on reading the file: RELOADING=1 and no READY=1 while it reads.
    let text = std::fs::read_to_string(gw.config_path()).expect("read config");
    let header = text.strip_suffix(&body).expect("config ends with the body");
    make_fifo(gw.config_path());
    gw.signal("HUP");
    let mut fifo = reload_reading(&gw).await;
    let reloading = notify.wait_for(pid, "RELOADING", "1", WAIT).await;
    let usec: i128 = reloading
        .get("MONOTONIC_USEC")
        .expect("MONOTONIC_USEC with RELOADING=1")
        .parse()
        .expect("MONOTONIC_USEC is a number");
    let now = monotonic_usec();
    assert!(
        usec > 0 && usec <= now && now - usec < 60_000_000,
        "MONOTONIC_USEC={usec} is this boot's monotonic clock (now {now})"
    );
    assert_eq!(
        notify.from(pid).iter().filter(|m| is_ready(m)).count(),
        1,
        "no READY=1 while the reload runs: {:#?}",
        notify.messages()
    );

    // The reload ends: READY=1, and by then the new route answers.
    fifo.write_all(format!("{header}{}", config(&plain, Some(&added))).as_bytes())
        .expect("write the config");
    drop(fifo);
    let ready = notify.wait_nth(pid, 2, "READY=1", WAIT, is_ready).await;
    assert!(ready.at > reloading.at);
    assert!(
        ready.get("STATUS").unwrap().contains("reloaded"),
        "{ready:?}"
    );
    let resp = client::get(gw.addr, "/added").await.unwrap();
    assert_eq!(resp.status, 200);

    // A broken file: the same bracket, and the status says it was rejected.
    std::fs::remove_file(gw.config_path()).expect("remove the FIFO");
    std::fs::write(gw.config_path(), format!("{header}routes: [oops\n")).expect("write");
    gw.signal("HUP");
    notify
        .wait_nth(pid, 2, "second RELOADING=1", WAIT, |m| {
            m.has("RELOADING", "1")
        })
        .await;
    let ready = notify.wait_nth(pid, 3, "READY=1", WAIT, is_ready).await;
    assert!(
        ready.get("STATUS").unwrap().contains("rejected"),
        "{ready:?}"
    );
    assert_eq!(client::get(gw.addr, "/added").await.unwrap().status, 200);
    let kinds: Vec<bool> = notify
        .from(pid)
        .iter()
        .map(|m| m.has("RELOADING", "1"))
        .collect();
    assert_eq!(
        kinds,
        [false, true, false, true, false],
        "{:#?}",
        notify.messages()
    );
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd reads it.
fn monotonic_usec() -> i128 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct it is given.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) },
        0
    );
    i128::from(now.tv_sec) * 1_000_000 + i128::from(now.tv_nsec) / 1_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_stopping_and_the_watchdog_stops() {
    let plain = Upstream::start(Behavior::Text("plain".into())).await;
    let notify = NotifySocket::bind();
    // 1 s: pings every 500 ms.
    let mut gw = start(
        &notify,
        &[("WATCHDOG_USEC", "1000000")],
        &config(&plain, None),
    )
    .await;
    let pid = gw.pid();
    let ready = notify.wait_for(pid, "READY", "1", WAIT).await;
    let fourth = notify
        .wait_nth(pid, 4, "WATCHDOG=1", WAIT, |m| m.has("WATCHDOG", "1"))
        .await;
    assert!(fourth.at > ready.at);
    let pings: Vec<_> = notify
        .from(pid)
        .into_iter()
        .filter(|m| m.has("WATCHDOG", "1"))
        .collect();
    assert!(
        pings[0].at >= ready.at,
        "no ping before READY=1: {:#?}",
        notify.messages()
    );
    // Half the interval apart: well within WATCHDOG_USEC, and not a burst. Arrival times carry
    // the receiving thread's scheduling delays, hence the slack.
    for pair in pings.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(350) && gap < Duration::from_secs(1),
            "pings {gap:?} apart"
        );
    }
    assert!(gw
        .log()
        .contains("watchdog: WatchdogSec=1s, pinging every 500ms"));

    gw.signal("TERM");
    let stopping = notify.wait_for(pid, "STOPPING", "1", WAIT).await;
    assert!(gw.wait_exit(WAIT).await.is_some(), "ssegate did not exit");
    let after: Vec<_> = notify
        .from(pid)
        .into_iter()
        .filter(|m| m.at > stopping.at)
        .collect();
    assert!(
        after.is_empty(),
        "nothing after STOPPING=1 (no ping, no READY=1): {after:#?}"
    );
    assert!(gw.log().contains("draining: open streams end within"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_process_of_an_upgrade_becomes_the_main_pid() {
    let plain = Upstream::start(Behavior::Text("plain".into())).await;
    let notify = NotifySocket::bind();
    let env = [
        ("NOTIFY_SOCKET", notify.path()),
        ("WATCHDOG_USEC", "400000"),
    ];
    let body = config(&plain, None);
    let mut old = Gateway::start_env(QUICK_SHUTDOWN, "", &env, &body).await;
    let old_pid = old.pid();
    notify.wait_for(old_pid, "READY", "1", WAIT).await;

    let mut new = old.start_upgrade_env(&env, &body);
    let new_pid = new.pid();
    new.wait_upgrade_listening().await;
    assert!(
        notify.from(new_pid).is_empty(),
        "the new process says nothing before it has the sockets"
    );
    old.signal("QUIT");

    let ready = notify.wait_for(new_pid, "READY", "1", WAIT).await;
    assert_eq!(ready.get("MAINPID"), Some(new_pid.to_string().as_str()));
    assert!(
        ready.accepting.contains(&old.addr) && ready.accepting.contains(&old.metrics_addr),
        "the new process listens on both addresses when it says READY=1: {:?}",
        ready.accepting
    );
    let handing_over = notify
        .wait_nth(old_pid, 1, "the old process's upgrade status", WAIT, |m| {
            m.get("STATUS").is_some_and(|s| s.starts_with("upgrading"))
        })
        .await;
    notify
        .wait_nth(new_pid, 2, "WATCHDOG=1 from the new process", WAIT, |m| {
            m.has("WATCHDOG", "1")
        })
        .await;

    assert!(old.wait_exit(WAIT).await.is_some(), "the old process exits");
    let from_old = notify.from(old_pid);
    assert!(
        !from_old.iter().any(|m| m.has("STOPPING", "1")),
        "the old process of an upgrade must not send STOPPING=1: {from_old:#?}"
    );
    assert!(
        !from_old
            .iter()
            .any(|m| m.at > handing_over.at && m.has("WATCHDOG", "1")),
        "the old process stops its watchdog pings at the hand-over: {from_old:#?}"
    );
    assert!(new.is_running());
    assert_eq!(client::get(old.addr, "/plain").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notify_socket_nothing_is_sent_or_logged() {
    let plain = Upstream::start(Behavior::Text("plain".into())).await;
    let mut gw = Gateway::start_env(
        QUICK_SHUTDOWN,
        "",
        &[("WATCHDOG_USEC", "200000")],
        &config(&plain, None),
    )
    .await;
    assert_eq!(client::get(gw.addr, "/plain").await.unwrap().status, 200);
    gw.signal("HUP");
    let log_has = |gw: &Gateway, s: &str| gw.log().contains(s);
    assert!(
        common::eventually(WAIT, || log_has(&gw, "reload: ")).await,
        "{}",
        gw.log()
    );
    gw.signal("TERM");
    assert!(gw.wait_exit(WAIT).await.is_some());
    let log = gw.log();
    assert!(!log.contains("service manager"), "{log}");
    assert!(!log.contains("watchdog"), "{log}");
    assert!(!log.contains("WARN"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_notify_socket_is_one_warning_and_serving_goes_on() {
    let plain = Upstream::start(Behavior::Text("plain".into())).await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such.sock");
    let gw = Gateway::start_env(
        QUICK_SHUTDOWN,
        "",
        &[
            ("NOTIFY_SOCKET", missing.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
        &config(&plain, None),
    )
    .await;
    // The watchdog keeps trying every 100 ms; one warning, then debug lines (not shown at info).
    assert!(
        common::eventually(WAIT, || gw
            .log()
            .contains("cannot notify the service manager"))
        .await,
        "{}",
        gw.log()
    );
    assert_eq!(client::get(gw.addr, "/plain").await.unwrap().status, 200);
    gw.signal("HUP");
    assert!(common::eventually(WAIT, || gw.log().contains("reload: ")).await);
    let warnings = gw
        .log()
        .matches("cannot notify the service manager")
        .count();
    assert_eq!(warnings, 1, "{}", gw.log());
}
