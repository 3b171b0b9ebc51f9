//! A tracing session: what `report`, `trace`, `run`, `top` and `serve` share
//! around the sources. Privileges, the sources' options, attaching the
//! chosen sources, opening and closing their window at one instant, when to
//! stop, detaching, and reading every source into one [`Reading`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use std::collections::BTreeMap;

use crate::cli::TraceSettings;
use crate::model::{HolderRow, Record};
use crate::sources::{self, Options, Source, Started, Symbolizer, Targets};
use crate::status::{ProgStats, SourceStatus, usage};

/// Root, or CAP_BPF + CAP_PERFMON (CAP_SYS_ADMIN implies both): what the
/// tp_btf sources need. user-locks (uprobes) also needs CAP_SYS_ADMIN, and
/// classic tracepoints a readable tracefs; those sources say so when they
/// fail (see the help's last lines).
pub fn require_privileges() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    const CAP_PERFMON: u64 = 1 << 38;
    const CAP_BPF: u64 = 1 << 39;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    if caps & CAP_SYS_ADMIN != 0 || (caps & CAP_BPF != 0 && caps & CAP_PERFMON != 0) {
        return Ok(());
    }
    // SAFETY: as above.
    let uid = unsafe { libc::getuid() };
    Err(usage(format!(
        "needs root, or at least CAP_BPF + CAP_PERFMON to load BPF programs \
         (running as uid {uid}; `lockscope --help` says what each source needs): \
         try `sudo lockscope ...`"
    )))
}

/// The sources' options from a command's settings.
pub fn options(
    targets: Targets,
    s: &TraceSettings,
    events: bool,
    ringbuf_mb: u32,
) -> Result<Options> {
    let backend = s.backend.clone();
    if s.max_entries == 0 {
        return Err(usage("--max-entries must be at least 1"));
    }
    Ok(Options {
        targets,
        emit_events: events,
        caller: s.caller,
        max_entries: s.max_entries,
        ringbuf_bytes: ringbuf_mb.clamp(1, 1024) << 20,
        backend,
        stacks: s.stack_options(),
        skip_contention: Default::default(),
    })
}

/// When to stop: a deadline, Ctrl-C/SIGTERM, or every watched task gone.
pub struct Stop {
    /// Set when tracing starts ([`Stop::start_clock`]): `-d` counts from
    /// the attach, however long attaching took.
    deadline: std::cell::Cell<Option<Instant>>,
    duration: Option<Duration>,
    pub interrupted: Arc<AtomicBool>,
    pub terminated: Arc<AtomicBool>,
    watch: Vec<Watched>,
}

/// A watched target: a pidfd when the kernel gives one (Linux 5.3+, a
/// process; it polls readable once the process has exited, zombie or
/// reaped, and never names another process that reuses the pid), else
/// its pid, looked for in /proc.
enum Watched {
    Pidfd(std::os::fd::OwnedFd),
    Proc(u32),
}

impl Watched {
    fn new(pid: u32) -> Watched {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd
        // or -1; no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        match i32::try_from(fd) {
            Ok(fd) if fd >= 0 => {
                // SAFETY: fd is a new descriptor that nothing else owns.
                let fd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
                Watched::Pidfd(fd)
            }
            // a thread (EINVAL before Linux 6.9), no pidfd_open (ENOSYS) or
            // already gone (ESRCH): /proc says
            _ => Watched::Proc(pid),
        }
    }

    fn gone(&self) -> bool {
        match self {
            Watched::Pidfd(fd) => {
                let mut p = libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(fd),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, timeout 0 (no wait).
                let n = unsafe { libc::poll(&mut p, 1, 0) };
                n > 0 && p.revents != 0
            }
            Watched::Proc(p) => {
                !std::path::Path::new(&format!("/proc/{p}")).exists() || is_zombie(*p)
            }
        }
    }
}

impl Stop {
    pub fn new(duration: Option<Duration>, targets: &Targets) -> Result<Stop> {
        let interrupted = Arc::new(AtomicBool::new(false));
        let terminated = Arc::new(AtomicBool::new(false));
        // a second Ctrl-C (or SIGTERM) exits at once: registered before the
        // flags, these see a flag the first signal already set
        signal_hook::flag::register_conditional_shutdown(
            signal_hook::consts::SIGINT,
            130,
            interrupted.clone(),
        )
        .context("install SIGINT handler")?;
        signal_hook::flag::register_conditional_shutdown(
            signal_hook::consts::SIGTERM,
            143,
            terminated.clone(),
        )
        .context("install SIGTERM handler")?;
        signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())
            .context("install SIGINT handler")?;
        signal_hook::flag::register(signal_hook::consts::SIGTERM, terminated.clone())
            .context("install SIGTERM handler")?;
        let watch = targets
            .pids
            .iter()
            .chain(&targets.tids)
            .map(|&p| Watched::new(p))
            .collect();
        Ok(Stop {
            deadline: std::cell::Cell::new(duration.map(|d| Instant::now() + d)),
            duration,
            interrupted,
            terminated,
            watch,
        })
    }

    /// Starts the `-d` clock now (call once the sources are attached).
    pub fn start_clock(&self) {
        self.deadline.set(self.duration.map(|d| Instant::now() + d));
    }

    pub fn signalled(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed) || self.terminated.load(Ordering::Relaxed)
    }

    /// Whether every watched target has exited (a zombie counts as gone):
    /// one poll(2) of a pidfd per process, no /proc read.
    pub fn targets_gone(&self) -> bool {
        !self.watch.is_empty() && self.watch.iter().all(Watched::gone)
    }

    pub fn should_stop(&self) -> bool {
        self.signalled()
            || self.deadline.get().is_some_and(|d| Instant::now() >= d)
            || self.targets_gone()
    }

    /// Time left until the deadline, capped at `max`.
    pub fn tick(&self, max: Duration) -> Duration {
        match self.deadline.get() {
            Some(d) => d.saturating_duration_since(Instant::now()).min(max),
            None => max,
        }
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Starts the chosen sources and says what is traced.
pub fn attach(opts: &Options, chosen: &[String]) -> Result<Started> {
    // unknown source names and a kernel without lock:contention_begin are
    // usage errors: sources::start says so with a typed `Usage`
    let started = sources::start(chosen, opts)?;
    let via: Vec<String> = started
        .sources
        .iter()
        .map(|s| {
            let st = s.status();
            format!("{} ({})", st.name, st.backend.unwrap_or_default())
        })
        .collect();
    // every source attached: the window opens now, for all of them at once
    start_all(&started);
    if crate::sources::bench_floor() {
        eprintln!(
            "lockscope: LOCKSCOPE_BENCH_FLOOR=1: the programs stay attached and return at once; \
             nothing is measured (a benchmark's floor)"
        );
    }
    eprintln!(
        "lockscope: tracing {} via {} (Ctrl-C to stop)",
        opts.targets.describe(),
        via.join(", ")
    );
    for f in &started.failed {
        eprintln!(
            "lockscope: {} unavailable: {}",
            f.name,
            f.reason.as_deref().unwrap_or("?")
        );
    }
    Ok(started)
}

/// Opens the window of every source at one instant (they load closed).
pub fn start_all(started: &Started) {
    for s in &started.sources {
        s.begin();
    }
}

/// Ends the window of every source at one instant (each program returns
/// at once from here on); the maps can then be read at leisure.
pub fn stop_all(started: &Started) {
    for s in &started.sources {
        s.stop();
    }
}

/// Stops every source, then hands every link to the background closer
/// (see [`sources::release_links`]): the programs no longer count, and are
/// detached without lockscope waiting for the kernel.
pub fn detach_all(started: &Started) {
    stop_all(started);
    let links: Vec<libbpf_rs::Link> = started
        .sources
        .iter()
        .flat_map(|s| s.take_links())
        .collect();
    sources::release_links(links);
}

/// The part of a source's reading that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Records,
    Holders,
    Lost,
}

/// A part of a source that could not be read, and why; the part is empty
/// in the reading.
#[derive(Debug)]
pub struct ReadError {
    pub source: &'static str,
    pub part: Part,
    pub error: anyhow::Error,
}

/// Everything one started source says at one instant.
#[derive(Debug)]
pub struct SourceReading {
    pub source: &'static str,
    pub status: SourceStatus,
    /// Its cumulative records (in-kernel aggregation).
    pub records: Vec<Record>,
    pub holders: Vec<HolderRow>,
    /// Its loss counters, by its own names.
    pub lost: BTreeMap<String, u64>,
    pub programs: Vec<ProgStats>,
    /// The parts that could not be read (they are empty above).
    pub errors: Vec<ReadError>,
}

impl SourceReading {
    /// Whether the part was read.
    pub fn read(&self, part: Part) -> bool {
        !self.errors.iter().any(|e| e.part == part)
    }
}

/// Every source read once: what `report`, `trace`, `top` and `serve` show.
/// A source that fails to read is in it, with its [`ReadError`]s: never
/// skipped, never fatal here (each command says what a failed read means
/// to it: [`Reading::checked`]).
#[derive(Debug, Default)]
pub struct Reading {
    pub sources: Vec<SourceReading>,
    /// Sources that were chosen but did not start.
    pub unavailable: Vec<SourceStatus>,
}

/// Reads one source: records, holders, loss counters, program statistics
/// and status, in that order (a status may tell what reading found).
pub fn read_source(s: &dyn Source, sym: &mut Symbolizer) -> SourceReading {
    let source = s.name();
    let mut errors = Vec::new();
    let mut part = |part: Part, error: anyhow::Error| {
        errors.push(ReadError {
            source,
            part,
            error,
        })
    };
    let records = s.records(sym).unwrap_or_else(|e| {
        part(Part::Records, e);
        Vec::new()
    });
    let holders = s.holders().unwrap_or_else(|e| {
        part(Part::Holders, e);
        Vec::new()
    });
    let lost = s.lost().unwrap_or_else(|e| {
        part(Part::Lost, e);
        BTreeMap::new()
    });
    SourceReading {
        source,
        records,
        holders,
        lost,
        programs: s.prog_stats(),
        status: s.status(),
        errors,
    }
}

/// Reads every started source ([`read_source`]).
pub fn read(started: &Started, sym: &mut Symbolizer) -> Reading {
    Reading {
        sources: started
            .sources
            .iter()
            .map(|s| read_source(s.as_ref(), sym))
            .collect(),
        unavailable: started.failed.clone(),
    }
}

/// The name of a loss counter across sources: kernel-contention's keep
/// their names (JSON v1), other sources' are prefixed `source.`.
fn lost_name(source: &str, counter: String) -> String {
    if source == sources::contention::SOURCE {
        counter
    } else {
        format!("{source}.{counter}")
    }
}

/// Loss counters of every started source in one map ([`Reading::lost`]),
/// read alone.
pub fn read_lost(started: &Started) -> Result<BTreeMap<String, u64>> {
    let mut lost = BTreeMap::new();
    for s in &started.sources {
        for (k, v) in s.lost()? {
            *lost.entry(lost_name(s.name(), k)).or_insert(0) += v;
        }
    }
    Ok(lost)
}

impl Reading {
    /// The reading, or the first part that could not be read.
    pub fn checked(mut self) -> Result<Reading> {
        for s in &mut self.sources {
            if !s.errors.is_empty() {
                return Err(s.errors.remove(0).error);
            }
        }
        Ok(self)
    }

    /// Every source's records, taken out of the reading.
    pub fn take_records(&mut self) -> Vec<Record> {
        let mut all = Vec::new();
        for s in &mut self.sources {
            all.append(&mut s.records);
        }
        all
    }

    /// Every source's holders, most waited for first.
    pub fn holders(&self) -> Vec<HolderRow> {
        let mut holders: Vec<HolderRow> = self
            .sources
            .iter()
            .flat_map(|s| s.holders.iter().cloned())
            .collect();
        holders.sort_by_key(|h| std::cmp::Reverse(h.wait_ns));
        holders
    }

    /// Every source's status, the unavailable ones' last.
    pub fn statuses(&self) -> Vec<SourceStatus> {
        self.sources
            .iter()
            .map(|s| s.status.clone())
            .chain(self.unavailable.iter().cloned())
            .collect()
    }

    /// Loss counters of every source in one map: kernel-contention's keep
    /// their names (JSON v1), other sources' are prefixed `source.`.
    pub fn lost(&self) -> BTreeMap<String, u64> {
        let mut lost = BTreeMap::new();
        for s in &self.sources {
            for (k, v) in &s.lost {
                *lost.entry(lost_name(s.source, k.clone())).or_insert(0) += v;
            }
        }
        lost
    }

    /// Run statistics of every source's programs.
    pub fn programs(&self) -> Vec<ProgStats> {
        self.sources
            .iter()
            .flat_map(|s| s.programs.iter().cloned())
            .collect()
    }
}
