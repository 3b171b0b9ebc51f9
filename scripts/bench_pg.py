#!/usr/bin/env python3
"""PostgreSQL under pgbench, with and without lockscope (issue 16, item 3).

    sudo python3 scripts/bench_pg.py [--pairs 3] [--secs 10] [--clients 16]

A PostgreSQL 15 cluster (Debian's package) is initdb'd in a temporary
directory, listening on a Unix socket only, and filled with `pgbench -i -s
10`. Then `pgbench -c CLIENTS -j 2 -N -T SECS` runs in pairs of runs, one
without lockscope and one with `lockscope report -p POSTMASTER` (its
default sources for a process target: kernel-contention, futex and
app-locks) attached to the server, the order alternating between pairs.
Prints the tps of every run, the medians and their ratio, and the 95%
confidence interval of the median of the pair ratios (distribution-free,
from order statistics: with 8 pairs it spans the 1st to the 8th ratio, with
20 the 6th to the 15th). The cluster is
stopped and removed at the end. With --reset every run starts from a fresh
`pgbench -i` and a checkpoint (otherwise the database grows run by run and
tps drifts). LOCKSCOPE_BIN=PATH measures another build. With --cost the
BPF statistics are on (kernel.bpf_stats_enabled=1, which adds its own cost
to every program run) and each traced run also reports what lockscope
itself used: its BPF programs' run time (from the report's
`bpf_programs`), its own CPU time while pgbench ran (/proc/PID/stat, so
its start-up and final report are left out), and their sum as a share of
the machine's CPU time during the run (SECS x CPUs). With --floor every
round has a third run, `floor`: the same lockscope command with
LOCKSCOPE_BENCH_FLOOR=1, so every program it uses stays attached to the
same points but returns at its first statement (what any tool hooked
there pays: the kernel's dispatch, a uprobe's trap); the three runs of a
round go in rotating order, and the script also prints floor/without and
with/floor per round with their intervals: how much of the fall is the
hooks themselves and how much lockscope's own work. Each --floor-source
SRC (repeatable) adds one more run per round, the floor of `--source SRC`
alone (the deadlock detector's kernel edges, on lock:contention_begin/end,
load with every source), to tell which hooks the floor is made of.
--interleave N runs one long `pgbench -P 1` through N cycles of phases
instead (see --help), comparing the phases of each cycle; --peer CMD adds
a phase with a peer tool running (`perf lock contention -a -b`, built by
scripts/build_perf.sh), for the same comparison.
Python 3 standard library (and scripts/benchlib.py); root.
"""
import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile

import benchlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("LOCKSCOPE_BIN", os.path.join(ROOT, "target", "release", "lockscope"))
PG = "/usr/lib/postgresql/15/bin"


def as_postgres(*cmd, check=True):
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=check,
                          capture_output=True, text=True)


def pgbench_tps(sock, a):
    out = as_postgres(f"{PG}/pgbench", "-h", sock, "-c", str(a.clients), "-j", "2", "-N",
                      "-T", str(a.secs), "postgres").stdout
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    if not m:
        raise SystemExit(f"no tps in pgbench's output:\n{out}")
    return float(m.group(1))


def cpu_ns(pid):
    """The CPU time (user + system, all threads) process `pid` has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK")


def stop_maps():
    """The ids of the BPF maps that hold lockscope's window flags (names
    ending in ".stop", src/bpf/window.bpf.h): of the one lockscope running."""
    out = subprocess.run(["bpftool", "-j", "map", "show"], check=True,
                         capture_output=True, text=True).stdout
    return [m["id"] for m in json.loads(out) if m.get("name", "").endswith(".stop")]


def set_window(ids, open_):
    """Opens or closes the window of every program of the running
    lockscope (started with LOCKSCOPE_BENCH_FLOOR=1, so it never does)."""
    v = "0" if open_ else "1"
    for i in ids:
        subprocess.run(["bpftool", "map", "update", "id", str(i), "key", "0", "0", "0", "0",
                        "value", v, "0", "0", "0"], check=True, capture_output=True)


def interleaved(a, d, pm):
    """--interleave: one long pgbench run, its per-second tps assigned to
    phases; every cycle runs each phase once, and the ratios compare the
    phases of one cycle (tens of seconds apart at most, where this
    machine's speed drifts less than between separate runs)."""
    import threading
    import time
    print(f"lockscope: {BIN} ({benchlib.short_rev()}); sources: {a.source or 'defaults'}; "
          f"postmaster {pm}; pgbench -c {a.clients} -j 2 -N -P 1, {a.interleave} cycles of "
          f"{a.phase} s phases; load average {os.getloadavg()[0]:.2f}", flush=True)
    pg = subprocess.Popen(["runuser", "-u", "postgres", "--", f"{PG}/pgbench", "-h", d,
                           "-c", str(a.clients), "-j", "2", "-N", "-T", "100000", "-P", "1",
                           "postgres"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    samples = []  # (monotonic time the second ended, tps)

    def pump():
        for line in pg.stderr:
            m = re.match(r"progress: [0-9.]+ s, ([0-9.]+) tps", line)
            if m:
                samples.append((time.monotonic(), float(m.group(1))))

    threading.Thread(target=pump, daemon=True).start()
    phases = []  # (cycle, arm, t0, t1)
    settle = 1.0

    def measure(cycle, arm):
        t0 = time.monotonic() + settle
        time.sleep(settle + a.phase)
        phases.append((cycle, arm, t0, time.monotonic()))

    def start(source):
        tracer, lines, ok = benchlib.start_until(
            [BIN, "report", "-p", pm, "--json", "-o", os.path.join(d, "report.json")]
            + (["--source", source] if source else []),
            "lockscope: tracing", 60, env={"LOCKSCOPE_BENCH_FLOOR": "1"})
        if not ok:
            tracer.kill()
            raise SystemExit("lockscope did not attach:\n" + "\n".join(lines))
        return tracer

    def stop(tracer):
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=60)

    try:
        time.sleep(3)  # pgbench's connections
        for c in range(a.interleave):
            measure(c, "without")
            tracer = start(a.source)
            ids = stop_maps()
            inner = ["floor", "with"] + (["floor-stopped"] if a.stopped else [])
            for arm in inner[c % len(inner):] + inner[:c % len(inner)]:
                set_window(ids, arm == "with")
                if arm == "floor-stopped":
                    # the hooks without lockscope's own process running
                    tracer.send_signal(signal.SIGSTOP)
                    measure(c, arm)
                    tracer.send_signal(signal.SIGCONT)
                else:
                    measure(c, arm)
            stop(tracer)
            for src in a.floor_source:
                tracer = start(src)
                measure(c, f"floor:{src}")
                stop(tracer)
            if a.peer:
                peer = start_peer(a.peer)
                measure(c, "peer")
                stop(peer)
            print(f"cycle {c + 1}: " + ", ".join(
                f"{arm} {phase_tps(samples, t0, t1):.1f}"
                for cc, arm, t0, t1 in phases if cc == c), flush=True)
    finally:
        pg.terminate()
        pg.wait(timeout=60)
    arms = (["without", "floor", "with"] + (["floor-stopped"] if a.stopped else [])
            + [f"floor:{s}" for s in a.floor_source] + (["peer"] if a.peer else []))
    tps = {arm: [] for arm in arms}
    for c in range(a.interleave):
        for cc, arm, t0, t1 in phases:
            if cc == c:
                tps[arm].append(phase_tps(samples, t0, t1))
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(tps, f)
    for num, den in [("with", "without"), ("floor", "without"), ("with", "floor")] + (
            [("floor-stopped", "without"), ("floor", "floor-stopped")] if a.stopped else []) + [
            (f"floor:{s}", "without") for s in a.floor_source] + (
            [("peer", "without"), ("peer", "with")] if a.peer else []):
        rs = [x / y for x, y in zip(tps[num], tps[den])]
        med = statistics.median(rs)
        line = (f"{num}/{den} per cycle: median {med:.3f} ({(1 - med) * 100:+.1f}% fewer tps)")
        ci = median_ci(rs)
        if ci:
            line += (f", 95% interval {ci[0]:.3f} to {ci[1]:.3f} "
                     f"({(1 - ci[1]) * 100:+.1f}% to {(1 - ci[0]) * 100:+.1f}%)")
        print(line + "; " + " ".join(f"{r:.3f}" for r in rs))


def bpf_prog_ids():
    out = subprocess.run(["bpftool", "-j", "prog", "show"], check=True,
                         capture_output=True, text=True).stdout
    return {p["id"] for p in json.loads(out)}


def start_peer(cmd):
    """Starts a peer tool (`cmd`, split on blanks) and returns once the BPF
    programs it loads have been there, unchanged, for a second."""
    import time
    before = bpf_prog_ids()
    p = subprocess.Popen(cmd.split(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last, since = set(), time.monotonic()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"the peer exited ({p.returncode}): {cmd}")
        new = bpf_prog_ids() - before
        if new != last:
            last, since = new, time.monotonic()
        elif new and time.monotonic() - since >= 1.0:
            return p
        time.sleep(0.2)
    p.kill()
    raise SystemExit(f"the peer loaded no BPF program within 120 s: {cmd}")


def phase_tps(samples, t0, t1):
    """The mean tps of the whole seconds that lie in [t0, t1]."""
    xs = [v for t, v in samples if t - 1.0 >= t0 - 0.05 and t <= t1 + 0.05]
    return statistics.mean(xs) if xs else float("nan")


def write_runs(a, runs):
    """--json-out: every run's tps so far, by arm (a long run's partial
    results survive an interruption)."""
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(runs, f)


def median_ci(xs, level=0.95):
    """The distribution-free confidence interval of the median of `xs`
    (order statistics, from the binomial distribution): None when there are
    too few values for `level`."""
    n = len(xs)
    xs = sorted(xs)
    k = 0  # values below the interval, on each side
    while sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n <= (1 - level) / 2:
        k += 1
    if k == 0:
        return None
    return xs[k - 1], xs[n - k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--secs", type=int, default=10)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--reset", action="store_true",
                    help="initialise the database again (pgbench -i) and checkpoint before every "
                         "run, so that every run starts from the same database")
    ap.add_argument("--source", default=None,
                    help="lockscope's --source (default: its defaults for a process target)")
    ap.add_argument("--cost", action="store_true",
                    help="BPF statistics on: report lockscope's BPF and CPU time per traced run")
    ap.add_argument("--floor", action="store_true",
                    help="a third run per round: lockscope's programs attached but returning at "
                         "once (LOCKSCOPE_BENCH_FLOOR=1), the cost of the hooks themselves")
    ap.add_argument("--json-out", metavar="FILE",
                    help="write every run's tps by arm to FILE as the runs end")
    ap.add_argument("--floor-source", action="append", default=[], metavar="SRC",
                    help="one more run per round: the floor of --source SRC alone (repeatable)")
    ap.add_argument("--interleave", type=int, default=0, metavar="CYCLES",
                    help="instead of pairs of runs: one long pgbench run (-P 1) through CYCLES "
                         "cycles of phases (without; lockscope attached with its window closed "
                         "(floor) and open (with); each --floor-source), compared within each "
                         "cycle")
    ap.add_argument("--stopped", action="store_true",
                    help="--interleave: one more phase per cycle, the floor with lockscope's "
                         "process stopped (SIGSTOP): the hooks alone, without its own work")
    ap.add_argument("--peer", metavar="CMD",
                    help="--interleave: one more phase per cycle with CMD (a peer tool, e.g. "
                         "'perf lock contention -a -b') running, started once its BPF programs "
                         "are attached and stopped with SIGINT")
    ap.add_argument("--phase", type=int, default=6, metavar="SECS",
                    help="--interleave: seconds measured per phase (after 1 s to settle)")
    a = ap.parse_args()
    benchlib.need_root("bench_pg.py")
    with benchlib.bpf_stats("1" if a.cost else None):
        run(a)


def run(a):
    d = tempfile.mkdtemp(prefix="lockscope-bench-pg-")
    shutil.chown(d, "postgres", "postgres")
    data = os.path.join(d, "data")
    try:
        as_postgres(f"{PG}/initdb", "-D", data, "-A", "trust")
        as_postgres(f"{PG}/pg_ctl", "-D", data, "-o", f"-k {d} -c listen_addresses=''",
                    "-l", os.path.join(d, "log"), "-w", "start")
        as_postgres(f"{PG}/pgbench", "-h", d, "-i", "-s", "10", "postgres")
        with open(os.path.join(data, "postmaster.pid")) as f:
            pm = f.readline().strip()
        if a.interleave:
            interleaved(a, d, pm)
            return
        print(f"lockscope: {BIN} ({benchlib.short_rev()}); sources: {a.source or 'defaults'}; "
              f"postmaster {pm}; "
              f"pgbench -c {a.clients} -j 2 -N -T {a.secs}; load average "
              f"{os.getloadavg()[0]:.2f}")
        arms = (["without", "with"] + (["floor"] if a.floor else [])
                + [f"floor:{src}" for src in a.floor_source])
        runs = {m: [] for m in arms}
        costs = []
        for i in range(a.pairs):
            # rotating order: every arm runs first, second (and third)
            # equally often
            order = arms[i % len(arms):] + arms[:i % len(arms)]
            for mode in order:
                if a.reset:
                    as_postgres(f"{PG}/pgbench", "-h", d, "-i", "-q", "-s", "10", "postgres")
                    as_postgres(f"{PG}/psql", "-X", "-q", "-h", d, "-d", "postgres",
                                "-c", "CHECKPOINT")
                tracer = None
                report = os.path.join(d, "report.json")
                if mode != "without":
                    source = mode.split(":", 1)[1] if ":" in mode else a.source
                    tracer, lines, ok = benchlib.start_until(
                        [BIN, "report", "-p", pm, "--json", "-o", report]
                        + (["--source", source] if source else []),
                        "lockscope: tracing", 60,
                        env={"LOCKSCOPE_BENCH_FLOOR": "1"} if mode.startswith("floor") else None)
                    if not ok:
                        tracer.kill()
                        raise SystemExit("lockscope did not attach:\n" + "\n".join(lines))
                cpu0 = cpu_ns(tracer.pid) if tracer else 0
                tps = pgbench_tps(d, a)
                cost = ""
                if tracer is not None:
                    cpu = cpu_ns(tracer.pid) - cpu0
                    tracer.send_signal(signal.SIGINT)
                    tracer.wait(timeout=60)
                    if a.cost:
                        with open(report) as f:
                            progs = json.load(f).get("bpf_programs", [])
                        busy = sorted(progs, key=lambda p: -p["run_time_ns"])[:4]
                        c = {"bpf_ns": sum(p["run_time_ns"] for p in progs),
                             "runs": sum(p["run_cnt"] for p in progs),
                             "cpu_ns": cpu}
                        c["share"] = (c["bpf_ns"] + c["cpu_ns"]) / (a.secs * os.cpu_count() * 1e9)
                        if mode == "with":
                            costs.append(c)
                        cost = (f"; BPF {c['bpf_ns'] / 1e6:.1f} ms in {c['runs']} runs, "
                                f"lockscope CPU {c['cpu_ns'] / 1e6:.1f} ms: "
                                f"{c['share'] * 100:.2f}% of the machine (busiest: "
                                + ", ".join(f"{p['name']} {p['run_cnt']} x "
                                            f"{p['run_time_ns'] / max(p['run_cnt'], 1):.0f} ns"
                                            for p in busy) + ")")
                runs[mode].append(tps)
                print(f"pair {i + 1} {mode:7} lockscope: {tps:10.1f} tps{cost}", flush=True)
                write_runs(a, runs)
        med = {m: statistics.median(v) for m, v in runs.items()}
        ratio = med["with"] / med["without"]
        print(f"median tps without lockscope {med['without']:.1f}, with {med['with']:.1f}: "
              f"with/without {ratio:.3f} ({(1 - ratio) * 100:+.1f}% fewer tps with it)")
        if a.floor:
            print(f"median tps of the floor (programs attached, returning at once) "
                  f"{med['floor']:.1f}: floor/without {med['floor'] / med['without']:.3f}")
        # the database grows run by run (pgbench -N appends): the runs of
        # one pair (round) are the closest in time
        for m in arms[3 if a.floor else 2:]:
            print(f"median tps of {m}: {med[m]:.1f}: {m}/without {med[m] / med['without']:.3f}")
        for num, den in [("with", "without")] + (
                [("floor", "without"), ("with", "floor")] if a.floor else []) + [
                (m, "without") for m in arms[3 if a.floor else 2:]]:
            pairs = [x / y for x, y in zip(runs[num], runs[den])]
            pr = statistics.median(pairs)
            print(f"per-{'round' if a.floor else 'pair'} {num}/{den}: "
                  + " ".join(f"{r:.3f}" for r in pairs)
                  + f"; median {pr:.3f} ({(1 - pr) * 100:+.1f}% fewer tps)")
            ci = median_ci(pairs)
            if ci:
                print(f"95% confidence interval of the median {num}/{den} ratio: "
                      f"{ci[0]:.3f} to {ci[1]:.3f} "
                      f"({(1 - ci[1]) * 100:+.1f}% to {(1 - ci[0]) * 100:+.1f}% fewer tps)")
        if costs:
            share = statistics.median(c["share"] for c in costs)
            print(f"lockscope's own cost (BPF + its CPU), median over the traced runs: "
                  f"{share * 100:.2f}% of the machine's CPU time")
    finally:
        as_postgres(f"{PG}/pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
