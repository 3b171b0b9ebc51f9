#!/usr/bin/env python3
"""Helpers of scripts/vm-matrix.sh (standard library only).

  matrix.py suite SUITE                    entries: line, needs, target, args
                                           (separated by \x1f)
  matrix.py targets CARGO_JSON             test targets as TSV: name, executable
  matrix.py result KERNEL LINE TARGET ARGS LOG RC SECS [RETRIED]
                                           one entry's outcome as a JSON line
  matrix.py missing KERNEL LINE TARGET ARGS WHY
                                           an entry that could not run
  matrix.py kernel NAME RELEASE PACKAGE SECS ERROR DOCTOR_LOG
                                           a kernel's record
  matrix.py probes DOCTOR_LOG              the VM's function probes, one line
  matrix.py host DOCTOR_JSON SUITE         what the host kernel cannot run
  matrix.py summary RESULTS REQUIRED OUT   summary.json and the final table;
                                           exit 1 when a required kernel failed
"""

import json
import re
import sys


def suite(path):
    """Parses the suite file; prints `lineno<TAB>needs<TAB>target<TAB>args`."""
    n = 0
    with open(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            words = line.split()
            needs = ""
            while words and words[0].startswith("needs="):
                needs = words.pop(0)[len("needs="):]
                if not needs:
                    sys.exit(f"{path}:{lineno}: empty needs=")
            if not words:
                sys.exit(f"{path}:{lineno}: no test target after needs=")
            target, args = words[0], words[1:]
            if not re.fullmatch(r"[A-Za-z0-9_-]+", target):
                sys.exit(f"{path}:{lineno}: bad test target name {target!r}")
            if any("\t" in a for a in args):
                sys.exit(f"{path}:{lineno}: tabs in arguments")
            # \x1f: a separator that `read` does not merge (empty needs)
            print(f"{lineno}\x1f{needs}\x1f{target}\x1f{' '.join(args)}")
            n += 1
    if n == 0:
        sys.exit(f"{path}: no entries")


def targets(path):
    """Integration test executables from `cargo test --no-run --message-format=json`."""
    with open(path) as f:
        for raw in f:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
                continue
            t = msg["target"]
            if "test" in t.get("kind", []) and msg.get("profile", {}).get("test"):
                print(f"{t['name']}\t{msg['executable']}")


RESULT = re.compile(
    r"test result: (?:ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored; "
    r"\d+ measured; (\d+) filtered out"
)
TEST_LINE = re.compile(r"^test (\S+) \.\.\. ?(ok|FAILED|ignored)?")
# run-in-vm.sh waits for a VM that someone else runs on this machine
VM_WAIT = re.compile(r"^run-in-vm: waited (\d+) s for another VM")


def vm_wait(text):
    return sum(int(m[1]) for m in VM_WAIT.finditer(text))


def result(kernel, lineno, target, args, log, rc, secs, retried=""):
    """One suite entry's outcome from its VM log and run-in-vm.sh's status."""
    rc = int(rc)
    passed = failed = ignored = 0
    seen_result = False
    failures, started, finished = [], [], set()
    waited = 0
    with open(log, errors="replace") as f:
        for line in f:
            line = line.rstrip("\r\n")
            m = VM_WAIT.match(line)
            if m:
                waited += int(m[1])
                continue
            m = RESULT.search(line)
            if m:
                seen_result = True
                passed += int(m[1])
                failed += int(m[2])
                ignored += int(m[3])
                continue
            m = TEST_LINE.match(line)
            if m:
                started.append(m[1])
                if m[2]:
                    finished.add(m[1])
                if m[2] == "FAILED":
                    failures.append(m[1])
    if rc == 124:
        status = "timeout"
    elif rc == 125:
        status = "vm-died"
    elif not seen_result:
        status = f"no test result (exit {rc})"
    elif rc != 0 or failed:
        status = "failed"
    elif passed == 0:
        status = "no test matched"
    else:
        status = "ok"
    if status != "ok":
        # a test cut off by a timeout or a dead VM counts as failed
        unfinished = [t for t in started if t not in finished]
        failures += [t for t in unfinished if t not in failures]
        failed = max(failed, len(failures), 1)
    print(
        json.dumps(
            {
                "kernel": kernel,
                "line": int(lineno),
                "target": target,
                "args": args,
                "log": log,
                "status": status,
                "exit": rc,
                "passed": passed,
                "failed": failed,
                "ignored": ignored,
                "failures": failures,
                "seconds": round(float(secs) - waited, 1),
                "vm_wait_seconds": waited,
                "retried": retried or None,
            }
        )
    )


def host(doctor_path, suite_path):
    """Prints which suite entries run only in the VMs, and why."""
    try:
        with open(doctor_path) as f:
            doc = json.load(f)
        checks = {c["name"]: c for c in doc.get("checks", [])}
        kernel = doc.get("kernel", "?")
    except (OSError, ValueError) as e:
        checks, kernel = {}, f"? (lockscope doctor --json failed: {e})"
    config = kernel_config()
    vm_only, both = [], []
    with open(suite_path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            words = line.split()
            needs = [w[len("needs="):] for w in words if w.startswith("needs=")]
            rest = " ".join(w for w in words if not w.startswith("needs="))
            feats = [x for n in needs for x in n.split("|")]
            if feats and not any(checks.get(x, {}).get("ok") for x in feats):
                why = []
                for x in feats:
                    c = checks.get(x)
                    detail = c["detail"] if c else "not probed by lockscope doctor"
                    if x == "kprobe" and config.get("CONFIG_KPROBES") != "y":
                        detail += " (CONFIG_KPROBES is not set)"
                    why.append(f"{x}: {detail}")
                vm_only.append((rest, "; ".join(why)))
            else:
                both.append(rest)
    print(f"host kernel {kernel}: `cargo test --all-targets` runs every test on it;")
    if vm_only:
        print("these suite entries run only in the VMs (the host kernel cannot):")
        for rest, why in vm_only:
            print(f"  {rest}\n      needs one of: {why}")
        return
    print("every suite entry runs on the host as well.")
    for x in ("fentry", "kprobe"):
        c = checks.get(x)
        if c and not c.get("ok"):
            extra = ""
            if x == "kprobe" and config.get("CONFIG_KPROBES") != "y":
                extra = " (CONFIG_KPROBES is not set)"
            print(f"  host {x}: {c['detail']}{extra}  [lockscope doctor]")


def kernel_config():
    import gzip
    import os

    text = ""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        try:
            with open(f"/boot/config-{os.uname().release}") as f:
                text = f.read()
        except OSError:
            return {"CONFIG_KPROBES": "?"}
    conf = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, v = line.split("=", 1)
            conf[k] = v
    return conf


DOCTOR_MARK = "@@doctor-json@@"


def doctor(log):
    """The function-probe checks and source plan of `lockscope doctor --json`
    run in a VM, after DOCTOR_MARK in its log."""
    if not log:
        return None
    try:
        with open(log, errors="replace") as f:
            text = f.read()
        waited = vm_wait(text)
        doc = json.loads(text.split(DOCTOR_MARK, 1)[1])
    except (OSError, IndexError, ValueError):
        return None
    checks = {
        c["name"]: {"ok": c["ok"], "detail": c["detail"]}
        for c in doc.get("checks", [])
        if c.get("name") in ("fentry", "kprobe", "tp_btf", "btf")
    }
    return {
        "kernel": doc.get("kernel"),
        "checks": checks,
        "sources": doc.get("sources"),
        "vm_wait_seconds": waited,
    }


def fmt_secs(s):
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s"


def summary(results_path, required, out):
    """results: JSON lines, one per kernel (`kernel` record) or entry."""
    kernels, order = {}, []
    with open(results_path) as f:
        for raw in f:
            r = json.loads(raw)
            name = r["kernel"]
            if name not in kernels:
                kernels[name] = {
                    "kernel": name,
                    "release": None,
                    "package": None,
                    "required": name in required,
                    "error": None,
                    "passed": 0,
                    "failed": 0,
                    "seconds": 0.0,
                    "entries": [],
                }
                order.append(name)
            k = kernels[name]
            if r.get("record") == "kernel":
                for key in ("release", "package", "error", "seconds", "doctor"):
                    if r.get(key) is not None:
                        k[key] = r[key]
            else:
                r = dict(r)
                del r["kernel"]
                k["vm_wait_seconds"] = k.get("vm_wait_seconds", 0) + r.get("vm_wait_seconds", 0)
                k["entries"].append(r)
                k["passed"] += r["passed"]
                k["retried"] = k.get("retried", 0) + (1 if r.get("retried") else 0)
                k["failed"] += r["failed"]
    for k in kernels.values():
        # the kernel's own time: without waits for other people's VMs
        waited = k.get("vm_wait_seconds", 0) + ((k.get("doctor") or {}).get("vm_wait_seconds") or 0)
        k["vm_wait_seconds"] = waited
        k["seconds"] = round(max(0.0, k["seconds"] - waited), 1)
    ok = True
    for name in required:
        if name not in kernels:
            kernels[name] = {
                "kernel": name,
                "required": True,
                "error": "required but not in LOCKSCOPE_VM_KERNELS",
                "passed": 0,
                "failed": 0,
                "seconds": 0,
                "entries": [],
            }
            order.append(name)
    for name in order:
        k = kernels[name]
        k["ok"] = not k["error"] and k["failed"] == 0 and bool(k["entries"])
        if k["required"] and not k["ok"]:
            ok = False
    doc = {
        "ok": ok,
        "required": sorted(required),
        "required_note": "LOCKSCOPE_VM_REQUIRED (default 6.1) names the kernels whose "
        "failures fail the matrix; the others are run and reported only. 6.12 is not "
        "required by default: under QEMU TCG, attaching many function probes there is "
        "slow enough to break tests' timing bounds now and then",
        "kernels": [kernels[n] for n in order],
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print()
    print(f"{'kernel':<8} {'release':<24} {'passed':>6} {'failed':>6} {'time':>7}  required  result")
    for name in order:
        k = kernels[name]
        res = "ok" if k["ok"] else (k["error"] or "FAILED")
        print(
            f"{name:<8} {k.get('release') or '-':<24} {k['passed']:>6} {k['failed']:>6} "
            f"{fmt_secs(k['seconds']):>7}  {'yes' if k['required'] else 'no':<8}  {res}"
        )
    for name in order:
        if kernels[name].get("retried"):
            print(f"{name}: {kernels[name]['retried']} entry(ies) ran twice: the first VM died "
                  "of a TCG text-patching artefact (Oops: int3), logs *.try1.*")
    print(f"required kernels: {' '.join(sorted(required)) or '(none)'}; summary: {out}")
    sys.exit(0 if ok else 1)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "suite":
        suite(*args)
    elif cmd == "targets":
        targets(*args)
    elif cmd == "result":
        result(*args)
    elif cmd == "missing":
        kernel, lineno, target, args, why = args
        print(json.dumps({"kernel": kernel, "line": int(lineno), "target": target,
                          "args": args, "log": None, "status": why, "exit": None,
                          "passed": 0, "failed": 1, "ignored": 0, "failures": [],
                          "seconds": 0}))
    elif cmd == "kernel":
        kernel, release, package, secs, error, doclog = args
        print(json.dumps({"record": "kernel", "kernel": kernel, "release": release or None,
                          "package": package or None, "seconds": round(float(secs), 1),
                          "error": error or None, "doctor": doctor(doclog)}))
    elif cmd == "probes":
        d = doctor(args[0])
        if d is None:
            print("lockscope doctor gave no answer (see its log)")
        else:
            print(", ".join(f"{k} {'yes' if v['ok'] else 'NO: ' + v['detail']}"
                            for k, v in d["checks"].items()))
    elif cmd == "host":
        host(*args)
    elif cmd == "summary":
        summary(args[0], set(args[1].replace(",", " ").split()), args[2])
    else:
        sys.exit(f"matrix.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
