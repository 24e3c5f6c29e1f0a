//! An incremental Server-Sent Events parser: the `data`, `id` and `retry` fields, as a browser
//! reads them.
//!
//! Input arrives in arbitrary pieces: a line, a line end (`\n`, `\r\n` or `\r`, with a `\r\n`
//! split across two pieces being one line end) or an event may be cut anywhere.

/// One dispatched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The last event ID seen on the stream (browsers keep it across events).
    pub id: &'a [u8],
    /// The `data` lines joined with `\n`.
    pub data: &'a [u8],
}

/// Parser state that survives between pieces of input.
#[derive(Debug, Default)]
pub struct Parser {
    /// The current line, when it started in an earlier piece.
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    id: Vec<u8>,
    /// The previous piece ended in `\r`: a leading `\n` finishes that line end.
    skip_lf: bool,
    /// A field line has come since the last blank line.
    in_block: bool,
    /// The last valid `retry:` value, in milliseconds.
    retry: Option<u64>,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the next piece of the stream and calls `on_event` for every event it completes.
    pub fn feed(&mut self, mut input: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        if self.skip_lf {
            self.skip_lf = false;
            if let Some(rest) = input.strip_prefix(b"\n") {
                input = rest;
            }
        }
        while !input.is_empty() {
            let Some(end) = input.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.line.extend_from_slice(input);
                return;
            };
            if self.line.is_empty() {
                self.line_done(&input[..end], &mut on_event);
            } else {
                self.line.extend_from_slice(&input[..end]);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, &mut on_event);
                self.line = line;
                self.line.clear();
            }
            let mut next = end + 1;
            if input[end] == b'\r' {
                match input.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            input = &input[next..];
        }
    }

    /// The reconnection time the stream asked for with its last valid `retry:` line (ms).
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Whether the input so far stopped inside an event (or any block): a response that ends
    /// here cut it.
    pub fn in_event(&self) -> bool {
        self.in_block || !self.line.is_empty()
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        if line.is_empty() {
            self.in_block = false;
            if self.has_data {
                // Every data line appended a `\n`; the last one is not part of the data.
                self.data.pop();
                on_event(Event {
                    id: &self.id,
                    data: &self.data,
                });
            }
            self.data.clear();
            self.has_data = false;
            return;
        }
        self.in_block = true;
        if line[0] == b':' {
            return; // a comment
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
            }
            b"id" if !value.contains(&0) => {
                self.id.clear();
                self.id.extend_from_slice(value);
            }
            // As a browser: only ASCII digits set the reconnection time.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {}
        }
    }
}

/// An event with its fields copied out of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEvent {
    pub id: String,
    pub data: String,
}

impl From<Event<'_>> for OwnedEvent {
    fn from(event: Event<'_>) -> Self {
        OwnedEvent {
            id: String::from_utf8_lossy(event.id).into_owned(),
            data: String::from_utf8_lossy(event.data).into_owned(),
        }
    }
}

impl Parser {
    /// Parses the next piece and returns the events it completes.
    pub fn feed_owned(&mut self, input: &[u8]) -> Vec<OwnedEvent> {
        let mut events = Vec::new();
        self.feed(input, |e| events.push(e.into()));
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` cut at the given places and returns (id, data) of every event.
    fn parse_split(input: &[u8], cuts: &[usize]) -> Vec<(String, String)> {
        let mut parser = Parser::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            parser.feed(&input[start..cut], |e| {
                events.push((
                    String::from_utf8_lossy(e.id).into_owned(),
                    String::from_utf8_lossy(e.data).into_owned(),
                ))
            });
            start = cut;
        }
        events
    }

    fn expect_everywhere(input: &[u8], expected: &[(&str, &str)]) {
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(parse_split(input, &[]), expected, "whole");
        for cut in 0..=input.len() {
            assert_eq!(parse_split(input, &[cut]), expected, "cut at {cut}");
        }
        let bytes: Vec<usize> = (1..input.len()).collect();
        assert_eq!(parse_split(input, &bytes), expected, "byte by byte");
    }

    #[test]
    fn lf_crlf_and_cr_line_ends_split_anywhere() {
        let expected = [("1", "a"), ("2", "b\nc")];
        expect_everywhere(b"id: 1\ndata: a\n\nid: 2\ndata: b\ndata: c\n\n", &expected);
        expect_everywhere(
            b"id: 1\r\ndata: a\r\n\r\nid: 2\r\ndata: b\r\ndata: c\r\n\r\n",
            &expected,
        );
        expect_everywhere(b"id: 1\rdata: a\r\rid: 2\rdata: b\rdata: c\r\r", &expected);
    }

    #[test]
    fn comments_and_unknown_fields_dispatch_nothing() {
        expect_everywhere(
            b": keepalive\n\nevent: x\nretry: 10\n\ndata\n\ndata:no-space\n\n",
            &[("", ""), ("", "no-space")],
        );
    }

    #[test]
    fn id_persists_and_incomplete_event_is_held() {
        expect_everywhere(
            b"id: 7\ndata: a\n\ndata: b\n\ndata: c",
            &[("7", "a"), ("7", "b")],
        );
    }

    #[test]
    fn retry_and_unfinished_blocks() {
        let mut parser = Parser::new();
        assert!(parser.feed_owned(b"retry: 2000\n\nretry: x\n").is_empty());
        assert_eq!(parser.retry(), Some(2000));
        assert!(parser.in_event());
        let events = parser.feed_owned(b"\nid: 3\ndata: a");
        assert!(events.is_empty() && parser.in_event());
        let events = parser.feed_owned(b"\n\n");
        assert_eq!(
            events,
            [OwnedEvent {
                id: "3".into(),
                data: "a".into()
            }]
        );
        assert!(!parser.in_event());
        parser.feed_owned(b": comment");
        assert!(parser.in_event());
    }
}
