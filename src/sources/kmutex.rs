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

use std::collections::HashSet;

use anyhow::{Result, bail};

use super::common;
use super::lifecycle::{self, Life, Loaded, Plan};
use super::probes::{Backend, first_backend, fork_program, functions_present};
use super::{Options, Source, Symbolizer, comm_str};
use crate::bpf::kmutex::types::{
    ls_kagg_key, ls_kagg_val, ls_kevent, ls_kholder_key, ls_kholder_val,
};
use crate::bpf::kmutex::{KmutexSkel, KmutexSkelBuilder};
use crate::model::{Event, HolderRow, LockKind, Record};

/// Source (and row) name of kernel mutexes.
pub const SOURCE_MUTEX: &str = "kernel-mutex";
/// Source (and row) name of kernel rw-semaphores.
pub const SOURCE_RWSEM: &str = "kernel-rwsem";

common::assert_hist_layout!(ls_kagg_val, hist, 2);
common::bpf_pod!(
    ls_kagg_key,
    ls_kagg_val,
    ls_kevent,
    ls_kholder_key,
    ls_kholder_val
);

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

/// A loaded and attached kernel-mutex or kernel-rwsem source.
pub struct KLock {
    family: Family,
    /// Why a preferred backend failed, for the status.
    note: Option<String>,
    core: Loaded<KmutexSkel<'static>>,
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
        let fork = fork_program("km_", opts.targets.follow_forks);
        let wanted = wanted_programs(family, backend, present);
        let plan = Plan {
            backend: backend.name(),
            load: &|name| wanted.contains(name) || fork.as_deref() == Some(name),
            sized: &["agg", "holds"],
            lost: &LOST_NAMES,
            attach: true,
        };
        let core = lifecycle::load::<KmutexSkelBuilder>(opts, &plan, |open| {
            let rodata = common::target_rodata!(open, opts, emit_events, caller_mode);
            common::set_stacks_rodata!(&mut *rodata, opts, hold_stacks_on);
            Ok(())
        })?;
        Ok(KLock {
            family,
            note: None,
            core,
        })
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

/// A kernel aggregation entry as a model record.
pub fn to_record(
    source: &'static str,
    k: &ls_kagg_key,
    v: &ls_kagg_val,
    caller: Option<String>,
    lock_name: Option<String>,
    cgroup: Option<String>,
) -> Record {
    let kind = kind_of(k.kind);
    Record {
        lock_name,
        caller,
        cgroup,
        aborted: v.aborted,
        slept: v.slept,
        wait: common::wait_stats!(v),
        hold: Some(common::hold_stats!(v)),
        // kernel mutex probes see every acquisition too; not split yet
        acquired: None,
        failed: v.failed,
        partial: v.partial,
        ..Record::new(source, kind, k.lock, k.pid, k.tid, comm_str(&v.comm))
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
    let kind = kind_of(e.kind);
    Event {
        lock_name,
        caller,
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
        slept: e.flags & EV_SLEPT != 0,
        partial,
        holder_tid: (e.holder_tid != 0).then_some(e.holder_tid),
        ..Event::new(source, kind, e.lock, e.pid, e.tid, comm_str(&e.comm))
    }
}

/// A `holders` entry (waits behind one holder) as a model row.
pub fn to_holder(
    source: &'static str,
    k: &ls_kholder_key,
    v: &ls_kholder_val,
    holder_comm: Option<String>,
) -> HolderRow {
    HolderRow {
        source,
        kind: kind_of(k.kind),
        lock: format!("0x{:x}", k.lock),
        pid: k.pid,
        holder_tid: k.holder_tid,
        holder_comm,
        waits: v.waits,
        wait_ns: v.wait_ns,
    }
}

impl Source for KLock {
    fn name(&self) -> &'static str {
        self.family.source()
    }

    fn life(&self) -> &dyn Life {
        &self.core
    }

    fn note(&self) -> Option<String> {
        self.note.clone()
    }

    fn records(&self, sym: &mut Symbolizer) -> Result<Vec<Record>> {
        let source = self.family.source();
        let raw: Vec<(ls_kagg_key, ls_kagg_val)> = common::entries(&self.core.skel.maps.agg)?;
        let mut records: Vec<Record> = raw
            .iter()
            .map(|(k, v)| {
                let id = if k.stack_id >= 0 {
                    k.stack_id
                } else {
                    v.stack_id
                };
                let caller = sym.kernel_caller(source, id, || self.core.stack(id));
                let name = super::contention::lock_name(v.lock_class, k.pid, &comm_str(&v.pcomm))
                    .or_else(|| sym.kernel_lock_name(k.lock, ""));
                let cgroup = sym.cgroup(v.cgroup_id);
                to_record(source, k, v, caller, name, cgroup)
            })
            .collect();
        let maps = &self.core.skel.maps;
        let key = |i: usize, _: &Record| (raw[i].0.lock, raw[i].0.tid, raw[i].0.kind);
        common::stack_maps!(maps).attach(sym, &mut records, key, |f| f, |_, _| true)?;
        Ok(records)
    }

    fn tick(&self, sym: &mut Symbolizer) {
        // name pipe and inode locks while their files are open
        sym.files.refresh_if_due();
        common::stack_maps!(self.core.skel.maps).normalize_new(sym);
    }

    fn holders(&self) -> Result<Vec<HolderRow>> {
        let raw: Vec<(ls_kholder_key, ls_kholder_val)> =
            common::entries(&self.core.skel.maps.holders)?;
        let source = self.family.source();
        Ok(raw
            .iter()
            .map(|(k, v)| {
                let comm = std::fs::read_to_string(format!("/proc/{}/comm", k.holder_tid))
                    .ok()
                    .map(|s| s.trim().to_string());
                to_holder(source, k, v, comm)
            })
            .collect())
    }

    fn decode_event(&self, data: &[u8], sym: &mut Symbolizer) -> Option<Event> {
        let e = super::from_bytes::<ls_kevent>(data)?;
        let source = self.family.source();
        let caller = sym.kernel_caller(source, e.stack_id, || self.core.stack(e.stack_id));
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
    fn an_aggregation_entry_decodes_to_a_record() {
        let k = ls_kagg_key {
            lock: 0xffff_0000_1234,
            stack_id: -1,
            tid: 12,
            pid: 11,
            kind: KIND_RD,
        };
        let mut v = ls_kagg_val {
            count: 2,
            total_ns: 300,
            min_ns: 100,
            max_ns: 200,
            hold_count: 0,
            hold_min_ns: u64::MAX,
            failed: 1,
            aborted: 3,
            partial: 4,
            slept: 5,
            ..Default::default()
        };
        v.hist[7] = 2;
        v.comm[..3].copy_from_slice(&[b'c' as i8, b'a' as i8, b't' as i8]);
        let r = to_record(SOURCE_RWSEM, &k, &v, Some("f+0x1".into()), None, None);
        assert_eq!((r.source, r.kind), (SOURCE_RWSEM, LockKind::RwsemRead));
        assert_eq!((r.lock, r.pid, r.tid), (0xffff_0000_1234, 11, 12));
        assert_eq!(r.comm, "cat");
        assert_eq!(r.caller.as_deref(), Some("f+0x1"));
        assert_eq!((r.failed, r.aborted, r.partial, r.slept), (1, 3, 4, 5));
        assert_eq!(
            (r.wait.count, r.wait.total_ns, r.wait.min_ns, r.wait.max_ns),
            (2, 300, 100, 200)
        );
        assert_eq!(r.wait.hist.slots[7], 2);
        // no completed hold: min reads 0, not the BPF side's initial max
        let hold = r.hold.unwrap_or_default();
        assert_eq!((hold.count, hold.min_ns), (0, 0));
    }

    #[test]
    fn a_holder_entry_decodes_to_a_row() {
        let k = ls_kholder_key {
            lock: 0xabc,
            holder_tid: 7,
            pid: 6,
            kind: KIND_MUTEX,
            pad: 0,
        };
        let v = ls_kholder_val {
            waits: 3,
            wait_ns: 900,
        };
        let h = to_holder(SOURCE_MUTEX, &k, &v, Some("holder".into()));
        assert_eq!((h.source, h.kind), (SOURCE_MUTEX, LockKind::Mutex));
        assert_eq!(h.lock, "0xabc");
        assert_eq!((h.pid, h.holder_tid, h.waits, h.wait_ns), (6, 7, 3, 900));
        assert_eq!(h.holder_comm.as_deref(), Some("holder"));
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
