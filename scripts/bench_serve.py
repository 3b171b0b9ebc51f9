#!/usr/bin/env python3
"""Scrape-load benchmark of `lockscope serve`: many scrapes while a
workload runs; counts errors and follows lockscope's resident memory.

    sudo python3 scripts/bench_serve.py [--minutes 10] [--per-minute 1000] [--write]

Starts `lockscope serve --per-process` system-wide on a loopback port, keeps
lockscope's own workloads running one after another for the whole time
(`workload pipe --threads 4`, then `workload pipe-hold`: new processes and
threads keep appearing, so the in-kernel maps and the per-process cap are
exercised), and scrapes /metrics at a fixed rate (default 1000 a minute,
scheduled on absolute times, over --clients keep-alive connections taking
turns) while a second client polls /api/summary and /api/history once
a second like the dashboard. A scrape is an error unless it answers 200
with a complete OpenMetrics body (ends with `# EOF`, has wait histograms).
lockscope's VmRSS is sampled every second from /proc.

Needs root.  Python 3 standard library only.  --write replaces the
"serve: scrape load" section of BENCHMARKS.md.
"""
import argparse
import datetime
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import BENCH_MD, TARGET  # noqa: E402

BIN = os.path.join(TARGET, "release", "lockscope")
SECTION = "## serve: scrape load"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def start_serve(port):
    return benchlib.start_serve([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--per-process"],
                                60, "bench_serve.py: serve")


class Workloads(threading.Thread):
    """Runs workloads back to back until stopped; counts them."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.runs = 0
        self.failures = 0
        self.proc = None

    def run(self):
        cmds = [
            [BIN, "workload", "pipe", "--threads", "4", "--ops", "100000"],
            [BIN, "workload", "pipe-hold", "--rounds", "20", "--hold", "20ms"],
        ]
        i = 0
        while not self.stop.is_set():
            self.proc = subprocess.Popen(cmds[i % 2], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            rc = self.proc.wait()
            self.runs += 1
            self.failures += rc != 0 and not self.stop.is_set()
            i += 1

    def finish(self):
        self.stop.set()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
        self.join(30)


class Client:
    """One keep-alive connection; reconnects after an error."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def get(self, path):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            self.conn.request("GET", path)
            r = self.conn.getresponse()
            return r.status, r.read()
        except Exception:
            self.conn.close()
            self.conn = None
            raise


def scrape_loop(port, per_minute, seconds, clients, out):
    """Scrapes at fixed absolute times (n * period); `clients` keep-alive
    connections take turns, so one slow answer does not delay the next."""
    period = 60.0 / per_minute
    total = int(seconds / period)
    lock = threading.Lock()
    state = {"next": 0}
    t0 = time.monotonic()

    def worker():
        c = Client(port)
        while True:
            with lock:
                n = state["next"]
                state["next"] += 1
            if n >= total:
                return
            delay = t0 + n * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t = time.monotonic()
            try:
                status, body = c.get("/metrics")
                ok = (status == 200 and body.endswith(b"# EOF\n")
                      and b"lockscope_wait_seconds_bucket{" in body)
                if not ok:
                    out["errors"].append(f"scrape {n}: status {status}, {len(body)} bytes")
                out["bytes"].append(len(body))
            except Exception as e:  # noqa: BLE001 - every failure is an error here
                out["errors"].append(f"scrape {n}: {type(e).__name__}: {e}")
            out["latency"].append(time.monotonic() - t)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["scrapes"] = total
    out["wall"] = time.monotonic() - t0


def dashboard_loop(port, stop, out):
    c = Client(port)
    while not stop.is_set():
        for path in ("/api/summary", "/api/history"):
            try:
                status, body = c.get(path)
                json.loads(body)
                if status != 200:
                    out["dash_errors"].append(f"{path}: {status}")
            except Exception as e:  # noqa: BLE001
                out["dash_errors"].append(f"{path}: {type(e).__name__}: {e}")
            out["dash_requests"] += 1
        stop.wait(1.0)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--per-minute", type=int, default=1000, help="scrapes per minute")
    ap.add_argument("--port", type=int, default=19477)
    ap.add_argument("--clients", type=int, default=4, help="scraping connections (default 4)")
    ap.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    args = ap.parse_args()
    benchlib.need_root("bench_serve.py", "BPF")
    if not args.no_build:
        benchlib.build_release("bench_serve.py")
    seconds = args.minutes * 60
    serve, serve_err = start_serve(args.port)
    pid = serve.pid
    wl = Workloads()
    wl.start()
    time.sleep(2)  # the first workload is running
    rss = [(0.0, rss_kib(pid))]
    cpu0, wall0 = cpu_s(pid), time.monotonic()
    out = {"errors": [], "latency": [], "bytes": [], "dash_errors": [], "dash_requests": 0}
    stop = threading.Event()
    dash = threading.Thread(target=dashboard_loop, args=(args.port, stop, out), daemon=True)
    dash.start()
    scraper = threading.Thread(target=scrape_loop,
                               args=(args.port, args.per_minute, seconds, args.clients, out),
                               daemon=True)
    scraper.start()
    t0 = time.monotonic()
    while scraper.is_alive():
        scraper.join(1.0)
        if serve.poll() is not None:
            break
        rss.append((time.monotonic() - t0, rss_kib(pid)))
    alive = serve.poll() is None
    cpu = (cpu_s(pid) - cpu0) if alive else float("nan")
    wall = time.monotonic() - wall0
    if alive:
        rss.append((time.monotonic() - t0, rss_kib(pid)))
    stop.set()
    dash.join(5)
    wl.finish()
    summary = {}
    if alive:
        c = Client(args.port)
        try:
            _, body = c.get("/api/summary")
            summary = json.loads(body)
        except Exception:  # noqa: BLE001
            pass
        serve.send_signal(signal.SIGTERM)
        try:
            code = serve.wait(30)
        except subprocess.TimeoutExpired:
            serve.kill()
            code = "killed"
    else:
        code = serve.returncode

    start_kib, peak_kib, end_kib = rss[0][1], max(k for _, k in rss), rss[-1][1]
    # memory after the first minute: growth there is not warm-up
    later = [k for t, k in rss if t >= 60] or [end_kib]
    per_minute = []
    for m in range(0, int(rss[-1][0] // 60) + 1):
        window = [k for t, k in rss if m * 60 <= t < (m + 1) * 60]
        if window:
            per_minute.append(max(window))
    lat = out["latency"]
    scrapes = out.get("scrapes", 0)
    got_rate = scrapes / out["wall"] * 60 if out.get("wall") else 0
    lines = [
        SECTION, "",
        "What `lockscope serve` does under a scrape storm: no failed scrape, and its",
        "memory. Produced by `scripts/bench_serve.py` (root, Python 3 stdlib):", "",
        f"    sudo python3 scripts/bench_serve.py --minutes {args.minutes:g} "
        f"--per-minute {args.per_minute} --write", "",
        "Method: `lockscope serve --per-process` (release build) system-wide on loopback; "
        "lockscope's workloads run back to back the whole time (`pipe --threads 4 --ops "
        "100000`, then `pipe-hold --rounds 20 --hold 20ms`, so processes and threads keep "
        "appearing); scrapes of /metrics are scheduled at a fixed rate and sent over "
        f"{args.clients} keep-alive connections taking turns (each checks every answer: 200, a "
        "complete OpenMetrics body); another client "
        "polls /api/summary and /api/history once a second like the dashboard; "
        "lockscope's VmRSS is read from /proc every second. Memory is bounded by the "
        "in-kernel map (`--max-entries`): once thread churn has filled it (`map_full` "
        "counts), each read of its 16384 keys allocates some tens of MiB for a moment, "
        "returned after the read (malloc_trim), so the per-minute peaks vary with whether "
        "a sample fell inside a read while the level between reads stays flat.", "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"kernel `{platform.release()}`; CPU: {benchlib.cpu_model('?')} ({os.cpu_count()} CPUs)",
        f"- Scrapes: {scrapes} in {out.get('wall', 0):.0f} s ({got_rate:.0f} a minute); "
        f"errors: {len(out['errors'])}; dashboard requests: {out['dash_requests']}, "
        f"errors: {len(out['dash_errors'])}",
        f"- Scrape latency: median {statistics.median(lat) * 1e3:.1f} ms, "
        f"p99 {pct(lat, 0.99) * 1e3:.1f} ms, max {max(lat) * 1e3:.1f} ms; "
        f"body median {statistics.median(out['bytes']) / 1024:.0f} KiB"
        if lat and out["bytes"] else "- Scrape latency: no scrapes",
        f"- Resident memory of lockscope: start {start_kib / 1024:.1f} MiB, "
        f"peak {peak_kib / 1024:.1f} MiB, end {end_kib / 1024:.1f} MiB "
        f"(after the first minute: min {min(later) / 1024:.1f}, max {max(later) / 1024:.1f} MiB); "
        "peak of each minute: " + ", ".join(f"{k / 1024:.1f}" for k in per_minute) + " MiB",
        f"- lockscope CPU (user + system, BPF programs not included): "
        f"{cpu:.1f} s in {wall:.0f} s = {cpu / wall * 100:.1f}% of one CPU",
        f"- Workload runs: {wl.runs} ({wl.failures} failed); at the end lockscope exported "
        f"{summary.get('series', '?')} lock series (cap {summary.get('max_series', '?')}), "
        f"folded {summary.get('folded_series', '?')} label sets and "
        f"{summary.get('folded_processes', '?')} processes into `other`, "
        f"{summary.get('collections', '?')} map reads, "
        f"{summary.get('collect_errors', '?')} read errors; loss counters: "
        + (", ".join(f"{k} {v}" for k, v in summary.get("lost", {}).items() if v) or "all 0"),
        f"- serve exit status after SIGTERM: {code}", "",
    ]
    text = "\n".join(lines)
    print(text)
    for e in (out["errors"] + out["dash_errors"])[:10]:
        print("error:", e, file=sys.stderr)
    if args.write:
        benchlib.write_md(SECTION, text)
        print(f"wrote {BENCH_MD}", file=sys.stderr)
    if out["errors"] or out["dash_errors"] or not alive:
        sys.exit(1)


if __name__ == "__main__":
    main()
