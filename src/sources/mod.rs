//! Sources: each is a set of BPF programs plus the Rust that loads them,
//! reads their in-kernel aggregation into model [`Record`]s, and decodes
//! their ring-buffer records into model [`Event`]s. Everything above this
//! module (grouping, tables, JSON, trace lines) is source-agnostic.
//!
//! Adding a source: a `src/bpf/<name>.bpf.c` (structs in `lockscope.h`), a
//! module here implementing [`Source`], and one line in [`REGISTRY`].

pub mod applocks;
pub mod common;
pub mod contention;
pub mod futex;
pub mod kmutex;
pub mod lifecycle;
mod locknames;
pub mod mmaplock;
pub mod picknext;
pub mod probes;
pub mod sched;
pub mod ulock;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};

pub use self::lifecycle::Life;
use crate::ksyms::{Ksyms, caller_index};
use crate::model::{Event, Record};
pub use crate::pod::{Pod, as_bytes, comm_str, from_bytes};
pub use crate::status::{ProgStats, SourceStatus};
use crate::status::{Usage, usage};

/// Which processes and threads to trace; empty means system-wide.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    pub pids: Vec<u32>,
    pub tids: Vec<u32>,
    pub comm: Option<String>,
    pub cgroup: Option<PathBuf>,
    /// Children forked by targeted processes become targets (`run`).
    pub follow_forks: bool,
}

impl Targets {
    /// Processes named on the command line (`-p`, `-t`, `run`): what a
    /// per-process source (uprobes) can stay inside.
    pub fn names_processes(&self) -> bool {
        !self.pids.is_empty() || !self.tids.is_empty()
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.pids.is_empty() {
            let p: Vec<String> = self.pids.iter().map(u32::to_string).collect();
            parts.push(format!("pid {}", p.join(",")));
        }
        if !self.tids.is_empty() {
            let t: Vec<String> = self.tids.iter().map(u32::to_string).collect();
            parts.push(format!("tid {}", t.join(",")));
        }
        if let Some(c) = &self.comm {
            parts.push(format!("comm {c}"));
        }
        if let Some(c) = &self.cgroup {
            parts.push(format!("cgroup {}", c.display()));
        }
        if parts.is_empty() {
            "system-wide".into()
        } else {
            parts.join(", ")
        }
    }
}

/// When a caller stack is taken (`enum ls_caller_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CallerMode {
    /// Never: no callers, cheapest
    None = 0,
    /// At the first wait of each lock/thread/kind; later waits inherit it
    First = 1,
    /// At every wait: exact attribution, ~1.5 us more per wait
    Every = 2,
}

/// When full stacks are taken (`--stacks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackOptions {
    /// Waits at least this long get their stacks.
    pub threshold_ns: u64,
    /// And 1 in N of the shorter ones (0: none).
    pub sample: u32,
    /// Sources that see holds also take the stacks of every acquisition
    /// and add the hold that follows to them (same threshold and sample).
    pub holds: bool,
    /// Buckets of `full_stacks` (`--stack-storage-size`).
    pub storage: u32,
}

/// Settings shared by every source; defaults live here only.
#[derive(Clone, Debug)]
pub struct Options {
    pub targets: Targets,
    /// Send every completed operation through the ring buffer (stream mode).
    pub emit_events: bool,
    /// When to take the short stack that names the caller.
    pub caller: CallerMode,
    /// Capacity of each in-kernel aggregation map (keys).
    pub max_entries: u32,
    /// Ring buffer size in bytes (power of two).
    pub ringbuf_bytes: u32,
    /// Use only this backend ("tp_btf", "tracepoint", "fentry", "kprobe")
    /// instead of trying them in order of preference.
    pub backend: Option<String>,
    /// Full kernel + user stacks of waits, when asked for.
    pub stacks: Option<StackOptions>,
    /// Lock kinds kernel-contention leaves out because a function-probe
    /// source measures them (set by [`start`], so no wait counts twice).
    pub skip_contention: SkipContention,
}

/// Sleeping kernel locks measured by function probes instead of by the
/// contention tracepoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipContention {
    pub mutex: bool,
    pub rwsem: bool,
    /// The waiting task's own mmap_lock (mmap-lock measures it, holds too).
    pub mmap: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            targets: Targets::default(),
            emit_events: false,
            caller: CallerMode::First,
            max_entries: 16384,
            ringbuf_bytes: 8 << 20,
            backend: None,
            stacks: None,
            skip_contention: SkipContention::default(),
        }
    }
}

/// Reads `bpf_prog_info` of a loaded program.
pub fn prog_stats(name: &str, fd: std::os::fd::BorrowedFd<'_>) -> Result<ProgStats> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: `info` is a valid, writable bpf_prog_info of `len` bytes and
    // the fd is a live BPF program descriptor borrowed for this call.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc != 0 {
        bail!(
            "bpf_prog_get_info_by_fd({name}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(ProgStats {
        name: name.to_string(),
        id: info.id,
        run_cnt: info.run_cnt,
        run_time_ns: info.run_time_ns,
        recursion_misses: info.recursion_misses,
    })
}

/// When no tracefs is mounted, gives lockscope a private mount namespace
/// with tracefs mounted in it: classic tracepoints can then be attached,
/// nothing changes outside this process (and the commands it runs), and
/// concurrent lockscopes cannot unmount it under each other. Must run while
/// the process has one thread (unshare(CLONE_NEWNS) requires it); returns
/// whether tracefs is available afterwards.
pub fn private_tracefs() -> bool {
    if tracefs_mounted() {
        return true;
    }
    // SAFETY: plain syscalls with valid NUL-terminated strings; a failure
    // leaves the process in its original namespace.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return false;
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return false;
        }
        let fs = c"tracefs";
        let dst = c"/sys/kernel/tracing";
        libc::mount(fs.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) == 0
    }
}

/// Mounts tracefs at /sys/kernel/tracing for the life of the guard when no
/// tracefs is mounted (libbpf finds classic tracepoint ids there). The mount
/// is only needed while attaching, so the guard unmounts it again.
pub struct TracefsGuard {
    mounted: bool,
}

impl TracefsGuard {
    pub fn ensure() -> TracefsGuard {
        if tracefs_mounted() {
            return TracefsGuard { mounted: false };
        }
        let ok = (|| {
            let src = std::ffi::CString::new("tracefs").ok()?;
            let dst = std::ffi::CString::new("/sys/kernel/tracing").ok()?;
            // SAFETY: all pointers are valid NUL-terminated strings that
            // outlive the call; data may be NULL for tracefs.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    src.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            (rc == 0).then_some(())
        })();
        TracefsGuard {
            mounted: ok.is_some(),
        }
    }
}

impl Drop for TracefsGuard {
    fn drop(&mut self) {
        if self.mounted
            && let Ok(dst) = std::ffi::CString::new("/sys/kernel/tracing")
        {
            // SAFETY: dst is a valid NUL-terminated path; MNT_DETACH lets
            // attached tracepoints (which hold no tracefs files) stay.
            unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

pub fn tracefs_mounted() -> bool {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists())
}

/// Whether tracefs lists `cat:name` (only meaningful when it is mounted).
pub fn tracepoint_exists(cat: &str, name: &str) -> bool {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|base| std::path::Path::new(&format!("{base}/{cat}/{name}")).exists())
}

/// Names, symbols and cgroup paths, resolved off the event path and cached.
pub struct Symbolizer {
    ksyms: crate::ksyms::LazyKsyms,
    /// User stacks, normalised while processes live.
    pub user: crate::ustack::UserStacks,
    callers: std::collections::HashMap<(&'static str, i32), Option<String>>,
    cgroups: crate::cgroup::CgroupNames,
    /// Pipe and inode locks named by their file (loaded on first use).
    pub files: crate::filelocks::FileLocks,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Symbolizer {
        Symbolizer {
            ksyms: crate::ksyms::LazyKsyms::spawn(),
            user: Default::default(),
            callers: Default::default(),
            cgroups: Default::default(),
            files: {
                let mut f = crate::filelocks::FileLocks::default();
                // as root only: unprivileged uses (replays) need no BPF
                // SAFETY: geteuid has no preconditions and cannot fail.
                if unsafe { libc::geteuid() } == 0 {
                    f.preload();
                }
                f
            },
        }
    }

    /// The name of a kernel lock at `addr` that the kernel did not name
    /// itself (`mmap_lock of ...`): its data symbol, else the file it
    /// protects (a pipe's mutex, an inode's locks), else the slab cache
    /// it lives in (`slab`, empty when unknown).
    pub fn kernel_lock_name(&mut self, addr: u64, slab: &str) -> Option<String> {
        self.ksyms
            .get()
            .data_name(addr)
            .or_else(|| self.files.name(addr))
            .or_else(|| (!slab.is_empty()).then(|| format!("in {slab} (slab)")))
    }

    /// Asks for the file name of the kernel lock at `addr`, which a thread
    /// of process `pid` waited for, unless a data symbol names it
    /// ([`crate::filelocks::FileLocks::want`]; the symbols are not waited
    /// for: while they load, every lock is wanted).
    pub fn want_kernel_lock_name(&mut self, addr: u64, pid: u32) {
        if self
            .ksyms
            .try_get()
            .is_none_or(|k| k.data_name(addr).is_none())
        {
            self.files.want(addr, pid);
        }
    }

    /// The caller in a kernel stack (innermost first), cached per
    /// (source, stack id); `frames` is asked only on a cache miss.
    pub fn kernel_caller(
        &mut self,
        source: &'static str,
        stack_id: i32,
        frames: impl FnOnce() -> Option<Vec<u64>>,
    ) -> Option<String> {
        if stack_id < 0 {
            return None;
        }
        if let Some(c) = self.callers.get(&(source, stack_id)) {
            return c.clone();
        }
        let c = frames().and_then(|frames| {
            // return addresses: a call that ends a function returns into the
            // next symbol, so resolve the call instruction (addr - 1)
            let names: Vec<String> = frames
                .iter()
                .map(|&a| self.ksyms.get().name(a.saturating_sub(1)))
                .collect();
            caller_index(&names).map(|i| names[i].clone())
        });
        self.callers.insert((source, stack_id), c.clone());
        c
    }

    /// The kernel's symbols (waits for /proc/kallsyms to be read).
    pub fn ksyms(&self) -> &Ksyms {
        self.ksyms.get()
    }

    pub fn cgroup(&mut self, id: u64) -> Option<String> {
        self.cgroups.path(id)
    }

    /// Kernel frames (innermost first) from the lock's caller outwards:
    /// tracing and lock-implementation frames are trimmed.
    pub fn kernel_frames(&self, addrs: &[u64]) -> Vec<String> {
        let names: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                self.ksyms
                    .get()
                    .name(if i == 0 { a } else { a.saturating_sub(1) })
            })
            .collect();
        match caller_index(&names) {
            Some(i) => names[i..].to_vec(),
            None => names,
        }
    }
}

/// A loaded and attached source.
pub trait Source {
    /// Stable name, the `source` field of rows and events.
    fn name(&self) -> &'static str;
    /// The loaded object and its links ([`lifecycle::Loaded`]): the lifecycle
    /// methods below default to it.
    fn life(&self) -> &dyn Life;
    /// A note for the report header (why a preferred backend failed, ...).
    fn note(&self) -> Option<String> {
        None
    }
    /// Backend in use and any note for the report header.
    fn status(&self) -> SourceStatus {
        SourceStatus {
            name: self.name().into(),
            backend: Some(self.life().backend().into()),
            available: true,
            reason: self.note(),
        }
    }
    /// Adds a process to the source's pid filter after start (`run`).
    fn add_pid(&self, pid: u32) -> Result<()> {
        self.life().add_pid(pid)
    }
    /// Ends the window: every program of the source returns at once from
    /// now on (`ls_stopped`, src/bpf/window.bpf.h). Cheap; call for every
    /// source before reading any of them.
    fn stop(&self) {
        stop_object(self.life().object())
    }
    /// Opens the window: the programs count from now on (they load with
    /// the window closed).
    fn begin(&self) {
        set_window(self.life().object(), true)
    }
    /// Hands over the source's links; dropping them detaches the programs
    /// (slow for perf-event links: see [`close_links`]).
    fn take_links(&self) -> Vec<libbpf_rs::Link> {
        self.life().take_links()
    }
    /// Snapshot of the in-kernel aggregation.
    fn records(&self, sym: &mut Symbolizer) -> Result<Vec<Record>>;
    /// Called about once a second while tracing: e.g. normalise new user
    /// stacks while their processes still live.
    fn tick(&self, _sym: &mut Symbolizer) {}
    /// Who held locks while others waited, where the source knows it.
    fn holders(&self) -> Result<Vec<crate::model::HolderRow>> {
        Ok(Vec::new())
    }
    /// Loss counters (the kernel's recursion misses included).
    fn lost(&self) -> Result<BTreeMap<String, u64>> {
        self.life().lost()
    }
    /// Run statistics of the attached programs.
    fn prog_stats(&self) -> Vec<ProgStats> {
        self.life().prog_stats()
    }
    /// The ring buffer of stream mode, if the source has one.
    fn event_map(&self) -> Option<&dyn libbpf_rs::MapCore> {
        self.life().event_map()
    }
    /// Decodes one ring-buffer record.
    fn decode_event(&self, data: &[u8], sym: &mut Symbolizer) -> Option<Event>;
}

/// What a source costs, and where: the class `doctor`, `--help` and the
/// README give each source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cost {
    /// Its programs run only when a kernel lock is contended.
    PerContention,
    /// On every acquisition and release of the locks it covers, contended
    /// or not.
    PerLockOp,
    /// On every context switch (or scheduler pick) on the host.
    PerSwitch,
}

impl Cost {
    pub fn describe(self) -> &'static str {
        match self {
            Cost::PerContention => "per contention",
            Cost::PerLockOp => "per lock operation",
            Cost::PerSwitch => "per context switch",
        }
    }
}

/// When a source runs without `--source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultOn {
    /// Always: it costs nothing on an uncontended path.
    Always,
    /// Only for processes named on the command line (`-p`, `-t`, `run`):
    /// its cost stays inside them.
    ForProcesses,
    /// Only when named: it costs something on a path every process takes.
    Never,
}

/// What a source attaches to: what `doctor` checks for it, and how it
/// picks a backend.
#[derive(Clone, Copy, Debug)]
pub enum Attach {
    /// Tracepoints `(category, name)`: as tp_btf where `btf` and the
    /// kernel allow it, else as classic tracepoints where `classic`; the
    /// map types it cannot work without (doctor's check names).
    Tracepoints {
        tracepoints: &'static [(&'static str, &'static str)],
        btf: bool,
        classic: bool,
        maps: &'static [&'static str],
    },
    /// Kernel function probes: fentry/fexit, else kprobe/kretprobe.
    FunctionProbes,
    /// Uprobes on the target's libc.
    Uprobes,
}

/// Where a source's waits still come from when it cannot run.
#[derive(Clone, Copy, Debug)]
pub struct Fallback {
    /// The source that still measures them.
    pub source: &'static str,
    /// What is lost when only that source runs.
    pub lost: &'static str,
}

/// A source lockscope can start: everything the rest of lockscope knows of
/// it (`start`, `doctor`, `--help`, the cost notes) is here.
pub struct SourceInfo {
    pub name: &'static str,
    pub about: &'static str,
    pub start: fn(&Options) -> Result<Box<dyn Source>>,
    pub cost: Cost,
    /// Whether it starts when no `--source` is given.
    pub default: DefaultOn,
    /// What it attaches to.
    pub attach: Attach,
    /// What is lost when it cannot run (and no fallback runs).
    pub lost: &'static str,
    /// Where its waits come from when it cannot run.
    pub fallback: Option<Fallback>,
    /// The waits kernel-contention leaves to it while it runs (so that no
    /// wait is counted twice); when it cannot start, kernel-contention is
    /// started for these kinds if it is not running anyway.
    pub takes: &'static [Taken],
    /// When its cost reaches every process on the host: what it runs on.
    pub host_wide: Option<&'static str>,
    /// The `source` values of its rows, when they differ from its name.
    pub rows: &'static [&'static str],
}

/// Waits kernel-contention leaves to a richer source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// Kernel mutexes.
    Mutex,
    /// Kernel rw-semaphores, both sides.
    Rwsem,
    /// The waiting task's own mmap_lock.
    OwnMmapLock,
}

impl Taken {
    fn skip(self, skip: &mut SkipContention) {
        match self {
            Taken::Mutex => skip.mutex = true,
            Taken::Rwsem => skip.rwsem = true,
            Taken::OwnMmapLock => skip.mmap = true,
        }
    }

    /// The contention kinds kernel-contention reports for it when it
    /// stands in (none for the mmap_lock: that is an rwsem it counts
    /// anyway unless skipped).
    fn kinds(self) -> &'static [crate::model::LockKind] {
        use crate::model::LockKind::*;
        match self {
            Taken::Mutex => &[Mutex],
            Taken::Rwsem => &[RwsemRead, RwsemWrite],
            Taken::OwnMmapLock => &[],
        }
    }
}

impl SourceInfo {
    /// Started without `--source` for these targets?
    pub fn default_for(&self, targets: &Targets) -> bool {
        match self.default {
            DefaultOn::Always => true,
            DefaultOn::ForProcesses => targets.names_processes(),
            DefaultOn::Never => false,
        }
    }

    /// Whether kernel-contention stands in for it when it cannot start.
    fn stood_in_for(&self) -> bool {
        self.takes.iter().any(|t| !t.kinds().is_empty())
    }
}

const LOCK_TPS: &[(&str, &str)] = &[("lock", "contention_begin"), ("lock", "contention_end")];

/// Every source, in report order: the lock sources, then the scheduler's.
pub const REGISTRY: &[SourceInfo] = &[
    SourceInfo {
        name: contention::SOURCE,
        about: "kernel lock contention (lock:contention_begin/end): waits on every kernel lock",
        start: contention::start,
        cost: Cost::PerContention,
        default: DefaultOn::Always,
        attach: Attach::Tracepoints {
            tracepoints: LOCK_TPS,
            btf: true,
            classic: true,
            maps: &["task_storage", "stack_map", "ringbuf"],
        },
        lost: "kernel lock waits are not measured",
        fallback: None,
        takes: &[],
        host_wide: None,
        rows: &[],
    },
    SourceInfo {
        name: kmutex::SOURCE_MUTEX,
        about: "kernel mutex waits AND holds, failed trylocks, holders (fentry, else kprobe)",
        start: kmutex::start_mutex,
        cost: Cost::PerLockOp,
        default: DefaultOn::Never,
        attach: Attach::FunctionProbes,
        lost: "kernel mutex waits and hold times are lost",
        fallback: Some(Fallback {
            source: contention::SOURCE,
            lost: "mutex waits are still measured by kernel-contention; hold times are lost",
        }),
        takes: &[Taken::Mutex],
        host_wide: Some("runs on every acquisition and release of every kernel lock of its kind"),
        rows: &[],
    },
    SourceInfo {
        name: kmutex::SOURCE_RWSEM,
        about: "kernel rwsem read/write waits AND holds, failed trylocks (fentry, else kprobe)",
        start: kmutex::start_rwsem,
        cost: Cost::PerLockOp,
        default: DefaultOn::Never,
        attach: Attach::FunctionProbes,
        lost: "kernel rwsem waits and hold times are lost",
        fallback: Some(Fallback {
            source: contention::SOURCE,
            lost: "rwsem waits are still measured by kernel-contention; hold times are lost",
        }),
        takes: &[Taken::Rwsem],
        host_wide: Some("runs on every acquisition and release of every kernel lock of its kind"),
        rows: &[],
    },
    SourceInfo {
        name: mmaplock::SOURCE,
        about: "mmap_lock waits, holds and failed trylocks (mmap_lock tracepoints)",
        start: mmaplock::start,
        cost: Cost::PerLockOp,
        default: DefaultOn::Never,
        attach: Attach::Tracepoints {
            tracepoints: &[
                ("mmap_lock", "mmap_lock_start_locking"),
                ("mmap_lock", "mmap_lock_acquire_returned"),
                ("mmap_lock", "mmap_lock_released"),
            ],
            btf: true,
            classic: true,
            maps: &[],
        },
        lost: "mmap_lock waits and holds are not measured",
        fallback: None,
        takes: &[Taken::OwnMmapLock],
        host_wide: Some("runs on every mmap_lock acquisition and release of every process"),
        rows: &[],
    },
    SourceInfo {
        name: ulock::SOURCE,
        about: "pthread mutex/rwlock/spinlock waits AND holds, failures, holders (uprobes on libc)",
        start: ulock::start,
        cost: Cost::PerLockOp,
        default: DefaultOn::Never,
        attach: Attach::Uprobes,
        lost: "pthread lock waits, holds and trylocks are lost",
        fallback: Some(Fallback {
            source: futex::SOURCE,
            lost: "pthread lock holds and trylocks are lost; contended waits still come from futex",
        }),
        takes: &[],
        host_wide: Some(
            "puts uprobes on the system's libc: every pthread lock and unlock of every \
             process on the host traps into the kernel (microseconds each); -p PID or \
             run -- CMD keeps them inside those processes",
        ),
        rows: &[ulock::ROW_MUTEX, ulock::ROW_RWLOCK, ulock::ROW_SPIN],
    },
    SourceInfo {
        name: futex::SOURCE,
        about: "futex waits (sched_switch/sched_waking; --backend tracepoint: the futex \
                syscall tracepoints): pthread mutex/rwlock contention with its releaser, \
                condvars, Rust std, Go, Java",
        start: futex::start,
        cost: Cost::PerSwitch,
        default: DefaultOn::ForProcesses,
        attach: Attach::Tracepoints {
            // tp_btf: the scheduler's view; classic: the syscall
            // tracepoints (checked when the source starts)
            tracepoints: &[("sched", "sched_switch"), ("sched", "sched_waking")],
            btf: true,
            classic: true,
            maps: &["task_storage"],
        },
        lost: "futex waits (pthread mutex/rwlock contention and its releaser, condvars, Rust \
               std, Go, Java locks) are not measured",
        fallback: None,
        takes: &[],
        // measured: BENCHMARKS.md "futex backends"
        host_wide: Some(
            "runs on every context switch and wakeup on the host (with --backend tracepoint: \
             every syscall of every process takes the kernel's syscall-tracing path, about \
             50 ns more each)",
        ),
        rows: &[futex::ROW_MUTEX, futex::ROW_RWLOCK],
    },
    SourceInfo {
        name: applocks::SOURCE,
        about: "waits on applications' own locks, named by them, from their USDT probes \
                (PostgreSQL LWLocks and heavyweight locks, deadlocks)",
        start: applocks::start,
        cost: Cost::PerContention,
        default: DefaultOn::ForProcesses,
        attach: Attach::Uprobes,
        lost: "application lock waits (PostgreSQL LWLocks, heavyweight locks) are not named",
        fallback: None,
        takes: &[],
        host_wide: None,
        rows: &[],
    },
    SourceInfo {
        name: sched::SOURCE,
        about: "run-queue latency per thread and CPU (sched_wakeup/sched_switch)",
        start: sched::start,
        cost: Cost::PerSwitch,
        default: DefaultOn::Never,
        attach: Attach::Tracepoints {
            tracepoints: &[
                ("sched", "sched_switch"),
                ("sched", "sched_wakeup"),
                ("sched", "sched_wakeup_new"),
            ],
            // the classic sched tracepoints pass the woken task's pid, not
            // the task itself
            btf: true,
            classic: false,
            maps: &[],
        },
        lost: "run-queue latency and off-CPU time are not measured",
        fallback: None,
        takes: &[],
        host_wide: Some("runs on every wakeup and context switch on the host"),
        rows: &[],
    },
    SourceInfo {
        name: picknext::SOURCE,
        about: "time in pick_next_task_fair per CPU and task (fentry, else kprobe)",
        start: picknext::start,
        cost: Cost::PerSwitch,
        default: DefaultOn::Never,
        attach: Attach::FunctionProbes,
        lost: "pick_next_task_fair latency is lost; run-queue latency still comes from sched",
        fallback: None,
        takes: &[],
        host_wide: Some("runs on every scheduler pick on the host"),
        rows: &[],
    },
];

/// The tracepoint every source that follows forks uses where tp_btf is
/// not available.
pub const FORK_TRACEPOINT: (&str, &str) = ("sched", "sched_process_fork");

/// Every tracepoint the sources use, in registry order, once each.
pub fn tracepoints() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for info in REGISTRY {
        if let Attach::Tracepoints { tracepoints, .. } = info.attach {
            for &tp in tracepoints {
                if !out.contains(&tp) {
                    out.push(tp);
                }
            }
        }
    }
    if !out.contains(&FORK_TRACEPOINT) {
        out.push(FORK_TRACEPOINT);
    }
    out
}

/// The one-line note for a source named where its cost reaches every
/// process on the host (None when it does not).
pub fn cost_note(info: &SourceInfo, targets: &Targets) -> Option<String> {
    // per-process uprobes stay inside the named processes
    if matches!(info.attach, Attach::Uprobes) && targets.names_processes() {
        return None;
    }
    let what = info.host_wide?;
    Some(format!(
        "lockscope: note: {} ({}) {what}",
        info.name,
        info.cost.describe()
    ))
}

/// The source a row's `source` comes from (user-locks names its rows by
/// lock type: user-mutex, user-rwlock, user-spin; futex its lock rows
/// futex-mutex, futex-rwlock).
pub fn source_of_row(row_source: &str) -> &str {
    REGISTRY
        .iter()
        .find(|s| s.rows.contains(&row_source))
        .map_or(row_source, |s| s.name)
}

/// Names of every registered source.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|s| s.name).collect()
}

/// The started sources, and the status of those that could not start.
pub struct Started {
    pub sources: Vec<Box<dyn Source>>,
    pub failed: Vec<SourceStatus>,
}

/// Starts the chosen sources (all when `chosen` is empty). A source that
/// fails is an error when it was chosen explicitly; otherwise it is
/// reported as unavailable, as long as at least one source runs.
///
/// kernel-mutex and kernel-rwsem start first: when they run,
/// kernel-contention leaves their lock kinds out (no wait counted twice);
/// when they cannot (no fentry, no kprobes), their waits still come from
/// kernel-contention, which is started for just those kinds if it was not
/// chosen, and the status says that hold times are lost and why.
pub fn start(chosen: &[String], opts: &Options) -> Result<Started> {
    for c in chosen {
        if c != "all" && !REGISTRY.iter().any(|s| s.name == c) {
            return Err(usage(format!(
                "unknown source '{c}' (sources: {}; or all)",
                names().join(", ")
            )));
        }
    }
    let all = chosen.iter().any(|c| c == "all");
    let explicit = !chosen.is_empty() && !all;
    let wanted = |name: &str| {
        if explicit {
            chosen.iter().any(|c| c == name)
        } else {
            all || REGISTRY
                .iter()
                .any(|s| s.name == name && s.default_for(&opts.targets))
        }
    };
    if explicit || all {
        // named where the cost reaches every process: say so, once
        for info in REGISTRY.iter().filter(|s| wanted(s.name)) {
            if let Some(note) = cost_note(info, &opts.targets) {
                eprintln!("{note}");
            }
        }
    }
    let mut opts = opts.clone();
    let mut started: Vec<(usize, Box<dyn Source>)> = Vec::new();
    let mut failed: Vec<(usize, SourceStatus)> = Vec::new();
    let mut errors = Vec::new();
    // a source failed for the user's reason (a typed `Usage`): so does all
    let mut usage_error = false;
    let mut fallback_kinds: Vec<crate::model::LockKind> = Vec::new();
    let mut fallback_names: Vec<&str> = Vec::new();
    // the sources kernel-contention leaves waits to start first
    let order = (0..REGISTRY.len())
        .filter(|&i| !REGISTRY[i].takes.is_empty())
        .chain((0..REGISTRY.len()).filter(|&i| REGISTRY[i].takes.is_empty()));
    for i in order {
        let info = &REGISTRY[i];
        if !wanted(info.name) {
            continue;
        }
        match (info.start)(&opts) {
            Ok(s) => {
                for t in info.takes {
                    t.skip(&mut opts.skip_contention);
                }
                started.push((i, s));
            }
            Err(e) if explicit && !info.stood_in_for() => return Err(e.context(info.name)),
            Err(e) => {
                let reason = if !info.stood_in_for() {
                    format!("{e:#}")
                } else {
                    let waits = if wanted(contention::SOURCE) {
                        "its waits come from kernel-contention"
                    } else {
                        for t in info.takes {
                            fallback_kinds.extend_from_slice(t.kinds());
                        }
                        fallback_names.push(info.name);
                        "its waits come from kernel-contention, started for them"
                    };
                    format!("hold times unavailable on this kernel: {e:#} — {waits}")
                };
                usage_error |= e.downcast_ref::<Usage>().is_some();
                errors.push(format!("{}: {e:#}", info.name));
                failed.push((
                    i,
                    SourceStatus {
                        name: info.name.to_string(),
                        backend: None,
                        available: false,
                        reason: Some(reason),
                    },
                ));
            }
        }
    }
    if !fallback_kinds.is_empty() {
        let i = REGISTRY
            .iter()
            .position(|s| s.name == contention::SOURCE)
            .unwrap_or(0);
        let inner = contention::start(&opts).map_err(|e| {
            let msg = format!("{}: and kernel-contention: {e:#}", errors.join("; "));
            if usage_error || e.downcast_ref::<Usage>().is_some() {
                usage(msg)
            } else {
                anyhow!(msg)
            }
        })?;
        started.push((
            i,
            Box::new(KindsOnly {
                inner,
                kinds: fallback_kinds,
                standing_in_for: fallback_names.join(", "),
            }),
        ));
    }
    started.sort_by_key(|(i, _)| *i);
    failed.sort_by_key(|(i, _)| *i);
    let out = Started {
        sources: started.into_iter().map(|(_, s)| s).collect(),
        failed: failed.into_iter().map(|(_, s)| s).collect(),
    };
    if out.sources.is_empty() {
        let msg = format!("no source could start: {}", errors.join("; "));
        return Err(if usage_error {
            usage(msg)
        } else {
            anyhow!(msg)
        });
    }
    Ok(out)
}

/// A source restricted to some lock kinds: kernel-contention standing in
/// for a function-probe source this kernel cannot run.
struct KindsOnly {
    inner: Box<dyn Source>,
    kinds: Vec<crate::model::LockKind>,
    standing_in_for: String,
}

impl Source for KindsOnly {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn life(&self) -> &dyn Life {
        self.inner.life()
    }
    fn status(&self) -> SourceStatus {
        let mut s = self.inner.status();
        let kinds: Vec<String> = self.kinds.iter().map(|k| k.name()).collect();
        s.reason = Some(format!(
            "only {} waits, for {} (no hold times)",
            kinds.join("/"),
            self.standing_in_for
        ));
        s
    }
    fn add_pid(&self, pid: u32) -> Result<()> {
        self.inner.add_pid(pid)
    }
    fn stop(&self) {
        self.inner.stop()
    }
    fn begin(&self) {
        self.inner.begin()
    }
    fn take_links(&self) -> Vec<libbpf_rs::Link> {
        self.inner.take_links()
    }
    fn records(&self, sym: &mut Symbolizer) -> Result<Vec<Record>> {
        let mut r = self.inner.records(sym)?;
        r.retain(|r| self.kinds.contains(&r.kind));
        Ok(r)
    }
    fn tick(&self, sym: &mut Symbolizer) {
        self.inner.tick(sym)
    }
    fn lost(&self) -> Result<BTreeMap<String, u64>> {
        self.inner.lost()
    }
    fn prog_stats(&self) -> Vec<ProgStats> {
        self.inner.prog_stats()
    }
    fn event_map(&self) -> Option<&dyn libbpf_rs::MapCore> {
        self.inner.event_map()
    }
    fn decode_event(&self, data: &[u8], sym: &mut Symbolizer) -> Option<Event> {
        self.inner
            .decode_event(data, sym)
            .filter(|e| self.kinds.contains(&e.kind))
    }
}

/// Sets `ls_stopped` in a loaded object (src/bpf/window.bpf.h): the one
/// map whose name ends in ".stop". Objects without it are left alone.
pub fn stop_object(obj: &libbpf_rs::Object) {
    set_window(obj, false);
}

/// Benchmarks only: with `LOCKSCOPE_BENCH_FLOOR=1` in the environment the
/// window never opens. Every program stays attached and returns at its
/// first statement (`ls_stopped`), so a run costs the workload what any
/// tool hooked to the same points pays at least (the kernel's dispatch to
/// the programs, a uprobe's trap) and nothing of lockscope's own logic:
/// the floor that `scripts/bench_pg.py --floor` measures lockscope above.
pub fn bench_floor() -> bool {
    std::env::var_os("LOCKSCOPE_BENCH_FLOOR").is_some_and(|v| v == "1")
}

/// Opens (`ls_stopped` = 0) or closes (1) the window of a loaded object
/// (kept closed under [`bench_floor`]).
pub fn set_window(obj: &libbpf_rs::Object, open: bool) {
    use libbpf_rs::MapCore;
    let open = open && !bench_floor();
    let value = u32::from(!open);
    for map in obj.maps() {
        if map.name().to_string_lossy().ends_with(".stop") {
            // a failed write to close leaves the programs counting until
            // detached, as before the flag existed; to open, the source
            // would count nothing, so it is reported
            if let Err(e) = map.update(as_bytes(&0u32), as_bytes(&value), libbpf_rs::MapFlags::ANY)
                && open
            {
                eprintln!(
                    "lockscope: cannot start {}: {e}",
                    obj.name().unwrap_or_default().to_string_lossy()
                );
            }
        }
    }
}

/// Drops links, detaching their programs, from several threads at once.
pub fn close_links(links: Vec<libbpf_rs::Link>) {
    const THREADS: usize = 32;
    if links.len() <= 1 {
        drop(links);
        return;
    }
    let per = links.len().div_ceil(THREADS);
    let mut links = links;
    std::thread::scope(|s| {
        while !links.is_empty() {
            let chunk: Vec<libbpf_rs::Link> = links.drain(..per.min(links.len())).collect();
            s.spawn(move || drop(chunk));
        }
    });
}

/// Detaches `links` without making lockscope wait for it.
///
/// Releasing a perf-event link (classic tracepoints, uprobes) waits for RCU
/// grace periods under a kernel-wide mutex: ~100 ms per link on these
/// machines, one after another, seconds for a few dozen uprobes. Call this
/// only after [`stop_object`] ended every program's window (they return at
/// once until detached). A forked closer process inherits the links' file
/// descriptors, closes everything else, and waits until lockscope has
/// exited (end of file on a pipe only lockscope writes to); its own exit
/// then releases the links. lockscope's exit drops only references that are
/// not the last, which is cheap. If lockscope is killed, the closer still
/// sees the end of file; if both are killed, the kernel releases the links
/// with the last descriptor as always. Falls back to [`close_links`] when
/// fork fails.
pub fn release_links(links: Vec<libbpf_rs::Link>) {
    use std::os::fd::AsFd;
    if links.is_empty() {
        return;
    }
    let mut keep: Vec<i32> = links.iter().map(|l| l.as_fd().as_raw_fd()).collect();
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        close_links(links);
        return;
    }
    let (rd, wr) = (fds[0], fds[1]);
    keep.push(rd);
    keep.sort_unstable();
    // SAFETY: the child only makes async-signal-safe system calls (setsid,
    // close_range, close, read, _exit) on values computed before the fork,
    // as required in a child of a multi-threaded process.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above; the child never returns from this block.
        unsafe {
            libc::setsid(); // no Ctrl-C from lockscope's terminal
            let mut lo: u32 = 0;
            for &fd in &keep {
                if (fd as u32) > lo {
                    libc::syscall(libc::SYS_close_range, lo, fd as u32 - 1, 0u32);
                }
                lo = fd as u32 + 1;
            }
            libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0u32);
            let mut b = 0u8;
            while libc::read(rd, (&mut b as *mut u8).cast(), 1) != 0
                && *libc::__errno_location() == libc::EINTR
            {}
            libc::_exit(0);
        }
    }
    // SAFETY: closing our own read end, which only the child needs.
    unsafe { libc::close(rd) };
    if pid < 0 {
        // SAFETY: closing the write end we own; nobody else uses it.
        unsafe { libc::close(wr) };
        close_links(links);
        return;
    }
    // The write end stays open (close-on-exec) until lockscope exits; our
    // copies of the links close then too, after the closer took its own.
    std::mem::forget(links);
}
