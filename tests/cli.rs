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

/// Every usage error below: exit 2, one line on stderr, no panic, one
/// "lockscope:" prefix at most.
fn usage_error(args: &[&str]) -> String {
    let out = lockscope(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(!err.contains("lockscope: lockscope"), "{args:?}: {err}");
    err
}

#[test]
fn bad_input_is_one_usage_line_before_anything_loads() {
    // a directory that looks like a cgroup (it has cgroup.procs) but is
    // not on cgroup2: refused by its file system type
    let fake = std::env::temp_dir().join(format!("lockscope-fakecg-{}", std::process::id()));
    std::fs::create_dir_all(&fake).expect("mkdir");
    std::fs::write(fake.join("cgroup.procs"), "").expect("write");
    let f = fake.display().to_string();
    let err = usage_error(&["report", "-d", "1s", "--cgroup", &f]);
    std::fs::remove_dir_all(&fake).expect("rm");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not a cgroup v2 directory"), "{err}");
    // a real cgroup v1 hierarchy, where this machine has one
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    if let Some(v1) = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup").then(|| f[1].to_string())
    }) {
        let err = usage_error(&["report", "-d", "1s", "--cgroup", &v1]);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("a cgroup v1 directory"), "{err}");
    }
    let err = usage_error(&["report", "-d", "1s", "--cgroup", "/tmp"]);
    assert_eq!(err.lines().count(), 1, "{err}");

    // --backend: clap lists the valid ones
    let err = usage_error(&["report", "--backend", "bogus"]);
    for b in ["tp_btf", "tracepoint", "fentry", "kprobe", "uprobe"] {
        assert!(err.contains(b), "{b} not listed: {err}");
    }

    // run: a file that is not executable is "permission denied"
    let err = usage_error(&["run", "--", "/etc/passwd"]);
    assert!(err.contains("permission denied"), "{err}");
    assert!(!err.contains("not found"), "{err}");
    let err = usage_error(&["run", "--", "/nonexistent/lockscope-cmd"]);
    assert!(err.contains("command not found"), "{err}");

    // workload and demo threads: 1 to 4096, said before anything starts
    let err = usage_error(&["workload", "--threads", "100000"]);
    assert!(err.contains("100000 threads: 1 to 4096"), "{err}");
    let err = usage_error(&["demo", "--threads", "0"]);
    assert!(err.contains("0 threads: 1 to 4096"), "{err}");
}

#[test]
fn errors_carry_one_lockscope_prefix() {
    // top without a terminal and a missing pid go through main's printer
    for args in [
        vec!["top"],
        vec!["report", "-p", "999999999"],
        vec!["run", "--", "/etc/passwd"],
    ] {
        let err = usage_error(&args);
        assert!(err.starts_with("lockscope: "), "{args:?}: {err}");
        assert_eq!(err.matches("lockscope:").count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn help_says_what_each_source_needs() {
    let out = lockscope(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "CAP_BPF +\nCAP_PERFMON run kernel-contention, mmap-lock and sched",
        "user-locks (uprobes) also needs CAP_SYS_ADMIN",
        "CAP_DAC_READ_SEARCH",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}: {text}");
    }
}
