//! The Prometheus endpoint on `metrics.address`: `GET /metrics` and nothing else.
//!
//! Pingora's own Prometheus app answers every path with the exposition; this one answers only
//! the path scrapers use, so the listener gives away nothing to a client that probes it.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::modules::http::compression::ResponseCompressionBuilder;
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;
use prometheus::{Encoder, TextEncoder};

/// The path Prometheus scrapes.
pub(crate) const METRICS_PATH: &str = "/metrics";

/// Serves the exposition of every metric in the default registry at [`METRICS_PATH`].
pub(crate) struct MetricsApp;

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.uri.path() != METRICS_PATH {
            return plain(
                StatusCode::NOT_FOUND,
                "not found; metrics are at /metrics\n",
            );
        }
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
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
