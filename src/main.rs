//! ssegate: a reverse proxy on Pingora that streams Server-Sent Events unbuffered.
//!
//! `main` reads the command line and the config, then assembles the Pingora server: the proxy
//! service on the configured listeners, the Prometheus service, and background services for
//! health checks and the drain of streams at shutdown; SIGHUP reloads the routes in place.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use clap::Parser;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::background_service;

use ssegate::cli::Cli;
use ssegate::config::Config;
use ssegate::drain::DrainService;
use ssegate::gateway::Gateway;
use ssegate::proxy::Proxy;
use ssegate::relay::handover::ConnectionReturn;
use ssegate::reload::Reloader;
use ssegate::signals::SignalWatch;
use ssegate::upstreams::HealthCheckService;

/// jemalloc, with its background threads on: they hand pages that streams no longer use back to
/// the system within seconds. With glibc's allocator the memory of closed streams stays with the
/// process: after 5 000 streams had closed, RSS stayed at 2.7 times its idle size; with this one
/// it was back to 1.05 times within 30 s (README, "Benchmark").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    ssegate::signals::ignore_hangup_until_ready();
    let cli = Cli::parse();
    ssegate::access_log::init_logging();

    let config = match ssegate::config::load(&cli.conf) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            let n = e.problems.len();
            eprintln!(
                "ssegate: config {} rejected ({n} problem{})",
                e.file.display(),
                if n == 1 { "" } else { "s" }
            );
            return ExitCode::FAILURE;
        }
    };
    if cli.test {
        println!("{}", config.summary());
        return ExitCode::SUCCESS;
    }
    match build_server(&cli, config) {
        Ok((server, reloader)) => {
            server.run(RunArgs {
                shutdown_signal: Box::new(SignalWatch::new(reloader)),
            });
            ssegate::access_log::flush();
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("ssegate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Client connections read straight into Pingora's request buffer. Pingora's default is a
/// 64 KiB read buffer per connection, which a stream holds for hours while the client sends
/// nothing; without it a stream costs about 8 KiB less. Writes keep Pingora's one-segment
/// buffer, which joins a chunk's framing and data into one `write`.
const PLAIN_LISTENER_BUFFERS: L4BufferSettings = L4BufferSettings {
    read: Some(0),
    write: None,
};

/// TLS reads a record (at most 16 KiB) in small pieces; a record-sized buffer keeps that to one
/// `read` per record.
const TLS_LISTENER_BUFFERS: L4BufferSettings = L4BufferSettings {
    read: Some(16 * 1024),
    write: None,
};

fn build_server(cli: &Cli, mut config: Config) -> Result<(Server, Reloader), String> {
    let gateway = Arc::new(ArcSwap::from_pointee(Gateway::new(&config, None)));
    ssegate::metrics::set_info(&config.sha256);
    let reloader = Reloader::new(&config, gateway.clone());

    let server_conf = std::mem::take(&mut config.server);
    let mut server = Server::new_with_opt_and_conf(cli.pingora_opt(), server_conf);
    server.bootstrap();

    // The config always sets it (ssegate's default is 30 s); Pingora's own default is 300 s.
    let grace_period =
        Duration::from_secs(server.configuration.grace_period_seconds.unwrap_or(300));
    let (drain_service, drain) = DrainService::new(grace_period);
    let connections = Arc::new(ConnectionReturn::default());
    let proxy = Proxy::new(
        gateway.clone(),
        &server.configuration,
        drain,
        connections.clone(),
    );
    let mut proxy =
        ssegate::service::proxy_service(&server.configuration, proxy, connections, "ssegate proxy");
    for listener in &config.listeners {
        let address = listener.address.to_string();
        let endpoint = ListenerConfig::tcp(address.clone());
        match &listener.tls {
            None => proxy.add_listener(endpoint.l4_buffer(PLAIN_LISTENER_BUFFERS)),
            Some(tls) => {
                let mut settings = TlsSettings::intermediate(
                    &tls.cert.to_string_lossy(),
                    &tls.key.to_string_lossy(),
                )
                .map_err(|e| {
                    format!("listener {address}: cannot load TLS certificate or key: {e}")
                })?;
                settings.enable_h2();
                proxy.add_listener(endpoint.tls(settings).l4_buffer(TLS_LISTENER_BUFFERS));
            }
        }
    }
    let mut prometheus = ssegate::metrics_endpoint::service();
    prometheus.add_tcp(&config.metrics_address.to_string());

    server.add_service(proxy);
    server.add_service(prometheus);
    server.add_service(background_service("drain", drain_service));
    server.add_service(background_service(
        "access log",
        ssegate::access_log::Flusher,
    ));
    server.add_service(background_service(
        "descriptor table",
        ssegate::descriptors::ReserveTable,
    ));
    let health_checks = HealthCheckService::new(gateway.clone());
    server.add_service(background_service("health checks", health_checks));
    Ok((server, reloader))
}
