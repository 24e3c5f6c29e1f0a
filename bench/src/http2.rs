//! HTTP/2 over TLS for `sse-load client --h2`: many SSE streams share a few connections, as a
//! browser's EventSources share one connection per origin.
//!
//! TLS is OpenSSL (`tokio-openssl`), the library the proxies under test use too; HTTP/2 is the
//! `h2` crate. The certificate is not verified: the benchmark's is self-signed, and what is
//! measured is the proxy's cost, not the trust chain.

use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// Opens streams on one connection; cheap to clone.
pub type Sender = h2::client::SendRequest<Bytes>;

/// The flow-control windows the client advertises: Chrome's (6 MiB per stream, 15 MiB per
/// connection), so that the proxy never waits for a window update the way a browser's peer would
/// not.
const STREAM_WINDOW: u32 = 6 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 15 * 1024 * 1024;

/// What every connection shares: the TLS settings, offering only `h2` over ALPN.
pub struct Connector {
    tls: SslConnector,
}

impl Connector {
    pub fn new() -> Result<Self, String> {
        let tls = (|| {
            let mut builder = SslConnector::builder(SslMethod::tls_client())?;
            builder.set_verify(SslVerifyMode::NONE);
            builder.set_alpn_protos(b"\x02h2")?;
            Ok::<_, openssl::error::ErrorStack>(builder.build())
        })()
        .map_err(|e| format!("TLS setup: {e}"))?;
        Ok(Self { tls })
    }

    /// Connects to `addr`, shakes hands (TLS, then HTTP/2) and leaves the connection running
    /// in a task of its own; `host` is the server name sent for SNI unless it is an IP address.
    pub async fn connect(&self, addr: SocketAddr, host: &str) -> Result<Sender, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let ssl = self
            .tls
            .configure()
            .and_then(|c| {
                c.verify_hostname(false)
                    .use_server_name_indication(host.parse::<std::net::IpAddr>().is_err())
                    .into_ssl(host)
            })
            .map_err(|e| format!("TLS setup: {e}"))?;
        let mut tls = SslStream::new(ssl, tcp).map_err(|e| format!("TLS setup: {e}"))?;
        Pin::new(&mut tls)
            .connect()
            .await
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        if tls.ssl().selected_alpn_protocol() != Some(b"h2") {
            return Err(format!("{addr} did not select h2 over ALPN"));
        }
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
        // Ends when every sender and stream is gone, or the connection fails (the streams on it
        // then fail, and are counted).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}
