//! A tracing session: what `report`, `trace`, `run`, `top` and `serve` share
//! around the sources. Privileges, the sources' options, attaching the
//! chosen sources, opening and closing their window at one instant, when to
//! stop, and detaching.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cli::TraceSettings;
use crate::sources::{self, Options, Started, Targets};
use crate::status::usage;

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
    watch: Vec<u32>,
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
        let mut watch = targets.pids.clone();
        watch.extend(&targets.tids);
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

    pub fn targets_gone(&self) -> bool {
        !self.watch.is_empty()
            && self
                .watch
                .iter()
                .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists() || is_zombie(*p))
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
