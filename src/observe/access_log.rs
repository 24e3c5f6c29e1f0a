//! One access-log line per request, written through `log` under target `access`, and buffered.
//!
//! Fields are `key=value`; the request path is quoted and escaped, so a client cannot forge
//! extra fields or lines.
//!
//! # Buffering
//! A line per request written straight to stderr costs a system call per request, which on a
//! busy proxy is a measurable share of its CPU. So [`init_logging`] routes target `access` to a
//! buffer that goes to stderr in one write once it holds [`BUFFER_BYTES`], and at least every
//! [`FLUSH_EVERY`] ([`Flusher`]): nginx's `access_log ... buffer=32k flush=1s`. Every other
//! log line (warnings, errors) is written at once, as before.
//!
//! What a crash can lose: the access lines of at most the last second (or 32 KiB). A normal
//! exit, whatever stops the server, writes them out first.
//!
//! `RUST_LOG` still decides whether access lines are written at all (`RUST_LOG=warn` turns them
//! off); the line format is `env_logger`'s, the same as for every other line.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use log::{Log, Metadata, Record};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

/// The log target of access lines.
const TARGET: &str = "access";
/// The buffer is written out once it holds this much.
pub(crate) const BUFFER_BYTES: usize = 32 * 1024;
/// And at least this often.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Access lines not yet written to stderr.
static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// What one finished request looked like.
pub(crate) struct Entry<'a> {
    pub(crate) client: Option<String>,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) route: &'a str,
    /// `None` when no response could be sent (the client went away); the line says `status=0`
    /// then, as Pingora's own logs do.
    pub(crate) status: Option<u16>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) duration: Duration,
    pub(crate) bytes: usize,
    /// `(events, close reason)` for streams.
    pub(crate) stream: Option<(u64, &'static str)>,
    pub(crate) error: Option<String>,
}

/// Whether access-log lines are written at all (`RUST_LOG` may turn target `access` off); when
/// not, callers skip building the [`Entry`].
pub(crate) fn enabled() -> bool {
    log::log_enabled!(target: TARGET, log::Level::Info)
}

pub(crate) fn write(e: &Entry<'_>) {
    let mut line = format!(
        "client={} method={} path={:?} route={} status={} peer={} duration_ms={:.1} bytes={}",
        e.client.as_deref().unwrap_or("-"),
        e.method,
        e.path,
        e.route,
        e.status.unwrap_or(0),
        e.peer.map_or_else(|| "-".to_string(), |p| p.to_string()),
        e.duration.as_secs_f64() * 1000.0,
        e.bytes,
    );
    if let Some((events, close)) = e.stream {
        line.push_str(&format!(" events={events} close={close}"));
    }
    if let Some(error) = &e.error {
        line.push_str(&format!(" error={error:?}"));
    }
    log::info!(target: TARGET, "{line}");
}

/// Sets up logging from `RUST_LOG` (default `info`): access lines to the buffer, everything else
/// straight to stderr. Call once, first thing.
pub(crate) fn init_logging() {
    let env = || env_logger::Env::default().default_filter_or("info");
    let access = env_logger::Builder::from_env(env())
        .target(env_logger::Target::Pipe(Box::new(BufferedStderr)))
        .build();
    let rest = env_logger::Builder::from_env(env()).build();
    let max = access.filter().max(rest.filter());
    if log::set_boxed_logger(Box::new(Dispatch { access, rest })).is_ok() {
        log::set_max_level(max);
    }
    // SAFETY: registers a function without arguments that only takes a lock with try_lock and
    // writes to stderr; it runs at exit, after main returns or on `exit()`.
    unsafe {
        libc::atexit(flush_at_exit);
    }
}

/// Writes the buffered access lines to stderr now.
pub(crate) fn flush() {
    if let Ok(mut buffer) = BUFFER.lock() {
        write_out(&mut buffer);
    }
}

extern "C" fn flush_at_exit() {
    // Never wait at exit: a thread stopped mid-write may hold the lock.
    if let Ok(mut buffer) = BUFFER.try_lock() {
        write_out(&mut buffer);
    }
}

fn write_out(buffer: &mut Vec<u8>) {
    if !buffer.is_empty() {
        // Nowhere to report a failed write to stderr.
        let _ = std::io::stderr().lock().write_all(buffer);
        buffer.clear();
    }
}

/// Routes each record to the logger of its target.
struct Dispatch {
    access: env_logger::Logger,
    rest: env_logger::Logger,
}

impl Dispatch {
    fn logger(&self, target: &str) -> &env_logger::Logger {
        if target == TARGET {
            &self.access
        } else {
            &self.rest
        }
    }
}

impl Log for Dispatch {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.logger(metadata.target()).enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        self.logger(record.target()).log(record);
    }

    fn flush(&self) {
        self.rest.flush();
        flush();
    }
}

/// `env_logger`'s output for access lines: appends to the buffer, and writes the buffer out
/// once it is full. Its `flush` (called after every line) does nothing: [`Flusher`] flushes.
struct BufferedStderr;

impl Write for BufferedStderr {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = BUFFER.lock() {
            buffer.extend_from_slice(bytes);
            if buffer.len() >= BUFFER_BYTES {
                write_out(&mut buffer);
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A background service that writes the buffer out every [`FLUSH_EVERY`].
pub(crate) struct Flusher;

#[async_trait]
impl BackgroundService for Flusher {
    async fn start(&self, _shutdown: ShutdownWatch) {
        // Streams still drain after a shutdown begins, and log as they end, so this flushes
        // until the runtimes stop; the exit flushes what is left.
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            flush();
        }
    }
}
