#!/usr/bin/env python3
"""The futex source's two backends against no tracing, on the host-wide paths
each one costs.

    sudo python3 scripts/bench_futex.py [--rounds 5] [--write]

The futex source runs on a process target (`lockscope report -p PID --source
futex`, PID an idle `sleep`), so what is measured is what every other
process on the host pays while it is attached:
- `perf bench sched pipe` (two processes pass a byte through pipes: two
  context switches and wakeups an op): the sched backend's programs run on
  every switch and wakeup;
- `perf bench syscall basic` (getppid in a loop): while the syscall
  tracepoints are attached, every syscall takes the syscall-tracing path.
Each round runs every mode once, the order rotating between rounds; the
medians of usecs/op and their ratio to no tracing are printed. One more run
of each backend with kernel.bpf_stats_enabled=1 gives the run time of its
programs per run (the statistics add their own cost to it). `--write` puts
the table into BENCHMARKS.md. LOCKSCOPE_BIN=PATH measures another build.
Python 3 standard library (and scripts/benchlib.py); root; perf.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import tempfile

import benchlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("LOCKSCOPE_BIN", os.path.join(ROOT, "target", "release", "lockscope"))
SECTION = "## futex backends: the scheduler against the syscall tracepoints"
MODES = {
    "none": None,
    "sched (tp_btf, default)": [],
    "syscalls (--backend tracepoint)": ["--backend", "tracepoint"],
}
BENCHES = {
    "sched pipe": ["perf", "bench", "sched", "pipe", "-l", "100000"],
    "syscall basic": ["perf", "bench", "syscall", "basic", "-l", "2000000"],
}


def usecs_per_op(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"([0-9.]+) usecs/op", out)
    if not m:
        raise SystemExit(f"no usecs/op in {cmd}:\n{out}")
    return float(m.group(1))


def tracer(extra, target, report):
    p, lines, ok = benchlib.start_until(
        [BIN, "report", "-p", str(target), "--source", "futex", "--json", "-o", report] + extra,
        "lockscope: tracing", 60)
    if not ok:
        p.kill()
        raise SystemExit("lockscope did not attach:\n" + "\n".join(lines))
    return p


def stop(p):
    p.send_signal(signal.SIGINT)
    p.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="put the table into BENCHMARKS.md")
    a = ap.parse_args()
    benchlib.need_root("bench_futex.py")
    benchlib.exit_on_sigterm()
    idle = subprocess.Popen(["sleep", "3600"])
    d = tempfile.mkdtemp(prefix="lockscope-bench-futex-")
    report = os.path.join(d, "report.json")
    res = {(m, b): [] for m in MODES for b in BENCHES}
    per_run = {}
    try:
        names = list(MODES)
        for r in range(a.rounds):
            for m in names[r % len(names):] + names[:r % len(names)]:
                t = tracer(MODES[m], idle.pid, report) if MODES[m] is not None else None
                for b, cmd in BENCHES.items():
                    res[(m, b)].append(usecs_per_op(cmd))
                if t:
                    stop(t)
                print(f"round {r + 1} {m}: " + ", ".join(
                    f"{b} {res[(m, b)][-1]:.3f} us/op" for b in BENCHES), flush=True)
        with benchlib.bpf_stats("1"):
            for m, extra in MODES.items():
                if extra is None:
                    continue
                t = tracer(extra, idle.pid, report)
                for cmd in BENCHES.values():
                    usecs_per_op(cmd)
                stop(t)
                with open(report) as f:
                    progs = json.load(f).get("bpf_programs", [])
                per_run[m] = ", ".join(
                    f"{p['name']} {p['run_time_ns'] / max(p['run_cnt'], 1):.0f} ns x {p['run_cnt']}"
                    for p in sorted(progs, key=lambda p: -p["run_cnt"]) if p["run_cnt"])
    finally:
        idle.kill()
        idle.wait()
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)
    med = {k: statistics.median(v) for k, v in res.items()}
    rows = []
    for m in MODES:
        cells = [m]
        for b in BENCHES:
            base = med[("none", b)]
            cells.append(f"{med[(m, b)]:.3f} ({med[(m, b)] / base:.3f})")
        cells.append(per_run.get(m, ""))
        rows.append(cells)
    text = "\n".join([
        SECTION,
        "",
        *benchlib.command_lines("sudo python3 scripts/bench_futex.py", ["--rounds",
                                                                         str(a.rounds)]),
        benchlib.kernel_line(),
        "",
        f"lockscope traces an idle process (`report -p PID --source futex`): what every other "
        f"process pays while it is attached. Medians of {a.rounds} rounds, usecs/op "
        f"(ratio to no tracing); BPF run time per run from one more run with "
        f"kernel.bpf_stats_enabled=1.",
        "",
        benchlib.md_table(["futex backend", *[f"perf bench {b}" for b in BENCHES],
                           "BPF per run"], ["l", "r", "r", "l"], rows),
        "",
    ])
    benchlib.publish(SECTION, text, a.write, "bench_futex.py")


if __name__ == "__main__":
    main()
