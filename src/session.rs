//! Load, configure, attach and read the kernel-contention BPF programs.
//!
//! Backend choice happens here at run time by trying: tp_btf first, the
//! classic tracepoint second. Everything attached is owned by the session
//! (BPF links are file descriptors), so it is detached when the session is
//! dropped or the process dies for any reason: nothing is pinned.

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject};

use crate::bpf::contention::types::{ls_agg_key, ls_agg_val, ls_event};
use crate::bpf::contention::{ContentionSkel, ContentionSkelBuilder, OpenContentionSkel};
use crate::ksyms::{Ksyms, caller_index};
use crate::model::{HIST_SLOTS, LockKind, Log2Hist, Record, Stats};

/// Source name of this module's rows.
pub const SOURCE: &str = "kernel-contention";

// The Rust model and the BPF header must agree on the histogram layout.
const _: () = assert!(
    std::mem::size_of::<[u64; HIST_SLOTS]>()
        == std::mem::size_of::<ls_agg_val>() - std::mem::offset_of!(ls_agg_val, hist)
);

/// Marker for the generated plain-data types that are safe to view as bytes.
///
/// # Safety
/// Implementors must be `repr(C)`, contain no pointers, references or
/// padding, and accept every bit pattern.
unsafe trait Pod: Copy {}
// SAFETY: generated from lockscope.h, repr(C), integer fields only, padded
// by hand to a multiple of 8 bytes (no implicit padding).
unsafe impl Pod for ls_agg_key {}
// SAFETY: as above; integers and an i8 array only.
unsafe impl Pod for ls_agg_val {}
// SAFETY: as above.
unsafe impl Pod for ls_event {}
// SAFETY: a primitive integer.
unsafe impl Pod for u64 {}
// SAFETY: a primitive integer.
unsafe impl Pod for u32 {}

fn from_bytes<T: Pod>(b: &[u8]) -> Option<T> {
    if b.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked above, T is Pod (any bit pattern is
    // valid) and read_unaligned tolerates any alignment of the buffer.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

fn as_bytes<T: Pod>(t: &T) -> &[u8] {
    // SAFETY: T is Pod (no padding, so every byte is initialised) and the
    // slice covers exactly the object borrowed for the slice's lifetime.
    unsafe { std::slice::from_raw_parts((t as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

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

/// When the caller stack is taken (`enum ls_caller_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CallerMode {
    /// Never: no callers, cheapest
    None = 0,
    /// At the first wait of each lock/thread/kind; later waits inherit it
    First = 1,
    /// At every wait: exact attribution, ~1.5 us more per wait
    Every = 2,
}

/// How the kernel side is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    TpBtf,
    Tracepoint,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::TpBtf => "tp_btf",
            Backend::Tracepoint => "tracepoint",
        }
    }
}

/// Settings of a contention session; defaults live here only.
#[derive(Clone, Debug)]
pub struct Options {
    pub targets: Targets,
    /// Send every completed wait through the ring buffer (stream mode).
    pub emit_events: bool,
    /// When to take the short kernel stack that names the caller.
    pub caller: CallerMode,
    /// Capacity of the in-kernel aggregation map (keys).
    pub max_entries: u32,
    /// Ring buffer size in bytes (power of two).
    pub ringbuf_bytes: u32,
    /// Use only this backend instead of trying tp_btf then tracepoint.
    pub backend: Option<Backend>,
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
        }
    }
}

/// Kernel run statistics of one BPF program.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProgStats {
    pub name: String,
    pub id: u32,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    pub recursion_misses: u64,
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

/// Names of the `lost` counters, in the order of `enum ls_lost`.
pub const LOST_NAMES: [&str; 8] = [
    "map_full",
    "end_without_begin",
    "stack_failed",
    "ringbuf_dropped",
    "nesting_overflow",
    "task_storage_failed",
    "begin_in_bpf",
    "stale_wait",
];

/// A loaded and attached kernel-contention source.
pub struct Contention {
    skel: ContentionSkel<'static>,
    links: std::cell::RefCell<Vec<Link>>,
    pub backend: Backend,
    /// Why the preferred backend was not used, if it was not.
    pub fallback_reason: Option<String>,
}

/// Mounts tracefs at /sys/kernel/tracing for the life of the guard when no
/// tracefs is mounted (libbpf finds classic tracepoint ids there). The mount
/// is only needed while attaching, so the guard unmounts it again.
pub struct TracefsGuard {
    mounted: bool,
}

impl TracefsGuard {
    pub fn ensure() -> TracefsGuard {
        let have = [
            "/sys/kernel/tracing/events",
            "/sys/kernel/debug/tracing/events",
        ]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
        if have {
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

fn tracepoint_exists(cat: &str, name: &str) -> bool {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|base| std::path::Path::new(&format!("{base}/{cat}/{name}")).exists())
}

impl Contention {
    /// Opens, configures, loads and attaches. Tries tp_btf, then the
    /// classic tracepoint; the error says why each failed.
    pub fn start(opts: &Options) -> Result<Contention> {
        let _tracefs = TracefsGuard::ensure();
        let tracefs_known = std::path::Path::new("/sys/kernel/tracing/events").exists()
            || std::path::Path::new("/sys/kernel/debug/tracing/events").exists();
        if tracefs_known && !tracepoint_exists("lock", "contention_begin") {
            bail!(
                "this kernel has no lock:contention_begin tracepoint (added in Linux 5.19); \
                 kernel lock contention cannot be traced here. Run `lockscope doctor` for \
                 what still works"
            );
        }
        let order: Vec<Backend> = match opts.backend {
            Some(b) => vec![b],
            None => vec![Backend::TpBtf, Backend::Tracepoint],
        };
        let mut errors = Vec::new();
        for backend in order {
            match Self::start_with(opts, backend) {
                Ok(mut c) => {
                    if !errors.is_empty() {
                        c.fallback_reason = Some(errors.join("; "));
                    }
                    return Ok(c);
                }
                Err(e) => errors.push(format!("{}: {e:#}", backend.name())),
            }
        }
        Err(anyhow!(
            "could not attach kernel-contention: {}",
            errors.join("; ")
        ))
    }

    fn start_with(opts: &Options, backend: Backend) -> Result<Contention> {
        crate::libbpf_log::install();
        crate::libbpf_log::take();
        // The open object must outlive the skeleton, which lives as long as
        // the session; one small allocation per session is leaked for it.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let builder = ContentionSkelBuilder::default();
        let mut open: OpenContentionSkel<'static> =
            builder.open(storage).context("open BPF object")?;

        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| anyhow!("BPF object has no .rodata"))?;
        rodata.self_tgid = std::process::id();
        rodata.filter_pid = !opts.targets.pids.is_empty();
        rodata.filter_tid = !opts.targets.tids.is_empty();
        rodata.follow_forks = opts.targets.follow_forks;
        rodata.emit_events = opts.emit_events;
        rodata.caller_mode = opts.caller as u32;
        rodata.filter_cgroup = opts.targets.cgroup.is_some();
        if let Some(comm) = &opts.targets.comm {
            rodata.filter_comm = true;
            for (dst, src) in rodata.target_comm.iter_mut().zip(comm.bytes().take(15)) {
                *dst = src as i8;
            }
        }
        open.maps.agg.set_max_entries(opts.max_entries)?;
        let rb = opts.ringbuf_bytes.next_power_of_two().max(4096);
        open.maps
            .events
            .set_max_entries(if opts.emit_events { rb } else { 4096 })?;

        let btf = backend == Backend::TpBtf;
        let follow = opts.targets.follow_forks;
        open.progs.contention_begin_btf.set_autoload(btf);
        open.progs.contention_end_btf.set_autoload(btf);
        open.progs.follow_fork_btf.set_autoload(btf && follow);
        open.progs.contention_begin_tp.set_autoload(!btf);
        open.progs.contention_end_tp.set_autoload(!btf);
        open.progs.follow_fork_tp.set_autoload(!btf && follow);

        let skel = open
            .load()
            .map_err(|e| anyhow!("load BPF programs: {e} ({})", crate::libbpf_log::summary()))?;
        for pid in &opts.targets.pids {
            skel.maps
                .target_pids
                .update(as_bytes(pid), &[1u8], MapFlags::ANY)
                .context("fill target_pids")?;
        }
        for tid in &opts.targets.tids {
            skel.maps
                .target_tids
                .update(as_bytes(tid), &[1u8], MapFlags::ANY)
                .context("fill target_tids")?;
        }
        if let Some(path) = &opts.targets.cgroup {
            let dir = std::fs::File::open(path)
                .with_context(|| format!("open cgroup {}", path.display()))?;
            let fd = dir.as_raw_fd() as u32;
            skel.maps
                .target_cgroup
                .update(as_bytes(&0u32), as_bytes(&fd), MapFlags::ANY)
                .with_context(|| format!("{} is not a cgroup v2 directory", path.display()))?;
        }

        let mut links = Vec::new();
        let progs = &skel.progs;
        let to_attach = if btf {
            [
                &progs.contention_begin_btf,
                &progs.contention_end_btf,
                &progs.follow_fork_btf,
            ]
        } else {
            [
                &progs.contention_begin_tp,
                &progs.contention_end_tp,
                &progs.follow_fork_tp,
            ]
        };
        for (i, p) in to_attach.into_iter().enumerate() {
            if i == 2 && !follow {
                continue;
            }
            links.push(
                p.attach()
                    .with_context(|| format!("attach {}", p.name().to_string_lossy()))?,
            );
        }
        Ok(Contention {
            skel,
            links: std::cell::RefCell::new(links),
            backend,
            fallback_reason: None,
        })
    }

    /// Adds a process to the pid filter after start (used by `run`).
    pub fn add_pid(&self, pid: u32) -> Result<()> {
        self.skel
            .maps
            .target_pids
            .update(as_bytes(&pid), &[1u8], MapFlags::ANY)
            .context("add pid to target_pids")
    }

    /// Detaches every program now (also happens on drop).
    pub fn detach(&self) {
        self.links.borrow_mut().clear();
    }

    /// Per-program kernel statistics of the attached programs.
    pub fn prog_stats(&self) -> Vec<ProgStats> {
        let p = &self.skel.progs;
        let all = [
            &p.contention_begin_btf,
            &p.contention_end_btf,
            &p.follow_fork_btf,
            &p.contention_begin_tp,
            &p.contention_end_tp,
            &p.follow_fork_tp,
        ];
        all.into_iter()
            .filter(|prog| prog.as_fd().as_raw_fd() >= 0 && prog.autoload())
            .filter_map(|prog| prog_stats(&prog.name().to_string_lossy(), prog.as_fd()).ok())
            .collect()
    }

    /// Every loss counter, including the kernel's BPF re-entry misses.
    pub fn lost(&self) -> Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for (i, name) in LOST_NAMES.iter().enumerate() {
            let key = i as u32;
            let per_cpu = self
                .skel
                .maps
                .lost
                .lookup_percpu(as_bytes(&key), MapFlags::ANY)
                .context("read lost counters")?
                .unwrap_or_default();
            let sum: u64 = per_cpu.iter().filter_map(|b| from_bytes::<u64>(b)).sum();
            out.insert((*name).to_string(), sum);
        }
        let misses: u64 = self.prog_stats().iter().map(|s| s.recursion_misses).sum();
        out.insert("bpf_recursion_misses".into(), misses);
        Ok(out)
    }

    /// The caller stack behind a stack id (innermost first).
    pub fn stack(&self, id: i32) -> Option<Vec<u64>> {
        if id < 0 {
            return None;
        }
        let key = id as u32;
        let bytes = self
            .skel
            .maps
            .stacks
            .lookup(as_bytes(&key), MapFlags::ANY)
            .ok()??;
        Some(
            bytes
                .chunks_exact(8)
                .filter_map(from_bytes::<u64>)
                .take_while(|&a| a != 0)
                .collect(),
        )
    }

    /// Snapshot of the in-kernel aggregation.
    pub fn raw_entries(&self) -> Result<Vec<(ls_agg_key, ls_agg_val)>> {
        let map = &self.skel.maps.agg;
        let mut out = Vec::new();
        for k in map.keys() {
            let Some(v) = map
                .lookup(&k, MapFlags::ANY)
                .context("read aggregation map")?
            else {
                continue; // deleted between keys() and lookup()
            };
            if let (Some(k), Some(v)) = (from_bytes::<ls_agg_key>(&k), from_bytes::<ls_agg_val>(&v))
            {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// Builds a ring buffer that hands each event to `f`.
    pub fn events<'a, F>(&'a self, mut f: F) -> Result<libbpf_rs::RingBuffer<'a>>
    where
        F: FnMut(&ls_event) + 'a,
    {
        let mut b = libbpf_rs::RingBufferBuilder::new();
        b.add(&self.skel.maps.events, move |data: &[u8]| {
            if let Some(e) = from_bytes::<ls_event>(data) {
                f(&e);
            }
            0
        })?;
        Ok(b.build()?)
    }
}

/// Resolves stack ids to callers, once per id.
pub struct Symbolizer {
    pub ksyms: Ksyms,
    callers: std::collections::HashMap<i32, Option<String>>,
    cgroups: crate::cgroup::CgroupNames,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Symbolizer {
        Symbolizer {
            ksyms: Ksyms::load(),
            callers: Default::default(),
            cgroups: Default::default(),
        }
    }

    pub fn caller(&mut self, src: &Contention, stack_id: i32) -> Option<String> {
        if let Some(c) = self.callers.get(&stack_id) {
            return c.clone();
        }
        let c = src.stack(stack_id).and_then(|frames| {
            // return addresses: a call that ends a function returns into the
            // next symbol, so resolve the call instruction (addr - 1)
            let names: Vec<String> = frames
                .iter()
                .map(|&a| self.ksyms.name(a.saturating_sub(1)))
                .collect();
            caller_index(&names).map(|i| names[i].clone())
        });
        self.callers.insert(stack_id, c.clone());
        c
    }

    pub fn cgroup(&mut self, id: u64) -> Option<String> {
        self.cgroups.path(id)
    }
}

pub fn comm_str(c: &[i8]) -> String {
    let bytes: Vec<u8> = c
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Name of a lock where this source knows it without symbols.
pub fn lock_name(lock_class: u32, pid: u32, comm: &str) -> Option<String> {
    (lock_class == 1).then(|| format!("mmap_lock of {pid} ({comm})"))
}

/// Turns a kernel aggregation entry into a model record.
pub fn to_record(src: &Contention, sym: &mut Symbolizer, k: &ls_agg_key, v: &ls_agg_val) -> Record {
    let comm = comm_str(&v.comm);
    let mut hist = Log2Hist::default();
    hist.slots.copy_from_slice(&v.hist);
    Record {
        source: SOURCE,
        kind: LockKind::from_contention_flags(k.flags),
        lock: k.lock,
        lock_name: lock_name(v.lock_class, k.pid, &comm_str(&v.pcomm)),
        caller: sym.caller(
            src,
            if k.stack_id >= 0 {
                k.stack_id
            } else {
                v.stack_id
            },
        ),
        pid: k.pid,
        tid: k.tid,
        comm,
        cgroup: sym.cgroup(v.cgroup_id),
        aborted: v.aborted,
        spun: v.spun,
        slept: v.slept,
        wait: Stats {
            count: v.count,
            total_ns: v.total_ns,
            min_ns: if v.count == 0 { 0 } else { v.min_ns },
            max_ns: v.max_ns,
            hist,
        },
        hold: None,
    }
}
