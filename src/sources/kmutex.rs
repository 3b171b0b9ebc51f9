//! The kernel-mutex and kernel-rwsem sources: waits AND holds of kernel
//! mutexes and rw-semaphores from function probes on the lock and unlock
//! functions (`src/bpf/kmutex.bpf.c` says how), per thread, lock and caller.
//!
//! Backends, tried in this order unless `--backend` picks one: fentry/fexit
//! (trampolines, the cheapest), then kprobe/kretprobe. Where neither works
//! (this project's own 6.18 machine: no CONFIG_KPROBES, fentry EPERM) the
//! source cannot start and says why; [`super::start`] then leaves mutex and
//! rwsem waits to kernel-contention and says that hold times are lost.
//!
//! While one of these sources runs, kernel-contention skips the same lock
//! kind ([`super::SkipContention`]), so no wait is counted twice.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result, anyhow, bail};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, OpenObject};

use super::common::{self, set_target_rodata};
use super::probes::{Backend, first_backend, fork_btf, functions_present, load_error};
use super::{Options, Pod, ProgStats, Source, Symbolizer, comm_str, prog_stats};
use crate::bpf::kmutex::types::{
    ls_kagg_key, ls_kagg_val, ls_kevent, ls_kholder_key, ls_kholder_val,
};
use crate::bpf::kmutex::{KmutexSkel, KmutexSkelBuilder, OpenKmutexSkel};
use crate::model::{Event, HIST_SLOTS, HolderRow, LockKind, Log2Hist, Record, Stats};
use crate::status::SourceStatus;

/// Source (and row) name of kernel mutexes.
pub const SOURCE_MUTEX: &str = "kernel-mutex";
/// Source (and row) name of kernel rw-semaphores.
pub const SOURCE_RWSEM: &str = "kernel-rwsem";

// The Rust model and the BPF header must agree on the histogram layout.
const _: () = assert!(
    std::mem::size_of::<[u64; 2 * HIST_SLOTS]>()
        == std::mem::size_of::<ls_kagg_val>() - std::mem::offset_of!(ls_kagg_val, hist)
);

// SAFETY: generated from lockscope.h, repr(C), integers and i8 arrays
// only, padded by hand to a multiple of 8 bytes (no implicit padding).
unsafe impl Pod for ls_kagg_key {}
// SAFETY: as above.
unsafe impl Pod for ls_kagg_val {}
// SAFETY: as above.
unsafe impl Pod for ls_kevent {}
// SAFETY: as above.
unsafe impl Pod for ls_kholder_key {}
// SAFETY: as above.
unsafe impl Pod for ls_kholder_val {}

/// `enum ls_kkind`.
const KIND_MUTEX: u32 = 1;
const KIND_RD: u32 = 2;
const KIND_WR: u32 = 3;

/// `LS_KEV_*`.
const EV_FAILED: u32 = 1;
const EV_ABORTED: u32 = 2;
const EV_PARTIAL: u32 = 4;
const EV_SLEPT: u32 = 8;

/// Names of the `lost` counters, in the order of `enum ls_klost`.
pub const LOST_NAMES: [&str; 7] = [
    "map_full",
    "holds_full",
    "ringbuf_dropped",
    "task_storage_failed",
    "stale_call",
    "stack_failed",
    "stack_map_full",
];

/// Which locks one instance probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Mutex,
    Rwsem,
}

impl Family {
    pub fn source(self) -> &'static str {
        match self {
            Family::Mutex => SOURCE_MUTEX,
            Family::Rwsem => SOURCE_RWSEM,
        }
    }
}

/// Every probed function: (name, family, has a return program). Keep in
/// step with the macro lines at the bottom of kmutex.bpf.c.
pub const FUNCS: &[(&str, Family, bool)] = &[
    ("mutex_lock", Family::Mutex, true),
    ("mutex_lock_interruptible", Family::Mutex, true),
    ("mutex_lock_killable", Family::Mutex, true),
    ("mutex_lock_io", Family::Mutex, true),
    ("mutex_trylock", Family::Mutex, true),
    ("mutex_lock_nested", Family::Mutex, true),
    ("mutex_lock_interruptible_nested", Family::Mutex, true),
    ("mutex_lock_killable_nested", Family::Mutex, true),
    ("mutex_lock_io_nested", Family::Mutex, true),
    ("mutex_unlock", Family::Mutex, false),
    ("down_read", Family::Rwsem, true),
    ("down_read_interruptible", Family::Rwsem, true),
    ("down_read_killable", Family::Rwsem, true),
    ("down_read_trylock", Family::Rwsem, true),
    ("down_read_nested", Family::Rwsem, true),
    ("down_write", Family::Rwsem, true),
    ("down_write_killable", Family::Rwsem, true),
    ("down_write_trylock", Family::Rwsem, true),
    ("down_write_nested", Family::Rwsem, true),
    ("up_read", Family::Rwsem, false),
    ("up_write", Family::Rwsem, false),
    ("downgrade_write", Family::Rwsem, false),
];

/// The functions a family cannot work without.
fn essential(family: Family) -> &'static [&'static str] {
    match family {
        Family::Mutex => &["mutex_unlock"],
        Family::Rwsem => &["up_read", "up_write"],
    }
}

/// The name of the fork follower to load: `{prefix}follow_fork_btf` or
/// `_tp` ([`fork_btf`]), or none when forks are not followed.
fn fork_program(prefix: &str, follow: bool) -> Option<String> {
    follow.then(|| {
        let kind = if fork_btf() { "btf" } else { "tp" };
        format!("{prefix}follow_fork_{kind}")
    })
}

/// A loaded and attached kernel-mutex or kernel-rwsem source.
pub struct KLock {
    family: Family,
    backend: Backend,
    note: Option<String>,
    skel: KmutexSkel<'static>,
    links: RefCell<Vec<Link>>,
}

/// Starts the kernel-mutex source ([`super::SourceInfo::start`]).
pub fn start_mutex(opts: &Options) -> Result<Box<dyn Source>> {
    Ok(Box::new(KLock::start(opts, Family::Mutex)?))
}

/// Starts the kernel-rwsem source ([`super::SourceInfo::start`]).
pub fn start_rwsem(opts: &Options) -> Result<Box<dyn Source>> {
    Ok(Box::new(KLock::start(opts, Family::Rwsem)?))
}

impl KLock {
    pub fn start(opts: &Options, family: Family) -> Result<KLock> {
        let source = family.source();
        let names: Vec<&str> = FUNCS
            .iter()
            .filter(|f| f.1 == family)
            .map(|f| f.0)
            .collect();
        let present = functions_present(&names);
        for f in essential(family) {
            if !present.contains(*f) {
                bail!("{f} is not a function of this kernel (not in /proc/kallsyms)");
            }
        }
        let (mut s, note) = first_backend(source, opts.backend.as_deref(), |b| {
            Self::start_with(opts, family, b, &present)
        })?;
        s.note = note;
        Ok(s)
    }

    fn start_with(
        opts: &Options,
        family: Family,
        backend: Backend,
        present: &HashSet<String>,
    ) -> Result<KLock> {
        crate::libbpf_log::install();
        crate::libbpf_log::take();
        // The open object must outlive the skeleton, which lives as long as
        // the source; one small allocation per source is leaked for it.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open: OpenKmutexSkel<'static> = KmutexSkelBuilder::default()
            .open(storage)
            .context("open BPF object")?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| anyhow!("BPF object has no .rodata"))?;
        set_target_rodata!(&mut *rodata, opts);
        rodata.emit_events = opts.emit_events;
        rodata.caller_mode = opts.caller as u32;
        open.maps.agg.set_max_entries(opts.max_entries)?;
        open.maps.holds.set_max_entries(opts.max_entries)?;
        if let Some(st) = opts.stacks {
            rodata.stacks_on = true;
            rodata.hold_stacks_on = st.holds;
            rodata.stack_threshold_ns = st.threshold_ns;
            rodata.stack_sample = st.sample;
            open.maps.full_stacks.set_max_entries(16384)?;
            open.maps.stack_agg.set_max_entries(opts.max_entries)?;
        }
        let rb = opts.ringbuf_bytes.next_power_of_two().max(4096);
        open.maps
            .events
            .set_max_entries(if opts.emit_events { rb } else { 4096 })?;
        let fork = fork_program("km_", opts.targets.follow_forks);
        let wanted = wanted_programs(family, backend, present);
        for mut prog in open.open_object_mut().progs_mut() {
            let name = prog.name().to_string_lossy().into_owned();
            prog.set_autoload(wanted.contains(&name) || fork.as_ref() == Some(&name));
        }
        let skel = open.load().map_err(|e| load_error("load", &e))?;
        common::fill_target_maps(
            &skel.maps.target_pids,
            &skel.maps.target_tids,
            &skel.maps.target_cgroup,
            opts,
        )?;
        // the fork follower first: a child forked while the lock probes
        // attach is a target already
        let mut links = Vec::new();
        let mut progs: Vec<_> = skel.object().progs_mut().collect();
        progs.sort_by_key(|p| fork.as_deref() != Some(&*p.name().to_string_lossy()));
        for prog in progs {
            let name = prog.name().to_string_lossy().into_owned();
            if !wanted.contains(&name) && fork.as_ref() != Some(&name) {
                continue;
            }
            let link = prog
                .attach()
                .map_err(|e| load_error(&format!("attach {name}"), &e))?;
            links.push(link);
        }
        Ok(KLock {
            family,
            backend,
            note: None,
            skel,
            links: RefCell::new(links),
        })
    }

    fn stack(&self, id: i32) -> Option<Vec<u64>> {
        common::stack(&self.skel.maps.stacks, id)
    }
}

/// Program names to load: both sides of every present function of the
/// family, for one backend.
fn wanted_programs(family: Family, backend: Backend, present: &HashSet<String>) -> HashSet<String> {
    let (entry, ret) = backend.prefixes();
    let mut out = HashSet::new();
    for (f, fam, has_ret) in FUNCS {
        if *fam != family || !present.contains(*f) {
            continue;
        }
        out.insert(format!("{entry}{f}"));
        if *has_ret {
            out.insert(format!("{ret}{f}"));
        }
    }
    out
}

/// The model kind of `enum ls_kkind`.
pub fn kind_of(k: u32) -> LockKind {
    match k {
        KIND_MUTEX => LockKind::Mutex,
        KIND_RD => LockKind::RwsemRead,
        KIND_WR => LockKind::RwsemWrite,
        other => LockKind::Unknown(other),
    }
}

fn stats(count: u64, total: u64, min: u64, max: u64, hist: &[u64]) -> Stats {
    let mut h = Log2Hist::default();
    h.slots.copy_from_slice(&hist[..HIST_SLOTS]);
    Stats {
        count,
        total_ns: total,
        min_ns: if count == 0 { 0 } else { min },
        max_ns: max,
        hist: h,
    }
}

/// A kernel aggregation entry as a model record.
pub fn to_record(
    source: &'static str,
    k: &ls_kagg_key,
    v: &ls_kagg_val,
    caller: Option<String>,
    lock_name: Option<String>,
    cgroup: Option<String>,
) -> Record {
    Record {
        source,
        kind: kind_of(k.kind),
        lock: k.lock,
        lock_name,
        caller,
        pid: k.pid,
        tid: k.tid,
        comm: comm_str(&v.comm),
        cgroup,
        memcg: None,
        aborted: v.aborted,
        spun: 0,
        slept: v.slept,
        wait: stats(v.count, v.total_ns, v.min_ns, v.max_ns, &v.hist),
        hold: Some(stats(
            v.hold_count,
            v.hold_total_ns,
            v.hold_min_ns,
            v.hold_max_ns,
            &v.hold_hist,
        )),
        // kernel mutex probes see every acquisition too; not split yet
        acquired: None,
        failed: v.failed,
        partial: v.partial,
        split: None,
        stacks: Vec::new(),
    }
}

/// A ring-buffer record as a model event.
pub fn to_event(
    source: &'static str,
    e: &ls_kevent,
    caller: Option<String>,
    lock_name: Option<String>,
    cgroup: Option<String>,
) -> Event {
    let failed = e.flags & EV_FAILED != 0;
    let aborted = e.flags & EV_ABORTED != 0;
    let partial = e.flags & EV_PARTIAL != 0;
    let released = (e.released_ns != 0).then_some(e.released_ns);
    Event {
        source,
        kind: kind_of(e.kind),
        lock: e.lock,
        lock_name,
        caller,
        pid: e.pid,
        tid: e.tid,
        comm: comm_str(&e.comm),
        cgroup,
        begin_ns: e.begin_ns,
        end_ns: if partial {
            e.released_ns
        } else {
            e.acquired_ns
        },
        released_ns: released,
        wait_ns: if partial {
            0
        } else {
            e.acquired_ns.saturating_sub(e.begin_ns)
        },
        hold_ns: match (partial, released) {
            (false, Some(r)) => Some(r.saturating_sub(e.acquired_ns)),
            _ => None,
        },
        aborted,
        failed,
        ret: e.ret,
        spun: false,
        slept: e.flags & EV_SLEPT != 0,
        partial,
        holder_tid: (e.holder_tid != 0).then_some(e.holder_tid),
        split: None,
    }
}

impl Source for KLock {
    fn name(&self) -> &'static str {
        self.family.source()
    }

    fn status(&self) -> SourceStatus {
        SourceStatus {
            name: self.family.source().into(),
            backend: Some(self.backend.name().into()),
            available: true,
            reason: self.note.clone(),
        }
    }

    fn add_pid(&self, pid: u32) -> Result<()> {
        self.skel
            .maps
            .target_pids
            .update(super::as_bytes(&pid), &[1u8], libbpf_rs::MapFlags::ANY)
            .context("add pid to target_pids")
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
        let source = self.family.source();
        let raw: Vec<(ls_kagg_key, ls_kagg_val)> = common::entries(&self.skel.maps.agg)?;
        let mut records: Vec<Record> = raw
            .iter()
            .map(|(k, v)| {
                let id = if k.stack_id >= 0 {
                    k.stack_id
                } else {
                    v.stack_id
                };
                let caller = sym.kernel_caller(source, id, || self.stack(id));
                let name = super::contention::lock_name(v.lock_class, k.pid, &comm_str(&v.pcomm))
                    .or_else(|| sym.kernel_lock_name(k.lock, ""));
                let cgroup = sym.cgroup(v.cgroup_id);
                to_record(source, k, v, caller, name, cgroup)
            })
            .collect();
        let maps = &self.skel.maps;
        let stacks = common::stack_entries(&maps.stack_agg, &maps.full_stacks, sym)?;
        common::attach_stacks(
            &mut records,
            stacks,
            |i, _| (raw[i].0.lock, raw[i].0.tid, raw[i].0.kind),
            |e| (e.key.lock, e.key.tid, e.key.flags),
            |_, _| true,
        );
        Ok(records)
    }

    fn tick(&self, sym: &mut Symbolizer) {
        // name pipe and inode locks while their files are open
        sym.files.refresh_if_due();
        // normalise new user stacks while their processes still live
        let maps = &self.skel.maps;
        common::normalize_new_stacks(&maps.stack_agg, &maps.full_stacks, sym);
    }

    fn holders(&self) -> Result<Vec<HolderRow>> {
        let raw: Vec<(ls_kholder_key, ls_kholder_val)> = common::entries(&self.skel.maps.holders)?;
        Ok(raw
            .iter()
            .map(|(k, v)| HolderRow {
                source: self.family.source(),
                kind: kind_of(k.kind),
                lock: format!("0x{:x}", k.lock),
                pid: k.pid,
                holder_tid: k.holder_tid,
                holder_comm: std::fs::read_to_string(format!("/proc/{}/comm", k.holder_tid))
                    .ok()
                    .map(|s| s.trim().to_string()),
                waits: v.waits,
                wait_ns: v.wait_ns,
            })
            .collect())
    }

    fn lost(&self) -> Result<BTreeMap<String, u64>> {
        let mut out = common::read_lost(&self.skel.maps.lost, &LOST_NAMES)?;
        let misses: u64 = self.prog_stats().iter().map(|s| s.recursion_misses).sum();
        out.insert("bpf_recursion_misses".into(), misses);
        Ok(out)
    }

    fn prog_stats(&self) -> Vec<ProgStats> {
        self.skel
            .object()
            .progs()
            .filter(|p| p.as_fd().as_raw_fd() >= 0 && p.autoload())
            .filter_map(|p| prog_stats(&p.name().to_string_lossy(), p.as_fd()).ok())
            .collect()
    }

    fn event_map(&self) -> Option<&dyn MapCore> {
        Some(&self.skel.maps.events)
    }

    fn decode_event(&self, data: &[u8], sym: &mut Symbolizer) -> Option<Event> {
        let e = super::from_bytes::<ls_kevent>(data)?;
        let source = self.family.source();
        let caller = sym.kernel_caller(source, e.stack_id, || self.stack(e.stack_id));
        let name = super::contention::lock_name(e.lock_class, e.pid, &comm_str(&e.comm))
            .or_else(|| sym.kernel_lock_name(e.lock, ""));
        let cgroup = sym.cgroup(e.cgroup_id);
        Some(to_event(source, &e, caller, name, cgroup))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_has_programs_for_both_backends() {
        let all: HashSet<String> = FUNCS.iter().map(|f| f.0.to_string()).collect();
        for fam in [Family::Mutex, Family::Rwsem] {
            for b in [Backend::Fentry, Backend::Kprobe] {
                let w = wanted_programs(fam, b, &all);
                let n = FUNCS.iter().filter(|f| f.1 == fam).count();
                let rets = FUNCS.iter().filter(|f| f.1 == fam && f.2).count();
                assert_eq!(w.len(), n + rets, "{fam:?} {b:?}");
            }
        }
        let only: HashSet<String> = ["mutex_lock".to_string()].into();
        let w = wanted_programs(Family::Mutex, Backend::Kprobe, &only);
        assert_eq!(
            w,
            ["kp_mutex_lock".to_string(), "kr_mutex_lock".to_string()].into()
        );
    }

    #[test]
    fn a_partial_release_has_no_wait_and_no_hold() {
        let e = ls_kevent {
            released_ns: 50,
            kind: KIND_WR,
            flags: EV_PARTIAL,
            ..Default::default()
        };
        let ev = to_event(SOURCE_RWSEM, &e, None, None, None);
        assert!(ev.partial);
        assert_eq!(ev.kind, LockKind::RwsemWrite);
        assert_eq!((ev.wait_ns, ev.hold_ns), (0, None));
        let e = ls_kevent {
            begin_ns: 10,
            acquired_ns: 30,
            released_ns: 100,
            kind: KIND_MUTEX,
            ..Default::default()
        };
        let ev = to_event(SOURCE_MUTEX, &e, None, None, None);
        assert_eq!((ev.wait_ns, ev.hold_ns), (20, Some(70)));
    }
}
