//! HTTP/1.1 framing on `httparse`: reading and parsing a message head, the body framing it
//! announces (chunked, `Content-Length` or until the close), chunked decoding that takes input
//! cut anywhere, and chunked encoding.

use std::io::{self, Write};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest message head accepted: more than any head a proxy forwards (Pingora refuses heads
/// over 1 MiB).
pub const MAX_HEAD: usize = 2 * 1024 * 1024;
/// Header fields parsed on the stack; a head with more is parsed again with up to
/// [`MAX_HEADERS`].
const FEW_HEADERS: usize = 64;
/// Most header fields accepted: more than a proxy forwards (Pingora refuses over 256).
pub const MAX_HEADERS: usize = 1024;

/// Why a head did not parse.
enum Failure {
    /// More fields than the array given: worth a second try with a larger one.
    TooManyHeaders,
    Bad(String),
}

/// Parses with a small array of fields first, and a large one if that was too small.
fn with_fields<'b, T>(
    mut parse: impl FnMut(&mut [httparse::Header<'b>]) -> Result<T, Failure>,
    what: &str,
) -> Result<T, String> {
    let mut few = [httparse::EMPTY_HEADER; FEW_HEADERS];
    let parsed = match parse(&mut few) {
        Err(Failure::TooManyHeaders) => parse(&mut vec![httparse::EMPTY_HEADER; MAX_HEADERS]),
        parsed => parsed,
    };
    parsed.map_err(|failure| match failure {
        Failure::TooManyHeaders => format!("bad {what} head: too many headers"),
        Failure::Bad(e) => format!("bad {what} head: {e}"),
    })
}

impl From<httparse::Error> for Failure {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::TooManyHeaders => Failure::TooManyHeaders,
            e => Failure::Bad(e.to_string()),
        }
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Bad(e)
    }
}

/// Header fields: names lower-cased, values trimmed (and decoded lossily), in order.
pub type Headers = Vec<(String, String)>;

/// The first value of header `name` (lower-case).
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn collect_headers(headers: &[httparse::Header<'_>]) -> Headers {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect()
}

/// Reads from `sock` into `buf` until `parse` finds a complete head in it, and returns what
/// `parse` made of it plus the head's length. `Ok(None)`: the peer closed before sending a byte.
/// Bytes after the head stay in `buf`.
pub async fn read_head<S, T>(
    sock: &mut S,
    buf: &mut Vec<u8>,
    mut parse: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, String>,
) -> io::Result<Option<(T, usize)>>
where
    S: AsyncRead + Unpin,
{
    loop {
        if !buf.is_empty() {
            if let Some(done) = parse(buf).map_err(invalid)? {
                return Ok(Some(done));
            }
            if buf.len() >= MAX_HEAD {
                return Err(invalid("message head too long".to_string()));
            }
        }
        buf.reserve(4096);
        if sock.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

pub(crate) fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (path and query, or an absolute URL).
    pub target: String,
    /// The protocol of the request line, e.g. `HTTP/1.1`.
    pub version: String,
    pub headers: Headers,
    /// `Content-Length`, if the request has one.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("/")
    }

    /// The value of `name` in the target's query string.
    pub fn query(&self, name: &str) -> Option<&str> {
        let (_, query) = self.target.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }
}

/// Parses a request head at the start of `buf`: `Ok(None)` while incomplete.
pub fn parse_request(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, String> {
    with_fields(
        |fields| {
            let mut request = httparse::Request::new(fields);
            let httparse::Status::Complete(len) = request.parse(buf)? else {
                return Ok(None);
            };
            Ok(Some((
                RequestHead {
                    method: request.method.unwrap_or("GET").to_string(),
                    target: request.path.unwrap_or("/").to_string(),
                    version: format!("HTTP/1.{}", request.version.unwrap_or(1)),
                    content_length: content_length(request.headers)?,
                    chunked: is_chunked(request.headers),
                    headers: collect_headers(request.headers),
                },
                len,
            )))
        },
        "request",
    )
}

/// A response head, with the framing of the body that follows it.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Headers,
    pub framing: Framing,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// Parses a response head at the start of `buf`: `Ok(None)` while incomplete.
pub fn parse_response(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, String> {
    with_fields(
        |fields| {
            let mut response = httparse::Response::new(fields);
            let len = match response.parse(buf)? {
                httparse::Status::Complete(len) => len,
                httparse::Status::Partial => return Ok(None),
            };
            let framing = if is_chunked(response.headers) {
                Framing::Chunked(Chunked::default())
            } else if let Some(n) = content_length(response.headers)? {
                Framing::Length(n)
            } else {
                Framing::Close
            };
            Ok(Some((
                ResponseHead {
                    status: response.code.unwrap_or(0),
                    headers: collect_headers(response.headers),
                    framing,
                },
                len,
            )))
        },
        "response",
    )
}

fn is_chunked(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    })
}

fn content_length(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, String> {
    match headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        None => Ok(None),
        Some(h) => std::str::from_utf8(h.value)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| "bad Content-Length".to_string()),
    }
}

/// The last chunk of a chunked body, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `data` to `out` as one chunk (`SIZE\r\nDATA\r\n`).
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// `data` as one chunk.
pub fn chunk(data: impl AsRef<[u8]>) -> Vec<u8> {
    let data = data.as_ref();
    let mut out = Vec::with_capacity(data.len() + 12);
    encode_chunk(&mut out, data);
    out
}

/// Decodes a whole chunked body at the start of `raw`: the body and the bytes it took, or
/// `None` while it is incomplete. A malformed body is an error.
pub fn decode_chunked(raw: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let used = decode_chunked_end(&mut Chunked::default(), raw, &mut body)?;
    Ok(used.map(|used| (body, used)))
}

/// Goes on decoding a chunked body in `state` with `raw`, appending to `body`; once the body
/// is complete, how many bytes of `raw` it took (the rest is not part of it).
pub fn decode_chunked_end(
    state: &mut Chunked,
    raw: &[u8],
    body: &mut Vec<u8>,
) -> Result<Option<usize>, String> {
    let mut at = 0;
    while at < raw.len() {
        // A byte at a time, so that the end is found exactly; chunk data in one piece.
        let step = match *state {
            Chunked::Data(left) => at_most(raw.len() - at, left),
            _ => 1,
        };
        let progress = state.decode(&raw[at..at + step], &mut |piece| {
            body.extend_from_slice(piece)
        })?;
        at += step;
        if progress == Progress::Done {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

/// How many of `available` bytes a body with `left` bytes to come takes.
fn at_most(available: usize, left: u64) -> usize {
    usize::try_from(left).map_or(available, |left| left.min(available))
}

/// Whether a body goes on after the bytes decoded so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    More,
    /// The body is complete; bytes after it are not part of it.
    Done,
}

/// How a response body is delimited, with the decoding state.
#[derive(Debug)]
pub enum Framing {
    Chunked(Chunked),
    /// Bytes still to come.
    Length(u64),
    /// Until the connection closes.
    Close,
}

impl Framing {
    /// Decodes the next bytes received, handing each piece of body to `out`.
    pub fn decode<F: FnMut(&[u8])>(
        &mut self,
        input: &[u8],
        mut out: F,
    ) -> Result<Progress, String> {
        match self {
            Framing::Chunked(chunked) => chunked.decode(input, &mut out),
            Framing::Length(left) => {
                let take = at_most(input.len(), *left);
                if take > 0 {
                    out(&input[..take]);
                }
                *left -= take as u64;
                Ok(if *left == 0 {
                    Progress::Done
                } else {
                    Progress::More
                })
            }
            Framing::Close => {
                if !input.is_empty() {
                    out(input);
                }
                Ok(Progress::More)
            }
        }
    }
}

/// Chunked transfer decoding state (RFC 9112 §7.1); extensions and trailers are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// In the chunk-size digits.
    Size {
        value: u64,
        digits: u8,
    },
    /// In a chunk extension, after the size.
    Extension {
        value: u64,
    },
    /// After the `\r` that ends a size line.
    SizeLf {
        value: u64,
    },
    /// Chunk data bytes still to come.
    Data(u64),
    /// After a chunk's data: expecting `\r\n`.
    DataCr,
    DataLf,
    /// In the trailer section; `empty`: nothing on the current line yet.
    Trailer {
        empty: bool,
    },
    TrailerLf {
        empty: bool,
    },
    Done,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::Size {
            value: 0,
            digits: 0,
        }
    }
}

impl Chunked {
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut impl FnMut(&[u8]),
    ) -> Result<Progress, String> {
        let mut i = 0;
        while i < input.len() {
            if let Chunked::Data(left) = *self {
                let take = at_most(input.len() - i, left);
                out(&input[i..i + take]);
                i += take;
                let left = left - take as u64;
                *self = if left == 0 {
                    Chunked::DataCr
                } else {
                    Chunked::Data(left)
                };
                continue;
            }
            let b = input[i];
            i += 1;
            *self = match (*self, b) {
                (Chunked::Size { value, digits }, _) if b.is_ascii_hexdigit() => {
                    if digits >= 16 {
                        return Err("chunk size too large".into());
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0);
                    Chunked::Size {
                        value: value * 16 + u64::from(d),
                        digits: digits + 1,
                    }
                }
                (Chunked::Size { value, digits }, b';' | b' ' | b'\t') if digits > 0 => {
                    Chunked::Extension { value }
                }
                (Chunked::Size { value, digits }, b'\r') if digits > 0 => Chunked::SizeLf { value },
                (Chunked::Size { value, digits }, b'\n') if digits > 0 => Self::after_size(value),
                (Chunked::Extension { value }, b'\r') => Chunked::SizeLf { value },
                (Chunked::Extension { value }, b'\n') => Self::after_size(value),
                (Chunked::Extension { value }, _) => Chunked::Extension { value },
                (Chunked::SizeLf { value }, b'\n') => Self::after_size(value),
                (Chunked::DataCr, b'\r') => Chunked::DataLf,
                (Chunked::DataCr | Chunked::DataLf, b'\n') => Chunked::default(),
                (Chunked::Trailer { empty }, b'\r') => Chunked::TrailerLf { empty },
                (Chunked::Trailer { empty } | Chunked::TrailerLf { empty }, b'\n') => {
                    if empty {
                        Chunked::Done
                    } else {
                        Chunked::Trailer { empty: true }
                    }
                }
                (Chunked::Trailer { .. }, _) => Chunked::Trailer { empty: false },
                (Chunked::Done, _) => return Ok(Progress::Done),
                (state, b) => {
                    return Err(format!("bad chunked encoding: byte {b:#04x} in {state:?}"))
                }
            };
        }
        Ok(if *self == Chunked::Done {
            Progress::Done
        } else {
            Progress::More
        })
    }

    fn after_size(value: u64) -> Chunked {
        if value == 0 {
            Chunked::Trailer { empty: true }
        } else {
            Chunked::Data(value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` cut at every position in `cuts`; returns the body and the last progress.
    fn decode_split(framing: &mut Framing, input: &[u8], cuts: &[usize]) -> (Vec<u8>, Progress) {
        let mut body = Vec::new();
        let mut progress = Progress::More;
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            progress = framing
                .decode(&input[start..cut], |piece: &[u8]| {
                    body.extend_from_slice(piece)
                })
                .expect("valid encoding");
            start = cut;
        }
        (body, progress)
    }

    #[test]
    fn chunked_split_anywhere() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n \r\nB\r\nworld, SSE!\r\n0\r\nX-T: 1\r\n\r\n";
        let want = b"hello world, SSE!".to_vec();
        let whole = decode_split(&mut Framing::Chunked(Chunked::default()), input, &[]);
        assert_eq!(whole, (want.clone(), Progress::Done));
        for cut in 0..=input.len() {
            let got = decode_split(&mut Framing::Chunked(Chunked::default()), input, &[cut]);
            assert_eq!(got, (want.clone(), Progress::Done), "cut at {cut}");
        }
        let bytes: Vec<usize> = (1..input.len()).collect();
        let got = decode_split(&mut Framing::Chunked(Chunked::default()), input, &bytes);
        assert_eq!(got, (want, Progress::Done));
    }

    #[test]
    fn chunked_open_stream_and_errors() {
        let mut framing = Framing::Chunked(Chunked::default());
        let (body, progress) = decode_split(&mut framing, b"3\r\nabc\r\n4\r\nde", &[]);
        assert_eq!((body.as_slice(), progress), (&b"abcde"[..], Progress::More));
        let mut bad = Chunked::default();
        assert!(bad.decode(b"zz\r\n", &mut |_| {}).is_err());
        let mut bad = Chunked::default();
        assert!(bad.decode(b"2\r\nabX", &mut |_| {}).is_err());
        let mut huge = Chunked::default();
        assert!(huge.decode(b"11111111111111111\r\n", &mut |_| {}).is_err());
    }

    #[test]
    fn length_and_close_framing() {
        let (body, progress) = decode_split(&mut Framing::Length(4), b"abcdef", &[2]);
        assert_eq!((body.as_slice(), progress), (&b"abcd"[..], Progress::Done));
        let (body, progress) = decode_split(&mut Framing::Close, b"abcdef", &[3]);
        assert_eq!(
            (body.as_slice(), progress),
            (&b"abcdef"[..], Progress::More)
        );
    }

    #[test]
    fn chunks_round_trip() {
        let mut encoded = chunk("hello");
        encoded.extend(chunk(b""));
        assert_eq!(encoded, b"5\r\nhello\r\n0\r\n\r\n");
        let mut body = [
            chunk("ab"),
            chunk("cde"),
            LAST_CHUNK.to_vec(),
            b"rest".to_vec(),
        ]
        .concat();
        assert_eq!(
            decode_chunked(&body).expect("valid"),
            Some((b"abcde".to_vec(), body.len() - 4))
        );
        body.truncate(10);
        assert_eq!(decode_chunked(&body).expect("valid"), None);
        assert!(decode_chunked(b"xyz\r\n").is_err());
    }

    #[test]
    fn heads() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n5\r\n";
        let (head, len) = parse_response(input).expect("valid").expect("complete");
        assert_eq!(head.status, 200);
        assert!(matches!(head.framing, Framing::Chunked(_)));
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        assert_eq!(len, input.len() - 3);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-")
            .expect("valid")
            .is_none());
        let (head, _) = parse_response(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(head.status, 502);
        assert!(matches!(head.framing, Framing::Length(3)));
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        let (req, _) = parse_request(
            b"POST /sse?interval_ms=5&x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab",
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(req.method, "POST");
        assert_eq!(req.version, "HTTP/1.1");
        assert_eq!((req.path(), req.query("interval_ms")), ("/sse", Some("5")));
        assert_eq!((req.query("x"), req.query("y")), (Some(""), None));
        assert_eq!((req.content_length, req.chunked), (Some(2), false));
        assert_eq!(req.header("host"), Some("x"));
        let many: String = (0..300).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let input = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let (req, _) = parse_request(input.as_bytes())
            .expect("valid")
            .expect("complete");
        assert_eq!((req.headers.len(), req.header("x-299")), (300, Some("299")));
    }
}
