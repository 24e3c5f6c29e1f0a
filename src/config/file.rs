//! The config file format: what serde reads from YAML, before any checking.
//!
//! These types mirror the YAML one to one and reject unknown keys. Durations and addresses stay
//! strings here so that [`super::validate`] can check all of them and report every bad one with
//! its position, rather than stopping at the first.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Pingora's own `ServerConf`, passed through after its keys are checked.
    #[serde(default)]
    pub pingora: Option<serde_yaml::Value>,
    #[serde(default)]
    pub listeners: Vec<ListenerFile>,
    #[serde(default)]
    pub metrics: Option<MetricsFile>,
    #[serde(default)]
    pub shutdown: Option<ShutdownFile>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub address: String,
    #[serde(default)]
    pub tls: Option<ListenerTlsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsFile {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    pub address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownFile {
    #[serde(default)]
    pub unready_delay: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub peers: Vec<String>,
    #[serde(default)]
    pub balance: Option<String>,
    #[serde(default)]
    pub health_check: Option<HealthCheckFile>,
    #[serde(default)]
    pub connect_timeout: Option<String>,
    #[serde(default)]
    pub read_timeout: Option<String>,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub sni: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: MatchFile,
    pub upstream: String,
    /// `true`/`false`, or a map of [`SseOptionsFile`].
    #[serde(default)]
    pub sse: Option<SseFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "`sse` must be true, false, or a map with heartbeat, idle_timeout, write_timeout, max_streams, max_streams_per_client, client_key, max_lifetime"
)]
pub enum SseFile {
    Enabled(bool),
    Options(SseOptionsFile),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SseOptionsFile {
    #[serde(default)]
    pub heartbeat: Option<String>,
    #[serde(default)]
    pub idle_timeout: Option<String>,
    #[serde(default)]
    pub write_timeout: Option<String>,
    #[serde(default)]
    pub max_streams: Option<u64>,
    #[serde(default)]
    pub max_streams_per_client: Option<u64>,
    /// `ip`, or `header:NAME`.
    #[serde(default)]
    pub client_key: Option<String>,
    #[serde(default)]
    pub max_lifetime: Option<String>,
}
