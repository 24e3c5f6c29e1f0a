//! Routing: which route a request takes, and the table of routes a request is served from.
//!
//! - [`router`]: host, path and method matching, most specific route first, and the request
//!   targets refused before any route is looked up;
//! - [`table`]: the [`RouteTable`], routes joined to their upstream pools, metrics and stream
//!   slots; swapped whole by a reload;
//! - [`client_streams`]: the streams each client holds on a route with a per-client cap.

mod client_streams;
mod router;
mod table;

pub(crate) use client_streams::ClientIdentity;
pub(crate) use router::refusal;
pub(crate) use table::RouteTable;
pub(crate) use table::{Refusal, RouteEntry, StreamSlot};
