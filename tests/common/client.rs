//! The kit's HTTP/1.1 client, with the test upstream's events decoded: each carries its id and
//! send time, and is stamped with its receive time, so a test sees when each byte arrives.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use testkit::sse;

/// One SSE event of the test upstream, with its send and receive times since the test epoch.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub id: u64,
    pub sent_micros: u64,
    pub received_micros: u64,
}

impl Event {
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.received_micros.saturating_sub(self.sent_micros))
    }

    /// The test upstream's event (`data: ID MICROS`), stamped as received now.
    fn decode(event: &sse::OwnedEvent) -> Event {
        let mut parts = event.data.split(' ');
        Event {
            id: parts.next().and_then(|p| p.parse().ok()).unwrap_or(0),
            sent_micros: parts.next().and_then(|p| p.parse().ok()).unwrap_or(0),
            received_micros: super::micros_since_epoch(),
        }
    }
}

/// A response read piece by piece (the kit's), whose events are the test upstream's.
pub struct Response(testkit::client::Response);

impl Deref for Response {
    type Target = testkit::client::Response;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Response {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Response {
    /// The whole remaining body as text.
    pub async fn text(self) -> std::io::Result<String> {
        self.0.text().await
    }

    /// The next complete event from the test upstream, or `None` at the end of the body.
    pub async fn next_event(&mut self) -> std::io::Result<Option<Event>> {
        Ok(self.0.next_event().await?.as_ref().map(Event::decode))
    }
}

/// Sends a request (the kit's: its response's events are not decoded; `.into()` does that).
#[allow(unused_imports)]
pub use testkit::client::request;

impl From<testkit::client::Response> for Response {
    fn from(response: testkit::client::Response) -> Self {
        Response(response)
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    testkit::client::get(addr, path).await.map(Response)
}

/// The test upstream's events in a byte stream that arrives in pieces (e.g. HTTP/2 DATA).
#[derive(Default)]
pub struct EventReader(sse::Parser);

impl EventReader {
    /// Parses the next piece and returns the events it completes.
    pub fn feed(&mut self, piece: &[u8]) -> Vec<Event> {
        self.0.feed_owned(piece).iter().map(Event::decode).collect()
    }
}
