//! The validated configuration the proxy runs on.
//!
//! Everything here has been checked by [`super::validate`]: addresses parse, durations are
//! durations, every route names an upstream that exists (by index), names are unique.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pingora_core::server::configuration::ServerConf;

#[derive(Debug)]
pub struct Config {
    /// The file it was read from, for messages.
    pub source: PathBuf,
    /// SHA-256 of the file's bytes, hex; the `sha256` label of `ssegate_config_info`.
    pub sha256: String,
    /// Pingora's own server settings.
    pub server: ServerConf,
    pub listeners: Vec<Listener>,
    pub metrics_address: SocketAddr,
    /// After `SIGTERM`: how long `/healthz` answers 503 while the listeners still accept, before
    /// they close and the drain begins, so that balancers stop sending new clients first.
    pub unready_delay: Duration,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    /// Settings that are valid but contradict each other; printed by `-t` and logged at
    /// start-up and on reload, and refused with `--strict` ([`super::strict`]).
    pub warnings: Vec<super::Problem>,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    pub peers: Vec<SocketAddr>,
    pub balance: Balance,
    pub health_check: Option<HealthCheck>,
    pub connect_timeout: Duration,
    /// Per-read timeout for non-streaming responses (and the response header of streams).
    pub read_timeout: Duration,
    /// `Some(sni)` to speak TLS to the peers.
    pub tls: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Random,
    /// Hash of the client address, so a client keeps its peer while the peer set is stable.
    ConsistentHash,
    /// The healthy peer with the fewest streams open through this process; ties go round robin.
    LeastStreams,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `Some(path)`: an HTTP GET that must answer 200; `None`: a TCP connect.
    pub http_path: Option<String>,
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// Upper-case method names; `None` matches any method.
    pub methods: Option<Vec<String>>,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// `Some` on routes marked `sse`.
    pub sse: Option<SsePolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower-case host name.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches one or more labels in front of it.
    Wildcard(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// A prefix matched on segment boundaries; stored without a trailing `/` (except `/` itself).
    Prefix(String),
}

/// The `sse:` options of a marked route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsePolicy {
    pub heartbeat: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// How long one write to the client may wait for it to accept data; a client that reads
    /// nothing for this long is dropped rather than holding its stream and upstream forever.
    pub write_timeout: Duration,
    pub max_streams: Option<u64>,
    /// How many streams one client may hold open on the route at once.
    pub max_streams_per_client: Option<u64>,
    /// What identifies a client for `max_streams_per_client`.
    pub client_key: ClientKey,
    /// How long a stream may stay open, give or take 10 % per stream; then it is ended at an
    /// event boundary with a `retry:` line, as a drain does, so its client reconnects (through
    /// whatever balances instances, maybe to another one) and resumes.
    pub max_lifetime: Option<Duration>,
}

/// What identifies a client for a per-client stream cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKey {
    /// The client's IP address (the TCP peer of ssegate).
    Ip,
    /// The value of this request header (lower-case name); a request without it is keyed by
    /// its IP address.
    Header(http::HeaderName),
}

/// How long a write to a client may block, when a route does not say: nginx's `send_timeout`.
pub const DEFAULT_CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for SsePolicy {
    fn default() -> Self {
        SsePolicy {
            heartbeat: None,
            idle_timeout: None,
            write_timeout: DEFAULT_CLIENT_WRITE_TIMEOUT,
            max_streams: None,
            max_streams_per_client: None,
            client_key: ClientKey::Ip,
            max_lifetime: None,
        }
    }
}

impl Config {
    /// The one-line summary `-t` prints for a valid file.
    pub fn summary(&self) -> String {
        let streams = self.routes.iter().filter(|r| r.sse.is_some()).count();
        let listeners: Vec<String> = self
            .listeners
            .iter()
            .map(|l| match l.tls {
                Some(_) => format!("{} (tls)", l.address),
                None => l.address.to_string(),
            })
            .collect();
        let warnings = match self.warnings.len() {
            0 => String::new(),
            1 => ", 1 warning".to_string(),
            n => format!(", {n} warnings"),
        };
        format!(
            "{}: ok: {} routes ({} sse), {} upstreams, listeners {}, metrics {}{warnings}",
            self.source.display(),
            self.routes.len(),
            streams,
            self.upstreams.len(),
            listeners.join(", "),
            self.metrics_address,
        )
    }
}
