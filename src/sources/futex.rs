//! `futex`: futex waits from the syscall tracepoints (`src/bpf/futex.bpf.c`,
//! design note at its top): per (futex address, thread, kind) wait time,
//! woken vs timed out vs interrupted. Each wait is told apart at its start
//! from glibc's layouts: pthread mutex (and libc's own lll locks, PI
//! mutexes), rwlock read / write, condition variable (not a lock), other
//! (Rust std, Go, Java, thread joins...). Lock waits are rows of their own
//! `source` (`futex-mutex`, `futex-rwlock`) ranked with kernel contention;
//! condvar and other waits stay `futex` rows, in the futex section. The
//! holder of a lock wait is the thread that woke it (the releaser), else the
//! owner the lock word named when the wait began. Only waits that sleep are
//! seen: an uncontended lock never enters the kernel, and spinning before
//! the futex call is not seen.
//!
//! Locks are named as `user-locks` names them (`locknames`): a static
//! one by its symbol, a heap one by the function whose lock call first
//! waited on it, found in the user stack of the first wait of each lock
//! key (with `--caller first`, the default): a copy of the stack words
//! above sp, searched for the first return address into another file
//! than libc's (glibc has no frame pointers to walk).
//!
//! Waits inside a traced pthread lock call are that call's wait (the
//! `user-locks` source counts them), so this source skips them: both
//! objects use one per-task map (`ulock_call`, shared by fd).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, Result, bail};
use libbpf_rs::{Link, MapCore, MapFlags};

use super::common;
use super::lifecycle::{self, Life, Loaded, Plan};
use super::locknames::{LockToName, name_locks};
use super::{
    Options, Source, Symbolizer, TracefsGuard, as_bytes, comm_str, from_bytes, tracefs_mounted,
    tracepoint_exists,
};
use crate::bpf::futex::types::{
    ls_fagg_key, ls_fagg_val, ls_fasleep, ls_fevent, ls_fholder_key, ls_fholder_val, ls_fscan,
};
use crate::bpf::futex::{FutexSkel, FutexSkelBuilder};
use crate::model::{Event, HolderRow, LockKind, Record, WaitSplit};
use crate::procmaps::UserSymbolizer;
use crate::status::SourceStatus;

/// Name of the source, and `source` of its non-lock rows (condvar, other).
pub const SOURCE: &str = "futex";
/// The default backend: waits seen from the scheduler (tp_btf
/// sched_switch and sched_waking), costing only when a task sleeps or
/// wakes; timeouts are the waits woken from interrupt context, and calls
/// that return without sleeping are not seen.
pub const BACKEND_SCHED: &str = "tp_btf";
/// The syscall tracepoints: every futex call's result (woken, timed out,
/// interrupted, value changed), at the cost of putting every syscall of
/// every process on the kernel's syscall-tracing path.
pub const BACKEND_SYSCALLS: &str = "tracepoint";
/// `source` of its lock rows: pthread mutex (and lll / PI locks) waits.
pub const ROW_MUTEX: &str = "futex-mutex";
/// `source` of its lock rows: pthread rwlock waits.
pub const ROW_RWLOCK: &str = "futex-rwlock";

// enum ls_fkind of lockscope.h
const FKIND_OTHER: u32 = 0;
const FKIND_MUTEX: u32 = 1;
const FKIND_RD: u32 = 2;
const FKIND_WR: u32 = 3;
const FKIND_COND: u32 = 4;

/// The kind and row `source` of an `enum ls_fkind`.
pub fn kind_of(k: u32) -> (LockKind, &'static str) {
    match k {
        FKIND_MUTEX => (LockKind::UserMutex, ROW_MUTEX),
        FKIND_RD => (LockKind::UserRwlockRead, ROW_RWLOCK),
        FKIND_WR => (LockKind::UserRwlockWrite, ROW_RWLOCK),
        FKIND_COND => (LockKind::UserCond, SOURCE),
        _ => (LockKind::Futex, SOURCE),
    }
}

// LS_UEV_* flags of lockscope.h
const EV_SLEPT: u32 = 4;
const EV_PARTIAL: u32 = 8;

common::bpf_pod!(
    ls_fasleep,
    ls_fagg_key,
    ls_fagg_val,
    ls_fevent,
    ls_fholder_key,
    ls_fholder_val,
    ls_fscan
);

/// Whether a kind is a lock's (named after its first caller too).
fn is_lock(kind: u32) -> bool {
    matches!(kind, FKIND_MUTEX | FKIND_RD | FKIND_WR)
}

/// Whether `b`, the 7 bytes before a return address, end in an x86-64
/// call instruction: `call rel32`, `call *disp32(%rip)` (through the GOT),
/// `call *disp32(%reg)`, `call *disp8(%reg)`, `call *%reg`.
pub fn ends_in_call(b: &[u8; 7]) -> bool {
    // ModRM of `ff /2`: reg field 2; mod and rm say which operand
    let call = |m: u8| (m >> 3) & 7 == 2;
    b[2] == 0xe8
        || (b[1] == 0xff && call(b[2]) && (b[2] >> 6 == 2 || b[2] & 0xc7 == 0x05))
        || (b[4] == 0xff && call(b[5]) && b[5] >> 6 == 1 && b[5] & 7 != 4)
        || (b[5] == 0xff && call(b[6]) && b[6] >> 6 == 3)
}

fn read_u64(mem: &std::fs::File, at: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, at).ok()?;
    Some(u64::from_le_bytes(b))
}

fn rel32(b: &[u8]) -> i64 {
    i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Where the call before return address `ret` (its 7 bytes before: `b`)
/// went, through a PLT stub or GOT slot to the function itself; None
/// for other calls (through a register: unknown).
fn call_target(mem: &std::fs::File, ret: u64, b: &[u8; 7]) -> Option<u64> {
    let t = if b[2] == 0xe8 {
        ret.checked_add_signed(rel32(&b[3..]))?
    } else if b[1] == 0xff && b[2] == 0x15 {
        read_u64(mem, ret.checked_add_signed(rel32(&b[3..]))?)?
    } else {
        return None;
    };
    // a PLT stub: [endbr64] [bnd] jmp *disp32(%rip)
    let mut p = [0u8; 11];
    mem.read_exact_at(&mut p, t).ok()?;
    let mut i = if p[..4] == [0xf3, 0x0f, 0x1e, 0xfa] {
        4
    } else {
        0
    };
    if p[i] == 0xf2 {
        i += 1;
    }
    if p[i] == 0xff && p[i + 1] == 0x25 {
        let next = t + i as u64 + 6;
        return read_u64(mem, next.checked_add_signed(rel32(&p[i + 2..]))?);
    }
    Some(t)
}

/// The caller of a lock call from the stack copy of its futex wait: the
/// first word above sp that lies in an executable mapping of another file
/// than ip's (libc) and follows a direct or GOT call (read from the live
/// process) of a `pthread_` function of that file: the lock call (a stale
/// return address left in libc's frames by an earlier call goes
/// elsewhere). None when the process is gone or no word qualifies (a lock
/// call through a function pointer, libc's internal locks). `ip`, `words`:
/// the wait's user ip and the stack words above its sp (also the
/// deadlock detector's, read from /proc).
pub(crate) fn scan_caller(
    pid: u32,
    ip: u64,
    words: &[u64],
    syms: &Mutex<UserSymbolizer>,
) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let exec: Vec<(u64, u64, &str)> = maps
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (lo, hi) = it.next()?.split_once('-')?;
            if !it.next()?.contains('x') {
                return None;
            }
            let path = it.nth(3)?;
            path.starts_with('/').then_some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
                path,
            ))
        })
        .collect();
    let file_of = |a: u64| exec.iter().find(|m| a >= m.0 && a < m.1).map(|m| m.2);
    let lib = file_of(ip)?;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    words.iter().copied().find(|&w| {
        let mut b = [0u8; 7];
        if w < 7
            || file_of(w).is_none_or(|f| f == lib)
            || mem.read_exact_at(&mut b, w - 7).is_err()
            || !ends_in_call(&b)
        {
            return false;
        }
        call_target(&mem, w, &b).is_some_and(|t| {
            file_of(t) == Some(lib)
                && syms
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .name(pid, t)
                    .is_some_and(|n| n.contains("pthread_"))
        })
    })
}

/// Loss counters, in the order of `enum ls_flost`.
pub const LOST_NAMES: [&str; 4] = [
    "map_full",
    "ringbuf_dropped",
    "task_storage_failed",
    "stale_wait",
];
/// Loss counters added after the outcomes (`LS_FLOST_STACK`...), and the
/// index of the first.
pub const LATER_LOST_NAMES: [&str; 2] = ["stack_failed", "stack_map_full"];
const LATER_LOST_FIRST: u32 = 9;
/// `LS_FSTAT_UNSEEN_SWITCH_IN`: woken waits whose ending switch-in the sched
/// backend's program did not see (design note of futex.bpf.c).
const UNSEEN_SWITCH_IN: u32 = 11;
/// Outcome totals after the losses (`LS_FSTAT_*`).
pub const OUTCOME_NAMES: [&str; 5] = [
    "woken",
    "timed out",
    "interrupted",
    "value changed",
    "inside traced lock calls",
];

/// A loaded and attached futex source.
pub struct Futex {
    core: Loaded<FutexSkel<'static>>,
    waitv: bool,
    /// The sched backend (else the syscall tracepoints).
    sched: bool,
    /// Names of the locks and condvars waited on, by (pid, address)
    /// (`locknames`: a static one's symbol, a heap lock's first caller),
    /// given while the process lives (`tick`) and kept.
    names: Mutex<HashMap<(u32, u64), String>>,
    syms: Mutex<UserSymbolizer>,
    /// The caller of each lock key's first wait (0: none found), by
    /// (pid, tid, lock, kind), looked for once.
    callers: RefCell<HashMap<(u32, u32, u64, u32), u64>>,
    /// Keys the stream tried to name a lock by (once each).
    event_tried: RefCell<HashSet<(u32, u32, u64)>>,
    /// Processes whose first lock wait was streamed (their maps re-read).
    event_pids: RefCell<HashSet<u32>>,
    named_at: RefCell<Option<std::time::Instant>>,
}

/// Attaches a tracepoint program. Another process may unmount a tracefs it
/// mounted while we attach (libbpf reads tracepoint ids there): mount
/// again and retry a few times before giving up.
fn attach_retried(prog: &libbpf_rs::ProgramMut<'_>) -> Result<Link> {
    let mut tries = 0;
    loop {
        match prog.attach() {
            Ok(l) => return Ok(l),
            Err(_) if tries < 5 => {
                tries += 1;
                let _again = TracefsGuard::ensure();
                if let Ok(l) = prog.attach() {
                    return Ok(l);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("attach {}", prog.name().to_string_lossy()));
            }
        }
    }
}

impl Futex {
    pub fn start(opts: &Options) -> Result<Futex> {
        // the scheduler's view (tp_btf) unless the syscall tracepoints are
        // asked for, or the kernel has no BTF for tp_btf
        let sched = match opts.backend.as_deref() {
            None => super::probes::fork_btf(),
            Some(BACKEND_SCHED) => true,
            Some(BACKEND_SYSCALLS) => false,
            Some(other) => bail!(
                "{SOURCE} has no backend '{other}' ({BACKEND_SCHED}: from the scheduler, \
                 the default; {BACKEND_SYSCALLS}: the futex syscall tracepoints)"
            ),
        };
        let _tracefs = TracefsGuard::ensure();
        if !sched && tracefs_mounted() && !tracepoint_exists("syscalls", "sys_enter_futex") {
            bail!(
                "this kernel has no syscalls:sys_enter_futex tracepoint \
                 (CONFIG_FTRACE_SYSCALLS): futex waits cannot be traced"
            );
        }
        let waitv =
            sched || !tracefs_mounted() || tracepoint_exists("syscalls", "sys_enter_futex_waitv");
        let follow = opts.targets.follow_forks;
        let plan = Plan {
            backend: if sched {
                BACKEND_SCHED
            } else {
                BACKEND_SYSCALLS
            },
            load: &|name| match name {
                "futex_switch" | "futex_waking" => sched,
                "futex_waitv_enter" | "futex_waitv_exit" => !sched && waitv,
                "futex_enter" | "futex_exit" => !sched,
                "futex_follow_fork" => follow,
                _ => true,
            },
            sized: &["agg", "holders", "fscan"],
            lost: &LOST_NAMES,
            // attached below: exits before enters, retried when tracefs
            // goes away meanwhile
            attach: false,
        };
        let mut core = lifecycle::load::<FutexSkelBuilder>(opts, &plan, |open| {
            let rodata = common::target_rodata!(open, opts, emit_events, caller_mode);
            common::set_stacks_rodata!(&mut *rodata, opts);
            super::ulock::reuse_call_map(&mut open.maps.ulock_call)
        })?;
        super::ulock::publish_call_map(&core.skel.maps.ulock_call);
        if sched {
            list_asleep(&mut core.skel, &opts.targets.pids);
        }
        let p = &core.skel.progs;
        // the fork follower first (a child forked meanwhile is a target
        // already), then the ends before the starts: a wait in progress
        // when the starts attach ends in a seen end (partial) rather than
        // an unseen one (the sched backend: wakes before switches)
        let mut progs = Vec::new();
        if follow {
            progs.push(&p.futex_follow_fork);
        }
        if sched {
            progs.extend([&p.futex_waking, &p.futex_switch]);
        } else {
            progs.extend([&p.futex_exit, &p.futex_enter]);
            if waitv {
                progs.extend([&p.futex_waitv_exit, &p.futex_waitv_enter]);
            }
        }
        core.add_links(
            progs
                .into_iter()
                .map(attach_retried)
                .collect::<Result<_>>()?,
        );
        Ok(Futex {
            core,
            waitv,
            sched,
            names: Mutex::new(HashMap::new()),
            syms: Mutex::new(UserSymbolizer::default()),
            callers: RefCell::new(HashMap::new()),
            event_tried: RefCell::new(HashSet::new()),
            event_pids: RefCell::new(HashSet::new()),
            named_at: RefCell::new(None),
        })
    }

    /// Finds the callers of new lock keys and names the locks and
    /// condvars of the aggregation map not named yet (`locknames`: a static
    /// variable's symbol, else a lock's caller), while their processes live.
    fn name_new(&self) {
        let map = &self.core.skel.maps.agg;
        let keys: Vec<ls_fagg_key> = map
            .keys()
            .filter_map(|k| from_bytes::<ls_fagg_key>(&k))
            .filter(|k| k.kind != FKIND_OTHER)
            .collect();
        let mut todo: BTreeMap<(u32, u64), Vec<(u64, u64)>> = BTreeMap::new();
        for k in &keys {
            let caller = if is_lock(k.kind) {
                self.caller_of(k)
            } else {
                0
            };
            let named = self
                .names
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&(k.pid, k.uaddr));
            if named {
                continue;
            }
            let callers = todo.entry((k.pid, k.uaddr)).or_default();
            if caller != 0
                && let Ok(Some(v)) = map.lookup(as_bytes(k), MapFlags::ANY)
                && let Some(v) = from_bytes::<ls_fagg_val>(&v)
            {
                callers.push((caller, v.count + v.partial + v.value_changed));
            }
        }
        if todo.is_empty() {
            return;
        }
        let todo = todo
            .into_iter()
            .map(|((pid, lock), callers)| LockToName { pid, lock, callers })
            .collect();
        name_locks(&self.syms, &self.names, todo, false);
    }

    /// The caller of a lock key's first wait (0: unknown), from its stack
    /// copy, looked for once (while the process lives).
    fn caller_of(&self, k: &ls_fagg_key) -> u64 {
        let ck = (k.pid, k.tid, k.uaddr, k.kind);
        if let Some(c) = self.callers.borrow().get(&ck) {
            return *c;
        }
        let Ok(Some(v)) = self.core.skel.maps.fscan.lookup(as_bytes(k), MapFlags::ANY) else {
            return 0; // not taken: --caller none, or lost
        };
        let c = from_bytes::<ls_fscan>(&v)
            .and_then(|s| scan_caller(k.pid, s.ip, &s.words, &self.syms))
            .unwrap_or(0);
        self.callers.borrow_mut().insert(ck, c);
        c
    }

    fn lock_name(&self, pid: u32, addr: u64) -> Option<String> {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(pid, addr))
            .cloned()
    }

    /// `function+0xoff` of a lock key's caller (None: unknown).
    fn caller_name(&self, k: &ls_fagg_key) -> Option<String> {
        let c = self
            .callers
            .borrow()
            .get(&(k.pid, k.tid, k.uaddr, k.kind))
            .copied()?;
        self.syms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .name(k.pid, c)
    }

    fn counter(&self, i: u32) -> Result<u64> {
        common::percpu_u64_sum(&self.core.skel.maps.lost, i).context("read futex counters")
    }
}

/// The sched backend's list of the targets' threads asleep in a futex
/// wait now, before its programs attach (design note of futex.bpf.c): a
/// wait that began before tracing is counted partial at its wake.
fn list_asleep(skel: &mut FutexSkel<'static>, pids: &[u32]) {
    let mut n = 0u32;
    for pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in dir.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some(sc) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
                .ok()
                .and_then(|t| crate::procmaps::parse_syscall(&t))
            else {
                continue;
            };
            let op = sc.args[1] as u32;
            // futex(2) with a waiting op (as is_wait_op in the BPF)
            if sc.nr != 202 || !matches!(op & 0x7f, 0 | 6 | 9 | 11 | 13) {
                continue;
            }
            let v = ls_fasleep {
                uaddr: sc.args[0],
                op,
                pad: 0,
            };
            if skel
                .maps
                .asleep
                .update(as_bytes(&tid), as_bytes(&v), MapFlags::ANY)
                .is_ok()
            {
                n += 1;
            }
        }
    }
    if let Some(bss) = skel.maps.bss_data.as_deref_mut() {
        bss.asleep_left = n;
    }
}

/// Starts the source ([`super::SourceInfo::start`]).
pub fn start(opts: &Options) -> Result<Box<dyn Source>> {
    Ok(Box::new(Futex::start(opts)?))
}

/// A pure decoding of one aggregation entry. `aborted` counts waits that
/// timed out or were interrupted; `failed` counts calls that returned at
/// once because the value had changed (not waits, not in `count`).
pub fn to_record(k: &ls_fagg_key, v: &ls_fagg_val, cgroup: Option<String>) -> Record {
    let (kind, source) = kind_of(k.kind);
    Record {
        cgroup,
        aborted: v.timed_out + v.interrupted,
        slept: v.slept,
        wait: common::wait_stats!(v),
        failed: v.value_changed,
        partial: v.partial,
        split: Some(WaitSplit::from_offcpu(v.total_ns, v.offcpu_ns, v.runq_ns)),
        ..Record::new(source, kind, k.uaddr, k.pid, k.tid, comm_str(&v.comm))
    }
}

/// A pure decoding of one ring-buffer record.
pub fn to_event(e: &ls_fevent, cgroup: Option<String>) -> Event {
    let partial = e.flags & EV_PARTIAL != 0;
    let wait_ns = if partial {
        0
    } else {
        e.end_ns.saturating_sub(e.begin_ns)
    };
    let (kind, source) = kind_of(e.kind);
    Event {
        caller: Some(op_name(e.op).into()),
        cgroup,
        begin_ns: e.begin_ns,
        end_ns: e.end_ns,
        wait_ns,
        aborted: e.ret < 0,
        ret: e.ret,
        slept: e.flags & EV_SLEPT != 0,
        partial,
        holder_tid: (e.holder_tid != 0).then_some(e.holder_tid),
        split: (!partial).then(|| WaitSplit::from_offcpu(wait_ns, e.offcpu_ns, e.runq_ns)),
        ..Event::new(source, kind, e.uaddr, e.pid, e.tid, comm_str(&e.comm))
    }
}

/// A pure decoding of one holder entry (`comm`: the holder's name, read
/// while it lives).
pub fn holder_row(k: &ls_fholder_key, v: &ls_fholder_val, comm: Option<String>) -> HolderRow {
    let (kind, source) = kind_of(k.kind);
    HolderRow {
        source,
        kind,
        lock: format!("0x{:x}", k.uaddr),
        pid: k.pid,
        holder_tid: k.holder_tid,
        holder_comm: comm,
        waits: v.waits,
        wait_ns: v.wait_ns,
    }
}

/// The futex operation, as the stream shows it (`caller` column).
pub fn op_name(op: u32) -> &'static str {
    if op == 0x100 {
        return "futex_waitv";
    }
    match op & 0x7f {
        0 => "FUTEX_WAIT",
        6 => "FUTEX_LOCK_PI",
        9 => "FUTEX_WAIT_BITSET",
        11 => "FUTEX_WAIT_REQUEUE_PI",
        13 => "FUTEX_LOCK_PI2",
        _ => "futex",
    }
}

impl Source for Futex {
    common::source_name_and_life!();

    fn status(&self) -> SourceStatus {
        let outcomes: Vec<String> = OUTCOME_NAMES
            .iter()
            .enumerate()
            // the scheduler sees only calls that sleep
            .filter(|(i, _)| !(self.sched && *i == 3))
            .map(|(i, n)| {
                let v = self
                    .counter(LOST_NAMES.len() as u32 + i as u32)
                    .unwrap_or(0);
                format!("{n} {v}")
            })
            .collect();
        let mut reason = outcomes.join(", ");
        if self.sched {
            let unseen = self.counter(UNSEEN_SWITCH_IN).unwrap_or(0);
            if unseen > 0 {
                reason.push_str(&format!(
                    ", ended without a seen switch-in {unseen} (ended at the wake plus the \
                     scheduler's run delay)"
                ));
            }
            reason.push_str(
                " (seen from the scheduler: a wait not woken by a thread's futex call is \
                 timed out if it had a timeout, else interrupted; calls that return \
                 without sleeping are not seen)",
            );
        } else if !self.waitv {
            reason.push_str("; no futex_waitv tracepoint on this kernel");
        }
        SourceStatus {
            name: SOURCE.into(),
            backend: Some(self.core.backend().into()),
            available: true,
            reason: Some(reason),
        }
    }

    fn records(&self, sym: &mut Symbolizer) -> Result<Vec<Record>> {
        self.name_new();
        let mut out = Vec::new();
        common::for_each_entry(
            &self.core.skel.maps.agg,
            |k: ls_fagg_key, v: ls_fagg_val| {
                // an entry with only value-changed calls has no wait to show
                if v.count + v.partial + v.value_changed > 0 {
                    let mut r = to_record(&k, &v, sym.cgroup(v.cgroup_id));
                    r.lock_name = self.lock_name(k.pid, k.uaddr);
                    if is_lock(k.kind) {
                        self.caller_of(&k);
                        r.caller = self.caller_name(&k);
                    }
                    out.push(r);
                }
            },
        )?;
        let maps = &self.core.skel.maps;
        let kind = |f| kind_of(f).0;
        common::stack_maps!(maps).attach(
            sym,
            &mut out,
            |_, r| (r.lock, r.tid, r.kind),
            kind,
            |_, _| true,
        )?;
        Ok(out)
    }

    fn tick(&self, sym: &mut Symbolizer) {
        common::stack_maps!(self.core.skel.maps).normalize_new(sym);
        // and name new locks while they live, a few times a second (it
        // reads the whole map, which holds contended futexes only)
        let due = self
            .named_at
            .borrow()
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(200));
        if due {
            self.name_new();
            *self.named_at.borrow_mut() = Some(std::time::Instant::now());
        }
    }

    fn holders(&self) -> Result<Vec<HolderRow>> {
        let mut out = Vec::new();
        common::for_each_entry(
            &self.core.skel.maps.holders,
            |k: ls_fholder_key, v: ls_fholder_val| {
                // none: neither a waker nor an owner was seen
                if k.holder_tid != 0 {
                    let comm = std::fs::read_to_string(format!(
                        "/proc/{}/task/{}/comm",
                        k.pid, k.holder_tid
                    ))
                    .ok()
                    .map(|s| s.trim().to_string());
                    out.push(holder_row(&k, &v, comm));
                }
            },
        )?;
        Ok(out)
    }

    fn lost(&self) -> Result<BTreeMap<String, u64>> {
        let mut out = self.core.lost()?;
        for (i, name) in LATER_LOST_NAMES.iter().enumerate() {
            out.insert(
                (*name).to_string(),
                self.counter(LATER_LOST_FIRST + i as u32)?,
            );
        }
        Ok(out)
    }

    fn decode_event(&self, data: &[u8], sym: &mut Symbolizer) -> Option<Event> {
        let e = from_bytes::<ls_fevent>(data)?;
        let mut ev = to_event(&e, sym.cgroup(e.cgroup_id));
        if e.kind != FKIND_OTHER {
            // a lock seen for the first time is named now, while its
            // process surely lives (once per key: the names are kept)
            let named = self
                .names
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&(e.pid, e.uaddr));
            if !named
                && self
                    .event_tried
                    .borrow_mut()
                    .insert((e.pid, e.tid, e.uaddr))
            {
                if self.event_pids.borrow_mut().insert(e.pid) {
                    // maps read before this process exec'd (a `run` or
                    // `trace -- CMD` child waits on futexes before its
                    // exec too) name nothing in the new image
                    self.syms
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remember(e.pid);
                }
                let k = ls_fagg_key {
                    uaddr: e.uaddr,
                    tid: e.tid,
                    pid: e.pid,
                    kind: e.kind,
                    pad: 0,
                };
                let callers = if is_lock(e.kind) {
                    vec![(self.caller_of(&k), 1)]
                } else {
                    Vec::new()
                };
                let todo = vec![LockToName {
                    pid: e.pid,
                    lock: e.uaddr,
                    callers,
                }];
                name_locks(&self.syms, &self.names, todo, false);
            }
            ev.lock_name = self.lock_name(e.pid, e.uaddr);
        }
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETIMEDOUT: i32 = 110;

    #[test]
    fn outcomes_become_aborted_failed_and_partial() {
        let k = ls_fagg_key {
            uaddr: 0x1000,
            tid: 2,
            pid: 1,
            kind: FKIND_OTHER,
            pad: 0,
        };
        let mut v = ls_fagg_val {
            count: 3,
            total_ns: 300,
            min_ns: 50,
            max_ns: 150,
            timed_out: 1,
            interrupted: 1,
            value_changed: 4,
            partial: 1,
            slept: 3,
            cgroup_id: 0,
            offcpu_ns: 250,
            runq_ns: 20,
            comm: [0; 16],
            pcomm: [0; 16],
            hist: [0; crate::model::HIST_SLOTS],
        };
        v.hist[7] = 3;
        let r = to_record(&k, &v, None);
        assert_eq!((r.wait.count, r.aborted, r.failed, r.partial), (3, 2, 4, 1));
        assert_eq!(r.kind.name(), "futex");
        assert!(r.hold.is_none());
        let sp = r.split.expect("split");
        assert_eq!((sp.oncpu, sp.runnable, sp.asleep), (50, 20, 230));
    }

    #[test]
    fn a_timed_out_wait_is_aborted_with_its_ret() {
        let e = ls_fevent {
            begin_ns: 10,
            end_ns: 110,
            uaddr: 0x1000,
            cgroup_id: 0,
            pid: 1,
            tid: 2,
            op: 9 | 128,
            ret: -ETIMEDOUT,
            flags: EV_SLEPT,
            kind: FKIND_COND,
            holder_tid: 7,
            pad: 0,
            offcpu_ns: 90,
            runq_ns: 5,
            comm: [0; 16],
        };
        let ev = to_event(&e, None);
        assert_eq!(ev.wait_ns, 100);
        assert!(ev.aborted && ev.slept && !ev.partial);
        assert_eq!(ev.caller.as_deref(), Some("FUTEX_WAIT_BITSET"));
        assert_eq!((ev.kind, ev.source), (LockKind::UserCond, SOURCE));
        assert_eq!(ev.holder_tid, Some(7));
        let sp = ev.split.expect("split");
        assert_eq!((sp.oncpu, sp.runnable, sp.asleep), (10, 5, 85));
    }

    #[test]
    fn call_instructions_before_return_addresses_are_recognised() {
        // call rel32; call *0x..(%rip); call *0x8(%rax); call *%rax;
        // call *%r11 (REX); call *0x12345678(%rbx)
        assert!(ends_in_call(&[0, 0, 0xe8, 1, 2, 3, 4]));
        assert!(ends_in_call(&[0, 0xff, 0x15, 1, 2, 3, 4]));
        assert!(ends_in_call(&[0, 0, 0, 0, 0xff, 0x50, 0x08]));
        assert!(ends_in_call(&[0, 0, 0, 0, 0, 0xff, 0xd0]));
        assert!(ends_in_call(&[0, 0, 0, 0, 0x41, 0xff, 0xd3]));
        assert!(ends_in_call(&[0, 0xff, 0x93, 0x78, 0x56, 0x34, 0x12]));
        // jmp *%rax (ff /4), a push, plain data
        assert!(!ends_in_call(&[0, 0, 0, 0, 0, 0xff, 0xe0]));
        assert!(!ends_in_call(&[0, 0, 0, 0, 0, 0, 0x50]));
        assert!(!ends_in_call(&[0; 7]));
    }

    #[test]
    fn a_holder_entry_is_a_holder_row_of_its_kind() {
        let k = ls_fholder_key {
            uaddr: 0xabc0,
            holder_tid: 7,
            pid: 5,
            kind: FKIND_WR,
            pad: 0,
        };
        let v = ls_fholder_val {
            waits: 3,
            wait_ns: 900,
        };
        let h = holder_row(&k, &v, Some("w".into()));
        assert_eq!((h.source, h.kind), (ROW_RWLOCK, LockKind::UserRwlockWrite));
        assert_eq!(h.lock, "0xabc0");
        assert_eq!((h.pid, h.holder_tid, h.waits, h.wait_ns), (5, 7, 3, 900));
        assert_eq!(h.holder_comm.as_deref(), Some("w"));
    }

    #[test]
    fn lock_kinds_are_lock_rows_and_condvars_are_not() {
        assert_eq!(kind_of(FKIND_MUTEX), (LockKind::UserMutex, ROW_MUTEX));
        assert_eq!(kind_of(FKIND_RD), (LockKind::UserRwlockRead, ROW_RWLOCK));
        assert_eq!(kind_of(FKIND_WR), (LockKind::UserRwlockWrite, ROW_RWLOCK));
        assert_eq!(kind_of(FKIND_COND), (LockKind::UserCond, SOURCE));
        assert_eq!(kind_of(FKIND_OTHER), (LockKind::Futex, SOURCE));
        assert_eq!(kind_of(99), (LockKind::Futex, SOURCE));
    }
}
