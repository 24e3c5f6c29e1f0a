//! Checks on what the config loader returns: a config that keeps the model's promises, or
//! errors that each name the file and a position inside it. Shared by the `config_loader` fuzz
//! target and `tests/properties.rs`.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use ssegate::config::model::{HostMatch, PathMatch};
use ssegate::config::{Config, ConfigError};

/// The loader's longest accepted duration.
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `data` as the file `file` and checks the result; panics on a broken promise.
pub fn parse_and_check(file: &str, data: &[u8]) {
    match ssegate::config::parse(Path::new(file), data) {
        Ok(config) => check_config(file, &config),
        Err(e) => check_error(file, &e, data),
    }
}

/// What `model.rs` and `validate.rs` promise about a config that loaded.
pub fn check_config(file: &str, c: &Config) {
    assert_eq!(c.source, Path::new(file));
    assert!(
        c.sha256.len() == 64
            && c.sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "sha256 {:?}",
        c.sha256
    );

    assert!(!c.listeners.is_empty(), "no listeners");
    let mut addresses = HashSet::new();
    assert!(c.listeners.iter().all(|l| addresses.insert(l.address)));

    assert!(!c.upstreams.is_empty(), "no upstreams");
    let mut upstream_names = HashSet::new();
    for u in &c.upstreams {
        assert!(upstream_names.insert(&u.name), "upstream {} twice", u.name);
        assert!(!u.peers.is_empty(), "upstream {} has no peers", u.name);
        let mut peers = HashSet::new();
        assert!(
            u.peers.iter().all(|p| peers.insert(p)),
            "upstream {} has a peer twice",
            u.name
        );
        assert!(u.connect_timeout <= YEAR && u.read_timeout <= YEAR);
        if let Some(hc) = &u.health_check {
            assert!(!hc.interval.is_zero() && hc.interval <= YEAR);
            assert!(
                hc.http_path
                    .as_ref()
                    .is_none_or(|p| p.starts_with('/')
                        && p.bytes().all(|b| b.is_ascii_graphic() && b != b'#')),
                "health check path {:?}",
                hc.http_path
            );
        }
    }

    assert!(!c.routes.is_empty(), "no routes");
    let mut route_names = HashSet::new();
    for r in &c.routes {
        assert!(!r.name.trim().is_empty() && r.name != "unmatched");
        assert!(route_names.insert(&r.name), "route {} twice", r.name);
        assert!(
            r.upstream < c.upstreams.len(),
            "route {} upstream index",
            r.name
        );
        match &r.path {
            PathMatch::Exact(p) => assert!(p.starts_with('/'), "exact path {p:?}"),
            PathMatch::Prefix(p) => assert!(
                p == "/" || (p.starts_with('/') && !p.ends_with('/')),
                "prefix {p:?} of route {}",
                r.name
            ),
        }
        match &r.host {
            None => {}
            Some(HostMatch::Exact(h)) => assert!(is_host_name(h), "host {h:?}"),
            Some(HostMatch::Wildcard(h)) => assert!(
                h.strip_prefix('.').is_some_and(is_host_name),
                "wildcard host {h:?}"
            ),
        }
        if let Some(methods) = &r.methods {
            assert!(!methods.is_empty());
            assert!(methods
                .iter()
                .all(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase())));
        }
        if let Some(sse) = &r.sse {
            assert_ne!(sse.max_streams, Some(0));
            assert_ne!(sse.max_streams_per_client, Some(0));
            let timeouts = [sse.heartbeat, sse.idle_timeout, Some(sse.write_timeout)];
            for d in timeouts.into_iter().flatten() {
                assert!(!d.is_zero() && d <= YEAR);
            }
        }
    }
    assert!(c.summary().starts_with(&format!("{file}: ok: ")));
    // Warnings print like problems: one line each, at a position in the file.
    let warnings = ssegate::config::Warnings(c).to_string();
    if c.warnings.is_empty() {
        assert!(warnings.is_empty());
    } else {
        let lines: Vec<&str> = warnings.split('\n').collect();
        assert_eq!(lines.len(), c.warnings.len(), "{warnings:?}");
        for line in lines {
            assert!(line.starts_with(&format!("{file}:")), "{line:?}");
            assert!(line.contains(": warning: routes["), "{line:?}");
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
    }
}

/// Lower-case dot-separated labels of letters, digits and `-`.
fn is_host_name(h: &str) -> bool {
    h.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// Every problem is exactly one line, which starts with the file name and a position inside the
/// file, in file order: text quoted from the file (a key `"\n"`, say) cannot split a problem.
pub fn check_error(file: &str, e: &ConfigError, data: &[u8]) {
    assert!(!e.problems.is_empty(), "an error without problems");
    let text = e.to_string();
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(
        lines.len(),
        e.problems.len(),
        "not one line per problem: {text:?}"
    );
    for line in &lines {
        assert!(line.starts_with(&format!("{file}:")), "{line:?}");
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }
    // The parsers place the end of input (where an error or an empty last value is) after a
    // final line break, even in a file without one: one line past the last is allowed.
    let last_line = yaml_line_breaks(data) + 2;
    let mut rendered = Vec::new();
    for p in &e.problems {
        let one = ConfigError {
            file: e.file.clone(),
            problems: vec![p.clone()],
        }
        .to_string();
        match p.position {
            Some(pos) => {
                assert!(one.starts_with(&format!("{file}:{}:{}: ", pos.line, pos.column)));
                assert!(
                    (1..=last_line).contains(&pos.line) && pos.column >= 1,
                    "position {pos:?} outside the file: {one}"
                );
            }
            None => assert!(one.starts_with(&format!("{file}: ")), "{one}"),
        }
        assert!(!p.message.trim().is_empty(), "empty message: {one}");
        rendered.push(one);
    }
    assert_eq!(text, rendered.join("\n"));
    let order: Vec<_> = e
        .problems
        .iter()
        .map(|p| p.position.map(|pos| (pos.line, pos.column)))
        .collect();
    assert!(
        order.is_sorted(),
        "problems out of file order: {rendered:?}"
    );
}

/// Line breaks as YAML 1.1 counts them for positions: `\r\n`, `\n`, `\r`, NEL, LS and PS.
fn yaml_line_breaks(data: &[u8]) -> usize {
    let text = String::from_utf8_lossy(data);
    let crlf = text.matches("\r\n").count();
    let breaks = text
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count();
    breaks - crlf
}
