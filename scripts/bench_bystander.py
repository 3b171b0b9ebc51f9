#!/usr/bin/env python3
"""Bystander cost of lockscope's default user-space contention source.

1. Uncontended pthread mutex pairs (`lockscope workload mutex-pairs
   --threads 1`, 10 million by default), timed by the workload itself
   (`elapsed_ns`): bare, as the target of `lockscope run` with the default
   sources (kernel-contention + futex: no uprobe), with the default sources
   system-wide (`lockscope report` running meanwhile), system-wide with
   `--source futex`, and (for comparison) as the target of `--source
   user-locks` with fewer pairs (uprobes: every call traps). Modes
   alternate in each round; the figure is the median over rounds of the
   ratio to the same round's bare run.
2. BPF cost per contended wait, run-time stats on (BPF_ENABLE_STATS): the report's
   `bpf_programs` run time divided by the waits the report counted on the
   workload's lock: `mutex-hold` (one blocked wait per round) under
   `--source futex` and under `--source user-locks`, and a heavily
   contended `mutex-pairs --threads 4` under futex.

Root. python3 stdlib only. Usage:
  sudo python3 scripts/bench_bystander.py [--bin target/release/lockscope]
      [--rounds 7] [--pairs 10000000] [--ulock-pairs 50000]
      [--hold-rounds 100] [--contended-ops 1000000]
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time


def workload(binary, args):
    return [binary, "workload", "--json"] + args


def first_json(text):
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON line in: " + text[:500])


def run_bare(binary, wl):
    out = subprocess.run(workload(binary, wl), capture_output=True, text=True, check=True)
    return first_json(out.stdout)


def run_target(binary, wl, sources=None):
    cmd = [binary, "run", "--json", "--by", "lock"]
    if sources:
        cmd += ["--source", sources]
    cmd += ["--"] + workload(binary, wl)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    lines = [l for l in out.stdout.splitlines() if l.strip().startswith("{")]
    return json.loads(lines[0]), json.loads(lines[1])


def run_paused(binary, wl, tracer_args=None):
    """The workload held until SIGUSR1 (`--wait-usr1`), traced by
    `lockscope TRACER_ARGS` (with `-p PID` substituted) once that prints
    "tracing", or bare: (workload report, its CPU time in ns from wait4)."""
    p = subprocess.Popen(workload(binary, wl + ["--wait-usr1"]), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    if "waiting for SIGUSR1" not in line:
        raise RuntimeError("workload not ready: " + line)
    tracer, report = None, None
    if tracer_args is not None:
        args = [str(p.pid) if x == "PID" else x for x in tracer_args]
        tracer = Tracer(binary, args)
    try:
        # CPU time spent waiting for the signal (the tracer's attach time)
        # is not the workload's: subtracted below
        with open(f"/proc/{p.pid}/schedstat") as f:
            before = int(f.read().split()[0])
        os.kill(p.pid, signal.SIGUSR1)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        p.stderr.read()
    finally:
        if tracer:
            report = tracer.stop()
    if p.returncode != 0:
        raise RuntimeError(f"workload failed: {p.returncode}")
    return first_json(out), int((ru.ru_utime + ru.ru_stime) * 1e9) - before, report


class Tracer:
    """`lockscope ARGS` (a report), running until stopped."""

    def __init__(self, binary, args):
        self.p = subprocess.Popen([binary] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # wait for its "tracing" line (attached)
        line = ""
        t0 = time.time()
        while "tracing" not in line:
            line = self.p.stderr.readline()
            if not line and self.p.poll() is not None:
                raise RuntimeError("lockscope report exited: " + self.p.stderr.read())
            if time.time() - t0 > 60:
                raise RuntimeError("lockscope report did not attach in 60 s")

    def stop(self):
        self.p.send_signal(signal.SIGINT)
        out, _ = self.p.communicate()
        return json.loads(out)


def hold_bpf_stats():
    """Keeps BPF run-time stats on while the returned fd is open
    (BPF_ENABLE_STATS: counted with the sysctl, so another tool writing
    kernel.bpf_stats_enabled=0 meanwhile does not turn them off)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 2)(0, 0)  # enable_stats.type = BPF_STATS_RUN_TIME
    fd = libc.syscall(321, 32, ctypes.byref(attr), ctypes.sizeof(attr))  # bpf(BPF_ENABLE_STATS)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_ENABLE_STATS")
    return fd


def prog_totals(rep, prefix):
    cnt = ns = 0
    per = {}
    for p in rep.get("bpf_programs", []):
        name = p.get("name", "")
        if name.startswith(prefix):
            cnt += p.get("run_cnt", 0)
            ns += p.get("run_time_ns", 0)
            per[name] = (p.get("run_cnt", 0), p.get("run_time_ns", 0))
    return cnt, ns, per


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/lockscope")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--pairs", type=int, default=10_000_000)
    ap.add_argument("--ulock-pairs", type=int, default=50_000)
    ap.add_argument("--contended-ops", type=int, default=1_000_000)
    ap.add_argument("--hold-rounds", type=int, default=100)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("root needed")
    b = a.bin
    pairs = ["mutex-pairs", "--threads", "1", "--ops", str(a.pairs)]
    upairs = ["mutex-pairs", "--threads", "1", "--ops", str(a.ulock_pairs)]

    # --- 1. bystander: uncontended pairs -----------------------------------
    modes = ["bare", "target-default", "system-default", "system-futex"]
    tracer_of = {
        "bare": None,
        "target-default": ["report", "--json", "-p", "PID"],
        "system-default": ["report", "--json"],
        "system-futex": ["report", "--json", "--source", "futex"],
    }
    el = {m: [] for m in modes}
    cpu = {m: [] for m in modes}
    ratios = {m: [] for m in modes[1:]}
    cpu_ratios = {m: [] for m in modes[1:]}
    ul_bare, ul_traced = [], []
    runs = []
    stats_fd = hold_bpf_stats()
    for r in range(a.rounds):
        order = modes[r % len(modes):] + modes[: r % len(modes)]
        got, gcpu = {}, {}
        for m in order:
            w, c, rep = run_paused(b, pairs, tracer_of[m])
            got[m], gcpu[m] = w["elapsed_ns"], c
            if m == "target-default":
                # how often the futex programs ran for the whole workload
                # (its 2 x pairs lock calls never enter the kernel)
                runs.append(prog_totals(rep, "futex_")[0])
        for m in modes:
            el[m].append(got[m])
            cpu[m].append(gcpu[m])
        for m in modes[1:]:
            ratios[m].append(got[m] / got["bare"])
            cpu_ratios[m].append(gcpu[m] / gcpu["bare"])
        # user-locks for comparison (fewer pairs: every call traps)
        ul_bare.append(run_bare(b, upairs)["elapsed_ns"])
        w, _ = run_target(b, upairs, "user-locks")
        ul_traced.append(w["elapsed_ns"])
        print(f"round {r + 1}: " + ", ".join(
            f"{m} {got[m] / 1e6:.1f} ms ({gcpu[m] / 1e6:.1f} ms CPU)" for m in order),
            file=sys.stderr)

    print(f"## Bystander: {a.pairs} uncontended pthread_mutex lock/unlock pairs "
          f"(mutex-pairs --threads 1), {a.rounds} rounds, modes alternating\n")
    print("| mode | median elapsed | median ratio (elapsed) | min..max | median CPU time | median ratio (CPU) | min..max |")
    print("|---|---|---|---|---|---|---|")
    print(f"| bare | {statistics.median(el['bare']) / 1e6:.1f} ms | 1 | | "
          f"{statistics.median(cpu['bare']) / 1e6:.1f} ms | 1 | |")
    label = {
        "target-default": "`lockscope report -p PID` (default sources: kernel-contention, futex)",
        "system-default": "`lockscope report` system-wide, default sources",
        "system-futex": "`lockscope report --source futex` system-wide",
    }
    for m in modes[1:]:
        print(f"| {label[m]} | {statistics.median(el[m]) / 1e6:.1f} ms | "
              f"{statistics.median(ratios[m]):.4f}x | "
              f"{min(ratios[m]):.3f}..{max(ratios[m]):.3f} | "
              f"{statistics.median(cpu[m]) / 1e6:.1f} ms | "
              f"{statistics.median(cpu_ratios[m]):.4f}x | "
              f"{min(cpu_ratios[m]):.3f}..{max(cpu_ratios[m]):.3f} |")
    os.close(stats_fd)
    print(f"\nThe futex programs ran {min(runs)}..{max(runs)} times per traced run "
          f"of {a.pairs} pairs (startup, thread spawn/join; the workload made {2 * a.pairs} lock calls).")
    ur = [t / bb for t, bb in zip(ul_traced, ul_bare)]
    per_pair = [(t - bb) / a.ulock_pairs for t, bb in zip(ul_traced, ul_bare)]
    print(f"\nFor comparison, `--source user-locks` as target, {a.ulock_pairs} pairs: "
          f"median {statistics.median(ul_bare) / 1e6:.1f} ms bare -> "
          f"{statistics.median(ul_traced) / 1e6:.1f} ms traced "
          f"({statistics.median(ur):.1f}x, +{statistics.median(per_pair) / 1000:.2f} us per pair)")

    # --- 2. BPF ns per futex wait, contended ---------------------------------
    stats_fd = hold_bpf_stats()
    try:
        hold = ["mutex-hold", "--rounds", str(a.hold_rounds), "--hold", "15ms"]
        many = ["mutex-pairs", "--threads", "4", "--ops", str(a.contended_ops)]
        print(f"\n## BPF cost per contended wait (BPF_ENABLE_STATS held; BPF ns = "
              f"run_time_ns of the source's programs in the report)\n")
        print("| workload | source | workload elapsed (bare) | blocked waits | futex wait calls "
              "| acquisitions | BPF runs | BPF ns total | ns per run | BPF ns per blocked wait |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        cases = (
            (f"mutex-hold --rounds {a.hold_rounds} --hold 15ms", hold, "futex", "futex_"),
            (f"mutex-hold --rounds {a.hold_rounds} --hold 15ms", hold, "user-locks", "u"),
            (f"mutex-pairs --threads 4 --ops {a.contended_ops}", many, "futex", "futex_"),
            (f"mutex-pairs --threads 4 --ops {a.contended_ops // 50}",
             ["mutex-pairs", "--threads", "4", "--ops", str(a.contended_ops // 50)],
             "user-locks", "u"),
        )
        for label, wl, src, prefix in cases:
            bare = run_bare(b, wl)["elapsed_ns"]
            w, rep = run_target(b, wl, src)
            lock = w["lock"]
            rs = [r for r in rep["rows"] if r.get("lock") == lock]
            waits = sum(r["count"] for r in rs)
            calls = waits + sum(r.get("failed", 0) for r in rs) if src == "futex" else "-"
            acq = sum((r.get("acquired") or 0) for r in rs)
            cnt, ns, per = prog_totals(rep, prefix)
            print(f"| {label} | {src} | {w['elapsed_ns'] / 1e6:.1f} ms ({bare / 1e6:.1f} ms) "
                  f"| {waits} | {calls} | {acq if acq else '-'} | {cnt} | {ns} | "
                  f"{ns / cnt if cnt else 0:.0f} | {ns / waits if waits else 0:.0f} |")
            print(f"{label} {src} per program: " + ", ".join(
                f"{k} {c} runs {t} ns" for k, (c, t) in sorted(per.items())), file=sys.stderr)
    finally:
        os.close(stats_fd)


if __name__ == "__main__":
    main()
