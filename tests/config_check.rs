//! `ssegate -t`: valid configs get a one-line summary; every broken config in
//! `tests/configs/bad/` is rejected with the messages and positions its `# expect:` lines give.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::gateway::{check, BIN};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn shipped_configs_pass_the_check_with_a_summary() {
    for file in ["conf/ssegate.yaml", "conf/demo.yaml"] {
        let out = check(Path::new(file));
        assert!(out.status.success(), "{file}: {}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        assert!(
            stdout.contains("ok: 3 routes (2 sse), 1 upstreams"),
            "{stdout}"
        );
    }
}

#[test]
fn every_broken_config_is_rejected_with_its_positions() {
    let mut files: Vec<PathBuf> = std::fs::read_dir("tests/configs/bad")
        .expect("corpus directory")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 15, "corpus has {} configs", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` line",
            file.display()
        );
        let out = check(&file);
        let err = stderr(&out);
        assert!(!out.status.success(), "{} was accepted", file.display());
        assert!(out.stdout.is_empty(), "{}", file.display());
        for line in &expected {
            let want = format!("{}{line}", file.display());
            assert!(
                err.lines().any(|l| l == want),
                "missing line\n  {want}\nin\n{err}"
            );
        }
        let problem_lines = err.lines().filter(|l| !l.starts_with("ssegate: ")).count();
        assert_eq!(problem_lines, expected.len(), "{}:\n{err}", file.display());
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = check(Path::new("tests/configs/does-not-exist.yaml"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot read config file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_broken_config_never_starts_the_server() {
    let out = Command::new(BIN)
        .args(["-c", "tests/configs/bad/05-missing-upstream.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no upstream named `lmm`"));
}

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ssegate {}", env!("CARGO_PKG_VERSION"))
    );
}

const CONTRADICTIONS: &str = "tests/configs/warnings/contradictions.yaml";

/// The `# expect:` lines of a config, each as `FILE:LINE:COL: path: message`.
fn expected_lines(file: &str) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|l| format!("{file}{l}"))
        .collect()
}

#[test]
fn contradicting_settings_are_warnings_with_their_positions_and_the_check_passes() {
    let out = check(Path::new(CONTRADICTIONS));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.trim_end().ends_with(", 5 warnings"), "{stdout}");
    let want: Vec<String> = expected_lines(CONTRADICTIONS)
        .iter()
        .map(|l| l.replacen(": routes[", ": warning: routes[", 1))
        .collect();
    assert_eq!(want.len(), 5);
    assert_eq!(err.lines().collect::<Vec<_>>(), want, "{err}");
}

#[test]
fn strict_makes_warnings_errors_for_the_check_and_at_start() {
    let want: Vec<String> = expected_lines(CONTRADICTIONS)
        .iter()
        .map(|l| format!("{l} (an error with --strict)"))
        .collect();
    for args in [&["-t", "--strict"][..], &["--strict"][..]] {
        let out = Command::new(BIN)
            .args(args)
            .args(["-c", CONTRADICTIONS])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} accepted it: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let problems: Vec<&str> = err
            .lines()
            .filter(|l| !l.starts_with("ssegate: "))
            .collect();
        assert_eq!(problems, want, "{args:?}");
        assert!(err.contains("rejected (5 problems)"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_are_logged_at_start_and_on_reload_and_the_server_runs() {
    let up = common::dead_peer();
    let body = |idle: &str| {
        format!(
            "upstreams:\n  app:\n    peers: [{up}]\nroutes:\n  - name: feed\n    match: {{ path_prefix: / }}\n    upstream: app\n    sse: {{ heartbeat: 20s, idle_timeout: {idle} }}\n"
        )
    };
    let gw = common::gateway::Gateway::start(&body("20s")).await;
    let warning = "warning: routes[0].sse.idle_timeout: idle_timeout (20s) is not longer than heartbeat (20s)";
    assert!(gw.log().contains(warning), "{}", gw.log());

    gw.rewrite_config(&body("15s"));
    gw.signal("HUP");
    let logged = common::eventually(std::time::Duration::from_secs(5), || {
        gw.log()
            .contains("idle_timeout (15s) is not longer than heartbeat (20s)")
    })
    .await;
    assert!(logged, "{}", gw.log());
    gw.expect_metric("ssegate_config_reloads_total{result=\"ok\"}", 1.0)
        .await;
}
