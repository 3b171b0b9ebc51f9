#!/bin/bash
# scripts/setup.sh - the two set-up commands of the README, for a fresh
# Debian 12 machine with a Rust toolchain (rustup):
#
#   scripts/setup.sh demo   install build packages, build, run `lockscope demo`
#   scripts/setup.sh test   install build + test packages, run the whole suite:
#                           fmt, clippy, the import graph, unit tests, root
#                           tests on this kernel and the QEMU kernel matrix
#   scripts/setup.sh deps   only install packages
#
# Needs root (BPF): re-runs itself with sudo when started as a user.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-demo}
case $MODE in demo|test|deps) ;; *) sed -n '2,12p' "$0"; exit 2;; esac

if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "setup.sh: needs root (BPF); run it as root" >&2; exit 1; }
  exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME "$0" "$@"
fi

BUILD_PKGS=(clang-19 llvm-19 libelf-dev zlib1g-dev pkg-config make gcc)
# tmux: tests/root_top.rs drives `lockscope top` in a pseudo-terminal;
# prometheus and chromium: tests/serve.rs scrapes `lockscope serve` with a real
# Prometheus and loads its dashboard in headless Chromium
# golang-go: tests/root_pprof.rs reads `--pprof` profiles with `go tool pprof`
# busybox-static: a static binary without pthread symbols (tests/root_ulock.rs),
# and the VM's init; qemu-system-x86, kmod, cpio, xz-utils, zstd: the QEMU
# kernel matrix (scripts/vm-matrix.sh, which installs them too)
# postgresql, postgresql-contrib (pgbench): tests/root_pg.rs runs a real
# PostgreSQL 15 (Debian's build has the USDT probes app-locks attaches to)
TEST_PKGS=(bpftool util-linux procps python3 tmux prometheus chromium busybox-static
  golang-go qemu-system-x86 kmod cpio xz-utils zstd postgresql postgresql-contrib)

missing() {
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

install() {
  local need
  need=$(missing "$@")
  [ -z "$need" ] && return 0
  echo "setup.sh: installing $(echo $need)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
}

if ! command -v cargo >/dev/null; then
  echo "setup.sh: no Rust toolchain (cargo) on PATH; install Rust 1.88+ with rustup first" >&2
  exit 1
fi

case $MODE in
  deps)
    install "${BUILD_PKGS[@]}" "${TEST_PKGS[@]}"
    ;;
  demo)
    install "${BUILD_PKGS[@]}"
    # both binaries: lockscope, and lockscope-workload beside it (demo runs it)
    cargo build --release --locked
    # shell completion and man pages, generated from the command line
    mkdir -p /usr/share/bash-completion/completions /usr/local/share/man/man1
    target/release/lockscope completions bash > /usr/share/bash-completion/completions/lockscope
    target/release/lockscope manpage --dir /usr/local/share/man/man1
    exec target/release/lockscope demo
    ;;
  test)
    install "${BUILD_PKGS[@]}" "${TEST_PKGS[@]}"
    cargo fmt --check
    cargo clippy --locked --all-targets -- -D warnings
    # no circles in the graph of crate:: imports between files (issue 14)
    python3 scripts/import_graph.py
    # unit tests, CLI tests and root tests against this kernel
    cargo test --locked --all-targets --no-fail-fast
    # the root tests that need function probes, inside Debian's 6.1 and 6.12
    # kernels under QEMU (tests/vm/suite; logs in target/vm-matrix/)
    if [ -x scripts/vm-matrix.sh ]; then
      scripts/vm-matrix.sh
    fi
    ;;
esac
