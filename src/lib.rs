//! ssegate: a reverse proxy on Pingora built for Server-Sent Events.
//!
//! Routes come from one YAML file. Routes marked `sse` are carried by ssegate's own relay, event by
//! event, with heartbeats, idle timeouts and a drain that hands streams over with `retry:`; every
//! other route goes through Pingora's proxy loop. Per-route stream metrics go to Prometheus.
//!
//! # Layout
//! Each part only uses the parts listed above it.
//!
//! | module | what it is |
//! | --- | --- |
//! | [`config`] | the YAML front-end: raw file types, `FILE:LINE:COL` errors, and the validated model everything else reads |
//! | `observe` | metrics per route and per stream, the `/metrics` listener, the access log |
//! | `upstream` | each upstream's pool of peers: balancing, the one peer-selection and failover rule, health checks |
//! | `routing` | route matching, and the route table a request is served from |
//! | [`sse`] | event boundaries, and what makes a response a stream and what it counts |
//! | `lifecycle` | descriptor reservation, SIGHUP reload, signals, the drain of streams at shutdown |
//! | [`proxy`] | the `ProxyHttp` phases, the relay for marked routes, errors, responses, the per-request report |
//! | `server` | start-up: [`run`] assembles Pingora's server from the config |
//!
//! The binary (`main.rs`) sets the allocator and calls [`run`]. The rest of the crate is
//! `pub(crate)`; what is public is what the fuzz targets (`fuzz/`) and the property tests
//! (`tests/properties.rs`) drive directly: the config loader, the event scanner and the relay's
//! body decoder.
//!
//! These docs are for the people who work on ssegate, and most of the crate is private:
//! `cargo doc --no-deps --document-private-items --open` shows every module.

// Module docs link to their private children; with `--document-private-items` every link resolves.
#![allow(rustdoc::private_intra_doc_links)]

mod cli;
pub mod config;
mod lifecycle;
mod observe;
pub mod proxy;
mod routing;
mod server;
pub mod sse;
mod upstream;

pub use server::run;
