#!/usr/bin/env python3
"""Overhead of the user-locks source (pthread uprobes) per lock/unlock pair,
beside the floor of any uprobe-based tool, measured in the same run.

    sudo python3 scripts/bench_ulock.py [--pairs 7] [--quick] [--old-bin PATH] [--write]

Workload: `lockscope workload mutex-pairs` (THREADS threads, OPS
pthread_mutex_lock/unlock pairs each on one mutex; its own elapsed_ns of the
work phase).  Each round runs, in an order that rotates from round to round:

  base        the workload alone
  entry-floor EMPTY programs on every function lockscope probes, at the
              functions' entries, with lockscope's probe kinds before
              issue 13 (entry + return of each lock function, entry of
              each unlock function): `--backend uprobe-floor-entry`, what
              a uprobe tool that probes function entries pays
  floor       EMPTY programs on lockscope's own attach points and kinds
              (`--backend uprobe-floor`): the floor of lockscope's design
  lockscope   `lockscope report --json --source user-locks -p PID`
  old         (--old-bin) the same with another lockscope binary, e.g. one
              built at an earlier commit: before/after in one run

Tracers attach per process (-p) during the workload's start delay.  "ns
added per pair" = (config - base) / pairs, median over rounds.  Timing
rounds run with kernel.bpf_stats_enabled=0; then one more run of every
traced config with it on gives the kernel's run time per BPF program (its
value is restored at the end).  Needs root.  --write replaces the
"## User-space locks" section of BENCHMARKS.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import ROOT, STATS_SYSCTL, cpu_snapshot, other_load, settle  # noqa: E402

BIN = os.path.join(ROOT, "target", "release", "lockscope")
SECTION = "## User-space locks (uprobes)"
DELAY = "2s"  # the workload's start delay: time for the tracer to attach

# (label, threads, ops per thread)
WORKLOADS = [
    ("uncontended, 1 thread", 1, 200_000),
    ("contended, 4 threads", 4, 50_000),
]
CONFIGS = {
    "entry-floor": ["--source", "user-locks", "--backend", "uprobe-floor-entry"],
    "floor": ["--source", "user-locks", "--backend", "uprobe-floor"],
    "lockscope": ["--source", "user-locks"],
    "old": ["--source", "user-locks"],
}
ORDER = ["base", "entry-floor", "floor", "lockscope"]
OLD_BIN = None  # --old-bin: the binary of the "old" config


class BenchError(Exception):
    pass


def workload(threads, ops):
    return subprocess.Popen(
        [BIN, "workload", "mutex-pairs", "--threads", str(threads), "--ops", str(ops),
         "--json", "--start-delay", DELAY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def workload_result(p):
    out, err = p.communicate(timeout=600)
    if p.returncode != 0:
        raise BenchError(f"workload failed ({p.returncode}): {err.strip()}")
    return json.loads(out.strip().splitlines()[-1])["elapsed_ns"]


def run(config, threads, ops):
    """One run; returns (elapsed_ns, report or None)."""
    t0 = time.monotonic()
    wl = workload(threads, ops)
    if config == "base":
        return workload_result(wl), None
    binary = OLD_BIN if config == "old" else BIN
    tr, lines, _ = benchlib.start_until(
        [binary, "report", "--json", "-p", str(wl.pid)] + CONFIGS[config],
        "lockscope: tracing", 60, stdout=subprocess.PIPE)
    late = time.monotonic() - t0 > float(DELAY.rstrip("s")) - 0.2
    elapsed = workload_result(wl)
    out, _ = tr.communicate(timeout=60)
    if tr.returncode != 0 or not out.strip():
        raise BenchError(f"lockscope {config} exited {tr.returncode}: {' | '.join(lines[-3:])}")
    if late:
        raise BenchError(f"lockscope {config} attached after the workload began")
    return elapsed, json.loads(out)


def run_retrying(config, threads, ops):
    """run(), tried up to 3 times (a busy machine may delay an attachment)."""
    for attempt in range(3):
        try:
            return run(config, threads, ops)
        except BenchError as e:
            if attempt == 2:
                raise
            print(f"  retry: {e}", file=sys.stderr)


def stats(enabled):
    with open(STATS_SYSCTL, "w") as f:
        f.write("1" if enabled else "0")


def measure(label, threads, ops, rounds):
    res = {c: [] for c in ORDER}
    reps = []
    # timing rounds run with kernel.bpf_stats_enabled=0 (its clock reads
    # would add to every program run); BPF cost per program comes from one
    # more lockscope run with it on
    stats(False)
    for i in range(rounds):
        settle(3)
        order = ORDER[i % len(ORDER):] + ORDER[:i % len(ORDER)]
        for c in order:
            elapsed, rep = run_retrying(c, threads, ops)
            res[c].append(elapsed)
            if c == "lockscope":
                reps.append(rep)
        print(f"  {label}: round {i + 1}/{rounds}: " + ", ".join(
            f"{c} {res[c][-1] / 1e6:.1f} ms" for c in ORDER), file=sys.stderr)
    stats(True)
    progs = {}
    for c in ORDER[1:]:
        _, costed = run_retrying(c, threads, ops)
        progs[c] = {p["name"]: p["run_time_ns"] / p["run_cnt"]
                    for p in costed["bpf_programs"] if p["run_cnt"]}
    stats(False)
    n = threads * ops
    med = statistics.median
    added = {c: med((res[c][k] - res["base"][k]) / n for k in range(rounds))
             for c in ORDER[1:]}
    counts = [sum(r["acquired"] for r in rep["rows"]) for rep in reps]
    lost = max(sum(v for k, v in rep["lost"].items() if k.startswith("user-locks."))
               for rep in reps)
    per_round = {c: [(res[c][k] - res["base"][k]) / n for k in range(rounds)]
                 for c in ORDER[1:]}
    return {
        "label": label, "threads": threads, "ops": ops, "rounds": rounds,
        "base_ns": med(res["base"]) / n,
        "added": added,
        "per_round": per_round,
        "progs": progs,
        "acquisitions": med(counts),
        "lost": lost,
    }


def section(results, argv, other):
    cfgs = ORDER[1:]
    rows = ["| workload | base ns/pair | " + " | ".join(f"+ {c}" for c in cfgs)
            + " | acquisitions/run | lost |",
            "|---|---:|" + "---:|" * len(cfgs) + "---:|---:|"]
    for r in results:
        a = r["added"]
        rows.append(f"| {r['label']} ({r['ops']} pairs/thread) | {r['base_ns']:.0f} | "
                    + " | ".join(f"{a[c]:.0f}" for c in cfgs)
                    + f" | {r['acquisitions']:.0f} | {r['lost']} |")
    prog_rows = ["| workload | config | BPF ns/run by program (kernel run time) |",
                 "|---|---|---|"]
    for r in results:
        for c in cfgs:
            progs = ", ".join(f"{n.replace('ulock_', '')} {v:.0f}"
                              for n, v in sorted(r["progs"][c].items()))
            prog_rows.append(f"| {r['label']} | {c} | {progs} |")
    verdict = []
    for r in results:
        a = r["added"]
        line = (f"- {r['label']}: ns added per pair: lockscope {a['lockscope']:.0f}, "
                f"empty programs on its points {a['floor']:.0f}, empty programs at the "
                f"functions' entries {a['entry-floor']:.0f}")
        if "old" in a:
            line += (f", --old-bin {a['old']:.0f}; (lockscope - entry-floor) = "
                     f"{a['lockscope'] - a['entry-floor']:.0f} against (old - entry-floor) = "
                     f"{a['old'] - a['entry-floor']:.0f}")
        rounds = ", ".join(f"{c} " + "/".join(f"{v:.0f}" for v in r["per_round"][c])
                           for c in cfgs)
        verdict.append(line + f" (rounds: {rounds})")
    return "\n".join([
        SECTION, "",
        "What the `user-locks` source costs a pthread lock/unlock pair, beside what",
        "the uprobes themselves cost. Produced by `scripts/bench_ulock.py` (method in",
        "its header): each round runs the workload alone, under empty programs at",
        "the probed functions' entries (entry + return of each lock function, entry",
        "of each unlock function: what a uprobe tool probing function entries",
        "pays), under empty programs on lockscope's own attach points, and under",
        "lockscope; tracers attach to the workload's process (`-p`). `+ X` columns",
        "are ns added per pair (median over rounds of (config - base) / pairs).",
        "Timing rounds run with `kernel.bpf_stats_enabled=0`; BPF ns/run is the",
        "kernel's own per-program run time from one more run of each config with",
        "it on (which adds ~50 ns per run itself).", "",
        *benchlib.command_lines("python3 scripts/bench_ulock.py", argv, commit=True),
        benchlib.kernel_line(other)
        + (" (busy: absolute figures noisy; compare configs of one round)"
           if other > 0.05 else ""),
        f"- Medians over {results[0]['rounds']} rounds per row.", "",
        "\n".join(rows), "",
        "\n".join(prog_rows), "",
        "\n".join(verdict), "",
    ])


def main():
    global OLD_BIN, DELAY
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=7, help="rounds per workload (default 7)")
    ap.add_argument("--quick", action="store_true", help="10x fewer operations per run")
    ap.add_argument("--write", action="store_true", help="rewrite the section in BENCHMARKS.md")
    ap.add_argument("--old-bin", help="another lockscope binary, run as config 'old'")
    ap.add_argument("--delay", default=DELAY,
                    help=f"the workload's start delay, time to attach (default {DELAY})")
    ap.add_argument("--no-build", action="store_true", help="use target/release/lockscope as is")
    args = ap.parse_args()
    DELAY = args.delay
    if args.old_bin:
        OLD_BIN = os.path.abspath(args.old_bin)
        ORDER.append("old")
    benchlib.need_root("bench_ulock.py")
    if not args.no_build:
        benchlib.build_release("bench_ulock.py")
    start = cpu_snapshot()
    results = []
    with benchlib.bpf_stats():
        try:
            for label, threads, ops in WORKLOADS:
                ops = max(ops // 10, 100) if args.quick else ops
                results.append(measure(label, threads, ops, args.pairs))
        except BenchError as e:
            sys.exit(f"bench_ulock.py: {e}")
    text = section(results, sys.argv[1:], other_load(start))
    benchlib.publish(SECTION, text, args.write, "bench_ulock.py")


if __name__ == "__main__":
    main()
