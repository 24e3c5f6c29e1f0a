//! The demo's SSE upstream: a clock and a fake LLM token stream, for `scripts/demo.sh`.
//!
//! - `GET /clock`: one event a second (or every `?interval_ms=N`), forever, with `id:` lines;
//!   resumes after `Last-Event-ID`.
//! - `GET|POST /v1/chat`: a sentence streamed one token per 150 ms, then `data: [DONE]`.
//! - `GET /healthz`: `ok`, for ssegate's health check.
//!
//! Usage: `cargo run --example demo_upstream -- [ADDRESS]` (default `127.0.0.1:9000`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKENS: &[&str] = &[
    "Server-Sent ",
    "Events ",
    "stream ",
    "through ",
    "ssegate ",
    "one ",
    "token ",
    "at ",
    "a ",
    "time, ",
    "with ",
    "nothing ",
    "buffered ",
    "on ",
    "the ",
    "way.",
];

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let listener = TcpListener::bind(&address).await?;
    eprintln!("demo upstream listening on http://{address} (/clock, /v1/chat, /healthz)");
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(async move {
            // A client that goes away mid-stream just ends its task.
            let _ = serve(socket).await;
        });
    }
}

/// The parts of a request the demo looks at.
struct Request {
    method: String,
    path: String,
    /// `interval_ms` from the query string.
    interval_ms: Option<u64>,
    last_event_id: Option<u64>,
}

async fn serve(mut socket: TcpStream) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let Some(req) = read_request(&mut socket).await? else {
        return Ok(());
    };
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/clock") => {
            let first_id = req.last_event_id.map_or(1, |id| id + 1);
            let interval = Duration::from_millis(req.interval_ms.unwrap_or(1000).max(1));
            clock(&mut socket, first_id, interval).await
        }
        ("GET" | "POST", "/v1/chat") => chat(&mut socket).await,
        (_, "/healthz") => plain(&mut socket, "ok\n").await,
        _ => {
            plain(
                &mut socket,
                "ssegate demo upstream: try /clock or /v1/chat\n",
            )
            .await
        }
    }
}

/// Reads the request head and any `Content-Length` body; `None` if the client closed first.
async fn read_request(socket: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let interval_ms = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("interval_ms="))
        .and_then(|v| v.parse().ok());
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let body_len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < body_len {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        have += n;
    }
    Ok(Some(Request {
        method,
        path: path.to_string(),
        interval_ms,
        last_event_id: header("last-event-id").and_then(|v| v.parse().ok()),
    }))
}

async fn plain(socket: &mut TcpStream, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body.as_bytes()).await
}

async fn start_stream(socket: &mut TcpStream) -> std::io::Result<()> {
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .await
}

async fn send_chunk(socket: &mut TcpStream, data: &str) -> std::io::Result<()> {
    socket
        .write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await
}

async fn clock(socket: &mut TcpStream, first_id: u64, interval: Duration) -> std::io::Result<()> {
    start_stream(socket).await?;
    for id in first_id.. {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        send_chunk(
            socket,
            &format!("id: {id}\ndata: {{\"unix_time\": {now}}}\n\n"),
        )
        .await?;
        tokio::time::sleep(interval).await;
    }
    Ok(())
}

async fn chat(socket: &mut TcpStream) -> std::io::Result<()> {
    start_stream(socket).await?;
    for token in TOKENS {
        send_chunk(socket, &format!("data: {{\"token\": \"{token}\"}}\n\n")).await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    send_chunk(socket, "data: [DONE]\n\n").await?;
    socket.write_all(b"0\r\n\r\n").await
}
