//! A scriptable HTTP/1.1 upstream on 127.0.0.1 that records what it receives. What it says and
//! hears on the wire is the kit's SSE upstream; this adds the behaviours the tests script.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::http::{self, Headers};
use testkit::upstream::{
    self as wire, end_stream, hold_until_closed, send_chunk, wait_unless_closed, STREAM_HEAD,
};
use tokio::io::AsyncWriteExt;
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
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        http::find_header(&self.headers, name)
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
        while let Ok(Some(wire::Request { head, body })) =
            wire::read_request(&mut socket, &mut buf).await
        {
            let req = Recorded {
                method: head.method,
                target: head.target,
                version: head.version,
                headers: head.headers,
                body,
            };
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

/// Ends a chunked body, or holds the stream open until the peer goes away.
async fn finish_stream(socket: &mut TcpStream, end: bool) -> std::io::Result<()> {
    if end {
        return end_stream(socket).await;
    }
    Err(hold_until_closed(socket).await)
}

async fn respond_text(socket: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    socket
        .write_all(&wire::text_response(status, body, false))
        .await
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
                socket.write_all(STREAM_HEAD).await?;
                let data = "x".repeat(event_size.saturating_sub(8));
                let chunk = http::chunk(format!("data: {data}\n\n"));
                while self.state.lock().unwrap().floods_paused {
                    wait_unless_closed(socket, Duration::from_millis(10)).await?;
                }
                loop {
                    socket.write_all(&chunk).await?;
                    self.state.lock().unwrap().sent_bytes += chunk.len() as u64;
                }
            }
            Behavior::Resumable { interval } => {
                socket.write_all(STREAM_HEAD).await?;
                for n in last_event_id.unwrap_or(0) + 1.. {
                    send_chunk(socket, event(n)).await?;
                    wait_unless_closed(socket, *interval).await?;
                }
                Ok(())
            }
            Behavior::Text(body) | Behavior::TextOncePerConnection(body) => {
                respond_text(socket, 200, body).await
            }
            // Hold the connection without answering until the peer closes it.
            Behavior::Silent => Err(hold_until_closed(socket).await),
            Behavior::Sse {
                interval,
                count,
                end,
            } => {
                socket.write_all(STREAM_HEAD).await?;
                let mut n = 1;
                while count.is_none_or(|c| n <= c) {
                    send_chunk(socket, event(n)).await?;
                    n += 1;
                    wait_unless_closed(socket, *interval).await?;
                }
                finish_stream(socket, *end).await
            }
            Behavior::Script { pieces, end } => {
                socket.write_all(STREAM_HEAD).await?;
                for (delay, piece) in pieces {
                    wait_unless_closed(socket, *delay).await?;
                    send_chunk(socket, piece).await?;
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
                    // The pace of the events is the behaviour itself, not a wait.
                    tokio::time::sleep(*interval).await;
                }
                Ok(())
            }
        }
    }
}
