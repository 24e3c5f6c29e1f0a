//! What ssegate shows of itself: Prometheus metrics per route and per stream, its readiness for
//! new connections, the listener that serves both, and the access log.

pub(crate) mod access_log;
pub(crate) mod endpoint;
pub(crate) mod metrics;
pub(crate) mod readiness;
