//! Names of the kernel locks that protect files: a pipe's mutex
//! (`pipe:[123] (fd 5 of 4242 ls-hold)`), an inode's `i_rwsem`, its
//! mapping's `i_mmap_rwsem` and its `i_lock` (`i_rwsem of /var/db/x`).
//!
//! A task_file BPF iterator (src/bpf/files.bpf.c) lists every open
//! regular file, directory and pipe of every process with the addresses
//! of those locks and the file's path (bpf_d_path). It runs only when
//! read, and is read only when a lock needs a name: when a source sees a
//! lock address it has not seen before ([`FileLocks::want`]; the next
//! tick lists the files of the processes that waited for it, while the
//! file is still likely open: a pipe's reader or writer, a file's writer
//! has it open), and on demand when a row's lock address has no name
//! (every process's files). An address a listing made after it was wanted
//! did not name is no file's lock (a socket's, a task's): it is not
//! listed for again. kernel-contention lists this
//! way; the function-probe sources list periodically while they tick
//! ([`FileLocks::refresh_if_due`]). Listings happen never more often
//! than every 50 ms nor take more than 1% of one CPU (a listing of 200
//! files takes under a millisecond; a host with 100000 open files is
//! listed every few seconds). Names stay after their files are closed,
//! so a report at the end still names the files of processes that
//! exited; an address that another file reuses later takes that file's
//! name at the next listing.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, OpenObject};

use crate::bpf::files::types::ls_file_rec;
use crate::bpf::files::{FilesSkel, FilesSkelBuilder};
use crate::pod::{Pod, comm_str, from_bytes};

// SAFETY: generated from lockscope.h, repr(C), integer fields and an i8
// array only, padded by hand (no implicit padding).
unsafe impl Pod for ls_file_rec {}

/// How often the open files are listed again, at most.
pub const REFRESH_MIN: Duration = Duration::from_millis(50);
/// Listings take at most 1/REFRESH_COST_SHARE of the time.
const REFRESH_COST_SHARE: u32 = 100;
/// And happen at least this often while sources tick.
const REFRESH_MAX: Duration = Duration::from_secs(5);

/// Names kept at most: past it, the cache starts again from the current
/// listing (a long-running `serve` on a host that opens many files).
const MAX_NAMES: usize = 200_000;

const LS_FILE_PIPE: u32 = 3;

/// The loaded iterator.
struct Iterator {
    skel: FilesSkel<'static>,
    link: Link,
    /// The tgids now in `target_pids`.
    filtered: Vec<u32>,
    /// Whether the kernel iterates one process's files (Linux 6.1+: a
    /// link per process); None until tried.
    per_pid: Option<bool>,
}

/// A listing of the files of at most this many processes lists theirs
/// only (`filter_pid`); more list every process's.
const MAX_FILTERED: usize = 1024;

/// Kernel lock address → the name of the file it protects.
#[derive(Default)]
pub struct FileLocks {
    iter: Option<Iterator>,
    /// Why the iterator could not be loaded (then no file names).
    pub error: Option<String>,
    tried: bool,
    names: HashMap<u64, String>,
    /// Addresses wanted ([`FileLocks::want`]) that no listing made since
    /// has named yet, and the processes that waited for them (0: any: the
    /// next listing lists every process's files).
    pending: HashSet<u64>,
    pending_pids: HashSet<u32>,
    /// Addresses a listing of every process's files made after they were
    /// wanted did not name: no file's lock, not listed for again.
    unnamed: HashSet<u64>,
    /// Addresses a listing of their waiters' files did not name: not
    /// wanted again ([`FileLocks::name`] may still list every process's).
    missed: HashSet<u64>,
    last: Option<Instant>,
    /// Files listed by the last refresh, and what it cost.
    pub last_files: usize,
    pub last_cost: Duration,
}

impl FileLocks {
    /// The name of the file lock at `addr`, listing the open files again
    /// when it is unknown and the last listing is old enough.
    pub fn name(&mut self, addr: u64) -> Option<String> {
        if addr == 0 {
            return None;
        }
        if !self.names.contains_key(&addr) && !self.unnamed.contains(&addr) {
            self.pending.insert(addr);
            self.pending_pids.insert(0);
            self.refresh_if_due();
        }
        self.names.get(&addr).cloned()
    }

    /// Asks for the name of the lock at `addr`, which a thread of process
    /// `pid` (0: unknown) has just waited for: the next
    /// [`FileLocks::refresh_if_wanted`] lists the open files of the
    /// processes that waited for unnamed locks (a file's lock is waited
    /// for by a process that has the file open: a pipe's reader or writer,
    /// a file's writer).
    pub fn want(&mut self, addr: u64, pid: u32) {
        if addr != 0
            && !self.names.contains_key(&addr)
            && !self.unnamed.contains(&addr)
            && !self.missed.contains(&addr)
        {
            self.pending.insert(addr);
            self.pending_pids.insert(pid);
        }
    }

    /// Whether a wanted lock still waits for a listing.
    pub fn wanted(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Lists the open files again if a wanted lock has no name yet and the
    /// last listing is old enough ([`FileLocks::interval`]); nothing
    /// otherwise (sources call this from their `tick`).
    pub fn refresh_if_wanted(&mut self) {
        if !self.wanted() || self.last.is_some_and(|t| t.elapsed() < self.interval()) {
            return;
        }
        self.last = Some(Instant::now());
        let pids: Vec<u32> = self.pending_pids.iter().copied().collect();
        let only = (!pids.contains(&0) && pids.len() <= MAX_FILTERED).then_some(pids);
        if let Err(e) = self.list(only.as_deref()) {
            self.error = Some(format!("{e:#}"));
        }
    }

    /// Loads the iterator now (as root), so that the first listing costs
    /// no load time; an error is kept for later.
    pub fn preload(&mut self) {
        if !self.tried {
            self.tried = true;
            match load() {
                Ok(it) => self.iter = Some(it),
                Err(e) => self.error = Some(format!("{e:#}")),
            }
        }
    }

    /// Time between two listings: 100 times what the last one took,
    /// within [50 ms, 5 s].
    pub fn interval(&self) -> Duration {
        (self.last_cost * REFRESH_COST_SHARE).clamp(REFRESH_MIN, REFRESH_MAX)
    }

    /// Lists the open files again if the last listing is old enough
    /// ([`FileLocks::interval`]; the function-probe sources call this from
    /// their `tick`, whether a lock needs a name or not).
    pub fn refresh_if_due(&mut self) {
        if self.last.is_some_and(|t| t.elapsed() < self.interval()) {
            return;
        }
        self.last = Some(Instant::now());
        if let Err(e) = self.refresh() {
            self.error = Some(format!("{e:#}"));
        }
    }

    /// Lists the open files of every process now.
    pub fn refresh(&mut self) -> Result<()> {
        self.list(None)
    }

    /// Lists the open files of the processes `only` names (None: of every
    /// process) now.
    fn list(&mut self, only: Option<&[u32]>) -> Result<()> {
        if !self.tried {
            self.tried = true;
            self.iter = Some(load()?);
        }
        let Some(it) = &mut self.iter else {
            return Err(anyhow!(
                "{}",
                self.error.as_deref().unwrap_or("no task_file iterator")
            ));
        };
        let t0 = Instant::now();
        let bytes = it.read(only)?;
        let recs = parse(&bytes);
        self.last_files = recs.len();
        if self.names.len() > MAX_NAMES {
            self.names.clear();
        }
        if self.unnamed.len() > MAX_NAMES {
            self.unnamed.clear();
        }
        let mut seen = std::collections::HashSet::new();
        for (r, path) in &recs {
            for (addr, name) in names_of(r, path) {
                // the first file of this listing wins (lowest pid, fd)
                if seen.insert(addr) {
                    self.names.insert(addr, name);
                }
            }
        }
        if self.missed.len() > MAX_NAMES {
            self.missed.clear();
        }
        // what was wanted and is still unnamed is no open file's lock (or,
        // after a listing of its waiters' files, no file of theirs)
        for a in self.pending.drain() {
            if !self.names.contains_key(&a) {
                if only.is_some() {
                    self.missed.insert(a);
                } else {
                    self.unnamed.insert(a);
                }
            }
        }
        self.pending_pids.clear();
        self.last_cost = t0.elapsed();
        Ok(())
    }
}

/// Loads and attaches the iterator (not run until read).
fn load() -> Result<Iterator> {
    crate::libbpf_log::install();
    crate::libbpf_log::take();
    // the open object must outlive the skeleton; one per process
    let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let mut open = FilesSkelBuilder::default()
        .open(storage)
        .context("open files BPF object")?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .ok_or_else(|| anyhow!("BPF object has no .rodata"))?;
    rodata.self_tgid = std::process::id();
    let skel = open.load().map_err(|e| {
        anyhow!(
            "load task_file iterator: {e} ({})",
            crate::libbpf_log::summary()
        )
    })?;
    let link = skel
        .progs
        .task_files
        .attach()
        .context("attach task_file iterator")?;
    Ok(Iterator {
        skel,
        link,
        filtered: Vec::new(),
        per_pid: None,
    })
}

impl Iterator {
    /// Lists the open files of the processes `only` names (None: of every
    /// process): the kernel walks those processes' files only where it
    /// can (a link per process, Linux 6.1+), else every process's and the
    /// program skips the others (`filter_pid`).
    fn read(&mut self, only: Option<&[u32]>) -> Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(64 << 10);
        if let Some(pids) = only
            && self.per_pid != Some(false)
        {
            let mut ok = true;
            for &p in pids {
                let start = bytes.len();
                match self.read_pid(p, &mut bytes) {
                    // a kernel that takes no pid (before 6.1) ignores it
                    // and lists every process: seen at the first listing
                    Ok(()) if self.per_pid.is_none() => {
                        let only_p = parse(&bytes[start..]).iter().all(|(r, _)| r.pid == p);
                        self.per_pid = Some(only_p);
                        if !only_p {
                            ok = false;
                            break;
                        }
                    }
                    Ok(()) => {}
                    // gone already: no files
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {}
                    Err(e) if self.per_pid == Some(true) => {
                        return Err(e).context("read task_file iterator");
                    }
                    // a kernel whose task iterators take no link info
                    Err(_) => {
                        self.per_pid = Some(false);
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                return Ok(bytes);
            }
            bytes.clear();
        }
        self.filter(only)?;
        libbpf_rs::Iter::new(&self.link)
            .context("create task_file iterator")?
            .read_to_end(&mut bytes)
            .context("read task_file iterator")?;
        Ok(bytes)
    }

    /// Appends the listing of process `pid`'s files to `out`, with an
    /// iterator link of its own.
    fn read_pid(&mut self, pid: u32, out: &mut Vec<u8>) -> std::io::Result<()> {
        use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
        self.filter(None).map_err(std::io::Error::other)?;
        let mut info = libbpf_sys::bpf_iter_link_info::default();
        info.task.pid = pid;
        let opts = libbpf_sys::bpf_link_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
            iter_info: &mut info,
            iter_info_len: std::mem::size_of::<libbpf_sys::bpf_iter_link_info>() as u32,
            ..Default::default()
        };
        let prog = self.skel.progs.task_files.as_fd().as_raw_fd();
        // SAFETY: a loaded program's fd, options that live across the
        // call; returns a new fd or a negative errno.
        let link =
            unsafe { libbpf_sys::bpf_link_create(prog, 0, libbpf_sys::BPF_TRACE_ITER, &opts) };
        if link < 0 {
            return Err(std::io::Error::from_raw_os_error(-link));
        }
        // SAFETY: a new fd that nothing else owns.
        let link = unsafe { OwnedFd::from_raw_fd(link) };
        // SAFETY: a valid iterator link fd; returns a new fd or a
        // negative errno.
        let fd = unsafe { libbpf_sys::bpf_iter_create(link.as_raw_fd()) };
        if fd < 0 {
            return Err(std::io::Error::from_raw_os_error(-fd));
        }
        // SAFETY: a new fd that nothing else owns.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        f.read_to_end(out).map(|_| ())
    }

    /// Makes the next read of `link` list the files of the processes
    /// `only` names (None: of every process).
    fn filter(&mut self, only: Option<&[u32]>) -> Result<()> {
        use libbpf_rs::{MapCore, MapFlags};
        let map = &self.skel.maps.target_pids;
        if let Some(pids) = only {
            for p in &self.filtered {
                if !pids.contains(p) {
                    // gone already: nothing to delete
                    let _ = map.delete(&p.to_ne_bytes());
                }
            }
            for p in pids {
                if !self.filtered.contains(p) {
                    map.update(&p.to_ne_bytes(), &[1], MapFlags::ANY)
                        .context("fill the iterator's target_pids")?;
                }
            }
            self.filtered = pids.to_vec();
        }
        let bss = self
            .skel
            .maps
            .bss_data
            .as_deref_mut()
            .ok_or_else(|| anyhow!("files BPF object has no .bss"))?;
        // SAFETY: a valid, aligned bool of the mapped .bss, which the
        // program only reads.
        unsafe { std::ptr::write_volatile(&mut bss.filter_pid, only.is_some()) };
        Ok(())
    }
}

/// The records of one listing and their paths.
fn parse(mut b: &[u8]) -> Vec<(ls_file_rec, String)> {
    let hdr = std::mem::size_of::<ls_file_rec>();
    let mut out = Vec::new();
    while let Some(r) = from_bytes::<ls_file_rec>(b) {
        let len = r.path_len as usize;
        let Some(raw) = b.get(hdr..hdr + len) else {
            break;
        };
        let path = raw.split(|&c| c == 0).next().unwrap_or_default();
        out.push((r, String::from_utf8_lossy(path).into_owned()));
        b = &b[hdr + len..];
    }
    out
}

/// The lock addresses of one open file and their names.
fn names_of(r: &ls_file_rec, path: &str) -> Vec<(u64, String)> {
    let file = if path.is_empty() {
        format!(
            "inode {} on {}:{}",
            r.ino,
            r.dev >> 20,
            r.dev & ((1 << 20) - 1)
        )
    } else {
        path.to_string()
    };
    if r.kind == LS_FILE_PIPE {
        let file = if path.is_empty() {
            format!("pipe:[{}]", r.ino)
        } else {
            file
        };
        return vec![(
            r.pipe_mutex,
            format!("{file} (fd {} of {} {})", r.fd, r.pid, comm_str(&r.comm)),
        )];
    }
    [
        (r.i_rwsem, "i_rwsem"),
        (r.i_mmap_rwsem, "i_mmap_rwsem"),
        (r.i_lock, "i_lock"),
    ]
    .into_iter()
    .filter(|(a, _)| *a != 0)
    .map(|(a, lock)| (a, format!("{lock} of {file}")))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: u32, path: &str) -> Vec<u8> {
        let mut r = ls_file_rec {
            i_rwsem: 0x1000,
            i_mmap_rwsem: 0x2000,
            i_lock: 0x3000,
            pipe_mutex: if kind == LS_FILE_PIPE { 0x4000 } else { 0 },
            ino: 77,
            dev: (8 << 20) | 1,
            pid: 42,
            fd: 5,
            kind,
            path_len: if path.is_empty() {
                0
            } else {
                path.len() as u32 + 1
            },
            ..Default::default()
        };
        for (d, s) in r.comm.iter_mut().zip(b"ls-hold".iter()) {
            *d = *s as i8;
        }
        let mut b = crate::pod::as_bytes(&r).to_vec();
        if !path.is_empty() {
            b.extend_from_slice(path.as_bytes());
            b.push(0);
        }
        b
    }

    #[test]
    fn names_say_which_file_and_who_has_it_open() {
        let mut b = rec(LS_FILE_PIPE, "pipe:[77]");
        b.extend(rec(1, "/var/db/x"));
        b.extend(rec(2, ""));
        let recs = parse(&b);
        assert_eq!(recs.len(), 3);
        assert_eq!(
            names_of(&recs[0].0, &recs[0].1),
            vec![(0x4000, "pipe:[77] (fd 5 of 42 ls-hold)".to_string())]
        );
        let reg = names_of(&recs[1].0, &recs[1].1);
        assert_eq!(reg[0], (0x1000, "i_rwsem of /var/db/x".to_string()));
        assert_eq!(reg[1], (0x2000, "i_mmap_rwsem of /var/db/x".to_string()));
        assert_eq!(reg[2], (0x3000, "i_lock of /var/db/x".to_string()));
        let dir = names_of(&recs[2].0, &recs[2].1);
        assert_eq!(dir[0].1, "i_rwsem of inode 77 on 8:1");
    }

    #[test]
    fn a_truncated_listing_keeps_the_whole_records() {
        let mut b = rec(1, "/a");
        b.extend(rec(1, "/b"));
        b.truncate(b.len() - 1);
        assert_eq!(parse(&b).len(), 1);
    }
}
