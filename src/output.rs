//! Printers. Each writes to any `io::Write`, so tests capture into a Vec.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::model::{GroupBy, LockKind, Row};
pub use crate::status::SourceStatus;
use crate::units::fmt_ns;

/// JSON contract version of `report --json` and `trace --json`.
pub const JSON_VERSION: u32 = 1;

/// A whole report: the `report --json` object.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Report {
    pub version: u32,
    pub duration_ns: u64,
    pub targets: String,
    #[serde(deserialize_with = "crate::model::static_str")]
    pub by: crate::model::StaticStr,
    /// `report -i`: which interval this is (1, 2, ...); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    pub sources: Vec<SourceStatus>,
    pub lost: BTreeMap<String, u64>,
    /// lockscope's own cost: run count and kernel run time of each BPF
    /// program (run time only with `sysctl kernel.bpf_stats_enabled=1`).
    pub bpf_programs: Vec<crate::status::ProgStats>,
    pub rows: Vec<Row>,
    /// Who held locks while others waited (sources that know it), most
    /// wait caused first.
    pub holders: Vec<crate::model::HolderRow>,
    /// Deadlocks found while tracing (`deadlock`): absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deadlocks: Vec<crate::deadlock::Deadlock>,
}

pub fn by_name(by: GroupBy) -> &'static str {
    match by {
        GroupBy::Lock => "lock",
        GroupBy::Caller => "caller",
        GroupBy::Task => "task",
        GroupBy::Cgroup => "cgroup",
    }
}

/// The kind labels of the human outputs (`report`/`run` tables, `trace`
/// lines, `top`) and the JSON `kind` names they stand for: the one mapping
/// between the two. Each entry is (kind, table label, what it is); the
/// JSON name is [`LockKind::name`]. A kind without an entry is shown under
/// its JSON name. [`kind_legend`] renders it for `--help` and docs.
pub const KIND_LABELS: &[(LockKind, &str, &str)] = &[
    (LockKind::Spinlock, "spinlock", "kernel spinlock"),
    (
        LockKind::RwlockRead,
        "rwlock:R",
        "kernel rwlock_t, read side",
    ),
    (
        LockKind::RwlockWrite,
        "rwlock:W",
        "kernel rwlock_t, write side",
    ),
    (LockKind::Mutex, "mutex", "kernel struct mutex"),
    (
        LockKind::RwsemRead,
        "rwsem:R",
        "kernel rw_semaphore (mmap_lock, i_rwsem), read",
    ),
    (
        LockKind::RwsemWrite,
        "rwsem:W",
        "kernel rw_semaphore, write",
    ),
    (LockKind::RtMutex, "rt-mutex", "kernel rt_mutex"),
    (
        LockKind::RwlockRtRead,
        "rwlockrt:R",
        "PREEMPT_RT rwlock_t, read",
    ),
    (
        LockKind::RwlockRtWrite,
        "rwlockrt:W",
        "PREEMPT_RT rwlock_t, write",
    ),
    (
        LockKind::PercpuRwsemRead,
        "pcpu-sem:R",
        "kernel percpu_rw_semaphore, read",
    ),
    (
        LockKind::PercpuRwsemWrite,
        "pcpu-sem:W",
        "kernel percpu_rw_semaphore, write",
    ),
    (
        LockKind::RunQueue,
        "runq",
        "not a lock: a runnable thread waiting for a CPU",
    ),
    (
        LockKind::PickNext,
        "picknext",
        "not a lock: time in pick_next_task_fair",
    ),
    (LockKind::UserMutex, "pmutex", "pthread_mutex_t"),
    (
        LockKind::UserRwlockRead,
        "prwlock:R",
        "pthread_rwlock_t, read",
    ),
    (
        LockKind::UserRwlockWrite,
        "prwlock:W",
        "pthread_rwlock_t, write",
    ),
    (LockKind::UserSpin, "pspin", "pthread_spinlock_t"),
    (
        LockKind::UserCond,
        "pcond",
        "not a lock: pthread_cond_t wait",
    ),
    (LockKind::Futex, "futex", "not a lock: any futex(2) wait"),
    (
        LockKind::LwlockExclusive,
        "lwlock:X",
        "PostgreSQL LWLock, exclusive",
    ),
    (
        LockKind::LwlockShared,
        "lwlock:S",
        "PostgreSQL LWLock, shared",
    ),
    (
        LockKind::LwlockWaitFree,
        "lwlock:W",
        "PostgreSQL LWLock, waited on until free",
    ),
    (
        LockKind::PgLock,
        "pglock",
        "PostgreSQL heavyweight lock (relation, transaction, ...)",
    ),
    (
        LockKind::PgDeadlock,
        "pgdeadlock",
        "not a wait: PostgreSQL found a deadlock",
    ),
    (
        LockKind::JavaMonitor,
        "jmonitor",
        "Java object monitor (HotSpot probes)",
    ),
    (
        LockKind::UffdFault,
        "uffd",
        "not a lock: a page fault waiting for its userfaultfd's resolver (deadlocks)",
    ),
];

/// Short kind for tables: its [`KIND_LABELS`] label (JSON uses
/// `LockKind::name`); `(mixed)` for a row of several kinds.
pub fn short_kind(k: Option<LockKind>) -> String {
    match k {
        None => "(mixed)".into(),
        Some(LockKind::Unknown(f)) => format!("?{f:#x}"),
        Some(k) => KIND_LABELS
            .iter()
            .find(|(kind, _, _)| *kind == k)
            .map_or_else(|| k.name(), |(_, label, _)| label.to_string()),
    }
}

/// The legend of [`KIND_LABELS`], one `label  json-name  meaning` line each.
pub fn kind_legend() -> String {
    KIND_LABELS
        .iter()
        .map(|(k, label, what)| format!("{label:<10} {:<20} {what}\n", k.name()))
        .collect()
}

/// Cuts `s` to at most `w` characters, marking the cut with `…`.
pub fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else if w == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(w - 1).collect();
        t.push('…');
        t
    }
}

/// `head` whole (numbers are never cut) and then `tail` (a name), cut to
/// what is left of `width` but never to fewer than [`MIN_NAME`]
/// characters.
pub fn fit_tail(head: &str, tail: &str, width: usize) -> String {
    let room = width.saturating_sub(head.chars().count()).max(MIN_NAME);
    format!("{head}{}", fit(tail, room))
}

/// Breaks a line of prose at spaces into lines of at most `width`
/// characters, the later ones indented two more than the first; never
/// cuts a word (a word longer than the room gets a line of its own).
pub fn wrap_line(s: &str, width: usize) -> Vec<String> {
    if s.chars().count() <= width {
        return vec![s.to_string()];
    }
    let body = s.trim_start_matches(' ');
    let lead = " ".repeat(s.len() - body.len());
    let indent = format!("{lead}  ");
    let mut lines = Vec::new();
    let mut cur = lead.clone();
    let mut empty = true;
    for word in body.split(' ') {
        if !empty && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(cur);
            cur = indent.clone();
            empty = true;
        }
        if !empty {
            cur.push(' ');
        }
        cur.push_str(word);
        empty = false;
    }
    lines.push(cur);
    lines
}

/// No width limit: stdout is not a terminal, or `--wide`.
pub const UNLIMITED: usize = usize::MAX;

/// Where a row is shown: lock rows are ranked together and make the
/// headline; waits that are not for a lock (futex waits, run-queue
/// latency, time picking the next task) get small sections of their own
/// under the lock table, with the same columns. JSON keeps every row in
/// one list with its `source` and `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Lock,
    Futex,
    RunQueue,
    PickNext,
}

impl Section {
    pub const ALL: [Section; 4] = [
        Section::Lock,
        Section::Futex,
        Section::RunQueue,
        Section::PickNext,
    ];

    pub fn of(r: &Row) -> Section {
        use crate::sources::{futex, picknext, sched};
        match r.kind {
            Some(LockKind::RunQueue) => Section::RunQueue,
            Some(LockKind::PickNext) => Section::PickNext,
            Some(LockKind::Futex) => Section::Futex,
            _ if r.source == sched::SOURCE => Section::RunQueue,
            _ if r.source == picknext::SOURCE => Section::PickNext,
            _ if r.source == futex::SOURCE => Section::Futex,
            _ => Section::Lock,
        }
    }

    /// The title of the section (none for the lock table).
    pub fn title(self) -> Option<&'static str> {
        match self {
            Section::Lock => None,
            Section::Futex => Some("futex waits:"),
            Section::RunQueue => Some("run-queue latency:"),
            Section::PickNext => Some("pick_next_task_fair time:"),
        }
    }
}

/// Kernel addresses in tables drop the constant `ffff` prefix noise only
/// when a name is missing; the full address is always in JSON.
fn lock_label(r: &Row) -> String {
    match (&r.lock_name, &r.lock) {
        (Some(n), _) => n.clone(),
        (None, Some(a)) => a.trim_start_matches("0x").to_string(),
        (None, None) => "(several)".into(),
    }
}

fn last_column(r: &Row, by: GroupBy) -> String {
    let caller = r.caller.clone().unwrap_or_else(|| "?".into());
    let runq = r.kind == Some(LockKind::RunQueue);
    match by {
        // the kind column already says runq
        GroupBy::Lock if runq => lock_label(r),
        GroupBy::Caller if runq => "(waiting for a CPU)".into(),
        GroupBy::Lock => format!("{} {}", lock_label(r), caller),
        GroupBy::Caller => match &r.lock_name {
            Some(n) => format!("{caller} [{n}]"),
            None => caller,
        },
        GroupBy::Task => format!(
            "{} {}/{}",
            r.comm.as_deref().unwrap_or("?"),
            r.pid.map_or("?".into(), |p| p.to_string()),
            r.tid.map_or("*".into(), |t| t.to_string()),
        ),
        GroupBy::Cgroup => match (&r.cgroup, &r.memcg) {
            (None, None) => "?".into(),
            (c, m) => crate::model::cgroup_label(c.as_deref(), m.as_deref()),
        },
    }
}

fn last_header(by: GroupBy) -> &'static str {
    match by {
        GroupBy::Lock => "lock, caller",
        GroupBy::Caller => "caller",
        GroupBy::Task => "comm pid/tid",
        GroupBy::Cgroup => "cgroup",
    }
}

/// Wraps `items` joined by ", " into lines of at most `width`, each
/// starting with `lead` (first) or spaces (rest).
pub fn wrap_list(lead: &str, items: &[String], width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = lead.to_string();
    let indent = " ".repeat(lead.chars().count());
    for (i, it) in items.iter().enumerate() {
        let piece = if i + 1 < items.len() {
            format!("{it},")
        } else {
            it.clone()
        };
        let sep = if cur.trim().is_empty() || cur == lead {
            ""
        } else {
            " "
        };
        if cur.chars().count() + sep.len() + piece.chars().count() > width
            && cur != lead
            && cur != indent
        {
            lines.push(cur);
            cur = format!("{indent}{piece}");
        } else {
            cur = format!("{cur}{sep}{piece}");
        }
    }
    lines.push(cur);
    lines
}

/// What the command that produced a report can change to lose less: the
/// in-kernel maps' capacity (`--max-entries`) and, for `trace`, the ring
/// buffer's size (`--ringbuf-mb`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// `--max-entries` in effect.
    pub max_entries: u32,
    /// `--ringbuf-mb` in effect, when the command has one (`trace`).
    pub ringbuf_mb: Option<u32>,
}

/// Total of the loss counters.
pub fn lost_total(lost: &BTreeMap<String, u64>) -> u64 {
    lost.values().fold(0u64, |a, v| a.saturating_add(*v))
}

/// The remedy of one loss counter (`source.name` or a kernel-contention
/// name), where a flag changes it: a larger map for map-full and
/// holds-full losses, a larger ring buffer for ring-buffer drops.
pub fn remedy(counter: &str, limits: &Limits) -> Option<String> {
    let name = counter.rsplit('.').next().unwrap_or(counter);
    match name {
        "map_full" | "holds_full" => {
            let n = limits.max_entries.max(1).saturating_mul(4);
            Some(format!(
                "--max-entries {n} (now {}; more distinct keys than that)",
                limits.max_entries
            ))
        }
        "ringbuf_dropped" => limits.ringbuf_mb.map(|mb| {
            let n = mb.saturating_mul(4).clamp(2, 1024);
            format!("--ringbuf-mb {n} (now {mb})")
        }),
        _ => None,
    }
}

/// The one warning line printed on stderr at the end when any loss counter
/// is not zero: the total, each non-zero counter, and its remedy.
pub fn loss_warning(lost: &BTreeMap<String, u64>, limits: &Limits) -> Option<String> {
    let total = lost_total(lost);
    if total == 0 {
        return None;
    }
    let parts: Vec<String> = lost
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| match remedy(k, limits) {
            Some(r) => format!("{k} {v}: rerun with {r}"),
            None => format!("{k} {v}"),
        })
        .collect();
    Some(format!(
        "lockscope: WARNING: {total} operations lost ({}); the counts are lower bounds",
        parts.join("; ")
    ))
}

/// The footer: with no loss one line (`lost: none`, with the overhead when
/// it fits), else `LOST:` and each non-zero counter (every counter is in
/// the JSON).
pub fn lost_lines(lost: &BTreeMap<String, u64>, width: usize) -> Vec<String> {
    if lost_total(lost) == 0 {
        return vec!["lost: none".to_string()];
    }
    let items: Vec<String> = lost
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    wrap_list("LOST: ", &items, width)
}

/// The losses since `prev` (an earlier reading of the same counters):
/// what one interval lost. Every counter stays (the JSON lists them all).
pub fn lost_since(
    lost: &BTreeMap<String, u64>,
    prev: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    lost.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(prev.get(k).copied().unwrap_or(0)),
            )
        })
        .collect()
}

/// Programs' runs and run time since `prev` (matched by program id).
pub fn progs_since(
    progs: &[crate::status::ProgStats],
    prev: &[crate::status::ProgStats],
) -> Vec<crate::status::ProgStats> {
    progs
        .iter()
        .map(|p| {
            let mut d = p.clone();
            if let Some(o) = prev.iter().find(|o| o.id == p.id && o.name == p.name) {
                d.run_cnt = p.run_cnt.saturating_sub(o.run_cnt);
                d.run_time_ns = p.run_time_ns.saturating_sub(o.run_time_ns);
                d.recursion_misses = p.recursion_misses.saturating_sub(o.recursion_misses);
            }
            d
        })
        .collect()
}

/// The mark the headline carries when anything was lost.
pub fn lost_mark(lost: &BTreeMap<String, u64>) -> Option<String> {
    match lost_total(lost) {
        0 => None,
        n => Some(format!("[{n} LOST, see below] ")),
    }
}

/// The name column is never narrower than this: on a narrower terminal
/// the names go on a line of their own under the numbers.
const MIN_NAME: usize = 20;

/// Which optional columns a table has: `acquired` when a shown row's
/// source sees every acquisition, `held` when one measures holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Optional {
    acquired: bool,
    holds: bool,
}

impl Optional {
    fn of(rows: &[&Row]) -> Optional {
        Optional {
            acquired: rows.iter().any(|r| r.acquired.is_some()),
            holds: rows.iter().any(|r| r.hold_ns.is_some()),
        }
    }
}

/// The columns of the table before the name, sized to the widest value
/// shown (never cut) and at least their usual widths.
struct Columns {
    /// Widths of contended, (acquired,) total, max, avg, p99 and (held).
    nums: Vec<usize>,
    kind: usize,
    opt: Optional,
}

impl Columns {
    fn header_cells(opt: Optional) -> Vec<&'static str> {
        let mut h = vec!["contended"];
        if opt.acquired {
            h.push("acquired");
        }
        h.extend(["total", "max", "avg", "p99"]);
        if opt.holds {
            h.push("held");
        }
        h
    }

    fn cells(r: &Row, opt: Optional) -> (Vec<String>, String) {
        let mut nums = vec![r.count.to_string()];
        if opt.acquired {
            nums.push(r.acquired.map_or("-".into(), |n| n.to_string()));
        }
        nums.extend([
            fmt_ns(r.wait.total_ns),
            fmt_ns(r.wait.max_ns),
            fmt_ns(r.wait.avg_ns()),
            fmt_ns(r.wait.p99()),
        ]);
        if opt.holds {
            nums.push(r.hold_ns.map_or("-".into(), |h| fmt_ns(h.total)));
        }
        (nums, short_kind(r.kind))
    }

    fn new(rows: &[&Row], opt: Optional) -> Columns {
        let mut nums: Vec<usize> = Self::header_cells(opt)
            .iter()
            .enumerate()
            .map(|(i, h)| if i == 0 { 9 } else { 8 }.max(h.len()))
            .collect();
        let mut kind = 10;
        for r in rows {
            let (cells, k) = Self::cells(r, opt);
            for (w, c) in nums.iter_mut().zip(&cells) {
                *w = (*w).max(c.chars().count());
            }
            kind = kind.max(k.chars().count());
        }
        Columns { nums, kind, opt }
    }

    /// The line up to the name column, ending in a space.
    fn lead(&self, nums: &[String], kind: &str) -> String {
        let mut s = String::new();
        for (i, (w, c)) in self.nums.iter().zip(nums).enumerate() {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(&format!("{c:>w$}"));
        }
        s.push_str(&format!("  {kind:<w$} ", w = self.kind));
        s
    }

    fn header(&self) -> String {
        let h: Vec<String> = Self::header_cells(self.opt)
            .iter()
            .map(|s| s.to_string())
            .collect();
        self.lead(&h, "kind")
    }
}

/// One row: the numbers whole, the name column cut to what is left of
/// `width` (or on lines of its own when less than [`MIN_NAME`] is left).
fn write_row(
    w: &mut dyn Write,
    r: &Row,
    by: GroupBy,
    cols: &Columns,
    width: usize,
) -> io::Result<()> {
    let (nums, kind) = Columns::cells(r, cols.opt);
    let lead = cols.lead(&nums, &kind);
    let lead_len = lead.chars().count();
    let last = last_column(r, by);
    let split = by == GroupBy::Lock && r.kind != Some(LockKind::RunQueue);
    let rest = width.saturating_sub(lead_len);
    if rest >= MIN_NAME {
        if split && last.chars().count() > rest {
            // lock on this line, its caller on the next, under it
            writeln!(w, "{lead}{}", fit(&lock_label(r), rest))?;
            let caller = format!("└ {}", r.caller.as_deref().unwrap_or("?"));
            writeln!(w, "{}{}", " ".repeat(lead_len), fit(&caller, rest))?;
        } else {
            writeln!(w, "{lead}{}", fit(&last, rest))?;
        }
        return Ok(());
    }
    // narrow: the numbers, then the names under them
    writeln!(w, "{}", lead.trim_end())?;
    let room = width.saturating_sub(4).max(MIN_NAME);
    if split && last.chars().count() > room {
        writeln!(w, "    {}", fit(&lock_label(r), room))?;
        let caller = format!("└ {}", r.caller.as_deref().unwrap_or("?"));
        writeln!(w, "    {}", fit(&caller, room))?;
    } else {
        writeln!(w, "    {}", fit(&last, room))?;
    }
    Ok(())
}

/// Human table, at most `width` columns wide ([`UNLIMITED`]: whole names
/// at any length). Numbers are never cut: only names, and only on a
/// terminal narrower than they are; prose lines wrap. Lock rows are
/// ranked in the table; futex, run-queue and pick-next rows follow in
/// sections of their own ([`Section`]), `top` rows each.
pub fn write_table(
    w: &mut dyn Write,
    rep: &Report,
    by: GroupBy,
    top: usize,
    width: usize,
) -> io::Result<()> {
    let width = width.max(60);
    let prose = |w: &mut dyn Write, l: &str| -> io::Result<()> {
        for l in wrap_line(l, width) {
            writeln!(w, "{l}")?;
        }
        Ok(())
    };
    for s in &rep.sources {
        let line = if s.available {
            format!(
                "{}: via {}{}",
                s.name,
                s.backend.as_deref().unwrap_or("?"),
                s.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
        } else {
            format!(
                "{}: unavailable: {}",
                s.name,
                s.reason.as_deref().unwrap_or("?")
            )
        };
        prose(w, &line)?;
    }
    for l in summary_lines(rep) {
        prose(w, &l)?;
    }
    writeln!(w)?;
    if rep.rows.is_empty() {
        writeln!(w, "no lock contention seen")?;
    } else {
        let sections: Vec<(Section, Vec<&Row>)> = Section::ALL
            .iter()
            .map(|&s| {
                let rows: Vec<&Row> = rep.rows.iter().filter(|r| Section::of(r) == s).collect();
                (s, rows)
            })
            .collect();
        let shown: Vec<&Row> = sections
            .iter()
            .flat_map(|(_, rows)| rows.iter().take(top).copied())
            .collect();
        // a column of all acquisitions when any row's source sees them,
        // of total hold time when any row measures holds
        let cols = Columns::new(&shown, Optional::of(&shown));
        let head = cols.header();
        let rest = width.saturating_sub(head.chars().count());
        if rest >= MIN_NAME {
            writeln!(w, "{head}{}", fit(last_header(by), rest))?;
        } else {
            writeln!(w, "{}", head.trim_end())?;
            writeln!(w, "    {}", last_header(by))?;
        }
        let mut hidden = 0;
        for (s, rows) in &sections {
            if let Some(title) = s.title() {
                if rows.is_empty() {
                    continue;
                }
                writeln!(w, "{title}")?;
            } else if rows.is_empty() {
                writeln!(w, "no lock contention seen")?;
            }
            for r in rows.iter().take(top) {
                write_row(w, r, by, &cols, width)?;
            }
            hidden += rows.len().saturating_sub(top);
            if *s == Section::Lock {
                if let Some(l) = rows
                    .first()
                    .and_then(|r| split_line(std::slice::from_ref(*r), by))
                {
                    prose(w, &l)?;
                }
                let failed: u64 = rows.iter().map(|r| r.failed).sum();
                let partial: u64 = rows.iter().map(|r| r.partial).sum();
                if failed + partial > 0 {
                    prose(
                        w,
                        &format!(
                            "{failed} failed calls (trylock busy, timed out), {partial} partial \
                             (begun before tracing: counted, not timed)"
                        ),
                    )?;
                }
                for l in holder_lines(&rep.holders, 5, width) {
                    writeln!(w, "{l}")?;
                }
            }
        }
        if hidden > 0 {
            writeln!(w, "... {hidden} more rows (--top N, or --json for all)")?;
        }
    }
    writeln!(w)?;
    let overhead = overhead_line(&rep.bpf_programs);
    if lost_total(&rep.lost) == 0 {
        // no loss: one line
        match overhead {
            Some(o) => prose(w, &format!("lost: none; {o}"))?,
            None => writeln!(w, "lost: none")?,
        }
    } else {
        for l in lost_lines(&rep.lost, width) {
            writeln!(w, "{l}")?;
        }
        if let Some(o) = overhead {
            prose(w, &o)?;
        }
    }
    Ok(())
}

/// The top stacks of the first `rows` rows that have any (`--stacks`):
/// wait stacks, then (`--hold-stacks`) the acquisitions' stacks weighted by
/// the holds that followed.
pub fn write_stacks(
    w: &mut dyn Write,
    rep: &Report,
    by: GroupBy,
    rows: usize,
    width: usize,
) -> io::Result<()> {
    write_stacks_of(w, rep, by, rows, width, false)?;
    write_stacks_of(w, rep, by, rows, width, true)
}

fn write_stacks_of(
    w: &mut dyn Write,
    rep: &Report,
    by: GroupBy,
    rows: usize,
    width: usize,
    holds: bool,
) -> io::Result<()> {
    const FRAMES: usize = 12;
    let weight = |s: &crate::model::StackSample| if holds { s.hold_total_ns } else { s.total_ns };
    let count = |s: &crate::model::StackSample| if holds { s.hold_count } else { s.count };
    for (i, (r, mut stacks)) in rep
        .rows
        .iter()
        .map(|r| {
            let st: Vec<&crate::model::StackSample> =
                r.stacks.iter().filter(|s| count(s) > 0).collect();
            (r, st)
        })
        .filter(|(_, st)| !st.is_empty())
        .take(rows)
        .enumerate()
    {
        stacks.sort_by_key(|s| std::cmp::Reverse(weight(s)));
        let st = stacks[0];
        writeln!(w)?;
        let head = if holds {
            let hold = r.hold_ns.map(|h| h.total).unwrap_or(0);
            format!(
                "hold stack {} of {} [{}]: {} holds, {} of {} held",
                i + 1,
                last_column(r, by),
                short_kind(r.kind),
                st.hold_count,
                fmt_ns(st.hold_total_ns),
                fmt_ns(hold)
            )
        } else {
            format!(
                "stack {} of {} [{}]: {} of {} waits, {} of {}",
                i + 1,
                last_column(r, by),
                short_kind(r.kind),
                st.count,
                r.count,
                fmt_ns(st.total_ns),
                fmt_ns(r.wait.total_ns)
            )
        };
        for l in wrap_line(&head, width) {
            writeln!(w, "{l}")?;
        }
        for f in st.kernel.iter().take(FRAMES) {
            writeln!(w, "{}", fit(&format!("    {f}"), width))?;
        }
        if !st.user.is_empty() {
            writeln!(w, "    -- user --")?;
            for f in st.user.iter().take(FRAMES) {
                writeln!(w, "{}", fit(&format!("    {f}"), width))?;
            }
        }
        if stacks.len() > 1 {
            writeln!(w, "    ({} more stacks: --json)", stacks.len() - 1)?;
        }
    }
    Ok(())
}

/// The lines under the sources: the headline (contended waits of the
/// lock rows whose `count` is contended waits: the contention sources'
/// and those that tell contended acquisitions from the others; never
/// futex, run-queue or pick-next rows), then one line per source that
/// sees holds (its acquisitions) and one per section of waits that are
/// not for a lock.
pub fn summary_lines(rep: &Report) -> Vec<String> {
    let of = |s: Section| rep.rows.iter().filter(move |r| Section::of(r) == s);
    let plain: Vec<&Row> = of(Section::Lock)
        .filter(|r| r.hold_ns.is_none() || r.acquired.is_some())
        .collect();
    let others = plain.len() < rep.rows.len();
    let mark = lost_mark(&rep.lost).unwrap_or_default();
    let mut lines = vec![if plain.is_empty() && others {
        format!("{mark}{} for {}:", rep.targets, fmt_ns(rep.duration_ns))
    } else {
        format!(
            "{mark}{} for {}: {} contended waits, {} waiting in total",
            rep.targets,
            fmt_ns(rep.duration_ns),
            plain.iter().map(|r| r.count).sum::<u64>(),
            fmt_ns(plain.iter().map(|r| r.wait.total_ns).sum())
        )
    }];
    // per source: acquisitions (all of them where the source tells
    // contended ones apart, with those), wait, hold, failed, partial
    #[derive(Default)]
    struct Held {
        acquired: Option<u64>,
        contended: u64,
        wait: u64,
        hold: u64,
        failed: u64,
        partial: u64,
    }
    let mut held: BTreeMap<&str, Held> = BTreeMap::new();
    for r in of(Section::Lock) {
        if let Some(h) = &r.hold_ns {
            let e = held.entry(r.source).or_default();
            if let Some(n) = r.acquired {
                *e.acquired.get_or_insert(0) += n;
            }
            e.contended += r.count;
            e.wait += r.wait.total_ns;
            e.hold += h.total;
            e.failed += r.failed;
            e.partial += r.partial;
        }
    }
    for (src, h) in held {
        let n = match h.acquired {
            Some(all) => format!("{all} acquisitions ({} contended)", h.contended),
            None => format!("{} acquisitions", h.contended),
        };
        lines.push(format!(
            "  {src}: {n}, {} waiting, {} held, {} failed, {} partial",
            fmt_ns(h.wait),
            fmt_ns(h.hold),
            h.failed,
            h.partial
        ));
    }
    // the sections of waits that are not for a lock: (waits, their total
    // wait, those that slept), None when the section has no row
    let sums = |s: Section| {
        let rows: Vec<&Row> = of(s).collect();
        (!rows.is_empty()).then(|| {
            rows.iter().fold((0u64, 0u64, 0u64), |(n, t, w), r| {
                (n + r.count, t + r.wait.total_ns, w + r.slept)
            })
        })
    };
    if let Some((n, total, _)) = sums(Section::Futex) {
        lines.push(format!(
            "  futex: {n} waits, {} in total (not only locks: see futex waits)",
            fmt_ns(total)
        ));
    }
    if let Some((n, total, woken)) = sums(Section::RunQueue) {
        lines.push(format!(
            "  run queue: {n} waits for a CPU, {} in total, {} after a preemption",
            fmt_ns(total),
            n.saturating_sub(woken)
        ));
    }
    if let Some((n, total, _)) = sums(Section::PickNext) {
        lines.push(format!(
            "  pick_next_task_fair: {n} calls, {} in total",
            fmt_ns(total)
        ));
    }
    lines
}

/// Where the top row's wait went: "top row waited 268 ms: 180 ms asleep,
/// 20.0 ms runnable, 68.0 ms on CPU".
pub fn split_line(rows: &[Row], by: GroupBy) -> Option<String> {
    let r = rows.first()?;
    let sp = r.wait_split?;
    let _ = by;
    Some(format!(
        "top row waited {}: {} asleep, {} runnable, {} on CPU",
        fmt_ns(r.wait.total_ns),
        fmt_ns(sp.asleep),
        fmt_ns(sp.runnable),
        fmt_ns(sp.oncpu)
    ))
}

/// The "top holders" section: who held locks while others waited.
pub fn holder_lines(holders: &[crate::model::HolderRow], top: usize, width: usize) -> Vec<String> {
    if holders.is_empty() {
        return Vec::new();
    }
    let mut out = wrap_line(
        "top holders (waits that began while they held the lock):",
        width,
    );
    for h in holders.iter().take(top) {
        let who = match &h.holder_comm {
            Some(c) => format!("{} ({c})", h.holder_tid),
            None => h.holder_tid.to_string(),
        };
        let l = format!(
            "  {:>8} in {:>5} waits  {:<9}  held by {who}, lock {}",
            fmt_ns(h.wait_ns),
            h.waits,
            short_kind(Some(h.kind)),
            h.lock.trim_start_matches("0x")
        );
        out.extend(wrap_line(&l, width));
    }
    out
}

/// How to get lockscope's per-run BPF cost when the kernel does not count
/// it (`kernel.bpf_stats_enabled` is 0: no run count, no run time).
pub const BPF_COST_HINT: &str = "BPF cost: sysctl kernel.bpf_stats_enabled=1";

/// Whether the kernel counts BPF programs' runs and run time
/// (`/proc/sys/kernel/bpf_stats_enabled`); None when it cannot be read.
pub fn bpf_stats_enabled() -> Option<bool> {
    let s = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").ok()?;
    Some(s.trim() != "0")
}

/// "overhead per run: begin 206 ns x 470k, end 203 ns x 470k" from
/// program stats; without the kernel's stats, how to turn them on (never
/// a run count without a cost).
pub fn overhead_line(progs: &[crate::status::ProgStats]) -> Option<String> {
    if progs.is_empty() {
        return None;
    }
    if progs.iter().all(|p| p.run_time_ns == 0) {
        return overhead_text(progs, bpf_stats_enabled());
    }
    overhead_text(progs, Some(true))
}

/// [`overhead_line`] given whether the kernel's BPF stats are on.
pub fn overhead_text(progs: &[crate::status::ProgStats], stats: Option<bool>) -> Option<String> {
    if progs.is_empty() {
        return None;
    }
    if progs.iter().all(|p| p.run_time_ns == 0) {
        return Some(
            if stats == Some(true) && progs.iter().all(|p| p.run_cnt == 0) {
                "BPF cost: none (no program ran)".to_string()
            } else {
                BPF_COST_HINT.to_string()
            },
        );
    }
    let parts: Vec<String> = progs
        .iter()
        .filter(|p| p.run_cnt > 0)
        .map(|p| {
            let short = p
                .name
                .trim_start_matches("contention_")
                .trim_end_matches("_btf")
                .trim_end_matches("_tp");
            format!("{short} {} ns x {}", p.run_time_ns / p.run_cnt, p.run_cnt)
        })
        .collect();
    Some(format!("overhead per run: {}", parts.join(", ")))
}

/// The width human output is laid out for: [`UNLIMITED`] when stdout is
/// not a terminal (whole names, as `perf lock contention` piped), else
/// `$COLUMNS` when set, else the terminal's own width (TIOCGWINSZ), else 80.
pub fn term_width() -> usize {
    use std::io::IsTerminal;
    if !io::stdout().is_terminal() {
        return UNLIMITED;
    }
    if let Some(c) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
    {
        return c;
    }
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which
    // points to a valid, writable `winsize` we own.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        80
    }
}

/// The width of tables: [`UNLIMITED`] with `--wide`, else [`term_width`].
pub fn table_width(wide: bool) -> usize {
    if wide { UNLIMITED } else { term_width() }
}

/// Appends `,"FIELD":VALUE` for each named field of `$v`, the key the
/// field's name (as serde derives it) and the value as [`JsonValue`]
/// writes it.
macro_rules! json_fields {
    ($buf:expr, $v:expr, $($f:ident),+) => {
        $(
            $buf.extend_from_slice(concat!(",\"", stringify!($f), "\":").as_bytes());
            JsonValue::write_json(&$v.$f, $buf);
        )+
    };
}

/// Appends one `trace --json` line (without its newline) for `e` to `buf`:
/// `{"type":TY,` then the event's fields in the order and spelling of its
/// derived `Serialize` (the same bytes `serde_json` writes; a test checks
/// it), written directly: no map, no per-field escaping of constant keys,
/// no allocation beyond `buf`'s growth.
pub fn event_json(buf: &mut Vec<u8>, ty: &str, e: &crate::model::Event) {
    buf.extend_from_slice(b"{\"type\":");
    json_str(buf, ty);
    json_fields!(buf, e, source);
    buf.extend_from_slice(b",\"kind\":");
    match e.kind.known_name() {
        Some(k) => json_str(buf, k),
        None => json_str(buf, &e.kind.name()),
    }
    buf.extend_from_slice(b",\"lock\":\"0x");
    json_hex(buf, e.lock);
    buf.push(b'"');
    json_fields!(buf, e, lock_name, caller, pid, tid, comm, cgroup);
    json_fields!(buf, e, begin_ns, end_ns, released_ns, wait_ns, hold_ns);
    json_fields!(buf, e, aborted, failed, ret, spun, slept, partial);
    json_fields!(buf, e, holder_tid, split);
    buf.push(b'}');
}

/// A value of an event, written as serde_json writes it.
trait JsonValue {
    fn write_json(&self, buf: &mut Vec<u8>);
}

/// Integers as `itoa` writes them (serde_json's own digits).
macro_rules! json_int {
    ($($t:ty),+) => {
        $(impl JsonValue for $t {
            fn write_json(&self, buf: &mut Vec<u8>) {
                buf.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
            }
        })+
    };
}
json_int!(u64, u32, i32);

impl JsonValue for bool {
    fn write_json(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(if *self { b"true" } else { b"false" });
    }
}

impl JsonValue for str {
    fn write_json(&self, buf: &mut Vec<u8>) {
        json_str(buf, self);
    }
}

impl JsonValue for String {
    fn write_json(&self, buf: &mut Vec<u8>) {
        self.as_str().write_json(buf);
    }
}

impl<T: JsonValue + ?Sized> JsonValue for &T {
    fn write_json(&self, buf: &mut Vec<u8>) {
        (**self).write_json(buf);
    }
}

impl<T: JsonValue> JsonValue for Option<T> {
    fn write_json(&self, buf: &mut Vec<u8>) {
        match self {
            Some(v) => v.write_json(buf),
            None => buf.extend_from_slice(b"null"),
        }
    }
}

impl JsonValue for crate::model::WaitSplit {
    fn write_json(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(b"{\"oncpu\":");
        self.oncpu.write_json(buf);
        json_fields!(buf, self, runnable, asleep);
        buf.push(b'}');
    }
}

/// Lower-case hex digits of `v`, no prefix (as `{:x}`).
fn json_hex(buf: &mut Vec<u8>, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = (64 - (v | 1).leading_zeros()).div_ceil(4) as usize;
    for i in (0..n).rev() {
        buf.push(DIGITS[((v >> (i * 4)) & 0xf) as usize]);
    }
}

/// A JSON string with serde_json's escapes: `"` and `\`, the short forms
/// of \b \t \n \f \r, `\u00XX` for other control characters; everything
/// else (DEL and non-ASCII included) as is.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        buf.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            0x08 => buf.extend_from_slice(b"\\b"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            0x0c => buf.extend_from_slice(b"\\f"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[(b >> 4) as usize]);
                buf.push(HEX[(b & 0xf) as usize]);
            }
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// One `trace --json` event line as [`event_json`] writes it, read back:
/// the typed reader of that hand-written contract (a unit test writes a
/// fully populated event with `event_json` and reads it with this, field
/// for field). `lock` is the hex string written (`"0x..."`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLine {
    /// `"wait"`.
    #[serde(rename = "type")]
    pub ty: String,
    pub source: String,
    pub kind: LockKind,
    pub lock: String,
    pub lock_name: Option<String>,
    pub caller: Option<String>,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub begin_ns: u64,
    pub end_ns: u64,
    pub released_ns: Option<u64>,
    pub wait_ns: u64,
    pub hold_ns: Option<u64>,
    pub aborted: bool,
    pub failed: bool,
    pub ret: i32,
    pub spun: bool,
    pub slept: bool,
    pub partial: bool,
    pub holder_tid: Option<u32>,
    pub split: Option<crate::model::WaitSplit>,
}

/// The last line of `trace --json` (`"type":"end"`): events delivered,
/// the window, the lost counters and, with `--summary`, the report.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndLine {
    #[serde(rename = "type")]
    pub ty: std::borrow::Cow<'static, str>,
    pub events: u64,
    pub duration_ns: u64,
    pub lost: BTreeMap<String, u64>,
    pub report: Option<Report>,
    /// `--lock-order`: the orders of nested user locks, and the pairs taken
    /// in both orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_order: Option<crate::lockorder::LockOrder>,
}

/// A line of `trace --json`: an event or the end line.
#[derive(Clone, Debug, PartialEq)]
pub enum TraceLine {
    Event(Box<EventLine>),
    End(Box<EndLine>),
}

impl TraceLine {
    /// Reads one line of `trace --json` by its `"type"`.
    pub fn parse(line: &str) -> serde_json::Result<TraceLine> {
        if line.starts_with("{\"type\":\"end\"") {
            serde_json::from_str(line).map(|e| TraceLine::End(Box::new(e)))
        } else {
            serde_json::from_str(line).map(|e| TraceLine::Event(Box::new(e)))
        }
    }
}

#[cfg(test)]
impl Report {
    /// A test report of `rows`: pid 7 for 1 s by lock, no sources, no
    /// losses, no programs, no holders.
    pub fn of_rows(rows: Vec<Row>) -> Report {
        Report {
            version: JSON_VERSION,
            duration_ns: 1_000_000_000,
            targets: "pid 7".into(),
            by: "lock",
            interval: None,
            sources: vec![],
            lost: BTreeMap::new(),
            bpf_programs: vec![],
            rows,
            holders: vec![],
            deadlocks: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Record, Stats, group};

    fn sample() -> Report {
        let rec = Record {
            kind: LockKind::RwsemWrite,
            lock_name: Some("mmap_lock of 4242 (lockscope-wl)".into()),
            pid: 4242,
            tid: 4243,
            comm: "lockscope-wl".into(),
            cgroup: Some("/user.slice".into()),
            aborted: 1,
            split: Some(crate::model::WaitSplit::from_offcpu(
                3_003_000, 3_000_000, 1_000_000,
            )),
            ..Record::sample(
                0xffff_8881_0342_5e40,
                "a_very_long_kernel_function_name_that_goes_on_and_on",
                &[1_000, 2_000, 3_000_000],
            )
        };
        let mut lost = BTreeMap::new();
        lost.insert("map_full".to_string(), 0);
        lost.insert("end_without_begin".to_string(), 2);
        Report {
            duration_ns: 5_000_000_000,
            targets: "pid 4242".into(),
            sources: vec![SourceStatus {
                name: "kernel-contention".into(),
                backend: Some("tp_btf".into()),
                available: true,
                reason: None,
            }],
            lost,
            ..Report::of_rows(group(&[rec], GroupBy::Lock))
        }
    }

    /// `rep` as `write_table` writes it `width` wide (20 rows).
    fn table(rep: &Report, by: GroupBy, width: usize) -> String {
        let mut out = Vec::new();
        write_table(&mut out, rep, by, 20, width).expect("write to a Vec");
        String::from_utf8(out).expect("utf8")
    }

    /// The rows of `rep`'s JSON.
    fn json_rows(rep: &Report) -> Vec<serde_json::Value> {
        let v = serde_json::to_value(rep).expect("serialise");
        v["rows"].as_array().expect("rows").clone()
    }

    /// The line of a table that counts the contended waits.
    fn headline(text: &str) -> &str {
        text.lines()
            .find(|l| l.contains("contended waits"))
            .expect("headline")
    }

    /// Checks that `text` has each of `wants`.
    #[track_caller]
    fn assert_has(text: &str, wants: &[&str]) {
        for want in wants {
            assert!(text.contains(want), "lacks {want:?}: {text}");
        }
    }

    #[test]
    fn table_fits_80_columns_and_shows_the_row() {
        let rep = sample();
        for by in [
            GroupBy::Lock,
            GroupBy::Caller,
            GroupBy::Task,
            GroupBy::Cgroup,
        ] {
            let text = table(&rep, by, 80);
            for line in text.lines() {
                assert!(line.chars().count() <= 80, "too wide: {line:?}");
            }
            assert_has(
                &text,
                &[
                    "rwsem:W",
                    "3.00 ms",
                    "end_without_begin 2",
                    "2.00 ms asleep, 1.00 ms runnable, 3.00 us on CPU",
                ],
            );
        }
    }

    #[test]
    fn losses_warn_once_mark_the_headline_and_name_the_remedy() {
        let limits = Limits {
            max_entries: 4,
            ringbuf_mb: Some(8),
        };
        let mut lost = BTreeMap::new();
        lost.insert("map_full".to_string(), 287_036);
        lost.insert("futex.ringbuf_dropped".to_string(), 12);
        lost.insert("futex.stale_wait".to_string(), 3);
        lost.insert("user-locks.map_full".to_string(), 0);
        let w = loss_warning(&lost, &limits).expect("a warning");
        assert!(!w.contains('\n'), "one line: {w}");
        assert!(
            w.starts_with("lockscope: WARNING: 287051 operations lost"),
            "{w}"
        );
        assert_has(
            &w,
            &[
                "map_full 287036: rerun with --max-entries 16 (now 4",
                "futex.ringbuf_dropped 12: rerun with --ringbuf-mb 32 (now 8)",
                "futex.stale_wait 3",
            ],
        );
        assert!(
            !w.contains("user-locks.map_full"),
            "zero counters stay out: {w}"
        );
        // no ring buffer flag in `report`: no remedy offered for drops
        let no_rb = Limits {
            max_entries: 16384,
            ringbuf_mb: None,
        };
        let w = loss_warning(&lost, &no_rb).expect("a warning");
        assert!(!w.contains("--ringbuf-mb"), "{w}");
        assert!(w.contains("--max-entries 65536 (now 16384"), "{w}");

        let mut rep = sample();
        rep.lost = lost.clone();
        let text = table(&rep, GroupBy::Lock, 80);
        assert!(
            headline(&text).starts_with("[287051 LOST, see below] pid 4242"),
            "{text}"
        );
        assert!(text.contains("LOST: futex.ringbuf_dropped 12,"), "{text}");
        assert!(!text.contains("user-locks.map_full"), "{text}");

        // nothing lost: no warning, no mark, a one-line footer
        for v in lost.values_mut() {
            *v = 0;
        }
        assert_eq!(loss_warning(&lost, &limits), None);
        rep.lost = lost.clone();
        rep.bpf_programs = vec![crate::status::ProgStats {
            name: "contention_begin_btf".into(),
            id: 1,
            run_cnt: 10,
            run_time_ns: 0,
            recursion_misses: 0,
        }];
        let text = table(&rep, GroupBy::Lock, 80);
        assert!(!text.contains("LOST"), "{text}");
        let footer: Vec<&str> = text.lines().rev().take_while(|l| !l.is_empty()).collect();
        assert_eq!(
            footer,
            vec!["lost: none; BPF cost: sysctl kernel.bpf_stats_enabled=1"],
            "{text}"
        );
        assert_eq!(lost_lines(&lost, 80), vec!["lost: none".to_string()]);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v = serde_json::to_value(sample()).expect("serialise");
        for k in ["version", "duration_ns", "sources", "lost", "rows"] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        let s = &v["sources"][0];
        for k in ["name", "backend", "available", "reason"] {
            assert!(s.get(k).is_some(), "source missing {k}");
        }
        let r = &v["rows"][0];
        for k in [
            "source",
            "kind",
            "lock",
            "lock_name",
            "caller",
            "pid",
            "tid",
            "comm",
            "cgroup",
            "count",
            "acquired",
            "aborted",
            "wait_ns",
            "hold_ns",
        ] {
            assert!(r.get(k).is_some(), "row missing {k}");
        }
        assert!(r["acquired"].is_null(), "contention sources see no others");
        assert_eq!(r["source"], "kernel-contention");
        assert_eq!(r["kind"], "rwsem-write");
        assert_eq!(r["lock"], "0xffff888103425e40");
        assert_eq!(r["count"], 3);
        assert_eq!(r["aborted"], 1);
        assert!(r["hold_ns"].is_null());
        for k in ["total", "min", "max", "p50", "p99"] {
            assert!(r["wait_ns"][k].is_u64(), "wait_ns.{k}");
        }
        assert_eq!(r["wait_ns"]["total"], 3_003_000);
        assert_eq!(r["wait_ns"]["min"], 1_000);
        assert_eq!(r["wait_ns"]["max"], 3_000_000);
        assert_eq!(r["wait_split"]["asleep"], 2_000_000);
        assert_eq!(r["wait_split"]["runnable"], 1_000_000);
        assert_eq!(r["wait_split"]["oncpu"], 3_000);
    }

    #[test]
    fn fit_and_wrap() {
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
        let items: Vec<String> = (0..20).map(|i| format!("counter_{i} 0")).collect();
        for l in wrap_list("lost: ", &items, 80) {
            assert!(l.chars().count() <= 80, "{l}");
        }
    }

    /// A report with one mmap-lock row (holds) and two threads' run-queue
    /// waits on one CPU, grouped `by`.
    fn mixed(by: GroupBy) -> Report {
        let base = Record {
            lock_name: Some("mmap_lock of 7 (db)".into()),
            caller: Some("__vm_munmap".into()),
            cgroup: Some("/".into()),
            wait: Stats::of(&[1_000, 2_000]),
            hold: Some(Stats::of(&[5_000_000])),
            acquired: Some(4),
            failed: 1,
            partial: 2,
            ..Record::new(
                "mmap-lock",
                LockKind::RwsemWrite,
                0xffff_8881_0000_0040,
                7,
                8,
                "db".into(),
            )
        };
        let runq = |tid: u32, waits: &[u64], woken: u64| Record {
            source: "sched",
            kind: LockKind::RunQueue,
            lock: 1,
            lock_name: Some("cpu 1".into()),
            caller: None,
            tid,
            slept: woken,
            wait: Stats::of(waits),
            hold: None,
            acquired: None,
            failed: 0,
            partial: 0,
            ..base.clone()
        };
        let recs = vec![
            base.clone(),
            runq(8, &[10_000, 20_000], 1),
            runq(9, &[30_000], 1),
        ];
        Report::of_rows(group(&recs, by))
    }

    #[test]
    fn mmap_lock_and_run_queue_rows_have_their_own_summaries() {
        let rep = mixed(GroupBy::Lock);
        let lines = summary_lines(&rep);
        // mmap-lock tells contended acquisitions apart: its 2 are waits
        assert_eq!(
            lines[0], "pid 7 for 1.00 s: 2 contended waits, 3.00 us waiting in total",
            "{lines:?}"
        );
        assert!(
            lines.contains(
                &"  mmap-lock: 4 acquisitions (2 contended), 3.00 us waiting, 5.00 ms held, \
                  1 failed, 2 partial"
                    .to_string()
            ),
            "{lines:?}"
        );
        assert!(
            lines.contains(
                &"  run queue: 3 waits for a CPU, 60.0 us in total, 1 after a preemption"
                    .to_string()
            ),
            "{lines:?}"
        );
        let cpu = rep
            .rows
            .iter()
            .find(|r| r.kind == Some(LockKind::RunQueue))
            .expect("a run-queue row");
        assert_eq!(cpu.count, 3, "by lock: one row per CPU, threads merged");
        assert_eq!(cpu.tid, None);
        for by in [
            GroupBy::Lock,
            GroupBy::Caller,
            GroupBy::Task,
            GroupBy::Cgroup,
        ] {
            let text = table(&mixed(by), by, 80);
            for line in text.lines() {
                assert!(line.chars().count() <= 80, "too wide: {line:?}");
            }
            assert!(text.contains("runq"), "{text}");
        }
        let text = table(&rep, GroupBy::Lock, 80);
        // 80 columns leave the names less than MIN_NAME: they go under
        // the numbers
        assert!(text.contains("runq\n    cpu 1\n"), "{text}");
        let text = table(&rep, GroupBy::Lock, UNLIMITED);
        assert!(text.contains("runq       cpu 1\n"), "{text}");
        assert!(!text.contains("cpu 1 ?"), "{text}");
        let rows = json_rows(&rep);
        let r = rows
            .iter()
            .find(|r| r["source"] == "sched")
            .expect("a sched row");
        assert_eq!(r["kind"], "runqueue");
        assert_eq!(r["lock"], "0x1");
        assert!(r["hold_ns"].is_null());
        let m = rows
            .iter()
            .find(|r| r["source"] == "mmap-lock")
            .expect("an mmap-lock row");
        assert_eq!(m["hold_ns"]["total"], 5_000_000);
        assert_eq!(
            (m["failed"].as_u64(), m["partial"].as_u64()),
            (Some(1), Some(2))
        );
        // every acquisition, and of them the contended waits
        assert_eq!(
            (m["acquired"].as_u64(), m["count"].as_u64()),
            (Some(4), Some(2))
        );
        assert!(
            r["acquired"].is_null(),
            "run-queue waits are no acquisitions"
        );
        // the table's acquired column: the mmap-lock row's 4, "-" for the
        // run queue's
        let head = text
            .lines()
            .find(|l| l.trim_start().starts_with("contended"))
            .expect("header");
        assert!(head.contains("contended acquired"), "{head}");
        let row = text.lines().find(|l| l.contains("rwsem:W")).expect("row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cells[..2], ["2", "4"], "{row}");
        let runq = text
            .lines()
            .find(|l| l.contains("runq "))
            .expect("runq row");
        assert_eq!(runq.split_whitespace().nth(1), Some("-"), "{runq}");
        // without such a row, no such column
        let plain = table(&sample(), GroupBy::Lock, UNLIMITED);
        assert!(!plain.contains("acquired"), "{plain}");
    }

    /// A row of `source`/`kind` named `name`, called from `caller`, with
    /// `waits` (ns) and, when `hold`, one hold of 7 ms.
    fn rec(
        source: &'static str,
        kind: LockKind,
        lock: u64,
        name: &str,
        caller: &str,
        waits: &[u64],
        hold: bool,
    ) -> Record {
        Record {
            source,
            kind,
            lock_name: Some(name.into()),
            pid: 4242,
            tid: 4243,
            comm: "lockscope".into(),
            cgroup: Some("/".into()),
            hold: hold.then(|| Stats::of(&[7_000_000])),
            ..Record::sample(lock, caller, waits)
        }
    }

    fn report_of(recs: &[Record], by: GroupBy) -> Report {
        Report {
            rows: group(recs, by),
            ..sample()
        }
    }

    #[test]
    fn unlimited_width_keeps_very_long_names_and_summaries_whole() {
        let name = format!("pipe:[1] (fd 3 of 4242 {})", "x".repeat(300));
        let caller = format!("{}+0x1c/0x80", "a_long_function_".repeat(20));
        let mut r = rec(
            "kernel-contention",
            LockKind::Mutex,
            0xffff_8881_0000_0100,
            &name,
            &caller,
            &[1_000, 2_000],
            false,
        );
        r.partial = 3;
        let reason = "y".repeat(200);
        let mut rep = report_of(&[r], GroupBy::Lock);
        rep.sources[0].reason = Some(reason.clone());
        for by in [GroupBy::Lock, GroupBy::Caller] {
            let text = table(&rep, by, UNLIMITED);
            assert!(!text.contains('…'), "nothing cut: {text}");
            assert!(text.contains(&caller), "whole caller: {text}");
            assert!(text.contains(&reason), "whole source line: {text}");
            assert!(
                text.contains(
                    "0 failed calls (trylock busy, timed out), 3 partial \
                     (begun before tracing: counted, not timed)\n"
                ),
                "summary line whole, on one line: {text}"
            );
        }
        let text = table(&rep, GroupBy::Lock, UNLIMITED);
        assert!(
            text.contains(&format!("{name} {caller}\n")),
            "lock and caller on the row's line: {text}"
        );
    }

    #[test]
    fn at_200_columns_workload_names_are_whole() {
        let pipe = "pipe:[123456] (fd 4 of 4242 lockscope)";
        let pipe_caller = "anon_pipe_write+0x5c/0x4a0";
        let mmap = "mmap_lock of 4242 (lockscope)";
        let mmap_caller = "vm_mmap_pgoff+0x12a/0x1e0";
        let recs = [
            rec(
                "kernel-contention",
                LockKind::Mutex,
                0xffff_8881_0000_0100,
                pipe,
                pipe_caller,
                &[20_000_000, 20_000_000],
                false,
            ),
            rec(
                "mmap-lock",
                LockKind::RwsemWrite,
                0xffff_8881_0000_0200,
                mmap,
                mmap_caller,
                &[3_000_000],
                true,
            ),
        ];
        for by in [GroupBy::Lock, GroupBy::Caller] {
            let text = table(&report_of(&recs, by), by, 200);
            for line in text.lines() {
                assert!(line.chars().count() <= 200, "too wide: {line:?}");
            }
            assert!(!text.contains('…'), "nothing cut at 200: {text}");
            for n in [pipe_caller, mmap_caller] {
                assert!(text.contains(n), "{n} whole: {text}");
            }
            if by == GroupBy::Lock {
                assert!(text.contains(&format!("{pipe} {pipe_caller}\n")), "{text}");
                assert!(text.contains(&format!("{mmap} {mmap_caller}\n")), "{text}");
            }
        }
        // at 80 the name column is what gives
        let text = table(&report_of(&recs, GroupBy::Lock), GroupBy::Lock, 80);
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "too wide: {line:?}");
        }
    }

    #[test]
    fn numbers_are_never_cut_at_60_columns() {
        let mut big = rec(
            "kernel-contention",
            LockKind::PercpuRwsemWrite,
            0xffff_8881_0000_0100,
            "cgroup_threadgroup_rwsem",
            "percpu_down_write+0x2f/0x1c0",
            &[1_000, 3_000_000_000],
            false,
        );
        big.failed = 12_345_678;
        big.partial = 87_654_321;
        let mut many = rec(
            "user-locks",
            LockKind::UserRwlockWrite,
            0x7f00_0000_1000,
            "pthread_rwlock 0x7f0000001000",
            "worker_loop",
            &[5_000],
            true,
        );
        for _ in 0..12 {
            many.wait.record(5_000);
        }
        many.acquired = Some(1_234_567_890);
        let recs = [big, many];
        let mut lost = BTreeMap::new();
        lost.insert("futex.ringbuf_dropped".to_string(), 987_654_321);
        lost.insert("map_full".to_string(), 123_456_789);
        let mut rep = report_of(&recs, GroupBy::Lock);
        rep.lost = lost;
        rep.bpf_programs = vec![crate::status::ProgStats {
            name: "contention_begin_btf".into(),
            id: 1,
            run_cnt: 470_123,
            run_time_ns: 470_123 * 206,
            recursion_misses: 0,
        }];
        for by in [GroupBy::Lock, GroupBy::Caller, GroupBy::Task] {
            let text = table(&rep, by, 60);
            assert!(!text.contains('…') || by != GroupBy::Task, "{text}");
            let words: Vec<&str> = text.split_whitespace().collect();
            let joined = words.join(" ");
            for r in &rep.rows {
                let all = Optional {
                    acquired: true,
                    holds: true,
                };
                let (cells, kind) = Columns::cells(r, all);
                for c in cells.iter().filter(|c| *c != "-") {
                    assert!(joined.contains(c.as_str()), "{c} whole: {text}");
                }
                assert!(joined.contains(&kind), "{kind}: {text}");
            }
            for needle in [
                "12345678 failed calls (trylock busy, timed out), 87654321 partial \
                 (begun before tracing: counted, not timed)",
                "[1111111110 LOST, see below]",
                "futex.ringbuf_dropped 987654321",
                "map_full 123456789",
                "begin 206 ns x 470123",
                "user-locks: 1234567890 acquisitions (13 contended),",
            ] {
                assert!(joined.contains(needle), "{needle}: {text}");
            }
            // prose wraps within the width; only the table's numbers may
            // go past it
            for l in text.lines().filter(|l| !l.starts_with(' ')) {
                let prose = !l.trim_start().starts_with(|c: char| c.is_ascii_digit());
                if prose && !l.starts_with("contended") {
                    assert!(l.chars().count() <= 60, "wrapped: {l:?}");
                }
            }
        }
    }

    #[test]
    fn futex_and_run_queue_rows_have_sections_and_stay_out_of_the_headline() {
        let recs = [
            rec(
                "kernel-contention",
                LockKind::Mutex,
                0xffff_8881_0000_0100,
                "pipe:[1] (fd 3 of 4242 lockscope)",
                "anon_pipe_write+0x5c/0x4a0",
                &[20_000_000, 20_000_000, 30_000_000],
                false,
            ),
            rec(
                "kernel-contention",
                LockKind::Spinlock,
                0xffff_8881_0000_0300,
                "some spinlock",
                "do_something+0x1/0x2",
                &[1_000, 2_000],
                false,
            ),
            // more waiting than every lock: would lead a single ranking
            rec(
                "futex",
                LockKind::Futex,
                0x7f00_0000_2000,
                "futex 0x7f0000002000",
                "?",
                &[900_000_000, 900_000_000],
                false,
            ),
            Record {
                caller: None,
                ..rec(
                    "sched",
                    LockKind::RunQueue,
                    1,
                    "cpu 1",
                    "?",
                    &[500_000_000, 10_000, 20_000, 30_000],
                    false,
                )
            },
        ];
        for by in [GroupBy::Lock, GroupBy::Caller, GroupBy::Task] {
            let rep = report_of(&recs, by);
            let text = table(&rep, by, UNLIMITED);
            let lines: Vec<&str> = text.lines().collect();
            assert!(
                headline(&text).ends_with(": 5 contended waits, 70.0 ms waiting in total"),
                "lock rows only: {text}"
            );
            let pos = |needle: &str| {
                lines
                    .iter()
                    .position(|l| *l == needle)
                    .unwrap_or_else(|| panic!("no {needle:?}: {text}"))
            };
            let head = lines
                .iter()
                .position(|l| l.starts_with("contended"))
                .expect("header");
            let fx = pos("futex waits:");
            let rq = pos("run-queue latency:");
            assert!(head < fx && fx < rq, "{text}");
            // the rows: lines that begin with a number
            let kind_of = |l: &str| {
                ["mutex", "spinlock", "(mixed)", "futex", "runq"]
                    .into_iter()
                    .filter(|_| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
                    .find(|k| l.split_whitespace().any(|w| w == *k))
            };
            let kinds: Vec<(usize, &str)> = lines
                .iter()
                .enumerate()
                .skip(head + 1)
                .filter_map(|(i, l)| kind_of(l).map(|k| (i, k)))
                .collect();
            // by task the two locks of the one thread are one row
            let locks = if by == GroupBy::Task {
                vec![(head + 1, "(mixed)")]
            } else {
                vec![(head + 1, "mutex"), (head + 2, "spinlock")]
            };
            let others = vec![(fx + 1, "futex"), (rq + 1, "runq")];
            assert_eq!(
                kinds,
                [locks, others].concat(),
                "locks ranked first, each other kind under its title: {text}"
            );
            assert_has(
                &text,
                &[
                    "  futex: 2 waits, 1.80 s in total",
                    "  run queue: 4 waits for a CPU, 500 ms in total",
                ],
            );
            // JSON is unchanged: one list, every row with its source
            let rows = json_rows(&rep);
            let sources: Vec<&str> = rows.iter().filter_map(|r| r["source"].as_str()).collect();
            assert_eq!(sources.len(), rep.rows.len(), "{rows:?}");
            assert!(sources.contains(&"sched"), "{rows:?}");
            assert_eq!(sources[0], "futex", "JSON keeps the total-wait order");
        }
        // only non-lock rows: no lock headline count, the sections still
        let rep = report_of(&recs[2..], GroupBy::Lock);
        let text = table(&rep, GroupBy::Lock, UNLIMITED);
        assert_has(
            &text,
            &[
                "pid 4242 for 5.00 s:\n",
                "no lock contention seen\nfutex waits:\n",
            ],
        );
    }

    #[test]
    fn an_interval_shows_only_its_own_losses_and_runs() {
        let prev: BTreeMap<String, u64> = [("map_full".to_string(), 5), ("stale_wait".into(), 2)]
            .into_iter()
            .collect();
        let now: BTreeMap<String, u64> = [("map_full".to_string(), 5), ("stale_wait".into(), 7)]
            .into_iter()
            .collect();
        let d = lost_since(&now, &prev);
        assert_eq!(d["map_full"], 0, "nothing new: not repeated");
        assert_eq!(d["stale_wait"], 5);
        assert_eq!(lost_lines(&d, 80), vec!["LOST: stale_wait 5".to_string()]);
        assert_eq!(
            lost_lines(&lost_since(&prev, &prev), 80),
            vec!["lost: none"]
        );
        let p = |id, cnt, ns| crate::status::ProgStats {
            name: "contention_begin_btf".into(),
            id,
            run_cnt: cnt,
            run_time_ns: ns,
            recursion_misses: 0,
        };
        let d = progs_since(&[p(7, 30, 3000), p(8, 4, 400)], &[p(7, 10, 1000)]);
        assert_eq!((d[0].run_cnt, d[0].run_time_ns), (20, 2000));
        assert_eq!(
            (d[1].run_cnt, d[1].run_time_ns),
            (4, 400),
            "new program: whole"
        );
    }

    #[test]
    fn footer_is_one_line_without_loss_and_never_a_bare_run_count() {
        let progs = |cnt: u64, time: u64| {
            vec![
                crate::status::ProgStats {
                    name: "contention_begin_btf".into(),
                    id: 1,
                    run_cnt: cnt,
                    run_time_ns: time,
                    recursion_misses: 0,
                },
                crate::status::ProgStats {
                    name: "contention_end_btf".into(),
                    id: 2,
                    run_cnt: cnt,
                    run_time_ns: time,
                    recursion_misses: 0,
                },
            ]
        };
        // the kernel counts nothing while its stats are off
        assert_eq!(
            overhead_text(&progs(0, 0), Some(false)).as_deref(),
            Some(BPF_COST_HINT)
        );
        assert_eq!(
            overhead_text(&progs(0, 0), None).as_deref(),
            Some(BPF_COST_HINT)
        );
        assert_eq!(
            overhead_text(&progs(0, 0), Some(true)).as_deref(),
            Some("BPF cost: none (no program ran)")
        );
        assert_eq!(
            overhead_text(&progs(1000, 250_000), Some(true)).as_deref(),
            Some("overhead per run: begin 250 ns x 1000, end 250 ns x 1000")
        );
        // (at 60 columns the measured costs wrap; the hint fits)
        for (width, p) in [
            (60, progs(0, 0)),
            (80, progs(0, 0)),
            (80, progs(1000, 250_000)),
            (200, progs(1000, 250_000)),
            (UNLIMITED, progs(1000, 250_000)),
        ] {
            {
                let mut rep = sample();
                for v in rep.lost.values_mut() {
                    *v = 0;
                }
                rep.bpf_programs = p;
                let text = table(&rep, GroupBy::Lock, width);
                let footer: Vec<&str> = text.lines().rev().take_while(|l| !l.is_empty()).collect();
                assert_eq!(footer.len(), 1, "one line: {text}");
                assert!(footer[0].starts_with("lost: none; "), "{text}");
                assert!(!text.contains("BPF runs"), "{text}");
            }
        }
    }

    #[test]
    fn wrapped_prose_keeps_every_word() {
        let s = "  mmap-lock: 123456789 acquisitions, 1.23 s waiting, 4.56 s held, 7 failed, \
                 8 partial";
        for width in [10, 30, 60, 80] {
            let lines = wrap_line(s, width);
            let words: Vec<&str> = lines.iter().flat_map(|l| l.split_whitespace()).collect();
            assert_eq!(words, s.split_whitespace().collect::<Vec<_>>(), "{lines:?}");
            for l in &lines {
                assert!(
                    l.chars().count() <= width || l.split_whitespace().count() == 1,
                    "{lines:?}"
                );
            }
        }
        assert_eq!(wrap_line(s, UNLIMITED), vec![s.to_string()]);
        // a stream line: the numbers whole, the caller cut last
        let head = "  0.123456    4242 lockscope     4243 mutex    ffff88810000  20.0 ms        - ";
        let caller = "anon_pipe_write+0x5c/0x4a0";
        assert_eq!(fit_tail(head, caller, UNLIMITED), format!("{head}{caller}"));
        assert_eq!(fit_tail(head, caller, 200), format!("{head}{caller}"));
        let narrow = fit_tail(head, caller, 60);
        assert!(narrow.starts_with(head), "{narrow}");
        assert_eq!(narrow.chars().count(), head.chars().count() + MIN_NAME);
    }

    #[test]
    fn table_kind_labels_are_the_documented_mapping_of_json_names() {
        let mut labels = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeSet::new();
        for (k, label, what) in KIND_LABELS {
            assert_eq!(short_kind(Some(*k)), *label);
            assert!(labels.insert(*label), "{label} twice");
            assert!(names.insert(k.name()), "{} twice", k.name());
            assert!(!what.is_empty());
            assert!(label.chars().count() <= 10, "{label} fits the kind column");
        }
        let legend = kind_legend();
        assert_eq!(legend.lines().count(), KIND_LABELS.len());
        assert_has(
            &legend,
            &["rwsem:W    rwsem-write", "pmutex     pthread-mutex"],
        );
    }

    /// `event_json` writes the bytes serde_json writes for the event with
    /// its type tag flattened in (the `trace --json` line before it).
    #[test]
    fn event_json_is_serde_json_byte_for_byte() {
        use crate::model::Event;
        #[derive(Serialize)]
        struct Line<'a> {
            #[serde(rename = "type")]
            ty: &'static str,
            #[serde(flatten)]
            event: &'a Event,
        }
        let base = Event {
            kind: LockKind::Mutex,
            cgroup: None,
            begin_ns: 0,
            hold_ns: None,
            failed: false,
            slept: false,
            ..super::json_contract::full_event()
        };
        let mut events = vec![base.clone()];
        let mut e = base.clone();
        e.lock = 0;
        e.lock_name = None;
        e.caller = None;
        e.cgroup = Some("/system.slice/x.service".into());
        e.released_ns = None;
        e.hold_ns = Some(0);
        e.holder_tid = None;
        e.split = None;
        e.ret = i32::MIN;
        events.push(e);
        for k in LockKind::KNOWN
            .into_iter()
            .chain([LockKind::Unknown(0x1f0)])
        {
            let mut e = base.clone();
            e.kind = k;
            e.lock = 0xf;
            events.push(e);
        }
        let mut buf = Vec::new();
        for e in &events {
            buf.clear();
            event_json(&mut buf, "wait", e);
            let want = serde_json::to_string(&Line {
                ty: "wait",
                event: e,
            })
            .expect("serialise");
            assert_eq!(String::from_utf8(buf.clone()).expect("utf-8"), want);
        }
    }
}

/// The JSON contract's guard: what lockscope writes (the report by serde,
/// the trace lines by [`event_json`] and serde) reads back with the typed
/// readers, field for field, and the bytes written stay as they were.
#[cfg(test)]
mod json_contract {
    use super::*;
    use crate::model::{Event, HolderRow, Record, StackSample, Stats, WaitSplit, group};
    use crate::status::ProgStats;

    /// A report with every field and every optional part present.
    fn full_report() -> Report {
        let rec = Record {
            source: "mmap-lock",
            kind: LockKind::RwsemWrite,
            lock: 0xffff_8881_0000_1000,
            lock_name: Some("mmap_lock of \"a\"\n".into()),
            caller: Some("do_madvise".into()),
            pid: 42,
            tid: 43,
            comm: "wl\tx é".into(),
            cgroup: Some("/system.slice/x.service".into()),
            memcg: Some("/user.slice".into()),
            aborted: 1,
            spun: 2,
            slept: 3,
            wait: Stats::of(&[1_000, 2_000_000, 3_000_000]),
            hold: Some(Stats::of(&[500, 7_000_000])),
            acquired: Some(9),
            failed: 4,
            partial: 5,
            split: Some(WaitSplit::from_offcpu(5_002_000, 5_000_000, 1_000_000)),
            stacks: vec![StackSample {
                kernel: vec!["rwsem_down_write_slowpath".into(), "do_madvise".into()],
                user: vec!["madvise".into(), "main".into()],
                count: 3,
                total_ns: 5_002_000,
                max_ns: 3_000_000,
                hold_count: 2,
                hold_total_ns: 7_000_500,
                hold_max_ns: 7_000_000,
            }],
        };
        let mut lost = BTreeMap::new();
        lost.insert("map_full".to_string(), 0);
        lost.insert("ring_full".to_string(), 7);
        Report {
            version: JSON_VERSION,
            duration_ns: 5_000_000_000,
            targets: "pid 42".into(),
            by: "lock",
            interval: Some(3),
            sources: vec![
                SourceStatus {
                    name: "mmap-lock".into(),
                    backend: Some("tracepoint".into()),
                    available: true,
                    reason: None,
                },
                SourceStatus {
                    name: "sched".into(),
                    backend: None,
                    available: false,
                    reason: Some("not asked for".into()),
                },
            ],
            lost,
            bpf_programs: vec![ProgStats {
                name: "mmap_lock_start".into(),
                id: 77,
                run_cnt: 1000,
                run_time_ns: 123_456,
                recursion_misses: 1,
            }],
            rows: group(&[rec], GroupBy::Lock),
            holders: vec![HolderRow {
                source: "mmap-lock",
                kind: LockKind::RwsemWrite,
                lock: "0xffff888100001000".into(),
                pid: 42,
                holder_tid: 44,
                holder_comm: Some("holder".into()),
                waits: 3,
                wait_ns: 5_002_000,
            }],
            deadlocks: Vec::new(),
        }
    }

    /// The report's bytes as lockscope wrote them before its types could
    /// be read back (`serde_json::to_string(&full_report())` at dbacddb).
    const FULL_REPORT_JSON: &str = r#"{"version":1,"duration_ns":5000000000,"targets":"pid 42","by":"lock","interval":3,"sources":[{"name":"mmap-lock","backend":"tracepoint","available":true,"reason":null},{"name":"sched","backend":null,"available":false,"reason":"not asked for"}],"lost":{"map_full":0,"ring_full":7},"bpf_programs":[{"name":"mmap_lock_start","id":77,"run_cnt":1000,"run_time_ns":123456,"recursion_misses":1}],"rows":[{"source":"mmap-lock","kind":"rwsem-write","lock":"0xffff888100001000","lock_name":"mmap_lock of \"a\"\n","caller":"do_madvise","pid":42,"tid":43,"comm":"wl\tx é","cgroup":"/system.slice/x.service","memcg":"/user.slice","count":3,"acquired":9,"aborted":1,"failed":4,"partial":5,"spun":2,"slept":3,"wait_ns":{"total":5001000,"min":1000,"max":3000000,"p50":2097152,"p99":3000000},"hold_ns":{"total":7000500,"min":500,"max":7000000,"p50":512,"p99":7000000},"holds":2,"wait_split":{"oncpu":2000,"runnable":1000000,"asleep":4000000},"stacks":[{"kernel":["rwsem_down_write_slowpath","do_madvise"],"user":["madvise","main"],"count":3,"total_ns":5002000,"max_ns":3000000,"hold_count":2,"hold_total_ns":7000500,"hold_max_ns":7000000}],"wait_hist":[0,0,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,1,1]}],"holders":[{"source":"mmap-lock","kind":"rwsem-write","lock":"0xffff888100001000","pid":42,"holder_tid":44,"holder_comm":"holder","waits":3,"wait_ns":5002000}]}"#;

    #[test]
    fn the_report_reads_back_field_for_field() {
        let rep = full_report();
        let row = &rep.rows[0];
        assert!(row.memcg.is_some() && !row.stacks.is_empty() && row.hold_ns.is_some());
        let json = serde_json::to_string(&rep).expect("write");
        assert_eq!(json, FULL_REPORT_JSON, "the bytes written did not change");
        let back: Report = serde_json::from_str(&json).expect("read");
        // `Row::wait` is not in the JSON (its summary and histogram are)
        let mut want = rep.clone();
        for r in &mut want.rows {
            r.wait = Stats::default();
        }
        assert_eq!(back, want);
        assert_eq!(serde_json::to_string(&back).expect("write again"), json);
        // absent optional parts read back as absent
        let mut bare = want.clone();
        bare.interval = None;
        bare.rows[0].memcg = None;
        bare.rows[0].stacks.clear();
        let json = serde_json::to_string(&bare).expect("write");
        assert!(!json.contains("\"interval\"") && !json.contains("\"stacks\""));
        assert_eq!(serde_json::from_str::<Report>(&json).expect("read"), bare);
        // the pretty form (`report --json` to a terminal) reads the same
        let pretty = serde_json::to_string_pretty(&rep).expect("write");
        assert_eq!(serde_json::from_str::<Report>(&pretty).expect("read"), want);
    }

    /// An event with every field set (and a name that needs escapes).
    pub(super) fn full_event() -> Event {
        Event {
            source: "kernel-contention",
            kind: LockKind::Unknown(0x1f0),
            lock: 0xffff_8881_0000_1234,
            lock_name: Some("pipe:[42] (fd 3 of 7 \"x\")".into()),
            caller: Some("pipe_write".into()),
            pid: 7,
            tid: u32::MAX,
            comm: "a\\b\tc\u{1}\u{7f}é\n\r\u{8}\u{c}\u{1f}".into(),
            cgroup: Some("/system.slice/x.service".into()),
            begin_ns: 1,
            end_ns: u64::MAX,
            released_ns: Some(5),
            wait_ns: 10,
            hold_ns: Some(11),
            aborted: true,
            failed: true,
            ret: -4,
            spun: true,
            slept: true,
            partial: true,
            holder_tid: Some(9),
            split: Some(WaitSplit {
                oncpu: 1,
                runnable: 2,
                asleep: 3,
            }),
        }
    }

    #[test]
    fn an_event_line_reads_back_field_for_field() {
        let e = full_event();
        let mut buf = Vec::new();
        event_json(&mut buf, "wait", &e);
        let line = std::str::from_utf8(&buf).expect("utf-8");
        let Ok(TraceLine::Event(read)) = TraceLine::parse(line) else {
            panic!("an event line: {line}");
        };
        // every field named: a field added to the reader must be checked
        let EventLine {
            ty,
            source,
            kind,
            lock,
            lock_name,
            caller,
            pid,
            tid,
            comm,
            cgroup,
            begin_ns,
            end_ns,
            released_ns,
            wait_ns,
            hold_ns,
            aborted,
            failed,
            ret,
            spun,
            slept,
            partial,
            holder_tid,
            split,
        } = *read;
        assert_eq!(ty, "wait");
        assert_eq!(source, e.source);
        assert_eq!(kind, e.kind);
        assert_eq!(lock, format!("0x{:x}", e.lock));
        assert_eq!(lock_name, e.lock_name);
        assert_eq!(caller, e.caller);
        assert_eq!(pid, e.pid);
        assert_eq!(tid, e.tid);
        assert_eq!(comm, e.comm);
        assert_eq!(cgroup, e.cgroup);
        assert_eq!(begin_ns, e.begin_ns);
        assert_eq!(end_ns, e.end_ns);
        assert_eq!(released_ns, e.released_ns);
        assert_eq!(wait_ns, e.wait_ns);
        assert_eq!(hold_ns, e.hold_ns);
        assert_eq!(aborted, e.aborted);
        assert_eq!(failed, e.failed);
        assert_eq!(ret, e.ret);
        assert_eq!(spun, e.spun);
        assert_eq!(slept, e.slept);
        assert_eq!(partial, e.partial);
        assert_eq!(holder_tid, e.holder_tid);
        assert_eq!(split, e.split);
        // the reader knows every field the writer writes (it refuses
        // unknown ones), and a field the writer dropped would be missing
        let mut extra = line.trim_end_matches('}').to_string();
        extra.push_str(",\"new\":1}");
        assert!(serde_json::from_str::<EventLine>(&extra).is_err());
        let missing = line.replace(",\"wait_ns\":10", "");
        assert!(serde_json::from_str::<EventLine>(&missing).is_err());
    }

    #[test]
    fn the_end_line_reads_back() {
        let mut lost = BTreeMap::new();
        lost.insert("ring_full".to_string(), 3);
        for report in [None, Some(full_report())] {
            let end = EndLine {
                ty: "end".into(),
                events: 12,
                duration_ns: 34,
                lost: lost.clone(),
                report,
                lock_order: None,
            };
            let json = serde_json::to_string(&end).expect("write");
            assert!(
                json.starts_with("{\"type\":\"end\",\"events\":12,"),
                "{json}"
            );
            let Ok(TraceLine::End(back)) = TraceLine::parse(&json) else {
                panic!("an end line: {json}");
            };
            let mut want = end.clone();
            if let Some(r) = &mut want.report {
                for row in &mut r.rows {
                    row.wait = Stats::default();
                }
            }
            assert_eq!(*back, want);
        }
    }
}
