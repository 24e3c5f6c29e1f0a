//! Load for `scripts/upgrade-bench.sh`: plain requests in a loop, and SSE clients that behave
//! like a browser's EventSource (reconnect after `retry:` with `Last-Event-ID`). After the given
//! number of seconds it prints failed requests, lost and repeated events, and the reconnect gaps.
//!
//! Usage: `cargo run --release --example upgrade_load -- ADDRESS SECONDS CLIENTS`
//! (ssegate routes `/clock` to the demo upstream as SSE and `/` as plain requests).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::client::{self, End, EventSource};

#[derive(Default)]
struct ClientReport {
    received: u64,
    lost: u64,
    repeated: u64,
    reconnects: u64,
    /// From the last event on one connection to the first event on the next.
    gaps: Vec<Duration>,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: upgrade_load ADDRESS SECONDS CLIENTS";
    let addr: SocketAddr = args.get(1).and_then(|a| a.parse().ok()).expect(usage);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).expect(usage);
    let clients: usize = args.get(3).and_then(|a| a.parse().ok()).expect(usage);
    let deadline = Instant::now() + Duration::from_secs(seconds);

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let plain = {
        let (ok, failed) = (ok.clone(), failed.clone());
        tokio::spawn(async move {
            while Instant::now() < deadline {
                match client::get_once(addr).await {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let sse: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(event_source(addr, deadline)))
        .collect();
    plain.await.expect("plain load");
    let mut total = ClientReport::default();
    for client in sse {
        let r = client.await.expect("sse client");
        total.received += r.received;
        total.lost += r.lost;
        total.repeated += r.repeated;
        total.reconnects += r.reconnects;
        total.gaps.extend(r.gaps);
    }
    total.gaps.sort();
    let pct = |p: f64| {
        total
            .gaps
            .get(((total.gaps.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "plain requests: {} ok, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    println!(
        "sse events: {} received, {} lost, {} repeated, {} reconnects",
        total.received, total.lost, total.repeated, total.reconnects
    );
    println!(
        "reconnect gap: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

async fn event_source(addr: SocketAddr, deadline: Instant) -> ClientReport {
    let mut report = ClientReport::default();
    // As EventSource: a second before reconnecting unless the server says otherwise.
    let mut source = EventSource::new(addr, "/clock?interval_ms=50", Duration::from_secs(1));
    let mut last_id: Option<u64> = None;
    let mut last_event_at: Option<Instant> = None;
    while Instant::now() < deadline {
        let mut first_on_connection = true;
        let connection = source
            .connect_once(
                || Instant::now() >= deadline,
                |event| {
                    let Ok(id) = event.id.parse::<u64>() else {
                        return;
                    };
                    match last_id {
                        Some(last) if id <= last => report.repeated += 1,
                        Some(last) => report.lost += id - last - 1,
                        None => report.lost += id - 1,
                    }
                    if first_on_connection {
                        if let (Some(at), true) = (last_event_at, last_id.is_some()) {
                            report.gaps.push(at.elapsed());
                        }
                        first_on_connection = false;
                    }
                    report.received += 1;
                    last_id = Some(last_id.map_or(id, |l| l.max(id)));
                    last_event_at = Some(Instant::now());
                },
            )
            .await;
        if Instant::now() >= deadline {
            break;
        }
        report.reconnects += 1;
        // As EventSource: wait the server's retry delay (or a second after an error).
        let wait = match connection.end {
            End::Ended => source.retry,
            End::Failed | End::Stopped => Duration::from_secs(1),
        };
        tokio::time::sleep(wait).await;
    }
    report
}
