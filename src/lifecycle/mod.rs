//! The process around the requests: start-up reservations, in-place reloads, signals, the
//! drain of open streams when a graceful upgrade or shutdown begins, and what the service
//! manager is told about all of it.
//!
//! - [`descriptors`]: raises the open-file limit and reserves the descriptor table at start, so
//!   bursts of streams neither hit a limit of 1 024 nor stall;
//! - [`reload`]: SIGHUP, a new route table built from the config file and swapped in whole;
//! - [`signals`]: Pingora's shutdown signals, with SIGHUP routed to [`reload`];
//! - [`drain`]: the deadline by which open streams end with a `retry:` hint;
//! - [`notify`]: systemd's notify protocol: ready, reloading, stopping, the main PID after an
//!   upgrade, watchdog pings.

pub(crate) mod descriptors;
pub(crate) mod drain;
pub(crate) mod notify;
pub(crate) mod reload;
pub(crate) mod signals;
