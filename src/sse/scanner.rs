//! Finds SSE event boundaries in a byte stream that arrives in arbitrary chunks.
//!
//! An event ends at a blank line (WHATWG HTML, "Server-sent events"). Lines end in `\n`, `\r\n`
//! or `\r`; a `\r\n` split across two chunks is one line end. A block made only of comment lines
//! (`: keepalive`) dispatches no event in a browser, so it is not counted as one.

/// Incremental scanner: feed it chunks in order, it counts completed events.
#[derive(Debug, Default, Clone)]
pub struct EventScanner {
    /// Some byte of the current line has been seen.
    in_line: bool,
    /// The current block holds at least one field line (not only comments).
    in_event: bool,
    /// The last byte was `\r`, so a following `\n` belongs to the same line end.
    after_cr: bool,
}

impl EventScanner {
    /// Scans `chunk` and returns how many events it completed.
    ///
    /// Only the first byte of a line and its end matter, so the rest of a line is skipped with
    /// `memchr` (vectorised) rather than looked at byte by byte.
    pub fn feed(&mut self, chunk: &[u8]) -> u64 {
        let mut events = 0;
        let mut i = 0;
        while i < chunk.len() {
            if self.in_line {
                // Inside a line nothing but its end changes the state.
                match memchr::memchr2(b'\r', b'\n', &chunk[i..]) {
                    Some(offset) => i += offset,
                    None => break,
                }
            }
            let b = chunk[i];
            i += 1;
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    if self.in_line {
                        self.in_line = false;
                    } else if self.in_event {
                        self.in_event = false;
                        events += 1;
                    }
                }
                _ => {
                    // The first byte of a line (inside one, only line ends get here).
                    self.in_line = true;
                    if b != b':' {
                        self.in_event = true;
                    }
                }
            }
        }
        events
    }

    /// Whether the stream is between events: nothing of a next event has been seen, so bytes
    /// written now cannot land inside one.
    pub fn at_boundary(&self) -> bool {
        !self.in_line && !self.in_event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_in_chunks(chunks: &[&[u8]]) -> u64 {
        let mut s = EventScanner::default();
        chunks.iter().map(|c| s.feed(c)).sum()
    }

    #[test]
    fn counts_events_with_each_line_ending() {
        assert_eq!(count_in_chunks(&[b"data: a\n\n"]), 1);
        assert_eq!(count_in_chunks(&[b"data: a\r\n\r\n"]), 1);
        assert_eq!(count_in_chunks(&[b"data: a\r\r"]), 1);
        assert_eq!(count_in_chunks(&[b"id: 1\ndata: a\ndata: b\n\n"]), 1);
    }

    #[test]
    fn several_events_in_one_chunk() {
        assert_eq!(
            count_in_chunks(&[b"data: a\n\ndata: b\r\n\r\ndata: c\r\rdata: d"]),
            3
        );
    }

    #[test]
    fn events_split_across_chunks() {
        let whole: &[u8] = b"id: 7\r\ndata: hello\r\n\r\ndata: x\n\n";
        for cut in 0..whole.len() {
            for cut2 in cut..whole.len() {
                let chunks = [&whole[..cut], &whole[cut..cut2], &whole[cut2..]];
                assert_eq!(count_in_chunks(&chunks), 2, "cuts at {cut} and {cut2}");
            }
        }
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_end() {
        assert_eq!(
            count_in_chunks(&[b"data: a\r", b"\n", b"data: b\r", b"\n\r", b"\n"]),
            1
        );
    }

    #[test]
    fn boundary_is_known_between_events_only() {
        let mut s = EventScanner::default();
        assert!(s.at_boundary());
        s.feed(b"data: par");
        assert!(!s.at_boundary());
        s.feed(b"tial\n");
        assert!(!s.at_boundary(), "one line of an event is not its end");
        s.feed(b"\n");
        assert!(s.at_boundary());
        s.feed(b": comment\n");
        assert!(s.at_boundary(), "after a whole comment line");
    }

    #[test]
    fn comments_and_stray_blank_lines_are_not_events() {
        assert_eq!(count_in_chunks(&[b": keepalive\n\n"]), 0);
        assert_eq!(count_in_chunks(&[b"\n\n\n"]), 0);
        assert_eq!(count_in_chunks(&[b": note\ndata: x\n\n"]), 1);
    }
}
