#!/usr/bin/env python3
"""Does `lockscope trace --json` to a file keep up (issue 13, item 4)?

    sudo python3 scripts/bench_stream.py [--rounds 3] [--threads 2]
        [--ops 1500000] [--write-size 64] [--ringbuf-mb 8] [--drain-mb 256]

Two measures, each `--rounds` times:

live   `lockscope trace --json --source kernel-contention` system-wide,
       stdout to a file, while `lockscope workload pipe` (N writers on one
       pipe: pipe->mutex contention) runs. Reports the workload's
       contentions seen and their rate over the workload's own elapsed
       time, every event of the trace, the loss counters of the end line
       (ringbuf_dropped is the consumer falling behind), and the tracer's
       CPU time (on-CPU ns of its main thread, the consumer: schedstat)
       while the workload ran: CPU % and ns per event.
drain  the consumer's own ceiling, independent of how fast one workload
       can contend on this machine: the tracer (ring of --drain-mb MiB) is
       stopped (SIGSTOP) after "tracing", the workload fills its ring, the
       window's -d passes, then SIGCONT: the tracer writes every record
       and the end line. Events drained / its CPU time from SIGCONT to the
       end line (exit not included) is the rate one core of consumer
       sustains (decode, names, JSON, write); the ring should be full
       (ringbuf_dropped > 0) or hold many events for a fair figure.

LOCKSCOPE_BIN=PATH measures another build (before/after). Output goes to --out (default /tmp/lockscope-stream.jsonl; the file is
rewritten each run). Python 3 standard library only; root.
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
BIN = os.environ.get("LOCKSCOPE_BIN", os.path.join(TARGET, "release", "lockscope"))


def cpu_ns(pid):
    """On-CPU ns of the main thread of `pid` (schedstat's first field):
    the consumer; lockscope's short-lived helper threads are not it."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return None


def start_trace(out, ringbuf_mb, duration):
    f = open(out, "wb")
    p = subprocess.Popen(
        [BIN, "trace", "--json", "--source", "kernel-contention",
         "--ringbuf-mb", str(ringbuf_mb), "-d", duration],
        stdout=f, stderr=subprocess.PIPE, text=True)
    f.close()
    err = []
    for line in p.stderr:
        err.append(line)
        if "lockscope: tracing" in line:
            return p, err
    p.wait()
    raise SystemExit("trace did not start: " + "".join(err))


def run_workload(a):
    out = subprocess.run(
        [BIN, "workload", "pipe", "--threads", str(a.threads), "--ops", str(a.ops),
         "--write-size", str(a.write_size), "--json"],
        check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("{") and "elapsed_ns" in line:
            return json.loads(line)
    raise SystemExit(f"no elapsed_ns in the workload's output: {out[-300:]!r}")


def read_trace(out, wl_pid):
    """(events of the workload's pid, end line)."""
    mine, end = 0, None
    with open(out, "rb") as f:
        for line in f:
            if line.startswith(b'{"type":"end"'):
                end = json.loads(line)
            elif b'"pid":%d,' % wl_pid in line:
                mine += 1
    if end is None:
        raise SystemExit("no end line in " + out)
    return mine, end


def finish(p):
    """Waits for the tracer; returns its total CPU ns from rusage."""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    rest = p.stderr.read()
    p.stderr.close()
    if p.returncode != 0:
        raise SystemExit(f"trace exited with {p.returncode}: {rest}")
    return int((ru.ru_utime + ru.ru_stime) * 1e9), rest


def wl_pid_of(wl):
    return int(wl["pid"]) if "pid" in wl else None


def live(a):
    p, _ = start_trace(a.out, a.ringbuf_mb, "10m")
    c0, t0 = cpu_ns(p.pid), time.monotonic()
    wl = run_workload(a)
    c1, t1 = cpu_ns(p.pid), time.monotonic()
    # what the ring holds at the end is drained at SIGINT: included
    p.send_signal(signal.SIGINT)
    finish(p)
    mine, end = read_trace(a.out, wl_pid_of(wl))
    secs = wl["elapsed_ns"] / 1e9
    cpu = (c1 - c0) / 1e9
    return {
        "contentions": mine,
        "rate": mine / secs,
        "workload_s": secs,
        "events": end["events"],
        "events_per_s": end["events"] / (end["duration_ns"] / 1e9),
        "dropped": end["lost"].get("ringbuf_dropped", 0),
        "lost": {k: v for k, v in end["lost"].items() if v},
        "cpu_pct": 100 * cpu / (t1 - t0),
        "ns_per_event": (c1 - c0) / max(mine, 1),
    }


def drain(a):
    p, _ = start_trace(a.out, a.drain_mb, "1s")
    p.send_signal(signal.SIGSTOP)
    try:
        wl = run_workload(a)
        time.sleep(1.0)  # the -d window has passed: SIGCONT ends it
        c0 = cpu_ns(p.pid)
    finally:
        p.send_signal(signal.SIGCONT)
    t0 = time.monotonic()
    # the end line is written once every record is: CPU and time then,
    # before the process tears down (exit, unmapping the rings)
    c1 = None
    with open(a.out, "rb") as f:
        while p.poll() is None:
            f.seek(max(os.path.getsize(a.out) - 4096, 0))
            if b'{"type":"end"' in f.read():
                c1, wall = cpu_ns(p.pid), time.monotonic() - t0
                break
            time.sleep(0.001)
    total, _ = finish(p)
    if c1 is None:  # exited between two looks: whole run
        c1, wall = total, time.monotonic() - t0
    mine, end = read_trace(a.out, wl_pid_of(wl))
    cpu = (c1 - c0) / 1e9
    return {
        "events": end["events"],
        "contentions": mine,
        "dropped": end["lost"].get("ringbuf_dropped", 0),
        "cpu_s": cpu,
        "wall_s": wall,
        "per_cpu_s": end["events"] / cpu,
        "per_wall_s": end["events"] / wall,
        "bytes": os.path.getsize(a.out),
    }


def rounds(a, run, say):
    """`a.rounds` runs of `run(a)`, each printed as `say(round, figures)`:
    a function of a figure's name (and `over`, median by default) over
    the rounds."""
    rows = []
    for r in range(a.rounds):
        x = run(a)
        rows.append(x)
        print(say(r + 1, x), flush=True)
    return lambda k, over=statistics.median: over(x[k] for x in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ops", type=int, default=1500000)
    ap.add_argument("--write-size", type=int, default=64)
    ap.add_argument("--ringbuf-mb", type=int, default=8)
    ap.add_argument("--drain-mb", type=int, default=256)
    ap.add_argument("--out", default="/tmp/lockscope-stream.jsonl")
    ap.add_argument("--only", choices=["live", "drain"])
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (BPF)")
    print(f"lockscope: {BIN}; workload pipe --threads {a.threads} --ops {a.ops} "
          f"--write-size {a.write_size}")
    if a.only != "drain":
        med = rounds(a, live, lambda r, x: (
            f"live {r}: {x['contentions']} workload contentions in "
            f"{x['workload_s']:.2f} s = {x['rate'] / 1e3:.0f}k/s; trace: "
            f"{x['events']} events, {x['events_per_s'] / 1e3:.0f}k/s over its window; "
            f"ringbuf_dropped {x['dropped']}; consumer {x['cpu_pct']:.1f}% CPU, "
            f"{x['ns_per_event']:.0f} ns/event; lost {x['lost']}"))
        print(f"live median: {med('rate') / 1e3:.0f}k contentions/s, dropped "
              f"{med('dropped', max)} (max), consumer {med('cpu_pct'):.1f}% CPU, "
              f"{med('ns_per_event'):.0f} ns/event")
    if a.only != "live":
        med = rounds(a, drain, lambda r, x: (
            f"drain {r}: {x['events']} events ({x['bytes'] / 1e6:.0f} MB) in "
            f"{x['wall_s']:.2f} s wall, {x['cpu_s']:.2f} s CPU: "
            f"{x['per_cpu_s'] / 1e3:.0f}k events per CPU-s, "
            f"{x['per_wall_s'] / 1e3:.0f}k/s wall; ringbuf_dropped {x['dropped']}"))
        print(f"drain median: {med('per_cpu_s') / 1e3:.0f}k events per CPU-second "
              f"({1e9 / med('per_cpu_s'):.0f} ns/event), {med('per_wall_s') / 1e3:.0f}k/s wall")


if __name__ == "__main__":
    main()
