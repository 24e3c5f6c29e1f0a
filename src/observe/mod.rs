//! What ssegate shows of itself: Prometheus metrics per route and per stream, the listener that
//! serves them, and the access log.

pub(crate) mod access_log;
pub(crate) mod endpoint;
pub(crate) mod metrics;
