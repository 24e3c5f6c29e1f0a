//! `sse-load client`: opens many SSE streams, ramped at a bounded rate, and measures each event's
//! latency (receive time minus the send time it carries), each stream's time to its response
//! head, lost sequence numbers, late events and failed streams. With `--lifetime-secs` (or
//! `--churn`) streams close after a random lifetime and reopen at once, so a soak holds about N
//! streams while they come and go. HTTP/1.1 opens a connection per stream; `--h2` spreads the
//! streams over a few HTTP/2-over-TLS connections.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};

use testkit::http::{self, Framing, Progress};

use crate::http2;
use crate::report::{self, Summary};
use crate::sse;
use crate::stats::{self, Stats};
use crate::sys;
use crate::url::Url;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Stream URL, e.g. http://127.0.0.1:8080/sse.
    #[arg(long)]
    url: String,
    /// Concurrent streams.
    #[arg(long, default_value_t = 1)]
    streams: u64,
    /// Length of the measured window, which starts after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Streams opened per second while ramping up.
    #[arg(long, default_value_t = 2000.0)]
    ramp_per_sec: f64,
    /// Time before the measured window (default: the ramp's length plus 2 s).
    #[arg(long)]
    warmup_secs: Option<f64>,
    /// Each stream closes after a random lifetime of MIN..MAX seconds and reopens at once.
    #[arg(long, value_name = "MIN..MAX")]
    lifetime_secs: Option<Lifetime>,
    /// Churn streams: the same as `--lifetime-secs 10..60`.
    #[arg(long)]
    churn: bool,
    /// Print a progress line to stderr every SECS seconds.
    #[arg(long, value_name = "SECS")]
    report_every: Option<f64>,
    /// Print only the JSON line on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// A name for this run, copied into the summary.
    #[arg(long, default_value = "")]
    label: String,
    /// KEY=VALUE copied into the summary's `tags` (repeatable), for scripts that group runs.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Processes whose CPU time over the window and RSS at its end go into the summary
    /// (comma-separated or repeated; e.g. a proxy's master and workers).
    #[arg(long = "watch-pid", value_delimiter = ',')]
    watch_pids: Vec<u32>,
    /// Runtime worker threads (default: the CPUs this process may use).
    #[arg(long)]
    threads: Option<usize>,
    /// HTTP/2 over TLS (the URL must be https://; the certificate is not verified).
    #[arg(long)]
    h2: bool,
    /// With --h2: the connections the streams are spread over, round robin.
    #[arg(long, default_value_t = 1, requires = "h2")]
    connections: u64,
    /// Once the streams have closed, wait SECS and read the watched processes' RSS again, to see
    /// whether their memory comes back.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    settle_secs: f64,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))
}

/// Bounds of a stream's random lifetime, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    min: f64,
    max: f64,
}

impl FromStr for Lifetime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (min, max) = s.split_once("..").unwrap_or((s, s));
        let parse = |v: &str| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("`{s}`: expected MIN..MAX seconds, e.g. 5..30"))
        };
        let (min, max) = (parse(min)?, parse(max)?);
        if min > max {
            return Err(format!("`{s}`: MIN is larger than MAX"));
        }
        Ok(Self { min, max })
    }
}

impl Lifetime {
    fn pick(self) -> Duration {
        Duration::from_secs_f64(self.min + fastrand::f64() * (self.max - self.min))
    }
}

/// How long a stream may take to connect and get its response head.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before a churning stream retries after a failure.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// An event later than this counts as late.
const LATE_US: u64 = 50_000;
const READ_BUF: usize = 4096;

/// Where streams go, and how.
enum Target {
    /// HTTP/1.1: a connection per stream, each sending `request`.
    H1 { addr: SocketAddr, request: Vec<u8> },
    /// HTTP/2 over TLS: stream slot `i` uses connection `i % conns.len()`; `None` is a connection
    /// that could not be opened (its streams fail).
    H2 {
        conns: Vec<Option<http2::Sender>>,
        uri: ::http::Uri,
    },
}

/// Why a stream failed.
enum Failure {
    /// Connect failed, or no valid response head came within [`OPEN_TIMEOUT`].
    Connect,
    /// The response was not 200.
    Status,
    /// The stream ended, or broke its framing, before it was meant to end.
    ClosedEarly,
}

pub fn main(args: Args, nofile: u64) -> ExitCode {
    let url = match Url::parse(&args.url) {
        Ok(url) => url,
        Err(e) => {
            eprintln!("sse-load client: {e}");
            return ExitCode::from(2);
        }
    };
    if url.tls != args.h2 {
        eprintln!("sse-load client: --h2 goes with an https:// URL, and an https:// URL with --h2");
        return ExitCode::from(2);
    }
    if args.streams + 64 > nofile {
        eprintln!(
            "sse-load client: warning: {} streams but only {nofile} file descriptors allowed",
            args.streams
        );
    }
    let threads = sys::threads(args.threads);
    let stats = Arc::new(Stats::new(threads));
    let on_start = stats.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .on_thread_start(move || on_start.claim_shard())
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sse-load client: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let summary = runtime.block_on(run(&args, url, stats));
    // Streams still stuck in a connect must not hold the exit.
    runtime.shutdown_background();
    match summary {
        Ok(summary) => {
            if args.json {
                eprint!("{}", summary.table());
            } else {
                print!("{}", summary.table());
            }
            println!("{}", summary.json());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sse-load client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args, url: Url, stats: Arc<Stats>) -> Result<Summary, String> {
    let addr = tokio::net::lookup_host(&url.authority)
        .await
        .map_err(|e| format!("{}: {e}", url.authority))?
        .next()
        .ok_or_else(|| format!("{}: no address", url.authority))?;
    // Before any stream or connection: the watched processes at rest.
    let watched_rss_idle = sys::total_rss_kib(&args.watch_pids);
    let target = if args.h2 {
        let connector = http2::Connector::new()?;
        let mut conns = Vec::new();
        for _ in 0..args.connections.max(1) {
            let connect = connector.connect(addr, url.host());
            match tokio::time::timeout(OPEN_TIMEOUT, connect).await {
                Ok(Ok(sender)) => conns.push(Some(sender)),
                Ok(Err(e)) => {
                    eprintln!("sse-load client: {e}");
                    conns.push(None);
                }
                Err(_) => {
                    eprintln!(
                        "sse-load client: {addr}: no HTTP/2 connection within {OPEN_TIMEOUT:?}"
                    );
                    conns.push(None);
                }
            }
        }
        let uri = url
            .uri()
            .parse()
            .map_err(|e| format!("{}: {e}", args.url))?;
        Target::H2 { conns, uri }
    } else {
        Target::H1 {
            addr,
            request: url.sse_request(),
        }
    };
    let target = Arc::new(target);
    let lifetime = match (args.lifetime_secs, args.churn) {
        (Some(lifetime), _) => Some(lifetime),
        (None, true) => Some(Lifetime {
            min: 10.0,
            max: 60.0,
        }),
        (None, false) => None,
    };
    let ramp_per_sec = args.ramp_per_sec.max(1.0);
    let warmup = args
        .warmup_secs
        .unwrap_or(args.streams as f64 / ramp_per_sec + 2.0)
        .max(0.0);
    let duration = args.duration_secs.max(0.001);
    let start = Instant::now();
    let window_start = start + Duration::from_secs_f64(warmup);
    let end = window_start + Duration::from_secs_f64(duration);

    let spawner = tokio::spawn(open_streams(
        stats.clone(),
        target,
        args.streams,
        ramp_per_sec,
        lifetime,
        (start, end),
    ));

    let self_pid = [std::process::id()];
    let mut total = stats::new_histogram();
    let mut cpu_at_start = (0.0, 0.0);
    let mut measuring = false;
    let report_every = args
        .report_every
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64);
    let mut next_report = report_every.map(|every| start + every);
    let (mut last_events, mut last_report) = (0, start);
    loop {
        let mut wake = end;
        if !measuring {
            wake = wake.min(window_start);
        }
        if let Some(at) = next_report {
            wake = wake.min(at);
        }
        sleep_until(wake).await;
        let now = Instant::now();
        if !measuring && now >= window_start {
            stats.set_measuring(true);
            cpu_at_start = (
                sys::total_cpu_secs(&args.watch_pids),
                sys::total_cpu_secs(&self_pid),
            );
            measuring = true;
        }
        if now >= end {
            break;
        }
        if let (Some(at), Some(every)) = (next_report, report_every) {
            if now >= at {
                let interval = stats.drain();
                // Same bounds: adding cannot fail.
                let _ = total.add(&interval);
                let c = &stats.counters;
                let events = stats::get(&c.events_all);
                let progress = report::Progress {
                    elapsed_secs: (now - start).as_secs_f64(),
                    open: stats::get(&c.open_now),
                    events_per_sec: (events - last_events) as f64
                        / (now - last_report).as_secs_f64().max(1e-9),
                    failed: stats::get(&c.connect_errors)
                        + stats::get(&c.bad_status)
                        + stats::get(&c.closed_early),
                    reopens: stats::get(&c.reopens),
                    reopen_failures: stats::get(&c.reopen_failures),
                    missing: stats::get(&c.missing),
                };
                eprintln!("{}", progress.line(&interval));
                (last_events, last_report) = (events, now);
                next_report = Some(at + every);
            }
        }
    }
    let watched_cpu = sys::total_cpu_secs(&args.watch_pids) - cpu_at_start.0;
    let client_cpu = sys::total_cpu_secs(&self_pid) - cpu_at_start.1;
    let watched_rss = sys::total_rss_kib(&args.watch_pids);
    stats.set_measuring(false);
    let _ = total.add(stats.drain());
    // Streams stop at `end` by themselves; give them a moment to close their sockets.
    let _ = tokio::time::timeout(Duration::from_secs(5), spawner).await;
    let settle_secs = args.settle_secs.max(0.0);
    let watched_rss_after_close = if settle_secs > 0.0 && !args.watch_pids.is_empty() {
        eprintln!("sse-load client: streams closed; reading RSS again in {settle_secs} s");
        tokio::time::sleep(Duration::from_secs_f64(settle_secs)).await;
        Some(sys::total_rss_kib(&args.watch_pids))
    } else {
        None
    };
    let heads = stats.heads();

    let c = &stats.counters;
    let events = stats::get(&c.events);
    let late = stats::get(&c.late);
    let (p50, p90, p99, p999, max, mean) = report::percentiles(&total);
    let (connect_errors, bad_status, closed_early) = (
        stats::get(&c.connect_errors),
        stats::get(&c.bad_status),
        stats::get(&c.closed_early),
    );
    let (head_p50, _, head_p99, _, head_max, _) = report::percentiles(&heads);
    Ok(Summary {
        kind: "sse",
        label: args.label.clone(),
        tags: args.tags.iter().cloned().collect(),
        url: args.url.clone(),
        protocol: if args.h2 { "h2" } else { "http/1.1" },
        h2_connections: if args.h2 { args.connections.max(1) } else { 0 },
        streams: args.streams,
        streams_opened: stats::get(&c.opened),
        streams_failed: connect_errors + bad_status + closed_early,
        connect_errors,
        bad_status,
        closed_early,
        reopens: stats::get(&c.reopens),
        reopen_failures: stats::get(&c.reopen_failures),
        events,
        missing: stats::get(&c.missing),
        duplicates: stats::get(&c.duplicates),
        unparsed: stats::get(&c.unparsed),
        late_50ms: late,
        late_50ms_share: if events > 0 {
            late as f64 / events as f64
        } else {
            0.0
        },
        p50_us: p50,
        p90_us: p90,
        p99_us: p99,
        p999_us: p999,
        max_us: max,
        mean_us: mean,
        heads: heads.len(),
        head_p50_us: head_p50,
        head_p99_us: head_p99,
        head_max_us: head_max,
        warmup_secs: warmup,
        duration_secs: duration,
        events_per_sec: events as f64 / duration,
        watched_pids: args.watch_pids.clone(),
        watched_cpu_secs: watched_cpu,
        watched_rss_idle_kib: watched_rss_idle,
        watched_rss_kib: watched_rss,
        settle_secs,
        watched_rss_after_close_kib: watched_rss_after_close,
        client_cpu_secs: client_cpu,
    })
}

/// Starts `streams` stream slots at `ramp_per_sec`, then waits for all of them to finish.
async fn open_streams(
    stats: Arc<Stats>,
    target: Arc<Target>,
    streams: u64,
    ramp_per_sec: f64,
    lifetime: Option<Lifetime>,
    (start, end): (Instant, Instant),
) {
    let mut slots = JoinSet::new();
    for i in 0..streams {
        let at = start + Duration::from_secs_f64(i as f64 / ramp_per_sec);
        if at >= end {
            break;
        }
        sleep_until(at).await;
        slots.spawn(slot(stats.clone(), target.clone(), i, lifetime, end));
    }
    while slots.join_next().await.is_some() {}
}

/// One stream slot: a stream until `end`, or with a lifetime, stream after stream until `end`.
async fn slot(
    stats: Arc<Stats>,
    target: Arc<Target>,
    index: u64,
    lifetime: Option<Lifetime>,
    end: Instant,
) {
    let c = &stats.counters;
    let mut reopen = false;
    loop {
        let now = Instant::now();
        if now >= end {
            return;
        }
        let until = lifetime.map_or(end, |l| end.min(now + l.pick()));
        if reopen {
            stats::add(&c.reopens, 1);
        }
        if let Err(failure) = stream(&stats, &target, index, until).await {
            stats::add(
                match failure {
                    Failure::Connect => &c.connect_errors,
                    Failure::Status => &c.bad_status,
                    Failure::ClosedEarly => &c.closed_early,
                },
                1,
            );
            if reopen {
                stats::add(&c.reopen_failures, 1);
            }
            if lifetime.is_some() {
                sleep_until(end.min(Instant::now() + RETRY_PAUSE)).await;
            }
        }
        if lifetime.is_none() {
            return;
        }
        reopen = true;
    }
}

/// Opens one stream and reads it until `until`. A stream that cannot open by then has failed.
async fn stream(stats: &Stats, target: &Target, index: u64, until: Instant) -> Result<(), Failure> {
    match target {
        Target::H1 { addr, request } => stream_h1(stats, *addr, request, until).await,
        Target::H2 { conns, uri } => {
            let conn = usize::try_from(index).map_or(0, |i| i % conns.len().max(1));
            match conns.get(conn) {
                Some(Some(sender)) => stream_h2(stats, sender, uri, until).await,
                _ => Err(Failure::Connect),
            }
        }
    }
}

/// An HTTP/1.1 stream on a connection of its own.
async fn stream_h1(
    stats: &Stats,
    addr: SocketAddr,
    request: &[u8],
    until: Instant,
) -> Result<(), Failure> {
    let open_by = until.min(Instant::now() + OPEN_TIMEOUT);
    let mut sock = match timeout_at(open_by, TcpStream::connect(addr)).await {
        Ok(Ok(sock)) => sock,
        _ => return Err(Failure::Connect),
    };
    // Only affects our request; the events come the other way.
    let _ = sock.set_nodelay(true);
    let sent = Instant::now();
    if sock.write_all(request).await.is_err() {
        return Err(Failure::Connect);
    }
    let mut buf = Vec::with_capacity(READ_BUF);
    let head = timeout_at(
        open_by,
        http::read_head(&mut sock, &mut buf, http::parse_response),
    )
    .await;
    let (head, head_len) = match head {
        Ok(Ok(Some(head))) => head,
        _ => return Err(Failure::Connect),
    };
    if head.status != 200 {
        return Err(Failure::Status);
    }
    stats.record_head(micros(sent.elapsed()));
    let mut reader = Reader::new(head.framing);
    let _open = OpenStream::new(stats);
    // `buf` holds the response head and maybe the first body bytes.
    if reader.process(stats, &buf[head_len..])? == Progress::Done {
        return Err(Failure::ClosedEarly);
    }
    buf.clear();
    buf.resize(READ_BUF, 0);
    let body = Body::H1 {
        sock: &mut sock,
        buf,
    };
    reader.read_until(stats, body, until).await
}

/// An HTTP/2 stream on a shared connection.
async fn stream_h2(
    stats: &Stats,
    sender: &http2::Sender,
    uri: &::http::Uri,
    until: Instant,
) -> Result<(), Failure> {
    let open_by = until.min(Instant::now() + OPEN_TIMEOUT);
    let request = ::http::Request::get(uri.clone())
        .header(::http::header::ACCEPT, "text/event-stream")
        .header(::http::header::CACHE_CONTROL, "no-cache")
        .body(())
        .map_err(|_| Failure::Connect)?;
    let sent = Instant::now();
    let response = timeout_at(open_by, async {
        // Waits while the connection has as many streams open as the server allows.
        let mut sender = sender.clone().ready().await?;
        let (response, _) = sender.send_request(request, true)?;
        response.await
    })
    .await;
    let response = match response {
        Ok(Ok(response)) => response,
        _ => return Err(Failure::Connect),
    };
    if response.status() != ::http::StatusCode::OK {
        return Err(Failure::Status);
    }
    stats.record_head(micros(sent.elapsed()));
    // HTTP/2 frames the body itself: DATA frames carry the event stream as it is.
    let mut reader = Reader::new(Framing::Close);
    let _open = OpenStream::new(stats);
    let body = Body::H2 {
        body: response.into_body(),
        data: Bytes::new(),
    };
    reader.read_until(stats, body, until).await
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Counts a stream as open (and opened) while it lives.
struct OpenStream<'a>(&'a Stats);

impl<'a> OpenStream<'a> {
    fn new(stats: &'a Stats) -> Self {
        stats::add(&stats.counters.opened, 1);
        stats::add(&stats.counters.open_now, 1);
        Self(stats)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0
            .counters
            .open_now
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where a stream's body comes from.
enum Body<'a> {
    /// An HTTP/1.1 connection of its own, read into `buf`.
    H1 {
        sock: &'a mut TcpStream,
        buf: Vec<u8>,
    },
    /// An HTTP/2 stream; `data` is the last DATA frame's payload.
    H2 { body: h2::RecvStream, data: Bytes },
}

impl Body<'_> {
    /// The next bytes of the body as they arrived, or `None` once it ended or broke off.
    async fn next(&mut self) -> Option<&[u8]> {
        match self {
            Body::H1 { sock, buf } => match sock.read(buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(&buf[..n]),
            },
            Body::H2 { body, data } => {
                *data = body.data().await?.ok()?;
                // The data is consumed: the peer may send as much again.
                let _ = body.flow_control().release_capacity(data.len());
                Some(data)
            }
        }
    }
}

/// The receiving side of one open stream.
struct Reader {
    framing: Framing,
    parser: testkit::sse::Parser,
    last_seq: Option<u64>,
    /// Scratch: the latencies of one read, recorded together.
    latencies: Vec<u64>,
}

impl Reader {
    fn new(framing: Framing) -> Self {
        Self {
            framing,
            parser: testkit::sse::Parser::new(),
            last_seq: None,
            latencies: Vec::with_capacity(16),
        }
    }

    /// Reads a stream's events until `until` (success) or the stream ends (failure).
    async fn read_until(
        &mut self,
        stats: &Stats,
        mut body: Body<'_>,
        until: Instant,
    ) -> Result<(), Failure> {
        let deadline = sleep_until(until);
        tokio::pin!(deadline);
        loop {
            let piece = tokio::select! {
                biased;
                _ = &mut deadline => return Ok(()),
                piece = body.next() => piece,
            };
            match piece {
                Some(data) => {
                    if self.process(stats, data)? == Progress::Done {
                        return Err(Failure::ClosedEarly);
                    }
                }
                None => return Err(Failure::ClosedEarly),
            }
        }
    }

    /// Decodes and parses bytes that arrived together, and counts their events.
    fn process(&mut self, stats: &Stats, input: &[u8]) -> Result<Progress, Failure> {
        if input.is_empty() {
            return Ok(Progress::More);
        }
        let received = sys::wall_nanos();
        let Reader {
            framing,
            parser,
            last_seq,
            latencies,
        } = self;
        latencies.clear();
        let (mut events, mut late, mut missing, mut duplicates, mut unparsed) = (0, 0, 0, 0, 0);
        let progress = framing
            .decode(input, |body: &[u8]| {
                parser.feed(body, |event| {
                    events += 1;
                    let sent = sse::field_u64(event.data, sse::KEY_SENT);
                    let seq = sse::field_u64(event.data, sse::KEY_SEQ);
                    let (Some(sent), Some(seq)) = (sent, seq) else {
                        unparsed += 1;
                        return;
                    };
                    match *last_seq {
                        Some(last) if seq > last + 1 => missing += seq - last - 1,
                        Some(last) if seq <= last => duplicates += 1,
                        _ => {}
                    }
                    *last_seq = Some(last_seq.map_or(seq, |last| last.max(seq)));
                    let us = received.saturating_sub(sent) / 1000;
                    if us > LATE_US {
                        late += 1;
                    }
                    latencies.push(us);
                })
            })
            .map_err(|_| Failure::ClosedEarly)?;
        let c = &stats.counters;
        stats::add(&c.events_all, events);
        if stats.measuring() {
            stats::add(&c.events, events);
            stats::add(&c.late, late);
            stats::add(&c.missing, missing);
            stats::add(&c.duplicates, duplicates);
            stats::add(&c.unparsed, unparsed);
            stats.record(latencies);
        }
        Ok(progress)
    }
}
