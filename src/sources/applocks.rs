//! The app-locks source: waits on an application's own locks, named by the
//! application, from the USDT probes it fires around them
//! (`src/bpf/applocks.bpf.c`). Known applications are rows of [`PROBES`]:
//! a provider, a start probe and its done probe (or a point probe), and
//! which arguments name the lock and give its mode. A new application is
//! a new row.
//!
//! PostgreSQL (Debian's build has the probes, `readelf -n`):
//! - `lwlock__wait__start/done(char *tranche, int mode)`: rows of kind
//!   `lwlock:X`/`lwlock:S`/`lwlock:W` named `LWLock <tranche>`;
//! - `lock__wait__start/done(field1, field2, field3, field4, type, mode)`
//!   (the lock tag): rows of kind `pg-lock` named after the tag, e.g.
//!   `relation 5/16384 (AccessExclusiveLock)`, the OIDs as given;
//! - `deadlock__found()`: rows (and events) of kind `pg-deadlock`.
//!
//! The probes are attached by binary (pid -1), so backends the postmaster
//! forks later are covered; the BPF target filter keeps the targets (with
//! `-p`, forks of a target are followed, and the target's existing
//! descendants are added at start).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use libbpf_rs::MapCore;
use libbpf_rs::UsdtOpts;

use super::common;
use super::lifecycle::{self, Life, Loaded, Plan};
use super::{Options, Source, Symbolizer, comm_str};
use crate::bpf::applocks::types::{ls_app_event, ls_app_key, ls_app_probe, ls_app_val};
use crate::bpf::applocks::{ApplocksSkel, ApplocksSkelBuilder};
use crate::model::{Event, LockKind, Record, WaitSplit};

/// Source name of this module's rows.
pub const SOURCE: &str = "app-locks";

common::assert_hist_layout!(ls_app_val, hist);
common::bpf_pod!(ls_app_key, ls_app_val, ls_app_event);

/// Names of the `lost` counters, in the order of `enum ls_app_lost`.
pub const LOST_NAMES: [&str; 3] = ["map_full", "ringbuf_dropped", "waits_full"];

/// How an application's lock is named and which kind its rows are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// PostgreSQL LWLock: a tranche name, mode LW_EXCLUSIVE/LW_SHARED/
    /// LW_WAIT_UNTIL_FREE.
    PgLwlock,
    /// PostgreSQL heavyweight lock: the lock tag (field1..4, type), a
    /// LOCKMODE.
    PgLock,
    /// PostgreSQL's deadlock detector found one (a point).
    PgDeadlock,
    /// A Java monitor (HotSpot): monitor address, class name.
    JavaMonitor,
}

/// A known probe pair (or point) of an application.
#[derive(Clone, Copy, Debug)]
pub struct ProbePair {
    /// The application, for docs and the status.
    pub app: &'static str,
    pub provider: &'static str,
    /// The probe that fires when a wait begins (or the point probe).
    pub start: &'static str,
    /// The probe that fires when it ends (None: a point).
    pub done: Option<&'static str>,
    /// Argument (0-based) that is a `char *` name of the lock, -1: none.
    pub name_arg: i8,
    /// Argument that is the name's length, -1: NUL-terminated.
    pub name_len_arg: i8,
    /// Argument that is the mode, -1: none.
    pub mode_arg: i8,
    /// Arguments that are numbers naming the lock, -1: unused.
    pub id_args: [i8; 5],
    /// Whether the start and done of this pair can happen inside another
    /// pair's wait (their own slot): PostgreSQL waits on LWLocks while in
    /// a heavyweight lock wait. A point ends the open wait of its slot, as
    /// an aborted wait (PostgreSQL fires deadlock__found in the victim,
    /// whose lock wait then ends in an error, without lock__wait__done).
    pub slot: u32,
    pub family: Family,
}

const NO_IDS: [i8; 5] = [-1; 5];

/// The probe pairs lockscope knows.
pub const PROBES: &[ProbePair] = &[
    ProbePair {
        app: "PostgreSQL",
        provider: "postgresql",
        start: "lwlock__wait__start",
        done: Some("lwlock__wait__done"),
        name_arg: 0,
        name_len_arg: -1,
        mode_arg: 1,
        id_args: NO_IDS,
        slot: 0,
        family: Family::PgLwlock,
    },
    ProbePair {
        app: "PostgreSQL",
        provider: "postgresql",
        start: "lock__wait__start",
        done: Some("lock__wait__done"),
        name_arg: -1,
        name_len_arg: -1,
        mode_arg: 5,
        id_args: [0, 1, 2, 3, 4],
        slot: 1,
        family: Family::PgLock,
    },
    ProbePair {
        app: "PostgreSQL",
        provider: "postgresql",
        start: "deadlock__found",
        done: None,
        name_arg: -1,
        name_len_arg: -1,
        mode_arg: -1,
        id_args: NO_IDS,
        slot: 1, // the victim's heavyweight lock wait ends here
        family: Family::PgDeadlock,
    },
    // HotSpot (with -XX:+DTraceMonitorProbes): (thread id, monitor
    // address, class name, its length); not tested here (no JVM).
    ProbePair {
        app: "HotSpot JVM",
        provider: "hotspot",
        start: "monitor__contended__enter",
        done: Some("monitor__contended__entered"),
        name_arg: 2,
        name_len_arg: 3,
        mode_arg: -1,
        id_args: [1, -1, -1, -1, -1],
        slot: 0,
        family: Family::JavaMonitor,
    },
];

/// The BPF table: the start (or point) of pair i at 2i, its done at 2i+1.
fn bpf_table() -> Vec<ls_app_probe> {
    let mut out = Vec::new();
    for p in PROBES {
        let start = ls_app_probe {
            role: if p.done.is_some() { 1 } else { 3 },
            slot: p.slot,
            name_arg: p.name_arg,
            name_len_arg: p.name_len_arg,
            mode_arg: p.mode_arg,
            id_args: p.id_args,
        };
        out.push(start);
        out.push(ls_app_probe { role: 2, ..start });
    }
    out
}

/// The pair a BPF probe index (start at 2i) belongs to.
fn pair_of(probe: u32) -> Option<&'static ProbePair> {
    PROBES.get(probe as usize / 2)
}

/// One `.note.stapsdt` entry: (provider, name, argument spec).
pub type Note = (String, String, String);

/// The USDT notes of an ELF file (`.note.stapsdt`), empty when it has none.
///
/// The file is mapped, not read: only the pages of its headers and notes
/// are touched (a debug build's executable is ~90 MB; reading it whole
/// cost lockscope that much memory at start).
pub fn stapsdt_notes(path: &Path) -> Result<Vec<Note>> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let len = usize::try_from(f.metadata()?.len()).context("file size")?;
    if len == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: maps `len` bytes of a file open for reading, read-only and
    // private; the mapping is unmapped below and nothing refers to it
    // afterwards.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("map {}", path.display()));
    }
    // SAFETY: the mapping is `len` readable bytes until the munmap below.
    let b = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
    let notes = parse_stapsdt(b);
    // SAFETY: unmaps the mapping made above; `b` is not used after this.
    unsafe { libc::munmap(p, len) };
    Ok(notes)
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?)).ok()
}

/// The stapsdt notes of a 64-bit little-endian ELF image.
pub fn parse_stapsdt(b: &[u8]) -> Vec<Note> {
    parse_stapsdt_opt(b).unwrap_or_default()
}

fn parse_stapsdt_opt(b: &[u8]) -> Option<Vec<Note>> {
    if b.get(..4)? != b"\x7fELF" || *b.get(4)? != 2 || *b.get(5)? != 1 {
        return None;
    }
    let shoff = u64_at(b, 0x28)?;
    let shentsize = usize::from(u16_at(b, 0x3a)?);
    let shnum = usize::from(u16_at(b, 0x3c)?);
    let shstrndx = usize::from(u16_at(b, 0x3e)?);
    let sh = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(b, sh(shstrndx) + 0x18)?;
    let mut out = Vec::new();
    for i in 0..shnum {
        let name_off = u32_at(b, sh(i))? as usize;
        let name = cstr(b, strtab + name_off)?;
        if name != ".note.stapsdt" {
            continue;
        }
        let off = u64_at(b, sh(i) + 0x18)?;
        let size = u64_at(b, sh(i) + 0x20)?;
        let mut o = off;
        while o + 12 <= off + size {
            let namesz = u32_at(b, o)? as usize;
            let descsz = u32_at(b, o + 4)? as usize;
            let ntype = u32_at(b, o + 8)?;
            let name_at = o + 12;
            let desc_at = name_at + namesz.next_multiple_of(4);
            if ntype == 3 && b.get(name_at..name_at + namesz)? == b"stapsdt\0" {
                // three addresses (pc, base, semaphore), then the strings
                let s = desc_at + 24;
                let provider = cstr(b, s)?;
                let probe = cstr(b, s + provider.len() + 1)?;
                let args = cstr(b, s + provider.len() + probe.len() + 2)?;
                out.push((provider, probe, args));
            }
            o = desc_at + descsz.next_multiple_of(4);
        }
    }
    Some(out)
}

fn cstr(b: &[u8], o: usize) -> Option<String> {
    let rest = b.get(o..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// PostgreSQL's LOCKMODE names (lockdefs.h).
pub fn pg_lock_mode(mode: i32) -> String {
    const NAMES: [&str; 9] = [
        "NoLock",
        "AccessShareLock",
        "RowShareLock",
        "RowExclusiveLock",
        "ShareUpdateExclusiveLock",
        "ShareLock",
        "ShareRowExclusiveLock",
        "ExclusiveLock",
        "AccessExclusiveLock",
    ];
    usize::try_from(mode)
        .ok()
        .and_then(|m| NAMES.get(m))
        .map_or_else(|| format!("lockmode {mode}"), |s| (*s).to_string())
}

/// A PostgreSQL lock tag (LockTagType of lock.h, PostgreSQL 15) as text,
/// the OIDs as given.
pub fn pg_lock_tag(id: &[u64; 5]) -> String {
    let [f1, f2, f3, f4, ty] = *id;
    match ty {
        0 => format!("relation {f1}/{f2}"),
        1 => format!("extend {f1}/{f2}"),
        2 => format!("frozen ids of database {f1}"),
        3 => format!("page {f1}/{f2}/{f3}"),
        4 => format!("tuple {f1}/{f2}/{f3}/{f4}"),
        5 => format!("transaction {f1}"),
        6 => format!("virtualxid {f1}/{f2}"),
        7 => format!("speculative token {f1}/{f2}"),
        8 => format!("object {f1}/{f2}/{f3}/{f4}"),
        9 => format!("userlock {f1}/{f2}/{f3}/{f4}"),
        10 => format!("advisory {f1}/{f2}/{f3}/{f4}"),
        t => format!("locktag type {t} {f1}/{f2}/{f3}/{f4}"),
    }
}

/// A lock's kind, name and identity from what the probes gave.
pub fn describe(probe: u32, mode: i32, id: &[u64; 5], name: &[i8]) -> (LockKind, String, u64) {
    let text = comm_str(name);
    let family = pair_of(probe).map(|p| p.family);
    let (kind, name) = match family {
        Some(Family::PgLwlock) => (
            match mode {
                0 => LockKind::LwlockExclusive,
                1 => LockKind::LwlockShared,
                _ => LockKind::LwlockWaitFree,
            },
            format!("LWLock {text}"),
        ),
        Some(Family::PgLock) => (
            LockKind::PgLock,
            format!("{} ({})", pg_lock_tag(id), pg_lock_mode(mode)),
        ),
        Some(Family::PgDeadlock) => (LockKind::PgDeadlock, "deadlock found".to_string()),
        Some(Family::JavaMonitor) => (LockKind::JavaMonitor, format!("monitor of {text}")),
        None => (LockKind::Unknown(probe), text),
    };
    let lock = match family {
        Some(Family::JavaMonitor) => id[0],
        _ => fnv(probe, id, &name),
    };
    (kind, name, lock)
}

/// A stable identity for a lock named by numbers and text.
fn fnv(probe: u32, id: &[u64; 5], name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    };
    (probe / 2).to_le_bytes().into_iter().for_each(&mut eat);
    id.iter().flat_map(|v| v.to_le_bytes()).for_each(&mut eat);
    name.bytes().for_each(&mut eat);
    h
}

/// The executables of the targets, and their notes.
fn target_binaries(pids: &[u32]) -> Vec<(PathBuf, Vec<Note>)> {
    let mut out: Vec<(PathBuf, Vec<Note>)> = Vec::new();
    for pid in pids {
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let path = std::fs::canonicalize(&exe)
            .ok()
            .filter(|p| p.exists())
            .unwrap_or(exe);
        if out.iter().any(|(p, _)| *p == path) {
            continue;
        }
        if let Ok(notes) = stapsdt_notes(&path) {
            out.push((path, notes));
        }
    }
    out
}

/// Every process descended from one of `roots` (children, grandchildren).
fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // after the ")" that ends comm: state, ppid
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
            {
                parent.insert(pid, ppid);
            }
        }
    }
    parent
        .keys()
        .copied()
        .filter(|&pid| {
            let mut p = pid;
            for _ in 0..64 {
                match parent.get(&p) {
                    Some(&pp) if roots.contains(&pp) => return true,
                    Some(&pp) if pp > 1 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// The known probe pairs found in `binaries`: (binary, index in PROBES).
fn known_pairs(binaries: Vec<(PathBuf, Vec<Note>)>) -> Vec<(PathBuf, usize)> {
    let mut todo = Vec::new();
    for (path, notes) in binaries {
        let has = |probe: &str, provider: &str| {
            notes.iter().any(|(pv, n, _)| pv == provider && n == probe)
        };
        for (i, p) in PROBES.iter().enumerate() {
            if has(p.start, p.provider) && p.done.is_none_or(|d| has(d, p.provider)) {
                todo.push((path.clone(), i));
            }
        }
    }
    todo
}

/// Attaches `app_probe` to every probe of `todo`, by binary (every process
/// of it; the program keeps to the targets): the links, and what was
/// attached ("PostgreSQL (/usr/lib/postgresql/15/bin/postgres)").
fn attach_pairs(
    skel: &ApplocksSkel<'static>,
    todo: &[(PathBuf, usize)],
) -> Result<(Vec<libbpf_rs::Link>, Vec<String>)> {
    let mut links = Vec::new();
    let mut attached: Vec<String> = Vec::new();
    for (path, i) in todo {
        let p = &PROBES[*i];
        let probes = [Some(p.start), p.done];
        for (role, name) in probes.iter().enumerate() {
            let Some(name) = name else { continue };
            let cookie = (*i * 2 + role) as u64;
            let link = skel
                .progs
                .app_probe
                .attach_usdt_with_opts(
                    -1,
                    path,
                    p.provider,
                    name,
                    UsdtOpts {
                        cookie,
                        ..Default::default()
                    },
                )
                .map_err(|e| {
                    super::probes::load_error(
                        &format!("attach {}:{name} in {}", p.provider, path.display()),
                        &e,
                    )
                })?;
            links.push(link);
        }
        let what = format!("{} ({})", p.app, path.display());
        if !attached.contains(&what) {
            attached.push(what);
        }
    }
    Ok((links, attached))
}

/// Whether `pid` runs lockscope's own executable: `run`'s command, held
/// before its exec.
fn is_held_command(pid: u32) -> bool {
    let own = std::env::current_exe().and_then(std::fs::canonicalize);
    let its = std::fs::canonicalize(format!("/proc/{pid}/exe"));
    matches!((own, its), (Ok(a), Ok(b)) if a == b)
}

/// A loaded and attached app-locks source.
pub struct AppLocks {
    core: Loaded<ApplocksSkel<'static>>,
    /// What was attached: "PostgreSQL (/usr/lib/postgresql/15/bin/postgres)",
    /// and later by targets' execs.
    attached: std::sync::Mutex<Vec<String>>,
    /// Executables the targets exec'd, looked at once each (`run`).
    seen: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    /// Attach errors of exec'd applications, for the status.
    exec_errors: std::sync::Mutex<Vec<String>>,
    /// The processes named (-p): where names BPF could not read are read.
    targets: Vec<u32>,
}

/// Starts the source ([`super::SourceInfo::start`]).
pub fn start(opts: &Options) -> Result<Box<dyn Source>> {
    Ok(Box::new(AppLocks::start(opts)?))
}

impl AppLocks {
    pub fn start(opts: &Options) -> Result<AppLocks> {
        if let Some(b) = opts.backend.as_deref()
            && b != "usdt"
        {
            bail!("{SOURCE} has no backend '{b}' (usdt only)");
        }
        let pids = &opts.targets.pids;
        if pids.is_empty() {
            bail!("{SOURCE} needs the application's processes: -p PID");
        }
        // (binary, pair) to attach: both probes of a pair must be there
        let todo = known_pairs(target_binaries(pids));
        let follow = opts.targets.follow_forks;
        // `run -- CMD`: the command has not exec'd yet; what it (or its
        // children) exec is looked at as it happens
        let held = follow && pids.iter().all(|&p| is_held_command(p));
        if todo.is_empty() && !held {
            bail!(
                "no known lock probes (USDT) in the targets' executables (known: {})",
                known_apps()
            );
        }
        let plan = Plan {
            backend: "usdt",
            load: &|name| match name {
                "app_follow_fork_btf" | "app_exec_btf" => follow,
                "app_probe" => true,
                _ => false,
            },
            sized: &["agg"],
            lost: &LOST_NAMES,
            attach: false,
        };
        let table = bpf_table();
        let core = lifecycle::load::<ApplocksSkelBuilder>(opts, &plan, |open| {
            let rodata = common::target_rodata!(open, opts, emit_events);
            for (dst, src) in rodata.app_probes.iter_mut().zip(&table) {
                *dst = *src;
            }
            // one wait, one row: the futex source skips what this covers
            super::ulock::reuse_call_map(&mut open.maps.ulock_call)
        })?;
        super::ulock::publish_call_map(&core.skel.maps.ulock_call);
        let mut links = Vec::new();
        let progs = &core.skel.progs;
        if follow {
            for (prog, name) in [
                (&progs.app_follow_fork_btf, "app_follow_fork_btf"),
                (&progs.app_exec_btf, "app_exec_btf"),
            ] {
                links.push(
                    prog.attach()
                        .map_err(|e| super::probes::load_error(&format!("attach {name}"), &e))?,
                );
            }
        }
        let (usdt, attached) = attach_pairs(&core.skel, &todo)?;
        links.extend(usdt);
        core.add_links(links);
        // the targets' children that exist already (a postmaster's
        // backends and workers): forks after this are followed in BPF
        if follow {
            for pid in descendants(pids) {
                core.add_pid(pid)?;
            }
        }
        Ok(AppLocks {
            core,
            attached: std::sync::Mutex::new(attached),
            seen: std::sync::Mutex::new(todo.into_iter().map(|(p, _)| p).collect()),
            exec_errors: std::sync::Mutex::new(Vec::new()),
            targets: pids.clone(),
        })
    }

    /// What the probes delivered, summed over CPUs, by `enum ls_app_fired`.
    pub fn fired(&self) -> Result<[u64; 5]> {
        let map = &self.core.skel.maps.fired;
        let mut out = [0u64; 5];
        for (i, o) in out.iter_mut().enumerate() {
            *o = common::percpu_u64_sum(map, i as u32).context("read fired")?;
        }
        Ok(out)
    }
}

/// The applications of [`PROBES`], once each.
pub fn known_apps() -> String {
    let mut apps: Vec<&str> = Vec::new();
    for p in PROBES {
        if !apps.contains(&p.app) {
            apps.push(p.app);
        }
    }
    apps.join(", ")
}

/// A lock name BPF could not read (`ptr`, in the page of a process that
/// had not touched it since fork): read from the process, else from the
/// targets it was forked from (the same address space layout). `name` as
/// read by BPF otherwise (once per aggregation entry, when BPF made it).
fn name_at(name: &[i8; 32], ptr: u64, pid: u32, targets: &[u32]) -> [i8; 32] {
    use std::os::unix::fs::FileExt;
    if ptr == 0 || name[0] != 0 {
        return *name;
    }
    for p in std::iter::once(pid).chain(targets.iter().copied()) {
        let Ok(f) = std::fs::File::open(format!("/proc/{p}/mem")) else {
            continue;
        };
        let mut buf = [0u8; 32];
        if f.read_at(&mut buf[..31], ptr).is_ok_and(|n| n > 0) {
            let end = buf.iter().position(|&c| c == 0).unwrap_or(31);
            let mut out = [0i8; 32];
            for (d, c) in out.iter_mut().zip(&buf[..end]) {
                *d = *c as i8;
            }
            return out;
        }
    }
    *name
}

/// An aggregation entry as a model record.
fn to_record(sym: &mut Symbolizer, k: &ls_app_key, v: &ls_app_val, name: &[i8]) -> Record {
    let (kind, name, lock) = describe(k.probe, k.mode, &k.id, name);
    Record {
        source: SOURCE,
        kind,
        lock,
        lock_name: Some(name),
        caller: None,
        pid: k.pid,
        tid: k.tid,
        comm: comm_str(&v.comm),
        cgroup: sym.cgroup(v.cgroup_id),
        memcg: None,
        aborted: v.aborted,
        spun: 0,
        slept: v.slept,
        wait: common::stats(v.count, v.total_ns, v.min_ns, v.max_ns, &v.hist),
        hold: None,
        acquired: None,
        failed: 0,
        partial: 0,
        // where the waits went (a point, PostgreSQL's deadlock found,
        // has no duration: its row has no split)
        split: (v.total_ns > 0).then(|| WaitSplit::from_offcpu(v.total_ns, v.offcpu_ns, v.runq_ns)),
        stacks: Vec::new(),
    }
}

/// A ring-buffer record as a model event.
fn to_event(sym: &mut Symbolizer, e: &ls_app_event, name: &[i8]) -> Event {
    let (kind, name, lock) = describe(e.probe, e.mode, &e.id, name);
    Event {
        source: SOURCE,
        kind,
        lock,
        lock_name: Some(name),
        caller: None,
        pid: e.pid,
        tid: e.tid,
        comm: comm_str(&e.comm),
        cgroup: sym.cgroup(e.cgroup_id),
        begin_ns: e.begin_ns,
        end_ns: e.end_ns,
        released_ns: None,
        wait_ns: e.end_ns.saturating_sub(e.begin_ns),
        hold_ns: None,
        aborted: e.aborted != 0,
        failed: false,
        ret: 0,
        spun: false,
        slept: e.slept != 0,
        partial: false,
        holder_tid: None,
        split: (e.end_ns > e.begin_ns)
            .then(|| WaitSplit::from_offcpu(e.end_ns - e.begin_ns, e.offcpu_ns, e.runq_ns)),
    }
}

impl Source for AppLocks {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn life(&self) -> &dyn Life {
        &self.core
    }

    fn note(&self) -> Option<String> {
        let [start, done, paired, point, ended] = self.fired().ok()?;
        let attached = self
            .attached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .join(", ");
        let mut s = if attached.is_empty() {
            format!(
                "no application with known lock probes exec'd (known: {})",
                known_apps()
            )
        } else {
            format!(
                "{attached}; probes delivered {start} wait starts, {done} wait dones \
                 ({paired} paired), {point} points ({ended} ended an open wait)"
            )
        };
        for e in self
            .exec_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            s.push_str(&format!("; {e}"));
        }
        Some(s)
    }

    /// Attaches the probes of applications the targets exec'd since the
    /// last tick (`run`: the command itself, or what a wrapper starts);
    /// their waits before that are not seen.
    fn tick(&self, _sym: &mut Symbolizer) {
        let map = &self.core.skel.maps.execs;
        let pids: Vec<u32> = map
            .keys()
            .filter_map(|k| {
                let _ = map.delete(&k);
                super::from_bytes::<u32>(&k)
            })
            .collect();
        if pids.is_empty() {
            return;
        }
        let new: Vec<(PathBuf, Vec<Note>)> = {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            target_binaries(&pids)
                .into_iter()
                .filter(|(p, _)| seen.insert(p.clone()))
                .collect()
        };
        let todo = known_pairs(new);
        if todo.is_empty() {
            return;
        }
        match attach_pairs(&self.core.skel, &todo) {
            Ok((links, what)) => {
                self.core.add_links(links);
                let mut a = self
                    .attached
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for w in what {
                    if !a.contains(&w) {
                        a.push(w);
                    }
                }
            }
            Err(e) => self
                .exec_errors
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("{e:#}")),
        }
    }

    fn records(&self, sym: &mut Symbolizer) -> Result<Vec<Record>> {
        let raw: Vec<(ls_app_key, ls_app_val)> = common::entries(&self.core.skel.maps.agg)?;
        Ok(raw
            .iter()
            .map(|(k, v)| {
                let name = name_at(&v.name, k.name_ptr, k.pid, &self.targets);
                to_record(sym, k, v, &name)
            })
            .collect())
    }

    fn decode_event(&self, data: &[u8], sym: &mut Symbolizer) -> Option<Event> {
        let e = super::from_bytes::<ls_app_event>(data)?;
        let name = name_at(&e.name, e.name_ptr, e.pid, &self.targets);
        Some(to_event(sym, &e, &name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> [i8; 32] {
        crate::sources::common::c_chars(s)
    }

    #[test]
    fn postgres_locks_are_named_as_postgres_names_them() {
        let (k, n, _) = describe(0, 0, &[0; 5], &name("WALWrite"));
        assert_eq!(
            (k, n.as_str()),
            (LockKind::LwlockExclusive, "LWLock WALWrite")
        );
        assert_eq!(k.name(), "lwlock:X");
        let (k, _, _) = describe(0, 1, &[0; 5], &name("BufferContent"));
        assert_eq!(k.name(), "lwlock:S");
        let (k, n, _) = describe(2, 8, &[5, 16384, 0, 0, 0], &[0; 32]);
        assert_eq!(k, LockKind::PgLock);
        assert_eq!(n, "relation 5/16384 (AccessExclusiveLock)");
        let (_, n, _) = describe(2, 5, &[731, 0, 0, 0, 5], &[0; 32]);
        assert_eq!(n, "transaction 731 (ShareLock)");
        let (k, n, _) = describe(4, 0, &[0; 5], &[0; 32]);
        assert_eq!((k, n.as_str()), (LockKind::PgDeadlock, "deadlock found"));
    }

    #[test]
    fn an_event_decodes_from_its_raw_struct() {
        let raw = ls_app_event {
            begin_ns: 100,
            end_ns: 350,
            id: [5, 16384, 0, 0, 0],
            pid: 7,
            tid: 8,
            probe: 2,
            mode: 1,
            name: [0; 32],
            offcpu_ns: 200,
            runq_ns: 30,
            slept: 1,
            ..Default::default()
        };
        let e = to_event(&mut Symbolizer::new(), &raw, &raw.name);
        assert_eq!(e.wait_ns, 250);
        assert!(e.slept);
        assert_eq!(
            e.split,
            Some(WaitSplit {
                oncpu: 50,
                runnable: 30,
                asleep: 170
            })
        );
        // a point (deadlock found) has no duration and no split
        let point = ls_app_event {
            end_ns: 100,
            probe: 4,
            ..raw
        };
        assert_eq!(
            to_event(&mut Symbolizer::new(), &point, &raw.name).split,
            None
        );
        assert_eq!(e.source, SOURCE);
        assert_eq!(
            e.lock_name.as_deref(),
            Some("relation 5/16384 (AccessShareLock)")
        );
    }

    #[test]
    fn the_bpf_table_has_a_start_and_done_per_pair() {
        let t = bpf_table();
        assert!(t.len() <= 16, "LS_APP_PROBES");
        assert_eq!(t[0].role, 1);
        assert_eq!(t[1].role, 2);
        assert_eq!(t[4].role, 3, "deadlock__found is a point");
        assert_eq!(t[4].slot, 1, "it ends the victim's heavyweight wait");
        assert_eq!(t[2].slot, 1, "heavyweight waits have their own slot");
    }

    #[test]
    fn stapsdt_notes_name_the_probes_the_table_knows() {
        assert!(parse_stapsdt(b"not an elf").is_empty());
        // Debian's server, where installed (scripts/setup.sh test)
        let pg = Path::new("/usr/lib/postgresql/15/bin/postgres");
        if !pg.exists() {
            return;
        }
        let notes = stapsdt_notes(pg).expect("readable");
        for p in PROBES.iter().filter(|p| p.provider == "postgresql") {
            for name in [Some(p.start), p.done].into_iter().flatten() {
                assert!(
                    notes.iter().any(|(pv, n, _)| pv == p.provider && n == name),
                    "{name} in {notes:?}"
                );
            }
        }
    }
}
