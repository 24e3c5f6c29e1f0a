//! The process's descriptor table is sized when the server starts, so that a burst of streams
//! does not stall while the kernel grows it (see `src/descriptors.rs`).

mod common;

use std::time::Duration;

use common::gateway::Gateway;
use common::upstream::{Behavior, Upstream};

/// The soft open-file limit of process `pid`, from `/proc/PID/limits`.
fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/PID/limits");
    line["Max open files".len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a numeric soft limit")
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
