//! Raw bytes over TCP, for requests that the ordinary client cannot or would not send: smuggling
//! attempts, malformed heads, pipelined requests. Reads whatever comes back and splits it into
//! responses.

use std::net::SocketAddr;
use std::time::Duration;

use testkit::http::{self, Framing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the connection ended after the request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The server closed it (FIN).
    Closed,
    /// The server reset it (or a read failed).
    Reset,
    /// Still open when the wait ran out.
    Open,
}

/// One response read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::find_header(&self.headers, name)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// Everything the server sent back to one raw request.
#[derive(Debug)]
pub struct Reply {
    pub raw: Vec<u8>,
    pub responses: Vec<RawResponse>,
    pub end: End,
}

impl Reply {
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }

    /// The raw bytes as text, for failure messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).to_string()
    }
}

/// Sends `request` as is (written by a separate task, so a server that stops reading cannot
/// block the test) and reads until the server closes the connection or nothing arrives for
/// `quiet`.
pub async fn send(addr: SocketAddr, request: &[u8], quiet: Duration) -> Reply {
    let socket = TcpStream::connect(addr).await.expect("connect to ssegate");
    socket.set_nodelay(true).ok();
    let (mut reader, mut writer) = socket.into_split();
    let request = request.to_vec();
    let writing = tokio::spawn(async move {
        // The server may answer and close before it has read everything; that is its right.
        let _ = writer.write_all(&request).await;
        // Keep the write half open (no FIN) until the reader is done: a half-close would let
        // the server take it for a client that went away.
        writer
    });
    let mut raw = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(quiet, reader.read(&mut chunk)).await {
            Err(_) => break End::Open,
            Ok(Ok(0)) => break End::Closed,
            Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => break End::Reset,
        }
    };
    writing.abort();
    let responses = parse_responses(&raw);
    Reply {
        raw,
        responses,
        end,
    }
}

/// Splits `raw` into complete responses (`Content-Length`, chunked, or until the end of the
/// bytes). A truncated last response, or anything after bytes that are no response, is left out.
pub fn parse_responses(mut raw: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    while let Ok(Some((head, head_len))) = http::parse_response(raw) {
        let rest = &raw[head_len..];
        let (body, used) = match head.framing {
            Framing::Chunked(_) => match http::decode_chunked(rest) {
                Ok(Some(decoded)) => decoded,
                _ => break,
            },
            Framing::Length(len) => {
                let Some(body) = usize::try_from(len).ok().and_then(|len| rest.get(..len)) else {
                    break;
                };
                (body.to_vec(), body.len())
            }
            Framing::Close => (rest.to_vec(), rest.len()),
        };
        out.push(RawResponse {
            status: head.status,
            headers: head.headers,
            body,
        });
        raw = &rest[used..];
    }
    out
}
