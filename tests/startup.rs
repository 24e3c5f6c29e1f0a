//! Start-up: an address that is already taken stops ssegate at once, with a message that names
//! it, instead of a bind retried in the log for half a minute.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::free_port;
use common::gateway::{Gateway, BIN};

/// Longer than a failed start needs by far; shorter than Pingora's 30 bind attempts.
const EXIT_WITHIN: Duration = Duration::from_secs(15);

fn config(dir: &std::path::Path, listener: SocketAddr, metrics: SocketAddr) -> String {
    format!(
        "pingora:\n  pid_file: {d}/ssegate.pid\n  upgrade_sock: {d}/upgrade.sock\n\
         listeners:\n  - address: {listener}\nmetrics:\n  address: {metrics}\n\
         upstreams:\n  u:\n    peers: [127.0.0.1:9]\n\
         routes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n",
        d = dir.display()
    )
}

/// Runs ssegate on `config` and returns how it exited; fails the test if it is still running
/// after [`EXIT_WITHIN`].
fn run_to_exit(config: &str) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ssegate.yaml");
    std::fs::write(&path, config).expect("write config");
    let child = Command::new(BIN)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssegate");
    let pid = child.id();
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match exited.recv_timeout(EXIT_WITHIN) {
        Ok(output) => output.expect("wait for ssegate"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("ssegate was still running {EXIT_WITHIN:?} after start on a taken address");
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn assert_refused(output: &Output, address: SocketAddr) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "exit {}:\n{stderr}",
        output.status
    );
    let expected = format!("ssegate: cannot listen on {address}: address in use");
    assert!(
        stderr.lines().any(|l| l == expected),
        "no line `{expected}` in:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ssegate_on_the_same_addresses_exits_at_once() {
    let first = Gateway::start(
        "upstreams:\n  u:\n    peers: [127.0.0.1:9]\n\
         routes:\n  - { name: all, match: { path_prefix: / }, upstream: u }\n",
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let output = tokio::task::spawn_blocking({
        let config = config(dir.path(), first.addr, first.metrics_addr);
        move || run_to_exit(&config)
    })
    .await
    .expect("join");
    assert_refused(&output, first.addr);
    // The first one serves on.
    let status = common::client::get(first.addr, "/").await.map(|r| r.status);
    assert!(
        matches!(status, Ok(502)),
        "first gateway answered {status:?}"
    );
}

#[test]
fn a_taken_metrics_address_is_refused_too() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let metrics = taken.local_addr().expect("local addr");
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run_to_exit(&config(dir.path(), loopback(free_port()), metrics));
    assert_refused(&output, metrics);
}
