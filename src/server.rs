//! Start-up: reads the command line and the config, then assembles the Pingora server: the proxy
//! service on the configured listeners, the Prometheus service, and background services for
//! health checks, the drain of streams at shutdown, the access log, the descriptor table and the
//! service manager's notifications; SIGHUP reloads the routes in place.

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

use crate::cli::Cli;
use crate::config::Config;
use crate::lifecycle::descriptors::ReserveTable;
use crate::lifecycle::drain::DrainService;
use crate::lifecycle::notify::NotifyService;
use crate::lifecycle::reload::Reloader;
use crate::lifecycle::signals::{self, SignalWatch};
use crate::observe::{access_log, endpoint, metrics};
use crate::proxy::relay::ConnectionReturn;
use crate::proxy::{self, Proxy};
use crate::routing::RouteTable;
use crate::upstream::HealthCheckService;

/// Runs ssegate as its command line says: checks the config (`-t`) or serves until shut down.
pub fn run() -> ExitCode {
    signals::ignore_hangup_until_ready();
    let cli = Cli::parse();
    access_log::init_logging();

    let loaded = if cli.test {
        // `-t` prints warnings on stderr rather than logging them.
        crate::config::load(&cli.conf).and_then(|config| match cli.strict {
            true => crate::config::refuse_warnings(config),
            false => Ok(config),
        })
    } else {
        crate::config::load_checked(&cli.conf, cli.strict)
    };
    let config = match loaded {
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
        if !config.warnings.is_empty() {
            eprintln!("{}", crate::config::Warnings(&config));
        }
        println!("{}", config.summary());
        return ExitCode::SUCCESS;
    }
    // An upgrade takes its listening sockets from the running process, which holds them.
    if !cli.upgrade {
        if let Err(message) = addresses_free(&config) {
            eprintln!("ssegate: {message}");
            return ExitCode::FAILURE;
        }
    }
    let unready_delay = config.unready_delay;
    match build_server(&cli, config) {
        Ok((server, reloader)) => {
            server.run(RunArgs {
                shutdown_signal: Box::new(SignalWatch::new(reloader, unready_delay)),
            });
            access_log::flush();
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("ssegate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Checks that every address ssegate listens on can be bound, by binding each one and letting it
/// go. Pingora would otherwise retry a busy address once a second for half a minute, with a
/// warning each time, before it gives up; a second `ssegate` started by mistake should say what
/// is wrong at once. (Rust's listener sets `SO_REUSEADDR`, as Pingora's does, so a port with
/// connections left in `TIME_WAIT` passes here as it would there.)
fn addresses_free(config: &Config) -> Result<(), String> {
    let addresses = config
        .listeners
        .iter()
        .map(|l| l.address)
        .chain([config.metrics_address]);
    for address in addresses {
        if let Err(e) = std::net::TcpListener::bind(address) {
            let reason = match e.kind() {
                std::io::ErrorKind::AddrInUse => "address in use".to_string(),
                _ => e.to_string(),
            };
            return Err(format!("cannot listen on {address}: {reason}"));
        }
    }
    Ok(())
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
    let routes = Arc::new(ArcSwap::from_pointee(RouteTable::new(&config, None)));
    metrics::set_info(&config.sha256);
    let reloader = Reloader::new(&config, routes.clone(), cli.strict);

    let server_conf = std::mem::take(&mut config.server);
    let mut server = Server::new_with_opt_and_conf(cli.pingora_opt(), server_conf);
    server.bootstrap();

    // The config always sets it (ssegate's default is 30 s); Pingora's own default is 300 s.
    let grace_period =
        Duration::from_secs(server.configuration.grace_period_seconds.unwrap_or(300));
    let (drain_service, drain) = DrainService::new(grace_period);
    let connections = Arc::new(ConnectionReturn::default());
    let proxy = Proxy::new(
        routes.clone(),
        &server.configuration,
        drain,
        connections.clone(),
    );
    let mut proxy =
        proxy::proxy_service(&server.configuration, proxy, connections, "ssegate proxy");
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
    let mut prometheus = endpoint::service();
    prometheus.add_tcp(&config.metrics_address.to_string());

    server.add_service(proxy);
    server.add_service(prometheus);
    server.add_service(background_service("drain", drain_service));
    server.add_service(background_service("access log", access_log::Flusher));
    server.add_service(background_service("descriptor table", ReserveTable));
    let addresses = config
        .listeners
        .iter()
        .map(|l| l.address)
        .chain([config.metrics_address])
        .collect();
    server.add_service(background_service(
        "sd_notify",
        NotifyService::new(addresses),
    ));
    let pools = routes.clone();
    let health_checks = HealthCheckService::new(Box::new(move || pools.load().pools().to_vec()));
    server.add_service(background_service("health checks", health_checks));
    Ok((server, reloader))
}
