#!/usr/bin/env python3
"""lockscope side by side with its peers, `perf lock contention -a -b` and a
bpftrace histogram (issue 12 item 9, issue 13 item 6): the same workloads in
one run, the workload alone and under each tool, modes in rotating order per
round.

    sudo bash scripts/build_perf.sh            # perf with BPF skeletons
    sudo python3 scripts/bench_peers.py [--rounds 5] [--extra] [--quick] \
        [--bin target/release/lockscope] [--keep FILE] [--detail]
    python3 scripts/bench_peers.py --from FILE   # the tables of a --keep file

bpftrace is Debian's (`apt-get install bpftrace`, done by the script when
it is missing).

Workloads (lockscope's own, exact operation counts, each timing its own work
phase: `elapsed_ns` of `lockscope workload ... --json`):

- `pipe --threads 8 --ops 120000` and `pipe --threads 2 --ops 400000`
  (writers on one pipe: `pipe->mutex` contention, as in scripts/bench.py);
- a bystander, `mutex-pairs --threads 1 --ops 150000000`: uncontended
  pthread lock/unlock pairs (~1.5 s on the 2-CPU VM: 100 M took 1.05-1.22
  s) in a process nobody asked to trace (as in scripts/bench_defaults.py):
  what a system-wide tool costs the rest of the machine.

Modes: `alone`; `report` (`lockscope report --json`, default sources,
system-wide); `report kc` (`lockscope report --json --source
kernel-contention`); `run` (`lockscope run --json -- WORKLOAD`, pipe
workloads only: the bystander is not anyone's target); `perf` (`perf lock
contention -a -b`, system-wide); `bpftrace` (BT_PROG below: per-lock
wait-time histogram from lock:contention_begin/end, keyed by lock address
and tid at begin, printed at exit); with --extra also `perf -l` (`perf
lock contention -a -b -l`, by lock address). --modes picks some.

Measures: the workload's elapsed time and its CPU time (user+sys of the
workload process, wait4; under `run` the workload runs under a small
wrapper, this script with --rusage-to, that reports it), each as the median
of per-round ratios to the same round's `alone` run; contentions each tool
reported; BPF ns per contention (`kernel.bpf_stats_enabled=1`); each tool's
own CPU time, start to exit (wait4) and while the workload ran (schedstat
of its threads); lost events. The method paragraph printed with the tables
(method()) says how each is taken. Before every run the script waits until
each process it started, and each of their descendants (lockscope's link
closer), is gone: it is their child subreaper, so it reaps them all.

--fifo runs every workload as SCHED_FIFO (`chrt -f 50`): its threads then
run at once whatever else the machine runs (a busy machine otherwise
decides how often the pipe workloads contend: from a few to a million
contentions a run), so the comparison holds on a loaded machine too.

Needs root. Python 3 standard library only.
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import ROOT, STATS_SYSCTL, TARGET, cpu_snapshot, git_rev, other_cpu, settle  # noqa: E402

BIN = os.path.join(TARGET, "release", "lockscope")
PERF = "/usr/local/lib/lockscope-bench/perf"
PR_SET_CHILD_SUBREAPER = 36
MIN_CONTENTIONS = 1000  # fewer in a run: no BPF ns/contention for it
NR_PAUSE = 34  # x86_64

# (label, workload args, modes besides alone)
WORKLOADS = [
    ("pipe, 8 threads", ["pipe", "--threads", "8", "--ops", "120000"],
     ["report", "report kc", "run", "perf", "bpftrace"]),
    ("pipe, 2 threads", ["pipe", "--threads", "2", "--ops", "400000"],
     ["report", "report kc", "run", "perf", "bpftrace"]),
    ("bystander", ["mutex-pairs", "--threads", "1", "--ops", "150000000"],
     ["report", "report kc", "perf", "bpftrace"]),
]
# The floors of any tool on the two tracepoints: lockscope's benchmark
# backends, empty programs and programs that only read the clock.
FLOORS = {"empty pair": "tp_btf-floor", "clock pair": "tp_btf-clock"}
EXTRA = ["perf -l", *FLOORS]
BPFTRACE = shutil.which("bpftrace") or "/usr/bin/bpftrace"
# The peers' job in bpftrace: per-lock wait-time histogram from the
# kernel's contention tracepoints, keyed by lock address and tid at begin.
BT_PROG = """
tracepoint:lock:contention_begin { @start[args->lock_addr, tid] = nsecs; }
tracepoint:lock:contention_end /@start[args->lock_addr, tid]/ {
  @wait_ns[args->lock_addr] = hist(nsecs - @start[args->lock_addr, tid]);
  delete(@start[args->lock_addr, tid]);
}
END { clear(@start); }
"""


FIFO = []  # --fifo: ["chrt", "-f", "50"] before every workload


class BenchError(Exception):
    pass


def workload_cmd(args, quick):
    args = list(args)
    if quick:
        i = args.index("--ops") + 1
        args[i] = str(max(int(args[i]) // 10, 100))
    return [*FIFO, BIN, "workload", *args, "--json"]


def elapsed_of(stdout, what):
    for line in stdout.splitlines():
        if line.startswith("{") and "elapsed_ns" in line:
            return json.loads(line)["elapsed_ns"]
    raise BenchError(f"no elapsed_ns in the output of {what}: {stdout[-300:]!r}")


def cpu_ns_of(ru):
    return round((ru.ru_utime + ru.ru_stime) * 1e9)


def run_checked(cmd):
    """benchlib.run_rusage of `cmd`, which must succeed: (stdout, stderr, rusage)."""
    code, stdout, stderr, ru = benchlib.run_rusage(cmd)
    if code != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({code}): {stderr.strip()[-300:]}")
    return stdout, stderr, ru


def run_workload(cmd):
    """Runs the workload; its elapsed time (its own JSON) and CPU time
    (user+sys of the process and its threads: wait4's rusage)."""
    stdout, _, ru = run_checked(cmd)
    return {"elapsed": elapsed_of(stdout, " ".join(cmd)), "cpu": cpu_ns_of(ru)}


def rusage_wrapper(argv):
    """`bench_peers.py --rusage-to FILE -- CMD...`: runs CMD (stdout and
    stderr inherited) and writes its CPU time (wait4) and this wrapper's
    own to FILE; for `lockscope run`, whose child the workload is."""
    out, cmd = argv[0], argv[2:]
    p = subprocess.Popen(cmd)
    _, status, ru = os.wait4(p.pid, 0)
    with open(out, "w") as f:
        json.dump({"cpu": cpu_ns_of(ru),
                   "self": cpu_ns_of(resource.getrusage(resource.RUSAGE_SELF))}, f)
    return os.waitstatus_to_exitcode(status)


def task_cpu_ns(pid):
    """On-CPU time so far of each live thread of `pid` (schedstat, ns), by tid."""
    per = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                per[t] = int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            pass
    return per


def cpu_between(cpu0, cpu1):
    """On-CPU time between two task_cpu_ns() samples: each thread alive at
    the second, less what it had at the first (a thread that exited in
    between is not counted, so this is a lower bound, never negative)."""
    if cpu0 is None or cpu1 is None:
        return None
    return sum(v - cpu0.get(t, 0) for t, v in cpu1.items())


def bpftrace_attached(pid):
    """The ids of `pid`'s programs attached to contention_begin and _end
    (`bpftool perf show`), once both are; else None."""
    p = subprocess.run(["bpftool", "perf", "show", "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    try:
        got = {e.get("tracepoint"): e["prog_id"] for e in json.loads(p.stdout or "[]")
               if e.get("pid") == pid}
    except (ValueError, KeyError):
        return None
    if "contention_begin" in got and "contention_end" in got:
        return got
    return None


class Tool:
    """A system-wide tracer: started, attached, stopped with SIGINT."""

    def __init__(self, kind, cmd, ready):
        self.kind = kind  # "lockscope", "perf" or "bpftrace"
        self.cmd = cmd
        self.out = tempfile.TemporaryFile(mode="w+")
        self.err_lines = []
        self.attached = threading.Event()
        self.bt_progs = None
        self.cpu = None
        self.p = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.PIPE, text=True)
        self.pump = threading.Thread(target=self._pump, args=(ready,), daemon=True)
        self.pump.start()

    def _pump(self, ready):
        for line in self.p.stderr:
            self.err_lines.append(line.rstrip())
            if ready and ready in line:
                self.attached.set()
        self.attached.set()  # EOF: it exited

    def wait_attached(self, timeout=120):
        """lockscope: its "tracing" line. perf: asleep in pause(), which it
        enters after attaching and enabling its programs. bpftrace: its
        programs on both tracepoints (`bpftool perf show`); it prints
        "Attaching N probes..." before it attaches them."""
        deadline = time.monotonic() + timeout
        ok = False
        if self.kind == "lockscope":
            ok = self.attached.wait(timeout)
        while not ok and time.monotonic() < deadline and self.p.poll() is None:
            if self.kind == "perf":
                try:
                    with open(f"/proc/{self.p.pid}/syscall") as f:
                        ok = f.read().split()[0] == str(NR_PAUSE)
                except (OSError, IndexError):
                    pass
            else:
                self.bt_progs = bpftrace_attached(self.p.pid)
                ok = self.bt_progs is not None
            if not ok:
                time.sleep(0.02)
        if not ok or self.p.poll() is not None:
            self.kill()
            raise BenchError(f"{' '.join(self.cmd)} did not attach: " + " | ".join(self.err_lines[-5:]))

    def finish(self):
        """SIGINT, wait (its CPU time from wait4), returns (stdout, stderr)."""
        pidfd = os.pidfd_open(self.p.pid)
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGINT)
            if not select.select([pidfd], [], [], 120)[0]:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.wait4(self.p.pid, 0)
                self.p.returncode = -signal.SIGKILL
                raise BenchError(f"{' '.join(self.cmd)} did not exit after SIGINT")
        finally:
            os.close(pidfd)
        _, status, ru = os.wait4(self.p.pid, 0)
        self.p.returncode = os.waitstatus_to_exitcode(status)
        self.cpu = cpu_ns_of(ru)
        self.pump.join(10)
        self.out.seek(0)
        text = self.out.read()
        if self.p.returncode != 0:
            raise BenchError(f"{' '.join(self.cmd)} exited {self.p.returncode}: "
                             + " | ".join(self.err_lines[-5:]))
        return text, "\n".join(self.err_lines)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def lockscope_figures(rep):
    kc = [r for r in rep["rows"] if r.get("source") == "kernel-contention"]
    progs = [b for b in rep.get("bpf_programs", []) if b.get("run_cnt", 0) > 0]
    ends = [b["run_cnt"] for b in progs if b["name"].startswith("contention_end_")
            and b["name"].endswith(("_empty", "_clock"))]
    return {
        # a floor backend records nothing: every end ran its program
        "contentions": sum(r["count"] for r in kc) if not ends else max(ends),
        "other_rows": sum(r["count"] for r in rep["rows"] if r.get("source") != "kernel-contention"),
        "bpf_ns": sum(b["run_time_ns"] for b in progs if "contention" in b["name"]),
        "bpf_all_ns": sum(b["run_time_ns"] for b in progs),
        "per_prog": {b["name"]: b["run_time_ns"] / b["run_cnt"] for b in progs},
        "lost": sum(v for v in rep.get("lost", {}).values() if isinstance(v, int)),
        "sources": [s.get("name") for s in rep.get("sources", []) if s.get("backend")],
    }


def held_prog_ids(pid):
    """Ids of the BPF programs `pid` holds (its prog and link fds' prog_id
    in /proc/PID/fdinfo). bpftool's own "pids" field is not filled here."""
    ids = set()
    fdinfo = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fdinfo):
        try:
            with open(os.path.join(fdinfo, fd)) as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            pass
    return ids


def prog_stats(ids):
    """`bpftool prog show` of each id (run_time_ns needs bpf_stats)."""
    progs = []
    for i in sorted(ids):
        p = subprocess.run(["bpftool", "prog", "show", "id", str(i), "--json"],
                           capture_output=True, text=True)
        if p.returncode == 0:
            progs.append(json.loads(p.stdout))
    return progs


def perf_contentions(text):
    """Sum of the `contended` column of perf lock contention's table, and
    its "bad" count (failed stack/task/time lookups: waits it lost)."""
    total, rows, bad = 0, 0, 0
    for line in text.splitlines():
        tok = line.split()
        if len(tok) >= 4 and tok[0].isdigit():
            total += int(tok[0])
            rows += 1
        m = re.match(r"bad: (\d+), total: \d+", line)
        if m:
            bad = int(m.group(1))
    return total, rows, bad


BT_BUCKET = re.compile(r"^\[[^\]]*[\])]\s+(\d+)\s+\|")


def bpftrace_contentions(text):
    """Sum of the counts of bpftrace's @wait_ns histograms, and the number
    of locks (histograms) it printed."""
    total = sum(int(m.group(1)) for m in map(BT_BUCKET.match, text.splitlines()) if m)
    return total, sum(1 for line in text.splitlines() if line.startswith("@wait_ns["))


def prog_figures(progs, contention):
    ran = [b for b in progs if b.get("run_cnt", 0) > 0]
    return {
        "bpf_ns": sum(b.get("run_time_ns", 0) for b in ran if contention(b)),
        "bpf_all_ns": sum(b.get("run_time_ns", 0) for b in ran),
        "per_prog": {b.get("name", str(b.get("id"))): b["run_time_ns"] / b["run_cnt"] for b in ran},
    }


def traced_system_wide(mode, wl_cmd):
    if mode.startswith("report") or mode in FLOORS:
        cmd = [BIN, "report", "--json"] + (["--source", "kernel-contention"] if mode == "report kc" else [])
        if mode in FLOORS:
            cmd = [BIN, "report", "--json", "--source", "kernel-contention", "--backend", FLOORS[mode]]
        tool = Tool("lockscope", cmd, "lockscope: tracing")
    elif mode.startswith("perf"):
        cmd = [PERF, "lock", "contention", "-a", "-b"] + (["-l"] if mode == "perf -l" else [])
        tool = Tool("perf", cmd, None)
    else:
        tool = Tool("bpftrace", [BPFTRACE, "-e", BT_PROG], None)
    try:
        tool.wait_attached()
        cpu0 = task_cpu_ns(tool.p.pid)
        w = run_workload(wl_cmd)
        cpu1 = task_cpu_ns(tool.p.pid)
        progs = []
        if tool.kind == "perf":
            progs = prog_stats(held_prog_ids(tool.p.pid))
        elif tool.kind == "bpftrace":
            progs = prog_stats(set(tool.bt_progs.values()))
            tp = {i: t for t, i in tool.bt_progs.items()}
            for b in progs:  # its names are truncated ("tracepoint_lock_contention_begi")
                b["name"] = tp.get(b.get("id"), b.get("name", ""))
        out, err = tool.finish()
    except BaseException:
        tool.kill()
        raise
    if tool.kind == "lockscope":
        f = lockscope_figures(json.loads(out))
    elif tool.kind == "perf":
        text = out + "\n" + err
        n, rows, bad = perf_contentions(text)
        f = {"contentions": n, "rows": rows, "lost": bad, "text": text,
             **prog_figures(progs, lambda b: "contention" in b.get("name", ""))}
    else:
        n, rows = bpftrace_contentions(out)
        # its only programs that run during the workload are the two
        # tracepoint ones (END runs at exit, after this read)
        f = {"contentions": n, "rows": rows, "lost": None, "text": out[-3000:] + "\n" + err,
             **prog_figures(progs, lambda b: True)}
    f.update(w)
    f["tool_cpu"] = tool.cpu
    f["tool_cpu_during"] = cpu_between(cpu0, cpu1)
    return f


def traced_run(wl_cmd):
    with tempfile.NamedTemporaryFile(suffix=".json") as rep, \
            tempfile.NamedTemporaryFile(suffix=".json") as ru_file:
        wrapped = [sys.executable, os.path.abspath(__file__), "--rusage-to", ru_file.name, "--", *wl_cmd]
        cmd = [BIN, "run", "--json", "-o", rep.name, "--", *wrapped]
        stdout, stderr, ru = run_checked(cmd)
        f = lockscope_figures(json.load(open(rep.name)))
        wr = json.load(open(ru_file.name))
    f["elapsed"] = elapsed_of(stdout, " ".join(cmd))
    f["cpu"] = wr["cpu"]
    # wait4 of `lockscope run` counts its reaped children: the wrapper and
    # the workload
    f["tool_cpu"] = cpu_ns_of(ru) - wr["cpu"] - wr["self"]
    f["tool_cpu_during"] = None
    f["stderr"] = stderr
    return f


def reap_all(timeout=180):
    """Waits until every descendant of ours (lockscope's link closers, which
    we inherit as subreaper) is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.02)
    raise BenchError("a tool's process (or its link closer) is still alive after "
                     f"{timeout} s")


def stats_on():
    with open(STATS_SYSCTL) as f:
        return f.read().strip() == "1"


def one(mode, wl_cmd):
    if mode == "alone":
        return run_workload(wl_cmd)
    # Another user of this shared machine may restore the sysctl while we
    # run: set it before every traced run, and drop the run's BPF figures
    # (not its time) if it was off at any point we can see.
    with open(STATS_SYSCTL, "w") as fh:
        fh.write("1")
    f = traced_run(wl_cmd) if mode == "run" else traced_system_wide(mode, wl_cmd)
    if not stats_on():
        f.update(bpf_ns=None, bpf_all_ns=None, per_prog={}, stats_off=True)
    return f


def measure(label, wl_args, modes, rounds, quick, settle_s, log):
    wl_cmd = workload_cmd(wl_args, quick)
    res = {m: [] for m in modes}
    ratios = {m: [] for m in modes}
    cpu_ratios = {m: [] for m in modes}
    other, total = 0, 0
    t0 = time.monotonic()
    for r in range(rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        settle(settle_s)
        got = {}
        for m in order:
            reap_all()
            time.sleep(0.3)
            start = cpu_snapshot()
            wall = time.monotonic()
            got[m] = one(m, wl_cmd)
            reap_all()  # the tool's own exit is counted as ours, not as other
            got[m]["wall"] = time.monotonic() - wall
            o, t = other_cpu(start)
            other, total = other + o, total + t
            res[m].append(got[m])
        for m in modes:
            ratios[m].append(got[m]["elapsed"] / got["alone"]["elapsed"])
            cpu_ratios[m].append(got[m]["cpu"] / got["alone"]["cpu"] if got["alone"]["cpu"] else None)
        log(f"  {label} round {r + 1}/{rounds} ({time.monotonic() - t0:.0f} s): " + ", ".join(
            f"{m} {got[m]['elapsed'] / 1e6:.1f} ms/{got[m]['cpu'] / 1e6:.0f} ms CPU"
            + (f" ({got[m]['contentions']} cont.)" if "contentions" in got[m] else "")
            for m in modes))
    return {"label": label, "cmd": wl_cmd, "res": res, "ratios": ratios, "cpu_ratios": cpu_ratios,
            "other": other / total if total else 0.0, "seconds": time.monotonic() - t0}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


MODE_NAMES = {
    "alone": "alone",
    "report": "`lockscope report` (default sources)",
    "report kc": "`lockscope report --source kernel-contention`",
    "run": "`lockscope run -- WORKLOAD` (default sources)",
    "perf": "`perf lock contention -a -b`",
    "perf -l": "`perf lock contention -a -b -l`",
    "bpftrace": "bpftrace, per-lock wait histogram",
    "empty pair": "floor: empty programs on both tracepoints",
    "clock pair": "floor: a clock read at begin and end, nothing else",
}


def fmt(v, spec, scale=1.0):
    return "" if v is None else format(v / scale, spec)


def table(w):
    """One workload's table: a row per mode."""
    rows = ["| mode | elapsed ms | elapsed ratio | CPU ms | CPU ratio | contentions/run | "
            "BPF ns/contention | BPF ms/run | tool CPU ms/run | tool CPU ms during workload | lost |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m, runs in w["res"].items():
        cont = med(x.get("contentions") for x in runs)
        # `run` counts its target's waits only, while its programs run
        # for every contention on the machine: no per-contention figure;
        # nor for runs that saw too few contentions for the quotient to
        # mean anything (the bystander: the programs ran for other tasks)
        nspc = None if m == "run" else med(
            x["bpf_ns"] / x["contentions"] for x in runs
            if (x.get("contentions") or 0) >= MIN_CONTENTIONS and x.get("bpf_ns") is not None)
        lost = med(x.get("lost") for x in runs)
        rows.append(" | ".join([
            f"| {MODE_NAMES.get(m, m)}",
            fmt(med(x["elapsed"] for x in runs), ".1f", 1e6),
            fmt(med(w["ratios"][m]), ".2f") + "x",
            fmt(med(x.get("cpu") for x in runs), ".1f", 1e6),
            (fmt(med(w.get("cpu_ratios", {}).get(m, [])), ".2f") + "x").lstrip("x"),
            fmt(cont, ".0f"),
            fmt(nspc, ".0f"),
            fmt(med(x.get("bpf_all_ns") for x in runs), ".1f", 1e6),
            fmt(med(x.get("tool_cpu") for x in runs), ".0f", 1e6),
            fmt(med(x.get("tool_cpu_during") for x in runs), ".0f", 1e6),
            "" if m == "alone" else ("n/a" if m == "bpftrace" else fmt(lost, ".0f")),
        ]) + " |")
    return "\n".join(rows)


def details(w):
    """Per mode: the BPF programs' ns per run and every round's elapsed ms."""
    out = []
    for m, runs in w["res"].items():
        names = sorted({n for x in runs for n in x.get("per_prog", {})})
        per = ", ".join(f"{short(n)} {med(x.get('per_prog', {}).get(n) for x in runs):.0f}"
                        for n in names)
        rnd = ", ".join(f"{x['elapsed'] / 1e6:.1f}" for x in runs)
        out.append(f"- {MODE_NAMES.get(m, m)}: rounds {rnd} ms" + (f"; BPF ns/run: {per}" if per else ""))
    return "\n".join(out)


def method(meta):
    rounds = meta.get("rounds", "N")
    return f"""Method: one run of `scripts/bench_peers.py`, the workloads one after another; per workload \
{rounds} rounds, each running the workload once alone and once under each tool, in an order that \
rotates by one mode per round, each round after a quiet second (other tasks < 5% of the CPUs, \
waiting up to --settle s). A system-wide tool starts first and the workload starts once it is \
attached (lockscope: its "tracing" line; perf: asleep in pause(), entered after it enabled its \
programs; bpftrace: its programs on both lock tracepoints in `bpftool perf show`), and it stops \
with SIGINT after the workload; `run` starts the workload itself. Elapsed is the workload's own \
timing of its work phase (`elapsed_ns` of `lockscope workload --json`); CPU is the workload \
process's user+sys time (wait4 rusage; the BPF programs a tracer runs in the workload's \
context are charged here). Ratios are the medians of the per-round ratios to the same round's \
`alone` run; the other figures are medians over rounds. Contentions/run is what each tool \
reported: lockscope the `count` sum of its kernel-contention rows, perf the sum of its \
`contended` column, bpftrace the counts of its histograms (`tracepoint:lock:contention_begin` \
stores `nsecs` by lock address and tid, `contention_end` adds the difference to a per-lock \
`hist()`); tracing changes how often the workload contends, so the tools' counts differ. \
BPF ns/contention is the run time of the tool's contention_begin/end programs \
(`kernel.bpf_stats_enabled=1` for the whole run; lockscope: its JSON `bpf_programs`; perf and \
bpftrace: `bpftool prog show` of the programs they hold, read before SIGINT) divided by its \
contentions (runs with fewer than {MIN_CONTENTIONS} contentions left out); the stats add ~50 ns \
per program run for every tool alike. BPF ms/run is all the tool's programs' run time in a \
run. Tool CPU ms/run is the tool process's user+sys time from start to exit (wait4; loading, \
attaching and the report at exit included; for `run`, less the workload's); \
"during workload" is its threads' on-CPU time (schedstat) while the workload ran (threads alive at its end: a lower bound). Lost: \
lockscope's `lost` counters, perf's "bad" count (failed task/stack/time lookups); bpftrace \
keeps no such count. Other CPU: the share of the machine used by other tasks during the \
measured runs (above ~5% a table is disturbed)."""


def short(name):
    return name.replace("contention_", "").replace("_btf", "").replace("_tp", "")


def render(doc, detail):
    meta, results = (doc.get("meta", {}), doc["results"]) if isinstance(doc, dict) else ({}, doc)
    out = []
    for line in meta.get("header", []):
        out.append(line)
    out += ["", method(meta), ""]
    for w in results:
        other = w.get("other")
        out.append(f"### {w['label']}")
        out.append("")
        out.append(f"`{' '.join(os.path.basename(c) if i == 0 else c for i, c in enumerate(w['cmd']))}`, "
                   f"{len(next(iter(w['res'].values())))} round(s)"
                   + ("" if other is None else f", other CPU {other:.0%}")
                   + ("" if w.get("seconds") is None else f", {w['seconds']:.0f} s"))
        out.append("")
        out.append(table(w))
        if detail:
            out += ["", details(w)]
        out.append("")
    off = sum(1 for w in results for runs in w["res"].values() for x in runs if x.get("stats_off"))
    if off:
        out.append(f"- {off} traced runs found kernel.bpf_stats_enabled reset by another "
                   "task afterwards: their BPF figures are left out (their times are kept)")
    return "\n".join(out).rstrip()


def ensure_bpftrace(log):
    """Installs Debian's bpftrace (apt-get) when it is missing."""
    global BPFTRACE
    if os.access(BPFTRACE, os.X_OK):
        return
    log("bench_peers.py: installing bpftrace (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=600", "bpftrace"]):
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} failed: {p.stderr.strip()[-300:]}")
    BPFTRACE = shutil.which("bpftrace") or BPFTRACE
    if not os.access(BPFTRACE, os.X_OK):
        raise BenchError("apt-get installed bpftrace, yet there is no bpftrace binary")


def version_of(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    return (p.stdout or p.stderr).strip().splitlines()[0] if (p.stdout or p.stderr).strip() else "?"


def main():
    if len(sys.argv) > 3 and sys.argv[1] == "--rusage-to" and sys.argv[3] == "--":
        sys.exit(rusage_wrapper(sys.argv[2:]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="10x fewer operations per run")
    ap.add_argument("--extra", action="store_true", help="also `perf lock contention -a -b -l` and the floors (lockscope's "
                    "empty and clock-only program pairs on the same tracepoints)")
    ap.add_argument("--fifo", action="store_true",
                    help="run every workload as SCHED_FIFO (chrt -f 50): its threads then run at "
                         "once whatever else the machine runs, so how often it contends depends "
                         "on the tool, not on other load")
    ap.add_argument("--settle", type=int, default=60,
                    help="before each round, wait up to this many s for a quiet second (default 60)")
    ap.add_argument("--only", help="only the workloads whose label contains this")
    ap.add_argument("--modes", help="only these modes (comma-separated, `alone` always runs)")
    ap.add_argument("--bin", default=BIN, help=f"the lockscope binary (default {BIN})")
    ap.add_argument("--perf", default=PERF, help=f"perf with BPF skeletons (default {PERF})")
    ap.add_argument("--bpftrace", default=BPFTRACE,
                    help=f"bpftrace (default {BPFTRACE}; installed with apt-get when missing)")
    ap.add_argument("--detail", action="store_true",
                    help="also per-round times and each BPF program's ns per run")
    ap.add_argument("--keep", help="write every run's raw figures (JSON) to this file")
    ap.add_argument("--from", dest="src", metavar="FILE",
                    help="print the tables of a --keep file instead of measuring")
    a = ap.parse_args()
    if a.src:
        print(render(json.load(open(a.src)), a.detail))
        return
    globals().update(BIN=a.bin, PERF=a.perf, BPFTRACE=a.bpftrace)
    if a.fifo:
        FIFO[:] = ["chrt", "-f", "50"]

    def log(s):
        print(s, file=sys.stderr, flush=True)

    benchlib.need_root("bench_peers.py")
    for b in (BIN, PERF):
        if not os.access(b, os.X_OK):
            sys.exit(f"bench_peers.py: {b} missing (cargo build --release; scripts/build_perf.sh)")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("bench_peers.py: prctl(PR_SET_CHILD_SUBREAPER) failed")
    benchlib.exit_on_sigterm()
    plan = []
    for label, wl, modes in WORKLOADS:
        if a.only and a.only not in label:
            continue
        ms = modes + (EXTRA if a.extra else [])
        if a.modes:
            ms = [m for m in ms if m in a.modes.split(",")]
        plan.append((label, wl, ["alone"] + ms))
    try:
        if any("bpftrace" in ms for _, _, ms in plan):
            ensure_bpftrace(log)
    except BenchError as e:
        sys.exit(f"bench_peers.py: {e}")

    old_stats = open(STATS_SYSCTL).read().strip()
    results = []
    t0 = datetime.datetime.now(datetime.timezone.utc)
    try:
        with open(STATS_SYSCTL, "w") as f:
            f.write("1")
        for label, wl, ms in plan:
            results.append(measure(label, wl, ms, a.rounds, a.quick, a.settle, log))
    except BenchError as e:
        sys.exit(f"bench_peers.py: {e}")
    finally:
        with open(STATS_SYSCTL, "w") as f:
            f.write(old_stats)
    bin_tree = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(BIN))))
    header = [
        f"- Command: `python3 scripts/bench_peers.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"- Date: {t0:%Y-%m-%d %H:%M} UTC; kernel `{platform.release()}`; {os.cpu_count()} CPUs; "
        f"{(time.time() - t0.timestamp()) / 60:.0f} min",
        f"- {version_of([BIN, '--version'])} ({BIN}, {git_rev(bin_tree)}; "
        f"this script: {git_rev(ROOT)}); "
        f"{version_of([PERF, 'version'])} ({PERF}); "
        + (f"{version_of([BPFTRACE, '--version'])} ({BPFTRACE})"
           if any("bpftrace" in w["res"] for w in results) else ""),
    ]
    doc = {"meta": {"rounds": a.rounds, "header": header}, "results": results}
    print(render(doc, a.detail))
    for w in results:
        for m, runs in w["res"].items():
            if (m.startswith("perf") or m == "bpftrace") and runs and runs[-1].get("text"):
                log(f"--- last `{m}` output ({w['label']}):\n" + runs[-1]["text"][-1500:])
            if m == "run" and runs:
                log(f"--- last `run` stderr ({w['label']}):\n" + runs[-1].get("stderr", "")[-800:])
    if a.keep:
        for w in results:
            for runs in w["res"].values():
                for x in runs:
                    if "text" in x:
                        x["text"] = x["text"][-20000:]
        with open(a.keep, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
