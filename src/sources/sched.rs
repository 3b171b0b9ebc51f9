//! The sched source: run-queue latency (how long a runnable thread waited
//! for a CPU, from its wakeup or preemption to running) per thread and per
//! CPU, at `sched_switch` from the scheduler's own accounting of every
//! enqueue (`src/bpf/sched.bpf.c` says why and how).
//!
//! Rows: `kind` [`LockKind::RunQueue`], `lock` = the CPU the thread got,
//! `lock_name` "cpu N", `wait_ns` = time runnable but not running, `slept`
//! = waits that began with a wakeup (the rest began with a preemption).
//! `--by lock` gives one row per CPU, `--by task` one per thread.

use anyhow::{Context, Result, bail};
use libbpf_rs::{MapCore, MapFlags};

use super::common;
use super::lifecycle::{self, Life, Loaded, Plan};
use super::{Options, Source, Symbolizer, comm_str};
use crate::bpf::sched::types::{ls_rq_event, ls_rq_key, ls_rq_val};
use crate::bpf::sched::{SchedSkel, SchedSkelBuilder};
use crate::model::{Event, LockKind, Record};

/// Source name of this module's rows.
pub const SOURCE: &str = "sched";

common::assert_hist_layout!(ls_rq_val, hist);
common::bpf_pod!(ls_rq_key, ls_rq_val, ls_rq_event);

/// Names of the `lost` counters, in the order of `enum ls_rq_lost`.
pub const LOST_NAMES: [&str; 3] = ["map_full", "ringbuf_dropped", "task_storage_failed"];

/// The statistic after them in the same map: arrivals whose switch-in the
/// program did not see (`LS_RQ_STAT_UNSEEN`).
const STAT_UNSEEN: u32 = 3;

/// A loaded and attached sched source.
pub struct Sched {
    core: Loaded<SchedSkel<'static>>,
    /// Slots of the `agg` array.
    max_entries: u32,
}

/// Starts the source ([`super::SourceInfo::start`]).
pub fn start(opts: &Options) -> Result<Box<dyn Source>> {
    Ok(Box::new(Sched::start(opts)?))
}

/// The `lock_name` of a CPU's run queue.
pub fn cpu_name(cpu: u64) -> String {
    format!("cpu {cpu}")
}

impl Sched {
    pub fn start(opts: &Options) -> Result<Sched> {
        let backend = match opts.backend.as_deref() {
            None | Some("tp_btf") => "tp_btf",
            Some("tp_btf-floor") => "tp_btf-floor",
            Some(other) => bail!(
                "{SOURCE} has no backend '{other}' (tp_btf only: the classic sched \
                 tracepoints pass a pid, not the task that filters and state need; \
                 tp_btf-floor attaches an empty program, for benchmarks)"
            ),
        };
        let floor = backend == "tp_btf-floor";
        if !std::path::Path::new("/proc/self/schedstat").exists() {
            bail!(
                "{SOURCE} needs CONFIG_SCHED_INFO (the kernel's run-delay accounting, \
                 /proc/PID/schedstat), which this kernel lacks"
            );
        }
        let follow = opts.targets.follow_forks;
        let plan = Plan {
            backend,
            load: &|name| match name {
                "rq_follow_fork_btf" => follow,
                "rq_switch_btf" => !floor,
                "rq_switch_empty" => floor,
                _ => false,
            },
            sized: &["agg", "agg_index"],
            lost: &LOST_NAMES,
            attach: true,
        };
        let core = lifecycle::load::<SchedSkelBuilder>(opts, &plan, |open| {
            let rodata = common::target_rodata!(open, opts, emit_events);
            rodata.nr_cpus = libbpf_rs::num_possible_cpus().context("possible CPUs")? as u32;
            Ok(())
        })?;
        Ok(Sched {
            core,
            max_entries: opts.max_entries,
        })
    }
}

impl Sched {
    /// The used slots of the `agg` array, with their keys: CPU c handed
    /// out its k-th slot at k * (possible CPUs) + c.
    fn slots(&self) -> Result<Vec<(ls_rq_key, ls_rq_val)>> {
        let zero = 0u32;
        let per_cpu = self
            .core
            .skel
            .maps
            .agg_used
            .lookup_percpu(super::as_bytes(&zero), MapFlags::ANY)
            .context("read agg_used")?
            .unwrap_or_default();
        let ncpu = per_cpu.len() as u64;
        let mut out = Vec::new();
        for (cpu, b) in per_cpu.iter().enumerate() {
            let used = u64::from(super::from_bytes::<u32>(b).unwrap_or(0));
            for k in 0..used {
                let Ok(idx) = u32::try_from(k * ncpu + cpu as u64) else {
                    break;
                };
                if idx >= self.max_entries {
                    break;
                }
                let Some(b) = self
                    .core
                    .skel
                    .maps
                    .agg
                    .lookup(super::as_bytes(&idx), MapFlags::ANY)
                    .context("read aggregation map")?
                else {
                    continue;
                };
                // a slot is counted right after it is filled in
                if let Some(v) = super::from_bytes::<ls_rq_val>(&b)
                    && v.key.tid != 0
                    && v.count != 0
                {
                    out.push((v.key, v));
                }
            }
        }
        Ok(out)
    }
}

/// A kernel aggregation entry as a model record.
fn to_record(sym: &mut Symbolizer, k: &ls_rq_key, v: &ls_rq_val) -> Record {
    let (cpu, comm) = (u64::from(k.cpu), comm_str(&v.comm));
    Record {
        lock_name: Some(cpu_name(cpu)),
        cgroup: sym.cgroup(v.cgroup_id),
        slept: v.woken,
        wait: common::wait_stats!(v),
        ..Record::new(SOURCE, LockKind::RunQueue, cpu, k.pid, k.tid, comm)
    }
}

impl Sched {
    /// A counter of the `lost` map, summed over the CPUs.
    fn counter(&self, i: u32) -> Result<u64> {
        common::percpu_u64_sum(&self.core.skel.maps.lost, i).context("read sched counters")
    }
}

impl Source for Sched {
    common::source_name_and_life!();

    fn status(&self) -> super::SourceStatus {
        let unseen = self.counter(STAT_UNSEEN).unwrap_or(0);
        super::SourceStatus {
            name: SOURCE.into(),
            backend: Some(self.core.backend().into()),
            available: true,
            // the kernel skipped the program for these switch-ins (seen
            // while other BPF programs attach and detach): each one's wait
            // is in the next seen one's
            reason: (unseen > 0).then(|| {
                format!(
                    "switch-ins not seen {unseen} (their run-queue waits are merged \
                     into the next seen wait of the same thread: totals exact, counts \
                     {unseen} short)"
                )
            }),
        }
    }

    fn records(&self, sym: &mut Symbolizer) -> Result<Vec<Record>> {
        let raw = self.slots()?;
        // a thread's name is read when its key on a CPU is created, and its
        // first switch-in comes before it can name itself: one name per
        // thread, the live one where it still runs
        let names = common::thread_names(raw.iter().map(|(k, v)| (k.pid, k.tid, v.count, &v.comm)));
        Ok(raw
            .iter()
            .map(|(k, v)| {
                let mut r = to_record(sym, k, v);
                if let Some(c) = names.get(&k.tid) {
                    r.comm = c.clone();
                }
                r
            })
            .collect())
    }

    fn decode_event(&self, data: &[u8], sym: &mut Symbolizer) -> Option<Event> {
        let e = super::from_bytes::<ls_rq_event>(data)?;
        let (cpu, comm) = (u64::from(e.cpu), comm_str(&e.comm));
        Some(Event {
            lock_name: Some(cpu_name(cpu)),
            cgroup: sym.cgroup(e.cgroup_id),
            begin_ns: e.begin_ns,
            end_ns: e.end_ns,
            wait_ns: e.end_ns.saturating_sub(e.begin_ns),
            slept: e.woken != 0,
            ..Event::new(SOURCE, LockKind::RunQueue, cpu, e.pid, e.tid, comm)
        })
    }
}
