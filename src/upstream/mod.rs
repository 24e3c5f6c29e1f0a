//! Upstreams: each configured upstream's pool of peers, how a request picks one of them, and
//! the active health checks that take peers out and put them back.

mod health;
mod pool;

pub(crate) use health::HealthCheckService;
pub(crate) use pool::{PeerStream, Tried, UpstreamPool, NO_HEALTHY_PEER};
