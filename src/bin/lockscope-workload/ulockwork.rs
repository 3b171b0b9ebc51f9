//! Workloads with user-space locks whose truth is known by construction:
//! they call glibc's pthread functions directly (through the `libc` crate;
//! Rust's `std::sync::Mutex` never calls pthread) with exact counts and
//! holds of exactly N ms, and measure what they did themselves.
//!
//! Threads coordinate through atomics polled with `nanosleep`, never
//! through futex-based primitives, so the only lock operations (and the
//! only futex waits, besides thread joins) are the ones under test.

use std::cell::UnsafeCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use clap::ValueEnum;
use serde::Serialize;

use crate::workload::Head;

/// Which user-lock workload; its name is the variant's in kebab case, on
/// the command line (clap) as in the reports (serde).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UserKind {
    /// One thread holds a pthread mutex for `hold` while another waits,
    /// `rounds` times.
    MutexHold,
    /// The same with a pthread spin lock: the waiter spins on a CPU.
    SpinHold,
    /// `threads` threads each do `ops` lock/unlock pairs on one mutex.
    MutexPairs,
    /// `threads` threads each do `ops` spin_lock/spin_unlock pairs.
    SpinPairs,
    /// While one thread holds a mutex, another calls trylock `ops` times
    /// (EBUSY each) and timedlock with a 1 ms timeout `rounds` times
    /// (ETIMEDOUT each).
    MutexTrylock,
    /// One rwlock taken `reads` times for reading, `writes` for writing.
    Rwlock,
    /// A Rust std::sync::Mutex (futex-based, no pthread) held for `hold`
    /// while another thread blocks on it, `rounds` times.
    StdMutex,
    /// A mutex held (and a second thread blocked on it) before tracing
    /// starts: prints a "holding" line, holds for `hold`, then does
    /// `rounds` lock/unlock pairs on the same mutex.
    HeldBefore,
    /// As mutex-hold, on the global mutex `LOCKSCOPE_GLOBAL_MUTEX` (a
    /// static with a stable, unmangled symbol), taken in the functions
    /// `ls_global_holder_locks` and `ls_global_waiter_locks`.
    GlobalHold,
    /// As mutex-hold, on a heap mutex taken in the functions
    /// `ls_heap_holder_locks` and `ls_heap_waiter_locks` (no symbol names
    /// the lock: the function that took it does).
    HeapHold,
    /// Forks `children` processes at once; each sleeps `child_delay`,
    /// then does mutex-pairs (`threads` x `ops`) and `rounds` of
    /// mutex-hold, on mutexes of its own (distinct addresses in every
    /// child), and reports to the parent, which reports them all.
    ForkMutex,
    /// A thread waits on a pthread condition variable until the main
    /// thread, once it sees the waiter asleep in futex(2), signals it,
    /// `rounds` times (a condvar wait, not lock contention).
    CondWait,
    /// A pthread rwlock held by the main thread for `hold` while a second
    /// thread blocks on it, `rounds` times each: a reader behind a writer,
    /// a writer behind a writer, a writer behind a reader.
    RwlockHold,
}

impl UserKind {
    pub fn name(&self) -> String {
        self.to_possible_value()
            .map_or_else(|| "?".into(), |v| v.get_name().to_string())
    }
}

/// The names of the user-lock workloads, in the order of [`UserKind`].
pub fn names() -> Vec<String> {
    UserKind::value_variants()
        .iter()
        .map(UserKind::name)
        .collect()
}

pub fn parse(s: &str) -> Option<UserKind> {
    UserKind::from_str(s, false).ok()
}

/// Parameters (from `lockscope workload`).
#[derive(Clone, Debug)]
pub struct UserSpec {
    pub kind: UserKind,
    pub threads: usize,
    pub ops: u64,
    pub rounds: u64,
    pub hold: Duration,
    pub reads: u64,
    pub writes: u64,
    pub start_delay: Duration,
    /// mutex-hold, spin-hold: pin the waiter and a busy thread to CPU 0
    /// (the waiter then runs SCHED_OTHER), so a woken waiter also waits
    /// for a CPU
    pub hog: bool,
    /// fork-mutex: processes forked, and their sleep before any lock
    pub children: usize,
    pub child_delay: Duration,
}

/// What a workload did, as measured by itself. Times are CLOCK_MONOTONIC.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UserReport {
    #[serde(flatten)]
    pub head: Head,
    /// Address of the lock under test (as lockscope reports it, in hex).
    pub lock: String,
    pub tids: Vec<u32>,
    #[serde(flatten)]
    pub waits: HoldWaits,
    /// Per round: from the waiter's lock call to the holder's unlock call.
    pub remaining_hold_ns: Vec<u64>,
    /// Per round: the waiter's run delay (schedstat) across its lock call:
    /// the kernel's own count of its time runnable but not running.
    pub waiter_runq_ns: Vec<u64>,
    /// Per round: the wall time over which that run delay was read (from
    /// before the first schedstat read to after the second): runnable time
    /// outside the lock call itself can only fall in this minus the call.
    pub waiter_runq_window_ns: Vec<u64>,
    /// Per round: the waiter's voluntary context switches across its lock
    /// call (getrusage): a spin-hold waiter that never slept has 0.
    pub waiter_nvcsw: Vec<u64>,
    /// Per round: when the waiter called lock (CLOCK_MONOTONIC, the clock
    /// of lockscope's begin_ns/end_ns): a wait that is off can be placed.
    pub waiter_call_at_ns: Vec<u64>,
    /// A busy thread shared the waiter's CPU (`--hog`).
    pub hog: bool,
    #[serde(flatten)]
    pub counts: LockCounts,
    /// Total time the waiter spent blocked in lock() (std-mutex).
    pub blocked_ns: u64,
    pub elapsed_ns: u64,
    /// The timed threads ran SCHED_FIFO (mutex-hold, as root).
    pub realtime: bool,
    /// fork-mutex: what each child did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ForkChild>,
}

/// A holder and a waiter: their tids, per round how long the holder held
/// (lock returned -> unlock called) and how long the waiter's lock call
/// blocked.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct HoldWaits {
    pub holder_tid: u32,
    pub waiter_tid: u32,
    pub hold_ns: Vec<u64>,
    pub waiter_wait_ns: Vec<u64>,
}

impl HoldWaits {
    /// The holder (this thread) and `waiter_tid`, nothing measured yet.
    fn mine(waiter_tid: u32) -> HoldWaits {
        HoldWaits {
            holder_tid: gettid(),
            waiter_tid,
            ..Default::default()
        }
    }

    /// The holder's and the waiter's tids.
    fn tids(&self) -> Vec<u32> {
        vec![self.holder_tid, self.waiter_tid]
    }
}

/// What the lock calls did: successful acquisitions of `lock` (reads +
/// writes for rwlock), and the failed calls.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LockCounts {
    pub acquisitions: u64,
    pub reads: u64,
    pub writes: u64,
    pub trylock_failures: u64,
    pub timedlock_failures: u64,
}

impl LockCounts {
    /// Calls that did not acquire: trylock and timedlock failures.
    pub fn failed(&self) -> u64 {
        self.trylock_failures + self.timedlock_failures
    }
}

/// What one fork-mutex child did, as measured by itself.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct ForkChild {
    pub pid: u32,
    /// CLOCK_MONOTONIC ns when it began to take locks (after its delay).
    pub started_ns: u64,
    /// mutex-pairs: the mutex, its threads, acquisitions (threads x ops).
    pub lock: String,
    pub tids: Vec<u32>,
    pub acquisitions: u64,
    #[serde(flatten)]
    pub hold: ForkHold,
}

/// The mutex-hold of a fork-mutex child: the mutex, its acquisitions (2 x
/// rounds), the threads, holds and the waiter's blocked lock calls.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct ForkHold {
    pub hold_lock: String,
    pub hold_acquisitions: u64,
    #[serde(flatten)]
    pub waits: HoldWaits,
}

use lockscope::units::now_ns;

/// Waits until CLOCK_MONOTONIC reaches `t` ns: sleeps until 2 ms before,
/// then spins, so a busy machine's wake-up latency does not lengthen the
/// hold (a preempted spin still can: callers measure what they did).
fn hold_until(t: u64) {
    sleep_until(t.saturating_sub(2_000_000));
    while now_ns() < t {
        std::hint::spin_loop();
    }
}

/// Sleeps until CLOCK_MONOTONIC reaches `t` ns (absolute, immune to
/// early wake-ups).
fn sleep_until(t: u64) {
    let ts = libc::timespec {
        tv_sec: (t / 1_000_000_000) as libc::time_t,
        tv_nsec: (t % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: ts is a valid timespec; the remainder pointer may be NULL.
    while unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    } == libc::EINTR
    {}
}

/// Best effort: makes the calling thread SCHED_FIFO (root only), so that
/// on a busy machine its wake-ups are not delayed by other tasks and its
/// measured times are the lock's, not the scheduler's. Whether it worked.
fn try_realtime() -> bool {
    let p = libc::sched_param { sched_priority: 10 };
    // SAFETY: p is a valid sched_param; 0 means the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) == 0 }
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Polls `a` (with 200 us sleeps: no futex) until it reaches `v`.
fn wait_for(a: &AtomicU32, v: u32) {
    while a.load(Ordering::Acquire) < v {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A waiter thread whose blocked calls the workload times: SCHED_FIFO
/// (root), so it is not preempted between its own clock reads and the lock
/// call on a busy machine; it publishes its tid before it runs `body`.
struct Waiter<T> {
    handle: std::thread::JoinHandle<Result<T>>,
    tid: Arc<AtomicU32>,
}

impl<T: Send + 'static> Waiter<T> {
    fn spawn(name: &str, body: impl FnOnce() -> Result<T> + Send + 'static) -> Result<Waiter<T>> {
        let tid = Arc::new(AtomicU32::new(0));
        let published = tid.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                try_realtime();
                published.store(gettid(), Ordering::Release);
                body()
            })?;
        Ok(Waiter { handle, tid })
    }

    /// Its tid, once it has started.
    fn tid(&self) -> u32 {
        wait_for(&self.tid, 1);
        self.tid.load(Ordering::Acquire)
    }

    /// What `body` returned.
    fn join(self) -> Result<T> {
        match self.handle.join() {
            Ok(r) => r,
            Err(_) => bail!("waiter thread panicked"),
        }
    }
}

/// A pthread mutex at a fixed address, shared between threads.
pub struct PMutex(UnsafeCell<libc::pthread_mutex_t>);
// SAFETY: pthread mutexes are made to be shared between threads; all
// access goes through the pthread functions.
unsafe impl Sync for PMutex {}
// SAFETY: as above.
unsafe impl Send for PMutex {}

impl PMutex {
    pub const fn new() -> PMutex {
        PMutex(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER))
    }
    pub fn ptr(&self) -> *mut libc::pthread_mutex_t {
        self.0.get()
    }
    pub fn lock(&self) -> i32 {
        // SAFETY: the mutex is initialised and lives at a fixed address.
        unsafe { libc::pthread_mutex_lock(self.ptr()) }
    }
    pub fn unlock(&self) -> i32 {
        // SAFETY: as above; callers unlock only what they locked.
        unsafe { libc::pthread_mutex_unlock(self.ptr()) }
    }
    pub fn addr(&self) -> String {
        format!("0x{:x}", self.ptr() as usize)
    }
}

impl Default for PMutex {
    fn default() -> Self {
        Self::new()
    }
}

fn check(rc: i32, what: &str) -> Result<()> {
    if rc != 0 {
        bail!("{what}: {}", std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

pub fn run(spec: &UserSpec) -> Result<UserReport> {
    if spec.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if !spec.start_delay.is_zero() {
        std::thread::sleep(spec.start_delay);
    }
    let mut rep = match spec.kind {
        UserKind::MutexHold => hold_and_wait(spec, HeldLock::new(false))?,
        UserKind::SpinHold => hold_and_wait(spec, HeldLock::new(true))?,
        UserKind::GlobalHold => hold_and_wait(spec, HeldLock::global())?,
        UserKind::HeapHold => hold_and_wait(spec, HeldLock::heap())?,
        UserKind::MutexPairs => pairs(spec, false, Arc::new(PMutex::new()))?,
        UserKind::SpinPairs => pairs(spec, true, Arc::new(PMutex::new()))?,
        UserKind::ForkMutex => fork_mutex(spec)?,
        UserKind::MutexTrylock => trylock(spec)?,
        UserKind::Rwlock => rwlock(spec)?,
        UserKind::StdMutex => std_mutex(spec)?,
        UserKind::HeldBefore => held_before(spec)?,
        UserKind::CondWait => cond_wait(spec)?,
        UserKind::RwlockHold => rwlock_hold(spec)?,
    };
    rep.head = Head::new(spec.kind.name());
    Ok(rep)
}

/// The global mutex of `global-hold`: a `static pthread_mutex_t` whose
/// symbol names it (tests check that lockscope finds the name).
#[unsafe(no_mangle)]
pub static LOCKSCOPE_GLOBAL_MUTEX: PMutex = PMutex::new();

/// The holder's lock call of `global-hold`, a frame of its own in the
/// stacks (tests look for this name).
#[inline(never)]
#[unsafe(no_mangle)]
pub fn ls_global_holder_locks(m: &PMutex) -> i32 {
    // bodies that differ, so that no optimiser or linker folds the two
    // functions into one address (one name)
    std::hint::black_box(0x401d_u32);
    std::hint::black_box(m.lock())
}

/// The waiter's lock call of `global-hold`.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn ls_global_waiter_locks(m: &PMutex) -> i32 {
    std::hint::black_box(0x3a17_u32);
    std::hint::black_box(m.lock())
}

/// The holder's lock call of `heap-hold` (tests look for this name).
#[inline(never)]
#[unsafe(no_mangle)]
pub fn ls_heap_holder_locks(m: &PMutex) -> i32 {
    std::hint::black_box(0x6e1d_u32);
    // pthread_mutex_lock called from here, not through PMutex::lock: a
    // debug build does not inline that wrapper, and the lock is named
    // after the function that calls libc
    // SAFETY: the mutex is initialised and lives at a fixed address.
    std::hint::black_box(unsafe { libc::pthread_mutex_lock(m.ptr()) })
}

/// The waiter's lock call of `heap-hold`.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn ls_heap_waiter_locks(m: &PMutex) -> i32 {
    std::hint::black_box(0x5b3e_u32);
    // pthread_mutex_lock called from here, not through PMutex::lock: a
    // debug build does not inline that wrapper, and the lock is named
    // after the function that calls libc
    // SAFETY: the mutex is initialised and lives at a fixed address.
    std::hint::black_box(unsafe { libc::pthread_mutex_lock(m.ptr()) })
}

/// The lock of mutex-hold (a pthread mutex), spin-hold (a spin lock),
/// global-hold (`LOCKSCOPE_GLOBAL_MUTEX`) or heap-hold.
struct HeldLock {
    mutex: Arc<PMutex>,
    spin: Option<PSpin>,
    global: bool,
    /// heap-hold: taken in `ls_heap_*_locks`.
    heap: bool,
}

impl HeldLock {
    fn new(spin: bool) -> HeldLock {
        HeldLock::on(Arc::new(PMutex::new()), spin)
    }
    /// On a given pthread mutex (or a spin lock of its own).
    fn on(mutex: Arc<PMutex>, spin: bool) -> HeldLock {
        HeldLock {
            mutex,
            spin: spin.then(|| PSpin(UnsafeCell::new(0))),
            global: false,
            heap: false,
        }
    }
    fn global() -> HeldLock {
        HeldLock {
            mutex: Arc::new(PMutex::new()),
            spin: None,
            global: true,
            heap: false,
        }
    }
    fn heap() -> HeldLock {
        HeldLock {
            heap: true,
            ..HeldLock::new(false)
        }
    }
    /// The pthread mutex in use.
    fn pmutex(&self) -> &PMutex {
        if self.global {
            &LOCKSCOPE_GLOBAL_MUTEX
        } else {
            &self.mutex
        }
    }
    /// Initialises the spin lock, once it is at its final address.
    fn init(&self) -> Result<()> {
        if let Some(s) = &self.spin {
            // SAFETY: the spinlock is at a fixed address (inside an Arc)
            // and no other thread uses it yet.
            check(
                unsafe { libc::pthread_spin_init(s.0.get(), libc::PTHREAD_PROCESS_PRIVATE) },
                "pthread_spin_init",
            )?;
        }
        Ok(())
    }
    /// Takes the lock, as the holder or as the waiter (global-hold: in
    /// functions of their own).
    fn lock(&self, holder: bool) -> i32 {
        match &self.spin {
            // SAFETY: initialised, at a fixed address inside an Arc.
            Some(s) => unsafe { libc::pthread_spin_lock(s.0.get()) },
            None if self.global && holder => ls_global_holder_locks(self.pmutex()),
            None if self.global => ls_global_waiter_locks(self.pmutex()),
            None if self.heap && holder => ls_heap_holder_locks(self.pmutex()),
            None if self.heap => ls_heap_waiter_locks(self.pmutex()),
            None => self.pmutex().lock(),
        }
    }
    fn unlock(&self) -> i32 {
        match &self.spin {
            // SAFETY: as above; callers unlock only what they locked.
            Some(s) => unsafe { libc::pthread_spin_unlock(s.0.get()) },
            None => self.pmutex().unlock(),
        }
    }
    fn addr(&self) -> String {
        match &self.spin {
            Some(s) => format!("0x{:x}", s.0.get() as usize),
            None => self.pmutex().addr(),
        }
    }
}

/// Holder and waiter, `rounds` times: the holder takes the lock, the
/// waiter calls lock 10 ms later, the holder unlocks `hold` after taking
/// it. Both run SCHED_FIFO (root) unless `hog`: then the waiter shares
/// CPU 0 with a busy thread, so after its wake-up it may wait to run.
fn hold_and_wait(spec: &UserSpec, lock: HeldLock) -> Result<UserReport> {
    let m = Arc::new(lock);
    m.init()?;
    let step = Arc::new(AtomicU32::new(0));
    let waiter_tid = Arc::new(AtomicU32::new(0));
    let call_at = Arc::new(AtomicU64::new(0));
    let stop_hog = Arc::new(AtomicU32::new(0));
    let rounds = spec.rounds;
    let hog = spec.hog;
    if hog {
        let stop = stop_hog.clone();
        std::thread::Builder::new()
            .name("ls-hog".into())
            .spawn(move || {
                if crate::mmwork::pin_to(0).is_ok() {
                    while stop.load(Ordering::Relaxed) == 0 {
                        std::hint::spin_loop();
                    }
                }
            })?;
    }
    let waiter = {
        let (m, step, waiter_tid, call_at) =
            (m.clone(), step.clone(), waiter_tid.clone(), call_at.clone());
        std::thread::Builder::new()
            .name("ls-uwaiter".into())
            .spawn(move || -> Result<WaiterRounds> {
                if hog {
                    crate::mmwork::pin_to(0)?;
                } else {
                    try_realtime();
                }
                waiter_tid.store(gettid(), Ordering::Release);
                let mut got = WaiterRounds::default();
                for r in 0..rounds as u32 {
                    wait_for(&step, 2 * r + 1); // holder holds
                    std::thread::sleep(Duration::from_millis(10));
                    let w0 = now_ns();
                    let q0 = crate::mmwork::own_run_delay()?;
                    let v0 = own_nvcsw();
                    let t0 = now_ns();
                    call_at.store(t0, Ordering::Release);
                    check(m.lock(false), "lock")?;
                    got.waits.push(now_ns() - t0);
                    got.call_at.push(t0);
                    got.nvcsw.push(own_nvcsw().saturating_sub(v0));
                    got.runq
                        .push(crate::mmwork::own_run_delay()?.saturating_sub(q0));
                    got.window.push(now_ns() - w0);
                    check(m.unlock(), "unlock")?;
                    step.store(2 * r + 2, Ordering::Release);
                }
                Ok(got)
            })?
    };
    let mut rep = UserReport {
        lock: m.addr(),
        waits: HoldWaits::mine(0),
        realtime: try_realtime(),
        hog,
        ..Default::default()
    };
    let start = now_ns();
    for r in 0..rounds as u32 {
        wait_for(&step, 2 * r);
        check(m.lock(true), "lock")?;
        let acquired = now_ns();
        step.store(2 * r + 1, Ordering::Release);
        hold_until(acquired + spec.hold.as_nanos() as u64);
        // the waiter calls 10 ms into the hold; a loaded machine can delay
        // that past the hold's end, so hold on until it has called
        while call_at.load(Ordering::Acquire) < acquired {
            std::thread::sleep(Duration::from_micros(200));
        }
        let unlock_at = now_ns();
        check(m.unlock(), "unlock")?;
        rep.waits.hold_ns.push(unlock_at - acquired);
        rep.remaining_hold_ns
            .push(unlock_at.saturating_sub(call_at.load(Ordering::Acquire)));
    }
    wait_for(&step, 2 * rounds as u32);
    rep.elapsed_ns = now_ns() - start;
    stop_hog.store(1, Ordering::Relaxed);
    let got = match waiter.join() {
        Ok(r) => r?,
        Err(_) => bail!("waiter thread panicked"),
    };
    rep.waits.waiter_wait_ns = got.waits;
    rep.waiter_runq_ns = got.runq;
    rep.waiter_runq_window_ns = got.window;
    rep.waiter_nvcsw = got.nvcsw;
    rep.waiter_call_at_ns = got.call_at;
    rep.waits.waiter_tid = waiter_tid.load(Ordering::Acquire);
    rep.tids = rep.waits.tids();
    rep.counts.acquisitions = 2 * rounds;
    Ok(rep)
}

/// What hold_and_wait's waiter measured, per round.
#[derive(Default)]
struct WaiterRounds {
    waits: Vec<u64>,
    runq: Vec<u64>,
    window: Vec<u64>,
    nvcsw: Vec<u64>,
    call_at: Vec<u64>,
}

/// The calling thread's voluntary context switches so far.
fn own_nvcsw() -> u64 {
    // SAFETY: rusage is plain data; getrusage fills it for this thread.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage to write into.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return 0;
    }
    ru.ru_nvcsw as u64
}

/// A pthread spinlock at a fixed address.
struct PSpin(UnsafeCell<libc::pthread_spinlock_t>);
// SAFETY: spinlocks are made to be shared; access only via pthread_spin_*.
unsafe impl Sync for PSpin {}
// SAFETY: as above.
unsafe impl Send for PSpin {}

/// `threads` threads, `ops` lock/unlock pairs each, on one lock (`m`, or
/// a spin lock); released together, so with several threads the lock is
/// contended.
fn pairs(spec: &UserSpec, spin: bool, m: Arc<PMutex>) -> Result<UserReport> {
    let s = Arc::new(PSpin(UnsafeCell::new(0)));
    // SAFETY: the spinlock lives at a fixed address inside the Arc.
    check(
        unsafe { libc::pthread_spin_init(s.0.get(), libc::PTHREAD_PROCESS_PRIVATE) },
        "pthread_spin_init",
    )?;
    let go = Arc::new(AtomicU32::new(0));
    let ready = Arc::new(AtomicU32::new(0));
    let mut handles = Vec::new();
    for i in 0..spec.threads {
        let (m, s, go, ready) = (m.clone(), s.clone(), go.clone(), ready.clone());
        let ops = spec.ops;
        handles.push(
            std::thread::Builder::new()
                .name(format!("ls-pairs{i}"))
                .spawn(move || -> Result<u32> {
                    ready.fetch_add(1, Ordering::AcqRel);
                    wait_for(&go, 1);
                    for _ in 0..ops {
                        if spin {
                            // SAFETY: initialised above, fixed address.
                            check(unsafe { libc::pthread_spin_lock(s.0.get()) }, "spin_lock")?;
                            // SAFETY: as above; we hold it.
                            check(
                                unsafe { libc::pthread_spin_unlock(s.0.get()) },
                                "spin_unlock",
                            )?;
                        } else {
                            check(m.lock(), "pthread_mutex_lock")?;
                            check(m.unlock(), "pthread_mutex_unlock")?;
                        }
                    }
                    Ok(gettid())
                })?,
        );
    }
    wait_for(&ready, spec.threads as u32);
    let start = now_ns();
    go.store(1, Ordering::Release);
    let mut rep = UserReport {
        lock: if spin {
            format!("0x{:x}", s.0.get() as usize)
        } else {
            m.addr()
        },
        ..Default::default()
    };
    for h in handles {
        match h.join() {
            Ok(r) => rep.tids.push(r?),
            Err(_) => bail!("worker panicked"),
        }
    }
    rep.elapsed_ns = now_ns() - start;
    rep.counts.acquisitions = spec.ops * spec.threads as u64;
    Ok(rep)
}

/// fork-mutex: forks every child first (this process has no other
/// thread then, so a child may do anything), then collects what each one
/// reports through a pipe of its own.
fn fork_mutex(spec: &UserSpec) -> Result<UserReport> {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    if spec.children == 0 {
        bail!("--children must be at least 1");
    }
    // mutexes of each child, allocated here: distinct addresses in every
    // child (each child's copy is its own, process-private)
    let pairs_m: Vec<Arc<PMutex>> = (0..spec.children)
        .map(|_| Arc::new(PMutex::new()))
        .collect();
    let hold_m: Vec<Arc<PMutex>> = (0..spec.children)
        .map(|_| Arc::new(PMutex::new()))
        .collect();
    let mut kids: Vec<(libc::pid_t, std::fs::File)> = Vec::new();
    for i in 0..spec.children {
        let mut fds = [0i32; 2];
        // SAFETY: fds is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!("pipe2: {}", std::io::Error::last_os_error());
        }
        // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fork has no memory-safety preconditions; this process
        // has one thread, so the child may allocate and start threads.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            drop(rd);
            let line = match fork_child(spec, pairs_m[i].clone(), hold_m[i].clone()) {
                Ok(c) => serde_json::to_string(&c).unwrap_or_default(),
                Err(e) => format!("error: {e:#}"),
            };
            let mut w = std::fs::File::from(wr);
            let ok =
                std::io::Write::write_all(&mut w, line.as_bytes()).is_ok() && line.starts_with('{');
            // SAFETY: _exit ends this forked child without running the
            // parent's atexit handlers or flushing its inherited buffers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        drop(wr);
        kids.push((pid, std::fs::File::from(rd)));
    }
    let mut rep = UserReport::default();
    let mut failures = Vec::new();
    for (pid, mut rd) in kids {
        let mut text = String::new();
        let read = rd.read_to_string(&mut text);
        let mut status = 0;
        // SAFETY: status is a valid int for waitpid to fill.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        match (read, serde_json::from_str::<ForkChild>(&text)) {
            (Ok(_), Ok(c)) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => {
                rep.counts.acquisitions += c.acquisitions + c.hold.hold_acquisitions;
                rep.children.push(c);
            }
            _ => failures.push(format!("child {pid} (status {status}): {text}")),
        }
    }
    if !failures.is_empty() {
        bail!("fork-mutex: {}", failures.join("; "));
    }
    Ok(rep)
}

/// One fork-mutex child: its delay, mutex-pairs on `pm`, then `rounds`
/// of mutex-hold on `hm`.
fn fork_child(spec: &UserSpec, pm: Arc<PMutex>, hm: Arc<PMutex>) -> Result<ForkChild> {
    std::thread::sleep(spec.child_delay);
    let started_ns = now_ns();
    let p = pairs(spec, false, pm)?;
    let mut c = ForkChild {
        pid: std::process::id(),
        started_ns,
        lock: p.lock,
        tids: p.tids,
        acquisitions: p.counts.acquisitions,
        ..Default::default()
    };
    if spec.rounds > 0 {
        let h = hold_and_wait(spec, HeldLock::on(hm, false))?;
        c.hold = ForkHold {
            hold_lock: h.lock,
            hold_acquisitions: h.counts.acquisitions,
            waits: h.waits,
        };
    }
    Ok(c)
}

/// Failed calls only: EBUSY from trylock, ETIMEDOUT from timedlock.
fn trylock(spec: &UserSpec) -> Result<UserReport> {
    let m = Arc::new(PMutex::new());
    check(m.lock(), "pthread_mutex_lock")?; // held by this thread throughout
    let (k, j) = (spec.ops, spec.rounds);
    let tester = {
        let m = m.clone();
        std::thread::Builder::new()
            .name("ls-trylock".into())
            .spawn(move || -> Result<(u32, u64, u64)> {
                let (mut busy, mut timed_out) = (0, 0);
                for _ in 0..k {
                    // SAFETY: initialised mutex at a fixed address.
                    match unsafe { libc::pthread_mutex_trylock(m.ptr()) } {
                        libc::EBUSY => busy += 1,
                        rc => bail!("trylock on a held mutex returned {rc}, not EBUSY"),
                    }
                }
                for _ in 0..j {
                    let mut ts = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    // SAFETY: clock_gettime writes into a valid timespec.
                    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
                    let deadline = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64 + 1_000_000;
                    let abs = libc::timespec {
                        tv_sec: (deadline / 1_000_000_000) as libc::time_t,
                        tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
                    };
                    // SAFETY: as above; abs is a valid absolute timespec.
                    match unsafe { libc::pthread_mutex_timedlock(m.ptr(), &abs) } {
                        libc::ETIMEDOUT => timed_out += 1,
                        rc => bail!("timedlock on a held mutex returned {rc}, not ETIMEDOUT"),
                    }
                }
                Ok((gettid(), busy, timed_out))
            })?
    };
    let (tid, busy, timed_out) = match tester.join() {
        Ok(r) => r?,
        Err(_) => bail!("trylock thread panicked"),
    };
    check(m.unlock(), "pthread_mutex_unlock")?;
    Ok(UserReport {
        counts: LockCounts {
            acquisitions: 1,
            trylock_failures: busy,
            timedlock_failures: timed_out,
            ..Default::default()
        },
        ..held_report(m.addr(), tid)
    })
}

/// One thread: `reads` rdlock/unlock pairs, then `writes` wrlock/unlock.
fn rwlock(spec: &UserSpec) -> Result<UserReport> {
    let rw = Box::new(UnsafeCell::new(libc::PTHREAD_RWLOCK_INITIALIZER));
    let p = rw.get();
    for _ in 0..spec.reads {
        // SAFETY: an initialised rwlock at a fixed (boxed) address.
        check(unsafe { libc::pthread_rwlock_rdlock(p) }, "rdlock")?;
        // SAFETY: as above; we hold it.
        check(unsafe { libc::pthread_rwlock_unlock(p) }, "unlock")?;
    }
    for _ in 0..spec.writes {
        // SAFETY: as above.
        check(unsafe { libc::pthread_rwlock_wrlock(p) }, "wrlock")?;
        // SAFETY: as above; we hold it.
        check(unsafe { libc::pthread_rwlock_unlock(p) }, "unlock")?;
    }
    Ok(UserReport {
        lock: format!("0x{:x}", p as usize),
        tids: vec![gettid()],
        counts: LockCounts {
            reads: spec.reads,
            writes: spec.writes,
            acquisitions: spec.reads + spec.writes,
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Polls (200 us sleeps) until thread `tid` of this process is inside
/// futex(2) on an address in [lo, hi): asleep on the lock or condvar under
/// test, as the kernel itself says (/proc/self/task/TID/syscall).
fn wait_blocked(tid: u32, lo: usize, hi: usize) {
    loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) {
            let mut f = s.split_whitespace();
            let nr = f.next();
            let a0 = f
                .next()
                .and_then(|a| usize::from_str_radix(a.trim_start_matches("0x"), 16).ok());
            if nr == Some("202")
                && let Some(a) = a0
                && a >= lo
                && a < hi
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The addresses `[lo, hi)` of the pthread object at `p` (its futex word
/// lies in them).
fn span<T>(p: *mut T) -> (usize, usize) {
    let lo = p as usize;
    (lo, lo + std::mem::size_of::<T>())
}

/// The report of a workload whose main thread holds `lock` while
/// `waiter_tid` waits on it: the lock and the two threads.
fn held_report(lock: String, waiter_tid: u32) -> UserReport {
    let waits = HoldWaits::mine(waiter_tid);
    UserReport {
        lock,
        tids: waits.tids(),
        waits,
        ..Default::default()
    }
}

/// A pthread condition variable and its mutex, at fixed addresses.
struct PCond {
    cond: UnsafeCell<libc::pthread_cond_t>,
    mutex: PMutex,
    flag: AtomicU32,
}
// SAFETY: condition variables are made to be shared; access only via the
// pthread functions (the flag is atomic).
unsafe impl Sync for PCond {}
// SAFETY: as above.
unsafe impl Send for PCond {}

/// cond-wait: per round, the waiter waits on the condvar (its own time
/// measured around pthread_cond_wait); the main thread waits until the
/// waiter sleeps in futex(2) on it, sets the flag under the mutex,
/// releases the mutex and only then signals (so the woken waiter takes the
/// mutex uncontended: no mutex wait).
fn cond_wait(spec: &UserSpec) -> Result<UserReport> {
    let c = Arc::new(PCond {
        cond: UnsafeCell::new(libc::PTHREAD_COND_INITIALIZER),
        mutex: PMutex::new(),
        flag: AtomicU32::new(0),
    });
    let step = Arc::new(AtomicU32::new(0));
    let rounds = spec.rounds as u32;
    let waiter = {
        let (c, step) = (c.clone(), step.clone());
        Waiter::spawn("ls-cwaiter", move || {
            let mut waits = Vec::new();
            for r in 0..rounds {
                check(c.mutex.lock(), "lock")?;
                step.store(2 * r + 1, Ordering::Release);
                let t0 = now_ns();
                while c.flag.load(Ordering::Acquire) < r + 1 {
                    // SAFETY: initialised condvar and mutex at fixed
                    // addresses; we hold the mutex.
                    check(
                        unsafe { libc::pthread_cond_wait(c.cond.get(), c.mutex.ptr()) },
                        "pthread_cond_wait",
                    )?;
                }
                waits.push(now_ns() - t0);
                check(c.mutex.unlock(), "unlock")?;
                step.store(2 * r + 2, Ordering::Release);
            }
            Ok(waits)
        })?
    };
    let start = now_ns();
    let wt = waiter.tid();
    let (lo, hi) = span(c.cond.get());
    let mut rep = UserReport {
        realtime: try_realtime(),
        ..held_report(format!("0x{lo:x}"), wt)
    };
    for r in 0..rounds {
        wait_for(&step, 2 * r + 1);
        wait_blocked(wt, lo, hi);
        check(c.mutex.lock(), "lock")?;
        c.flag.store(r + 1, Ordering::Release);
        check(c.mutex.unlock(), "unlock")?;
        // SAFETY: an initialised condvar at a fixed address.
        check(
            unsafe { libc::pthread_cond_signal(c.cond.get()) },
            "pthread_cond_signal",
        )?;
        wait_for(&step, 2 * r + 2);
    }
    rep.elapsed_ns = now_ns() - start;
    rep.waits.waiter_wait_ns = waiter.join()?;
    rep.counts.acquisitions = 2 * spec.rounds;
    Ok(rep)
}

/// A pthread rwlock at a fixed address.
struct PRwlock(UnsafeCell<libc::pthread_rwlock_t>);
// SAFETY: rwlocks are made to be shared; access only via pthread_rwlock_*.
unsafe impl Sync for PRwlock {}
// SAFETY: as above.
unsafe impl Send for PRwlock {}

impl PRwlock {
    fn lock(&self, write: bool) -> i32 {
        // SAFETY: an initialised rwlock at a fixed address (inside an Arc).
        unsafe {
            if write {
                libc::pthread_rwlock_wrlock(self.0.get())
            } else {
                libc::pthread_rwlock_rdlock(self.0.get())
            }
        }
    }
    fn unlock(&self) -> i32 {
        // SAFETY: as above; callers unlock only what they locked.
        unsafe { libc::pthread_rwlock_unlock(self.0.get()) }
    }
}

/// rwlock-hold's phases of a round: (the holder writes, the waiter writes).
const RW_PHASES: [(bool, bool); 3] = [(true, false), (true, true), (false, true)];

/// rwlock-hold: per round and phase, the main thread takes the rwlock,
/// lets the waiter call, waits until the waiter sleeps in futex(2) on the
/// rwlock, holds until `hold` after taking it, and releases. `reads` and
/// `writes` count the waiter's blocked calls (1 and 2 per round);
/// `waiter_wait_ns` and `hold_ns` are per wait, in order.
fn rwlock_hold(spec: &UserSpec) -> Result<UserReport> {
    let rw = Arc::new(PRwlock(UnsafeCell::new(libc::PTHREAD_RWLOCK_INITIALIZER)));
    let step = Arc::new(AtomicU32::new(0));
    let n = spec.rounds as u32 * RW_PHASES.len() as u32;
    let waiter = {
        let (rw, step) = (rw.clone(), step.clone());
        Waiter::spawn("ls-rwwaiter", move || {
            let mut waits = Vec::new();
            for k in 0..n {
                let (_, write) = RW_PHASES[k as usize % RW_PHASES.len()];
                wait_for(&step, 2 * k + 1);
                let t0 = now_ns();
                check(rw.lock(write), "waiter rwlock")?;
                waits.push(now_ns() - t0);
                check(rw.unlock(), "waiter unlock")?;
                step.store(2 * k + 2, Ordering::Release);
            }
            Ok(waits)
        })?
    };
    let wt = waiter.tid();
    let (lo, hi) = span(rw.0.get());
    let mut rep = UserReport {
        realtime: try_realtime(),
        ..held_report(format!("0x{lo:x}"), wt)
    };
    let start = now_ns();
    for k in 0..n {
        let (write, waiter_writes) = RW_PHASES[k as usize % RW_PHASES.len()];
        check(rw.lock(write), "holder rwlock")?;
        let acquired = now_ns();
        step.store(2 * k + 1, Ordering::Release);
        wait_blocked(wt, lo, hi);
        hold_until(acquired + spec.hold.as_nanos() as u64);
        let unlock_at = now_ns();
        check(rw.unlock(), "holder unlock")?;
        rep.waits.hold_ns.push(unlock_at - acquired);
        if waiter_writes {
            rep.counts.writes += 1;
        } else {
            rep.counts.reads += 1;
        }
        wait_for(&step, 2 * k + 2);
    }
    rep.elapsed_ns = now_ns() - start;
    rep.waits.waiter_wait_ns = waiter.join()?;
    rep.counts.acquisitions = 2 * n as u64;
    Ok(rep)
}

/// std::sync::Mutex contention: the waiter measures its blocked lock().
fn std_mutex(spec: &UserSpec) -> Result<UserReport> {
    let m = Arc::new(std::sync::Mutex::new(0u64));
    let step = Arc::new(AtomicU32::new(0));
    let rounds = spec.rounds;
    let waiter = {
        let (m, step) = (m.clone(), step.clone());
        std::thread::Builder::new()
            .name("ls-stdwaiter".into())
            .spawn(move || -> (u32, Vec<u64>) {
                // one CPU (and real-time where allowed): woken, it runs at
                // once, so its waits are its blocked time
                let _ = crate::mmwork::pin_to(0);
                try_realtime();
                (gettid(), std_mutex_waiter(&m, &step, rounds as u32))
            })?
    };
    let realtime = try_realtime();
    let start = now_ns();
    for r in 0..rounds as u32 {
        wait_for(&step, 2 * r);
        let g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let acquired = now_ns();
        step.store(2 * r + 1, Ordering::Release);
        hold_until(acquired + spec.hold.as_nanos() as u64);
        drop(g);
    }
    wait_for(&step, 2 * rounds as u32);
    let elapsed = now_ns() - start;
    let (tid, waits) = match waiter.join() {
        Ok(r) => r,
        Err(_) => bail!("waiter thread panicked"),
    };
    let mut rep = UserReport {
        blocked_ns: waits.iter().sum(),
        elapsed_ns: elapsed,
        realtime,
        ..held_report(format!("0x{:x}", Arc::as_ptr(&m) as usize), tid)
    };
    rep.waits.waiter_wait_ns = waits;
    Ok(rep)
}

/// The std-mutex waiter's rounds, and its lock call, each a function of
/// its own (never inlined) so that a frame-pointer walk from the futex
/// wait names this workload: std is built without frame pointers, so the
/// walk from inside std's lock skips the innermost frame that keeps one
/// (`std_mutex_lock`) and resumes in its caller (this one).
#[inline(never)]
fn std_mutex_waiter(m: &std::sync::Mutex<u64>, step: &AtomicU32, rounds: u32) -> Vec<u64> {
    let mut waits = Vec::new();
    for r in 0..rounds {
        wait_for(step, 2 * r + 1);
        std::thread::sleep(Duration::from_millis(10));
        let t0 = now_ns();
        let mut g = std_mutex_lock(m);
        waits.push(now_ns() - t0);
        *g += 1;
        drop(g);
        step.store(2 * r + 2, Ordering::Release);
    }
    waits
}

#[inline(never)]
fn std_mutex_lock(m: &std::sync::Mutex<u64>) -> std::sync::MutexGuard<'_, u64> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Holds a mutex (and has a thread blocked on it) before any tracer can
/// attach; `ready` is told when both are so.
fn held_before(spec: &UserSpec) -> Result<UserReport> {
    let m = Arc::new(PMutex::new());
    check(m.lock(), "pthread_mutex_lock")?;
    let entered = Arc::new(AtomicU32::new(0));
    let waiter = {
        let (m, entered) = (m.clone(), entered.clone());
        std::thread::Builder::new()
            .name("ls-earlywait".into())
            .spawn(move || -> Result<u32> {
                entered.store(1, Ordering::Release);
                check(m.lock(), "pthread_mutex_lock")?; // blocks: held
                check(m.unlock(), "pthread_mutex_unlock")?;
                Ok(gettid())
            })?
    };
    wait_for(&entered, 1);
    std::thread::sleep(Duration::from_millis(50)); // the waiter is in lock()
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let line = serde_json::json!({
            "holding": true,
            "pid": std::process::id(),
            "lock": m.addr(),
            "holder_tid": gettid(),
        });
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    std::thread::sleep(spec.hold);
    check(m.unlock(), "pthread_mutex_unlock")?;
    let waiter_tid = match waiter.join() {
        Ok(r) => r?,
        Err(_) => bail!("waiter thread panicked"),
    };
    for _ in 0..spec.rounds {
        check(m.lock(), "pthread_mutex_lock")?;
        check(m.unlock(), "pthread_mutex_unlock")?;
    }
    Ok(UserReport {
        counts: LockCounts {
            acquisitions: spec.rounds,
            ..Default::default()
        },
        ..held_report(m.addr(), waiter_tid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: UserKind) -> UserSpec {
        UserSpec {
            kind,
            threads: 2,
            ops: 1000,
            rounds: 2,
            hold: Duration::from_millis(20),
            reads: 30,
            writes: 7,
            start_delay: Duration::ZERO,
            hog: false,
            children: 2,
            child_delay: Duration::ZERO,
        }
    }

    #[test]
    fn names_round_trip() {
        for k in UserKind::value_variants() {
            assert_eq!(parse(&k.name()), Some(*k));
            assert_eq!(serde_json::json!(k), k.name());
        }
        assert_eq!(names()[..2], ["mutex-hold", "spin-hold"]);
        assert_eq!(UserKind::RwlockHold.name(), "rwlock-hold");
        assert_eq!(parse("nope"), None);
    }

    #[test]
    fn mutex_hold_holds_as_long_as_asked_and_the_waiter_waits() {
        // bounds from what this test measures, not fixed slack: a busy
        // machine stretches sleeps and wake-ups, never shortens them
        let t0 = std::time::Instant::now();
        let r = run(&spec(UserKind::MutexHold)).expect("runs");
        let wall = t0.elapsed().as_nanos() as u64;
        assert_eq!(r.waits.hold_ns.len(), 2);
        let held: u64 = r.waits.hold_ns.iter().sum();
        assert!(held <= wall, "holds {held} ns in a run of {wall} ns");
        for (i, &h) in r.waits.hold_ns.iter().enumerate() {
            assert!(h >= 20_000_000, "hold {h}");
            let (w, rem) = (r.waits.waiter_wait_ns[i], r.remaining_hold_ns[i]);
            // the waiter wakes after the release, within the run's time
            // not spent holding
            assert!(
                w >= rem && w - rem <= wall - held,
                "wait {w} vs remaining {rem} (run {wall} ns, held {held} ns)"
            );
        }
    }

    #[test]
    fn trylock_and_rwlock_do_exactly_what_they_say() {
        let mut s = spec(UserKind::MutexTrylock);
        s.ops = 25;
        s.rounds = 3;
        let r = run(&s).expect("runs");
        assert_eq!(
            (r.counts.trylock_failures, r.counts.timedlock_failures),
            (25, 3)
        );
        let r = run(&spec(UserKind::Rwlock)).expect("runs");
        assert_eq!((r.counts.reads, r.counts.writes), (30, 7));
        let r = run(&spec(UserKind::SpinPairs)).expect("runs");
        assert_eq!(r.counts.acquisitions, 2000);
    }

    #[test]
    fn std_mutex_waiter_measures_its_blocking() {
        let r = run(&spec(UserKind::StdMutex)).expect("runs");
        assert_eq!(r.waits.waiter_wait_ns.len(), 2);
        // how long of the 5 ms hold the waiter spends blocked depends on
        // when it is scheduled (a loaded CI host delays it): what holds is
        // that it measured each wait inside the run
        assert_eq!(r.blocked_ns, r.waits.waiter_wait_ns.iter().sum::<u64>());
        assert!(
            r.waits
                .waiter_wait_ns
                .iter()
                .all(|&w| w > 0 && w < r.elapsed_ns),
            "{:?} within {} ns",
            r.waits.waiter_wait_ns,
            r.elapsed_ns
        );
    }
}
