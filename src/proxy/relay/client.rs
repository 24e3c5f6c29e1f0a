//! The client end of a relayed stream, in two forms behind one trait:
//!
//! - [`OwnedClient`]: an HTTP/1.1 connection the relay took over from Pingora after writing the
//!   response head (see [`super::handover`]). The relay frames each read from the upstream as
//!   one chunk and writes it with one system call: the chunk-size line goes into room left in
//!   front of the payload, so framing costs no extra copy or write.
//! - [`SessionClient`]: Pingora's downstream session, for HTTP/2 streams, which share their
//!   connection with other requests and so stay with Pingora's HTTP/2 machinery.

use std::future::Future;
use std::io::ErrorKind;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pingora_core::protocols::Stream;
use pingora_core::{Error, ErrorType, Result};
use pingora_proxy::Session;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

/// Room for the longest chunk-size line: 16 hexadecimal digits and `CRLF`.
const CHUNK_HEADROOM: usize = 18;
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Where a stream's bytes go.
pub(crate) trait ClientSide {
    /// Bytes the relay leaves free in front of each payload for this side's framing.
    fn headroom(&self) -> usize;

    /// Writes one payload (`buf[headroom..]`) and flushes it to the client.
    fn send(&mut self, buf: BytesMut) -> impl Future<Output = Result<()>> + Send;

    /// Ends the response cleanly.
    fn finish(&mut self) -> impl Future<Output = Result<()>> + Send;

    /// Resolves when the client has gone (`Err`), or `Ok` when it sent bytes after its request,
    /// after which there is nothing more to watch for. Cancel-safe.
    fn gone(&mut self) -> impl Future<Output = Result<()>> + Send;

    /// Body bytes sent so far (payload, not framing).
    fn body_bytes_sent(&self) -> usize;

    /// Builds a buffer with this side's headroom around `payload` (heartbeats, `retry:`).
    fn frame(&self, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::with_capacity(self.headroom() + payload.len());
        buf.put_bytes(0, self.headroom());
        buf.extend_from_slice(payload);
        buf
    }
}

/// An HTTP/1.1 client connection the relay owns.
pub(crate) struct OwnedClient {
    stream: Stream,
    /// `Transfer-Encoding: chunked`; otherwise the body ends when the connection closes
    /// (HTTP/1.0 clients).
    chunked: bool,
    /// How long one write may wait for the client to accept data.
    write_timeout: Duration,
    body_bytes: usize,
    /// A byte the client sent after its request while the stream ran: the start of its next
    /// (pipelined) request, read by the watch for a client that leaves.
    early: Option<u8>,
}

impl OwnedClient {
    pub(crate) fn new(stream: Stream, chunked: bool, write_timeout: Duration) -> Self {
        OwnedClient {
            stream,
            chunked,
            write_timeout,
            body_bytes: 0,
            early: None,
        }
    }

    /// Writes bytes the response head left in Pingora's write buffer, so the client has its
    /// head before the first event (an `EventSource` opens on the head).
    pub(crate) async fn flush_head(&mut self) -> Result<()> {
        self.write(&[]).await
    }

    /// The connection and the bytes of a next request read so far, if the response ended in a
    /// way that lets it carry another request.
    pub(crate) fn into_reusable(self) -> Option<(Stream, Option<u8>)> {
        self.chunked.then_some((self.stream, self.early))
    }

    /// Writes `bytes` and flushes them. A client that accepts none of it for `write_timeout`
    /// is given up on. The timer exists only while the socket is full, so the write of a client
    /// that keeps up (nearly every one) never touches the timer wheel, and the future stays a
    /// few words in size.
    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let stream = &mut self.stream;
        let limit = self.write_timeout;
        let mut written = 0;
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        let outcome = std::future::poll_fn(|cx| {
            let io = loop {
                if written == bytes.len() {
                    break Pin::new(&mut *stream).poll_flush(cx);
                }
                match Pin::new(&mut *stream).poll_write(cx, &bytes[written..]) {
                    Poll::Ready(Ok(0)) => break Poll::Ready(Err(ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                    Poll::Pending => break Poll::Pending,
                }
            };
            if io.is_ready() {
                return io;
            }
            let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        outcome
            .map_err(|e| {
                let kind = if e.kind() == ErrorKind::TimedOut {
                    ErrorType::WriteTimedout
                } else {
                    ErrorType::WriteError
                };
                Error::because(kind, "writing to client", e)
            })
            .map_err(|e| e.into_down())
    }
}

impl ClientSide for OwnedClient {
    fn headroom(&self) -> usize {
        if self.chunked {
            CHUNK_HEADROOM
        } else {
            0
        }
    }

    async fn send(&mut self, mut buf: BytesMut) -> Result<()> {
        let payload = buf.len() - self.headroom();
        if self.chunked {
            let start = put_chunk_size(&mut buf[..CHUNK_HEADROOM], payload);
            buf.advance(start);
            buf.extend_from_slice(b"\r\n");
        }
        self.write(&buf).await?;
        self.body_bytes += payload;
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        if self.chunked {
            self.write(LAST_CHUNK).await
        } else {
            let _ = self.stream.shutdown().await;
            Ok(())
        }
    }

    async fn gone(&mut self) -> Result<()> {
        let mut probe = [0u8; 1];
        let stream = &mut self.stream;
        let read = std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut probe);
            Pin::new(&mut *stream)
                .poll_read(cx, &mut buf)
                .map_ok(|()| buf.filled().len())
        })
        .await;
        match read {
            Ok(0) => Error::e_explain(ErrorType::ConnectionClosed, "client closed the connection")
                .map_err(|e| e.into_down()),
            Ok(_) => {
                self.early = Some(probe[0]);
                Ok(())
            }
            Err(e) => Error::e_because(ErrorType::ReadError, "client connection", e)
                .map_err(|e| e.into_down()),
        }
    }

    fn body_bytes_sent(&self) -> usize {
        self.body_bytes
    }
}

/// Writes `SIZE CRLF` for a chunk of `len` bytes at the end of `headroom` (in hexadecimal, as
/// chunked encoding wants it); returns where it starts.
fn put_chunk_size(headroom: &mut [u8], mut len: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut start = headroom.len() - 2;
    headroom[start..].copy_from_slice(b"\r\n");
    loop {
        start -= 1;
        headroom[start] = HEX[len & 0xf];
        len >>= 4;
        if len == 0 {
            return start;
        }
    }
}

/// Pingora's downstream session (HTTP/2), which frames and flushes each write itself.
pub(crate) struct SessionClient<'a> {
    pub(crate) session: &'a mut Session,
}

impl ClientSide for SessionClient<'_> {
    fn headroom(&self) -> usize {
        0
    }

    async fn send(&mut self, buf: BytesMut) -> Result<()> {
        self.session
            .write_response_body(Some(buf.freeze()), false)
            .await
            .map_err(|e| e.into_down())
    }

    async fn finish(&mut self) -> Result<()> {
        self.session
            .write_response_body(None::<Bytes>, true)
            .await
            .map_err(|e| e.into_down())
    }

    async fn gone(&mut self) -> Result<()> {
        match self
            .session
            .downstream_session
            .read_body_or_idle(true)
            .await
        {
            Err(e) => Err(e.into_down()),
            Ok(_) => Ok(()),
        }
    }

    fn body_bytes_sent(&self) -> usize {
        self.session.body_bytes_sent()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines_fit_the_headroom() {
        let line = |len| {
            let mut headroom = [0u8; CHUNK_HEADROOM];
            let start = put_chunk_size(&mut headroom, len);
            String::from_utf8(headroom[start..].to_vec()).unwrap()
        };
        assert_eq!(line(0), "0\r\n");
        assert_eq!(line(0x1a), "1A\r\n");
        assert_eq!(line(1 << 20), "100000\r\n");
        assert_eq!(line(usize::MAX), "FFFFFFFFFFFFFFFF\r\n");
    }
}
