//! CLI tests that need no root: help, usage errors, the workload's counts.

mod common;

use common::*;

#[test]
fn help_teaches_with_examples() {
    let out = lockscope(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "report",
        "trace",
        "run",
        "demo",
        "doctor",
        "Examples:",
        "lockscope report -d 5s",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}: {text}");
    }
    for sub in [
        "report", "trace", "run", "demo", "doctor", "workload", "top", "report", "trace", "run",
        "demo", "doctor", "workload", "serve",
    ] {
        let out = lockscope(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            assert!(
                line.chars().count() <= 100,
                "{sub} --help line too wide: {line}"
            );
        }
    }
}

#[test]
fn usage_errors_exit_2_without_a_backtrace() {
    for args in [
        vec!["report", "-d", "soon"],
        vec!["report", "--by", "color"],
        vec!["report", "-p", "not-a-pid"],
        vec!["frobnicate"],
        vec!["run"],
        vec!["top", "-i", "10ms"],
        vec!["serve", "--listen", "everywhere"],
        vec!["serve", "--max-series", "0"],
    ] {
        let out = lockscope(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
}

#[test]
fn workload_does_exactly_what_it_reports() {
    let out = lockscope(&[
        "workload",
        "pipe",
        "mmap",
        "--threads",
        "2",
        "--ops",
        "300",
        "--json",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let reps: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(reps.len(), 2);
    assert_eq!(reps[0]["kind"], "pipe");
    assert_eq!(u(&reps[0]["total_ops"]), 600);
    assert_eq!(u(&reps[0]["bytes"]), 600 * 4096);
    assert_eq!(reps[1]["kind"], "mmap");
    assert_eq!(u(&reps[1]["munmap_calls"]), 600);
    assert_eq!(reps[1]["tids"].as_array().map(Vec::len), Some(2));
}

#[test]
fn top_needs_a_terminal_and_says_so_in_one_line() {
    // stdout is a pipe here: no terminal to draw on, before any BPF loads
    let out = lockscope(&["top"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("terminal") && err.contains("lockscope report"),
        "{err}"
    );
}
