//! The little HTTP/1.1 the load tool needs: the target URL (`http://`, or `https://` for the
//! HTTP/2 mode), reading a message head off a socket, and decoding a response body framed by
//! chunked encoding, a `Content-Length` or the close.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest message head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// `http://HOST[:PORT]/PATH` or `https://…`, split for connecting and for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https`: TLS (the client speaks HTTP/2 over it).
    pub tls: bool,
    /// `HOST:PORT`, for connecting and for the `Host` header.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(format!(
                "{url}: only http:// and https:// URLs are supported"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_string()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        Ok(Self {
            tls,
            authority,
            path: path.to_string(),
        })
    }

    /// The host without the port (and without an IPv6 address's brackets).
    pub fn host(&self) -> &str {
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The whole URL, for an HTTP/2 request's `:scheme`, `:authority` and `:path`.
    pub fn uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path)
    }

    /// The GET request for an event stream.
    pub fn sse_request(&self) -> Vec<u8> {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
            self.path, self.authority
        )
        .into_bytes()
    }
}

/// Reads from `sock` into `buf` until `parse` finds a complete head in it, and returns what
/// `parse` made of it plus the head's length. `Ok(None)`: the peer closed before sending a byte.
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

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A request head, as far as the upstream cares.
#[derive(Debug)]
pub struct RequestHead {
    pub path: String,
    pub content_length: u64,
}

/// Parses a request head at the start of `buf`: `Ok(None)` while incomplete.
pub fn parse_request(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let content_length = content_length(request.headers)?.unwrap_or(0);
            Ok(Some((
                RequestHead {
                    path: request.path.unwrap_or("/").to_string(),
                    content_length,
                },
                len,
            )))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("bad request head: {e}")),
    }
}

/// A response head, as far as the client cares.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: Framing,
}

/// Parses a response head at the start of `buf`: `Ok(None)` while incomplete.
pub fn parse_response(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let chunked = response.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    && String::from_utf8_lossy(h.value)
                        .to_ascii_lowercase()
                        .contains("chunked")
            });
            let framing = if chunked {
                Framing::Chunked(Chunked::default())
            } else if let Some(n) = content_length(response.headers)? {
                Framing::Length(n)
            } else {
                Framing::Close
            };
            Ok(Some((
                ResponseHead {
                    status: response.code.unwrap_or(0),
                    framing,
                },
                len,
            )))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("bad response head: {e}")),
    }
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
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut impl FnMut(&[u8]),
    ) -> Result<Progress, String> {
        match self {
            Framing::Chunked(chunked) => chunked.decode(input, out),
            Framing::Length(left) => {
                let take = input
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
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
                let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
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
                .decode(&input[start..cut], &mut |piece| {
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
    fn heads() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n5\r\n";
        let (head, len) = parse_response(input).expect("valid").expect("complete");
        assert_eq!(head.status, 200);
        assert!(matches!(head.framing, Framing::Chunked(_)));
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
        let (req, _) = parse_request(b"GET /sse?interval_ms=5 HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(
            (req.path.as_str(), req.content_length),
            ("/sse?interval_ms=5", 0)
        );
    }

    #[test]
    fn urls() {
        let url = Url::parse("http://127.0.0.1:8080/sse?x=1").expect("valid");
        assert_eq!(url.authority, "127.0.0.1:8080");
        assert_eq!(url.path, "/sse?x=1");
        assert_eq!(
            Url::parse("http://localhost").expect("valid").authority,
            "localhost:80"
        );
        assert!(!url.tls);
        assert_eq!(url.host(), "127.0.0.1");
        let url = Url::parse("https://[::1]/sse").expect("valid");
        assert!(url.tls);
        assert_eq!((url.authority.as_str(), url.host()), ("[::1]:443", "::1"));
        assert_eq!(url.uri(), "https://[::1]:443/sse");
        assert!(Url::parse("ftp://x/").is_err());
    }
}
