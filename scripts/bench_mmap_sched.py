#!/usr/bin/env python3
"""Overhead of the mmap-lock and sched sources: a workload alone vs. the
same workload under `lockscope report --json --source S`, in alternating
pairs.

    sudo python3 scripts/bench_mmap_sched.py [--pairs 5] [--quick] [--write]

Workloads are lockscope's own: `mmap` (4 threads mmap/touch/munmap in one
address space: mmap_lock) and `pingpong` (two threads pinned to one CPU
pass a byte over two pipes: two wakeups and two context switches per round
trip). Sources: mmap-lock, sched, and both. Workload time is the
workload's own `elapsed_ns`.

The slowdown pairs run with kernel.bpf_stats_enabled=0: the statistics
cost two clock reads per program run, and mmap_lock_acquire_returned runs
inside the lock, so they would lengthen every hold. BPF cost comes from
`--cost-runs` more traced runs with the statistics on (set and restored),
whose run_time_ns includes that bookkeeping:

- mmap-lock: ns per mmap_lock operation = run time of its programs over the
  runs of its acquire_returned program (every acquisition, failed one or
  downgrade runs it once; both counts come from the same statistics);
- sched: ns per context switch = run time of its programs over the runs of
  its sched_switch program (every context switch on the machine).

Needs root. Python 3 standard library only; shares the helpers of
scripts/bench.py. --write rewrites the "mmap-lock and sched figures"
section of BENCHMARKS.md.
"""
import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (settle, CPU accounting, BENCHMARKS.md)
import bench as common  # noqa: E402  (process cleanup)

BIN = common.BIN
SECTION = "## mmap-lock and sched figures"

# (label, workload args); --quick divides the operation count by 10
WORKLOADS = [
    ("mmap, 4 threads", ["mmap", "--threads", "4", "--ops", "4000"]),
    ("pingpong", ["pingpong", "--ops", "200000"]),
]
SOURCES = ["mmap-lock", "sched", "mmap-lock,sched"]
# the floor of any sched_switch tool: an empty program there (pingpong only)
FLOOR = "sched@tp_btf-floor"

TARGET_SLOWDOWN_MMAP = 1.05  # mmap workload, mmap-lock source
TARGET_NS_PER_SWITCH = 200  # sched source


def workload_args(args, quick):
    if not quick:
        return args
    out = list(args)
    i = out.index("--ops") + 1
    out[i] = str(max(int(out[i]) // 10, 100))
    return out


def run_workload(args):
    cmd = [BIN, "workload", *args, "--json"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    if p.returncode != 0:
        raise common.BenchError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])["elapsed_ns"]


def start_tracer(source):
    """`source`, or `source@backend` to force a backend."""
    name, _, backend = source.partition("@")
    extra = ["--backend", backend] if backend else []
    p = subprocess.Popen([BIN, "report", "--json", "--source", name, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    common.LIVE.append(p)
    attached, lines, out = threading.Event(), [], []

    def pump():
        for line in p.stderr:
            lines.append(line.rstrip())
            if "lockscope: tracing" in line:
                attached.set()
        attached.set()

    reader = threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)
    for t in (threading.Thread(target=pump, daemon=True), reader):
        t.start()
    if not attached.wait(60) or p.poll() is not None:
        common.stop(p)
        raise common.BenchError("lockscope did not attach: " + " | ".join(lines[-5:]))
    return p, lines, out, reader


def set_stats(on):
    """Sets per-program run statistics (again: other tools on the machine may
    restore their own setting meanwhile)."""
    with open(benchlib.STATS_SYSCTL, "w") as f:
        f.write("1" if on else "0")


def cost_run(args, source, tries=3):
    """One traced run with run statistics on; repeated (up to `tries`) when
    they were switched off during it (a program saw operations the
    statistics did not count)."""
    for _ in range(tries):
        set_stats(True)
        run = traced_once(args, source)
        if run["valid"]:
            return run
        print("  run statistics were switched off meanwhile; again", file=sys.stderr)
    raise common.BenchError("kernel.bpf_stats_enabled keeps being switched off")


def traced_once(args, source):
    tracer = start_tracer(source)
    try:
        elapsed = run_workload(args)
    except BaseException:
        common.stop(tracer[0])
        raise
    rep = common.finish_tracer(*tracer)
    progs = rep["bpf_programs"]
    mm = [b for b in progs if b["name"].startswith("mm_")]
    rq = [b for b in progs if b["name"].startswith("rq_")]
    mm_ops = sum(b["run_cnt"] for b in mm if "acquire" in b["name"])
    switches = sum(b["run_cnt"] for b in rq if "switch" in b["name"])
    seen_mm = sum(r["count"] for r in rep["rows"] if r["source"] == "mmap-lock")
    seen_rq = sum(r["count"] for r in rep["rows"] if r["source"] == "sched")
    # every program run while the stats were on is counted: the stats were
    # on throughout when the runs cover what the rows saw
    valid = mm_ops >= seen_mm * 0.99 and switches >= seen_rq * 0.99
    return {
        "valid": valid,
        "elapsed": elapsed,
        "mm_ops": mm_ops,
        "mm_ns": sum(b["run_time_ns"] for b in mm) / mm_ops if mm_ops else None,
        "switches": switches,
        "rq_ns": sum(b["run_time_ns"] for b in rq) / switches if switches else None,
        "per_prog": {b["name"]: b["run_time_ns"] / max(b["run_cnt"], 1) for b in progs
                     if b["run_cnt"]},
        "lost": sum(v for v in rep["lost"].values() if isinstance(v, int)),
        "lost_names": {k for k, v in rep["lost"].items() if isinstance(v, int) and v},
    }


def switches_per_run(label, args):
    """Context switches the pingpong workload itself causes: two per round
    trip (each side blocks on its read while the other runs)."""
    if not label.startswith("pingpong"):
        return None
    return 2 * int(args[args.index("--ops") + 1])


def measure(label, args, source, pairs, cost_runs):
    base, traced, other, total = [], [], 0, 0
    load = [os.getloadavg()[0]]
    for i in range(pairs):
        benchlib.settle(limit=30)
        order = ("base", "traced") if i % 2 == 0 else ("traced", "base")
        for which in order:
            start = benchlib.cpu_snapshot()
            if which == "base":
                base.append(run_workload(args))
            else:
                set_stats(False)
                traced.append(traced_once(args, source))
            o, t = benchlib.other_cpu(start)
            other, total = other + o, total + t
        print(f"  {label:16} {source:16} pair {i + 1}/{pairs}: base {base[-1] / 1e6:7.1f} ms, "
              f"traced {traced[-1]['elapsed'] / 1e6:7.1f} ms", file=sys.stderr)
    load.append(os.getloadavg()[0])
    costs = []
    for _ in range(cost_runs):
        benchlib.settle(limit=30)
        costs.append(cost_run(args, source))
    med = statistics.median
    ratios = [t["elapsed"] / b for t, b in zip(traced, base)]
    sw = switches_per_run(label, args)

    def med_of(key):
        vals = [t[key] for t in costs if t[key] is not None]
        return med(vals) if vals else None

    names = sorted({n for t in costs for n in t["per_prog"]})
    return {
        "workload": label, "source": source, "pairs": pairs, "cost_runs": cost_runs,
        "args": " ".join(args),
        "base_ms": med(base) / 1e6,
        "traced_ms": med(t["elapsed"] for t in traced) / 1e6,
        "slowdown": med(ratios),
        "ratio_min": min(ratios), "ratio_max": max(ratios),
        # wall time the tracing added per context switch of the workload
        "added_ns_per_switch": (med(t["elapsed"] - b for t, b in zip(traced, base)) / sw
                                if sw else None),
        "load": (min(load), max(load)),
        "mm_ops": med_of("mm_ops"), "mm_ns": med_of("mm_ns"),
        "switches": med_of("switches"), "rq_ns": med_of("rq_ns"),
        "per_prog": {n: med(t["per_prog"].get(n, 0.0) for t in costs) for n in names},
        "lost": max(t["lost"] for t in traced + costs),
        "lost_names": sorted(set().union(*(t["lost_names"] for t in traced + costs))),
        "other": other / total,
    }


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def lost_names(r):
    """Which counters the losses were (system-wide: other tasks' too)."""
    return f" ({', '.join(r['lost_names'])})" if r["lost_names"] else ""


def table(results):
    return benchlib.md_table(
        ["workload", "sources", "baseline ms", "traced ms", "slowdown", "pair ratios",
         "added ns/switch (wall)", "mmap_lock ops/run", "BPF ns/mmap_lock op", "switches/run",
         "BPF ns/switch", "BPF ns/run per program", "lost", "other CPU", "load avg"],
        "llrrrrrrrrrlrrr",
        ([f"{r['workload']} (`{r['args']}`)", r["source"], f"{r['base_ms']:.1f}",
          f"{r['traced_ms']:.1f}", f"{r['slowdown']:.3f}x",
          f"{r['ratio_min']:.3f}-{r['ratio_max']:.3f}", fmt(r["added_ns_per_switch"], ".0f"),
          *(fmt(r[k], ".0f") for k in ("mm_ops", "mm_ns", "switches", "rq_ns")),
          benchlib.per_prog_cell(r["per_prog"], lambda n: n.replace("_btf", "")),
          f"{r['lost']}{lost_names(r)}", f"{r['other']:.0%}",
          f"{r['load'][0]:.1f}-{r['load'][1]:.1f}"] for r in results))


def verdicts(results):
    out = []
    for r in results:
        if r["workload"].startswith("mmap") and r["source"] == "mmap-lock":
            out.append(benchlib.verdict(
                f"mmap workload under mmap-lock: {r['slowdown']:.3f}x (pairs "
                f"{r['ratio_min']:.3f}x to {r['ratio_max']:.3f}x)",
                r["slowdown"], TARGET_SLOWDOWN_MMAP, "x"))
        if r["source"] == "sched" and r["rq_ns"] is not None:
            out.append(benchlib.verdict(
                f"{r['workload']} under sched: {r['rq_ns']:.0f} ns of BPF run time per "
                f"context switch", r["rq_ns"], TARGET_NS_PER_SWITCH, " ns"))
        if r["source"] == FLOOR and r["added_ns_per_switch"] is not None:
            out.append(f"- {r['workload']} under an empty sched_switch program (the floor of "
                       f"any sched_switch tool): {r['added_ns_per_switch']:.0f} ns of wall time "
                       f"added per context switch, {fmt(r['rq_ns'], '.0f')} ns of BPF run time")
        if r["source"] == "sched" and r["added_ns_per_switch"] is not None:
            out.append(benchlib.verdict(
                f"{r['workload']} under sched: {r['added_ns_per_switch']:.0f} ns of "
                f"wall time added per context switch of the workload (median pair; "
                f"ratios {r['ratio_min']:.3f}x to {r['ratio_max']:.3f}x)",
                r["added_ns_per_switch"], TARGET_NS_PER_SWITCH, " ns"))
    return "\n".join(out)


def section(results, argv):
    return "\n".join([
        SECTION, "",
        *benchlib.command_lines("python3 scripts/bench_mmap_sched.py", argv),
        benchlib.kernel_line(),
        f"- Slowdown: median of the traced/baseline ratios of {results[0]['pairs']} alternating "
        "pairs per row, run statistics off; BPF costs: medians of "
        f"{results[0]['cost_runs']} more traced runs with kernel.bpf_stats_enabled=1. "
        "lockscope traced system-wide with only the named sources; \"other CPU\" is the "
        "share of the machine used by other tasks during the pairs (above ~5% a row is "
        "disturbed); \"load avg\" is the 1-minute load average at the row's start "
        "and end; \"pair ratios\" the smallest and largest traced/baseline ratio; "
        "\"added ns/switch\" (pingpong) the median of traced - baseline over the "
        "workload's own context switches (2 per round trip).",
        f"- lockscope: {benchlib.git_rev()}", "",
        table(results), "",
        verdicts(results), "",
    ])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=5, help="alternating pairs per row (default 5)")
    ap.add_argument("--cost-runs", type=int, default=3,
                    help="traced runs with run statistics on, per row (default 3)")
    ap.add_argument("--quick", action="store_true", help="10x fewer operations per run")
    ap.add_argument("--only", metavar="PREFIX",
                    help="only workloads whose label starts with PREFIX (mmap, pingpong)")
    ap.add_argument("--sources", metavar="S;S",
                    help="only these source sets, ';'-separated (e.g. 'sched;sched@tp_btf-floor')")
    ap.add_argument("--write", action="store_true",
                    help="rewrite the mmap-lock and sched section of BENCHMARKS.md")
    args = ap.parse_args()
    benchlib.need_root("bench_mmap_sched.py", "BPF and kernel.bpf_stats_enabled")
    if args.pairs < 1:
        sys.exit("bench_mmap_sched.py: --pairs must be >= 1")
    benchlib.build_release("bench_mmap_sched.py")
    benchlib.exit_on_sigterm()
    results = common.measure_rows("bench_mmap_sched.py", [
        functools.partial(measure, label, workload_args(wargs, args.quick), source, args.pairs,
                          max(args.cost_runs, 1))
        for label, wargs in WORKLOADS if not args.only or label.startswith(args.only)
        for source in SOURCES + ([FLOOR] if label.startswith("pingpong") else [])
        if not args.sources or source in args.sources.split(";")])
    text = section(results, sys.argv[1:])
    benchlib.publish(SECTION, text, args.write, "bench_mmap_sched.py")


if __name__ == "__main__":
    main()
