//! The relay's upstream side: one HTTP/1.1 exchange on a pooled Pingora connection, with the
//! response read by the relay itself.
//!
//! Pingora's `TransportConnector` makes, pools and (for `tls: true` upstreams) encrypts the
//! connections, and Pingora's HTTP/1.1 client session writes the request. The response is read
//! here instead of by that session, because the session allocates a 64 KiB body buffer for every
//! response and keeps it as long as the stream lives. Here the head is read into a buffer that is
//! freed once it is parsed, and the body is read straight off the socket into a per-thread
//! scratch buffer ([`UpstreamBody::poll_next`]): a quiet stream holds no buffer at all, and one
//! read becomes one write to the client. Read timeouts use Pingora's own timer wheel
//! (`pingora_timeout`), which arms a timer only once a read is pending and never wakes the
//! runtime to do so.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use pingora_core::connectors::{ConnectorOptions, TransportConnector};
use pingora_core::protocols::http::v1::client::HttpSession as RequestWriter;
use pingora_core::protocols::Stream;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_core::{Error, ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use pingora_timeout::fast_timeout::fast_timeout;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::framing::{BodyDecoder, Framing};
use crate::upstream::{Tried, UpstreamPool};

/// How long an idle upstream connection may wait in the pool for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest response head accepted (Pingora's own limit).
const MAX_HEAD_SIZE: usize = 1024 * 1024 - 1;
/// The most header lines in a response head (Pingora's own limit).
const MAX_HEADERS: usize = 256;
/// The first read of a response head; most heads fit.
const HEAD_READ_SIZE: usize = 1024;
/// The most body bytes one read takes in: a TLS record's worth.
const SCRATCH_SIZE: usize = 16 * 1024;

thread_local! {
    /// Where body reads land before their payload is copied out in one piece per read.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// The relay's pool of upstream connections (its own, beside the one of Pingora's proxy loop).
pub(crate) struct Connector {
    transport: TransportConnector,
}

/// A connection with a request on it whose response head has not been read yet.
pub(crate) struct Connection {
    stream: Stream,
    pub(crate) peer: HttpPeer,
    /// Whether it came from the pool (and may turn out closed by the upstream).
    pub(crate) reused: bool,
}

/// An upstream response: its head and its body, not yet read.
pub(crate) struct Response {
    pub(crate) header: ResponseHeader,
    pub(crate) body: UpstreamBody,
}

/// The body of an upstream response, read as it arrives.
pub(crate) struct UpstreamBody {
    stream: Stream,
    decoder: BodyDecoder,
    /// Bytes read together with the head, past its end: the start of the body.
    preread: Option<BytesMut>,
    /// The pool key of the peer, to give the connection back.
    reuse_key: u64,
    /// Whether the upstream lets the connection carry another request after this one.
    keepalive: bool,
    /// Whether the upstream sent bytes past the end of the body (then it is not reused).
    overread: bool,
}

impl Connector {
    pub(crate) fn new(conf: &ServerConf) -> Self {
        Connector {
            transport: TransportConnector::new(Some(ConnectorOptions::from_server_conf(conf))),
        }
    }

    /// Connects to a peer of `pool` by the pool's failover rule (see [`UpstreamPool::select`]):
    /// a healthy peer not in `tried`, and after a failed connect the next one, while one is left.
    /// `key` is the balancing key. Each peer that fails joins `tried`; `chosen` is told every
    /// peer tried.
    pub(crate) async fn connect(
        &self,
        pool: &UpstreamPool,
        key: &[u8],
        tried: &mut Tried,
        mut chosen: impl FnMut(SocketAddr),
    ) -> Result<Connection> {
        loop {
            let addr = pool.select(key, tried)?;
            chosen(addr);
            let peer = pool.http_peer(addr);
            match self.transport.get_stream(&peer).await {
                Ok((stream, reused)) => {
                    return Ok(Connection {
                        stream,
                        peer,
                        reused,
                    })
                }
                Err(e) => {
                    if !pool.connect_failed(tried, addr, &e) {
                        return Err(e.into_up());
                    }
                }
            }
        }
    }

    /// Gives a connection whose response is complete back to the pool, if the upstream allows.
    pub(crate) fn release(&self, body: UpstreamBody) {
        if body.decoder.is_done() && body.keepalive && !body.overread {
            self.transport
                .release_stream(body.stream, body.reuse_key, Some(POOL_IDLE_TIMEOUT));
        }
    }
}

impl Connection {
    /// Sends `req` and the client's request body (if any), then reads the final response head.
    pub(crate) async fn exchange(
        self,
        session: &mut Session,
        req: RequestHeader,
    ) -> Result<Response> {
        let Connection { stream, peer, .. } = self;
        let head_request = req.method == http::Method::HEAD;
        let mut writer = RequestWriter::new_with_options(stream, &peer);
        writer.write_timeout = peer.options.write_timeout;
        send_request(session, &mut writer, req).await?;
        let mut stream = writer.into_inner();
        let (header, framing, keepalive, preread) =
            read_head(&mut stream, peer.options.read_timeout, head_request).await?;
        let body = UpstreamBody {
            stream,
            decoder: BodyDecoder::new(framing),
            preread: (!preread.is_empty()).then_some(preread),
            reuse_key: peer.reuse_hash(),
            keepalive,
            overread: false,
        };
        Ok(Response { header, body })
    }
}

/// Writes the request header and body through Pingora's HTTP/1.1 client session, which frames
/// the body as the header says (length or chunked).
async fn send_request(
    session: &mut Session,
    writer: &mut RequestWriter,
    req: RequestHeader,
) -> Result<()> {
    let has_body = !session.is_body_empty();
    writer
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| e.into_up())?;
    if has_body {
        while let Some(chunk) = session
            .read_request_body()
            .await
            .map_err(|e| e.into_down())?
        {
            writer.write_body(&chunk).await.map_err(|e| e.into_up())?;
        }
    }
    writer.finish_body().await.map_err(|e| e.into_up())?;
    Ok(())
}

/// Reads the final response head (skipping informational ones); returns it with the body's
/// framing, whether the connection may be reused, and the bytes read past the head.
async fn read_head(
    stream: &mut Stream,
    read_timeout: Option<Duration>,
    head_request: bool,
) -> Result<(ResponseHeader, Framing, bool, BytesMut)> {
    let mut buf = BytesMut::with_capacity(HEAD_READ_SIZE);
    loop {
        while let Some(len) = head_length(&buf)? {
            // The header keeps slices of these bytes rather than copies of each field. That
            // parses the head twice (here to find its end, then on the frozen bytes), once per
            // stream, in exchange for no allocation per header field.
            let raw = buf.split_to(len).freeze();
            if let Some(head) = parse_head(&raw, head_request)? {
                return Ok((head.header, head.framing, head.keepalive, buf));
            }
        }
        if buf.len() > MAX_HEAD_SIZE {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "upstream response head too large",
            )
            .map_err(|e| e.into_up());
        }
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().max(HEAD_READ_SIZE));
        }
        let read = stream.read_buf(&mut buf);
        let read = match read_timeout {
            Some(limit) => match fast_timeout(limit, read).await {
                Ok(read) => read,
                Err(_) => {
                    return Error::e_explain(
                        ErrorType::ReadTimedout,
                        format!("no response head within {limit:?}"),
                    )
                    .map_err(|e| e.into_up())
                }
            },
            None => read.await,
        };
        match read {
            Ok(0) => {
                return Error::e_explain(
                    ErrorType::ConnectionClosed,
                    "upstream closed the connection before a response head",
                )
                .map_err(|e| e.into_up())
            }
            Ok(_) => {}
            Err(e) => {
                return Error::e_because(ErrorType::ReadError, "reading response head", e)
                    .map_err(|e| e.into_up())
            }
        }
    }
}

/// A parsed final response head.
struct Head {
    header: ResponseHeader,
    framing: Framing,
    keepalive: bool,
}

/// A response parser with the same leniency as Pingora's own.
fn parser() -> httparse::ParserConfig {
    let mut parser = httparse::ParserConfig::default();
    parser.allow_spaces_after_header_name_in_responses(true);
    parser.allow_obsolete_multiline_headers_in_responses(true);
    parser
}

fn invalid(why: String) -> Box<Error> {
    Error::explain(ErrorType::InvalidHTTPHeader, why).into_up()
}

/// The length of the response head at the start of `buf`, once it is all there.
fn head_length(buf: &[u8]) -> Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match parser().parse_response(&mut resp, buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(invalid(format!("invalid response head: {e}"))),
    }
}

/// Builds the response of the complete head `raw` (see [`head_length`]); `None` for an
/// informational head, which the caller skips.
fn parse_head(raw: &Bytes, head_request: bool) -> Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    parser()
        .parse_response(&mut resp, raw)
        .map_err(|e| invalid(format!("invalid response head: {e}")))?;
    let code = resp.code.unwrap_or(0);
    if code == 101 {
        // ssegate forwards no protocol upgrade, so none can be accepted.
        return Err(invalid("upstream switched protocols unasked".to_string()));
    }
    if (100..200).contains(&code) {
        return Ok(None);
    }
    let mut header = ResponseHeader::build(code, Some(resp.headers.len()))?;
    header.set_version(match resp.version {
        Some(1) => http::Version::HTTP_11,
        _ => http::Version::HTTP_10,
    });
    header.set_reason_phrase(resp.reason)?;
    for h in resp.headers.iter() {
        header.append_header(
            raw.slice_ref(h.name.as_bytes()),
            pingora_http::header_value_from_raw(raw.slice_ref(h.value)),
        )?;
    }
    let framing = framing(&mut header, head_request).map_err(invalid)?;
    let keepalive = framing != Framing::UntilClose && keeps_alive(&header);
    Ok(Some(Head {
        header,
        framing,
        keepalive,
    }))
}

/// How the body of `header` is delimited (RFC 9112 section 6.3). A `Content-Length` that
/// comes with `Transfer-Encoding` is removed, as the RFC asks; conflicting or malformed lengths
/// are refused, since they make the body's end ambiguous.
fn framing(header: &mut ResponseHeader, head_request: bool) -> Result<Framing, String> {
    if head_request || matches!(header.status.as_u16(), 204 | 304) {
        return Ok(Framing::Length(0));
    }
    if let Some(last) = header
        .headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        let chunked = last
            .as_bytes()
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        header.remove_header(&http::header::CONTENT_LENGTH);
        return Ok(if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    let mut length: Option<u64> = None;
    for value in header.headers.get_all(http::header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            let n = std::str::from_utf8(part)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| "invalid Content-Length".to_string())?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length values".to_string());
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// Whether the upstream keeps the connection open after this response: HTTP/1.1 unless it says
/// `Connection: close`, HTTP/1.0 only if it says `Connection: keep-alive`.
fn keeps_alive(header: &ResponseHeader) -> bool {
    let says = |token: &str| {
        header
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    if header.version == http::Version::HTTP_11 {
        !says("close")
    } else {
        says("keep-alive")
    }
}

impl UpstreamBody {
    /// A body read straight off `stream`, for in-process tests of the relay's loop.
    #[cfg(test)]
    pub(crate) fn from_stream(stream: Stream, framing: Framing) -> Self {
        UpstreamBody {
            stream,
            decoder: BodyDecoder::new(framing),
            preread: None,
            reuse_key: 0,
            keepalive: false,
            overread: false,
        }
    }

    /// Waits for more body bytes and returns them in one buffer that starts with `headroom`
    /// unused bytes (room for the client side's framing), or `None` at the end of the body.
    ///
    /// Cancel-safe: bytes are taken off the socket only inside a poll that returns them, and the
    /// framing state lives in `self`, so dropping the future between polls loses nothing.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        headroom: usize,
    ) -> Poll<Result<Option<BytesMut>>> {
        if let Some(preread) = self.preread.take() {
            if let Some(out) = self.decode(&preread, headroom)? {
                return Poll::Ready(Ok(Some(out)));
            }
        }
        SCRATCH.with_borrow_mut(|scratch| loop {
            if self.decoder.is_done() {
                return Poll::Ready(Ok(None));
            }
            let mut buf = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))
                .or_err(ErrorType::ReadError, "reading upstream body")
                .map_err(|e| e.into_up())?;
            let read = buf.filled();
            if read.is_empty() {
                self.decoder
                    .at_eof()
                    .or_err(ErrorType::ConnectionClosed, "upstream body")
                    .map_err(|e| e.into_up())?;
                return Poll::Ready(Ok(None));
            }
            if let Some(out) = self.decode(read, headroom)? {
                return Poll::Ready(Ok(Some(out)));
            }
        })
    }

    /// Waits for more body bytes, at most `limit` per read if given (see [`Self::poll_next`]).
    pub(crate) async fn next(
        &mut self,
        headroom: usize,
        limit: Option<Duration>,
    ) -> Result<Option<BytesMut>> {
        let next = std::future::poll_fn(|cx| self.poll_next(cx, headroom));
        match limit {
            None => next.await,
            Some(limit) => fast_timeout(limit, next).await.unwrap_or_else(|_| {
                Error::e_explain(
                    ErrorType::ReadTimedout,
                    format!("upstream sent nothing for {limit:?}"),
                )
                .map_err(|e| e.into_up())
            }),
        }
    }

    /// Decodes one read; `None` when it held framing only.
    fn decode(&mut self, input: &[u8], headroom: usize) -> Result<Option<BytesMut>> {
        let mut out = BytesMut::with_capacity(headroom + input.len());
        out.put_bytes(0, headroom);
        let used = self
            .decoder
            .decode(input, &mut out)
            .or_err(ErrorType::InvalidHTTPHeader, "upstream body framing")
            .map_err(|e| e.into_up())?;
        self.overread |= used < input.len();
        Ok((out.len() > headroom).then_some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head at the start of `raw`: `Ok(None)` while incomplete, `Some((None, len))` for an
    /// informational one.
    fn head(raw: &str) -> Result<Option<(Option<Head>, usize)>> {
        let Some(len) = head_length(raw.as_bytes())? else {
            return Ok(None);
        };
        let bytes = Bytes::copy_from_slice(&raw.as_bytes()[..len]);
        Ok(Some((parse_head(&bytes, false)?, len)))
    }

    fn final_head(raw: &str) -> Head {
        match head(raw) {
            Ok(Some((Some(head), len))) => {
                assert_eq!(len, raw.len());
                head
            }
            _ => panic!("not a complete final head: {raw:?}"),
        }
    }

    #[test]
    fn framing_follows_the_rfc_order() {
        let chunked = final_head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(chunked.framing, Framing::Chunked);
        assert!(chunked.header.headers.get("content-length").is_none());
        assert!(chunked.keepalive);

        let sized = final_head("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(sized.framing, Framing::Length(5));

        let open = final_head("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
        assert_eq!(open.framing, Framing::UntilClose);
        assert!(
            !open.keepalive,
            "a close-delimited body ends the connection"
        );

        let not_chunked_last =
            final_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!(not_chunked_last.framing, Framing::UntilClose);

        let no_content = final_head("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(no_content.framing, Framing::Length(0));
        let head_response = parse_head(
            &Bytes::from_static(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"),
            true,
        );
        assert!(matches!(
            head_response,
            Ok(Some(Head {
                framing: Framing::Length(0),
                ..
            }))
        ));
    }

    #[test]
    fn ambiguous_lengths_and_bad_heads_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
        ] {
            assert!(head(raw).is_err(), "accepted {raw:?}");
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(head(&many).is_err(), "more than {MAX_HEADERS} headers");
    }

    #[test]
    fn informational_heads_are_skipped_and_partial_heads_wait() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
        let Ok(Some((None, len))) = head(raw) else {
            panic!("100 Continue is informational");
        };
        assert_eq!(&raw[len..], "HTTP/1.1 200 OK\r\n");
        assert!(matches!(head(&raw[len..]), Ok(None)));
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let close =
            final_head("HTTP/1.1 200 OK\r\nConnection: x, Close\r\nContent-Length: 0\r\n\r\n");
        assert!(!close.keepalive);
        let old = final_head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!old.keepalive);
        let old_kept =
            final_head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(old_kept.keepalive);
    }

    #[test]
    fn header_case_and_order_are_kept() {
        let head = final_head("HTTP/1.1 200 OK\r\nX-Custom-ID: 1\r\nset-cookie: a\r\nSet-Cookie: b\r\nContent-Length: 0\r\n\r\n");
        let mut wire = BytesMut::new();
        head.header.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8_lossy(&wire);
        assert!(wire.contains("X-Custom-ID: 1\r\n"), "{wire}");
        assert!(
            wire.find("set-cookie: a").unwrap() < wire.find("Set-Cookie: b").unwrap(),
            "{wire}"
        );
    }
}
