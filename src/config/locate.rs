//! Maps a path inside the YAML document (`routes[2].upstream`) to its line and column.
//!
//! serde_yaml reports positions for syntax and type errors, but the semantic checks in
//! [`super::validate`] run on deserialized values that have no positions left. This module walks
//! the same text once with a marked event parser and remembers where every node starts, so those
//! checks can still say `FILE:LINE:COLUMN`.
//!
//! Paths are built from scalar keys only. A key that is a collection (`? [a, b]`, `{[a]: 1}`) or
//! an alias has no name a path could use without colliding with some scalar key (`"?"`, say), so
//! such an entry, its key and its value are not indexed by path at all; every key, named or not,
//! is also recorded by its place in its mapping ([`Locator::nth_key`]), which is how a check
//! that walks a mapping's keys (the `pingora` section) places a key without a name. Only
//! `pingora` can hold such keys past serde, whose typed sections take string keys only.
//!
//! This stays on yaml-rust2's event parser rather than a crate that keeps spans on a parsed tree
//! (marked-yaml): that one refuses anchors, aliases and non-scalar keys outright, treats every
//! scalar as a string, and would replace the serde_yaml parse and every error message with it;
//! the event walk costs one extra pass over a small file and keeps serde_yaml's behaviour.
//! Moving off serde_yaml, which is no longer maintained, is a change of its own, to the whole
//! loader rather than to this index.

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
    /// Where each key of a mapping starts, in document order, keyed by the mapping's path: the
    /// way to place keys that have no name (collections, aliases) or whose name serde spells
    /// differently from the file (`0x10`, `~`).
    key_order: HashMap<String, Vec<Position>>,
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

    /// Where the `index`th key (0-based, in document order) of the mapping at `path` starts.
    pub fn nth_key(&self, path: &str, index: usize) -> Option<Position> {
        self.key_order.get(path)?.get(index).copied()
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
    Mapping { key: Key },
}

/// The key of the mapping entry being read.
enum Key {
    /// The next node is a key.
    Expected,
    /// A scalar key: the entry is addressable by this name.
    Named(String),
    /// A collection or alias key: the entry has no name to address it by.
    Unnamed,
}

/// A collection that has no path (a collection key, or a value under one), read over without
/// indexing anything inside it.
struct Hidden {
    /// Collections open inside it, itself included.
    depth: usize,
    /// Whether it is a mapping key, which a value then follows.
    is_key: bool,
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    hidden: Option<Hidden>,
    locator: Locator,
}

impl Walker {
    /// The path of the node being read; `None` under an unnamed key.
    fn path(&self) -> Option<String> {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Sequence { index } => path.push_str(&format!("[{index}]")),
                Frame::Mapping {
                    key: Key::Named(key),
                } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                Frame::Mapping { key: Key::Unnamed } => return None,
                Frame::Mapping { key: Key::Expected } => {}
            }
        }
        Some(path)
    }

    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::Mapping { key: Key::Expected })
        )
    }

    /// Records a node that begins at `mark`; returns whether it is a mapping key. `name` is the
    /// text of a scalar; collections and aliases have none.
    fn begin_node(&mut self, mark: Marker, name: Option<&str>) -> bool {
        let pos = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        if self.expecting_key() {
            // The parent's path, taken before the key is set (the parent is addressable, or it
            // would be hidden).
            let mapping = self.path().unwrap_or_default();
            self.locator
                .key_order
                .entry(mapping.clone())
                .or_default()
                .push(pos);
            // A block mapping's start event points past its first key; the mapping really starts
            // at that key.
            if let Some(start) = self.locator.values.get_mut(&mapping) {
                if (pos.line, pos.column) < (start.line, start.column) {
                    *start = pos;
                }
            }
            if let Some(Frame::Mapping { key }) = self.stack.last_mut() {
                *key = match name {
                    Some(name) => Key::Named(name.to_string()),
                    None => Key::Unnamed,
                };
            }
            if name.is_some() {
                if let Some(path) = self.path() {
                    self.locator.keys.entry(path).or_insert(pos);
                }
            }
            true
        } else {
            if let Some(path) = self.path() {
                self.locator.values.entry(path).or_insert(pos);
            }
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
            Some(Frame::Mapping { key }) => *key = Key::Expected,
            None => {}
        }
    }

    /// Whether the collection starting now has no path: it is a key, or a value under an
    /// unnamed key.
    fn starts_hidden(&self) -> Option<Hidden> {
        let is_key = self.expecting_key();
        let under_unnamed = matches!(
            self.stack.last(),
            Some(Frame::Mapping { key: Key::Unnamed })
        );
        (is_key || under_unnamed).then_some(Hidden { depth: 0, is_key })
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        // Inside a hidden collection only its nesting is followed.
        if let Some(hidden) = &mut self.hidden {
            match event {
                Event::SequenceStart(..) | Event::MappingStart(..) => hidden.depth += 1,
                Event::SequenceEnd | Event::MappingEnd => {
                    hidden.depth = hidden.depth.saturating_sub(1)
                }
                _ => {}
            }
            if hidden.depth == 0 {
                // A key stays unnamed while its value follows; a value is finished.
                if !hidden.is_key {
                    self.end_value();
                }
                self.hidden = None;
            }
            return;
        }
        match event {
            Event::Scalar(value, ..) => self.leaf(mark, Some(&value)),
            Event::Alias(_) => self.leaf(mark, None),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if let Some(mut hidden) = self.starts_hidden() {
                    // A key is recorded by its place in the mapping; a value has no path.
                    self.begin_node(mark, None);
                    hidden.depth = 1;
                    self.hidden = Some(hidden);
                    return;
                }
                self.begin_node(mark, None);
                self.stack.push(match event {
                    Event::SequenceStart(..) => Frame::Sequence { index: 0 },
                    _ => Frame::Mapping { key: Key::Expected },
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
                self.end_value();
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

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn a_collection_key_does_not_take_the_place_of_a_key_named_question_mark() {
        let loc = Locator::new("? [a, b]\n: 1\n\"?\": 2\nc: { [x]: [y], \"?\": [z] }\n");
        assert_eq!(loc.key("?"), at(3, 1));
        assert_eq!(loc.value("?"), at(3, 6));
        assert_eq!(loc.value("c.?"), at(4, 21));
        assert_eq!(loc.value("c.?[0]"), at(4, 22));
        // Nothing inside a collection key is indexed.
        assert_eq!(loc.value("?[0]"), None);
    }

    #[test]
    fn keys_are_found_by_their_place_in_the_mapping() {
        let loc = Locator::new(
            "a: &x k\ntop:\n  ? [a]\n  : 1\n  *x : 2\n  0x10: 3\n  b: { ? {c: d} : e }\n",
        );
        assert_eq!(loc.nth_key("top", 0), at(3, 5));
        assert_eq!(loc.nth_key("top", 1), at(5, 3));
        assert_eq!(loc.nth_key("top", 2), at(6, 3));
        assert_eq!(loc.nth_key("top", 3), at(7, 3));
        assert_eq!(loc.nth_key("top", 4), None);
        assert_eq!(loc.nth_key("top.b", 0), at(7, 10));
        assert_eq!(loc.nth_key("", 1), at(2, 1));
        // The entries after unnamed ones are still addressed by name.
        assert_eq!(loc.value("top.b"), at(7, 6));
        assert_eq!(loc.key("top.0x10"), at(6, 3));
    }

    #[test]
    fn broken_yaml_gives_an_empty_locator() {
        let loc = Locator::new("a: [1, 2\nb: }");
        assert_eq!(loc.value("a"), None);
    }
}
