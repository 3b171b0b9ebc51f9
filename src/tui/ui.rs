//! Drawing of `lockscope top`: a pure function of the [`App`] state onto a
//! ratatui frame (no I/O here, so tests draw into a `TestBackend`).
//!
//! Layout, top to bottom: a title line, a totals line, the table, the
//! detail pane (Enter), the loss counters of every source and the keys.
//! Columns are dropped by priority so the table fits any width (80 columns
//! show the lock, kind, Δcount, count, Δtotal, total, caller and p99);
//! the column being sorted on always stays.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use super::state::{App, Detail, SortKey, TopRow, lock_label, row_label};
use crate::deadlock::Deadlock;
use crate::model::{GroupBy, slot_bounds};
use crate::output::{fit, short_kind};
use crate::units::fmt_ns;

/// A table column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Col {
    Num(SortKey),
    Kind,
    /// What the row is: lock, caller, thread or cgroup (the view).
    Key,
    /// What else is known: the caller of a lock, the lock of a caller.
    Context,
}

struct Spec {
    col: Col,
    min: u16,
    prio: u8,
}

fn specs(view: GroupBy) -> Vec<Spec> {
    let n = |k, min, prio| Spec {
        col: Col::Num(k),
        min,
        prio,
    };
    let (key_min, ctx_min) = match view {
        GroupBy::Lock => (12, 16),
        GroupBy::Caller => (16, 12),
        GroupBy::Task | GroupBy::Cgroup => (16, 16),
    };
    vec![
        n(SortKey::DeltaCount, 7, 2),
        n(SortKey::DeltaTotal, 8, 4),
        n(SortKey::DeltaMax, 8, 11),
        n(SortKey::DeltaAvg, 8, 12),
        n(SortKey::DeltaP99, 8, 10),
        n(SortKey::Count, 6, 3),
        n(SortKey::Total, 8, 5),
        n(SortKey::Max, 8, 8),
        n(SortKey::Avg, 8, 9),
        n(SortKey::P99, 8, 7),
        Spec {
            col: Col::Kind,
            min: 8,
            prio: 1,
        },
        Spec {
            col: Col::Key,
            min: key_min,
            prio: 0,
        },
        Spec {
            col: Col::Context,
            min: ctx_min,
            prio: 6,
        },
    ]
}

/// The columns that fit `width`, with their widths, in display order.
/// `key_natural` is the widest label of the key column: it grows to that,
/// and the context column takes the rest.
pub fn layout(view: GroupBy, sort: SortKey, width: u16, key_natural: u16) -> Vec<(Col, u16)> {
    let mut specs = specs(view);
    for s in &mut specs {
        let sorted = match s.col {
            Col::Num(k) => k == sort,
            Col::Kind => sort == SortKey::Kind,
            _ => false,
        };
        if sorted {
            s.prio = 0;
        }
    }
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by_key(|&i| specs[i].prio);
    let mut chosen = vec![false; specs.len()];
    let mut used: u16 = 0;
    for i in order {
        let need = specs[i].min + u16::from(used > 0);
        if specs[i].prio == 0 || used.saturating_add(need) <= width {
            chosen[i] = true;
            used = used.saturating_add(need);
        }
    }
    let mut cols: Vec<(Col, u16)> = specs
        .iter()
        .zip(&chosen)
        .filter(|(_, c)| **c)
        .map(|(s, _)| (s.col, s.min))
        .collect();
    let mut extra = width.saturating_sub(used);
    let has_ctx = cols.iter().any(|(c, _)| *c == Col::Context);
    for (c, w) in &mut cols {
        if *c == Col::Key {
            let want = if has_ctx {
                key_natural.saturating_sub(*w)
            } else {
                extra
            };
            let add = want.min(extra);
            *w += add;
            extra -= add;
        }
    }
    for (c, w) in &mut cols {
        if *c == Col::Context {
            *w += extra;
        }
    }
    cols
}

fn fmt_count(n: u64) -> String {
    match n {
        0..=999_999 => n.to_string(),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

/// "12s", "3m04s", "2h05m".
pub fn fmt_uptime(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// An interval: seconds with two decimals (fmt_ns would say "1000 ms"
/// for 999.9 ms), below 100 ms as fmt_ns does.
fn fmt_interval(ns: u64) -> String {
    if ns >= 100_000_000 {
        format!("{:.2} s", ns as f64 / 1e9)
    } else {
        fmt_ns(ns)
    }
}

fn view_name(v: GroupBy) -> &'static str {
    crate::output::by_name(v)
}

fn key_header(v: GroupBy) -> &'static str {
    match v {
        GroupBy::Lock => "lock",
        GroupBy::Caller => "caller",
        GroupBy::Task => "comm tid",
        GroupBy::Cgroup => "cgroup",
    }
}

fn context_header(v: GroupBy) -> &'static str {
    match v {
        GroupBy::Caller => "lock",
        _ => "caller",
    }
}

/// Cuts an address from the left (its low digits tell locks apart).
fn fit_tail(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        s.to_string()
    } else if w == 0 {
        String::new()
    } else {
        let tail: String = s.chars().skip(n - (w - 1)).collect();
        format!("…{tail}")
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn cell(r: &TopRow, col: Col, view: GroupBy, w: usize) -> String {
    let (d, t) = (&r.delta.wait, &r.total.wait);
    let dur = |ns: u64, live: bool| if live { fmt_ns(ns) } else { "-".into() };
    let text = match col {
        Col::Num(k) => {
            let s = match k {
                SortKey::DeltaCount => fmt_count(d.count),
                SortKey::DeltaTotal => dur(d.total_ns, d.count > 0),
                SortKey::DeltaMax if d.count > 0 && !r.delta.max_exact => {
                    format!("≤{}", fmt_ns(d.max_ns))
                }
                SortKey::DeltaMax => dur(d.max_ns, d.count > 0),
                SortKey::DeltaAvg => dur(d.avg_ns(), d.count > 0),
                SortKey::DeltaP99 => dur(d.p99(), d.count > 0),
                SortKey::Count => fmt_count(t.count),
                SortKey::Total => fmt_ns(t.total_ns),
                SortKey::Max => fmt_ns(t.max_ns),
                SortKey::Avg => fmt_ns(t.avg_ns()),
                SortKey::P99 => fmt_ns(t.p99()),
                SortKey::Kind | SortKey::Name => String::new(),
            };
            return format!("{:>w$}", fit(&s, w));
        }
        Col::Kind => short_kind(r.total.kind),
        Col::Key => {
            let l = row_label(&r.total, view);
            if is_hex(&l) {
                return format!("{:<w$}", fit_tail(&l, w));
            }
            l
        }
        Col::Context => match view {
            GroupBy::Caller => lock_label(r.total.lock_name.as_deref(), r.total.lock.as_deref()),
            _ => r.total.caller.clone().unwrap_or_else(|| "(several)".into()),
        },
    };
    format!("{:<w$}", fit(&text, w))
}

fn header_cell(col: Col, app: &App, w: usize) -> String {
    let arrow = if app.ascending { "▲" } else { "▼" };
    let (name, sorted, right) = match col {
        Col::Num(k) => (k.header(), k == app.sort, true),
        Col::Kind => ("kind", app.sort == SortKey::Kind, false),
        Col::Key => (key_header(app.view), app.sort == SortKey::Name, false),
        Col::Context => (context_header(app.view), false, false),
    };
    let s = if sorted {
        format!("{name}{arrow}")
    } else {
        name.to_string()
    };
    if right {
        format!("{:>w$}", fit(&s, w))
    } else {
        format!("{:<w$}", fit(&s, w))
    }
}

fn join(cells: Vec<String>) -> String {
    cells.join(" ")
}

/// The table: a header line and as many rows as fit, scrolled so the
/// selected row is visible.
pub fn table_lines(app: &App, width: u16, height: u16) -> Vec<Line<'static>> {
    let key_natural = app
        .rows
        .iter()
        .map(|r| row_label(&r.total, app.view).chars().count())
        .max()
        .unwrap_or(0)
        .min(40) as u16;
    let cols = layout(app.view, app.sort, width, key_natural);
    let mut out = Vec::new();
    let head = join(
        cols.iter()
            .map(|&(c, w)| header_cell(c, app, w as usize))
            .collect(),
    );
    out.push(Line::styled(
        head,
        Style::new().add_modifier(Modifier::BOLD),
    ));
    let body = height.saturating_sub(1) as usize;
    if app.rows.is_empty() {
        let msg = if app.progress.updates == 0 {
            format!(
                "waiting for the first sample (every {})…",
                fmt_ns(app.interval_ns)
            )
        } else if !app.active_filter().is_empty() {
            format!("no rows match the filter \"{}\"", app.active_filter())
        } else {
            "no lock contention seen yet".into()
        };
        out.push(Line::raw(msg));
        return out;
    }
    let sel = app.selected().unwrap_or(0);
    let offset = if body > 0 && sel >= body {
        sel + 1 - body
    } else {
        0
    };
    for (i, r) in app.rows.iter().enumerate().skip(offset).take(body) {
        let text = join(
            cols.iter()
                .map(|&(c, w)| cell(r, c, app.view, w as usize))
                .collect(),
        );
        let style = if i == sel {
            Style::new().add_modifier(Modifier::REVERSED)
        } else if r.delta.wait.count > 0 {
            Style::new()
        } else {
            Style::new().fg(Color::DarkGray)
        };
        out.push(Line::styled(text, style));
    }
    out
}

fn title_line(app: &App) -> String {
    let arrow = if app.ascending { "▲" } else { "▼" };
    let mut s = format!(
        "lockscope top · {} · by {} · sort {}{} · every {} · up {}",
        app.targets,
        view_name(app.view),
        app.sort.header(),
        arrow,
        fmt_interval(app.interval_ns),
        fmt_uptime(app.progress.elapsed_ns)
    );
    if app.progress.targets_exited {
        s.push_str(" · targets exited");
    }
    s
}

fn totals_line(app: &App) -> String {
    let ((dn, dw), (tn, tw)) = app.sums();
    let filter = match (&app.input, app.filter.is_empty()) {
        (None, false) => format!("filter \"{}\" · ", app.filter),
        _ => String::new(),
    };
    format!(
        "{filter}last {}: {} waits, {} · since start: {} waits, {} · {} row{}",
        fmt_interval(app.progress.last_interval_ns),
        dn,
        fmt_ns(dw),
        tn,
        fmt_ns(tw),
        app.rows.len(),
        if app.rows.len() == 1 { "" } else { "s" }
    )
}

/// Loss lines (one per source), unavailable sources and read errors.
fn status_lines(app: &App) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    for e in &app.health.errors {
        out.push(Line::styled(
            format!("error: {e}"),
            Style::new().fg(Color::Red),
        ));
    }
    for l in &app.health.lost {
        if let Some(e) = &l.error {
            out.push(Line::styled(
                format!("lost {}: counters unreadable: {e}", l.source),
                Style::new().fg(Color::Red),
            ));
            continue;
        }
        let nonzero: Vec<String> = l
            .counters
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| match l.grew.get(k).copied().unwrap_or(0) {
                0 => format!("{k} {v}"),
                g => format!("{k} {v} (+{g})"),
            })
            .collect();
        if nonzero.is_empty() {
            out.push(Line::raw(format!(
                "lost {}: none ({} counters at 0)",
                l.source,
                l.counters.len()
            )));
        } else {
            out.push(Line::styled(
                format!("LOST {}: {}", l.source, nonzero.join(", ")),
                Style::new().fg(Color::Yellow),
            ));
        }
    }
    for s in app.health.statuses.iter().filter(|s| !s.available) {
        out.push(Line::raw(format!(
            "{}: unavailable: {}",
            s.name,
            s.reason.as_deref().unwrap_or("?")
        )));
    }
    out
}

fn keys_line(app: &App) -> Line<'static> {
    match &app.input {
        Some((typed, _)) => Line::styled(
            format!("filter: {typed}█   Enter apply · Esc cancel"),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        None => Line::styled(
            "q quit  ↑↓ select  Enter detail  s/S sort  r reverse  / filter  v view",
            Style::new().fg(Color::Cyan),
        ),
    }
}

/// `items` joined by " ← " into lines of at most `width` characters, the
/// first starting with `indent`, the others with as many spaces; at most
/// `max` lines (the last ends in "…" when
/// frames were left out).
pub fn wrap_chain(items: &[String], indent: &str, width: usize, max: usize) -> Vec<String> {
    let room = width.saturating_sub(indent.chars().count()).max(8);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut truncated = false;
    for (i, it) in items.iter().enumerate() {
        let piece = if i + 1 < items.len() {
            format!("{} ←", fit(it, room.saturating_sub(2)))
        } else {
            fit(it, room)
        };
        let len = cur.chars().count();
        if len > 0 && len + 1 + piece.chars().count() > room {
            lines.push(std::mem::take(&mut cur));
            if lines.len() >= max {
                truncated = true;
                break;
            }
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&piece);
    }
    if truncated {
        if let Some(last) = lines.last_mut() {
            *last = format!("{} …", fit(last, room.saturating_sub(2)));
        }
    } else if !cur.is_empty() {
        lines.push(cur);
    }
    let cont = " ".repeat(indent.chars().count());
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| format!("{}{l}", if i == 0 { indent } else { &cont }))
        .collect()
}

/// How many stacks (and how many hold stacks) the detail view shows.
const SHOWN: usize = 3;

/// The top stacks of a row (most waited first): each a head line, its
/// kernel frames (the lock's caller first) and its user frames.
fn stack_lines(out: &mut Vec<Line<'static>>, r: &crate::model::Row, on: bool, width: u16) {
    // wait stacks only (--hold-stacks adds stacks that only held)
    let stacks: Vec<&crate::model::StackSample> = r.stacks.iter().filter(|s| s.count > 0).collect();
    if stacks.is_empty() {
        let why = if on {
            "none recorded for these waits (all shorter than --stack-threshold, not sampled)"
        } else {
            "not collected: start top with --stacks"
        };
        out.push(Line::raw(format!("{:<8} {why}", "stacks")));
    }
    let w = width as usize;
    push_stacks(out, "stacks", &stacks, w, |st| {
        let what = format!("{} of {} waits", st.count, r.count);
        (what, st.total_ns, st.max_ns)
    });
    if stacks.len() > SHOWN {
        out.push(Line::raw(format!(
            "{:<8} … {} more stacks (report --json has them all)",
            "",
            stacks.len() - SHOWN
        )));
    }
    // --hold-stacks: where the locks held longest were taken
    let mut holds: Vec<&crate::model::StackSample> =
        r.stacks.iter().filter(|s| s.hold_count > 0).collect();
    holds.sort_by_key(|s| std::cmp::Reverse(s.hold_total_ns));
    push_stacks(out, "holds", &holds, w, |st| {
        let what = format!("{} holds", st.hold_count);
        (what, st.hold_total_ns, st.hold_max_ns)
    });
}

/// The first [`SHOWN`] of `stacks` in the detail view: each a head line in
/// bold (`label` on the first; `weight` gives what it counts, its total
/// and its max), then its kernel frames and its user frames (none when it
/// has none), wrapped to `w`.
fn push_stacks(
    out: &mut Vec<Line<'static>>,
    label: &str,
    stacks: &[&crate::model::StackSample],
    w: usize,
    weight: impl Fn(&crate::model::StackSample) -> (String, u64, u64),
) {
    for (i, st) in stacks.iter().take(SHOWN).enumerate() {
        let (what, total, max) = weight(st);
        let head = format!(
            "{:<8} {} of {}: {what}, {}, max {}",
            if i == 0 { label } else { "" },
            i + 1,
            stacks.len(),
            fmt_ns(total),
            fmt_ns(max)
        );
        out.push(Line::styled(
            head,
            Style::new().add_modifier(Modifier::BOLD),
        ));
        for l in wrap_chain(&st.kernel, "  kernel ", w, 3) {
            out.push(Line::raw(l));
        }
        for l in wrap_chain(&st.user, "  user   ", w, 3) {
            out.push(Line::raw(l));
        }
    }
}

/// The detail pane's lines for the selected row.
pub fn detail_lines(d: &Detail, app: &App, width: u16) -> Vec<Line<'static>> {
    let r = &d.row.total;
    let what = match app.view {
        GroupBy::Lock => "lock",
        GroupBy::Caller => "caller",
        GroupBy::Task => "thread",
        GroupBy::Cgroup => "cgroup",
    };
    let mut out = Vec::new();
    let title = format!(
        "─ {what} {} · {} · {} ",
        row_label(r, app.view),
        r.kind.map_or("mixed kinds".into(), |k| k.name()),
        r.source
    );
    let fill = (width as usize).saturating_sub(title.chars().count());
    out.push(Line::styled(
        format!("{title}{}", "─".repeat(fill)),
        Style::new().add_modifier(Modifier::BOLD),
    ));
    let field = |name: &str, text: String| Line::raw(format!("{name:<8} {text}"));
    if let Some(addr) = &r.lock {
        let name = match &r.lock_name {
            Some(n) => n.clone(),
            None => "unnamed (no name known for this lock)".into(),
        };
        out.push(field("lock", format!("{name} at {addr}")));
    }
    let w = &r.wait;
    let dw = &d.row.delta.wait;
    out.push(field(
        "waits",
        format!(
            "{} since start, {} in the last {}",
            w.count,
            dw.count,
            fmt_interval(app.progress.last_interval_ns)
        ),
    ));
    // sources that see every acquisition: the waits above are the
    // contended ones of these
    if let Some(n) = r.acquired {
        out.push(field(
            "acquired",
            format!("{n} since start, {} of them contended", w.count),
        ));
    }
    out.push(field(
        "wait",
        format!(
            "total {} · avg {} · max {}",
            fmt_ns(w.total_ns),
            fmt_ns(w.avg_ns()),
            fmt_ns(w.max_ns)
        ),
    ));
    out.push(field(
        "",
        format!(
            "min {} · p50 {} · p99 {}",
            fmt_ns(w.min_ns),
            fmt_ns(w.p50()),
            fmt_ns(w.p99())
        ),
    ));
    if dw.count > 0 {
        out.push(field(
            "Δwait",
            format!(
                "total {} · avg {} · p99 {} · max {}{}",
                fmt_ns(dw.total_ns),
                fmt_ns(dw.avg_ns()),
                fmt_ns(dw.p99()),
                if d.row.delta.max_exact { "" } else { "≤" },
                fmt_ns(dw.max_ns)
            ),
        ));
    }
    out.push(field(
        "split",
        match r.wait_split {
            Some(sp) => format!(
                "{} asleep · {} runnable · {} on CPU",
                fmt_ns(sp.asleep),
                fmt_ns(sp.runnable),
                fmt_ns(sp.oncpu)
            ),
            None => "not measured by this source".into(),
        },
    ));
    stack_lines(&mut out, r, app.stacks_on, width);
    let list = |out: &mut Vec<Line<'static>>, name: &str, items: Vec<String>, max: usize| {
        let more = items.len().saturating_sub(max);
        for (i, it) in items.into_iter().take(max).enumerate() {
            out.push(field(if i == 0 { name } else { "" }, it));
        }
        if more > 0 {
            out.push(field("", format!("… {more} more")));
        }
    };
    let waits = |n: u64, t: u64| format!("{n} waits, {}", fmt_ns(t));
    list(
        &mut out,
        "callers",
        d.callers
            .iter()
            .map(|(c, n, t)| format!("{c}: {}", waits(*n, *t)))
            .collect(),
        3,
    );
    list(
        &mut out,
        "threads",
        d.threads
            .iter()
            .map(|(c, p, tid, n, t)| format!("{c} {p}/{tid}: {}", waits(*n, *t)))
            .collect(),
        4,
    );
    if app.view != GroupBy::Lock {
        list(
            &mut out,
            "locks",
            d.locks
                .iter()
                .map(|(l, k, n, t)| format!("{l} {}: {}", short_kind(Some(*k)), waits(*n, *t)))
                .collect(),
            3,
        );
    }
    list(
        &mut out,
        "cgroups",
        d.cgroups
            .iter()
            .map(|(c, n, t)| format!("{c}: {}", waits(*n, *t)))
            .collect(),
        2,
    );
    out.push(field(
        "how",
        format!(
            "slept {} · spun {} · aborted {} · failed {} · partial {}",
            r.slept, r.spun, r.aborted, r.failed, r.partial
        ),
    ));
    if let Some(h) = &r.hold_ns {
        out.push(field(
            "hold",
            format!(
                "total {} · p99 {} · max {}",
                fmt_ns(h.total),
                fmt_ns(h.p99),
                fmt_ns(h.max)
            ),
        ));
    }
    let peak = r.wait_hist.iter().copied().max().unwrap_or(0);
    let bar_w = (width as usize).saturating_sub(36).max(4);
    let mut first = true;
    for (slot, &n) in r.wait_hist.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let (lo, hi) = slot_bounds(slot);
        let len = ((n as f64 / peak.max(1) as f64) * bar_w as f64).ceil() as usize;
        out.push(field(
            if first { "hist" } else { "" },
            format!(
                "{:>8} – {:<8} {:>7} {}",
                fmt_ns(lo),
                fmt_ns(hi),
                n,
                "█".repeat(len.max(1))
            ),
        ));
        first = false;
    }
    out
}

/// The one-line account of a deadlock, as `top` shows it above the table:
/// `DEADLOCK pid P (comm): thread A (comm) waits for L1 held by B; ...`,
/// each lock by its name, else its address.
pub fn deadlock_banner(d: &Deadlock) -> String {
    format!("DEADLOCK {}", deadlock_hops(d).join("; "))
}

/// The banner's pieces: the process and the first hop, then one piece a
/// hop.
fn deadlock_hops(d: &Deadlock) -> Vec<String> {
    let mut out: Vec<String> = d
        .threads
        .iter()
        .map(|t| {
            let lock = t
                .lock_name
                .clone()
                .unwrap_or_else(|| t.waits_for_lock.clone());
            format!(
                "thread {} ({}) waits for {lock} held by {}",
                t.tid, t.comm, t.owner_tid
            )
        })
        .collect();
    let pid = format!("pid {} ({}):", d.pid, d.comm);
    match out.first_mut() {
        Some(first) => *first = format!("{pid} {first}"),
        None => out.push(pid),
    }
    out
}

/// The red banner: each live deadlock in lines of at most `width`
/// characters (hops are not split unless one is wider than a line), at
/// most `max` lines in all (the last says how many were left out).
fn deadlock_lines(app: &App, width: u16, max: usize) -> Vec<Line<'static>> {
    let w = width as usize;
    let mut lines: Vec<String> = Vec::new();
    for d in &app.deadlocks {
        let mut cur = String::from("DEADLOCK");
        for (i, hop) in deadlock_hops(d).iter().enumerate() {
            let piece = if i == 0 {
                format!(" {hop}")
            } else {
                format!("; {hop}")
            };
            if i > 0 && cur.chars().count() + piece.chars().count() > w {
                lines.push(std::mem::take(&mut cur));
                cur = format!("  {}", piece.trim_start_matches(';').trim_start());
            } else {
                cur.push_str(&piece);
            }
        }
        lines.push(cur);
    }
    if lines.len() > max {
        let left = lines.len() + 1 - max;
        lines.truncate(max.saturating_sub(1));
        lines.push(format!("DEADLOCK … {left} more lines"));
    }
    let style = Style::new()
        .fg(Color::White)
        .bg(Color::Red)
        .add_modifier(Modifier::BOLD);
    lines
        .into_iter()
        .map(|l| Line::styled(format!("{:<w$}", fit(&l, w)), style))
        .collect()
}

/// Draws the whole screen.
pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let (w, h) = (area.width, area.height);
    if w == 0 || h == 0 {
        return;
    }
    let header: Vec<Line> = match h {
        0..=3 => vec![],
        4..=11 => vec![Line::styled(
            title_line(app),
            Style::new().add_modifier(Modifier::BOLD),
        )],
        _ => vec![
            Line::styled(title_line(app), Style::new().add_modifier(Modifier::BOLD)),
            Line::raw(totals_line(app)),
        ],
    };
    // a live deadlock: a red banner between the header and the table
    let max_banner = match h {
        0..=3 => 0,
        4..=11 => 1,
        _ => 4,
    };
    let mut header = header;
    header.extend(deadlock_lines(app, w, max_banner));
    let max_status = match h {
        0..=7 => 0,
        8..=15 => 1,
        _ => 4,
    };
    let mut footer: Vec<Line> = status_lines(app).into_iter().take(max_status).collect();
    if h >= 6 || app.input.is_some() {
        footer.push(keys_line(app));
    }
    let hh = header.len() as u16;
    let fh = (footer.len() as u16).min(h.saturating_sub(hh));
    let middle = h.saturating_sub(hh + fh);
    let detail = if app.detail { app.detail() } else { None };
    let (table_h, detail_h) = match &detail {
        None => (middle, 0),
        Some(_) if middle >= 14 => {
            let t = (middle * 2 / 5).max(4);
            (t, middle - t)
        }
        Some(_) => (0, middle),
    };
    let rect = |y: u16, height: u16| Rect::new(area.x, area.y + y, w, height);
    f.render_widget(Paragraph::new(header), rect(0, hh));
    if table_h > 0 {
        f.render_widget(
            Paragraph::new(table_lines(app, w, table_h)),
            rect(hh, table_h),
        );
    }
    if let Some(d) = &detail {
        let lines = detail_lines(d, app, w);
        // the title stays; the rest scrolls (PgDn/PgUp), never past its end
        let (title, rest) = lines.split_at(1.min(lines.len()));
        let scroll = app.detail_scroll.min(rest.len().saturating_sub(1) as u16);
        let y = hh + table_h;
        f.render_widget(Paragraph::new(title.to_vec()), rect(y, detail_h.min(1)));
        f.render_widget(
            Paragraph::new(rest.to_vec()).scroll((scroll, 0)),
            rect(y + 1, detail_h.saturating_sub(1)),
        );
    }
    f.render_widget(Paragraph::new(footer), rect(hh + middle, fh));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LockKind, Record, Stats, WaitSplit};
    use crate::tui::state::{Snapshot, tests::key, tests::rec};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::KeyCode;
    use std::collections::BTreeMap;

    const MS: u64 = 1_000_000;

    fn screen(app: &App, w: u16, h: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
        t.draw(|f| draw(f, app)).expect("draw");
        let buf = t.backend().buffer();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf.cell((x, y)).map_or(" ", |c| c.symbol()))
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    /// Opens the detail pane of the selected row, draws it `w` x `h` and
    /// checks that its text has each of `wants`; the screen drawn.
    fn detail_shows(app: &mut App, w: u16, h: u16, wants: &[&str]) -> Vec<String> {
        app.on_key(key(KeyCode::Enter));
        let s = screen(app, w, h);
        let text = s.join("\n");
        for want in wants {
            assert!(text.contains(want), "detail lacks {want:?}:\n{text}");
        }
        s
    }

    fn pipe_app() -> App {
        let mut app = App::new("pid 4242".into(), GroupBy::Lock, 1_000_000_000);
        let mut lost = BTreeMap::new();
        for k in ["map_full", "end_without_begin", "stale_wait"] {
            lost.insert(k.to_string(), 0);
        }
        let mk = |n: usize| {
            vec![
                Record {
                    lock: 0xffff_8881_0351_5600,
                    ..rec(0, "anon_pipe_write", 4244, "ls-waiter", &vec![50 * MS; n])
                },
                Record {
                    lock: 0xffff_8881_0a00_0040,
                    kind: LockKind::RwsemRead,
                    lock_name: Some("mmap_lock of 4242 (lockscope)".into()),
                    ..rec(0, "lock_mm_and_find_vma", 4243, "ls-holder", &[20_000])
                },
            ]
        };
        app.update(Snapshot {
            records: mk(10),
            lost: vec![("kernel-contention".into(), Ok(lost.clone()))],
            at_ns: 1_000_000_000,
            ..Default::default()
        });
        lost.insert("end_without_begin".into(), 2);
        app.update(Snapshot {
            records: mk(29),
            lost: vec![("kernel-contention".into(), Ok(lost))],
            at_ns: 2_000_000_000,
            ..Default::default()
        });
        app
    }

    #[test]
    fn fits_80x24_with_the_hot_lock_its_caller_deltas_and_losses() {
        let app = pipe_app();
        let s = screen(&app, 80, 24);
        let text = s.join("\n");
        assert!(
            s[0].starts_with("lockscope top · pid 4242 · by lock · sort Δtotal▼"),
            "{text}"
        );
        assert!(
            s[1].starts_with("last 1.00 s: 19 waits, 950 ms · since start: 30 waits, 1.45 s"),
            "{text}"
        );
        let head = &s[2];
        for h in [
            "Δcount",
            "count",
            "Δtotal▼",
            "total",
            "p99",
            "kind",
            "lock",
            "caller",
        ] {
            assert!(head.contains(h), "header lacks {h}: {head}");
        }
        let row = &s[3];
        assert!(row.contains("103515600"), "lock address tail: {row}");
        assert!(
            row.contains("mutex") && row.contains("anon_pipe_write"),
            "{row}"
        );
        let nums: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(nums[0], "19", "Δcount: {row}");
        assert_eq!(&nums[1..3], ["950", "ms"], "Δtotal: {row}");
        assert_eq!(nums[3], "29", "count: {row}");
        assert!(row.contains("1.45 s"), "total 29 x 50 ms: {row}");
        // the idle mmap_lock row: no delta this interval
        assert!(
            s[4].contains("mmap_lock") && s[4].contains("rwsem:R"),
            "{text}"
        );
        assert!(s[4].trim_start().starts_with("0 "), "{}", s[4]);
        assert!(
            text.contains("LOST kernel-contention: end_without_begin 2 (+2)"),
            "{text}"
        );
        assert!(s[23].starts_with("q quit"), "{text}");
        for l in &s {
            assert!(l.chars().count() <= 80);
        }
    }

    fn abba() -> Deadlock {
        let t = |tid, lock: &str, name: &str, owner| crate::deadlock::DeadlockThread {
            tid,
            comm: format!("ls-dl-{}", tid - 4243),
            waits_for_lock: lock.into(),
            lock_name: Some(name.into()),
            owner_tid: owner,
            stack: Vec::new(),
        };
        Deadlock {
            pid: 4242,
            comm: "app".into(),
            threads: vec![
                t(4243, "0xa0", "LS_DEADLOCK_B", 4244),
                t(4244, "0xb0", "LS_DEADLOCK_A", 4243),
            ],
            locks: Vec::new(),
            since_ns: 1_100_000_000,
            since: 1.1,
            detected_ns: 0,
        }
    }

    #[test]
    fn a_live_deadlock_is_a_red_banner_above_the_table() {
        let mut app = pipe_app();
        assert!(!screen(&app, 200, 24).iter().any(|l| l.contains("DEADLOCK")));
        app.deadlocks = vec![abba()];
        assert_eq!(
            deadlock_banner(&app.deadlocks[0]),
            "DEADLOCK pid 4242 (app): thread 4243 (ls-dl-0) waits for LS_DEADLOCK_B held by \
             4244; thread 4244 (ls-dl-1) waits for LS_DEADLOCK_A held by 4243"
        );
        // wide: one line, between the totals and the table's header
        let s = screen(&app, 200, 24);
        assert_eq!(s[2], deadlock_banner(&app.deadlocks[0]), "{s:#?}");
        assert!(s[3].contains("Δcount"), "{s:#?}");
        // 80 columns: a line a hop, each whole
        let s = screen(&app, 80, 24);
        assert!(
            s[2].starts_with("DEADLOCK pid 4242 (app): thread 4243 (ls-dl-0)"),
            "{s:#?}"
        );
        assert_eq!(
            s[3],
            "  thread 4244 (ls-dl-1) waits for LS_DEADLOCK_A held by 4243"
        );
        assert!(s[4].contains("Δcount"), "{s:#?}");
        assert!(
            s.iter().any(|l| l.contains(" mutex ")),
            "the table is still there"
        );
        // red
        let mut t = Terminal::new(TestBackend::new(80, 24)).expect("test terminal");
        t.draw(|f| draw(f, &app)).expect("draw");
        let cell = t.backend().buffer().cell((0, 2)).cloned().expect("a cell");
        assert_eq!(cell.bg, Color::Red);
        // bounded: many deadlocks take at most 4 lines, the last says so
        app.deadlocks = vec![abba(); 5];
        let s = screen(&app, 200, 24);
        let banner: Vec<&String> = s.iter().filter(|l| l.starts_with("DEADLOCK")).collect();
        assert_eq!(banner.len(), 4, "{s:#?}");
        assert_eq!(banner[3].as_str(), "DEADLOCK … 2 more lines");
    }

    #[test]
    fn wider_terminals_show_more_columns_and_narrow_ones_fewer() {
        let app = pipe_app();
        let wide = screen(&app, 160, 30);
        for h in ["Δmax", "Δavg", "Δp99", "max", "avg"] {
            assert!(wide[2].contains(h), "{}", wide[2]);
        }
        let narrow = screen(&app, 50, 10);
        let text = narrow.join("\n");
        assert!(
            narrow[1].contains("lock") && narrow[2].contains("103515600"),
            "{text}"
        );
        assert!(!narrow[1].contains("p99"), "dropped when narrow: {text}");
        // tiny terminals draw without panicking
        for (w, h) in [(1, 1), (10, 3), (30, 5), (79, 23)] {
            let _ = screen(&app, w, h);
        }
    }

    #[test]
    fn sorting_by_a_hidden_column_shows_it() {
        let mut app = pipe_app();
        while app.sort != SortKey::DeltaAvg {
            app.on_key(key(KeyCode::Char('s')));
        }
        let s = screen(&app, 80, 24);
        assert!(s[2].contains("Δavg▼"), "{}", s[2]);
        assert!(s[0].contains("sort Δavg▼"), "{}", s[0]);
    }

    #[test]
    fn filter_input_and_empty_results_are_shown() {
        let mut app = pipe_app();
        app.on_key(key(KeyCode::Char('/')));
        for c in "zzz".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        let s = screen(&app, 80, 24);
        let text = s.join("\n");
        assert!(text.contains("no rows match the filter \"zzz\""), "{text}");
        assert!(s[23].starts_with("filter: zzz█"), "{text}");
        app.on_key(key(KeyCode::Esc));
        app.on_key(key(KeyCode::Char('/')));
        for c in "holder".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        app.on_key(key(KeyCode::Enter));
        let s = screen(&app, 80, 24);
        assert!(
            s[1].starts_with("filter \"holder\" · last 1.00 s: 0 waits"),
            "{s:?}"
        );
        assert!(s[3].contains("mmap_lock"), "{s:?}");
    }

    #[test]
    fn detail_pane_shows_what_is_known_of_the_selected_lock() {
        let mut app = pipe_app();
        let s = detail_shows(
            &mut app,
            80,
            30,
            &[
                "─ lock ffff888103515600 · mutex · kernel-contention",
                "lock     unnamed (no name known for this lock) at 0xffff888103515600",
                "waits    29 since start, 19 in the last 1.00 s",
                "split    1.45 s asleep · 0 ns runnable · 0 ns on CPU",
                "callers  anon_pipe_write: 29 waits, 1.45 s",
                "threads  ls-waiter 100/4244: 29 waits, 1.45 s",
                "cgroups  /test: 29 waits, 1.45 s",
                "stacks   not collected: start top with --stacks",
                "hist",
            ],
        );
        // the table keeps the selected row above the pane
        assert!(s[3].contains("anon_pipe_write"), "{s:?}");
        // on a short terminal the pane takes the table's place
        let s = screen(&app, 80, 14);
        assert!(s.iter().any(|l| l.starts_with("─ lock")), "{s:?}");
        app.on_key(key(KeyCode::Esc));
        assert!(!app.detail);
    }

    #[test]
    fn detail_pane_lists_hold_stacks() {
        use crate::model::StackSample;
        let mut app = App::new("pid 7".into(), GroupBy::Lock, 1_000_000_000);
        app.stacks_on = true;
        let mut r = rec(0xab, "f", 9, "ls-uwaiter", &[190 * MS; 3]);
        r.stacks = vec![StackSample {
            user: vec!["ls_global_holder_locks".into(), "main".into()],
            hold_count: 3,
            hold_total_ns: 600 * MS,
            hold_max_ns: 200 * MS,
            ..Default::default()
        }];
        app.update(Snapshot {
            records: vec![r],
            ..Default::default()
        });
        detail_shows(
            &mut app,
            80,
            40,
            &[
                "stacks   none recorded for these waits",
                "holds    1 of 1: 3 holds, 600 ms, max 200 ms",
                "  user   ls_global_holder_locks ← main",
            ],
        );
    }

    #[test]
    fn detail_pane_lists_the_top_stacks_and_scrolls() {
        use crate::model::StackSample;
        let mut app = App::new("pid 7".into(), GroupBy::Lock, 1_000_000_000);
        app.stacks_on = true;
        let sample = |k: &[&str], u: &[&str], n: u64| StackSample {
            kernel: k.iter().map(|s| s.to_string()).collect(),
            user: u.iter().map(|s| s.to_string()).collect(),
            count: n,
            total_ns: n * 50 * MS,
            max_ns: 51 * MS,
            ..Default::default()
        };
        let mut r = rec(0xab, "anon_pipe_write", 9, "ls-waiter", &[50 * MS; 12]);
        r.stacks = vec![
            sample(
                &[
                    "anon_pipe_write",
                    "vfs_write",
                    "ksys_write",
                    "do_syscall_64",
                ],
                &["syscall", "lockscope::holdwork::write_all_once", "main"],
                10,
            ),
            sample(&["anon_pipe_write", "__kernel_write"], &[], 2),
        ];
        // the same stack reported under two kernel keys merges into one
        let mut twin = r.clone();
        twin.stacks.truncate(1);
        twin.wait = Stats::default();
        twin.split = None;
        twin.stacks[0].count = 1;
        twin.stacks[0].total_ns = 50 * MS;
        app.update(Snapshot {
            records: vec![r, twin],
            ..Default::default()
        });
        let s = detail_shows(
            &mut app,
            80,
            24,
            &[
                "stacks   1 of 2: 11 of 12 waits, 550 ms, max 51.0 ms",
                "  kernel anon_pipe_write ← vfs_write ← ksys_write ← do_syscall_64",
                "  user   syscall ← lockscope::holdwork::write_all_once ← main",
                "         2 of 2: 2 of 12 waits, 100 ms, max 51.0 ms",
                "  kernel anon_pipe_write ← __kernel_write",
            ],
        );
        // PgDn scrolls the pane (its title stays), Up/Down still select
        let before: Vec<String> = s.clone();
        app.on_key(key(KeyCode::PageDown));
        assert_eq!(app.detail_scroll, 10);
        let s = screen(&app, 80, 24);
        let title = before
            .iter()
            .position(|l| l.starts_with("─ lock"))
            .expect("title");
        assert_eq!(s[title], before[title], "title kept");
        assert_ne!(s[title + 1], before[title + 1], "scrolled");
        app.on_key(key(KeyCode::PageUp));
        assert_eq!(screen(&app, 80, 24), before);
        // without --stacks the pane says how to get them
        app.stacks_on = false;
        app.update(Snapshot {
            records: vec![rec(0xab, "f", 9, "w", &[MS])],
            ..Default::default()
        });
        let text = screen(&app, 80, 24).join("\n");
        assert!(
            text.contains("not collected: start top with --stacks"),
            "{text}"
        );
    }

    #[test]
    fn stack_chains_wrap_within_the_width() {
        let frames: Vec<String> = (0..30).map(|i| format!("function_number_{i}")).collect();
        let lines = wrap_chain(&frames, "  kernel ", 60, 3);
        assert_eq!(lines.len(), 3);
        for (i, l) in lines.iter().enumerate() {
            assert!(l.chars().count() <= 60, "{l}");
            let lead = if i == 0 { "  kernel " } else { "         " };
            assert!(l.starts_with(lead), "{l}");
        }
        assert!(
            lines[2].ends_with('…'),
            "frames left out are marked: {lines:?}"
        );
        let one = wrap_chain(&["a".into(), "b".into()], "", 60, 3);
        assert_eq!(one, ["a ← b"]);
        let long = wrap_chain(&["x".repeat(200)], "  ", 40, 3);
        assert_eq!(long.len(), 1);
        assert!(long[0].chars().count() <= 40);
    }

    #[test]
    fn intervals_read_as_seconds() {
        assert_eq!(fmt_interval(999_950_000), "1.00 s");
        assert_eq!(fmt_interval(2_000_000_000), "2.00 s");
        assert_eq!(fmt_interval(50_000_000), "50.0 ms");
        assert_eq!(fmt_uptime(3_723_000_000_000), "1h02m");
        assert_eq!(fmt_uptime(125_000_000_000), "2m05s");
    }

    #[test]
    fn by_task_view_names_threads() {
        let mut app = pipe_app();
        app.on_key(key(KeyCode::Char('v')));
        app.on_key(key(KeyCode::Char('v')));
        assert_eq!(app.view, GroupBy::Task);
        let s = screen(&app, 80, 24);
        assert!(s[2].contains("comm tid"), "{s:?}");
        assert!(s[3].contains("ls-waiter 4244"), "{s:?}");
        assert!(s[0].contains("by task"), "{s:?}");
    }

    #[test]
    fn interval_max_below_the_all_time_max_is_marked_as_a_bound() {
        let mut app = App::new("x".into(), GroupBy::Lock, 1);
        let mk = |waits: &[u64]| Record {
            wait: Stats::of(waits),
            split: Some(WaitSplit::default()),
            ..rec(1, "f", 1, "c", &[])
        };
        app.update(Snapshot {
            records: vec![mk(&[80 * MS])],
            ..Default::default()
        });
        app.update(Snapshot {
            records: vec![mk(&[80 * MS, 3 * MS])],
            ..Default::default()
        });
        app.sort = SortKey::DeltaMax;
        app.rebuild();
        let s = screen(&app, 80, 24);
        assert!(s[3].contains("≤4.19 ms"), "{s:?}");
    }

    /// Not a test: the cost of one refresh of `top` with a full aggregation
    /// map (16384 records), for BENCHMARKS.md. Run with
    /// `cargo test --release --lib bench_top_refresh -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_top_refresh() {
        use std::time::{Duration, Instant};
        let snapshot = |n: u64| {
            let recs: Vec<Record> = (0..16384u64)
                .map(|i| {
                    rec(
                        0xffff_8881_0000_0000 + (i % 2000) * 64,
                        &format!("caller_function_{}", i % 300),
                        (i % 500) as u32,
                        &format!("thread-{}", i % 500),
                        &vec![1000 + i; n as usize],
                    )
                })
                .collect();
            Snapshot {
                records: recs,
                ..Default::default()
            }
        };
        let (a, b) = (snapshot(1), snapshot(2));
        let median = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let (mut upd, mut reb, mut drw, mut flt) = (vec![], vec![], vec![], vec![]);
        let mut term = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
        for _ in 0..7 {
            let mut app = App::new("x".into(), GroupBy::Lock, 1_000_000_000);
            app.update(a.clone());
            let s = b.clone();
            let t = Instant::now();
            app.update(s);
            upd.push(t.elapsed());
            let t = Instant::now();
            app.on_key(key(KeyCode::Char('s')));
            reb.push(t.elapsed());
            app.on_key(key(KeyCode::Char('/')));
            let t = Instant::now();
            app.on_key(key(KeyCode::Char('c')));
            flt.push(t.elapsed());
            app.on_key(key(KeyCode::Esc));
            app.detail = true;
            let t = Instant::now();
            term.draw(|f| draw(f, &app)).expect("draw");
            drw.push(t.elapsed());
            assert_eq!(app.rows.len(), 2000);
        }
        eprintln!(
            "16384 records, 2000 rows: update {:?}, sort key {:?}, filter key {:?}, \
             draw 200x60 {:?} (medians of 7)",
            median(upd),
            median(reb),
            median(flt),
            median(drw)
        );
    }
}
