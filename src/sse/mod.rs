//! Server-Sent Events: where an event ends in a byte stream, and the policy and bookkeeping of one
//! stream (which responses are streams, how they are framed for the client, what their metrics
//! count).

mod scanner;
pub(crate) mod stream;

pub use scanner::EventScanner;
