//! A raw HTTP/1.1 client that shows exactly when each byte arrives.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One SSE event of the test upstream, with its send and receive times since the test epoch.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub id: u64,
    pub sent_micros: u64,
    pub received_micros: u64,
}

impl Event {
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.received_micros.saturating_sub(self.sent_micros))
    }
}

enum Framing {
    Chunked,
    Length(usize),
    UntilClose,
}

pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    socket: TcpStream,
    buf: Vec<u8>,
    framing: Framing,
    done: bool,
    /// Decoded body bytes not yet consumed as events.
    pending: Vec<u8>,
}

/// Sends a request. `headers` may repeat names; `Host` is added unless given.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Response> {
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

pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    request(addr, "GET", path, &[], None).await
}

impl Response {
    async fn read_head(mut socket: TcpStream) -> std::io::Result<Response> {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let (status, headers) = super::parse_response_head(&head);
        let find = |name: &str| super::find_header(&headers, name).map(str::to_string);
        let framing = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            Framing::Chunked
        } else if let Some(len) = find("content-length").and_then(|v| v.parse().ok()) {
            Framing::Length(len)
        } else {
            Framing::UntilClose
        };
        let done = matches!(framing, Framing::Length(0));
        Ok(Response {
            status,
            headers,
            socket,
            buf,
            framing,
            done,
            pending: Vec::new(),
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        super::find_header(&self.headers, name)
    }

    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 8192];
        let n = self.socket.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next piece of decoded body, or `None` at a clean end of the body.
    /// A connection closed before the body's end is an error.
    pub async fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        match self.framing {
            Framing::Length(ref mut left) => {
                if self.buf.is_empty()
                    && !Self::fill_socket(&mut self.socket, &mut self.buf).await?
                {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                let take = self.buf.len().min(*left);
                *left -= take;
                self.done = *left == 0;
                Ok(Some(self.buf.drain(..take).collect()))
            }
            Framing::UntilClose => {
                if self.buf.is_empty() && !self.fill().await? {
                    self.done = true;
                    return Ok(None);
                }
                Ok(Some(std::mem::take(&mut self.buf)))
            }
            Framing::Chunked => {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    if !self.fill().await? {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| {
                            std::io::Error::other(format!("bad chunk size {size_text:?}"))
                        })?;
                while self.buf.len() < line_end + 2 + size + 2 {
                    if !self.fill().await? {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                self.buf.drain(..line_end + 2);
                let data: Vec<u8> = self.buf.drain(..size).collect();
                self.buf.drain(..2);
                if size == 0 {
                    self.done = true;
                    return Ok(None);
                }
                Ok(Some(data))
            }
        }
    }

    async fn fill_socket(socket: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The whole remaining body as text.
    pub async fn text(mut self) -> std::io::Result<String> {
        let mut body = std::mem::take(&mut self.pending);
        while let Some(chunk) = self.next_chunk().await? {
            body.extend(chunk);
        }
        Ok(String::from_utf8_lossy(&body).to_string())
    }

    /// The next complete SSE event from the test upstream, or `None` at the end of the body.
    pub async fn next_event(&mut self) -> std::io::Result<Option<Event>> {
        loop {
            if let Some(event) = take_event(&mut self.pending) {
                return Ok(Some(event));
            }
            match self.next_chunk().await? {
                Some(chunk) => self.pending.extend(chunk),
                None => return Ok(None),
            }
        }
    }
}

/// Takes the first complete event of the test upstream out of `pending`, skipping comment blocks.
pub fn take_event(pending: &mut Vec<u8>) -> Option<Event> {
    while let Some(i) = pending.windows(2).position(|w| w == b"\n\n") {
        let received_micros = super::micros_since_epoch();
        let block: Vec<u8> = pending.drain(..i + 2).collect();
        let text = String::from_utf8_lossy(&block).to_string();
        let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue; // a comment block
        };
        let mut parts = data.split(' ');
        let id = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let sent_micros = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        return Some(Event {
            id,
            sent_micros,
            received_micros,
        });
    }
    None
}
