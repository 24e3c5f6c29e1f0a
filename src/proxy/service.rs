//! The proxy service: Pingora's HTTP proxy app for [`Proxy`], with ssegate's own loop for
//! HTTP/1.1 client connections.
//!
//! Pingora's own `http_proxy_service` keeps its app out of reach inside the service, so this
//! builds the app itself and serves each HTTP/1.1 connection in [`serve_http1`]: the loop
//! Pingora's listener runs (one request after another while the client keeps the connection
//! alive), with two additions:
//! - each request head is read under a total deadline, and a head Pingora refuses is counted
//!   and logged ([`super::request_head`]);
//! - a connection the relay took over for a stream comes back to the same loop for its next
//!   requests ([`ConnectionReturn`]).
//!
//! HTTP/2 connections go to Pingora's app as they are.

use std::sync::{Arc, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;

use super::client_limits::KEEPALIVE_TIMEOUT_SECS;
use super::relay::ConnectionReturn;
use super::request_head::{self, HeadStart, WatchedStream};
use super::Proxy;
use crate::routing::RouteTable;

/// Pingora's HTTP proxy app for [`Proxy`], reachable by the relay.
pub(crate) struct ProxyApp {
    http: Arc<Http1>,
    connections: Arc<ConnectionReturn>,
}

/// What the HTTP/1.1 loop serves connections with.
struct Http1 {
    proxy: Arc<HttpProxy<Proxy>>,
    /// For the `unmatched` metrics of refused request heads.
    routes: Arc<ArcSwap<RouteTable>>,
}

/// Builds the proxy service; `connections` is the one the [`Proxy`]'s relay holds.
pub(crate) fn proxy_service(
    conf: &Arc<ServerConf>,
    proxy: Proxy,
    connections: Arc<ConnectionReturn>,
    name: &str,
) -> Service<ProxyApp> {
    let routes = proxy.routes.clone();
    let app = ProxyApp {
        http: Arc::new(Http1 {
            proxy: Arc::new(pingora_proxy::http_proxy(conf, proxy)),
            routes,
        }),
        connections,
    };
    Service::new(name.to_string(), app)
}

/// Serves an HTTP/1.1 client connection from its next request until the client is done with
/// it. `start` is where the first request's head deadline counts from.
async fn serve_http1(
    http: &Http1,
    mut session: ServerSession,
    shutdown: &ShutdownWatch,
    mut start: HeadStart,
) {
    loop {
        if *shutdown.borrow() {
            // Stop the client from reusing the connection: this service is shutting down.
            session.set_keepalive(None);
        }
        let watch = request_head::watch_of(&session).cloned();
        let handle = http.proxy.process_new_http(session, shutdown);
        let reused = match watch {
            Some(watch) => {
                let unmatched = || http.routes.load().unmatched.clone();
                request_head::serve_request(watch, start, unmatched, handle).await
            }
            // Only sessions made in `ProxyApp::process_new` are watched; any other is served
            // as Pingora serves it.
            None => handle.await,
        };
        let Some(reused) = reused else {
            return;
        };
        let (stream, settings) = reused.consume();
        session = ServerSession::new_http1(stream);
        if let Some(settings) = settings {
            settings.apply_to_session(&mut session);
        }
        start = HeadStart::FirstByte;
    }
}

#[async_trait]
impl ServerApp for ProxyApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Every connection of the service gets the same shutdown watch; the first one lends it
        // to the way back.
        if !self.connections.is_set() {
            let http = Arc::downgrade(&self.http);
            let shutdown = shutdown.clone();
            self.connections.set(move |session| {
                Box::pin(serve_returned(http.clone(), session, shutdown.clone()))
            });
        }
        // HTTP/2 (by ALPN on TLS; ssegate does not offer cleartext HTTP/2) is Pingora's.
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.http.proxy, stream, shutdown).await;
        }
        let accepted = Instant::now();
        let mut session = ServerSession::new_http1(WatchedStream::wrap(stream));
        // As Pingora's own loop starts a connection.
        let keepalive = (!*shutdown.borrow()).then_some(KEEPALIVE_TIMEOUT_SECS);
        session.set_keepalive(keepalive);
        let reuses = self
            .http
            .proxy
            .server_options
            .as_ref()
            .and_then(|o| o.keepalive_request_limit);
        session.set_keepalive_reuses_remaining(reuses);
        serve_http1(&self.http, session, shutdown, HeadStart::Accepted(accepted)).await;
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.http.proxy).await;
    }
}

/// Serves a connection the relay gives back after a stream, as a kept-alive connection.
async fn serve_returned(http: Weak<Http1>, session: ServerSession, shutdown: ShutdownWatch) {
    if let Some(http) = http.upgrade() {
        serve_http1(&http, session, &shutdown, HeadStart::FirstByte).await;
    }
}
