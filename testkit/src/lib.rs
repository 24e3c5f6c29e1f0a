//! The one copy of the HTTP/1.1 and Server-Sent Events pieces that ssegate's tests, examples and
//! benchmark need, so that each is written, fixed and tested once:
//!
//! - [`http`]: message heads (on `httparse`), chunked encoding and decoding, body framing;
//! - [`sse`]: an incremental event-stream parser, as a browser reads a stream;
//! - [`upstream`]: the wire side of an SSE upstream (requests in, event streams out);
//! - [`client`]: an HTTP/1.1 client that shows each body piece as it arrives, and an
//!   EventSource-like client that reconnects with `Last-Event-ID` after `retry:`;
//! - [`poll`]: waiting for observable state with a deadline instead of a fixed sleep.

pub mod client;
pub mod http;
pub mod poll;
pub mod sse;
pub mod upstream;

pub use poll::{eventually, eventually_async, poll};
