//! Fuzzes `EventScanner`: any split of a stream into chunks counts the same events as the whole.
//!
//! The stream is cut at fuzzer-chosen chunk lengths. After every chunk, the running event count
//! and `at_boundary()` must match both a scanner fed the whole prefix at once and a plain
//! line-splitting reference written from the WHATWG HTML standard (WHATWG HTML, "Server-sent events").
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ssegate::sse::EventScanner;

#[path = "../common/sse_reference.rs"]
mod sse_reference;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Lengths of the chunks, used in turn; whatever is left after the last one is one chunk.
    chunk_lens: Vec<u8>,
    stream: &'a [u8],
}

fn whole(prefix: &[u8]) -> (u64, bool) {
    let mut scanner = EventScanner::default();
    let events = scanner.feed(prefix);
    (events, scanner.at_boundary())
}

fuzz_target!(|input: Input| {
    let stream = input.stream;
    let mut scanner = EventScanner::default();
    let mut events = 0;
    let mut fed = 0;
    let mut lens = input.chunk_lens.iter().map(|&n| usize::from(n));
    while fed < stream.len() {
        let len = lens.next().unwrap_or(stream.len()).min(stream.len() - fed);
        events += scanner.feed(&stream[fed..fed + len]);
        fed += len;
        let chunked = (events, scanner.at_boundary());
        let prefix = &stream[..fed];
        assert_eq!(
            chunked,
            whole(prefix),
            "chunked vs whole, after {fed} bytes"
        );
        assert_eq!(
            chunked,
            sse_reference::events(prefix),
            "scanner vs reference, after {fed} bytes"
        );
    }
    assert_eq!(scanner.feed(&[]), 0, "an empty chunk completes nothing");
});
