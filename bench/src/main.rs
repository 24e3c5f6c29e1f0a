//! sse-load: the load tool of ssegate's benchmark (bench/run.sh) — an SSE upstream that stamps
//! every event with its send time, and an SSE client that measures per-event latency.
//!
//! ```text
//! sse-load upstream --listen 127.0.0.1:9100 --interval-ms 100 [--padding BYTES]
//! sse-load client --url http://127.0.0.1:8080/sse --streams 1000 --duration-secs 20 [--json]
//! sse-load client --url https://127.0.0.1:8443/sse --h2 --connections 10 --streams 1000
//! sse-load compare --input bench/results/raw-DATE.jsonl [--check]
//! ```

mod client;
mod compare;
mod http2;
mod report;
mod sse;
mod stats;
mod sys;
mod upstream;
mod url;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "sse-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve SSE streams (any path) and a plain response (/plain).
    Upstream(upstream::Args),
    /// Open SSE streams and measure event latency, losses and failures.
    Client(client::Args),
    /// Turn bench/run.sh's raw JSON lines into the Markdown result table.
    Compare(compare::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let nofile = sys::raise_nofile();
    match cli.command {
        Command::Upstream(args) => upstream::main(args, nofile),
        Command::Client(args) => client::main(args, nofile),
        Command::Compare(args) => compare::main(args),
    }
}
