//! HTTP/1.1 clients: [`Response`] shows each piece of a response body as it arrives (and each
//! SSE event in it), and [`EventSource`] reads an event stream as a browser's `EventSource`
//! does, reconnecting after `retry:` with `Last-Event-ID`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{self, Framing, Headers, Progress};
use crate::sse::{self, OwnedEvent};

/// A response whose body is read piece by piece.
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Headers,
    socket: TcpStream,
    /// Bytes read past the head and not yet decoded.
    unread: Vec<u8>,
    framing: Framing,
    done: bool,
    parser: sse::Parser,
    /// Events parsed but not yet taken.
    events: std::collections::VecDeque<OwnedEvent>,
}

/// Sends a request on a new connection and reads the response head. `headers` may repeat
/// names; `Host` is added unless given, `Content-Length` when there is a body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<Response> {
    let mut socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).await?;
    if let Some(body) = body {
        socket.write_all(body).await?;
    }
    Response::read_head(socket).await
}

pub async fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    request(addr, "GET", path, &[], None).await
}

/// One plain request of a load: `GET /` on a connection of its own, read to the end of the
/// body; the status.
pub async fn get_once(addr: SocketAddr) -> io::Result<u16> {
    let headers = [("Host", "bench"), ("Connection", "close")];
    let response = request(addr, "GET", "/", &headers, None).await?;
    let status = response.status;
    response.text().await?;
    Ok(status)
}

impl Response {
    async fn read_head(mut socket: TcpStream) -> io::Result<Response> {
        let mut buf = Vec::new();
        let Some((head, len)) =
            http::read_head(&mut socket, &mut buf, http::parse_response).await?
        else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        buf.drain(..len);
        Ok(Response {
            status: head.status,
            headers: head.headers,
            socket,
            unread: buf,
            done: matches!(head.framing, Framing::Length(0)),
            framing: head.framing,
            parser: sse::Parser::new(),
            events: Default::default(),
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        http::find_header(&self.headers, name)
    }

    /// The next piece of decoded body, or `None` at a clean end of the body. A connection
    /// closed before the body's end is an error. Cancel-safe: only the socket read awaits.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.unread.is_empty() {
                self.unread.reserve(8192);
                if self.socket.read_buf(&mut self.unread).await? == 0 {
                    if matches!(self.framing, Framing::Close) {
                        self.done = true;
                        return Ok(None);
                    }
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            let mut body = Vec::new();
            let progress = self
                .framing
                .decode(&self.unread, |piece: &[u8]| body.extend_from_slice(piece))
                .map_err(http::invalid)?;
            self.unread.clear();
            self.done = progress == Progress::Done;
            if !body.is_empty() {
                return Ok(Some(body));
            }
        }
    }

    /// The whole remaining body as text.
    pub async fn text(mut self) -> io::Result<String> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            body.extend(chunk);
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The next complete SSE event, or `None` at the end of the body.
    pub async fn next_event(&mut self) -> io::Result<Option<OwnedEvent>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            match self.next_chunk().await? {
                Some(chunk) => self.events.extend(self.parser.feed_owned(&chunk)),
                None => return Ok(None),
            }
        }
    }
}

/// How one connection of an [`EventSource`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The response's status; 0 if none came.
    pub status: u16,
    /// The `retry:` the server sent on this connection (ms).
    pub retry: Option<u64>,
    pub end: End,
    /// The body ended inside an event (a cut event is never dispatched).
    pub cut_event: bool,
}

/// Why a connection of an [`EventSource`] is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `stop` said so.
    Stopped,
    /// The server ended the body cleanly.
    Ended,
    /// No connection, no response head, or a body that broke off.
    Failed,
}

/// A client that reads an event stream as a browser's `EventSource`: it remembers the last
/// event id and sends it as `Last-Event-ID` when it reconnects, and keeps the server's last
/// `retry:` as its reconnection delay.
pub struct EventSource {
    addr: SocketAddr,
    path: String,
    /// The last event id seen, sent on the next connection.
    pub last_id: Option<String>,
    /// The reconnection delay: the server's last `retry:`, or the given default.
    pub retry: Duration,
}

/// How often a connection checks `stop` while no data comes.
const STOP_CHECK: Duration = Duration::from_millis(100);

impl EventSource {
    pub fn new(addr: SocketAddr, path: &str, default_retry: Duration) -> Self {
        EventSource {
            addr,
            path: path.to_string(),
            last_id: None,
            retry: default_retry,
        }
    }

    /// Opens one connection and reads its events, calling `on_event` for each, until the body
    /// ends, breaks off, or `stop` returns true (checked at every piece of data and at least
    /// every 100 ms). It does not wait before returning: the caller decides on the delay.
    pub async fn connect_once(
        &mut self,
        stop: impl Fn() -> bool,
        mut on_event: impl FnMut(&OwnedEvent),
    ) -> Connection {
        let mut connection = Connection {
            status: 0,
            retry: None,
            end: End::Failed,
            cut_event: false,
        };
        let mut headers = vec![("Accept", "text/event-stream")];
        let last_id = self.last_id.clone();
        if let Some(id) = &last_id {
            headers.push(("Last-Event-ID", id.as_str()));
        }
        let Ok(mut resp) = request(self.addr, "GET", &self.path, &headers, None).await else {
            return connection;
        };
        connection.status = resp.status;
        if resp.status != 200 {
            return connection;
        }
        let mut parser = sse::Parser::new();
        connection.end = loop {
            if stop() {
                break End::Stopped;
            }
            let chunk = tokio::select! {
                chunk = resp.next_chunk() => chunk,
                _ = tokio::time::sleep(STOP_CHECK) => continue,
            };
            match chunk {
                Ok(Some(data)) => {
                    parser.feed(&data, |event| {
                        let event = OwnedEvent::from(event);
                        on_event(&event);
                        // As a browser: an empty id is not sent back.
                        self.last_id = (!event.id.is_empty()).then_some(event.id);
                    });
                    if let Some(ms) = parser.retry() {
                        connection.retry = Some(ms);
                        self.retry = Duration::from_millis(ms);
                    }
                }
                Ok(None) => break End::Ended,
                Err(_) => break End::Failed,
            }
        };
        connection.cut_event = connection.end != End::Stopped && parser.in_event();
        connection
    }
}
