//! The commands: report, trace, run, demo, doctor, workload, top (serve:
//! `serve/`).

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command as Proc};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::cli::{
    Cli, Command, DemoArgs, OutputArgs, TraceArgs, TraceSettings, WorkloadArgs, workload_threads_ok,
};
use crate::deadlock::Detector;
use crate::model::{Record, group};
use crate::output::{self, Report, short_kind};
use crate::session::{
    Reading, Stop, attach, detach_all, options, read, require_privileges, stop_all,
};
use crate::sources::{self, Options, Started, Symbolizer, Targets};
pub use crate::status::Usage;
use crate::status::usage;
use crate::units::fmt_ns;

/// Runs a parsed command line; returns the process exit status.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Report(a) => {
            let targets = a.targets.validate().map_err(usage)?;
            if a.interval
                .is_some_and(|every| every < Duration::from_millis(100))
            {
                return Err(usage("--interval must be at least 100ms"));
            }
            require_privileges()?;
            let mut files = Outputs::open(&a.output, None)?;
            let mut settings = a.settings.clone();
            settings.stacks |= a.output.needs_stacks();
            settings.hold_stacks |= a.output.needs_hold_stacks();
            let opts = options(targets, &settings, false, 0)?;
            let limits = output::Limits {
                max_entries: opts.max_entries,
                ringbuf_mb: None,
            };
            let stop = Stop::new(a.duration, &opts.targets)?;
            if let Some(every) = a.interval {
                let lost = interval_report(
                    &opts,
                    &a.settings.sources,
                    &stop,
                    &a.output,
                    every,
                    &mut files,
                )?;
                warn_losses(&lost, &limits);
                return Ok(0);
            }
            let rep = collect(&opts, &a.settings.sources, &stop, &a.output, None)?;
            print_report(&rep, &a.output, &mut files)?;
            warn_losses(&rep.lost, &limits);
            Ok(0)
        }
        Command::Trace(a) => trace(a),
        Command::Deadlocks(mut a) => {
            a.lock_order = true;
            trace(a)
        }
        Command::Run(a) => {
            check_program(&a.command)?;
            require_privileges()?;
            let timeline = a.perfetto.as_deref().map(|p| (p, a.ringbuf_mb));
            run_command(&a.command, &a.settings, &a.output, false, timeline)
        }
        Command::Demo(a) => demo(a),
        Command::Doctor(a) => {
            let rep = crate::doctor::probe();
            let mut out = io::stdout().lock();
            if a.json {
                serde_json::to_writer_pretty(&mut out, &rep)?;
                writeln!(out)?;
            } else {
                crate::doctor::render(&rep, &mut out)?;
            }
            Ok(if rep.usable() { 0 } else { 1 })
        }
        Command::Workload(a) => workload(a),
        Command::Top(a) => top(a),
        Command::Serve(a) => crate::serve::run(a),
        Command::Completions(a) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut cmd, "lockscope", &mut io::stdout());
            Ok(0)
        }
        Command::Manpage(a) => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match &a.dir {
                None => clap_mangen::Man::new(cmd).render(&mut io::stdout())?,
                Some(dir) => write_manpages(cmd, dir)?,
            }
            Ok(0)
        }
    }
}

/// lockscope.1 and lockscope-COMMAND.1 for each command, into `dir`.
fn write_manpages(cmd: clap::Command, dir: &std::path::Path) -> Result<()> {
    let write = |name: &str, page: clap::Command| -> Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page).title(name).render(&mut buf)?;
        std::fs::write(&path, buf)
            .map_err(|e| anyhow!("cannot write {}: {}", path.display(), io_reason(&e)))
    };
    let mut n = 1;
    for sub in cmd.get_subcommands() {
        let name = format!("lockscope-{}", sub.get_name());
        write(&name, sub.clone())?;
        n += 1;
    }
    write("lockscope", cmd)?;
    eprintln!("lockscope: {n} man pages written to {}", dir.display());
    Ok(())
}

/// `lockscope top --batch`: each interval's table, as `report -i` prints it.
fn top_batch(a: crate::cli::TopArgs) -> Result<i32> {
    let targets = a.targets.validate().map_err(usage)?;
    if a.interval < Duration::from_millis(100) {
        return Err(usage("--interval must be at least 100ms"));
    }
    require_privileges()?;
    let out = OutputArgs {
        by: a.by,
        top: 20,
        ..NO_FILES
    };
    let mut files = Outputs::default();
    let opts = options(targets, &a.settings, false, 0)?;
    let limits = output::Limits {
        max_entries: opts.max_entries,
        ringbuf_mb: None,
    };
    let stop = Stop::new(a.duration, &opts.targets)?;
    let lost = interval_report(
        &opts,
        &a.settings.sources,
        &stop,
        &out,
        a.interval,
        &mut files,
    )?;
    warn_losses(&lost, &limits);
    Ok(0)
}

/// `lockscope top`: the live view (src/tui).
fn top(a: crate::cli::TopArgs) -> Result<i32> {
    use std::io::IsTerminal;
    if a.batch {
        return top_batch(a);
    }
    if a.duration.is_some() {
        return Err(usage("top: -d goes with --batch (the screen runs until q)"));
    }
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        return Err(usage(
            "top draws on a terminal and stdin/stdout is not one: \
             use `lockscope top --batch` (or `lockscope report -i 1s`) for logs and pipes",
        ));
    }
    let targets = a.targets.validate().map_err(usage)?;
    if a.interval < Duration::from_millis(100) {
        return Err(usage("--interval must be at least 100ms"));
    }
    require_privileges()?;
    let opts = options(targets, &a.settings, false, 0)?;
    let stop = Stop::new(None, &opts.targets)?;
    // symbols load before "tracing" is announced, as in `report`
    let mut sym = Symbolizer::new();
    let started = attach(&opts, &a.settings.sources)?;
    let cfg = crate::tui::Config {
        interval: a.interval,
        view: a.by,
        stacks: opts.stacks.is_some(),
    };
    let res = crate::tui::run(&started, &mut sym, &opts.targets, &cfg, &stop);
    detach_all(&started);
    res.map(|()| 0)
}

/// Reads every source's in-kernel aggregation into one report.
pub fn snapshot(
    started: &Started,
    sym: &mut Symbolizer,
    targets: &str,
    duration: Duration,
    out: &OutputArgs,
) -> Result<Report> {
    let mut reading = read(started, sym).checked()?;
    let records = reading.take_records();
    Ok(report_of(&reading, records, targets, duration, out))
}

/// A report of `records` with the reading's status, losses and costs.
fn report_of(
    reading: &Reading,
    records: Vec<Record>,
    targets: &str,
    duration: Duration,
    out: &OutputArgs,
) -> Report {
    Report {
        version: output::JSON_VERSION,
        duration_ns: duration.as_nanos() as u64,
        targets: targets.to_string(),
        by: output::by_name(out.by),
        interval: None,
        sources: reading.statuses(),
        lost: reading.lost(),
        bpf_programs: reading.programs(),
        rows: {
            let filter = crate::select::RowFilter {
                locks: out.lock_filter.clone(),
                kinds: out.type_filter.clone(),
            };
            let mut rows = if filter.is_empty() {
                group(&records, out.by)
            } else {
                let kept: Vec<Record> = records.into_iter().filter(|r| filter.keep(r)).collect();
                group(&kept, out.by)
            };
            crate::select::sort_rows(&mut rows, out.sort);
            rows
        },
        holders: reading.holders(),
        deadlocks: Vec::new(),
    }
}

/// `report -i`: one table (or JSON line) per interval, each counting only
/// what happened in it, until the stop condition; the last one may be
/// shorter.
fn interval_report(
    opts: &Options,
    chosen: &[String],
    stop: &Stop,
    out: &OutputArgs,
    every: Duration,
    files: &mut Outputs,
) -> Result<std::collections::BTreeMap<String, u64>> {
    let mut sym = Symbolizer::new();
    // the deadlock detector's kernel-side programs attach before "tracing"
    // is announced, as the sources do
    let mut deadlocks = Detector::for_targets(&opts.targets);
    let started = attach(opts, chosen)?;
    stop.start_clock();
    let targets = opts.targets.describe();
    let mut prev: Vec<Record> = Vec::new();
    let t0 = Instant::now();
    let mut last = t0;
    let mut n = 0u64;
    let mut lost = Default::default();
    let mut prev_progs = Vec::new();
    let res = (|| -> Result<()> {
        loop {
            let until = Some(last + every);
            let stopped = wait_until(stop, None, &started, &mut sym, until, &mut deadlocks)?;
            if stopped {
                stop_all(&started); // the last interval ends for all at once
            }
            let now = Instant::now();
            let mut reading = read(&started, &mut sym).checked()?;
            let records = reading.take_records();
            let delta = crate::model::interval(&records, &prev);
            n += 1;
            let mut rep = report_of(&reading, delta, &targets, now - last, out);
            rep.bpf_programs.extend(deadlocks.programs());
            rep.interval = Some(n);
            rep.deadlocks = deadlocks.take(); // those found in this interval
            // each interval says what happened in it: its own losses and
            // its programs' own runs (the totals are in the last warning)
            let (all_lost, all_progs) = (rep.lost.clone(), rep.bpf_programs.clone());
            rep.lost = crate::output::lost_since(&rep.lost, &lost);
            rep.bpf_programs = crate::output::progs_since(&rep.bpf_programs, &prev_progs);
            if n > 1 && !out.json {
                // the sources were described above the first table, and
                // how to get the BPF cost needs saying once
                rep.sources.clear();
                if crate::output::overhead_line(&rep.bpf_programs).as_deref()
                    == Some(crate::output::BPF_COST_HINT)
                {
                    rep.bpf_programs.clear();
                }
            }
            if !out.json {
                report_text(files, |w| {
                    writeln!(
                        w,
                        "--- interval {n}: {} s to {:.2} s ---",
                        fmt_secs(last.duration_since(t0)),
                        now.duration_since(t0).as_secs_f64()
                    )
                })?;
            }
            print_report(&rep, out, files)?;
            lost = all_lost;
            prev_progs = all_progs;
            prev = records;
            last = now;
            if stopped {
                return Ok(());
            }
        }
    })();
    detach_all(&started);
    res.map(|()| lost)
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// Attaches, waits for the stop condition, reads the summary.
fn collect(
    opts: &Options,
    chosen: &[String],
    stop: &Stop,
    out: &OutputArgs,
    child: Option<&mut Child>,
) -> Result<Report> {
    // symbols load before "tracing" is announced: nothing is missed while
    // /proc/kallsyms is parsed
    let mut sym = Symbolizer::new();
    // the deadlock detector's kernel-side programs attach before "tracing"
    // is announced, as the sources do
    let mut deadlocks = Detector::for_targets(&opts.targets);
    let started = attach(opts, chosen)?;
    stop.start_clock();
    let start = Instant::now();
    wait_until(stop, child, &started, &mut sym, None, &mut deadlocks)?;
    stop_all(&started); // the window ends here, for every source at once
    let elapsed = start.elapsed();
    detach_all(&started);
    let mut rep = snapshot(&started, &mut sym, &opts.targets.describe(), elapsed, out)?;
    rep.bpf_programs.extend(deadlocks.programs());
    rep.deadlocks = deadlocks.take();
    Ok(rep)
}

/// Waits for the stop condition (or the command's exit), or until `until`,
/// letting sources do their periodic work (e.g. normalising user stacks)
/// every 50 ms. True when it was the stop condition.
fn wait_until(
    stop: &Stop,
    mut child: Option<&mut Child>,
    started: &Started,
    sym: &mut Symbolizer,
    until: Option<Instant>,
    deadlocks: &mut Detector,
) -> Result<bool> {
    let mut last_tick = Instant::now();
    loop {
        if until.is_some_and(|t| Instant::now() >= t) {
            return Ok(false);
        }
        if last_tick.elapsed() >= Duration::from_millis(50) {
            for s in &started.sources {
                s.tick(sym);
            }
            deadlocks.tick();
            last_tick = Instant::now();
        }
        if let Some(c) = child.as_deref_mut() {
            if c.try_wait()?.is_some() {
                return Ok(true);
            }
            if stop.terminated.swap(false, Ordering::Relaxed) {
                // forward SIGTERM; keep waiting for the command to exit
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            }
        } else if stop.should_stop() {
            return Ok(true);
        }
        let nap = stop.tick(Duration::from_millis(50));
        let nap = until.map_or(nap, |t| {
            nap.min(t.saturating_duration_since(Instant::now()))
        });
        std::thread::sleep(nap);
    }
}

/// One output file, created before anything attaches.
pub(crate) struct OutFile {
    path: std::path::PathBuf,
    file: std::fs::File,
    written: bool,
}

impl OutFile {
    /// Creates (or truncates) `path`; a failure is a usage error naming the
    /// path and the reason.
    fn create(path: &std::path::Path) -> Result<OutFile> {
        let file = std::fs::File::create(path).map_err(|e| {
            usage(format!(
                "cannot write {}: {}",
                path.display(),
                io_reason(&e)
            ))
        })?;
        Ok(OutFile {
            path: path.to_path_buf(),
            file,
            written: false,
        })
    }

    /// Adds what `f` writes to the file; errors name the file.
    fn append(&mut self, f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
        self.written = true;
        let res = (|| {
            let mut w = io::BufWriter::new(&mut self.file);
            f(&mut w)?;
            w.flush()
        })();
        res.map_err(|e| anyhow!("cannot write {}: {}", self.path.display(), io_reason(&e)))
    }

    /// Replaces the file's content with what `f` writes (`report -i`
    /// rewrites it every interval); errors name the file.
    fn rewrite(&mut self, f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
        use std::io::Seek;
        let res = (|| {
            // created empty; later (`report -i`) a regular file starts over
            if self.written && self.file.metadata()?.is_file() {
                self.file.set_len(0)?;
                self.file.rewind()?;
            }
            self.written = true;
            let mut w = io::BufWriter::new(&mut self.file);
            f(&mut w)?;
            w.flush()
        })();
        res.map_err(|e| anyhow!("cannot write {}: {}", self.path.display(), io_reason(&e)))
    }
}

/// An io::Error's reason without the "(os error N)" tail.
fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Every output file of a command (`--flamegraph`, `--folded`,
/// `--flamegraph-hold`, `--folded-hold`, `--perfetto`), opened before any
/// program attaches: a bad path ends the command before it traces.
#[derive(Default)]
pub(crate) struct Outputs {
    /// `-o FILE`: the report itself (appended to: `-i` writes one per
    /// interval).
    report: Option<OutFile>,
    flamegraph: Option<OutFile>,
    folded: Option<OutFile>,
    flamegraph_hold: Option<OutFile>,
    folded_hold: Option<OutFile>,
    perfetto: Option<OutFile>,
    pprof: Option<OutFile>,
}

impl Outputs {
    pub(crate) fn open(out: &OutputArgs, perfetto: Option<&std::path::Path>) -> Result<Outputs> {
        let open = |p: &Option<std::path::PathBuf>| p.as_deref().map(OutFile::create).transpose();
        Ok(Outputs {
            report: open(&out.output)?,
            flamegraph: open(&out.flamegraph)?,
            folded: open(&out.folded)?,
            flamegraph_hold: open(&out.flamegraph_hold)?,
            folded_hold: open(&out.folded_hold)?,
            perfetto: perfetto.map(OutFile::create).transpose()?,
            pprof: open(&out.pprof)?,
        })
    }
}

/// The report itself, as a table or a JSON line.
fn write_report(w: &mut dyn Write, rep: &Report, out: &OutputArgs, width: usize) -> io::Result<()> {
    if let Some(sep) = &out.field_separator {
        crate::select::write_separated(w, &rep.rows, sep)?;
    } else if out.json {
        serde_json::to_writer(&mut *w, rep)?;
        writeln!(w)?;
    } else {
        // a deadlock found in the window comes first, one line each (the
        // threads' scanned stacks are on stderr and in --json)
        for d in &rep.deadlocks {
            writeln!(w, "{}", crate::tui::ui::deadlock_banner(d))?;
        }
        output::write_table(w, rep, out.by, out.top, width)?;
        output::write_stacks(w, rep, out.by, 3, width)?;
    }
    Ok(())
}

/// Where report text goes: the `-o` file, else stdout.
fn report_text(
    files: &mut Outputs,
    f: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    match &mut files.report {
        Some(file) => file.append(f),
        None => {
            let mut w = io::stdout().lock();
            f(&mut w)?;
            Ok(())
        }
    }
}

fn print_report(rep: &Report, out: &OutputArgs, files: &mut Outputs) -> Result<()> {
    // a file has no terminal width: whole names
    let width = if files.report.is_some() {
        output::UNLIMITED
    } else {
        output::table_width(out.wide)
    };
    report_text(files, |w| write_report(w, rep, out, width))?;
    write_flame(rep, out, files, true)?;
    if let Some(f) = &mut files.pprof {
        f.rewrite(|w| w.write_all(&crate::pprof::encode_ending_now(rep)))?;
    }
    write_flame(rep, out, files, false)
}

/// `--flamegraph` and `--folded`: the waits' stacks; with `holds`,
/// `--flamegraph-hold` and `--folded-hold`: acquisitions' stacks weighted
/// by the holds that followed. Writes those of the two that were asked
/// for and, unless the output is JSON, says so on stderr.
fn write_flame(rep: &Report, out: &OutputArgs, files: &mut Outputs, holds: bool) -> Result<()> {
    let (svg_file, folded_file, svg_path, folded_path) = if holds {
        (
            &mut files.flamegraph_hold,
            &mut files.folded_hold,
            &out.flamegraph_hold,
            &out.folded_hold,
        )
    } else {
        (
            &mut files.flamegraph,
            &mut files.folded,
            &out.flamegraph,
            &out.folded,
        )
    };
    if svg_file.is_none() && folded_file.is_none() {
        return Ok(());
    }
    let (folded, what, unit) = if holds {
        (crate::flame::fold_holds(&rep.rows), "holds", "held")
    } else {
        (crate::flame::fold(&rep.rows), "waits", "waited")
    };
    if let Some(f) = folded_file {
        f.rewrite(|w| crate::flame::write_folded(w, &folded))?;
    }
    if let Some(f) = svg_file {
        let title = format!("lock {what}: {}", rep.targets);
        f.rewrite(|w| crate::flame::write_svg_of(w, &folded, &title, unit))?;
    }
    if !out.json {
        let stacks = if holds {
            let total: u64 = folded.iter().map(|f| f.weight).sum();
            format!(
                "{} hold stacks ({})",
                folded.len(),
                crate::units::fmt_ns(total)
            )
        } else {
            let n: usize = rep.rows.iter().map(|r| r.stacks.len()).sum();
            format!("{n} stacks")
        };
        eprintln!(
            "lockscope: {stacks} written{}",
            written_to(svg_path, folded_path)
        );
    }
    Ok(())
}

/// Where the flame graph and the folded stacks went, for the line that
/// says they were written: " to X (open it in a browser), folded to Y".
fn written_to(svg: &Option<std::path::PathBuf>, folded: &Option<std::path::PathBuf>) -> String {
    let svg = svg
        .as_ref()
        .map(|p| format!(" to {} (open it in a browser)", p.display()));
    let folded = folded
        .as_ref()
        .map(|p| format!(", folded to {}", p.display()));
    format!("{}{}", svg.unwrap_or_default(), folded.unwrap_or_default())
}

/// The one warning line on stderr when anything was lost.
fn warn_losses(lost: &std::collections::BTreeMap<String, u64>, limits: &output::Limits) {
    if let Some(l) = output::loss_warning(lost, limits) {
        eprintln!("{l}");
    }
}

/// What `prog` names, directly or through PATH.
#[derive(Debug, PartialEq)]
enum Program {
    /// An executable file.
    Executable,
    /// A file (or directory) that exists but that we may not execute.
    NotExecutable(std::path::PathBuf),
    NotFound,
}

/// `run`'s command names an executable file: else a usage error saying
/// "command not found" or "permission denied", as a shell would.
fn check_program(cmd: &[String]) -> Result<()> {
    let prog = cmd
        .first()
        .ok_or_else(|| usage("no command given after --"))?;
    match find_program(prog) {
        Program::Executable => Ok(()),
        Program::NotExecutable(p) => Err(usage(format!(
            "cannot run {prog}: permission denied ({} is not an executable file)",
            p.display()
        ))),
        Program::NotFound => Err(usage(format!("command not found: {prog}"))),
    }
}

fn find_program(prog: &str) -> Program {
    let check = |p: &std::path::Path| -> Option<Program> {
        let m = std::fs::metadata(p).ok()?;
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: access reads a valid NUL-terminated path.
        let x = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
        Some(if m.is_file() && x {
            Program::Executable
        } else {
            Program::NotExecutable(p.to_path_buf())
        })
    };
    if prog.contains('/') {
        return check(std::path::Path::new(prog)).unwrap_or(Program::NotFound);
    }
    let mut found = Program::NotFound;
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            match check(&d.join(prog)) {
                Some(Program::Executable) => return Program::Executable,
                Some(p @ Program::NotExecutable(_)) if found == Program::NotFound => found = p,
                _ => {}
            }
        }
    }
    found
}

/// lockscope's original mount namespace, when it left it for a private one
/// (to mount tracefs: [`sources::private_tracefs`]); `run` starts its
/// command back in it.
static ORIGINAL_MOUNT_NS: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();

/// Keeps `ns` (an open `/proc/self/ns/mnt` from before
/// [`sources::private_tracefs`]) when lockscope is no longer in it, so the
/// commands `run` starts see the host's mounts and their mounts reach it.
pub fn remember_mount_ns(ns: std::fs::File) {
    use std::os::unix::fs::MetadataExt;
    let now = std::fs::metadata("/proc/self/ns/mnt").map(|m| (m.dev(), m.ino()));
    let then = ns.metadata().map(|m| (m.dev(), m.ino()));
    if let (Ok(now), Ok(then)) = (now, then)
        && now != then
    {
        let _ = ORIGINAL_MOUNT_NS.set(OwnedFd::from(ns));
    }
}

/// A command started but held before exec until [`HeldChild::release`].
struct HeldChild {
    pid: u32,
    release: OwnedFd,
    spawner: std::thread::JoinHandle<io::Result<Child>>,
}

fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(anyhow!("pipe2: {}", io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by us alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts `cmd` so that tracing can attach before it runs its first
/// instruction: the forked child sends its pid through one pipe and then
/// blocks on another until released. std's spawn() returns only after
/// exec, so it runs on a helper thread while we attach.
fn spawn_held(cmd: &[String], stdout_to_stderr: bool) -> Result<HeldChild> {
    let (prog, args) = cmd
        .split_first()
        .ok_or_else(|| usage("no command given after --"))?;
    check_program(cmd)?;
    let (go_rd, go_wr) = pipe_cloexec()?;
    let (pid_rd, pid_wr) = pipe_cloexec()?;
    let (go_r, go_w, pid_w) = (go_rd.as_raw_fd(), go_wr.as_raw_fd(), pid_wr.as_raw_fd());
    let mut c = Proc::new(prog);
    c.args(args);
    if stdout_to_stderr {
        c.stdout(io::stderr());
    }
    // back to the original mount namespace, in the same directory (setns
    // moves the cwd to the namespace's root)
    let mount_ns = ORIGINAL_MOUNT_NS.get().map(|fd| fd.as_raw_fd());
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|d| std::ffi::CString::new(d.into_os_string().into_encoded_bytes()).ok());
    // SAFETY: the closure runs in the forked child before exec and only
    // calls async-signal-safe functions (setns, chdir, getpid, write,
    // close, read) on file descriptors inherited from the parent and on a
    // string allocated before the fork.
    unsafe {
        c.pre_exec(move || {
            if let Some(ns) = mount_ns {
                if libc::setns(ns, libc::CLONE_NEWNS) == 0 {
                    if let Some(d) = &cwd
                        && libc::chdir(d.as_ptr()) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                } else {
                    // e.g. no CAP_SYS_CHROOT: the command runs, in
                    // lockscope's private mount namespace
                    let m = b"lockscope: warning: the command runs in lockscope's private \
                              mount namespace (setns failed)\n";
                    libc::write(2, m.as_ptr().cast(), m.len());
                }
            }
            libc::close(go_w);
            let pid = libc::getpid();
            libc::write(pid_w, (&pid as *const i32).cast(), 4);
            libc::close(pid_w);
            let mut b = 0u8;
            while libc::read(go_r, (&mut b as *mut u8).cast(), 1) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
            Ok(())
        });
    }
    // pid_wr must stay open until the fork has happened; the thread closes
    // it when spawn() returns, which also unblocks our read if fork failed.
    let spawner = std::thread::spawn(move || {
        let r = c.spawn();
        drop(pid_wr);
        r
    });
    let mut buf = [0u8; 4];
    let mut pid_file = std::fs::File::from(pid_rd);
    use std::io::Read;
    if pid_file.read_exact(&mut buf).is_err() {
        // the fork itself failed (or the child died): spawn() says why
        let err = match spawner.join() {
            Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                usage(format!("command not found: {prog}"))
            }
            Ok(Err(e)) => anyhow!("cannot start {prog}: {e}"),
            _ => anyhow!("cannot start {prog}"),
        };
        return Err(err);
    }
    drop(go_rd);
    Ok(HeldChild {
        pid: i32::from_ne_bytes(buf) as u32,
        release: go_wr,
        spawner,
    })
}

impl HeldChild {
    /// Lets the command exec; returns it, or why exec failed.
    fn release(self, prog: &str) -> Result<Child> {
        drop(self.release);
        match self.spawner.join() {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                Err(usage(format!("command not found: {prog}")))
            }
            Ok(Err(e)) => Err(anyhow!("cannot start {prog}: {e}")),
            Err(_) => Err(anyhow!("cannot start {prog}: spawner thread panicked")),
        }
    }

    fn abort(self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own unreaped child, so it cannot have been reused.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        drop(self.release);
        if let Ok(Ok(mut c)) = self.spawner.join() {
            let _ = c.wait();
        }
    }
}

fn exit_code(st: std::process::ExitStatus) -> i32 {
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

fn run_command(
    cmd: &[String],
    settings: &TraceSettings,
    out: &OutputArgs,
    quiet: bool,
    perfetto: Option<(&std::path::Path, u32)>,
) -> Result<i32> {
    // demo (quiet): the workload's own lines go to stderr, the report to stdout
    let mut files = Outputs::open(out, perfetto.map(|(p, _)| p))?;
    let mut timeline = files.perfetto.take().map(Timeline::new).transpose()?;
    let held = spawn_held(cmd, quiet)?;
    let pid = held.pid;
    let targets = Targets {
        pids: vec![pid],
        follow_forks: true,
        ..Default::default()
    };
    let mut settings = settings.clone();
    settings.stacks |= out.needs_stacks();
    settings.hold_stacks |= out.needs_hold_stacks();
    let ringbuf_mb = perfetto.map_or(0, |(_, mb)| mb);
    let opts = options(targets, &settings, timeline.is_some(), ringbuf_mb)?;
    let stop = Stop::new(None, &opts.targets)?;
    let mut sym = Symbolizer::new();
    // before "tracing" is announced and the command starts
    let mut deadlocks = Detector::for_targets(&opts.targets);
    let started = match attach(&opts, &settings.sources) {
        Ok(s) => s,
        Err(e) => {
            held.abort();
            return Err(e);
        }
    };
    let start = Instant::now();
    let mut child = held.release(&cmd[0])?; // the command starts now
    let elapsed = match &mut timeline {
        None => {
            let child = Some(&mut child);
            wait_until(&stop, child, &started, &mut sym, None, &mut deadlocks)?;
            stop_all(&started);
            start.elapsed()
        }
        Some(t) => stream_until_exit(&stop, &mut child, &started, &mut sym, t, start)?,
    };
    let status = child.wait()?;
    detach_all(&started);
    if let Some(t) = timeline {
        let (n, path) = t.finish()?;
        eprintln!(
            "lockscope: timeline of {n} operations written to {} (open it in ui.perfetto.dev)",
            path.display()
        );
    }
    let desc = if quiet {
        format!("demo workload (pid {pid})")
    } else {
        format!("{} (pid {pid}) and children", cmd.join(" "))
    };
    let mut rep = snapshot(&started, &mut sym, &desc, elapsed, out)?;
    rep.deadlocks = deadlocks.take();
    if !quiet && !out.json {
        eprintln!(
            "lockscope: {} exited with status {}",
            cmd[0],
            exit_code(status)
        );
    }
    print_report(&rep, out, &mut files)?;
    warn_losses(
        &rep.lost,
        &output::Limits {
            max_entries: opts.max_entries,
            ringbuf_mb: perfetto.map(|(_, mb)| mb),
        },
    );
    Ok(exit_code(status))
}

/// `run --perfetto`: waits for the command's exit (Ctrl-C reaches it as
/// it reaches `run`; SIGTERM is forwarded) while every
/// operation the sources stream goes to the timeline; the window ends for
/// every source at once and what the ring buffers hold then is written
/// too. Returns the window's length.
fn stream_until_exit(
    stop: &Stop,
    child: &mut Child,
    started: &Started,
    sym: &mut Symbolizer,
    timeline: &mut Timeline,
    start: Instant,
) -> Result<Duration> {
    let (rb, pending) = event_rings(started)?;
    let mut last_tick = Instant::now();
    loop {
        let done = child.try_wait()?.is_some();
        if !done && stop.terminated.swap(false, Ordering::Relaxed) {
            // forward SIGTERM; keep waiting for the command to exit
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let mut elapsed = None;
        if done {
            stop_all(started);
            elapsed = Some(start.elapsed());
        } else {
            wait_records(&rb, stop.tick(Duration::from_millis(50)))?;
        }
        if last_tick.elapsed() >= Duration::from_millis(50) {
            for s in &started.sources {
                s.tick(sym);
            }
            last_tick = Instant::now();
        }
        take_records(&rb, &pending, done, |i, data| {
            match started.sources[i].decode_event(data, sym) {
                Some(e) => timeline.push(&e),
                None => Ok(()),
            }
        })?;
        if let Some(e) = elapsed {
            return Ok(e);
        }
    }
}

fn demo(a: DemoArgs) -> Result<i32> {
    workload_threads_ok(a.threads)?;
    require_privileges()?;
    let exe = workload_exe()?;
    let cmd = vec![
        exe.display().to_string(),
        "pipe".into(),
        "mmap".into(),
        "pipe-hold".into(),
        "--hold".into(),
        "20ms".into(),
        "--threads".into(),
        a.threads.to_string(),
        "--ops".into(),
        a.ops.to_string(),
    ];
    if !a.output.json {
        eprintln!(
            "lockscope demo: {} threads write to one pipe (kernel pipe->mutex), then {} threads \
             mmap/munmap in one address space (mmap_lock), {} operations each; then one \
             thread holds a pipe mutex 20 ms while another waits, 10 times",
            a.threads, a.threads, a.ops
        );
    }
    let settings = TraceSettings {
        caller: sources::CallerMode::First,
        max_entries: 16384,
        backend: None,
        sources: Vec::new(),
        stacks: false,
        stack_threshold: Duration::from_millis(1),
        stack_sample: 0,
        hold_stacks: false,
        stack_storage_size: 16384,
    };
    let code = run_command(&cmd, &settings, &a.output, true, None)?;
    if code != 0 {
        return Err(anyhow!("demo workload failed with status {code}"));
    }
    Ok(0)
}

/// `lockscope workload ARGS...`: becomes the `lockscope-workload` binary
/// beside lockscope (same pid, so `run -- lockscope workload ...` traces
/// it), with ARGS unread; its usage lines still say `lockscope workload`.
fn workload(a: WorkloadArgs) -> Result<i32> {
    let exe = workload_exe()?;
    let err = Proc::new(&exe)
        .arg0("lockscope workload")
        .args(&a.args)
        .exec();
    Err(anyhow!("run {}: {err}", exe.display()))
}

/// The `lockscope-workload` binary, in the directory of the running
/// lockscope (cargo builds both into the same target directory).
fn workload_exe() -> Result<std::path::PathBuf> {
    let me = std::env::current_exe().context("find lockscope's own executable")?;
    let exe = me.with_file_name("lockscope-workload");
    if !exe.is_file() {
        return Err(anyhow!(
            "the built-in workloads are a separate binary, {}, which is missing \
             (looked beside {}): build it with `cargo build` (it builds both binaries) \
             and keep it in the same directory as lockscope",
            exe.display(),
            me.display()
        ));
    }
    Ok(exe)
}

/// Ring-buffer records copied out by the callbacks, back to back in one
/// buffer that is reused (no allocation per record once it has grown).
#[derive(Default)]
struct Records {
    bytes: Vec<u8>,
    /// (source index, end of the record in `bytes`)
    ends: Vec<(usize, usize)>,
}

impl Records {
    fn push(&mut self, source: usize, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.ends.push((source, self.bytes.len()));
    }

    /// The records in arrival order: (source index, bytes).
    fn iter(&self) -> impl Iterator<Item = (usize, &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(i, end)| {
            let r = &self.bytes[start..end];
            start = end;
            (i, r)
        })
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

type RawQueue = std::rc::Rc<std::cell::RefCell<Records>>;

/// One ring buffer over every source's event map. Its callbacks only copy
/// records (with their source's index) into the queue: decoding and
/// naming happen off the ring buffer's path.
fn event_rings(started: &Started) -> Result<(libbpf_rs::RingBuffer<'_>, RawQueue)> {
    let pending: RawQueue = Default::default();
    let mut builder = libbpf_rs::RingBufferBuilder::new();
    for (i, s) in started.sources.iter().enumerate() {
        if let Some(map) = s.event_map() {
            let q = pending.clone();
            builder.add(map, move |data: &[u8]| {
                q.borrow_mut().push(i, data);
                0
            })?;
        }
    }
    Ok((builder.build()?, pending))
}

/// The columns of a `trace` line before its caller: acquired and
/// released times (s since the trace began), pid, comm, tid, kind, wait,
/// hold and lock, each at least as wide as its common values (a comm is
/// at most 15 characters, a kernel address 16 hex digits) so that lines
/// line up under the one header; a longer value is whole and pushes the
/// rest of its line right. The lock, of any length, comes last before
/// the caller: only the caller moves.
fn trace_head(cells: [&str; 9]) -> String {
    let [acq, rel, pid, comm, tid, kind, wait, hold, lock] = cells;
    format!(
        "{acq:>10} {rel:>10} {pid:>7} {comm:<15} {tid:>7} {kind:<10} {wait:>8} {hold:>8} {lock:<16} "
    )
}

/// The one header of `trace`'s human stream, cut (the caller's column
/// only) as its lines are.
fn trace_header(width: usize) -> String {
    let head = trace_head([
        "acq(s)", "rel(s)", "pid", "comm", "tid", "kind", "wait", "hold", "lock",
    ]);
    output::fit_tail(&head, "caller", width)
}

/// The human stream line, one per operation, under [`trace_header`]:
/// times in s since the trace began, `-` where not seen (the acquisition
/// of a partial operation, the release of a wait); a failed operation's
/// hold reads `failed`. Names and numbers are whole; only the caller is
/// cut to `width` (whole with [`output::UNLIMITED`]).
fn event_line(e: &crate::model::Event, mono_start: u64, width: usize) -> String {
    let t = |ns: u64| format!("{:.6}", ns.saturating_sub(mono_start) as f64 / 1e9);
    // a partial operation with a release: only the release was seen
    let acq = if (e.partial && e.released_ns.is_some()) || e.end_ns == 0 {
        "-".to_string()
    } else {
        t(e.end_ns)
    };
    let rel = e.released_ns.map_or_else(|| "-".into(), t);
    let lock = e
        .lock_name
        .clone()
        .unwrap_or_else(|| format!("{:x}", e.lock));
    let wait = if e.partial {
        "partial".into()
    } else {
        fmt_ns(e.wait_ns)
    };
    let hold = if e.failed {
        "failed".into()
    } else {
        e.hold_ns.map_or_else(|| "-".into(), fmt_ns)
    };
    let head = trace_head([
        &acq,
        &rel,
        &e.pid.to_string(),
        &e.comm,
        &e.tid.to_string(),
        &short_kind(Some(e.kind)),
        &wait,
        &hold,
        &lock,
    ]);
    output::fit_tail(&head, e.caller.as_deref().unwrap_or("?"), width)
}

/// Records taken from the rings at a time: bounds the queue's memory
/// (a full 8 MiB ring holds about 70 000 contention records).
const BATCH: usize = 4096;

/// Waits up to `timeout` until a ring has records (a signal ends the wait
/// early). The rings' epoll set is level-triggered: with records already
/// there, it returns at once.
fn wait_records(rb: &libbpf_rs::RingBuffer<'_>, timeout: Duration) -> Result<()> {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: epoll_wait writes at most one event into `ev`, which lives
    // across the call; the epoll fd belongs to `rb`, alive here.
    let n = unsafe { libc::epoll_wait(rb.epoll_fd(), &mut ev, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(anyhow::Error::new(e).context("wait for ring-buffer records"));
        }
    }
    Ok(())
}

/// Hands ring-buffer records to `each` in batches of at most [`BATCH`]:
/// one batch (the caller checks its stop conditions between batches), or
/// with `all` every record the rings hold (the window has ended). Returns
/// how many it took.
fn take_records(
    rb: &libbpf_rs::RingBuffer<'_>,
    pending: &RawQueue,
    all: bool,
    mut each: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<usize> {
    let mut taken = 0;
    loop {
        let n = rb.consume_raw_n(BATCH);
        if n < 0 {
            return Err(anyhow::Error::new(io::Error::from_raw_os_error(-n))
                .context("consume ring-buffer records"));
        }
        let res = pending
            .borrow()
            .iter()
            .try_for_each(|(i, data)| each(i, data));
        pending.borrow_mut().clear();
        res?;
        taken += n as usize;
        if !all || (n as usize) < BATCH {
            return Ok(taken);
        }
    }
}

/// Bytes of `trace` output buffered before a write (about 2500 JSON lines).
const STREAM_BUFFER: usize = 1 << 20;
/// How long `trace` lets a trickle of records gather before taking more.
const GATHER: Duration = Duration::from_millis(1);
/// Longest time `trace` output stays buffered while events arrive.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

fn trace(mut a: TraceArgs) -> Result<i32> {
    let mut targets = a.targets.validate().map_err(usage)?;
    let mut order = a.lock_order.then(|| {
        // the locks' holds with their call sites: user-locks, every caller
        if a.settings.sources.is_empty() {
            a.settings.sources = vec![crate::sources::ulock::SOURCE.to_string()];
        }
        a.settings.caller = crate::sources::CallerMode::Every;
        crate::lockorder::OrderGraph::new(65536, 4096, 256)
    });
    let mut lock_names = crate::procmaps::UserSymbolizer::default();
    if !a.command.is_empty() && targets.describe() != "system-wide" {
        return Err(usage(
            "trace -- CMD traces the command and its children: no -p, -t, -c or --cgroup with it",
        ));
    }
    if !a.command.is_empty() {
        check_program(&a.command)?;
    }
    require_privileges()?;
    let mut timeline = match Outputs::open(&NO_FILES, a.perfetto.as_deref())?.perfetto {
        Some(f) => Some(Timeline::new(f)?),
        None => None,
    };
    let held = if a.command.is_empty() {
        None
    } else {
        let h = spawn_held(&a.command, false)?;
        targets = Targets {
            pids: vec![h.pid],
            follow_forks: true,
            ..Default::default()
        };
        Some(h)
    };
    let opts = options(targets, &a.settings, true, a.ringbuf_mb)?;
    let stop = Stop::new(a.duration, &opts.targets)?;
    let mut sym = Symbolizer::new();
    // times are relative to this instant, taken before the window opens:
    // no event of the window can precede it
    // SAFETY: clock_gettime writes into a valid timespec.
    let mono_start = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    };
    // the kernel's symbols before the window opens: a stream names each
    // lock as its first wait is decoded, and a name read from the open
    // files must be read while the process that has the file still lives
    // (a short command's first decode waiting for kallsyms came after it
    // exited); `report` keeps loading them while it attaches
    let _ = sym.ksyms();
    let started = match attach(&opts, &a.settings.sources) {
        Ok(s) => s,
        Err(e) => {
            if let Some(h) = held {
                h.abort();
            }
            return Err(e);
        }
    };
    stop.start_clock();
    let start = Instant::now();
    let mut child = match held {
        Some(h) => Some(h.release(&a.command[0])?), // the command starts now
        None => None,
    };

    // callbacks only copy records out; decoding and names happen below,
    // off the ring buffer's path
    let (rb, pending) = event_rings(&started)?;
    let mut events = 0u64;
    let mut elapsed = Duration::ZERO;
    let stdout = io::stdout();
    let mut w = io::BufWriter::with_capacity(STREAM_BUFFER, stdout.lock());
    let mut line = Vec::with_capacity(1024);
    let mut last_flush = Instant::now();
    let width = output::table_width(a.wide);
    if !a.json && a.perfetto.is_none() && order.is_none() {
        writeln!(w, "{}", trace_header(width))?;
    }
    loop {
        let exited = child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        let done = exited || stop.should_stop();
        if done {
            // the window ends for every source at once; what is in the ring
            // buffers now ended inside it, and the summary covers the same
            stop_all(&started);
            elapsed = start.elapsed();
            detach_all(&started);
        } else {
            wait_records(&rb, stop.tick(Duration::from_millis(100)))?;
        }
        let res = take_records(&rb, &pending, done, |i, data| {
            let Some(e) = started.sources[i].decode_event(data, &mut sym) else {
                return Ok(());
            };
            events += 1;
            if let Some(t) = &mut timeline {
                return t.push(&e);
            }
            if let Some(g) = &mut order {
                if let Some(released_ns) = e.released_ns
                    && !e.failed
                    && !e.partial
                {
                    // named while the process lives: a static lock by its
                    // symbol, once per lock
                    let lock_name = e.lock_name.clone().or_else(|| {
                        if !g.named(e.pid, e.lock) {
                            lock_names.data_name(e.pid, e.lock)
                        } else {
                            None
                        }
                    });
                    g.add(crate::lockorder::Hold {
                        pid: e.pid,
                        tid: e.tid,
                        lock: e.lock,
                        lock_name,
                        caller: e.caller.clone(),
                        acquired_ns: e.end_ns,
                        released_ns,
                    });
                }
                return Ok(());
            }
            if a.json {
                line.clear();
                output::event_json(&mut line, "wait", &e);
                line.push(b'\n');
                w.write_all(&line)?;
            } else {
                writeln!(w, "{}", event_line(&e, mono_start, width))?;
            }
            Ok(())
        });
        let taken = match res {
            Ok(n) => n,
            Err(err) => {
                if err
                    .downcast_ref::<io::Error>()
                    .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
                {
                    detach_all(&started);
                    return Ok(0);
                }
                return Err(err);
            }
        };
        if !done && taken > 0 && taken < BATCH / 8 {
            // a steady trickle: let records gather for a moment, so that
            // each wake-up (of ours, and the kernel's to deliver it) takes
            // many; the rings hold far more than this moment's worth
            std::thread::sleep(GATHER);
        }
        // a write per batch would be a write per few records at high
        // rates: the buffer goes out when full, and at most every
        // FLUSH_EVERY
        if done || last_flush.elapsed() >= FLUSH_EVERY {
            last_flush = Instant::now();
            w.flush().or_else(|e| {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        }
        if done {
            break;
        }
    }
    if let Some(t) = timeline {
        let (n, path) = t.finish()?;
        eprintln!(
            "lockscope: timeline of {n} operations written to {} (open it in ui.perfetto.dev)",
            path.display()
        );
    }
    let out_args = OutputArgs {
        json: a.json,
        top: 20,
        wide: a.wide,
        ..NO_FILES
    };
    let summary = if a.summary {
        Some(snapshot(
            &started,
            &mut sym,
            &opts.targets.describe(),
            elapsed,
            &out_args,
        )?)
    } else {
        None
    };
    let lost = crate::session::read_lost(&started)?;
    let lock_order = order.as_ref().map(crate::lockorder::OrderGraph::summary);
    if a.json {
        let end = output::EndLine {
            ty: "end".into(),
            events,
            duration_ns: elapsed.as_nanos() as u64,
            lost: lost.clone(),
            report: summary,
            lock_order,
        };
        serde_json::to_writer(&mut w, &end)?;
        writeln!(w)?;
    } else {
        if let Some(rep) = &summary {
            writeln!(w)?;
            output::write_table(&mut w, rep, out_args.by, out_args.top, width)?;
        }
        if let Some(o) = &lock_order {
            writeln!(
                w,
                "lock order: {} holds of user locks, {} distinct nested orders, {} inversion(s)",
                o.holds,
                o.orders,
                o.inversions.len()
            )?;
            for i in &o.inversions {
                writeln!(w, "{}", crate::lockorder::describe(i))?;
            }
            let d = o.dropped;
            if d.edges + d.threads + d.window > 0 {
                writeln!(
                    w,
                    "lock order: not followed: {} new orders over the cap, {} holds of threads \
                     over the cap, {} holds out of a thread's window",
                    d.edges, d.threads, d.window
                )?;
            }
        }
        w.flush()?;
        eprintln!(
            "lockscope: {events} operations delivered in {}",
            fmt_ns(elapsed.as_nanos() as u64)
        );
        for l in output::lost_lines(&lost, width) {
            eprintln!("{l}");
        }
    }
    w.flush()?;
    warn_losses(
        &lost,
        &output::Limits {
            max_entries: opts.max_entries,
            ringbuf_mb: Some(a.ringbuf_mb),
        },
    );
    match child {
        Some(mut c) => {
            if matches!(c.try_wait(), Ok(None)) {
                eprintln!(
                    "lockscope: tracing ended; waiting for {} (pid {}) to exit",
                    a.command[0],
                    c.id()
                );
            }
            let status = c.wait()?;
            eprintln!(
                "lockscope: {} exited with status {}",
                a.command[0],
                exit_code(status)
            );
            Ok(exit_code(status))
        }
        None => Ok(0),
    }
}

/// No flame graph files (`trace` has only `--perfetto`).
const NO_FILES: OutputArgs = OutputArgs {
    output: None,
    sort: crate::select::SortKey::Total,
    lock_filter: Vec::new(),
    type_filter: Vec::new(),
    field_separator: None,
    by: crate::model::GroupBy::Lock,
    json: false,
    top: 0,
    wide: false,
    flamegraph: None,
    folded: None,
    flamegraph_hold: None,
    folded_hold: None,
    pprof: None,
};

/// `trace --perfetto`: the timeline streamed to its file as operations
/// arrive; write errors name the file.
struct Timeline {
    path: std::path::PathBuf,
    stream: crate::perfetto::Stream<io::BufWriter<std::fs::File>>,
}

impl Timeline {
    fn new(f: OutFile) -> Result<Timeline> {
        let path = f.path;
        let stream = crate::perfetto::Stream::new(io::BufWriter::new(f.file))
            .map_err(|e| anyhow!("cannot write {}: {}", path.display(), io_reason(&e)))?;
        Ok(Timeline { path, stream })
    }

    fn push(&mut self, e: &crate::model::Event) -> Result<()> {
        self.stream
            .push(e)
            .map_err(|e| anyhow!("cannot write {}: {}", self.path.display(), io_reason(&e)))
    }

    /// Writes the footer; returns the number of operations and the path.
    fn finish(self) -> Result<(u64, std::path::PathBuf)> {
        let n = self.stream.operations();
        let path = self.path;
        self.stream
            .finish()
            .and_then(|mut w| w.flush())
            .map_err(|e| anyhow!("cannot write {}: {}", path.display(), io_reason(&e)))?;
        Ok((n, path))
    }
}

#[cfg(test)]
mod trace_lines {
    use super::*;
    use crate::model::{Event, LockKind};

    /// A user-lock hold of 2 ms after a 1 ms wait, 1 s into the trace.
    fn hold() -> Event {
        Event {
            caller: Some("my_server::handler::process_request+0x1234".into()),
            begin_ns: 1_000_000_000,
            end_ns: 1_001_000_000,
            released_ns: Some(1_003_000_000),
            wait_ns: 1_000_000,
            hold_ns: Some(2_000_000),
            slept: true,
            ..Event::new(
                "user-mutex",
                LockKind::UserMutex,
                0xffff_8881_2345_6789,
                4_194_303,
                4_194_302,
                "a-fifteen-chars".into(),
            )
        }
    }

    /// Where each of the header's labels begins and ends.
    fn spans(header: &str) -> Vec<(usize, usize)> {
        let b = header.as_bytes();
        let mut v = Vec::new();
        for i in 0..b.len() {
            if b[i] != b' ' && (i == 0 || b[i - 1] == b' ') {
                v.push((i, i));
            }
            if b[i] != b' ' && (i + 1 == b.len() || b[i + 1] == b' ') {
                v.last_mut().expect("a label").1 = i + 1;
            }
        }
        v
    }

    #[test]
    fn a_piped_hold_line_has_every_name_and_number_whole() {
        let e = hold();
        let line = event_line(&e, 0, output::UNLIMITED);
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            f,
            [
                "1.001000",
                "1.003000",
                "4194303",
                "a-fifteen-chars",
                "4194302",
                "pmutex",
                "1.00",
                "ms",
                "2.00",
                "ms",
                "ffff888123456789",
                "my_server::handler::process_request+0x1234",
            ],
            "{line}"
        );
        // a name of any length, whole
        let mut named = e.clone();
        named.lock_name = Some("pipe:[2932498] (fd 3 of 23229 \"ls-waiter\")".into());
        named.caller = Some("x".repeat(300));
        let line = event_line(&named, 0, output::UNLIMITED);
        assert!(line.contains("pipe:[2932498] (fd 3 of 23229 \"ls-waiter\")"));
        assert!(line.ends_with(&"x".repeat(300)), "{line}");
        assert!(!line.contains('…'), "{line}");
    }

    #[test]
    fn the_header_lines_up_with_every_kind_of_line() {
        let header = trace_header(output::UNLIMITED);
        let cols = spans(&header);
        assert_eq!(cols.len(), 10, "{header}");
        let e = hold();
        let mut wait = e.clone(); // a kernel wait: no release, short names
        wait.released_ns = None;
        wait.hold_ns = None;
        wait.kind = LockKind::Mutex;
        wait.lock = 0x55f3_8e75_8580;
        wait.comm = "db".into();
        wait.pid = 7;
        wait.tid = 8;
        wait.wait_ns = 999;
        let mut failed = wait.clone();
        failed.failed = true;
        let mut partial = e.clone(); // only the release seen
        partial.partial = true;
        partial.end_ns = 0;
        partial.hold_ns = None;
        for ev in [&e, &wait, &failed, &partial] {
            let line = event_line(ev, 0, output::UNLIMITED);
            let b = line.as_bytes();
            let blank = |i: usize| b.get(i).is_none_or(|&c| c == b' ');
            for (i, &(start, end)) in cols.iter().enumerate() {
                let why = format!("column {i}:\n{header}\n{line}");
                // numbers end under their label's end, names begin under
                // their label's beginning
                if [3, 5, 8, 9].contains(&i) {
                    assert!(!blank(start) && blank(start - 1), "{why}");
                } else {
                    assert!(!blank(end - 1) && blank(end), "{why}");
                }
            }
        }
    }

    #[test]
    fn a_terminal_cuts_only_the_caller() {
        let e = hold();
        let line = event_line(&e, 0, 80);
        assert!(line.contains(" a-fifteen-chars "), "{line}");
        assert!(line.contains(" ffff888123456789 "), "{line}");
        assert!(line.ends_with('…'), "{line}");
        // the caller keeps at least 20 characters past a narrow width
        let head = line.split(" ffff888123456789 ").next().expect("head");
        let caller = &line[head.len() + " ffff888123456789 ".len()..];
        assert_eq!(caller.chars().count(), 20, "{line}");
        // a wide terminal: the caller whole
        let wide = event_line(&e, 0, 200);
        assert!(wide.ends_with(" my_server::handler::process_request+0x1234"));
        // the header's columns are the lines' at any width
        assert_eq!(trace_header(80), trace_header(output::UNLIMITED));
    }
}
