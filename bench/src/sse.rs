//! The benchmark's events: their encoding, and reading their fields back out of an event's
//! data. Parsing the stream itself is the workspace test kit's SSE parser.

use std::io::Write;

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
    use testkit::sse::Parser;

    #[test]
    fn encoded_event_round_trips() {
        let mut out = Vec::new();
        encode_event(&mut out, 42, 1_700_000_000_123_456_789, "xxxx");
        let mut parser = Parser::new();
        let mut events = parser.feed_owned(&out[..3]);
        events.extend(parser.feed_owned(&out[3..20]));
        events.extend(parser.feed_owned(&out[20..]));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id, "42");
        let data = events[0].data.as_bytes();
        assert_eq!(field_u64(data, KEY_SENT), Some(1_700_000_000_123_456_789));
        assert_eq!(field_u64(data, KEY_SEQ), Some(42));
        assert_eq!(field_u64(data, b"\"nope\":"), None);
        assert_eq!(field_u64(b"\"t\":99999999999999999999", KEY_SENT), None);
    }
}
