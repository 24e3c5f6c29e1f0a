//! pingora-floor: the bare Pingora proxy of ssegate's benchmark (`bench/run.sh`, path `floor`).
//!
//! ssegate is built on Pingora, so part of what it costs is Pingora's own. This binary is the
//! least a Pingora proxy can be — one `ProxyHttp` whose `upstream_peer` returns a fixed
//! `HttpPeer`, no filters, no logging, Pingora's default settings, as in Pingora's own examples —
//! so that every benchmark report shows ssegate against nginx *and* against the engine it is
//! built on: what ssegate adds is ssegate minus this floor.
//!
//! ```text
//! pingora-floor --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 [--threads 1]
//!     [--tls-listen 127.0.0.1:8443 --cert cert.pem --key key.pem] [--work-dir /tmp]
//! ```
//!
//! SIGINT stops it at once, SIGTERM after a one-second grace period.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use async_trait::async_trait;
use clap::Parser;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

#[derive(Parser, Debug)]
#[command(name = "pingora-floor", version, about)]
struct Cli {
    /// Plain HTTP listener, e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: SocketAddr,
    /// The one upstream every request goes to (plain HTTP), e.g. 127.0.0.1:9000.
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads (Pingora's `threads`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Pingora's `work_stealing` (its default: true). ssegate's default is false; the benchmark
    /// keeps the floor at Pingora's defaults, and this flag measures the floor like for like.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    work_stealing: bool,
    /// TLS listener offering h2 and http/1.1 over ALPN (needs --cert and --key).
    #[arg(long, requires_all = ["cert", "key"])]
    tls_listen: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listener.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// PEM private key of the TLS listener.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Where the pid file and the upgrade socket go; both are named after the listen port, so
    /// instances on different ports do not clash.
    #[arg(long, default_value = "/tmp")]
    work_dir: PathBuf,
}

/// The proxy: every request to the same peer, nothing else.
struct Floor {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let in_work_dir = |name: &str| {
        cli.work_dir
            .join(format!("pingora-floor-{}{name}", cli.listen.port()))
            .to_string_lossy()
            .into_owned()
    };
    let conf = ServerConf {
        threads: cli.threads.max(1),
        work_stealing: cli.work_stealing,
        pid_file: in_work_dir(".pid"),
        upgrade_sock: in_work_dir("-upgrade.sock"),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let floor = Floor {
        upstream: cli.upstream,
    };
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, floor);
    proxy.add_tcp(&cli.listen.to_string());
    if let (Some(address), Some(cert), Some(key)) = (cli.tls_listen, &cli.cert, &cli.key) {
        let settings = TlsSettings::intermediate(&cert.to_string_lossy(), &key.to_string_lossy());
        let mut settings = match settings {
            Ok(settings) => settings,
            Err(e) => {
                eprintln!("pingora-floor: cannot load {}: {e}", cert.display());
                return ExitCode::FAILURE;
            }
        };
        settings.enable_h2();
        proxy.add_tls_with_settings(&address.to_string(), None, settings);
    }
    server.add_service(proxy);
    server.run_forever()
}
