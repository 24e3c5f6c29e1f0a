//! Routing: which route a request takes, and the table of routes a request is served from.
//!
//! - [`router`]: host, path and method matching, most specific route first, and the request
//!   targets refused before any route is looked up;
//! - [`table`]: the [`RouteTable`], routes joined to their upstream pools, metrics and stream
//!   slots; swapped whole by a reload.

mod router;
mod table;

pub(crate) use router::refusal;
pub(crate) use table::RouteTable;
pub(crate) use table::{RouteEntry, StreamSlot};
