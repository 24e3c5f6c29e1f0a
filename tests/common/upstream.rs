//! A scriptable HTTP/1.1 upstream on 127.0.0.1 that records what it receives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream does with each request.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// `count` events (or endless), one every `interval`, chunked, `text/event-stream`.
    /// Each event is `id: N` and `data: N MICROS` (zero-padded) with its send time since the test epoch.
    /// With `end`, the body is terminated after the last event; otherwise the stream stays open.
    Sse {
        interval: Duration,
        count: Option<u64>,
        end: bool,
    },
    /// Like `Sse` but framed with a `Content-Length` for the whole body, written slowly.
    SseWithLength { interval: Duration, count: u64 },
    /// A chunked `text/event-stream` body of these pieces, each sent after its delay; then the
    /// body ends (`end`) or the stream stays open.
    Script {
        pieces: Vec<(Duration, &'static str)>,
        end: bool,
    },
    /// An endless stream that resumes after the request's `Last-Event-ID`: ids count up from
    /// there, one event every `interval` (as an upstream that honours reconnections does).
    Resumable { interval: Duration },
    /// `200 OK` with this plain-text body.
    Text(String),
    /// Like `Text`, but a second request on the same connection finds it closed, as when an
    /// upstream closes an idle keep-alive connection just as a proxy reuses it.
    TextOncePerConnection(String),
    /// Reads the request and never answers.
    Silent,
    /// Raw bytes, each piece after its delay, with no framing added; then `then`. For responses
    /// no well-behaved server sends.
    Raw {
        pieces: Vec<(Duration, Vec<u8>)>,
        then: RawEnd,
    },
    /// An endless chunked `text/event-stream` of `event_size`-byte events written as fast as
    /// the connection takes them; bytes written are counted (see [`Upstream::sent_bytes`]).
    Flood { event_size: usize },
}

/// How a [`Behavior::Raw`] response ends.
#[derive(Clone, Copy, Debug)]
pub enum RawEnd {
    /// Close the connection (FIN).
    Close,
    /// Reset the connection (RST).
    Reset,
    /// Keep the connection open until the peer closes it.
    Hold,
}

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    /// The request line's protocol, e.g. `HTTP/1.1`.
    pub version: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::find_header(&self.headers, name)
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    /// When the upstream noticed a client connection close.
    closed: Vec<Instant>,
    /// Connections currently open.
    open: usize,
    /// Status for `/healthz`.
    health_status: u16,
    /// Body bytes written by [`Behavior::Flood`] responses.
    sent_bytes: u64,
    /// [`Behavior::Flood`] responses send their head and wait while this is set.
    floods_paused: bool,
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Behavior {
    /// An SSE stream that never ends, one event every `interval`.
    pub fn endless(interval: Duration) -> Behavior {
        Behavior::Sse {
            interval,
            count: None,
            end: false,
        }
    }
}

impl Upstream {
    pub async fn start(behavior: Behavior) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let state = Arc::new(Mutex::new(State {
            health_status: 200,
            ..State::default()
        }));
        let upstream = Upstream { addr, state };
        let shared = upstream.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let conn = shared.clone();
                let behavior = behavior.clone();
                tokio::spawn(async move { conn.serve(socket, behavior).await });
            }
        });
        upstream
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests other than health checks.
    pub fn proxied(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.target != "/healthz")
            .collect()
    }

    pub fn closed(&self) -> Vec<Instant> {
        self.state.lock().unwrap().closed.clone()
    }

    pub fn open_connections(&self) -> usize {
        self.state.lock().unwrap().open
    }

    /// Holds (or releases) every [`Behavior::Flood`] response after its head, so that many
    /// streams can open before any of them floods.
    pub fn pause_floods(&self, paused: bool) {
        self.state.lock().unwrap().floods_paused = paused;
    }

    pub fn sent_bytes(&self) -> u64 {
        self.state.lock().unwrap().sent_bytes
    }

    pub fn set_health_status(&self, status: u16) {
        self.state.lock().unwrap().health_status = status;
    }

    async fn serve(&self, mut socket: TcpStream, behavior: Behavior) {
        socket.set_nodelay(true).ok();
        self.state.lock().unwrap().open += 1;
        let mut buf = Vec::new();
        let mut served = 0;
        // Keep-alive: serve requests until the peer closes or a stream ends the connection.
        while let Some(req) = read_request(&mut socket, &mut buf).await {
            served += 1;
            if served > 1 && matches!(behavior, Behavior::TextOncePerConnection(_)) {
                break;
            }
            let is_health = req.target == "/healthz";
            let last_event_id = req.header("last-event-id").and_then(|v| v.parse().ok());
            self.state.lock().unwrap().requests.push(req);
            let result = if is_health {
                let status = self.state.lock().unwrap().health_status;
                respond_text(&mut socket, status, "ok").await
            } else {
                self.respond(&mut socket, &behavior, last_event_id).await
            };
            if result.is_err() {
                break;
            }
        }
        let mut state = self.state.lock().unwrap();
        state.open -= 1;
        state.closed.push(Instant::now());
    }
}

/// Reads one request (head and `Content-Length` or chunked body). `None` when the peer closed.
async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Recorded> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(socket, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    buf.drain(..head_end);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let version = first.next()?.to_string();
    let headers = super::parse_headers(lines);
    let header = |name: &str| super::find_header(&headers, name).map(str::to_string);
    let body = if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while buf.len() < len {
            read_more(socket, buf).await?;
        }
        buf.drain(..len).collect()
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(socket, buf).await?
    } else {
        Vec::new()
    };
    Some(Recorded {
        method,
        target,
        version,
        headers,
        body,
    })
}

async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match socket.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

async fn read_chunked(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            read_more(socket, buf).await?;
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            read_more(socket, buf).await?;
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
        if size == 0 {
            return Some(body);
        }
    }
}

async fn write_stream_head(socket: &mut TcpStream) -> std::io::Result<()> {
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
}

/// Ends a chunked body, or holds the stream open until the peer goes away.
async fn finish_stream(socket: &mut TcpStream, end: bool) -> std::io::Result<()> {
    if end {
        return socket.write_all(b"0\r\n\r\n").await;
    }
    let mut sink = [0u8; 1024];
    while socket.read(&mut sink).await? > 0 {}
    Err(std::io::ErrorKind::ConnectionAborted.into())
}

/// Sleeps for `interval`, but returns an error as soon as the peer closes the connection.
async fn wait_unless_closed(socket: &mut TcpStream, interval: Duration) -> std::io::Result<()> {
    let mut sink = [0u8; 1024];
    tokio::select! {
        _ = tokio::time::sleep(interval) => Ok(()),
        read = socket.read(&mut sink) => match read {
            Ok(0) | Err(_) => Err(std::io::ErrorKind::ConnectionAborted.into()),
            // A stream's request has no more body; anything else is ignored.
            Ok(_) => Ok(()),
        },
    }
}

async fn respond_text(socket: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body.as_bytes()).await
}

/// Fixed width, so a `Content-Length` for several events is known before they are made.
fn event(n: u64) -> String {
    format!(
        "id: {n:06}\ndata: {n:06} {:012}\n\n",
        super::micros_since_epoch()
    )
}

impl Upstream {
    async fn respond(
        &self,
        socket: &mut TcpStream,
        behavior: &Behavior,
        last_event_id: Option<u64>,
    ) -> std::io::Result<()> {
        match behavior {
            Behavior::Raw { pieces, then } => {
                for (delay, piece) in pieces {
                    wait_unless_closed(socket, *delay).await?;
                    socket.write_all(piece).await?;
                }
                match then {
                    RawEnd::Close => Err(std::io::ErrorKind::ConnectionAborted.into()),
                    RawEnd::Reset => {
                        // Linger 0: closing sends RST instead of FIN.
                        socket.set_zero_linger()?;
                        Err(std::io::ErrorKind::ConnectionReset.into())
                    }
                    RawEnd::Hold => finish_stream(socket, false).await,
                }
            }
            Behavior::Flood { event_size } => {
                write_stream_head(socket).await?;
                let data = "x".repeat(event_size.saturating_sub(8));
                let e = format!("data: {data}\n\n");
                let chunk = format!("{:x}\r\n{e}\r\n", e.len());
                while self.state.lock().unwrap().floods_paused {
                    wait_unless_closed(socket, Duration::from_millis(10)).await?;
                }
                loop {
                    socket.write_all(chunk.as_bytes()).await?;
                    self.state.lock().unwrap().sent_bytes += chunk.len() as u64;
                }
            }
            Behavior::Resumable { interval } => {
                write_stream_head(socket).await?;
                for n in last_event_id.unwrap_or(0) + 1.. {
                    let e = event(n);
                    socket
                        .write_all(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes())
                        .await?;
                    wait_unless_closed(socket, *interval).await?;
                }
                Ok(())
            }
            Behavior::Text(body) | Behavior::TextOncePerConnection(body) => {
                respond_text(socket, 200, body).await
            }
            Behavior::Silent => {
                // Hold the connection without answering until the peer closes it.
                let mut sink = [0u8; 1024];
                while socket.read(&mut sink).await? > 0 {}
                Err(std::io::ErrorKind::ConnectionAborted.into())
            }
            Behavior::Sse {
                interval,
                count,
                end,
            } => {
                write_stream_head(socket).await?;
                let mut n = 1;
                while count.is_none_or(|c| n <= c) {
                    let e = event(n);
                    socket
                        .write_all(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes())
                        .await?;
                    n += 1;
                    wait_unless_closed(socket, *interval).await?;
                }
                finish_stream(socket, *end).await
            }
            Behavior::Script { pieces, end } => {
                write_stream_head(socket).await?;
                for (delay, piece) in pieces {
                    wait_unless_closed(socket, *delay).await?;
                    socket
                        .write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes())
                        .await?;
                }
                finish_stream(socket, *end).await
            }
            Behavior::SseWithLength { interval, count } => {
                // Every event has the same length, so the total is known up front.
                let len = event(1).len() as u64 * count;
                socket
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len}\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await?;
                for n in 1..=*count {
                    socket.write_all(event(n).as_bytes()).await?;
                    tokio::time::sleep(*interval).await;
                }
                Ok(())
            }
        }
    }
}
