//! What the client counts while it runs: counters shared by all streams and latency histograms
//! sharded per runtime thread, so that recording never waits on another thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, up to an hour, to 3 significant digits.
const MAX_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_max(MAX_US, 3).expect("valid histogram bounds")
}

thread_local! {
    /// This thread's histogram shard, set when a runtime thread starts.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Counters, one atomic each. `events`, `late`, `missing` and the histograms cover the measured
/// window only; the rest count the whole run.
#[derive(Default)]
pub struct Counters {
    /// Streams answered with 200.
    pub opened: AtomicU64,
    /// Streams open now.
    pub open_now: AtomicU64,
    pub connect_errors: AtomicU64,
    pub bad_status: AtomicU64,
    /// Streams that ended (EOF, read error, bad framing) before they were meant to.
    pub closed_early: AtomicU64,
    /// Reopens after a planned close (churn), and how many of them failed.
    pub reopens: AtomicU64,
    pub reopen_failures: AtomicU64,
    /// Events received at any time, warm-up included (for progress lines).
    pub events_all: AtomicU64,
    pub events: AtomicU64,
    /// Sequence numbers skipped within a stream.
    pub missing: AtomicU64,
    /// Sequence numbers seen again or going backwards.
    pub duplicates: AtomicU64,
    /// Events whose data had no send time or sequence number.
    pub unparsed: AtomicU64,
    /// Events later than 50 ms.
    pub late: AtomicU64,
}

/// Everything the streams share.
pub struct Stats {
    pub counters: Counters,
    measuring: AtomicBool,
    shards: Vec<Mutex<Histogram<u64>>>,
    next_shard: AtomicUsize,
    /// Time from sending a request to having its response head, in µs: one value per stream
    /// opened (warm-up included, since that is when most streams open), so one lock will do.
    heads: Mutex<Histogram<u64>>,
}

impl Stats {
    pub fn new(shards: usize) -> Self {
        Self {
            counters: Counters::default(),
            measuring: AtomicBool::new(false),
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
            next_shard: AtomicUsize::new(0),
            heads: Mutex::new(new_histogram()),
        }
    }

    /// Gives the calling thread its own shard; call it from each runtime thread as it starts.
    pub fn claim_shard(&self) {
        let shard = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        SHARD.with(|s| s.set(shard));
    }

    /// Whether events are in the measured window now.
    pub fn measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    pub fn set_measuring(&self, on: bool) {
        self.measuring.store(on, Ordering::Relaxed);
    }

    /// Records a batch of latencies (µs) in this thread's shard.
    pub fn record(&self, latencies_us: &[u64]) {
        if latencies_us.is_empty() {
            return;
        }
        let shard = SHARD.with(Cell::get) % self.shards.len();
        let mut histogram = lock(&self.shards[shard]);
        for &us in latencies_us {
            histogram.saturating_record(us);
        }
    }

    /// Records the time one stream took from sending its request to having its response head.
    pub fn record_head(&self, us: u64) {
        lock(&self.heads).saturating_record(us);
    }

    /// A copy of the response-head times recorded so far.
    pub fn heads(&self) -> Histogram<u64> {
        lock(&self.heads).clone()
    }

    /// Moves what the shards recorded since the last call into a new histogram.
    pub fn drain(&self) -> Histogram<u64> {
        let mut out = new_histogram();
        for shard in &self.shards {
            let mut shard = lock(shard);
            // Both have the same bounds, so adding cannot fail.
            let _ = out.add(&*shard);
            shard.reset();
        }
        out
    }
}

/// A poisoned lock only means a recording thread panicked; the histogram is still usable.
fn lock(m: &Mutex<Histogram<u64>>) -> MutexGuard<'_, Histogram<u64>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_drain_into_one_histogram() {
        let stats = Stats::new(2);
        stats.claim_shard();
        stats.record(&[100, 200, 300]);
        std::thread::scope(|s| {
            s.spawn(|| {
                stats.claim_shard();
                stats.record(&[400]);
            });
        });
        let h = stats.drain();
        assert_eq!(h.len(), 4);
        assert_eq!(h.max(), 400);
        assert_eq!(stats.drain().len(), 0);
        stats.record_head(1500);
        stats.record_head(2500);
        assert_eq!(stats.heads().len(), 2);
        assert_eq!(stats.drain().len(), 0, "head times are not event latencies");
    }
}
