//! Root tests of live deadlock detection (`src/deadlock.rs`) against the
//! deadlock workloads' own truth (`deadwork`): `report -p PID` on a
//! process whose threads deadlock reports exactly their cycle (the tids,
//! the locks by symbol name, who waits for whom) on stderr, within the
//! threshold plus two scans (plus the machine's measured slowness) of the
//! moment the workload's threads were about to block, and in the report's
//! JSON; a program that always takes its locks in one order, contended, is
//! never reported. The deadlocked workloads are killed at the end (SIGKILL),
//! also when a test fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use common::*;
use lockscope::deadlock::{DEFAULT_THRESHOLD, Deadlock, SCAN_EVERY, monotonic_ns};
use serde_json::Value;

/// How often lockscope's report loop ticks (a scan is due at a tick).
const LOOP_TICK: Duration = Duration::from_millis(50);

/// The next stderr line of the tracer that contains `needle`, and when it
/// arrived (CLOCK_MONOTONIC ns).
fn line_with(rx: &Receiver<String>, needle: &str, timeout: Duration) -> (String, u64) {
    let end = std::time::Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return (l, monotonic_ns()),
            // shown, for a failure's story
            Ok(l) => eprintln!("[lockscope] {l}"),
            Err(e) => panic!("no '{needle}' from lockscope within {timeout:?}: {e}"),
        }
    }
}

/// Runs `report --json -p PID` on a deadlock workload until it reports the
/// deadlock, then stops it: (workload truth, the stderr line with the
/// cycle and the lines after it, when that line arrived, the report's
/// deadlocks).
fn detect(kind: &str) -> (Value, Vec<String>, u64, Vec<Deadlock>) {
    let mut w = Killed::paused(kind);
    let pid = w.0.id();
    let mut t = Tracer::start(&["report", "--json", "-p", &pid.to_string()]);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
    let mut truth = String::new();
    BufReader::new(w.0.stdout.take().expect("stdout piped"))
        .read_line(&mut truth)
        .expect("the workload's truth");
    let truth: Value = serde_json::from_str(&truth).expect("truth JSON");
    eprintln!("[test] truth {truth}");
    let (_, rx) = channel();
    let rx = std::mem::replace(&mut t.stderr, rx);
    let (first, at) = line_with(&rx, "lockscope: DEADLOCK in pid", attach_timeout());
    t.signal(libc::SIGINT);
    let rep = t.finish_report();
    let mut block = vec![first];
    block.extend(rx.iter().take_while(|l| l.starts_with("  ")));
    drop(w);
    (truth, block, at, rep.deadlocks)
}

/// The detection bound: the threshold, a scan to see the last edge and one
/// more to find it old enough (each at a loop tick), plus the machine's
/// measured slowness (a trivial trace's attach time).
fn bound() -> Duration {
    DEFAULT_THRESHOLD + 2 * (SCAN_EVERY + LOOP_TICK) + attach_unit()
}

/// Asserts the reported deadlock is exactly the workload's cycle: its
/// threads, each waiting for the lock (address and symbol) the workload
/// says, held by the thread that holds it, and was printed within the
/// bound of the cycle forming.
fn check(kind: &str, n: usize) {
    require_root();
    let (truth, block, at, deadlocks) = detect(kind);
    let pid = truth["pid"].as_u64().expect("pid") as u32;
    let threads = truth["threads"].as_array().expect("threads");
    assert_eq!(threads.len(), n);
    // tid -> (holds, waits for, its address)
    let mut want: BTreeMap<u32, (&str, &str, &str)> = BTreeMap::new();
    for th in threads {
        want.insert(
            th["tid"].as_u64().expect("tid") as u32,
            (
                th["holds"].as_str().expect("holds"),
                th["waits_for"].as_str().expect("waits_for"),
                th["waits_for_addr"].as_str().expect("waits_for_addr"),
            ),
        );
    }
    let holder_of = |lock: &str| {
        want.iter()
            .find(|(_, w)| w.0 == lock)
            .map(|(t, _)| *t)
            .expect("a holder")
    };

    assert_eq!(deadlocks.len(), 1, "one deadlock: {deadlocks:?}");
    let d = &deadlocks[0];
    assert_eq!(d.pid, pid);
    let tids: BTreeSet<u32> = d.threads.iter().map(|t| t.tid).collect();
    assert_eq!(tids, want.keys().copied().collect(), "the cycle's threads");
    assert_eq!(d.threads.len(), n);
    assert_eq!(d.locks.len(), n);
    for t in &d.threads {
        let (_, waits_for, addr) = want[&t.tid];
        assert_eq!(
            t.waits_for_lock, addr,
            "thread {} waits for {waits_for}",
            t.tid
        );
        assert_eq!(t.lock_name.as_deref(), Some(waits_for));
        assert_eq!(t.owner_tid, holder_of(waits_for), "{waits_for}'s holder");
        assert!(
            t.stack
                .iter()
                .any(|f| f.starts_with("ls_deadlock_second_lock")),
            "the scanned stack has the lock call: {:?}",
            t.stack
        );
        let line = format!(
            "thread {} ({}) waits for lock {addr} ({waits_for}) held by thread {}",
            t.tid,
            t.comm,
            holder_of(waits_for)
        );
        assert!(block[0].contains(&line), "{line} in: {}", block[0]);
    }
    let names: BTreeSet<&str> = d.locks.iter().filter_map(|l| l.name.as_deref()).collect();
    let truth_names: BTreeSet<&str> = field_strs(&truth, "locks", "name").into_iter().collect();
    assert_eq!(names, truth_names, "the cycle's locks by symbol");
    for l in &d.locks {
        let (holds, waits_for, _) = want[&l.waiter_tid];
        assert_eq!(l.name.as_deref(), Some(waits_for));
        assert_eq!(l.holder_tid, holder_of(waits_for));
        assert_ne!(holds, waits_for);
    }
    let scanned = block.iter().filter(|l| l.contains("scanned stack")).count();
    assert_eq!(scanned, n, "a scanned stack per thread: {block:?}");

    // timing: the cycle formed after the last thread's stamp (it was
    // about to call its second lock), and lockscope reports a cycle once
    // every edge has been seen for the threshold
    let blocked_at = truth["blocked_at_ns"].as_u64().expect("blocked_at_ns");
    let latency = Duration::from_nanos(at.saturating_sub(blocked_at));
    eprintln!(
        "[test] {kind}: reported {} ms after the threads were about to block \
         (since {:.3} s in the report; bound {} ms)",
        latency.as_millis(),
        d.since,
        bound().as_millis()
    );
    assert!(d.since_ns >= DEFAULT_THRESHOLD.as_nanos() as u64, "{d:?}");
    assert!(
        d.detected_ns >= blocked_at + d.since_ns,
        "persisted {} ns before detection, after the stamp",
        d.since_ns
    );
    assert!(latency >= DEFAULT_THRESHOLD, "not before the threshold");
    assert!(latency <= bound(), "reported within {:?}", bound());
}

/// Two threads deadlocked ABBA on LS_DEADLOCK_A / LS_DEADLOCK_B: the
/// 2-cycle, each thread waiting for the lock the other holds.
#[test]
fn an_abba_deadlock_is_reported_with_its_two_threads_and_locks() {
    check("deadlock-abba", 2);
}

/// Three threads in a 3-cycle on LS_CYCLE3_0..2.
#[test]
fn a_three_thread_cycle_is_reported_with_its_three_threads_and_locks() {
    check("deadlock-cycle3", 3);
}

/// Whether this kernel loads fentry programs (`lockscope doctor`).
fn fentry() -> bool {
    let out = lockscope(&["doctor", "--json"]);
    let rep: Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    rep["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .any(|c| c["name"] == "fentry" && c["ok"] == true)
}

/// deadlock-uffd: a thread holds a pipe's mutex asleep in a userfaultfd
/// fault; the thread that read the fault's message (the one to answer it)
/// waits for that mutex. lockscope reports the 2-cycle through the kernel:
/// the resolver waits for a kernel mutex held by the faulting thread, the
/// faulting thread for its fault's resolver; the resolver's stack names
/// the pipe write in the kernel and the workload's call; within the same
/// bound as a user-lock cycle. Needs fentry (the fault and its read are
/// function probes): the VM matrix runs it.
#[test]
fn a_cycle_through_a_kernel_mutex_and_a_userfaultfd_fault_is_reported() {
    require_root();
    if !fentry() {
        eprintln!("skipped on this kernel: needs fentry (the VM matrix runs this test)");
        return;
    }
    let (truth, block, at, deadlocks) = detect("deadlock-uffd");
    let pid = truth["pid"].as_u64().expect("pid") as u32;
    let holder = truth["holder_tid"].as_u64().expect("holder_tid") as u32;
    let resolver = truth["resolver_tid"].as_u64().expect("resolver_tid") as u32;
    assert_eq!(deadlocks.len(), 1, "one deadlock: {deadlocks:?}");
    let d = &deadlocks[0];
    assert_eq!(d.pid, pid);
    let tids: BTreeSet<u32> = d.threads.iter().map(|t| t.tid).collect();
    assert_eq!(tids, BTreeSet::from([holder, resolver]), "{d:?}");
    let thread = |tid: u32| d.threads.iter().find(|t| t.tid == tid).expect("thread");
    let lock = |waiter: u32| {
        d.locks
            .iter()
            .find(|l| l.waiter_tid == waiter)
            .expect("lock")
    };
    assert_eq!(thread(resolver).owner_tid, holder, "{d:?}");
    assert_eq!(lock(resolver).kind, LockKind::Mutex, "{d:?}");
    assert_eq!(lock(resolver).holder_tid, holder, "{d:?}");
    assert_eq!(thread(holder).owner_tid, resolver, "{d:?}");
    assert_eq!(lock(holder).kind, LockKind::UffdFault, "{d:?}");
    assert_eq!(lock(holder).holder_tid, resolver, "{d:?}");
    let stack = &thread(resolver).stack;
    assert!(
        stack.iter().any(|f| f.contains("pipe_write")),
        "the kernel stack of the mutex wait: {stack:?}"
    );
    assert!(
        stack
            .iter()
            .any(|f| f.starts_with("ls_deadlock_pipe_write")),
        "the workload's call: {stack:?}"
    );
    assert!(
        block[0].contains(&format!("thread {resolver} (ls-uffd-resolve) waits for")),
        "{block:?}"
    );
    let blocked_at = truth["blocked_at_ns"].as_u64().expect("blocked_at_ns");
    let latency = Duration::from_nanos(at.saturating_sub(blocked_at));
    eprintln!(
        "[test] deadlock-uffd: reported {} ms after the resolver was about to write \
         (bound {} ms)",
        latency.as_millis(),
        bound().as_millis()
    );
    assert!(latency >= DEFAULT_THRESHOLD, "not before the threshold");
    assert!(latency <= bound(), "reported within {:?}", bound());
}

/// Threads that take LS_ORDER_A then LS_ORDER_B, and threads that take
/// LS_ORDER_B alone, contended on both (the report shows their waits: a
/// thread waits for A while its holder waits for B), for longer than the
/// detector needs to report a cycle: no deadlock reported.
#[test]
fn locks_always_taken_in_one_order_are_never_reported() {
    require_root();
    let out = Command::new(bin())
        .args([
            "run",
            "--json",
            "--by",
            "lock",
            "--",
            workload_bin(),
            "lock-order-safe",
            "--json",
        ])
        .args(["--threads", "4", "--rounds", "300", "--hold", "2ms"])
        .output()
        .expect("run lockscope");
    let (w, rep) = workload_and_typed_report(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let elapsed = Duration::from_nanos(w["elapsed_ns"].as_u64().expect("elapsed_ns"));
    eprintln!(
        "[test] lock-order-safe ran {} ms under the detector",
        elapsed.as_millis()
    );
    let needed = DEFAULT_THRESHOLD + 2 * (SCAN_EVERY + LOOP_TICK);
    assert!(
        elapsed > needed,
        "the run ({elapsed:?}) outlasts what a cycle needs to be reported ({needed:?})"
    );
    // the threads did wait on both locks while another held them
    for name in ["LS_ORDER_A", "LS_ORDER_B"] {
        let waits: u64 = rep
            .rows
            .iter()
            .filter(|r| r.lock_name.as_deref() == Some(name))
            .map(|r| r.count)
            .sum();
        assert!(waits > 0, "waits on {name}: {:?}", rep.rows);
    }
    assert!(rep.deadlocks.is_empty(), "{:?}", rep.deadlocks);
    assert!(!stderr.contains("DEADLOCK"), "{stderr}");
}

/// `lockscope deadlocks --json -- lockscope workload KIND ARGS`: the
/// workload's truth and the end line's lock order.
fn lock_order_of(kind: &str, args: &[&str]) -> (Value, lockscope::lockorder::LockOrder) {
    let out = Command::new(bin())
        .args(["deadlocks", "--json", "--"])
        .arg(bin())
        .args(["workload", kind, "--json"])
        .args(args)
        .output()
        .expect("run lockscope deadlocks");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let truth = lines
        .iter()
        .find(|l| l["kind"] == kind)
        .unwrap_or_else(|| panic!("the workload's truth: {text}"))
        .clone();
    let end = lines
        .iter()
        .find(|l| l["type"] == "end")
        .unwrap_or_else(|| panic!("an end line: {text}"));
    let order = serde_json::from_value(end["lock_order"].clone()).expect("lock_order");
    (truth, order)
}

#[test]
fn locks_taken_in_both_orders_are_an_inversion_with_both_call_sites() {
    require_root();
    let rounds = 20;
    let (truth, order) = lock_order_of(
        "lock-order-inversion",
        &["--rounds", &rounds.to_string(), "--hold", "1ms"],
    );
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&order).unwrap_or_default()
    );
    assert_eq!(
        order.inversions.len(),
        1,
        "one pair in both orders: {order:?}"
    );
    let i = &order.inversions[0];
    assert_eq!(u(&truth["pid"]), u64::from(i.pid));
    // the pair by symbol, at the workload's addresses (lower first)
    let mut want = [
        (truth["a"]["addr"].as_str(), "LS_ORDER_A"),
        (truth["b"]["addr"].as_str(), "LS_ORDER_B"),
    ];
    want.sort();
    assert_eq!(
        [
            (
                Some(i.lock_a.as_str()),
                i.lock_a_name.as_deref().unwrap_or("")
            ),
            (
                Some(i.lock_b.as_str()),
                i.lock_b_name.as_deref().unwrap_or("")
            ),
        ],
        want
    );
    // each order as many times as its thread took it, first by that
    // thread, from the function that takes the locks in that order
    let a_is_lock_a = i.lock_a_name.as_deref() == Some("LS_ORDER_A");
    let (ab, ba) = if a_is_lock_a {
        (&i.a_then_b, &i.b_then_a)
    } else {
        (&i.b_then_a, &i.a_then_b)
    };
    for (edge, tid, f) in [
        (ab, u(&truth["ab_tid"]), "ls_order_a_then_b"),
        (ba, u(&truth["ba_tid"]), "ls_order_b_then_a"),
    ] {
        assert_eq!(edge.count, rounds, "{edge:?}");
        assert_eq!(u64::from(edge.first.tid), tid, "{edge:?}");
        for c in [&edge.first.outer_caller, &edge.first.inner_caller] {
            assert!(
                c.as_deref().is_some_and(|c| c.starts_with(f)),
                "taken in {f}: {edge:?}"
            );
        }
    }
    assert_eq!(order.dropped, Default::default());
}

#[test]
fn locks_always_taken_in_one_order_are_no_inversion() {
    require_root();
    let (threads, rounds) = (4u64, 50u64);
    let (_, order) = lock_order_of(
        "lock-order-safe",
        &[
            "--threads",
            &threads.to_string(),
            "--rounds",
            &rounds.to_string(),
            "--hold",
            "1ms",
        ],
    );
    assert!(order.inversions.is_empty(), "{order:?}");
    // every thread's holds were seen: B each round, and A too by half
    assert!(
        order.holds >= threads * rounds + threads / 2 * rounds,
        "{order:?}"
    );
    assert!(order.orders >= 1, "A then B was seen: {order:?}");
}
