//! Workloads with known mmap_lock holds and known run-queue waits, the
//! ground truth of the mmap-lock and sched sources' tests and benchmarks.
//!
//! * `mmap-hold`: one thread holds its process's mmap_lock for write for a
//!   long, measured time (an `mprotect` of a large populated region: the
//!   whole call runs under `mmap_write_lock`) while two others wait for it,
//!   one for write (`mmap`) and one for read (`mincore`), each timing its
//!   own call. One hold per round, and the holder never waits itself.
//! * `runq`: K busy threads pinned to one CPU for a while; each reads its
//!   own run delay (`/proc/thread-self/schedstat`, field 2: time runnable
//!   but not running, the kernel's own accounting) before and after.
//! * `pingpong`: two threads pinned to one CPU pass a byte back and forth
//!   over two pipes: every round trip is two wakeups and two context
//!   switches from one thread straight to the other (no idle in between,
//!   no dependence on where the scheduler puts them).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lockscope::units::now_ns;
use serde::Serialize;

use crate::anonmap::AnonMap;
use crate::workload::{Head, WorkloadArgs};

const PAGE: usize = 4096;

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn os_err(what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}", std::io::Error::last_os_error())
}

/// The calling thread's run delay so far (schedstat field 2), in ns.
pub fn own_run_delay() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("read /proc/thread-self/schedstat (CONFIG_SCHED_INFO)")?;
    s.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .context("parse schedstat")
}

/// Pins the calling thread to one CPU.
pub fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set, and
    // sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(os_err(&format!("pin to CPU {cpu}")));
    }
    Ok(())
}

/// A private anonymous mapping, unmapped on drop.
struct Region(AnonMap);

impl std::ops::Deref for Region {
    type Target = AnonMap;
    fn deref(&self) -> &AnonMap {
        &self.0
    }
}

impl Region {
    fn new(len: usize) -> Result<Region> {
        AnonMap::new(len, libc::MAP_NORESERVE)
            .map(Region)
            .map_err(|e| anyhow::anyhow!("mmap {len} bytes: {e}"))
    }

    /// Small pages only (a huge page would make the hold 512 times
    /// shorter), then one write per page so every PTE is populated.
    fn populate(&self) -> Result<()> {
        // SAFETY: advice on our own mapping; no memory is accessed.
        if unsafe { libc::madvise(self.addr, self.len, libc::MADV_NOHUGEPAGE) } != 0 {
            return Err(os_err("madvise(MADV_NOHUGEPAGE)"));
        }
        self.touch(PAGE);
        Ok(())
    }
}

/// What `mmap-hold` did and measured.
#[derive(Clone, Debug, Serialize)]
pub struct MmapHoldReport {
    #[serde(flatten)]
    pub head: Head,
    pub holder_tid: u32,
    /// Waits for write: one `mmap` of a page per round (and its `munmap`
    /// after the round, uncontended).
    pub writer_tid: u32,
    /// Waits for read: one `mincore` per round.
    pub reader_tid: u32,
    pub rounds: u64,
    pub region_bytes: u64,
    /// How long the waiters spin (on CPU, so no wakeup can delay them)
    /// after the holder announced its call, before they ask themselves.
    pub lead_ns: u64,
    #[serde(flatten)]
    pub calls: MmapHoldCalls,
    /// CLOCK_MONOTONIC ns when every thread had finished its set-up (its
    /// own first allocations map memory too) and the first round began:
    /// the rounds' lock operations are the ones that begin after it.
    pub rounds_start_ns: u64,
    #[serde(flatten)]
    pub faulter: MmapHoldFaulter,
}

/// The calls of `mmap-hold`'s holder and waiters, per round, each measured
/// around the call by the thread that made it.
#[derive(Clone, Debug, Serialize)]
pub struct MmapHoldCalls {
    /// The holder's `mprotect` of the region (the whole call holds
    /// mmap_lock for write).
    pub holder_call_ns: Vec<u64>,
    /// Whether the holder ran SCHED_FIFO (needs root): then the waiters it
    /// wakes at its release cannot preempt it before its call returns, so
    /// its measured call is its hold plus the syscall's own cost.
    pub holder_fifo: bool,
    /// The writer's `mmap` call (its wait plus a short hold).
    pub writer_call_ns: Vec<u64>,
    /// The reader's `mincore` call (its wait plus a short hold).
    pub reader_call_ns: Vec<u64>,
}

/// `--faulter`: a thread that reads a page of the region it emptied
/// before the round, so its page fault asks for mmap_lock during the
/// hold (the region's VMA is write-locked, so the fault falls back to
/// mmap_lock: a failed trylock, then a read wait).
#[derive(Clone, Debug, Serialize)]
pub struct MmapHoldFaulter {
    /// Its tid; 0 without it.
    pub faulter_tid: u32,
    /// Per round: how long its read of that page took.
    pub faulter_call_ns: Vec<u64>,
}

/// Runs `--rounds` rounds of a long mmap_lock write hold (an `mprotect` of
/// `--region-mb`) with two waiters (three with `--faulter`).
pub fn mmap_hold(a: &WorkloadArgs, start_delay: Duration) -> Result<MmapHoldReport> {
    let (rounds, region, faulter) = (a.rounds, a.region_mb << 20, a.faulter);
    if rounds == 0 {
        bail!("mmap-hold needs at least one round");
    }
    if region < (1 << 20) {
        bail!("mmap-hold: --region must be at least 1 MiB");
    }
    let lead = Duration::from_micros(200);
    let region = Region::new(region)?;
    region.populate()?;
    let roles = if faulter { 4 } else { 3 };
    let ready = Barrier::new(roles + 1);
    let start = Barrier::new(roles + 1);
    let end = Barrier::new(roles + 1);
    let entered = AtomicU64::new(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let (tid_tx, tid_rx) = std::sync::mpsc::channel::<(usize, u32)>();
    std::thread::scope(|s| -> Result<MmapHoldReport> {
        let sync = Sync3 {
            ready: &ready,
            start: &start,
            end: &end,
            entered: &entered,
        };
        let region = &region;
        let mut handles = Vec::new();
        let mut go = Vec::new();
        for role in 0..roles {
            let tx = tid_tx.clone();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            go.push(go_tx);
            let h = std::thread::Builder::new()
                .name(
                    [
                        "ls-mm-holder",
                        "ls-mm-writer",
                        "ls-mm-reader",
                        "ls-mm-faulter",
                    ][role]
                        .into(),
                )
                .spawn_scoped(s, move || -> Result<(bool, Vec<u64>)> {
                    let _ = tx.send((role, gettid()));
                    if go_rx.recv().is_err() {
                        return Ok((false, Vec::new())); // a sibling could not start
                    }
                    // the holder alone on the first CPU, the waiters on the
                    // last: a SCHED_FIFO holder would keep a waiter queued
                    // on its own CPU from asking until the hold ended
                    let _ = pin_to(if role == 0 { 0 } else { cpus - 1 });
                    let fifo = role == 0 && set_fifo();
                    Ok((fifo, hold_role(role, rounds, region, lead, sync)?))
                })
                .context("spawn mmap-hold thread")?;
            handles.push(h);
        }
        drop(tid_tx);
        // every thread exists: from here on all of them take every barrier
        for g in go {
            g.send(()).context("mmap-hold thread gone")?;
        }
        let mut tids = [0u32; 4];
        for _ in 0..roles {
            let (role, tid) = tid_rx.recv().context("thread ids")?;
            tids[role] = tid;
        }
        std::thread::sleep(start_delay);
        // every thread has done its set-up when it reaches `ready`, and
        // none begins a round before the first `start`, after this clock
        ready.wait();
        let rounds_start_ns = now_ns();
        for _ in 0..rounds {
            start.wait();
            end.wait();
        }
        let mut calls = Vec::new();
        let mut holder_fifo = false;
        for h in handles {
            let (fifo, c) = h
                .join()
                .map_err(|_| anyhow::anyhow!("mmap-hold thread panicked"))??;
            holder_fifo |= fifo;
            calls.push(c);
        }
        Ok(MmapHoldReport {
            head: Head::new("mmap-hold"),
            holder_tid: tids[0],
            writer_tid: tids[1],
            reader_tid: tids[2],
            rounds,
            region_bytes: region.len as u64,
            lead_ns: nanos(lead),
            calls: MmapHoldCalls {
                holder_call_ns: calls[0].clone(),
                holder_fifo,
                writer_call_ns: calls[1].clone(),
                reader_call_ns: calls[2].clone(),
            },
            rounds_start_ns,
            faulter: MmapHoldFaulter {
                faulter_tid: tids[3],
                faulter_call_ns: calls.get(3).cloned().unwrap_or_default(),
            },
        })
    })
}

/// Makes the calling thread SCHED_FIFO (lowest real-time priority); false
/// when not allowed.
fn set_fifo() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `param` is a valid sched_param for the call; pid 0 is the
    // calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// How the mmap-hold threads meet: every round starts and ends at a
/// barrier, and the holder announces the round it enters just before its
/// call (it runs SCHED_FIFO, so nothing delays it between the two).
#[derive(Clone, Copy)]
struct Sync3<'a> {
    ready: &'a Barrier,
    start: &'a Barrier,
    end: &'a Barrier,
    entered: &'a AtomicU64,
}

/// Spins (stays on CPU) until `cond` or `limit` has passed.
fn spin_until(limit: Duration, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() && t.elapsed() < limit {
        std::hint::spin_loop();
    }
}

/// One mmap-hold thread's rounds: 0 holds (mprotect of the region), 1
/// waits for write (mmap of a page), 2 waits for read (mincore). Every
/// round takes both barriers even after an error, so no thread is left
/// waiting; the first error is returned at the end.
fn hold_role(
    role: usize,
    rounds: u64,
    region: &Region,
    lead: Duration,
    sync: Sync3<'_>,
) -> Result<Vec<u64>> {
    let (start, end) = (sync.start, sync.end);
    let mut calls = Vec::with_capacity(rounds as usize);
    let mut err = None;
    let mut vec = [0u8; 1];
    // the faulter's page: the region's last, emptied before each round
    // (outside the hold) so that reading it faults
    // SAFETY: the last page of our own region (len >= 1 MiB).
    let fault_page = unsafe { region.addr.cast::<u8>().add(region.len - PAGE) };
    sync.ready.wait();
    for round in 0..rounds {
        let emptied = role != 3
            // SAFETY: discards the contents of a page of our own region;
            // no Rust reference points into it.
            || unsafe { libc::madvise(fault_page.cast(), PAGE, libc::MADV_DONTNEED) } == 0;
        start.wait();
        let mut mapped = None;
        let ok = match role {
            0 => {
                let prot = if round % 2 == 0 {
                    libc::PROT_READ
                } else {
                    libc::PROT_READ | libc::PROT_WRITE
                };
                sync.entered.store(round + 1, Ordering::Release);
                let t = Instant::now();
                // SAFETY: changes the protection of our own region, which
                // no Rust reference points into.
                let rc = unsafe { libc::mprotect(region.addr, region.len, prot) };
                calls.push(nanos(t.elapsed()));
                rc == 0
            }
            1 => {
                spin_until(Duration::from_secs(1), || {
                    sync.entered.load(Ordering::Acquire) > round
                });
                spin_until(lead, || false);
                let t = Instant::now();
                // SAFETY: a fresh private anonymous page.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        PAGE,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                calls.push(nanos(t.elapsed()));
                mapped = (p != libc::MAP_FAILED).then_some(p);
                mapped.is_some()
            }
            2 => {
                spin_until(Duration::from_secs(1), || {
                    sync.entered.load(Ordering::Acquire) > round
                });
                spin_until(lead, || false);
                let t = Instant::now();
                // SAFETY: asks about the region's first page; `vec` has
                // room for its one byte.
                let rc = unsafe { libc::mincore(region.addr, PAGE, vec.as_mut_ptr()) };
                calls.push(nanos(t.elapsed()));
                rc == 0
            }
            _ => {
                spin_until(Duration::from_secs(1), || {
                    sync.entered.load(Ordering::Acquire) > round
                });
                spin_until(lead, || false);
                let t = Instant::now();
                // SAFETY: reads a byte of our own region, readable under
                // both protections the holder alternates.
                let _ = unsafe { fault_page.read_volatile() };
                calls.push(nanos(t.elapsed()));
                emptied
            }
        };
        if !ok && err.is_none() {
            err = Some(os_err(
                ["mprotect", "mmap", "mincore", "madvise"][role.min(3)],
            ));
        }
        end.wait();
        if let Some(p) = mapped {
            // SAFETY: unmaps the page mapped above (uncontended: the holder
            // waits for this thread at the next round's start).
            unsafe { libc::munmap(p, PAGE) };
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(calls),
    }
}

/// What `runq` did and what the kernel accounted.
#[derive(Clone, Debug, Serialize)]
pub struct RunqReport {
    #[serde(flatten)]
    pub head: Head,
    pub cpu: usize,
    pub tids: Vec<u32>,
    pub busy_ns: u64,
    /// Per thread (same order as `tids`): its run delay from before it
    /// waited at the start gate to after its busy loop.
    pub run_delay_ns: Vec<u64>,
}

/// `--threads` threads pinned to `--cpu` (default: the last), busy for
/// `--busy` at the same time.
pub fn runq(a: &WorkloadArgs, start_delay: Duration) -> Result<RunqReport> {
    let (threads, cpu, busy) = (a.threads, a.cpu.unwrap_or_else(last_cpu), a.busy);
    if threads == 0 {
        bail!("runq needs at least one thread");
    }
    let results = std::thread::scope(|s| -> Result<Vec<(u32, u64)>> {
        let mut handles = Vec::new();
        let mut go = Vec::new();
        for i in 0..threads {
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            go.push(go_tx);
            let h = std::thread::Builder::new()
                .name(format!("ls-busy-{i}"))
                .spawn_scoped(s, move || -> Result<(u32, u64)> {
                    let pinned = pin_to(cpu);
                    let d0 = own_run_delay();
                    if go_rx.recv().is_err() {
                        bail!("runq: not started");
                    }
                    let (d0, ()) = (d0?, pinned?);
                    let t = Instant::now();
                    while t.elapsed() < busy {
                        std::hint::spin_loop();
                    }
                    Ok((gettid(), own_run_delay()?.saturating_sub(d0)))
                })
                .context("spawn busy thread")?;
            handles.push(h);
        }
        std::thread::sleep(start_delay);
        for g in go {
            g.send(()).context("busy thread gone")?;
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("busy thread panicked"))?
            })
            .collect()
    })?;
    Ok(RunqReport {
        head: Head::new("runq"),
        cpu,
        tids: results.iter().map(|r| r.0).collect(),
        busy_ns: nanos(busy),
        run_delay_ns: results.iter().map(|r| r.1).collect(),
    })
}

/// What `pingpong` did.
#[derive(Clone, Debug, Serialize)]
pub struct PingPongReport {
    #[serde(flatten)]
    pub head: Head,
    pub tids: Vec<u32>,
    pub cpu: usize,
    pub round_trips: u64,
    /// Wall time of the round trips (after the start delay).
    pub elapsed_ns: u64,
}

/// What `pipe-self` did.
#[derive(Clone, Debug, Serialize)]
pub struct PipeSelfReport {
    #[serde(flatten)]
    pub head: Head,
    pub tid: u32,
    /// Write + read pairs: each takes the pipe's mutex twice, uncontended.
    pub ops: u64,
    pub elapsed_ns: u64,
}

/// One thread writes a byte to its own pipe and reads it back, `--ops`
/// times: a deterministic stream of uncontended kernel mutex operations.
pub fn pipe_self(a: &WorkloadArgs, start_delay: Duration) -> Result<PipeSelfReport> {
    let ops = a.ops;
    let (rd, wr) = pipe()?;
    std::thread::sleep(start_delay);
    let t = Instant::now();
    for _ in 0..ops {
        one_byte(&wr, true)?;
        one_byte(&rd, false)?;
    }
    Ok(PipeSelfReport {
        head: Head::new("pipe-self"),
        tid: gettid(),
        ops,
        elapsed_ns: t.elapsed().as_nanos() as u64,
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_err("pipe2"));
    }
    // SAFETY: pipe2 succeeded; both fds are ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn one_byte(fd: &OwnedFd, write: bool) -> Result<()> {
    let mut b = [0x5au8; 1];
    loop {
        // SAFETY: `b` is valid for one byte of reading or writing; fd is open.
        let n = unsafe {
            if write {
                libc::write(fd.as_raw_fd(), b.as_ptr().cast(), 1)
            } else {
                libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 1)
            }
        };
        if n == 1 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if n < 0 && e.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        bail!(
            "pipe {} returned {n}: {e}",
            if write { "write" } else { "read" }
        );
    }
}

/// Two threads pinned to `--cpu` (default: the last) pass one byte back
/// and forth `--ops` times.
pub fn pingpong(a: &WorkloadArgs, start_delay: Duration) -> Result<PingPongReport> {
    let (round_trips, cpu) = (a.ops, a.cpu.unwrap_or_else(last_cpu));
    let (a_rd, a_wr) = pipe()?;
    let (b_rd, b_wr) = pipe()?;
    let (tid_tx, tid_rx) = std::sync::mpsc::channel::<u32>();
    std::thread::scope(|s| -> Result<PingPongReport> {
        let (a_rd, a_wr, b_rd, b_wr) = (&a_rd, &a_wr, &b_rd, &b_wr);
        let mut go = Vec::new();
        let mut handles = Vec::new();
        for ping in [true, false] {
            let tx = tid_tx.clone();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            go.push(go_tx);
            let h = std::thread::Builder::new()
                .name(if ping { "ls-ping" } else { "ls-pong" }.into())
                .spawn_scoped(s, move || -> Result<()> {
                    let _ = tx.send(gettid());
                    let pinned = pin_to(cpu);
                    if go_rx.recv().is_err() {
                        return Ok(()); // the other side could not start
                    }
                    pinned?;
                    for _ in 0..round_trips {
                        if ping {
                            one_byte(a_wr, true)?;
                            one_byte(b_rd, false)?;
                        } else {
                            one_byte(a_rd, false)?;
                            one_byte(b_wr, true)?;
                        }
                    }
                    Ok(())
                })
                .context("spawn pingpong thread")?;
            handles.push(h);
        }
        drop(tid_tx);
        let tids = vec![
            tid_rx.recv().context("ping tid")?,
            tid_rx.recv().context("pong tid")?,
        ];
        std::thread::sleep(start_delay);
        let t = Instant::now();
        for g in go {
            g.send(()).context("pingpong thread gone")?;
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("pingpong thread panicked"))??;
        }
        Ok(PingPongReport {
            head: Head::new("pingpong"),
            tids,
            cpu,
            round_trips,
            elapsed_ns: nanos(t.elapsed()),
        })
    })
}

/// The highest-numbered online CPU.
pub fn last_cpu() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    cpus - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The arguments of `lockscope-workload ARGV...`.
    fn args(argv: &[&str]) -> WorkloadArgs {
        WorkloadArgs::try_parse_from(
            std::iter::once("lockscope-workload").chain(argv.iter().copied()),
        )
        .expect("workload arguments")
    }

    #[test]
    fn mmap_hold_waiters_block_behind_the_holder() {
        let a = args(&[
            "mmap-hold",
            "--rounds",
            "2",
            "--region-mb",
            "256",
            "--faulter",
        ]);
        let rep = mmap_hold(&a, Duration::ZERO).expect("mmap-hold");
        assert_eq!(rep.calls.holder_call_ns.len(), 2);
        assert_eq!(rep.calls.writer_call_ns.len(), 2);
        assert_eq!(rep.calls.reader_call_ns.len(), 2);
        assert_eq!(rep.faulter.faulter_call_ns.len(), 2);
        let tids = [
            rep.holder_tid,
            rep.writer_tid,
            rep.reader_tid,
            rep.faulter.faulter_tid,
        ];
        assert!(
            tids.iter().all(|&t| t != 0 && t != rep.head.pid),
            "{tids:?}"
        );
    }

    #[test]
    fn runq_threads_account_their_run_delay() {
        let a = args(&["runq", "--threads", "2", "--cpu", "0", "--busy", "200ms"]);
        let rep = runq(&a, Duration::ZERO).expect("runq");
        assert_eq!(rep.tids.len(), 2);
        assert_eq!(rep.run_delay_ns.len(), 2);
        // two busy threads on one CPU: each waits for the other a while
        assert!(
            rep.run_delay_ns.iter().all(|&d| d > 10_000_000),
            "{:?}",
            rep.run_delay_ns
        );
    }

    #[test]
    fn pingpong_completes_its_round_trips() {
        let a = args(&["pingpong", "--ops", "1000", "--cpu", "0"]);
        let rep = pingpong(&a, Duration::ZERO).expect("pingpong");
        assert_eq!(rep.round_trips, 1000);
        assert_eq!(rep.tids.len(), 2);
        assert!(rep.elapsed_ns > 0);
    }
}
