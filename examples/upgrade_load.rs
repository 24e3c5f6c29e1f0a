//! Load for `scripts/upgrade-bench.sh`: plain requests in a loop, and SSE clients that behave
//! like a browser's EventSource (reconnect after `retry:` with `Last-Event-ID`). After the given
//! number of seconds it prints failed requests, lost and repeated events, and the reconnect gaps.
//!
//! Usage: `cargo run --release --example upgrade_load -- ADDRESS SECONDS CLIENTS`
//! (ssegate routes `/clock` to the demo upstream as SSE and `/` as plain requests).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
struct ClientReport {
    received: u64,
    lost: u64,
    repeated: u64,
    reconnects: u64,
    /// From the last event on one connection to the first event on the next.
    gaps: Vec<Duration>,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: upgrade_load ADDRESS SECONDS CLIENTS";
    let addr: SocketAddr = args.get(1).and_then(|a| a.parse().ok()).expect(usage);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).expect(usage);
    let clients: usize = args.get(3).and_then(|a| a.parse().ok()).expect(usage);
    let deadline = Instant::now() + Duration::from_secs(seconds);

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let plain = {
        let (ok, failed) = (ok.clone(), failed.clone());
        tokio::spawn(async move {
            while Instant::now() < deadline {
                match plain_request(addr).await {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let sse: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(event_source(addr, deadline)))
        .collect();
    plain.await.expect("plain load");
    let mut total = ClientReport::default();
    for client in sse {
        let r = client.await.expect("sse client");
        total.received += r.received;
        total.lost += r.lost;
        total.repeated += r.repeated;
        total.reconnects += r.reconnects;
        total.gaps.extend(r.gaps);
    }
    total.gaps.sort();
    let pct = |p: f64| {
        total
            .gaps
            .get(((total.gaps.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "plain requests: {} ok, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    println!(
        "sse events: {} received, {} lost, {} repeated, {} reconnects",
        total.received, total.lost, total.repeated, total.reconnects
    );
    println!(
        "reconnect gap: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

async fn plain_request(addr: SocketAddr) -> std::io::Result<u16> {
    let mut socket = TcpStream::connect(addr).await?;
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await?;
    let status = String::from_utf8_lossy(&response)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(status)
}

async fn event_source(addr: SocketAddr, deadline: Instant) -> ClientReport {
    let mut report = ClientReport::default();
    let mut last_id: Option<u64> = None;
    let mut last_event_at: Option<Instant> = None;
    let mut retry_ms = 1000;
    while Instant::now() < deadline {
        let mut first_on_connection = true;
        let outcome = stream_once(addr, last_id, deadline, |id, retry| {
            if let Some(ms) = retry {
                retry_ms = ms;
            }
            let Some(id) = id else { return };
            match last_id {
                Some(last) if id <= last => report.repeated += 1,
                Some(last) => report.lost += id - last - 1,
                None => report.lost += id - 1,
            }
            if first_on_connection {
                if let (Some(at), true) = (last_event_at, last_id.is_some()) {
                    report.gaps.push(at.elapsed());
                }
                first_on_connection = false;
            }
            report.received += 1;
            last_id = Some(last_id.map_or(id, |l| l.max(id)));
            last_event_at = Some(Instant::now());
        })
        .await;
        if Instant::now() >= deadline {
            break;
        }
        report.reconnects += 1;
        // As EventSource: wait the server's retry delay (or a second after an error).
        let wait = if outcome.is_ok() { retry_ms } else { 1000 };
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    report
}

/// One connection: calls `on_block(id, retry)` for each SSE block until the response ends.
async fn stream_once(
    addr: SocketAddr,
    last_id: Option<u64>,
    deadline: Instant,
    mut on_block: impl FnMut(Option<u64>, Option<u64>),
) -> std::io::Result<()> {
    let mut socket = TcpStream::connect(addr).await?;
    let resume = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let request =
        format!("GET /clock?interval_ms=50 HTTP/1.1\r\nHost: bench\r\n{resume}Accept: text/event-stream\r\n\r\n");
    socket.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut body = String::new();
    let mut head_done = false;
    let mut buf = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, socket.read(&mut buf)).await {
            Err(_) => return Ok(()),
            Ok(read) => read?,
        };
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
        if !head_done {
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            raw.drain(..end + 4);
            head_done = true;
        }
        // Chunked body: `SIZE\r\nDATA\r\n`, ending with a zero-size chunk.
        while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&raw[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.trim(), 16)
                .map_err(|_| std::io::Error::other("bad chunk"))?;
            if raw.len() < line_end + 2 + size + 2 {
                break;
            }
            if size == 0 {
                return Ok(());
            }
            body.push_str(&String::from_utf8_lossy(
                &raw[line_end + 2..line_end + 2 + size],
            ));
            raw.drain(..line_end + 2 + size + 2);
        }
        while let Some(end) = body.find("\n\n") {
            let block: String = body.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
            };
            on_block(field("id:"), field("retry:"));
        }
    }
}
