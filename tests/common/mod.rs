//! Shared test harness: the real `ssegate` binary, a scriptable upstream and a raw HTTP client,
//! all on 127.0.0.1.
#![allow(dead_code)]

pub mod client;
pub mod gateway;
pub mod raw;
pub mod upstream;

use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// The header lines of an HTTP head, as lower-cased names and trimmed values, in order.
pub fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// The status and headers of a response head (without its final blank line).
pub fn parse_response_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, parse_headers(lines))
}

/// The first value of header `name` (lower-case).
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Polls `check` until it is true or `timeout` passes; returns whether it became true.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}
