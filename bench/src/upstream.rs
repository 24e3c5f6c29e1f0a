//! `sse-load upstream`: an SSE upstream written directly on tokio's TCP.
//!
//! Any GET answers `text/event-stream`, chunked, with an event every `--interval-ms` (or the
//! request's `?interval_ms=`) carrying its send time and a per-stream sequence number. Stream
//! timers start at a random phase so that thousands of streams do not fire at the same instant.
//! `/plain` (and `/healthz`) answer a fixed 13-byte body with keep-alive, for wrk.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use testkit::http::{self, RequestHead};
use testkit::upstream::{read_request, text_response, Request, STREAM_HEAD_NO_CACHE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, MissedTickBehavior};

use crate::{sse, sys};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9100.
    #[arg(long)]
    listen: SocketAddr,
    /// Time between two events of a stream (a request's `?interval_ms=` overrides it).
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Bytes of padding in every event's `pad` field.
    #[arg(long, default_value_t = 0)]
    padding: usize,
    /// Runtime worker threads (default: the CPUs this process may use).
    #[arg(long)]
    threads: Option<usize>,
}

/// The answer to `/plain`: a 13-byte body, kept alive.
const PLAIN_BODY: &str = "Hello, world\n";

/// What every connection shares.
struct Settings {
    interval: Duration,
    pad: String,
    /// The whole `/plain` response, made once.
    plain: Vec<u8>,
    bad_request: Vec<u8>,
}

pub fn main(args: Args, nofile: u64) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(sys::threads(args.threads))
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(serve(args, nofile)),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sse-load upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, nofile: u64) -> io::Result<()> {
    let socket = if args.listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(args.listen)?;
    let listener = socket.listen(8192)?;
    eprintln!(
        "sse-load upstream: listening on {}, interval {} ms, padding {} B, {} threads, nofile {nofile}",
        listener.local_addr()?,
        args.interval_ms,
        args.padding,
        sys::threads(args.threads),
    );
    let settings = Arc::new(Settings {
        interval: Duration::from_millis(args.interval_ms.max(1)),
        pad: "x".repeat(args.padding),
        plain: text_response(200, PLAIN_BODY, false),
        bad_request: text_response(400, "bad request\n", true),
    });
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                let settings = settings.clone();
                tokio::spawn(async move {
                    // A peer that goes away is the normal end of a stream.
                    let _ = connection(sock, &settings).await;
                });
            }
            Err(e) => {
                // Out of descriptors, most likely: wait for streams to end rather than spin.
                eprintln!("sse-load upstream: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves requests on one connection: plain ones in a keep-alive loop, until one is a stream.
async fn connection(mut sock: TcpStream, settings: &Settings) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head = match read_request(&mut sock, &mut buf).await {
            Ok(Some(Request { head, .. })) => head,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return sock.write_all(&settings.bad_request).await;
            }
            Err(e) => return Err(e),
        };
        let path = head.path();
        if path == "/plain" || path == "/healthz" {
            sock.write_all(&settings.plain).await?;
            continue;
        }
        let interval = interval_override(&head).unwrap_or(settings.interval);
        return stream(sock, interval, &settings.pad).await;
    }
}

/// `?interval_ms=N` in the request's query.
fn interval_override(head: &RequestHead) -> Option<Duration> {
    head.query("interval_ms")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.max(1)))
}

/// Sends events until the peer goes away.
async fn stream(mut sock: TcpStream, interval: Duration, pad: &str) -> io::Result<()> {
    sock.write_all(STREAM_HEAD_NO_CACHE).await?;
    let (mut rd, mut wr) = sock.split();
    let phase = fastrand::u64(0..interval.as_nanos().max(1) as u64);
    let mut ticks =
        tokio::time::interval_at(Instant::now() + Duration::from_nanos(phase), interval);
    // An upstream that falls behind sends fewer events, not a burst of stale ones.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut event = Vec::with_capacity(96 + pad.len());
    let mut chunk = Vec::with_capacity(128 + pad.len());
    let mut scratch = [0u8; 256];
    let mut seq = 0u64;
    loop {
        tokio::select! {
            biased;
            read = rd.read(&mut scratch) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {} // nothing more is expected from the client: ignore it
            },
            _ = ticks.tick() => {
                seq += 1;
                event.clear();
                sse::encode_event(&mut event, seq, sys::wall_nanos(), pad);
                chunk.clear();
                http::encode_chunk(&mut chunk, &event);
                wr.write_all(&chunk).await?;
            }
        }
    }
}
