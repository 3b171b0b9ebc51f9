//! The sched-picknext source (seed 001): time the CFS scheduler spends in
//! `pick_next_task_fair`, per CPU and per task that entered the scheduler,
//! from fentry/fexit or kprobe/kretprobe (`src/bpf/picknext.bpf.c`).
//!
//! Rows: `kind` [`LockKind::PickNext`], `lock` = the CPU, `lock_name`
//! "cpu N", `wait_ns` = time inside the function, `failed` = calls that
//! found nothing fair to run. `--by lock` gives per-CPU totals, `--by task`
//! per-task ones; `report -i 1s` prints them every second.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result, anyhow, bail};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, OpenObject};

use super::common::{self, set_target_rodata};
use super::probes::{Backend, first_backend, fork_btf, functions_present, load_error};
use super::{Options, Pod, ProgStats, Source, Symbolizer, comm_str, prog_stats};
use crate::bpf::picknext::types::{ls_pick_key, ls_pick_val};
use crate::bpf::picknext::{OpenPicknextSkel, PicknextSkel, PicknextSkelBuilder};
use crate::model::{Event, HIST_SLOTS, LockKind, Log2Hist, Record, Stats};
use crate::status::SourceStatus;

/// Source name of this module's rows.
pub const SOURCE: &str = "sched-picknext";
/// The probed function.
pub const FUNCTION: &str = "pick_next_task_fair";

const _: () = assert!(
    std::mem::size_of::<[u64; HIST_SLOTS]>()
        == std::mem::size_of::<ls_pick_val>() - std::mem::offset_of!(ls_pick_val, hist)
);

// SAFETY: generated from lockscope.h, repr(C), integers and i8 arrays
// only, padded by hand to a multiple of 8 bytes (no implicit padding).
unsafe impl Pod for ls_pick_key {}
// SAFETY: as above.
unsafe impl Pod for ls_pick_val {}

/// Names of the `lost` counters, in the order of `enum ls_plost`.
pub const LOST_NAMES: [&str; 2] = ["map_full", "return_without_entry"];

/// A loaded and attached sched-picknext source.
pub struct PickNext {
    backend: Backend,
    note: Option<String>,
    skel: PicknextSkel<'static>,
    links: RefCell<Vec<Link>>,
}

/// Starts the source ([`super::SourceInfo::start`]).
pub fn start(opts: &Options) -> Result<Box<dyn Source>> {
    Ok(Box::new(PickNext::start(opts)?))
}

impl PickNext {
    pub fn start(opts: &Options) -> Result<PickNext> {
        if functions_present(&[FUNCTION]).is_empty() {
            bail!(
                "{FUNCTION} is not a function of this kernel (not in /proc/kallsyms: \
                 inlined or renamed)"
            );
        }
        let (mut s, note) = first_backend(SOURCE, opts.backend.as_deref(), |b| {
            Self::start_with(opts, b)
        })?;
        s.note = note;
        Ok(s)
    }

    fn start_with(opts: &Options, backend: Backend) -> Result<PickNext> {
        crate::libbpf_log::install();
        crate::libbpf_log::take();
        // The open object must outlive the skeleton, which lives as long as
        // the source; one small allocation per source is leaked for it.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open: OpenPicknextSkel<'static> = PicknextSkelBuilder::default()
            .open(storage)
            .context("open BPF object")?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| anyhow!("BPF object has no .rodata"))?;
        set_target_rodata!(&mut *rodata, opts);
        open.maps.agg.set_max_entries(opts.max_entries)?;
        let fentry = backend == Backend::Fentry;
        open.progs.pick_fentry.set_autoload(fentry);
        open.progs.pick_fexit.set_autoload(fentry);
        open.progs.pick_kprobe.set_autoload(!fentry);
        open.progs.pick_kretprobe.set_autoload(!fentry);
        let follow = opts.targets.follow_forks;
        let btf = fork_btf();
        open.progs.pick_follow_fork_btf.set_autoload(follow && btf);
        open.progs.pick_follow_fork_tp.set_autoload(follow && !btf);
        let skel = open.load().map_err(|e| load_error("load", &e))?;
        common::fill_target_maps(
            &skel.maps.target_pids,
            &skel.maps.target_tids,
            &skel.maps.target_cgroup,
            opts,
        )?;
        // the fork follower first: a child forked while the pick probes
        // attach is a target already
        let p = &skel.progs;
        let fork = if btf {
            &p.pick_follow_fork_btf
        } else {
            &p.pick_follow_fork_tp
        };
        let probes = if fentry {
            [&p.pick_fentry, &p.pick_fexit]
        } else {
            [&p.pick_kprobe, &p.pick_kretprobe]
        };
        let progs = follow.then_some(fork).into_iter().chain(probes);
        let mut links = Vec::new();
        for prog in progs {
            links.push(prog.attach().map_err(|e| {
                load_error(&format!("attach {}", prog.name().to_string_lossy()), &e)
            })?);
        }
        Ok(PickNext {
            backend,
            note: None,
            skel,
            links: RefCell::new(links),
        })
    }
}

/// The `lock_name` of a CPU.
pub fn cpu_name(cpu: u32) -> String {
    format!("cpu {cpu}")
}

/// A kernel aggregation entry as a model record.
pub fn to_record(k: &ls_pick_key, v: &ls_pick_val, cgroup: Option<String>) -> Record {
    let mut hist = Log2Hist::default();
    hist.slots.copy_from_slice(&v.hist);
    Record {
        source: SOURCE,
        kind: LockKind::PickNext,
        lock: u64::from(k.cpu),
        lock_name: Some(cpu_name(k.cpu)),
        caller: Some(FUNCTION.into()),
        pid: k.pid,
        tid: k.tid,
        comm: comm_str(&v.comm),
        cgroup,
        memcg: None,
        aborted: 0,
        spun: 0,
        slept: 0,
        wait: Stats {
            count: v.count,
            total_ns: v.total_ns,
            min_ns: if v.count == 0 { 0 } else { v.min_ns },
            max_ns: v.max_ns,
            hist,
        },
        hold: None,
        acquired: None,
        failed: v.picked_none,
        partial: 0,
        split: None,
        stacks: Vec::new(),
    }
}

impl Source for PickNext {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn status(&self) -> SourceStatus {
        SourceStatus {
            name: SOURCE.into(),
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
        let raw: Vec<(ls_pick_key, ls_pick_val)> = common::entries(&self.skel.maps.agg)?;
        Ok(raw
            .iter()
            .map(|(k, v)| to_record(k, v, sym.cgroup(v.cgroup_id)))
            .collect())
    }

    fn lost(&self) -> Result<BTreeMap<String, u64>> {
        let mut out = common::read_lost(&self.skel.maps.lost, &LOST_NAMES)?;
        let misses: u64 = self.prog_stats().iter().map(|s| s.recursion_misses).sum();
        out.insert("bpf_recursion_misses".into(), misses);
        Ok(out)
    }

    fn prog_stats(&self) -> Vec<ProgStats> {
        let p = &self.skel.progs;
        [
            &p.pick_fentry,
            &p.pick_fexit,
            &p.pick_kprobe,
            &p.pick_kretprobe,
            &p.pick_follow_fork_btf,
            &p.pick_follow_fork_tp,
        ]
        .into_iter()
        .filter(|prog| prog.as_fd().as_raw_fd() >= 0 && prog.autoload())
        .filter_map(|prog| prog_stats(&prog.name().to_string_lossy(), prog.as_fd()).ok())
        .collect()
    }

    fn event_map(&self) -> Option<&dyn MapCore> {
        None
    }

    fn decode_event(&self, _data: &[u8], _sym: &mut Symbolizer) -> Option<Event> {
        None
    }
}
