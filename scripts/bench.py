#!/usr/bin/env python3
"""Overhead benchmark for lockscope: workload alone vs. workload under
`lockscope report --json`, in alternating pairs.

    sudo python3 scripts/bench.py [--pairs 7] [--quick] [--write] [--floor]
                                  [--workload LABEL]... [--caller MODE]... [--bin PATH]

For each workload and caller mode it runs pairs of (baseline, traced) runs,
alternating the order inside each pair to cancel drift.  A traced run starts
`lockscope report --json --caller MODE` system-wide, waits for its "tracing"
line on stderr, runs the workload, then stops lockscope with SIGINT and parses
its JSON.  Workload time is the workload's own `elapsed_ns` (work phase only,
not process start-up).  BPF cost comes from the kernel's per-program
run_time_ns (kernel.bpf_stats_enabled=1), which includes the bookkeeping of
the stats themselves (two clock reads per program run).

--fifo runs each workload as SCHED_FIFO (chrt -f 50): its threads then run
at once whatever else the machine runs, so its contention does not depend
on other load (per-contention costs are comparable across runs).

--floor also attaches, in every traced run, empty programs on the same two
tracepoints (a second `lockscope report --source kernel-contention
--backend tp_btf-floor`, started first so its programs run first): the floor
of any tool attached there.  The same contentions then run both pairs, so
lockscope's begin+end ns per contention minus the empty pair's (both divided
by lockscope's contention count) is lockscope's own cost, measured in the
same run; the slowdown of such a run includes the floor's programs too, so
take ratios from a run without --floor.  Each traced run is followed by one
with the floor and the clock-only pair (`--backend tp_btf-clock`: a clock
read at begin and at end, one add): its cost above the empty pair is what
any tool that times waits pays at least.  --workload (substring of a label)
and --caller pick rows.

Needs root.  Python 3 standard library only.  --write rewrites the
"Latest figures" section of BENCHMARKS.md.
"""
import argparse
import functools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import ROOT, cpu_model, cpu_snapshot, git_rev, other_cpu, settle  # noqa: E402

BIN = DEFAULT_BIN = os.path.join(ROOT, "target", "release", "lockscope")
SECTION = "## Latest figures"

# (label, kind, threads, ops per thread); ops give ~0.5-1.5 s per run on a
# 2-core VM.  --quick divides ops by 10.
WORKLOADS = [
    ("pipe, 2 threads", "pipe", 2, 400_000),
    ("pipe, 8 threads", "pipe", 8, 120_000),
    ("mmap, 4 threads", "mmap", 4, 4_000),
]
# (workload label, caller mode): first and none everywhere, every once.
CONFIGS = [(w[0], m) for w in WORKLOADS for m in ("first", "none")]
CONFIGS.insert(CONFIGS.index(("pipe, 8 threads", "none")) + 1, ("pipe, 8 threads", "every"))

TARGET_SLOWDOWN = 1.05  # 8- and 2-thread pipe
TARGET_NS_PER_CONTENTION = 300  # begin+end, without stacks
TARGET_ADDED_NS = 100  # begin+end above the empty pair's (--floor), without stacks
FLOOR_ARGS = ["--source", "kernel-contention", "--backend", "tp_btf-floor"]
CLOCK_ARGS = ["--source", "kernel-contention", "--backend", "tp_btf-clock"]
FIFO = []  # --fifo: ["chrt", "-f", "50"] before the workload

LIVE = []  # lockscope processes not yet reaped


class BenchError(Exception):
    pass


def run_workload(kind, threads, ops):
    """Runs one workload; returns its elapsed_ns."""
    cmd = [*FIFO, BIN, "workload", kind, "--threads", str(threads), "--ops", str(ops), "--json"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    if p.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])["elapsed_ns"]


def start_tracer(caller, args=("--source", "kernel-contention")):
    """Starts `lockscope report --json` and returns once it is attached."""
    p = subprocess.Popen([BIN, "report", "--json", "--caller", caller, *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    LIVE.append(p)
    attached, lines, out = threading.Event(), [], []

    def pump():  # keep draining stderr so lockscope never blocks on it
        for line in p.stderr:
            lines.append(line.rstrip())
            if "lockscope: tracing" in line:
                attached.set()
        attached.set()  # EOF: lockscope exited

    reader = threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)
    for t in (threading.Thread(target=pump, daemon=True), reader):
        t.start()
    if not attached.wait(60) or p.poll() is not None:
        stop(p)
        raise BenchError("lockscope did not attach: " + " | ".join(lines[-5:]))
    return p, lines, out, reader


def stop(p):
    """Kills and reaps a lockscope process (for error paths)."""
    if p.poll() is None:
        p.kill()
    p.wait()
    if p in LIVE:
        LIVE.remove(p)


def finish_tracer(p, lines, out, reader):
    """SIGINTs lockscope and returns its parsed JSON report."""
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        stop(p)
        raise BenchError("lockscope did not exit after SIGINT")
    LIVE.remove(p)
    reader.join(10)
    text = "".join(out)
    if p.returncode != 0 or not text.strip():
        raise BenchError(f"lockscope report exited {p.returncode}: " + " | ".join(lines[-5:]))
    return json.loads(text)


def traced_run(kind, threads, ops, caller, floor, clock=False):
    """One traced run; with `clock`, the tracer is the clock-only pair
    (--backend tp_btf-clock) instead of lockscope's own programs."""
    floor_tracer = start_tracer("none", FLOOR_ARGS) if floor else None
    try:
        tracer = start_tracer("none", CLOCK_ARGS) if clock else start_tracer(caller)
    except BaseException:
        if floor_tracer:
            stop(floor_tracer[0])
        raise
    try:
        elapsed = run_workload(kind, threads, ops)
    except BaseException:
        stop(tracer[0])
        if floor_tracer:
            stop(floor_tracer[0])
        raise
    rep = finish_tracer(*tracer)
    progs = [b for b in rep["bpf_programs"] if "contention" in b["name"]]
    contentions = sum(r["count"] for r in rep["rows"])
    if clock:  # no rows: every end ran the clock program
        contentions = max((b["run_cnt"] for b in progs if "end" in b["name"]), default=0)
    floor_ns = None
    if floor_tracer:
        frep = finish_tracer(*floor_tracer)
        fprogs = [b for b in frep["bpf_programs"] if "empty" in b["name"]]
        floor_ns = sum(b["run_time_ns"] for b in fprogs)
    return {
        "floor_ns": floor_ns,
        "elapsed": elapsed,
        "contentions": contentions,
        "bpf_ns": sum(b["run_time_ns"] for b in progs),  # lockscope's own programs
        "per_prog": {b["name"]: b["run_time_ns"] / max(b["run_cnt"], 1)
                     for b in progs + (fprogs if floor_tracer else [])},
        "lost": sum(v for v in rep["lost"].values() if isinstance(v, int)),
    }


def measure(label, caller, pairs, quick, floor):
    _, kind, threads, ops = next(w for w in WORKLOADS if w[0] == label)
    ops = max(ops // 10, 100) if quick else ops
    base, traced, clocked, other, total = [], [], [], 0, 0
    for i in range(pairs):
        settle()
        order = ("base", "traced") if i % 2 == 0 else ("traced", "base")
        for which in order:
            start = cpu_snapshot()
            if which == "base":
                base.append(run_workload(kind, threads, ops))
            else:
                traced.append(traced_run(kind, threads, ops, caller, floor))
                if floor:  # and the clock-only pair, after the same floor
                    clocked.append(traced_run(kind, threads, ops, caller, floor, clock=True))
            o, t = other_cpu(start)  # CPU stolen by others during this run
            other, total = other + o, total + t
        print(f"  {label:16} caller={caller:5} pair {i + 1}/{pairs}: "
              f"base {base[-1] / 1e6:7.1f} ms, traced {traced[-1]['elapsed'] / 1e6:7.1f} ms, "
              f"{traced[-1]['contentions']} contentions", file=sys.stderr)
    med = statistics.median
    names = sorted({n for t in traced for n in t["per_prog"]})
    floor_pc = (med(t["floor_ns"] / max(t["contentions"], 1) for t in traced)
                if floor else None)
    added = (med((t["bpf_ns"] - t["floor_ns"]) / max(t["contentions"], 1) for t in traced)
             if floor else None)
    clock_added = (med((t["bpf_ns"] - t["floor_ns"]) / max(t["contentions"], 1) for t in clocked)
                   if floor else None)
    return {
        "floor_per_contention": floor_pc, "added_per_contention": added,
        "clock_added_per_contention": clock_added,
        "workload": label, "caller": caller, "ops": ops, "pairs": pairs,
        "base_ms": med(base) / 1e6,
        "traced_ms": med(t["elapsed"] for t in traced) / 1e6,
        "slowdown": med(t["elapsed"] / b for t, b in zip(traced, base)),
        "contentions": med(t["contentions"] for t in traced),
        "ns_per_contention": med(t["bpf_ns"] / max(t["contentions"], 1) for t in traced),
        "per_prog": {n: med(t["per_prog"].get(n, 0.0) for t in traced) for n in names},
        "lost": max(t["lost"] for t in traced),
        "other": other / total,
    }


def measure_rows(who, rows):
    """Measures each of `rows` (functions that measure one row) with BPF run
    statistics on; exits the script `who` on a BenchError, and stops every
    lockscope still running however it ends."""
    with benchlib.bpf_stats("1"):
        try:
            return [measure_row() for measure_row in rows]
        except BenchError as e:
            sys.exit(f"{who}: {e}")
        finally:
            for p in list(LIVE):
                stop(p)


def short(name):
    return name.replace("contention_", "").replace("_btf", "").replace("_tp", "")


def rows_table(results, heads, align, cells):
    """A table of a row per result: its workload and caller, the columns
    `heads` (aligned `align`, the cells `cells(r)`), then its BPF ns per
    run per program, lost events and other CPU."""
    return benchlib.md_table(
        ["workload", "caller", *heads, "BPF ns/run per program", "lost", "other CPU"],
        "ll" + align + "lrr",
        ([r["workload"], r["caller"], *cells(r), benchlib.per_prog_cell(r["per_prog"], short),
          r["lost"], f"{r['other']:.0%}"] for r in results))


def floor_table(results):
    return rows_table(
        results, ["contentions/run", "lockscope ns/contention", "empty pair ns/contention",
                  "lockscope above the empty pair", "clock-only pair above the empty pair"],
        "rrrrr",
        lambda r: [f"{r[k]:.0f}" for k in ("contentions", "ns_per_contention",
                                            "floor_per_contention", "added_per_contention",
                                            "clock_added_per_contention")])


def table(results):
    return rows_table(
        results, ["ops/thread", "baseline ms", "traced ms", "slowdown", "contentions/run",
                  "BPF ns/contention"],
        "rrrrrr",
        lambda r: [r["ops"], f"{r['base_ms']:.1f}", f"{r['traced_ms']:.1f}",
                   f"{r['slowdown']:.3f}x", f"{r['contentions']:.0f}",
                   f"{r['ns_per_contention']:.0f}"])


def verdicts(results):
    out = []
    for r in results:
        if r["workload"].startswith("pipe") and r["caller"] == "first":
            out.append(benchlib.verdict(
                f"{r['workload']} slowdown (caller first): {r['slowdown']:.3f}x",
                r["slowdown"], TARGET_SLOWDOWN, "x")
                + (" (with the floor's programs attached too)"
                   if r["added_per_contention"] is not None else ""))
    for r in results:
        if r["caller"] in ("first", "none") and r["added_per_contention"] is not None:
            out.append(benchlib.verdict(
                f"{r['workload']}, caller {r['caller']}: "
                f"{r['added_per_contention']:.0f} ns per contention above the empty "
                f"pair's {r['floor_per_contention']:.0f}",
                r["added_per_contention"], TARGET_ADDED_NS, " ns"))
        elif r["caller"] in ("first", "none"):
            out.append(benchlib.verdict(
                f"{r['workload']}, caller {r['caller']}: {r['ns_per_contention']:.0f} ns "
                f"per contention", r["ns_per_contention"], TARGET_NS_PER_CONTENTION, " ns"))
    return "\n".join(out)


def section(results, argv):
    return "\n".join([
        SECTION, "",
        *benchlib.command_lines("python3 scripts/bench.py", argv),
        f"- lockscope: {BIN if BIN != DEFAULT_BIN else git_rev()}; kernel `{platform.release()}`; "
        f"CPU: {cpu_model()} ({os.cpu_count()} CPUs)",
        f"- Medians over {results[0]['pairs']} alternating pairs per row; slowdown is the "
        "median of per-pair traced/baseline ratios; lockscope traced system-wide; "
        "each pair starts after a quiet second; \"other CPU\" is the share of the machine "
        "used by other tasks during the measured runs (above ~5% a row is disturbed).", "",
        table(results), "",
        *([floor_table(results), ""] if results[0]["added_per_contention"] is not None else []),
        verdicts(results), "",
    ])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=7, help="alternating pairs per row (default 7)")
    ap.add_argument("--quick", action="store_true", help="10x fewer operations per run")
    ap.add_argument("--write", action="store_true", help="rewrite 'Latest figures' in BENCHMARKS.md")
    ap.add_argument("--bin", help="this lockscope binary instead of building target/release/lockscope "
                    "(e.g. an older build, for a before/after pair)")
    ap.add_argument("--fifo", action="store_true",
                    help="run the workload as SCHED_FIFO (chrt -f 50), so that other load on the "
                         "machine does not decide whether its threads run at once (contention)")
    ap.add_argument("--floor", action="store_true",
                    help="also attach empty programs on the same tracepoints in each traced run")
    ap.add_argument("--workload", action="append", default=[],
                    help="only rows whose workload label contains this (repeatable)")
    ap.add_argument("--caller", action="append", default=[], choices=["first", "none", "every"],
                    help="only rows of this caller mode (repeatable)")
    args = ap.parse_args()
    if args.fifo:
        FIFO[:] = ["chrt", "-f", "50"]
    configs = [(w, m) for w, m in CONFIGS
               if (not args.workload or any(x in w for x in args.workload))
               and (not args.caller or m in args.caller)]
    if not configs:
        sys.exit("bench.py: --workload/--caller select no row")
    benchlib.need_root("bench.py", "BPF and kernel.bpf_stats_enabled")
    if args.pairs < 1:
        sys.exit("bench.py: --pairs must be >= 1")
    global BIN
    if args.bin:
        BIN = os.path.abspath(args.bin)
    else:
        benchlib.build_release("bench.py")
    benchlib.exit_on_sigterm()
    results = measure_rows("bench.py", [
        functools.partial(measure, label, caller, args.pairs, args.quick, args.floor)
        for label, caller in configs])
    text = section(results, sys.argv[1:])
    benchlib.publish(SECTION, text, args.write, "bench.py")


if __name__ == "__main__":
    main()
