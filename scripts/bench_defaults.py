#!/usr/bin/env python3
"""What a system-wide `lockscope report` costs a bystander (issue 12): a
process doing uncontended pthread lock/unlock pairs, timed by itself
(`lockscope workload mutex-pairs --threads 1 --ops N --json`, its
`elapsed_ns`), alone and while a system-wide report runs, in one run,
alternating:

    sudo python3 scripts/bench_defaults.py [--rounds 5] [--ops 200000]

Modes: `alone`; `default` (`lockscope report`, no --source: kernel
contention only); `user-locks` (`lockscope report --source user-locks`,
the uprobes on the system's libc that were the default before). Prints
the median elapsed time per mode and its ratio to `alone`. Python 3
standard library only; root.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "lockscope")

MODES = {
    "alone": None,
    "default": ["report"],
    "user-locks": ["report", "--source", "user-locks"],
}


def bystander(ops):
    out = subprocess.run(
        [BIN, "workload", "mutex-pairs", "--threads", "1", "--ops", str(ops), "--json"],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[0])["elapsed_ns"]


def traced(args, ops):
    p = subprocess.Popen([BIN] + args + ["--json"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if "lockscope: tracing" in line:
            break
    try:
        return bystander(ops)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait()
        settle()


def settle():
    """Waits until no lockscope process is left: lockscope hands its links
    to a closer process that releases them after it exits (the kernel
    takes ~100 ms per uprobe link), and until then the probes still trap."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if subprocess.run(["pgrep", "-x", "lockscope"], capture_output=True).returncode:
            return
        time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ops", type=int, default=200000)
    a = ap.parse_args()
    times = {m: [] for m in MODES}
    for r in range(a.rounds):
        order = list(MODES)
        order = order[r % len(order):] + order[:r % len(order)]
        for m in order:
            time.sleep(0.5)
            ns = bystander(a.ops) if MODES[m] is None else traced(MODES[m], a.ops)
            times[m].append(ns)
    base = statistics.median(times["alone"])
    print(f"bystander: mutex-pairs --threads 1 --ops {a.ops}, {a.rounds} rounds, "
          f"modes in rotating order; lockscope {BIN}")
    print("| mode | median elapsed | ratio to alone | all rounds (ms) |")
    print("|---|---:|---:|---|")
    for m, v in times.items():
        med = statistics.median(v)
        rounds = ", ".join(f"{x / 1e6:.2f}" for x in v)
        print(f"| {m} | {med / 1e6:.2f} ms | {med / base:.2f}x | {rounds} |")


if __name__ == "__main__":
    main()
