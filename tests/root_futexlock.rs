//! Root tests of the futex source as the default user-space contention
//! source for targets: pthread mutex, rwlock and condvar waits told apart
//! from futex(2) alone (no uprobe), each against the truth lockscope's own
//! workloads (`ulockwork`) measure: the blocked waits they made, how long,
//! and which thread held the lock.

mod common;

use common::*;
use serde_json::Value;

const MS: u64 = 1_000_000;

/// `lockscope trace --json --summary -- lockscope workload --json
/// WORKLOAD` under the default sources: (workload report, wait events,
/// end report, in which the futex source lost nothing).
fn trace_run(workload: &[&str]) -> (Value, Vec<EventLine>, Report) {
    trace_run_with(&[], workload)
}

/// [`trace_run`] with more lockscope options (`extra`); nothing of the
/// futex source lost.
fn trace_run_with(extra: &[&str], workload: &[&str]) -> (Value, Vec<EventLine>, Report) {
    let (w, events, report) = trace_summary(extra, workload);
    futex_lost_nothing(&report);
    (w, events, report)
}

/// [`trace_run`] of the workload KIND: ROUNDS holds of HOLD.
fn hold_run(kind: &str, hold: &str, rounds: usize) -> (Value, Vec<EventLine>, Report) {
    trace_run(&[kind, "--hold", hold, "--rounds", &rounds.to_string()])
}

fn futex_lost_nothing(rep: &Report) {
    for (k, v) in &rep.lost {
        if k.starts_with("futex.") {
            assert_eq!(*v, 0, "{k} lost: {:?}", rep.lost);
        }
    }
}

fn list(w: &Value, field: &str) -> Vec<u64> {
    w[field].as_array().expect(field).iter().map(u).collect()
}

/// The default sources of a target see each blocked pthread_mutex_lock of
/// global-hold as one futex-mutex wait on LOCKSCOPE_GLOBAL_MUTEX (named by
/// its symbol), as long as the waiter says it blocked (within 2 ms), with
/// the holder thread the workload names, and no uprobe source runs.
#[test]
fn default_sources_see_exactly_the_blocked_mutex_waits_their_length_and_holder() {
    global_hold_seen_exactly(&[], "tp_btf");
}

/// The same with the syscall tracepoints (`--backend tracepoint`): the same
/// waits, lengths and holder as the scheduler's view.
#[test]
fn the_syscall_backend_sees_the_same_waits_lengths_and_holder() {
    global_hold_seen_exactly(&["--backend", "tracepoint"], "tracepoint");
}

/// The check of the two tests above, with lockscope options `extra`; the
/// futex source runs its `backend`.
fn global_hold_seen_exactly(extra: &[&str], backend: &str) {
    // the symbol is read from the live process when lockscope decodes the
    // first wait: rounds enough to outlive a busy machine's decoding lag
    let rounds = 20;
    let (w, events, rep) = trace_run_with(
        extra,
        &[
            "global-hold",
            "--hold",
            "40ms",
            "--rounds",
            &rounds.to_string(),
        ],
    );
    let futex = rep.sources.iter().find(|s| s.name == "futex");
    assert_eq!(
        futex.and_then(|s| s.backend.as_deref()),
        Some(backend),
        "{:?}",
        rep.sources
    );
    let names = available_sources(&rep);
    assert!(names.contains(&"futex".to_string()), "{names:?}");
    assert!(
        !names.contains(&"user-locks".to_string()),
        "user-locks only when named: {names:?}"
    );
    let lock = w["lock"].as_str().expect("lock");
    let waiter = u(&w["waiter_tid"]);
    let holder = u(&w["holder_tid"]);
    let own = list(&w, "waiter_wait_ns");
    assert_eq!(own.len(), rounds);

    // the stream: one wait per round, each as long as the waiter's own
    let mine: Vec<&EventLine> = events.iter().filter(|e| e.lock == lock).collect();
    assert_eq!(mine.len(), rounds, "one wait per round: {mine:?}");
    let runq = list(&w, "waiter_runq_ns");
    for ((e, want), runq) in mine.iter().zip(&own).zip(&runq) {
        assert_eq!(e.source, "futex-mutex", "{e:?}");
        assert_eq!(e.kind, LockKind::UserMutex, "{e:?}");
        assert_eq!(u64::from(e.tid), waiter, "{e:?}");
        assert_eq!(
            e.holder_tid.map(u64::from),
            Some(holder),
            "the releaser: {e:?}"
        );
        let got = e.wait_ns;
        assert!(
            got <= *want && want - got <= 2 * MS + runq,
            "a futex wait inside the waiter's own lock call, within 2 ms and the {runq} ns it \
             was runnable: got {got} want {want}"
        );
        // a line streamed before lockscope could read the new process's
        // symbols has no name yet; it never has another
        assert!(
            e.lock_name
                .as_deref()
                .is_none_or(|n| n.starts_with("LOCKSCOPE_GLOBAL_MUTEX")),
            "{e:?}"
        );
    }

    // the report: one lock row, counted exactly, named, held by the holder
    let rs = rows_of(&rep, lock);
    assert_eq!(rs.len(), 1, "{rs:?}");
    let r = rs[0];
    check_row(r);
    assert_eq!(r.source, "futex-mutex");
    assert_eq!(r.kind, Some(LockKind::UserMutex));
    assert_eq!(r.count, rounds as u64, "{r:?}");
    assert!(
        r.lock_name
            .as_deref()
            .is_some_and(|n| n.starts_with("LOCKSCOPE_GLOBAL_MUTEX")),
        "{r:?}"
    );
    let total: u64 = own.iter().sum();
    let got = r.wait_ns.total;
    assert!(
        got <= total && total - got <= 2 * MS * rounds as u64,
        "{got} vs {total}"
    );
    let hs: Vec<&HolderRow> = rep.holders.iter().filter(|h| h.lock == lock).collect();
    assert_eq!(hs.len(), 1, "{hs:?}");
    assert_eq!(u64::from(hs[0].holder_tid), holder, "{hs:?}");
    assert_eq!(hs[0].waits, rounds as u64, "{hs:?}");
}

/// A condvar wait is a futex wait of kind pthread-cond (source futex, not
/// a lock row, no holder), one per signalled round.
#[test]
fn condvar_waits_are_condvar_waits_not_lock_contention() {
    let rounds = 5;
    let (w, events, rep) = trace_run(&["cond-wait", "--rounds", &rounds.to_string()]);
    let cond = w["lock"].as_str().expect("condvar address");
    let waiter = u(&w["waiter_tid"]);
    let rs = rows_of(&rep, cond);
    assert!(!rs.is_empty(), "condvar rows: {:?}", rep.rows);
    for r in &rs {
        check_row(r);
        assert_eq!(r.source, "futex", "{r:?}");
        assert_eq!(r.kind, Some(LockKind::UserCond), "{r:?}");
        assert_eq!(r.tid.map(u64::from), Some(waiter), "{r:?}");
    }
    let count: u64 = rs.iter().map(|r| r.count).sum();
    assert_eq!(count, rounds as u64, "one blocked wait per round: {rs:?}");
    // nothing of this process is lock contention (the signaller releases
    // the mutex before it signals)
    let pid = u(&w["pid"]);
    let locks: Vec<&Row> = rep
        .rows
        .iter()
        .filter(|r| {
            u64::from(r.pid.unwrap_or_else(|| panic!("a row's pid: {r:?}"))) == pid
                && r.source.starts_with("futex-")
        })
        .collect();
    assert!(locks.is_empty(), "no lock rows: {locks:?}");
    assert!(
        !rep.holders.iter().any(|h| h.lock == cond),
        "a condvar has no holder: {:?}",
        rep.holders
    );
    // each wait lies inside the waiter's own pthread_cond_wait
    let mine: Vec<&EventLine> = events.iter().filter(|e| e.lock == cond).collect();
    assert_eq!(mine.len(), rounds, "{mine:?}");
    for (e, want) in mine.iter().zip(list(&w, "waiter_wait_ns")) {
        assert!(e.wait_ns <= want, "{e:?} vs {want}");
        assert_eq!(
            e.holder_tid.map(u64::from),
            Some(u(&w["holder_tid"])),
            "woken by: {e:?}"
        );
    }
}

/// rwlock-hold: a reader behind a writer is a read wait; a writer behind a
/// writer and a writer behind readers are write waits, on the rwlock's
/// address, each as long as the waiter's own (within 2 ms), held by the
/// main thread.
#[test]
fn rwlock_waits_are_classified_read_and_write() {
    let rounds = 3;
    let (w, events, rep) = hold_run("rwlock-hold", "30ms", rounds);
    let lock = w["lock"].as_str().expect("rwlock address");
    let holder = u(&w["holder_tid"]);
    let count = |kind: LockKind| -> u64 {
        rows_of(&rep, lock)
            .into_iter()
            .filter(|r| r.kind == Some(kind))
            .inspect(|r| {
                check_row(r);
                assert_eq!(r.source, "futex-rwlock", "{r:?}");
            })
            .map(|r| r.count)
            .sum()
    };
    assert_eq!(
        count(LockKind::UserRwlockRead),
        u(&w["reads"]),
        "{:?}",
        rep.rows
    );
    assert_eq!(
        count(LockKind::UserRwlockWrite),
        u(&w["writes"]),
        "{:?}",
        rep.rows
    );
    assert_eq!(u(&w["reads"]) + u(&w["writes"]), 3 * rounds as u64);
    // in order: read, write, write per round
    let mine: Vec<&EventLine> = events.iter().filter(|e| e.lock == lock).collect();
    let own = list(&w, "waiter_wait_ns");
    assert_eq!(mine.len(), own.len(), "{mine:?}");
    for (i, (e, want)) in mine.iter().zip(&own).enumerate() {
        let kind = if i % 3 == 0 {
            LockKind::UserRwlockRead
        } else {
            LockKind::UserRwlockWrite
        };
        assert_eq!(e.kind, kind, "wait {i}: {e:?}");
        assert_eq!(e.holder_tid.map(u64::from), Some(holder), "wait {i}: {e:?}");
        let got = e.wait_ns;
        assert!(
            got <= *want && want - got <= 2 * MS,
            "wait {i}: got {got} want {want}"
        );
    }
}

/// heap-hold: a heap mutex (no symbol) is named after the workload
/// function whose lock call first waited on it, found in the waiter's user
/// stack at its first wait (glibc has no frame pointers: found among the
/// stack words; a streamed wait has the name once lockscope has read them),
/// and that function is the rows' caller; each blocked
/// pthread_mutex_lock is one wait, counted exactly, in stream and report.
#[test]
fn a_heap_mutex_is_named_after_the_function_that_first_waited_on_it() {
    // the caller is read from the live process when lockscope decodes the
    // first wait: rounds enough that the workload outlives a busy
    // machine's decoding lag (6 rounds of 40 ms sometimes did not)
    let rounds = 20;
    // Each wait lies inside the waiter's own lock call, within 2 ms of it
    // plus the time the waiter was runnable across the call (schedstat),
    // which may fall after its switch-in. (ci41 once saw a wait 10.3 ms
    // longer than its call: the sched backend's program had not run for
    // the waiter's switch-in; futex.bpf.c now ends such a wait from the
    // scheduler's accounting.)
    let (w, events, rep) = hold_run("heap-hold", "40ms", rounds);
    let lock = w["lock"].as_str().expect("lock");
    let waiter = u(&w["waiter_tid"]);
    let own = list(&w, "waiter_wait_ns");
    assert_eq!(own.len(), rounds);
    let named = |n: &Option<String>| n.as_deref() == Some("first taken in ls_heap_waiter_locks");

    let mine: Vec<&EventLine> = events.iter().filter(|e| e.lock == lock).collect();
    assert_eq!(mine.len(), rounds, "one wait per round: {mine:?}");
    let runq = list(&w, "waiter_runq_ns");
    for ((e, want), runq) in mine.iter().zip(&own).zip(&runq) {
        assert_eq!(e.source, "futex-mutex", "{e:?}");
        assert_eq!(u64::from(e.tid), waiter, "{e:?}");
        // the name comes from the first wait's stack words, read by
        // lockscope on its next tick: a line streamed before that has none
        // yet, never another
        assert!(e.lock_name.is_none() || named(&e.lock_name), "{e:?}");
        let got = e.wait_ns;
        assert!(
            got <= *want && want - got <= 2 * MS + runq,
            "a futex wait inside the waiter's own lock call, within 2 ms and the {runq} ns it \
             was runnable: got {got} want {want}\nevents: {events:?}\nstatus: {:?}\nlosses: {:?}",
            rep.sources,
            rep.lost
        );
    }

    let rs = rows_of(&rep, lock);
    assert_eq!(rs.len(), 1, "{rs:?}");
    let r = rs[0];
    check_row(r);
    assert_eq!(r.source, "futex-mutex");
    assert_eq!(r.tid.map(u64::from), Some(waiter), "{r:?}");
    assert_eq!(r.count, rounds as u64, "{r:?}");
    assert!(named(&r.lock_name), "{r:?}");
    assert!(
        r.caller
            .as_deref()
            .is_some_and(|c| c.starts_with("ls_heap_waiter_locks+")),
        "{r:?}"
    );
}

/// mutex-trylock: ROUNDS pthread_mutex_timedlock calls of 1 ms on a mutex
/// held throughout, each returning ETIMEDOUT (the workload checks). Every
/// futex wait on that mutex is one that timed out: the syscall tracepoints
/// see the result of each of the ROUNDS calls; the scheduler's view sees
/// the calls that slept (a call whose deadline passed before it could
/// sleep returns at once) and tells the timeout from the wake: no thread's
/// futex call woke it, and the call had a timeout.
#[test]
fn timed_out_waits_are_timed_out_under_both_backends() {
    let rounds = 10u64;
    for (extra, backend) in [
        (&[][..], "tp_btf"),
        (&["--backend", "tracepoint"][..], "tracepoint"),
    ] {
        let (w, _events, rep) = trace_run_with(
            extra,
            &[
                "mutex-trylock",
                "--ops",
                "10",
                "--rounds",
                &rounds.to_string(),
            ],
        );
        assert_eq!(u(&w["timedlock_failures"]), rounds, "{w}");
        let lock = w["lock"].as_str().expect("lock");
        let rs = rows_of(&rep, lock);
        let count: u64 = rs.iter().map(|r| r.count).sum();
        let aborted: u64 = rs.iter().map(|r| r.aborted).sum();
        assert_eq!(aborted, count, "{backend}: every wait timed out: {rs:?}");
        if backend == "tracepoint" {
            assert_eq!(count, rounds, "{backend}: one per call: {rs:?}");
        } else {
            assert!(count >= 1 && count <= rounds, "{backend}: {rs:?}");
        }
        let st = rep
            .sources
            .iter()
            .find(|s| s.name == "futex")
            .expect("futex");
        let reason = st.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains(&format!("timed out {count}")),
            "{backend}: {reason}"
        );
    }
}
