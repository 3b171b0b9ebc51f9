//! `--pprof` read by a real reader: `go tool pprof` (Debian's golang-go)
//! over the profile of a pipe-hold workload, whose waits are known by
//! construction and measured by the waiter itself. Needs root (BPF) and
//! `go`; CI installs it (scripts/setup.sh).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// `go tool pprof -top -sample_index=INDEX ARGS FILE` (with -unit=ns for
/// times, so they are exact): the text, and every node by name.
fn top(dir: &Path, file: &Path, index: &str, args: &[&str]) -> (String, Vec<(String, PprofNode)>) {
    pprof_top(dir, file, index, index != "contentions", args)
}

fn node<'a>(nodes: &'a [(String, PprofNode)], name: &str) -> &'a PprofNode {
    &nodes
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no node {name:?} in -top: {nodes:?}"))
        .1
}

fn measured_waits(w: &Value) -> Vec<u64> {
    nums(&w["waiter_write_ns"])
}

#[test]
fn go_tool_pprof_reads_the_pipe_mutex_waits_with_stacks() {
    let dir = fresh_dir("pprof-stacks");
    let file = dir.join("waits.pb.gz");
    let (out, wl) = report_pipe_hold(
        "20",
        "30ms",
        &[
            "--by",
            "lock",
            "--stacks",
            "--pprof",
            file.to_str().expect("utf8"),
        ],
    );
    let rep: Value = serde_json::from_str(out.trim()).expect("report JSON");
    let w = &wl[0];
    let waiter = u(&w["waiter_tid"]);
    let row = rows(&rep)
        .iter()
        .find(|r| r["kind"] == "mutex" && r["tid"].as_u64() == Some(waiter))
        .unwrap_or_else(|| panic!("the waiter's pipe mutex row: {rep}"));
    assert_eq!(u(&row["count"]), 20, "one contended wait a round: {row}");
    let lock_name = row["lock_name"].as_str().expect("a named pipe mutex");
    let ino = u(&w["ino"]);
    assert!(lock_name.starts_with(&format!("pipe:[{ino}]")), "{row}");
    let leaf = format!("[mutex {lock_name}]");
    // only the pipe mutex's samples: those whose leaf is that lock
    let focus = format!("-focus=^\\[mutex pipe:\\[{ino}\\]");

    let measured = measured_waits(w);
    let truth: u64 = measured.iter().sum();
    let bound = 2_000_000 * measured.len() as u64;
    let (text, nodes) = top(&dir, &file, "delay", &[&focus]);
    assert!(text.contains("Type: delay"), "{text}");
    let lock = node(&nodes, &leaf);
    // pipe_write, or anon_pipe_write (Linux 6.16 and later)
    let caller_name = row["caller"].as_str().expect("a caller");
    assert!(caller_name.contains("pipe_write"), "{row}");
    let caller = node(&nodes, caller_name);
    let reported = u(&row["wait_ns"]["total"]);
    assert_eq!(
        lock.flat, reported as f64,
        "the lock's flat delay is the report's total"
    );
    assert_eq!(
        caller.cum, lock.flat,
        "every wait passed through pipe_write"
    );
    assert!(
        reported <= truth && truth - reported <= bound,
        "pprof delay {reported} ns vs measured {truth} ns: within 2 ms a wait"
    );
    // the waits' stacks go out to the workload's own frames
    assert!(
        nodes.iter().any(|(n, _)| n.contains("holdwork")),
        "user frames: {nodes:?}"
    );

    let (_, nodes) = top(&dir, &file, "contentions", &[&focus]);
    assert_eq!(node(&nodes, &leaf).flat, 20.0, "20 contended waits");
    assert_eq!(node(&nodes, caller_name).cum, 20.0);

    // the pid label selects the workload's samples
    let (_, nodes) = top(
        &dir,
        &file,
        "contentions",
        &[&format!("-tagfocus=pid={}", u(&w["pid"]))],
    );
    assert!(node(&nodes, &leaf).flat >= 20.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_pprof_without_stacks_names_the_lock_and_its_caller() {
    require_root();
    let dir = fresh_dir("pprof-run");
    let file = dir.join("run.pb.gz");
    let out = Command::new(bin())
        .args(["run", "--json", "--pprof"])
        .arg(&file)
        .args(["--", workload_bin(), "pipe-hold"])
        .args(["--rounds", "5", "--hold", "30ms", "--json"])
        .output()
        .expect("run lockscope");
    let (w, rep) = workload_and_report(&out);
    // by caller (the default): the rows of kernel mutex waits in
    // pipe_write (anon_pipe_write since Linux 6.16)
    let mine: Vec<&Value> = rows(&rep)
        .iter()
        .filter(|r| {
            r["kind"] == "mutex"
                && r["caller"]
                    .as_str()
                    .is_some_and(|c| c.ends_with("pipe_write"))
        })
        .collect();
    let count: u64 = mine.iter().map(|r| u(&r["count"])).sum();
    let total: u64 = mine.iter().map(|r| u(&r["wait_ns"]["total"])).sum();
    assert_eq!(count, 5, "one contended wait a round: {rep}");
    let caller_name = mine[0]["caller"].as_str().unwrap_or_default();

    let focus = format!("-focus=^{caller_name}$");
    let args = [focus.as_str(), "-tagfocus=kind=^mutex$"];
    let (_, nodes) = top(&dir, &file, "contentions", &args);
    assert_eq!(node(&nodes, caller_name).cum, 5.0);
    let (text, nodes) = top(&dir, &file, "delay", &args);
    assert!(text.contains("Type: delay"), "{text}");
    let caller = node(&nodes, caller_name);
    assert_eq!(caller.cum, total as f64, "the report's total");
    assert_eq!(caller.flat, 0.0, "the lock is the leaf, its caller above");
    let leaves: f64 = nodes
        .iter()
        .filter(|(n, _)| n.starts_with("[mutex "))
        .map(|(_, n)| n.flat)
        .sum();
    assert_eq!(leaves, total as f64, "the lock frames hold the delay");
    let measured = measured_waits(&w);
    let truth: u64 = measured.iter().sum();
    assert!(
        total <= truth && truth - total <= 2_000_000 * measured.len() as u64,
        "pprof delay {total} ns vs measured {truth} ns: within 2 ms a wait"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
