//! State of `lockscope top`, apart from drawing and from the sources.
//!
//! The collector hands in [`Snapshot`]s of the sources' cumulative
//! records; the state keeps the previous one, so every row has both its
//! totals since start and its delta over the last interval (counts, wait
//! totals and log2 histograms subtract exactly; the interval's maximum is
//! exact when it set a new overall maximum, else bounded by its bucket).
//! Filtering happens on records, before grouping, so a by-lock row under a
//! `comm` filter counts only that thread's waits. Pure: no I/O, no clock.

use std::collections::{BTreeMap, HashMap};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

pub use crate::model::Delta;
use crate::model::{GroupBy, LockKind, Record, RecordKey, Row, group, row_key};
use crate::output::SourceStatus;
use crate::session::{Part, Reading};

/// Whether a record matches a filter (lowercase): its caller, lock name,
/// lock address (hex, with or without 0x) or thread name contains it.
pub fn matches(r: &Record, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    let has = |s: &str| s.to_lowercase().contains(needle);
    r.caller.as_deref().is_some_and(has)
        || r.lock_name.as_deref().is_some_and(has)
        || format!("0x{:x}", r.lock).contains(needle)
        || has(&r.comm)
}

/// A sortable column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SortKey {
    DeltaCount,
    DeltaTotal,
    DeltaMax,
    DeltaAvg,
    DeltaP99,
    Count,
    Total,
    Max,
    Avg,
    P99,
    Kind,
    Name,
}

impl SortKey {
    /// In display order; `s` steps forward, `S` back.
    pub const ALL: [SortKey; 12] = [
        SortKey::DeltaCount,
        SortKey::DeltaTotal,
        SortKey::DeltaMax,
        SortKey::DeltaAvg,
        SortKey::DeltaP99,
        SortKey::Count,
        SortKey::Total,
        SortKey::Max,
        SortKey::Avg,
        SortKey::P99,
        SortKey::Kind,
        SortKey::Name,
    ];

    pub fn header(self) -> &'static str {
        match self {
            SortKey::DeltaCount => "Δcount",
            SortKey::DeltaTotal => "Δtotal",
            SortKey::DeltaMax => "Δmax",
            SortKey::DeltaAvg => "Δavg",
            SortKey::DeltaP99 => "Δp99",
            SortKey::Count => "count",
            SortKey::Total => "total",
            SortKey::Max => "max",
            SortKey::Avg => "avg",
            SortKey::P99 => "p99",
            SortKey::Kind => "kind",
            SortKey::Name => "name",
        }
    }

    /// Text columns sort A to Z by default, numbers largest first.
    pub fn numeric(self) -> bool {
        !matches!(self, SortKey::Kind | SortKey::Name)
    }

    fn step(self, forward: bool) -> SortKey {
        let n = SortKey::ALL.len();
        let i = SortKey::ALL.iter().position(|&k| k == self).unwrap_or(0);
        SortKey::ALL[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }]
    }

    fn value(self, r: &TopRow) -> u64 {
        let (d, t) = (&r.delta.wait, &r.total.wait);
        match self {
            SortKey::DeltaCount => d.count,
            SortKey::DeltaTotal => d.total_ns,
            SortKey::DeltaMax => d.max_ns,
            SortKey::DeltaAvg => d.avg_ns(),
            SortKey::DeltaP99 => d.p99(),
            SortKey::Count => t.count,
            SortKey::Total => t.total_ns,
            SortKey::Max => t.max_ns,
            SortKey::Avg => t.avg_ns(),
            SortKey::P99 => t.p99(),
            SortKey::Kind | SortKey::Name => 0,
        }
    }
}

/// The views `v` cycles through.
pub const VIEWS: [GroupBy; 4] = [
    GroupBy::Lock,
    GroupBy::Caller,
    GroupBy::Task,
    GroupBy::Cgroup,
];

/// A lock as tables show it: its name, else its address without `0x`.
pub fn lock_label(name: Option<&str>, lock: Option<&str>) -> String {
    match (name, lock) {
        (Some(n), _) => n.to_string(),
        (None, Some(a)) => a.trim_start_matches("0x").to_string(),
        (None, None) => "(several)".into(),
    }
}

/// What a row is, in the view's own terms (the `name` column).
pub fn row_label(r: &Row, by: GroupBy) -> String {
    match by {
        GroupBy::Lock => lock_label(r.lock_name.as_deref(), r.lock.as_deref()),
        GroupBy::Caller => r.caller.clone().unwrap_or_else(|| "?".into()),
        GroupBy::Task => format!(
            "{} {}",
            r.comm.as_deref().unwrap_or("?"),
            r.tid.map_or("*".into(), |t| t.to_string())
        ),
        GroupBy::Cgroup => match (&r.cgroup, &r.memcg) {
            (None, None) => "?".into(),
            (c, m) => crate::model::cgroup_label(c.as_deref(), m.as_deref()),
        },
    }
}

/// Loss counters of one source, and how much each grew in the interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceLoss {
    pub source: String,
    pub counters: BTreeMap<String, u64>,
    pub grew: BTreeMap<String, u64>,
    /// Why the counters could not be read, if they could not.
    pub error: Option<String>,
}

/// Loss counters as read from a source, or why they could not be read.
pub type LostRead = Result<BTreeMap<String, u64>, String>;

/// What the collector read at one tick.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Cumulative records of every source that could be read.
    pub records: Vec<Record>,
    /// Sources whose records could not be read this time, and why; their
    /// previous records are kept.
    pub failed: Vec<(&'static str, String)>,
    /// (source, counters or why they could not be read).
    pub lost: Vec<(String, LostRead)>,
    pub statuses: Vec<SourceStatus>,
    /// Time since the sources started.
    pub at_ns: u64,
    /// Every `-p`/`-t` target has exited (the sources were detached).
    pub targets_exited: bool,
}

impl Snapshot {
    /// What `top` shows of a reading taken `at_ns` after the start: a
    /// source whose records could not be read keeps its previous ones, one
    /// whose loss counters could not be read says why (its holders are not
    /// shown).
    pub fn of(reading: Reading, at_ns: u64, targets_exited: bool) -> Snapshot {
        let mut snap = Snapshot {
            statuses: reading.statuses(),
            at_ns,
            targets_exited,
            ..Default::default()
        };
        for mut s in reading.sources {
            let mut lost = Ok(std::mem::take(&mut s.lost));
            for e in s.errors {
                match e.part {
                    Part::Records => snap.failed.push((s.source, format!("{:#}", e.error))),
                    Part::Lost => lost = Err(format!("{:#}", e.error)),
                    Part::Holders => {}
                }
            }
            snap.records.append(&mut s.records);
            snap.lost.push((s.source.to_string(), lost));
        }
        snap
    }
}

/// One row of the table: totals since start and the last interval.
#[derive(Clone, Debug, PartialEq)]
pub struct TopRow {
    /// The row's [`row_key`]: (source, key).
    pub key: (&'static str, String),
    pub total: Row,
    pub delta: Delta,
}

/// What the detail pane shows for the selected row, from its records.
#[derive(Clone, Debug, PartialEq)]
pub struct Detail {
    pub row: TopRow,
    /// (label, kind, count, total wait), most waited first.
    pub locks: Vec<(String, LockKind, u64, u64)>,
    /// (caller, count, total wait).
    pub callers: Vec<(String, u64, u64)>,
    /// (comm, pid, tid, count, total wait).
    pub threads: Vec<(String, u32, u32, u64, u64)>,
    /// (cgroup, count, total wait).
    pub cgroups: Vec<(String, u64, u64)>,
}

/// What a key press asks of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// What the last snapshot said of the sources (the status lines of
/// `top`).
#[derive(Debug, Default)]
pub struct SourceHealth {
    pub lost: Vec<SourceLoss>,
    pub statuses: Vec<SourceStatus>,
    /// Sources whose records could not be read, and why.
    pub errors: Vec<String>,
}

/// Snapshots taken so far, when, and whether the targets are gone (the
/// title and totals lines of `top`).
#[derive(Debug, Default)]
pub struct Progress {
    pub elapsed_ns: u64,
    pub last_interval_ns: u64,
    pub updates: u64,
    pub targets_exited: bool,
}

/// The whole state of `top`.
pub struct App {
    pub targets: String,
    pub interval_ns: u64,
    pub view: GroupBy,
    pub sort: SortKey,
    pub ascending: bool,
    /// Applied filter, lowercase.
    pub filter: String,
    /// While `/` is being typed: (text so far, filter before `/`).
    pub input: Option<(String, String)>,
    pub detail: bool,
    /// Lines the detail pane is scrolled down by (PgDn/PgUp while open).
    pub detail_scroll: u16,
    /// Whether the sources take full stacks (`top --stacks`).
    pub stacks_on: bool,
    sel_key: Option<(&'static str, String)>,
    sel_idx: usize,
    totals: BTreeMap<RecordKey, Record>,
    deltas: HashMap<RecordKey, Delta>,
    pub health: SourceHealth,
    pub progress: Progress,
    pub rows: Vec<TopRow>,
    /// Deadlocks of the target processes whose cycle is still there
    /// (the red banner above the table).
    pub deadlocks: Vec<crate::deadlock::Deadlock>,
}

impl App {
    pub fn new(targets: String, view: GroupBy, interval_ns: u64) -> App {
        App {
            targets,
            interval_ns,
            view,
            sort: SortKey::DeltaTotal,
            ascending: false,
            filter: String::new(),
            input: None,
            detail: false,
            detail_scroll: 0,
            stacks_on: false,
            sel_key: None,
            sel_idx: 0,
            totals: BTreeMap::new(),
            deltas: HashMap::new(),
            health: SourceHealth::default(),
            progress: Progress::default(),
            rows: Vec::new(),
            deadlocks: Vec::new(),
        }
    }

    /// Takes a new snapshot: deltas against the previous one, then rows.
    pub fn update(&mut self, snap: Snapshot) {
        // one identity, several kernel keys (e.g. two stacks that name the
        // same caller): one record
        let mut cur: BTreeMap<RecordKey, Record> = crate::model::by_key(&snap.records)
            .into_iter()
            .map(|(id, r)| (id, r.into_owned()))
            .collect();
        for (src, _) in &snap.failed {
            for (id, r) in &self.totals {
                if id.source == *src {
                    cur.insert(id.clone(), r.clone());
                }
            }
        }
        self.deltas = cur
            .iter()
            .filter_map(|(id, r)| {
                let d = r.wait.delta(self.totals.get(id).map(|p| &p.wait));
                (d.wait.count > 0).then(|| (id.clone(), d))
            })
            .collect();
        self.totals = cur;

        let prev: HashMap<String, BTreeMap<String, u64>> = self
            .health
            .lost
            .drain(..)
            .map(|l| (l.source, l.counters))
            .collect();
        self.health.lost = snap
            .lost
            .into_iter()
            .map(|(source, res)| match res {
                Ok(counters) => {
                    let grew = counters
                        .iter()
                        .map(|(k, v)| {
                            let before = prev.get(&source).and_then(|p| p.get(k)).copied();
                            (k.clone(), v.saturating_sub(before.unwrap_or(0)))
                        })
                        .collect();
                    SourceLoss {
                        source,
                        counters,
                        grew,
                        error: None,
                    }
                }
                Err(e) => SourceLoss {
                    counters: prev.get(&source).cloned().unwrap_or_default(),
                    source,
                    grew: BTreeMap::new(),
                    error: Some(e),
                },
            })
            .collect();
        self.health.statuses = snap.statuses;
        self.health.errors = snap
            .failed
            .iter()
            .map(|(s, e)| format!("{s}: {e}"))
            .collect();
        self.progress.last_interval_ns = snap.at_ns.saturating_sub(self.progress.elapsed_ns);
        self.progress.elapsed_ns = snap.at_ns;
        self.progress.targets_exited = snap.targets_exited;
        self.progress.updates += 1;
        self.rebuild();
    }

    /// Filters, groups and sorts the rows; keeps the selected row selected.
    pub fn rebuild(&mut self) {
        let needle = self.active_filter().to_lowercase();
        let mut buckets: BTreeMap<(&'static str, String), (Vec<Record>, Delta)> = BTreeMap::new();
        for (id, r) in &self.totals {
            if !matches(r, &needle) {
                continue;
            }
            let b = buckets.entry(row_key(r, self.view)).or_default();
            b.0.push(r.clone());
            if let Some(d) = self.deltas.get(id) {
                b.1.merge(d);
            }
        }
        let view = self.view;
        let rows: Vec<TopRow> = buckets
            .into_iter()
            .flat_map(|(key, (recs, delta))| {
                group(&recs, view).into_iter().map(move |total| TopRow {
                    key: key.clone(),
                    total,
                    delta: delta.clone(),
                })
            })
            .collect();
        self.rows = rows;
        self.resort();
    }

    /// Sorts the rows again (sort key or direction changed); keeps the
    /// selected row selected.
    fn resort(&mut self) {
        sort_rows(&mut self.rows, self.sort, self.ascending, self.view);
        self.sel_idx = match &self.sel_key {
            Some(k) => self
                .rows
                .iter()
                .position(|r| &r.key == k)
                .unwrap_or(self.sel_idx),
            None => 0,
        };
        self.select(self.sel_idx);
    }

    /// The filter in force: what is being typed, else the applied one.
    pub fn active_filter(&self) -> &str {
        match &self.input {
            Some((typed, _)) => typed,
            None => &self.filter,
        }
    }

    fn select(&mut self, idx: usize) {
        if self.rows.is_empty() {
            self.sel_idx = 0;
            self.sel_key = None;
            return;
        }
        let idx = idx.min(self.rows.len() - 1);
        if idx != self.sel_idx {
            self.detail_scroll = 0;
        }
        self.sel_idx = idx;
        self.sel_key = Some(self.rows[self.sel_idx].key.clone());
    }

    pub fn selected(&self) -> Option<usize> {
        (!self.rows.is_empty()).then_some(self.sel_idx)
    }

    /// Waits (count, total) of the shown rows: last interval and since start.
    pub fn sums(&self) -> ((u64, u64), (u64, u64)) {
        let mut d = (0, 0);
        let mut t = (0, 0);
        for r in &self.rows {
            d.0 += r.delta.wait.count;
            d.1 += r.delta.wait.total_ns;
            t.0 += r.total.wait.count;
            t.1 += r.total.wait.total_ns;
        }
        (d, t)
    }

    /// The detail of the selected row, from the records behind it.
    pub fn detail(&self) -> Option<Detail> {
        let row = self.rows.get(self.selected()?)?.clone();
        let needle = self.active_filter().to_lowercase();
        let recs: Vec<&Record> = self
            .totals
            .values()
            .filter(|r| matches(r, &needle) && row_key(r, self.view) == row.key)
            .collect();
        let mut locks: BTreeMap<(String, LockKind), (u64, u64)> = BTreeMap::new();
        let mut callers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut threads: BTreeMap<(String, u32, u32), (u64, u64)> = BTreeMap::new();
        let mut cgroups: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for r in recs {
            let add = |e: &mut (u64, u64)| {
                e.0 += r.wait.count;
                e.1 += r.wait.total_ns;
            };
            let lock = lock_label(r.lock_name.as_deref(), Some(&format!("{:x}", r.lock)));
            add(locks.entry((lock, r.kind)).or_default());
            let caller = r.caller.clone().unwrap_or_else(|| "?".into());
            add(callers.entry(caller).or_default());
            add(threads.entry((r.comm.clone(), r.pid, r.tid)).or_default());
            let cg = r.cgroup.clone().unwrap_or_else(|| "?".into());
            add(cgroups.entry(cg).or_default());
        }
        fn heaviest<K, T>(m: BTreeMap<K, (u64, u64)>, f: impl Fn(K, u64, u64) -> T) -> Vec<T> {
            let mut v: Vec<(K, (u64, u64))> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(b.1.0.cmp(&a.1.0)));
            v.into_iter().map(|(k, (n, w))| f(k, n, w)).collect()
        }
        Some(Detail {
            row,
            locks: heaviest(locks, |(l, k), n, w| (l, k, n, w)),
            callers: heaviest(callers, |c, n, w| (c, n, w)),
            threads: heaviest(threads, |(c, p, t), n, w| (c, p, t, n, w)),
            cgroups: heaviest(cgroups, |c, n, w| (c, n, w)),
        })
    }

    /// Handles one key press.
    pub fn on_key(&mut self, k: KeyEvent) -> Flow {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(k.code, KeyCode::Char('c') | KeyCode::Char('C')) {
            return Flow::Quit;
        }
        if let Some((typed, before)) = &mut self.input {
            match k.code {
                KeyCode::Enter => {
                    self.filter = typed.clone();
                    self.input = None;
                }
                KeyCode::Esc => {
                    self.filter = before.clone();
                    self.input = None;
                }
                KeyCode::Backspace => {
                    typed.pop();
                }
                KeyCode::Char(c) if !ctrl => typed.push(c),
                _ => return Flow::Continue,
            }
            self.rebuild();
            return Flow::Continue;
        }
        let page = 10;
        match k.code {
            KeyCode::Char('q') | KeyCode::Char('Q') => return Flow::Quit,
            KeyCode::Down | KeyCode::Char('j') => self.select(self.sel_idx.saturating_add(1)),
            KeyCode::Up | KeyCode::Char('k') => self.select(self.sel_idx.saturating_sub(1)),
            KeyCode::PageDown if self.detail => {
                self.detail_scroll = self.detail_scroll.saturating_add(page as u16)
            }
            KeyCode::PageUp if self.detail => {
                self.detail_scroll = self.detail_scroll.saturating_sub(page as u16)
            }
            KeyCode::PageDown => self.select(self.sel_idx.saturating_add(page)),
            KeyCode::PageUp => self.select(self.sel_idx.saturating_sub(page)),
            KeyCode::Home | KeyCode::Char('g') => self.select(0),
            KeyCode::End | KeyCode::Char('G') => self.select(usize::MAX),
            KeyCode::Char('s') | KeyCode::Char('S') => {
                self.sort = self.sort.step(k.code == KeyCode::Char('s'));
                self.ascending = !self.sort.numeric();
                self.resort();
            }
            KeyCode::Char('r') => {
                self.ascending = !self.ascending;
                self.resort();
            }
            KeyCode::Char('/') => {
                self.input = Some((String::new(), self.filter.clone()));
                self.rebuild();
            }
            KeyCode::Char('v') | KeyCode::Tab | KeyCode::Char('V') | KeyCode::BackTab => {
                let fwd = matches!(k.code, KeyCode::Char('v') | KeyCode::Tab);
                let n = VIEWS.len();
                let i = VIEWS.iter().position(|&v| v == self.view).unwrap_or(0);
                self.view = VIEWS[if fwd { (i + 1) % n } else { (i + n - 1) % n }];
                self.sel_key = None;
                self.rebuild();
            }
            KeyCode::Enter => {
                self.detail = !self.detail;
                self.detail_scroll = 0;
            }
            KeyCode::Esc => {
                if self.detail {
                    self.detail = false;
                } else if !self.filter.is_empty() {
                    self.filter.clear();
                    self.rebuild();
                }
            }
            _ => {}
        }
        Flow::Continue
    }
}

/// Sorts by `key` (numbers largest first, text A to Z, `ascending` flips
/// numbers), then by total wait, then by row key, so equal rows keep still.
pub fn sort_rows(rows: &mut [TopRow], key: SortKey, ascending: bool, view: GroupBy) {
    rows.sort_by(|a, b| {
        let primary = match key {
            SortKey::Kind => {
                let k = |r: &TopRow| crate::output::short_kind(r.total.kind);
                k(a).cmp(&k(b))
            }
            SortKey::Name => row_label(&a.total, view).cmp(&row_label(&b.total, view)),
            _ => key.value(b).cmp(&key.value(a)),
        };
        let primary = if ascending == key.numeric() {
            primary.reverse()
        } else {
            primary
        };
        primary
            .then(b.total.wait.total_ns.cmp(&a.total.wait.total_ns))
            .then(a.key.cmp(&b.key))
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::WaitSplit;
    use ratatui::crossterm::event::KeyEventState;

    pub fn rec(lock: u64, caller: &str, tid: u32, comm: &str, waits: &[u64]) -> Record {
        let total: u64 = waits.iter().sum();
        Record {
            tid,
            comm: comm.into(),
            cgroup: Some("/test".into()),
            split: Some(WaitSplit::from_offcpu(total, total, 0)),
            ..Record::sample(lock, caller, waits)
        }
    }

    pub fn key(c: KeyCode) -> KeyEvent {
        KeyEvent {
            code: c,
            modifiers: KeyModifiers::NONE,
            kind: ratatui::crossterm::event::KeyEventKind::Press,
            state: KeyEventState::NONE,
        }
    }

    fn snap(records: Vec<Record>, at_ns: u64) -> Snapshot {
        let mut lost = BTreeMap::new();
        lost.insert("map_full".to_string(), 0);
        Snapshot {
            records,
            lost: vec![("kernel-contention".into(), Ok(lost))],
            at_ns,
            ..Default::default()
        }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn update_gives_interval_deltas_and_totals_per_row() {
        let mut app = App::new("pid 100".into(), GroupBy::Lock, 1_000_000_000);
        app.update(snap(
            vec![
                rec(0x10, "anon_pipe_write", 101, "ls-waiter", &[50 * MS; 3]),
                rec(0x20, "do_mmap", 102, "other", &[MS]),
            ],
            1_000_000_000,
        ));
        assert_eq!(app.rows.len(), 2);
        assert_eq!(app.rows[0].delta.wait.count, 3, "first interval: all");
        app.update(snap(
            vec![
                rec(0x10, "anon_pipe_write", 101, "ls-waiter", &[50 * MS; 5]),
                rec(0x20, "do_mmap", 102, "other", &[MS]),
            ],
            2_000_000_000,
        ));
        assert_eq!(app.progress.last_interval_ns, 1_000_000_000);
        let pipe = &app.rows[0];
        assert_eq!(pipe.total.lock.as_deref(), Some("0x10"));
        assert_eq!(pipe.total.count, 5);
        assert_eq!(pipe.delta.wait.count, 2);
        assert_eq!(pipe.delta.wait.total_ns, 100 * MS);
        let idle = &app.rows[1];
        assert_eq!((idle.total.count, idle.delta.wait.count), (1, 0));
        assert_eq!(app.sums(), ((2, 100 * MS), (6, 251 * MS)));
    }

    #[test]
    fn a_source_that_fails_to_read_keeps_its_rows_with_no_delta() {
        let mut app = App::new("x".into(), GroupBy::Lock, 1);
        app.update(snap(vec![rec(0x10, "f", 1, "a", &[MS])], 1));
        let mut s = snap(vec![], 2);
        s.failed = vec![("kernel-contention", "map read failed".into())];
        app.update(s);
        assert_eq!(app.rows.len(), 1);
        assert_eq!(app.rows[0].total.count, 1);
        assert_eq!(app.rows[0].delta.wait.count, 0);
        assert_eq!(
            app.health.errors,
            vec!["kernel-contention: map read failed"]
        );
    }

    #[test]
    fn loss_counters_show_growth_per_interval() {
        let mut app = App::new("x".into(), GroupBy::Lock, 1);
        let mut s = snap(vec![], 1);
        s.lost = vec![(
            "kernel-contention".into(),
            Ok([("map_full".to_string(), 3)].into_iter().collect()),
        )];
        app.update(s.clone());
        s.lost = vec![(
            "kernel-contention".into(),
            Ok([("map_full".to_string(), 5)].into_iter().collect()),
        )];
        app.update(s);
        assert_eq!(app.health.lost[0].counters["map_full"], 5);
        assert_eq!(app.health.lost[0].grew["map_full"], 2);
    }

    fn three_locks() -> App {
        let mut app = App::new("x".into(), GroupBy::Lock, 1);
        app.update(snap(
            vec![
                rec(0xa, "anon_pipe_write", 1, "ls-waiter", &[50 * MS; 2]),
                rec(0xb, "do_mmap", 2, "mapper", &[MS; 30]),
                rec(0xc, "ext4_sync", 3, "syncer", &[200 * MS]),
            ],
            1,
        ));
        app
    }

    fn labels(app: &App) -> Vec<String> {
        app.rows
            .iter()
            .map(|r| row_label(&r.total, app.view))
            .collect()
    }

    #[test]
    fn sort_keys_cycle_and_reverse() {
        let mut app = three_locks();
        assert_eq!(app.sort, SortKey::DeltaTotal);
        assert_eq!(labels(&app), ["c", "a", "b"], "most waited first");
        // s steps to Δmax
        app.on_key(key(KeyCode::Char('s')));
        assert_eq!(app.sort, SortKey::DeltaMax);
        assert_eq!(labels(&app), ["c", "a", "b"]);
        app.on_key(key(KeyCode::Char('S')));
        app.on_key(key(KeyCode::Char('S')));
        assert_eq!(app.sort, SortKey::DeltaCount);
        assert_eq!(labels(&app), ["b", "a", "c"], "30 waits, then 2, then 1");
        app.on_key(key(KeyCode::Char('r')));
        assert!(app.ascending);
        assert_eq!(labels(&app), ["c", "a", "b"], "reversed");
        app.on_key(key(KeyCode::Char('S')));
        assert_eq!(app.sort, SortKey::Name, "wraps around");
        assert!(app.ascending, "text sorts A to Z");
        assert_eq!(labels(&app), ["a", "b", "c"]);
    }

    #[test]
    fn filter_matches_caller_lock_and_comm_before_grouping() {
        let mut app = three_locks();
        for (typed, want) in [
            ("PIPE", vec!["a"]),
            ("0xb", vec!["b"]),
            ("sync", vec!["c"]),
            ("nothing-like-it", vec![]),
        ] {
            app.on_key(key(KeyCode::Char('/')));
            for c in typed.chars() {
                app.on_key(key(KeyCode::Char(c)));
            }
            assert_eq!(labels(&app), want, "live while typing {typed}");
            app.on_key(key(KeyCode::Enter));
            assert_eq!(app.filter, typed);
            assert_eq!(labels(&app), want, "applied {typed}");
        }
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.filter, "", "Esc clears the applied filter");
        assert_eq!(app.rows.len(), 3);

        // typing then Esc restores the filter from before
        app.filter = "pipe".into();
        app.rebuild();
        app.on_key(key(KeyCode::Char('/')));
        app.on_key(key(KeyCode::Char('x')));
        app.on_key(key(KeyCode::Backspace));
        app.on_key(key(KeyCode::Char('q')));
        assert!(app.input.is_some(), "q is text while typing");
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.filter, "pipe");

        // a comm filter counts only that thread's waits on a shared lock
        let mut app = App::new("x".into(), GroupBy::Lock, 1);
        app.update(snap(
            vec![
                rec(0xa, "anon_pipe_write", 1, "ls-waiter", &[MS; 2]),
                rec(0xa, "anon_pipe_write", 2, "ls-holder", &[MS; 7]),
            ],
            1,
        ));
        assert_eq!(app.rows[0].total.count, 9);
        app.filter = "waiter".into();
        app.rebuild();
        assert_eq!(app.rows.len(), 1);
        assert_eq!(app.rows[0].total.count, 2);
        assert_eq!(app.rows[0].total.comm.as_deref(), Some("ls-waiter"));
    }

    #[test]
    fn selection_follows_its_row_across_refreshes_and_views_cycle() {
        let mut app = three_locks();
        app.on_key(key(KeyCode::Down));
        assert_eq!(row_label(&app.rows[app.sel_idx].total, app.view), "a");
        // a refresh where b waited most: a stays selected at its new place
        app.update(snap(
            vec![
                rec(0xa, "anon_pipe_write", 1, "ls-waiter", &[50 * MS; 2]),
                rec(0xb, "do_mmap", 2, "mapper", &[MS; 1000]),
                rec(0xc, "ext4_sync", 3, "syncer", &[200 * MS]),
            ],
            2,
        ));
        assert_eq!(labels(&app), ["b", "c", "a"]);
        assert_eq!(app.selected(), Some(2));
        app.on_key(key(KeyCode::End));
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.selected(), Some(2), "clamped at the end");
        app.on_key(key(KeyCode::Enter));
        let d = app.detail().expect("detail");
        assert_eq!(d.callers[0].0, "anon_pipe_write");
        assert_eq!(d.threads[0], ("ls-waiter".into(), 100, 1, 2, 100 * MS));
        for v in [
            GroupBy::Caller,
            GroupBy::Task,
            GroupBy::Cgroup,
            GroupBy::Lock,
        ] {
            app.on_key(key(KeyCode::Char('v')));
            assert_eq!(app.view, v);
        }
        app.on_key(key(KeyCode::BackTab));
        assert_eq!(app.view, GroupBy::Cgroup);
        assert_eq!(app.rows.len(), 1, "one cgroup");
        assert_eq!(app.rows[0].total.count, 1003);
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Flow::Quit);
        let ctrl_c = KeyEvent {
            modifiers: KeyModifiers::CONTROL,
            ..key(KeyCode::Char('c'))
        };
        app.input = Some((String::new(), String::new()));
        assert_eq!(
            app.on_key(ctrl_c),
            Flow::Quit,
            "Ctrl-C quits even while typing"
        );
    }
}
