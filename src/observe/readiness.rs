//! Whether this process still wants new connections: what `GET /healthz` on the metrics listener
//! answers, so that a balancer in front (HAProxy, a Kubernetes Service) stops sending new clients
//! before the listeners close.
//!
//! It turns from ready to draining once, at `SIGTERM`, and never back: the process is on its way
//! out. A graceful upgrade does not turn it: the new process takes over the same sockets, the
//! metrics listener's too, and answers for the instance from then on.

use std::sync::atomic::{AtomicBool, Ordering};

static DRAINING: AtomicBool = AtomicBool::new(false);

/// The process will stop accepting connections soon: `/healthz` answers 503 from now on.
pub(crate) fn draining_begins() {
    if !DRAINING.swap(true, Ordering::AcqRel) {
        log::info!("draining: /healthz answers 503 from now on");
    }
}

/// Whether [`draining_begins`] was called.
pub(crate) fn is_draining() -> bool {
    DRAINING.load(Ordering::Acquire)
}
