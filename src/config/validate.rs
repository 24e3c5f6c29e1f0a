//! Turns the file format into the validated model, collecting every problem with its position.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use pingora_core::server::configuration::ServerConf;
use sha2::{Digest, Sha256};

use super::file::{ConfigFile, ListenerFile, RouteFile, SseFile, UpstreamFile};
use super::locate::{Locator, Position};
use super::model::{
    Balance, ClientKey, Config, HealthCheck, HostMatch, Listener, ListenerTls, PathMatch, Route,
    SsePolicy, Upstream, DEFAULT_CLIENT_WRITE_TIMEOUT,
};
use super::{duration, Problem};

const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9464";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Pingora's own defaults put these in `/tmp/pingora*`; ssegate's name them after itself so two
/// different Pingora programs on one host do not collide.
const DEFAULT_PID_FILE: &str = "/tmp/ssegate.pid";
const DEFAULT_UPGRADE_SOCK: &str = "/tmp/ssegate_upgrade.sock";
/// Pingora waits 300 s by default before it stops, even with nothing open. For SSE, 30 s lets
/// most LLM answers finish; streams still open are then ended with a `retry:` line (see
/// `drain.rs`), and 5 s is ample for the runtimes to stop after that.
const DEFAULT_GRACE_PERIOD_SECS: u64 = 30;
const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 5;
/// Pingora steals work between the threads of a service by default. A proxy with one thread per
/// core gains nothing from it and pays for it on every wake-up (cross-thread task states and the
/// scheduler's bookkeeping); without it each thread runs its own connections, as nginx's workers
/// do. Measured in the benchmark (docs/benchmark.md, "Build profile and runtime defaults").
const DEFAULT_WORK_STEALING: bool = false;

/// Validates the config text in `bytes`; `path` is only used for relative TLS file paths.
pub fn validate(path: &Path, bytes: &[u8]) -> Result<Config, Vec<Problem>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| vec![problem(None, "", format!("config is not valid UTF-8: {e}"))])?;
    if is_blank(text) {
        return Err(vec![problem(
            None,
            "",
            "config is empty: it needs at least `listeners`, `upstreams` and `routes`",
        )]);
    }
    let file: ConfigFile = serde_yaml::from_str(text).map_err(|e| vec![serde_problem(&e)])?;
    let mut v = Validator {
        locator: Locator::new(text),
        problems: Vec::new(),
        warnings: Vec::new(),
        base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let server = v.server_conf(file.pingora);
    let listeners = v.listeners(&file.listeners);
    let metrics_address = match &file.metrics {
        Some(m) => v.socket_addr("metrics.address", &m.address),
        None => DEFAULT_METRICS_ADDRESS.parse().ok(),
    };
    let unready_delay = v.duration(
        "shutdown.unready_delay",
        file.shutdown
            .as_ref()
            .and_then(|s| s.unready_delay.as_deref()),
        Duration::ZERO,
    );
    let upstreams = v.upstreams(&file.upstreams);
    let routes = v.routes(&file.routes, &upstreams);
    match (v.problems.is_empty(), server, metrics_address) {
        (true, Some(server), Some(metrics_address)) => Ok(Config {
            source: path.to_path_buf(),
            sha256: hex_sha256(bytes),
            server,
            listeners,
            metrics_address,
            unready_delay,
            upstreams,
            routes,
            warnings: in_file_order(v.warnings),
        }),
        _ => Err(in_file_order(v.problems)),
    }
}

/// Problems in file order; those without a position (whole sections) first.
fn in_file_order(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(|p| p.position.map(|pos| (pos.line, pos.column)));
    problems
}

fn is_blank(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---")
}

fn problem(position: Option<Position>, path: &str, message: impl Into<String>) -> Problem {
    Problem {
        position,
        path: path.to_string(),
        message: message.into(),
    }
}

/// serde_yaml's message already names the path; drop its trailing " at line L column C" since
/// the position is printed in front.
fn serde_problem(e: &serde_yaml::Error) -> Problem {
    let text = e.to_string();
    let message = match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let position = e.location().map(|l| Position {
        line: l.line(),
        column: l.column(),
    });
    problem(position, "", message)
}

/// Checks that `path` can be the target of the health check's GET exactly as written. The HTTP
/// types would otherwise change it without a word (a `#...` is cut off) or refuse it, and the
/// check would then probe `/` instead.
fn health_check_path(path: &str) -> Result<(), String> {
    let invalid =
        |reason: String| format!("health check path `{path}` is not a valid URI path: {reason}");
    if !path.starts_with('/') {
        return Err(format!("health check path `{path}` must start with `/`"));
    }
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(invalid(format!(
            "{} is not allowed; percent-encode it",
            match c {
                ' ' => "a space".to_string(),
                c if c.is_control() => format!("the control character `{}`", c.escape_default()),
                c => format!("`{c}`"),
            }
        )));
    }
    if path.contains('#') {
        return Err(invalid(
            "`#` starts a fragment, which is never sent; percent-encode it as `%23`".to_string(),
        ));
    }
    let parsed = http::uri::PathAndQuery::from_str(path).map_err(|e| invalid(e.to_string()))?;
    if parsed.as_str() != path {
        return Err(invalid(format!("it would be sent as `{parsed}`")));
    }
    pingora_http::RequestHeader::build("GET", path.as_bytes(), None)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(())
}

/// A YAML value that is not a string, for a message.
fn describe(value: &serde_yaml::Value) -> String {
    use serde_yaml::Value;
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("the boolean `{b}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(s) => format!("the string `{s}`"),
        Value::Sequence(_) => "a sequence".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged `{}`", t.tag),
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Validator {
    locator: Locator,
    problems: Vec<Problem>,
    /// Valid settings that contradict each other (see [`Config::warnings`]).
    warnings: Vec<Problem>,
    base_dir: PathBuf,
}

impl Validator {
    /// Reports a problem with the value at `path`.
    fn at_value(&mut self, path: &str, message: impl Into<String>) {
        let position = self.locator.nearest(path);
        self.problems.push(problem(position, path, message));
    }

    /// Warns about the value at `path`: valid, but at odds with another setting.
    fn warn_at_value(&mut self, path: &str, message: impl Into<String>) {
        let position = self.locator.nearest(path);
        self.warnings.push(problem(position, path, message));
    }

    /// Reports a problem with the key of the entry at `path` (e.g. an unknown key).
    fn at_key(&mut self, path: &str, message: impl Into<String>) {
        let position = self.locator.key(path).or(self.locator.nearest(path));
        self.problems.push(problem(position, path, message));
    }

    fn duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        match text.map(duration::parse) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(message)) => {
                self.at_value(path, message);
                default
            }
        }
    }

    fn optional_duration(&mut self, path: &str, text: Option<&str>) -> Option<Duration> {
        match duration::parse(text?) {
            Ok(d) if d.is_zero() => {
                self.at_value(path, "must be greater than zero");
                None
            }
            Ok(d) => Some(d),
            Err(message) => {
                self.at_value(path, message);
                None
            }
        }
    }

    fn socket_addr(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.trim().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.at_value(
                    path,
                    format!("invalid address `{text}`: expected IP:PORT, e.g. `127.0.0.1:8080`"),
                );
                None
            }
        }
    }

    /// A peer may be `IP:PORT` or `HOST:PORT`. Host names are resolved here, once per load, and
    /// every address a name resolves to is a peer, in the resolver's order.
    fn peer_addrs(&mut self, path: &str, text: &str) -> Vec<SocketAddr> {
        if let Ok(addr) = text.trim().parse() {
            return vec![addr];
        }
        let well_formed = text
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        let mut resolved: Vec<SocketAddr> = Vec::new();
        if well_formed {
            for addr in text.to_socket_addrs().into_iter().flatten() {
                if !resolved.contains(&addr) {
                    resolved.push(addr);
                }
            }
        }
        if resolved.is_empty() {
            let message = if well_formed {
                format!("peer `{text}` does not resolve to an address")
            } else {
                format!("invalid peer address `{text}`: expected IP:PORT or HOST:PORT")
            };
            self.at_value(path, message);
        }
        resolved
    }

    fn server_conf(&mut self, section: Option<serde_yaml::Value>) -> Option<ServerConf> {
        let mut section = match section {
            None | Some(serde_yaml::Value::Null) => serde_yaml::Mapping::new(),
            Some(serde_yaml::Value::Mapping(m)) => m,
            Some(_) => {
                self.at_value("pingora", "must be a map of Pingora server settings");
                return None;
            }
        };
        // Pingora ignores keys it does not know, so a misspelt `grace_period_secs` would pass
        // silently; check them against the fields ServerConf itself serializes.
        let known = serde_yaml::to_value(ServerConf::default()).ok();
        let known = known.as_ref().and_then(|v| v.as_mapping());
        let mut unnamed = Vec::new();
        for (i, key) in section.keys().enumerate() {
            if known.is_some_and(|k| k.contains_key(key)) {
                continue;
            }
            // Placed by its order in the section: a key that is not a plain string has no name
            // the locator could find it by.
            let position = self
                .locator
                .nth_key("pingora", i)
                .or(self.locator.nearest("pingora"));
            let (path, message) = match key {
                serde_yaml::Value::String(name) => (
                    format!("pingora.{name}"),
                    format!("unknown Pingora server setting `{name}`"),
                ),
                other => {
                    unnamed.push(other.clone());
                    (
                        "pingora".to_string(),
                        format!(
                            "a Pingora server setting is named by a string, not {}",
                            describe(other)
                        ),
                    )
                }
            };
            self.problems.push(problem(position, &path, message));
        }
        // Reported above; Pingora would only report them again, without a position.
        for key in &unnamed {
            section.remove(key);
        }
        let defaults: [(&str, serde_yaml::Value); 5] = [
            ("pid_file", DEFAULT_PID_FILE.into()),
            ("upgrade_sock", DEFAULT_UPGRADE_SOCK.into()),
            ("grace_period_seconds", DEFAULT_GRACE_PERIOD_SECS.into()),
            (
                "graceful_shutdown_timeout_seconds",
                DEFAULT_SHUTDOWN_TIMEOUT_SECS.into(),
            ),
            ("work_stealing", DEFAULT_WORK_STEALING.into()),
        ];
        for (key, default) in defaults {
            section.entry(key.into()).or_insert(default);
        }
        let conf = serde_yaml::from_value::<ServerConf>(serde_yaml::Value::Mapping(section))
            .map_err(|e| e.to_string())
            .and_then(|c| c.validate().map_err(|e| e.to_string()));
        match conf {
            Ok(conf) => Some(conf),
            Err(message) => {
                self.at_value("pingora", message);
                None
            }
        }
    }

    fn listeners(&mut self, listeners: &[ListenerFile]) -> Vec<Listener> {
        if listeners.is_empty() {
            self.at_key("listeners", "at least one listener is required");
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, l) in listeners.iter().enumerate() {
            let path = format!("listeners[{i}].address");
            let Some(address) = self.socket_addr(&path, &l.address) else {
                continue;
            };
            if !seen.insert(address) {
                self.at_value(&path, format!("address {address} is listed twice"));
            }
            let tls = l.tls.as_ref().map(|t| ListenerTls {
                cert: self.base_dir.join(&t.cert),
                key: self.base_dir.join(&t.key),
            });
            out.push(Listener { address, tls });
        }
        out
    }

    fn upstreams(&mut self, upstreams: &BTreeMap<String, UpstreamFile>) -> Vec<Upstream> {
        if upstreams.is_empty() {
            self.at_key("upstreams", "at least one upstream is required");
        }
        upstreams
            .iter()
            .map(|(name, u)| self.upstream(name, u))
            .collect()
    }

    fn upstream(&mut self, name: &str, u: &UpstreamFile) -> Upstream {
        let base = format!("upstreams.{name}");
        if u.peers.is_empty() {
            self.at_value(&format!("{base}.peers"), "at least one peer is required");
        }
        let mut peers: Vec<SocketAddr> = Vec::new();
        for (i, text) in u.peers.iter().enumerate() {
            let path = format!("{base}.peers[{i}]");
            for addr in self.peer_addrs(&path, text) {
                if peers.contains(&addr) {
                    // A peer listed twice would get twice its share of the traffic.
                    let message = if text.trim().parse::<SocketAddr>().is_ok() {
                        format!("peer {addr} is listed twice")
                    } else {
                        format!(
                            "`{text}` resolves to {addr}, which is already a peer of this upstream"
                        )
                    };
                    self.at_value(&path, message);
                } else {
                    peers.push(addr);
                }
            }
        }
        let balance = match u.balance.as_deref() {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("random") => Balance::Random,
            Some("consistent_hash") => Balance::ConsistentHash,
            Some("least_streams") => Balance::LeastStreams,
            Some(other) => {
                self.at_value(
                    &format!("{base}.balance"),
                    format!("unknown balance `{other}`: expected round_robin, random, consistent_hash or least_streams"),
                );
                Balance::RoundRobin
            }
        };
        let health_check = u.health_check.as_ref().map(|hc| {
            if let Some(p) = hc.path.as_deref() {
                if let Err(message) = health_check_path(p) {
                    self.at_value(&format!("{base}.health_check.path"), message);
                }
            }
            HealthCheck {
                http_path: hc.path.clone(),
                interval: self
                    .optional_duration(
                        &format!("{base}.health_check.interval"),
                        hc.interval.as_deref(),
                    )
                    .unwrap_or(DEFAULT_HEALTH_CHECK_INTERVAL),
            }
        });
        let connect_timeout = self.duration(
            &format!("{base}.connect_timeout"),
            u.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
        );
        let read_timeout = self.duration(
            &format!("{base}.read_timeout"),
            u.read_timeout.as_deref(),
            DEFAULT_READ_TIMEOUT,
        );
        if u.sni.is_some() && !u.tls {
            self.at_value(&format!("{base}.sni"), "`sni` needs `tls: true`");
        }
        Upstream {
            name: name.to_string(),
            peers,
            balance,
            health_check,
            connect_timeout,
            read_timeout,
            tls: u.tls.then(|| u.sni.clone().unwrap_or_default()),
        }
    }

    fn routes(&mut self, routes: &[RouteFile], upstreams: &[Upstream]) -> Vec<Route> {
        if routes.is_empty() {
            self.at_key("routes", "at least one route is required");
        }
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let base = format!("routes[{i}]");
            if r.name.trim().is_empty() {
                self.at_value(&format!("{base}.name"), "route name must not be empty");
            } else if r.name == "unmatched" {
                self.at_value(
                    &format!("{base}.name"),
                    "`unmatched` is reserved for requests that match no route",
                );
            } else if !names.insert(r.name.as_str()) {
                self.at_value(
                    &format!("{base}.name"),
                    format!("duplicate route name `{}`", r.name),
                );
            }
            let upstream = upstreams.iter().position(|u| u.name == r.upstream);
            if upstream.is_none() {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                self.at_value(
                    &format!("{base}.upstream"),
                    format!(
                        "no upstream named `{}` (defined: {})",
                        r.upstream,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            let host = self.host_match(&base, r.matcher.host.as_deref());
            let path = self.path_match(&base, r);
            let methods = self.methods(&base, r.matcher.methods.as_deref());
            let sse = self.sse_policy(&base, r.sse.as_ref());
            if let (Some(upstream), Some(path)) = (upstream, path) {
                out.push(Route {
                    name: r.name.clone(),
                    host,
                    path,
                    methods,
                    upstream,
                    sse,
                });
            }
        }
        out
    }

    fn host_match(&mut self, base: &str, host: Option<&str>) -> Option<HostMatch> {
        let host = host?.trim().to_ascii_lowercase();
        let path = format!("{base}.match.host");
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host.as_str()),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            self.at_value(
                &path,
                format!("invalid host `{host}`: expected a name like `api.example.com` or `*.example.com`"),
            );
            return None;
        }
        Some(if wildcard {
            HostMatch::Wildcard(format!(".{name}"))
        } else {
            HostMatch::Exact(name.to_string())
        })
    }

    fn path_match(&mut self, base: &str, r: &RouteFile) -> Option<PathMatch> {
        let m = &r.matcher;
        let (key, text, exact) = match (&m.path, &m.path_prefix) {
            (Some(_), Some(_)) => {
                self.at_value(
                    &format!("{base}.match.path_prefix"),
                    "give either `path` or `path_prefix`, not both",
                );
                return None;
            }
            (Some(p), None) => ("path", p, true),
            (None, Some(p)) => ("path_prefix", p, false),
            (None, None) => {
                self.at_value(
                    &format!("{base}.match"),
                    "a route needs `match.path` or `match.path_prefix` (use `path_prefix: /` for all paths)",
                );
                return None;
            }
        };
        if !text.starts_with('/') {
            self.at_value(
                &format!("{base}.match.{key}"),
                format!("`{text}` must start with `/`"),
            );
            return None;
        }
        Some(if exact {
            PathMatch::Exact(text.clone())
        } else {
            // `/v1/` is stored as `/v1`; a prefix of slashes only (`//`) is `/`.
            match text.trim_end_matches('/') {
                "" => PathMatch::Prefix("/".to_string()),
                trimmed => PathMatch::Prefix(trimmed.to_string()),
            }
        })
    }

    fn methods(&mut self, base: &str, methods: Option<&[String]>) -> Option<Vec<String>> {
        let methods = methods?;
        let path = format!("{base}.match.methods");
        if methods.is_empty() {
            self.at_value(
                &path,
                "an empty method list matches nothing; leave `methods` out to match any method",
            );
            return None;
        }
        let mut out = Vec::new();
        for (i, m) in methods.iter().enumerate() {
            let upper = m.trim().to_ascii_uppercase();
            if upper.is_empty() || !upper.bytes().all(|b| b.is_ascii_alphabetic()) {
                self.at_value(
                    &format!("{path}[{i}]"),
                    format!("invalid HTTP method `{m}`"),
                );
            } else {
                out.push(upper);
            }
        }
        Some(out)
    }

    fn sse_policy(&mut self, base: &str, sse: Option<&SseFile>) -> Option<SsePolicy> {
        let options = match sse? {
            SseFile::Enabled(false) => return None,
            SseFile::Enabled(true) => return Some(SsePolicy::default()),
            SseFile::Options(o) => o,
        };
        let at = |key: &str| format!("{base}.sse.{key}");
        for (key, value) in [
            ("max_streams", options.max_streams),
            ("max_streams_per_client", options.max_streams_per_client),
        ] {
            if value == Some(0) {
                self.at_value(&at(key), "must be at least 1");
            }
        }
        let client_key = match options.client_key.as_deref() {
            None => ClientKey::Ip,
            Some(text) => self.client_key(&at("client_key"), text),
        };
        let policy = SsePolicy {
            heartbeat: self.optional_duration(&at("heartbeat"), options.heartbeat.as_deref()),
            idle_timeout: self
                .optional_duration(&at("idle_timeout"), options.idle_timeout.as_deref()),
            write_timeout: self
                .optional_duration(&at("write_timeout"), options.write_timeout.as_deref())
                .unwrap_or(DEFAULT_CLIENT_WRITE_TIMEOUT),
            max_streams: options.max_streams,
            max_streams_per_client: options.max_streams_per_client,
            client_key,
            max_lifetime: self
                .optional_duration(&at("max_lifetime"), options.max_lifetime.as_deref()),
        };
        self.sse_contradictions(base, options.write_timeout.is_some(), &policy);
        Some(policy)
    }

    /// `ip` or `header:NAME`.
    fn client_key(&mut self, path: &str, text: &str) -> ClientKey {
        let text = text.trim();
        if text == "ip" {
            return ClientKey::Ip;
        }
        let Some(name) = text.strip_prefix("header:") else {
            self.at_value(
                path,
                format!("unknown client key `{text}`: expected `ip` or `header:NAME`"),
            );
            return ClientKey::Ip;
        };
        match http::HeaderName::from_bytes(name.trim().as_bytes()) {
            Ok(name) => ClientKey::Header(name),
            Err(_) => {
                self.at_value(path, format!("`{name}` is not a valid HTTP header name"));
                ClientKey::Ip
            }
        }
    }

    /// Warns about `sse:` options that are each valid but defeat one another.
    fn sse_contradictions(&mut self, base: &str, explicit_write_timeout: bool, p: &SsePolicy) {
        let at = |key: &str| format!("{base}.sse.{key}");
        let secs = |d: Duration| duration::format(d);
        if let (Some(heartbeat), Some(idle)) = (p.heartbeat, p.idle_timeout) {
            if idle <= heartbeat {
                self.warn_at_value(
                    &at("idle_timeout"),
                    format!(
                        "idle_timeout ({}) is not longer than heartbeat ({}): a quiet stream is ended before its first heartbeat",
                        secs(idle),
                        secs(heartbeat)
                    ),
                );
            }
        }
        if let Some(heartbeat) = p.heartbeat {
            if p.write_timeout < heartbeat {
                let key = if explicit_write_timeout {
                    "write_timeout"
                } else {
                    "heartbeat"
                };
                self.warn_at_value(
                    &at(key),
                    format!(
                        "write_timeout ({}{}) is shorter than heartbeat ({}): a client whose network stalls for less than one heartbeat interval is dropped",
                        secs(p.write_timeout),
                        if explicit_write_timeout { "" } else { ", the default" },
                        secs(heartbeat)
                    ),
                );
            }
        }
        if let (Some(per_client), Some(max)) = (p.max_streams_per_client, p.max_streams) {
            if per_client > max {
                self.warn_at_value(
                    &at("max_streams_per_client"),
                    format!(
                        "max_streams_per_client ({per_client}) is more than max_streams ({max}): the per-client cap can never be reached"
                    ),
                );
            }
        }
        if p.max_streams_per_client.is_none() && p.client_key != ClientKey::Ip {
            self.warn_at_value(
                &at("client_key"),
                "client_key has no effect without max_streams_per_client",
            );
        }
    }
}
