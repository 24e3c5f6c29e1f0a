//! Configuration: read the YAML file, check it, and hand the proxy a validated [`Config`].
//!
//! The file format ([`file`](mod@file)) and the model the proxy runs on ([`model`]) are separate types;
//! [`validate`] turns one into the other and collects every problem, each with its position,
//! so a user fixes a broken file in one pass.

mod duration;
mod file;
mod locate;
pub mod model;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::Config;

use locate::Position;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub position: Option<Position>,
    /// Where in the document, e.g. `routes[2].upstream`; empty for the whole file.
    pub path: String,
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    /// One line per problem: `FILE:LINE:COLUMN: path: message`, or `FILE: path: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_lines(f, &self.file, &self.problems, "")
    }
}

/// The warnings of a valid config ([`Config::warnings`]), one line each, as problems are
/// printed but marked: `FILE:LINE:COLUMN: warning: path: message`.
pub struct Warnings<'a>(pub &'a Config);

impl fmt::Display for Warnings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_lines(f, &self.0.source, &self.0.warnings, "warning: ")
    }
}

fn write_lines(
    f: &mut fmt::Formatter<'_>,
    file: &Path,
    problems: &[Problem],
    kind: &str,
) -> fmt::Result {
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        write!(f, "{}", file.display())?;
        if let Some(pos) = p.position {
            write!(f, ":{}:{}", pos.line, pos.column)?;
        }
        write!(f, ": {kind}")?;
        if !p.path.is_empty() {
            write!(f, "{}: ", one_line(&p.path))?;
        }
        write!(f, "{}", one_line(&p.message))?;
    }
    Ok(())
}

/// `text` with control characters escaped (`\n`), so text quoted from a broken file cannot
/// split a problem over several lines.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl std::error::Error for ConfigError {}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        problems: vec![Problem {
            position: None,
            path: String::new(),
            message: format!("cannot read config file: {e}"),
        }],
    })?;
    parse(path, &bytes)
}

/// Validates config `bytes` that were read from `path`.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
    validate::validate(path, bytes).map_err(|problems| ConfigError {
        file: path.to_path_buf(),
        problems,
    })
}

/// Loads the config at `path` for use: with `strict` (`--strict`) its warnings are problems;
/// without, they are logged.
pub fn load_checked(path: &Path, strict: bool) -> Result<Config, ConfigError> {
    let config = load(path)?;
    if strict {
        return refuse_warnings(config);
    }
    if !config.warnings.is_empty() {
        log::warn!("{}", Warnings(&config));
    }
    Ok(config)
}

/// `--strict`: a config with warnings is refused, each warning a problem.
pub fn refuse_warnings(config: Config) -> Result<Config, ConfigError> {
    if config.warnings.is_empty() {
        return Ok(config);
    }
    Err(ConfigError {
        file: config.source,
        problems: config
            .warnings
            .into_iter()
            .map(|w| Problem {
                message: format!("{} (an error with --strict)", w.message),
                ..w
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::PathMatch;

    const BASE: &str = "listeners:\n  - address: 127.0.0.1:8080\nupstreams:\n  u:\n    peers: [127.0.0.1:9000]\nroutes:\n";

    #[test]
    fn prefixes_are_stored_without_trailing_slashes() {
        let routes = "  - { name: all, match: { path_prefix: \"//\" }, upstream: u }\n  - { name: v1, match: { path_prefix: /v1/ }, upstream: u }\n";
        let config = parse(Path::new("t.yaml"), format!("{BASE}{routes}").as_bytes()).unwrap();
        let paths: Vec<_> = config.routes.iter().map(|r| r.path.clone()).collect();
        assert_eq!(
            paths,
            [
                PathMatch::Prefix("/".to_string()),
                PathMatch::Prefix("/v1".to_string())
            ]
        );
    }

    #[test]
    fn strict_loading_refuses_a_config_with_warnings_and_plain_loading_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        let routes = "  - { name: a, match: { path_prefix: / }, upstream: u, sse: { heartbeat: 5s, idle_timeout: 5s } }\n";
        std::fs::write(&path, format!("{BASE}{routes}")).unwrap();
        let config = load_checked(&path, false).unwrap();
        assert_eq!(config.warnings.len(), 1);
        let e = load_checked(&path, true).unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert!(
            e.to_string()
                .ends_with("before its first heartbeat (an error with --strict)"),
            "{e}"
        );
        let line = Warnings(&config).to_string();
        assert!(
            line.starts_with(&format!("{}:7:", path.display()))
                && line.contains(": warning: routes[0].sse.idle_timeout: "),
            "{line}"
        );
    }

    #[test]
    fn each_problem_is_one_line() {
        let routes = "  - { name: \"a\\nb\", match: { path: x }, upstream: \"u\\r\\n\" }\n";
        let e = parse(Path::new("t.yaml"), format!("{BASE}{routes}").as_bytes()).unwrap_err();
        let text = e.to_string();
        assert_eq!(text.lines().count(), e.problems.len(), "{text}");
        assert!(text.contains("u\\r\\n"), "{text}");
    }

    fn with_upstream(upstream: &str) -> String {
        format!("listeners:\n  - address: 127.0.0.1:8080\nupstreams:\n  u:\n{upstream}routes:\n  - {{ name: a, match: {{ path_prefix: / }}, upstream: u }}\n")
    }

    #[test]
    fn health_check_paths_must_be_uri_paths() {
        for path in [
            "/a b",
            "/a\\tb",
            "/a\\u0001",
            "/a#b",
            "/é",
            "/a\\u007f",
            "/a<b>",
        ] {
            let yaml = with_upstream(&format!(
                "    peers: [127.0.0.1:9000]\n    health_check:\n      path: \"{path}\"\n"
            ));
            let e = parse(Path::new("t.yaml"), yaml.as_bytes()).unwrap_err();
            assert_eq!(e.problems.len(), 1, "{path}: {e}");
            let p = &e.problems[0];
            assert_eq!(p.path, "upstreams.u.health_check.path");
            assert_eq!(
                p.position,
                Some(Position {
                    line: 7,
                    column: 13
                }),
                "{path}"
            );
            assert!(p.message.contains("is not a valid URI path: "), "{e}");
        }
        for path in ["/healthz", "/h/z?full=1&x=%20", "/~a-b_c.d!$&'()*+,;=:@"] {
            let yaml = with_upstream(&format!(
                "    peers: [127.0.0.1:9000]\n    health_check: {{ path: \"{path}\" }}\n"
            ));
            let config = parse(Path::new("t.yaml"), yaml.as_bytes())
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            let hc = config.upstreams[0].health_check.as_ref().unwrap();
            assert_eq!(hc.http_path.as_deref(), Some(path));
        }
    }

    #[test]
    fn a_pingora_key_that_is_a_collection_is_placed_at_itself() {
        let yaml = format!("pingora:\n  ? [a, b]\n  : 1\n  \"?\": 2\n  7: 3\n{BASE}");
        let yaml = format!("{yaml}  - {{ name: a, match: {{ path_prefix: / }}, upstream: u }}\n");
        let e = parse(Path::new("t.yaml"), yaml.as_bytes()).unwrap_err();
        let found: Vec<_> = e
            .problems
            .iter()
            .map(|p| (p.position, p.path.as_str(), p.message.as_str()))
            .collect();
        let at = |line, column| Some(Position { line, column });
        assert_eq!(
            found,
            [
                (
                    at(2, 5),
                    "pingora",
                    "a Pingora server setting is named by a string, not a sequence"
                ),
                (at(4, 3), "pingora.?", "unknown Pingora server setting `?`"),
                (
                    at(5, 3),
                    "pingora",
                    "a Pingora server setting is named by a string, not the number `7`"
                ),
            ],
            "{e}"
        );
    }

    #[test]
    fn a_peer_name_becomes_every_address_it_resolves_to() {
        let yaml = with_upstream("    peers: [\"localhost:9000\", \"[2001:db8::1]:80\"]\n");
        let config = parse(Path::new("t.yaml"), yaml.as_bytes()).unwrap();
        let mut expected: Vec<std::net::SocketAddr> = Vec::new();
        for addr in std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 9000)).unwrap() {
            if !expected.contains(&addr) {
                expected.push(addr);
            }
        }
        assert!(!expected.is_empty());
        expected.push("[2001:db8::1]:80".parse().unwrap());
        assert_eq!(config.upstreams[0].peers, expected);
    }

    #[test]
    fn a_peer_listed_twice_is_a_problem_at_its_second_entry() {
        let yaml = with_upstream(
            "    peers:\n      - 127.0.0.1:9000\n      - localhost:9001\n      - 127.0.0.1:9000\n      - localhost:9001\n",
        );
        let e = parse(Path::new("t.yaml"), yaml.as_bytes()).unwrap_err();
        let lines: Vec<String> = e.to_string().lines().map(String::from).collect();
        assert_eq!(
            lines[0],
            "t.yaml:8:9: upstreams.u.peers[2]: peer 127.0.0.1:9000 is listed twice"
        );
        // Every address the name gives is reported, each at the second entry.
        assert!(lines.len() >= 2, "{e}");
        for line in &lines[1..] {
            assert!(
                line.starts_with("t.yaml:9:9: upstreams.u.peers[3]: `localhost:9001` resolves to ")
                    && line.ends_with(":9001, which is already a peer of this upstream"),
                "{e}"
            );
        }
    }
}
