//! The framing of an upstream HTTP/1.1 response body, decoded as bytes arrive.
//!
//! The relay reads an upstream's body straight off the socket into a per-thread scratch buffer
//! (see [`super::upstream`]), so the decoder is sans-I/O: it is fed whatever one read returned,
//! appends the body bytes to the caller's buffer and keeps only a few words of state between
//! reads. A quiet stream therefore holds no buffer at all; only a chunk-size line or trailer that
//! a read cut in two is kept, and both are bounded.
//!
//! Chunk-size lines are parsed by `httparse::parse_chunk_size`, the parser Pingora itself uses:
//! hexadecimal sizes of at most 15 digits, optional extensions (ignored), `CRLF` line ends. The
//! `CRLF` after a chunk's data is required. Trailers are read and discarded, as Pingora does.

use bytes::BytesMut;

/// The longest chunk-size line (extensions included) the decoder buffers across reads.
const MAX_CHUNK_SIZE_LINE: usize = 8 * 1024;
/// The most trailer bytes accepted after the last chunk.
const MAX_TRAILERS: usize = 64 * 1024;

/// How a response body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (also `0` for bodiless responses).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body runs until the upstream closes the connection.
    UntilClose,
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    InvalidChunkSize,
    /// Something other than `CRLF` after a chunk's data.
    MissingChunkEnd,
    ChunkSizeLineTooLong,
    TrailersTooLong,
    /// The connection closed before the body was complete.
    Truncated,
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FramingError::InvalidChunkSize => "invalid chunk size line",
            FramingError::MissingChunkEnd => "chunk data not followed by CRLF",
            FramingError::ChunkSizeLineTooLong => "chunk size line too long",
            FramingError::TrailersTooLong => "trailers too long",
            FramingError::Truncated => "connection closed before the end of the body",
        })
    }
}

impl std::error::Error for FramingError {}

/// Where the decoder is within the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Body bytes still to come for a `Content-Length` body.
    Length(u64),
    /// Reading a chunk-size line (part of it may be in `line`).
    ChunkSize,
    /// Data bytes left in the current chunk.
    ChunkData(u64),
    /// The `CRLF` after a chunk's data; `true` once the `CR` was seen.
    ChunkEnd(bool),
    /// Trailer lines after the last chunk: bytes of the current line, bytes seen in all.
    Trailers {
        line: usize,
        total: usize,
    },
    UntilClose,
    Done,
}

/// An incremental body decoder; feed it reads in order.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
    /// A chunk-size line cut by the end of a read; empty (and unallocated) otherwise.
    line: Vec<u8>,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        BodyDecoder {
            state,
            line: Vec::new(),
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, appending body bytes to `out`. Returns how many bytes of `input` belong
    /// to the body; any after that were sent past its end.
    pub fn decode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<usize, FramingError> {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            match self.state {
                State::Done => break,
                State::UntilClose => {
                    out.extend_from_slice(rest);
                    pos = input.len();
                }
                State::Length(left) | State::ChunkData(left) => {
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&rest[..take]);
                    pos += take;
                    let left = left - take as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), n) => State::Length(n),
                        (_, 0) => State::ChunkEnd(false),
                        (_, n) => State::ChunkData(n),
                    };
                }
                State::ChunkEnd(seen_cr) => {
                    self.state = match (seen_cr, rest[0]) {
                        (false, b'\r') => State::ChunkEnd(true),
                        (true, b'\n') => State::ChunkSize,
                        _ => return Err(FramingError::MissingChunkEnd),
                    };
                    pos += 1;
                }
                State::ChunkSize => pos += self.chunk_size(rest)?,
                State::Trailers { line, total } => {
                    let b = rest[0];
                    pos += 1;
                    let total = total + 1;
                    if total > MAX_TRAILERS {
                        return Err(FramingError::TrailersTooLong);
                    }
                    self.state = match b {
                        // A line end on an empty line ends the trailer section.
                        b'\n' if line == 0 => State::Done,
                        b'\n' => State::Trailers { line: 0, total },
                        b'\r' => State::Trailers { line, total },
                        _ => State::Trailers {
                            line: line + 1,
                            total,
                        },
                    };
                }
            }
        }
        Ok(pos)
    }

    /// The connection closed: fine for a body delimited by the close, or one already complete.
    pub fn at_eof(&mut self) -> Result<(), FramingError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(FramingError::Truncated),
        }
    }

    /// Reads a chunk-size line from the start of `rest`; returns the bytes it used.
    fn chunk_size(&mut self, rest: &[u8]) -> Result<usize, FramingError> {
        let (used, parsed) = if self.line.is_empty() {
            match httparse::parse_chunk_size(rest) {
                Ok(httparse::Status::Complete((used, size))) => (used, size),
                Ok(httparse::Status::Partial) => return self.keep_partial_line(rest),
                Err(_) => return Err(FramingError::InvalidChunkSize),
            }
        } else {
            // The line began in an earlier read: complete it up to its `LF`.
            let Some(lf) = memchr::memchr(b'\n', rest) else {
                return self.keep_partial_line(rest);
            };
            self.line.extend_from_slice(&rest[..=lf]);
            let size = match httparse::parse_chunk_size(&self.line) {
                Ok(httparse::Status::Complete((used, size))) if used == self.line.len() => size,
                _ => return Err(FramingError::InvalidChunkSize),
            };
            self.line = Vec::new();
            (lf + 1, size)
        };
        self.state = match parsed {
            0 => State::Trailers { line: 0, total: 0 },
            n => State::ChunkData(n),
        };
        Ok(used)
    }

    fn keep_partial_line(&mut self, rest: &[u8]) -> Result<usize, FramingError> {
        if self.line.len() + rest.len() > MAX_CHUNK_SIZE_LINE {
            return Err(FramingError::ChunkSizeLineTooLong);
        }
        self.line.extend_from_slice(rest);
        Ok(rest.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` cut at `cuts`; returns the body, the bytes used and whether it ended.
    fn decode_cut(framing: Framing, input: &[u8], cuts: &[usize]) -> (Vec<u8>, usize, bool) {
        let mut decoder = BodyDecoder::new(framing);
        let mut out = BytesMut::new();
        let mut used = 0;
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            used += decoder
                .decode(&input[start..end], &mut out)
                .expect("valid body");
            start = end;
        }
        (out.to_vec(), used, decoder.is_done())
    }

    const CHUNKED: &[u8] =
        b"7\r\ndata: a\r\n2;name=\"x;y\"\r\n\n\n\r\n9\r\ndata: b\n\n\r\n0\r\nX-T: 1\r\n\r\n";

    #[test]
    fn chunked_body_split_at_every_pair_of_points() {
        let expected = b"data: a\n\ndata: b\n\n".to_vec();
        for a in 0..=CHUNKED.len() {
            for b in a..=CHUNKED.len() {
                let (body, used, done) = decode_cut(Framing::Chunked, CHUNKED, &[a, b]);
                assert_eq!(body, expected, "cuts at {a} and {b}");
                assert_eq!(used, CHUNKED.len());
                assert!(done);
            }
        }
    }

    #[test]
    fn several_chunks_in_one_read_and_bytes_after_the_end() {
        let mut input = CHUNKED.to_vec();
        input.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let (body, used, done) = decode_cut(Framing::Chunked, &input, &[]);
        assert_eq!(body, b"data: a\n\ndata: b\n\n");
        assert_eq!(
            used,
            CHUNKED.len(),
            "bytes past the body are not part of it"
        );
        assert!(done);
    }

    #[test]
    fn one_mebibyte_chunk_in_small_reads() {
        let data = vec![b'x'; 1 << 20];
        let mut input = format!("{:x}\r\n", data.len()).into_bytes();
        input.extend_from_slice(&data);
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        let cuts: Vec<usize> = (1..input.len()).step_by(4093).collect();
        let (body, _, done) = decode_cut(Framing::Chunked, &input, &cuts);
        assert_eq!(body.len(), data.len());
        assert!(done);
    }

    #[test]
    fn an_open_chunked_stream_is_not_done_and_keeps_no_buffer() {
        let mut decoder = BodyDecoder::new(Framing::Chunked);
        let mut out = BytesMut::new();
        decoder.decode(b"9\r\ndata: x\n\n\r\n", &mut out).unwrap();
        assert!(!decoder.is_done());
        assert_eq!(decoder.line.capacity(), 0, "nothing is held between events");
        assert_eq!(decoder.at_eof(), Err(FramingError::Truncated));
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        let refused = |input: &[u8]| {
            let mut out = BytesMut::new();
            BodyDecoder::new(Framing::Chunked).decode(input, &mut out)
        };
        assert_eq!(refused(b"zz\r\n"), Err(FramingError::InvalidChunkSize));
        assert_eq!(refused(b"-1\r\n"), Err(FramingError::InvalidChunkSize));
        assert_eq!(
            refused(b"10000000000000000\r\n"),
            Err(FramingError::InvalidChunkSize)
        );
        assert_eq!(refused(b"2\r\nabX"), Err(FramingError::MissingChunkEnd));
        assert_eq!(refused(b"2\r\nab\n"), Err(FramingError::MissingChunkEnd));
        let long_extension = [b"1;".as_slice(), &[b'e'; MAX_CHUNK_SIZE_LINE]].concat();
        assert_eq!(
            refused(&long_extension),
            Err(FramingError::ChunkSizeLineTooLong)
        );
        let endless_trailer = [b"0\r\n".as_slice(), &[b't'; MAX_TRAILERS + 1]].concat();
        assert_eq!(
            refused(&endless_trailer),
            Err(FramingError::TrailersTooLong)
        );
    }

    #[test]
    fn a_size_line_cut_in_two_must_still_be_valid() {
        let mut decoder = BodyDecoder::new(Framing::Chunked);
        let mut out = BytesMut::new();
        decoder.decode(b"1;ext", &mut out).unwrap();
        assert_eq!(
            decoder.decode(b"\rx\n", &mut out),
            Err(FramingError::InvalidChunkSize)
        );
    }

    #[test]
    fn length_and_close_delimited_bodies() {
        let (body, used, done) = decode_cut(Framing::Length(5), b"hello world", &[2]);
        assert_eq!(
            (body.as_slice(), used, done),
            (b"hello".as_slice(), 5, true)
        );
        assert!(BodyDecoder::new(Framing::Length(0)).is_done());

        let mut decoder = BodyDecoder::new(Framing::UntilClose);
        let mut out = BytesMut::new();
        decoder.decode(b"abc", &mut out).unwrap();
        assert!(!decoder.is_done());
        assert_eq!(decoder.at_eof(), Ok(()));
        assert!(decoder.is_done());
        assert_eq!(&out[..], b"abc");

        let mut short = BodyDecoder::new(Framing::Length(9));
        short.decode(b"abc", &mut out).unwrap();
        assert_eq!(short.at_eof(), Err(FramingError::Truncated));
    }
}
