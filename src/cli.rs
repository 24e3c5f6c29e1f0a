//! The command line: Pingora's own flags, plus `--version`.

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "ssegate",
    version,
    about = "A reverse proxy on Pingora that streams Server-Sent Events unbuffered"
)]
pub(crate) struct Cli {
    /// The config file (YAML)
    #[arg(short = 'c', long = "conf", value_name = "FILE")]
    pub(crate) conf: PathBuf,

    /// Check the config file and exit: 0 and a summary if valid, every problem if not
    #[arg(short = 't', long = "test")]
    pub(crate) test: bool,

    /// Treat config warnings (settings that contradict each other) as errors, at start-up, with
    /// -t and on reload
    #[arg(long = "strict")]
    pub(crate) strict: bool,

    /// Run in the background (pid file from the config's `pingora.pid_file`)
    #[arg(short = 'd', long = "daemon")]
    pub(crate) daemon: bool,

    /// Graceful upgrade: take the listening sockets from the running instance
    #[arg(short = 'u', long = "upgrade")]
    pub(crate) upgrade: bool,
}

impl Cli {
    /// The options Pingora's server reads from its own command line.
    pub(crate) fn pingora_opt(&self) -> pingora_core::server::configuration::Opt {
        pingora_core::server::configuration::Opt {
            upgrade: self.upgrade,
            daemon: self.daemon,
            nocapture: false,
            test: false,
            conf: None,
        }
    }
}
