//! A plain reference for `EventScanner`, written from the WHATWG HTML standard (WHATWG HTML, "Server-sent
//! events"): split into lines, then count blocks. Shared by the fuzz target and
//! `tests/properties.rs`.

/// Events completed in `stream`, and whether it ends between events.
///
/// Lines end in `\r\n`, `\n` or `\r`. A blank line ends an event if the block before it had a
/// line that is not a comment (a comment line starts with `:`); otherwise it dispatches nothing.
pub fn events(stream: &[u8]) -> (u64, bool) {
    let mut events = 0;
    let mut in_event = false;
    let mut line_start = 0;
    let mut i = 0;
    while i < stream.len() {
        let b = stream[i];
        if b == b'\r' || b == b'\n' {
            let line = &stream[line_start..i];
            if b == b'\r' && stream.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            line_start = i + 1;
            match line.first() {
                None if in_event => {
                    events += 1;
                    in_event = false;
                }
                None | Some(b':') => {}
                Some(_) => in_event = true,
            }
        }
        i += 1;
    }
    (events, line_start == stream.len() && !in_event)
}
