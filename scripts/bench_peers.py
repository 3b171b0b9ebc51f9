#!/usr/bin/env python3
"""lockscope side by side with `perf lock contention -a -b` (issue 12 item 9):
the same workloads in one run, the workload alone and under each tool, modes
in rotating order per round.

    sudo bash scripts/build_perf.sh            # perf with BPF skeletons
    sudo python3 scripts/bench_peers.py [--rounds 5] [--extra] [--quick]

Workloads (lockscope's own, exact operation counts, each timing its own work
phase: `elapsed_ns` of `lockscope workload ... --json`):

- `pipe --threads 8 --ops 120000` and `pipe --threads 2 --ops 400000`
  (writers on one pipe: `pipe->mutex` contention, as in scripts/bench.py);
- a bystander, `mutex-pairs --threads 1 --ops 200000`: uncontended pthread
  lock/unlock pairs in a process nobody asked to trace (as in
  scripts/bench_defaults.py): what a system-wide tool costs the rest of the
  machine.

Modes: `alone`; `report` (`lockscope report --json`, default sources,
system-wide); `run` (`lockscope run --json -- WORKLOAD`, pipe workloads
only: the bystander is not anyone's target); `perf` (`perf lock contention
-a -b`, system-wide); with --extra also `perf -l` (`perf lock contention -a
-b -l`, by lock address) and `report kc` (`lockscope report --source
kernel-contention`). A system-wide tool is started first and the workload
starts once it is attached: lockscope's "tracing" line on stderr; perf once
it sleeps in pause(), which it enters after attaching and enabling its
programs (/proc/PID/syscall). Tools stop with SIGINT after the workload.
Before every run the script waits until each process it started, and each
of their descendants (lockscope's link closer), is gone: it is their
child subreaper, so it reaps them all.

Each figure is the median over rounds; "ratio" is the median of the
per-round ratios of a mode's elapsed time to the same round's `alone` run.
Contentions are what each tool reported (lockscope: sum of `count` over
its kernel-contention rows; perf: sum of its `contended` column), and BPF
ns per contention is the run time of the tool's contention_begin/end BPF
programs (`kernel.bpf_stats_enabled=1`, set for the whole run and restored
after; lockscope: its JSON `bpf_programs`; perf: `bpftool prog show`, for
the programs the perf process holds, read just before SIGINT) divided by
those contentions; BPF ms/run is the run time of all the tool's programs
during one traced run (for `run`, its uprobes too). The stats add their own bookkeeping (~50 ns per program
run) to every traced run, for both tools alike. Each round starts after a
second in which other tasks used < 5% of the CPUs (waits up to --settle
s); "other CPU" is the share of the machine used by tasks other than this
script's and its children's during the measured runs, as in
scripts/bench.py (above ~5% a row is disturbed).

Needs root. Python 3 standard library only.
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "lockscope")
PERF = "/usr/local/lib/lockscope-bench/perf"
STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
PR_SET_CHILD_SUBREAPER = 36
MIN_CONTENTIONS = 1000  # fewer in a run: no BPF ns/contention for it
NR_PAUSE = 34  # x86_64

# (label, workload args, modes besides alone)
WORKLOADS = [
    ("pipe, 8 threads", ["pipe", "--threads", "8", "--ops", "120000"], ["report", "run", "perf"]),
    ("pipe, 2 threads", ["pipe", "--threads", "2", "--ops", "400000"], ["report", "run", "perf"]),
    ("bystander", ["mutex-pairs", "--threads", "1", "--ops", "200000"], ["report", "perf"]),
]
EXTRA = ["perf -l", "report kc"]


class BenchError(Exception):
    pass


def workload_cmd(args, quick):
    args = list(args)
    if quick:
        i = args.index("--ops") + 1
        args[i] = str(max(int(args[i]) // 10, 100))
    return [BIN, "workload", *args, "--json"]


def elapsed_of(stdout, what):
    for line in stdout.splitlines():
        if line.startswith("{") and "elapsed_ns" in line:
            return json.loads(line)["elapsed_ns"]
    raise BenchError(f"no elapsed_ns in the output of {what}: {stdout[-300:]!r}")


def run_workload(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-300:]}")
    return elapsed_of(p.stdout, " ".join(cmd))


class Tool:
    """A system-wide tracer: started, attached, stopped with SIGINT."""

    def __init__(self, cmd, ready):
        self.cmd = cmd
        self.out = tempfile.TemporaryFile(mode="w+")
        self.err_lines = []
        self.attached = threading.Event()
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
        """lockscope: its "tracing" line. perf: asleep in pause()."""
        deadline = time.monotonic() + timeout
        if self.cmd[0] == BIN:
            ok = self.attached.wait(timeout)
        else:
            ok = False
            while time.monotonic() < deadline and self.p.poll() is None:
                try:
                    with open(f"/proc/{self.p.pid}/syscall") as f:
                        if f.read().split()[0] == str(NR_PAUSE):
                            ok = True
                            break
                except (OSError, IndexError):
                    pass
                time.sleep(0.01)
        if not ok or self.p.poll() is not None:
            self.kill()
            raise BenchError(f"{' '.join(self.cmd)} did not attach: " + " | ".join(self.err_lines[-5:]))

    def finish(self):
        """SIGINT, wait, returns (stdout, stderr)."""
        self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"{' '.join(self.cmd)} did not exit after SIGINT")
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
    return {
        "contentions": sum(r["count"] for r in kc),
        "other_rows": sum(r["count"] for r in rep["rows"] if r.get("source") != "kernel-contention"),
        "bpf_ns": sum(b["run_time_ns"] for b in progs if "contention" in b["name"]),
        "bpf_all_ns": sum(b["run_time_ns"] for b in progs),
        "per_prog": {b["name"]: b["run_time_ns"] / b["run_cnt"] for b in progs},
        "lost": sum(v for v in rep.get("lost", {}).values() if isinstance(v, int)),
        "sources": [s.get("name") for s in rep.get("sources", []) if s.get("backend")],
    }


def perf_progs(pid):
    """BPF programs `pid` holds (its prog and link fds' prog_id in
    /proc/PID/fdinfo), as `bpftool prog show` reports them (run_time_ns
    needs bpf_stats). bpftool's own "pids" field is not filled here."""
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
    progs = []
    for i in sorted(ids):
        p = subprocess.run(["bpftool", "prog", "show", "id", str(i), "--json"],
                           capture_output=True, text=True)
        if p.returncode == 0:
            progs.append(json.loads(p.stdout))
    return progs


def perf_contentions(text):
    """Sum of the `contended` column of perf lock contention's table."""
    total, rows = 0, 0
    for line in text.splitlines():
        tok = line.split()
        if len(tok) >= 4 and tok[0].isdigit():
            total += int(tok[0])
            rows += 1
    return total, rows


def traced_system_wide(mode, wl_cmd):
    if mode.startswith("report"):
        cmd = [BIN, "report", "--json"] + (["--source", "kernel-contention"] if mode == "report kc" else [])
        tool = Tool(cmd, "lockscope: tracing")
    else:
        cmd = [PERF, "lock", "contention", "-a", "-b"] + (["-l"] if mode == "perf -l" else [])
        tool = Tool(cmd, None)
    try:
        tool.wait_attached()
        elapsed = run_workload(wl_cmd)
        progs = perf_progs(tool.p.pid) if mode.startswith("perf") else []
        out, err = tool.finish()
    except BaseException:
        tool.kill()
        raise
    if mode.startswith("report"):
        f = lockscope_figures(json.loads(out))
    else:
        text = out + "\n" + err
        n, rows = perf_contentions(text)
        ran = [b for b in progs if b.get("run_cnt", 0) > 0]
        f = {
            "contentions": n, "rows": rows,
            "bpf_ns": sum(b.get("run_time_ns", 0) for b in ran if "contention" in b.get("name", "")),
            "bpf_all_ns": sum(b.get("run_time_ns", 0) for b in ran),
            "per_prog": {b["name"]: b["run_time_ns"] / b["run_cnt"] for b in ran},
            "lost": None, "text": text,
        }
    f["elapsed"] = elapsed
    return f


def traced_run(wl_cmd):
    with tempfile.NamedTemporaryFile(suffix=".json") as rep:
        cmd = [BIN, "run", "--json", "-o", rep.name, "--", *wl_cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-300:]}")
        f = lockscope_figures(json.load(open(rep.name)))
    f["elapsed"] = elapsed_of(p.stdout, " ".join(cmd))
    f["stderr"] = p.stderr
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


def cpu_snapshot():
    """(busy jiffies of the machine, total jiffies, CPU jiffies of our reaped children)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    t = os.times()
    kids = (t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK")
    return sum(v) - v[3] - v[4], sum(v), kids


def other_cpu(start):
    end = cpu_snapshot()
    busy, total, ours = (e - s for e, s in zip(end, start))
    return max(busy - ours, 0), max(total, 1)


def settle(limit):
    """Waits (up to `limit` s) for a second in which other tasks use < 5%
    of the CPUs, as scripts/bench.py does before each pair."""
    for _ in range(limit):
        start = cpu_snapshot()
        time.sleep(1)
        o, t = other_cpu(start)
        if o < 0.05 * t:
            return


def stats_on():
    with open(STATS_SYSCTL) as f:
        return f.read().strip() == "1"


def one(mode, wl_cmd):
    if mode == "alone":
        return {"elapsed": run_workload(wl_cmd)}
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
    other, total = 0, 0
    for r in range(rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        settle(settle_s)
        got = {}
        for m in order:
            reap_all()
            time.sleep(0.3)
            start = cpu_snapshot()
            got[m] = one(m, wl_cmd)
            reap_all()  # the tool's own exit is counted as ours, not as other
            o, t = other_cpu(start)
            other, total = other + o, total + t
            res[m].append(got[m])
        for m in modes:
            ratios[m].append(got[m]["elapsed"] / got["alone"]["elapsed"])
        log(f"  {label} round {r + 1}/{rounds}: " + ", ".join(
            f"{m} {got[m]['elapsed'] / 1e6:.1f} ms"
            + (f" ({got[m]['contentions']} cont.)" if "contentions" in got[m] else "")
            for m in modes))
    return {"label": label, "cmd": wl_cmd, "res": res, "ratios": ratios,
            "other": other / total if total else 0.0}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


MODE_NAMES = {
    "alone": "alone",
    "report": "`lockscope report` (system-wide, default sources)",
    "run": "`lockscope run -- WORKLOAD` (default sources)",
    "perf": "`perf lock contention -a -b`",
    "perf -l": "`perf lock contention -a -b -l`",
    "report kc": "`lockscope report --source kernel-contention`",
}


def table(results):
    rows = ["| workload | mode | median ms | ratio to alone | contentions seen | "
            "BPF ns/contention | BPF ms/run | BPF ns/run per program | rounds (ms) | other CPU |",
            "|---|---|---:|---:|---:|---:|---:|---|---|---:|"]
    for w in results:
        for m, runs in w["res"].items():
            el = med(x["elapsed"] for x in runs) / 1e6
            ratio = med(w["ratios"][m])
            cont = med(x.get("contentions") for x in runs)
            # `run` counts its target's waits only, while its programs run
            # for every contention on the machine: no per-contention figure
            # nor for runs that saw too few contentions for the quotient to
            # mean anything (the bystander: its programs ran for other tasks)
            nspc = None if m == "run" else med(
                x["bpf_ns"] / x["contentions"] for x in runs
                if x.get("contentions", 0) >= MIN_CONTENTIONS and x.get("bpf_ns") is not None)
            bpf_ms = med(x.get("bpf_all_ns") for x in runs)
            names = sorted({n for x in runs for n in x.get("per_prog", {})})
            per = ", ".join(f"{short(n)} {med(x['per_prog'].get(n) for x in runs):.0f}"
                            for n in names)
            rnd = ", ".join(f"{x['elapsed'] / 1e6:.1f}" for x in runs)
            rows.append(
                f"| {w['label']} | {MODE_NAMES[m]} | {el:.1f} | {ratio:.2f}x | "
                f"{'' if cont is None else f'{cont:.0f}'} | "
                f"{'' if nspc is None else f'{nspc:.0f}'} | "
                f"{'' if bpf_ms is None else f'{bpf_ms / 1e6:.1f}'} | {per} | {rnd} | {w['other']:.0%} |")
    return "\n".join(rows)


def short(name):
    return name.replace("contention_", "").replace("_btf", "").replace("_tp", "")


def git_rev():
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src", "build.rs", "Cargo.toml")
    return f"commit {rev}" + (" + uncommitted changes" if dirty else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="10x fewer operations per run")
    ap.add_argument("--extra", action="store_true", help="also `perf -l` and `report --source kernel-contention`")
    ap.add_argument("--settle", type=int, default=60,
                    help="before each round, wait up to this many s for a quiet second (default 60)")
    ap.add_argument("--only", help="only the workloads whose label contains this")
    ap.add_argument("--perf", default=PERF, help=f"perf with BPF skeletons (default {PERF})")
    ap.add_argument("--keep", help="write every run's raw figures (JSON) to this file")
    ap.add_argument("--from", dest="src", metavar="FILE",
                    help="print the table of a --keep file instead of measuring")
    a = ap.parse_args()
    if a.src:
        print(table(json.load(open(a.src))))
        return
    globals()["PERF"] = a.perf
    if os.geteuid() != 0:
        sys.exit("bench_peers.py: needs root")
    for b in (BIN, PERF):
        if not os.access(b, os.X_OK):
            sys.exit(f"bench_peers.py: {b} missing (cargo build --release; scripts/build_perf.sh)")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("bench_peers.py: prctl(PR_SET_CHILD_SUBREAPER) failed")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def log(s):
        print(s, file=sys.stderr, flush=True)

    old_stats = open(STATS_SYSCTL).read().strip()
    results = []
    t0 = datetime.datetime.now(datetime.timezone.utc)
    try:
        with open(STATS_SYSCTL, "w") as f:
            f.write("1")
        for label, wl, modes in WORKLOADS:
            if a.only and a.only not in label:
                continue
            ms = ["alone"] + modes + ([m for m in EXTRA] if a.extra else [])
            results.append(measure(label, wl, ms, a.rounds, a.quick, a.settle, log))
    except BenchError as e:
        sys.exit(f"bench_peers.py: {e}")
    finally:
        with open(STATS_SYSCTL, "w") as f:
            f.write(old_stats)
    perf_ver = subprocess.run([PERF, "version"], capture_output=True, text=True).stdout.strip()
    print(f"- Command: `python3 scripts/bench_peers.py {' '.join(sys.argv[1:])}`".rstrip())
    print(f"- Date: {t0:%Y-%m-%d %H:%M} UTC; lockscope {git_rev()}; {perf_ver} "
          f"({PERF}); kernel `{platform.release()}`; {os.cpu_count()} CPUs")
    print(f"- {a.rounds} rounds, modes in rotating order; ratio = median of per-round "
          "ratios to the same round's `alone` run")
    print()
    print(table(results))
    off = sum(1 for w in results for runs in w["res"].values() for x in runs if x.get("stats_off"))
    if off:
        print(f"\n- {off} traced runs found kernel.bpf_stats_enabled reset by another "
              "task afterwards: their BPF figures are left out (their times are kept)")
    for w in results:
        for m, runs in w["res"].items():
            if m.startswith("perf") and runs and runs[-1].get("text"):
                log(f"--- last `{m}` output ({w['label']}):\n" + runs[-1]["text"][-1500:])
            if m == "run" and runs:
                log(f"--- last `run` stderr ({w['label']}):\n" + runs[-1].get("stderr", "")[-800:])
    if a.keep:
        for w in results:
            for runs in w["res"].values():
                for x in runs:
                    x.pop("text", None)
        with open(a.keep, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
