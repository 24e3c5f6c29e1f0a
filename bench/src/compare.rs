//! `sse-load compare`: turns the raw JSON lines of `bench/run.sh` (client summaries and wrk
//! results, each tagged with its path and scenario) into the Markdown result table: medians per
//! path, the latency a proxy adds over the direct path, time to the response head, proxy CPU per
//! 1 000 events, idle RSS, RSS per open stream and RSS after the streams closed, the largest
//! stream count with p99 under a limit, and the ratios of ssegate to nginx, to the bare Pingora
//! floor and to an older ssegate build (`base`) when those were measured.
//! `--check` fails when a path was not measured, delivered no events, lost events, or streams or
//! requests failed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Deserialize;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// JSON lines: `sse-load client --json` summaries and `{"kind":"wrk",...}` lines.
    #[arg(long)]
    input: PathBuf,
    /// Heading of the Markdown.
    #[arg(
        long,
        default_value = "ssegate vs nginx and bare Pingora: SSE benchmark"
    )]
    title: String,
    /// A line for the notes under the heading (repeatable).
    #[arg(long = "note")]
    notes: Vec<String>,
    /// Exit non-zero if a path was not measured or delivered no events, events went missing, or
    /// any stream or request failed.
    #[arg(long)]
    check: bool,
    /// The paths that were meant to run (comma-separated); `--check` fails for one with no SSE
    /// run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,nginx,floor,ssegate"
    )]
    paths: Vec<String>,
    /// The p99 limit of the capacity table, in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    p99_limit_ms: f64,
}

/// The fields of a client summary that the table uses.
#[derive(Debug, Deserialize)]
struct SseRun {
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    h2_connections: u64,
    streams: u64,
    streams_opened: u64,
    streams_failed: u64,
    events: u64,
    missing: u64,
    late_50ms_share: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    #[serde(default)]
    heads: u64,
    #[serde(default)]
    head_p50_us: u64,
    #[serde(default)]
    head_p99_us: u64,
    events_per_sec: f64,
    #[serde(default)]
    duration_secs: f64,
    #[serde(default)]
    watched_cpu_secs: f64,
    #[serde(default)]
    watched_rss_kib: u64,
    #[serde(default)]
    watched_rss_idle_kib: u64,
    #[serde(default)]
    settle_secs: f64,
    #[serde(default)]
    watched_rss_after_close_kib: Option<u64>,
}

impl SseRun {
    fn h2(&self) -> bool {
        self.protocol == "h2"
    }
}

/// One wrk run, as bench/run.sh writes it.
#[derive(Debug, Deserialize)]
struct WrkRun {
    #[serde(default)]
    tags: BTreeMap<String, String>,
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    errors: u64,
    non_2xx: u64,
    /// CPU seconds of the proxy processes during the run (0 for direct).
    #[serde(default)]
    proxy_cpu_secs: f64,
}

/// Every path bench/run.sh knows, in the order of the table's columns: the client straight to
/// the upstream, nginx, bare Pingora, ssegate, and an older ssegate build.
const PATHS: [&str; 5] = ["direct", "nginx", "floor", "ssegate", "base"];
/// The ratio columns: ssegate's figure over each of these paths' figure.
const RATIO_TO: [&str; 3] = ["nginx", "floor", "base"];

fn tag<'a>(tags: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    tags.get(key).map_or("", String::as_str)
}

pub fn main(args: Args) -> ExitCode {
    let text = match std::fs::read_to_string(&args.input) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("sse-load compare: {}: {e}", args.input.display());
            return ExitCode::FAILURE;
        }
    };
    let (sse, wrk) = parse(&text);
    print!("{}", markdown(&args, &sse, &wrk));
    if args.check {
        let problems = check(&args.paths, &sse, &wrk);
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("sse-load compare: check failed: {p}");
            }
            return ExitCode::FAILURE;
        }
        eprintln!("sse-load compare: check passed");
    }
    ExitCode::SUCCESS
}

fn parse(text: &str) -> (Vec<SseRun>, Vec<WrkRun>) {
    let (mut sse, mut wrk) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(value) => value,
            Err(e) => {
                eprintln!("sse-load compare: line {}: not JSON: {e}", n + 1);
                continue;
            }
        };
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("sse");
        let parsed = match kind {
            "wrk" => serde_json::from_value(value).map(|r| wrk.push(r)),
            _ => serde_json::from_value(value).map(|r| sse.push(r)),
        };
        if let Err(e) = parsed {
            eprintln!("sse-load compare: line {}: {e}", n + 1);
        }
    }
    (sse, wrk)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// The table's value columns: the paths measured, in [`PATHS`] order, and the ratios of ssegate
/// to each other path measured in [`RATIO_TO`].
struct Columns {
    paths: Vec<&'static str>,
    /// (column of ssegate, column of the other path, the other path's name)
    ratios: Vec<(usize, usize, &'static str)>,
}

impl Columns {
    fn new(sse: &[SseRun], wrk: &[WrkRun]) -> Self {
        let measured = |p: &str| {
            sse.iter().any(|r| tag(&r.tags, "path") == p)
                || wrk.iter().any(|r| tag(&r.tags, "path") == p)
        };
        let paths: Vec<&'static str> = PATHS.into_iter().filter(|p| measured(p)).collect();
        let column = |p: &str| paths.iter().position(|c| *c == p);
        let ratios = match column("ssegate") {
            Some(s) => RATIO_TO
                .into_iter()
                .filter_map(|other| column(other).map(|o| (s, o, other)))
                .collect(),
            None => Vec::new(),
        };
        Self { paths, ratios }
    }

    fn column(&self, path: &str) -> Option<usize> {
        self.paths.iter().position(|p| *p == path)
    }

    /// The header and alignment lines, after `first` and `second` leading columns.
    fn header(&self, first: &str, second: &str) -> String {
        let mut names = vec![first.to_string(), second.to_string()];
        names.extend(self.paths.iter().map(|p| p.to_string()));
        names.extend(self.ratios.iter().map(|(_, _, o)| format!("ssegate/{o}")));
        let align: Vec<&str> = (0..names.len())
            .map(|i| if i < 2 { "---" } else { "---:" })
            .collect();
        format!("| {} |\n| {} |\n", names.join(" | "), align.join(" | "))
    }
}

/// A table row: a figure for each path column.
struct Row {
    name: String,
    values: Vec<Option<f64>>,
    decimals: usize,
}

impl Row {
    fn new(name: impl Into<String>, values: Vec<Option<f64>>, decimals: usize) -> Self {
        Self {
            name: name.into(),
            values,
            decimals,
        }
    }

    fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    fn markdown(&self, first: &str, columns: &Columns) -> String {
        let mut cells = vec![first.to_string(), self.name.clone()];
        cells.extend(
            self.values
                .iter()
                .map(|v| v.map_or("–".to_string(), |v| format!("{v:.*}", self.decimals))),
        );
        cells.extend(columns.ratios.iter().map(|&(s, o, _)| {
            match (
                self.values.get(s).copied().flatten(),
                self.values.get(o).copied().flatten(),
            ) {
                // A ratio of a negative figure (an *added* latency below the noise) means nothing.
                (Some(s), Some(o)) if s >= 0.0 && o > f64::EPSILON => format!("{:.2}", s / o),
                _ => "–".to_string(),
            }
        }));
        format!("| {} |\n", cells.join(" | "))
    }
}

/// Rows with at least one figure, under a label given to the first of them.
fn push_rows(out: &mut String, label: &str, rows: &[Row], columns: &Columns) {
    for (i, row) in rows.iter().filter(|r| !r.is_empty()).enumerate() {
        out.push_str(&row.markdown(if i == 0 { label } else { "" }, columns));
    }
}

fn markdown(args: &Args, sse: &[SseRun], wrk: &[WrkRun]) -> String {
    let columns = Columns::new(sse, wrk);
    let mut out = format!("# {}\n\n", args.title);
    for note in &args.notes {
        out.push_str(&format!("- {note}\n"));
    }
    out.push('\n');
    out.push_str(&stream_table(sse, &columns));
    out.push_str(&capacity_table(sse, &columns, args.p99_limit_ms));
    out.push_str(&wrk_table(wrk, &columns));
    out
}

/// Scenario key: HTTP/2 or not, streams, events per second per stream, HTTP/2 connections.
#[derive(Debug, Clone, PartialEq)]
struct Scenario {
    h2: bool,
    streams: u64,
    rate: String,
    connections: u64,
}

impl Scenario {
    fn of(run: &SseRun) -> Self {
        Self {
            h2: run.h2(),
            streams: run.streams,
            rate: tag(&run.tags, "rate").to_string(),
            connections: run.h2_connections,
        }
    }

    fn label(&self, reps: usize) -> String {
        format!(
            "{} stream{} × {}/s{} ({reps} run{})",
            self.streams,
            if self.streams == 1 { "" } else { "s" },
            if self.rate.is_empty() {
                "?"
            } else {
                &self.rate
            },
            if self.h2 {
                format!(", TLS + HTTP/2 on {} connections", self.connections)
            } else {
                String::new()
            },
            if reps == 1 { "" } else { "s" }
        )
    }
}

fn stream_table(sse: &[SseRun], columns: &Columns) -> String {
    let main: Vec<&SseRun> = sse
        .iter()
        .filter(|r| matches!(tag(&r.tags, "phase"), "" | "main" | "tls"))
        .collect();
    let mut scenarios: Vec<Scenario> = Vec::new();
    for run in &main {
        let s = Scenario::of(run);
        if !scenarios.contains(&s) {
            scenarios.push(s);
        }
    }
    let rate = |s: &Scenario| s.rate.parse::<f64>().unwrap_or(f64::INFINITY);
    scenarios.sort_by(|a, b| {
        (a.h2, a.streams, a.connections)
            .cmp(&(b.h2, b.streams, b.connections))
            .then(rate(a).total_cmp(&rate(b)))
    });
    let mut out = format!(
        "## SSE streams\n\nMedians over the runs of each path; latency is receive time minus the \
         send time stamped in each event; *added* is the proxy's figure minus the direct one at \
         the same load; *head* is the time from sending a stream's request to having its \
         response head; CPU and RSS are the proxy processes' (nginx: master + workers); *idle* \
         is the fresh proxy's RSS before the first stream.\n\n{}",
        columns.header("scenario", "figure")
    );
    for scenario in scenarios {
        let runs: Vec<Vec<&SseRun>> = columns
            .paths
            .iter()
            .map(|p| {
                main.iter()
                    .copied()
                    .filter(|r| Scenario::of(r) == scenario && tag(&r.tags, "path") == *p)
                    .collect()
            })
            .collect();
        let per_path = |f: &dyn Fn(&SseRun) -> Option<f64>| -> Vec<Option<f64>> {
            runs.iter()
                .map(|runs| median(runs.iter().filter_map(|r| f(r)).collect()))
                .collect()
        };
        let sum_path = |f: &dyn Fn(&SseRun) -> u64| -> Vec<Option<f64>> {
            runs.iter()
                .map(|runs| {
                    (!runs.is_empty()).then(|| runs.iter().map(|r| f(r)).sum::<u64>() as f64)
                })
                .collect()
        };
        let direct = columns.column("direct");
        let added = |v: &[Option<f64>]| -> Vec<Option<f64>> {
            let d = direct.and_then(|d| v[d]);
            v.iter()
                .enumerate()
                .map(|(i, x)| match (d, *x) {
                    (Some(d), Some(x)) if Some(i) != direct => Some(x - d),
                    _ => None,
                })
                .collect()
        };
        let proxies = |mut v: Vec<Option<f64>>| -> Vec<Option<f64>> {
            if let Some(d) = direct {
                v[d] = None;
            }
            v
        };
        let ms = |us: u64| Some(us as f64 / 1000.0);
        let reps = runs.iter().map(Vec::len).max().unwrap_or(0);
        let p50 = per_path(&|r| ms(r.p50_us));
        let p99 = per_path(&|r| ms(r.p99_us));
        let p999 = per_path(&|r| ms(r.p999_us));
        let head_p50 = per_path(&|r| (r.heads > 0).then(|| r.head_p50_us as f64 / 1000.0));
        let head_p99 = per_path(&|r| (r.heads > 0).then(|| r.head_p99_us as f64 / 1000.0));
        let expected = scenario
            .rate
            .parse::<f64>()
            .ok()
            .map(|r| r * scenario.streams as f64);
        let mut rows = vec![
            Row::new("p50 ms", p50.clone(), 3),
            Row::new("p99 ms", p99.clone(), 3),
            Row::new("p99.9 ms", p999.clone(), 3),
            Row::new("added p50 ms", added(&p50), 3),
            Row::new("added p99 ms", added(&p99), 3),
            Row::new("added p99.9 ms", added(&p999), 3),
            Row::new("head p50 ms", head_p50.clone(), 3),
            Row::new("head p99 ms", head_p99.clone(), 3),
            Row::new("added head p50 ms", added(&head_p50), 3),
            Row::new("added head p99 ms", added(&head_p99), 3),
            Row::new(
                match expected {
                    Some(e) => format!("events/s (sent {e:.0})"),
                    None => "events/s".into(),
                },
                per_path(&|r| Some(r.events_per_sec)),
                0,
            ),
            Row::new(
                "failed streams (all runs)",
                sum_path(&|r| r.streams_failed),
                0,
            ),
            Row::new("missing events (all runs)", sum_path(&|r| r.missing), 0),
            Row::new(
                "late > 50 ms %",
                per_path(&|r| Some(r.late_50ms_share * 100.0)),
                3,
            ),
            Row::new(
                "proxy CPU s / 1k events",
                proxies(per_path(&|r| {
                    (r.events > 0).then(|| r.watched_cpu_secs / r.events as f64 * 1000.0)
                })),
                4,
            ),
            Row::new(
                "proxy CPU % of a core",
                proxies(per_path(&|r| {
                    (r.duration_secs > 0.0).then(|| r.watched_cpu_secs / r.duration_secs * 100.0)
                })),
                1,
            ),
        ];
        if scenario.streams >= 100 {
            let idle_mib = proxies(per_path(&|r| {
                (r.watched_rss_idle_kib > 0).then(|| r.watched_rss_idle_kib as f64 / 1024.0)
            }));
            rows.push(Row::new("proxy RSS idle MiB", idle_mib, 1));
            rows.push(Row::new(
                "proxy RSS KiB / stream",
                proxies(per_path(&|r| {
                    (r.streams_opened > 0 && r.watched_rss_kib > 0).then(|| {
                        (r.watched_rss_kib as f64 - r.watched_rss_idle_kib as f64)
                            / r.streams_opened as f64
                    })
                })),
                2,
            ));
            let settle = median(
                runs.iter()
                    .flatten()
                    .filter(|r| r.watched_rss_after_close_kib.is_some())
                    .map(|r| r.settle_secs)
                    .collect(),
            );
            if let Some(settle) = settle {
                rows.push(Row::new(
                    format!("proxy RSS {settle:.0} s after close MiB"),
                    proxies(per_path(&|r| {
                        r.watched_rss_after_close_kib.map(|kib| kib as f64 / 1024.0)
                    })),
                    1,
                ));
                rows.push(Row::new(
                    "RSS after close / idle",
                    proxies(per_path(&|r| match r.watched_rss_after_close_kib {
                        Some(kib) if r.watched_rss_idle_kib > 0 => {
                            Some(kib as f64 / r.watched_rss_idle_kib as f64)
                        }
                        _ => None,
                    })),
                    2,
                ));
            }
        }
        push_rows(&mut out, &scenario.label(reps), &rows, columns);
    }
    out.push('\n');
    out
}

/// One load of the capacity probe: its p99s (one per run) and failures over all runs.
struct Step {
    streams: u64,
    rate: String,
    p99s: Vec<f64>,
    failed: u64,
}

fn capacity_table(sse: &[SseRun], columns: &Columns, limit_ms: f64) -> String {
    let mut out = format!(
        "## Stream capacity\n\nHTTP/1.1 streams, a connection each. The largest load probed \
         (streams × events/s per stream) at which the median p99 stays under {limit_ms} ms with \
         no failed stream, every smaller load probed passing too.\n\n\
         | path | largest passing | probed: streams × events/s → p99 ms |\n| --- | ---: | --- |\n"
    );
    for path in &columns.paths {
        let mut steps: Vec<Step> = Vec::new();
        for run in sse
            .iter()
            .filter(|r| tag(&r.tags, "path") == *path && !r.h2())
        {
            let rate = tag(&run.tags, "rate");
            let at = match steps
                .iter()
                .position(|s| s.streams == run.streams && s.rate == rate)
            {
                Some(at) => at,
                None => {
                    steps.push(Step {
                        streams: run.streams,
                        rate: rate.to_string(),
                        p99s: Vec::new(),
                        failed: 0,
                    });
                    steps.len() - 1
                }
            };
            steps[at].p99s.push(run.p99_us as f64 / 1000.0);
            steps[at].failed += run.streams_failed + u64::from(run.events == 0);
        }
        if steps.is_empty() {
            continue;
        }
        let rate = |r: &str| r.parse::<f64>().unwrap_or(f64::INFINITY);
        steps.sort_by(|a, b| {
            a.streams
                .cmp(&b.streams)
                .then(rate(&a.rate).total_cmp(&rate(&b.rate)))
        });
        let mut largest = None;
        let mut passing = true;
        let mut probed = Vec::new();
        for Step {
            streams,
            rate,
            p99s,
            failed,
        } in steps
        {
            let p99 = median(p99s).unwrap_or(f64::INFINITY);
            let ok = p99 < limit_ms && failed == 0;
            passing &= ok;
            if passing {
                largest = Some(format!("{streams}×{rate}"));
            }
            probed.push(format!(
                "{streams}×{rate} → {p99:.2}{}",
                if ok { "" } else { " ✗" }
            ));
        }
        out.push_str(&format!(
            "| {path} | {} | {} |\n",
            largest.as_deref().unwrap_or("none"),
            probed.join(", ")
        ));
    }
    out.push('\n');
    out
}

fn wrk_table(wrk: &[WrkRun], columns: &Columns) -> String {
    if wrk.is_empty() {
        return String::new();
    }
    let runs: Vec<Vec<&WrkRun>> = columns
        .paths
        .iter()
        .map(|p| wrk.iter().filter(|r| tag(&r.tags, "path") == *p).collect())
        .collect();
    let per_path = |f: &dyn Fn(&WrkRun) -> f64| -> Vec<Option<f64>> {
        runs.iter()
            .map(|runs| median(runs.iter().map(|r| f(r)).collect()))
            .collect()
    };
    let sum_path = |f: &dyn Fn(&WrkRun) -> f64| -> Vec<Option<f64>> {
        runs.iter()
            .map(|runs| (!runs.is_empty()).then(|| runs.iter().map(|r| f(r)).sum()))
            .collect()
    };
    let mut cpu = per_path(&|r| {
        if r.requests > 0 {
            r.proxy_cpu_secs / r.requests as f64 * 1e6
        } else {
            0.0
        }
    });
    if let Some(d) = columns.column("direct") {
        cpu[d] = None;
    }
    let reps = runs.iter().map(Vec::len).max().unwrap_or(0);
    let label = wrk
        .first()
        .map(|r| tag(&r.tags, "cmd").to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "wrk".to_string());
    let rows = [
        Row::new("requests/s", per_path(&|r| r.requests_per_sec), 0),
        Row::new("p50 ms", per_path(&|r| r.p50_us / 1000.0), 3),
        Row::new("p99 ms", per_path(&|r| r.p99_us / 1000.0), 3),
        Row::new("proxy CPU µs / request", cpu, 1),
        Row::new(
            "errors + non-2xx (all runs)",
            sum_path(&|r| (r.errors + r.non_2xx) as f64),
            0,
        ),
    ];
    let mut out = format!(
        "## Plain requests\n\n`{label}` to the upstream's `/plain` (13-byte body), median of \
         {reps} run{}.\n\n{}",
        if reps == 1 { "" } else { "s" },
        columns.header("load", "figure")
    );
    push_rows(&mut out, "plain GET", &rows, columns);
    out.push('\n');
    out
}

/// What makes a run unusable: a path meant to run with no SSE run, no events, missing events,
/// failed streams or requests.
fn check(paths: &[String], sse: &[SseRun], wrk: &[WrkRun]) -> Vec<String> {
    let mut problems = Vec::new();
    for path in paths {
        if !sse.iter().any(|r| tag(&r.tags, "path") == path) {
            problems.push(format!("{path}: no SSE run"));
        }
    }
    for r in sse {
        let name = format!(
            "{} {} streams{}",
            tag(&r.tags, "path"),
            r.streams,
            if r.h2() { " over h2" } else { "" }
        );
        if r.events == 0 {
            problems.push(format!("{name}: no events delivered"));
        }
        if r.missing > 0 {
            problems.push(format!("{name}: {} events missing", r.missing));
        }
        if r.streams_failed > 0 || r.streams_opened < r.streams {
            problems.push(format!(
                "{name}: {} of {} streams opened, {} failed",
                r.streams_opened, r.streams, r.streams_failed
            ));
        }
    }
    for r in wrk {
        let path = tag(&r.tags, "path");
        if r.requests == 0 || r.errors > 0 || r.non_2xx > 0 {
            problems.push(format!(
                "{path} wrk: {} requests, {} socket errors, {} non-2xx",
                r.requests, r.errors, r.non_2xx
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 000 streams on every path, ssegate with 5 000 streams at two rates, one TLS + HTTP/2 scenario
    /// without the direct path, and wrk.
    const RAW: &str = r#"
{"kind":"sse","tags":{"path":"direct","rate":"10","phase":"main"},"streams":1000,"streams_opened":1000,"streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":100,"p99_us":1000,"p999_us":2000,"heads":1000,"head_p50_us":200,"head_p99_us":800,"events_per_sec":10000.0}
{"kind":"sse","tags":{"path":"nginx","rate":"10","phase":"main"},"streams":1000,"streams_opened":1000,"streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":200,"p99_us":1500,"p999_us":3000,"heads":1000,"head_p50_us":400,"head_p99_us":1800,"events_per_sec":10000.0,"watched_cpu_secs":2.0,"watched_rss_kib":30000,"watched_rss_idle_kib":10240,"settle_secs":60.0,"watched_rss_after_close_kib":10240}
{"kind":"sse","tags":{"path":"floor","rate":"10","phase":"main"},"streams":1000,"streams_opened":1000,"streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":250,"p99_us":1000,"p999_us":3000,"heads":1000,"head_p50_us":500,"head_p99_us":2800,"events_per_sec":10000.0,"watched_cpu_secs":2.5,"watched_rss_kib":60000,"watched_rss_idle_kib":10000,"settle_secs":60.0,"watched_rss_after_close_kib":20000}
{"kind":"sse","tags":{"path":"ssegate","rate":"10","phase":"main"},"streams":1000,"streams_opened":1000,"streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":300,"p99_us":2000,"p999_us":4000,"heads":1000,"head_p50_us":600,"head_p99_us":3800,"events_per_sec":10000.0,"watched_cpu_secs":3.0,"watched_rss_kib":50000,"watched_rss_idle_kib":10000,"settle_secs":60.0,"watched_rss_after_close_kib":30000}
{"kind":"sse","tags":{"path":"base","rate":"10","phase":"main"},"streams":1000,"streams_opened":1000,"streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":400,"p99_us":4000,"p999_us":8000,"heads":1000,"head_p50_us":600,"head_p99_us":3800,"events_per_sec":10000.0,"watched_cpu_secs":6.0,"watched_rss_kib":90000,"watched_rss_idle_kib":10000}
{"kind":"sse","tags":{"path":"ssegate","rate":"1","phase":"main"},"streams":5000,"streams_opened":5000,"streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":300,"p99_us":3000,"p999_us":4000,"events_per_sec":5000.0}
{"kind":"sse","tags":{"path":"ssegate","rate":"2","phase":"ladder"},"streams":5000,"streams_opened":5000,"streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":300,"p99_us":20000,"p999_us":40000,"events_per_sec":10000.0}
{"kind":"sse","protocol":"h2","h2_connections":10,"tags":{"path":"nginx","rate":"10","phase":"tls"},"streams":1000,"streams_opened":1000,"streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":500,"p99_us":5000,"p999_us":9000,"events_per_sec":10000.0,"watched_cpu_secs":4.0,"watched_rss_kib":20000,"watched_rss_idle_kib":10000}
{"kind":"sse","protocol":"h2","h2_connections":10,"tags":{"path":"ssegate","rate":"10","phase":"tls"},"streams":1000,"streams_opened":1000,"streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":600,"p99_us":6000,"p999_us":9000,"events_per_sec":10000.0,"watched_cpu_secs":5.0,"watched_rss_kib":40000,"watched_rss_idle_kib":10000}
{"kind":"wrk","tags":{"path":"nginx"},"requests_per_sec":1000.0,"p50_us":100.0,"p99_us":900.0,"requests":10000,"errors":0,"non_2xx":0}
{"kind":"wrk","tags":{"path":"floor"},"requests_per_sec":500.0,"p50_us":100.0,"p99_us":900.0,"requests":5000,"errors":0,"non_2xx":0,"proxy_cpu_secs":0.25}
{"kind":"wrk","tags":{"path":"ssegate"},"requests_per_sec":1500.0,"p50_us":100.0,"p99_us":900.0,"requests":15000,"errors":0,"non_2xx":0,"proxy_cpu_secs":0.3}
{"kind":"wrk","tags":{"path":"ssegate"},"requests_per_sec":1500.0,"p50_us":100.0,"p99_us":900.0,"requests":15000,"errors":1,"non_2xx":2,"proxy_cpu_secs":0.3}
"#;

    fn args() -> Args {
        Args {
            input: PathBuf::new(),
            title: "t".into(),
            notes: vec!["note".into()],
            check: false,
            paths: ["direct", "nginx", "floor", "ssegate"]
                .map(String::from)
                .to_vec(),
            p99_limit_ms: 10.0,
        }
    }

    #[test]
    fn table_has_every_path_and_ratio() {
        let (sse, wrk) = parse(RAW);
        assert_eq!((sse.len(), wrk.len()), (9, 4));
        let md = markdown(&args(), &sse, &wrk);
        let header = "| direct | nginx | floor | ssegate | base | ssegate/nginx | ssegate/floor | ssegate/base |";
        assert_eq!(md.matches(header).count(), 2, "{md}");
        // Latency the proxies add over direct, and ssegate over nginx, the floor and base.
        assert!(
            md.contains(
                "| added p50 ms | – | 0.100 | 0.150 | 0.200 | 0.300 | 2.00 | 1.33 | 0.67 |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| head p99 ms | 0.800 | 1.800 | 2.800 | 3.800 | 3.800 | 2.11 | 1.36 | 1.00 |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| added head p50 ms | – | 0.200 | 0.300 | 0.400 | 0.400 | 2.00 | 1.33 | 1.00 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| proxy CPU s / 1k events | – | 0.0200 | 0.0250 | 0.0300 | 0.0600 | 1.50 | 1.20 | 0.50 |"),
            "{md}"
        );
        assert!(
            md.contains("| proxy RSS idle MiB | – | 10.0 | 9.8 | 9.8 | 9.8 | 0.98 | 1.00 | 1.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| proxy RSS KiB / stream | – | 19.76 | 50.00 | 40.00 | 80.00 | 2.02 | 0.80 | 0.50 |"),
            "{md}"
        );
        // Memory after close: base did not wait, so it has no figure there.
        assert!(
            md.contains(
                "| proxy RSS 60 s after close MiB | – | 10.0 | 19.5 | 29.3 | – | 2.93 | 1.50 | – |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| RSS after close / idle | – | 1.00 | 2.00 | 3.00 | – | 3.00 | 1.50 | – |"
            ),
            "{md}"
        );
        // The HTTP/2 scenario has no direct path, hence no added rows, and is not a capacity step.
        let tls = md
            .split("| 1000 streams × 10/s, TLS + HTTP/2 on 10 connections (1 run) | p50 ms | – | 0.500 | – | 0.600 | – | 1.20 | – | – |")
            .nth(1)
            .unwrap_or_else(|| panic!("no TLS scenario: {md}"));
        let tls = tls.split("##").next().unwrap_or("");
        assert!(!tls.contains("added"), "{tls}");
        assert!(
            tls.contains("| proxy RSS KiB / stream | – | 10.00 | – | 30.00 | – | 3.00 | – | – |"),
            "{tls}"
        );
        assert!(
            md.contains("| ssegate | 5000×1 | 1000×10 → 2.00, 5000×1 → 3.00, 5000×2 → 20.00 ✗ |"),
            "{md}"
        );
        assert!(md.contains("| floor | 1000×10 | 1000×10 → 1.00 |"), "{md}");
        assert!(
            md.contains("| plain GET | requests/s | – | 1000 | 500 | 1500 | – | 1.50 | 3.00 | – |"),
            "{md}"
        );
        assert!(
            md.contains("| proxy CPU µs / request | – | 0.0 | 50.0 | 20.0 | – | – | 0.40 | – |"),
            "{md}"
        );
        assert!(
            md.contains("| errors + non-2xx (all runs) | – | 0 | 0 | 3 | – | – | – | – |"),
            "{md}"
        );
        // Only the wrk errors are a problem: every path meant to run has run.
        assert_eq!(check(&args().paths, &sse, &wrk).len(), 1);
    }

    #[test]
    fn columns_follow_the_paths_measured() {
        let raw: String = RAW
            .lines()
            .filter(|l| !l.contains(r#""path":"base""#) && !l.contains(r#""path":"floor""#))
            .collect::<Vec<_>>()
            .join("\n");
        let (sse, wrk) = parse(&raw);
        let md = markdown(&args(), &sse, &wrk);
        assert!(
            md.contains("| scenario | figure | direct | nginx | ssegate | ssegate/nginx |\n"),
            "{md}"
        );
        assert!(!md.contains("floor") && !md.contains("base"), "{md}");
        assert!(
            md.contains("| added p50 ms | – | 0.100 | 0.200 | 2.00 |"),
            "{md}"
        );
        let problems = check(&args().paths, &sse, &wrk);
        assert!(
            problems.contains(&"floor: no SSE run".to_string()),
            "{problems:?}"
        );
    }

    #[test]
    fn ratios_only_of_figures_that_can_be_divided() {
        let (sse, wrk) = parse(RAW);
        let columns = Columns::new(&sse, &wrk);
        let row = Row::new(
            "added p99 ms",
            vec![None, Some(0.5), Some(0.0), Some(-0.1), Some(0.25)],
            3,
        );
        assert_eq!(
            row.markdown("x", &columns),
            "| x | added p99 ms | – | 0.500 | 0.000 | -0.100 | 0.250 | – | – | – |\n"
        );
        let row = Row::new(
            "failed",
            vec![None, Some(4.0), Some(0.0), Some(0.0), None],
            0,
        );
        assert_eq!(
            row.markdown("", &columns),
            "|  | failed | – | 4 | 0 | 0 | – | 0.00 | – | – |\n"
        );
    }

    #[test]
    fn check_catches_failures() {
        let (sse, wrk) = parse(&RAW.replace(
            r#""streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":300,"p99_us":2000,"#,
            r#""streams_failed":3,"events":0,"missing":7,"late_50ms_share":0.0,"p50_us":300,"p99_us":2000,"#,
        ));
        let problems = check(&args().paths, &sse, &wrk);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems.contains(&"ssegate 1000 streams: 7 events missing".to_string()),
            "{problems:?}"
        );
        assert!(median(vec![3.0, 1.0, 2.0, 4.0]) == Some(2.5));
    }
}
