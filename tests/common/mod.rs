//! Shared test harness: the real `ssegate` binary, a scriptable upstream and a raw HTTP client,
//! all on 127.0.0.1. The wire formats and the poller come from the workspace's test kit.
#![allow(dead_code)]

pub mod client;
pub mod gateway;
pub mod held_reload;
pub mod notify;
pub mod raw;
pub mod tls;
pub mod upstream;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

pub use testkit::http::find_header;
pub use testkit::{eventually, eventually_async, poll};

/// A port that was free a moment ago, for a process the test starts to bind.
///
/// It lies below the kernel's ephemeral range, so that no `bind(0)` (the tests' own upstreams)
/// and no outgoing connection can take it between this check and the process's bind: a port
/// from that range could be handed to another test's upstream meanwhile, and the test would
/// talk to that upstream instead. Ports go round the range from a place that depends on the
/// process, so that the test binaries (and other users of the machine) rarely meet.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = (10_000, ephemeral_start());
    let span = high.saturating_sub(low).max(1);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(low + offset) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {low} and {high}");
}

/// The first port of the kernel's ephemeral range (`ip_local_port_range`).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .filter(|&start| start > 10_000 + 1_000)
        .unwrap_or(32_768)
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
