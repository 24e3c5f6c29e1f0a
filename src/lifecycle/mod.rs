//! The process around the requests: start-up reservations, in-place reloads, signals, and the
//! drain of open streams when a graceful upgrade or shutdown begins.
//!
//! - [`descriptors`]: reserves the descriptor table at start, so bursts of streams do not stall;
//! - [`reload`]: SIGHUP, a new route table built from the config file and swapped in whole;
//! - [`signals`]: Pingora's shutdown signals, with SIGHUP routed to [`reload`];
//! - [`drain`]: the deadline by which open streams end with a `retry:` hint.

pub(crate) mod descriptors;
pub(crate) mod drain;
pub(crate) mod reload;
pub(crate) mod signals;
