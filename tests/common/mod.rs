//! Shared test harness: the real `ssegate` binary, a scriptable upstream and a raw HTTP client,
//! all on 127.0.0.1. The wire formats and the poller come from the workspace's test kit.
#![allow(dead_code)]

pub mod client;
pub mod gateway;
pub mod raw;
pub mod upstream;

use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Instant;

pub use testkit::http::find_header;
pub use testkit::{eventually, eventually_async, poll};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// An address with nothing listening on it.
pub fn dead_peer() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A process-wide time origin, so the upstream can stamp events and the client can measure
/// how long each took to arrive.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub fn micros_since_epoch() -> u64 {
    epoch().elapsed().as_micros() as u64
}
