//! The loop that carries one stream: upstream reads to client writes, plus the timers of a
//! marked route (heartbeat, idle timeout, `max_lifetime`, drain deadline) and the watch for a
//! client that left.
//!
//! The loop is built to cost little per event and nothing while a stream is quiet:
//! - the upstream read is polled in place ([`UpstreamBody::poll_next`] is cancel-safe), so there
//!   is no reader task or channel between upstream and client;
//! - one timer serves all three deadlines. Writes only ever push the heartbeat and idle deadlines
//!   later, so the timer is left where it is when data flows and re-armed when it fires (at most
//!   once per heartbeat interval); it is reset early only when a deadline moves earlier (a drain);
//! - the drain signal is one long-lived wait, not a new registration per event.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use pingora_core::Result;
use tokio::time::Sleep;

use super::client::ClientSide;
use super::upstream::UpstreamBody;
use crate::config::model::SsePolicy;
use crate::lifecycle::drain::{self, DrainSignal};
use crate::observe::metrics::CloseReason;
use crate::sse::stream::StreamMeter;

/// The comment a quiet stream gets every `sse.heartbeat`.
const HEARTBEAT: &[u8] = b": keepalive\n\n";

/// Relays the body of a stream until it ends; returns why it ended. On `Err` the stream was cut
/// (by the client or the upstream) and the error says which.
pub(crate) async fn pump<C: ClientSide>(
    client: &mut C,
    upstream: &mut UpstreamBody,
    stream: &mut StreamMeter,
    policy: &SsePolicy,
    drain: &DrainSignal,
) -> Result<CloseReason> {
    let headroom = client.headroom();
    let mut clock = Deadlines::new(policy);
    let mut watch_client = true;
    // Boxed, and only once a deadline exists: most streams on routes without heartbeats never
    // need one, and the box keeps the stream's task small.
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    let mut timer_at: Option<Instant> = None;
    // Polled once here so the drain can wake a quiet stream; after that only polled once the
    // drain has begun (an atomic load tells), not on every event.
    let mut drain_wait = pin!(drain.deadline());
    if let Poll::Ready(deadline) = futures::poll!(drain_wait.as_mut()) {
        clock.drain = Some(deadline);
    }

    loop {
        let due = clock.next(stream.at_boundary());
        if let Some(due) = due.filter(|due| timer_at.is_none_or(|at| *due < at)) {
            timer_at = Some(due);
            match &mut timer {
                Some(timer) => timer.as_mut().reset(due.into()),
                None => timer = Some(Box::pin(tokio::time::sleep_until(due.into()))),
            }
        }
        tokio::select! {
            biased;
            next = poll_fn(|cx| upstream.poll_next(cx, headroom)) => match next? {
                Some(buf) => {
                    let read_at = Instant::now();
                    let len = buf.len() - headroom;
                    let events = stream.scan(&buf[headroom..]);
                    client.send(buf).await?;
                    let now = stream.delivered(read_at, len, events);
                    clock.wrote(now, true);
                    if let Some(reason) = clock.ending_at(now).filter(|_| stream.at_boundary()) {
                        return Box::pin(end_with_retry(client, reason)).await;
                    }
                }
                None => {
                    client.finish().await?;
                    return Ok(CloseReason::UpstreamEnd);
                }
            },
            () = poll_fn(|cx| timer.as_mut().map_or(Poll::Pending, |t| t.as_mut().poll(cx))),
                if timer_at.is_some() => {
                timer_at = None;
                let now = Instant::now();
                if let Some(reason) = clock.ending_at(now).filter(|_| stream.at_boundary()) {
                    return Box::pin(end_with_retry(client, reason)).await;
                }
                if clock.idle_at().is_some_and(|at| at <= now) {
                    // The upstream went quiet: end the response cleanly. An event it left half
                    // sent is discarded by the client, which reconnects with its last id.
                    client.finish().await?;
                    return Ok(CloseReason::IdleTimeout);
                }
                if clock.heartbeat_at().is_some_and(|at| at <= now) && stream.at_boundary() {
                    client.send(client.frame(HEARTBEAT)).await?;
                    stream.heartbeat_sent();
                    clock.wrote(Instant::now(), false);
                }
            }
            // (A `select!` precondition is read once per loop, not on every wake-up, so the
            // atomic check is inside the branch.)
            deadline = poll_fn(|cx| match drain.deadline_now() {
                Some(_) => drain_wait.as_mut().poll(cx),
                None => Poll::Pending,
            }), if clock.drain.is_none() => {
                clock.drain = Some(deadline);
            }
            gone = client.gone(), if watch_client => {
                // Bytes after a complete request: nothing to do with them; stop watching.
                gone?;
                watch_client = false;
            }
        }
    }
}

/// Ends a stream at a drain or at its `max_lifetime`: a `retry:` line, then the end of the
/// response.
async fn end_with_retry<C: ClientSide>(client: &mut C, reason: CloseReason) -> Result<CloseReason> {
    client
        .send(client.frame(drain::retry_block().as_bytes()))
        .await?;
    client.finish().await?;
    Ok(reason)
}

/// A stream's lifetime under `max_lifetime`: anywhere within 10 % either side, so that streams
/// opened together (after a deploy, say) do not all end and reconnect together.
fn jittered(max_lifetime: Duration) -> Duration {
    max_lifetime.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// The deadlines of one stream.
struct Deadlines {
    heartbeat: Option<Duration>,
    idle_timeout: Option<Duration>,
    last_write: Instant,
    last_upstream: Instant,
    /// When the drain ends open streams, once the process drains.
    drain: Option<Instant>,
    /// When `max_lifetime` ends this stream.
    lifetime_end: Option<Instant>,
}

impl Deadlines {
    fn new(policy: &SsePolicy) -> Self {
        let now = Instant::now();
        Deadlines {
            heartbeat: policy.heartbeat,
            idle_timeout: policy.idle_timeout,
            last_write: now,
            last_upstream: now,
            drain: None,
            lifetime_end: policy.max_lifetime.map(|l| now + jittered(l)),
        }
    }

    /// Something was written to the client at `now`; `upstream` if it came from the upstream.
    fn wrote(&mut self, now: Instant, upstream: bool) {
        self.last_write = now;
        if upstream {
            self.last_upstream = now;
        }
    }

    fn heartbeat_at(&self) -> Option<Instant> {
        self.heartbeat.map(|h| self.last_write + h)
    }

    fn idle_at(&self) -> Option<Instant> {
        self.idle_timeout.map(|t| self.last_upstream + t)
    }

    /// Why the stream is to end at its next event boundary, if a deadline to end it has passed
    /// by `now`: the drain's, or its `max_lifetime`. `now` is the time the caller already read
    /// (a write's delivery, a timer's firing): no clock read of its own on the per-event path.
    fn ending_at(&self, now: Instant) -> Option<CloseReason> {
        if self.drain.is_some_and(|d| now >= d) {
            Some(CloseReason::Drain)
        } else if self.lifetime_end.is_some_and(|d| now >= d) {
            Some(CloseReason::MaxLifetime)
        } else {
            None
        }
    }

    /// The earliest deadline that can act now: heartbeats, the drain and `max_lifetime` wait for
    /// an event boundary (a write ends the stream at the first boundary past an ending deadline).
    fn next(&self, at_boundary: bool) -> Option<Instant> {
        let ending = [self.heartbeat_at(), self.drain, self.lifetime_end];
        let boundary_bound = ending.into_iter().flatten();
        let candidates = boundary_bound.filter(|_| at_boundary).chain(self.idle_at());
        candidates.min()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::BytesMut;
    use pingora_core::services::background::BackgroundService;
    use tokio::io::{AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::lifecycle::drain::DrainService;
    use crate::observe::metrics::RouteMetrics;
    use crate::proxy::relay::framing::Framing;

    /// A client that keeps what it is sent, and never leaves.
    #[derive(Clone, Default)]
    struct RecordingClient {
        received: Arc<Mutex<Vec<u8>>>,
        finished: Arc<Mutex<bool>>,
    }

    impl RecordingClient {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
        }
    }

    impl ClientSide for RecordingClient {
        fn headroom(&self) -> usize {
            0
        }
        async fn send(&mut self, buf: BytesMut) -> Result<()> {
            self.received.lock().unwrap().extend_from_slice(&buf);
            Ok(())
        }
        async fn finish(&mut self) -> Result<()> {
            *self.finished.lock().unwrap() = true;
            Ok(())
        }
        async fn gone(&mut self) -> Result<()> {
            std::future::pending().await
        }
        fn body_bytes_sent(&self) -> usize {
            self.received.lock().unwrap().len()
        }
    }

    /// One relayed stream in a task of its own: the upstream end to write its body to, the
    /// client's record, and the pump's result.
    struct Relayed {
        upstream: DuplexStream,
        client: RecordingClient,
        done: tokio::task::JoinHandle<Result<CloseReason>>,
    }

    fn relay(policy: SsePolicy, drain: DrainSignal) -> Relayed {
        let (upstream, relay_side) = tokio::io::duplex(64 * 1024);
        let client = RecordingClient::default();
        let mut sink = client.clone();
        let done = tokio::spawn(async move {
            let mut body = UpstreamBody::from_stream(Box::new(relay_side), Framing::UntilClose);
            let metrics = Arc::new(RouteMetrics::new("relay-unit-test"));
            let mut meter = StreamMeter::open(&metrics, Instant::now(), false);
            pump(&mut sink, &mut body, &mut meter, &policy, &drain).await
        });
        Relayed {
            upstream,
            client,
            done,
        }
    }

    fn idle_drain() -> DrainSignal {
        DrainService::new(Duration::from_secs(30)).1
    }

    /// Waits until `client` has been sent `what`, at most 5 s.
    async fn until_sent(client: &RecordingClient, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !client.text().contains(what) {
            assert!(
                Instant::now() < deadline,
                "never sent {what:?}; sent {:?}",
                client.text()
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn millis(ms: u64) -> Option<Duration> {
        Some(Duration::from_millis(ms))
    }

    fn policy(heartbeat: Option<u64>, idle: Option<u64>) -> SsePolicy {
        SsePolicy {
            heartbeat: heartbeat.map(Duration::from_secs),
            idle_timeout: idle.map(Duration::from_secs),
            ..SsePolicy::default()
        }
    }

    #[test]
    fn no_options_no_timer() {
        let clock = Deadlines::new(&policy(None, None));
        assert_eq!(clock.next(true), None);
    }

    #[test]
    fn the_earliest_deadline_wins_and_heartbeats_wait_for_a_boundary() {
        let clock = Deadlines::new(&policy(Some(15), Some(60)));
        assert_eq!(clock.next(true), clock.heartbeat_at());
        assert_eq!(
            clock.next(false),
            clock.idle_at(),
            "no heartbeat inside an event"
        );

        let mut draining = Deadlines::new(&policy(Some(15), Some(60)));
        let soon = Instant::now() + Duration::from_secs(1);
        draining.drain = Some(soon);
        assert_eq!(draining.next(true), Some(soon));
        assert_eq!(draining.next(false), draining.idle_at());
    }

    #[test]
    fn heartbeats_do_not_count_as_upstream_activity() {
        let mut clock = Deadlines::new(&policy(Some(1), Some(5)));
        let idle_before = clock.idle_at();
        let later = clock.last_write + Duration::from_millis(500);
        clock.wrote(later, false);
        assert_eq!(clock.idle_at(), idle_before);
        assert_eq!(clock.heartbeat_at(), Some(later + Duration::from_secs(1)));
        clock.wrote(later, true);
        assert_eq!(clock.idle_at(), Some(later + Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn a_quiet_stream_gets_heartbeats_and_events_pass_through() {
        let policy = SsePolicy {
            heartbeat: millis(20),
            ..SsePolicy::default()
        };
        let mut r = relay(policy, idle_drain());
        until_sent(&r.client, ": keepalive\n\n").await;
        r.upstream.write_all(b"data: one\n\n").await.unwrap();
        until_sent(&r.client, "data: one\n\n").await;
        drop(r.upstream);
        let reason = r.done.await.unwrap().unwrap();
        assert_eq!(reason, CloseReason::UpstreamEnd);
        assert!(*r.client.finished.lock().unwrap());
    }

    #[tokio::test]
    async fn no_heartbeat_is_written_inside_an_event() {
        let policy = SsePolicy {
            heartbeat: millis(20),
            ..SsePolicy::default()
        };
        let mut r = relay(policy, idle_drain());
        r.upstream.write_all(b"data: half").await.unwrap();
        until_sent(&r.client, "data: half").await;
        // Many heartbeat periods pass inside the event; none may split it.
        let quiet_until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < quiet_until {
            assert_eq!(r.client.text(), "data: half");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        r.upstream.write_all(b"\n\n").await.unwrap();
        until_sent(&r.client, "data: half\n\n: keepalive\n\n").await;
        r.done.abort();
    }

    #[tokio::test]
    async fn an_upstream_quiet_past_the_idle_timeout_ends_the_stream_cleanly() {
        let policy = SsePolicy {
            heartbeat: millis(10),
            idle_timeout: millis(150),
            ..SsePolicy::default()
        };
        let r = relay(policy, idle_drain());
        // Heartbeats are the relay's own writes: they do not keep an idle upstream alive.
        let reason = tokio::time::timeout(Duration::from_secs(5), r.done)
            .await
            .expect("the idle timeout ended the stream")
            .unwrap()
            .unwrap();
        assert_eq!(reason, CloseReason::IdleTimeout);
        assert!(*r.client.finished.lock().unwrap());
        assert!(r.client.text().contains(": keepalive"));
    }

    #[tokio::test]
    async fn the_drain_ends_a_stream_at_an_event_boundary_with_a_retry_line() {
        // A grace period of 1 s leaves a drain window of 0: streams end at their next boundary.
        let (service, drain) = DrainService::new(Duration::from_secs(1));
        let mut r = relay(SsePolicy::default(), drain);
        r.upstream.write_all(b"data: a\n\ndata: b").await.unwrap();
        until_sent(&r.client, "data: b").await;
        let (shutdown, watch) = tokio::sync::watch::channel(false);
        let draining = tokio::spawn(async move { service.start(watch).await });
        shutdown.send(true).unwrap();
        draining.await.unwrap();
        // The event under way is finished first.
        r.upstream.write_all(b"\n\n").await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(5), r.done)
            .await
            .expect("the drain ended the stream")
            .unwrap()
            .unwrap();
        assert_eq!(reason, CloseReason::Drain);
        let sent = r.client.text();
        let tail = sent
            .strip_prefix("data: a\n\ndata: b\n\nretry: ")
            .unwrap_or_else(|| panic!("unexpected body {sent:?}"));
        assert!(tail.ends_with("\n\n"), "retry block {tail:?}");
        assert!(*r.client.finished.lock().unwrap());
    }

    #[tokio::test]
    async fn max_lifetime_ends_a_stream_at_the_first_boundary_after_it_with_a_retry_line() {
        let policy = SsePolicy {
            max_lifetime: millis(100),
            ..SsePolicy::default()
        };
        let started = Instant::now();
        let mut r = relay(policy, idle_drain());
        r.upstream.write_all(b"data: a\n\ndata: b").await.unwrap();
        until_sent(&r.client, "data: b").await;
        // Held mid-event past the lifetime (at most 110 ms), which is what the test is about: the
        // stream waits for the boundary.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(r.client.text(), "data: a\n\ndata: b");
        r.upstream.write_all(b"\n\n").await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(5), r.done)
            .await
            .expect("max_lifetime ended the stream")
            .unwrap()
            .unwrap();
        assert_eq!(reason, CloseReason::MaxLifetime);
        assert!(started.elapsed() >= Duration::from_millis(90));
        let sent = r.client.text();
        assert!(
            sent.strip_prefix("data: a\n\ndata: b\n\nretry: ")
                .is_some_and(|tail| tail.ends_with("\n\n")),
            "unexpected body {sent:?}"
        );
        assert!(*r.client.finished.lock().unwrap());
    }

    #[tokio::test]
    async fn max_lifetime_ends_a_quiet_stream_too() {
        let policy = SsePolicy {
            max_lifetime: millis(50),
            ..SsePolicy::default()
        };
        let r = relay(policy, idle_drain());
        let reason = tokio::time::timeout(Duration::from_secs(5), r.done)
            .await
            .expect("max_lifetime ended the quiet stream")
            .unwrap()
            .unwrap();
        assert_eq!(reason, CloseReason::MaxLifetime);
        assert!(r.client.text().starts_with("retry: "));
    }

    #[test]
    fn lifetimes_spread_within_ten_percent_either_side() {
        let base = Duration::from_secs(1800);
        let lifetimes: Vec<Duration> = (0..10_000).map(|_| jittered(base)).collect();
        let (min, max) = (
            *lifetimes.iter().min().unwrap(),
            *lifetimes.iter().max().unwrap(),
        );
        assert!(
            min >= base.mul_f64(0.9) && max <= base.mul_f64(1.1),
            "{min:?}..{max:?}"
        );
        // Spread over the whole window, not bunched: both outer fifths are used.
        assert!(
            min < base.mul_f64(0.92) && max > base.mul_f64(1.08),
            "{min:?}..{max:?}"
        );
    }
}
