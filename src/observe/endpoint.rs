//! The listener on `metrics.address`: `GET /metrics` for Prometheus, `GET /healthz` for
//! balancers and probes, and nothing else.
//!
//! Pingora's own Prometheus app answers every path with the exposition; this one answers only
//! the paths it serves, so the listener gives away nothing to a client that probes it.
//! `/healthz` answers `200 ok` while the process takes new connections and `503 draining` once
//! it is stopping ([`super::readiness`]).

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::modules::http::compression::ResponseCompressionBuilder;
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;
use prometheus::{Encoder, TextEncoder};

use super::readiness;

/// The path Prometheus scrapes.
pub(crate) const METRICS_PATH: &str = "/metrics";

/// The path balancers and probes ask.
pub(crate) const HEALTH_PATH: &str = "/healthz";

/// Serves the exposition of every metric in the default registry at [`METRICS_PATH`].
pub(crate) struct MetricsApp;

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path();
        if path != METRICS_PATH && path != HEALTH_PATH {
            return plain(
                StatusCode::NOT_FOUND,
                "not found; metrics are at /metrics, health at /healthz\n",
            );
        }
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        }
        if path == HEALTH_PATH {
            return match readiness::is_draining() {
                false => plain(StatusCode::OK, "ok\n"),
                true => plain(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            };
        }
        let encoder = TextEncoder::new();
        let mut body = Vec::new();
        if let Err(e) = encoder.encode(&prometheus::gather(), &mut body) {
            log::error!("encoding metrics failed: {e}");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n");
        }
        response(StatusCode::OK, encoder.format_type(), body)
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Vec<u8>> {
    response(
        status,
        "text/plain; charset=utf-8",
        text.as_bytes().to_vec(),
    )
}

fn response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let length = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    if let Ok(value) = content_type.parse() {
        headers.insert(http::header::CONTENT_TYPE, value);
    }
    headers.insert(http::header::CONTENT_LENGTH, length.into());
    resp
}

/// The metrics service, ready for its listener; responses are gzipped for scrapers that ask.
pub(crate) fn service() -> Service<HttpServer<MetricsApp>> {
    let mut server = HttpServer::new_app(MetricsApp);
    server.add_module(ResponseCompressionBuilder::enable(7));
    Service::new("Prometheus metrics".to_string(), server)
}
