//! Root tests of the mmap-lock and sched sources: real BPF on the running
//! kernel against workloads whose operations and timings the test knows
//! (`lockscope workload mmap | mmap-hold | runq`). CI runs them as root.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn report(workload: &[&str], extra: &[&str]) -> (Value, Vec<Value>) {
    let (out, wl) = traced("report", workload, extra);
    (serde_json::from_str(out.trim()).expect("report JSON"), wl)
}

/// [`report`] `--source mmap-lock --by lock EXTRA` over `workload`.
fn mmap_lock_by_lock(workload: &[&str], extra: &[&str]) -> (Value, Vec<Value>) {
    let mut args = vec!["--source", "mmap-lock", "--by", "lock"];
    args.extend_from_slice(extra);
    report(workload, &args)
}

fn assert_no_losses(rep_lost: &Value, source: &str) {
    for (k, v) in rep_lost.as_object().expect("lost") {
        if k.starts_with(&format!("{source}.")) {
            assert_eq!(u(v), 0, "{k}: {rep_lost}");
        }
    }
}

#[test]
fn mmap_workload_write_acquisitions_cover_every_mmap_and_munmap() {
    let (rep, wl) = mmap_lock_by_lock(&["mmap", "--threads", "4", "--ops", "2000"], &[]);
    let w = &wl[0];
    let pid = u(&w["pid"]);
    let (mmaps, munmaps) = (u(&w["mmap_calls"]), u(&w["munmap_calls"]));
    assert_eq!(munmaps, 8000, "the workload did what it says");
    assert_eq!(rep["sources"][0]["name"], "mmap-lock");
    let name = format!("mmap_lock of {pid} (");
    let mine: Vec<&Value> = rows(&rep)
        .iter()
        .filter(|r| {
            r["lock_name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&name))
        })
        .collect();
    for r in rows(&rep) {
        assert_eq!(u(&r["pid"]), pid, "-p shows only the workload: {r}");
        assert_eq!(r["source"], "mmap-lock");
        check_row_invariants(r);
    }
    let locks: BTreeSet<&str> = mine.iter().filter_map(|r| r["lock"].as_str()).collect();
    assert_eq!(
        locks.len(),
        1,
        "one address space, one mmap_lock: {locks:?}"
    );
    let row = |kind: &str| {
        mine.iter()
            .find(|r| r["kind"] == kind)
            .unwrap_or_else(|| panic!("a {kind} row: {rep}"))
    };
    let (wr, rd) = (row("rwsem-write"), row("rwsem-read"));
    // mmap and munmap each take the lock for write once
    assert!(
        u(&wr["acquired"]) >= mmaps + munmaps,
        "write acquisitions {} >= {mmaps} mmap + {munmaps} munmap",
        u(&wr["acquired"])
    );
    // munmap downgrades to read to free the pages: a read acquisition each
    // (never a wait: the downgrading thread holds the lock)
    assert!(
        u(&rd["acquired"]) >= munmaps,
        "read acquisitions {} >= {munmaps} munmap downgrades",
        u(&rd["acquired"])
    );
    assert!(u(&wr["wait_ns"]["total"]) > 0, "waits measured: {wr}");
    for r in [wr, rd] {
        let hold = &r["hold_ns"];
        assert!(u(&hold["total"]) > 0 && u(&hold["max"]) > 0, "holds: {r}");
        assert!(u(&hold["min"]) <= u(&hold["p50"]) && u(&hold["p99"]) <= u(&hold["max"]));
    }
    eprintln!(
        "mmap {mmaps} + munmap {munmaps}: {} write ({} contended) and {} read ({} \
         contended) acquisitions",
        u(&wr["acquired"]),
        u(&wr["count"]),
        u(&rd["acquired"]),
        u(&rd["count"])
    );
    // four threads contend: the write waits of some are long
    assert!(u(&wr["wait_ns"]["max"]) > 1_000, "{wr}");
    assert_no_losses(&rep["lost"], "mmap-lock");
}

/// The events of one thread and kind, in time order.
fn events_of<'a>(events: &'a [Value], tid: u64, kind: &str) -> Vec<&'a Value> {
    let mut v: Vec<&Value> = events
        .iter()
        .filter(|e| u(&e["tid"]) == tid && e["kind"] == kind && e["partial"] != true)
        .collect();
    v.sort_by_key(|e| u(&e["end_ns"]));
    v
}

/// `trace --source mmap-lock --summary` over `mmap-hold --rounds 8
/// --region-mb 1024 EXTRA`: (its JSON lines, the workload's report).
fn mmap_hold_trace(extra: &[&str]) -> (Vec<Value>, Value) {
    let mut workload = vec!["mmap-hold", "--rounds", "8", "--region-mb", "1024"];
    workload.extend_from_slice(extra);
    let (out, wl) = traced("trace", &workload, &["--source", "mmap-lock", "--summary"]);
    let lines = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    (lines, wl.into_iter().next().expect("one workload report"))
}

#[test]
fn known_write_hold_and_its_waiters() {
    let rounds = 8usize;
    let (lines, w) = mmap_hold_trace(&[]);
    let (end, events) = lines.split_last().expect("an end line");
    assert_eq!(end["type"], "end");
    assert_no_losses(&end["lost"], "mmap-lock");
    let long = 1_000_000; // 1 ms: the long holds and waits, not thread setup

    // the holder: one write hold per round, as long as its mprotect call
    assert_eq!(w["holder_fifo"], true, "root runs the holder SCHED_FIFO");
    let calls = nums(&w["holder_call_ns"]);
    // the mprotect holds: at least half the shortest mprotect call the
    // holder measured (a preempted mmap of its own may hold over 1 ms on
    // a loaded host, never that long)
    let shortest = calls.iter().copied().min().expect("calls");
    // the rounds' operations begin after every thread's set-up (a thread's
    // first allocation maps an arena, and may wait behind another's)
    let in_rounds = |e: &&Value| u(&e["begin_ns"]) >= u(&w["rounds_start_ns"]);
    let holds: Vec<&Value> = events_of(events, u(&w["holder_tid"]), "rwsem-write")
        .into_iter()
        .filter(in_rounds)
        .filter(|e| e["hold_ns"].as_u64().unwrap_or(0) > (shortest / 2).max(long))
        .collect();
    assert_eq!(holds.len(), rounds, "one long hold per round: {holds:?}");
    for (e, &call) in holds.iter().zip(&calls) {
        let hold = u(&e["hold_ns"]);
        eprintln!(
            "hold {hold} ns, call {call} ns: hold {:.2}% short of the call",
            (call - hold.min(call)) as f64 * 100.0 / call as f64
        );
        assert!(hold <= call, "hold {hold} ns inside the call of {call} ns");
        assert!(
            call - hold <= call / 20,
            "hold {hold} ns within 5% of the measured call {call} ns"
        );
        // it asks before the waiters do (they wait for its announcement,
        // then 200 us): no wait behind them; a brief reader of the address
        // space (a /proc/PID/maps read, e.g. lockscope naming callers) may
        // still hold it a moment (24 us in one loaded run)
        assert!(
            u(&e["wait_ns"]) <= call / 20,
            "the holder never waits long: {e}"
        );
    }
    let total_hold: u64 = holds.iter().map(|e| u(&e["hold_ns"])).sum();
    let total_call: u64 = calls.iter().sum();
    assert!(total_call - total_hold <= total_call / 20);

    // each waiter: a long wait in (nearly) every round, inside one of the
    // holder's holds, and bounded by what both threads measured: from its
    // request to the holder's release at least, its own blocked call at most
    // (a waiter on a busy machine may ask only after a hold ended: rarely)
    for (tid, kind, calls) in [
        (
            u(&w["writer_tid"]),
            "rwsem-write",
            nums(&w["writer_call_ns"]),
        ),
        (
            u(&w["reader_tid"]),
            "rwsem-read",
            nums(&w["reader_call_ns"]),
        ),
    ] {
        let waits: Vec<&Value> = events_of(events, tid, kind)
            .into_iter()
            .filter(in_rounds)
            .filter(|e| u(&e["wait_ns"]) > long)
            .collect();
        assert!(
            waits.len() * 2 >= rounds && waits.len() <= rounds,
            "{kind}: a long wait in most of the {rounds} rounds: {waits:?}"
        );
        for e in waits {
            let (begin, acquired, wait) = (u(&e["begin_ns"]), u(&e["end_ns"]), u(&e["wait_ns"]));
            let round = holds
                .iter()
                .position(|h| u(&h["end_ns"]) <= begin && begin <= u(&h["released_ns"]))
                .unwrap_or_else(|| panic!("{kind}: {e} asked during a hold: {holds:?}"));
            let h = holds[round];
            assert!(
                acquired >= u(&h["released_ns"]),
                "got it after the release: {e}"
            );
            assert!(
                wait >= u(&h["released_ns"]) - begin,
                "{kind}: waited at least until the release"
            );
            assert!(
                wait <= calls[round],
                "{kind}: wait {wait} ns inside its own blocked call {} ns",
                calls[round]
            );
            assert!(u(&e["hold_ns"]) < long, "{kind}: a short hold: {e}");
        }
    }
    for e in events {
        assert_eq!(e["source"], "mmap-lock");
        let name = format!("mmap_lock of {} (", u(&w["pid"]));
        assert!(
            e["lock_name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&name)),
            "{e}"
        );
    }
    // the summary agrees with the stream, operation by operation, and
    // its contended waits are the stream's operations that waited
    let report_rows = rows(&end["report"]);
    let summed: u64 = report_rows
        .iter()
        .map(|r| u(&r["acquired"]) + u(&r["failed"]) + u(&r["partial"]))
        .sum();
    assert_eq!(summed, events.len() as u64);
    let contended: u64 = report_rows.iter().map(|r| u(&r["count"])).sum();
    let acquired: u64 = report_rows.iter().map(|r| u(&r["acquired"])).sum();
    let waited = events
        .iter()
        .filter(|e| e["failed"] != true && u(&e["wait_ns"]) > 0)
        .count() as u64;
    assert_eq!(contended, waited, "{}", end["report"]["rows"]);
    // the waiters' blocked calls (over 1 ms, as they measured them) are
    // contended acquisitions; the rest of the process's acquisitions (the
    // region's and threads' set-up, the holder's, the munmaps after each
    // round) found the lock free, most of them
    let blocked = ["writer_call_ns", "reader_call_ns"]
        .iter()
        .map(|f| nums(&w[*f]).iter().filter(|&&c| c > long).count() as u64)
        .sum::<u64>();
    eprintln!(
        "mmap-hold: {contended} contended of {acquired} acquisitions; the waiters \
         blocked in {blocked} calls"
    );
    assert!(
        contended >= blocked,
        "{contended} contended, {blocked} blocked"
    );
    assert!(
        acquired - contended >= rounds as u64,
        "the holder's {rounds} holds at least were uncontended"
    );
}

#[test]
fn cgroup_filter_and_grouping_for_mmap_lock_and_sched() {
    let (name, rep, done) = report_in_new_cgroup(
        "lockscope-mm-test",
        &["mmap", "--threads", "2", "--ops", "500"],
        &["--source", "mmap-lock,sched"],
    );
    let rows = rows(&rep);
    for src in ["mmap-lock", "sched"] {
        let mine: Vec<&Value> = rows.iter().filter(|r| r["source"] == src).collect();
        assert_eq!(mine.len(), 1, "{src}: one row, the test's cgroup: {rep}");
        assert_eq!(mine[0]["cgroup"], name, "{src}: {rep}");
    }
    let mm = rows
        .iter()
        .find(|r| r["source"] == "mmap-lock")
        .expect("row");
    counts_every_mmap_and_munmap(mm, &done[0], ", in its cgroup");
}

/// The mmap workload's mmap-lock `row` counts each of its mmap and munmap
/// calls (`w`, its report: as many mmaps as munmaps) among its acquisitions.
#[track_caller]
fn counts_every_mmap_and_munmap(row: &Value, w: &Value, where_: &str) {
    assert!(
        u(&row["acquired"]) >= 2 * u(&w["munmap_calls"]),
        "every mmap and munmap of the workload{where_}: {row}"
    );
}

#[test]
fn runq_latency_matches_the_kernels_run_delay() {
    // three busy threads pinned to one CPU for 2 s: each is runnable but
    // not running about two thirds of the time
    let (rep, wl) = report(
        &["runq", "--threads", "3", "--busy", "2s"],
        &["--source", "sched", "--by", "task"],
    );
    let w = &wl[0];
    let tids = nums(&w["tids"]);
    let truth = nums(&w["run_delay_ns"]);
    assert_eq!(tids.len(), 3);
    for r in rows(&rep) {
        check_row_invariants(r);
        assert_eq!(r["kind"], "runqueue");
        assert!(r["hold_ns"].is_null());
    }
    for (tid, delay) in tids.iter().zip(&truth) {
        let row = rows(&rep)
            .iter()
            .find(|r| r["tid"].as_u64() == Some(*tid))
            .unwrap_or_else(|| panic!("a row for busy thread {tid}: {rep}"));
        let measured = u(&row["wait_ns"]["total"]);
        assert!(*delay > 200_000_000, "the threads really waited: {truth:?}");
        let diff = measured.abs_diff(*delay);
        eprintln!(
            "thread {tid}: run-queue wait {measured} ns, schedstat run delay {delay} ns, \
             off by {:.3}%",
            diff as f64 * 100.0 / *delay as f64
        );
        assert!(
            diff <= delay / 20,
            "thread {tid}: run-queue wait {measured} ns vs the kernel's run delay \
             {delay} ns (off by {diff} ns)"
        );
        // busy threads wait because they are preempted, not woken
        let preempted = u(&row["count"]) - u(&row["slept"]);
        assert!(
            preempted * 2 > u(&row["count"]),
            "mostly preemptions: {row}"
        );
    }
    assert_no_losses(&rep["lost"], "sched");
}

#[test]
fn tracing_started_mid_hold_is_partial_never_mistimed() {
    require_root();
    // the holder holds mmap_lock for write almost all the time (back to
    // back 60 ms mprotect calls), and tracing starts in the middle: its
    // first release is seen without its acquisition. Attaching can fall
    // between two calls (a gap of microseconds), or take longer than the
    // workload on a loaded machine, so up to 5 tries of 200 holds.
    for attempt in 1..=5 {
        let wl = Workload::start(
            &["mmap-hold", "--rounds", "200", "--region-mb", "2048"],
            "1ms",
        );
        // the rounds begin once the region is populated and the threads
        // exist; give them a moment more
        let pid = wl.pid().to_string();
        let holder_up = || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| {
                    d.flatten().any(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.trim() == "ls-mm-holder")
                    })
                })
                .unwrap_or(false)
        };
        for _ in 0..600 {
            if holder_up() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        let tracer = Tracer::start(&["trace", "-p", &pid, "--json", "--source", "mmap-lock"]);
        let done = wl.finish();
        let (code, out) = tracer.finish();
        assert_eq!(code, 0);
        let w = &done[0];
        let events: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .filter(|e: &Value| e["type"] == "wait")
            .collect();
        let holder = u(&w["holder_tid"]);
        let max_call = nums(&w["holder_call_ns"]).into_iter().max().expect("calls");
        let mine: Vec<&Value> = events.iter().filter(|e| u(&e["tid"]) == holder).collect();
        for e in &mine {
            if let Some(h) = e["hold_ns"].as_u64() {
                assert!(h <= max_call, "never longer than a call: {e}");
            }
        }
        let partial: Vec<&&Value> = mine.iter().filter(|e| e["partial"] == true).collect();
        if partial.is_empty() {
            eprintln!("attempt {attempt}: attached between two holds; again");
            continue;
        }
        // the hold in progress; at most one more if a call began while
        // the programs were being attached one after another
        assert!(partial.len() <= 2, "only the hold in progress: {partial:?}");
        for p in &partial {
            assert_eq!(u(&p["wait_ns"]), 0, "the wait is never timed: {p}");
            assert_eq!(u(&p["begin_ns"]), 0, "start not seen: {p}");
            assert_eq!(p["kind"], "rwsem-write");
        }
        // the first one was released before its acquisition could be seen
        // (no hold), or, when tracing began while the holder waited for the
        // lock, acquired with its start unseen: its hold is timed from the
        // acquisition, within one call (asserted above for every event)
        let p = partial[0];
        if let Some(h) = p["hold_ns"].as_u64() {
            assert!(
                u(&p["end_ns"]) < u(&p["released_ns"])
                    && u(&p["end_ns"]) + h == u(&p["released_ns"]),
                "a hold is timed only from a seen acquisition: {p}"
            );
        }
        return;
    }
    panic!("tracing never started inside one of the holder's holds");
}

#[test]
fn mmap_lock_rows_name_the_memory_cgroup_the_test_creates() {
    require_root();
    // the memory controller's hierarchy: cgroup v2, or v1 on a hybrid host
    // (this machine: the memory cgroup is then not the task's v2 cgroup)
    let mroot = lockscope::cgroup::memory_root().expect("a memory controller");
    let v2 = mroot == lockscope::cgroup::v2_root();
    if v2 {
        // children of the root get a memory cgroup of their own only with
        // the controller enabled for them
        let _ = std::fs::write(mroot.join("cgroup.subtree_control"), "+memory");
    }
    let name = format!("lockscope-memcg-test-{}", std::process::id());
    let dir = mroot.join(&name);
    std::fs::create_dir(&dir).expect("create a memory cgroup");
    let wl = Workload::start_paused(&["mmap", "--threads", "2", "--ops", "500"]);
    let pid = wl.pid().to_string();
    let moved = std::fs::write(dir.join("cgroup.procs"), &pid);
    let tracer = Tracer::start(&[
        "report",
        "-p",
        &pid,
        "--source",
        "mmap-lock",
        "--by",
        "cgroup",
        "--json",
    ]);
    wl.go();
    let done = wl.finish();
    let (code, out) = tracer.finish();
    let _ = std::fs::remove_dir(&dir);
    moved.expect("move the workload into the memory cgroup");
    assert_eq!(code, 0, "lockscope failed: {out}");
    let rep: Value = serde_json::from_str(out.trim()).expect("report JSON");
    let want = format!("/{name}");
    let rows = rows(&rep);
    assert_eq!(rows.len(), 1, "one process in one memory cgroup: {rep}");
    let r = &rows[0];
    assert_eq!(r["memcg"], want.as_str(), "{r}");
    eprintln!(
        "memcg {} (v2 hierarchy: {v2}), cgroup {}, lock {}",
        r["memcg"], r["cgroup"], r["lock_name"]
    );
    if !v2 {
        // the row stays the workload's v2 cgroup; the lock name also says
        // where the memory is charged
        let lock_name = r["lock_name"].as_str().expect("lock name");
        assert!(
            lock_name.ends_with(&format!("[memcg {want}]")),
            "{lock_name}"
        );
    } else {
        assert_eq!(r["cgroup"], want.as_str(), "{r}");
    }
    counts_every_mmap_and_munmap(r, &done[0], "");
}

#[test]
fn the_header_says_when_page_faults_skip_mmap_lock() {
    let (rep, wl) = mmap_lock_by_lock(&["mmap", "--threads", "2", "--ops", "500"], &[]);
    let src = &rep["sources"][0];
    assert_eq!(src["name"], "mmap-lock");
    let note = src["reason"].as_str().unwrap_or("");
    // every op faults in each of its 16 pages (64 KiB, touched a byte a page)
    let faults = 2 * 500 * 16;
    let reads: u64 = rows(&rep)
        .iter()
        .filter(|r| r["kind"] == "rwsem-read")
        .map(|r| u(&r["acquired"]))
        .sum();
    let per_vma = std::fs::read_to_string("/proc/kallsyms")
        .expect("kallsyms")
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("lock_vma_under_rcu"));
    eprintln!(
        "per-VMA locks {per_vma}: {reads} read acquisitions for {faults} faults \
         and {} munmaps; note {note:?}",
        u(&wl[0]["munmap_calls"])
    );
    assert_eq!(note.contains("per-VMA locks"), per_vma, "{src}");
    if per_vma {
        // the note is true: the faults mostly did not take mmap_lock
        assert!(reads < faults / 2, "{reads} reads for {faults} faults");
    } else {
        assert!(reads >= faults, "{reads} reads for {faults} faults");
    }
}

#[test]
fn mmap_lock_stacks_show_the_munmap_and_mmap_paths() {
    // every wait and hold sampled (1 in 1): one stack per contended wait,
    // and one per hold (every acquisition's)
    let (rep, wl) = mmap_lock_by_lock(
        &["mmap", "--threads", "2", "--ops", "20000"],
        &["--hold-stacks", "--stack-sample", "1"],
    );
    let w = &wl[0];
    let pid = u(&w["pid"]);
    let (mmaps, munmaps) = (u(&w["mmap_calls"]), u(&w["munmap_calls"]));
    let lost = &rep["lost"];
    for k in ["map_full", "stack_map_full", "slots_full"] {
        assert_eq!(u(&lost[format!("mmap-lock.{k}")]), 0, "{lost}");
    }
    let failed = u(&lost["mmap-lock.stack_failed"]);
    let name = format!("mmap_lock of {pid} (");
    let wr = rows(&rep)
        .iter()
        .find(|r| {
            r["kind"] == "rwsem-write"
                && r["lock_name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&name))
        })
        .unwrap_or_else(|| panic!("a write row: {rep}"));
    let stacks = wr["stacks"].as_array().expect("--stacks");
    // every contended write wait (sampled 1 in 1) has its stacks, and
    // every write hold; one lost at most per failed stack
    let sum: u64 = stacks.iter().map(|s| u(&s["count"])).sum();
    let count = u(&wr["count"]);
    let held: u64 = stacks.iter().map(|s| u(&s["hold_count"])).sum();
    let holds = u(&wr["holds"]);
    eprintln!(
        "write acquisitions {}, {count} contended, on stacks {sum}; holds {holds}, on \
         stacks {held}; stack_failed {failed}",
        u(&wr["acquired"])
    );
    assert!(
        sum <= count && sum + failed >= count,
        "{sum} stacked of {count}"
    );
    assert!(
        held <= holds && held + failed >= holds,
        "{held} stacked of {holds}"
    );
    // the paths, kernel (caller first, lock frames trimmed) and user
    let path = |kfirst: &str, ufn: &str| -> u64 {
        stacks
            .iter()
            .filter(|s| {
                let k = frames(s, "kernel");
                let u = frames(s, "user");
                k.first() == Some(&kfirst)
                    && u.iter().any(|f| f.contains(ufn))
                    && u.iter().any(|f| f.contains("workload::run_mmap"))
            })
            .map(|s| u(&s["hold_count"]))
            .sum()
    };
    let (on_munmap, on_mmap) = (path("__vm_munmap", "munmap"), path("vm_mmap_pgoff", "mmap"));
    eprintln!("munmap {munmaps} calls, {on_munmap} on its stacks; mmap {mmaps}, {on_mmap}");
    // one write hold per call, on its path (a failed stack at most loses
    // its own)
    assert!(on_munmap <= munmaps && on_munmap + failed >= munmaps);
    assert!(on_mmap <= mmaps && on_mmap + failed >= mmaps);
}

#[test]
fn mmap_lock_hold_flame_graph_weighs_the_known_mprotect_holds() {
    let (dir, svg, folded) = flame_files("mmhold", "holds");
    let rounds = 4u64;
    let (rep, wl) = mmap_lock_by_lock(
        &["mmap-hold", "--rounds", "4", "--region-mb", "1024"],
        &[
            "--flamegraph-hold",
            svg.to_str().expect("utf8"),
            "--folded-hold",
            folded.to_str().expect("utf8"),
        ],
    );
    let w = &wl[0];
    let calls: u64 = nums(&w["holder_call_ns"]).iter().sum();
    // the holder's mprotect holds (over the 1 ms threshold), on the stack
    // of their acquisition: kernel caller first, the workload's function
    let mut holds = (0, 0);
    for r in rows(&rep).iter().filter(|r| r["kind"] == "rwsem-write") {
        for st in r["stacks"].as_array().into_iter().flatten() {
            let k = frames(st, "kernel");
            let usr = frames(st, "user");
            if k.first() == Some(&"do_mprotect_pkey")
                && usr.iter().any(|f| f.contains("mmwork::mmap_hold"))
            {
                holds = (
                    holds.0 + u(&st["hold_count"]),
                    holds.1 + u(&st["hold_total_ns"]),
                );
            }
        }
    }
    eprintln!("mprotect holds on stacks: {holds:?}; the holder's calls {calls} ns");
    assert_eq!(holds.0, rounds, "{}", rep["rows"]);
    assert!(
        holds.1 <= calls && calls - holds.1 <= calls / 20,
        "holds {} ns within 5% of the calls {calls} ns",
        holds.1
    );
    // the folded file and the SVG say the same
    let text = std::fs::read_to_string(&folded).expect("folded written");
    let weight: u64 = text
        .lines()
        .filter(|l| l.contains("do_mprotect_pkey") && l.contains("mmwork::mmap_hold"))
        .map(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, w)| w.parse::<u64>().ok())
                .expect("weight")
        })
        .sum();
    assert_eq!(weight, holds.1, "{text}");
    let svg_text = std::fs::read_to_string(&svg).expect("svg written");
    xml_well_formed(&svg_text).unwrap_or_else(|e| panic!("SVG not well-formed: {e}"));
    assert!(
        svg_text.contains("do_mprotect_pkey ("),
        "the holding path in the SVG"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A thread's read waits over 1 ms that got the lock.
fn mine_long_reads(events: &[Value], tid: u64) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| {
            u(&e["tid"]) == tid
                && e["kind"] == "rwsem-read"
                && e["failed"] != true
                && e["wait_ns"].as_u64().unwrap_or(0) > 1_000_000
        })
        .collect()
}

#[test]
fn a_page_fault_during_a_write_hold_fails_its_trylock_then_waits() {
    // the faulter reads an emptied page of the region while the holder's
    // mprotect holds mmap_lock for write and has write-locked the region's
    // VMA: the fault cannot use the per-VMA lock, so it tries mmap_lock for
    // read (fails: success false), then waits for it
    let rounds = 8usize;
    let (lines, w) = mmap_hold_trace(&["--faulter"]);
    let (end, events) = lines.split_last().expect("an end line");
    assert_no_losses(&end["lost"], "mmap-lock");
    let long = 1_000_000;
    let f = u(&w["faulter_tid"]);
    let touches = nums(&w["faulter_call_ns"]);
    let blocked = touches.iter().filter(|&&t| t > long).count();
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| u(&e["tid"]) == f && e["kind"] == "rwsem-read")
        .collect();
    // the holder's long write holds: the rounds (the thread's start-up
    // page faults may fail a trylock too, while a sibling maps its stack)
    let holds: Vec<(u64, u64)> = events_of(events, u(&w["holder_tid"]), "rwsem-write")
        .into_iter()
        .filter(|e| e["hold_ns"].as_u64().unwrap_or(0) > 1_000_000)
        .map(|e| (u(&e["end_ns"]), u(&e["released_ns"])))
        .collect();
    assert_eq!(holds.len(), rounds, "one long hold a round");
    let in_hold = |t: u64| holds.iter().any(|&(a, r)| a <= t && t <= r);
    let failed: Vec<&&Value> = mine
        .iter()
        .filter(|e| e["failed"] == true && in_hold(u(&e["end_ns"])))
        .collect();
    let waits: Vec<&&Value> = mine
        .iter()
        .filter(|e| e["failed"] != true && u(&e["wait_ns"]) > long)
        .collect();
    eprintln!(
        "faulter: {blocked} of {rounds} touches blocked; {} failed read \
         trylocks inside the holds, {} long read waits",
        failed.len(),
        waits.len()
    );
    assert!(
        blocked * 2 >= rounds,
        "the faulter blocked in most rounds: {w}"
    );
    assert_eq!(waits.len(), blocked, "one long read wait per blocked touch");
    assert_eq!(
        failed.len(),
        blocked,
        "one failed trylock inside the holds per blocked touch"
    );
    // each long wait began right after its failed trylock (the same fault)
    for wt in &waits {
        let begin = u(&wt["begin_ns"]);
        let before = failed
            .iter()
            .filter(|e| u(&e["end_ns"]) <= begin)
            .map(|e| begin - u(&e["end_ns"]))
            .min()
            .unwrap_or(u64::MAX);
        assert!(before < long, "a failed trylock just before {wt}");
        assert!(u(&wt["wait_ns"]) <= *touches.iter().max().unwrap_or(&0));
    }
    for e in &failed {
        assert!(e["hold_ns"].is_null() && e["released_ns"].is_null(), "{e}");
    }
    // the summary counts the failures the stream shows (every thread's)
    let row_failed: u64 = rows(&end["report"]).iter().map(|r| u(&r["failed"])).sum();
    let all_failed = events.iter().filter(|e| e["failed"] == true).count();
    assert_eq!(row_failed, all_failed as u64);
    // where the waits went: every timed wait's split sums to it; a reader
    // (the faulter, mincore) sleeps in down_read, so its long waits are
    // off CPU but for the lock code's own run time
    for e in events
        .iter()
        .filter(|e| u(&e["begin_ns"]) != 0 && e["end_ns"] != Value::Null)
    {
        let sp = &e["split"];
        let (on, rq, asleep) = (u(&sp["oncpu"]), u(&sp["runnable"]), u(&sp["asleep"]));
        assert_eq!(on + rq + asleep, u(&e["wait_ns"]), "{e}");
    }
    let mut split_of_reads = (0, 0, 0, 0);
    for tid in [f, u(&w["reader_tid"])] {
        for e in mine_long_reads(events, tid) {
            let sp = &e["split"];
            // asleep for most of it: on CPU is the reader's own run time
            // (the lock code's), never the host's steal time meanwhile
            assert!(
                u(&sp["asleep"]) > 0 && u(&sp["oncpu"]) * 4 < u(&e["wait_ns"]),
                "a sleeping reader is mostly off CPU: {e}"
            );
            split_of_reads.0 += u(&e["wait_ns"]);
            split_of_reads.1 += u(&sp["oncpu"]);
            split_of_reads.2 += u(&sp["runnable"]);
            split_of_reads.3 += u(&sp["asleep"]);
        }
    }
    eprintln!(
        "long read waits {} ns: on CPU {}, runnable {}, asleep {}",
        split_of_reads.0, split_of_reads.1, split_of_reads.2, split_of_reads.3
    );
    for r in rows(&end["report"]) {
        let sp = &r["wait_split"];
        assert_eq!(
            u(&sp["oncpu"]) + u(&sp["runnable"]) + u(&sp["asleep"]),
            u(&r["wait_ns"]["total"]),
            "{r}"
        );
    }
}
