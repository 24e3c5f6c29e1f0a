//! ssegate as a library: the modules the `ssegate` binary assembles into a server.
//!
//! The binary (`main.rs`) is the only real consumer; the library exists so that fuzz targets and
//! benchmarks can reach the config loader and the SSE event scanner directly.

pub mod access_log;
pub mod cli;
pub mod config;
pub mod descriptors;
pub mod downstream;
pub mod drain;
pub mod events;
pub mod failure;
pub mod gateway;
pub mod headers;
pub mod metrics;
pub mod metrics_endpoint;
pub mod proxy;
pub mod relay;
pub mod reload;
pub mod report;
pub mod responses;
pub mod routing;
pub mod service;
pub mod signals;
pub mod streaming;
pub mod upstreams;
