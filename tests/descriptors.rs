//! Room for descriptors at start (`src/lifecycle/descriptors.rs`): the soft open-file limit is
//! raised to the hard one, and the descriptor table is sized for it, so that a burst of streams
//! neither hits a limit of 1 024 nor stalls while the kernel grows the table.

mod common;

use std::time::Duration;

use common::gateway::Gateway;
use common::upstream::{Behavior, Upstream};

/// The soft and hard open-file limits of process `pid`, from `/proc/PID/limits`.
fn nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/PID/limits");
    let mut values = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse().expect("a numeric limit"));
    (values.next().unwrap(), values.next().unwrap())
}

fn soft_nofile(pid: u32) -> u64 {
    nofile(pid).0
}

/// The one test that changes this test process's own limit (children inherit it); the other
/// test in this file only reads its gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_open_file_limit_is_raised_to_the_hard_limit_at_start() {
    let (_, hard) = nofile(std::process::id());
    let lowered = libc::rlimit {
        rlim_cur: (hard / 2).min(1024),
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
    let upstream = Upstream::start(Behavior::Text("ok".to_string())).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  up:\n    peers: [{}]\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: up }}\n",
        upstream.addr
    ))
    .await;
    let raised =
        common::eventually(Duration::from_secs(5), || nofile(gw.pid()) == (hard, hard)).await;
    assert!(
        raised,
        "started with a soft limit of {} under {hard}; now {:?}\n{}",
        lowered.rlim_cur,
        nofile(gw.pid()),
        gw.log()
    );
    let line = format!("open-file limit raised from {} to {hard}", lowered.rlim_cur);
    assert!(
        gw.log().contains(&line),
        "no `{line}` in the log:\n{}",
        gw.log()
    );
    // What operators see of it.
    gw.expect_metric("process_max_fds", hard as f64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_descriptor_table_is_sized_for_the_open_file_limit_at_start() {
    let upstream = Upstream::start(Behavior::Text("ok".to_string())).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  up:\n    peers: [{}]\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: up }}\n",
        upstream.addr
    ))
    .await;
    let wanted = soft_nofile(gw.pid()).min(64 * 1024);
    // A fresh process's table holds 64 or 256 slots; without the reservation it grows only
    // as descriptors are opened, and this gateway has opened a few dozen.
    let reserved = common::eventually(Duration::from_secs(5), || {
        gw.status_field("FDSize") >= wanted
    })
    .await;
    assert!(
        reserved,
        "FDSize {} for a soft limit of {wanted}",
        gw.status_field("FDSize")
    );
}
