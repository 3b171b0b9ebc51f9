//! Safe defaults (issue 12): what runs without `--source`, and one wait
//! counted once when two sources can see it. Root; CI runs them as root.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use serde_json::Value;

fn source_names(rep: &Report) -> BTreeSet<String> {
    available_sources(rep).into_iter().collect()
}

/// The types of the BPF programs a process holds (`bpftool prog show`).
fn prog_types_of(pid: u32) -> BTreeSet<String> {
    bpf_objects_of(pid)
        .into_iter()
        .filter(|(kind, _)| kind == "prog")
        .map(|(_, id)| {
            let out = Command::new("bpftool")
                .args(["prog", "show", "id", &id.to_string(), "--json"])
                .output()
                .expect("bpftool");
            let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
            v["type"].as_str().expect("type").to_string()
        })
        .collect()
}

/// System-wide without `--source`: kernel-contention only, no uprobe (no
/// program of the kprobe type, which uprobes are), so a bystander's
/// uncontended pthread calls trap nowhere; its 5000 lock/unlock pairs run
/// while the report is attached and no program of lockscope ran for them.
#[test]
fn the_default_system_wide_report_attaches_no_uprobe() {
    require_root();
    let tracer = Tracer::start(&["report", "--json"]);
    let types = prog_types_of(tracer.pid());
    assert!(!types.is_empty(), "lockscope holds its programs");
    assert!(
        !types.contains("kprobe"),
        "no uprobe or kprobe program system-wide by default: {types:?}"
    );
    let wl = Workload::start_paused(&["mutex-pairs", "--threads", "1", "--ops", "5000"]);
    wl.go();
    let w = &wl.finish()[0];
    tracer.signal(libc::SIGINT);
    let rep = tracer.finish_report();
    assert_eq!(
        source_names(&rep),
        BTreeSet::from(["kernel-contention".to_string()]),
        "{:?}",
        rep.sources
    );
    let lock = w["lock"].as_str().expect("workload lock");
    let seen = rows_of(&rep, lock);
    assert!(
        seen.is_empty(),
        "the bystander's mutex is in no row: {seen:?}"
    );
    for p in &rep.bpf_programs {
        let name = &p.name;
        assert!(
            !name.starts_with("ulock") && !name.starts_with("ucond"),
            "no user-space lock program: {p:?}"
        );
    }
}

/// With `-p`, the futex source runs by default too (pthread contention
/// from futex waits: nothing on an uncontended lock), user-locks (uprobes
/// on every lock call) only when named.
#[test]
fn a_target_gets_futex_by_default_and_user_locks_only_when_named() {
    let (wl, tracer) = start_traced(
        &["mutex-pairs", "--threads", "1", "--ops", "4321"],
        &["report", "--json", "--by", "lock"],
    );
    let w = &wl.finish()[0];
    tracer.signal(libc::SIGINT);
    let rep = tracer.finish_report();
    let names = source_names(&rep);
    for s in ["kernel-contention", "futex"] {
        assert!(names.contains(s), "{s} runs for a target: {names:?}");
    }
    for s in ["mmap-lock", "sched", "user-locks"] {
        assert!(!names.contains(s), "{s} is opt-in: {names:?}");
    }
    // one thread: not one of its 4321 pairs entered the kernel
    let lock = w["lock"].as_str().expect("workload lock");
    let rs = rows_of(&rep, lock);
    assert!(rs.is_empty(), "{rs:?}");
}

/// `trace -p PID --json --source SOURCES` over `lockscope workload
/// mmap-hold`, held until attached: (workload report, events).
fn mmap_hold(sources: &str, rounds: usize) -> (Value, Vec<EventLine>) {
    let (wl, tracer) = start_traced(
        &[
            "mmap-hold",
            "--region-mb",
            "256",
            "--rounds",
            &rounds.to_string(),
        ],
        &["trace", "--json", "--source", sources],
    );
    let w = wl.finish().remove(0);
    tracer.signal(libc::SIGINT);
    let (code, out) = tracer.finish();
    assert_eq!(code, 0, "{out}");
    (w, trace_events(&out))
}

/// Waits of thread `tid` of `kind` (the writer and the reader of the
/// workload wait on its mmap_lock alone), by source: (count, total ns).
fn mmap_waits(events: &[EventLine], tid: u64, kind: LockKind, source: &str) -> (u64, u64) {
    events
        .iter()
        .filter(|e| u64::from(e.tid) == tid && e.source == source && e.kind == kind)
        .filter(|e| !e.partial)
        .fold((0, 0), |(n, t), e| (n + 1, t + e.wait_ns))
}

/// One blocked mmap_lock wait, one row: with mmap-lock on, kernel-contention
/// leaves the waiter's own mmap_lock to it (no kernel-contention row on it,
/// and the two sources' wait time together stays within the waiters' own
/// measured calls: a wait counted twice would be about double); with it
/// off, kernel-contention counts them (what it sees of them: not a
/// writer's optimistic spinning).
#[test]
fn an_mmap_lock_wait_is_counted_once() {
    require_root();
    let rounds = 5;
    for both in [true, false] {
        let sources = if both {
            "kernel-contention,mmap-lock"
        } else {
            "kernel-contention"
        };
        let (w, rep) = mmap_hold(sources, rounds);
        let rep = &rep[..];
        let mut kc_waits = 0;
        for (who, kind) in [
            ("writer", LockKind::RwsemWrite),
            ("reader", LockKind::RwsemRead),
        ] {
            let tid = u(&w[format!("{who}_tid")]);
            let calls: u64 = w[format!("{who}_call_ns")]
                .as_array()
                .expect("calls")
                .iter()
                .map(u)
                .sum();
            let (kc_n, kc_ns) = mmap_waits(rep, tid, kind, "kernel-contention");
            let (mm_n, mm_ns) = mmap_waits(rep, tid, kind, "mmap-lock");
            eprintln!(
                "{sources}: {who}: kernel-contention {kc_n} waits {kc_ns} ns, \
                 mmap-lock {mm_n} waits {mm_ns} ns; its calls took {calls} ns"
            );
            // the thread's own few other mmap_lock acquisitions (thread
            // start, its stack) add microseconds; a wait counted twice
            // would add as much again as the calls
            assert!(
                kc_ns + mm_ns <= calls + calls / 10,
                "{who}: waits of {kc_ns} + {mm_ns} ns within calls of {calls} ns"
            );
            if both {
                assert_eq!(kc_n, 0, "{who}: kernel-contention leaves it to mmap-lock");
                assert!(mm_ns > calls / 2, "{who}: mmap-lock saw the wait");
            } else {
                // the contention tracepoints do not cover a writer's
                // optimistic spinning on a running owner (perf lock
                // contention has the same blind spot): how much of a
                // writer's call they see varies, so only the sum is bound
                assert_eq!(mm_n, 0);
                kc_waits += kc_n;
            }
        }
        if !both {
            assert!(
                kc_waits >= 1,
                "with mmap-lock off, kernel-contention counts the waits on it"
            );
        }
    }
}

/// `run -o FILE --json` with a command that writes to stdout: the report
/// goes to the file alone (parseable, the workload's known lock pairs in
/// it) and the command's output stays on stdout.
#[test]
fn run_writes_its_report_to_the_o_file() {
    require_root();
    let dir = std::env::temp_dir().join(format!("ls-o-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("report.json");
    let out = run_workload(
        &[
            "--json",
            "--by",
            "lock",
            "--source",
            "user-locks",
            "-o",
            file.to_str().expect("utf8"),
        ],
        &["mutex-pairs", "--threads", "1", "--ops", "2500"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // stdout: the command's own line only
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "only the workload's output: {text}");
    let w: Value = serde_json::from_str(lines[0]).expect("workload JSON");
    let rep = report(&std::fs::read_to_string(&file).expect("read -o file"));
    let lock = w["lock"].as_str().expect("lock");
    let rs: Vec<&Row> = rows_of(&rep, lock)
        .into_iter()
        .filter(|r| r.source == "user-mutex")
        .collect();
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert_eq!(rs[0].acquired, Some(2500));
    assert_eq!(rs[0].count, 0, "one thread: uncontended");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `trace -- CMD` starts the command, traces it, ends when it exits and
/// exits with its status; times are relative to the start, never zero,
/// and the waiter's waits come in order, one per round of the workload.
#[test]
fn trace_starts_a_command_and_exits_with_its_status() {
    require_root();
    let rounds = 4;
    let out = Command::new(bin())
        .args(["trace", "--source", "kernel-contention", "--"])
        .args([bin(), "workload", "pipe-hold", "--hold", "10ms", "--rounds"])
        .arg(rounds.to_string())
        .output()
        .expect("trace");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    // the workload's own line names its waiter
    let wl_line = text
        .lines()
        .find(|l| l.starts_with("workload pipe-hold:"))
        .expect("the workload's line");
    let waiter = wl_line
        .split("waiter ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .expect("waiter tid");
    let mut times = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        // acq(s) rel(s) pid comm tid kind ...
        if f.len() > 5 && f[4] == waiter && f[5] == "mutex" {
            times.push(f[0].parse::<f64>().expect("acq(s)"));
        }
    }
    assert_eq!(times.len(), rounds, "one wait per round: {text}");
    assert!(times.iter().all(|&t| t > 0.0), "{times:?}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let headers = text.lines().filter(|l| l.contains("acq(s)")).count();
    assert_eq!(headers, 1, "one header: {text}");

    // the command's exit status is lockscope's
    let out = Command::new(bin())
        .args([
            "trace",
            "--source",
            "kernel-contention",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .output()
        .expect("trace");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `top --batch` (for logs and pipes) prints each interval's table; over
/// intervals, the workload's waits on its pipe mutex add up to its rounds.
#[test]
fn top_batch_prints_every_interval_for_a_pipe() {
    let rounds = 6;
    let (wl, tracer) = start_traced(
        &["pipe-hold", "--rounds", "6", "--hold", "50ms"],
        &[
            "top",
            "--batch",
            "-i",
            "100ms",
            "--source",
            "kernel-contention",
            "--by",
            "caller",
        ],
    );
    wl.finish();
    // the target's exit ends the run
    let (code, out) = tracer.finish();
    assert_eq!(code, 0, "{out}");
    let intervals = out
        .lines()
        .filter(|l| l.starts_with("--- interval "))
        .count();
    assert!(intervals >= 2, "an interval table every 100 ms: {out}");
    let waits: u64 = out
        .lines()
        .filter(|l| l.contains(" anon_pipe_write") && l.contains(" mutex "))
        .map(|l| {
            l.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .expect("contended count")
        })
        .sum();
    assert_eq!(waits, rounds, "{out}");
}

/// `run --json -- lockscope workload mutex-hold ...` with these sources:
/// (the workload's JSON line, the report).
fn mutex_hold_under(sources: &str, rounds: usize, hold: &str) -> (Value, Report) {
    let out = Command::new(bin())
        .args(["run", "--json", "--by", "lock", "--source", sources, "--"])
        .args([bin(), "workload", "mutex-hold", "--json", "--hold", hold])
        .args(["--rounds", &rounds.to_string()])
        .output()
        .expect("run");
    workload_and_typed_report(&out)
}

/// The waiter's blocked pthread_mutex_lock calls are futex waits: with
/// futex alone they are the futex-mutex rows of the mutex's address, one per
/// round; with user-locks on too, they are the pthread row only (the
/// futex source leaves waits inside a traced lock call to it). Both ways,
/// the time is the waiter's own measured wait.
#[test]
fn a_pthread_wait_is_counted_once_with_or_without_user_locks() {
    require_root();
    let rounds = 2;
    let total_wait = |w: &Value| -> u64 { total_of(w, "waiter_wait_ns") };
    let slack = 2_000_000 * rounds as u64;

    let (w, rep) = mutex_hold_under("futex", rounds, "60ms");
    let lock = w["lock"].as_str().expect("lock");
    let own = total_wait(&w);
    let fx = rows_of(&rep, lock);
    assert_eq!(fx.len(), 1, "one futex row for the mutex: {fx:?}");
    assert_eq!(fx[0].source, "futex-mutex");
    assert_eq!(fx[0].kind, Some(LockKind::UserMutex));
    assert_eq!(fx[0].tid.map(u64::from), w["waiter_tid"].as_u64(), "{fx:?}");
    assert_eq!(fx[0].count, rounds as u64, "{fx:?}");
    let got = fx[0].wait_ns.total;
    eprintln!("futex alone: {got} ns of futex waits; the waiter's own {own} ns");
    // inside the waiter's own lock calls, give or take the wake-ups
    assert!(got <= own + slack && got + slack >= own, "{got} vs {own}");

    let (w, rep) = mutex_hold_under("user-locks,futex", rounds, "60ms");
    let lock = w["lock"].as_str().expect("lock");
    let own = total_wait(&w);
    let rs = rows_of(&rep, lock);
    assert!(
        rs.iter().all(|r| r.source == "user-mutex"),
        "the futex waits are not counted again: {rs:?}"
    );
    // (the holder's own acquisitions are uncontended: not waits at all)
    let got: u64 = rs.iter().map(|r| r.wait_ns.total).sum();
    eprintln!(
        "user-locks and futex: {got} ns in the mutex's pthread rows; the waiter's own {own} ns"
    );
    assert!(got <= own + slack && got + slack >= own, "{got} vs {own}");
}
