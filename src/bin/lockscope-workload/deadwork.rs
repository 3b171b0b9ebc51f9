//! Deadlock workloads with known answers (the truth of
//! tests/root_deadlock.rs): `deadlock-abba` (two threads take the static
//! mutexes LS_DEADLOCK_A then LS_DEADLOCK_B, and B then A, with a barrier
//! between: they surely deadlock), `deadlock-cycle3` (three threads, three
//! static mutexes LS_CYCLE3_0..2, each takes its own then the next: a
//! 3-cycle) and `lock-order-safe` (--threads threads, half take
//! LS_ORDER_A then LS_ORDER_B, half LS_ORDER_B alone, hold them --hold,
//! --rounds times each: both contended, chains of waits, one lock order,
//! never a deadlock).
//!
//! A deadlock workload prints its truth as one JSON line as soon as every
//! thread is about to block on its second lock (the pid, each thread's tid,
//! the lock it holds and the one it waits for, by address and symbol, and
//! that moment on CLOCK_MONOTONIC), then stays deadlocked until killed.
//! `lock-order-safe` prints its line at the end and exits.
//!
//! `deadlock-uffd` deadlocks through the kernel: thread ls-uffd-hold
//! write()s to a pipe from a page registered with a userfaultfd and
//! missing, so pipe_write() takes the pipe's mutex and sleeps in the fault
//! until the fault is answered; thread ls-uffd-resolve reads the fault's
//! message (it is the one to answer it), then write()s to the same pipe
//! before answering and blocks on the pipe's mutex. Neither can go on:
//! a cycle of a kernel mutex and a page fault's resolver, which no user
//! lock and no /proc file shows.

use std::io::Write;
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use lockscope::units::parse_duration;
use serde::Serialize;

use crate::ulockwork::PMutex;

/// The workloads of this file (the binary hands these names to [`main_if_named`]).
pub const NAMES: [&str; 5] = [
    "deadlock-abba",
    "deadlock-cycle3",
    "lock-order-safe",
    "lock-order-inversion",
    "deadlock-uffd",
];

/// Defines each static pthread mutex, its symbol kept unmangled (the
/// detector and the tests name the locks by it).
macro_rules! named_mutexes {
    ($($(#[$doc:meta])* $name:ident;)*) => {
        $(
            $(#[$doc])*
            #[unsafe(no_mangle)]
            pub static $name: PMutex = PMutex::new();
        )*
    };
}

named_mutexes! {
    /// The first mutex of `deadlock-abba`.
    LS_DEADLOCK_A;
    /// The second mutex of `deadlock-abba`.
    LS_DEADLOCK_B;
    /// The mutexes of `deadlock-cycle3`.
    LS_CYCLE3_0;
    LS_CYCLE3_1;
    LS_CYCLE3_2;
    /// The mutexes of `lock-order-safe`, always taken A then B.
    LS_ORDER_A;
    LS_ORDER_B;
}

/// `lockscope workload deadlock-abba|deadlock-cycle3|lock-order-safe`.
#[derive(Parser, Debug)]
#[command(
    name = "lockscope workload",
    about = "Deadlock workloads with known answers (tests of the deadlock detector)"
)]
struct DeadArgs {
    /// deadlock-abba, deadlock-cycle3, lock-order-safe, lock-order-inversion or deadlock-uffd
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(NAMES))]
    kind: String,
    /// lock-order-safe: threads
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// lock-order-safe, lock-order-inversion: rounds per thread
    #[arg(long, default_value_t = 200)]
    rounds: u64,
    /// lock-order-safe: how long both locks are held each round
    #[arg(long, value_parser = parse_duration, default_value = "2ms", value_name = "DURATION")]
    hold: Duration,
    /// Print the truth as JSON (else a line for humans)
    #[arg(long)]
    json: bool,
    /// Wait for SIGUSR1 before working (a tracer attaches with -p first)
    #[arg(long)]
    wait_usr1: bool,
    /// Sleep this long before working
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    start_delay: Option<Duration>,
}

/// A thread of a deadlock: what it holds and what it waits for.
#[derive(Serialize)]
struct DeadThread {
    tid: u32,
    comm: String,
    holds: &'static str,
    holds_addr: String,
    waits_for: &'static str,
    waits_for_addr: String,
}

#[derive(Serialize)]
struct NamedLock {
    name: &'static str,
    addr: String,
}

/// The truth of a deadlock workload.
#[derive(Serialize)]
struct DeadTruth {
    kind: String,
    pid: u32,
    threads: Vec<DeadThread>,
    locks: Vec<NamedLock>,
    /// CLOCK_MONOTONIC (ns) when the last thread was about to call its
    /// second lock: the cycle forms within the next lock calls.
    blocked_at_ns: u64,
}

/// The truth of `deadlock-uffd`.
#[derive(Serialize)]
struct UffdTruth {
    kind: String,
    pid: u32,
    /// Holds the pipe's mutex, sleeping in a userfaultfd fault.
    holder_tid: u32,
    /// Read that fault's message (answers it), waits for the pipe's mutex.
    resolver_tid: u32,
    /// The pipe's inode (its mutex is `pipe->mutex` of `pipe:[ino]`).
    pipe_ino: u64,
    /// CLOCK_MONOTONIC (ns) when the resolver was about to write: the
    /// cycle forms within that write.
    blocked_at_ns: u64,
}

/// The truth of `lock-order-safe`.
#[derive(Serialize)]
struct SafeTruth {
    kind: String,
    pid: u32,
    tids: Vec<u32>,
    rounds: u64,
    hold_ns: u64,
    /// CLOCK_MONOTONIC (ns) of the start and end of the work.
    start_ns: u64,
    end_ns: u64,
    elapsed_ns: u64,
}

/// The truth of `lock-order-inversion`.
#[derive(Serialize)]
struct InversionTruth {
    kind: String,
    pid: u32,
    /// The thread that took A then B, and, after it ended, the one that
    /// took B then A.
    ab_tid: u32,
    ba_tid: u32,
    rounds: u64,
    a: NamedLock,
    b: NamedLock,
}

/// Runs a workload of this file when the command line names one (exit
/// status), None otherwise.
pub fn main_if_named() -> Option<i32> {
    // the kind comes first, as every workload's does
    if !std::env::args()
        .nth(1)
        .is_some_and(|a| NAMES.contains(&a.as_str()))
    {
        return None;
    }
    let a = DeadArgs::parse();
    Some(match run(&a) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lockscope: {e:#}");
            1
        }
    })
}

fn tid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

fn monotonic_ns() -> u64 {
    lockscope::deadlock::monotonic_ns()
}

fn run(a: &DeadArgs) -> Result<()> {
    if a.wait_usr1 {
        crate::wait_for_usr1()?;
    }
    if let Some(d) = a.start_delay {
        std::thread::sleep(d);
    }
    match a.kind.as_str() {
        "lock-order-inversion" => lock_order_inversion(a),
        "deadlock-uffd" => deadlock_uffd(a),
        "deadlock-abba" => deadlock(
            a,
            vec![
                ("LS_DEADLOCK_A", &LS_DEADLOCK_A),
                ("LS_DEADLOCK_B", &LS_DEADLOCK_B),
            ],
        ),
        "deadlock-cycle3" => deadlock(
            a,
            vec![
                ("LS_CYCLE3_0", &LS_CYCLE3_0),
                ("LS_CYCLE3_1", &LS_CYCLE3_1),
                ("LS_CYCLE3_2", &LS_CYCLE3_2),
            ],
        ),
        _ => lock_order_safe(a),
    }
}

/// The second lock call of a deadlock thread, a frame of its own in the
/// scanned stacks (the detector names it).
#[inline(never)]
#[unsafe(no_mangle)]
pub fn ls_deadlock_second_lock(m: &PMutex) -> i32 {
    std::hint::black_box(0x5ec0_u32);
    // SAFETY: the mutex is a static, initialised.
    std::hint::black_box(unsafe { libc::pthread_mutex_lock(m.ptr()) })
}

/// Thread i takes lock i, then (after a barrier all threads pass holding
/// their first lock) lock i+1 (mod n): a cycle of n threads. Prints the
/// truth once every thread is about to block, then waits to be killed.
fn deadlock(a: &DeadArgs, locks: Vec<(&'static str, &'static PMutex)>) -> Result<()> {
    let n = locks.len();
    let barrier = Arc::new(Barrier::new(n));
    let (tx, rx) = mpsc::channel::<(usize, u32, u64)>();
    for i in 0..n {
        let (barrier, tx) = (barrier.clone(), tx.clone());
        let (first, second) = (locks[i].1, locks[(i + 1) % n].1);
        std::thread::Builder::new()
            .name(format!("ls-dl-{i}"))
            .spawn(move || {
                first.lock();
                barrier.wait();
                let _ = tx.send((i, tid(), monotonic_ns()));
                // never returns: the next thread holds it and waits too
                ls_deadlock_second_lock(second);
            })
            .context("spawn a deadlock thread")?;
    }
    drop(tx);
    let mut seen: Vec<Option<(u32, u64)>> = vec![None; n];
    for _ in 0..n {
        let (i, t, at) = rx
            .recv()
            .map_err(|_| anyhow!("a deadlock thread ended early"))?;
        seen[i] = Some((t, at));
    }
    let seen: Vec<(u32, u64)> = seen.into_iter().flatten().collect();
    let truth = DeadTruth {
        kind: a.kind.clone(),
        pid: std::process::id(),
        threads: (0..n)
            .map(|i| DeadThread {
                tid: seen[i].0,
                comm: format!("ls-dl-{i}"),
                holds: locks[i].0,
                holds_addr: locks[i].1.addr(),
                waits_for: locks[(i + 1) % n].0,
                waits_for_addr: locks[(i + 1) % n].1.addr(),
            })
            .collect(),
        locks: locks
            .iter()
            .map(|(name, m)| NamedLock {
                name,
                addr: m.addr(),
            })
            .collect(),
        blocked_at_ns: seen.iter().map(|s| s.1).max().unwrap_or(0),
    };
    let mut out = std::io::stdout().lock();
    crate::emit(&mut out, a.json, &truth, || {
        let hops: Vec<String> = truth
            .threads
            .iter()
            .map(|t| {
                format!(
                    "thread {} holds {} and waits for {}",
                    t.tid, t.holds, t.waits_for
                )
            })
            .collect();
        format!(
            "workload {}: pid {} deadlocked: {} (kill it to end it)",
            truth.kind,
            truth.pid,
            hops.join("; ")
        )
    })?;
    out.flush()?;
    drop(out);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The pipe write of deadlock-uffd's threads, a frame of its own in their
/// kernel and user stacks.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn ls_deadlock_pipe_write(fd: i32, buf: usize) {
    std::hint::black_box(0x5ec1_u32);
    // never returns while the deadlock lasts; a kill ends it
    let _ = crate::holdwork::write_page(fd, buf as *const libc::c_void);
}

/// deadlock-uffd (the module's note): prints the truth when the resolver
/// is about to write, then waits to be killed.
fn deadlock_uffd(a: &DeadArgs) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let (uffd, faulting) = crate::holdwork::uffd_with_missing_page()?;
    let plain = crate::anonmap::AnonMap::new(4096, 0).map_err(|e| anyhow!("mmap: {e}"))?;
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: pipe2 succeeded; both fds are ours, kept to the end.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let ino = std::fs::File::from(rd.try_clone().context("dup")?)
        .metadata()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .context("fstat")?;
    let wfd = wr.as_raw_fd();
    let (fault_addr, plain_addr) = (faulting.addr as usize, plain.addr as usize);
    let (tx, rx) = mpsc::channel::<(bool, u32, u64)>();
    let tx2 = tx.clone();
    std::thread::Builder::new()
        .name("ls-uffd-hold".into())
        .spawn(move || {
            let _ = tx.send((true, tid(), 0));
            ls_deadlock_pipe_write(wfd, fault_addr);
        })
        .context("spawn the holder")?;
    std::thread::Builder::new()
        .name("ls-uffd-resolve".into())
        .spawn(move || {
            // the holder's fault: this thread is the one to answer it
            if crate::holdwork::read_fault(&uffd).is_err() {
                return;
            }
            let _ = tx2.send((false, tid(), monotonic_ns()));
            ls_deadlock_pipe_write(wfd, plain_addr);
            drop(uffd);
        })
        .context("spawn the resolver")?;
    let (mut holder_tid, mut resolver_tid, mut at) = (0, 0, 0);
    for _ in 0..2 {
        match rx
            .recv()
            .map_err(|_| anyhow!("a deadlock thread ended early"))?
        {
            (true, t, _) => holder_tid = t,
            (false, t, ns) => (resolver_tid, at) = (t, ns),
        }
    }
    let truth = UffdTruth {
        kind: a.kind.clone(),
        pid: std::process::id(),
        holder_tid,
        resolver_tid,
        pipe_ino: ino,
        blocked_at_ns: at,
    };
    let mut out = std::io::stdout().lock();
    crate::emit(&mut out, a.json, &truth, || {
        format!(
            "workload {}: pid {} deadlocked: thread {holder_tid} holds pipe:[{ino}]'s mutex and \
             sleeps in a userfaultfd fault that thread {resolver_tid} read and would answer; \
             thread {resolver_tid} waits for that mutex (kill it to end it)",
            truth.kind, truth.pid
        )
    })?;
    out.flush()?;
    drop(out);
    let _keep = (rd, wr, faulting, plain);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Even threads take LS_ORDER_A then LS_ORDER_B, hold both, release B then
/// A; odd threads take LS_ORDER_B alone and hold it; `rounds` times each:
/// waits on both locks (a thread waiting for A behind one that waits for
/// B), one lock order, no deadlock.
fn lock_order_safe(a: &DeadArgs) -> Result<()> {
    let start_ns = monotonic_ns();
    let t0 = Instant::now();
    let (rounds, hold) = (a.rounds, a.hold);
    let mut handles = Vec::new();
    for i in 0..a.threads.max(2) {
        handles.push(
            std::thread::Builder::new()
                .name(format!("ls-order-{i}"))
                .spawn(move || {
                    let both = i % 2 == 0;
                    for _ in 0..rounds {
                        if both {
                            LS_ORDER_A.lock();
                        }
                        LS_ORDER_B.lock();
                        std::thread::sleep(hold);
                        LS_ORDER_B.unlock();
                        if both {
                            LS_ORDER_A.unlock();
                        }
                    }
                    tid()
                })
                .context("spawn a lock-order thread")?,
        );
    }
    let mut tids = Vec::new();
    for h in handles {
        tids.push(
            h.join()
                .map_err(|_| anyhow!("a lock-order thread panicked"))?,
        );
    }
    let truth = SafeTruth {
        kind: a.kind.clone(),
        pid: std::process::id(),
        tids,
        rounds,
        hold_ns: hold.as_nanos() as u64,
        start_ns,
        end_ns: monotonic_ns(),
        elapsed_ns: t0.elapsed().as_nanos() as u64,
    };
    crate::emit(&mut std::io::stdout().lock(), a.json, &truth, || {
        format!(
            "workload lock-order-safe: pid {}, {} threads took A then B (or B) {} times each \
             in {} ms",
            truth.pid,
            truth.tids.len(),
            truth.rounds,
            truth.elapsed_ns / 1_000_000
        )
    })
}

/// Defines `$name`, a function of its own (never inlined, its symbol kept)
/// that takes `$first`, then `$second`, holds both `hold`, and releases
/// them: the call sites of that lock order.
macro_rules! lock_order_fn {
    ($(#[$doc:meta])* $name:ident: $first:ident then $second:ident) => {
        $(#[$doc])*
        #[inline(never)]
        #[unsafe(no_mangle)]
        pub fn $name(hold: Duration) {
            // SAFETY: the mutexes are statics, initialised; each is
            // unlocked by the thread that locked it.
            unsafe {
                libc::pthread_mutex_lock($first.ptr());
                libc::pthread_mutex_lock($second.ptr());
                std::thread::sleep(hold);
                libc::pthread_mutex_unlock($second.ptr());
                libc::pthread_mutex_unlock($first.ptr());
            }
        }
    };
}

lock_order_fn!(
    /// Takes LS_ORDER_A, then LS_ORDER_B: the A-then-B order.
    ls_order_a_then_b: LS_ORDER_A then LS_ORDER_B
);
lock_order_fn!(
    /// Takes LS_ORDER_B, then LS_ORDER_A: the other order.
    ls_order_b_then_a: LS_ORDER_B then LS_ORDER_A
);

/// One thread takes A then B `rounds` times and ends; then another takes
/// B then A `rounds` times. Never at the same time, so never a deadlock:
/// a lock-order inversion that did not happen in this run.
fn lock_order_inversion(a: &DeadArgs) -> Result<()> {
    let (rounds, hold) = (a.rounds, a.hold);
    let run = |name: &str, f: fn(Duration)| -> Result<u32> {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for _ in 0..rounds {
                    f(hold);
                }
                tid()
            })
            .context("spawn a lock-order thread")?
            .join()
            .map_err(|_| anyhow!("a lock-order thread panicked"))
    };
    let ab_tid = run("ls-inv-ab", ls_order_a_then_b)?;
    let ba_tid = run("ls-inv-ba", ls_order_b_then_a)?;
    let truth = InversionTruth {
        kind: a.kind.clone(),
        pid: std::process::id(),
        ab_tid,
        ba_tid,
        rounds,
        a: NamedLock {
            name: "LS_ORDER_A",
            addr: LS_ORDER_A.addr(),
        },
        b: NamedLock {
            name: "LS_ORDER_B",
            addr: LS_ORDER_B.addr(),
        },
    };
    crate::emit(&mut std::io::stdout().lock(), a.json, &truth, || {
        format!(
            "workload lock-order-inversion: pid {}, thread {} took A then B {} times, then \
             thread {} B then A {} times",
            truth.pid, ab_tid, rounds, ba_tid, rounds
        )
    })
}
