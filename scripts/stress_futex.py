#!/usr/bin/env python3
"""Stress the futex source's wait lengths against the waits a workload
measured itself: heap-hold (a holder holds a heap pthread mutex for HOLD,
a SCHED_FIFO waiter calls lock 10 ms into the hold and times its own call),
traced by `lockscope trace --json --summary`, several traced processes at
once. Every streamed wait on the mutex must lie inside the waiter's lock
call (not longer; at most 2 ms plus the runnable time the waiter measured
shorter). A run that breaks that is printed with the waits around it,
placed against the waiter's call times (CLOCK_MONOTONIC, the clock of the
events' begin_ns/end_ns), and its output is kept.

This is how the sched backend's unseen switch-ins were found (futex.bpf.c):
two parallel loops beside a busy core, about 1 run in 8 had a wait 10 ms
too long before the fix. Run as root:

    python3 scripts/stress_futex.py --parallel 2 --runs 30 --rounds 100

Also prints the futex source's count of waits ended without a seen switch-in.
Exit status 1 when a run was off.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("LOCKSCOPE_BIN", os.path.join(ROOT, "target", "debug", "lockscope"))
MS = 1_000_000


def one_run(i, rounds, hold, keep):
    out = subprocess.run([BIN, "trace", "--json", "--summary", "--", BIN, "workload", "--json",
                          "heap-hold", "--hold", hold, "--rounds", str(rounds)],
                         capture_output=True, text=True)
    w, events, status = None, [], ""
    for line in out.stdout.splitlines():
        v = json.loads(line)
        if v.get("type") == "wait":
            events.append(v)
        elif v.get("type") == "end":
            for s in v["report"]["sources"]:
                if s["name"] == "futex":
                    status = s["reason"] or ""
        elif v.get("type") is None:
            w = v
    if w is None:
        return [f"run {i}: no workload report: {out.stderr[-500:]}"], status
    mine = [e for e in events if e.get("lock") == w["lock"]]
    own, calls, runq = w["waiter_wait_ns"], w["waiter_call_at_ns"], w["waiter_runq_ns"]
    bad = []
    if len(mine) != len(own):
        bad.append(f"run {i}: {len(mine)} waits for {len(own)} blocked calls")
    for j, (e, want) in enumerate(zip(mine, own)):
        got = e["wait_ns"]
        if got > want or want - got > 2 * MS + runq[j]:
            bad.append(f"run {i} round {j}: wait {got} ns, the call {want} ns; the wait began "
                       f"{(e['begin_ns'] - calls[j]) / 1e3:.1f} us after the call, ended "
                       f"{(e['end_ns'] - calls[j] - want) / 1e3:.1f} us after it returned")
    if bad:
        fd, path = tempfile.mkstemp(prefix=f"stress-futex-{i}-", suffix=".jsonl", dir=keep)
        with os.fdopen(fd, "w") as f:
            f.write(out.stdout)
        bad.append(f"run {i}: output kept in {path}")
    return bad, status


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parallel", type=int, default=2, help="traced processes at once")
    ap.add_argument("--runs", type=int, default=30, help="runs per loop")
    ap.add_argument("--rounds", type=int, default=100, help="blocked lock calls per run")
    ap.add_argument("--hold", default="40ms")
    ap.add_argument("--keep", default=tempfile.gettempdir(), help="where off runs are kept")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("stress_futex.py: needs root (BPF)")
    lock = threading.Lock()
    totals = {"runs": 0, "bad": 0, "unseen": 0}

    def loop(k):
        for i in range(a.runs):
            bad, status = one_run(f"{k}.{i}", a.rounds, a.hold, a.keep)
            unseen = 0
            if "without a seen switch-in" in status:
                unseen = int(status.split("without a seen switch-in ")[1].split()[0])
            with lock:
                totals["runs"] += 1
                totals["bad"] += bool(bad)
                totals["unseen"] += unseen
                for b in bad:
                    print(b, flush=True)

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(a.parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{totals['runs']} runs of {a.rounds} blocked calls: {totals['bad']} off; "
          f"waits ended without a seen switch-in: {totals['unseen']}")
    sys.exit(1 if totals["bad"] else 0)


if __name__ == "__main__":
    main()
