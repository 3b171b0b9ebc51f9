#!/usr/bin/env python3
"""Memory of `lockscope serve` (default sources, system-wide) on a busy,
churning host: VmRSS and VmHWM, the peak included (issue 11).

    sudo python3 scripts/serve_memory.py [--minutes 5] [--bin NAME=PATH ...]

Starts one `lockscope serve --listen 127.0.0.1:PORT` per --bin (default:
the release build under $CARGO_TARGET_DIR or target/), side by side, so
that builds are compared under the very same load. From 10 s on it keeps
a busy load running that fills the in-kernel maps (new processes, threads
and locks all the time), with the first binary's workloads:

    loop: lockscope workload pipe mutex-pairs std-mutex mmap --threads 4 --ops 2000
    loop: lockscope workload rwlock mutex-trylock --threads 3 --ops 500
    loop: lockscope workload pipe --threads 8 --ops 100000000
    loop: five /bin/true

Every serve gets /metrics and /api/summary scraped once a second; VmRSS
and VmHWM of every serve are read from /proc/PID/status once a second.
At the end it prints, per serve, VmRSS (min / median / max), the final
VmHWM, when VmHWM last rose, and the `map_full` loss counters from
the last /metrics answered (maps full: non-zero). Python 3 standard library only; root.
"""
import argparse
import http.client
import os
import re
import statistics
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import TARGET  # noqa: E402

DEFAULT_BIN = os.path.join(TARGET, "release", "lockscope")


def status_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


def start_serve(binary, port):
    return benchlib.start_serve([binary, "serve", "--listen", f"127.0.0.1:{port}"],
                                120, f"serve_memory.py: {binary} serve")


class Loop(threading.Thread):
    """Runs one command again and again until stopped."""

    def __init__(self, cmd, times=1):
        super().__init__(daemon=True)
        self.cmd, self.times = cmd, times
        self.stop = threading.Event()
        self.runs = 0
        self.procs = []

    def run(self):
        while not self.stop.is_set():
            self.procs = [subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
                          for _ in range(self.times)]
            for p in self.procs:
                p.wait()
            self.runs += 1

    def finish(self):
        self.stop.set()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        self.join(30)


def scraper(port, stop, counts):
    conn = None
    while not stop.wait(1.0):
        for path in ("/metrics", "/api/summary"):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("GET", path)
                r = conn.getresponse()
                body = r.read()
                counts["ok" if r.status == 200 else "bad"] += 1
                if r.status == 200 and path == "/metrics":
                    counts["metrics"] = body.decode(errors="replace")
            except Exception:
                counts["bad"] += 1
                if conn is not None:
                    conn.close()
                conn = None


def map_full(body):
    out = {}
    for m in re.finditer(r'^lockscope_lost_total\{source="([^"]+)",counter="map_full"\} (\S+)',
                         body, re.M):
        out[m.group(1)] = int(float(m.group(2)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--bin", action="append", default=[],
                    help="NAME=PATH of a lockscope binary (repeatable)")
    ap.add_argument("--port", type=int, default=19490)
    ap.add_argument("--workload-bin", help="lockscope binary that runs the workloads "
                    "(default: the first --bin)")
    ap.add_argument("--log", help="write every sample (t, name, VmRSS, VmHWM kB) here")
    a = ap.parse_args()
    bins = [b.split("=", 1) for b in a.bin] or [["lockscope", DEFAULT_BIN]]
    serves = []
    for i, (name, path) in enumerate(bins):
        p, lines = start_serve(path, a.port + i)
        serves.append({"name": name, "bin": path, "port": a.port + i, "proc": p,
                       "lines": lines, "samples": [], "counts": {"ok": 0, "bad": 0, "metrics": ""}})
    print("attached:", ", ".join(f"{s['name']} pid {s['proc'].pid} port {s['port']}"
                                 for s in serves), flush=True)
    stop = threading.Event()
    for s in serves:
        threading.Thread(target=scraper, args=(s["port"], stop, s["counts"]),
                         daemon=True).start()
    wl = a.workload_bin or bins[0][1]
    loops = [
        Loop([wl, "workload", "pipe", "mutex-pairs", "std-mutex", "mmap",
              "--threads", "4", "--ops", "2000"]),
        Loop([wl, "workload", "rwlock", "mutex-trylock", "--threads", "3", "--ops", "500"]),
        Loop([wl, "workload", "pipe", "--threads", "8", "--ops", "100000000"]),
        Loop(["/bin/true"], times=5),
    ]
    log = open(a.log, "w") if a.log else None
    t0 = time.monotonic()
    started = False
    end = t0 + a.minutes * 60
    try:
        while time.monotonic() < end:
            t = time.monotonic() - t0
            if not started and t >= 10:
                for lp in loops:
                    lp.start()
                started = True
            for s in serves:
                if s["proc"].poll() is not None:
                    sys.exit(f"serve_memory.py: {s['name']} exited: " +
                             " | ".join(s["lines"][-5:]))
                rss, hwm = status_kib(s["proc"].pid)
                s["samples"].append((t, rss, hwm))
                if log:
                    log.write(f"{t:.1f} {s['name']} {rss} {hwm}\n")
                    log.flush()
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0 - t)))
    finally:
        full = {}
        for s in serves:
            # from the last /metrics answered
            full[s["name"]] = map_full(s["counts"].get("metrics", ""))
        stop.set()
        for lp in loops:
            if lp.is_alive():
                lp.finish()
        for s in serves:
            s["proc"].terminate()
        for s in serves:
            try:
                s["proc"].wait(60)
            except subprocess.TimeoutExpired:
                s["proc"].kill()
    runs = ", ".join(str(lp.runs) for lp in loops)
    print(f"{a.minutes:g} min; load loop runs: {runs}")
    for s in serves:
        smp = s["samples"]
        rss = [r for t, r, _ in smp if t >= 30]
        hwm_end = smp[-1][2]
        rose = max((t for (t, _, h), (_, _, h0) in zip(smp[1:], smp) if h > h0), default=0)
        hwm_at = {int(m): next((h for t, _, h in smp if t >= m * 60), None)
                  for m in range(0, int(a.minutes) + 1)}
        print(f"{s['name']} ({s['bin']}): VmRSS from 30 s: min {min(rss)/1024:.1f} MiB, "
              f"median {statistics.median(rss)/1024:.1f} MiB, max {max(rss)/1024:.1f} MiB; "
              f"VmHWM at end {hwm_end/1024:.1f} MiB (last rose at {rose:.0f} s); "
              f"VmHWM per minute: "
              + " ".join(f"{m}:{h/1024:.1f}" for m, h in hwm_at.items() if h)
              + f"; scrapes ok {s['counts']['ok']} failed {s['counts']['bad']}; "
              f"map_full {full[s['name']]}")


if __name__ == "__main__":
    main()
