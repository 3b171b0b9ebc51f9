//! Pure types shared by every source: lock kinds, log2 histograms, wait/hold
//! statistics and report rows. Nothing here knows about libbpf.

use serde::Serialize;

/// Number of log2 slots; must equal `LS_HIST_SLOTS` in `src/bpf/lockscope.h`
/// (checked at compile time in `session.rs`).
pub const HIST_SLOTS: usize = 40;

/// Flags of `lock:contention_begin` (include/trace/events/lock.h).
pub mod lcb {
    pub const SPIN: u32 = 1 << 0;
    pub const READ: u32 = 1 << 1;
    pub const WRITE: u32 = 1 << 2;
    pub const RT: u32 = 1 << 3;
    pub const PERCPU: u32 = 1 << 4;
    pub const MUTEX: u32 = 1 << 5;
}

/// What kind of lock a wait was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockKind {
    Spinlock,
    RwlockRead,
    RwlockWrite,
    Mutex,
    RwsemRead,
    RwsemWrite,
    RtMutex,
    RwlockRtRead,
    RwlockRtWrite,
    PercpuRwsemRead,
    PercpuRwsemWrite,
    /// Not a lock: a thread's wait for a CPU (run-queue latency, `sched`).
    RunQueue,
    /// Not a lock: time in the scheduler's pick_next_task_fair
    /// (`sched-picknext`).
    PickNext,
    /// pthread_mutex_t (user-locks source).
    UserMutex,
    /// pthread_rwlock_t taken for reading.
    UserRwlockRead,
    /// pthread_rwlock_t taken for writing.
    UserRwlockWrite,
    /// pthread_spinlock_t.
    UserSpin,
    /// Not a lock: a pthread_cond_t wait (futex source).
    UserCond,
    /// A futex word waited on with futex(2) / futex_waitv(2).
    Futex,
    /// A PostgreSQL LWLock taken exclusively (app-locks).
    LwlockExclusive,
    /// A PostgreSQL LWLock taken shared.
    LwlockShared,
    /// A PostgreSQL LWLock waited on until free (LW_WAIT_UNTIL_FREE).
    LwlockWaitFree,
    /// A PostgreSQL heavyweight lock (relation, transaction, tuple, ...).
    PgLock,
    /// Not a wait: PostgreSQL found a deadlock (deadlock__found).
    PgDeadlock,
    /// A Java object monitor entered under contention (HotSpot probes).
    JavaMonitor,
    /// Not a lock: a page fault waiting for the thread that answers its
    /// userfaultfd (the live deadlock detector's kernel-side edges).
    UffdFault,
    /// Flags this version does not know; kept so nothing is hidden.
    Unknown(u32),
}

/// A kind nothing was decoded into yet (as [`Record::default`] holds).
impl Default for LockKind {
    fn default() -> LockKind {
        LockKind::Unknown(0)
    }
}

impl LockKind {
    /// Decodes `contention_begin` flags. The spin bit of a mutex means
    /// optimistic spinning, which is a way of waiting, not a kind.
    pub fn from_contention_flags(flags: u32) -> LockKind {
        use lcb::*;
        let f = if flags & MUTEX != 0 {
            flags & !SPIN
        } else {
            flags
        };
        match f {
            SPIN => LockKind::Spinlock,
            x if x == SPIN | READ => LockKind::RwlockRead,
            x if x == SPIN | WRITE => LockKind::RwlockWrite,
            MUTEX => LockKind::Mutex,
            READ => LockKind::RwsemRead,
            WRITE => LockKind::RwsemWrite,
            RT => LockKind::RtMutex,
            x if x == RT | READ => LockKind::RwlockRtRead,
            x if x == RT | WRITE => LockKind::RwlockRtWrite,
            x if x == PERCPU | READ => LockKind::PercpuRwsemRead,
            x if x == PERCPU | WRITE => LockKind::PercpuRwsemWrite,
            other => LockKind::Unknown(other),
        }
    }

    /// Stable name used in tables and JSON.
    pub fn name(&self) -> String {
        match self.known_name() {
            Some(n) => n.into(),
            None => match self {
                LockKind::Unknown(f) => format!("unknown-0x{f:x}"),
                _ => "unknown".into(),
            },
        }
    }

    /// [`LockKind::name`] of every kind but `Unknown`, without allocating.
    pub fn known_name(&self) -> Option<&'static str> {
        Some(match self {
            LockKind::Spinlock => "spinlock",
            LockKind::RwlockRead => "rwlock-read",
            LockKind::RwlockWrite => "rwlock-write",
            LockKind::Mutex => "mutex",
            LockKind::RwsemRead => "rwsem-read",
            LockKind::RwsemWrite => "rwsem-write",
            LockKind::RtMutex => "rt-mutex",
            LockKind::RwlockRtRead => "rwlock-rt-read",
            LockKind::RwlockRtWrite => "rwlock-rt-write",
            LockKind::PercpuRwsemRead => "percpu-rwsem-read",
            LockKind::PercpuRwsemWrite => "percpu-rwsem-write",
            LockKind::RunQueue => "runqueue",
            LockKind::PickNext => "pick-next",
            LockKind::UserMutex => "pthread-mutex",
            LockKind::UserRwlockRead => "pthread-rwlock-read",
            LockKind::UserRwlockWrite => "pthread-rwlock-write",
            LockKind::UserSpin => "pthread-spin",
            LockKind::UserCond => "pthread-cond",
            LockKind::Futex => "futex",
            LockKind::LwlockExclusive => "lwlock:X",
            LockKind::LwlockShared => "lwlock:S",
            LockKind::LwlockWaitFree => "lwlock:W",
            LockKind::PgLock => "pg-lock",
            LockKind::PgDeadlock => "pg-deadlock",
            LockKind::JavaMonitor => "java-monitor",
            LockKind::UffdFault => "uffd-fault",
            LockKind::Unknown(_) => return None,
        })
    }
}

impl Serialize for LockKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// Index of the log2 slot for `ns`, the same function as `log2_slot()` in
/// the BPF programs: slot 0 is 0 ns, slot k counts [2^(k-1), 2^k).
pub fn log2_slot(ns: u64) -> usize {
    let s = (64 - ns.leading_zeros()) as usize;
    s.min(HIST_SLOTS - 1)
}

/// Lower and upper bound (exclusive) of a slot, in ns.
pub fn slot_bounds(slot: usize) -> (u64, u64) {
    match slot {
        0 => (0, 1),
        s => (1u64 << (s - 1), 1u64 << s),
    }
}

/// A log2 histogram of durations in nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log2Hist {
    pub slots: [u64; HIST_SLOTS],
}

impl Default for Log2Hist {
    fn default() -> Self {
        Log2Hist {
            slots: [0; HIST_SLOTS],
        }
    }
}

impl Log2Hist {
    pub fn record(&mut self, ns: u64) {
        self.slots[log2_slot(ns)] += 1;
    }

    pub fn merge(&mut self, other: &Log2Hist) {
        for (a, b) in self.slots.iter_mut().zip(other.slots.iter()) {
            *a += *b;
        }
    }

    pub fn count(&self) -> u64 {
        self.slots.iter().sum()
    }

    /// Estimates the `q` quantile (0.0..=1.0): finds the slot that holds the
    /// rank and interpolates linearly inside it, then clamps to the observed
    /// [min, max] so a single-slot histogram cannot invent values.
    pub fn quantile(&self, q: f64, min: u64, max: u64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (slot, &n) in self.slots.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if seen + n >= rank {
                let (lo, hi) = slot_bounds(slot);
                let lo = lo.max(min);
                let hi = if slot == HIST_SLOTS - 1 {
                    max
                } else {
                    hi.min(max)
                };
                let frac = (rank - seen) as f64 / n as f64;
                let v = lo as f64 + frac * (hi.saturating_sub(lo)) as f64;
                return (v as u64).clamp(min, max);
            }
            seen += n;
        }
        max
    }
}

/// Count, total, extremes and distribution of one kind of duration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub count: u64,
    pub total_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub hist: Log2Hist,
}

impl Stats {
    /// The stats of these durations, recorded in order.
    pub fn of(durations: &[u64]) -> Stats {
        let mut s = Stats::default();
        for &ns in durations {
            s.record(ns);
        }
        s
    }

    pub fn record(&mut self, ns: u64) {
        if self.count == 0 || ns < self.min_ns {
            self.min_ns = ns;
        }
        self.max_ns = self.max_ns.max(ns);
        self.count += 1;
        self.total_ns += ns;
        self.hist.record(ns);
    }

    pub fn merge(&mut self, other: &Stats) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 || other.min_ns < self.min_ns {
            self.min_ns = other.min_ns;
        }
        self.max_ns = self.max_ns.max(other.max_ns);
        self.count += other.count;
        self.total_ns += other.total_ns;
        self.hist.merge(&other.hist);
    }

    pub fn avg_ns(&self) -> u64 {
        self.total_ns.checked_div(self.count).unwrap_or(0)
    }

    pub fn p50(&self) -> u64 {
        self.hist.quantile(0.50, self.min_ns, self.max_ns)
    }

    pub fn p99(&self) -> u64 {
        self.hist.quantile(0.99, self.min_ns, self.max_ns)
    }

    pub fn summary(&self) -> StatsSummary {
        StatsSummary {
            total: self.total_ns,
            min: self.min_ns,
            max: self.max_ns,
            p50: self.p50(),
            p99: self.p99(),
        }
    }
}

impl Stats {
    /// What was added since `prev`, an earlier reading of the same
    /// counters (`report -i`): [`Stats::delta`]'s waits.
    pub fn since(&self, prev: &Stats) -> Stats {
        self.delta(Some(prev)).wait
    }

    /// What was added since `prev`, an earlier reading of the same counters
    /// (`report -i`, `top`, `serve`): None, or a counter that went
    /// backwards (it was reset), makes all of it new. Counts, totals and
    /// the histogram are exact. The interval's extremes are exact when it
    /// set a new one; otherwise they are bounded by its histogram's outer
    /// buckets and the all-time extremes.
    pub fn delta(&self, prev: Option<&Stats>) -> Delta {
        let prev = match prev {
            Some(p) if p.count > 0 && p.count <= self.count => p,
            _ => {
                return Delta {
                    wait: self.clone(),
                    max_exact: true,
                };
            }
        };
        let count = self.count - prev.count;
        if count == 0 {
            return Delta::default();
        }
        let mut hist = self.hist.clone();
        for (a, b) in hist.slots.iter_mut().zip(prev.hist.slots.iter()) {
            *a = a.saturating_sub(*b);
        }
        let lowest = hist.slots.iter().position(|&n| n > 0);
        let highest = hist.slots.iter().rposition(|&n| n > 0);
        let (max_ns, max_exact) = if self.max_ns > prev.max_ns {
            (self.max_ns, true)
        } else {
            let top = match highest {
                Some(s) if s < HIST_SLOTS - 1 => slot_bounds(s).1 - 1,
                _ => self.max_ns,
            };
            (top.min(self.max_ns), false)
        };
        let min_ns = if self.min_ns < prev.min_ns {
            self.min_ns
        } else {
            lowest
                .map(|s| slot_bounds(s).0)
                .unwrap_or(self.min_ns)
                .max(self.min_ns)
        };
        Delta {
            wait: Stats {
                count,
                total_ns: self.total_ns.saturating_sub(prev.total_ns),
                min_ns: min_ns.min(max_ns),
                max_ns,
                hist,
            },
            max_exact,
        }
    }
}

/// The waits of one interval: [`Stats::delta`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delta {
    pub wait: Stats,
    /// Whether `wait.max_ns` is the interval's true maximum (it set a new
    /// maximum since start). Otherwise it is the top of the highest log2
    /// bucket that grew: an upper bound.
    pub max_exact: bool,
}

impl Delta {
    /// Adds another interval's waits (e.g. another record of a row).
    pub fn merge(&mut self, o: &Delta) {
        if o.wait.count == 0 {
            return;
        }
        let exact = match o.wait.max_ns.cmp(&self.wait.max_ns) {
            std::cmp::Ordering::Greater => o.max_exact,
            std::cmp::Ordering::Equal => self.max_exact || o.max_exact,
            std::cmp::Ordering::Less => self.max_exact,
        };
        self.max_exact = if self.wait.count == 0 {
            o.max_exact
        } else {
            exact
        };
        self.wait.merge(&o.wait);
    }
}

/// The identity of a record across readings: all but its counters and the
/// names that may change while it lives (comm, cgroup, lock name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    pub source: &'static str,
    pub kind: LockKind,
    pub lock: u64,
    pub caller: Option<String>,
    pub pid: u32,
    pub tid: u32,
}

impl Record {
    /// A test record: kernel-contention mutex waits `waits` at `lock`
    /// from `caller`, by thread 100 of `w` in `/a`, nothing else seen;
    /// tests change the fields they are about.
    #[cfg(test)]
    pub fn sample(lock: u64, caller: &str, waits: &[u64]) -> Record {
        Record {
            source: "kernel-contention",
            kind: LockKind::Mutex,
            lock,
            caller: Some(caller.into()),
            pid: 100,
            tid: 100,
            comm: "w".into(),
            cgroup: Some("/a".into()),
            slept: waits.len() as u64,
            wait: Stats::of(waits),
            ..Default::default()
        }
    }

    /// The identity of a record across readings.
    pub fn key(&self) -> RecordKey {
        RecordKey {
            source: self.source,
            kind: self.kind,
            lock: self.lock,
            caller: self.caller.clone(),
            pid: self.pid,
            tid: self.tid,
        }
    }

    /// Adds the counters of `r`, a record of the same identity (another
    /// kernel entry that names it: e.g. two stacks with one caller).
    pub fn merge(&mut self, r: &Record) {
        self.add_counts(r);
        self.stacks.extend(r.stacks.iter().cloned());
    }

    /// Adds `r`'s counts, waits, holds and wait split to this record's;
    /// its stacks are left out.
    pub fn add_counts(&mut self, r: &Record) {
        self.aborted += r.aborted;
        self.spun += r.spun;
        self.slept += r.slept;
        self.failed += r.failed;
        self.partial += r.partial;
        self.wait.merge(&r.wait);
        if let Some(h) = &r.hold {
            self.hold.get_or_insert_with(Stats::default).merge(h);
        }
        if let Some(n) = r.acquired {
            *self.acquired.get_or_insert(0) += n;
        }
        if let Some(sp) = &r.split {
            self.split.get_or_insert_with(Default::default).add(sp);
        }
    }

    /// What happened since `prev`, an earlier reading of the same record
    /// (None when nothing did). Stacks are not carried into intervals.
    pub fn since(&self, prev: Option<&Record>) -> Option<Record> {
        let Some(p) = prev else {
            return Some(self.clone());
        };
        let wait = self.wait.since(&p.wait);
        let hold = match (&self.hold, &p.hold) {
            (Some(h), Some(ph)) => Some(h.since(ph)),
            (h, _) => h.clone(),
        };
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let r = Record {
            aborted: d(self.aborted, p.aborted),
            spun: d(self.spun, p.spun),
            slept: d(self.slept, p.slept),
            failed: d(self.failed, p.failed),
            partial: d(self.partial, p.partial),
            acquired: match (self.acquired, p.acquired) {
                (Some(a), Some(b)) => Some(d(a, b)),
                (a, _) => a,
            },
            split: match (self.split, p.split) {
                (Some(a), Some(b)) => Some(WaitSplit {
                    oncpu: d(a.oncpu, b.oncpu),
                    runnable: d(a.runnable, b.runnable),
                    asleep: d(a.asleep, b.asleep),
                }),
                (a, _) => a,
            },
            stacks: Vec::new(),
            wait,
            hold,
            ..self.clone()
        };
        let idle = r.wait.count == 0
            && r.acquired.unwrap_or(0) == 0
            && r.hold.as_ref().is_none_or(|h| h.count == 0)
            && r.failed == 0
            && r.partial == 0
            && r.aborted == 0;
        (!idle).then_some(r)
    }
}

/// `records` by identity, first seen first: records of one identity
/// merged into one ([`Record::merge`]), borrowed where there is one.
pub fn by_key(records: &[Record]) -> Vec<(RecordKey, std::borrow::Cow<'_, Record>)> {
    use std::borrow::Cow;
    let mut at: std::collections::HashMap<RecordKey, usize> = std::collections::HashMap::new();
    let mut out: Vec<(RecordKey, Cow<'_, Record>)> = Vec::with_capacity(records.len());
    for r in records {
        let k = r.key();
        match at.get(&k) {
            Some(&i) => out[i].1.to_mut().merge(r),
            None => {
                at.insert(k.clone(), out.len());
                out.push((k, Cow::Borrowed(r)));
            }
        }
    }
    out
}

/// The records of `now` minus those of `prev` (`report -i`): one interval.
pub fn interval(now: &[Record], prev: &[Record]) -> Vec<Record> {
    let index: std::collections::HashMap<RecordKey, std::borrow::Cow<'_, Record>> =
        by_key(prev).into_iter().collect();
    by_key(now)
        .iter()
        .filter_map(|(k, r)| r.since(index.get(k).map(|p| &**p)))
        .collect()
}

/// The JSON shape of a [`Stats`]: `{"total","min","max","p50","p99"}` in ns.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct StatsSummary {
    pub total: u64,
    pub min: u64,
    pub max: u64,
    pub p50: u64,
    pub p99: u64,
}

/// One aggregated record as a source delivers it: finest granularity, one
/// per (source, lock, caller, thread, kind).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub source: &'static str,
    pub kind: LockKind,
    pub lock: u64,
    pub lock_name: Option<String>,
    pub caller: Option<String>,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    /// The memory cgroup the lock is charged to, where the source knows it
    /// (mmap-lock: the mm's memcg, a path in the memory controller's
    /// hierarchy, which is cgroup v1 on a hybrid host).
    pub memcg: Option<String>,
    pub aborted: u64,
    pub spun: u64,
    pub slept: u64,
    /// The contended waits (blocked or spun): count, total, extremes,
    /// histogram. For sources that see every acquisition (`acquired` is
    /// Some) an uncontended acquisition is never in it.
    pub wait: Stats,
    pub hold: Option<Stats>,
    /// Every acquisition, contended or not, for sources that see them all
    /// (user-locks, mmap-lock); None for sources that see only contention.
    pub acquired: Option<u64>,
    /// Failed acquisitions (a trylock that found the lock taken, a timed
    /// lock that timed out): counted here, never as acquisitions.
    pub failed: u64,
    /// Operations whose start was not seen (tracing began mid-wait or
    /// mid-hold): counted, never timed.
    pub partial: u64,
    /// Where the wait time went, where the source measures it.
    pub split: Option<WaitSplit>,
    /// Full stacks of waits (`--stacks`), lock implementation trimmed.
    pub stacks: Vec<StackSample>,
}

/// Waits (and, with `--hold-stacks`, holds) that share one kernel + user
/// stack. Frames innermost first; the first kernel frame is the lock's
/// caller (tracing and lock frames trimmed). `count`/`total_ns`/`max_ns`
/// are waits that ended there; `hold_*` holds whose acquisition was there
/// (0 when hold stacks were not taken).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StackSample {
    pub kernel: Vec<String>,
    pub user: Vec<String>,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub hold_count: u64,
    pub hold_total_ns: u64,
    pub hold_max_ns: u64,
}

/// Merges samples with identical frames; largest total first.
pub fn merge_stacks(all: impl IntoIterator<Item = StackSample>) -> Vec<StackSample> {
    let mut map: std::collections::HashMap<(Vec<String>, Vec<String>), StackSample> =
        std::collections::HashMap::new();
    for s in all {
        let e = map
            .entry((s.kernel.clone(), s.user.clone()))
            .or_insert_with(|| StackSample {
                kernel: s.kernel.clone(),
                user: s.user.clone(),
                ..Default::default()
            });
        e.count += s.count;
        e.total_ns += s.total_ns;
        e.max_ns = e.max_ns.max(s.max_ns);
        e.hold_count += s.hold_count;
        e.hold_total_ns += s.hold_total_ns;
        e.hold_max_ns = e.hold_max_ns.max(s.hold_max_ns);
    }
    let mut v: Vec<StackSample> = map.into_values().collect();
    v.sort_by(|a, b| {
        b.total_ns
            .cmp(&a.total_ns)
            .then(b.hold_total_ns.cmp(&a.hold_total_ns))
            .then(a.kernel.cmp(&b.kernel))
            .then(a.user.cmp(&b.user))
    });
    v
}

/// Of the total wait: time on CPU (spinning), runnable but not running
/// (waiting for a CPU), and asleep (blocked). Totals in ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WaitSplit {
    pub oncpu: u64,
    pub runnable: u64,
    pub asleep: u64,
}

impl WaitSplit {
    /// From a total wait, its off-CPU part and the runnable part of that.
    pub fn from_offcpu(total: u64, offcpu: u64, runnable: u64) -> WaitSplit {
        let offcpu = offcpu.min(total);
        let runnable = runnable.min(offcpu);
        WaitSplit {
            oncpu: total - offcpu,
            runnable,
            asleep: offcpu - runnable,
        }
    }

    pub fn add(&mut self, o: &WaitSplit) {
        self.oncpu += o.oncpu;
        self.runnable += o.runnable;
        self.asleep += o.asleep;
    }
}

/// One completed (or failed, or partial) lock operation, as the stream
/// mode delivers it. Timestamps are CLOCK_MONOTONIC ns.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Event {
    pub source: &'static str,
    pub kind: LockKind,
    #[serde(serialize_with = "hex")]
    pub lock: u64,
    pub lock_name: Option<String>,
    pub caller: Option<String>,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    /// When the thread asked for the lock (0 when not seen: `partial`).
    pub begin_ns: u64,
    /// When the wait ended: acquired, failed or aborted.
    pub end_ns: u64,
    /// When the lock was released, for sources that see holds.
    pub released_ns: Option<u64>,
    pub wait_ns: u64,
    pub hold_ns: Option<u64>,
    pub aborted: bool,
    pub failed: bool,
    pub ret: i32,
    pub spun: bool,
    pub slept: bool,
    pub partial: bool,
    /// Who held the lock when the wait began, where the source knows.
    pub holder_tid: Option<u32>,
    /// Where this wait went, where the source measures it.
    pub split: Option<WaitSplit>,
}

/// `new` for what a decoder fills ([`Record`], [`Event`]): `source`'s
/// `kind` at `lock` by thread `tid` of `pid` named `comm`, nothing else
/// known or counted; the decoder sets the rest.
macro_rules! decoded_new {
    ($($t:ident),+) => {
        $(impl $t {
            pub fn new(
                source: &'static str,
                kind: LockKind,
                lock: u64,
                pid: u32,
                tid: u32,
                comm: String,
            ) -> $t {
                $t {
                    source,
                    kind,
                    lock,
                    pid,
                    tid,
                    comm,
                    ..Default::default()
                }
            }
        })+
    };
}
decoded_new!(Record, Event);

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("0x{v:x}"))
}

/// Who held a lock while others waited for it: waits that began while
/// `holder_tid` held `lock` (the "top holders" of a report).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct HolderRow {
    #[serde(deserialize_with = "static_str")]
    pub source: StaticStr,
    pub kind: LockKind,
    /// Lock address as a hex string.
    pub lock: String,
    pub pid: u32,
    pub holder_tid: u32,
    pub holder_comm: Option<String>,
    /// Waits that began while the holder held the lock.
    pub waits: u64,
    /// Their total wait.
    pub wait_ns: u64,
}

/// How `report` groups records into rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// One row per lock (address and kind)
    Lock,
    /// One row per calling function and lock kind
    Caller,
    /// One row per thread
    Task,
    /// One row per cgroup
    Cgroup,
}

/// One row of a report, and its JSON form (the documented contract).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Row {
    #[serde(deserialize_with = "static_str")]
    pub source: StaticStr,
    pub kind: Option<LockKind>,
    /// Lock address as a hex string; null when rows span several locks.
    pub lock: Option<String>,
    pub lock_name: Option<String>,
    pub caller: Option<String>,
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub comm: Option<String>,
    pub cgroup: Option<String>,
    /// The memory cgroup of the row's records where known and shared
    /// (mmap-lock); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memcg: Option<String>,
    /// Contended waits (those in `wait_ns`).
    pub count: u64,
    /// Every acquisition, contended or not (`count` is of these), for
    /// sources that see them all (user-locks, mmap-lock); null otherwise.
    pub acquired: Option<u64>,
    pub aborted: u64,
    pub failed: u64,
    pub partial: u64,
    pub spun: u64,
    pub slept: u64,
    pub wait_ns: StatsSummary,
    pub hold_ns: Option<StatsSummary>,
    /// Completed holds timed in `hold_ns` (null where holds are not seen).
    pub holds: Option<u64>,
    /// Of `wait_ns.total`: on CPU, runnable, asleep (null if not measured).
    pub wait_split: Option<WaitSplit>,
    /// Full stacks of this row's waits (`--stacks`), largest total first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub stacks: Vec<StackSample>,
    /// log2 histogram of waits: element k counts waits in [2^(k-1), 2^k) ns
    /// (element 0: 0 ns); trailing empty slots are omitted.
    pub wait_hist: Vec<u64>,
    #[serde(skip)]
    pub wait: Stats,
}

/// A field that is kept while all merged records agree, else dropped.
fn agree<T: PartialEq + Clone>(acc: &mut Option<Option<T>>, v: Option<T>) {
    match acc {
        None => *acc = Some(v),
        Some(cur) if *cur != v => *acc = Some(None),
        Some(_) => {}
    }
}

/// A cgroup as a by-cgroup row names it: the task's cgroup v2 path, or
/// `memcg PATH (cgroup PATH)` when a memory cgroup is known and is another
/// path (memcg first: on a hybrid host it is what tells containers apart).
pub fn cgroup_label(cgroup: Option<&str>, memcg: Option<&str>) -> String {
    let c = cgroup.unwrap_or_default();
    match memcg {
        Some(m) if m != c => format!("memcg {m} (cgroup {c})"),
        _ => c.to_string(),
    }
}

/// The row of `by` that `r` belongs to: (source, key). [`group`] makes
/// one row of the records of one key.
pub fn row_key(r: &Record, by: GroupBy) -> (&'static str, String) {
    let key = match by {
        GroupBy::Lock => format!("{:x}/{}", r.lock, r.kind.name()),
        GroupBy::Caller => format!("{}/{}", r.caller.as_deref().unwrap_or("?"), r.kind.name()),
        GroupBy::Task => format!("{}/{}", r.pid, r.tid),
        // a memory cgroup that is not the task's cgroup (a hybrid
        // host's v1 memory hierarchy) tells containers apart too
        GroupBy::Cgroup => cgroup_label(r.cgroup.as_deref(), r.memcg.as_deref()),
    };
    (r.source, key)
}

/// Groups records into report rows, sorted by total wait (largest first).
/// A field shared by every record of a row is kept; otherwise it is null
/// (e.g. `tid` in a by-lock row of several threads). For by-lock rows the
/// caller is the one that waited longest for that lock.
pub fn group(records: &[Record], by: GroupBy) -> Vec<Row> {
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Acc {
        source: &'static str,
        kind: Option<Option<LockKind>>,
        lock: Option<Option<u64>>,
        lock_name: Option<Option<String>>,
        caller: Option<Option<String>>,
        callers: BTreeMap<String, u64>,
        pid: Option<Option<u32>>,
        tid: Option<Option<u32>>,
        comm: Option<Option<String>>,
        cgroup: Option<Option<String>>,
        memcg: Option<Option<String>>,
        /// The counters of the row's records, added up ([`Record::merge`]).
        sum: Record,
    }

    let mut groups: BTreeMap<(&'static str, String), Acc> = BTreeMap::new();
    for r in records {
        let a = groups.entry(row_key(r, by)).or_default();
        a.source = r.source;
        agree(&mut a.kind, Some(r.kind));
        agree(&mut a.lock, Some(r.lock));
        agree(&mut a.lock_name, r.lock_name.clone());
        agree(&mut a.caller, r.caller.clone());
        if let Some(c) = &r.caller {
            *a.callers.entry(c.clone()).or_default() += r.wait.total_ns;
        }
        agree(&mut a.pid, Some(r.pid));
        agree(&mut a.tid, Some(r.tid));
        agree(&mut a.comm, Some(r.comm.clone()));
        agree(&mut a.cgroup, r.cgroup.clone());
        agree(&mut a.memcg, r.memcg.clone());
        a.sum.merge(r);
    }

    let mut rows: Vec<Row> = groups
        .into_values()
        .map(|a| {
            let s = a.sum;
            let mut caller = a.caller.flatten();
            if caller.is_none() && by == GroupBy::Lock {
                caller = a
                    .callers
                    .iter()
                    .max_by_key(|(_, w)| **w)
                    .map(|(c, _)| c.clone());
            }
            Row {
                source: a.source,
                kind: a.kind.flatten(),
                lock: a.lock.flatten().map(|l| format!("0x{l:x}")),
                lock_name: a.lock_name.flatten(),
                caller,
                pid: a.pid.flatten(),
                tid: a.tid.flatten(),
                comm: a.comm.flatten(),
                cgroup: a.cgroup.flatten(),
                memcg: a.memcg.flatten(),
                count: s.wait.count,
                acquired: s.acquired,
                aborted: s.aborted,
                failed: s.failed,
                partial: s.partial,
                spun: s.spun,
                slept: s.slept,
                wait_ns: s.wait.summary(),
                hold_ns: s.hold.as_ref().map(Stats::summary),
                holds: s.hold.as_ref().map(|h| h.count),
                wait_split: s.split,
                stacks: merge_stacks(s.stacks),
                wait_hist: {
                    let n = HIST_SLOTS
                        - s.wait
                            .hist
                            .slots
                            .iter()
                            .rev()
                            .take_while(|&&c| c == 0)
                            .count();
                    s.wait.hist.slots[..n].to_vec()
                },
                wait: s.wait,
            }
        })
        .collect();
    rows.sort_by(|x, y| {
        y.wait
            .total_ns
            .cmp(&x.wait.total_ns)
            .then(y.count.cmp(&x.count))
    });
    rows
}

/// A stable name read back from JSON (a source's name, a grouping) as the
/// `&'static str` the types that write it hold: each distinct string is
/// leaked once and shared by every later read of it, so memory is bounded
/// by the number of distinct names read, not by the number of reads.
pub fn intern(s: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(&n) = names.get(s) {
        return n;
    }
    let n: &'static str = Box::leak(s.to_owned().into_boxed_str());
    names.insert(n);
    n
}

/// `&'static str`, for the name fields of the JSON types: serde borrows a
/// field spelt `&str` from its input, which a `'static` one read from a
/// `String` cannot be; spelt this way, the field is read by
/// [`static_str`] instead.
pub type StaticStr = &'static str;

/// `deserialize_with` for the `&'static str` fields of the JSON types:
/// the same string, [`intern`]ed.
pub fn static_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    Ok(intern(&s))
}

impl LockKind {
    /// Every kind but `Unknown`, in declaration order.
    pub const KNOWN: [LockKind; 26] = [
        LockKind::Spinlock,
        LockKind::RwlockRead,
        LockKind::RwlockWrite,
        LockKind::Mutex,
        LockKind::RwsemRead,
        LockKind::RwsemWrite,
        LockKind::RtMutex,
        LockKind::RwlockRtRead,
        LockKind::RwlockRtWrite,
        LockKind::PercpuRwsemRead,
        LockKind::PercpuRwsemWrite,
        LockKind::RunQueue,
        LockKind::PickNext,
        LockKind::UserMutex,
        LockKind::UserRwlockRead,
        LockKind::UserRwlockWrite,
        LockKind::UserSpin,
        LockKind::UserCond,
        LockKind::Futex,
        LockKind::LwlockExclusive,
        LockKind::LwlockShared,
        LockKind::LwlockWaitFree,
        LockKind::PgLock,
        LockKind::PgDeadlock,
        LockKind::JavaMonitor,
        LockKind::UffdFault,
    ];

    /// The kind whose [`LockKind::name`] is `name`: the inverse of it.
    pub fn from_name(name: &str) -> Option<LockKind> {
        if let Some(k) = LockKind::KNOWN
            .iter()
            .find(|k| k.known_name() == Some(name))
        {
            return Some(*k);
        }
        let hex = name.strip_prefix("unknown-0x")?;
        u32::from_str_radix(hex, 16).ok().map(LockKind::Unknown)
    }
}

impl<'de> serde::Deserialize<'de> for LockKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        LockKind::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown lock kind {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_documented_flag_combination() {
        use lcb::*;
        let cases = [
            (SPIN, "spinlock"),
            (SPIN | READ, "rwlock-read"),
            (SPIN | WRITE, "rwlock-write"),
            (MUTEX, "mutex"),
            (MUTEX | SPIN, "mutex"),
            (READ, "rwsem-read"),
            (WRITE, "rwsem-write"),
            (RT, "rt-mutex"),
            (RT | READ, "rwlock-rt-read"),
            (RT | WRITE, "rwlock-rt-write"),
            (PERCPU | READ, "percpu-rwsem-read"),
            (PERCPU | WRITE, "percpu-rwsem-write"),
            (1 << 9, "unknown-0x200"),
        ];
        for (flags, name) in cases {
            assert_eq!(
                LockKind::from_contention_flags(flags).name(),
                name,
                "{flags:#x}"
            );
        }
    }

    #[test]
    fn log2_slots_match_the_bpf_definition() {
        assert_eq!(log2_slot(0), 0);
        assert_eq!(log2_slot(1), 1);
        assert_eq!(log2_slot(2), 2);
        assert_eq!(log2_slot(3), 2);
        assert_eq!(log2_slot(4), 3);
        assert_eq!(log2_slot(1023), 10);
        assert_eq!(log2_slot(1024), 11);
        assert_eq!(log2_slot(u64::MAX), HIST_SLOTS - 1);
        for slot in 1..HIST_SLOTS - 1 {
            let (lo, hi) = slot_bounds(slot);
            assert_eq!(log2_slot(lo), slot);
            assert_eq!(log2_slot(hi - 1), slot);
            assert_eq!(log2_slot(hi), slot + 1);
        }
    }

    #[test]
    fn histogram_sum_equals_count_and_quantiles_are_bounded() {
        let mut s = Stats::default();
        for ns in 1..=1000u64 {
            s.record(ns * 1000);
        }
        assert_eq!(s.hist.count(), s.count);
        assert_eq!(s.count, 1000);
        assert_eq!(s.min_ns, 1000);
        assert_eq!(s.max_ns, 1_000_000);
        let p50 = s.p50();
        let p99 = s.p99();
        // log2 buckets: the estimate is within the bucket of the true value
        assert_eq!(log2_slot(p50), log2_slot(500_000), "p50={p50}");
        assert_eq!(log2_slot(p99), log2_slot(990_000), "p99={p99}");
        assert!(p50 <= p99 && p99 <= s.max_ns);
    }

    #[test]
    fn quantile_of_a_single_value_is_that_value() {
        let mut s = Stats::default();
        for _ in 0..10 {
            s.record(3_000_000);
        }
        assert_eq!(s.p50(), 3_000_000);
        assert_eq!(s.p99(), 3_000_000);
        assert_eq!(Stats::default().p99(), 0);
    }

    #[test]
    fn an_interval_is_the_difference_of_two_readings() {
        let mut a = Stats::default();
        for v in [1_000, 2_000, 50_000] {
            a.record(v);
        }
        let mut b = a.clone();
        for v in [3_000, 4_000] {
            b.record(v);
        }
        let d = b.since(&a);
        assert_eq!((d.count, d.total_ns), (2, 7_000));
        assert_eq!(d.hist.count(), 2);
        // no new extreme: bounded by the interval's buckets
        assert_eq!((d.min_ns, d.max_ns), (2_048, 4_095));
        let mut c = b.clone();
        c.record(90_000);
        let d = c.since(&b);
        assert_eq!((d.count, d.min_ns, d.max_ns), (1, 65_536, 90_000));
        assert_eq!(b.since(&b), Stats::default());

        let r1 = rec(0x10, "f", 7, &[5, 6]);
        let r2 = rec(0x10, "f", 7, &[5, 6, 100]);
        let other = rec(0x20, "g", 8, &[1]);
        let iv = interval(&[r2.clone(), other.clone()], &[r1.clone(), other.clone()]);
        assert_eq!(iv.len(), 1, "an unchanged record is left out");
        assert_eq!((iv[0].wait.count, iv[0].wait.total_ns), (1, 100));
        let iv = interval(std::slice::from_ref(&r2), &[]);
        assert_eq!(iv[0].wait.count, 3, "a new record counts whole");
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn delta_subtracts_counts_totals_and_histograms() {
        let mut before = Stats::default();
        for _ in 0..10 {
            before.record(50 * MS);
        }
        let mut after = before.clone();
        for _ in 0..5 {
            after.record(3 * MS);
        }
        let d = after.delta(Some(&before));
        assert_eq!(d.wait.count, 5);
        assert_eq!(d.wait.total_ns, 15 * MS);
        assert_eq!(d.wait.hist.count(), 5, "histogram delta sums to the count");
        assert!(!d.max_exact, "no new maximum: bounded by the bucket");
        // 3 ms lies in [2^21, 2^22) ns: the bound is that bucket's top,
        // far below the 50 ms maximum since start
        assert_eq!(d.wait.max_ns, (1 << 22) - 1);
        assert_eq!(d.wait.min_ns, 3 * MS, "a new minimum is exact");
        assert!(d.wait.p99() <= d.wait.max_ns);
        assert!(d.wait.p99() >= 3 * MS && d.wait.p99() < 1 << 22);
        assert_eq!(d.wait.avg_ns(), 3 * MS);

        let mut longer = after.clone();
        longer.record(80 * MS);
        let d = longer.delta(Some(&after));
        assert_eq!(
            (d.wait.count, d.wait.max_ns, d.max_exact),
            (1, 80 * MS, true)
        );
        assert_eq!(after.delta(Some(&after)).wait.count, 0);
        let first = before.delta(None);
        assert_eq!(first.wait, before, "first snapshot: all of it is new");
        assert_eq!(
            before.delta(Some(&after)).wait,
            before,
            "a reset counter starts over"
        );
    }

    #[test]
    fn merged_delta_max_is_exact_only_when_the_largest_is() {
        let a = Delta {
            wait: Stats {
                count: 1,
                total_ns: 10,
                min_ns: 10,
                max_ns: 10,
                ..Default::default()
            },
            max_exact: true,
        };
        let b = Delta {
            wait: Stats {
                count: 1,
                total_ns: 15,
                min_ns: 15,
                max_ns: 15,
                ..Default::default()
            },
            max_exact: false,
        };
        let mut m = Delta::default();
        m.merge(&a);
        assert!(m.max_exact);
        m.merge(&b);
        assert_eq!((m.wait.count, m.wait.max_ns, m.max_exact), (2, 15, false));
    }

    #[test]
    fn group_makes_one_row_per_row_key() {
        let recs = vec![
            rec(0xa, "anon_pipe_write", 1, &[1]),
            rec(0xa, "anon_pipe_read", 2, &[2]),
            rec(0xb, "anon_pipe_write", 1, &[3]),
            Record {
                caller: None,
                cgroup: None,
                ..rec(0xc, "", 3, &[4])
            },
        ];
        for by in [
            GroupBy::Lock,
            GroupBy::Caller,
            GroupBy::Task,
            GroupBy::Cgroup,
        ] {
            let keys: std::collections::BTreeSet<_> = recs.iter().map(|r| row_key(r, by)).collect();
            let rows = group(&recs, by);
            assert_eq!(rows.len(), keys.len(), "{by:?}");
            for k in &keys {
                let of_key: Vec<Record> = recs
                    .iter()
                    .filter(|r| &row_key(r, by) == k)
                    .cloned()
                    .collect();
                let one = group(&of_key, by);
                assert_eq!(one.len(), 1, "{by:?} {k:?}");
                assert!(rows.contains(&one[0]), "{by:?} {k:?}");
            }
        }
    }

    #[test]
    fn records_of_one_identity_merge_and_their_interval_subtracts_once() {
        // two kernel entries (two stacks) that name one record
        let a = rec(0x10, "f", 7, &[5, 6]);
        let b = Record {
            comm: "renamed".into(),
            ..rec(0x10, "f", 7, &[100])
        };
        let other = rec(0x10, "g", 7, &[1]);
        let entries = [a.clone(), other.clone(), b.clone()];
        let merged = by_key(&entries);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].0, a.key());
        assert_eq!(merged[0].1.wait.count, 3);
        assert_eq!(merged[0].1.comm, "w", "the first entry's names");
        assert_eq!(merged[1].1.as_ref(), &other);
        let later = Record {
            comm: "renamed".into(),
            ..rec(0x10, "f", 7, &[100, 200])
        };
        let iv = interval(&[a.clone(), later, other.clone()], &[a, other, b]);
        assert_eq!(iv.len(), 1);
        assert_eq!((iv[0].wait.count, iv[0].wait.total_ns), (1, 200));
    }

    #[test]
    fn merge_keeps_min_max_and_counts() {
        let mut a = Stats::default();
        a.record(10);
        a.record(20);
        let mut b = Stats::default();
        b.record(5);
        b.record(40);
        let mut m = Stats::default();
        m.merge(&a);
        m.merge(&b);
        assert_eq!((m.count, m.total_ns, m.min_ns, m.max_ns), (4, 75, 5, 40));
        assert_eq!(m.hist.count(), 4);
    }

    fn rec(lock: u64, caller: &str, tid: u32, waits: &[u64]) -> Record {
        Record {
            tid,
            split: Some(WaitSplit::from_offcpu(
                waits.iter().sum(),
                waits.iter().sum::<u64>() / 2,
                0,
            )),
            stacks: vec![StackSample {
                kernel: vec![caller.into(), "vfs_write".into()],
                user: vec!["write".into(), "main".into()],
                count: waits.len() as u64,
                total_ns: waits.iter().sum(),
                max_ns: waits.iter().copied().max().unwrap_or(0),
                ..Default::default()
            }],
            ..Record::sample(lock, caller, waits)
        }
    }

    #[test]
    fn group_by_lock_merges_threads_and_picks_heaviest_caller() {
        let recs = vec![
            rec(0x10, "pipe_write", 101, &[100, 200]),
            rec(0x10, "pipe_read", 102, &[50]),
            rec(0x20, "pipe_write", 101, &[1000]),
        ];
        let rows = group(&recs, GroupBy::Lock);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].lock.as_deref(), Some("0x20"));
        assert_eq!(rows[1].lock.as_deref(), Some("0x10"));
        assert_eq!(rows[1].count, 3);
        assert_eq!(rows[1].wait_ns.total, 350);
        assert_eq!(rows[1].tid, None, "two threads: tid aggregated away");
        assert_eq!(rows[1].pid, Some(100));
        assert_eq!(rows[1].caller.as_deref(), Some("pipe_write"));
        assert_eq!(rows[1].slept, 3);
        assert_eq!(rows[1].stacks.len(), 2, "two callers, two stacks");
        assert_eq!(rows[1].stacks[0].total_ns, 300, "largest first");
        assert_eq!(rows[1].stacks.iter().map(|s| s.count).sum::<u64>(), 3);
        let sp = rows[1].wait_split.expect("split merged");
        assert_eq!(
            sp.oncpu + sp.runnable + sp.asleep,
            350,
            "split sums to the wait"
        );
        assert_eq!(rows[1].wait_hist.iter().sum::<u64>(), 3);
        assert_eq!(rows[1].wait_hist.len(), log2_slot(200) + 1);
    }

    #[test]
    fn by_cgroup_tells_memory_cgroups_apart_when_they_are_not_the_cgroup() {
        let mut a = rec(0x10, "vm_mmap_pgoff", 101, &[100]);
        a.memcg = Some("/docker/aaa".into());
        let mut b = rec(0x20, "vm_mmap_pgoff", 102, &[300]);
        b.memcg = Some("/docker/bbb".into());
        let mut same = rec(0x30, "vm_mmap_pgoff", 103, &[50]);
        same.memcg = Some("/a".into()); // the task's own cgroup: no suffix
        let rows = group(
            &[a.clone(), b, same, rec(0x40, "x", 104, &[7])],
            GroupBy::Cgroup,
        );
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0].memcg.as_deref(), Some("/docker/bbb"));
        assert_eq!(rows[0].cgroup.as_deref(), Some("/a"), "cgroup stays v2");
        assert_eq!(rows[1].memcg.as_deref(), Some("/docker/aaa"));
        assert_eq!(rows[2].count, 2, "same memcg as cgroup, and unknown");
        assert_eq!(rows[2].memcg, None, "disagreeing memcgs are dropped");
        assert_eq!(
            cgroup_label(Some("/a"), Some("/docker/aaa")),
            "memcg /docker/aaa (cgroup /a)"
        );
        assert_eq!(cgroup_label(Some("/a"), Some("/a")), "/a");
        let json = serde_json::to_value(&group(&[a], GroupBy::Lock)[0]).expect("json");
        assert_eq!(json["memcg"], "/docker/aaa");
        let plain =
            serde_json::to_value(&group(&[rec(1, "x", 1, &[1])], GroupBy::Lock)[0]).expect("json");
        assert!(plain.get("memcg").is_none(), "absent where not known");
    }

    #[test]
    fn acquired_adds_up_where_known_and_stays_null_elsewhere() {
        // user-locks-like records: 10 acquisitions of which 2 contended,
        // and 5 of which 1
        let mut a = rec(0x10, "f", 1, &[7_000, 9_000]);
        a.acquired = Some(10);
        let mut b = rec(0x10, "g", 2, &[4_000]);
        b.acquired = Some(5);
        let rows = group(&[a.clone(), b.clone()], GroupBy::Lock);
        assert_eq!((rows[0].count, rows[0].acquired), (3, Some(15)));
        // a contention source's record has none: the merge keeps the sum
        let c = rec(0x10, "h", 3, &[1_000]);
        let rows = group(&[a.clone(), c.clone()], GroupBy::Lock);
        assert_eq!(rows[0].acquired, Some(10));
        let rows = group(std::slice::from_ref(&c), GroupBy::Lock);
        assert_eq!(rows[0].acquired, None);
        let json = serde_json::to_value(&rows[0]).expect("json");
        assert!(json["acquired"].is_null(), "{json}");
        // intervals: the difference; uncontended acquisitions alone are
        // activity too
        let mut later = a.clone();
        later.acquired = Some(14);
        let iv = later.since(Some(&a)).expect("4 acquisitions happened");
        assert_eq!((iv.wait.count, iv.acquired), (0, Some(4)));
        let same = a.clone();
        assert!(same.since(Some(&a)).is_none(), "nothing happened");
    }

    #[test]
    fn wait_split_never_exceeds_the_wait() {
        assert_eq!(
            WaitSplit::from_offcpu(100, 70, 20),
            WaitSplit {
                oncpu: 30,
                runnable: 20,
                asleep: 50
            }
        );
        assert_eq!(
            WaitSplit::from_offcpu(100, 150, 200),
            WaitSplit {
                oncpu: 0,
                runnable: 100,
                asleep: 0
            }
        );
    }

    #[test]
    fn group_by_task_and_caller() {
        let recs = vec![
            rec(0x10, "pipe_write", 101, &[100]),
            rec(0x20, "pipe_write", 101, &[100]),
            rec(0x10, "pipe_read", 102, &[1]),
        ];
        let by_task = group(&recs, GroupBy::Task);
        assert_eq!(by_task.len(), 2);
        assert_eq!(by_task[0].tid, Some(101));
        assert_eq!(by_task[0].lock, None);
        let by_caller = group(&recs, GroupBy::Caller);
        assert_eq!(by_caller[0].caller.as_deref(), Some("pipe_write"));
        assert_eq!(by_caller[0].count, 2);
        let by_cg = group(&recs, GroupBy::Cgroup);
        assert_eq!(by_cg.len(), 1);
        assert_eq!(by_cg[0].cgroup.as_deref(), Some("/a"));
        assert_eq!(by_cg[0].count, 3);
    }
}

/// The JSON types read back what they write (the report's rows and holders;
/// `output` checks the whole report and the trace lines).
#[cfg(test)]
mod json_tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_name() {
        let mut all = LockKind::KNOWN.to_vec();
        all.extend([LockKind::Unknown(0), LockKind::Unknown(0x1f0)]);
        for k in all {
            let json = serde_json::to_string(&k).expect("write");
            let back: LockKind = serde_json::from_str(&json).expect("read");
            assert_eq!(back, k, "{json}");
        }
        // KNOWN is every kind: a kind added to the enum but not to it would
        // not read back (its name would be unknown)
        for k in LockKind::KNOWN {
            assert!(k.known_name().is_some());
        }
        assert!(serde_json::from_str::<LockKind>("\"no-such-kind\"").is_err());
        assert!(serde_json::from_str::<LockKind>("\"unknown-0xzz\"").is_err());
    }

    #[test]
    fn interned_names_are_shared() {
        let a = intern(&String::from("kernel-contention"));
        let b = intern(&String::from("kernel-contention"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(a, "kernel-contention");
    }
}
