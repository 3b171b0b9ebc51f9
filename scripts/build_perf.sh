#!/usr/bin/env bash
# Builds perf with BPF skeletons (BUILD_BPF_SKEL=1), which Debian's
# linux-perf lacks ("switch `b' is not available because no
# BUILD_BPF_SKEL=1"), so that `perf lock contention -a -b` can be
# compared with lockscope (scripts/bench_peers.py).
#
#     sudo bash scripts/build_perf.sh        # prints the binary's path
#
# Source: Debian's linux-source-6.12 package (bookworm-security/backports).
# Installs the build dependencies with apt-get, builds tools/perf out of
# tree under $WORK and installs the binary as $PREFIX/perf. Idempotent: if
# $PREFIX/perf exists, has BPF skeletons and was built by this version of
# the script ($PREFIX/perf.build), does nothing; an interrupted build
# resumes (make, in $WORK). Root (apt-get).
set -euo pipefail

PREFIX=${PREFIX:-/usr/local/lib/lockscope-bench}
WORK=${WORK:-/var/tmp/lockscope-perf-build}
SRC_PKG=${SRC_PKG:-linux-source-6.12}
JOBS=${JOBS:-$(nproc)}
PERF="$PREFIX/perf"

STAMP="$PREFIX/perf.build"
# What the installed binary was built from; a change here rebuilds it.
BUILD_ID="$SRC_PKG BUILD_BPF_SKEL=1 runqueues-patch-1"

has_skel() {
    "$1" version --build-options 2>/dev/null | grep -Eq 'bpf_skeletons: +\[ on'
}

if [[ -x "$PERF" ]] && has_skel "$PERF" && [[ "$(cat "$STAMP" 2>/dev/null)" == "$BUILD_ID" ]]; then
    echo "$PERF"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "build_perf.sh: needs root (apt-get install)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$SRC_PKG" \
    make gcc clang llvm pkg-config flex bison bc xz-utils python3 \
    libelf-dev libdw-dev zlib1g-dev libzstd-dev libcap-dev libtraceevent-dev \
    libssl-dev >/dev/null

tarball=$(dpkg -L "$SRC_PKG" | grep -E '/usr/src/linux-source-[0-9.]+\.tar\.xz$' | head -n 1)
if [[ -z "$tarball" ]]; then
    echo "build_perf.sh: no source tarball in $SRC_PKG" >&2
    exit 1
fi
name=$(basename "$tarball" .tar.xz)
mkdir -p "$WORK"
if [[ ! -d "$WORK/$name/tools/perf" ]]; then
    rm -rf "${WORK:?}/$name"
    # Only what tools/perf builds from: tools/, the uapi and a few
    # kernel headers and scripts it copies or checks.
    tar -xJf "$tarball" -C "$WORK" "$name/tools" "$name/include" "$name/arch" \
        "$name/scripts" "$name/lib" "$name/Makefile"
fi

# perf 6.12 loads `collect_lock_syms` (it labels run-queue locks for -l)
# unconditionally: its `runqueues` per-CPU symbol needs CONFIG_KALLSYMS_ALL,
# without which (as on this project's VM kernel) the whole skeleton fails to
# load ("ldimm64 failed to find the address for kernel symbol
# 'runqueues'"). Its later set_autoload(false) comes after the load and so
# does nothing. Patch: leave that program out when /proc/kallsyms has no
# `runqueues` (only the rq-lock label of -l output is lost).
src="$WORK/$name/tools/perf/util/bpf_lock_contention.c"
if ! grep -q 'lockscope-bench' "$src"; then
    python3 - "$src" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
helper = """
/* lockscope-bench: see scripts/build_perf.sh */
static bool kallsyms_has(const char *name)
{
	char line[512], sym[256];
	bool found = false;
	FILE *fp = fopen("/proc/kallsyms", "r");

	if (fp == NULL)
		return false;
	while (!found && fgets(line, sizeof(line), fp)) {
		if (sscanf(line, "%*s %*s %255s", sym) == 1 && !strcmp(sym, name))
			found = true;
	}
	fclose(fp);
	return found;
}
"""
anchor = '#include "bpf_skel/lock_data.h"\n'
load = "\tif (lock_contention_bpf__load(skel) < 0) {"
assert anchor in s and s.count(load) == 1, "unexpected bpf_lock_contention.c"
s = s.replace(anchor, anchor + "#include <stdio.h>\n" + helper, 1)
s = s.replace(load, "\tif (!kallsyms_has(\"runqueues\"))\n"
              "\t\tbpf_program__set_autoload(skel->progs.collect_lock_syms, false);\n\n" + load, 1)
open(p, "w").write(s)
PY
fi

out="$WORK/out"
mkdir -p "$out"
# Only what perf lock contention needs, plus the usual libraries; the
# optional language bindings and GUIs are left out to keep the build short.
make -C "$WORK/$name/tools/perf" O="$out" -j"$JOBS" \
    BUILD_BPF_SKEL=1 NO_LIBPYTHON=1 NO_LIBPERL=1 NO_GTK2=1 NO_JVMTI=1 \
    NO_LIBBABELTRACE=1 NO_LIBUNWIND=1 NO_SLANG=1 NO_LIBNUMA=1 NO_LIBPFM4=1 \
    NO_SDT=1 NO_LIBCRYPTO=1 NO_DEMANGLE=1 NO_LIBLLVM=1 NO_CAPSTONE=1 \
    WERROR=0 >"$WORK/build.log" 2>&1 || {
    tail -n 40 "$WORK/build.log" >&2
    echo "build_perf.sh: make failed; full log in $WORK/build.log" >&2
    exit 1
}

mkdir -p "$PREFIX"
install -m 0755 "$out/perf" "$PERF"
if ! has_skel "$PERF"; then
    echo "build_perf.sh: $PERF was built without BPF skeletons; see $WORK/build.log" >&2
    exit 1
fi
echo "$BUILD_ID" >"$STAMP"
echo "$PERF"
