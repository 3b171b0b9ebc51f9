//! The kernel-side edges of the live deadlock detector's wait-for graph
//! (`src/bpf/kwait.bpf.c`, design note at its top): a target thread
//! blocked on a kernel mutex or a write-held rwsem waits for the lock's
//! owner; a thread asleep in a userfaultfd fault waits for the thread that
//! read the fault's message. With the user-lock edges the detector reads
//! from /proc, a cycle through the kernel is found: a pipe mutex held by a
//! thread whose fault's resolver waits for that mutex.

use std::collections::HashMap;

use crate::bpf::kwait::types::ls_kwait;
use crate::bpf::kwait::{KwaitSkel, KwaitSkelBuilder};
use crate::model::LockKind;
use crate::sources::common;
use crate::sources::lifecycle::{self, Life, Loaded, Plan};
use crate::sources::{Options, Targets};
use anyhow::Result;

common::bpf_pod!(ls_kwait);

// enum ls_kwait_kind of lockscope.h
const KWAIT_MUTEX: u32 = 0;
const KWAIT_RWSEM: u32 = 1;
const KWAIT_UFFD: u32 = 2;

/// The userfaultfd programs and the read function each one needs, in the
/// order tried (the read went from `read` to `read_iter` in Linux 6.8).
const UFFD_READS: [&str; 2] = ["kwait_read_iter", "kwait_read"];

/// A kernel-side wait of a thread: the lock (or userfaultfd) it waits for,
/// its kind, and the thread that holds it (answers it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelWait {
    pub pid: u32,
    pub tid: u32,
    pub lock: u64,
    pub owner: u32,
    pub kind: LockKind,
}

/// The loaded object, attached.
pub struct KernelWaits {
    core: Loaded<KwaitSkel<'static>>,
    /// Why faults are not followed to their resolver (no fentry), if not.
    pub uffd_missing: Option<String>,
}

impl KernelWaits {
    /// Loads and attaches the programs for the processes `targets` names;
    /// the userfaultfd ones where function probes load.
    pub fn start(targets: &Targets) -> Result<KernelWaits> {
        let opts = Options {
            targets: targets.clone(),
            ..Options::default()
        };
        let mut last_err: Option<anyhow::Error> = None;
        for read in UFFD_READS.iter().map(Some).chain([None]) {
            // no function probes at all (EPERM): the other read will not
            // load either
            if read.is_some()
                && last_err
                    .as_ref()
                    .is_some_and(|e| format!("{e:#}").contains("EPERM"))
            {
                continue;
            }
            let plan = Plan {
                backend: if read.is_some() { "fentry" } else { "tp_btf" },
                load: &|name| match name {
                    "kwait_begin" | "kwait_end" => true,
                    "kwait_follow_fork" => opts.targets.follow_forks,
                    "kwait_fault" | "kwait_fault_done" => read.is_some(),
                    n => read == Some(&n),
                },
                sized: &[],
                lost: &[],
                attach: true,
            };
            let loaded = lifecycle::load::<KwaitSkelBuilder>(&opts, &plan, |open| {
                common::target_rodata!(open, &opts);
                Ok(())
            });
            match loaded {
                Ok(core) => {
                    // live detection has no measuring window: open at once
                    crate::sources::set_window(core.object(), true);
                    let uffd_missing = match read {
                        Some(_) => None,
                        None => last_err.map(|e| format!("{e:#}")),
                    };
                    return Ok(KernelWaits { core, uffd_missing });
                }
                Err(e) if read.is_some() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        anyhow::bail!("kernel wait edges: nothing loaded")
    }

    /// The run counts and times of the loaded programs (for the report's
    /// `bpf_programs`: this is lockscope's cost too).
    pub fn programs(&self) -> Vec<crate::status::ProgStats> {
        self.core.prog_stats()
    }

    /// The kernel-side waits now, by waiting thread; a fault whose
    /// userfaultfd no thread has read from yet has no owner and is left out.
    pub fn waits(&self) -> HashMap<u32, KernelWait> {
        let maps = &self.core.skel.maps;
        let readers: HashMap<u64, u32> = common::entries::<u64, u32>(&maps.uffd_readers)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut out = HashMap::new();
        let _ = common::for_each_entry(&maps.kwaits, |tid: u32, w: ls_kwait| {
            let (kind, owner) = match w.kind {
                KWAIT_MUTEX => (LockKind::Mutex, w.owner),
                KWAIT_RWSEM => (LockKind::RwsemWrite, w.owner),
                KWAIT_UFFD => (
                    LockKind::UffdFault,
                    readers.get(&w.lock).copied().unwrap_or(0),
                ),
                _ => return,
            };
            if owner != 0 && owner != tid {
                out.insert(
                    tid,
                    KernelWait {
                        pid: w.pid,
                        tid,
                        lock: w.lock,
                        owner,
                        kind,
                    },
                );
            }
        });
        out
    }
}
