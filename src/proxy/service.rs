//! The proxy service: Pingora's HTTP proxy app for [`Proxy`], wrapped so that a client
//! connection the relay took over for a stream can come back to it for its next requests.
//!
//! Pingora's own `http_proxy_service` keeps its app out of reach inside the service, so this
//! builds the app itself, keeps an `Arc` of it, and gives the relay's [`ConnectionReturn`] a way
//! to serve a connection on it again, exactly as Pingora's listener serves a kept-alive
//! connection.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;

use super::relay::ConnectionReturn;
use super::Proxy;

/// Pingora's HTTP proxy app for [`Proxy`], reachable by the relay.
pub(crate) struct ProxyApp {
    proxy: Arc<HttpProxy<Proxy>>,
    connections: Arc<ConnectionReturn>,
}

/// Builds the proxy service; `connections` is the one the [`Proxy`]'s relay holds.
pub(crate) fn proxy_service(
    conf: &Arc<ServerConf>,
    proxy: Proxy,
    connections: Arc<ConnectionReturn>,
    name: &str,
) -> Service<ProxyApp> {
    let app = ProxyApp {
        proxy: Arc::new(pingora_proxy::http_proxy(conf, proxy)),
        connections,
    };
    Service::new(name.to_string(), app)
}

/// Serves a client connection on `app` from its next request until the client is done with it,
/// as Pingora's own HTTP/1.1 loop does.
async fn serve_connection(
    app: Weak<HttpProxy<Proxy>>,
    mut session: ServerSession,
    shutdown: ShutdownWatch,
) {
    let Some(app) = app.upgrade() else {
        return;
    };
    loop {
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        let Some(reused) = app.process_new_http(session, &shutdown).await else {
            return;
        };
        let (stream, settings) = reused.consume();
        session = ServerSession::new_http1(stream);
        if let Some(settings) = settings {
            settings.apply_to_session(&mut session);
        }
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
            let app = Arc::downgrade(&self.proxy);
            let shutdown = shutdown.clone();
            self.connections.set(move |session| {
                Box::pin(serve_connection(app.clone(), session, shutdown.clone()))
            });
        }
        ServerApp::process_new(&self.proxy, stream, shutdown).await
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await;
    }
}
