"""The parts the benchmark scripts share (python3 stdlib only).

A script imports it from its own directory, so that `python3 scripts/X.py`
and `sudo python3 scripts/X.py` both find it:

    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import benchlib  # noqa: E402
"""

import contextlib
import datetime
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BENCH_MD = os.path.join(ROOT, "BENCHMARKS.md")
STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


# --- other load on the machine -------------------------------------------

def cpu_snapshot():
    """(busy jiffies of the machine, total jiffies, CPU jiffies of our reaped children)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user .. steal
    t = os.times()
    kids = (t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK")
    return sum(v) - v[3] - v[4], sum(v), kids  # busy excludes idle and iowait


def other_cpu(start):
    """(jiffies used by tasks other than ours since `start`, total jiffies)."""
    end = cpu_snapshot()
    busy, total, ours = (e - s for e, s in zip(end, start))
    return max(busy - ours, 0), max(total, 1)


def other_load(start):
    """Share of the machine's CPU time used by tasks other than ours since `start`."""
    other, total = other_cpu(start)
    return other / total


def settle(limit=60):
    """Waits (up to `limit` s) for a second in which other tasks use < 5% CPU."""
    for _ in range(limit):
        start = cpu_snapshot()
        time.sleep(1)
        other, total = other_cpu(start)
        if other < 0.05 * total:
            return


# --- what was measured ------------------------------------------------------

def git(path, *args):
    """`git ARGS` in `path`: its stdout, stripped ("" on failure)."""
    return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True).stdout.strip()


def short_rev(path=ROOT):
    """The short commit of the git tree `path` is in."""
    return git(path, "rev-parse", "--short", "HEAD") or "unknown"


def git_rev(path=ROOT):
    """The commit of the git tree `path` is in, and whether its sources have changes."""
    dirty = git(path, "status", "--porcelain", "--untracked-files=no", "--",
                "src", "build.rs", "Cargo.toml")
    return f"commit {short_rev(path)}" + (" + uncommitted changes" if dirty else "")


def cpu_model(unknown="unknown"):
    """The CPU's model name (`unknown` when /proc/cpuinfo does not say)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or unknown


def command_lines(cmd, argv, commit=False):
    """A section's `- Command:` line (how to produce it again: `cmd ARGV`,
    then the commit if `commit`) and its `- Date:` line (now, in UTC)."""
    rev = f" (commit {short_rev()})" if commit else ""
    return [f"- Command: `{(cmd + ' ' + ' '.join(argv)).strip()}`{rev}",
            f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"]


def kernel_line(other=None):
    """A section's `- Kernel:` line: the kernel, the CPU, and (if given) the
    share of the machine's CPU time `other` tasks used during the run."""
    line = f"- Kernel: `{platform.release()}`; CPU: {cpu_model()} ({os.cpu_count()} CPUs)"
    if other is not None:
        line += f"; CPU time used by other tasks during the run: {other:.0%} of the machine"
    return line


def per_prog_cell(per_prog, name=lambda n: n):
    """A table cell of BPF ns per run per program: `NAME NS, ...`."""
    return ", ".join(f"{name(n)} {v:.0f}" for n, v in per_prog.items())


def md_table(heads, align, rows):
    """A Markdown table: the headings `heads`, `align` a letter per column
    (`l` left, `r` right: numbers), then `rows`, each a list of cells."""
    def line(cells):
        return "| " + " | ".join(str(c) for c in cells) + " |"
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
    return "\n".join([line(heads), rule, *(line(r) for r in rows)])


def verdict(text, value, target, unit=""):
    """A Markdown bullet: `text`, then whether `value` is within `target`."""
    return f"- {text}, target <= {target}{unit}: {'met' if value <= target else 'NOT met'}"


def write_md(section, text, path=BENCH_MD):
    """Puts `text` (which starts with the heading `section`) into the
    Markdown file `path`: in place of that section, or appended."""
    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n\n"
    i = old.find(section)
    if i < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        m = re.search(r"^## ", old[i + len(section):], re.M)
        rest = old[i + len(section) + m.start():] if m else ""
        new = old[:i] + text + ("\n" + rest if rest else "")
    with open(path, "w") as f:
        f.write(new)


# --- processes ------------------------------------------------------------

def need_root(who, why=None):
    """Exits the script `who` unless it runs as root (saying `why`)."""
    if os.geteuid() != 0:
        sys.exit(f"{who}: needs root" + (f" ({why})" if why else ""))


def build_release(who):
    """Builds target/release/lockscope (`cargo build --release`); exits the
    script `who` if that fails."""
    if subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT).returncode != 0:
        sys.exit(f"{who}: cargo build --release failed")


def exit_on_sigterm():
    """Makes SIGTERM end the script as sys.exit(143) does, so that its
    `finally` blocks (stopping tracers, restoring sysctls) still run."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def run_rusage(cmd):
    """Runs `cmd` to its end, its output in temporary files (no pipe to
    keep draining): (exit code, stdout, stderr, its rusage from wait4:
    the CPU time of the process, its threads and its reaped children)."""
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read(), err.read(), ru


def start_until(cmd, marker, timeout, stdout=subprocess.DEVNULL, env=None):
    """Starts `cmd` (with `env` added to the environment) and waits (up to
    `timeout` s) until a line of its stderr contains `marker`. Returns
    (process, stderr lines so far, whether it is ready: the marker came and
    the process still runs); a process that is not ready is left running
    for the caller to kill."""
    p = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **env} if env else None)
    ready, seen = threading.Event(), []
    lines = []

    def pump():
        for line in p.stderr:
            lines.append(line.rstrip())
            if marker in line:
                seen.append(True)
                ready.set()
        ready.set()  # EOF: the process exits

    threading.Thread(target=pump, daemon=True).start()
    ok = ready.wait(timeout) and bool(seen) and p.poll() is None
    return p, lines, ok


def start_serve(cmd, timeout, who):
    """Starts `lockscope serve ...` (`cmd`) and waits until it serves;
    exits the script with `who` and serve's last lines if it does not."""
    p, lines, ok = start_until(cmd, "lockscope: serving", timeout)
    if not ok:
        p.kill()
        sys.exit(f"{who} did not start: " + " | ".join(lines[-5:]))
    return p, lines


@contextlib.contextmanager
def bpf_stats(value=None):
    """kernel.bpf_stats_enabled set to `value` (if given) inside the block,
    and back to what it was when the block ends, however it ends."""
    with open(STATS_SYSCTL) as f:
        old = f.read().strip()
    try:
        if value is not None:
            with open(STATS_SYSCTL, "w") as f:
                f.write(value)
        yield
    finally:
        with open(STATS_SYSCTL, "w") as f:
            f.write(old)


def publish(section, text, write, who):
    """Prints a section's `text` and, if `write`, puts it into BENCHMARKS.md
    (saying so on stderr, as script `who`)."""
    print(text)
    if write:
        write_md(section, text)
        print(f"{who}: wrote {BENCH_MD}", file=sys.stderr)
