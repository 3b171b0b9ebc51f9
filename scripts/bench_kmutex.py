#!/usr/bin/env python3
"""Cost of the kernel-mutex source's two backends, fentry/fexit and
kprobe/kretprobe, inside a stock Debian kernel under QEMU (this project's
own kernel has neither).

    sudo python3 scripts/bench_kmutex.py [--kernel 6.1] [--pairs 5] [--write]

On the host it boots the kernel's VM (scripts/vm/run-in-vm.sh) and runs
itself inside with --inside. Inside, for each round it runs the
`pipe-self` workload (one thread writing a byte to its own pipe and reading
it back: two uncontended pipe mutex lock/unlock pairs an op) alone, under
`lockscope report --source kernel-mutex --backend fentry`, and under
`--backend kprobe`, in a rotating order, and reads the workload's own
elapsed time and the kernel's per-program run statistics
(kernel.bpf_stats_enabled=1). Figures under TCG are relative: emulation
slows everything, the probes' cost included, so compare the backends with
each other, not with the host.

--write puts the table into BENCHMARKS.md ("## Kernel mutex backends").
Python 3 standard library only.
"""
import argparse
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "lockscope")
BENCH_MD = os.path.join(ROOT, "BENCHMARKS.md")
SECTION = "## Kernel mutex backends"
CONFIGS = ["none", "fentry", "kprobe"]


def workload(threads, ops):
    """Runs `pipe-self` (one thread writing a byte to its own pipe and
    reading it back: two uncontended pipe mutex pairs an op, no waiting, so
    its time does not depend on emulated scheduling); returns elapsed_ns."""
    cmd = [BIN, "workload", "pipe-self", "--ops", str(ops), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])["elapsed_ns"]


def traced(backend, threads, ops):
    """Runs the workload under lockscope; returns (elapsed_ns, report)."""
    p, err, attached = benchlib.start_until(
        [BIN, "report", "--json", "--source", "kernel-mutex", "--backend", backend],
        "lockscope: tracing", 300, stdout=subprocess.PIPE)
    out = []
    reader = threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)
    reader.start()
    if not attached:
        p.kill()
        raise RuntimeError("lockscope did not attach: " + " | ".join(err[-3:]))
    try:
        elapsed = workload(threads, ops)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=300)
    reader.join(30)
    return elapsed, json.loads("".join(out))


def inside(args):
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
        f.write("1")
    runs = {c: [] for c in CONFIGS}
    progs = {c: {} for c in CONFIGS[1:]}
    for i in range(args.pairs):
        order = CONFIGS[i % 3:] + CONFIGS[:i % 3]
        for c in order:
            if c == "none":
                runs[c].append(workload(args.threads, args.ops))
                continue
            elapsed, rep = traced(c, args.threads, args.ops)
            runs[c].append(elapsed)
            for pr in rep["bpf_programs"]:
                acc = progs[c].setdefault(pr["name"], [0, 0])
                acc[0] += pr["run_cnt"]
                acc[1] += pr["run_time_ns"]
        print(f"round {i + 1}: " + ", ".join(f"{c} {runs[c][-1] / 1e6:.0f} ms" for c in CONFIGS),
              flush=True)
    kernel = os.uname().release
    with open(args.out, "w") as f:
        json.dump({"kernel": kernel, "threads": args.threads, "ops": args.ops,
                   "runs": runs, "progs": progs}, f)


def table(res):
    base = statistics.median(res["runs"]["none"])
    lines = [
        f"Kernel {res['kernel']} under QEMU TCG (2 vCPUs), `pipe-self` workload "
        f"(one thread, {res['ops']} write+read pairs on its own pipe: "
        f"{2 * res['ops']} uncontended mutex_lock/unlock), "
        f"{len(res['runs']['none'])} rounds in rotating order, medians:",
        "",
        "| backend | workload time | slowdown | spread | lock (entry+return) | unlock |",
        "|---|---|---|---|---|---|",
    ]
    for c in CONFIGS:
        r = res["runs"][c]
        med = statistics.median(r)
        spread = f"{min(r) / base:.2f}-{max(r) / base:.2f}x"
        lock = unlock = "-"
        if c != "none":
            p = res["progs"][c]
            def per(names):
                cnt = sum(p.get(n, [0, 0])[0] for n in names)
                ns = sum(p.get(n, [0, 0])[1] for n in names)
                return ns / cnt if cnt else 0, cnt
            pre = ("fe_", "fx_") if c == "fentry" else ("kp_", "kr_")
            e, n = per([pre[0] + "mutex_lock"])
            x, _ = per([pre[1] + "mutex_lock"])
            u, m = per([pre[0] + "mutex_unlock"])
            lock = f"{e:.0f} + {x:.0f} ns ({n} calls)"
            unlock = f"{u:.0f} ns ({m} calls)"
        lines.append(f"| {c} | {med / 1e6:.0f} ms | {med / base:.2f}x | {spread} | {lock} | {unlock} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", default="6.1", help="VM kernel (scripts/vm-matrix.sh names)")
    ap.add_argument("--pairs", type=int, default=5, help="rounds of the three configurations")
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--ops", type=int, default=50000)
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    ap.add_argument("--from", dest="from_file", metavar="FILE",
                    help="format results an earlier run saved (target/bench/kmutex-*.json)")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        return inside(args)
    outdir = os.path.join(ROOT, "target", "bench")
    out = args.from_file or os.path.join(outdir, f"kmutex-{args.kernel}.json")
    if not args.from_file:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
        os.makedirs(outdir, exist_ok=True)
        cmd = [os.path.join(ROOT, "scripts", "vm", "run-in-vm.sh"), "-k", args.kernel,
               "-t", "3000", "-w", outdir, "--", "python3", os.path.abspath(__file__),
               "--inside", "--out", out, "--pairs", str(args.pairs),
               "--threads", str(args.threads), "--ops", str(args.ops)]
        subprocess.run(cmd, check=True)
    with open(out) as f:
        res = json.load(f)
    text = table(res)
    print(text)
    if args.write:
        n = len(res["runs"]["none"])
        cmdline = (f"sudo python3 scripts/bench_kmutex.py --kernel {args.kernel} "
                   f"--pairs {n} --ops {res['ops']} --write")
        sec = (f"{SECTION}\n\nMeasured {datetime.date.today()} with `{cmdline}`.\n"
               f"TCG figures are relative (an emulated CPU): compare the backends with\n"
               f"each other, not with the host's figures.\n"
               f"Per-call costs are the kernel's run_time_ns / run_cnt of each program\n"
               f"(bpf_stats_enabled=1), stats bookkeeping included. `pipe-self` is the\n"
               f"worst case: it does nothing but pipe syscalls, each taking the mutex\n"
               f"once; every mutex_lock pays an entry and a return program and every\n"
               f"mutex_unlock one more, whether contended or not.\n\n{text}\n")
        md = open(BENCH_MD).read()
        if SECTION in md:
            md = re.sub(re.escape(SECTION) + r"\n.*?(?=\n## |\Z)", sec.rstrip("\n"), md, flags=re.S)
        else:
            md = md.rstrip("\n") + "\n\n" + sec
        open(BENCH_MD, "w").write(md)


if __name__ == "__main__":
    sys.exit(main())
