#!/bin/bash
# scripts/vm/run-in-vm.sh - run one host command as root inside a QEMU VM
# booted with a stock Debian kernel. The host's root filesystem is shared
# read-only over virtio-9p, with a tmpfs overlay so the guest can write
# anywhere (writes are discarded at power-off); host binaries run unchanged
# at their absolute paths. The guest's init mounts proc, sysfs, devtmpfs,
# devpts, tracefs, debugfs, bpffs, securityfs and cgroup2. The command's
# output (stdout and stderr) comes out on this script's stdout.
#
# Usage: scripts/vm/run-in-vm.sh [options] -- command [args...]
#   -k KERNEL  an extracted linux-image .deb (dpkg-deb -x: boot/vmlinuz-* and
#              lib/modules/*), or the name of one that scripts/vm-matrix.sh
#              fetched: 6.1, 6.12 (from $LOCKSCOPE_VM_CACHE/kernels/)
#   -m MEM     guest memory (default 2G)
#   -c N       guest vCPUs (default 2)
#   -t SECS    wall-clock timeout for the whole VM (default 600)
#   -w DIR     share host DIR read-WRITE at the same path (repeatable):
#              what the guest writes there survives the VM
#   -C DIR     working directory in the guest (default: the current one)
#   -K FILE    keep the kernel's own log (its console, warnings and worse;
#              everything with -v) in FILE; without -K it is shown (last
#              lines) only when the VM dies
#   -v         all kernel messages, boot included, in that log
# Exit status: the command's; 124 on timeout; 125 if the VM died without
# reporting one (panic, boot failure, ...); 2 on bad usage.
# Environment: LOCKSCOPE_VM_CACHE (default /var/cache/lockscope-vm) holds the
# fetched kernels, one initramfs and one uncompressed vmlinux per kernel,
# and per-run command scripts. No TTY needed; stdin is not used. One VM runs
# at a time on a machine: others wait (/run/lock/lockscope-vm.lock).
# Accelerator: TCG. KVM on the project's machines is nested and ~100x slower.
set -euo pipefail

CACHE=${LOCKSCOPE_VM_CACHE:-/var/cache/lockscope-vm}
KERNEL=
MEM=2G
CPUS=2
TMO=600
CWD=$PWD
VERBOSE=0
KMSG_KEEP=
RWDIRS=()

die() { echo "run-in-vm: $*" >&2; exit 2; }
usage() { sed -n '2,30p' "$0" >&2; exit 2; }

while getopts "k:m:c:t:w:C:K:vh" o; do
  case $o in
    k) KERNEL=$OPTARG;;
    m) MEM=$OPTARG;;
    c) CPUS=$OPTARG;;
    t) TMO=$OPTARG;;
    w) [ -d "$OPTARG" ] || die "-w $OPTARG: not a directory"; RWDIRS+=("$(realpath "$OPTARG")");;
    C) [ -d "$OPTARG" ] || die "-C $OPTARG: not a directory"; CWD=$(realpath "$OPTARG");;
    K) KMSG_KEEP=$OPTARG;;
    v) VERBOSE=1;;
    *) usage;;
  esac
done
shift $((OPTIND-1))
[ $# -gt 0 ] || usage
[ -n "$KERNEL" ] || die "-k KERNEL is required (a directory, or 6.1 / 6.12 after scripts/vm-matrix.sh fetched them)"
if [ -d "$KERNEL" ]; then
  KDIR=$(realpath "$KERNEL")
elif [ -d "$CACHE/kernels/$KERNEL" ]; then
  KDIR=$(realpath "$CACHE/kernels/$KERNEL")
else
  die "no kernel '$KERNEL': not a directory, and not in $CACHE/kernels/ (scripts/vm-matrix.sh fetches 6.1 and 6.12)"
fi
for tool in qemu-system-x86_64 modprobe depmod cpio gzip python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/vm-matrix.sh installs what is needed)"
done
[ -x /bin/busybox ] || die "/bin/busybox is missing (apt-get install busybox-static)"
if ldd /bin/busybox >/dev/null 2>&1; then
  die "/bin/busybox is dynamically linked; the initramfs needs busybox-static"
fi

KIMGS=("$KDIR"/boot/vmlinuz-*)
[ -f "${KIMGS[0]}" ] || die "$KDIR has no boot/vmlinuz-*"
KIMG=${KIMGS[0]}
KVER=${KIMG##*/vmlinuz-}
MODDIR=$KDIR/lib/modules/$KVER
[ -d "$MODDIR" ] || die "$KDIR has no lib/modules/$KVER"
[ -f "$MODDIR/modules.dep" ] || depmod -b "$KDIR" "$KVER"

mkdir -p "$CACHE"
# one VM at a time on this machine (TCG takes whole CPUs), whatever the cache:
# wait for the others
mkdir -p /run/lock
exec 9>/run/lock/lockscope-vm.lock
if ! flock -n 9; then
  echo "run-in-vm: another VM is running; waiting for it" >&2
  w0=$SECONDS
  flock 9
  echo "run-in-vm: waited $((SECONDS - w0)) s for another VM" >&2
fi

# ---- initramfs (cached per kernel; rebuilt when this script changes) --------
INITRD=$CACHE/initrd-$KVER.cpio.gz
if [ ! -s "$INITRD" ] || [ "$0" -nt "$INITRD" ]; then
  B=$(mktemp -d "$CACHE/build.XXXXXX")
  mkdir -p "$B"/{bin,proc,sys,dev,lower,rw,newroot,modules}
  cp /bin/busybox "$B/bin/busybox"
  : > "$B/modules.list"
  # the modules 9p root and the overlay need, in load order; Debian
  # compresses modules since 6.x (.ko.xz / .ko.zst): busybox insmod wants .ko
  mods=$(for m in 9p 9pnet_virtio virtio_pci overlay; do
      modprobe --show-depends -d "$KDIR" -S "$KVER" "$m" \
        || die "modprobe cannot resolve module $m for $KVER"
    done | awk '$1=="insmod"{print $2}' | awk '!seen[$0]++')
  for ko in $mods; do
    base=${ko##*/}
    case $ko in
      *.ko.xz)  base=${base%.xz};  xz -dc "$ko" > "$B/modules/$base";;
      *.ko.zst) base=${base%.zst}; zstd -qdc "$ko" > "$B/modules/$base";;
      *.ko.gz)  base=${base%.gz};  gzip -dc "$ko" > "$B/modules/$base";;
      *)        cp "$ko" "$B/modules/$base";;
    esac
    echo "$base" >> "$B/modules.list"
  done
  cat > "$B/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -1; }
die() { echo "vm-init: $*" > /dev/ttyS0; echo "VM_RC=125" > /dev/ttyS1; poweroff -f; }
for m in $(cat /modules.list); do insmod /modules/$m || die "insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || die "9p root mount failed"
mount -t tmpfs -o mode=0755 rw /rw; mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work,xino=off overlay /newroot \
  || die "overlay mount failed"
R=/newroot
mount -t proc proc $R/proc; mount -t sysfs sys $R/sys; mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm; mount -t devpts devpts $R/dev/pts; mount -t tmpfs shm $R/dev/shm
mount -t tmpfs run $R/run
mount -t tracefs tracefs $R/sys/kernel/tracing; mount -t debugfs debugfs $R/sys/kernel/debug
mount -t bpf bpf $R/sys/fs/bpf; mount -t securityfs securityfs $R/sys/kernel/security
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
i=0
for d in $(arg vm_rw | tr ',' ' '); do
  mkdir -p "$R$d"; mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 "rw$i" "$R$d" || die "rw mount $d failed"
  i=$((i+1))
done
# the .deb's modules as /lib/modules/$(uname -r) in the guest
KMOD=$(arg vm_moddir); mkdir -p $R/lib/modules; ln -sfn "$KMOD" "$R/lib/modules/$(uname -r)"
ip link set lo up 2>/dev/null
hostname lockscope-vm
stty -F /dev/ttyS0 -opost 2>/dev/null
chroot $R /bin/sh "$(arg vm_cmd)" < /dev/null > /dev/ttyS0 2>&1
rc=$?
sync
echo "VM_RC=$rc" > /dev/ttyS1
poweroff -f
INIT
  chmod +x "$B/init"
  (cd "$B" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"; rm -rf "$B"
fi

# ---- uncompressed vmlinux (cached): QEMU boots it through the PVH entry
# point, which skips the in-guest decompressor (xz costs ~4 s under TCG) ----
VMLINUX=$CACHE/vmlinux-$KVER
if [ ! -s "$VMLINUX" ]; then
  python3 - "$KIMG" "$VMLINUX.tmp" <<'PY' && mv "$VMLINUX.tmp" "$VMLINUX" || rm -f "$VMLINUX.tmp"
import sys, subprocess
d = open(sys.argv[1], 'rb').read()
for magic, cmd in [(b'\xfd7zXZ\x00', ['xz', '-dc']), (b'\x02\x21\x4c\x18', ['lz4', '-dc']),
                   (b'\x28\xb5\x2f\xfd', ['zstd', '-dc']), (b'\x1f\x8b\x08', ['gzip', '-dc'])]:
    off = d.find(magic)
    if off < 0:
        continue
    try:
        r = subprocess.run(cmd, input=d[off:], capture_output=True)
    except FileNotFoundError:
        continue
    if r.stdout[:4] == b'\x7fELF':
        open(sys.argv[2], 'wb').write(r.stdout); sys.exit(0)
sys.exit(1)
PY
fi
[ -s "$VMLINUX" ] && BOOTIMG=$VMLINUX || BOOTIMG=$KIMG

# ---- the command, as a script the guest reads through the read-only share --
mkdir -p "$CACHE/runs"
RUN=$(mktemp -d "$CACHE/runs/run.XXXXXX")
chmod 755 "$RUN"
trap 'rm -rf "$RUN"' EXIT
{
  echo "export PATH=${PATH@Q} HOME=/root TERM=dumb LANG=C.UTF-8"
  for v in RUST_BACKTRACE RUST_LOG RUST_TEST_THREADS RUST_TEST_NOCAPTURE CARGO_HOME RUSTUP_HOME; do
    if [ -n "${!v:-}" ]; then echo "export $v=${!v@Q}"; fi
  done
  for v in $(compgen -e | grep '^LOCKSCOPE_' || true); do
    echo "export $v=${!v@Q}"
  done
  echo "cd ${CWD@Q} || exit 126"
  printf 'exec'; printf ' %q' "$@"; echo
} > "$RUN/cmd.sh"

QARGS=(-nodefaults -no-user-config -display none -no-reboot
  -m "$MEM" -smp "$CPUS" -accel tcg,thread=single -cpu max
  -chardev stdio,id=con,signal=off -serial chardev:con
  -serial "file:$RUN/rc"
  -serial "file:$RUN/kmsg"
  -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
  -kernel "$BOOTIMG" -initrd "$INITRD")
RWLIST=
for i in "${!RWDIRS[@]}"; do
  QARGS+=(-fsdev "local,id=rw$i,path=${RWDIRS[$i]},security_model=none,multidevs=remap"
          -device "virtio-9p-pci,fsdev=rw$i,mount_tag=rw$i")
  RWLIST+="${RWLIST:+,}${RWDIRS[$i]}"
done
# the kernel's console is ttyS2, apart from the command's output (ttyS0)
if [ "$VERBOSE" = 1 ]; then KLOG="loglevel=7"; else KLOG="quiet loglevel=5"; fi
APPEND="console=ttyS2 $KLOG panic=-1 oops=panic tsc=reliable vm_cmd=$RUN/cmd.sh vm_moddir=$MODDIR"
[ -n "$RWLIST" ] && APPEND+=" vm_rw=$RWLIST"

set +e
timeout --foreground --kill-after=10 "$TMO" qemu-system-x86_64 "${QARGS[@]}" -append "$APPEND" </dev/null
qrc=$?
set -e
if [ -n "$KMSG_KEEP" ]; then cp "$RUN/kmsg" "$KMSG_KEEP" 2>/dev/null || true; fi
if [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; then echo "run-in-vm: timeout after ${TMO}s ($KVER)" >&2; exit 124; fi
rc=$(sed -n 's/^VM_RC=\([0-9]*\).*/\1/p' "$RUN/rc" 2>/dev/null | tail -1)
if [ -z "$rc" ]; then
  echo "run-in-vm: the VM ($KVER) exited (qemu status $qrc) without reporting a status; its kernel log ends:" >&2
  tail -n 60 "$RUN/kmsg" | tr -d '\r' | sed 's/^/run-in-vm: | /' >&2
  exit 125
fi
exit "$rc"
