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
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(pos) = p.position {
                write!(f, ":{}:{}", pos.line, pos.column)?;
            }
            write!(f, ": ")?;
            if !p.path.is_empty() {
                write!(f, "{}: ", one_line(&p.path))?;
            }
            write!(f, "{}", one_line(&p.message))?;
        }
        Ok(())
    }
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
    fn each_problem_is_one_line() {
        let routes = "  - { name: \"a\\nb\", match: { path: x }, upstream: \"u\\r\\n\" }\n";
        let e = parse(Path::new("t.yaml"), format!("{BASE}{routes}").as_bytes()).unwrap_err();
        let text = e.to_string();
        assert_eq!(text.lines().count(), e.problems.len(), "{text}");
        assert!(text.contains("u\\r\\n"), "{text}");
    }
}
