//! Live deadlock detection for the locks of traced processes: user-space
//! locks from /proc, kernel mutexes, write-held rwsems and userfaultfd
//! faults from the kernel-side edges of `kwait` (src/kwait.rs).
//!
//! Every scan (each [`SCAN_EVERY`]) reads, for each thread of each target
//! process that has two threads or more (listed each [`LIST_EVERY`]),
//! `/proc/PID/task/TID/syscall`: a thread blocked in futex(2) shows the
//! call's arguments there (the futex word's address, the op, the value it
//! waits for) and its user sp and pc. The lock word is then read from
//! `/proc/PID/mem` with the glibc 2.36 x86_64 layouts the futex source's
//! BPF checks (`classify` in src/bpf/futex.bpf.c): a pthread mutex waits
//! with FUTEX_WAIT for 2 on `__lock` (+0) and names its owner in `__owner`
//! (+8); a PI mutex waits with LOCK_PI and names its owner in the word; a
//! rwlock's writer waits with WAIT_BITSET on `__writers_futex` (+12) and a
//! reader on `__wrphase_futex` (+8), while the writer holding it is in
//! `__cur_writer` (+24). Each such wait whose word says the lock is held,
//! by a live thread of the same process, is a wait-for edge: (waiting tid
//! -> lock -> owner tid). A writer waiting for readers (no owner) and any
//! other futex wait make no edge.
//!
//! A thread waits in one futex call at a time, so each thread has at most
//! one outgoing edge and every cycle of the graph is found by following
//! edges ([`WaitGraph`]). A cycle is reported once, when every edge in it
//! has been seen (same lock, same owner) for at least the threshold
//! (default 1 s); a cycle that breaks is forgotten (one that forms again is
//! reported again). Since edges are read a thread at a time, a cycle of
//! edges that never coexisted can appear for one scan; the threshold
//! removes it.
//!
//! Each thread of a reported cycle gets a scanned stack: its pc, then the
//! words above its sp that are return addresses (they lie in an executable
//! mapping of a file, right after a call instruction), named with the
//! process's ELF symbols. It is a stack scan, not an unwinder: a stale
//! return address left on the stack can appear in it. A lock is named by
//! its ELF data symbol (a static `pthread_mutex_t`), else by the function
//! whose lock call waits for it (the first return address into another
//! file than libc's that follows a call of a `pthread_` function, as the
//! futex source finds it).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::LockKind;
use crate::procmaps::UserSymbolizer;
use crate::sources::Targets;
use crate::sources::futex::{ends_in_call, scan_caller};

/// How long every edge of a cycle must persist before it is reported.
pub const DEFAULT_THRESHOLD: Duration = Duration::from_secs(1);
/// How often the target processes' threads are read.
pub const SCAN_EVERY: Duration = Duration::from_millis(250);
/// How often the processes to scan (descendants of the targets, and their
/// number of threads) are listed again.
pub const LIST_EVERY: Duration = Duration::from_secs(1);
/// Edges (waiting threads) kept per process; past it, the others are
/// counted in [`WaitGraph::dropped`].
pub const MAX_EDGES: usize = 65_536;
/// Processes scanned (named targets and, under `run`, their descendants).
pub const MAX_PROCS: usize = 1024;
/// Deadlocks kept for the report; past it, counted only.
pub const MAX_KEPT: usize = 256;
/// Stack words read above a waiting thread's sp.
pub const STACK_WORDS: usize = 64;

#[cfg(target_arch = "x86_64")]
const NR_FUTEX: i64 = 202;
#[cfg(target_arch = "aarch64")]
const NR_FUTEX: i64 = 98;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NR_FUTEX: i64 = -2;

const FUTEX_CMD_MASK: u64 = 0x7f;
const FUTEX_WAIT: u64 = 0;
const FUTEX_LOCK_PI: u64 = 6;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_LOCK_PI2: u64 = 13;
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
const RW_WRPHASE: u32 = 1;
const RW_WRLOCKED: u32 = 2;

/// One wait-for edge: `waiter` waits for `lock`, which `owner` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge {
    pub waiter: u32,
    pub lock: u64,
    pub owner: u32,
}

/// A cycle of the graph: its edges in order (each edge's owner is the
/// next one's waiter), starting at the lowest waiter tid, and when its
/// youngest edge was first seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    pub edges: Vec<Edge>,
    pub since_ns: u64,
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    lock: u64,
    owner: u32,
    first_ns: u64,
}

/// The wait-for graph of one process (pure: fed the edges of each scan).
#[derive(Debug)]
pub struct WaitGraph {
    threshold_ns: u64,
    /// By waiting tid: the lock, its owner, when this edge was first seen.
    edges: HashMap<u32, Seen>,
    /// Cycles reported and still present (their edges, canonical order).
    reported: HashSet<Vec<Edge>>,
    /// Edges left out because the graph was full ([`MAX_EDGES`]).
    pub dropped: u64,
}

impl WaitGraph {
    pub fn new(threshold: Duration) -> WaitGraph {
        WaitGraph {
            threshold_ns: threshold.as_nanos() as u64,
            edges: HashMap::new(),
            reported: HashSet::new(),
            dropped: 0,
        }
    }

    /// Number of edges now in the graph.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// Replaces the graph with the edges of a scan made at `now_ns`: an
    /// edge seen before with the same lock and owner keeps the time it was
    /// first seen, any other starts now, and edges not seen are gone (a
    /// waiter listed twice keeps its last edge). Returns the cycles due
    /// for a report: present, every edge at least the threshold old, not
    /// reported yet. Reported cycles that broke are forgotten.
    pub fn update(&mut self, now_ns: u64, edges: impl IntoIterator<Item = Edge>) -> Vec<Cycle> {
        let mut next: HashMap<u32, Seen> = HashMap::new();
        for e in edges {
            if e.waiter == e.owner {
                continue;
            }
            if next.len() >= MAX_EDGES && !next.contains_key(&e.waiter) {
                self.dropped += 1;
                continue;
            }
            let first_ns = match self.edges.get(&e.waiter) {
                Some(s) if s.lock == e.lock && s.owner == e.owner => s.first_ns,
                _ => now_ns,
            };
            next.insert(
                e.waiter,
                Seen {
                    lock: e.lock,
                    owner: e.owner,
                    first_ns,
                },
            );
        }
        self.edges = next;
        let cycles = self.cycles();
        let present: HashSet<&Vec<Edge>> = cycles.iter().map(|c| &c.edges).collect();
        self.reported.retain(|c| present.contains(c));
        let mut due = Vec::new();
        for c in cycles {
            if now_ns.saturating_sub(c.since_ns) >= self.threshold_ns
                && self.reported.insert(c.edges.clone())
            {
                due.push(c);
            }
        }
        due
    }

    /// Every cycle now in the graph, each once (any length), ordered by
    /// its first waiter.
    pub fn cycles(&self) -> Vec<Cycle> {
        // out-degree at most 1: follow each path until it ends, reaches a
        // node done before, or comes back onto itself (a cycle)
        let mut done: HashSet<u32> = HashSet::new();
        let mut out = Vec::new();
        let mut starts: Vec<u32> = self.edges.keys().copied().collect();
        starts.sort_unstable();
        for s in starts {
            let mut path: Vec<u32> = Vec::new();
            let mut on_path: HashMap<u32, usize> = HashMap::new();
            let mut t = s;
            while !done.contains(&t) {
                let Some(e) = self.edges.get(&t) else {
                    break;
                };
                on_path.insert(t, path.len());
                path.push(t);
                t = e.owner;
                if let Some(&i) = on_path.get(&t) {
                    out.push(self.cycle_of(&path[i..]));
                    break;
                }
            }
            done.extend(path);
        }
        out.sort_by_key(|c| c.edges.first().map(|e| e.waiter));
        out
    }

    fn cycle_of(&self, waiters: &[u32]) -> Cycle {
        let lowest = waiters
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| **t)
            .map_or(0, |(i, _)| i);
        let mut edges = Vec::with_capacity(waiters.len());
        let mut since_ns = 0;
        for k in 0..waiters.len() {
            let w = waiters[(lowest + k) % waiters.len()];
            if let Some(s) = self.edges.get(&w) {
                since_ns = since_ns.max(s.first_ns);
                edges.push(Edge {
                    waiter: w,
                    lock: s.lock,
                    owner: s.owner,
                });
            }
        }
        Cycle { edges, since_ns }
    }
}

/// A detected deadlock, as the report's JSON has it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deadlock {
    pub pid: u32,
    pub comm: String,
    /// The threads of the cycle, in its order: each waits for a lock the
    /// next one holds, and the last for one the first holds.
    pub threads: Vec<DeadlockThread>,
    /// The locks of the cycle, in the same order (the lock the n-th
    /// thread waits for).
    pub locks: Vec<DeadlockLock>,
    /// How long the cycle had persisted when it was reported: since its
    /// youngest edge was first seen (a lower bound).
    pub since_ns: u64,
    /// The same in seconds.
    pub since: f64,
    /// When it was reported (CLOCK_MONOTONIC, ns).
    pub detected_ns: u64,
}

/// A thread of a deadlock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadlockThread {
    pub tid: u32,
    pub comm: String,
    /// The lock it waits for, as a hex address.
    pub waits_for_lock: String,
    pub lock_name: Option<String>,
    /// The thread that holds that lock.
    pub owner_tid: u32,
    /// Its scanned stack, innermost first: the pc, then the return
    /// addresses found above sp (`function+0xoff`, or `file+0xoff`).
    pub stack: Vec<String>,
}

/// A lock of a deadlock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadlockLock {
    /// Its address, in hex.
    pub lock: String,
    pub name: Option<String>,
    pub kind: LockKind,
    pub holder_tid: u32,
    pub waiter_tid: u32,
}

pub use crate::procmaps::{InSyscall, parse_syscall};

/// The lock a futex wait is for, its kind and the owner its words name
/// (glibc 2.36 layouts, as `classify` in src/bpf/futex.bpf.c), when they
/// say it is held by a thread; `read` fills a buffer from the process's
/// memory at an address (false: unreadable).
pub fn lock_wait(
    op: u64,
    val: u64,
    uaddr: u64,
    read: impl Fn(u64, &mut [u8]) -> bool,
) -> Option<(u64, LockKind, u32)> {
    let words = |at: u64, n: usize| -> Option<Vec<u32>> {
        let mut b = vec![0u8; n * 4];
        read(at, &mut b).then(|| {
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    };
    let held = |owner: u32| (owner != 0).then_some(owner);
    match op & FUTEX_CMD_MASK {
        FUTEX_LOCK_PI | FUTEX_LOCK_PI2 => {
            let w = words(uaddr, 1)?;
            Some((uaddr, LockKind::UserMutex, held(w[0] & FUTEX_TID_MASK)?))
        }
        FUTEX_WAIT if val == 2 => {
            // __lock, __count, __owner, __nusers, __kind
            let w = words(uaddr, 5)?;
            let mutex = w[3] >= 1 && w[3] < (1 << 16) && w[4] < 0x400;
            (mutex && w[0] != 0).then_some(())?;
            Some((uaddr, LockKind::UserMutex, held(w[2])?))
        }
        FUTEX_WAIT_BITSET if val == 3 => {
            // the rwlock's words from uaddr - 12: a writer waits on
            // __writers_futex (+12), a reader on __wrphase_futex (+8)
            let w = words(uaddr.checked_sub(12)?, 9)?;
            let pads_ok = |r: usize| w[r + 4] == 0 && w[r + 5] == 0 && w[r + 7] <= 1;
            let both = RW_WRPHASE | RW_WRLOCKED;
            if w[0] & both == both && pads_ok(0) {
                return Some((uaddr - 12, LockKind::UserRwlockWrite, held(w[6])?));
            }
            if w[1] & both == both && pads_ok(1) {
                return Some((uaddr - 8, LockKind::UserRwlockRead, held(w[7])?));
            }
            None
        }
        _ => None,
    }
}

/// CLOCK_MONOTONIC now, in ns (the clock of the workloads' truths).
pub fn monotonic_ns() -> u64 {
    crate::units::now_ns()
}

/// A waiting thread of a scan: its edge, the lock's kind, its sp and pc.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    edge: Edge,
    kind: LockKind,
    sp: u64,
    pc: u64,
}

fn tids_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The number of threads of `pid` now (/proc/PID/stat; 0: gone).
fn num_threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // after the ")" that ends comm: state is field 3, num_threads 20
            s.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(17)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn comm_of(pid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The waits for held locks of one process's threads (`tids`), now.
fn scan_process(pid: u32, tids: Vec<u32>) -> Vec<Waiting> {
    let live: HashSet<u32> = tids.iter().copied().collect();
    let mut mem: Option<std::fs::File> = None;
    let mut out = Vec::new();
    for tid in tids {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")) else {
            continue;
        };
        let Some(s) = parse_syscall(&text) else {
            continue;
        };
        if s.nr != NR_FUTEX {
            continue;
        }
        if mem.is_none() {
            mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok();
        }
        let Some(m) = &mem else {
            return out;
        };
        let read = |at: u64, b: &mut [u8]| m.read_exact_at(b, at).is_ok();
        if let Some((lock, kind, owner)) = lock_wait(s.args[1], s.args[2], s.args[0], read)
            && owner != tid
            && live.contains(&owner)
        {
            out.push(Waiting {
                edge: Edge {
                    waiter: tid,
                    lock,
                    owner,
                },
                kind,
                sp: s.sp,
                pc: s.pc,
            });
        }
    }
    out
}

/// The kernel-side waits of `pid`'s threads (`kwait`) as waiting threads:
/// their user sp and pc from /proc (a thread blocked in the kernel is in
/// a system call, or a fault: then none).
fn kernel_waiting(pid: u32, kernel: &HashMap<u32, crate::kwait::KernelWait>) -> Vec<Waiting> {
    kernel
        .values()
        .filter(|k| k.pid == pid)
        .map(|k| {
            let s = std::fs::read_to_string(format!("/proc/{pid}/task/{}/syscall", k.tid))
                .ok()
                .and_then(|t| parse_syscall(&t));
            Waiting {
                edge: Edge {
                    waiter: k.tid,
                    lock: k.lock,
                    owner: k.owner,
                },
                kind: k.kind,
                sp: s.map_or(0, |s| s.sp),
                pc: s.map_or(0, |s| s.pc),
            }
        })
        .collect()
}

/// The kernel stack of a thread blocked in the kernel (/proc/PID/task/TID/
/// stack, root): `function+0xoff [kernel]`, innermost first.
fn kernel_stack(pid: u32, tid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stack"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f = l.split_whitespace().nth(1)?;
            let f = f.split_once('/').map_or(f, |(f, _)| f);
            Some(format!("{f} [kernel]"))
        })
        .collect()
}

/// Whether a wait of this kind is the kernel's (`kwait`), not a futex's.
fn in_kernel(kind: LockKind) -> bool {
    matches!(
        kind,
        LockKind::Mutex | LockKind::RwsemWrite | LockKind::UffdFault
    )
}

/// The executable file mappings of a process: (start, end).
fn exec_maps(pid: u32) -> Vec<(u64, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (lo, hi) = it.next()?.split_once('-')?;
            if !it.next()?.contains('x') || !it.nth(3)?.starts_with('/') {
                return None;
            }
            Some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
            ))
        })
        .collect()
}

/// A waiting thread's scanned stack (innermost first) and the return
/// address of its lock call (None: not found), read from the live process.
fn scan_stack(pid: u32, w: &Waiting, syms: &Mutex<UserSymbolizer>) -> (Vec<u64>, Option<u64>) {
    let Ok(mem) = std::fs::File::open(format!("/proc/{pid}/mem")) else {
        return (vec![w.pc], None);
    };
    let mut b = vec![0u8; STACK_WORDS * 8];
    if mem.read_exact_at(&mut b, w.sp).is_err() {
        return (vec![w.pc], None);
    }
    let words: Vec<u64> = b
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    let exec = exec_maps(pid);
    let mut frames = vec![w.pc];
    for &a in &words {
        let mut ins = [0u8; 7];
        if a >= 7
            && exec.iter().any(|m| a >= m.0 && a < m.1)
            && mem.read_exact_at(&mut ins, a - 7).is_ok()
            && ends_in_call(&ins)
        {
            frames.push(a);
        }
    }
    (frames, scan_caller(pid, w.pc, &words, syms))
}

/// The deadlock detector of `report` and `run`: the wait-for graphs of
/// the target processes, scanned every [`SCAN_EVERY`] by [`Detector::tick`].
pub struct Detector {
    pids: Vec<u32>,
    /// Descendants of the targets are scanned too (`run`).
    follow: bool,
    threshold: Duration,
    graphs: HashMap<u32, WaitGraph>,
    last: Option<Instant>,
    /// The processes to scan and their number of threads, as last listed
    /// (at `listed`).
    procs: Vec<(u32, usize)>,
    listed: Option<Instant>,
    syms: Mutex<UserSymbolizer>,
    found: Vec<Deadlock>,
    /// Deadlocks found past [`MAX_KEPT`].
    pub not_kept: u64,
    /// Whether [`Detector::tick`] prints what it finds on stderr (not
    /// under `top`'s screen).
    print: bool,
    /// The kernel-side edges (`kwait`): kernel mutexes, write-held rwsems,
    /// userfaultfd faults; None when they could not be loaded.
    kernel: Option<crate::kwait::KernelWaits>,
    /// What of the kernel-side edges is missing, and why.
    pub kernel_note: Option<String>,
}

impl Detector {
    /// A detector for the processes the targets name (`-p`, the processes
    /// of `-t` threads, `run`'s command); it does nothing without them
    /// (nothing is scanned system-wide).
    pub fn for_targets(t: &Targets) -> Detector {
        let mut pids = t.pids.clone();
        for tid in &t.tids {
            let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
            let tgid = status
                .lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse::<u32>().ok());
            pids.extend(tgid);
        }
        pids.sort_unstable();
        pids.dedup();
        let (kernel, kernel_note) = if pids.is_empty() {
            (None, None)
        } else {
            let kt = Targets {
                pids: pids.clone(),
                follow_forks: t.follow_forks,
                ..Targets::default()
            };
            match crate::kwait::KernelWaits::start(&kt) {
                Ok(k) => {
                    let note = k.uffd_missing.as_ref().map(|e| {
                        format!("waits for a userfaultfd fault's resolver are not seen: {e}")
                    });
                    (Some(k), note)
                }
                Err(e) => (
                    None,
                    Some(format!("waits on kernel locks are not seen: {e:#}")),
                ),
            }
        };
        Detector {
            kernel,
            kernel_note,
            pids,
            follow: t.follow_forks,
            threshold: DEFAULT_THRESHOLD,
            graphs: HashMap::new(),
            last: None,
            procs: Vec::new(),
            listed: None,
            syms: Mutex::new(UserSymbolizer::default()),
            found: Vec::new(),
            not_kept: 0,
            print: true,
        }
    }

    /// The same detector, printing nothing on stderr (`top` draws its
    /// screen there and shows deadlocks itself).
    pub fn quiet(mut self) -> Detector {
        self.print = false;
        self
    }

    /// The target processes it scans (none: it does nothing).
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Whether a deadlock it reported is still there: its cycle (same
    /// threads, locks and owners) was in the graph at the last scan.
    pub fn is_live(&self, d: &Deadlock) -> bool {
        let Some(g) = self.graphs.get(&d.pid) else {
            return false;
        };
        let edges: Option<Vec<Edge>> = d
            .threads
            .iter()
            .map(|t| {
                let hex = t.waits_for_lock.strip_prefix("0x")?;
                Some(Edge {
                    waiter: t.tid,
                    lock: u64::from_str_radix(hex, 16).ok()?,
                    owner: t.owner_tid,
                })
            })
            .collect();
        edges.is_some_and(|e| g.reported.contains(&e))
    }

    /// The processes to scan, listed now: the targets, and their live
    /// descendants when following forks; each with its number of threads.
    fn processes(&self) -> Vec<(u32, usize)> {
        let mut out: Vec<(u32, usize)> = Vec::new();
        let mut todo = self.pids.clone();
        let mut i = 0;
        while i < todo.len() && out.len() < MAX_PROCS {
            let p = todo[i];
            i += 1;
            if out.iter().any(|(q, _)| *q == p) {
                continue;
            }
            let tids = tids_of(p);
            if self.follow {
                for tid in &tids {
                    let kids = std::fs::read_to_string(format!("/proc/{p}/task/{tid}/children"))
                        .unwrap_or_default();
                    todo.extend(
                        kids.split_whitespace()
                            .filter_map(|k| k.parse::<u32>().ok()),
                    );
                }
            }
            out.push((p, tids.len()));
        }
        out.sort_unstable();
        out
    }

    /// Scans the processes when a scan is due; a deadlock found is printed
    /// on stderr at once and kept for the report. The processes are listed
    /// every [`LIST_EVERY`]; at each scan only those with two threads or
    /// more are read thread by thread (a wait-for edge joins two live
    /// threads of one process, so a single-threaded one has none), and a
    /// single-threaded one costs one read of its thread count.
    pub fn tick(&mut self) {
        if self.pids.is_empty() || self.last.is_some_and(|t| t.elapsed() < SCAN_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        if self.listed.is_none_or(|t| t.elapsed() >= LIST_EVERY) {
            self.listed = Some(Instant::now());
            self.procs = self.processes();
            let procs = &self.procs;
            self.graphs
                .retain(|p, _| procs.binary_search_by_key(p, |(q, _)| *q).is_ok());
        }
        let kernel = self.kernel.as_ref().map(|k| k.waits()).unwrap_or_default();
        for i in 0..self.procs.len() {
            let (pid, mut threads) = self.procs[i];
            if threads < 2 {
                // one small read: a process that has started threads since
                // the listing is read now, not a listing later
                threads = num_threads(pid);
                self.procs[i].1 = threads;
            }
            let waiting = if threads >= 2 {
                let tids = tids_of(pid);
                self.procs[i].1 = tids.len();
                let mut w = scan_process(pid, tids);
                w.extend(kernel_waiting(pid, &kernel));
                w
            } else {
                Vec::new()
            };
            let now = monotonic_ns();
            let graph = self
                .graphs
                .entry(pid)
                .or_insert_with(|| WaitGraph::new(self.threshold));
            if waiting.is_empty() && graph.is_empty() {
                continue;
            }
            let due = graph.update(now, waiting.iter().map(|w| w.edge));
            for c in due {
                let d = self.describe(pid, &c, &waiting, now);
                if self.print {
                    eprint!("{}", render(&d));
                }
                if self.found.len() < MAX_KEPT {
                    self.found.push(d);
                } else {
                    self.not_kept += 1;
                }
            }
        }
    }

    fn describe(&self, pid: u32, c: &Cycle, waiting: &[Waiting], now: u64) -> Deadlock {
        // the process's maps as they are now (it may have exec'd since
        // they were read)
        self.syms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remember(pid);
        let name = |a: u64| {
            self.syms
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .name(pid, a)
        };
        let mut threads = Vec::new();
        let mut locks = Vec::new();
        for e in &c.edges {
            let w = waiting.iter().find(|w| w.edge == *e);
            let kind = w.map_or(LockKind::UserMutex, |w| w.kind);
            let (frames, caller) = w
                .filter(|w| w.sp != 0)
                .map_or((Vec::new(), None), |w| scan_stack(pid, w, &self.syms));
            let symbol = if in_kernel(kind) {
                Some(
                    match kind {
                        LockKind::Mutex => "kernel mutex",
                        LockKind::RwsemWrite => "kernel rwsem, held for writing",
                        _ => "userfaultfd fault, answered by the thread that read it",
                    }
                    .to_string(),
                )
            } else {
                self.syms
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .data_name(pid, e.lock)
            };
            let lock_name = symbol.or_else(|| {
                let f = name(caller?)?;
                let f = f
                    .rsplit_once("+0x")
                    .map_or(f.clone(), |(f, _)| f.to_string());
                Some(format!("waited for in {f}"))
            });
            let mut stack = if in_kernel(kind) {
                kernel_stack(pid, e.waiter)
            } else {
                Vec::new()
            };
            stack.extend(
                frames
                    .iter()
                    .map(|&a| name(a).unwrap_or_else(|| format!("{a:#x}"))),
            );
            threads.push(DeadlockThread {
                tid: e.waiter,
                comm: comm_of(pid, e.waiter),
                waits_for_lock: format!("{:#x}", e.lock),
                lock_name: lock_name.clone(),
                owner_tid: e.owner,
                stack,
            });
            locks.push(DeadlockLock {
                lock: format!("{:#x}", e.lock),
                name: lock_name,
                kind,
                holder_tid: e.owner,
                waiter_tid: e.waiter,
            });
        }
        let since_ns = now.saturating_sub(c.since_ns);
        Deadlock {
            pid,
            comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            threads,
            locks,
            since_ns,
            since: since_ns as f64 / 1e9,
            detected_ns: now,
        }
    }

    /// The run counts and times of the kernel-side programs (none when
    /// they are not loaded).
    pub fn programs(&self) -> Vec<crate::status::ProgStats> {
        self.kernel
            .as_ref()
            .map(|k| k.programs())
            .unwrap_or_default()
    }

    /// The deadlocks found so far, taken (each is reported in one report).
    pub fn take(&mut self) -> Vec<Deadlock> {
        std::mem::take(&mut self.found)
    }
}

/// The stderr block of a deadlock: one line with the cycle, then each
/// thread's scanned stack.
pub fn render(d: &Deadlock) -> String {
    use std::fmt::Write;
    let lock = |t: &DeadlockThread| match &t.lock_name {
        Some(n) => format!("{} ({n})", t.waits_for_lock),
        None => t.waits_for_lock.clone(),
    };
    let hops: Vec<String> = d
        .threads
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if d.locks
                .get(i)
                .is_some_and(|l| l.kind == LockKind::UffdFault)
            {
                format!(
                    "thread {} ({}) waits in a userfaultfd fault ({}) for thread {} to answer it",
                    t.tid, t.comm, t.waits_for_lock, t.owner_tid
                )
            } else {
                format!(
                    "thread {} ({}) waits for lock {} held by thread {}",
                    t.tid,
                    t.comm,
                    lock(t),
                    t.owner_tid
                )
            }
        })
        .collect();
    let mut s = format!(
        "lockscope: DEADLOCK in pid {} ({}): {}; since {:.1} s\n",
        d.pid,
        d.comm,
        hops.join("; "),
        d.since
    );
    for t in &d.threads {
        let _ = writeln!(s, "  thread {} ({}), scanned stack:", t.tid, t.comm);
        for f in &t.stack {
            let _ = writeln!(s, "    {f}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn e(waiter: u32, lock: u64, owner: u32) -> Edge {
        Edge {
            waiter,
            lock,
            owner,
        }
    }

    #[test]
    fn a_two_cycle_is_reported_once_when_every_edge_is_a_threshold_old() {
        let mut g = WaitGraph::new(Duration::from_secs(1));
        let abba = [e(10, 0xa, 11), e(11, 0xb, 10)];
        assert!(g.update(0, abba).is_empty());
        assert!(g.update(S / 2, abba).is_empty());
        let due = g.update(S, abba);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].edges, abba.to_vec());
        assert_eq!(due[0].since_ns, 0);
        // reported once while it lasts
        assert!(g.update(2 * S, abba).is_empty());
        assert!(g.update(3 * S, abba).is_empty());
    }

    #[test]
    fn the_youngest_edge_decides_and_a_changed_owner_starts_over() {
        let mut g = WaitGraph::new(Duration::from_secs(1));
        g.update(0, [e(10, 0xa, 11)]);
        // the second edge appears later: the cycle is as old as it
        assert!(g.update(S / 2, [e(10, 0xa, 11), e(11, 0xb, 10)]).is_empty());
        assert!(g.update(S, [e(10, 0xa, 11), e(11, 0xb, 10)]).is_empty());
        let due = g.update(S / 2 + S, [e(10, 0xa, 11), e(11, 0xb, 10)]);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].since_ns, S / 2);
        // same waiter, another owner: a new edge, a new cycle later
        let mut g = WaitGraph::new(Duration::from_secs(1));
        g.update(0, [e(1, 0xa, 2), e(2, 0xb, 1)]);
        assert!(g.update(S, [e(1, 0xa, 3), e(3, 0xc, 1)]).is_empty());
        assert_eq!(g.update(2 * S, [e(1, 0xa, 3), e(3, 0xc, 1)]).len(), 1);
    }

    #[test]
    fn three_cycles_and_longer_are_found_in_a_canonical_order() {
        let mut g = WaitGraph::new(Duration::ZERO);
        let c3 = [e(7, 0x3, 5), e(5, 0x1, 6), e(6, 0x2, 7)];
        let due = g.update(0, c3);
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].edges,
            vec![e(5, 0x1, 6), e(6, 0x2, 7), e(7, 0x3, 5)],
            "starts at the lowest tid, in wait order"
        );
        let n = 50u32;
        let ring: Vec<Edge> = (0..n)
            .map(|i| e(100 + i, u64::from(i), 100 + (i + 1) % n))
            .collect();
        let mut g = WaitGraph::new(Duration::ZERO);
        let due = g.update(0, ring.clone());
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].edges, ring);
    }

    #[test]
    fn chains_into_a_cycle_and_trees_are_not_cycles() {
        let mut g = WaitGraph::new(Duration::ZERO);
        // 1 -> 2 -> 3 -> 4 (4 waits for nothing), 5 -> 3, 6 -> 7 <-> 8
        let edges = [
            e(1, 0xa, 2),
            e(2, 0xb, 3),
            e(3, 0xc, 4),
            e(5, 0xd, 3),
            e(6, 0xe, 7),
            e(7, 0xf, 8),
            e(8, 0x10, 7),
        ];
        let due = g.update(0, edges);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].edges, vec![e(7, 0xf, 8), e(8, 0x10, 7)]);
        // two disjoint cycles at once
        let mut g = WaitGraph::new(Duration::ZERO);
        let due = g.update(
            0,
            [e(1, 1, 2), e(2, 2, 1), e(3, 3, 4), e(4, 4, 5), e(5, 5, 3)],
        );
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].edges.len(), 2);
        assert_eq!(due[1].edges.len(), 3);
        // a thread "waiting" for itself is no edge
        let mut g = WaitGraph::new(Duration::ZERO);
        assert!(g.update(0, [e(1, 1, 1)]).is_empty());
        assert!(g.is_empty());
    }

    #[test]
    fn a_broken_cycle_is_forgotten_and_reported_again_when_it_reforms() {
        let mut g = WaitGraph::new(Duration::from_secs(1));
        let abba = [e(10, 0xa, 11), e(11, 0xb, 10)];
        g.update(0, abba);
        assert_eq!(g.update(S, abba).len(), 1);
        // one edge goes (the thread was woken): the cycle is gone
        assert!(g.update(2 * S, [e(10, 0xa, 11)]).is_empty());
        assert!(g.cycles().is_empty());
        assert!(g.update(3 * S, abba).is_empty(), "new edge: not old yet");
        assert_eq!(g.update(4 * S, abba).len(), 1);
        // and a scan with no waits empties the graph
        g.update(5 * S, []);
        assert!(g.is_empty());
    }

    #[test]
    fn a_reported_deadlock_is_live_while_its_cycle_lasts() {
        let mut det = Detector::for_targets(&Targets::default());
        let abba = [e(10, 0xa0, 11), e(11, 0xb0, 10)];
        let mut g = WaitGraph::new(Duration::ZERO);
        assert_eq!(g.update(0, abba).len(), 1);
        det.graphs.insert(5, g);
        let t = |tid, lock: &str, owner| DeadlockThread {
            tid,
            comm: String::new(),
            waits_for_lock: lock.into(),
            lock_name: None,
            owner_tid: owner,
            stack: Vec::new(),
        };
        let d = Deadlock {
            pid: 5,
            comm: String::new(),
            threads: vec![t(10, "0xa0", 11), t(11, "0xb0", 10)],
            locks: Vec::new(),
            since_ns: 0,
            since: 0.0,
            detected_ns: 0,
        };
        assert!(det.is_live(&d));
        // another process, another owner: not this cycle
        assert!(!det.is_live(&Deadlock {
            pid: 6,
            ..d.clone()
        }));
        let mut other = d.clone();
        other.threads[1].owner_tid = 12;
        assert!(!det.is_live(&other));
        // the cycle breaks: over
        if let Some(g) = det.graphs.get_mut(&5) {
            g.update(1, [e(10, 0xa0, 11)]);
        }
        assert!(!det.is_live(&d));
    }

    #[test]
    fn the_graph_is_bounded() {
        let mut g = WaitGraph::new(Duration::ZERO);
        let n = MAX_EDGES as u32 + 10;
        g.update(0, (1..=n).map(|i| e(i, u64::from(i), i + 1)));
        assert_eq!(g.len(), MAX_EDGES);
        assert_eq!(g.dropped, 10);
    }

    #[test]
    fn syscall_files_parse_and_running_threads_are_none() {
        let s = parse_syscall(
            "202 0x55d0c0a04040 0x80 0x2 0x0 0x0 0x0 0x7ffc9b2f1e58 0x7f5b1a2c4d8e\n",
        )
        .expect("in futex");
        assert_eq!(s.nr, 202);
        assert_eq!(s.args, [0x55d0c0a04040, 0x80, 2, 0, 0, 0]);
        assert_eq!((s.sp, s.pc), (0x7ffc9b2f1e58, 0x7f5b1a2c4d8e));
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffc9b2f1e58 0x7f5b1a2c4d8e\n"), None);
        assert_eq!(parse_syscall("202 0x1 0x2\n"), None);
    }

    /// A fake address space: words (u32, little-endian) from `base`.
    fn mem(base: u64, words: &[u32]) -> impl Fn(u64, &mut [u8]) -> bool + use<> {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        move |at: u64, b: &mut [u8]| {
            let Some(off) = at.checked_sub(base) else {
                return false;
            };
            let off = off as usize;
            if off + b.len() > bytes.len() {
                return false;
            }
            b.copy_from_slice(&bytes[off..off + b.len()]);
            true
        }
    }

    #[test]
    fn mutex_waits_name_the_owner_in_the_word() {
        // __lock 2 (contended), __count 0, __owner 4242, __nusers 1, __kind 0
        let m = mem(0x1000, &[2, 0, 4242, 1, 0]);
        assert_eq!(
            lock_wait(0x80, 2, 0x1000, &m),
            Some((0x1000, LockKind::UserMutex, 4242))
        );
        // FUTEX_WAIT for another value (a condvar, a join): no edge
        assert_eq!(lock_wait(0x80, 0, 0x1000, &m), None);
        // not a mutex layout (libc's lll locks): no owner, no edge
        assert_eq!(
            lock_wait(0x80, 2, 0x1000, mem(0x1000, &[2, 0, 0, 0, 0])),
            None
        );
        // released meanwhile (__owner cleared): no edge
        assert_eq!(
            lock_wait(0x80, 2, 0x1000, mem(0x1000, &[2, 0, 0, 1, 0])),
            None
        );
        // unreadable: no edge
        assert_eq!(lock_wait(0x80, 2, 0x9000, &m), None);
        // a PI mutex: the owner is in the word (with FUTEX_WAITERS)
        let pi = mem(0x2000, &[0x8000_0000 | 77]);
        assert_eq!(
            lock_wait(6 | 128, 0, 0x2000, &pi),
            Some((0x2000, LockKind::UserMutex, 77))
        );
    }

    #[test]
    fn rwlock_waits_name_the_writer_holding_it() {
        // a pthread_rwlock_t at 0x3000: __readers WRPHASE|WRLOCKED,
        // __writers 1, __wrphase_futex 1, __writers_futex 3, pads 0,
        // __cur_writer 99, __shared 0
        let rw = [3, 1, 1, 3, 0, 0, 99, 0, 0, 0];
        let m = mem(0x3000 - 4, &[&[0u32][..], &rw[..]].concat());
        // a writer on __writers_futex (+12)
        assert_eq!(
            lock_wait(9 | 128, 3, 0x300c, &m),
            Some((0x3000, LockKind::UserRwlockWrite, 99))
        );
        // a reader on __wrphase_futex (+8)
        assert_eq!(
            lock_wait(9 | 128, 3, 0x3008, &m),
            Some((0x3000, LockKind::UserRwlockRead, 99))
        );
        // a writer waiting for readers (val 2): no owner, no edge
        assert_eq!(lock_wait(9 | 128, 2, 0x3008, &m), None);
    }

    #[test]
    fn the_stderr_block_names_every_hop_and_frame() {
        let t = |tid, lock: &str, name: &str, owner| DeadlockThread {
            tid,
            comm: format!("w{tid}"),
            waits_for_lock: lock.into(),
            lock_name: Some(name.into()),
            owner_tid: owner,
            stack: vec!["__lll_lock_wait+0x2a".into(), "f+0x10".into()],
        };
        let d = Deadlock {
            pid: 5,
            comm: "app".into(),
            threads: vec![t(6, "0xa0", "A", 7), t(7, "0xb0", "B", 6)],
            locks: Vec::new(),
            since_ns: 1_260_000_000,
            since: 1.26,
            detected_ns: 0,
        };
        let s = render(&d);
        let first = s.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            "lockscope: DEADLOCK in pid 5 (app): thread 6 (w6) waits for lock 0xa0 (A) \
             held by thread 7; thread 7 (w7) waits for lock 0xb0 (B) held by thread 6; \
             since 1.3 s"
        );
        assert_eq!(s.lines().filter(|l| l.contains("scanned stack")).count(), 2);
        assert!(s.contains("    f+0x10\n"));
    }
}
