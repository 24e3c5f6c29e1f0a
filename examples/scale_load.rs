//! Load for `scripts/scale-out.sh`: SSE clients that behave like a browser's `EventSource`
//! (reconnect after `retry:` with `Last-Event-ID`) and plain requests in a loop, all through one
//! address: the balancer in front of several ssegate instances. Each ssegate instance proxies to
//! an upstream address of its own, and the demo upstream names its address in every event, so
//! the load knows which instance each stream is on.
//!
//! The script says what it is doing by writing step names to the load's stdin, one per line;
//! every figure is kept per step. End of input ends the load.
//!
//! Usage: `scale_load ADDRESS CLIENTS INSTANCE=UPSTREAM...`
//! (for example `scale_load 127.0.0.1:18500 120 a=127.0.0.1:18510 b=127.0.0.1:18520`).
//!
//! Output on stdout:
//! - every second, `timeline SECONDS STEP N...`: open streams per instance (in the order given),
//!   then the clients between connections;
//! - at the end, one Markdown table row per step (the header is printed first).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use testkit::client::{self, End, EventSource};

/// Events per second per stream: `/clock?interval_ms=100`.
const CLOCK_PATH: &str = "/clock?interval_ms=100";
/// No slot: the client is between connections.
const NONE: usize = usize::MAX;

/// What happened during one step of the script.
struct Step {
    name: String,
    started: Instant,
    plain_ok: u64,
    plain_failed: u64,
    received: u64,
    lost: u64,
    repeated: u64,
    /// Per instance: streams it ended with `retry:` (drain or `max_lifetime`).
    ended: Vec<u64>,
    /// Per instance: streams that broke off (the instance died under them).
    broken: Vec<u64>,
    /// Connection attempts that got no stream at all.
    refused: u64,
    /// From a stream's last event to the first event of its next connection, after a clean end.
    gaps: Vec<Duration>,
    /// The same, after a stream broke off.
    broken_gaps: Vec<Duration>,
}

impl Step {
    fn new(name: &str, instances: usize) -> Step {
        Step {
            name: name.to_string(),
            started: Instant::now(),
            plain_ok: 0,
            plain_failed: 0,
            received: 0,
            lost: 0,
            repeated: 0,
            ended: vec![0; instances],
            broken: vec![0; instances],
            refused: 0,
            gaps: Vec::new(),
            broken_gaps: Vec::new(),
        }
    }
}

struct Load {
    addr: SocketAddr,
    /// Instance names, and the upstream address each one's streams come from.
    instances: Vec<(String, String)>,
    /// Per client: the instance its stream is on, or [`NONE`].
    on: Vec<AtomicUsize>,
    step: Mutex<Step>,
    stop: AtomicBool,
    started: Instant,
}

impl Load {
    fn step(&self) -> MutexGuard<'_, Step> {
        self.step
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The instance whose upstream sent this event's data.
    fn instance_of(&self, data: &str) -> usize {
        self.instances
            .iter()
            .position(|(_, upstream)| data.contains(&format!("\"upstream\": \"{upstream}\"")))
            .unwrap_or(NONE)
    }

    /// Open streams per instance, then clients between connections.
    fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.instances.len() + 1];
        for on in &self.on {
            let i = on.load(Ordering::Relaxed);
            counts[i.min(self.instances.len())] += 1;
        }
        counts
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: scale_load ADDRESS CLIENTS INSTANCE=UPSTREAM...";
    let addr: SocketAddr = args.get(1).and_then(|a| a.parse().ok()).expect(usage);
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).expect(usage);
    let instances: Vec<(String, String)> = args[3..]
        .iter()
        .map(|a| a.split_once('=').expect(usage))
        .map(|(name, upstream)| (name.to_string(), upstream.to_string()))
        .collect();
    assert!(!instances.is_empty(), "{usage}");
    let load = Arc::new(Load {
        addr,
        on: (0..clients).map(|_| AtomicUsize::new(NONE)).collect(),
        step: Mutex::new(Step::new("start", instances.len())),
        instances,
        stop: AtomicBool::new(false),
        started: Instant::now(),
    });

    let plain = tokio::spawn(plain_loop(load.clone()));
    let streams: Vec<_> = (0..clients)
        .map(|client| tokio::spawn(event_source(load.clone(), client)))
        .collect();
    let timeline = tokio::spawn(timeline(load.clone()));

    // Steps from stdin; each line closes the step before it.
    let steps = {
        let load = load.clone();
        tokio::task::spawn_blocking(move || {
            let mut done = Vec::new();
            for line in std::io::stdin().lines().map_while(Result::ok) {
                let next = Step::new(line.trim(), load.instances.len());
                let counts = load.counts();
                done.push((std::mem::replace(&mut *load.step(), next), counts));
            }
            done
        })
    };
    let mut done = steps.await.expect("steps from stdin");
    load.stop.store(true, Ordering::Relaxed);
    plain.await.expect("plain load");
    for client in streams {
        client.await.expect("sse client");
    }
    timeline.abort();
    let counts = load.counts();
    let last = std::mem::replace(&mut *load.step(), Step::new("", 0));
    done.push((last, counts));
    print_table(&load, &done);
}

/// Prints the open streams per instance every second.
async fn timeline(load: Arc<Load>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let counts = load.counts();
        let step = load.step().name.clone();
        let counts: Vec<String> = counts.iter().map(usize::to_string).collect();
        println!(
            "timeline {:.0} {step} {}",
            load.started.elapsed().as_secs_f64(),
            counts.join(" ")
        );
    }
}

async fn plain_loop(load: Arc<Load>) {
    while !load.stopped() {
        let answer =
            tokio::time::timeout(Duration::from_secs(5), client::get_once(load.addr)).await;
        match answer {
            Ok(Ok(200)) => load.step().plain_ok += 1,
            _ => load.step().plain_failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One client: connects, reads, reconnects as `EventSource` does, until the load stops.
async fn event_source(load: Arc<Load>, client: usize) {
    let mut source = EventSource::new(load.addr, CLOCK_PATH, Duration::from_secs(1));
    let mut last_id: Option<u64> = None;
    let mut last_event_at: Option<Instant> = None;
    // How the previous connection ended: whether it broke off.
    let mut previous_broke = false;
    while !load.stopped() {
        let mut first_on_connection = true;
        let mut instance = NONE;
        let connection = source
            .connect_once(
                || load.stopped(),
                |event| {
                    let Ok(id) = event.id.parse::<u64>() else {
                        return;
                    };
                    let mut step = load.step();
                    match last_id {
                        Some(last) if id <= last => step.repeated += 1,
                        Some(last) => step.lost += id - last - 1,
                        None => step.lost += id - 1,
                    }
                    step.received += 1;
                    if first_on_connection {
                        first_on_connection = false;
                        instance = load.instance_of(&event.data);
                        load.on[client].store(instance, Ordering::Relaxed);
                        if let Some(at) = last_event_at {
                            let gaps = match previous_broke {
                                true => &mut step.broken_gaps,
                                false => &mut step.gaps,
                            };
                            gaps.push(at.elapsed());
                        }
                    }
                    last_id = Some(last_id.map_or(id, |l| l.max(id)));
                    last_event_at = Some(Instant::now());
                },
            )
            .await;
        load.on[client].store(NONE, Ordering::Relaxed);
        if connection.end == End::Stopped {
            break;
        }
        match (instance, connection.end) {
            (NONE, _) => load.step().refused += 1,
            (i, End::Ended) => load.step().ended[i] += 1,
            (i, _) => load.step().broken[i] += 1,
        }
        // A connection that got no event leaves the last one's kind in place: the gap that
        // counts runs from the last event to the next, however many attempts lie between.
        if instance != NONE {
            previous_broke = connection.end != End::Ended;
        }
        // As EventSource: the server's retry delay after a clean end, else a second.
        let wait = match connection.end {
            End::Ended => source.retry,
            End::Failed | End::Stopped => Duration::from_secs(1),
        };
        tokio::time::sleep(wait).await;
    }
}

fn print_table(load: &Load, steps: &[(Step, Vec<usize>)]) {
    let names: Vec<&str> = load.instances.iter().map(|(n, _)| n.as_str()).collect();
    println!(
        "| step | seconds | plain ok | plain failed | events | lost | repeated | ended with retry | broke off | no stream | gap p50 / max (ms) | gap after a break, max (ms) | streams at the end ({}) | spread from even (%) |",
        names.join(" / ")
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let per_instance = |values: &[u64]| {
        let cells: Vec<String> = names
            .iter()
            .zip(values)
            .filter(|(_, v)| **v > 0)
            .map(|(n, v)| format!("{n}:{v}"))
            .collect();
        if cells.is_empty() {
            "0".to_string()
        } else {
            cells.join(" ")
        }
    };
    for (i, (step, counts)) in steps.iter().enumerate() {
        let seconds = match steps.get(i + 1) {
            Some((next, _)) => next.started - step.started,
            None => step.started.elapsed(),
        };
        let mut gaps = step.gaps.clone();
        gaps.sort();
        let ms = |d: Option<&Duration>| d.map_or("-".to_string(), |d| d.as_millis().to_string());
        let open = &counts[..names.len()];
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {:.0} |",
            step.name,
            seconds.as_secs_f64(),
            step.plain_ok,
            step.plain_failed,
            step.received,
            step.lost,
            step.repeated,
            per_instance(&step.ended),
            per_instance(&step.broken),
            step.refused,
            ms(gaps.get(gaps.len() / 2)),
            ms(gaps.last()),
            ms(step.broken_gaps.iter().max()),
            open.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" / "),
            spread_from_even(open),
        );
    }
}

/// How far the most uneven instance is from an even share of the open streams, in percent.
fn spread_from_even(open: &[usize]) -> f64 {
    let total: usize = open.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let even = total as f64 / open.len() as f64;
    open.iter()
        .map(|&n| (n as f64 - even).abs() / even * 100.0)
        .fold(0.0, f64::max)
}
