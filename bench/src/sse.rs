//! An incremental Server-Sent Events parser (the `data` and `id` fields, as a browser reads them)
//! and the encoding of the benchmark's events.
//!
//! Input arrives in arbitrary pieces: a line, a line end (`\n`, `\r\n` or `\r`, with a `\r\n`
//! split across two pieces being one line end) or an event may be cut anywhere.

use std::io::Write;

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

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        if line.is_empty() {
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
            _ => {}
        }
    }
}

/// The unsigned integer that follows `key` in `data` (e.g. key `"seq":` in a JSON object).
pub fn field_u64(data: &[u8], key: &[u8]) -> Option<u64> {
    let at = data.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = &data[at..];
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 19 {
        return None;
    }
    digits[..len].iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Writes one event as the upstream sends it:
/// `id: SEQ\ndata: {"t":NANOS,"seq":SEQ,"pad":"..."}\n\n`.
pub fn encode_event(out: &mut Vec<u8>, seq: u64, sent_nanos: u64, pad: &str) {
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "id: {seq}\ndata: {{\"t\":{sent_nanos},\"seq\":{seq},\"pad\":\"{pad}\"}}\n\n"
    );
}

/// JSON keys of the event payload, as [`field_u64`] looks them up.
pub const KEY_SENT: &[u8] = b"\"t\":";
pub const KEY_SEQ: &[u8] = b"\"seq\":";

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
    fn encoded_event_round_trips() {
        let mut out = Vec::new();
        encode_event(&mut out, 42, 1_700_000_000_123_456_789, "xxxx");
        let events = parse_split(&out, &[3, 20]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, "42");
        let data = events[0].1.as_bytes();
        assert_eq!(field_u64(data, KEY_SENT), Some(1_700_000_000_123_456_789));
        assert_eq!(field_u64(data, KEY_SEQ), Some(42));
        assert_eq!(field_u64(data, b"\"nope\":"), None);
        assert_eq!(field_u64(b"\"t\":99999999999999999999", KEY_SENT), None);
    }
}
