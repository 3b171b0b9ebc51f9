//! What the collector thread hands to the HTTP side: a plain-data picture
//! of the sources' cumulative in-kernel aggregation at one instant, folded
//! to a bounded number of metric series, plus the dashboard's views of it.
//! Pure: nothing here touches libbpf, so it is tested without root.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::deadlock::Deadlock;
use crate::model::{GroupBy, Record, Row, Stats, StatsSummary, group};
use crate::output::SourceStatus;
use crate::session::SourceReading;
use crate::sources::ProgStats;

/// Label value of every overflow series (and of folded processes).
pub const OTHER: &str = "other";

/// The labels of one lock series. `pid`/`comm` only with `--per-process`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub source: &'static str,
    pub kind: String,
    /// The lock's name where known, else its address (`0x…`).
    pub lock: String,
    /// Empty when no caller is known (`--caller none`).
    pub caller: String,
    /// Empty when the cgroup is unknown.
    pub cgroup: String,
    pub process: Option<(String, String)>,
}

impl SeriesKey {
    /// The overflow series of a source: everything folded away by the cap.
    pub fn overflow(source: &'static str, per_process: bool) -> SeriesKey {
        SeriesKey {
            source,
            kind: OTHER.into(),
            lock: OTHER.into(),
            caller: OTHER.into(),
            cgroup: OTHER.into(),
            process: per_process.then(|| (OTHER.into(), OTHER.into())),
        }
    }
}

/// One exported lock series: the sum of the records folded into it (see
/// [`Record::add_counts`]; its identity is the [`SeriesKey`], the
/// record's own is left unset).
pub type Series = Record;

/// Caps on the number of series, decided once per label set and kept for
/// the life of the process, so that every exported counter only grows.
///
/// Records are cumulative (in-kernel aggregation entries are never removed),
/// so each call sees everything since start: a label set that got a series
/// keeps it; one that came after the cap was reached is folded into its
/// source's overflow series (all labels `other`) every time. Within one
/// call, new label sets are admitted heaviest (total wait) first.
#[derive(Debug)]
pub struct Folder {
    pub max_series: usize,
    pub per_process: bool,
    pub max_processes: usize,
    kept: HashSet<SeriesKey>,
    /// Processes that have their own `pid` label, with their name.
    processes: HashMap<u32, String>,
    /// The `lock` label each (source, lock, pid) was first given: a lock
    /// named while its process lived (`pipe:[...] (fd 4 of ...)`) may be
    /// named otherwise once it has exited (its slab cache); its series
    /// keeps the first label instead of moving to a new label set.
    labels: HashMap<(&'static str, u64, u32), String>,
}

/// How many lock labels [`Folder`] remembers (then new locks get what
/// their record says each time).
const MAX_LABELS: usize = 65536;

/// What the caps folded into "other" (and `/api/summary` says so, by
/// these names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct FoldCounts {
    /// Distinct label sets (after process folding) in overflow series.
    pub folded_series: u64,
    /// Distinct processes labelled `pid="other"`.
    pub folded_processes: u64,
}

/// How the collector's reads of the in-kernel maps went (and
/// `/api/summary` says so, by these names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CollectStats {
    /// Reads that made a snapshot.
    pub collections: u64,
    /// Reads that failed.
    pub collect_errors: u64,
    /// How long the last read of the in-kernel maps took.
    pub collect_ns: u64,
}

/// The folded series of one snapshot and what the caps folded away.
#[derive(Debug, Default)]
pub struct Folded {
    pub series: BTreeMap<SeriesKey, Series>,
    pub counts: FoldCounts,
    /// Hashes of the folded label sets: counted, not kept.
    folded_keys: HashSet<u64>,
    folded_pids: HashSet<u32>,
}

impl Folder {
    pub fn new(max_series: usize, per_process: bool, max_processes: usize) -> Folder {
        Folder {
            max_series,
            per_process,
            max_processes,
            kept: HashSet::new(),
            processes: HashMap::new(),
            labels: HashMap::new(),
        }
    }

    /// Folds cumulative records into series. `proc_name` names a process
    /// the first time it is given its own label (its comm, from /proc).
    pub fn fold(
        &mut self,
        records: &[Record],
        proc_name: impl FnMut(u32) -> Option<String>,
    ) -> Folded {
        let mut out = Folded::default();
        self.fold_into(records, proc_name, &mut out);
        out
    }

    /// As [`Folder::fold`], adding to `out`: a read folds its sources one
    /// after another, so that only one source's records are held at once.
    /// New label sets are admitted heaviest first within each call.
    pub fn fold_into(
        &mut self,
        records: &[Record],
        mut proc_name: impl FnMut(u32) -> Option<String>,
        out: &mut Folded,
    ) {
        // heaviest first, so that the cap admits what matters most
        let mut order: Vec<&Record> = records.iter().collect();
        order.sort_by_key(|r| std::cmp::Reverse(r.wait.total_ns));
        let folded_pids = &mut out.folded_pids;
        let folded_keys = &mut out.folded_keys;
        for r in order {
            let process = if self.per_process {
                if let Some(comm) = self.processes.get(&r.pid) {
                    Some((r.pid.to_string(), comm.clone()))
                } else if self.processes.len() < self.max_processes {
                    let comm = proc_name(r.pid).unwrap_or_else(|| r.comm.clone());
                    self.processes.insert(r.pid, comm.clone());
                    Some((r.pid.to_string(), comm))
                } else {
                    folded_pids.insert(r.pid);
                    Some((OTHER.into(), OTHER.into()))
                }
            } else {
                None
            };
            let id = (r.source, r.lock, r.pid);
            let lock = match self.labels.get(&id) {
                Some(l) => l.clone(),
                None => {
                    let l = r
                        .lock_name
                        .clone()
                        .unwrap_or_else(|| format!("0x{:x}", r.lock));
                    if self.labels.len() < MAX_LABELS {
                        self.labels.insert(id, l.clone());
                    }
                    l
                }
            };
            let key = SeriesKey {
                source: r.source,
                kind: r.kind.name(),
                lock,
                caller: r.caller.clone().unwrap_or_default(),
                cgroup: r.cgroup.clone().unwrap_or_default(),
                process,
            };
            let key = if self.kept.contains(&key) {
                key
            } else if self.kept.len() < self.max_series {
                self.kept.insert(key.clone());
                key
            } else {
                let o = SeriesKey::overflow(r.source, self.per_process);
                use std::hash::{Hash, Hasher};
                let mut h = std::hash::DefaultHasher::new();
                key.hash(&mut h);
                folded_keys.insert(h.finish());
                o
            };
            out.series.entry(key).or_default().add_counts(r);
        }
        out.counts = FoldCounts {
            folded_series: out.folded_keys.len() as u64,
            folded_processes: out.folded_pids.len() as u64,
        };
    }
}

/// lockscope's own resource use, from /proc/self.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SelfStats {
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub threads: u64,
}

impl SelfStats {
    pub fn read() -> SelfStats {
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = if hz > 0 { hz as f64 } else { 100.0 };
        let mut s = SelfStats::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some((u, sys)) = parse_stat_times(&stat)
        {
            s.cpu_user_s = u as f64 / hz;
            s.cpu_system_s = sys as f64 / hz;
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let (rss, hwm, threads) = parse_status(&status);
            s.rss_bytes = rss;
            s.peak_rss_bytes = hwm;
            s.threads = threads;
        }
        s
    }
}

/// utime and stime (clock ticks) of a `/proc/PID/stat` line. The comm
/// field may hold spaces and parentheses, so fields count from the last ')'.
pub fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// VmRSS, VmHWM (bytes) and Threads of a `/proc/PID/status` text.
pub fn parse_status(status: &str) -> (u64, u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        field("VmRSS:") * 1024,
        field("VmHWM:") * 1024,
        field("Threads:"),
    )
}

/// Totals of one source, for the per-source breakdown.
#[derive(Clone, Debug, Serialize)]
pub struct SourceTotals {
    #[serde(flatten)]
    pub status: SourceStatus,
    pub waits: u64,
    pub wait_ns: u64,
    /// Every acquisition (`waits` are the contended ones), for sources
    /// that see them all; null otherwise.
    pub acquired: Option<u64>,
    /// Whether the source measures holds (any of its records has one).
    pub measures_hold: bool,
    pub holds: u64,
    pub hold_ns: u64,
    pub aborted: u64,
    pub failed: u64,
    pub lost: BTreeMap<String, u64>,
    pub bpf_runs: u64,
    pub bpf_run_time_ns: u64,
    #[serde(skip)]
    pub programs: Vec<ProgStats>,
}

impl SourceTotals {
    pub fn new(status: SourceStatus) -> SourceTotals {
        SourceTotals {
            status,
            waits: 0,
            wait_ns: 0,
            acquired: None,
            measures_hold: false,
            holds: 0,
            hold_ns: 0,
            aborted: 0,
            failed: 0,
            lost: BTreeMap::new(),
            bpf_runs: 0,
            bpf_run_time_ns: 0,
            programs: Vec::new(),
        }
    }
}

/// One process in the dashboard's top-processes table.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProcessRow {
    pub pid: u32,
    pub comm: String,
    /// Contended waits.
    pub count: u64,
    /// Every acquisition of the sources that see them all; null when
    /// none of its records' sources does.
    pub acquired: Option<u64>,
    pub wait_ns: StatsSummary,
    pub hold_ns: Option<StatsSummary>,
    /// The lock it waited longest for (name or address).
    pub top_lock: String,
}

/// Top processes by total wait.
pub fn top_processes(records: &[Record], n: usize) -> Vec<ProcessRow> {
    let mut t = ProcessTops::default();
    t.add(records);
    t.rows(n)
}

#[derive(Default)]
struct ProcAcc {
    comm: Option<String>,
    any_comm: String,
    wait: Stats,
    hold: Option<Stats>,
    acquired: Option<u64>,
    /// Its heaviest lock of each source read so far (name, total wait).
    top_lock: Option<(String, u64)>,
}

/// The top-processes table, built source by source (a process's waits
/// add up across sources; its top lock is the heaviest of any source).
#[derive(Default)]
pub struct ProcessTops {
    by_pid: HashMap<u32, ProcAcc>,
}

impl ProcessTops {
    pub fn add(&mut self, records: &[Record]) {
        let mut locks: HashMap<(u32, String), u64> = HashMap::new();
        for r in records {
            let a = self.by_pid.entry(r.pid).or_default();
            if r.tid == r.pid {
                a.comm = Some(r.comm.clone());
            }
            if a.any_comm.is_empty() {
                a.any_comm = r.comm.clone();
            }
            a.wait.merge(&r.wait);
            if let Some(h) = &r.hold {
                a.hold.get_or_insert_with(Stats::default).merge(h);
            }
            if let Some(n) = r.acquired {
                *a.acquired.get_or_insert(0) += n;
            }
            let lock = r
                .lock_name
                .clone()
                .unwrap_or_else(|| format!("0x{:x}", r.lock));
            *locks.entry((r.pid, lock)).or_default() += r.wait.total_ns;
        }
        for ((pid, lock), total) in locks {
            let Some(a) = self.by_pid.get_mut(&pid) else {
                continue;
            };
            let better = match &a.top_lock {
                None => true,
                Some((l, t)) => total > *t || (total == *t && lock < *l),
            };
            if better {
                a.top_lock = Some((lock, total));
            }
        }
    }

    pub fn rows(self, n: usize) -> Vec<ProcessRow> {
        let rows: Vec<ProcessRow> = self
            .by_pid
            .into_iter()
            .map(|(pid, a)| ProcessRow {
                pid,
                comm: a.comm.unwrap_or(a.any_comm),
                count: a.wait.count,
                acquired: a.acquired,
                wait_ns: a.wait.summary(),
                hold_ns: a.hold.as_ref().map(Stats::summary),
                top_lock: a.top_lock.map(|(l, _)| l).unwrap_or_default(),
            })
            .collect();
        largest_wait_first(rows, n, |r| &r.wait_ns, |x, y| x.pid.cmp(&y.pid))
    }
}

/// The first `n` of `rows` by total wait (`wait` of a row), largest
/// first, ties in the order `then` says.
fn largest_wait_first<T>(
    mut rows: Vec<T>,
    n: usize,
    wait: impl Fn(&T) -> &StatsSummary,
    then: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> Vec<T> {
    rows.sort_by(|x, y| wait(y).total.cmp(&wait(x).total).then(then(x, y)));
    rows.truncate(n);
    rows
}

/// Everything one read of the sources produced.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Increments with every read of the sources.
    pub seq: u64,
    pub unix_ms: u64,
    pub uptime_s: f64,
    pub targets: String,
    pub per_process: bool,
    pub max_series: usize,
    pub sources: Vec<SourceTotals>,
    pub series: BTreeMap<SeriesKey, Series>,
    pub folds: FoldCounts,
    pub self_stats: SelfStats,
    pub top_locks: Vec<Row>,
    pub top_processes: Vec<ProcessRow>,
    pub collect: CollectStats,
    pub history: std::sync::Arc<History>,
    /// The deadlocks of the target processes (none without `-p`/`-t`).
    pub deadlocks: std::sync::Arc<Deadlocks>,
}

/// Deadlocks shown at most (`/api/summary`); older ones that are over are
/// dropped first.
pub const MAX_SHOWN_DEADLOCKS: usize = 32;

/// What serve knows of deadlocks: the counts `/metrics` exports and the
/// last few deadlocks, each with whether its cycle is still there.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Deadlocks {
    /// Whether the target processes are watched (serve has `-p`/`-t`).
    pub watched: bool,
    /// Of all the target processes.
    #[serde(flatten)]
    pub tally: DeadlockTally,
    /// By process (the first `--max-processes` processes with a deadlock;
    /// later ones under `pid` "other").
    pub by_process: Vec<DeadlockCount>,
    /// The last [`MAX_SHOWN_DEADLOCKS`] deadlocks, oldest first.
    pub shown: Vec<ShownDeadlock>,
    /// Deadlocks reported but no longer shown.
    pub not_shown: u64,
}

/// Deadlocks reported and the threads of those still there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct DeadlockTally {
    /// Cycles reported since start.
    pub reported: u64,
    /// Threads in a cycle that is still there.
    pub live_threads: u64,
}

/// The deadlock counts of one process (`pid` label).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeadlockCount {
    pub pid: String,
    #[serde(flatten)]
    pub tally: DeadlockTally,
}

/// A deadlock as reported (`report --json`'s fields) and whether its cycle
/// is still there.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShownDeadlock {
    #[serde(flatten)]
    pub deadlock: Deadlock,
    pub live: bool,
}

/// Keeps [`Deadlocks`] up to date from the detector's findings: a bounded
/// list and counts per process label.
#[derive(Debug)]
pub struct DeadlockBook {
    max_processes: usize,
    view: Deadlocks,
    /// The index in `view.by_process` of each labelled pid.
    labels: HashMap<u32, usize>,
}

impl DeadlockBook {
    /// A book for the target processes `pids` (none: nothing watched),
    /// each with its counts from the start (at 0), as far as
    /// `max_processes` allows.
    pub fn new(pids: &[u32], max_processes: usize) -> DeadlockBook {
        let mut b = DeadlockBook {
            max_processes,
            view: Deadlocks {
                watched: !pids.is_empty(),
                ..Deadlocks::default()
            },
            labels: HashMap::new(),
        };
        for &p in pids.iter().take(max_processes) {
            b.slot(p);
        }
        b
    }

    pub fn view(&self) -> &Deadlocks {
        &self.view
    }

    /// The index of a pid's counts: its own label while there is room,
    /// else "other".
    fn slot(&mut self, pid: u32) -> usize {
        if let Some(&i) = self.labels.get(&pid) {
            return i;
        }
        let v = &mut self.view.by_process;
        if self.labels.len() < self.max_processes {
            v.push(DeadlockCount {
                pid: pid.to_string(),
                ..DeadlockCount::default()
            });
            self.labels.insert(pid, v.len() - 1);
            return v.len() - 1;
        }
        match v.iter().position(|c| c.pid == OTHER) {
            Some(i) => i,
            None => {
                v.push(DeadlockCount {
                    pid: OTHER.into(),
                    ..DeadlockCount::default()
                });
                v.len() - 1
            }
        }
    }

    /// Adds the deadlocks found since the last call and marks which of
    /// the shown ones are still there (`is_live`). True when anything
    /// changed.
    pub fn update(&mut self, found: Vec<Deadlock>, is_live: impl Fn(&Deadlock) -> bool) -> bool {
        let mut changed = !found.is_empty();
        for d in found {
            let i = self.slot(d.pid);
            self.view.by_process[i].tally.reported += 1;
            self.view.tally.reported += 1;
            if self.view.shown.len() >= MAX_SHOWN_DEADLOCKS {
                // the oldest that is over, else the oldest
                let drop = self.view.shown.iter().position(|s| !s.live).unwrap_or(0);
                self.view.shown.remove(drop);
                self.view.not_shown += 1;
            }
            self.view.shown.push(ShownDeadlock {
                deadlock: d,
                live: true,
            });
        }
        for s in &mut self.view.shown {
            let live = is_live(&s.deadlock);
            changed |= live != s.live;
            s.live = live;
        }
        for c in &mut self.view.by_process {
            c.tally.live_threads = 0;
        }
        let mut live_threads = 0;
        for k in 0..self.view.shown.len() {
            let s = &self.view.shown[k];
            if !s.live {
                continue;
            }
            let (pid, n) = (s.deadlock.pid, s.deadlock.threads.len() as u64);
            let i = self.slot(pid);
            self.view.by_process[i].tally.live_threads += n;
            live_threads += n;
        }
        self.view.tally.live_threads = live_threads;
        changed
    }
}

/// The totals of one source's reading: its records, losses and program
/// stats.
pub fn source_totals(reading: &SourceReading) -> SourceTotals {
    let mut t = SourceTotals::new(reading.status.clone());
    for r in reading
        .records
        .iter()
        .filter(|r| crate::sources::source_of_row(r.source) == t.status.name)
    {
        t.waits += r.wait.count;
        t.wait_ns += r.wait.total_ns;
        if let Some(n) = r.acquired {
            *t.acquired.get_or_insert(0) += n;
        }
        if let Some(h) = &r.hold {
            t.measures_hold = true;
            t.holds += h.count;
            t.hold_ns += h.total_ns;
        }
        t.aborted += r.aborted;
        t.failed += r.failed;
    }
    t.lost = reading.lost.clone();
    t.bpf_runs = reading.programs.iter().map(|p| p.run_cnt).sum();
    t.bpf_run_time_ns = reading.programs.iter().map(|p| p.run_time_ns).sum();
    t.programs = reading.programs.clone();
    t
}

/// The dashboard's top locks: by-lock rows, largest total wait first.
pub fn top_locks(mut records: Vec<Record>, n: usize) -> Vec<Row> {
    // rank the locks by a cheap total first, then build rows for the top
    // ones only: a full map can hold thousands of locks. The records are
    // taken, not cloned: a source with few locks (sched: one per CPU) has
    // every record in its top ones, and a copy doubled the read's peak.
    let mut totals: HashMap<(&'static str, u64, crate::model::LockKind), u64> = HashMap::new();
    for r in &records {
        *totals.entry((r.source, r.lock, r.kind)).or_default() += r.wait.total_ns;
    }
    let mut ranked: Vec<_> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top: HashSet<_> = ranked.into_iter().take(n).map(|(k, _)| k).collect();
    records.retain(|r| top.contains(&(r.source, r.lock, r.kind)));
    let mut rows = group(&records, GroupBy::Lock);
    rows.truncate(n);
    rows
}

/// The top `n` of rows from several [`top_locks`] calls (one per source:
/// a lock belongs to one source, so each source's top `n` holds its share
/// of the overall top `n`).
pub fn merge_top_locks(rows: Vec<Row>, n: usize) -> Vec<Row> {
    largest_wait_first(rows, n, |r| &r.wait_ns, |x, y| y.count.cmp(&x.count))
}

/// Cumulative totals of one source at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Point {
    pub waits: u64,
    pub wait_ns: u64,
    pub holds: u64,
    pub hold_ns: u64,
    pub lost: u64,
}

/// The last `cap` samples (one per collector tick) of every source's
/// cumulative totals: the dashboard's charts.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub cap: usize,
    pub sources: Vec<String>,
    /// (unix ms, one point per source in `sources` order)
    pub samples: VecDeque<(u64, Vec<Point>)>,
}

/// Rates between consecutive samples, per source, as the dashboard draws
/// them (`/api/history`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HistoryView {
    /// End of each interval, unix ms.
    pub t: Vec<u64>,
    pub sources: BTreeMap<String, SourceRates>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SourceRates {
    /// Contended waits per second.
    pub waits: Vec<f64>,
    /// Seconds waited per second (summed over threads).
    pub wait: Vec<f64>,
    pub holds: Vec<f64>,
    /// Seconds held per second.
    pub hold: Vec<f64>,
    /// Loss counter increments per second (all counters).
    pub lost: Vec<f64>,
}

impl History {
    pub fn new(cap: usize, sources: Vec<String>) -> History {
        History {
            cap,
            sources,
            samples: VecDeque::with_capacity(cap + 1),
        }
    }

    pub fn push(&mut self, unix_ms: u64, points: Vec<Point>) {
        self.samples.push_back((unix_ms, points));
        while self.samples.len() > self.cap {
            self.samples.pop_front();
        }
    }

    pub fn view(&self) -> HistoryView {
        let mut v = HistoryView {
            t: Vec::new(),
            sources: self
                .sources
                .iter()
                .map(|s| (s.clone(), SourceRates::default()))
                .collect(),
        };
        for (a, b) in self.samples.iter().zip(self.samples.iter().skip(1)) {
            let dt = b.0.saturating_sub(a.0) as f64 / 1e3;
            if dt <= 0.0 {
                continue;
            }
            v.t.push(b.0);
            for (i, name) in self.sources.iter().enumerate() {
                let (Some(p), Some(q)) = (a.1.get(i), b.1.get(i)) else {
                    continue;
                };
                let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / dt;
                if let Some(r) = v.sources.get_mut(name) {
                    r.waits.push(rate(p.waits, q.waits));
                    r.wait.push(rate(p.wait_ns, q.wait_ns) / 1e9);
                    r.holds.push(rate(p.holds, q.holds));
                    r.hold.push(rate(p.hold_ns, q.hold_ns) / 1e9);
                    r.lost.push(rate(p.lost, q.lost));
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pid: u32, tid: u32, lock: u64, caller: &str, waits: &[u64]) -> Record {
        Record {
            pid,
            tid,
            comm: format!("t{tid}"),
            aborted: 1,
            ..Record::sample(lock, caller, waits)
        }
    }

    #[test]
    fn a_series_keeps_its_lock_label_when_the_name_changes() {
        // named while the process lived, by its slab cache after it exited
        let mut f = Folder::new(1, true, 10);
        let mut r = rec(7, 7, 0x10, "", &[100]);
        r.lock_name = Some("pipe:[9] (fd 4 of 7 x)".into());
        let first = f.fold(std::slice::from_ref(&r), |_| None);
        r.lock_name = Some("in kmalloc-cg-192 (slab)".into());
        r.wait.record(200);
        let second = f.fold(std::slice::from_ref(&r), |_| None);
        assert_eq!(second.series.len(), 1, "{:?}", second.series.keys());
        let (k, s) = second.series.iter().next().expect("one");
        assert_eq!(k.lock, "pipe:[9] (fd 4 of 7 x)");
        assert_eq!(s.wait.count, 2);
        assert_eq!(
            (first.counts.folded_series, second.counts.folded_series),
            (0, 0)
        );
    }

    #[test]
    fn threads_of_one_lock_fold_into_one_series() {
        let mut f = Folder::new(10, false, 0);
        let recs = [
            rec(1, 1, 0x10, "pipe_write", &[100, 200]),
            rec(1, 2, 0x10, "pipe_write", &[300]),
        ];
        let out = f.fold(&recs, |_| None);
        assert_eq!(out.series.len(), 1);
        let (k, s) = out.series.iter().next().expect("one");
        assert_eq!(k.lock, "0x10");
        assert_eq!(k.caller, "pipe_write");
        assert_eq!(k.process, None);
        assert_eq!((s.wait.count, s.wait.total_ns, s.aborted), (3, 600, 2));
        assert_eq!(out.counts.folded_series, 0);
    }

    #[test]
    fn the_cap_folds_newcomers_and_keeps_every_series_monotonic() {
        let mut f = Folder::new(2, false, 0);
        // first read: three locks, the two heaviest get series
        let mut recs = vec![
            rec(1, 1, 0x1, "a", &[1000]),
            rec(1, 1, 0x2, "b", &[10]),
            rec(1, 1, 0x3, "c", &[500]),
        ];
        let first = f.fold(&recs, |_| None);
        let locks: Vec<&str> = first.series.keys().map(|k| k.lock.as_str()).collect();
        assert!(
            locks.contains(&"0x1") && locks.contains(&"0x3"),
            "{locks:?}"
        );
        let other = SeriesKey::overflow("kernel-contention", false);
        assert_eq!(first.series[&other].wait.total_ns, 10);
        assert_eq!(first.counts.folded_series, 1);
        // later: the folded lock becomes the heaviest; it stays folded, so
        // no series ever goes down
        recs[1] = rec(1, 1, 0x2, "b", &[10, 1_000_000]);
        recs.push(rec(1, 1, 0x4, "d", &[7]));
        let second = f.fold(&recs, |_| None);
        assert_eq!(second.series.len(), 3);
        for (k, s) in &first.series {
            assert!(second.series[k].wait.total_ns >= s.wait.total_ns, "{k:?}");
            assert!(second.series[k].wait.count >= s.wait.count, "{k:?}");
        }
        assert_eq!(second.series[&other].wait.total_ns, 10 + 1_000_000 + 7);
        assert_eq!(second.counts.folded_series, 2);
        // every wait is still counted exactly once
        let total: u64 = second.series.values().map(|s| s.wait.count).sum();
        assert_eq!(total, 5);
    }

    #[test]
    fn per_process_labels_are_capped_too() {
        let mut f = Folder::new(100, true, 1);
        let recs = [
            rec(7, 7, 0x1, "a", &[5000]),
            rec(8, 8, 0x1, "a", &[10]),
            rec(9, 9, 0x1, "a", &[20]),
        ];
        let out = f.fold(&recs, |pid| Some(format!("proc{pid}")));
        let procs: Vec<Option<(String, String)>> =
            out.series.keys().map(|k| k.process.clone()).collect();
        assert!(
            procs.contains(&Some(("7".into(), "proc7".into()))),
            "{procs:?}"
        );
        assert!(
            procs.contains(&Some((OTHER.into(), OTHER.into()))),
            "{procs:?}"
        );
        assert_eq!(out.counts.folded_processes, 2);
        assert_eq!(out.series.len(), 2, "pids 8 and 9 share the 'other' series");
        // a process's name is taken when it gets its label, from the record
        // when /proc has none
        let mut g = Folder::new(100, true, 5);
        let out = g.fold(&recs[..1], |_| None);
        assert_eq!(
            out.series.keys().next().and_then(|k| k.process.clone()),
            Some(("7".into(), "t7".into()))
        );
    }

    #[test]
    fn proc_stat_and_status_parse() {
        let stat = "1234 (a b) c)) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 3 0";
        assert_eq!(parse_stat_times(stat), Some((250, 75)));
        let status = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\nThreads:\t5\n";
        assert_eq!(parse_status(status), (1024 * 1024, 2048 * 1024, 5));
        let me = SelfStats::read();
        assert!(me.rss_bytes > 0 && me.peak_rss_bytes >= me.rss_bytes && me.threads >= 1);
    }

    #[test]
    fn top_processes_rank_by_wait_and_name_the_main_thread() {
        let recs = [
            rec(1, 2, 0x1, "a", &[10]),
            rec(1, 1, 0x2, "b", &[30]),
            rec(5, 6, 0x1, "a", &[1000]),
        ];
        let top = top_processes(&recs, 10);
        assert_eq!(top.len(), 2);
        assert_eq!(
            (top[0].pid, top[0].comm.as_str(), top[0].count),
            (5, "t6", 1)
        );
        assert_eq!((top[1].pid, top[1].comm.as_str()), (1, "t1"));
        assert_eq!(top[1].wait_ns.total, 40);
        assert_eq!(top[1].top_lock, "0x2");
        assert_eq!(top_processes(&recs, 1).len(), 1);
        assert_eq!(top_processes(&recs, 1)[0].pid, 5);
    }

    #[test]
    fn top_locks_are_the_heaviest_rows() {
        let recs = [
            rec(1, 1, 0x1, "a", &[10]),
            rec(2, 2, 0x1, "a", &[15]),
            rec(1, 1, 0x2, "b", &[20]),
            rec(1, 1, 0x3, "c", &[1]),
        ];
        let top = top_locks(recs.to_vec(), 2);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].lock.as_deref(), Some("0x1"));
        assert_eq!((top[0].count, top[0].wait_ns.total), (2, 25));
        assert_eq!(top[1].lock.as_deref(), Some("0x2"));
        assert_eq!(top_locks(recs.to_vec(), 10), {
            let mut all = group(&recs, GroupBy::Lock);
            all.truncate(10);
            all
        });
    }

    #[test]
    fn history_gives_rates_between_samples() {
        let mut h = History::new(3, vec!["s".into()]);
        let p = |w, ns| Point {
            waits: w,
            wait_ns: ns,
            ..Default::default()
        };
        h.push(1000, vec![p(0, 0)]);
        h.push(2000, vec![p(10, 500_000_000)]);
        h.push(2500, vec![p(20, 1_000_000_000)]);
        h.push(3500, vec![p(20, 1_000_000_000)]);
        assert_eq!(h.samples.len(), 3, "capped");
        let v = h.view();
        assert_eq!(v.t, vec![2500, 3500]);
        assert_eq!(v.sources["s"].waits, vec![20.0, 0.0]);
        assert_eq!(v.sources["s"].wait, vec![1.0, 0.0]);
    }

    fn reading(
        status: SourceStatus,
        records: Vec<Record>,
        lost: BTreeMap<String, u64>,
    ) -> SourceReading {
        SourceReading {
            source: "test",
            status,
            records,
            holders: Vec::new(),
            lost,
            programs: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn deadlock(pid: u32, tids: &[u32]) -> Deadlock {
        let threads = tids
            .iter()
            .enumerate()
            .map(|(i, &tid)| crate::deadlock::DeadlockThread {
                tid,
                comm: format!("t{tid}"),
                waits_for_lock: format!("{:#x}", 0x100 + i),
                lock_name: Some(format!("L{i}")),
                owner_tid: tids[(i + 1) % tids.len()],
                stack: Vec::new(),
            })
            .collect();
        Deadlock {
            pid,
            comm: "app".into(),
            threads,
            locks: Vec::new(),
            since_ns: 1_000_000_000,
            since: 1.0,
            detected_ns: 0,
        }
    }

    #[test]
    fn deadlocks_count_per_process_and_live_threads_follow_the_cycles() {
        let mut b = DeadlockBook::new(&[7, 8], 2);
        let v = b.view();
        assert!(v.watched);
        let pids: Vec<&str> = v.by_process.iter().map(|c| c.pid.as_str()).collect();
        assert_eq!(pids, ["7", "8"], "the targets start at 0");
        assert!(!b.update(Vec::new(), |_| true), "nothing new");
        let d7 = deadlock(7, &[70, 71]);
        assert!(b.update(vec![d7.clone()], |_| true));
        let v = b.view();
        assert_eq!((v.tally.reported, v.tally.live_threads), (1, 2));
        assert_eq!(
            (
                v.by_process[0].tally.reported,
                v.by_process[0].tally.live_threads
            ),
            (1, 2)
        );
        assert_eq!(v.by_process[1].tally.reported, 0);
        assert!(v.shown[0].live);
        assert!(!b.update(Vec::new(), |_| true), "still live: no change");
        // a process past --max-processes counts under "other"
        assert!(b.update(vec![deadlock(9, &[90, 91, 92])], |_| true));
        let v = b.view();
        assert_eq!(v.by_process[2].pid, OTHER);
        assert_eq!(
            (
                v.by_process[2].tally.reported,
                v.by_process[2].tally.live_threads
            ),
            (1, 3)
        );
        assert_eq!((v.tally.reported, v.tally.live_threads), (2, 5));
        // pid 7's cycle breaks: its threads leave the gauge, its count stays
        assert!(b.update(Vec::new(), |d| d.pid != 7));
        let v = b.view();
        assert_eq!(
            (
                v.by_process[0].tally.reported,
                v.by_process[0].tally.live_threads
            ),
            (1, 0)
        );
        assert_eq!(v.tally.live_threads, 3);
        assert!(!v.shown[0].live && v.shown[1].live);
        // bounded: the ones that are over go first
        for i in 0..MAX_SHOWN_DEADLOCKS as u32 {
            b.update(vec![deadlock(7, &[100 + 2 * i, 101 + 2 * i])], |d| {
                d.pid != 7
            });
        }
        let v = b.view();
        assert_eq!(v.shown.len(), MAX_SHOWN_DEADLOCKS);
        assert_eq!(v.not_shown, 2);
        assert!(v.shown.iter().any(|s| s.deadlock.pid == 9 && s.live));
        assert_eq!(v.tally.reported, 2 + MAX_SHOWN_DEADLOCKS as u64);
        assert_eq!(
            v.by_process[0].tally.reported,
            1 + MAX_SHOWN_DEADLOCKS as u64
        );
        // no targets: nothing watched
        assert!(!DeadlockBook::new(&[], 50).view().watched);
    }

    #[test]
    fn per_source_totals() {
        let recs = [rec(1, 1, 0x1, "a", &[10, 20])];
        let st = SourceStatus {
            name: "kernel-contention".into(),
            backend: Some("tp_btf".into()),
            available: true,
            reason: None,
        };
        let lost = BTreeMap::from([("map_full".to_string(), 3)]);
        let t = [source_totals(&reading(st, recs.to_vec(), lost))];
        assert_eq!((t[0].waits, t[0].wait_ns, t[0].aborted), (2, 30, 1));
        assert!(!t[0].measures_hold);
        assert_eq!(t[0].lost["map_full"], 3);
    }

    #[test]
    fn user_locks_totals_count_its_rows_by_lock_type() {
        let mut r = rec(1, 1, 0x1, "a", &[10, 20]);
        r.source = crate::sources::ulock::ROW_MUTEX;
        let mut hold = Stats::default();
        hold.record(5);
        r.hold = Some(hold);
        let st = SourceStatus {
            name: crate::sources::ulock::SOURCE.into(),
            backend: Some("uprobe".into()),
            available: true,
            reason: None,
        };
        let t = [source_totals(&reading(st, vec![r], BTreeMap::new()))];
        assert_eq!((t[0].waits, t[0].holds, t[0].hold_ns), (2, 1, 5));
        assert!(t[0].measures_hold);
    }
}
