//! Printers. Each writes to any `io::Write`, so tests capture into a Vec.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::model::{GroupBy, LockKind, Row};
use crate::units::fmt_ns;

/// JSON contract version of `report --json` and `trace --json`.
pub const JSON_VERSION: u32 = 1;

/// One source's status in a report header and in JSON.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SourceStatus {
    pub name: String,
    pub backend: Option<String>,
    pub available: bool,
    pub reason: Option<String>,
}

/// A whole report: the `report --json` object.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub version: u32,
    pub duration_ns: u64,
    pub targets: String,
    pub by: &'static str,
    /// `report -i`: which interval this is (1, 2, ...); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    pub sources: Vec<SourceStatus>,
    pub lost: BTreeMap<String, u64>,
    /// lockscope's own cost: run count and kernel run time of each BPF
    /// program (run time only with `sysctl kernel.bpf_stats_enabled=1`).
    pub bpf_programs: Vec<crate::sources::ProgStats>,
    pub rows: Vec<Row>,
    /// Who held locks while others waited (sources that know it), most
    /// wait caused first.
    pub holders: Vec<crate::model::HolderRow>,
}

pub fn by_name(by: GroupBy) -> &'static str {
    match by {
        GroupBy::Lock => "lock",
        GroupBy::Caller => "caller",
        GroupBy::Task => "task",
        GroupBy::Cgroup => "cgroup",
    }
}

/// Short kind for tables (JSON uses `LockKind::name`).
pub fn short_kind(k: Option<LockKind>) -> String {
    match k {
        Some(LockKind::Spinlock) => "spinlock".into(),
        Some(LockKind::RwlockRead) => "rwlock:R".into(),
        Some(LockKind::RwlockWrite) => "rwlock:W".into(),
        Some(LockKind::Mutex) => "mutex".into(),
        Some(LockKind::RwsemRead) => "rwsem:R".into(),
        Some(LockKind::RwsemWrite) => "rwsem:W".into(),
        Some(LockKind::RtMutex) => "rt-mutex".into(),
        Some(LockKind::RwlockRtRead) => "rwlockrt:R".into(),
        Some(LockKind::RwlockRtWrite) => "rwlockrt:W".into(),
        Some(LockKind::PercpuRwsemRead) => "pcpu-sem:R".into(),
        Some(LockKind::PercpuRwsemWrite) => "pcpu-sem:W".into(),
        Some(LockKind::RunQueue) => "runq".into(),
        Some(LockKind::PickNext) => "picknext".into(),
        Some(LockKind::UserMutex) => "pmutex".into(),
        Some(LockKind::UserRwlockRead) => "prwlock:R".into(),
        Some(LockKind::UserRwlockWrite) => "prwlock:W".into(),
        Some(LockKind::UserSpin) => "pspin".into(),
        Some(LockKind::Futex) => "futex".into(),
        Some(LockKind::Unknown(f)) => format!("?{f:#x}"),
        None => "(mixed)".into(),
    }
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

/// The mark the headline carries when anything was lost.
pub fn lost_mark(lost: &BTreeMap<String, u64>) -> Option<String> {
    match lost_total(lost) {
        0 => None,
        n => Some(format!("[{n} LOST, see below] ")),
    }
}

/// Human table, at most `width` columns wide.
pub fn write_table(
    w: &mut dyn Write,
    rep: &Report,
    by: GroupBy,
    top: usize,
    width: usize,
) -> io::Result<()> {
    let width = width.max(60);
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
        writeln!(w, "{}", fit(&line, width))?;
    }
    for l in summary_lines(rep) {
        writeln!(w, "{}", fit(&l, width))?;
    }
    writeln!(w)?;
    if rep.rows.is_empty() {
        writeln!(w, "no lock contention seen")?;
    } else {
        // a column of total hold time when any row measures holds
        let holds = rep.rows.iter().any(|r| r.hold_ns.is_some());
        let held = |s: String| {
            if holds {
                format!(" {s:>8}")
            } else {
                String::new()
            }
        };
        let lead = format!(
            "{:>9} {:>8} {:>8} {:>8} {:>8}{}  {:<10} ",
            "contended",
            "total",
            "max",
            "avg",
            "p99",
            held("held".into()),
            "kind"
        );
        let rest = width.saturating_sub(lead.chars().count());
        writeln!(w, "{lead}{}", fit(last_header(by), rest))?;
        for r in rep.rows.iter().take(top) {
            let lead = format!(
                "{:>9} {:>8} {:>8} {:>8} {:>8}{}  {:<10} ",
                r.count,
                fmt_ns(r.wait.total_ns),
                fmt_ns(r.wait.max_ns),
                fmt_ns(r.wait.avg_ns()),
                fmt_ns(r.wait.p99()),
                held(r.hold_ns.map_or("-".into(), |h| fmt_ns(h.total))),
                fit(&short_kind(r.kind), 10),
            );
            let last = last_column(r, by);
            if by == GroupBy::Lock
                && r.kind != Some(LockKind::RunQueue)
                && last.chars().count() > rest
            {
                // lock on this line, its caller on the next, under it
                writeln!(w, "{lead}{}", fit(&lock_label(r), rest))?;
                let pad = " ".repeat(width.saturating_sub(rest));
                if r.kind != Some(LockKind::RunQueue) {
                    let caller = format!("└ {}", r.caller.as_deref().unwrap_or("?"));
                    writeln!(w, "{pad}{}", fit(&caller, rest))?;
                }
            } else {
                writeln!(w, "{lead}{}", fit(&last, rest))?;
            }
        }
        if let Some(l) = split_line(&rep.rows, by) {
            writeln!(w, "{}", fit(&l, width))?;
        }
        let failed: u64 = rep.rows.iter().map(|r| r.failed).sum();
        let partial: u64 = rep.rows.iter().map(|r| r.partial).sum();
        if failed + partial > 0 {
            let l = format!(
                "{failed} failed calls (trylock busy, timed out), {partial} partial \
                 (begun before tracing: counted, not timed)"
            );
            writeln!(w, "{}", fit(&l, width))?;
        }
        for l in holder_lines(&rep.holders, 5, width) {
            writeln!(w, "{l}")?;
        }
        if rep.rows.len() > top {
            writeln!(
                w,
                "... {} more rows (--top N, or --json for all)",
                rep.rows.len() - top
            )?;
        }
    }
    writeln!(w)?;
    let overhead = overhead_line(&rep.bpf_programs);
    let lost = lost_lines(&rep.lost, width);
    match overhead {
        // no loss: one line
        Some(o) if lost_total(&rep.lost) == 0 && 13 + o.chars().count() <= width => {
            writeln!(w, "lost: none; {o}")?;
        }
        o => {
            for l in lost {
                writeln!(w, "{l}")?;
            }
            if let Some(l) = o {
                writeln!(w, "{}", fit(&l, width))?;
            }
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
        writeln!(w, "{}", fit(&head, width))?;
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

/// The lines under the sources: contended waits of the lock-contention
/// sources, then one line per source that sees holds (acquisitions, not
/// only contended waits) and one for run-queue waits.
pub fn summary_lines(rep: &Report) -> Vec<String> {
    let runq = |r: &Row| r.kind == Some(LockKind::RunQueue);
    let plain: Vec<&Row> = rep
        .rows
        .iter()
        .filter(|r| !runq(r) && r.hold_ns.is_none())
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
    let mut held: BTreeMap<&str, (u64, u64, u64, u64, u64)> = BTreeMap::new();
    for r in rep.rows.iter().filter(|r| !runq(r)) {
        if let Some(h) = &r.hold_ns {
            let e = held.entry(r.source).or_default();
            e.0 += r.count;
            e.1 += r.wait.total_ns;
            e.2 += h.total;
            e.3 += r.failed;
            e.4 += r.partial;
        }
    }
    for (src, (n, wait, hold, failed, partial)) in held {
        lines.push(format!(
            "  {src}: {n} acquisitions, {} waiting, {} held, {failed} failed, \
             {partial} partial",
            fmt_ns(wait),
            fmt_ns(hold)
        ));
    }
    let rq: Vec<&Row> = rep.rows.iter().filter(|r| runq(r)).collect();
    if !rq.is_empty() {
        let n: u64 = rq.iter().map(|r| r.count).sum();
        let woken: u64 = rq.iter().map(|r| r.slept).sum();
        lines.push(format!(
            "  run queue: {n} waits for a CPU, {} in total, {} after a preemption",
            fmt_ns(rq.iter().map(|r| r.wait.total_ns).sum()),
            n.saturating_sub(woken)
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
    let mut out = vec![fit(
        "top holders (waits that began while they held the lock):",
        width,
    )];
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
        out.push(fit(&l, width));
    }
    out
}

/// "overhead: begin 206 ns x 470k, end 203 ns x 470k" from program stats.
pub fn overhead_line(progs: &[crate::sources::ProgStats]) -> Option<String> {
    if progs.is_empty() {
        return None;
    }
    if progs.iter().all(|p| p.run_time_ns == 0) {
        let runs: u64 = progs.iter().map(|p| p.run_cnt).sum();
        return Some(format!(
            "overhead: {runs} BPF runs (per-run cost: kernel.bpf_stats_enabled=1)"
        ));
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

/// The terminal width, or 80 when output is not a terminal.
pub fn term_width() -> usize {
    use std::io::IsTerminal;
    if !io::stdout().is_terminal() {
        return 80;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Record, Stats, group};

    fn sample() -> Report {
        let mut wait = Stats::default();
        for ns in [1_000, 2_000, 3_000_000] {
            wait.record(ns);
        }
        let rec = Record {
            source: "kernel-contention",
            kind: LockKind::RwsemWrite,
            lock: 0xffff_8881_0342_5e40,
            lock_name: Some("mmap_lock of 4242 (lockscope-wl)".into()),
            caller: Some("a_very_long_kernel_function_name_that_goes_on_and_on".into()),
            pid: 4242,
            tid: 4243,
            comm: "lockscope-wl".into(),
            cgroup: Some("/user.slice".into()),
            memcg: None,
            aborted: 1,
            spun: 0,
            slept: 3,
            wait,
            hold: None,
            failed: 0,
            partial: 0,
            split: Some(crate::model::WaitSplit::from_offcpu(
                3_003_000, 3_000_000, 1_000_000,
            )),
            stacks: vec![],
        };
        let mut lost = BTreeMap::new();
        lost.insert("map_full".to_string(), 0);
        lost.insert("end_without_begin".to_string(), 2);
        Report {
            version: JSON_VERSION,
            duration_ns: 5_000_000_000,
            targets: "pid 4242".into(),
            by: "lock",
            interval: None,
            sources: vec![SourceStatus {
                name: "kernel-contention".into(),
                backend: Some("tp_btf".into()),
                available: true,
                reason: None,
            }],
            lost,
            bpf_programs: vec![],
            rows: group(&[rec], GroupBy::Lock),
            holders: vec![],
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
            let mut out = Vec::new();
            write_table(&mut out, &rep, by, 20, 80).expect("write to a Vec");
            let text = String::from_utf8(out).expect("utf8");
            for line in text.lines() {
                assert!(line.chars().count() <= 80, "too wide: {line:?}");
            }
            assert!(text.contains("rwsem:W"), "{text}");
            assert!(text.contains("3.00 ms"), "max shown: {text}");
            assert!(text.contains("end_without_begin 2"), "{text}");
            assert!(
                text.contains("2.00 ms asleep, 1.00 ms runnable, 3.00 us on CPU"),
                "{text}"
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
        assert!(
            w.contains("map_full 287036: rerun with --max-entries 16 (now 4"),
            "{w}"
        );
        assert!(
            w.contains("futex.ringbuf_dropped 12: rerun with --ringbuf-mb 32 (now 8)"),
            "{w}"
        );
        assert!(w.contains("futex.stale_wait 3"), "{w}");
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
        let mut out = Vec::new();
        write_table(&mut out, &rep, GroupBy::Lock, 20, 80).expect("write to a Vec");
        let text = String::from_utf8(out).expect("utf8");
        let headline = text
            .lines()
            .find(|l| l.contains("contended waits"))
            .expect("headline");
        assert!(
            headline.starts_with("[287051 LOST, see below] pid 4242"),
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
        rep.bpf_programs = vec![crate::sources::ProgStats {
            name: "contention_begin_btf".into(),
            id: 1,
            run_cnt: 10,
            run_time_ns: 0,
            recursion_misses: 0,
        }];
        let mut out = Vec::new();
        write_table(&mut out, &rep, GroupBy::Lock, 20, 80).expect("write to a Vec");
        let text = String::from_utf8(out).expect("utf8");
        assert!(!text.contains("LOST"), "{text}");
        let footer: Vec<&str> = text.lines().rev().take_while(|l| !l.is_empty()).collect();
        assert_eq!(
            footer,
            vec!["lost: none; overhead: 10 BPF runs (per-run cost: kernel.bpf_stats_enabled=1)"],
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
            "aborted",
            "wait_ns",
            "hold_ns",
        ] {
            assert!(r.get(k).is_some(), "row missing {k}");
        }
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
        let stats = |v: &[u64]| {
            let mut s = Stats::default();
            for &x in v {
                s.record(x);
            }
            s
        };
        let base = Record {
            source: "mmap-lock",
            kind: LockKind::RwsemWrite,
            lock: 0xffff_8881_0000_0040,
            lock_name: Some("mmap_lock of 7 (db)".into()),
            caller: Some("__vm_munmap".into()),
            pid: 7,
            tid: 8,
            comm: "db".into(),
            cgroup: Some("/".into()),
            memcg: None,
            aborted: 0,
            spun: 0,
            slept: 0,
            wait: stats(&[1_000, 2_000]),
            hold: Some(stats(&[5_000_000])),
            failed: 1,
            partial: 2,
            split: None,
            stacks: Vec::new(),
        };
        let runq = |tid: u32, waits: &[u64], woken: u64| Record {
            source: "sched",
            kind: LockKind::RunQueue,
            lock: 1,
            lock_name: Some("cpu 1".into()),
            caller: None,
            tid,
            slept: woken,
            wait: stats(waits),
            hold: None,
            failed: 0,
            partial: 0,
            ..base.clone()
        };
        let recs = vec![
            base.clone(),
            runq(8, &[10_000, 20_000], 1),
            runq(9, &[30_000], 1),
        ];
        Report {
            version: JSON_VERSION,
            duration_ns: 1_000_000_000,
            targets: "pid 7".into(),
            by: "lock",
            interval: None,
            sources: vec![],
            lost: BTreeMap::new(),
            bpf_programs: vec![],
            rows: group(&recs, by),
            holders: vec![],
        }
    }

    #[test]
    fn mmap_lock_and_run_queue_rows_have_their_own_summaries() {
        let rep = mixed(GroupBy::Lock);
        let lines = summary_lines(&rep);
        assert_eq!(
            lines[0], "pid 7 for 1.00 s:",
            "no plain lock rows: {lines:?}"
        );
        assert!(
            lines.contains(
                &"  mmap-lock: 2 acquisitions, 3.00 us waiting, 5.00 ms held, 1 failed, \
                  2 partial"
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
            let mut out = Vec::new();
            write_table(&mut out, &mixed(by), by, 20, 80).expect("write to a Vec");
            let text = String::from_utf8(out).expect("utf8");
            for line in text.lines() {
                assert!(line.chars().count() <= 80, "too wide: {line:?}");
            }
            assert!(text.contains("runq"), "{text}");
        }
        let mut out = Vec::new();
        write_table(&mut out, &rep, GroupBy::Lock, 20, 80).expect("write to a Vec");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("runq       cpu 1\n"), "{text}");
        assert!(!text.contains("cpu 1 ?"), "{text}");
        let v = serde_json::to_value(&rep).expect("serialise");
        let r = v["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["source"] == "sched"))
            .expect("a sched row");
        assert_eq!(r["kind"], "runqueue");
        assert_eq!(r["lock"], "0x1");
        assert!(r["hold_ns"].is_null());
        let m = v["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["source"] == "mmap-lock"))
            .expect("an mmap-lock row");
        assert_eq!(m["hold_ns"]["total"], 5_000_000);
        assert_eq!(
            (m["failed"].as_u64(), m["partial"].as_u64()),
            (Some(1), Some(2))
        );
    }
}
