#!/usr/bin/env python3
"""scripts/import_graph.py - the file-level graph of `crate::` references in src/.

Every `use crate::...` (with `{..}` groups, `self`, `as`, `*`), every path
`crate::a::b` in code, `super::` and `self::` (relative to the module they
appear in, inline `mod x { .. }` blocks included) and every use of a name a
`use crate::..` brought in (`use crate::sources; .. sources::futex::X`) is
resolved to the file that defines the longest matching module:
`crate::sources::futex::X` is src/sources/futex.rs, `crate::sources::X` is
src/sources/mod.rs. A module directory counts as its files. src/main.rs and
src/bin/ (the lockscope-workload binary) are crates of their own (they name
the library as `lockscope::`) and are left out; `--src
src/bin/lockscope-workload` checks that one's modules.

A parent module naming its own submodules (src/sources/mod.rs using
`kmutex::SOURCE` from the `mod kmutex;` it declares, for the registry) is the
module tree, not an import between files: left out unless --strict.
Code under #[cfg(test)] is not part of the product: left out unless --tests.

Prints the cycles: strongly connected components of more than one file, each
with the references that close it; exits 1 if there is any, else 0.

  scripts/import_graph.py [--src DIR] [--edges] [--strict] [--tests]
"""
import argparse
import os
import re
import signal
import sys

TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|::|[{};,*]|\S")


def strip(text):
    """Blank comments and string/char literals, keeping newlines (for line numbers)."""
    out = []
    i, n = 0, len(text)

    def blank(s):
        return re.sub(r"[^\n]", " ", s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(text, i)) and (
            i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            end = text.find('"' + m.group(1), m.end())
            j = n if end < 0 else end + 1 + len(m.group(1))
            out.append(blank(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(blank(text[i : j + 1]))
            i = j + 1
        elif c == "'" and (m := re.compile(r"'(\\(x..|u\{[0-9a-fA-F]+\}|.)|[^\\'])'").match(text, i)):
            out.append(blank(m.group(0)))
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def tokens(text):
    line = 1
    pos = 0
    for m in TOKEN.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        yield m.group(0), line


def module_files(src):
    """{module path tuple: file path relative to src} for the library crate."""
    mods = {}
    for root, _dirs, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)
            parts = rel[:-3].split(os.sep)
            if parts == ["main"] or (parts[0] == "bin" and len(parts) > 1):
                continue
            if parts == ["lib"]:
                parts = []
            elif parts[-1] == "mod":
                parts = parts[:-1]
            mods[tuple(parts)] = rel
    return mods


def parse_use(toks, i, base):
    """Parse a use tree from toks[i]; return (list of (path, alias), next i)."""
    out = []
    path = list(base)
    while i < len(toks):
        t = toks[i][0]
        if t == "{":
            i += 1
            while i < len(toks) and toks[i][0] != "}":
                sub, i = parse_use(toks, i, path)
                out.extend(sub)
                if i < len(toks) and toks[i][0] == ",":
                    i += 1
            return out, i + 1
        if t == "*":
            out.append((tuple(path), None))
            return out, i + 1
        if t == "::":
            i += 1
            continue
        if re.match(r"[A-Za-z_]", t):
            if t == "self" and path == list(base) and base:
                # `a::{self, ..}`
                alias = path[-1]
                i += 1
            else:
                path.append(t)
                alias = t
                i += 1
                if i < len(toks) and toks[i][0] == "::":
                    continue
            if i + 1 < len(toks) and toks[i][0] == "as":
                alias = toks[i + 1][0]
                i += 2
            out.append((tuple(path), alias))
            return out, i
        return out, i + 1
    return out, i


def absolute(path, here):
    """Absolute module path of `path` as written in module `here` (None if not crate-local)."""
    if not path:
        return None
    p = list(path)
    if p[0] == "crate":
        return tuple(p[1:])
    if p[0] in ("self", "super"):
        cur = list(here)
        if p[0] == "self":
            p = p[1:]
        while p and p[0] == "super":
            cur = cur[:-1]
            p = p[1:]
        return tuple(cur + p)
    return None


def file_of(path, mods):
    for k in range(len(path), -1, -1):
        if path[:k] in mods:
            return mods[path[:k]]
    return None


def is_cfg_test(toks, i):
    """toks[i:] starts with `# [ cfg ( test ) ]`."""
    want = ("#", "[", "cfg", "(", "test", ")", "]")
    return tuple(t for t, _ in toks[i : i + len(want)]) == want


class Scope:
    """Where a token stands: inline `mod x { .. }` blocks and #[cfg(test)] code."""

    def __init__(self, modpath):
        self.modpath = tuple(modpath)
        self.stack = []  # per open brace: the inline module it opens, or None
        self.tests = []  # per open brace: whether it is test code
        self.pending = False  # a #[cfg(test)] seen, its item not yet open

    def here(self):
        return self.modpath + tuple(s for s in self.stack if s)

    def in_test(self):
        return self.pending or (bool(self.tests) and self.tests[-1])

    def step(self, toks, i):
        """Follows toks[i]; True if it was a `{`, `}` or `;`."""
        t = toks[i][0]
        if is_cfg_test(toks, i):
            self.pending = True
        if t == "{":
            name = toks[i - 1][0] if i >= 2 and toks[i - 2][0] == "mod" else None
            self.stack.append(name)
            self.tests.append(self.in_test())
            self.pending = False
        elif t == "}":
            if self.stack:
                self.stack.pop()
                self.tests.pop()
        elif t == ";":
            self.pending = False
        else:
            return False
        return True


def references(rel, text, modpath, with_tests):
    """Yield (line, absolute path) for each crate-local reference in one file."""
    toks = list(tokens(strip(text)))
    aliases = {}  # name -> absolute path: `mod x;`, `use crate::..`, `use super::..`

    # pass 1: `mod x;` and use statements (names are file-wide for simplicity)
    refs = []
    scope = Scope(modpath)
    skip = set()
    i = 0
    while i < len(toks):
        t, line = toks[i]
        if t == "mod" and i + 2 < len(toks) and toks[i + 2][0] == ";":
            aliases[toks[i + 1][0]] = scope.here() + (toks[i + 1][0],)
        elif scope.step(toks, i):
            pass
        elif t == "use" and i + 1 < len(toks) and toks[i + 1][0] != "::":
            j = i + 1
            while j < len(toks) and toks[j][0] != ";":
                j += 1
            trees, _ = parse_use(toks[i + 1 : j], 0, [])
            in_test = scope.in_test()
            scope.pending = False
            for path, alias in trees:
                a = absolute(path, scope.here())
                if a is None and path and path[0] in aliases:
                    a = aliases[path[0]] + tuple(path[1:])
                if a is None:
                    continue
                if with_tests or not in_test:
                    refs.append((line, a))
                if alias:
                    aliases[alias] = a
            skip.update(range(i, j + 1))
            i = j
        i += 1

    # pass 2: paths in code
    scope = Scope(modpath)
    i = 0
    while i < len(toks):
        t, line = toks[i]
        if scope.step(toks, i):
            pass
        elif (
            i not in skip
            and i + 1 < len(toks)
            and toks[i + 1][0] == "::"
            and (i == 0 or toks[i - 1][0] != "::")
            and (t in ("crate", "self", "super") or t in aliases)
        ):
            path = [t]
            j = i + 1
            while j + 1 < len(toks) and toks[j][0] == "::" and re.match(r"[A-Za-z_]", toks[j + 1][0]):
                path.append(toks[j + 1][0])
                j += 2
            if t in aliases and t not in ("crate", "self", "super"):
                a = aliases[t] + tuple(path[1:])
            else:
                a = absolute(path, scope.here())
            if a is not None and (with_tests or not scope.in_test()):
                refs.append((line, a))
            i = j - 1
        i += 1
    return refs


def is_child(parent, target):
    """Whether file `target` is a submodule of the module file `parent` (a dir/mod.rs)."""
    if os.path.basename(parent) != "mod.rs":
        return False
    return target.startswith(os.path.dirname(parent) + os.sep)


def tarjan(nodes, edges):
    index, low, onstack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        onstack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in onstack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                onstack.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends quietly
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=os.path.join(os.path.dirname(__file__), "..", "src"))
    ap.add_argument("--edges", action="store_true", help="print every file-to-file edge")
    ap.add_argument("--tests", action="store_true", help="count #[cfg(test)] code too")
    ap.add_argument(
        "--strict", action="store_true", help="count a parent module's references to its own submodules"
    )
    args = ap.parse_args()
    src = os.path.normpath(args.src)
    mods = module_files(src)
    edges = {}  # file -> {file: [(line, path)]}
    for modpath, rel in sorted(mods.items(), key=lambda kv: kv[1]):
        with open(os.path.join(src, rel), encoding="utf-8") as f:
            text = f.read()
        for line, path in references(rel, text, modpath, args.tests):
            target = file_of(path, mods)
            if target is None or target == rel:
                continue
            if not args.strict and is_child(rel, target):
                continue
            edges.setdefault(rel, {}).setdefault(target, []).append((line, "::".join(("crate",) + path)))
    nodes = set(mods.values())
    if args.edges:
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f"{a} -> {b}")
    cycles = [c for c in tarjan(nodes, edges) if len(c) > 1]
    nedges = sum(len(v) for v in edges.values())
    mode = ", ".join(
        ("strict" if args.strict else "parent-to-submodule left out", "tests" if args.tests else "no #[cfg(test)]")
    )
    print(f"import graph ({mode}): {len(nodes)} files, {nedges} edges, {len(cycles)} cycle(s)")
    for n, comp in enumerate(sorted(cycles), 1):
        print(f"\ncycle {n}: {len(comp)} files: {' '.join('src/' + f for f in comp)}")
        members = set(comp)
        for a in comp:
            for b in sorted(edges.get(a, {})):
                if b in members:
                    refs = edges[a][b]
                    shown = ", ".join(f"{line}:{p}" for line, p in refs[:4])
                    more = f" (+{len(refs) - 4})" if len(refs) > 4 else ""
                    print(f"  src/{a} -> src/{b}: {shown}{more}")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
