//! Load, configure, attach and read the kernel-contention BPF programs.
//!
//! Backend choice happens here at run time by trying: tp_btf first, the
//! classic tracepoint second. Everything attached is owned by the session
//! (BPF links are file descriptors), so it is detached when the session is
//! dropped or the process dies for any reason: nothing is pinned.

use std::collections::{BTreeMap, HashMap};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result, anyhow, bail};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject};

use super::{
    Options, Pod, ProgStats, Source, Symbolizer, TracefsGuard, as_bytes, comm_str, from_bytes,
    prog_stats, tracefs_mounted, tracepoint_exists,
};
use crate::bpf::contention::types::{ls_agg_key, ls_agg_val, ls_event, ls_stack_key, ls_stack_val};
use crate::bpf::contention::{ContentionSkel, ContentionSkelBuilder, OpenContentionSkel};
use crate::model::{Event, HIST_SLOTS, LockKind, Log2Hist, Record, StackSample, Stats, WaitSplit};
use crate::status::{SourceStatus, usage};

/// Source name of this module's rows.
pub const SOURCE: &str = "kernel-contention";

// The Rust model and the BPF header must agree on the histogram layout.
const _: () = assert!(
    std::mem::size_of::<[u64; HIST_SLOTS]>()
        == std::mem::size_of::<ls_agg_val>() - std::mem::offset_of!(ls_agg_val, hist)
);

// SAFETY: generated from lockscope.h, repr(C), integer fields only, padded
// by hand to a multiple of 8 bytes (no implicit padding).
unsafe impl Pod for ls_agg_key {}
// SAFETY: as above; integers and i8 arrays only.
unsafe impl Pod for ls_agg_val {}
// SAFETY: as above.
unsafe impl Pod for ls_event {}
// SAFETY: as above.
unsafe impl Pod for ls_stack_key {}
// SAFETY: as above.
unsafe impl Pod for ls_stack_val {}

/// How the kernel side is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    TpBtf,
    Tracepoint,
    /// Empty programs on the same tracepoints (benchmarks: the floor of any
    /// tool attached there); records nothing.
    Floor,
    /// A clock read at begin and end and nothing else (benchmarks: the
    /// floor of any tool that times waits); records nothing.
    ClockFloor,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::TpBtf => "tp_btf",
            Backend::Tracepoint => "tracepoint",
            Backend::Floor => "tp_btf-floor",
            Backend::ClockFloor => "tp_btf-clock",
        }
    }
}

/// Names of the `lost` counters, in the order of `enum ls_lost`.
pub const LOST_NAMES: [&str; 9] = [
    "map_full",
    "end_without_begin",
    "stack_failed",
    "ringbuf_dropped",
    "nesting_overflow",
    "task_storage_failed",
    "begin_in_bpf",
    "stale_wait",
    "stack_map_full",
];

/// A loaded and attached kernel-contention source.
pub struct Contention {
    skel: ContentionSkel<'static>,
    links: std::cell::RefCell<Vec<Link>>,
    pub backend: Backend,
    /// Why the preferred backend was not used, if it was not.
    pub fallback_reason: Option<String>,
}

impl Contention {
    /// Opens, configures, loads and attaches. Tries tp_btf, then the
    /// classic tracepoint; the error says why each failed.
    pub fn start(opts: &Options) -> Result<Contention> {
        let _tracefs = TracefsGuard::ensure();
        let tracefs_known = tracefs_mounted();
        if tracefs_known && !tracepoint_exists("lock", "contention_begin") {
            // the user's to know: a usage error (exit status 2)
            return Err(usage(
                "this kernel has no lock:contention_begin tracepoint (added in Linux 5.19); \
                 kernel lock contention cannot be traced here. Run `lockscope doctor` for \
                 what still works",
            ));
        }
        let order: Vec<Backend> = match opts.backend.as_deref() {
            Some("tp_btf") => vec![Backend::TpBtf],
            Some("tracepoint") => vec![Backend::Tracepoint],
            Some("tp_btf-floor") => vec![Backend::Floor],
            Some("tp_btf-clock") => vec![Backend::ClockFloor],
            Some(other) => bail!(
                "kernel-contention has no backend '{other}' (tp_btf, tracepoint; \
                 for benchmarks: tp_btf-floor attaches empty programs, tp_btf-clock \
                 programs that only read the clock)"
            ),
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
        rodata.skip_mutex = opts.skip_contention.mutex;
        rodata.skip_rwsem = opts.skip_contention.rwsem;
        rodata.skip_mmap = opts.skip_contention.mmap;
        rodata.agg_slots = opts.max_entries;
        rodata.filter_cgroup = opts.targets.cgroup.is_some();
        if let Some(comm) = &opts.targets.comm {
            rodata.filter_comm = true;
            for (dst, src) in rodata.target_comm.iter_mut().zip(comm.bytes().take(15)) {
                *dst = src as i8;
            }
        }
        open.maps.agg.set_max_entries(opts.max_entries)?;
        open.maps.agg_index.set_max_entries(opts.max_entries)?;
        if let Some(st) = opts.stacks {
            rodata.stacks_on = true;
            rodata.stack_threshold_ns = st.threshold_ns;
            rodata.stack_sample = st.sample;
            open.maps.full_stacks.set_max_entries(16384)?;
            open.maps.stack_agg.set_max_entries(opts.max_entries)?;
        }
        let rb = opts.ringbuf_bytes.next_power_of_two().max(4096);
        open.maps
            .events
            .set_max_entries(if opts.emit_events { rb } else { 4096 })?;

        let clock = backend == Backend::ClockFloor;
        let floor = backend == Backend::Floor || clock;
        let btf = backend == Backend::TpBtf;
        let follow = opts.targets.follow_forks && !floor;
        open.progs.contention_begin_btf.set_autoload(btf);
        open.progs.contention_end_btf.set_autoload(btf);
        open.progs.follow_fork_btf.set_autoload(btf && follow);
        open.progs.contention_begin_tp.set_autoload(!btf && !floor);
        open.progs.contention_end_tp.set_autoload(!btf && !floor);
        open.progs
            .follow_fork_tp
            .set_autoload(!btf && !floor && follow);
        open.progs
            .contention_begin_empty
            .set_autoload(floor && !clock);
        open.progs
            .contention_end_empty
            .set_autoload(floor && !clock);
        open.progs.contention_begin_clock.set_autoload(clock);
        open.progs.contention_end_clock.set_autoload(clock);

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
        let to_attach = if clock {
            [
                &progs.contention_begin_clock,
                &progs.contention_end_clock,
                &progs.follow_fork_btf,
            ]
        } else if floor {
            [
                &progs.contention_begin_empty,
                &progs.contention_end_empty,
                &progs.follow_fork_btf,
            ]
        } else if btf {
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
            &p.contention_begin_empty,
            &p.contention_end_empty,
            &p.contention_begin_clock,
            &p.contention_end_clock,
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

    /// A stack from `full_stacks` (innermost first).
    pub fn full_stack(&self, id: i32) -> Option<Vec<u64>> {
        if id < 0 {
            return None;
        }
        let key = id as u32;
        let bytes = self
            .skel
            .maps
            .full_stacks
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

    /// Snapshot of the `--stacks` aggregation.
    pub fn stack_entries(&self) -> Result<Vec<(ls_stack_key, ls_stack_val)>> {
        let map = &self.skel.maps.stack_agg;
        let mut out = Vec::new();
        for k in map.keys() {
            let Some(v) = map.lookup(&k, MapFlags::ANY).context("read stack map")? else {
                continue;
            };
            if let (Some(k), Some(v)) = (
                from_bytes::<ls_stack_key>(&k),
                from_bytes::<ls_stack_val>(&v),
            ) {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// Stack samples per (lock, tid, flags), symbolised.
    fn stack_samples(&self, sym: &mut Symbolizer) -> Result<StackIndex> {
        let mut out: StackIndex = HashMap::new();
        for (k, v) in self.stack_entries()? {
            let kernel = self
                .full_stack(k.kstack_id)
                .map(|a| sym.kernel_frames(&a))
                .unwrap_or_default();
            if k.ustack_id >= 0
                && !sym.user.has(k.pid, k.ustack_id)
                && let Some(addrs) = self.full_stack(k.ustack_id)
            {
                sym.user.normalize(k.pid, k.ustack_id, &addrs);
            }
            let user = if k.ustack_id >= 0 {
                sym.user.frames(k.pid, k.ustack_id)
            } else {
                Vec::new()
            };
            out.entry((k.lock, k.tid, k.flags))
                .or_default()
                .push(StackSample {
                    kernel,
                    user,
                    count: v.count,
                    total_ns: v.total_ns,
                    max_ns: v.max_ns,
                    ..Default::default()
                });
        }
        Ok(out)
    }

    /// Snapshot of the in-kernel aggregation.
    pub fn raw_entries(&self) -> Result<Vec<(ls_agg_key, ls_agg_val)>> {
        let mut out = Vec::new();
        self.for_each_agg(|k, v| out.push((k, v)))?;
        Ok(out)
    }

    /// Calls `f` with every aggregate and its key, as read: the keys in
    /// `agg_index`, each with the slot of the `agg` array it names (a slot
    /// is filled before its key is added, and never moves).
    fn for_each_agg(&self, mut f: impl FnMut(ls_agg_key, ls_agg_val)) -> Result<()> {
        let agg = &self.skel.maps.agg;
        super::common::for_each_entry(&self.skel.maps.agg_index, |k: ls_agg_key, idx: u32| {
            if let Ok(Some(v)) = agg.lookup(as_bytes(&idx), MapFlags::ANY)
                && let Some(v) = from_bytes::<ls_agg_val>(&v)
            {
                f(k, v);
            }
        })
    }
}

/// Starts the source ([`super::SourceInfo::start`]).
pub fn start(opts: &Options) -> Result<Box<dyn Source>> {
    Ok(Box::new(Contention::start(opts)?))
}

impl Source for Contention {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn status(&self) -> SourceStatus {
        SourceStatus {
            name: SOURCE.into(),
            backend: Some(self.backend.name().into()),
            available: true,
            reason: self
                .fallback_reason
                .as_ref()
                .map(|r| format!("preferred backend failed: {r}")),
        }
    }

    fn add_pid(&self, pid: u32) -> Result<()> {
        Contention::add_pid(self, pid)
    }

    fn begin(&self) {
        super::set_window(self.skel.object(), true);
    }

    fn stop(&self) {
        super::stop_object(self.skel.object());
    }

    fn take_links(&self) -> Vec<libbpf_rs::Link> {
        std::mem::take(&mut *self.links.borrow_mut())
    }

    fn records(&self, sym: &mut Symbolizer) -> Result<Vec<Record>> {
        let mut stacks = self.stack_samples(sym)?;
        // entry by entry: no copy of the raw map next to the records
        let mut out = Vec::new();
        self.for_each_agg(|k, v| {
            let mut r = to_record(self, sym, &k, &v);
            r.stacks = stacks.remove(&(k.lock, k.tid, k.flags)).unwrap_or_default();
            out.push(r);
        })?;
        Ok(out)
    }

    fn tick(&self, sym: &mut Symbolizer) {
        // name pipe and inode locks while their files are open
        sym.files.refresh_if_due();
        // normalise new user stacks while their processes still live
        if let Ok(entries) = self.stack_entries() {
            for (k, _) in entries {
                if k.ustack_id >= 0
                    && !sym.user.has(k.pid, k.ustack_id)
                    && let Some(addrs) = self.full_stack(k.ustack_id)
                {
                    sym.user.normalize(k.pid, k.ustack_id, &addrs);
                }
            }
        }
    }

    fn lost(&self) -> Result<BTreeMap<String, u64>> {
        Contention::lost(self)
    }

    fn prog_stats(&self) -> Vec<ProgStats> {
        Contention::prog_stats(self)
    }

    fn event_map(&self) -> Option<&dyn MapCore> {
        Some(&self.skel.maps.events)
    }

    fn decode_event(&self, data: &[u8], sym: &mut Symbolizer) -> Option<Event> {
        let e = from_bytes::<ls_event>(data)?;
        let comm = comm_str(&e.comm);
        Some(Event {
            source: SOURCE,
            kind: LockKind::from_contention_flags(e.flags),
            lock: e.lock,
            lock_name: lock_name(e.lock_class, e.pid, &comm_str(&e.pcomm))
                .or_else(|| sym.kernel_lock_name(e.lock, "")),
            caller: sym.kernel_caller(SOURCE, e.stack_id, || self.stack(e.stack_id)),
            pid: e.pid,
            tid: e.tid,
            comm,
            cgroup: sym.cgroup(e.cgroup_id),
            begin_ns: e.begin_ns,
            end_ns: e.end_ns,
            released_ns: None,
            wait_ns: e.end_ns.saturating_sub(e.begin_ns),
            hold_ns: None,
            aborted: e.ret != 0,
            failed: false,
            ret: e.ret,
            spun: e.mode & 1 != 0,
            slept: e.mode & 2 != 0,
            partial: false,
            holder_tid: None,
            split: Some(WaitSplit::from_offcpu(
                e.end_ns.saturating_sub(e.begin_ns),
                e.offcpu_ns,
                e.runq_ns,
            )),
        })
    }
}

/// Name of a lock where this source knows it without symbols.
pub fn lock_name(lock_class: u32, pid: u32, comm: &str) -> Option<String> {
    (lock_class == 1).then(|| format!("mmap_lock of {pid} ({comm})"))
}

/// Turns a kernel aggregation entry into a model record.
fn to_record(src: &Contention, sym: &mut Symbolizer, k: &ls_agg_key, v: &ls_agg_val) -> Record {
    let comm = comm_str(&v.comm);
    let mut hist = Log2Hist::default();
    hist.slots.copy_from_slice(&v.hist);
    Record {
        source: SOURCE,
        kind: LockKind::from_contention_flags(k.flags),
        lock: k.lock,
        lock_name: lock_name(v.lock_class, k.pid, &comm_str(&v.pcomm))
            .or_else(|| sym.kernel_lock_name(k.lock, &comm_str(&v.slab))),
        caller: {
            let id = if k.stack_id >= 0 {
                k.stack_id
            } else {
                v.stack_id
            };
            sym.kernel_caller(SOURCE, id, || src.stack(id))
        },
        pid: k.pid,
        tid: k.tid,
        comm,
        cgroup: sym.cgroup(v.cgroup_id),
        memcg: None,
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
        acquired: None,
        failed: 0,
        partial: 0,
        split: Some(WaitSplit::from_offcpu(v.total_ns, v.offcpu_ns, v.runq_ns)),
        stacks: Vec::new(),
    }
}

/// Stack samples by (lock, tid, contention flags).
type StackIndex = HashMap<(u64, u32, u32), Vec<StackSample>>;
