//! The lifecycle every source shares, in one place: open the BPF object
//! (libbpf's log captured), let the source write its `.rodata`, size the
//! maps, choose the programs to load for the backend, load, fill the
//! target maps, attach every loaded program (fork followers first), keep
//! the links, open and close the window, and read the loss counters, the
//! programs' run statistics, the stack map and the event ring.
//!
//! Everything is found by the conventional names every object uses (the
//! headers under `src/bpf/` define them once): `target_pids`,
//! `target_tids`, `target_cgroup`, `lost`, `events`, `stacks`,
//! `full_stacks`, `spill_stacks`, `stack_agg`, and programs named `*follow_fork*`. A source
//! is then its [`Plan`], a `configure` step for its own settings, and its
//! decoding.

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Mutex;

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, Map, MapCore, MapFlags, MapHandle, Object, OpenObject};

use super::probes::load_error;
use super::{Options, ProgStats, as_bytes, common, prog_stats};

/// How to load one source's object.
pub struct Plan<'a> {
    /// The backend that is loading ("tp_btf", "fentry", ...), for the status.
    pub backend: &'static str,
    /// Whether a program (by name) is loaded, and attached.
    pub load: &'a dyn Fn(&str) -> bool,
    /// Maps sized to `--max-entries` (the aggregation maps).
    pub sized: &'a [&'a str],
    /// Names of the `lost` counters, in the order of the object's enum.
    pub lost: &'static [&'static str],
    /// Attach every loaded program with its own attach point (false: the
    /// source attaches them itself, e.g. uprobes on a chosen binary, and
    /// hands the links to [`Loaded::add_links`]).
    pub attach: bool,
}

/// A loaded source object and its links.
pub struct Loaded<T> {
    /// The generated skeleton: the source's typed maps and programs.
    pub skel: T,
    /// A mutex, not a cell: a source may share its object with a thread
    /// (user-locks' follower attaches new processes).
    links: Mutex<Vec<Link>>,
    backend: &'static str,
    lost: &'static [&'static str],
    events: Option<MapHandle>,
}

/// Opens, configures, loads and (per the plan) attaches a source's object.
pub fn load<B>(
    opts: &Options,
    plan: &Plan<'_>,
    configure: impl FnOnce(&mut B::Output) -> Result<()>,
) -> Result<Loaded<<B::Output as OpenSkel<'static>>::Output>>
where
    B: SkelBuilder<'static> + Default,
    <B::Output as OpenSkel<'static>>::Output: Skel<'static>,
{
    crate::libbpf_log::install();
    crate::libbpf_log::take();
    // The open object must outlive the skeleton, which lives as long as the
    // source; one small allocation per source is leaked for it.
    let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let mut open = B::default().open(storage).context("open BPF object")?;
    configure(&mut open)?;
    let ring = opts.ringbuf_bytes.next_power_of_two().max(4096);
    for mut map in open.open_object_mut().maps_mut() {
        let name = map.name().to_string_lossy().into_owned();
        let size = match name.as_str() {
            n if plan.sized.contains(&n) => Some(opts.max_entries),
            "events" => Some(if opts.emit_events { ring } else { 4096 }),
            "full_stacks" => opts.stacks.map(|s| s.storage),
            // a collision in full_stacks is taken here (maps.bpf.h ls_stackid)
            "spill_stacks" => opts.stacks.map(|s| (s.storage / 4).max(4096)),
            "stack_agg" => opts.stacks.map(|_| opts.max_entries),
            _ => None,
        };
        if let Some(size) = size {
            map.set_max_entries(size)
                .with_context(|| format!("size map {name}"))?;
        }
    }
    for mut prog in open.open_object_mut().progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        prog.set_autoload((plan.load)(&name));
    }
    let skel = open.load().map_err(|e| load_error("load", &e))?;
    let obj = skel.object();
    let find = |name: &str| obj.maps().find(|m| m.name().to_string_lossy() == name);
    fill_targets(&find, opts)?;
    let events = find("events")
        .map(|m| MapHandle::try_from(&m))
        .transpose()
        .context("event ring")?;
    let mut links = Vec::new();
    if plan.attach {
        // the fork follower first: a child forked while the other programs
        // attach is a target already
        let mut progs: Vec<_> = obj.progs_mut().filter(|p| p.autoload()).collect();
        progs.sort_by_key(|p| !p.name().to_string_lossy().contains("follow_fork"));
        for prog in progs {
            let name = prog.name().to_string_lossy().into_owned();
            links.push(
                prog.attach()
                    .map_err(|e| load_error(&format!("attach {name}"), &e))?,
            );
        }
    }
    Ok(Loaded {
        skel,
        links: Mutex::new(links),
        backend: plan.backend,
        lost: plan.lost,
        events,
    })
}

/// Fills `target_pids`, `target_tids` and `target_cgroup` where the object
/// has them (`src/bpf/target.bpf.h`).
fn fill_targets<'o>(find: &dyn Fn(&str) -> Option<Map<'o>>, opts: &Options) -> Result<()> {
    if let (Some(pids), Some(tids), Some(cgroup)) = (
        find("target_pids"),
        find("target_tids"),
        find("target_cgroup"),
    ) {
        common::fill_target_maps(&pids, &tids, &cgroup, opts)?;
    }
    Ok(())
}

impl<T: Skel<'static>> Loaded<T> {
    fn map(&self, name: &str) -> Option<Map<'_>> {
        self.skel
            .object()
            .maps()
            .find(|m| m.name().to_string_lossy() == name)
    }

    /// Links the source attached itself.
    pub fn add_links(&self, links: Vec<Link>) {
        self.links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(links);
    }

    /// The kernel or user stack behind an id of the `stacks` map.
    pub fn stack(&self, id: i32) -> Option<Vec<u64>> {
        common::stack_in(&self.map("stacks")?, &self.map("stacks_spill")?, id)
    }
}

/// What every loaded source does the same way; [`super::Source`]'s
/// lifecycle methods default to these.
pub trait Life {
    /// The loaded object.
    fn object(&self) -> &Object;
    /// The backend the object was loaded for.
    fn backend(&self) -> &'static str;
    /// Makes a process a target (a child `run` forked, a process found
    /// later).
    fn add_pid(&self, pid: u32) -> Result<()>;
    /// Hands over the links (dropping them detaches the programs).
    fn take_links(&self) -> Vec<Link>;
    /// The `lost` counters by name, and the kernel's recursion misses of
    /// the loaded programs.
    fn lost(&self) -> Result<BTreeMap<String, u64>>;
    /// Run statistics of the loaded programs.
    fn prog_stats(&self) -> Vec<ProgStats>;
    /// The event ring (stream mode).
    fn event_map(&self) -> Option<&dyn MapCore>;
}

impl<T: Skel<'static>> Life for Loaded<T> {
    fn object(&self) -> &Object {
        self.skel.object()
    }

    fn backend(&self) -> &'static str {
        self.backend
    }

    fn add_pid(&self, pid: u32) -> Result<()> {
        self.map("target_pids")
            .context("no target_pids map")?
            .update(as_bytes(&pid), &[1u8], MapFlags::ANY)
            .context("add pid to target_pids")
    }

    fn take_links(&self) -> Vec<Link> {
        std::mem::take(
            &mut *self
                .links
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn lost(&self) -> Result<BTreeMap<String, u64>> {
        let mut out = match self.map("lost") {
            Some(m) => common::read_lost(&m, self.lost)?,
            None => BTreeMap::new(),
        };
        let misses: u64 = self.prog_stats().iter().map(|s| s.recursion_misses).sum();
        out.insert("bpf_recursion_misses".into(), misses);
        Ok(out)
    }

    fn prog_stats(&self) -> Vec<ProgStats> {
        self.skel
            .object()
            .progs()
            .filter(|p| p.autoload() && p.as_fd().as_raw_fd() >= 0)
            .filter_map(|p| prog_stats(&p.name().to_string_lossy(), p.as_fd()).ok())
            .collect()
    }

    fn event_map(&self) -> Option<&dyn MapCore> {
        self.events.as_ref().map(|m| m as &dyn MapCore)
    }
}
