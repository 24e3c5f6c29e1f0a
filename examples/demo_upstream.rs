//! The demo's SSE upstream: a clock and a fake LLM token stream, for `scripts/demo.sh`.
//!
//! - `GET /clock`: one event a second (or every `?interval_ms=N`), forever, with `id:` lines;
//!   resumes after `Last-Event-ID`. Each event names the address that served it, so a client
//!   behind several upstreams (or several proxies) sees where its stream is.
//! - `GET|POST /v1/chat`: a sentence streamed one token per 150 ms, then `data: [DONE]`.
//! - `GET /healthz`: `ok`, for ssegate's health check.
//!
//! Usage: `cargo run --example demo_upstream -- [ADDRESS...]` (default `127.0.0.1:9000`); with
//! several addresses it serves the same on each, as that many upstreams in one process.
//!
//! The wire side (requests, event streams) is the workspace test kit's SSE upstream.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use testkit::upstream::{
    end_stream, read_request, send_chunk, text_response, Request, STREAM_HEAD_NO_CACHE,
};
use tokio::io::AsyncWriteExt;
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
    let mut addresses: Vec<String> = std::env::args().skip(1).collect();
    if addresses.is_empty() {
        addresses.push("127.0.0.1:9000".into());
    }
    let mut listeners = tokio::task::JoinSet::new();
    for address in addresses {
        // Bind all before serving any, so that a taken port stops the whole process at once.
        let listener = TcpListener::bind(&address).await?;
        eprintln!("demo upstream listening on http://{address} (/clock, /v1/chat, /healthz)");
        listeners.spawn(accept_loop(listener, address));
    }
    match listeners.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(panicked)) => Err(std::io::Error::other(panicked)),
        None => Ok(()),
    }
}

async fn accept_loop(listener: TcpListener, address: String) -> std::io::Result<()> {
    let address: std::sync::Arc<str> = address.into();
    loop {
        let (socket, _) = listener.accept().await?;
        let address = address.clone();
        tokio::spawn(async move {
            // A client that goes away mid-stream just ends its task.
            let _ = serve(socket, &address).await;
        });
    }
}

async fn serve(mut socket: TcpStream, address: &str) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let Some(Request { head, .. }) = read_request(&mut socket, &mut Vec::new()).await? else {
        return Ok(());
    };
    let param = |value: Option<&str>| value.and_then(|v| v.parse::<u64>().ok());
    match (head.method.as_str(), head.path()) {
        ("GET", "/clock") => {
            let first_id = param(head.header("last-event-id")).map_or(1, |id| id + 1);
            let interval_ms = param(head.query("interval_ms")).unwrap_or(1000).max(1);
            let interval = Duration::from_millis(interval_ms);
            clock(&mut socket, address, first_id, interval).await
        }
        ("GET" | "POST", "/v1/chat") => chat(&mut socket).await,
        (_, "/healthz") => plain(&mut socket, "ok\n").await,
        _ => {
            let body = format!("ssegate demo upstream {address}: try /clock or /v1/chat\n");
            plain(&mut socket, &body).await
        }
    }
}

async fn plain(socket: &mut TcpStream, body: &str) -> std::io::Result<()> {
    socket.write_all(&text_response(200, body, true)).await
}

async fn clock(
    socket: &mut TcpStream,
    address: &str,
    first_id: u64,
    interval: Duration,
) -> std::io::Result<()> {
    socket.write_all(STREAM_HEAD_NO_CACHE).await?;
    for id in first_id.. {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        send_chunk(
            socket,
            format!("id: {id}\ndata: {{\"unix_time\": {now}, \"upstream\": \"{address}\"}}\n\n"),
        )
        .await?;
        tokio::time::sleep(interval).await;
    }
    Ok(())
}

async fn chat(socket: &mut TcpStream) -> std::io::Result<()> {
    socket.write_all(STREAM_HEAD_NO_CACHE).await?;
    for token in TOKENS {
        send_chunk(socket, format!("data: {{\"token\": \"{token}\"}}\n\n")).await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    send_chunk(socket, "data: [DONE]\n\n").await?;
    end_stream(socket).await
}
