//! Takes an HTTP/1.1 client connection out of Pingora's request for the relay's own task, and
//! gives it back to Pingora for the client's next request once the stream is over.
//!
//! # Why
//! While a request runs, Pingora holds about 25 KiB for it: the proxy session (with its cache
//! and module state), the HTTP/1.1 session with its 4 KiB request-head buffer, the response
//! header it wrote, and the connection task's future. A stream keeps all of it for hours. Once the
//! response head of a stream is written, none of it is needed any more: the relay only moves
//! bytes. So the relay takes the connection ([`take`]), leaves Pingora a [`HandedOver`] session
//! that finishes its request at once and lets it free everything, and carries the stream in a
//! task of its own that holds only the two connections and the stream's bookkeeping.
//!
//! When the stream ends cleanly and the client connection can carry another request, the task
//! hands the connection back to Pingora's HTTP service ([`ConnectionReturn`]), which serves it
//! as it would any kept-alive connection, pipelined requests included. HTTP/2 streams are not
//! taken: they share their connection with other requests.
//!
//! # How, with Pingora's public API
//! `pingora_proxy::Session::downstream_session` is public. The HTTP/1.1 session is swapped out of
//! it for a `Session::Custom` placeholder, then taken apart with `reuse()` (which returns the
//! connection together with any bytes of a pipelined next request) or `into_inner()`.

use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use http::HeaderMap;
use pingora_core::apps::HttpPersistentSettings;
use pingora_core::protocols::http::custom::server::Session as CustomSession;
use pingora_core::protocols::http::custom::CustomMessageWrite;
use pingora_core::protocols::http::{HttpTask, ServerSession};
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::{Digest, Stream};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

/// A connection taken from Pingora.
pub(crate) struct Taken {
    pub(crate) stream: Stream,
    /// How to serve the connection's next request, if the client kept it alive.
    pub(crate) next: Option<NextRequest>,
}

/// What the next request on a kept-alive connection starts from: Pingora's per-connection
/// settings, and any bytes of that request already read.
pub(crate) struct NextRequest {
    settings: HttpPersistentSettings,
    pipelined: Option<BytesMut>,
}

/// Takes the client connection of an HTTP/1.1 request whose response head has been written.
/// `None` (and nothing changed) for other sessions.
pub(crate) async fn take(session: &mut Session) -> Option<Result<Taken>> {
    if !matches!(*session.downstream_session, ServerSession::H1(_)) {
        return None;
    }
    let settings = HttpPersistentSettings::for_session(&session.downstream_session);
    // The placeholder keeps the request header (for Pingora's diagnostics); the session being
    // taken apart gets an empty one in exchange, rather than a copy being made.
    let empty = RequestHeader::build_no_case("GET", b"/", Some(0)).ok()?;
    let placeholder = HandedOver {
        req: std::mem::replace(session.req_header_mut(), empty),
    };
    let taken = std::mem::replace(
        &mut *session.downstream_session,
        ServerSession::new_custom(Box::new(placeholder)),
    );
    let ServerSession::H1(h1) = taken else {
        return None;
    };
    if !h1.will_keepalive() {
        return Some(Ok(Taken {
            stream: h1.into_inner(),
            next: None,
        }));
    }
    Some(match h1.reuse().await {
        Ok(Some(reusable)) => {
            let (stream, pipelined) = reusable.into_parts();
            Ok(Taken {
                stream,
                next: Some(NextRequest {
                    settings,
                    pipelined,
                }),
            })
        }
        Ok(None) => Err(Error::explain(
            ErrorType::ConnectionClosed,
            "client connection closed at hand-over",
        )),
        Err(e) => Err(e.into_down()),
    })
}

/// Serves a client connection's next requests, from a session ready to read the next one.
type Resume = Box<dyn Fn(ServerSession) -> BoxFuture<'static, ()> + Send + Sync>;

/// The way back from the relay to Pingora's HTTP service, set once the service exists.
#[derive(Default)]
pub(crate) struct ConnectionReturn(OnceLock<Resume>);

impl ConnectionReturn {
    /// Whether the way back is set.
    pub(crate) fn is_set(&self) -> bool {
        self.0.get().is_some()
    }

    /// Sets how a connection is served again; only the first call counts.
    pub(crate) fn set(
        &self,
        resume: impl Fn(ServerSession) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) {
        let _ = self.0.set(Box::new(resume));
    }

    /// Hands `stream` back for its next request; `early` are bytes of that request the relay
    /// read while the stream ran. The future runs as long as the connection is kept alive;
    /// without a way back the connection is closed.
    pub(crate) async fn give_back(&self, stream: Stream, next: NextRequest, early: &[u8]) {
        let Some(resume) = self.0.get() else {
            return;
        };
        let NextRequest {
            mut settings,
            pipelined,
        } = next;
        let mut prefix = pipelined.unwrap_or_default();
        prefix.extend_from_slice(early);
        if !prefix.is_empty() {
            settings.set_pipelined_prefix(prefix);
        }
        let mut session = ServerSession::new_http1(stream);
        settings.apply_to_session(&mut session);
        resume(session).await;
    }
}

/// What Pingora's request is left with once the relay has taken its connection: it finishes
/// without writing anything, so Pingora drops the request at once.
struct HandedOver {
    req: RequestHeader,
}

fn handed_over<T>() -> Result<T> {
    Error::e_explain(
        ErrorType::InternalError,
        "the connection was handed to the relay",
    )
}

#[async_trait]
impl CustomSession for HandedOver {
    fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.req
    }

    async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        Ok(None)
    }

    async fn drain_request_body(&mut self) -> Result<()> {
        Ok(())
    }

    async fn write_response_header(&mut self, _: Box<ResponseHeader>, _: bool) -> Result<()> {
        handed_over()
    }

    async fn write_response_header_ref(&mut self, _: &ResponseHeader, _: bool) -> Result<()> {
        handed_over()
    }

    async fn write_body(&mut self, _: Bytes, _: bool) -> Result<()> {
        handed_over()
    }

    async fn write_trailers(&mut self, _: HeaderMap) -> Result<()> {
        handed_over()
    }

    async fn response_duplex_vec(&mut self, _: Vec<HttpTask>) -> Result<bool> {
        handed_over()
    }

    fn set_read_timeout(&mut self, _: Option<Duration>) {}

    fn get_read_timeout(&self) -> Option<Duration> {
        None
    }

    fn set_write_timeout(&mut self, _: Option<Duration>) {}

    fn get_write_timeout(&self) -> Option<Duration> {
        None
    }

    fn set_total_drain_timeout(&mut self, _: Option<Duration>) {}

    fn get_total_drain_timeout(&self) -> Option<Duration> {
        None
    }

    fn request_summary(&self) -> String {
        format!("{} {} (handed to the relay)", self.req.method, self.req.uri)
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        None
    }

    async fn shutdown(&mut self, _: u32, _: &str) {}

    fn is_body_done(&mut self) -> bool {
        true
    }

    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    fn is_body_empty(&mut self) -> bool {
        true
    }

    async fn read_body_or_idle(&mut self, _: bool) -> Result<Option<Bytes>> {
        Ok(None)
    }

    fn body_bytes_sent(&self) -> usize {
        0
    }

    fn body_bytes_read(&self) -> usize {
        0
    }

    fn digest(&self) -> Option<&Digest> {
        None
    }

    fn digest_mut(&mut self) -> Option<&mut Digest> {
        None
    }

    fn client_addr(&self) -> Option<&SocketAddr> {
        None
    }

    fn server_addr(&self) -> Option<&SocketAddr> {
        None
    }

    fn pseudo_raw_h1_request_header(&self) -> Bytes {
        Bytes::new()
    }

    fn enable_retry_buffering(&mut self) {}

    fn retry_buffer_truncated(&self) -> bool {
        false
    }

    fn get_retry_buffer(&self) -> Option<Bytes> {
        None
    }

    async fn finish_custom(&mut self) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_reader(
        &mut self,
    ) -> Option<Box<dyn futures::Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>>
    {
        None
    }

    fn restore_custom_message_reader(
        &mut self,
        _: Box<dyn futures::Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>,
    ) -> Result<()> {
        handed_over()
    }

    fn take_custom_message_writer(&mut self) -> Option<Box<dyn CustomMessageWrite>> {
        None
    }

    fn restore_custom_message_writer(&mut self, _: Box<dyn CustomMessageWrite>) -> Result<()> {
        handed_over()
    }
}
