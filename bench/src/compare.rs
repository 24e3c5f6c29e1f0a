//! `sse-load compare`: turns the raw JSON lines of `bench/run.sh` (client summaries and wrk
//! results, each tagged with its path and scenario) into the Markdown result table: medians per
//! path, the latency a proxy adds over the direct path, proxy CPU per 1 000 events, RSS per open
//! stream, the largest stream count with p99 under a limit, and the ratio ssegate/nginx.
//! `--check` fails when a path delivered no events, or streams or requests failed.

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
    #[arg(long, default_value = "ssegate vs nginx: SSE benchmark")]
    title: String,
    /// A line for the notes under the heading (repeatable).
    #[arg(long = "note")]
    notes: Vec<String>,
    /// Exit non-zero if a path delivered no events, or any stream or request failed.
    #[arg(long)]
    check: bool,
    /// The p99 limit of the capacity table, in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    p99_limit_ms: f64,
}

/// The fields of a client summary that the table uses.
#[derive(Debug, Deserialize)]
struct SseRun {
    #[serde(default)]
    tags: BTreeMap<String, String>,
    streams: u64,
    streams_opened: u64,
    streams_failed: u64,
    events: u64,
    missing: u64,
    late_50ms_share: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    events_per_sec: f64,
    #[serde(default)]
    duration_secs: f64,
    #[serde(default)]
    watched_cpu_secs: f64,
    #[serde(default)]
    watched_rss_kib: u64,
    #[serde(default)]
    watched_rss_idle_kib: u64,
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

const PATHS: [&str; 3] = ["direct", "nginx", "ssegate"];

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
        let problems = check(&sse, &wrk);
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

/// A table row: a figure for each path, and how ssegate compares with nginx.
struct Row {
    name: String,
    values: [Option<f64>; 3],
    decimals: usize,
}

impl Row {
    fn markdown(&self, first: &str) -> String {
        let cell =
            |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.*}", self.decimals));
        let ratio = match (self.values[1], self.values[2]) {
            (Some(n), Some(s)) if n.abs() > f64::EPSILON => format!("{:.2}", s / n),
            _ => "–".to_string(),
        };
        format!(
            "| {first} | {} | {} | {} | {} | {ratio} |\n",
            self.name,
            cell(self.values[0]),
            cell(self.values[1]),
            cell(self.values[2])
        )
    }
}

fn markdown(args: &Args, sse: &[SseRun], wrk: &[WrkRun]) -> String {
    let mut out = format!("# {}\n\n", args.title);
    for note in &args.notes {
        out.push_str(&format!("- {note}\n"));
    }
    out.push('\n');
    out.push_str(&stream_table(sse));
    out.push_str(&capacity_table(sse, args.p99_limit_ms));
    out.push_str(&wrk_table(wrk));
    out
}

/// Scenario key: streams and events per second per stream.
fn scenario(run: &SseRun) -> (u64, String) {
    (run.streams, tag(&run.tags, "rate").to_string())
}

fn stream_table(sse: &[SseRun]) -> String {
    let main: Vec<&SseRun> = sse
        .iter()
        .filter(|r| matches!(tag(&r.tags, "phase"), "" | "main"))
        .collect();
    let mut scenarios: Vec<(u64, String)> = main.iter().map(|r| scenario(r)).collect();
    scenarios.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    scenarios.dedup();
    let mut out = String::from(
        "## SSE streams\n\nMedians over the runs of each path; latency is receive time minus the \
         send time stamped in each event; *added* is the proxy's figure minus the direct one at \
         the same load; CPU and RSS are the proxy processes' (nginx: master + workers).\n\n\
         | scenario | figure | direct | nginx | ssegate | ssegate/nginx |\n\
         | --- | --- | ---: | ---: | ---: | ---: |\n",
    );
    for (streams, rate) in scenarios {
        let runs: Vec<Vec<&SseRun>> = PATHS
            .iter()
            .map(|p| {
                main.iter()
                    .copied()
                    .filter(|r| {
                        scenario(r) == (streams, rate.clone()) && tag(&r.tags, "path") == *p
                    })
                    .collect()
            })
            .collect();
        let per_path = |f: &dyn Fn(&SseRun) -> Option<f64>| -> [Option<f64>; 3] {
            let mut values = [None; 3];
            for (i, runs) in runs.iter().enumerate() {
                values[i] = median(runs.iter().filter_map(|r| f(r)).collect());
            }
            values
        };
        let sum_path = |f: &dyn Fn(&SseRun) -> u64| -> [Option<f64>; 3] {
            let mut values = [None; 3];
            for (i, runs) in runs.iter().enumerate() {
                if !runs.is_empty() {
                    values[i] = Some(runs.iter().map(|r| f(r)).sum::<u64>() as f64);
                }
            }
            values
        };
        let added = |v: [Option<f64>; 3]| -> [Option<f64>; 3] {
            let d = v[0];
            [
                None,
                d.and(v[1]).map(|n| n - d.unwrap_or(0.0)),
                d.and(v[2]).map(|s| s - d.unwrap_or(0.0)),
            ]
        };
        let ms = |us: u64| Some(us as f64 / 1000.0);
        let reps = runs.iter().map(Vec::len).max().unwrap_or(0);
        let label = format!(
            "{streams} stream{} × {}/s ({reps} run{})",
            if streams == 1 { "" } else { "s" },
            if rate.is_empty() { "?" } else { &rate },
            if reps == 1 { "" } else { "s" }
        );
        let p50 = per_path(&|r| ms(r.p50_us));
        let p99 = per_path(&|r| ms(r.p99_us));
        let p999 = per_path(&|r| ms(r.p999_us));
        let expected = rate.parse::<f64>().ok().map(|r| r * streams as f64);
        let mut rows = vec![
            Row {
                name: "p50 ms".into(),
                values: p50,
                decimals: 3,
            },
            Row {
                name: "p99 ms".into(),
                values: p99,
                decimals: 3,
            },
            Row {
                name: "p99.9 ms".into(),
                values: p999,
                decimals: 3,
            },
            Row {
                name: "added p50 ms".into(),
                values: added(p50),
                decimals: 3,
            },
            Row {
                name: "added p99 ms".into(),
                values: added(p99),
                decimals: 3,
            },
            Row {
                name: "added p99.9 ms".into(),
                values: added(p999),
                decimals: 3,
            },
            Row {
                name: match expected {
                    Some(e) => format!("events/s (sent {e:.0})"),
                    None => "events/s".into(),
                },
                values: per_path(&|r| Some(r.events_per_sec)),
                decimals: 0,
            },
            Row {
                name: "failed streams (all runs)".into(),
                values: sum_path(&|r| r.streams_failed),
                decimals: 0,
            },
            Row {
                name: "missing events (all runs)".into(),
                values: sum_path(&|r| r.missing),
                decimals: 0,
            },
            Row {
                name: "late > 50 ms %".into(),
                values: per_path(&|r| Some(r.late_50ms_share * 100.0)),
                decimals: 3,
            },
            Row {
                name: "proxy CPU s / 1k events".into(),
                values: without_direct(per_path(&|r| {
                    (r.events > 0).then(|| r.watched_cpu_secs / r.events as f64 * 1000.0)
                })),
                decimals: 4,
            },
            Row {
                name: "proxy CPU % of a core".into(),
                values: without_direct(per_path(&|r| {
                    (r.duration_secs > 0.0).then(|| r.watched_cpu_secs / r.duration_secs * 100.0)
                })),
                decimals: 1,
            },
        ];
        if streams >= 100 {
            rows.push(Row {
                name: "proxy RSS KiB / stream".into(),
                values: without_direct(per_path(&|r| {
                    (r.streams_opened > 0 && r.watched_rss_kib > 0).then(|| {
                        (r.watched_rss_kib as f64 - r.watched_rss_idle_kib as f64)
                            / r.streams_opened as f64
                    })
                })),
                decimals: 2,
            });
        }
        for (i, row) in rows.iter().enumerate() {
            out.push_str(&row.markdown(if i == 0 { &label } else { "" }));
        }
    }
    out.push('\n');
    out
}

fn without_direct(mut values: [Option<f64>; 3]) -> [Option<f64>; 3] {
    values[0] = None;
    values
}

fn capacity_table(sse: &[SseRun], limit_ms: f64) -> String {
    let mut out = format!(
        "## Stream capacity\n\nThe largest stream count probed at which the median p99 stays \
         under {limit_ms} ms with no failed stream (every smaller count probed passing too).\n\n\
         | path | largest passing | probed: streams × events/s → p99 ms |\n| --- | ---: | --- |\n"
    );
    for path in PATHS {
        let mut steps: BTreeMap<u64, (String, Vec<f64>, u64)> = BTreeMap::new();
        for run in sse.iter().filter(|r| tag(&r.tags, "path") == path) {
            let step = steps
                .entry(run.streams)
                .or_insert_with(|| (tag(&run.tags, "rate").to_string(), Vec::new(), 0));
            step.1.push(run.p99_us as f64 / 1000.0);
            step.2 += run.streams_failed + u64::from(run.events == 0);
        }
        if steps.is_empty() {
            continue;
        }
        let mut largest = None;
        let mut passing = true;
        let mut probed = Vec::new();
        for (streams, (rate, p99s, failed)) in steps {
            let p99 = median(p99s).unwrap_or(f64::INFINITY);
            let ok = p99 < limit_ms && failed == 0;
            passing &= ok;
            if passing {
                largest = Some(streams);
            }
            probed.push(format!(
                "{streams}×{rate} → {p99:.2}{}",
                if ok { "" } else { " ✗" }
            ));
        }
        out.push_str(&format!(
            "| {path} | {} | {} |\n",
            largest.map_or("none".to_string(), |n| n.to_string()),
            probed.join(", ")
        ));
    }
    out.push('\n');
    out
}

fn wrk_table(wrk: &[WrkRun]) -> String {
    if wrk.is_empty() {
        return String::new();
    }
    let runs: Vec<Vec<&WrkRun>> = PATHS
        .iter()
        .map(|p| wrk.iter().filter(|r| tag(&r.tags, "path") == *p).collect())
        .collect();
    let per_path = |f: &dyn Fn(&WrkRun) -> f64| -> [Option<f64>; 3] {
        let mut values = [None; 3];
        for (i, runs) in runs.iter().enumerate() {
            values[i] = median(runs.iter().map(|r| f(r)).collect());
        }
        values
    };
    let sum_path = |f: &dyn Fn(&WrkRun) -> f64| -> [Option<f64>; 3] {
        let mut values = [None; 3];
        for (i, runs) in runs.iter().enumerate() {
            if !runs.is_empty() {
                values[i] = Some(runs.iter().map(|r| f(r)).sum());
            }
        }
        values
    };
    let reps = runs.iter().map(Vec::len).max().unwrap_or(0);
    let label = wrk
        .first()
        .map(|r| tag(&r.tags, "cmd").to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "wrk".to_string());
    let rows = [
        Row {
            name: "requests/s".into(),
            values: per_path(&|r| r.requests_per_sec),
            decimals: 0,
        },
        Row {
            name: "p50 ms".into(),
            values: per_path(&|r| r.p50_us / 1000.0),
            decimals: 3,
        },
        Row {
            name: "p99 ms".into(),
            values: per_path(&|r| r.p99_us / 1000.0),
            decimals: 3,
        },
        Row {
            name: "proxy CPU µs / request".into(),
            values: without_direct(per_path(&|r| {
                if r.requests > 0 {
                    r.proxy_cpu_secs / r.requests as f64 * 1e6
                } else {
                    0.0
                }
            })),
            decimals: 1,
        },
        Row {
            name: "errors + non-2xx (all runs)".into(),
            values: sum_path(&|r| (r.errors + r.non_2xx) as f64),
            decimals: 0,
        },
    ];
    let mut out = format!(
        "## Plain requests\n\n`{label}` to the upstream's `/plain` (13-byte body), median of \
         {reps} run{}.\n\n| load | figure | direct | nginx | ssegate | ssegate/nginx |\n\
         | --- | --- | ---: | ---: | ---: | ---: |\n",
        if reps == 1 { "" } else { "s" }
    );
    for (i, row) in rows.iter().enumerate() {
        out.push_str(&row.markdown(if i == 0 { "plain GET" } else { "" }));
    }
    out.push('\n');
    out
}

/// What makes a run unusable: no events, failed streams or requests, a path never measured.
fn check(sse: &[SseRun], wrk: &[WrkRun]) -> Vec<String> {
    let mut problems = Vec::new();
    for path in PATHS {
        if !sse.iter().any(|r| tag(&r.tags, "path") == path) {
            problems.push(format!("{path}: no SSE run"));
        }
    }
    for r in sse {
        let name = format!("{} {} streams", tag(&r.tags, "path"), r.streams);
        if r.events == 0 {
            problems.push(format!("{name}: no events delivered"));
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

    const RAW: &str = r#"
{"kind":"sse","tags":{"path":"direct","rate":"10","phase":"main"},"streams":1000,"streams_opened":1000,"streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":100,"p99_us":1000,"p999_us":2000,"events_per_sec":10000.0}
{"kind":"sse","tags":{"path":"nginx","rate":"10","phase":"main"},"streams":1000,"streams_opened":1000,"streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":200,"p99_us":1500,"p999_us":3000,"events_per_sec":10000.0,"watched_cpu_secs":2.0,"watched_rss_kib":30000,"watched_rss_idle_kib":10000}
{"kind":"sse","tags":{"path":"ssegate","rate":"10","phase":"main"},"streams":1000,"streams_opened":1000,"streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":300,"p99_us":2000,"p999_us":4000,"events_per_sec":10000.0,"watched_cpu_secs":3.0,"watched_rss_kib":50000,"watched_rss_idle_kib":10000}
{"kind":"sse","tags":{"path":"ssegate","rate":"2","phase":"ladder"},"streams":5000,"streams_opened":5000,"streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":300,"p99_us":20000,"p999_us":40000,"events_per_sec":10000.0}
{"kind":"wrk","tags":{"path":"nginx"},"requests_per_sec":1000.0,"p50_us":100.0,"p99_us":900.0,"requests":10000,"errors":0,"non_2xx":0}
{"kind":"wrk","tags":{"path":"ssegate"},"requests_per_sec":1500.0,"p50_us":100.0,"p99_us":900.0,"requests":15000,"errors":0,"non_2xx":0,"proxy_cpu_secs":0.3}
{"kind":"wrk","tags":{"path":"ssegate"},"requests_per_sec":1500.0,"p50_us":100.0,"p99_us":900.0,"requests":15000,"errors":1,"non_2xx":2,"proxy_cpu_secs":0.3}
"#;

    #[test]
    fn table_has_medians_added_latency_and_ratios() {
        let (sse, wrk) = parse(RAW);
        assert_eq!((sse.len(), wrk.len()), (4, 3));
        let args = Args {
            input: PathBuf::new(),
            title: "t".into(),
            notes: vec!["note".into()],
            check: false,
            p99_limit_ms: 10.0,
        };
        let md = markdown(&args, &sse, &wrk);
        assert!(
            md.contains("| added p50 ms | – | 0.100 | 0.200 | 2.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| proxy CPU s / 1k events | – | 0.0200 | 0.0300 | 1.50 |"),
            "{md}"
        );
        assert!(
            md.contains("| proxy RSS KiB / stream | – | 20.00 | 40.00 | 2.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| ssegate | 1000 | 1000×10 → 2.00, 5000×2 → 20.00 ✗ |"),
            "{md}"
        );
        assert!(
            md.contains("| plain GET | requests/s | – | 1000 | 1500 | 1.50 |"),
            "{md}"
        );
        assert!(
            md.contains("| proxy CPU µs / request | – | 0.0 | 20.0 | – |"),
            "{md}"
        );
        assert!(
            md.contains("| errors + non-2xx (all runs) | – | 0 | 3 | – |"),
            "{md}"
        );
        assert_eq!(check(&sse, &wrk).len(), 1);
    }

    #[test]
    fn check_catches_failures() {
        let (sse, wrk) = parse(&RAW.replace(r#""streams_failed":0,"events":100000,"missing":0,"late_50ms_share":0.0,"p50_us":300,"p99_us":2000,"#, r#""streams_failed":3,"events":0,"missing":0,"late_50ms_share":0.0,"p50_us":300,"p99_us":2000,"#));
        let problems = check(&sse, &wrk);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(median(vec![3.0, 1.0, 2.0, 4.0]) == Some(2.5));
    }
}
