//! The mmap-lock source: waits, holds, failures and partial operations of
//! every process's `mmap_lock` from the kernel's mmap_lock tracepoints
//! (`src/bpf/mmaplock.bpf.c`), per process, thread, mode and cgroup.

use std::cell::RefCell;
use std::collections::HashMap;

use anyhow::{Result, bail};

use super::common::{self, stats};
use super::contention::{Backend, first_working};
use super::lifecycle::{self, Life, Loaded, Plan};
use super::{Options, Source, Symbolizer, TracefsGuard, comm_str};
use crate::bpf::mmaplock::types::{ls_mm_event, ls_mm_key, ls_mm_val};
use crate::bpf::mmaplock::{MmaplockSkel, MmaplockSkelBuilder};
use crate::cgroup::CgroupNames;
use crate::model::{Event, LockKind, Record, WaitSplit};
use crate::status::SourceStatus;

/// Source name of this module's rows.
pub const SOURCE: &str = "mmap-lock";

common::assert_hist_layout!(ls_mm_val, hold_hist);
common::bpf_pod!(ls_mm_key, ls_mm_val, ls_mm_event);

/// Names of the `lost` counters, in the order of `enum ls_mm_lost`.
pub const LOST_NAMES: [&str; 7] = [
    "map_full",
    "stack_failed",
    "ringbuf_dropped",
    "task_storage_failed",
    "slots_full",
    "stale_op",
    "stack_map_full",
];

/// `enum ls_mm_flags`.
mod flags {
    pub const WRITE: u32 = 1;
    pub const FAILED: u32 = 2;
    pub const PARTIAL: u32 = 4;
    pub const CONTENDED: u32 = 16;
}

/// A loaded and attached mmap-lock source.
pub struct MmapLock {
    core: Loaded<MmaplockSkel<'static>>,
    fallback_reason: Option<String>,
    per_vma_locks: bool,
    /// lock:contention_begin is traced: blocked waits are told exactly.
    contention_tp: bool,
    /// Memory cgroup ids to paths (the memory controller's hierarchy,
    /// which is cgroup v1 on hybrid systems).
    memcgs: RefCell<Option<CgroupNames>>,
    /// Lock -> (owner pid, owner name) as last seen with a known owner: an
    /// mm whose owner exited (its final unmapping in exit_mmap) keeps the
    /// name it had.
    owners: RefCell<HashMap<u64, (u32, String)>>,
}

/// Starts the source ([`super::SourceInfo::start`]).
pub fn start(opts: &Options) -> Result<Box<dyn Source>> {
    Ok(Box::new(MmapLock::start(opts)?))
}

impl MmapLock {
    pub fn start(opts: &Options) -> Result<MmapLock> {
        let _tracefs = TracefsGuard::ensure();
        if super::tracefs_mounted()
            && !super::tracepoint_exists("mmap_lock", "mmap_lock_start_locking")
        {
            bail!(
                "this kernel has no mmap_lock tracepoints (added in Linux 5.12); \
                 mmap_lock waits and holds cannot be traced here"
            );
        }
        let order: Vec<Backend> = match opts.backend.as_deref() {
            Some("tp_btf") => vec![Backend::TpBtf],
            Some("tracepoint") => vec![Backend::Tracepoint],
            Some(other) => bail!("{SOURCE} has no backend '{other}' (tp_btf, tracepoint)"),
            None => vec![Backend::TpBtf, Backend::Tracepoint],
        };
        let (mut s, reason) = first_working(SOURCE, order, |b| Self::start_with(opts, b))?;
        s.fallback_reason = reason;
        Ok(s)
    }

    fn start_with(opts: &Options, backend: Backend) -> Result<MmapLock> {
        // which acquisitions blocked: the rwsem's contention_begin (5.19+)
        let contention_tp =
            !super::tracefs_mounted() || super::tracepoint_exists("lock", "contention_begin");
        let btf = backend == Backend::TpBtf;
        let follow = opts.targets.follow_forks;
        // Every program returns at once until the window opens (all
        // attached), so the order they attach in does not matter.
        let plan = Plan {
            backend: backend.name(),
            load: &|name| match name {
                "mm_start_btf" | "mm_acquire_btf" | "mm_release_btf" => btf,
                "mm_follow_fork_btf" => btf && follow,
                "mm_contention_btf" => btf && contention_tp,
                "mm_start_tp" | "mm_acquire_tp" | "mm_release_tp" => !btf,
                "mm_follow_fork_tp" => !btf && follow,
                "mm_contention_tp" => !btf && contention_tp,
                _ => false,
            },
            sized: &["agg"],
            lost: &LOST_NAMES,
            attach: true,
        };
        let core = lifecycle::load::<MmaplockSkelBuilder>(opts, &plan, |open| {
            let rodata = common::target_rodata!(open, opts, emit_events, caller_mode);
            rodata.have_contention_tp = contention_tp;
            common::set_stacks_rodata!(&mut *rodata, opts, hold_stacks_on);
            Ok(())
        })?;
        Ok(MmapLock {
            core,
            fallback_reason: None,
            per_vma_locks: common::per_vma_locks(),
            contention_tp,
            memcgs: RefCell::new(None),
            owners: RefCell::new(HashMap::new()),
        })
    }

    fn stack(&self, id: i32) -> Option<Vec<u64>> {
        let maps = &self.core.skel.maps;
        common::stack_in(&maps.stacks, &maps.stacks_spill, id)
    }

    fn memcg(&self, id: u64) -> Option<String> {
        let mut m = self.memcgs.borrow_mut();
        let names = m.get_or_insert_with(|| {
            CgroupNames::under(crate::cgroup::memory_root().unwrap_or_else(crate::cgroup::v2_root))
        });
        names.path(id)
    }

    /// "mmap_lock of PID (comm)", plus the memory cgroup where it is known
    /// and differs from the task's cgroup v2 path (e.g. a cgroup v1 memory
    /// hierarchy).
    fn lock_name(
        &self,
        lock: u64,
        owner: u32,
        ocomm: &str,
        memcg_id: u64,
        cgroup: Option<&str>,
    ) -> Option<String> {
        let known = if owner != 0 {
            self.owners
                .borrow_mut()
                .insert(lock, (owner, ocomm.to_string()));
            Some((owner, ocomm.to_string()))
        } else {
            self.owners.borrow().get(&lock).cloned()
        };
        let memcg = self.memcg(memcg_id);
        Some(format_lock_name(
            known.as_ref().map(|(p, c)| (*p, c.as_str())),
            memcg.as_deref(),
            cgroup,
        ))
    }
}

/// "mmap_lock of PID (comm)", plus " [memcg PATH]" when the memory cgroup
/// is known and is not the task's cgroup v2 path (a cgroup v1 memory
/// hierarchy, or a memcg higher up).
pub fn format_lock_name(
    owner: Option<(u32, &str)>,
    memcg: Option<&str>,
    cgroup: Option<&str>,
) -> String {
    let mut name = match owner {
        Some((pid, comm)) => format!("mmap_lock of {pid} ({comm})"),
        None => "mmap_lock".to_string(),
    };
    if let Some(m) = memcg
        && Some(m) != cgroup
    {
        name.push_str(&format!(" [memcg {m}]"));
    }
    name
}

/// The begin of one streamed operation: its start_locking, or its
/// acquisition when that was not contended (no wait: start -> acquired is
/// the fast path's and the probes' own time); 0 when not seen.
pub fn op_begin(e: &ls_mm_event) -> u64 {
    let f = e.flags;
    let acquired = e.acquired_ns != 0 && f & flags::FAILED == 0;
    if e.begin_ns != 0 && acquired && f & flags::CONTENDED == 0 {
        e.acquired_ns
    } else {
        e.begin_ns
    }
}

/// The times of one streamed operation: (wait, hold, end, released).
/// A wait is timed only when its start and acquisition were seen and it
/// was contended (or it failed), a hold only when its acquisition and its
/// end were; `end` is the acquisition (or failure), else the release.
pub fn op_times(e: &ls_mm_event) -> (u64, Option<u64>, u64, Option<u64>) {
    let failed = e.flags & flags::FAILED != 0;
    let begin = op_begin(e);
    let wait = if begin != 0 && e.acquired_ns != 0 {
        e.acquired_ns.saturating_sub(begin)
    } else {
        0
    };
    let hold = (e.acquired_ns != 0 && e.released_ns != 0 && !failed)
        .then(|| e.released_ns.saturating_sub(e.acquired_ns));
    let end = if e.acquired_ns != 0 {
        e.acquired_ns
    } else {
        e.released_ns
    };
    (
        wait,
        hold,
        end,
        (e.released_ns != 0).then_some(e.released_ns),
    )
}

fn kind(write: bool) -> LockKind {
    if write {
        LockKind::RwsemWrite
    } else {
        LockKind::RwsemRead
    }
}

/// A kernel aggregation entry as a model record; `lock_name` is decided
/// per lock by the caller, `memcg` is the path of `v.memcg_id`, `stack`
/// reads a caller stack.
fn to_record(
    sym: &mut Symbolizer,
    k: &ls_mm_key,
    v: &ls_mm_val,
    lock_name: Option<String>,
    memcg: Option<String>,
    stack: impl FnOnce(i32) -> Option<Vec<u64>>,
) -> Record {
    let cgroup = sym.cgroup(v.cgroup_id);
    let id = if k.stack_id >= 0 {
        k.stack_id
    } else {
        v.stack_id
    };
    let lock_kind = kind(k.write != 0);
    Record {
        lock_name,
        caller: sym.kernel_caller(SOURCE, id, || stack(id)),
        cgroup,
        memcg,
        wait: stats(v.count, v.wait_total, v.wait_min, v.wait_max, &v.wait_hist),
        hold: Some(stats(
            v.holds,
            v.hold_total,
            v.hold_min,
            v.hold_max,
            &v.hold_hist,
        )),
        acquired: Some(v.acquired),
        failed: v.failed,
        partial: v.partial,
        split: Some(WaitSplit::from_offcpu(v.wait_total, v.offcpu_ns, v.runq_ns)),
        ..Record::new(SOURCE, lock_kind, k.lock, k.pid, k.tid, comm_str(&v.comm))
    }
}

/// One stream record as a model event; `lock_name` names the lock given
/// the task's cgroup, `stack` reads a caller stack.
fn to_event(
    sym: &mut Symbolizer,
    e: &ls_mm_event,
    lock_name: impl FnOnce(Option<&str>) -> Option<String>,
    stack: impl FnOnce(i32) -> Option<Vec<u64>>,
) -> Event {
    let f = e.flags;
    let partial = f & flags::PARTIAL != 0;
    let failed = f & flags::FAILED != 0;
    let cgroup = sym.cgroup(e.cgroup_id);
    let (wait_ns, hold_ns, end_ns, released_ns) = op_times(e);
    let lock_kind = kind(f & flags::WRITE != 0);
    Event {
        lock_name: lock_name(cgroup.as_deref()),
        caller: sym.kernel_caller(SOURCE, e.stack_id, || stack(e.stack_id)),
        cgroup,
        begin_ns: op_begin(e),
        end_ns,
        released_ns,
        wait_ns,
        hold_ns,
        failed,
        partial,
        // where the wait went, when the wait itself was seen
        split: (e.begin_ns != 0 && e.acquired_ns != 0)
            .then(|| WaitSplit::from_offcpu(wait_ns, e.offcpu_ns, e.runq_ns)),
        ..Event::new(SOURCE, lock_kind, e.lock, e.pid, e.tid, comm_str(&e.comm))
    }
}

impl Source for MmapLock {
    common::source_name_and_life!();

    fn status(&self) -> SourceStatus {
        let mut notes = Vec::new();
        if self.per_vma_locks {
            notes.push("per-VMA locks: most page faults skip mmap_lock".to_string());
        }
        if !self.contention_tp {
            notes.push(
                "no lock:contention_begin: a reader is contended when a writer held or \
                 was queued for the lock as it asked"
                    .to_string(),
            );
        }
        if let Some(r) = &self.fallback_reason {
            notes.push(format!("preferred backend failed: {r}"));
        }
        SourceStatus {
            name: SOURCE.into(),
            backend: Some(self.core.backend().into()),
            available: true,
            reason: (!notes.is_empty()).then(|| notes.join("; ")),
        }
    }

    fn records(&self, sym: &mut Symbolizer) -> Result<Vec<Record>> {
        // entry by entry into records (no copy of the raw map next to
        // them), keeping what naming needs: per lock the naming key's
        // owner, per record its key and thread
        struct Namer {
            rank: (bool, u64),
            owner_pid: u32,
            ocomm: [i8; 16],
            memcg_id: u64,
            cgroup_id: u64,
        }
        // one name per lock: the owner's name is read when a key is created
        // and changes at exec, so take it from the busiest key of the lock
        let mut namer: HashMap<u64, Namer> = HashMap::new();
        let mut keys: Vec<ls_mm_key> = Vec::new();
        let mut threads: Vec<(u32, u32, u64, [i8; 16])> = Vec::new();
        let mut records: Vec<Record> = Vec::new();
        common::for_each_entry(&self.core.skel.maps.agg, |k: ls_mm_key, v: ls_mm_val| {
            // a key with a known owner first, then the busiest
            let weight = v.acquired + v.holds + v.failed + v.partial;
            let rank = (v.owner_pid != 0, weight);
            let better = namer.get(&k.lock).is_none_or(|e| rank > e.rank);
            if better {
                namer.insert(
                    k.lock,
                    Namer {
                        rank,
                        owner_pid: v.owner_pid,
                        ocomm: v.ocomm,
                        memcg_id: v.memcg_id,
                        cgroup_id: v.cgroup_id,
                    },
                );
            }
            threads.push((k.pid, k.tid, weight, v.comm));
            let memcg = self.memcg(v.memcg_id);
            records.push(to_record(sym, &k, &v, None, memcg, |id| self.stack(id)));
            keys.push(k);
        })?;
        let mut names: HashMap<u64, Option<String>> = HashMap::new();
        for (lock, v) in namer {
            let cgroup = sym.cgroup(v.cgroup_id);
            let name = self.lock_name(
                lock,
                v.owner_pid,
                &comm_str(&v.ocomm),
                v.memcg_id,
                cgroup.as_deref(),
            );
            names.insert(lock, name);
        }
        // one thread name per thread (it may rename itself between keys)
        let comms = common::thread_names(threads.iter().map(|(p, t, w, c)| (*p, *t, *w, c)));
        drop(threads);
        for (r, k) in records.iter_mut().zip(&keys) {
            r.lock_name = names.get(&k.lock).cloned().flatten();
            if let Some(c) = comms.get(&k.tid) {
                r.comm = c.clone();
            }
        }
        let maps = &self.core.skel.maps;
        let key = |i: usize, _: &Record| (keys[i].lock, keys[i].tid, keys[i].write);
        common::stack_maps!(maps).attach(sym, &mut records, key, |f| f, |_, _| true)?;
        Ok(records)
    }

    fn tick(&self, sym: &mut Symbolizer) {
        common::stack_maps!(self.core.skel.maps).normalize_new(sym);
    }

    fn decode_event(&self, data: &[u8], sym: &mut Symbolizer) -> Option<Event> {
        let e = super::from_bytes::<ls_mm_event>(data)?;
        let name = |cgroup: Option<&str>| {
            self.lock_name(e.lock, e.owner_pid, &comm_str(&e.ocomm), e.memcg_id, cgroup)
        };
        Some(to_event(sym, &e, name, |id| self.stack(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(begin: u64, acquired: u64, released: u64, f: u32) -> ls_mm_event {
        ls_mm_event {
            begin_ns: begin,
            acquired_ns: acquired,
            released_ns: released,
            flags: f,
            ..Default::default()
        }
    }

    #[test]
    fn operations_are_timed_only_from_what_was_seen() {
        // a whole contended operation: wait then hold
        let contended = ev(100, 130, 200, flags::WRITE | flags::CONTENDED);
        assert_eq!(op_times(&contended), (30, Some(70), 130, Some(200)));
        assert_eq!(op_begin(&contended), 100);
        // uncontended: no wait (start -> acquired was the fast path's and
        // the probes' own time), its hold all the same; it begins where
        // it was acquired
        let fast = ev(100, 130, 200, flags::WRITE);
        assert_eq!(op_times(&fast), (0, Some(70), 130, Some(200)));
        assert_eq!(op_begin(&fast), 130);
        // acquired before its start was seen: hold only
        assert_eq!(
            op_times(&ev(0, 130, 200, flags::PARTIAL)),
            (0, Some(70), 130, Some(200))
        );
        // released, acquisition never seen: nothing timed
        assert_eq!(
            op_times(&ev(0, 0, 200, flags::PARTIAL)),
            (0, None, 200, Some(200))
        );
        // a failed trylock: its (short) wait, no hold
        assert_eq!(
            op_times(&ev(100, 101, 0, flags::FAILED)),
            (1, None, 101, None)
        );
    }

    #[test]
    fn an_aggregate_decodes_into_a_record() {
        let mut sym = Symbolizer::new();
        let k = ls_mm_key {
            lock: 0x3000,
            pid: 9,
            tid: 10,
            write: 1,
            stack_id: -1,
        };
        let mut v = ls_mm_val {
            count: 2,
            wait_total: 50,
            wait_min: 20,
            wait_max: 30,
            holds: 4,
            hold_total: 400,
            hold_min: 10,
            hold_max: 200,
            acquired: 5,
            failed: 1,
            partial: 1,
            offcpu_ns: 40,
            runq_ns: 5,
            stack_id: -1,
            ..Default::default()
        };
        v.hold_hist[3] = 4;
        let r = to_record(&mut sym, &k, &v, Some("n".into()), None, |_| None);
        assert_eq!(r.source, SOURCE);
        assert_eq!(r.kind, LockKind::RwsemWrite);
        assert_eq!((r.lock, r.pid, r.tid), (0x3000, 9, 10));
        assert_eq!(r.lock_name.as_deref(), Some("n"));
        assert_eq!((r.wait.count, r.wait.total_ns, r.wait.min_ns), (2, 50, 20));
        let hold = r.hold.expect("a hold");
        assert_eq!((hold.count, hold.total_ns, hold.max_ns), (4, 400, 200));
        assert_eq!(hold.hist.slots[3], 4);
        assert_eq!((r.acquired, r.failed, r.partial), (Some(5), 1, 1));
        assert_eq!(r.split, Some(WaitSplit::from_offcpu(50, 40, 5)));
        // an aggregate without waits has no minimum
        let r = to_record(&mut sym, &k, &ls_mm_val::default(), None, None, |_| None);
        assert_eq!(r.wait.min_ns, 0);
    }

    #[test]
    fn lock_names_say_whose_mm_and_which_memcg() {
        assert_eq!(
            format_lock_name(Some((42, "db")), Some("/a"), Some("/a")),
            "mmap_lock of 42 (db)"
        );
        assert_eq!(
            format_lock_name(Some((42, "db")), Some("/mem/x"), Some("/")),
            "mmap_lock of 42 (db) [memcg /mem/x]"
        );
        assert_eq!(format_lock_name(None, None, Some("/")), "mmap_lock");
    }
}
