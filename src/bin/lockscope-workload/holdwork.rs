//! `pipe-hold`: kernel mutex contention with a KNOWN hold time, by
//! construction, whatever the machine's load or CPU count.
//!
//! Each round, the holder thread writes to a pipe from a page registered
//! with userfaultfd. `pipe_write` takes the pipe's mutex, then faults while
//! copying; the fault handler (this module) answers only after `hold`. In
//! the meantime the waiter thread writes to the same pipe and blocks on the
//! mutex. So every round gives exactly one contended wait of the waiter on
//! that pipe's mutex, and the waiter measures how long its write blocked.
//!
//! `file-hold` is the same on a regular file: both threads `pwrite()` its
//! first page, a buffered write holds the inode's `i_rwsem` (inode_lock)
//! while it faults the source page in, so the waiter waits on that
//! `i_rwsem` for the hold.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::anonmap::AnonMap;
use crate::workload::Head;

const PAGE: usize = 4096;

// linux/userfaultfd.h
const UFFD_API: u64 = 0xAA;
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// What the holder and the waiter write to.
#[derive(Clone, Debug)]
pub enum HoldTarget {
    /// A new pipe: its `pipe_inode_info.mutex`.
    Pipe,
    /// A regular file, created or truncated (and left in place): its
    /// inode's `i_rwsem`.
    File(std::path::PathBuf),
}

/// What the workload did, and what the waiter measured.
#[derive(Clone, Debug, Serialize)]
pub struct HoldReport {
    #[serde(flatten)]
    pub head: Head,
    pub holder_tid: u32,
    pub waiter_tid: u32,
    pub rounds: u64,
    pub hold_ns: u64,
    #[serde(flatten)]
    pub per_round: HoldRounds,
    /// Whether a busy thread shared the waiter's CPU (`--hog`).
    pub hog: bool,
    #[serde(flatten)]
    pub file: HoldFile,
}

/// What the workload measured, per round.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HoldRounds {
    /// How long the holder's write took (≈ hold).
    pub holder_write_ns: Vec<u64>,
    /// From the fault handler's read of the holder's fault (the mutex
    /// already held) to its answer's start (UFFDIO_COPY): a part of the
    /// hold, as the workload measured it.
    pub fault_span_ns: Vec<u64>,
    /// How long the waiter's write blocked (the contended wait).
    pub waiter_write_ns: Vec<u64>,
    /// The waiter's run-queue delay during its write, from the kernel's
    /// /proc/thread-self/schedstat (runnable but not running).
    pub waiter_runq_ns: Vec<u64>,
}

/// The file both threads write (the pipe's write end) and its inode
/// number (a pipe is `pipe:[INO]`).
#[derive(Clone, Debug, Serialize)]
pub struct HoldFile {
    pub fd: i32,
    pub ino: u64,
    /// pipe-hold: the pipe's read end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_fd: Option<i32>,
    /// file-hold: the file's path, as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The calling thread's run-queue delay so far (schedstat field 2), ns.
fn own_run_delay() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Pins the calling thread to one CPU.
fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set, and
    // sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

fn check(rc: libc::c_long, what: &str) -> Result<libc::c_long> {
    if rc < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// `ioctl(uffd, req, arg)`, its failure named `what`.
///
/// # Safety
/// `arg` must be the argument struct that `req` takes.
unsafe fn uffd_ioctl<T>(uffd: &OwnedFd, req: libc::c_ulong, arg: &mut T, what: &str) -> Result<()> {
    // SAFETY: a pointer to `arg`, live across the call, of the type `req`
    // takes (the caller's promise).
    check(
        unsafe { libc::ioctl(uffd.as_raw_fd(), req, arg as *mut T) } as libc::c_long,
        what,
    )?;
    Ok(())
}

/// A userfaultfd and a page registered with it, missing: the first access
/// to it sleeps until the fault is answered (UFFDIO_COPY).
pub(crate) fn uffd_with_missing_page() -> Result<(OwnedFd, AnonMap)> {
    // SAFETY: plain syscall; the result is checked.
    let uffd = check(
        unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) },
        "userfaultfd (needs root or vm.unprivileged_userfaultfd=1)",
    )?;
    // SAFETY: the kernel just returned this fd; we own it.
    let uffd = unsafe { OwnedFd::from_raw_fd(uffd as i32) };
    let mut api = UffdioApi {
        api: UFFD_API,
        features: 0,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API takes a uffdio_api.
    unsafe { uffd_ioctl(&uffd, UFFDIO_API, &mut api, "UFFDIO_API") }?;
    let faulting = mapping(PAGE)?;
    let mut reg = UffdioRegister {
        start: faulting.addr as u64,
        len: PAGE as u64,
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER takes a uffdio_register.
    unsafe { uffd_ioctl(&uffd, UFFDIO_REGISTER, &mut reg, "UFFDIO_REGISTER") }?;
    Ok((uffd, faulting))
}

/// Reads the next page-fault message of `uffd` (blocks until a fault).
pub(crate) fn read_fault(uffd: &OwnedFd) -> Result<()> {
    let mut msg = [0u8; 32];
    loop {
        // SAFETY: reads at most 32 bytes into a 32-byte buffer.
        let n = unsafe { libc::read(uffd.as_raw_fd(), msg.as_mut_ptr().cast(), msg.len()) };
        if n == 32 && msg[0] == UFFD_EVENT_PAGEFAULT {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if n < 0 && e.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        bail!("userfaultfd read returned {n}: {e}");
    }
}

/// Writes one page from `buf` to the pipe `fd` (see [`write_all_once`]).
pub(crate) fn write_page(fd: i32, buf: *const libc::c_void) -> Result<u64> {
    write_all_once(fd, buf, false)
}

/// A private anonymous page-aligned mapping, unmapped on drop.
fn mapping(len: usize) -> Result<AnonMap> {
    AnonMap::new(len, 0).map_err(|e| anyhow::anyhow!("mmap: {e}"))
}

/// Writes one page to `fd`: at offset 0 for a file (`pwrite`), else at
/// the end (`write`, a pipe).
fn write_all_once(fd: i32, buf: *const libc::c_void, file: bool) -> Result<u64> {
    let t0 = Instant::now();
    loop {
        // SAFETY: buf points to PAGE readable bytes (a live mapping or a
        // page that userfaultfd fills before the copy completes). The raw
        // syscall() stub keeps the frame-pointer chain intact (glibc's
        // write() may use rbp), so user stacks show this workload's frames.
        let n = unsafe {
            if file {
                libc::syscall(libc::SYS_pwrite64, fd, buf, PAGE, 0)
            } else {
                libc::syscall(libc::SYS_write, fd, buf, PAGE)
            }
        } as isize;
        if n == PAGE as isize {
            return Ok(t0.elapsed().as_nanos() as u64);
        }
        let e = std::io::Error::last_os_error();
        if n < 0 && e.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        bail!("write returned {n}: {e}");
    }
}

/// Runs `rounds` rounds of a `hold`-long mutex hold with one waiter.
/// `on_ready(pid, holder_tid, waiter_tid)` runs before the first round,
/// after `start_delay`'s sleep has NOT yet begun (so a tracer can attach).
/// (The binary runs [`run_on`]; the tests run this.)
#[cfg(test)]
pub fn run(rounds: u64, hold: Duration, start_delay: Duration, hog: bool) -> Result<HoldReport> {
    run_on(&HoldTarget::Pipe, rounds, hold, start_delay, hog)
}

/// `run` on a pipe or a file.
pub fn run_on(
    target: &HoldTarget,
    rounds: u64,
    hold: Duration,
    start_delay: Duration,
    hog: bool,
) -> Result<HoldReport> {
    let kind = match target {
        HoldTarget::Pipe => "pipe-hold",
        HoldTarget::File(_) => "file-hold",
    };
    if rounds == 0 {
        bail!("{kind} needs at least one round");
    }
    if hold < Duration::from_millis(5) {
        bail!("{kind}: --hold must be at least 5ms so the waiter surely blocks");
    }
    let (uffd, faulting) = uffd_with_missing_page()?;
    let source = mapping(PAGE)?;
    let plain = mapping(PAGE)?;

    // (read end of a pipe, the fd both threads write)
    let (rd, wr): (Option<OwnedFd>, OwnedFd) = match target {
        HoldTarget::Pipe => {
            let mut fds = [0i32; 2];
            // SAFETY: fds is a valid array for pipe2 to fill.
            check(
                unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long,
                "pipe2",
            )?;
            // SAFETY: pipe2 succeeded; both fds are ours.
            unsafe {
                (
                    Some(OwnedFd::from_raw_fd(fds[0])),
                    OwnedFd::from_raw_fd(fds[1]),
                )
            }
        }
        HoldTarget::File(path) => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .with_context(|| format!("create {}", path.display()))?;
            (None, OwnedFd::from(f))
        }
    };
    let is_file = rd.is_none();
    let wfd = wr.as_raw_fd();
    let ino = std::fs::File::from(wr.try_clone().context("dup")?)
        .metadata()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .context("fstat")?;

    let (holder_go_tx, holder_go_rx) = mpsc::channel::<()>();
    let (holder_done_tx, holder_done_rx) = mpsc::channel::<Result<u64>>();
    let (waiter_go_tx, waiter_go_rx) = mpsc::channel::<()>();
    let (waiter_done_tx, waiter_done_rx) = mpsc::channel::<Result<(u64, u64)>>();
    let stop_hog = std::sync::atomic::AtomicBool::new(false);
    let (tid_tx, tid_rx) = mpsc::channel::<(bool, u32)>(); // (is holder, tid)
    let fault_addr = faulting.addr as usize;

    std::thread::scope(|s| -> Result<HoldReport> {
        let tid_tx2 = tid_tx.clone();
        std::thread::Builder::new()
            .name("ls-holder".into())
            .spawn_scoped(s, move || {
                let _ = tid_tx.send((true, gettid()));
                while holder_go_rx.recv().is_ok() {
                    let r = write_all_once(wfd, fault_addr as *const libc::c_void, is_file);
                    if holder_done_tx.send(r).is_err() {
                        break;
                    }
                }
            })
            .context("spawn holder")?;
        let plain_addr = plain.addr as usize;
        std::thread::Builder::new()
            .name("ls-waiter".into())
            .spawn_scoped(s, move || {
                let pinned = if hog { pin_to(0) } else { Ok(()) };
                let _ = tid_tx2.send((false, gettid()));
                while waiter_go_rx.recv().is_ok() {
                    let r = pinned
                        .as_ref()
                        .map_err(|e| anyhow::anyhow!("{e:#}"))
                        .and_then(|_| {
                            let q0 = own_run_delay();
                            let w =
                                write_all_once(wfd, plain_addr as *const libc::c_void, is_file)?;
                            Ok((w, own_run_delay().saturating_sub(q0)))
                        });
                    if waiter_done_tx.send(r).is_err() {
                        break;
                    }
                }
            })
            .context("spawn waiter")?;
        if hog {
            let stop = &stop_hog;
            std::thread::Builder::new()
                .name("ls-hog".into())
                .spawn_scoped(s, move || {
                    if pin_to(0).is_ok() {
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    }
                })
                .context("spawn hog")?;
        }
        let (mut holder_tid, mut waiter_tid) = (0, 0);
        for _ in 0..2 {
            match tid_rx.recv().context("thread tids")? {
                (true, t) => holder_tid = t,
                (false, t) => waiter_tid = t,
            }
        }
        std::thread::sleep(start_delay);

        let mut report = HoldReport {
            head: Head::new(kind),
            holder_tid,
            waiter_tid,
            rounds,
            hold_ns: hold.as_nanos() as u64,
            per_round: HoldRounds::default(),
            hog,
            file: HoldFile {
                fd: wfd,
                ino,
                read_fd: rd.as_ref().map(|r| r.as_raw_fd()),
                path: match target {
                    HoldTarget::File(p) => Some(p.display().to_string()),
                    HoldTarget::Pipe => None,
                },
            },
        };
        let mut drain = vec![0u8; 2 * PAGE];
        for _ in 0..rounds {
            holder_go_tx.send(()).context("holder gone")?;
            // the holder's write now faults with the pipe mutex held
            read_fault(&uffd)?;
            let t_fault = Instant::now();
            waiter_go_tx.send(()).context("waiter gone")?;
            // answer the fault `hold` after it arrived: the mutex is held
            // that long, and the waiter blocks behind it meanwhile
            std::thread::sleep(hold.saturating_sub(t_fault.elapsed()));
            let mut copy = UffdioCopy {
                dst: fault_addr as u64,
                src: source.addr as u64,
                len: PAGE as u64,
                mode: 0,
                copy: 0,
            };
            // the holder resumes only once the copy below is done: this much
            // of its hold is certain (the end of the ioctl is not: this
            // thread may run after the holder has already let go)
            report
                .per_round
                .fault_span_ns
                .push(t_fault.elapsed().as_nanos() as u64);
            // SAFETY: UFFDIO_COPY takes a uffdio_copy; src is our readable
            // page, dst the registered missing page.
            unsafe { uffd_ioctl(&uffd, UFFDIO_COPY, &mut copy, "UFFDIO_COPY") }?;
            report
                .per_round
                .holder_write_ns
                .push(holder_done_rx.recv().context("holder result")??);
            let (w, q) = waiter_done_rx.recv().context("waiter result")??;
            report.per_round.waiter_write_ns.push(w);
            report.per_round.waiter_runq_ns.push(q);
            // empty the pipe and make the page missing again
            let mut left = if rd.is_some() { 2 * PAGE } else { 0 };
            while let Some(rd) = rd.as_ref().filter(|_| left > 0) {
                // SAFETY: reads at most `left` <= drain.len() bytes into drain.
                let n = unsafe { libc::read(rd.as_raw_fd(), drain.as_mut_ptr().cast(), left) };
                if n <= 0 {
                    bail!("pipe drain: {}", std::io::Error::last_os_error());
                }
                left -= n as usize;
            }
            // SAFETY: discards the contents of our own registered page.
            check(
                unsafe { libc::madvise(faulting.addr, PAGE, libc::MADV_DONTNEED) } as libc::c_long,
                "madvise",
            )?;
        }
        drop(holder_go_tx);
        drop(waiter_go_tx);
        stop_hog.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiter_blocks_for_about_the_hold_time_every_round() {
        let rep = match run(3, Duration::from_millis(30), Duration::ZERO, false) {
            Ok(r) => r,
            // unprivileged runs may not have userfaultfd; root tests cover it
            Err(e) if e.to_string().contains("userfaultfd") => return,
            Err(e) => panic!("{e:#}"),
        };
        assert_eq!(rep.per_round.waiter_write_ns.len(), 3);
        assert_eq!(rep.per_round.holder_write_ns.len(), 3);
        for (&h, &w) in rep
            .per_round
            .holder_write_ns
            .iter()
            .zip(&rep.per_round.waiter_write_ns)
        {
            assert!(h >= 30_000_000, "holder write takes the hold: {h}");
            assert!(
                w >= 20_000_000 && w <= h + 5_000_000,
                "waiter blocked behind it: {w} vs {h}"
            );
        }
        assert_ne!(rep.holder_tid, rep.waiter_tid);
    }
}
