//! The wire side of an SSE upstream: requests read off a connection (head and body), event
//! streams written as chunked `text/event-stream` responses, plain answers, and waiting between
//! events that notices a client going away.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::http::{self, Chunked, RequestHead};

/// The head of an event stream: `200`, `text/event-stream`, chunked.
pub const STREAM_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

/// [`STREAM_HEAD`] with `Cache-Control: no-cache`, as SSE servers usually send it.
pub const STREAM_HEAD_NO_CACHE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";

/// One request: its head and its body (`Content-Length` or chunked; none otherwise).
#[derive(Debug, Clone)]
pub struct Request {
    pub head: RequestHead,
    pub body: Vec<u8>,
}

/// Reads one request from `sock`; `buf` keeps what was read past it (keep-alive and pipelined
/// requests). `Ok(None)`: the peer closed before sending a byte. A malformed head or body is an
/// [`io::ErrorKind::InvalidData`] error.
pub async fn read_request<S>(sock: &mut S, buf: &mut Vec<u8>) -> io::Result<Option<Request>>
where
    S: AsyncRead + Unpin,
{
    let Some((head, len)) = http::read_head(sock, buf, http::parse_request).await? else {
        return Ok(None);
    };
    buf.drain(..len);
    let body = if let Some(len) = head.content_length {
        let len = usize::try_from(len).map_err(|_| http::invalid("body too long".into()))?;
        while buf.len() < len {
            read_more(sock, buf).await?;
        }
        buf.drain(..len).collect()
    } else if head.chunked {
        let mut state = Chunked::default();
        let mut body = Vec::new();
        let mut seen = 0;
        loop {
            let used = http::decode_chunked_end(&mut state, &buf[seen..], &mut body)
                .map_err(http::invalid)?;
            if let Some(used) = used {
                buf.drain(..seen + used);
                break body;
            }
            seen = buf.len();
            read_more(sock, buf).await?;
        }
    } else {
        Vec::new()
    };
    Ok(Some(Request { head, body }))
}

async fn read_more<S: AsyncRead + Unpin>(sock: &mut S, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.reserve(4096);
    if sock.read_buf(buf).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// A complete response with a plain-text body; with `close`, `Connection: close`.
pub fn text_response(status: u16, body: &str, close: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Writes `event` (one or more whole SSE events, or any piece of a stream) as one chunk.
pub async fn send_chunk<S>(sock: &mut S, event: impl AsRef<[u8]>) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    sock.write_all(&http::chunk(event)).await
}

/// Ends a chunked stream.
pub async fn end_stream<S: AsyncWrite + Unpin>(sock: &mut S) -> io::Result<()> {
    sock.write_all(http::LAST_CHUNK).await
}

/// Holds the connection, reading and dropping whatever comes, until the peer closes it; returns
/// the error that ends the connection.
pub async fn hold_until_closed<S: AsyncRead + Unpin>(sock: &mut S) -> io::Error {
    let mut sink = [0u8; 1024];
    loop {
        match sock.read(&mut sink).await {
            Ok(0) => return io::ErrorKind::ConnectionAborted.into(),
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

/// Sleeps for `interval` (the pace of a stream's events), but fails as soon as the peer closes
/// the connection. Bytes the peer sends meanwhile are dropped: a stream's request has no more
/// body.
pub async fn wait_unless_closed<S>(sock: &mut S, interval: Duration) -> io::Result<()>
where
    S: AsyncRead + Unpin,
{
    let mut sink = [0u8; 1024];
    tokio::select! {
        _ = tokio::time::sleep(interval) => Ok(()),
        read = sock.read(&mut sink) => match read {
            Ok(0) | Err(_) => Err(io::ErrorKind::ConnectionAborted.into()),
            Ok(_) => Ok(()),
        },
    }
}
