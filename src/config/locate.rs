//! Maps a path inside the YAML document (`routes[2].upstream`) to its line and column.
//!
//! serde_yaml reports positions for syntax and type errors, but the semantic checks in
//! [`super::validate`] run on deserialized values that have no positions left. This module walks
//! the same text once with a marked event parser and remembers where every node starts, so those
//! checks can still say `FILE:LINE:COLUMN`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Positions of every node of a YAML document, keyed by their dotted path.
#[derive(Debug, Default)]
pub struct Locator {
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

impl Locator {
    /// Indexes `text`. A document that does not parse yields an empty locator: serde_yaml reports
    /// the syntax error with its own position.
    pub fn new(text: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut walker, false).is_err() {
            return Self::default();
        }
        walker.locator
    }

    /// Where the value at `path` starts.
    pub fn value(&self, path: &str) -> Option<Position> {
        self.values.get(path).copied()
    }

    /// Where the key of the mapping entry at `path` starts.
    pub fn key(&self, path: &str) -> Option<Position> {
        self.keys.get(path).copied()
    }

    /// The value at `path`, or failing that the nearest enclosing node that exists.
    pub fn nearest(&self, path: &str) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(pos) = self.value(path) {
                return Some(pos);
            }
            path = &path[..path.rfind(['.', '['])?];
        }
    }
}

enum Frame {
    Sequence { index: usize },
    Mapping { key: Option<String> },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    locator: Locator,
}

impl Walker {
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Sequence { index } => path.push_str(&format!("[{index}]")),
                Frame::Mapping { key: Some(key) } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                Frame::Mapping { key: None } => {}
            }
        }
        path
    }

    /// The path of the innermost collection (the one being filled).
    fn path_of_parent(&self) -> String {
        let mut path = self.path();
        if let Some(Frame::Mapping { key: Some(_) }) = self.stack.last() {
            let cut = path.rfind('.').unwrap_or(0);
            path.truncate(cut);
        }
        path
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Mapping { key: None }))
    }

    /// Records a node that begins at `mark`; returns whether it is a mapping key.
    fn begin_node(&mut self, mark: Marker, scalar_key: Option<&str>) -> bool {
        let pos = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        if self.expecting_key() {
            if let Some(Frame::Mapping { key }) = self.stack.last_mut() {
                *key = Some(scalar_key.unwrap_or("?").to_string());
            }
            let path = self.path();
            self.locator.keys.entry(path).or_insert(pos);
            // A block mapping's start event points past its first key; the mapping really starts
            // at that key.
            let mapping = self.path_of_parent();
            if let Some(start) = self.locator.values.get_mut(&mapping) {
                if (pos.line, pos.column) < (start.line, start.column) {
                    *start = pos;
                }
            }
            true
        } else {
            let path = self.path();
            self.locator.values.entry(path).or_insert(pos);
            false
        }
    }

    /// A scalar or alias: a key, or a value that is complete at once.
    fn leaf(&mut self, mark: Marker, scalar: Option<&str>) {
        if !self.begin_node(mark, scalar) {
            self.end_value();
        }
    }

    /// Moves the parent past a finished value node.
    fn end_value(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Sequence { index }) => *index += 1,
            Some(Frame::Mapping { key }) => *key = None,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => self.leaf(mark, Some(&value)),
            Event::Alias(_) => self.leaf(mark, None),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                // A collection used as a mapping key is unusual; it is indexed as key `?` and its
                // contents are skipped over like any value.
                self.begin_node(mark, None);
                self.stack.push(match event {
                    Event::SequenceStart(..) => Frame::Sequence { index: 0 },
                    _ => Frame::Mapping { key: None },
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
                // A finished collection is a value unless it was a key, in which case the key
                // stays set and the value follows.
                if !matches!(self.stack.last(), Some(Frame::Mapping { key: Some(k) }) if k == "?") {
                    self.end_value();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listeners:
  - address: 127.0.0.1:8080
routes:
  - name: a
    match: { path_prefix: /v1 }
    upstream: llm
  - name: b
    upstream: other
";

    #[test]
    fn finds_nested_values_and_keys() {
        let loc = Locator::new(DOC);
        assert_eq!(
            loc.value("listeners[0].address"),
            Some(Position {
                line: 2,
                column: 14
            })
        );
        assert_eq!(
            loc.value("routes[1].upstream"),
            Some(Position {
                line: 8,
                column: 15
            })
        );
        assert_eq!(
            loc.key("routes[1].upstream"),
            Some(Position { line: 8, column: 5 })
        );
        assert_eq!(
            loc.value("routes[0].match.path_prefix"),
            Some(Position {
                line: 5,
                column: 27
            })
        );
    }

    #[test]
    fn nearest_falls_back_to_the_enclosing_node() {
        let loc = Locator::new(DOC);
        assert_eq!(
            loc.nearest("routes[1].match.path"),
            Some(Position { line: 7, column: 5 })
        );
    }

    #[test]
    fn broken_yaml_gives_an_empty_locator() {
        let loc = Locator::new("a: [1, 2\nb: }");
        assert_eq!(loc.value("a"), None);
    }
}
