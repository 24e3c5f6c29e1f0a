//! The client's results: the summary (a table for people, one JSON line for scripts) and the
//! periodic progress line.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Everything one client run measured. Latency figures are in microseconds over the measured
/// window (after warm-up).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Always "sse", so that a file can mix these lines with others.
    pub kind: &'static str,
    pub label: String,
    pub tags: BTreeMap<String, String>,
    pub url: String,
    /// "http/1.1" (a connection per stream) or "h2" (over TLS).
    pub protocol: &'static str,
    /// HTTP/2 connections the streams shared (0 for HTTP/1.1).
    pub h2_connections: u64,
    pub streams: u64,
    pub streams_opened: u64,
    /// connect_errors + bad_status + closed_early.
    pub streams_failed: u64,
    pub connect_errors: u64,
    pub bad_status: u64,
    pub closed_early: u64,
    pub reopens: u64,
    pub reopen_failures: u64,
    pub events: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub unparsed: u64,
    pub late_50ms: u64,
    pub late_50ms_share: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
    /// Time from sending a stream's request to having its response head, over every stream
    /// that got a 200 (warm-up included): how many, p50, p99 and max in microseconds.
    pub heads: u64,
    pub head_p50_us: u64,
    pub head_p99_us: u64,
    pub head_max_us: u64,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub events_per_sec: f64,
    /// Processes named with `--watch-pid`: CPU seconds used in the window, RSS before the first
    /// stream opened and at the end of the window.
    pub watched_pids: Vec<u32>,
    pub watched_cpu_secs: f64,
    pub watched_rss_idle_kib: u64,
    pub watched_rss_kib: u64,
    /// `--settle-secs`: how long after the streams closed the RSS was read again (0: not read).
    pub settle_secs: f64,
    pub watched_rss_after_close_kib: Option<u64>,
    /// The client's own CPU seconds in the window (1.0 per second = one core saturated).
    pub client_cpu_secs: f64,
}

/// The latency fields of a histogram: p50, p90, p99, p99.9, max, mean.
pub fn percentiles(h: &Histogram<u64>) -> (u64, u64, u64, u64, u64, f64) {
    if h.is_empty() {
        return (0, 0, 0, 0, 0, 0.0);
    }
    (
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        h.mean(),
    )
}

impl Summary {
    pub fn json(&self) -> String {
        // A struct of numbers and strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn table(&self) -> String {
        let ms = |us: u64| format!("{:.3} ms", us as f64 / 1000.0);
        let mut rows: Vec<(&str, String)> = vec![
            (
                "url",
                if self.h2_connections > 0 {
                    format!("{} (h2, {} connections)", self.url, self.h2_connections)
                } else {
                    self.url.clone()
                },
            ),
            (
                "streams",
                format!(
                    "{} requested, {} opened, {} failed (connect {}, status {}, closed early {})",
                    self.streams,
                    self.streams_opened,
                    self.streams_failed,
                    self.connect_errors,
                    self.bad_status,
                    self.closed_early
                ),
            ),
        ];
        if self.reopens > 0 {
            rows.push((
                "churn",
                format!("{} reopens, {} failed", self.reopens, self.reopen_failures),
            ));
        }
        rows.extend([
            (
                "window",
                format!(
                    "{:.1} s after {:.1} s warm-up",
                    self.duration_secs, self.warmup_secs
                ),
            ),
            (
                "events",
                format!("{} ({:.0}/s)", self.events, self.events_per_sec),
            ),
            (
                "missing / dup",
                format!(
                    "{} missing, {} duplicate, {} unparsed",
                    self.missing, self.duplicates, self.unparsed
                ),
            ),
            (
                "late > 50 ms",
                format!("{} ({:.4}%)", self.late_50ms, self.late_50ms_share * 100.0),
            ),
            ("latency p50", ms(self.p50_us)),
            ("latency p90", ms(self.p90_us)),
            ("latency p99", ms(self.p99_us)),
            ("latency p99.9", ms(self.p999_us)),
            ("latency max", ms(self.max_us)),
            ("latency mean", format!("{:.3} ms", self.mean_us / 1000.0)),
            (
                "response head",
                format!(
                    "p50 {}, p99 {}, max {} ({} streams)",
                    ms(self.head_p50_us),
                    ms(self.head_p99_us),
                    ms(self.head_max_us),
                    self.heads
                ),
            ),
            ("client cpu", format!("{:.2} s", self.client_cpu_secs)),
        ]);
        if !self.watched_pids.is_empty() {
            rows.push((
                "watched pids",
                format!(
                    "{:?}: {:.2} cpu s, rss {} KiB (idle {} KiB)",
                    self.watched_pids,
                    self.watched_cpu_secs,
                    self.watched_rss_kib,
                    self.watched_rss_idle_kib
                ),
            ));
        }
        if let Some(kib) = self.watched_rss_after_close_kib {
            rows.push((
                "after close",
                format!(
                    "rss {kib} KiB {:.0} s after the streams closed",
                    self.settle_secs
                ),
            ));
        }
        let mut out = format!("sse-load client {}\n", self.label);
        for (name, value) in rows {
            out.push_str(&format!("  {name:<14} {value}\n"));
        }
        out
    }
}

/// One progress line for `--report-every`.
pub struct Progress {
    pub elapsed_secs: f64,
    pub open: u64,
    pub events_per_sec: f64,
    pub failed: u64,
    pub reopens: u64,
    pub reopen_failures: u64,
    pub missing: u64,
}

impl Progress {
    pub fn line(&self, interval: &Histogram<u64>) -> String {
        let (p50, _, p99, _, max, _) = percentiles(interval);
        format!(
            "[{:7.1}s] open {} | {:.0} ev/s | p50 {:.2} ms p99 {:.2} ms max {:.2} ms | failed {} | reopens {} ({} failed) | missing {}",
            self.elapsed_secs,
            self.open,
            self.events_per_sec,
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
            max as f64 / 1000.0,
            self.failed,
            self.reopens,
            self.reopen_failures,
            self.missing,
        )
    }
}
