//! Built-in workloads that create known kernel lock contention.
//!
//! They are the ground truth for tests, benchmarks and `lockscope demo`:
//!
//! * [`WorkloadKind::Pipe`]: `threads` writers and one reader share one pipe,
//!   so they contend on the kernel's `pipe->mutex` (`pipe_write`/`pipe_read`).
//! * [`WorkloadKind::Mmap`]: `threads` threads of one process loop over
//!   `mmap` → touch every page → `munmap`, contending on the process's
//!   `mmap_lock` (written by `mmap`/`munmap`, read by page faults unless the
//!   per-VMA lock serves them).
//!
//! Operation counts are exact, so tracers can be checked against them. All
//! workers record their tid, then wait at a start gate; the work phase begins
//! after [`WorkloadSpec::start_delay`], when every worker is released at once.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use lockscope::cli::parse_threads;
use lockscope::units::parse_duration;

use crate::anonmap::AnonMap;

/// Largest pipe write the kernel guarantees to be atomic; larger
/// [`WorkloadSpec::write_size`] values are clamped to it, so every `write()`
/// is complete and counts as exactly one operation.
pub const MAX_WRITE_SIZE: usize = libc::PIPE_BUF;
/// Pipe capacity requested with `F_SETPIPE_SZ` (best effort), so writers
/// seldom sleep on a full pipe instead of on its mutex.
const PIPE_CAPACITY: libc::c_int = 1 << 20;
/// Size of each `read()` issued by the pipe reader.
const READ_SIZE: usize = 64 * 1024;

/// `lockscope-workload` (and `lockscope workload`, which runs it).
#[derive(clap::Parser, Debug)]
#[command(about = "Built-in workload with known lock operations (used by demo and tests)")]
pub struct WorkloadArgs {
    /// Workloads to run, one after another: pipe (N writers on one pipe:
    /// pipe->mutex), mmap (N threads mmap/munmap in one address space:
    /// mmap_lock), pipe-hold (a pipe mutex held for exactly --hold, --rounds
    /// times, with one waiter: known waits by construction, via userfaultfd),
    /// mmap-hold (mmap_lock held for write by an mprotect of --region-mb,
    /// --rounds times, a writer and a reader waiting), runq (--threads busy
    /// threads pinned to one CPU for --busy), pingpong (two threads on one
    /// CPU pass a byte back and forth --ops times), pipe-self (one thread
    /// writes a byte to its own pipe and reads it back, --ops times: two
    /// uncontended pipe mutex pairs each); user locks: mutex-hold (a pthread mutex held --hold while another
    /// thread waits, --rounds times), spin-hold (the same with a pthread
    /// spin lock: the waiter spins), mutex-pairs / spin-pairs (--ops
    /// lock/unlock pairs per thread), mutex-trylock (--ops trylocks and
    /// --rounds 1 ms timedlocks on a held mutex), rwlock (--reads, --writes),
    /// std-mutex (Rust std Mutex, futex only), held-before (a mutex held
    /// before tracing starts, then --rounds pairs), global-hold (as
    /// mutex-hold on the global mutex LOCKSCOPE_GLOBAL_MUTEX), heap-hold (as
    /// mutex-hold, taken in ls_heap_holder_locks / ls_heap_waiter_locks), fork-mutex
    /// (--children processes, each after --child-delay: mutex-pairs, then
    /// --rounds of mutex-hold, on mutexes of its own), cond-wait (a thread
    /// waits on a pthread condvar until signalled, --rounds times: not a
    /// lock), rwlock-hold (a pthread rwlock held --hold while a reader
    /// waits behind a writer, a writer behind a writer and a writer behind
    /// a reader, --rounds times each); file-hold
    /// (as pipe-hold on the i_rwsem of the inode of --file: two threads
    /// write its first page)
    #[arg(value_parser = parse_kind, default_value = "pipe")]
    pub kinds: Vec<WorkloadKind>,
    /// Worker threads
    #[arg(long, default_value_t = 4, value_parser = parse_threads)]
    pub threads: usize,
    /// Operations per thread
    #[arg(long, default_value_t = 20000)]
    pub ops: u64,
    /// Bytes per pipe write (at most 4096, so writes are atomic)
    #[arg(long, default_value_t = 4096)]
    pub write_size: usize,
    /// Bytes per mapping in the mmap workload
    #[arg(long, default_value_t = 65536)]
    pub map_size: usize,
    /// Wait for SIGUSR1 before working (a tracer attaches with -p, then
    /// signals: no timing assumptions)
    #[arg(long)]
    pub wait_usr1: bool,
    /// Sleep this long before working (lets a tracer attach with -p)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub start_delay: Option<Duration>,
    /// pipe-hold: rounds (one contended wait each)
    #[arg(long, default_value_t = 10)]
    pub rounds: u64,
    /// pipe-hold, mutex-hold, spin-hold: pin the waiter and a busy thread
    /// to CPU 0, so the woken waiter also waits for a CPU (runnable time)
    #[arg(long)]
    pub hog: bool,
    /// mmap-hold: a fourth thread reads a page of the region during each
    /// hold, so its page fault asks for mmap_lock (a failed trylock, then
    /// a read wait)
    #[arg(long)]
    pub faulter: bool,
    /// mmap-hold: MiB of the populated region whose mprotect holds
    /// mmap_lock for write (about 30 ms per GiB here)
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub region_mb: usize,
    /// runq, pingpong: the CPU the threads are pinned to (default: the
    /// last one)
    #[arg(long, value_name = "CPU")]
    pub cpu: Option<usize>,
    /// runq: how long the threads stay busy
    #[arg(long, value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    pub busy: Duration,
    /// pipe-hold: how long the mutex is held each round
    #[arg(long, value_parser = parse_duration, default_value = "50ms", value_name = "DURATION")]
    pub hold: Duration,
    /// fork-mutex: child processes forked
    #[arg(long, default_value_t = 2)]
    pub children: usize,
    /// fork-mutex: how long each child sleeps after its fork before it
    /// takes any lock (lets a tracer attach to it)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub child_delay: Option<Duration>,
    /// rwlock: read acquisitions
    #[arg(long, default_value_t = 1000)]
    pub reads: u64,
    /// rwlock: write acquisitions
    #[arg(long, default_value_t = 100)]
    pub writes: u64,
    /// Print what was done as JSON (one line per workload)
    #[arg(long)]
    pub json: bool,
    /// file-hold: the file to write (created or truncated, left in place)
    #[arg(long, value_name = "PATH")]
    pub file: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Pipe,
    Mmap,
    /// A pipe mutex held for a known time (see `holdwork`); run by
    /// `holdwork::run`, not by [`run`].
    #[serde(rename = "pipe-hold")]
    PipeHold,
    /// A long mmap_lock write hold with two waiters (see `mmwork`).
    #[serde(rename = "mmap-hold")]
    MmapHold,
    /// Busy threads pinned to one CPU (see `mmwork`).
    Runq,
    /// Two threads passing a byte back and forth (see `mmwork`).
    #[serde(rename = "pingpong")]
    PingPong,
    /// One thread writing a byte to its own pipe and reading it back: two
    /// uncontended pipe mutex lock/unlock pairs per op (see `mmwork`).
    #[serde(rename = "pipe-self")]
    PipeSelf,
    /// An inode's i_rwsem held for a known time (see `holdwork`).
    #[serde(rename = "file-hold")]
    FileHold,
    /// A user-space lock workload (see `ulockwork`); run by
    /// `ulockwork::run`, not by [`run`].
    User(crate::ulockwork::UserKind),
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkloadKind::Pipe => "pipe",
            WorkloadKind::Mmap => "mmap",
            WorkloadKind::PipeHold => "pipe-hold",
            WorkloadKind::MmapHold => "mmap-hold",
            WorkloadKind::Runq => "runq",
            WorkloadKind::PingPong => "pingpong",
            WorkloadKind::PipeSelf => "pipe-self",
            WorkloadKind::FileHold => "file-hold",
            WorkloadKind::User(k) => return f.write_str(&k.name()),
        })
    }
}

/// Parse a workload name: `"pipe"` or `"mmap"`.
pub fn parse_kind(s: &str) -> Result<WorkloadKind, String> {
    match s {
        "pipe" => Ok(WorkloadKind::Pipe),
        "mmap" => Ok(WorkloadKind::Mmap),
        "pipe-hold" => Ok(WorkloadKind::PipeHold),
        "mmap-hold" => Ok(WorkloadKind::MmapHold),
        "runq" => Ok(WorkloadKind::Runq),
        "pingpong" => Ok(WorkloadKind::PingPong),
        "pipe-self" => Ok(WorkloadKind::PipeSelf),
        "file-hold" => Ok(WorkloadKind::FileHold),
        other => crate::ulockwork::parse(other)
            .map(WorkloadKind::User)
            .ok_or_else(|| {
                let user = crate::ulockwork::names();
                format!(
                    "unknown workload {other:?} (expected pipe, mmap, pipe-hold, mmap-hold, \
                     runq, pingpong, pipe-self, file-hold, {})",
                    user.join(", ")
                )
            }),
    }
}

/// What every report of `mmwork`, `holdwork` and `ulockwork` begins with:
/// the workload and the process that ran it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Head {
    pub kind: String,
    pub pid: u32,
}

impl Head {
    /// This process, running workload `kind`.
    pub fn new(kind: impl Into<String>) -> Head {
        Head {
            kind: kind.into(),
            pid: std::process::id(),
        }
    }

    /// The report's human line: `workload KIND: pid PID, ` then `rest`.
    pub fn line(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("workload {}: pid {}, {rest}", self.kind, self.pid)
    }
}

/// The human line of a workload that did `n` of `what` in `elapsed_ns`.
fn counted_line(head: &Head, n: u64, what: &str, elapsed_ns: u64) -> String {
    head.line(format_args!(
        "{n} {what} in {}",
        lockscope::units::fmt_ns(elapsed_ns)
    ))
}

#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub kind: WorkloadKind,
    /// Worker threads (>= 1). The pipe workload adds one reader thread.
    pub threads: usize,
    /// Operations per worker thread.
    pub ops: u64,
    /// Pipe: bytes per `write()`, 1..=[`MAX_WRITE_SIZE`] (larger is clamped).
    pub write_size: usize,
    /// Mmap: bytes per mapping (>= 1), touched one byte per page.
    pub map_size: usize,
    /// Sleep before starting work, e.g. so a tracer can attach with `-p`.
    pub start_delay: Duration,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            kind: WorkloadKind::Pipe,
            threads: 8,
            ops: 20_000,
            write_size: 4096,
            map_size: 64 * 1024,
            start_delay: Duration::ZERO,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkloadReport {
    pub kind: WorkloadKind,
    pub pid: u32,
    /// Tids of the worker threads, in worker order (the pipe reader excluded).
    pub tids: Vec<u32>,
    pub threads: usize,
    pub ops_per_thread: u64,
    /// Pipe: `write()` calls; mmap: `munmap()` calls.
    pub total_ops: u64,
    pub mmap_calls: u64,
    pub munmap_calls: u64,
    /// Pipe: bytes written (and read back).
    pub bytes: u64,
    /// Wall time of the work phase (after `start_delay`).
    pub elapsed_ns: u64,
    /// Sum over workers of time inside `write` (pipe) or `mmap` + `munmap`
    /// (mmap), measured around each call with `Instant` (CLOCK_MONOTONIC).
    /// Includes time runnable but off-CPU, so it may exceed `elapsed_ns`.
    pub blocked_ns: u64,
}

/// Run a workload to completion.
pub fn run(spec: &WorkloadSpec) -> Result<WorkloadReport> {
    run_with(spec, |_, _| {})
}

/// Like [`run`], but calls `on_ready(pid, tids)` once every worker exists and
/// has recorded its tid, before `start_delay` and before any work starts.
pub fn run_with(spec: &WorkloadSpec, on_ready: impl FnOnce(u32, &[u32])) -> Result<WorkloadReport> {
    if spec.threads == 0 {
        bail!("workload needs at least one thread");
    }
    match spec.kind {
        WorkloadKind::Pipe => run_pipe(spec, on_ready),
        WorkloadKind::Mmap => run_mmap(spec, on_ready),
        WorkloadKind::PipeHold => bail!("pipe-hold runs through holdwork::run"),
        WorkloadKind::MmapHold
        | WorkloadKind::Runq
        | WorkloadKind::PingPong
        | WorkloadKind::PipeSelf => {
            bail!("{} runs through mmwork", spec.kind)
        }
        WorkloadKind::FileHold => bail!("file-hold runs through holdwork::run"),
        WorkloadKind::User(_) => bail!("user-lock workloads run through ulockwork::run"),
    }
}

/// Counters of one worker thread.
#[derive(Default)]
struct Stats {
    ops: u64,
    bytes: u64,
    mmap_calls: u64,
    munmap_calls: u64,
    blocked_ns: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.ops += o.ops;
        self.bytes += o.bytes;
        self.mmap_calls += o.mmap_calls;
        self.munmap_calls += o.munmap_calls;
        self.blocked_ns += o.blocked_ns;
    }
}

/// Where workers announce their tids and then wait for the go (or abort).
struct StartGate {
    state: Mutex<GateState>,
    cv: Condvar,
}

struct GateState {
    tids: Vec<u32>,
    arrived: usize,
    go: Option<bool>,
}

impl StartGate {
    fn new(threads: usize) -> Self {
        let state = GateState {
            tids: vec![0; threads],
            arrived: 0,
            go: None,
        };
        Self {
            state: Mutex::new(state),
            cv: Condvar::new(),
        }
    }

    /// Record worker `idx`'s tid, then block until released; true means go.
    fn arrive(&self, idx: usize) -> bool {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.tids[idx] = gettid();
        st.arrived += 1;
        self.cv.notify_all();
        while st.go.is_none() {
            st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.go == Some(true)
    }

    /// Block until `n` workers have arrived; return their tids.
    fn wait_ready(&self, n: usize) -> Vec<u32> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while st.arrived < n {
            st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.tids.clone()
    }

    /// Decide go (true) or abort (false); only the first decision counts.
    fn release(&self, go: bool) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.go.get_or_insert(go);
        self.cv.notify_all();
    }
}

/// Aborts the gate when dropped undecided (error or unwinding `on_ready`), so
/// no worker is left waiting and the thread scope can always end.
struct AbortOnDrop<'a>(&'a StartGate);

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        self.0.release(false);
    }
}

fn gettid() -> u32 {
    // SAFETY: gettid takes no arguments, has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    tid as u32
}

fn join<T>(h: thread::ScopedJoinHandle<'_, Result<T>>, what: &str) -> Result<T> {
    let res = h.join().map_err(|_| anyhow::anyhow!("{what} panicked"))?;
    res.with_context(|| what.to_string())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Spawn one thread per worker closure (plus an optional helper that does not
/// wait at the gate), release them together, join all and sum the counters.
fn drive<W, H>(
    spec: &WorkloadSpec,
    workers: Vec<W>,
    helper: Option<H>,
    on_ready: impl FnOnce(u32, &[u32]),
) -> Result<(Vec<u32>, Stats, u64, Option<u64>)>
where
    W: FnOnce() -> Result<Stats> + Send,
    H: FnOnce() -> Result<u64> + Send,
{
    let gate = StartGate::new(workers.len());
    let gate = &gate;
    thread::scope(|s| {
        let _abort = AbortOnDrop(gate);
        let helper = match helper {
            Some(h) => Some(
                thread::Builder::new()
                    .name("ls-reader".into())
                    .spawn_scoped(s, h)
                    .context("spawn reader")?,
            ),
            None => None,
        };
        let mut handles = Vec::with_capacity(workers.len());
        let mut spawn_err = None;
        for (i, work) in workers.into_iter().enumerate() {
            let body = move || {
                if gate.arrive(i) {
                    work()
                } else {
                    Ok(Stats::default())
                }
            };
            match thread::Builder::new()
                .name(format!("ls-worker-{i}"))
                .spawn_scoped(s, body)
            {
                Ok(h) => handles.push(h),
                Err(e) => {
                    spawn_err = Some(anyhow::Error::new(e).context(format!("spawn worker {i}")));
                    break; // unspawned workers are dropped here (closing their fds)
                }
            }
        }
        let tids = gate.wait_ready(handles.len());
        let t0 = if spawn_err.is_none() {
            on_ready(std::process::id(), &tids);
            thread::sleep(spec.start_delay);
            let t0 = Instant::now();
            gate.release(true);
            Some(t0)
        } else {
            gate.release(false);
            None
        };
        let mut total = Stats::default();
        let mut first_err = spawn_err;
        for (i, h) in handles.into_iter().enumerate() {
            match join(h, &format!("worker {i}")) {
                Ok(st) => total.add(&st),
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        let helper_out = helper.map(|h| join(h, "reader")).transpose();
        let elapsed = t0.map_or(0, |t| nanos(t.elapsed()));
        match (first_err, helper_out) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(out)) => Ok((tids, total, elapsed, out)),
        }
    })
}

fn report(
    spec: &WorkloadSpec,
    tids: Vec<u32>,
    st: &Stats,
    total_ops: u64,
    elapsed_ns: u64,
) -> WorkloadReport {
    WorkloadReport {
        kind: spec.kind,
        pid: std::process::id(),
        tids,
        threads: spec.threads,
        ops_per_thread: spec.ops,
        total_ops,
        mmap_calls: st.mmap_calls,
        munmap_calls: st.munmap_calls,
        bytes: st.bytes,
        elapsed_ns,
        blocked_ns: st.blocked_ns,
    }
}

fn run_pipe(spec: &WorkloadSpec, on_ready: impl FnOnce(u32, &[u32])) -> Result<WorkloadReport> {
    if spec.write_size == 0 {
        bail!("pipe workload needs write_size >= 1");
    }
    let size = spec.write_size.min(MAX_WRITE_SIZE);
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two c_ints as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ takes an int argument; `wr` is an open pipe fd.
    if unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_CAPACITY) } < 0 {
        let err = std::io::Error::last_os_error();
        // EPERM: above pipe-max-size or the user's pipe quota; the default size works too.
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(err).context("fcntl(F_SETPIPE_SZ)");
        }
    }
    // Each writer owns a reference to the write end: the reader sees EOF as
    // soon as the last writer is done (or has failed). If the reader fails, it
    // closes the read end and writers get EPIPE instead of blocking forever
    // (Rust programs ignore SIGPIPE; a host that does not would be killed).
    let wr = Arc::new(wr);
    let ops = spec.ops;
    let writers: Vec<_> = (0..spec.threads)
        .map(|_| {
            let wr = Arc::clone(&wr);
            move || pipe_writer(&wr, ops, size)
        })
        .collect();
    drop(wr);
    let reader = move || pipe_reader(&rd);
    let (tids, st, elapsed, read) = drive(spec, writers, Some(reader), on_ready)?;
    if read != Some(st.bytes) {
        bail!("pipe reader got {read:?} bytes, writers wrote {}", st.bytes);
    }
    Ok(report(spec, tids, &st, st.ops, elapsed))
}

fn pipe_writer(wr: &OwnedFd, ops: u64, size: usize) -> Result<Stats> {
    let buf = [0x5au8; MAX_WRITE_SIZE];
    let mut st = Stats::default();
    while st.ops < ops {
        let t = Instant::now();
        // SAFETY: `buf` is valid for reads of `size` <= MAX_WRITE_SIZE bytes; `wr` is open.
        let n = unsafe { libc::write(wr.as_raw_fd(), buf.as_ptr().cast(), size) };
        st.blocked_ns += nanos(t.elapsed());
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue; // nothing written; retry without counting
            }
            return Err(err).with_context(|| format!("write to pipe (op {})", st.ops));
        }
        if n as usize != size {
            bail!("short pipe write: {n} of {size} bytes (writes <= PIPE_BUF are atomic)");
        }
        st.ops += 1;
        st.bytes += size as u64;
    }
    Ok(st)
}

fn pipe_reader(rd: &OwnedFd) -> Result<u64> {
    let mut buf = vec![0u8; READ_SIZE];
    let mut total = 0u64;
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `rd` is open.
        let n = unsafe { libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return Ok(total),
            n if n > 0 => total += n as u64,
            _ => {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(err).context("read from pipe");
                }
            }
        }
    }
}

fn run_mmap(spec: &WorkloadSpec, on_ready: impl FnOnce(u32, &[u32])) -> Result<WorkloadReport> {
    if spec.map_size == 0 {
        bail!("mmap workload needs map_size >= 1");
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page <= 0 {
        return Err(std::io::Error::last_os_error()).context("sysconf(_SC_PAGESIZE)");
    }
    let (ops, len, page) = (spec.ops, spec.map_size, page as usize);
    let workers: Vec<_> = (0..spec.threads)
        .map(|_| move || mmap_worker(ops, len, page))
        .collect();
    let (tids, st, elapsed, _) = drive(spec, workers, None::<fn() -> Result<u64>>, on_ready)?;
    Ok(report(spec, tids, &st, st.munmap_calls, elapsed))
}

fn mmap_worker(ops: u64, len: usize, page: usize) -> Result<Stats> {
    let mut st = Stats::default();
    for op in 0..ops {
        let t = Instant::now();
        let m = AnonMap::new(len, 0);
        st.blocked_ns += nanos(t.elapsed());
        let m = m.with_context(|| format!("mmap {len} bytes (op {op})"))?;
        st.mmap_calls += 1;
        m.touch(page);
        let t = Instant::now();
        let rc = m.unmap();
        st.blocked_ns += nanos(t.elapsed());
        rc.with_context(|| format!("munmap (op {op})"))?;
        st.munmap_calls += 1;
    }
    Ok(st)
}

/// Runs one of `mmwork`'s workloads for `lockscope workload`: its JSON
/// line and its human line, or `None` for the other workloads.
pub fn run_mm_cli(
    kind: WorkloadKind,
    a: &WorkloadArgs,
    delay: Duration,
) -> Result<Option<(String, String)>> {
    use crate::mmwork::{mmap_hold, pingpong, pipe_self, runq};
    use lockscope::units::fmt_ns;
    let out = match kind {
        WorkloadKind::MmapHold => {
            let rep = mmap_hold(a, delay)?;
            let line = rep.head.line(format_args!(
                "holder {} held mmap_lock {} x for {} in total; writer {} blocked {}, reader {} \
                 blocked {}",
                rep.holder_tid,
                rep.rounds,
                fmt_ns(rep.calls.holder_call_ns.iter().sum()),
                rep.writer_tid,
                fmt_ns(rep.calls.writer_call_ns.iter().sum()),
                rep.reader_tid,
                fmt_ns(rep.calls.reader_call_ns.iter().sum()),
            ));
            (serde_json::to_string(&rep)?, line)
        }
        WorkloadKind::Runq => {
            let rep = runq(a, delay)?;
            let delays: Vec<String> = rep.run_delay_ns.iter().map(|&d| fmt_ns(d)).collect();
            let line = rep.head.line(format_args!(
                "{} threads busy {} on CPU {}, run delay {}",
                rep.tids.len(),
                fmt_ns(rep.busy_ns),
                rep.cpu,
                delays.join(", ")
            ));
            (serde_json::to_string(&rep)?, line)
        }
        WorkloadKind::PingPong => {
            let rep = pingpong(a, delay)?;
            let line = counted_line(&rep.head, rep.round_trips, "round trips", rep.elapsed_ns);
            (serde_json::to_string(&rep)?, line)
        }
        WorkloadKind::PipeSelf => {
            let rep = pipe_self(a, delay)?;
            let line = counted_line(&rep.head, rep.ops, "write+read pairs", rep.elapsed_ns);
            (serde_json::to_string(&rep)?, line)
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kind` with `threads` workers of `ops` operations each, the rest
    /// default.
    fn spec(kind: WorkloadKind, threads: usize, ops: u64) -> WorkloadSpec {
        WorkloadSpec {
            kind,
            threads,
            ops,
            ..Default::default()
        }
    }

    fn check_tids(r: &WorkloadReport, threads: usize) {
        assert_eq!(r.tids.len(), threads);
        let mut t = r.tids.clone();
        t.sort_unstable();
        t.dedup();
        assert_eq!(t.len(), threads, "tids not distinct: {:?}", r.tids);
        assert!(
            r.tids.iter().all(|&tid| tid != r.pid && tid != 0),
            "{:?}",
            r.tids
        );
    }

    #[test]
    fn pipe_counts_are_exact() {
        let r = run(&spec(WorkloadKind::Pipe, 2, 100)).unwrap();
        assert_eq!(r.kind, WorkloadKind::Pipe);
        assert_eq!(r.pid, std::process::id());
        assert_eq!((r.total_ops, r.bytes), (200, 200 * 4096));
        assert_eq!((r.mmap_calls, r.munmap_calls), (0, 0));
        assert!(r.blocked_ns <= r.elapsed_ns * 2 && r.elapsed_ns > 0);
        check_tids(&r, 2);
    }

    #[test]
    fn pipe_write_size_is_clamped() {
        let clamped = WorkloadSpec {
            write_size: 100_000,
            ..spec(WorkloadKind::Pipe, 1, 10)
        };
        assert_eq!(run(&clamped).unwrap().bytes, 10 * MAX_WRITE_SIZE as u64);
        let small = WorkloadSpec {
            write_size: 100,
            ..spec(WorkloadKind::Pipe, 3, 7)
        };
        assert_eq!(run(&small).unwrap().bytes, 2100);
    }

    #[test]
    fn mmap_counts_are_exact() {
        let r = run(&spec(WorkloadKind::Mmap, 2, 20)).unwrap();
        assert_eq!((r.total_ops, r.mmap_calls, r.munmap_calls), (40, 40, 40));
        assert_eq!(r.bytes, 0);
        check_tids(&r, 2);
    }

    #[test]
    fn on_ready_sees_final_tids_and_delay_is_excluded() {
        let spec = WorkloadSpec {
            map_size: 1,
            start_delay: Duration::from_millis(200),
            ..spec(WorkloadKind::Mmap, 3, 1)
        };
        let mut seen = None;
        let t0 = std::time::Instant::now();
        let r = run_with(&spec, |pid, tids| seen = Some((pid, tids.to_vec()))).unwrap();
        let wall = t0.elapsed().as_nanos() as u64;
        assert_eq!(seen, Some((r.pid, r.tids.clone())));
        // the work phase leaves out the 200 ms delay, however long a busy
        // machine makes either
        assert!(
            r.elapsed_ns + 200_000_000 <= wall,
            "elapsed {} includes the delay (run {wall} ns)",
            r.elapsed_ns
        );
        check_tids(&r, 3);
    }

    #[test]
    fn invalid_specs_are_errors() {
        let zero = WorkloadSpec {
            threads: 0,
            ..Default::default()
        };
        assert!(run(&zero).is_err());
        let no_write = WorkloadSpec {
            write_size: 0,
            ..Default::default()
        };
        assert!(run(&no_write).is_err());
        let no_map = WorkloadSpec {
            kind: WorkloadKind::Mmap,
            map_size: 0,
            ..Default::default()
        };
        assert!(run(&no_map).is_err());
    }

    #[test]
    fn names_round_trip() {
        for k in [
            WorkloadKind::Pipe,
            WorkloadKind::Mmap,
            WorkloadKind::MmapHold,
            WorkloadKind::Runq,
            WorkloadKind::PingPong,
            WorkloadKind::FileHold,
        ] {
            assert_eq!(parse_kind(&k.to_string()), Ok(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        assert!(parse_kind("futex").is_err());
        let d = WorkloadSpec::default();
        assert_eq!((d.kind, d.threads, d.ops), (WorkloadKind::Pipe, 8, 20_000));
        assert_eq!(
            (d.write_size, d.map_size, d.start_delay),
            (4096, 65536, Duration::ZERO)
        );
    }
}
