#!/usr/bin/env python3
"""What `--stacks` and `--hold-stacks` cost: the same workloads traced with
and without them, alternating in one run, plus each BPF program's own run
time per run.

    sudo python3 scripts/bench_stacks.py [--rounds 5] [--quick] [--write]

Workloads (lockscope's own, exact operation counts, their own elapsed_ns of
the work phase):

  user-locks  `workload mutex-pairs --threads 1 --ops N`: uncontended
              pthread lock/unlock pairs (every wait far below 1 ms)
  mmap-lock   `workload mmap --threads 2 --ops N`: mmap/touch/munmap in one
              address space (a write acquisition per mmap and per munmap)

Configurations, each round in an order that rotates from round to round:

  base        the workload alone
  plain       `lockscope report --json --source SRC -p PID`
  stacks      + `--stacks` (waits >= 1 ms: here almost none)
  sample100   + `--stacks --stack-sample 100` (1 in 100 waits)
  sample1     + `--stacks --stack-sample 1` (every wait: the worst case)
  holds       + `--hold-stacks` (a stack at every acquisition, kept for
              its hold: holds >= 1 ms get it)

Timing rounds run with `kernel.bpf_stats_enabled=0`; per-program BPF ns/run
comes from one more run of each traced configuration with it on (which adds
~50 ns per run itself). "vs alone" and "vs plain" are medians over rounds of
config / base and config / plain of the same round (min-max beside the
second); "+ns/op vs plain" is the median of (config - plain) / operations.  Needs root; --write replaces
the "## Stacks" section of BENCHMARKS.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (load, CPU, BENCHMARKS.md)
import bench_ulock as bu  # noqa: E402  (BIN, bpf stats)

BIN = bu.BIN
SECTION = "## Stacks (`--stacks`, `--hold-stacks`)"
DELAY = "1500ms"

# (label, source, workload args, ops per thread)
WORKLOADS = [
    ("user-locks: mutex-pairs, 1 thread", "user-locks",
     ["mutex-pairs", "--threads", "1"], 100_000),
    ("mmap-lock: mmap, 2 threads", "mmap-lock",
     ["mmap", "--threads", "2"], 20_000),
]
CONFIGS = {
    "plain": [],
    "stacks": ["--stacks"],
    "sample100": ["--stacks", "--stack-sample", "100"],
    "sample1": ["--stacks", "--stack-sample", "1"],
    "holds": ["--hold-stacks"],
}
ORDER = ["base"] + list(CONFIGS)


class BenchError(Exception):
    pass


def operations(done, wl_args):
    if wl_args[0] == "mmap":
        return done["mmap_calls"] + done["munmap_calls"]
    return done["acquisitions"] if done.get("acquisitions") else done["ops"]


def run(config, source, wl_args, ops):
    """One run; returns (workload report, lockscope report or None)."""
    t0 = time.monotonic()
    wl = subprocess.Popen(
        [BIN, "workload"] + wl_args + ["--ops", str(ops), "--json", "--start-delay", DELAY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tr = None
    lines = []
    if config != "base":
        tr, lines, _ = benchlib.start_until(
            [BIN, "report", "--json", "--source", source, "-p", str(wl.pid)] + CONFIGS[config],
            "lockscope: tracing", 60, stdout=subprocess.PIPE)
        if time.monotonic() - t0 > 1.5 - 0.2:
            wl.kill()
            tr.kill()
            raise BenchError(f"lockscope {config} attached after the workload began")
    out, err = wl.communicate(timeout=600)
    if wl.returncode != 0:
        raise BenchError(f"workload failed ({wl.returncode}): {err.strip()}")
    done = json.loads(out.strip().splitlines()[-1])
    if tr is None:
        return done, None
    rout, _ = tr.communicate(timeout=120)
    if tr.returncode != 0 or not rout.strip():
        raise BenchError(f"lockscope {config} exited {tr.returncode}: {' | '.join(lines[-3:])}")
    return done, json.loads(rout)


def retried(*a):
    for attempt in range(3):
        try:
            return run(*a)
        except BenchError as e:
            if attempt == 2:
                raise
            print(f"  retry: {e}", file=sys.stderr)
    raise BenchError("unreachable")


def stacked(rep):
    """(waits, holds) recorded on stacks in a report."""
    w = h = 0
    for r in rep["rows"]:
        for s in r.get("stacks", []):
            w += s["count"]
            h += s.get("hold_count", 0)
    return w, h


def measure(label, source, wl_args, ops, rounds):
    elapsed = {c: [] for c in ORDER}
    reps = {c: [] for c in CONFIGS}
    n_ops = None
    bu.stats(False)
    for i in range(rounds):
        benchlib.settle(3)
        order = ORDER[i % len(ORDER):] + ORDER[:i % len(ORDER)]
        for c in order:
            done, rep = retried(c, source, wl_args, ops)
            elapsed[c].append(done["elapsed_ns"])
            n_ops = operations(done, wl_args)
            if rep is not None:
                reps[c].append(rep)
        print(f"  {label}: round {i + 1}/{rounds}: " + ", ".join(
            f"{c} {elapsed[c][-1] / 1e6:.0f} ms" for c in ORDER), file=sys.stderr)
    costs = {}
    bu.stats(True)
    try:
        for c in CONFIGS:
            # the sysctl is machine-wide: another tool may turn it off
            # under us (no runs counted); then measure again
            for _ in range(3):
                bu.stats(True)
                _, rep = retried(c, source, wl_args, ops)
                costs[c] = {p["name"]: p["run_time_ns"] / p["run_cnt"]
                            for p in rep["bpf_programs"] if p["run_cnt"]}
                if costs[c]:
                    break
    finally:
        bu.stats(False)
    med = statistics.median
    out = []
    for c in ORDER:
        ratios = sorted(elapsed[c][k] / elapsed["base"][k] for k in range(rounds))
        vs_plain = sorted(elapsed[c][k] / elapsed["plain"][k] for k in range(rounds))
        row = {
            "config": c,
            "ms": med(elapsed[c]) / 1e6,
            "ratio": med(ratios),
            "plain": med(vs_plain), "lo": vs_plain[0], "hi": vs_plain[-1],
        }
        if c != "base":
            row["added"] = med((elapsed[c][k] - elapsed["plain"][k]) / n_ops
                               for k in range(rounds))
            row["progs"] = costs.get(c, {})
            row["stacked"] = stacked(reps[c][-1])
            row["lost"] = max(sum(v for k, v in r["lost"].items() if k.startswith(source + "."))
                              for r in reps[c])
        out.append(row)
    return {"label": label, "source": source, "ops": n_ops, "rounds": rounds,
            "wl": " ".join(wl_args + ["--ops", str(ops)]), "rows": out}


def section(results, argv, other):
    lines = [
        SECTION, "",
        "What full stacks cost, beside the same source without them. Produced by",
        "`scripts/bench_stacks.py` (method in its header): every round runs the",
        "workload alone and under `lockscope report -p PID --source SRC` with each",
        "stack setting, in an order that rotates from round to round; `vs alone`",
        "and `vs plain` are medians of the per-round ratios to the workload alone",
        "and to the same source without stacks (min-max beside it), `+ns/op` the",
        "median added time per operation over the latter. BPF ns/run is the kernel's own per-program run",
        "time (`kernel.bpf_stats_enabled=1`, one more run per setting; it adds",
        "~50 ns per run itself). `stacked` is waits / holds recorded on stacks",
        "in one run.", "",
        *benchlib.command_lines("sudo python3 scripts/bench_stacks.py", argv, commit=True),
        benchlib.kernel_line(other),
        f"- Medians over {results[0]['rounds']} rounds per row.", "",
    ]
    for r in results:
        lines += [f"{r['label']} (`lockscope workload {r['wl']}`, {r['ops']} operations):", "",
                  "| setting | workload ms | vs alone | vs plain (min-max) | +ns/op vs plain | "
                  "BPF ns/run per program | stacked waits/holds | lost |",
                  "|---|---:|---:|---|---:|---|---:|---:|"]
        for c in r["rows"]:
            if c["config"] == "base":
                lines.append(f"| alone | {c['ms']:.1f} | 1 | | | | | |")
                continue
            progs = ", ".join(f"{n} {v:.0f}" for n, v in sorted(c["progs"].items()))
            w, h = c["stacked"]
            lines.append(f"| {c['config']} | {c['ms']:.1f} | {c['ratio']:.2f}x | "
                         f"{c['plain']:.2f}x ({c['lo']:.2f}-{c['hi']:.2f}) | "
                         f"{c['added']:.0f} | {progs} | {w}/{h} | {c['lost']} |")
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds per workload (default 5)")
    ap.add_argument("--quick", action="store_true", help="10x fewer operations per run")
    ap.add_argument("--write", action="store_true", help="rewrite the section in BENCHMARKS.md")
    args = ap.parse_args()
    benchlib.need_root("bench_stacks.py")
    benchlib.build_release("bench_stacks.py")
    start = benchlib.cpu_snapshot()
    results = []
    with benchlib.bpf_stats():
        try:
            for label, source, wl_args, ops in WORKLOADS:
                ops = max(ops // 10, 100) if args.quick else ops
                results.append(measure(label, source, wl_args, ops, args.rounds))
        except BenchError as e:
            sys.exit(f"bench_stacks.py: {e}")
    text = section(results, sys.argv[1:], benchlib.other_load(start))
    benchlib.publish(SECTION, text, args.write, "bench_stacks.py")


if __name__ == "__main__":
    main()
