//! The sched-picknext source (seed 001): time the CFS scheduler spends in
//! `pick_next_task_fair`, per CPU and per task that entered the scheduler,
//! from fentry/fexit or kprobe/kretprobe (`src/bpf/picknext.bpf.c`).
//!
//! Rows: `kind` [`LockKind::PickNext`], `lock` = the CPU, `lock_name`
//! "cpu N", `wait_ns` = time inside the function, `failed` = calls that
//! found nothing fair to run. `--by lock` gives per-CPU totals, `--by task`
//! per-task ones; `report -i 1s` prints them every second.

use anyhow::{Result, bail};

use super::common;
use super::lifecycle::{self, Loaded, Plan};
use super::probes::{Backend, first_backend, fork_program, functions_present};
use super::{Options, Source, Symbolizer, comm_str};
use crate::bpf::picknext::types::{ls_pick_key, ls_pick_val};
use crate::bpf::picknext::{PicknextSkel, PicknextSkelBuilder};
use crate::model::{Event, LockKind, Record};

/// Source name of this module's rows.
pub const SOURCE: &str = "sched-picknext";
/// The probed function.
pub const FUNCTION: &str = "pick_next_task_fair";

common::assert_hist_layout!(ls_pick_val, hist);
common::bpf_pod!(ls_pick_key, ls_pick_val);

/// Names of the `lost` counters, in the order of `enum ls_plost`.
pub const LOST_NAMES: [&str; 2] = ["map_full", "return_without_entry"];

/// A loaded and attached sched-picknext source.
pub struct PickNext {
    /// Why a preferred backend failed, for the status.
    note: Option<String>,
    core: Loaded<PicknextSkel<'static>>,
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
        let probes = match backend {
            Backend::Fentry => ["pick_fentry", "pick_fexit"],
            Backend::Kprobe => ["pick_kprobe", "pick_kretprobe"],
        };
        let fork = fork_program("pick_", opts.targets.follow_forks);
        let plan = Plan {
            backend: backend.name(),
            load: &|name| probes.contains(&name) || fork.as_deref() == Some(name),
            sized: &["agg"],
            lost: &LOST_NAMES,
            attach: true,
        };
        let core = lifecycle::load::<PicknextSkelBuilder>(opts, &plan, |open| {
            common::target_rodata!(open, opts);
            Ok(())
        })?;
        Ok(PickNext { note: None, core })
    }
}

/// The `lock_name` of a CPU.
pub fn cpu_name(cpu: u32) -> String {
    format!("cpu {cpu}")
}

/// A kernel aggregation entry as a model record.
pub fn to_record(k: &ls_pick_key, v: &ls_pick_val, cgroup: Option<String>) -> Record {
    let (lock, comm) = (u64::from(k.cpu), comm_str(&v.comm));
    Record {
        lock_name: Some(cpu_name(k.cpu)),
        caller: Some(FUNCTION.into()),
        cgroup,
        wait: common::wait_stats!(v),
        failed: v.picked_none,
        ..Record::new(SOURCE, LockKind::PickNext, lock, k.pid, k.tid, comm)
    }
}

impl Source for PickNext {
    common::source_name_and_life!();

    fn note(&self) -> Option<String> {
        self.note.clone()
    }

    fn records(&self, sym: &mut Symbolizer) -> Result<Vec<Record>> {
        let raw: Vec<(ls_pick_key, ls_pick_val)> = common::entries(&self.core.skel.maps.agg)?;
        Ok(raw
            .iter()
            .map(|(k, v)| to_record(k, v, sym.cgroup(v.cgroup_id)))
            .collect())
    }

    fn decode_event(&self, _data: &[u8], _sym: &mut Symbolizer) -> Option<Event> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aggregation_entry_decodes_to_a_record() {
        let k = ls_pick_key {
            cpu: 3,
            tid: 42,
            pid: 41,
            ..Default::default()
        };
        let mut v = ls_pick_val {
            count: 4,
            total_ns: 1000,
            min_ns: 100,
            max_ns: 400,
            picked_none: 1,
            ..Default::default()
        };
        v.hist[8] = 4;
        v.comm[..2].copy_from_slice(&[b's' as i8, b'h' as i8]);
        let r = to_record(&k, &v, Some("/x".into()));
        assert_eq!((r.source, r.kind), (SOURCE, LockKind::PickNext));
        assert_eq!((r.lock, r.pid, r.tid), (3, 41, 42));
        assert_eq!(r.lock_name.as_deref(), Some("cpu 3"));
        assert_eq!(r.caller.as_deref(), Some(FUNCTION));
        assert_eq!((r.comm.as_str(), r.cgroup.as_deref()), ("sh", Some("/x")));
        assert_eq!(r.failed, 1);
        assert_eq!(
            (r.wait.count, r.wait.total_ns, r.wait.min_ns, r.wait.max_ns),
            (4, 1000, 100, 400)
        );
        assert_eq!(r.wait.hist.slots[8], 4);
        assert!(r.hold.is_none());
        let empty = to_record(
            &k,
            &ls_pick_val {
                min_ns: u64::MAX,
                ..Default::default()
            },
            None,
        );
        assert_eq!(empty.wait.min_ns, 0);
    }
}
