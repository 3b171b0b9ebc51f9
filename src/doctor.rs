//! `lockscope doctor`: finds out by trying what this kernel allows, and
//! derives from that which backend each source will run with.
//!
//! Every BPF feature is tried with a real tiny program from
//! `src/bpf/probe.bpf.c`: the object is opened afresh for each feature, with
//! autoload off for every other program and autocreate off for every map the
//! tried program does not use, so one missing feature cannot hide another.
//! Where a program can fire quickly (context switches of the doctor itself, a
//! call into its own binary) the check also confirms that it did. libbpf's
//! messages are captured per probe, never printed (unless `LOCKSCOPE_DEBUG`
//! is set), and quoted when they explain a failure.
//!
//! [`plan`] is pure: it turns a list of checks into the per-source plan, so it
//! is tested without root.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::mem::MaybeUninit;
use std::path::Path;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, OpenObject, PrintCallback, PrintLevel, TracepointCategory, UprobeOpts};

use crate::bpf::probe::{OpenProbeSkel, ProbeSkel, ProbeSkelBuilder};
use crate::sources::probes::{errno_name, kprobe_pmu, short_error};
use crate::sources::{Attach, REGISTRY};

/// One thing tried, and what came of it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    /// Stable identifier: "root", "btf", "tp_btf", "tracepoint:lock:contention_begin", ...
    pub name: String,
    pub ok: bool,
    /// What was found, or why not.
    pub detail: String,
}

/// How one source will run on this machine.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SourcePlan {
    pub source: String,
    /// The attach method chosen ("tp_btf", "tracepoint", "fentry", ...).
    pub backend: Option<String>,
    pub available: bool,
    /// Why this backend (when a preferred one failed), or why unavailable and
    /// what is lost.
    pub reason: String,
    /// Whether this version of lockscope has the source yet (the kernel may
    /// support more than lockscope implements).
    pub implemented: bool,
}

/// Everything `lockscope doctor` found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// `uname -r`.
    pub kernel: String,
    pub checks: Vec<Check>,
    pub sources: Vec<SourcePlan>,
}

impl Report {
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// True if at least one source can run.
    pub fn usable(&self) -> bool {
        self.sources.iter().any(|s| s.available && s.implemented)
    }
}

const TRACEFS_BASES: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
/// Kernels built without CONFIG_KALLSYMS_ALL still list a few dozen linker
/// section markers (`__start_*`, `__init_begin`) as data; with it there are
/// tens of thousands of data symbols.
const KALLSYMS_ALL_MIN_DATA: usize = 1000;

/// The function the uprobe check attaches to in our own binary.
///
/// It must stay a real, separate function: `inline(never)`, called through a
/// `black_box`ed pointer, and doing work the optimiser cannot drop.
// SAFETY: the name is unique to lockscope, so exporting it unmangled cannot
// clash with another definition of the symbol.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lockscope_doctor_uprobe_target(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(3).wrapping_add(1)
}
const UPROBE_TARGET: &str = "lockscope_doctor_uprobe_target";

/// Runs every check on this machine and derives the plan. Takes well under a
/// second; needs root (or CAP_BPF + CAP_PERFMON) for the BPF checks to pass.
pub fn probe() -> Report {
    let _quiet = QuietLibbpf::install();
    // like the sources, mount tracefs for the time of probing if it is not
    // mounted, so classic tracepoints are tried for real
    let _tracefs = crate::sources::TracefsGuard::ensure();
    let mut checks = vec![check_root(), check_btf()];
    checks.push(check_tp_btf());

    let raw = check_raw_tp();
    checks.push(raw.check);
    let classic = check_tracepoint();
    checks.push(classic.check.clone());
    for (cat, name) in crate::sources::tracepoints() {
        checks.push(tracepoint_exists(cat, name, &raw.attached, &classic));
    }

    checks.push(check_fentry());
    checks.push(check_kprobe());
    checks.push(check_uprobe());
    checks.push(check_ringbuf());
    checks.push(check_stack_map());
    checks.push(check_task_storage());
    checks.push(check_kallsyms());
    checks.push(check_file_names());
    checks.push(check_lockdown());

    let sources = plan(&checks);
    Report {
        kernel: kernel_release(),
        checks,
        sources,
    }
}

// ---------------------------------------------------------------------------
// Plan derivation (pure)

/// Derives each source's backend from the checks. Missing checks count as
/// failed.
pub fn plan(checks: &[Check]) -> Vec<SourcePlan> {
    let by: HashMap<&str, &Check> = checks.iter().map(|c| (c.name.as_str(), c)).collect();
    let ok = |n: &str| by.get(n).is_some_and(|c| c.ok);
    // "name: detail" with the detail's parenthesised asides dropped.
    let why = |n: &str| -> String {
        match by.get(n) {
            Some(c) if c.detail.is_empty() => format!("{n}: failed"),
            Some(c) => format!("{n}: {}", brief(&c.detail)),
            None => format!("{n}: not checked"),
        }
    };
    let tp = |cat: &str, name: &str| format!("tracepoint:{cat}:{name}");
    let all_tps = |list: &[(&str, &str)]| list.iter().all(|(c, n)| ok(&tp(c, n)));
    // "lock:contention_begin, lock:contention_end: not in this kernel": the
    // missing tracepoints, grouped by why.
    let missing_tps = |list: &[(&str, &str)]| -> String {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for (c, n) in list.iter().filter(|(c, n)| !ok(&tp(c, n))) {
            let detail = by
                .get(tp(c, n).as_str())
                .map_or_else(|| "not checked".to_string(), |ch| brief(&ch.detail));
            match groups.iter_mut().find(|(d, _)| *d == detail) {
                Some((_, names)) => names.push(format!("{c}:{n}")),
                None => groups.push((detail, vec![format!("{c}:{n}")])),
            }
        }
        groups
            .iter()
            .map(|(d, names)| format!("{}: {d}", names.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    // Picks tp_btf, else classic tracepoints, as the source allows. When no
    // attach method works that is the reason given; otherwise the missing
    // tracepoints or map types are.
    let tracepoint_source = |source: &str,
                             tps: &[(&str, &str)],
                             btf: bool,
                             classic: bool,
                             maps: &[&str],
                             lost: &str| {
        let mechanism = (btf && ok("tp_btf")) || (classic && ok("tracepoint"));
        if mechanism && !all_tps(tps) {
            return unavailable(source, format!("{} — {lost}", missing_tps(tps)));
        }
        let missing_maps: Vec<String> = maps.iter().filter(|n| !ok(n)).map(|n| why(n)).collect();
        if !missing_maps.is_empty() && all_tps(tps) {
            return unavailable(
                source,
                format!("needs {} — {lost}", missing_maps.join("; ")),
            );
        }
        if btf && ok("tp_btf") {
            return available(source, "tp_btf", String::new());
        }
        if classic && ok("tracepoint") {
            let reason = if btf { why("tp_btf") } else { String::new() };
            return available(source, "tracepoint", reason);
        }
        let needs = match (btf, classic) {
            (true, true) => format!(
                "needs tp_btf or classic tracepoints: {}; {}",
                why("tp_btf"),
                why("tracepoint")
            ),
            (true, false) => format!("needs tp_btf: {}", why("tp_btf")),
            _ => format!("needs classic tracepoints: {}", why("tracepoint")),
        };
        unavailable(source, format!("{needs} — {lost}"))
    };

    // every source as its spec says, then what is lost where another
    // source still measures its waits
    let mut out: Vec<SourcePlan> = REGISTRY
        .iter()
        .map(|info| match info.attach {
            Attach::Tracepoints {
                tracepoints,
                btf,
                classic,
                maps,
            } => tracepoint_source(info.name, tracepoints, btf, classic, maps, info.lost),
            Attach::FunctionProbes => function_probe_source(
                info.name,
                ok("fentry"),
                ok("kprobe"),
                &why("fentry"),
                &why("kprobe"),
                info.lost,
            ),
            Attach::Uprobes if ok("uprobe") => available(info.name, "uprobe", String::new()),
            Attach::Uprobes => unavailable(info.name, format!("{} — {}", why("uprobe"), info.lost)),
        })
        .collect();
    let runs: Vec<String> = out
        .iter()
        .filter(|p| p.available)
        .map(|p| p.source.clone())
        .collect();
    for (plan, info) in out.iter_mut().zip(REGISTRY) {
        if let Some(f) = info.fallback
            && !plan.available
            && runs.iter().any(|r| r == f.source)
        {
            plan.reason = plan.reason.replace(info.lost, f.lost);
        }
    }
    out
}

/// Sources that run only when asked for by name (or `--source all`).
fn opt_in(source: &str) -> bool {
    crate::sources::REGISTRY
        .iter()
        .any(|s| s.name == source && s.default == crate::sources::DefaultOn::Never)
}

/// Sources that run without `--source` only for named processes.
fn for_processes(source: &str) -> bool {
    crate::sources::REGISTRY
        .iter()
        .any(|s| s.name == source && s.default == crate::sources::DefaultOn::ForProcesses)
}

/// A source's cost class.
fn cost_of(source: &str) -> Option<crate::sources::Cost> {
    crate::sources::REGISTRY
        .iter()
        .find(|s| s.name == source)
        .map(|s| s.cost)
}

/// `detail` without its parenthesised asides, for the plan's reasons.
fn brief(detail: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for ch in detail.chars() {
        match ch {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn function_probe_source(
    source: &str,
    fentry: bool,
    kprobe: bool,
    fentry_why: &str,
    kprobe_why: &str,
    lost: &str,
) -> SourcePlan {
    if fentry {
        available(source, "fentry", String::new())
    } else if kprobe {
        available(source, "kprobe", fentry_why.to_string())
    } else {
        unavailable(
            source,
            format!("needs fentry or kprobes: {fentry_why}; {kprobe_why} — {lost}"),
        )
    }
}

fn available(source: &str, backend: &str, reason: String) -> SourcePlan {
    SourcePlan {
        source: source.to_string(),
        backend: Some(backend.to_string()),
        available: true,
        reason,
        implemented: REGISTRY.iter().any(|i| i.name == source),
    }
}

fn unavailable(source: &str, reason: String) -> SourcePlan {
    SourcePlan {
        source: source.to_string(),
        backend: None,
        available: false,
        reason,
        implemented: REGISTRY.iter().any(|i| i.name == source),
    }
}

// ---------------------------------------------------------------------------
// Rendering

const WIDTH: usize = 80;
const NAME_COL: usize = 20;

/// Human-readable report: the checks, then the plan, within 80 columns.
pub fn render(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "lockscope doctor: kernel {}", report.kernel)?;
    writeln!(out)?;
    writeln!(out, "Checks")?;
    // The per-tracepoint checks have long names: they get their own, wider
    // name column.
    let tp_col = report
        .checks
        .iter()
        .filter(|c| c.name.starts_with("tracepoint:"))
        .map(|c| 4 + c.name.chars().count() + 2)
        .max()
        .unwrap_or(0)
        .clamp(4 + NAME_COL, WIDTH - 24);
    for c in &report.checks {
        let mark = if c.ok { "✓" } else { "✗" };
        let col = if c.name.starts_with("tracepoint:") {
            tp_col
        } else {
            4 + NAME_COL
        };
        row(out, &format!("  {mark} {}", c.name), &c.detail, col)?;
    }
    writeln!(out)?;
    writeln!(out, "Sources")?;
    for s in &report.sources {
        let text = match (&s.backend, s.available) {
            (Some(b), true) if !s.implemented => {
                format!("kernel ready ({b}); not in this version of lockscope yet")
            }
            (Some(b), true) if opt_in(&s.source) => {
                format!("opt-in: --source {} runs it with {b}", s.source)
            }
            (Some(b), true) if for_processes(&s.source) => {
                format!(
                    "will run with {b} for -p/-t/run targets; system-wide only with \
                     --source {}",
                    s.source
                )
            }
            (Some(b), true) if s.reason.is_empty() => format!("will run with {b}"),
            (Some(b), true) => format!("will run with {b} ({})", s.reason),
            _ => format!("unavailable: {}", s.reason),
        };
        let text = match cost_of(&s.source) {
            Some(c) => format!("[{}] {text}", c.describe()),
            None => text,
        };
        row(out, &format!("  {}", s.source), &text, 2 + NAME_COL)?;
    }
    if !report.usable() {
        writeln!(out)?;
        writeln!(
            out,
            "No source can run here (run as root, or with CAP_BPF and CAP_PERFMON)."
        )?;
    }
    Ok(())
}

/// Writes `head` then `text` starting at column `col`, word-wrapped to
/// [`WIDTH`]; a head too long for the column gets the text on the next line.
fn row(out: &mut dyn Write, head: &str, text: &str, col: usize) -> std::io::Result<()> {
    let indent = " ".repeat(col);
    let lines = wrap(text, WIDTH - col);
    let head_len = head.chars().count();
    let mut lines = lines.iter();
    if head_len < col {
        let first = lines.next().map(String::as_str).unwrap_or("");
        let pad = " ".repeat(col - head_len);
        writeln!(out, "{head}{pad}{first}")?;
    } else {
        writeln!(out, "{head}")?;
    }
    for l in lines {
        writeln!(out, "{indent}{l}")?;
    }
    Ok(())
}

/// Greedy word wrap; words longer than `width` are cut.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(10);
    let mut lines = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0;
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > width {
            if cur_len > 0 {
                lines.push(std::mem::take(&mut cur));
                cur_len = 0;
            }
            let rest = word.split_off(width);
            lines.push(word.into_iter().collect());
            word = rest;
        }
        let len = word.len();
        if cur_len > 0 && cur_len + 1 + len > width {
            lines.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        if cur_len > 0 {
            cur.push(' ');
            cur_len += 1;
        }
        cur.extend(word);
        cur_len += len;
    }
    if cur_len > 0 || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

// ---------------------------------------------------------------------------
// libbpf messages

thread_local! {
    static CAPTURED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn capture(level: PrintLevel, msg: String) {
    if std::env::var_os("LOCKSCOPE_DEBUG").is_some() {
        eprint!("{msg}");
    }
    if level == PrintLevel::Debug {
        return;
    }
    CAPTURED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() < 200 {
            c.push(msg.trim_end().to_string());
        }
    });
}

/// Routes libbpf's messages into a per-thread buffer while probing, and puts
/// the previous printer back when dropped.
struct QuietLibbpf(Option<(PrintLevel, PrintCallback)>);

impl QuietLibbpf {
    fn install() -> Self {
        let level = if std::env::var_os("LOCKSCOPE_DEBUG").is_some() {
            PrintLevel::Debug
        } else {
            PrintLevel::Info
        };
        QuietLibbpf(libbpf_rs::set_print(Some((level, capture))))
    }
}

impl Drop for QuietLibbpf {
    fn drop(&mut self) {
        libbpf_rs::set_print(self.0.take());
    }
}

fn take_messages() -> Vec<String> {
    CAPTURED.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

/// The libbpf or verifier line that best explains a failure, if any says
/// more than the errno.
fn telling_message(msgs: &[String]) -> Option<String> {
    let mut in_log = false;
    let mut verifier_last = None;
    for m in msgs {
        if m.contains("-- BEGIN PROG LOAD LOG --") {
            in_log = true;
            continue;
        }
        if m.contains("-- END PROG LOAD LOG --") {
            in_log = false;
            continue;
        }
        if in_log {
            let l = m.trim();
            // Skip instruction dumps and bookkeeping; keep prose.
            let looks_like_insn = l.starts_with(|c: char| c.is_ascii_digit() || c == ';');
            if !l.is_empty() && !looks_like_insn && !l.starts_with("processed ") {
                verifier_last = Some(l.to_string());
            }
        }
    }
    if verifier_last.is_some() {
        return verifier_last;
    }
    let found = msgs
        .iter()
        .map(|m| m.trim().trim_start_matches("libbpf: ").to_string())
        .find(|m| {
            !m.starts_with("failed to load object")
                && !m.contains("BPF program load failed")
                && !m.contains("failed to load: ")
                && !m.starts_with("failed to load BPF skeleton")
                // libbpf's guess for any EPERM as root; rarely the cause.
                && !m.contains("ulimit")
                && (m.contains("failed") || m.contains("error") || m.contains("not found"))
        });
    if found.is_none() && msgs.iter().any(|m| m.contains("BPF program load failed")) {
        return Some("refused before verification: no verifier log".to_string());
    }
    found
}

// ---------------------------------------------------------------------------
// Errors

/// "<what> failed: EPERM (libbpf's telling line)".
fn failure(what: &str, e: &libbpf_rs::Error) -> String {
    let mut s = format!("{what} failed: {}", short_error(e));
    if let Some(m) = telling_message(&take_messages()) {
        s.push_str(&format!(" ({m})"));
    }
    s
}

// ---------------------------------------------------------------------------
// Opening the probe object for one feature

/// Programs of probe.bpf.c.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prog {
    TpBtf,
    RawTp,
    Tracepoint,
    Fentry,
    Fexit,
    Kprobe,
    Kretprobe,
    Uprobe,
    Uretprobe,
    Ringbuf,
    Stack,
    TaskStorage,
}

/// Maps of probe.bpf.c besides the global data sections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MapSel {
    Ringbuf,
    Stacks,
    TaskStorage,
}

fn set_autoloads(open: &mut OpenProbeSkel<'_>, want: &[Prog]) {
    let p = &mut open.progs;
    let all: [(Prog, &mut libbpf_rs::OpenProgramMut<'_>); 12] = [
        (Prog::TpBtf, &mut p.probe_tp_btf),
        (Prog::RawTp, &mut p.probe_raw_tp),
        (Prog::Tracepoint, &mut p.probe_tracepoint),
        (Prog::Fentry, &mut p.probe_fentry),
        (Prog::Fexit, &mut p.probe_fexit),
        (Prog::Kprobe, &mut p.probe_kprobe),
        (Prog::Kretprobe, &mut p.probe_kretprobe),
        (Prog::Uprobe, &mut p.probe_uprobe),
        (Prog::Uretprobe, &mut p.probe_uretprobe),
        (Prog::Ringbuf, &mut p.probe_ringbuf),
        (Prog::Stack, &mut p.probe_stack),
        (Prog::TaskStorage, &mut p.probe_task_storage),
    ];
    for (which, prog) in all {
        prog.set_autoload(want.contains(&which));
    }
}

fn set_autocreates(open: &mut OpenProbeSkel<'_>, want: &[MapSel]) -> libbpf_rs::Result<()> {
    let m = &mut open.maps;
    m.rb.set_autocreate(want.contains(&MapSel::Ringbuf))?;
    m.stacks.set_autocreate(want.contains(&MapSel::Stacks))?;
    m.tstore
        .set_autocreate(want.contains(&MapSel::TaskStorage))?;
    Ok(())
}

/// Opens the probe object with only `progs` and `maps` enabled, loads it and
/// hands it to `run`. Err is the detail of a failed open or load.
fn with_loaded<T>(
    progs: &[Prog],
    maps: &[MapSel],
    run: impl FnOnce(&mut ProbeSkel<'_>) -> T,
) -> Result<T, String> {
    take_messages();
    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let mut open = ProbeSkelBuilder::default()
        .open(&mut storage)
        .map_err(|e| failure("open", &e))?;
    if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
        ro.self_tgid = std::process::id();
    }
    set_autoloads(&mut open, progs);
    set_autocreates(&mut open, maps).map_err(|e| failure("configure", &e))?;
    let mut skel = open.load().map_err(|e| failure("load", &e))?;
    Ok(run(&mut skel))
}

/// Lets the doctor's own thread switch out at least once, so that
/// sched_switch programs fire in its context.
fn let_sched_switch() {
    std::thread::sleep(Duration::from_millis(1));
}

fn bss<'a>(skel: &'a ProbeSkel<'_>) -> Option<&'a crate::bpf::probe::types::bss> {
    skel.maps.bss_data.as_deref()
}

fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_string(),
        ok,
        detail: detail.into(),
    }
}

fn from_result(name: &str, r: Result<Result<String, String>, String>) -> Check {
    match r {
        Ok(Ok(d)) => check(name, true, d),
        Ok(Err(d)) | Err(d) => check(name, false, d),
    }
}

// ---------------------------------------------------------------------------
// The checks

fn check_root() -> Check {
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(e) => return check("root", false, format!("cannot read /proc/self/status: {e}")),
    };
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let euid = field("Uid:")
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    let cap_eff = field("CapEff:").and_then(|v| u64::from_str_radix(v, 16).ok());
    let has = |bit: u32| cap_eff.is_some_and(|c| c & (1u64 << bit) != 0);
    let names: Vec<&str> = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .iter()
    .filter(|(b, _)| has(*b))
    .map(|(_, n)| *n)
    .collect();
    let caps = if names.is_empty() {
        "none of CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN".to_string()
    } else {
        names.join(", ")
    };
    let who = match euid {
        Some(0) => "root (euid 0)".to_string(),
        Some(u) => format!("euid {u}"),
        None => "euid unknown".to_string(),
    };
    let ok = (has(CAP_BPF) && has(CAP_PERFMON)) || has(CAP_SYS_ADMIN);
    let mut detail = format!("{who}; effective: {caps}");
    if !ok {
        detail.push_str(" (needs CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN)");
    }
    check("root", ok, detail)
}

fn check_btf() -> Check {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => {
            return check(
                "btf",
                false,
                format!(
                    "{}: {e} (kernel built without CONFIG_DEBUG_INFO_BTF?)",
                    path.display()
                ),
            );
        }
    };
    take_messages();
    match libbpf_rs::btf::Btf::from_vmlinux() {
        Ok(btf) => {
            let has_task = btf
                .type_by_name::<libbpf_rs::btf::types::Struct<'_>>("task_struct")
                .is_some();
            let mib = size as f64 / (1024.0 * 1024.0);
            if has_task {
                check(
                    "btf",
                    true,
                    format!(
                        "{}: {mib:.1} MiB, {} types, parsed",
                        path.display(),
                        btf.len()
                    ),
                )
            } else {
                check(
                    "btf",
                    false,
                    "vmlinux BTF parsed but has no struct task_struct",
                )
            }
        }
        Err(e) => check("btf", false, failure("parse", &e)),
    }
}

fn check_tp_btf() -> Check {
    let r = with_loaded(&[Prog::TpBtf], &[], |skel| {
        let link = skel
            .progs
            .probe_tp_btf
            .attach()
            .map_err(|e| failure("attach", &e))?;
        let_sched_switch();
        let hits = bss(skel).map_or(0, |b| b.tp_btf_hits);
        drop(link);
        if hits > 0 {
            Ok("tp_btf/sched_switch loaded, attached and fired".to_string())
        } else {
            Err("tp_btf/sched_switch attached but never fired".to_string())
        }
    });
    from_result("tp_btf", r)
}

/// The raw_tp check, plus which of lockscope's tracepoints a raw tracepoint
/// attaches to by name (proof that the tracepoint exists, without tracefs).
struct RawTp {
    check: Check,
    /// "cat:name" -> Ok, or the attach error.
    attached: HashMap<String, Result<(), String>>,
}

fn check_raw_tp() -> RawTp {
    let mut attached = HashMap::new();
    let r = with_loaded(&[Prog::RawTp], &[], |skel| {
        let prog = &skel.progs.probe_raw_tp;
        let link = prog.attach().map_err(|e| failure("attach", &e))?;
        let_sched_switch();
        let hits = bss(skel).map_or(0, |b| b.raw_tp_hits);
        drop(link);
        let mut links: Vec<Link> = Vec::new();
        for (cat, name) in crate::sources::tracepoints() {
            // Syscall events are not raw tracepoints: they all hang off
            // raw_syscalls:sys_enter/sys_exit.
            let raw_name = match (cat, name) {
                ("syscalls", n) if n.starts_with("sys_enter_") => "sys_enter",
                ("syscalls", _) => "sys_exit",
                _ => name,
            };
            let r = keep_link(&mut links, prog.attach_raw_tracepoint(raw_name));
            attached.insert(format!("{cat}:{name}"), r);
        }
        drop(links);
        if hits > 0 {
            Ok("raw_tp/sched_switch loaded, attached and fired".to_string())
        } else {
            Err("raw_tp/sched_switch attached but never fired".to_string())
        }
    });
    RawTp {
        check: from_result("raw_tp", r),
        attached,
    }
}

/// The classic tracepoint check, plus per-tracepoint attach results.
#[derive(Clone)]
struct Classic {
    check: Check,
    /// Where tracefs is mounted, if anywhere.
    tracefs: Option<&'static str>,
    /// "cat:name" -> Ok, or why the attach failed.
    attached: HashMap<String, Result<(), String>>,
}

/// Keeps the link of one attach (in `links`), or says why it failed;
/// libbpf's messages about it are taken.
fn keep_link(links: &mut Vec<Link>, attach: libbpf_rs::Result<Link>) -> Result<(), String> {
    let r = match attach {
        Ok(l) => {
            links.push(l);
            Ok(())
        }
        Err(e) => Err(short_error(&e)),
    };
    take_messages();
    r
}

fn tracefs_mount() -> Option<&'static str> {
    TRACEFS_BASES
        .iter()
        .copied()
        .find(|b| Path::new(&format!("{b}/events")).is_dir())
}

fn check_tracepoint() -> Classic {
    let tracefs = tracefs_mount();
    let mut attached = HashMap::new();
    let r = with_loaded(&[Prog::Tracepoint], &[], |skel| {
        let prog = &skel.progs.probe_tracepoint;
        let mut links: Vec<Link> = Vec::new();
        for (cat, name) in crate::sources::tracepoints() {
            let category = TracepointCategory::Custom(cat.to_string());
            let r = keep_link(&mut links, prog.attach_tracepoint(category, name));
            attached.insert(format!("{cat}:{name}"), r);
        }
        let_sched_switch();
        let hits = bss(skel).map_or(0, |b| b.tracepoint_hits);
        drop(links);
        match attached.get("sched:sched_switch") {
            Some(Ok(())) if hits > 0 => {
                Ok("tracepoint/sched/sched_switch loaded, attached and fired".to_string())
            }
            Some(Ok(())) => Err("tracepoint/sched/sched_switch attached but never fired".into()),
            Some(Err(e)) => Err(match tracefs {
                None => format!(
                    "attach failed: {e}: tracefs is not mounted; mount -t tracefs nodev \
                     /sys/kernel/tracing"
                ),
                Some(_) => format!("attach failed: {e}"),
            }),
            None => Err("sched:sched_switch not tried".to_string()),
        }
    });
    Classic {
        check: from_result("tracepoint", r),
        tracefs,
        attached,
    }
}

fn tracepoint_exists(
    cat: &str,
    name: &str,
    raw: &HashMap<String, Result<(), String>>,
    classic: &Classic,
) -> Check {
    let id = format!("tracepoint:{cat}:{name}");
    let key = format!("{cat}:{name}");
    let syscall = cat == "syscalls";
    let classic_r = classic.attached.get(&key);
    let raw_r = raw.get(&key);
    if let Some(Ok(())) = classic_r {
        return check(&id, true, "tracepoint attached");
    }
    let classic_why = match classic_r {
        Some(Err(e)) => format!("classic attach failed: {e}"),
        _ => format!("classic attach not tried: {}", classic.check.detail),
    };
    if let Some(base) = classic.tracefs {
        let dir = format!("{base}/events/{cat}/{name}");
        match std::fs::metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return check(&id, false, format!("not in this kernel (no {dir})"));
            }
            Ok(_) if syscall => {
                return check(&id, true, format!("exists in tracefs; {classic_why}"));
            }
            _ => {}
        }
    }
    match raw_r {
        Some(Ok(())) if syscall => check(&id, false, "unverified: no tracefs"),
        Some(Ok(())) if classic.tracefs.is_none() => {
            check(&id, true, "raw_tp attached; no tracefs")
        }
        Some(Ok(())) => check(&id, true, format!("raw_tp attached; {classic_why}")),
        Some(Err(e)) if e == "ENOENT" && !syscall => check(
            &id,
            false,
            "not in this kernel (raw_tp attach: ENOENT)".to_string(),
        ),
        Some(Err(e)) => check(
            &id,
            false,
            format!("raw_tp attach failed: {e}; {classic_why}"),
        ),
        None if classic_r.is_none() => {
            check(&id, false, "unverified: no BPF program could be loaded")
        }
        None => check(&id, false, format!("unverified: {classic_why}")),
    }
}

fn check_fentry() -> Check {
    let r = with_loaded(&[Prog::Fentry, Prog::Fexit], &[], |skel| {
        let entry = skel
            .progs
            .probe_fentry
            .attach()
            .map_err(|e| failure("fentry attach", &e))?;
        let exit = skel
            .progs
            .probe_fexit
            .attach()
            .map_err(|e| failure("fexit attach", &e))?;
        Ok(mutex_pair_fired(
            skel,
            (entry, exit),
            |b| (b.fentry_hits, b.fexit_hits),
            "fentry+fexit on mutex_unlock loaded, attached and fired",
            "fentry+fexit on mutex_unlock loaded and attached",
        ))
    });
    from_result("fentry", r)
}

/// An entry/return probe pair on mutex_unlock, attached (`links`): makes
/// the kernel run it, and says `fired` when both programs ran (`hits`),
/// else `attached`.
fn mutex_pair_fired(
    skel: &ProbeSkel<'_>,
    links: (Link, Link),
    hits: impl FnOnce(&crate::bpf::probe::types::bss) -> (u64, u64),
    fired: &str,
    attached: &str,
) -> String {
    poke_mutex();
    let (e, x) = bss(skel).map_or((0, 0), hits);
    drop(links);
    if e > 0 && x > 0 { fired } else { attached }.to_string()
}

/// Makes the kernel take and release a mutex in this thread: a pipe write
/// and read each lock the pipe's mutex.
fn poke_mutex() {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    let mut byte = [7u8];
    // SAFETY: fds[1] and fds[0] are the pipe just created and owned here; the
    // buffers are valid for one byte; both fds are closed exactly once.
    unsafe {
        libc::write(fds[1], byte.as_ptr().cast(), 1);
        libc::read(fds[0], byte.as_mut_ptr().cast(), 1);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

fn check_kprobe() -> Check {
    let r = with_loaded(&[Prog::Kprobe, Prog::Kretprobe], &[], |skel| {
        let why_not = |what: &str, e: &libbpf_rs::Error| {
            if !kprobe_pmu() && tracefs_mount().is_none_or(|b| !kprobe_events(b)) {
                take_messages();
                format!(
                    "not compiled into this kernel (no kprobe PMU in \
                     /sys/bus/event_source/devices; {what}: {})",
                    short_error(e)
                )
            } else {
                failure(what, e)
            }
        };
        let entry = skel
            .progs
            .probe_kprobe
            .attach_kprobe(false, "mutex_unlock")
            .map_err(|e| why_not("kprobe attach", &e))?;
        let ret = skel
            .progs
            .probe_kretprobe
            .attach_kprobe(true, "mutex_unlock")
            .map_err(|e| why_not("kretprobe attach", &e))?;
        Ok(mutex_pair_fired(
            skel,
            (entry, ret),
            |b| (b.kprobe_hits, b.kretprobe_hits),
            "kprobe+kretprobe on mutex_unlock attached and fired",
            "kprobe+kretprobe on mutex_unlock attached",
        ))
    });
    from_result("kprobe", r)
}

fn kprobe_events(tracefs: &str) -> bool {
    Path::new(&format!("{tracefs}/kprobe_events")).exists()
}

fn check_uprobe() -> Check {
    // The binary's real path (the uprobe is keyed by inode); /proc/self/exe
    // if it cannot be resolved, e.g. after a rebuild replaced it.
    let exe = std::fs::read_link("/proc/self/exe")
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| "/proc/self/exe".into());
    let pid = i32::try_from(std::process::id()).unwrap_or(-1);
    let r = with_loaded(&[Prog::Uprobe, Prog::Uretprobe], &[], |skel| {
        let attach = |prog: &libbpf_rs::ProgramMut<'_>, retprobe: bool| {
            let opts = UprobeOpts {
                retprobe,
                func_name: Some(UPROBE_TARGET.to_string()),
                ..Default::default()
            };
            let what = if retprobe {
                "uretprobe attach"
            } else {
                "uprobe attach"
            };
            prog.attach_uprobe_with_opts(pid, &exe, 0, opts)
                .map_err(|e| failure(what, &e))
        };
        let entry = attach(&skel.progs.probe_uprobe, false)?;
        let ret = attach(&skel.progs.probe_uretprobe, true)?;
        let f: extern "C" fn(u64) -> u64 = std::hint::black_box(lockscope_doctor_uprobe_target);
        std::hint::black_box(f(std::hint::black_box(41)));
        let (e, x) = bss(skel).map_or((0, 0), |b| (b.uprobe_hits, b.uretprobe_hits));
        drop((entry, ret));
        match (e > 0, x > 0) {
            (true, true) => Ok(format!(
                "uprobe+uretprobe on {UPROBE_TARGET} in own binary fired"
            )),
            (false, _) => Err("uprobe attached but did not fire".to_string()),
            (true, false) => Err("uprobe fired but uretprobe did not".to_string()),
        }
    });
    from_result("uprobe", r)
}

fn check_ringbuf() -> Check {
    let r = with_loaded(&[Prog::Ringbuf], &[MapSel::Ringbuf], |skel| {
        let link = skel
            .progs
            .probe_ringbuf
            .attach()
            .map_err(|e| format!("map created; test program {}", failure("attach", &e)))?;
        let_sched_switch();
        let me = std::process::id();
        let got = std::cell::Cell::new(0u64);
        let mut builder = libbpf_rs::RingBufferBuilder::new();
        let consumed = builder
            .add(&skel.maps.rb, |data: &[u8]| {
                if data.len() >= 4 && data[..4] == me.to_ne_bytes() {
                    got.set(got.get() + 1);
                }
                0
            })
            .and_then(|b| std::mem::take(b).build())
            .map_err(|e| failure("map created; ring_buffer__new", &e))
            .map(|rb| rb.consume_raw());
        drop(link);
        let consumed = consumed?;
        let got = got.get();
        if consumed < 0 {
            return Err(format!("map created; consume failed: {consumed}"));
        }
        if got > 0 {
            Ok(format!(
                "created; {got} record(s) written by BPF and read back"
            ))
        } else {
            let sent = bss(skel).map_or(0, |b| b.ringbuf_submitted);
            Err(format!(
                "map created but no record arrived ({sent} submitted)"
            ))
        }
    });
    from_result("ringbuf", r)
}

/// A map check whose test program did not run.
const NEVER_RAN: &str = "map created; the test program never ran";

/// Attaches a map check's test program over a context switch, and reads
/// its counters from `.bss` (zeros when the object has none).
fn map_probe_counts<T: Default>(
    skel: &ProbeSkel<'_>,
    attach: impl FnOnce(&ProbeSkel<'_>) -> libbpf_rs::Result<libbpf_rs::Link>,
    counts: impl FnOnce(&crate::bpf::probe::types::bss) -> T,
) -> Result<T, String> {
    let link =
        attach(skel).map_err(|e| format!("map created; test program {}", failure("attach", &e)))?;
    let_sched_switch();
    let c = bss(skel).map_or_else(Default::default, counts);
    drop(link);
    Ok(c)
}

fn check_stack_map() -> Check {
    let r = with_loaded(&[Prog::Stack], &[MapSel::Stacks], |skel| {
        let (good, err) = map_probe_counts(
            skel,
            |s| s.progs.probe_stack.attach(),
            |b| (b.stack_ok, b.stack_err),
        )?;
        if good > 0 {
            Ok("created; bpf_get_stackid captured a kernel stack".to_string())
        } else if err < 0 {
            let name = i32::try_from(-err)
                .ok()
                .and_then(errno_name)
                .map_or_else(|| err.to_string(), |n| format!("-{n}"));
            Err(format!("map created; bpf_get_stackid returned {name}"))
        } else {
            Err(NEVER_RAN.to_string())
        }
    });
    from_result("stack_map", r)
}

fn check_task_storage() -> Check {
    let r = with_loaded(&[Prog::TaskStorage], &[MapSel::TaskStorage], |skel| {
        let (good, bad) = map_probe_counts(
            skel,
            |s| s.progs.probe_task_storage.attach(),
            |b| (b.task_storage_ok, b.task_storage_fail),
        )?;
        if good > 0 {
            Ok("created; bpf_task_storage_get works from tp_btf".to_string())
        } else if bad > 0 {
            Err("map created; bpf_task_storage_get returned NULL".to_string())
        } else {
            Err(NEVER_RAN.to_string())
        }
    });
    from_result("task_storage", r)
}

fn check_kallsyms() -> Check {
    let text = match std::fs::read_to_string("/proc/kallsyms") {
        Ok(t) => t,
        Err(e) => return check("kallsyms", false, format!("/proc/kallsyms: {e}")),
    };
    let mut total = 0usize;
    let mut nonzero = 0usize;
    let mut data = 0usize;
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(addr), Some(kind)) = (f.next(), f.next()) else {
            continue;
        };
        total += 1;
        if addr.bytes().any(|b| b != b'0') {
            nonzero += 1;
        }
        if matches!(kind, "d" | "D" | "b" | "B") {
            data += 1;
        }
    }
    if total == 0 {
        return check("kallsyms", false, "/proc/kallsyms is empty");
    }
    if nonzero == 0 {
        return check(
            "kallsyms",
            false,
            format!(
                "{total} symbols but every address is 0 (kernel.kptr_restrict, or not \
                 root): kernel stacks cannot be symbolised"
            ),
        );
    }
    let scope = if data >= KALLSYMS_ALL_MIN_DATA {
        "all symbols, CONFIG_KALLSYMS_ALL: static locks are named".to_string()
    } else {
        "functions only, no CONFIG_KALLSYMS_ALL: static locks are not named".to_string()
    };
    check(
        "kallsyms",
        true,
        format!("{total} symbols, real addresses; {scope}"),
    )
}

/// Whether pipe and inode locks can be named by their file: the task_file
/// iterator of src/filelocks.rs loads and lists open files.
fn check_file_names() -> Check {
    let t0 = std::time::Instant::now();
    let mut f = crate::filelocks::FileLocks::default();
    match f.refresh() {
        Ok(()) => check(
            "file_names",
            true,
            format!(
                "iter/task_file lists {} open files and pipes in {} \
                 (loaded in {}): pipe and inode locks are named by file",
                f.last_files,
                crate::units::fmt_ns(f.last_cost.as_nanos() as u64),
                crate::units::fmt_ns((t0.elapsed() - f.last_cost).as_nanos() as u64),
            ),
        ),
        Err(e) => check(
            "file_names",
            false,
            format!("{e:#}: pipe and inode locks are named by slab cache or address"),
        ),
    }
}

fn check_lockdown() -> Check {
    match std::fs::read_to_string("/sys/kernel/security/lockdown") {
        Ok(s) => {
            // "none [integrity] confidentiality"
            let mode = s
                .split_whitespace()
                .find(|w| w.starts_with('['))
                .map(|w| w.trim_matches(['[', ']']).to_string())
                .unwrap_or_else(|| s.trim().to_string());
            match mode.as_str() {
                "confidentiality" => check(
                    "lockdown",
                    false,
                    "confidentiality: BPF may not read kernel memory; tracing is blocked",
                ),
                "integrity" => check(
                    "lockdown",
                    true,
                    "integrity: reading kernel memory is allowed",
                ),
                _ => check("lockdown", true, mode),
            }
        }
        Err(_) => {
            let mounted = std::fs::read_to_string("/proc/self/mounts")
                .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(2) == Some("securityfs")));
            if mounted {
                check("lockdown", true, "none (no lockdown LSM in this kernel)")
            } else {
                check("lockdown", true, "unknown (securityfs not mounted)")
            }
        }
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, ok: bool, detail: &str) -> Check {
        check(name, ok, detail)
    }

    /// The checks of a machine like this one: tp_btf, uprobes and ring
    /// buffers work; fentry fails with EPERM; kprobes are not compiled in.
    fn this_kind_of_machine() -> Vec<Check> {
        let mut v = vec![
            c("root", true, "root"),
            c("btf", true, ""),
            c("tp_btf", true, ""),
            c("raw_tp", true, ""),
            c("tracepoint", true, ""),
            c("fentry", false, "load failed: EPERM"),
            c("kprobe", false, "not compiled in"),
            c("uprobe", true, ""),
            c("ringbuf", true, ""),
            c("stack_map", true, ""),
            c("task_storage", true, ""),
        ];
        for (cat, name) in crate::sources::tracepoints() {
            v.push(c(&format!("tracepoint:{cat}:{name}"), true, "exists"));
        }
        v
    }

    fn source<'a>(plan: &'a [SourcePlan], name: &str) -> &'a SourcePlan {
        plan.iter()
            .find(|s| s.source == name)
            .unwrap_or_else(|| panic!("no source {name}"))
    }

    fn set(checks: &mut [Check], name: &str, ok: bool, detail: &str) {
        let c = checks
            .iter_mut()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}"));
        c.ok = ok;
        c.detail = detail.to_string();
    }

    #[test]
    fn plan_without_function_probes() {
        let p = plan(&this_kind_of_machine());
        let kc = source(&p, "kernel-contention");
        assert!(kc.available);
        assert_eq!(kc.backend.as_deref(), Some("tp_btf"));
        let km = source(&p, "kernel-mutex");
        assert!(!km.available);
        assert_eq!(km.backend, None);
        assert!(
            km.reason.contains("fentry: load failed: EPERM"),
            "{}",
            km.reason
        );
        assert!(
            km.reason.contains("kprobe: not compiled in"),
            "{}",
            km.reason
        );
        assert!(km.reason.contains("hold times are lost"), "{}", km.reason);
        assert_eq!(source(&p, "mmap-lock").backend.as_deref(), Some("tp_btf"));
        assert_eq!(source(&p, "user-locks").backend.as_deref(), Some("uprobe"));
        assert_eq!(source(&p, "futex").backend.as_deref(), Some("tp_btf"));
        assert_eq!(source(&p, "sched").backend.as_deref(), Some("tp_btf"));
        assert!(!source(&p, "sched-picknext").available);
        let names: Vec<&str> = p.iter().map(|s| s.source.as_str()).collect();
        assert_eq!(
            names,
            [
                "kernel-contention",
                "kernel-mutex",
                "kernel-rwsem",
                "mmap-lock",
                "user-locks",
                "futex",
                "app-locks",
                "sched",
                "sched-picknext"
            ]
        );
    }

    #[test]
    fn plan_fallbacks() {
        let mut checks = this_kind_of_machine();
        set(&mut checks, "kprobe", true, "attached");
        set(&mut checks, "tp_btf", false, "load failed: EINVAL");
        let p = plan(&checks);
        let km = source(&p, "kernel-mutex");
        assert_eq!(km.backend.as_deref(), Some("kprobe"));
        assert!(km.reason.contains("EPERM"));
        let kc = source(&p, "kernel-contention");
        assert_eq!(kc.backend.as_deref(), Some("tracepoint"));
        assert!(kc.reason.contains("tp_btf: load failed: EINVAL"));
        assert_eq!(
            source(&p, "mmap-lock").backend.as_deref(),
            Some("tracepoint")
        );
        assert_eq!(
            source(&p, "sched-picknext").backend.as_deref(),
            Some("kprobe")
        );
        let sched = source(&p, "sched");
        assert!(!sched.available, "sched is tp_btf only");
        assert!(sched.reason.contains("needs tp_btf"), "{}", sched.reason);

        set(&mut checks, "fentry", true, "");
        assert_eq!(
            source(&plan(&checks), "kernel-mutex").backend.as_deref(),
            Some("fentry")
        );
    }

    #[test]
    fn plan_missing_tracepoints_and_mechanisms() {
        let mut checks = this_kind_of_machine();
        set(
            &mut checks,
            "tracepoint:lock:contention_begin",
            false,
            "not in this kernel",
        );
        set(&mut checks, "tracepoint", false, "attach failed: ENOENT");
        set(&mut checks, "uprobe", false, "attach failed: EINVAL");
        let p = plan(&checks);
        let kc = source(&p, "kernel-contention");
        assert!(!kc.available);
        assert!(kc.reason.contains("contention_begin: not in this kernel"));
        // the scheduler's view needs no classic tracepoint
        let futex = source(&p, "futex");
        assert!(futex.available, "{}", futex.reason);
        assert_eq!(futex.backend.as_deref(), Some("tp_btf"));
        assert!(!source(&p, "user-locks").available);
        assert_eq!(source(&p, "mmap-lock").backend.as_deref(), Some("tp_btf"));
        assert!(
            source(&p, "kernel-mutex")
                .reason
                .contains("waits and hold times")
        );
        let r = Report {
            kernel: "x".into(),
            checks: checks.clone(),
            sources: p,
        };
        // without lock:contention_begin, mmap-lock, futex and sched still
        // run (tp_btf)
        assert!(r.usable());
        assert!(
            r.sources
                .iter()
                .filter(|s| s.available && s.implemented)
                .all(|s| ["mmap-lock", "futex", "sched"].contains(&s.source.as_str()))
        );

        // Nothing works: nothing is available.
        for ch in &mut checks {
            ch.ok = false;
        }
        let r = Report {
            kernel: "x".into(),
            sources: plan(&checks),
            checks,
        };
        assert!(!r.usable());
        assert!(r.sources.iter().all(|s| s.backend.is_none()));
    }

    #[test]
    fn plan_needs_maps_for_contention() {
        let mut checks = this_kind_of_machine();
        set(&mut checks, "task_storage", false, "load failed: EINVAL");
        let kc = plan(&checks).remove(0);
        assert!(!kc.available);
        assert!(kc.reason.contains("task_storage: load failed: EINVAL"));
    }

    #[test]
    fn render_fits_80_columns() {
        let mut checks = this_kind_of_machine();
        set(
            &mut checks,
            "tracepoint:mmap_lock:mmap_lock_acquire_returned",
            true,
            "exists (raw_tp attached); tracefs is not mounted, so no classic attach \
             and a-very-long-unbreakable-word-that-goes-on-and-on-and-on-beyond-eighty-columns-ok",
        );
        let r = Report {
            kernel: "6.18".into(),
            sources: plan(&checks),
            checks,
        };
        let mut out = Vec::new();
        render(&r, &mut out).expect("render to a Vec");
        let text = String::from_utf8(out).expect("utf-8");
        for l in text.lines() {
            assert!(l.chars().count() <= 80, "too wide: {l:?}");
        }
        assert!(text.contains("will run with tp_btf"));
        assert!(text.contains("unavailable: needs fentry or kprobes"));
        assert!(text.contains("✗ fentry"));
    }

    #[test]
    fn missing_tracepoints_are_grouped_and_asides_dropped() {
        let mut checks = this_kind_of_machine();
        for n in ["contention_begin", "contention_end"] {
            set(
                &mut checks,
                &format!("tracepoint:lock:{n}"),
                false,
                "not in this kernel (no /x/events/lock)",
            );
        }
        let kc = plan(&checks).remove(0);
        assert_eq!(
            kc.reason,
            "lock:contention_begin, lock:contention_end: not in this kernel — \
             kernel lock waits are not measured"
        );
        assert_eq!(brief("a (b (c)) d (e)"), "a d");
    }

    #[test]
    fn wrap_words() {
        assert_eq!(wrap("a bb ccc dddd", 10), ["a bb ccc", "dddd"]);
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(wrap("abcdefghijklmno", 10), ["abcdefghij", "klmno"]);
    }

    #[test]
    fn uprobe_target_computes() {
        assert_eq!(lockscope_doctor_uprobe_target(41), 124);
    }

    /// This machine: root, kernel 6.18 with tp_btf, uprobes and ring buffers,
    /// fentry refused (EPERM) and no kprobes.
    #[test]
    fn probe_this_machine() {
        if !check_root().ok {
            eprintln!("skipped: needs root or CAP_BPF + CAP_PERFMON");
            return;
        }
        let t = std::time::Instant::now();
        let r = probe();
        let took = t.elapsed();
        let mut out = Vec::new();
        render(&r, &mut out).expect("render to a Vec");
        eprintln!("{}\nprobe took {took:?}", String::from_utf8_lossy(&out));
        let is_ok = |n: &str| r.check(n).unwrap_or_else(|| panic!("no check {n}")).ok;
        assert!(is_ok("tp_btf"), "{:?}", r.check("tp_btf"));
        assert!(is_ok("uprobe"), "{:?}", r.check("uprobe"));
        assert!(is_ok("ringbuf"), "{:?}", r.check("ringbuf"));
        assert!(!is_ok("fentry"), "{:?}", r.check("fentry"));
        assert!(!is_ok("kprobe"), "{:?}", r.check("kprobe"));
        assert!(r.usable());
        for (cat, name) in crate::sources::tracepoints() {
            assert!(r.check(&format!("tracepoint:{cat}:{name}")).is_some());
        }
    }
}
