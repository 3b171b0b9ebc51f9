//! Load, configure, attach and read the kernel-contention BPF programs.
//!
//! Backend choice happens here at run time by trying: tp_btf first, the
//! classic tracepoint second. Everything attached is owned by the session
//! (BPF links are file descriptors), so it is detached when the session is
//! dropped or the process dies for any reason: nothing is pinned.

use anyhow::{Result, bail};
use libbpf_rs::{MapCore, MapFlags};

use super::common;
use super::lifecycle::{self, Loaded, Plan};
use super::{
    Options, Source, Symbolizer, TracefsGuard, as_bytes, comm_str, from_bytes, tracefs_mounted,
    tracepoint_exists,
};
use crate::bpf::contention::types::{ls_agg_key, ls_agg_val, ls_event, ls_stack_key, ls_stack_val};
use crate::bpf::contention::{ContentionSkel, ContentionSkelBuilder};
use crate::model::{Event, LockKind, Record, WaitSplit};
use crate::status::usage;

/// Source name of this module's rows.
pub const SOURCE: &str = "kernel-contention";

common::assert_hist_layout!(ls_agg_val, hist);
common::bpf_pod!(ls_agg_key, ls_agg_val, ls_event, ls_stack_key, ls_stack_val);

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

/// Starts with the first backend of `order` that works; with it, why the
/// ones before it did not (for the status), or, when none did, every
/// reason.
pub(super) fn first_working<T>(
    source: &str,
    order: Vec<Backend>,
    start: impl FnMut(Backend) -> Result<T>,
) -> Result<(T, Option<String>)> {
    common::first_working(order, |b| b.name(), |_| None, start)
        .map_err(|e| anyhow::anyhow!("could not attach {source}: {e}"))
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
    core: Loaded<ContentionSkel<'static>>,
    /// Why the preferred backend was not used, if it was not.
    fallback_reason: Option<String>,
    /// The lock addresses of the keys seen so far ([`Contention::want_names`]).
    seen: std::cell::RefCell<SeenLocks>,
}

/// What [`Contention::want_names`] has looked at.
#[derive(Default)]
struct SeenLocks {
    /// `agg_next` (keys created) when the keys were last read.
    keys: u32,
    locks: std::collections::HashSet<u64>,
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
        let (mut c, reason) = first_working(SOURCE, order, |b| Self::start_with(opts, b))?;
        c.fallback_reason = reason;
        Ok(c)
    }

    fn start_with(opts: &Options, backend: Backend) -> Result<Contention> {
        let clock = backend == Backend::ClockFloor;
        let floor = backend == Backend::Floor || clock;
        let btf = backend == Backend::TpBtf;
        let follow = opts.targets.follow_forks && !floor;
        let plan = Plan {
            backend: backend.name(),
            load: &|name| match name {
                "contention_begin_btf" | "contention_end_btf" => btf,
                "follow_fork_btf" => btf && follow,
                "contention_begin_tp" | "contention_end_tp" => !btf && !floor,
                "follow_fork_tp" => !btf && !floor && follow,
                "contention_begin_empty" | "contention_end_empty" => floor && !clock,
                "contention_begin_clock" | "contention_end_clock" => clock,
                _ => false,
            },
            sized: &["agg", "agg_index"],
            lost: &LOST_NAMES,
            attach: true,
        };
        let core = lifecycle::load::<ContentionSkelBuilder>(opts, &plan, |open| {
            let rodata = common::target_rodata!(open, opts, emit_events, caller_mode);
            rodata.skip_mutex = opts.skip_contention.mutex;
            rodata.skip_rwsem = opts.skip_contention.rwsem;
            rodata.skip_mmap = opts.skip_contention.mmap;
            rodata.agg_slots = opts.max_entries;
            common::set_stacks_rodata!(&mut *rodata, opts);
            Ok(())
        })?;
        Ok(Contention {
            core,
            fallback_reason: None,
            seen: Default::default(),
        })
    }

    /// The caller stack behind a stack id (innermost first).
    fn stack(&self, id: i32) -> Option<Vec<u64>> {
        let maps = &self.core.skel.maps;
        common::stack_in(&maps.stacks, &maps.stacks_spill, id)
    }

    /// Asks `sym` for the names of the locks of the keys created since the
    /// last call (pipe and inode locks are named by their files while they
    /// are open): nothing when no key was created (`agg_next`, read from
    /// the mapped .bss: no system call), else the keys are read in
    /// batches (a file closed soon after its lock was waited for is named
    /// only if it is listed before: no delay here). A lock in a slab cache that holds no
    /// inode nor pipe (a task's, a socket's) needs no file listing.
    fn want_names(&self, sym: &mut Symbolizer) {
        let Some(bss) = self.core.skel.maps.bss_data.as_deref() else {
            return;
        };
        // SAFETY: a valid, aligned u32 of the mapped .bss, which the BPF
        // programs update: read it once, as it is.
        let next = unsafe { std::ptr::read_volatile(&bss.agg_next) };
        let mut seen = self.seen.borrow_mut();
        if next == seen.keys {
            return;
        }
        let maps = &self.core.skel.maps;
        let mut new: Vec<(u64, u32, u32)> = Vec::new();
        let mut read = 0usize;
        if let Ok(batch) = maps
            .agg_index
            .lookup_batch(1024, MapFlags::ANY, MapFlags::ANY)
        {
            for (k, v) in batch {
                read += 1;
                if let (Some(k), Some(idx)) = (from_bytes::<ls_agg_key>(&k), from_bytes::<u32>(&v))
                    && seen.locks.insert(k.lock)
                {
                    new.push((k.lock, k.pid, idx));
                }
            }
        }
        if read == 0 {
            // no batch operations (before Linux 5.6): key by key
            let _ = common::for_each_entry(&maps.agg_index, |k: ls_agg_key, idx: u32| {
                read += 1;
                if seen.locks.insert(k.lock) {
                    new.push((k.lock, k.pid, idx));
                }
            });
        }
        // a key takes its slot (agg_next) before it is in `agg_index`: one
        // not there yet is read at the next tick
        seen.keys = next.min(u32::try_from(read).unwrap_or(u32::MAX));
        for (lock, pid, idx) in new {
            let slab = maps
                .agg
                .lookup(as_bytes(&idx), MapFlags::ANY)
                .ok()
                .flatten()
                .and_then(|v| from_bytes::<ls_agg_val>(&v))
                .map(|v| comm_str(&v.slab))
                .unwrap_or_default();
            if may_be_a_files_lock(&slab) {
                sym.want_kernel_lock_name(lock, pid);
            }
        }
    }

    /// Calls `f` with every aggregate and its key, as read: the keys in
    /// `agg_index`, each with the slot of the `agg` array it names (a slot
    /// is filled before its key is added, and never moves).
    fn for_each_agg(&self, mut f: impl FnMut(ls_agg_key, ls_agg_val)) -> Result<()> {
        let maps = &self.core.skel.maps;
        common::for_each_entry(&maps.agg_index, |k: ls_agg_key, idx: u32| {
            if let Ok(Some(v)) = maps.agg.lookup(as_bytes(&idx), MapFlags::ANY)
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
    common::source_name_and_life!();

    fn note(&self) -> Option<String> {
        self.fallback_reason
            .as_ref()
            .map(|r| format!("preferred backend failed: {r}"))
    }

    fn records(&self, sym: &mut Symbolizer) -> Result<Vec<Record>> {
        let maps = &self.core.skel.maps;

        // entry by entry: no copy of the raw map next to the records
        let mut out = Vec::new();
        let mut keys = Vec::new();
        self.for_each_agg(|k, v| {
            out.push(to_record(sym, &k, &v, |id| self.stack(id)));
            keys.push((k.lock, k.tid, k.flags));
        })?;
        // a key's stack samples go to its first record (several records
        // share a key with --caller every)
        common::stack_maps!(maps).attach(sym, &mut out, |i, _| keys[i], |f| f, |_, _| false)?;
        Ok(out)
    }

    fn tick(&self, sym: &mut Symbolizer) {
        // name pipe and inode locks while their files are open: the files
        // are listed when new locks need a name
        self.want_names(sym);
        sym.files.refresh_if_wanted();
        common::stack_maps!(self.core.skel.maps).normalize_new(sym);
    }

    fn decode_event(&self, data: &[u8], sym: &mut Symbolizer) -> Option<Event> {
        let e = from_bytes::<ls_event>(data)?;
        Some(to_event(sym, &e, |id| self.stack(id)))
    }
}

/// Whether a lock in slab cache `slab` (empty: unknown, or no slab) may
/// be a file's: an inode's (in an inode cache; a socket's holds no named
/// file) or a pipe's (kmalloc'd).
fn may_be_a_files_lock(slab: &str) -> bool {
    slab.is_empty()
        || slab.starts_with("kmalloc")
        || (slab.contains("inode") && !slab.starts_with("sock"))
}

/// Name of a lock where this source knows it without symbols.
pub fn lock_name(lock_class: u32, pid: u32, comm: &str) -> Option<String> {
    (lock_class == 1).then(|| format!("mmap_lock of {pid} ({comm})"))
}

/// One stream record as a model event; `stack` reads a caller stack.
fn to_event(
    sym: &mut Symbolizer,
    e: &ls_event,
    stack: impl FnOnce(i32) -> Option<Vec<u64>>,
) -> Event {
    let kind = LockKind::from_contention_flags(e.flags);
    Event {
        lock_name: lock_name(e.lock_class, e.pid, &comm_str(&e.pcomm))
            .or_else(|| sym.kernel_lock_name(e.lock, "")),
        caller: sym.kernel_caller(SOURCE, e.stack_id, || stack(e.stack_id)),
        cgroup: sym.cgroup(e.cgroup_id),
        begin_ns: e.begin_ns,
        end_ns: e.end_ns,
        wait_ns: e.end_ns.saturating_sub(e.begin_ns),
        aborted: e.ret != 0,
        ret: e.ret,
        spun: e.mode & 1 != 0,
        slept: e.mode & 2 != 0,
        split: Some(WaitSplit::from_offcpu(
            e.end_ns.saturating_sub(e.begin_ns),
            e.offcpu_ns,
            e.runq_ns,
        )),
        ..Event::new(SOURCE, kind, e.lock, e.pid, e.tid, comm_str(&e.comm))
    }
}

/// Turns a kernel aggregation entry into a model record; `stack` reads a
/// caller stack.
fn to_record(
    sym: &mut Symbolizer,
    k: &ls_agg_key,
    v: &ls_agg_val,
    stack: impl FnOnce(i32) -> Option<Vec<u64>>,
) -> Record {
    let kind = LockKind::from_contention_flags(k.flags);
    let id = if k.stack_id >= 0 {
        k.stack_id
    } else {
        v.stack_id
    };
    Record {
        lock_name: lock_name(v.lock_class, k.pid, &comm_str(&v.pcomm))
            .or_else(|| sym.kernel_lock_name(k.lock, &comm_str(&v.slab))),
        caller: sym.kernel_caller(SOURCE, id, || stack(id)),
        cgroup: sym.cgroup(v.cgroup_id),
        aborted: v.aborted,
        spun: v.spun,
        slept: v.slept,
        wait: common::wait_stats!(v),
        split: Some(WaitSplit::from_offcpu(v.total_ns, v.offcpu_ns, v.runq_ns)),
        ..Record::new(SOURCE, kind, k.lock, k.pid, k.tid, comm_str(&v.comm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_inode_pipe_and_unknown_slabs_may_hold_a_files_lock() {
        for slab in [
            "",
            "ext4_inode_cache",
            "shmem_inode_cache",
            "kmalloc-cg-192",
        ] {
            assert!(may_be_a_files_lock(slab), "{slab}");
        }
        for slab in [
            "sock_inode_cache",
            "task_struct",
            "signal_cache",
            "pool_workqueue",
        ] {
            assert!(!may_be_a_files_lock(slab), "{slab}");
        }
    }

    use crate::sources::common::c_chars as comm;

    #[test]
    fn an_aggregate_decodes_into_a_record() {
        let mut sym = Symbolizer::new();
        let k = ls_agg_key {
            lock: 0x1000,
            pid: 7,
            tid: 8,
            flags: 0x20, // LCB_F_MUTEX (+ LCB_F_SPIN dropped)
            stack_id: -1,
        };
        let mut v = ls_agg_val {
            count: 3,
            total_ns: 600,
            min_ns: 100,
            max_ns: 300,
            offcpu_ns: 400,
            runq_ns: 100,
            lock_class: 1,
            stack_id: -1,
            comm: comm("worker"),
            pcomm: comm("db"),
            ..Default::default()
        };
        v.hist[7] = 3;
        let mut asked = false;
        let r = to_record(&mut sym, &k, &v, |_| {
            asked = true;
            None
        });
        assert!(!asked, "no stack is read for a key without one");
        assert_eq!(r.source, SOURCE);
        assert_eq!(r.kind, LockKind::Mutex);
        assert_eq!((r.lock, r.pid, r.tid), (0x1000, 7, 8));
        assert_eq!(r.lock_name.as_deref(), Some("mmap_lock of 7 (db)"));
        assert_eq!(r.comm, "worker");
        assert_eq!((r.wait.count, r.wait.total_ns), (3, 600));
        assert_eq!((r.wait.min_ns, r.wait.max_ns), (100, 300));
        assert_eq!(r.wait.hist.slots[7], 3);
        assert!(r.hold.is_none() && r.caller.is_none());
        assert_eq!(
            r.split,
            Some(WaitSplit::from_offcpu(600, 400, 100)),
            "where the wait went"
        );
        // an empty aggregate has no minimum
        let r = to_record(&mut sym, &k, &ls_agg_val::default(), |_| None);
        assert_eq!(r.wait.min_ns, 0);
    }

    #[test]
    fn a_stream_record_decodes_into_an_event() {
        let mut sym = Symbolizer::new();
        let e = ls_event {
            lock: 0x2000,
            pid: 5,
            tid: 6,
            flags: 0x1, // LCB_F_SPIN
            begin_ns: 1000,
            end_ns: 1250,
            ret: -4,
            mode: 3,
            lock_class: 1,
            stack_id: -1,
            comm: comm("t"),
            pcomm: comm("p"),
            ..Default::default()
        };
        let ev = to_event(&mut sym, &e, |_| None);
        assert_eq!(ev.kind, LockKind::Spinlock);
        assert_eq!((ev.begin_ns, ev.end_ns, ev.wait_ns), (1000, 1250, 250));
        assert_eq!(ev.lock_name.as_deref(), Some("mmap_lock of 5 (p)"));
        assert!(ev.aborted && ev.spun && ev.slept);
        assert_eq!(ev.ret, -4);
        assert_eq!(ev.comm, "t");
    }
}
