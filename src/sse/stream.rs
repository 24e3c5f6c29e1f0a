//! Streaming policy for SSE responses, and the per-stream bookkeeping behind the stream metrics.
//!
//! # What Pingora 0.9 already does
//! - HTTP/1.1 chunked and close-delimited response bodies are written and flushed to the client
//!   after every chunk (`pingora-core` `protocols/http/v1/body.rs`, `do_write_chunked_body`,
//!   `do_write_until_close_body`); response headers without `Content-Length` are flushed at once.
//!   HTTP/2 sends each chunk as a DATA frame at once.
//! - The proxy loop (`pingora-proxy` `proxy_h1.rs`) only merges chunks that are already queued;
//!   it never waits to fill a buffer. TCP_NODELAY is set on both sides.
//! - While the request body is done, the loop keeps polling the client connection, so a client
//!   that goes away ends the request and drops the upstream connection promptly.
//!
//! # What still holds SSE back, and what ssegate does about it
//! - A `Content-Length`-framed body is written without a flush per chunk, so events sit in the
//!   socket buffer until the body completes. ssegate removes `Content-Length` from streams so
//!   Pingora re-frames them as chunked (HTTP/1.1) or plain DATA frames (HTTP/2).
//! - Compression holds events until the stream ends. ssegate enables no response compression.
//! - Proxies in front of ssegate may buffer too: ssegate sets `X-Accel-Buffering: no` and adds
//!   `Cache-Control: no-cache` if the upstream gave none.
//! - Upstream read timeouts cut quiet streams: on a marked route the body of a stream is timed
//!   by the route's `idle_timeout` (none by default) instead of the upstream's `read_timeout`
//!   (see [`crate::proxy::relay`]).
//!
//! A response is a stream when its `Content-Type` is `text/event-stream`, or when its route is
//! marked `sse` and it is a success.
//!
//! # What the stream metrics measure
//! - Flush latency runs from a chunk's arrival from the upstream to its arrival at the client
//!   connection. On the relay (marked routes) that is from the upstream read to the completed,
//!   flushed write to the client socket. On Pingora's proxy loop (unmarked routes) no hook runs
//!   after the write, so it ends when the chunk is handed to Pingora's writer
//!   (`response_body_filter`), which then writes and flushes it at once.
//! - Events are counted at event boundaries ([`EventScanner`]); the first one observes the time
//!   to first event from the request's arrival.
//! - A stream is a resume when its request carries a non-empty `Last-Event-ID` ([`is_resume`]),
//!   counted when the stream opens.
//! - The event gap is observed once per delivery (one write on the relay, one chunk handed to
//!   Pingora's writer on the proxy path) that completes at least one event, after the stream's
//!   first such delivery: the time since the previous delivery that completed an event, both
//!   taken at delivery. Several events completed by one delivery reached the client together and
//!   make one observation, not one per event with zeros for the rest. Heartbeats, the upstream's
//!   own comment blocks and the bytes of an event not yet complete are no events: they neither
//!   observe a gap nor restart it. The quiet spell before a stream ends is not a gap.
//! - A stream's duration and close reason are recorded, and the open-streams gauge decremented,
//!   when [`StreamMeter`] is dropped, so the gauge returns to 0 however a stream ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use pingora_core::Result;
use pingora_http::{RequestHeader, ResponseHeader};

use super::EventScanner;
use crate::observe::metrics::{CloseReason, RouteMetrics};

/// Whether a response is relayed as a stream: any `text/event-stream` body, and any successful
/// response on a route marked `sse`.
pub(crate) fn is_stream(resp: &ResponseHeader, marked_route: bool) -> bool {
    is_event_stream(resp) || (marked_route && resp.status.is_success())
}

/// Whether the upstream declared an SSE body (`text/event-stream`, any parameters, any case).
fn is_event_stream(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Whether a stream for `req` resumes an earlier one: the request carries a `Last-Event-ID`
/// that is not empty. An `EventSource` sends the header only when it has a last event id (and
/// an empty `id:` field clears it), so an empty value is no position to resume from: the
/// upstream starts such a stream afresh, and it is not counted.
pub(crate) fn is_resume(req: &RequestHeader) -> bool {
    req.headers
        .get_all("last-event-id")
        .iter()
        .any(|id| !id.as_bytes().trim_ascii().is_empty())
}

/// Frames a relayed response for the client of `req`. An HTTP/1.0 client cannot read chunks
/// (RFC 9112 section 6.1), so its body runs until the connection closes. Otherwise a body with
/// neither `Content-Length` nor `Transfer-Encoding` is framed as chunked, as Pingora's own proxy
/// loop does, so the client connection can stay open after it. (Pingora's HTTP/2 writer drops
/// the header again.)
pub(crate) fn frame_for_client(resp: &mut ResponseHeader, req: &RequestHeader) -> Result<()> {
    let no_body = req.method == http::Method::HEAD || matches!(resp.status.as_u16(), 204 | 304);
    if no_body {
        return Ok(());
    }
    if req.version == http::Version::HTTP_10 {
        resp.remove_header(&http::header::TRANSFER_ENCODING);
    } else if !resp.headers.contains_key(http::header::CONTENT_LENGTH)
        && !resp.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        resp.set_version(http::Version::HTTP_11);
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(())
}

/// Adjusts a stream's response header so nothing between upstream and browser buffers it.
pub(crate) fn prepare_response(resp: &mut ResponseHeader) -> Result<()> {
    // Without a length Pingora frames the body as chunked, which it flushes per chunk.
    resp.remove_header(&http::header::CONTENT_LENGTH);
    if !resp.headers.contains_key(http::header::CACHE_CONTROL) {
        resp.insert_header(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        )?;
    }
    resp.insert_header("X-Accel-Buffering", http::HeaderValue::from_static("no"))?;
    Ok(())
}

/// The meter of one open stream: counts what passes through and keeps the route's gauges honest.
///
/// The stream is counted open from creation until drop; dropping it (for whatever reason,
/// including a runtime torn down at the end of a shutdown) always closes it exactly once.
#[derive(Debug)]
pub(crate) struct StreamMeter {
    metrics: Arc<RouteMetrics>,
    request_start: Instant,
    opened: Instant,
    scanner: EventScanner,
    events: u64,
    /// When the last delivery that completed an event reached the client; `None` before the
    /// first event.
    last_event_at: Option<Instant>,
    bytes: u64,
    /// Arrival time and length of upstream chunks not yet handed to the client.
    in_flight: VecDeque<(Instant, usize)>,
    /// `None` until the stream's end is known; a stream dropped without one was cut by the end
    /// of a shutdown.
    close_reason: Option<CloseReason>,
}

impl StreamMeter {
    /// Opens the meter of a stream whose request arrived at `request_start`; `resumed` if the
    /// request resumes an earlier stream ([`is_resume`]).
    pub(crate) fn open(metrics: &Arc<RouteMetrics>, request_start: Instant, resumed: bool) -> Self {
        metrics.streams_total.inc();
        metrics.streams_active.inc();
        if resumed {
            metrics.resumes.inc();
        }
        StreamMeter {
            metrics: metrics.clone(),
            request_start,
            opened: Instant::now(),
            scanner: EventScanner::default(),
            events: 0,
            last_event_at: None,
            bytes: 0,
            in_flight: VecDeque::new(),
            close_reason: None,
        }
    }

    /// A chunk of `len` bytes arrived from the upstream at `at`.
    pub(crate) fn chunk_arrived(&mut self, at: Instant, len: usize) {
        if len > 0 {
            self.in_flight.push_back((at, len));
        }
    }

    /// `chunk` has reached the client connection: written and flushed on the relay path, handed
    /// to Pingora's writer on the proxy path (see the module doc).
    pub(crate) fn chunk_sent(&mut self, chunk: &[u8]) {
        let now = Instant::now();
        let events = self.scan(chunk);
        self.count(now, chunk.len(), events);
        // Pingora may merge queued chunks into one write; match them by length.
        let mut remaining = chunk.len();
        while let Some((arrived, len)) = self.in_flight.front_mut() {
            if *len > remaining {
                *len -= remaining;
                break;
            }
            remaining -= *len;
            self.metrics
                .flush_latency
                .observe((now - *arrived).as_secs_f64());
            self.in_flight.pop_front();
        }
    }

    /// Scans a payload about to be sent; returns how many events it completes. The relay scans
    /// before it writes, so that [`Self::at_boundary`] already knows where the payload ends.
    pub(crate) fn scan(&mut self, payload: &[u8]) -> u64 {
        self.scanner.feed(payload)
    }

    /// A payload of `len` bytes, read from the upstream at `read_at` and completing `events`
    /// events ([`Self::scan`]), has been written and flushed to the client (the relay's path:
    /// one read, one write). Returns the time of delivery.
    pub(crate) fn delivered(&mut self, read_at: Instant, len: usize, events: u64) -> Instant {
        let now = Instant::now();
        self.count(now, len, events);
        self.metrics
            .flush_latency
            .observe((now - read_at).as_secs_f64());
        now
    }

    /// Counts a delivery at `now` of `len` bytes that completed `events` events: the first
    /// event's latency, then one event gap per delivery with events (see the module doc).
    fn count(&mut self, now: Instant, len: usize, events: u64) {
        if events > 0 {
            match self.last_event_at {
                Some(previous) => self
                    .metrics
                    .event_gap
                    .observe(now.saturating_duration_since(previous).as_secs_f64()),
                None => self
                    .metrics
                    .first_event
                    .observe((now - self.request_start).as_secs_f64()),
            }
            self.last_event_at = Some(now);
            self.events += events;
            self.metrics.events.inc_by(events);
        }
        self.bytes += len as u64;
        self.metrics.bytes.inc_by(len as u64);
    }

    /// A heartbeat comment was written to the client.
    pub(crate) fn heartbeat_sent(&self) {
        self.metrics.heartbeats.inc();
    }

    /// Whether bytes written now would fall between events (see [`EventScanner::at_boundary`]).
    pub(crate) fn at_boundary(&self) -> bool {
        self.scanner.at_boundary()
    }

    /// The handles of the route the stream is on.
    pub(crate) fn metrics(&self) -> &RouteMetrics {
        &self.metrics
    }

    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Records why the stream ended; the close is counted when the stream is dropped.
    pub(crate) fn set_close_reason(&mut self, reason: CloseReason) {
        self.close_reason = Some(reason);
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
    }
}

impl Drop for StreamMeter {
    fn drop(&mut self) {
        self.metrics.streams_active.dec();
        let reason = self.close_reason.unwrap_or(CloseReason::Drain);
        self.metrics.closed(reason).inc();
        self.metrics
            .stream_duration
            .observe(self.opened.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(status, None).unwrap();
        for (name, value) in headers {
            resp.append_header(name.to_string(), *value).unwrap();
        }
        resp
    }

    fn request(method: &str, version: http::Version) -> RequestHeader {
        let mut req = RequestHeader::build(method, b"/events", None).unwrap();
        req.set_version(version);
        req
    }

    #[test]
    fn an_event_stream_is_a_stream_on_any_route_whatever_its_case_and_parameters() {
        for content_type in [
            "text/event-stream",
            "Text/Event-Stream; charset=utf-8",
            " text/event-stream ;x=1",
        ] {
            let resp = response(200, &[("Content-Type", content_type)]);
            assert!(is_stream(&resp, false), "{content_type}");
            assert!(is_stream(&resp, true), "{content_type}");
        }
        let json = response(200, &[("Content-Type", "application/json")]);
        assert!(!is_stream(&json, false));
        let lookalike = response(200, &[("Content-Type", "text/event-streams")]);
        assert!(!is_stream(&lookalike, false));
    }

    #[test]
    fn a_marked_route_streams_its_successes_only() {
        assert!(is_stream(&response(200, &[]), true));
        assert!(is_stream(
            &response(201, &[("Content-Type", "text/plain")]),
            true
        ));
        assert!(!is_stream(
            &response(404, &[("Content-Type", "text/html")]),
            true
        ));
        assert!(!is_stream(&response(502, &[]), true));
        assert!(!is_stream(&response(200, &[]), false));
    }

    #[test]
    fn a_stream_loses_its_length_and_gains_no_buffering_headers() {
        let mut resp = response(200, &[("Content-Length", "12")]);
        prepare_response(&mut resp).unwrap();
        assert!(resp.headers.get("content-length").is_none());
        assert_eq!(resp.headers.get("cache-control").unwrap(), "no-cache");
        assert_eq!(resp.headers.get("x-accel-buffering").unwrap(), "no");

        let mut cached = response(200, &[("Cache-Control", "private, max-age=0")]);
        prepare_response(&mut cached).unwrap();
        assert_eq!(
            cached.headers.get("cache-control").unwrap(),
            "private, max-age=0",
            "the upstream's own Cache-Control is kept"
        );
    }

    fn with_last_event_id(values: &[&str]) -> RequestHeader {
        let mut req = request("GET", http::Version::HTTP_11);
        for value in values {
            req.append_header("Last-Event-ID", *value).unwrap();
        }
        req
    }

    #[test]
    fn a_resume_is_a_request_with_a_last_event_id_that_is_not_empty() {
        assert!(!is_resume(&with_last_event_id(&[])));
        assert!(!is_resume(&with_last_event_id(&[""])));
        assert!(!is_resume(&with_last_event_id(&["  "])));
        assert!(is_resume(&with_last_event_id(&["41"])));
        assert!(is_resume(&with_last_event_id(&["abc-41"])));
        assert!(is_resume(&with_last_event_id(&["", "41"])));
    }

    #[test]
    fn a_stream_opened_as_a_resume_is_counted_once() {
        let metrics = Arc::new(RouteMetrics::new("meter-unit-resumes"));
        let fresh = StreamMeter::open(&metrics, Instant::now(), false);
        assert_eq!(metrics.resumes.get(), 0);
        let resumed = StreamMeter::open(&metrics, Instant::now(), true);
        assert_eq!(metrics.resumes.get(), 1);
        assert_eq!(metrics.streams_total.get(), 2);
        drop((fresh, resumed));
        assert_eq!(
            metrics.resumes.get(),
            1,
            "closing a stream counts nothing more"
        );
    }

    /// `(count, sum)` of the event gap histogram.
    fn gaps(metrics: &RouteMetrics) -> (u64, f64) {
        (
            metrics.event_gap.get_sample_count(),
            metrics.event_gap.get_sample_sum(),
        )
    }

    #[test]
    fn one_gap_per_delivery_with_events_measured_from_the_previous_one() {
        let metrics = Arc::new(RouteMetrics::new("meter-unit-gaps"));
        let start = Instant::now();
        let mut meter = StreamMeter::open(&metrics, start, false);
        let at = |ms: u64| start + std::time::Duration::from_millis(ms);

        meter.count(at(100), 10, 0);
        assert_eq!(gaps(&metrics), (0, 0.0), "no event yet");
        meter.count(at(200), 10, 1);
        assert_eq!(gaps(&metrics), (0, 0.0), "the first event has no gap");
        assert_eq!(metrics.first_event.get_sample_count(), 1);

        meter.count(at(450), 10, 0);
        assert_eq!(
            gaps(&metrics),
            (0, 0.0),
            "a delivery without events is no gap"
        );
        meter.heartbeat_sent();
        assert_eq!(gaps(&metrics), (0, 0.0), "a heartbeat is no event");

        meter.count(at(700), 30, 3);
        assert_eq!(
            gaps(&metrics),
            (1, 0.5),
            "three events in one delivery: one gap"
        );
        meter.count(at(950), 10, 1);
        assert_eq!(
            gaps(&metrics),
            (2, 0.75),
            "measured from the previous delivery"
        );
        assert_eq!(metrics.first_event.get_sample_count(), 1);
        assert_eq!(meter.events(), 5);
    }

    #[test]
    fn both_delivery_paths_observe_gaps_at_event_ends() {
        let metrics = Arc::new(RouteMetrics::new("meter-unit-gap-paths"));
        let mut meter = StreamMeter::open(&metrics, Instant::now(), false);
        // The proxy path: chunks as handed to Pingora's writer.
        let before_first = Instant::now();
        meter.chunk_sent(b"data: 1\n\n");
        meter.chunk_sent(b": upstream comment\n\ndata: par");
        assert_eq!(gaps(&metrics).0, 0);
        meter.chunk_sent(b"tial\n\n");
        let (count, sum) = gaps(&metrics);
        assert_eq!(count, 1, "the event's end is its delivery");
        assert!(sum <= before_first.elapsed().as_secs_f64(), "{sum}");
        // The relay's path: scan, write, delivered.
        let events = meter.scan(b"data: 3\n\ndata: 4\n\n");
        meter.delivered(Instant::now(), 18, events);
        assert_eq!(gaps(&metrics).0, 2);
        let events = meter.scan(b": keepalive\n\n");
        meter.delivered(Instant::now(), 13, events);
        assert_eq!(gaps(&metrics).0, 2, "a comment block is no event");
        assert_eq!(meter.events(), 4);
    }

    #[test]
    fn framing_follows_what_the_client_can_read() {
        let mut for_11 = response(200, &[]);
        frame_for_client(&mut for_11, &request("GET", http::Version::HTTP_11)).unwrap();
        assert_eq!(for_11.headers.get("transfer-encoding").unwrap(), "chunked");

        let mut for_10 = response(200, &[("Transfer-Encoding", "chunked")]);
        frame_for_client(&mut for_10, &request("GET", http::Version::HTTP_10)).unwrap();
        assert!(
            for_10.headers.get("transfer-encoding").is_none(),
            "an HTTP/1.0 body runs until the connection closes"
        );

        let mut sized = response(200, &[("Content-Length", "5")]);
        frame_for_client(&mut sized, &request("GET", http::Version::HTTP_11)).unwrap();
        assert!(sized.headers.get("transfer-encoding").is_none());

        for (method, status) in [("HEAD", 200), ("GET", 204), ("GET", 304)] {
            let mut bodiless = response(status, &[]);
            frame_for_client(&mut bodiless, &request(method, http::Version::HTTP_11)).unwrap();
            assert!(
                bodiless.headers.get("transfer-encoding").is_none(),
                "{method} {status} has no body to frame"
            );
        }
    }
}
