//! One access-log line per request (SPEC §7), written through `log` under target `access`.
//!
//! Fields are `key=value`; the request path is quoted and escaped, so a client cannot forge
//! extra fields or lines.

use std::net::SocketAddr;
use std::time::Duration;

/// What one finished request looked like.
pub struct Entry<'a> {
    pub client: Option<String>,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    /// 0 when no response could be sent.
    pub status: u16,
    pub peer: Option<SocketAddr>,
    pub duration: Duration,
    pub bytes: usize,
    /// `(events, close reason)` for streams.
    pub stream: Option<(u64, &'static str)>,
    pub error: Option<String>,
}

/// Whether access-log lines are written at all (`RUST_LOG` may turn target `access` off); when
/// not, callers skip building the [`Entry`].
pub fn enabled() -> bool {
    log::log_enabled!(target: "access", log::Level::Info)
}

pub fn write(e: &Entry<'_>) {
    let mut line = format!(
        "client={} method={} path={:?} route={} status={} peer={} duration_ms={:.1} bytes={}",
        e.client.as_deref().unwrap_or("-"),
        e.method,
        e.path,
        e.route,
        e.status,
        e.peer.map_or_else(|| "-".to_string(), |p| p.to_string()),
        e.duration.as_secs_f64() * 1000.0,
        e.bytes,
    );
    if let Some((events, close)) = e.stream {
        line.push_str(&format!(" events={events} close={close}"));
    }
    if let Some(error) = &e.error {
        line.push_str(&format!(" error={error:?}"));
    }
    log::info!(target: "access", "{line}");
}
