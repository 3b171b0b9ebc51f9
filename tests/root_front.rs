//! Root tests of the command-line front end (issue 11): outputs checked
//! before tracing, `trace --perfetto` in bounded memory, losses flagged
//! with their remedy, and `run` in the host's mount namespace.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("lockscope-front-{}-{name}", std::process::id()))
}

#[test]
fn a_bad_output_path_fails_before_anything_attaches() {
    require_root();
    // a 30 s trace must end at once, with one line naming the path
    let cases: [&[&str]; 5] = [
        &[
            "trace",
            "-d",
            "30s",
            "--perfetto",
            "/nonexistent/dir/x.json",
        ],
        &[
            "report",
            "-d",
            "30s",
            "--flamegraph",
            "/nonexistent/dir/x.svg",
        ],
        &[
            "report",
            "-d",
            "30s",
            "--folded",
            "/nonexistent/dir/x.folded",
        ],
        &[
            "report",
            "-d",
            "30s",
            "--folded-hold",
            "/nonexistent/dir/x.folded",
        ],
        &[
            "run",
            "--flamegraph-hold",
            "/nonexistent/dir/x.svg",
            "--",
            "sleep",
            "30",
        ],
    ];
    for args in cases {
        let t0 = Instant::now();
        let out = lockscope(args);
        let took = t0.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("cannot write /nonexistent/dir/x.")
                && err.contains("No such file or directory"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("tracing"), "nothing attached: {err}");
        assert!(took < Duration::from_secs(30), "{args:?} took {took:?}");
    }
    // a write error names the file
    // (a pipe mutex held 10 ms while another thread waits: a stack to write)
    let out = lockscope(&[
        "run",
        "--folded",
        "/dev/full",
        "--",
        bin(),
        "workload",
        "pipe-hold",
        "--rounds",
        "1",
        "--hold",
        "10ms",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write /dev/full: No space left on device"),
        "{err}"
    );
}

#[test]
fn map_full_losses_are_flagged_with_the_remedy() {
    // 8 writer threads on one pipe: 8 (lock, thread) keys, or more, in a
    // map of 2
    let (wl, tracer) = start_traced(
        &["pipe", "--threads", "8", "--ops", "20000"],
        &[
            "report",
            "--by",
            "task",
            "--json",
            "--source",
            "kernel-contention",
            "--max-entries",
            "2",
        ],
    );
    let done = wl.finish();
    assert_eq!(u(&done[0]["total_ops"]), 160_000);
    let (code, out, lines) = finish_with_stderr(tracer);
    assert_eq!(code, 0, "{lines:?}");
    let rep = report(&out);
    let full = rep.lost["map_full"];
    assert!(full > 0, "map_full counted: {:?}", rep.lost);
    assert!(rep.rows.len() <= 2, "a map of 2 holds 2 keys");
    let warn: Vec<&String> = lines.iter().filter(|l| l.contains("WARNING")).collect();
    assert_eq!(warn.len(), 1, "one warning line: {lines:?}");
    let w = warn[0];
    assert!(w.starts_with("lockscope: WARNING: "), "{w}");
    assert!(
        w.contains(&format!(
            "map_full {full}: rerun with --max-entries 8 (now 2"
        )),
        "{w}"
    );
}

/// Waits for a Tracer; returns its status, stdout and the stderr lines
/// it printed after "tracing".
fn finish_with_stderr(mut t: Tracer) -> (i32, String, Vec<String>) {
    let rx = std::mem::replace(&mut t.stderr, std::sync::mpsc::channel().1);
    let (code, out) = t.finish();
    // the reader thread ends at EOF, closing the channel
    let lines: Vec<String> = rx.iter().collect();
    (code, out, lines)
}

/// Peak RSS of a child in KiB, reaping it (wait4's rusage), and its status.
fn reap_with_maxrss(pid: u32) -> (i32, i64) {
    let mut status = 0i32;
    // SAFETY: rusage is a plain C struct; wait4 fills it and status.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own unreaped child; both pointers are valid.
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut ru) };
    assert_eq!(r, pid as i32, "wait4");
    (libc::WEXITSTATUS(status), ru.ru_maxrss)
}

#[test]
fn trace_perfetto_streams_in_bounded_memory() {
    require_root();
    // 8 writers on one pipe, 4 M writes: a few hundred thousand
    // contended waits, the default target sources on (their ring buffers
    // included); long enough that even a debug build on a loaded host,
    // whose consumer delivers ~20k operations a second, writes 50k
    let file = tmp("timeline.json");
    let f = file.display().to_string();
    // ring buffers are mapped twice and count fully in RSS (2 x 8 MiB per
    // source by default): 2 MiB keeps them out of what is measured here,
    // the memory that grows with the number of events
    let (wl, mut tracer) = start_traced(
        &["pipe", "--threads", "8", "--ops", "500000"],
        &["trace", "--perfetto", &f, "--ringbuf-mb", "2"],
    );
    let done = wl.finish();
    assert_eq!(u(&done[0]["total_ops"]), 4_000_000);
    // the trace ends when the workload is gone
    let mut stdout = tracer.child.stdout.take().expect("stdout");
    let pid = tracer.child.id();
    let (code, maxrss_kib) = reap_with_maxrss(pid);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).expect("stdout");
    let lines: Vec<String> = tracer.stderr.iter().collect();
    assert_eq!(code, 0, "{lines:?}");
    let text = std::fs::read_to_string(&file).expect("timeline file");
    let _ = std::fs::remove_file(&file);
    let v: Value = serde_json::from_str(&text).expect("the timeline is valid JSON");
    let evs = v["traceEvents"].as_array().expect("traceEvents");
    let waits = evs.iter().filter(|e| e["cat"] == "wait").count() as u64;
    let written: u64 = lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("lockscope: timeline of ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no timeline line: {lines:?}"));
    eprintln!(
        "perfetto: {written} operations, {waits} wait slices, {} bytes, max RSS {maxrss_kib} KiB",
        text.len()
    );
    assert!(waits <= written, "{waits} slices of {written} operations");
    // the timeline kept in memory took ~600 bytes per operation (310 MB
    // for 520k): 50k operations alone would have been 30 MB on top of the
    // ~40 MB lockscope needs anyway (a debug build on a loaded machine
    // drops many of the 4 M writes' waits from its ring buffers)
    assert!(
        written >= 50_000,
        "{written} operations: too few to show a bound"
    );
    assert!(
        maxrss_kib < 64 * 1024,
        "max RSS {maxrss_kib} KiB for {written} operations"
    );
}

#[test]
fn run_starts_the_command_in_the_host_mount_namespace() {
    require_root();
    let ours = std::fs::read_link("/proc/self/ns/mnt").expect("our mount ns");
    let dir = tmp("mnt");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let d = dir.display().to_string();
    // the command mounts a tmpfs and leaves a file in it, from its cwd
    let script = format!(
        "readlink /proc/self/ns/mnt; pwd; mount -t tmpfs lockscope-test {d} && touch {d}/seen"
    );
    let out = Command::new(bin())
        .args([
            "run",
            "--source",
            "kernel-contention",
            "--json",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .current_dir(&dir)
        .output()
        .expect("run lockscope");
    let text = String::from_utf8_lossy(&out.stdout);
    let seen = dir.join("seen").exists();
    let _ = Command::new("umount").arg(&dir).status();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut l = text.lines();
    assert_eq!(l.next(), Some(ours.to_str().expect("utf8")), "{text}");
    assert_eq!(l.next(), Some(d.as_str()), "cwd kept: {text}");
    assert!(seen, "the host sees the command's mount");
}

#[test]
fn run_perfetto_writes_the_workloads_known_holds() {
    require_root();
    // two 40 ms holds of a pthread mutex with a waiter behind each: the
    // timeline has the holder's two hold slices, each as long as the
    // holder measured it (within 2 ms), and the report still comes
    let file = tmp("run-timeline.json");
    let f = file.display().to_string();
    let out = Command::new(bin())
        .args([
            "run",
            "--perfetto",
            &f,
            "--json",
            "--source",
            "user-locks",
            "--",
            bin(),
            "workload",
            "mutex-hold",
            "--rounds",
            "2",
            "--hold",
            "40ms",
            "--json",
        ])
        .output()
        .expect("run lockscope");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let w: Value = serde_json::from_str(lines.next().expect("workload line")).expect("json");
    let rep = report(lines.next().expect("report line"));
    assert!(!rep.rows.is_empty(), "{rep:?}");
    let timeline = std::fs::read_to_string(&file).expect("timeline file");
    let _ = std::fs::remove_file(&file);
    assert!(err.contains(&format!("written to {f}")), "{err}");
    let v: Value = serde_json::from_str(&timeline).expect("the timeline is valid JSON");
    let evs = v["traceEvents"].as_array().expect("traceEvents");
    let holder = u(&w["holder_tid"]);
    let own: Vec<u64> = w["hold_ns"]
        .as_array()
        .expect("hold_ns")
        .iter()
        .map(u)
        .collect();
    assert_eq!(own.len(), 2, "{w}");
    // slices are in microseconds; the holder's long holds, in order
    let mut holds: Vec<(f64, u64)> = evs
        .iter()
        .filter(|e| e["cat"] == "hold" && u(&e["tid"]) == holder)
        .map(|e| {
            let ts = e["ts"].as_f64().expect("ts");
            (ts, (e["dur"].as_f64().expect("dur") * 1000.0) as u64)
        })
        .filter(|&(_, d)| d > own.iter().min().copied().unwrap_or(0) / 2)
        .collect();
    holds.sort_by(|a, b| a.0.total_cmp(&b.0));
    eprintln!("timeline holds {holds:?}, the holder's own {own:?}");
    assert_eq!(holds.len(), 2, "{holds:?}");
    for ((_, got), want) in holds.iter().zip(&own) {
        assert!(
            got.abs_diff(*want) <= 2_000_000,
            "hold slice {got} ns vs the holder's own {want} ns"
        );
    }
}
