//! The loop that carries one stream: upstream reads to client writes, plus the timers of a
//! marked route (heartbeat, idle timeout, drain deadline) and the watch for a client that left.
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
use crate::drain::{self, DrainSignal};
use crate::metrics::CloseReason;
use crate::streaming::Stream;

/// The comment a quiet stream gets every `sse.heartbeat`.
const HEARTBEAT: &[u8] = b": keepalive\n\n";

/// Relays the body of a stream until it ends; returns why it ended. On `Err` the stream was cut
/// (by the client or the upstream) and the error says which.
pub(crate) async fn pump<C: ClientSide>(
    client: &mut C,
    upstream: &mut UpstreamBody,
    stream: &mut Stream,
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
                    if clock.draining_now() && stream.at_boundary() {
                        return Box::pin(end_with_retry(client)).await;
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
                if clock.draining_now() && stream.at_boundary() {
                    return Box::pin(end_with_retry(client)).await;
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

/// Ends a stream during a drain: a `retry:` line, then the end of the response.
async fn end_with_retry<C: ClientSide>(client: &mut C) -> Result<CloseReason> {
    client
        .send(client.frame(drain::retry_block().as_bytes()))
        .await?;
    client.finish().await?;
    Ok(CloseReason::Drain)
}

/// The deadlines of one stream.
struct Deadlines {
    heartbeat: Option<Duration>,
    idle_timeout: Option<Duration>,
    last_write: Instant,
    last_upstream: Instant,
    /// When the drain ends open streams, once the process drains.
    drain: Option<Instant>,
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

    fn draining_now(&self) -> bool {
        self.drain.is_some_and(|d| Instant::now() >= d)
    }

    /// The earliest deadline that can act now: heartbeats and the drain wait for an event
    /// boundary (a write ends the stream at the first boundary past the drain deadline).
    fn next(&self, at_boundary: bool) -> Option<Instant> {
        let boundary_bound = [self.heartbeat_at(), self.drain].into_iter().flatten();
        let candidates = boundary_bound.filter(|_| at_boundary).chain(self.idle_at());
        candidates.min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
