#!/usr/bin/env python3
"""What one USDT probe hit costs the traced program under the app-locks source:
the uprobe trap into the kernel plus `app_probe`.

    python3 scripts/bench_usdt.py [--rounds 5] [--hits 2000000]   (as root)

A small C program (written and compiled here, `cc`) carries PostgreSQL's
LWLock wait probes (provider `postgresql`, `lwlock__wait__start` and
`lwlock__wait__done`, the arguments a tranche name and a mode, as Debian's
postgres binary declares them) and fires them in a loop: one start and one
done per iteration, so every iteration is one LWLock wait to app-locks.
It waits for a line on stdin before the loop, so that lockscope (`report -p
PID --source app-locks`) is attached before the first hit, and prints the
loop's ns per iteration. Each round runs it untraced, traced, and traced
with kernel.bpf_stats_enabled=1 (for `app_probe`'s own run time, which the
statistics inflate); the order rotates between rounds. Printed: the medians
of ns per probe hit, the difference traced minus untraced (what a hit costs
the program), and how much of it `app_probe` is; the rest is the kernel's
uprobe path (the breakpoint trap, the probe lookup, the return). The
program's row count is checked against the hits, so a run that did not
trace is not taken for a cheap one. LOCKSCOPE_BIN=PATH measures another
build. Python 3 standard library (and scripts/benchlib.py); root; cc.
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile

import benchlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("LOCKSCOPE_BIN", os.path.join(ROOT, "target", "release", "lockscope"))

# The stapsdt note of one probe, as <sys/sdt.h> lays it out (written here:
# the header is not installed on every machine): the probe site is a nop,
# the note gives its address, the base for prelink adjustment, no
# semaphore, the provider, the name and the argument specs.
PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define PROBE(name, args)                                                      \
	__asm__ volatile("990: nop\n"                                          \
			 ".pushsection .note.stapsdt,\"?\",\"note\"\n"         \
			 ".balign 4\n"                                         \
			 ".4byte 992f-991f, 994f-993f, 3\n"                    \
			 "991: .asciz \"stapsdt\"\n"                           \
			 "992: .balign 4\n"                                    \
			 "993: .8byte 990b\n"                                  \
			 ".8byte _.stapsdt.base\n"                             \
			 ".8byte 0\n"                                          \
			 ".asciz \"postgresql\"\n"                             \
			 ".asciz \"" name "\"\n"                               \
			 ".asciz \"" args "\"\n"                               \
			 "994: .balign 4\n"                                    \
			 ".popsection\n"                                       \
			 ".ifndef _.stapsdt.base\n"                            \
			 ".pushsection .stapsdt.base,\"aG\",\"progbits\","     \
			 ".stapsdt.base,comdat\n"                              \
			 ".weak _.stapsdt.base\n"                              \
			 ".hidden _.stapsdt.base\n"                            \
			 "_.stapsdt.base: .space 1\n"                          \
			 ".size _.stapsdt.base, 1\n"                           \
			 ".popsection\n"                                       \
			 ".endif\n"                                            \
			 :                                                     \
			 : "D"(tranche), "S"(mode))

static const char *tranche = "BenchTranche";

__attribute__((noinline)) static void wait_once(int mode)
{
	PROBE("lwlock__wait__start", "8@%%rdi -4@%%esi");
	PROBE("lwlock__wait__done", "8@%%rdi -4@%%esi");
}

int main(int argc, char **argv)
{
	long n = atol(argv[1]);
	struct timespec a, b;
	char line[16];

	printf("%d\n", (int)getpid());
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		wait_once(0);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.3f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}
"""


def build(d):
    src = os.path.join(d, "usdt_bench.c")
    exe = os.path.join(d, "usdt_bench")
    with open(src, "w") as f:
        f.write("#include <unistd.h>\n" + PROGRAM)
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    return exe


def one(exe, hits, mode, d):
    """ns per iteration of the program; with lockscope, also its report."""
    prog = subprocess.Popen([exe, str(hits)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    pid = int(prog.stdout.readline())
    tracer = None
    report = os.path.join(d, "report.json")
    if mode != "untraced":
        tracer, lines, ok = benchlib.start_until(
            [BIN, "report", "-p", str(pid), "--source", "app-locks", "--json", "-o", report],
            "lockscope: tracing", 60)
        if not ok:
            tracer.kill()
            prog.kill()
            raise SystemExit("lockscope did not attach:\n" + "\n".join(lines))
    prog.stdin.write("go\n")
    prog.stdin.flush()
    ns = float(prog.stdout.readline())
    prog.wait()
    rep = None
    if tracer is not None:
        tracer.wait(timeout=60)  # it stops when its target exits
        with open(report) as f:
            rep = json.load(f)
        waits = sum(r["count"] for r in rep["rows"] if r["source"] == "app-locks")
        if waits != hits:
            raise SystemExit(f"lockscope counted {waits} LWLock waits, the program made {hits}")
    return ns, rep


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hits", type=int, default=2_000_000,
                    help="loop iterations (each fires a start and a done probe)")
    a = ap.parse_args()
    benchlib.need_root("bench_usdt.py")
    modes = ["untraced", "traced", "traced, BPF statistics on"]
    per_hit = {m: [] for m in modes}
    prog_ns = []
    with tempfile.TemporaryDirectory(prefix="lockscope-bench-usdt-") as d:
        exe = build(d)
        print(f"lockscope: {BIN} ({benchlib.short_rev()}); {a.hits} iterations of a start "
              f"and a done probe; {a.rounds} rounds", flush=True)
        for r in range(a.rounds):
            order = modes[r % 3:] + modes[:r % 3]
            for m in order:
                stats = "1" if m.endswith("on") else None
                with benchlib.bpf_stats(stats):
                    ns, rep = one(exe, a.hits, m, d)
                per_hit[m].append(ns / 2)
                line = f"round {r + 1} {m:27} {ns / 2:8.1f} ns a hit"
                if stats and rep:
                    p = [x for x in rep["bpf_programs"] if x["name"] == "app_probe"]
                    if p and p[0]["run_cnt"]:
                        prog_ns.append(p[0]["run_time_ns"] / p[0]["run_cnt"])
                        line += (f" (app_probe {p[0]['run_cnt']} runs, "
                                 f"{prog_ns[-1]:.1f} ns a run)")
                print(line, flush=True)
    med = {m: statistics.median(v) for m, v in per_hit.items()}
    cost = med["traced"] - med["untraced"]
    bpf = statistics.median(prog_ns) if prog_ns else float("nan")
    print(f"median ns a hit: untraced {med['untraced']:.1f}, traced {med['traced']:.1f} "
          f"(BPF statistics on: {med['traced, BPF statistics on']:.1f})")
    print(f"a hit costs the program {cost:.1f} ns: app_probe {bpf:.1f} ns (statistics on, "
          f"an upper bound), the kernel's uprobe path the other {cost - bpf:.1f} ns "
          f"(a lower bound)")


if __name__ == "__main__":
    main()
