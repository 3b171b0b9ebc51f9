#!/usr/bin/env python3
"""Start-up time and footprint of `lockscope report` (issue 13, item 5).

    sudo python3 scripts/bench_startup.py [--runs 10] [--rss-secs 30]

Start-up: the time from starting `lockscope report ...` until its stderr
shows "lockscope: tracing" (printed once every source is attached), for
  kc        `report --source kernel-contention`
  defaults  `report` (system-wide defaults)
  pid       `report -p PID` (the process-target defaults) of an idle
            `lockscope workload pipe --wait-usr1` process
--runs times each, in rotation; median, min and max in ms.

Footprint: VmHWM (peak RSS) of `lockscope report` (defaults, system-wide)
read from /proc/PID/status just before a --rss-secs window ends, and its
peak RSS over the whole run with the final report (rusage), while
`lockscope workload pipe --threads 8 --ops large` runs and a busy loop
spins. LOCKSCOPE_BIN=PATH measures another build (before/after).
Python 3 standard library only; root.
"""
import argparse
import os
import signal
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.environ.get("LOCKSCOPE_BIN", os.path.join(TARGET, "release", "lockscope"))
MARK = "lockscope: tracing"


def start(args):
    """Starts lockscope; returns (process, ms until MARK on stderr)."""
    t0 = time.monotonic()
    p = subprocess.Popen([BIN] + args, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    err = []
    for line in p.stderr:
        if MARK in line:
            return p, (time.monotonic() - t0) * 1e3
        err.append(line)
    p.wait()
    raise SystemExit(f"{args}: no '{MARK}' line: {''.join(err)}")


def stop(p):
    p.send_signal(signal.SIGINT)
    p.stderr.read()
    p.wait()


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    return None


def startup(a):
    idle = subprocess.Popen([BIN, "workload", "pipe", "--threads", "2", "--ops", "10",
                             "--wait-usr1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    modes = {
        "kc": ["report", "--source", "kernel-contention"],
        "defaults": ["report"],
        "pid": ["report", "-p", str(idle.pid)],
    }
    times = {m: [] for m in modes}
    try:
        for r in range(a.runs):
            names = list(modes)
            names = names[r % len(names):] + names[:r % len(names)]
            for m in names:
                p, ms = start(modes[m])
                stop(p)
                times[m].append(ms)
                time.sleep(0.2)
    finally:
        idle.kill()
        idle.wait()
    for m, ts in times.items():
        print(f"start-up {m:9} ({' '.join(modes[m][1:]) or 'defaults'}): median "
              f"{statistics.median(ts):.0f} ms, min {min(ts):.0f}, max {max(ts):.0f} "
              f"over {len(ts)} runs", flush=True)


def footprint(a):
    busy = subprocess.Popen(["python3", "-c", "while True: pass"])
    wl = subprocess.Popen([BIN, "workload", "pipe", "--threads", "8", "--ops", "100000000"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p, ms = start(["report", "-d", f"{a.rss_secs}s"])
        t0 = time.monotonic()
        hwm = rss = None
        while p.poll() is None and time.monotonic() - t0 < a.rss_secs - 0.5:
            hwm, rss = vm(p.pid, "VmHWM"), vm(p.pid, "VmRSS")
            time.sleep(0.5)
        p.stderr.read()
        _, _, ru = os.wait4(p.pid, 0)
        p.returncode = 0
        peak = ru.ru_maxrss  # kB, the whole run including the final report
    finally:
        wl.kill()
        busy.kill()
        wl.wait()
        busy.wait()
    print(f"footprint: report (defaults) for {a.rss_secs} s under pipe --threads 8 + a busy "
          f"loop: VmHWM {hwm / 1024:.1f} MiB, VmRSS {rss / 1024:.1f} MiB 0.5 s before the end; "
          f"peak RSS of the whole run (ru_maxrss) {peak / 1024:.1f} MiB (start-up {ms:.0f} ms)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--rss-secs", type=int, default=30)
    ap.add_argument("--only", choices=["startup", "footprint"])
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (BPF)")
    print(f"lockscope: {BIN}; load average {os.getloadavg()[0]:.2f}")
    if a.only != "footprint":
        startup(a)
    if a.only != "startup":
        footprint(a)


if __name__ == "__main__":
    main()
