//! `user-locks`: pthread mutex, rwlock and spinlock waits, holds, failed
//! calls and holders, from uprobes on the target's own libc
//! (`src/bpf/ulock.bpf.c`, design note at its top).
//!
//! Where the probes go: for `-p`/`-t` targets, the object that defines
//! `pthread_mutex_lock` among the files each process maps (its libc, or the
//! executable itself when static), attached per process; otherwise (system
//! wide, `-c`, `--cgroup`, `run -- CMD` before the command execs) the
//! system's libc, the one lockscope itself runs on. Offsets are resolved
//! here from the ELF symbol tables (`elfsym`), default symbol versions
//! first, so versioned and aliased glibc symbols resolve to one address.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use libbpf_rs::{Link, MapCore, RingBufferBuilder, UprobeOpts};

use super::common;
use super::lifecycle::{self, Life, Loaded, Plan};
use super::locknames::{LockToName, name_locks};
use super::{Options, Source, Symbolizer, comm_str, from_bytes};
use crate::bpf::ulock::types::{
    ls_uagg_key, ls_uagg_val, ls_uevent, ls_uholder_key, ls_uholder_val, ls_uspawn,
};
use crate::bpf::ulock::{UlockSkel, UlockSkelBuilder};
use crate::model::{Event, HolderRow, LockKind, Record, WaitSplit};
use crate::procmaps::{PthreadObject, UserSymbolizer, find_pthread_object, maps_file};
use crate::status::SourceStatus;

/// Name of the source (`--source user-locks`).
pub const SOURCE: &str = "user-locks";
/// `source` of its rows and events, by lock type.
pub const ROW_MUTEX: &str = "user-mutex";
pub const ROW_RWLOCK: &str = "user-rwlock";
pub const ROW_SPIN: &str = "user-spin";

// enum ls_ukind and the LS_UOP_* cookie bits of lockscope.h
const KIND_MUTEX: u32 = 1;
const KIND_RD: u32 = 2;
const KIND_WR: u32 = 3;
const KIND_SPIN: u32 = 4;
const KIND_RWLOCK: u32 = 5;
const OP_TRY: u32 = 1 << 8;
const OP_TIMED: u32 = 1 << 9;
const OP_GLIBC: u32 = 1 << 10;
const OP_COND: u32 = 1 << 11;
const OP_RETRY: u32 = 1 << 12;
// LS_UEV_* event flags
const EV_FAILED: u32 = 1;
const EV_PARTIAL: u32 = 2;
const EV_SLEPT: u32 = 4;
const EV_CONTENDED: u32 = 16;
// enum ls_uspawn_what
const LS_USPAWN_FORK: u32 = 1;
const LS_USPAWN_EXEC: u32 = 2;
const LS_USPAWN_EXIT: u32 = 3;

common::assert_hist_layout!(ls_uagg_val, hold_hist);
common::bpf_pod!(
    ls_uagg_key,
    ls_uagg_val,
    ls_uevent,
    ls_uholder_key,
    ls_uholder_val,
    ls_uspawn
);

/// Which program a function gets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Probe {
    /// uprobe `ulock_enter` + uretprobe `ulock_return`
    Lock,
    /// uprobe `ulock_unlock`
    Unlock,
    /// uprobe `ucond_enter` + uretprobe `ucond_return`
    Cond,
}

/// Every function traced, with its attach cookie. Functions a libc lacks
/// (older glibc has no clock* variants) are skipped.
const FUNCS: &[(&str, u32, Probe)] = &[
    ("pthread_mutex_lock", KIND_MUTEX, Probe::Lock),
    ("pthread_mutex_trylock", KIND_MUTEX | OP_TRY, Probe::Lock),
    (
        "pthread_mutex_timedlock",
        KIND_MUTEX | OP_TIMED,
        Probe::Lock,
    ),
    (
        "pthread_mutex_clocklock",
        KIND_MUTEX | OP_TIMED,
        Probe::Lock,
    ),
    ("pthread_mutex_unlock", KIND_MUTEX, Probe::Unlock),
    ("pthread_rwlock_rdlock", KIND_RD, Probe::Lock),
    ("pthread_rwlock_tryrdlock", KIND_RD | OP_TRY, Probe::Lock),
    (
        "pthread_rwlock_timedrdlock",
        KIND_RD | OP_TIMED,
        Probe::Lock,
    ),
    (
        "pthread_rwlock_clockrdlock",
        KIND_RD | OP_TIMED,
        Probe::Lock,
    ),
    ("pthread_rwlock_wrlock", KIND_WR, Probe::Lock),
    ("pthread_rwlock_trywrlock", KIND_WR | OP_TRY, Probe::Lock),
    (
        "pthread_rwlock_timedwrlock",
        KIND_WR | OP_TIMED,
        Probe::Lock,
    ),
    (
        "pthread_rwlock_clockwrlock",
        KIND_WR | OP_TIMED,
        Probe::Lock,
    ),
    ("pthread_rwlock_unlock", KIND_RWLOCK, Probe::Unlock),
    ("pthread_spin_lock", KIND_SPIN, Probe::Lock),
    ("pthread_spin_trylock", KIND_SPIN | OP_TRY, Probe::Lock),
    ("pthread_spin_unlock", KIND_SPIN, Probe::Unlock),
    ("pthread_cond_wait", KIND_MUTEX | OP_COND, Probe::Cond),
    ("pthread_cond_timedwait", KIND_MUTEX | OP_COND, Probe::Cond),
    ("pthread_cond_clockwait", KIND_MUTEX | OP_COND, Probe::Cond),
];

/// What is attached: real programs, or (benchmarks) empty ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The real programs.
    Uprobe,
    /// Empty programs on the same attach points: the floor of any
    /// uprobe-based tool that measures waits and holds.
    Floor,
    /// An empty uprobe + uretprobe on pthread_mutex_lock only.
    FloorPair,
    /// As `Floor`, at the functions' entries (where a uprobe tool puts
    /// them): what probing there costs beside lockscope's points.
    FloorEntry,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Uprobe => "uprobe",
            Backend::Floor => "uprobe-floor",
            Backend::FloorPair => "uprobe-floor-pair",
            Backend::FloorEntry => "uprobe-floor-entry",
        }
    }
}

/// Names of the `lost` counters, in the order of `enum ls_ulost`.
pub const LOST_NAMES: [&str; 8] = [
    "map_full",
    "holds_full",
    "ringbuf_dropped",
    "task_storage_failed",
    "stale_call",
    "stack_failed",
    "stack_map_full",
    "follow_dropped",
];

/// The per-task map of the lock call in progress, shared by fd among the
/// user-locks, futex and app-locks sources, whichever are loaded in any
/// order (the first to load creates it; the others reuse it).
static CALL_MAP: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// Makes `map` (an object's `ulock_call`) the shared map, if one exists.
pub(crate) fn reuse_call_map(map: &mut libbpf_rs::OpenMapMut<'_>) -> Result<()> {
    let g = CALL_MAP.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(fd) = g.as_ref() {
        map.reuse_fd(fd.as_fd())
            .context("reuse the shared ulock_call map")?;
    }
    Ok(())
}

/// Records a loaded object's `ulock_call` as the shared map (first wins).
pub(crate) fn publish_call_map(map: &dyn MapCore) {
    let mut g = CALL_MAP.lock().unwrap_or_else(PoisonError::into_inner);
    if g.is_none()
        && let Ok(fd) = map.as_fd().try_clone_to_owned()
    {
        *g = Some(fd);
    }
}

/// Without these a libc's mutexes cannot be followed at all.
fn essential(name: &str) -> bool {
    name == "pthread_mutex_lock" || name == "pthread_mutex_unlock"
}

/// The first bytes of a function, read from its file (fewer at the end
/// of the file).
fn head_bytes(path: &std::path::Path, off: u64) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(off)).ok()?;
    let mut b = Vec::with_capacity(HEAD_BYTES);
    f.take(HEAD_BYTES as u64).read_to_end(&mut b).ok()?;
    Some(b)
}

/// How far into a function [`cheap_point`] looks.
const HEAD_BYTES: usize = 48;

/// x86-64 register numbers: what a probe point must leave as the caller
/// passed them.
const REG_RSP: u8 = 4;
const REG_RSI: u8 = 6;
const REG_RDI: u8 = 7;

/// Where in a function whose code starts with `code` a uprobe costs one
/// trap instead of two, as the offset into `code`: the first instruction
/// the kernel emulates (a branch, a push, a nop: no single-step of an
/// out-of-line copy, which costs about ten times the trap itself on a
/// virtualised CPU), when every instruction before it is a straight-line
/// register load or compare that leaves the stack pointer and the
/// registers in `keep` (the arguments the programs read) untouched and
/// writes no memory. Then the probe sees what it would see at the
/// function's entry: the same arguments, the return address at the stack
/// pointer (so a uretprobe there works as at the entry) and the lock not
/// yet touched. 0 when the function does not start that way (an unknown
/// instruction comes first: probed at its entry, as any uprobe tool does).
fn cheap_point(code: &[u8], keep: &[u8]) -> u64 {
    let mut i = 0usize;
    // a register written by an instruction: allowed unless kept or rsp
    let free = |r: u8| r != REG_RSP && !keep.contains(&r);
    while i + 4 < code.len() {
        if code[i..].starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
            i += 4; // endbr64: a nop
            continue;
        }
        let at = i;
        let mut seg = false;
        if code[i] == 0x64 || code[i] == 0x65 {
            seg = true; // %fs/%gs: a thread-pointer relative load
            i += 1;
        }
        let rex = if (0x40..=0x4f).contains(&code[i]) {
            i += 1;
            code[i - 1]
        } else {
            0
        };
        let (rex_w, rex_r, rex_b) = (rex & 8 != 0, (rex >> 2) & 1, rex & 1);
        let op = code[i];
        // the emulated ones: probe here (before it runs)
        let emulated = match op {
            0x70..=0x7f | 0xeb | 0xe9 | 0xe8 | 0x90 => true,
            0x50..=0x57 => true,
            0x0f => matches!(code[i + 1], 0x80..=0x8f | 0x1f),
            _ => false,
        };
        if emulated {
            return if seg || (rex != 0 && !(0x50..=0x57).contains(&op)) {
                0
            } else {
                at as u64
            };
        }
        // length of a ModRM operand at `m` (ModRM, SIB, displacement),
        // and the register it names when it is one (mod 11)
        let modrm = |m: usize| -> Option<(usize, u8, Option<u8>)> {
            let b = *code.get(m)?;
            let (md, reg, rm) = (b >> 6, ((b >> 3) & 7) | (rex_r << 3), b & 7);
            if md == 3 {
                return Some((1, reg, Some(rm | (rex_b << 3))));
            }
            let mut len = 1;
            let mut base = rm;
            if rm == 4 {
                base = *code.get(m + 1)? & 7;
                len += 1;
            }
            len += match md {
                0 if base == 5 => 4,
                0 => 0,
                1 => 1,
                _ => 4,
            };
            Some((len, reg, None))
        };
        let Some(next) = (|| -> Option<usize> {
            match op {
                // mov r/m -> reg; add/or/and/sub/xor r/m -> reg
                0x8b | 0x03 | 0x0b | 0x23 | 0x2b | 0x33 => {
                    let (len, reg, _) = modrm(i + 1)?;
                    free(reg).then_some(i + 1 + len)
                }
                // mov/add/or/and/sub/xor reg -> reg (no stores)
                0x89 | 0x01 | 0x09 | 0x21 | 0x29 | 0x31 if !seg => {
                    let (len, _, rm) = modrm(i + 1)?;
                    rm.filter(|&r| free(r)).map(|_| i + 1 + len)
                }
                // cmp, test: read only
                0x39 | 0x3b | 0x85 | 0x84 | 0x38 | 0x3a => {
                    let (len, _, _) = modrm(i + 1)?;
                    Some(i + 1 + len)
                }
                // group 1 with an immediate: cmp reads, the rest write
                0x81 | 0x83 => {
                    let (len, _, rm) = modrm(i + 1)?;
                    let digit = (code[i + 1] >> 3) & 7;
                    let imm = if op == 0x81 { 4 } else { 1 };
                    let ok = digit == 7 || rm.is_some_and(free);
                    ok.then_some(i + 1 + len + imm)
                }
                // mov imm -> reg
                0xb8..=0xbf if !seg => {
                    let r = (op & 7) | (rex_b << 3);
                    free(r).then_some(i + 1 + if rex_w { 8 } else { 4 })
                }
                _ => None,
            }
        })() else {
            return 0;
        };
        i = next;
    }
    0
}

/// One process (or all: pid -1) and the object its probes go on.
struct Attachment {
    pid: i32,
    obj: PthreadObject,
}

/// Comm of a process, for messages.
fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn tgid_of(tid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The pthread object of a process that may have just exec'd: `Ok(None)`
/// while only its executable and dynamic linker are mapped (its libraries
/// come a moment later).
fn pthread_object_now(pid: u32) -> Result<Option<PthreadObject>> {
    match find_pthread_object(Some(pid)) {
        Ok(obj) => Ok(Some(obj)),
        Err(e) => {
            let young = crate::procmaps::read_maps(Some(pid))
                .is_ok_and(|m| m.iter().any(|x| x.path.contains("/ld-")));
            if young { Ok(None) } else { Err(e) }
        }
    }
}

/// Where the probes go for these options; notes say what is not traced.
fn plan(opts: &Options) -> Result<(Vec<Attachment>, Vec<String>)> {
    let t = &opts.targets;
    let mut notes = Vec::new();
    let mut out = Vec::new();
    let mut procs: BTreeSet<u32> = t.pids.iter().copied().collect();
    for &tid in &t.tids {
        if let Some(p) = tgid_of(tid) {
            procs.insert(p);
        }
    }
    if procs.is_empty() {
        let obj = find_pthread_object(None).context("find the system's libc")?;
        out.push(Attachment { pid: -1, obj });
        return Ok((out, notes));
    }
    for pid in procs {
        // a process that has just exec'd may not have mapped its libc yet
        // (only the executable and the dynamic linker): give it a moment
        let mut found = pthread_object_now(pid);
        for _ in 0..10 {
            if !matches!(found, Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(30));
            found = pthread_object_now(pid);
        }
        match found {
            Ok(Some(obj)) => out.push(Attachment {
                pid: pid as i32,
                obj,
            }),
            Ok(None) => notes.push(format!(
                "pid {pid} ({}) not traced: its libraries were not mapped after 300 ms",
                comm_of(pid)
            )),
            Err(e) => notes.push(format!("pid {pid} ({}) not traced: {e:#}", comm_of(pid))),
        }
    }
    if out.is_empty() {
        bail!("{}", notes.join("; "));
    }
    Ok((out, notes))
}

/// One uprobe (and uretprobe, for lock calls) to attach.
#[derive(Clone, Copy, Debug)]
struct Point {
    name: &'static str,
    off: u64,
    cookie: u64,
    probe: Probe,
}

/// A pthread object's probe points, resolved once per file and reused for
/// every process that maps it (forked children map their parent's).
struct Resolved {
    /// Path to attach to, valid in lockscope's mount namespace; a path
    /// through `/proc/PID/root` is rewritten for each process.
    path: PathBuf,
    /// The path as processes see it, and its inode.
    shown: String,
    ino: u64,
    points: Vec<Point>,
}

impl Resolved {
    fn new(obj: &PthreadObject, backend: Backend) -> Result<Resolved> {
        let glibc = if obj.glibc { OP_GLIBC } else { 0 };
        let mut points = Vec::new();
        let mut done = BTreeSet::new();
        for &(name, cookie, probe) in FUNCS {
            if backend == Backend::FloorPair && name != "pthread_mutex_lock" {
                continue;
            }
            let off = match obj.symbols.func_offset(name) {
                Ok(Some(off)) => off,
                Ok(None) if essential(name) => bail!("{} has no {name}", obj.shown),
                Ok(None) => continue, // older libc: no such variant
                Err(e) => bail!("{}: {e:#}", obj.shown),
            };
            if !done.insert(off) {
                continue; // an alias of a function already probed
            }
            // uprobes cannot single-step a `lock`-prefixed instruction:
            // glibc's pthread_spin_lock starts with `lock decl (%rdi)`;
            // probe right after it (same stack, same arguments), a point
            // every retry of the spin passes again (LS_UOP_RETRY)
            let head = head_bytes(&obj.path, off).unwrap_or_default();
            let (off, retry) = match head.get(..3) {
                Some([0xf0, 0xff, 0x0f]) if probe == Probe::Lock => (off + 3, OP_RETRY),
                _ if backend == Backend::FloorEntry => (off, 0),
                // a point past the loads that opens the function, where
                // the probe is emulated, not single-stepped
                _ => {
                    let keep: &[u8] = match probe {
                        Probe::Cond => &[REG_RDI, REG_RSI],
                        Probe::Lock | Probe::Unlock => &[REG_RDI],
                    };
                    (off + cheap_point(&head, keep), 0)
                }
            };
            points.push(Point {
                name,
                off,
                cookie: u64::from(cookie | glibc | retry),
                probe,
            });
        }
        let ino = std::fs::metadata(&obj.path)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .with_context(|| format!("stat {}", obj.path.display()))?;
        Ok(Resolved {
            path: obj.path.clone(),
            shown: obj.shown.clone(),
            ino,
            points,
        })
    }

    /// The path to attach to for `pid`.
    fn path_for(&self, pid: i32) -> PathBuf {
        let s = self.path.to_string_lossy();
        if let Some(rest) = s.strip_prefix("/proc/")
            && let Some((_, tail)) = rest.split_once("/root/")
            && pid > 0
        {
            return PathBuf::from(format!("/proc/{pid}/root/{tail}"));
        }
        self.path.clone()
    }
}

/// Attaches the programs of `backend` at every point of `r`, in process
/// `pid` (-1: all). Notes say which optional functions could not be traced.
fn attach_points(
    skel: &UlockSkel<'static>,
    backend: Backend,
    pid: i32,
    r: &Resolved,
    notes: &mut Vec<String>,
) -> Result<Vec<Link>> {
    let path = r.path_for(pid);
    let p = &skel.progs;
    let mut links = Vec::new();
    for pt in &r.points {
        let (entry, ret) = match (backend, pt.probe) {
            (Backend::Uprobe, Probe::Lock) => (&p.ulock_enter, Some(&p.ulock_return)),
            (Backend::Uprobe, Probe::Unlock) => (&p.ulock_unlock, None),
            (Backend::Uprobe, Probe::Cond) => (&p.ucond_enter, Some(&p.ucond_return)),
            (_, Probe::Unlock) => (&p.ulock_empty, None),
            (_, _) => (&p.ulock_empty, Some(&p.ulock_empty_ret)),
        };
        for (prog, retprobe) in [(Some(entry), false), (ret, true)] {
            let Some(prog) = prog else { continue };
            let uo = UprobeOpts {
                retprobe,
                cookie: pt.cookie,
                ..Default::default()
            };
            match prog.attach_uprobe_with_opts(pid, &path, pt.off as usize, uo) {
                Ok(link) => links.push(link),
                Err(e) if essential(pt.name) => {
                    return Err(e)
                        .with_context(|| format!("attach {} in {} (pid {pid})", pt.name, r.shown));
                }
                Err(e) => {
                    notes.push(format!("{} not traced: {e}", pt.name));
                    break;
                }
            }
        }
    }
    Ok(links)
}

/// The links of every traced process, by pid (-1: system-wide); closed
/// once the source is detached (later attachments are dropped at once).
#[derive(Default)]
struct LinkSet {
    by_pid: BTreeMap<i32, Vec<Link>>,
    closed: bool,
}

/// What following new processes did, for the report.
#[derive(Default)]
struct FollowStats {
    /// Processes whose probes were attached after the start (forked
    /// children, and targets that exec'd another libc).
    attached: u64,
    /// Of the forked children: from the fork to their probes attached.
    fork_latency_ns: Vec<u64>,
    /// New processes that could not be traced: exited before their
    /// probes were attached, or no pthread object.
    missed: u64,
    /// Of the missed: exited before their probes were attached.
    missed_exited: u64,
    /// Exited processes whose probes were released during the session.
    released: u64,
    notes: BTreeSet<String>,
}

impl FollowStats {
    const KEEP: usize = 4096;
    const KEEP_NOTES: usize = 8;

    fn note(&mut self, n: String) {
        if self.notes.len() < Self::KEEP_NOTES {
            self.notes.insert(n);
        }
    }

    /// One line for the report header, if anything was followed.
    fn summary(&self) -> Option<String> {
        if self.attached == 0 && self.missed == 0 {
            return None;
        }
        let mut s = format!(
            "followed {} new process{}",
            self.attached,
            if self.attached == 1 { "" } else { "es" }
        );
        if !self.fork_latency_ns.is_empty() {
            let mut l = self.fork_latency_ns.clone();
            l.sort_unstable();
            let ms = |ns: u64| ns as f64 / 1e6;
            s.push_str(&format!(
                " (probes attached {:.1} ms after the fork, median; {:.1} ms max: \
                 a child's lock calls before that are not seen)",
                ms(l[l.len() / 2]),
                ms(l[l.len() - 1])
            ));
        }
        if self.missed > 0 {
            s.push_str(&format!(", {} not traced", self.missed));
            if self.missed_exited > 0 {
                s.push_str(&format!(
                    " ({} exited before their probes were attached)",
                    self.missed_exited
                ));
            }
        }
        Some(s)
    }
}

/// A loaded and attached user-locks source.
pub struct Ulock {
    /// Shared with the follower thread, which attaches new processes.
    core: Arc<Loaded<UlockSkel<'static>>>,
    links: Arc<Mutex<LinkSet>>,
    /// Links of exited processes, released in the background.
    reap: Arc<Mutex<Vec<Link>>>,
    /// (pid, path attached to, path as the process sees it), per process.
    attached: Vec<(i32, std::path::PathBuf, String)>,
    notes: Vec<String>,
    follow: Option<Arc<Mutex<FollowStats>>>,
    syms: Arc<Mutex<UserSymbolizer>>,
    /// Processes seen not to map the probed object any more (exec).
    gone_notes: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    /// Lock names by (pid, lock), decided once (while the process lives
    /// where possible, by a thread of its own: reading a binary's symbols
    /// takes a while) and kept.
    names: Arc<Mutex<HashMap<(u32, u64), String>>>,
    /// When locks were last looked for, and whether a naming thread runs.
    naming: RefCell<Option<Instant>>,
    naming_busy: Arc<AtomicBool>,
}

impl Drop for Ulock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Ulock {
    pub fn start(opts: &Options) -> Result<Ulock> {
        let backend = match opts.backend.as_deref() {
            None | Some("uprobe") => Backend::Uprobe,
            Some("uprobe-floor") => Backend::Floor,
            Some("uprobe-floor-pair") => Backend::FloorPair,
            Some("uprobe-floor-entry") => Backend::FloorEntry,
            Some(other) => bail!(
                "{SOURCE} has no backend '{other}' (uprobe; uprobe-floor, \
                 uprobe-floor-pair and uprobe-floor-entry attach empty programs, \
                 for benchmarks)"
            ),
        };
        let (attachments, mut notes) = plan(opts)?;
        let per_process = attachments.iter().all(|a| a.pid >= 0);
        // new processes of -p / run targets get probes of their own
        let follow = per_process && opts.targets.follow_forks && !opts.targets.pids.is_empty();
        let real = backend == Backend::Uprobe;
        let load_plan = Plan {
            backend: backend.name(),
            load: &|name| match name {
                "ulock_enter" | "ulock_return" | "ulock_unlock" | "ucond_enter"
                | "ucond_return" => real,
                "ulock_empty" | "ulock_empty_ret" => !real,
                "ulock_fork" | "ulock_exec" | "ulock_exit" => follow,
                _ => false,
            },
            sized: &["agg", "holds"],
            lost: &LOST_NAMES,
            // uprobes on the chosen objects, per process: attached below
            attach: false,
        };
        let core = lifecycle::load::<UlockSkelBuilder>(opts, &load_plan, |open| {
            let rodata = common::target_rodata!(open, opts, emit_events);
            // per-process probes fire only in their process: no pid filter
            rodata.filter_pid = !per_process && !opts.targets.pids.is_empty();
            rodata.follow_forks = follow;
            common::set_stacks_rodata!(&mut *rodata, opts, hold_stacks_on);
            reuse_call_map(&mut open.maps.ulock_call)
        })?;
        let skel = &core.skel;
        publish_call_map(&skel.maps.ulock_call);

        // the fork/exec/exit programs first, so that no child forked while
        // the targets' probes are being attached goes unnoticed
        if follow {
            let p = &skel.progs;
            let mut follow_links = Vec::new();
            for prog in [&p.ulock_fork, &p.ulock_exec, &p.ulock_exit] {
                follow_links.push(
                    prog.attach()
                        .with_context(|| format!("attach {}", prog.name().to_string_lossy()))?,
                );
            }
            core.add_links(follow_links);
        }
        let mut set = LinkSet::default();
        let mut attached = Vec::new();
        let mut procs: HashMap<i32, Arc<Resolved>> = HashMap::new();
        let mut objects: Vec<Arc<Resolved>> = Vec::new();
        for a in &attachments {
            let r = match objects
                .iter()
                .find(|r| r.path == a.obj.path && r.shown == a.obj.shown)
            {
                Some(r) => r.clone(),
                None => {
                    let r = Arc::new(Resolved::new(&a.obj, backend)?);
                    objects.push(r.clone());
                    r
                }
            };
            let links = attach_points(skel, backend, a.pid, &r, &mut notes)?;
            set.by_pid.entry(a.pid).or_default().extend(links);
            procs.insert(a.pid, r);
            attached.push((a.pid, a.obj.path.clone(), a.obj.shown.clone()));
        }
        notes.sort();
        notes.dedup();

        let core = Arc::new(core);
        let links = Arc::new(Mutex::new(set));
        let reap = Arc::new(Mutex::new(Vec::new()));
        let syms = Arc::new(Mutex::new(UserSymbolizer::default()));
        let gone_notes = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = follow.then(|| Arc::new(Mutex::new(FollowStats::default())));
        let watch: Vec<(u32, std::path::PathBuf, String)> = attached
            .iter()
            .filter(|(pid, _, _)| *pid > 0)
            .map(|(pid, p, s)| (*pid as u32, p.clone(), s.clone()))
            .collect();
        if let Some(stats) = &stats {
            let busy = Arc::new(AtomicBool::new(false));
            let f = Follower {
                busy: busy.clone(),
                core: core.clone(),
                backend,
                links: links.clone(),
                reap: reap.clone(),
                stats: stats.clone(),
                syms: syms.clone(),
                stop: stop.clone(),
                procs,
                objects,
                pending: Vec::new(),
            };
            std::thread::Builder::new()
                .name("ls-follow".into())
                .spawn(move || f.run())
                .context("start the thread that follows new processes")?;
            let (reap, stop) = (reap.clone(), stop.clone());
            std::thread::Builder::new()
                .name("ls-reap".into())
                .spawn(move || reap_links(&reap, &stop, &busy))
                .context("start the thread that releases probes")?;
        } else if !watch.is_empty() {
            // Keep the targets' maps (for naming callers after they exit)
            // and notice processes that exec'd into something without
            // this libc.
            let (syms, gone, stop) = (syms.clone(), gone_notes.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for (pid, path, shown) in &watch {
                        if maps_file(*pid, path, shown) == Some(false) {
                            gone.lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .insert(format!(
                                    "pid {pid} ({}) no longer maps {shown} (exec'd?): \
                                     its locks after that are not traced",
                                    comm_of(*pid)
                                ));
                        } else {
                            syms.lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .remember(*pid);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            });
        }
        Ok(Ulock {
            core,
            links,
            reap,
            attached,
            notes,
            follow: stats,
            syms,
            gone_notes,
            stop,
            names: Arc::new(Mutex::new(HashMap::new())),
            naming: RefCell::new(None),
            naming_busy: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The locks of `entries` not named yet, with their (caller,
    /// acquisitions) keys.
    fn unnamed(&self, entries: &[(ls_uagg_key, ls_uagg_val)]) -> Vec<LockToName> {
        self.unnamed_of(entries.iter().map(|(k, v)| (k, v.count)))
    }

    /// [`Ulock::unnamed`] of (key, acquisitions) pairs.
    fn unnamed_of<'a>(
        &self,
        keys: impl Iterator<Item = (&'a ls_uagg_key, u64)>,
    ) -> Vec<LockToName> {
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let mut todo: BTreeMap<(u32, u64), Vec<(u64, u64)>> = BTreeMap::new();
        for (k, count) in keys {
            if !names.contains_key(&(k.pid, k.lock)) {
                todo.entry((k.pid, k.lock))
                    .or_default()
                    .push((k.caller, count));
            }
        }
        todo.into_iter()
            .map(|((pid, lock), callers)| LockToName { pid, lock, callers })
            .collect()
    }

    fn lock_name(&self, pid: u32, lock: u64) -> Option<String> {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(pid, lock))
            .cloned()
    }

    fn caller_name(&self, pid: u32, addr: u64) -> Option<String> {
        self.syms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .name(pid, addr)
    }
}

/// A process whose probes wait for its pthread object: it has just
/// exec'd (its libraries are mapped a moment later), or its parent's
/// object was not known.
struct Pending {
    pid: u32,
    since: Instant,
    /// Forked at this CLOCK_MONOTONIC time (for the attach latency).
    fork_ts: Option<u64>,
    /// Its links (if any) were made for a task that no longer exists:
    /// attach again even to the same object.
    stale: bool,
}

/// Follows the targets' new processes (`spawns`): attaches the probes of
/// forked children and of targets that exec'd another libc, and hands
/// the links of exited processes to the reaper.
struct Follower {
    core: Arc<Loaded<UlockSkel<'static>>>,
    backend: Backend,
    links: Arc<Mutex<LinkSet>>,
    reap: Arc<Mutex<Vec<Link>>>,
    stats: Arc<Mutex<FollowStats>>,
    syms: Arc<Mutex<UserSymbolizer>>,
    stop: Arc<AtomicBool>,
    /// Set while new processes wait for their probes (the reaper pauses).
    busy: Arc<AtomicBool>,
    /// The object each traced process's probes are on.
    procs: HashMap<i32, Arc<Resolved>>,
    /// Every object resolved so far.
    objects: Vec<Arc<Resolved>>,
    pending: Vec<Pending>,
}

/// `pid` is gone, or exiting: its memory is released (a zombie, or past
/// `exit_mm`), so it maps no files and runs no more user code.
fn exiting(pid: i32) -> bool {
    crate::procmaps::read_maps(Some(pid as u32)).map_or(true, |m| m.is_empty())
}

/// How long a just-exec'd process may take to map its libraries.
const EXEC_GRACE: Duration = Duration::from_secs(1);

impl Follower {
    fn stats(&self) -> std::sync::MutexGuard<'_, FollowStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(mut self) {
        let queue: std::rc::Rc<RefCell<Vec<ls_uspawn>>> = Default::default();
        let core = self.core.clone();
        let mut builder = RingBufferBuilder::new();
        let q = queue.clone();
        let added = builder.add(&core.skel.maps.spawns, move |d: &[u8]| {
            if let Some(s) = from_bytes::<ls_uspawn>(d) {
                q.borrow_mut().push(s);
            }
            0
        });
        let rb = match added.map(|_| ()).and_then(|()| builder.build()) {
            Ok(rb) => rb,
            Err(e) => {
                self.stats()
                    .note(format!("new processes not followed: ring buffer: {e}"));
                return;
            }
        };
        let mut last_watch = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let wait = if self.pending.is_empty() {
                Duration::from_millis(50)
            } else {
                Duration::from_millis(2)
            };
            // an interrupted poll is retried on the next turn
            let _ = rb.poll(wait);
            let batch: Vec<ls_uspawn> = queue.borrow_mut().drain(..).collect();
            self.busy.store(true, Ordering::Release);
            for s in &batch {
                self.on_spawn(s);
            }
            self.retry_pending();
            self.busy.store(!self.pending.is_empty(), Ordering::Release);
            if last_watch.elapsed() >= Duration::from_millis(250) {
                // the maps of live processes, to name callers after exit
                let mut syms = self.syms.lock().unwrap_or_else(PoisonError::into_inner);
                for &pid in self.procs.keys() {
                    if pid > 0 {
                        syms.remember(pid as u32);
                    }
                }
                last_watch = Instant::now();
            }
        }
    }

    fn on_spawn(&mut self, s: &ls_uspawn) {
        let pid = s.pid as i32;
        match s.what {
            LS_USPAWN_FORK => match self.procs.get(&(s.parent as i32)).cloned() {
                // the child maps what its parent maps
                Some(r) => self.attach(s.pid, r, Some(s.ts_ns), false),
                None => self.pending.push(Pending {
                    pid: s.pid,
                    since: Instant::now(),
                    fork_ts: Some(s.ts_ns),
                    stale: false,
                }),
            },
            LS_USPAWN_EXEC => {
                // exec'd by another thread than the leader: the task the
                // probes were made for is gone (`parent` is the old pid)
                let stale = s.parent != s.pid;
                match self.pending.iter_mut().find(|p| p.pid == s.pid) {
                    Some(p) => {
                        p.since = Instant::now();
                        p.stale |= stale;
                    }
                    None => self.pending.push(Pending {
                        pid: s.pid,
                        since: Instant::now(),
                        fork_ts: None,
                        stale,
                    }),
                }
            }
            LS_USPAWN_EXIT => {
                self.pending.retain(|p| p.pid != s.pid);
                self.procs.remove(&pid);
                self.release(pid);
            }
            _ => {}
        }
    }

    /// Hands the links of `pid` to the reaper.
    fn release(&self, pid: i32) {
        let old = self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_pid
            .remove(&pid);
        if let Some(old) = old
            && !old.is_empty()
        {
            self.reap
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(old);
            self.stats().released += 1;
        }
    }

    /// The pthread object `pid` maps now: a known one (no ELF parsing),
    /// else found and resolved; `Ok(None)` while it has just exec'd and
    /// maps only its executable and the dynamic linker.
    fn object_of(&mut self, pid: u32) -> Result<Option<Arc<Resolved>>> {
        let maps = crate::procmaps::read_maps(Some(pid))?;
        if let Some(r) = self
            .objects
            .iter()
            .find(|r| maps.iter().any(|m| m.inode == r.ino && m.path == r.shown))
        {
            return Ok(Some(r.clone()));
        }
        let exe = maps.first().map(|m| m.path.as_str());
        let young = maps.iter().any(|m| m.path.contains("/ld-"))
            && maps
                .iter()
                .all(|m| Some(m.path.as_str()) == exe || m.path.contains("/ld-"));
        if young {
            return Ok(None);
        }
        match pthread_object_now(pid)? {
            Some(obj) => {
                let r = Arc::new(Resolved::new(&obj, self.backend)?);
                self.objects.push(r.clone());
                Ok(Some(r))
            }
            None => Ok(None),
        }
    }

    fn retry_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            let pid = p.pid as i32;
            let obj = self.object_of(p.pid);
            match obj {
                Ok(Some(r)) => {
                    // the same libc after exec (the same file, even if
                    // its path reads differently now): the probes made for
                    // the task follow it into its new program, and a
                    // second set would see every call twice while the
                    // first is being released
                    let same = self
                        .procs
                        .get(&pid)
                        .is_some_and(|old| Arc::ptr_eq(old, &r) || old.ino == r.ino);
                    if !same || p.stale {
                        if !same && let Some(old) = self.procs.get(&pid) {
                            let note = format!(
                                "pid {pid} exec'd: probes moved from {} to {}",
                                old.shown, r.shown
                            );
                            self.stats().note(note);
                        }
                        self.attach(p.pid, r, p.fork_ts, true);
                    }
                }
                Ok(None) if p.since.elapsed() < EXEC_GRACE => self.pending.push(p),
                Ok(None) => self.not_traced(
                    pid,
                    format!(
                        "its libraries were not mapped {} ms after it exec'd",
                        EXEC_GRACE.as_millis()
                    ),
                ),
                // exec'd and gone (or exiting: no memory left to read)
                // before its maps could be read, with the probes it had
                // before exec (they follow it into the new program when it
                // maps the same libc): nothing was missed that the count
                // can tell; its exit releases them
                Err(_) if self.procs.contains_key(&pid) && exiting(pid) => {}
                Err(e) => self.not_traced(pid, format!("{e:#}")),
            }
        }
    }

    fn not_traced(&mut self, pid: i32, why: String) {
        let alive = std::fs::metadata(format!("/proc/{pid}")).is_ok();
        let comm = comm_of(pid as u32);
        self.procs.remove(&pid);
        self.release(pid);
        let mut st = self.stats();
        st.missed += 1;
        if alive {
            st.note(format!("pid {pid} ({comm}) not traced: {why}"));
        } else {
            st.missed_exited += 1;
        }
    }

    /// Attaches the probes of `pid` on `r`, replacing any it had.
    fn attach(&mut self, pid: u32, r: Arc<Resolved>, fork_ts: Option<u64>, replace: bool) {
        let ipid = pid as i32;
        if self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed
        {
            return;
        }
        let mut notes = Vec::new();
        match attach_points(&self.core.skel, self.backend, ipid, &r, &mut notes) {
            Ok(links) => {
                let latency = fork_ts.map(|t| crate::units::now_ns().saturating_sub(t));
                if replace {
                    self.release(ipid);
                }
                let late = {
                    let mut set = self.links.lock().unwrap_or_else(PoisonError::into_inner);
                    if set.closed {
                        Some(links)
                    } else {
                        set.by_pid.entry(ipid).or_default().extend(links);
                        None
                    }
                };
                // detached meanwhile: these go at once (off the caller's path)
                drop(late);
                self.procs.insert(ipid, r);
                self.syms
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remember(pid);
                let mut st = self.stats();
                st.attached += 1;
                if let Some(l) = latency
                    && st.fork_latency_ns.len() < FollowStats::KEEP
                {
                    st.fork_latency_ns.push(l);
                }
                for n in notes {
                    st.note(n);
                }
            }
            Err(e) => self.not_traced(ipid, format!("{e:#}")),
        }
    }
}

/// Releases the links of exited processes, one at a time, until stopped
/// (what is left then is released with the source's other links), and
/// never while the follower has a new process to attach: releasing a
/// uprobe link waits for an RCU grace period under the kernel's
/// `event_mutex`, which attaching one needs too (a new process waits for
/// at most the one release in flight).
fn reap_links(reap: &Mutex<Vec<Link>>, stop: &AtomicBool, busy: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if busy.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let next = reap.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match next {
            Some(link) => drop(link),
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Starts the source ([`super::SourceInfo::start`]).
pub fn start(opts: &Options) -> Result<Box<dyn Source>> {
    Ok(Box::new(Ulock::start(opts)?))
}

/// Model kind and row source of an `enum ls_ukind`.
pub fn kind_of(k: u32) -> (LockKind, &'static str) {
    match k {
        KIND_MUTEX => (LockKind::UserMutex, ROW_MUTEX),
        KIND_RD | KIND_RWLOCK => (LockKind::UserRwlockRead, ROW_RWLOCK),
        KIND_WR => (LockKind::UserRwlockWrite, ROW_RWLOCK),
        KIND_SPIN => (LockKind::UserSpin, ROW_SPIN),
        other => (LockKind::Unknown(other), ROW_MUTEX),
    }
}

/// A pure decoding of one aggregation entry (caller and cgroup named by
/// the caller of this function).
pub fn to_record(
    k: &ls_uagg_key,
    v: &ls_uagg_val,
    caller: Option<String>,
    cgroup: Option<String>,
) -> Record {
    let (kind, source) = kind_of(k.kind);
    Record {
        caller,
        cgroup,
        slept: v.slept,
        wait: common::wait_stats!(v),
        hold: Some(common::hold_stats!(v)),
        acquired: Some(v.acquired),
        failed: v.failed,
        partial: v.partial,
        // of the acquisitions' waits (failed calls are not in total_ns)
        split: Some(WaitSplit::from_offcpu(v.total_ns, v.offcpu_ns, v.runq_ns)),
        ..Record::new(source, kind, k.lock, k.pid, k.tid, comm_str(&v.comm))
    }
}

/// A pure decoding of one ring-buffer record.
pub fn to_event(e: &ls_uevent, caller: Option<String>, cgroup: Option<String>) -> Event {
    let (kind, source) = kind_of(e.kind);
    let failed = e.flags & EV_FAILED != 0;
    let partial = e.flags & EV_PARTIAL != 0;
    let complete = !failed && !partial;
    // an acquisition that neither blocked nor spun did not wait: its call
    // took the probes' own time (a failed call keeps its call time; a hold
    // re-taken by a condition wait has no request time)
    let waited = failed || e.flags & EV_CONTENDED != 0;
    let begin_ns = if complete && !waited {
        e.acquired_ns
    } else {
        e.begin_ns
    };
    let wait_ns = if partial || begin_ns == 0 {
        0
    } else {
        e.acquired_ns.saturating_sub(begin_ns)
    };
    Event {
        caller,
        cgroup,
        begin_ns,
        // partial: neither the request nor the acquisition was seen
        end_ns: if partial { 0 } else { e.acquired_ns },
        released_ns: (!failed).then_some(e.released_ns),
        wait_ns,
        hold_ns: complete.then(|| e.released_ns.saturating_sub(e.acquired_ns)),
        failed,
        ret: e.ret,
        slept: e.flags & EV_SLEPT != 0,
        partial,
        holder_tid: (e.holder_tid != 0).then_some(e.holder_tid),
        // a partial operation's wait was not seen; a hold re-taken by a
        // condition wait has no request time (begin_ns 0)
        split: (!partial && e.begin_ns != 0)
            .then(|| WaitSplit::from_offcpu(wait_ns, e.offcpu_ns, e.runq_ns)),
        ..Event::new(source, kind, e.lock, e.pid, e.tid, comm_str(&e.comm))
    }
}

impl Source for Ulock {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn life(&self) -> &dyn Life {
        &*self.core
    }

    fn status(&self) -> SourceStatus {
        let mut notes = self.notes.clone();
        notes.extend(
            self.gone_notes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned(),
        );
        let objs: BTreeSet<&str> = self.attached.iter().map(|(_, _, s)| s.as_str()).collect();
        let on = objs.into_iter().collect::<Vec<_>>().join(", ");
        notes.insert(0, format!("on {on}"));
        if let Some(f) = &self.follow {
            let f = f.lock().unwrap_or_else(PoisonError::into_inner);
            notes.splice(1..1, f.summary().into_iter().chain(f.notes.iter().cloned()));
        }
        SourceStatus {
            name: SOURCE.into(),
            backend: Some(self.core.backend().into()),
            available: true,
            reason: Some(notes.join("; ")),
        }
    }

    fn stop(&self) {
        super::stop_object(self.core.object());
        self.stop.store(true, Ordering::Relaxed);
    }

    fn take_links(&self) -> Vec<libbpf_rs::Link> {
        self.stop.store(true, Ordering::Relaxed);
        let by_pid = {
            let mut set = self.links.lock().unwrap_or_else(PoisonError::into_inner);
            set.closed = true; // later attachments are dropped at once
            std::mem::take(&mut set.by_pid)
        };
        // the follower's programs first, as when they were kept with pid 0
        let mut links = self.core.take_links();
        links.extend(by_pid.into_values().flatten());
        links.extend(std::mem::take(
            &mut *self.reap.lock().unwrap_or_else(PoisonError::into_inner),
        ));
        links
    }

    fn records(&self, sym: &mut Symbolizer) -> Result<Vec<Record>> {
        // entry by entry into records (no copy of the raw map next to
        // them), keeping only the keys; named afterwards, as before: the
        // locks first, then the callers in entry order
        let mut records: Vec<Record> = Vec::new();
        let mut keys: Vec<(ls_uagg_key, u64)> = Vec::new();
        common::for_each_entry(
            &self.core.skel.maps.agg,
            |k: ls_uagg_key, v: ls_uagg_val| {
                records.push(to_record(&k, &v, None, sym.cgroup(v.cgroup_id)));
                keys.push((k, v.count));
            },
        )?;
        name_locks(
            &self.syms,
            &self.names,
            self.unnamed_of(keys.iter().map(|(k, n)| (k, *n))),
            true,
        );
        for (r, (k, _)) in records.iter_mut().zip(&keys) {
            r.caller = self.caller_name(k.pid, k.caller);
            r.lock_name = self.lock_name(k.pid, k.lock);
        }
        let maps = &self.core.skel.maps;
        let key = |i: usize, _: &Record| (keys[i].0.lock, keys[i].0.tid, keys[i].0.kind);
        // a stack's first frame is the lock call's return address: the
        // caller of the aggregation key it belongs to
        let pick = |i: usize, e: &common::StackEntry| e.user_first == Some(keys[i].0.caller);
        common::stack_maps!(maps).attach(sym, &mut records, key, |f| f, pick)?;
        Ok(records)
    }

    fn tick(&self, sym: &mut Symbolizer) {
        let maps = &self.core.skel.maps;
        common::stack_maps!(maps).normalize_new(sym);
        // and name new locks while their processes live, a few times a
        // second (it reads the whole map), on a thread: the first look at
        // a binary's symbols takes a while
        let due = self
            .naming
            .borrow()
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
        if !due || self.naming_busy.load(Ordering::Acquire) {
            return;
        }
        *self.naming.borrow_mut() = Some(Instant::now());
        let Ok(entries) = common::entries(&maps.agg) else {
            return;
        };
        let todo = self.unnamed(&entries);
        if todo.is_empty() {
            return;
        }
        // the maps of each process now, while it lives
        {
            let mut syms = self.syms.lock().unwrap_or_else(PoisonError::into_inner);
            let pids: BTreeSet<u32> = todo.iter().map(|t| t.pid).collect();
            for pid in pids {
                syms.remember(pid);
            }
        }
        self.naming_busy.store(true, Ordering::Release);
        let (syms, names, busy) = (
            self.syms.clone(),
            self.names.clone(),
            self.naming_busy.clone(),
        );
        std::thread::spawn(move || {
            name_locks(&syms, &names, todo, false);
            busy.store(false, Ordering::Release);
        });
    }

    fn holders(&self) -> Result<Vec<HolderRow>> {
        let entries: Vec<(ls_uholder_key, ls_uholder_val)> =
            common::entries(&self.core.skel.maps.holders)?;
        // the holder's name from its own rows (it took the lock through a
        // traced call), else from /proc while it lives
        let aggs: Vec<(ls_uagg_key, ls_uagg_val)> = common::entries(&self.core.skel.maps.agg)?;
        Ok(entries
            .iter()
            .map(|(k, v)| {
                let (kind, source) = kind_of(k.kind);
                let comm = aggs
                    .iter()
                    .find(|(ak, _)| ak.tid == k.holder_tid && ak.pid == k.pid)
                    .map(|(_, av)| comm_str(&av.comm))
                    .or_else(|| {
                        std::fs::read_to_string(format!(
                            "/proc/{}/task/{}/comm",
                            k.pid, k.holder_tid
                        ))
                        .ok()
                        .map(|s| s.trim().to_string())
                    });
                HolderRow {
                    source,
                    kind,
                    lock: format!("0x{:x}", k.lock),
                    pid: k.pid,
                    holder_tid: k.holder_tid,
                    holder_comm: comm,
                    waits: v.waits,
                    wait_ns: v.wait_ns,
                }
            })
            .collect())
    }

    fn lost(&self) -> Result<BTreeMap<String, u64>> {
        let mut out = self.core.lost()?;
        if let Some(f) = &self.follow {
            // new processes of targets whose lock calls were not traced
            let missed = f.lock().unwrap_or_else(PoisonError::into_inner).missed;
            out.insert("follow_missed".into(), missed);
        }
        // holds still open when read: their end was not seen
        out.insert(
            "open_at_end".into(),
            self.core.skel.maps.holds.keys().count() as u64,
        );
        Ok(out)
    }

    fn decode_event(&self, data: &[u8], sym: &mut Symbolizer) -> Option<Event> {
        let e = from_bytes::<ls_uevent>(data)?;
        let caller = self.caller_name(e.pid, e.caller);
        let mut ev = to_event(&e, caller, sym.cgroup(e.cgroup_id));
        ev.lock_name = self.lock_name(e.pid, e.lock);
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(flags: u32) -> ls_uevent {
        ls_uevent {
            begin_ns: 1_000,
            acquired_ns: 3_000,
            released_ns: 10_000,
            lock: 0x55aa,
            caller: 0,
            cgroup_id: 0,
            pid: 10,
            tid: 11,
            kind: KIND_MUTEX,
            flags,
            holder_tid: 12,
            ret: 0,
            offcpu_ns: 1_500,
            runq_ns: 500,
            comm: [0; 16],
        }
    }

    #[test]
    fn an_uncontended_acquisition_never_waits() {
        // no EV_CONTENDED: the call's 2 us were the probes' own cost
        let e = to_event(&ev(0), None, None);
        assert_eq!((e.wait_ns, e.hold_ns), (0, Some(7_000)));
        assert_eq!((e.begin_ns, e.end_ns), (3_000, 3_000), "begins acquired");
        let sp = e.split.expect("a split of nothing");
        assert_eq!(sp.oncpu + sp.runnable + sp.asleep, 0);
        // a hold re-taken by a condition wait: no request time, no wait
        let mut c = ev(0);
        c.begin_ns = 0;
        let c = to_event(&c, None, None);
        assert_eq!((c.wait_ns, c.begin_ns), (0, 3_000));
        // a failed call keeps its call time, contended or not
        let f = to_event(&ev(EV_FAILED), None, None);
        assert_eq!((f.wait_ns, f.begin_ns), (2_000, 1_000));
    }

    #[test]
    fn a_completed_operation_has_wait_and_hold() {
        let e = to_event(&ev(EV_CONTENDED), None, None);
        assert_eq!((e.wait_ns, e.hold_ns), (2_000, Some(7_000)));
        assert_eq!(
            (e.begin_ns, e.end_ns, e.released_ns),
            (1_000, 3_000, Some(10_000))
        );
        assert_eq!(e.holder_tid, Some(12));
        let sp = e.split.expect("a timed wait has a split");
        assert_eq!((sp.oncpu, sp.runnable, sp.asleep), (500, 500, 1_000));
        assert_eq!(e.source, ROW_MUTEX);
        assert!(!e.failed && !e.partial);
    }

    #[test]
    fn failed_and_partial_operations_are_never_timed_as_holds() {
        let f = to_event(&ev(EV_FAILED), None, None);
        assert!(f.failed);
        assert_eq!((f.hold_ns, f.released_ns), (None, None));
        let mut p = ev(EV_PARTIAL);
        p.begin_ns = 0;
        p.acquired_ns = 0;
        let p = to_event(&p, None, None);
        assert!(p.partial);
        assert_eq!((p.wait_ns, p.hold_ns, p.end_ns), (0, None, 0));
        assert!(p.split.is_none(), "a wait not seen has no split");
        assert_eq!(p.released_ns, Some(10_000));
    }

    #[test]
    fn kinds_map_to_row_sources() {
        assert_eq!(kind_of(KIND_RD), (LockKind::UserRwlockRead, ROW_RWLOCK));
        assert_eq!(kind_of(KIND_WR), (LockKind::UserRwlockWrite, ROW_RWLOCK));
        assert_eq!(kind_of(KIND_SPIN), (LockKind::UserSpin, ROW_SPIN));
        assert_eq!(kind_of(KIND_MUTEX).0.name(), "pthread-mutex");
    }

    #[test]
    fn probes_go_on_the_first_emulated_instruction_past_the_loads() {
        // glibc 2.41 x86_64 pthread_mutex_lock: mov 0x10(%rdi),%eax;
        // mov %eax,%edx; and $0x17f,%edx; and $0x7c,%eax; jne
        let lock = [
            0x8b, 0x47, 0x10, 0x89, 0xc2, 0x81, 0xe2, 0x7f, 0x01, 0x00, 0x00, 0x83, 0xe0, 0x7c,
            0x0f, 0x85, 0xac, 0x00, 0x00, 0x00, 0x53, 0x48, 0x89, 0xfb,
        ];
        assert_eq!(cheap_point(&lock, &[REG_RDI]), 14);
        // the same behind endbr64 (CET builds)
        let mut cet = vec![0xf3, 0x0f, 0x1e, 0xfa];
        cet.extend_from_slice(&lock);
        assert_eq!(cheap_point(&cet, &[REG_RDI]), 18);
        // pthread_rwlock_rdlock: mov 0x18(%rdi),%edx; mov %fs:0x2d0,%eax;
        // cmp %eax,%edx; je
        let rd = [
            0x8b, 0x57, 0x18, 0x64, 0x8b, 0x04, 0x25, 0xd0, 0x02, 0x00, 0x00, 0x39, 0xc2, 0x0f,
            0x84, 0x0d, 0x01, 0x00, 0x00, 0x41, 0x54,
        ];
        assert_eq!(cheap_point(&rd, &[REG_RDI]), 13);
        // pthread_mutex_unlock: mov $1,%esi; jmp: %esi is not an argument
        // of unlock, but it is the mutex of a condition wait
        let unlock = [
            0xbe, 0x01, 0x00, 0x00, 0x00, 0xe9, 0xf6, 0xfe, 0xff, 0xff, 0x66, 0x0f,
        ];
        assert_eq!(cheap_point(&unlock, &[REG_RDI]), 5);
        assert_eq!(cheap_point(&unlock, &[REG_RDI, REG_RSI]), 0);
        // a push first: emulated where it is
        assert_eq!(
            cheap_point(&[0x41, 0x56, 0x41, 0x55, 0x41, 0x54, 0x55, 0x53], &[]),
            0
        );
        // a load into the argument, a store, a pop first: the entry
        let clobber = [0x48, 0x8b, 0x7f, 0x08, 0x0f, 0x85, 0, 0, 0, 0, 0, 0];
        assert_eq!(cheap_point(&clobber, &[REG_RDI]), 0);
        let store = [0x89, 0x07, 0x0f, 0x85, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(cheap_point(&store, &[REG_RDI]), 0);
        assert_eq!(cheap_point(&[0x5b, 0xc3, 0x90, 0x90, 0x90, 0x90], &[]), 0);
    }

    #[test]
    fn every_function_resolves_once_in_this_glibc() {
        let obj = find_pthread_object(None).expect("glibc");
        let mut offs = BTreeSet::new();
        for &(name, _, _) in FUNCS {
            if let Some(off) = obj.symbols.func_offset(name).expect(name) {
                assert!(offs.insert(off), "{name} shares an address");
            }
        }
        assert!(offs.len() >= 17, "{} functions found", offs.len());
    }
}
