//! Command-line interface (clap). Parsing and validation only; the work is
//! in `app.rs`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::model::GroupBy;
use crate::sources::CallerMode;
use crate::status::usage;
use crate::units::parse_duration;

const ABOUT: &str = "lockscope: which locks your threads wait for, for how long, and why.\n\
An eBPF lock profiler: kernel lock contention (every sleeping and spinning\n\
kernel lock), aggregated in the kernel, with callers, cgroups and losses.";

const EXAMPLES: &str = "\
Examples:
  lockscope demo                      run the built-in workload and report on it
  lockscope report -d 5s              system-wide, 5 seconds, by lock
  lockscope report -p 1234 --by caller   one process until Ctrl-C, by caller
  lockscope report -c postgres --by task --json
  lockscope trace -p 1234 --json      every wait as a JSON line
  lockscope run -- make -j8           profile a command and its children
  lockscope top -p 1234               live view of the hottest locks and threads
  lockscope doctor                    what this kernel allows, and what runs
  lockscope serve                     Prometheus metrics + live dashboard on :9477

Exit status: 0 ok, 1 runtime failure, 2 bad usage; `run` exits with the
command's status.

Needs root. Without it, per source (measured on Linux 6.18): CAP_BPF +
CAP_PERFMON run kernel-contention, mmap-lock and sched (tp_btf);
user-locks (uprobes) also needs CAP_SYS_ADMIN; futex and --backend
tracepoint need tracefs readable: CAP_DAC_READ_SEARCH, and CAP_SYS_ADMIN
to mount it when it is not mounted.";

#[derive(Parser, Debug)]
#[command(name = "lockscope", version, about = ABOUT, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace for a while, then print a summary table (sorted by total wait)
    #[command(
        after_help = "Examples:\n  lockscope report -d 5s\n  lockscope report -p 1234 -p 1240 --by task\n  lockscope report --cgroup /system.slice/postgresql.service --json\n\nStops after -d, on Ctrl-C / SIGTERM, or when every -p/-t target exits.\np99 is estimated from a log2 histogram (within its power-of-two bucket)."
    )]
    Report(ReportArgs),
    /// Print every contended wait as it completes (human lines or JSON Lines)
    #[command(
        after_help = "Examples:\n  lockscope trace -p 1234\n  lockscope trace -d 2s --json > waits.jsonl\n  lockscope trace -c myapp --summary\n\nHuman line: acq(s) rel(s) pid comm tid kind wait hold lock caller, one header for all;\ntimes in s since the start, - where not seen. Piped or with --wide every field is\nwhole; on a terminal only the caller is cut to its width.\nJSON Lines: {\"type\":\"wait\",...} per wait, then {\"type\":\"end\",...}\nwith the number of events and every loss counter."
    )]
    Trace(TraceArgs),
    /// Lock-order inversions: pairs of user locks that threads take in both
    /// orders, potential deadlocks (trace --lock-order)
    #[command(
        after_help = "Examples:\n  lockscope deadlocks -p 1234 -d 30s\n  lockscope deadlocks --json -- ./my-server --selftest\n\nTraces every pthread lock and unlock of the targets (user-locks: uprobes,\nmicroseconds per operation) and keeps, per thread, which locks were held\nwhile another was taken. A pair taken in both orders is printed at the end\nwith the thread and the call sites of each order. Deadlocks that do happen\nare reported live by `report` and `run` (on stderr and in the JSON)."
    )]
    Deadlocks(TraceArgs),
    /// Run a command, profile it and its children, report when it exits
    #[command(
        after_help = "Examples:\n  lockscope run -- ./my-db --bench\n  lockscope run --by caller --json -- make -j4\n\nExits with the command's exit status (128+N if killed by signal N)."
    )]
    Run(RunArgs),
    /// Run the built-in contention workload and report on it
    Demo(DemoArgs),
    /// Probe what this kernel allows and print which sources will run
    Doctor(DoctorArgs),
    /// Built-in workload with known lock operations (used by demo and tests)
    Workload(WorkloadArgs),
    /// Live view: the hottest locks and threads, refreshed every second
    #[command(
        after_help = "Examples:\n  lockscope top\n  lockscope top -p 1234 --by caller\n  lockscope top -c postgres -i 2s\n\nKeys: q quit, Up/Down select, Enter detail, s/S sort column, r reverse,\n/ filter (caller, lock or comm), v view (lock, caller, task, cgroup).\nColumns marked \u{394} cover the last interval, the others all time since start."
    )]
    Top(TopArgs),
    /// Stay attached: Prometheus metrics at /metrics, a live dashboard at /
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(
        after_help = "Examples:\n  lockscope completions bash > /usr/share/bash-completion/completions/lockscope\n  lockscope completions zsh > /usr/local/share/zsh/site-functions/_lockscope"
    )]
    Completions(CompletionsArgs),
    /// Print the man page (roff), generated from this command line; with
    /// --dir, write lockscope.1 and one lockscope-COMMAND.1 per command there
    #[command(
        after_help = "Examples:\n  lockscope manpage | man -l -\n  lockscope manpage --dir /usr/local/share/man/man1"
    )]
    Manpage(ManpageArgs),
}

#[derive(Args, Debug)]
pub struct ManpageArgs {
    /// Write every page into this directory instead of the main one to
    /// stdout
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `lockscope workload ...`: its arguments go unread to the
/// `lockscope-workload` binary beside lockscope, which runs the workloads
/// (they are not part of lockscope) and prints its own help.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct WorkloadArgs {
    /// The workloads and their options (`lockscope workload --help`)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<std::ffi::OsString>,
}

/// Most worker threads a built-in workload starts (`--threads`).
pub const MAX_WORKLOAD_THREADS: usize = 4096;

/// `--threads` of the built-in workloads (`demo`, `lockscope-workload`): 1 to
/// [`MAX_WORKLOAD_THREADS`].
pub fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of threads"))?;
    let max = MAX_WORKLOAD_THREADS;
    if n == 0 || n > max {
        return Err(format!("{n} threads: 1 to {max}"));
    }
    Ok(n)
}

/// Whether `threads` workers can start: at least one, at most
/// [`MAX_WORKLOAD_THREADS`], and within vm.max_map_count (each thread maps
/// its stack, its guard page, its signal stack and that one's guard: past
/// the limit a thread dies while starting, before any error can be
/// returned).
pub fn workload_threads_ok(threads: usize) -> anyhow::Result<()> {
    if threads == 0 {
        return Err(usage("--threads must be at least 1"));
    }
    if threads > MAX_WORKLOAD_THREADS {
        return Err(usage(format!(
            "--threads {threads}: at most {MAX_WORKLOAD_THREADS} worker threads"
        )));
    }
    let maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    if let Some(max) = maps
        && threads.saturating_mul(4).saturating_add(1024) > max
    {
        return Err(usage(format!(
            "--threads {threads}: each thread needs 4 memory maps and vm.max_map_count is {max}"
        )));
    }
    Ok(())
}

impl Command {
    /// Whether the command loads BPF (and so may need tracefs).
    pub fn traces(&self) -> bool {
        !matches!(
            self,
            Command::Workload(_) | Command::Completions(_) | Command::Manpage(_)
        )
    }
}
const SERVE_HELP: &str = "\
Examples:
  lockscope serve                      system-wide, http://127.0.0.1:9477/
  lockscope serve --cgroup /system.slice/postgresql.service --per-process
  lockscope serve --listen 0.0.0.0:9477   every interface (warns: no auth)

Endpoints (GET only): / dashboard, /metrics (OpenMetrics), /api/summary,
/api/history, /healthz. Nothing attaches or detaches through HTTP.
Metrics are read from the in-kernel maps when scraped (at most 1 s old).
Label sets past --max-series fold into one series per source labelled
\"other\" (counted in lockscope_folded_total). Stops on Ctrl-C/SIGTERM or
after -d.";

/// Who to trace. Without any of these: the whole system.
#[derive(Args, Debug, Clone, Default)]
pub struct TargetArgs {
    /// Trace this process (all its threads); repeatable
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Trace only this thread; repeatable
    #[arg(short = 't', long = "tid", value_name = "TID")]
    pub tids: Vec<u32>,
    /// Trace threads whose name (comm, 15 chars max) is exactly this
    #[arg(short = 'c', long = "comm", value_name = "COMM")]
    pub comm: Option<String>,
    /// Trace tasks in this cgroup v2 (path, or relative to /sys/fs/cgroup) and below
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroup: Option<String>,
}

/// The backends a source can be forced to (`--backend`); the floor ones
/// (empty programs, for benchmarks) are accepted but not listed.
fn backend_parser() -> clap::builder::PossibleValuesParser {
    use clap::builder::PossibleValue;
    clap::builder::PossibleValuesParser::new([
        PossibleValue::new("tp_btf"),
        PossibleValue::new("tracepoint"),
        PossibleValue::new("fentry"),
        PossibleValue::new("kprobe"),
        PossibleValue::new("uprobe"),
        PossibleValue::new("tp_btf-floor").hide(true),
        PossibleValue::new("tp_btf-clock").hide(true),
        PossibleValue::new("uprobe-floor").hide(true),
        PossibleValue::new("uprobe-floor-pair").hide(true),
        PossibleValue::new("uprobe-floor-entry").hide(true),
    ])
}

/// Settings shared by every tracing command.
#[derive(Args, Debug, Clone)]
pub struct TraceSettings {
    /// When to take the kernel stack that names the caller: at the first wait
    /// of each lock/thread/kind (later waits inherit it), at every wait
    /// (exact, ~1.5 us more per wait), or never
    #[arg(long, value_enum, default_value_t = CallerMode::First)]
    pub caller: CallerMode,
    /// Capacity of the in-kernel aggregation map (distinct lock/caller/thread keys)
    #[arg(long, default_value_t = 16384, value_name = "N")]
    pub max_entries: u32,
    /// Force a backend instead of trying them in order of preference
    /// (tp_btf, tracepoint; fentry, kprobe; uprobe, where a source uses them)
    #[arg(long, value_name = "BACKEND", value_parser = backend_parser())]
    pub backend: Option<String>,
    /// Sources to run (repeatable or comma-separated; `lockscope doctor`
    /// lists them with what this kernel allows). Default: only what costs
    /// nothing on an uncontended path: kernel-contention [per contention];
    /// for -p/-t/run targets also futex [per context switch]: pthread mutex
    /// and rwlock contention with its releaser, condvar and other futex
    /// waits, seen from the scheduler (a task that sleeps in futex(2));
    /// --backend tracepoint uses the syscall tracepoints instead, which add
    /// about 50 ns to every syscall on the host while they run) and
    /// app-locks (USDT). Opt-in by name, as they run on paths every process takes:
    /// mmap-lock, kernel-mutex, kernel-rwsem, user-locks (uprobes on every
    /// pthread lock call: hold times) [per lock operation], sched,
    /// sched-picknext [per context switch]. `all` runs every one
    #[arg(long = "source", value_delimiter = ',', value_name = "NAME")]
    pub sources: Vec<String>,
    /// Take full kernel + user stacks of waits at least --stack-threshold
    /// long (and 1 in --stack-sample of the others); rows then list them
    #[arg(long)]
    pub stacks: bool,
    /// With --stacks: waits (with --hold-stacks, also holds) at least this
    /// long get their stacks
    #[arg(long, value_parser = parse_duration, default_value = "1ms", value_name = "DURATION")]
    pub stack_threshold: Duration,
    /// With --stacks: also 1 in N of the shorter waits (and holds) (0: none)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub stack_sample: u32,
    /// Also stacks of holds (user-locks, mmap-lock): the stack of every
    /// acquisition is taken, and holds at least --stack-threshold long (and
    /// 1 in --stack-sample of the others) are added to it; implies --stacks
    #[arg(long)]
    pub hold_stacks: bool,
    /// With --stacks: buckets of each source's stack map (bcc's
    /// --stack-storage-size). A stack whose bucket holds another is kept in
    /// a spill map of max(4096, N/4) buckets; one that collides there too
    /// is counted lost (`stack_failed`)
    #[arg(long, default_value_t = 16384, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub stack_storage_size: u32,
}

impl TraceSettings {
    /// The stack settings, when stacks were asked for (directly or by an
    /// output that needs them).
    pub fn stack_options(&self) -> Option<crate::sources::StackOptions> {
        (self.stacks || self.hold_stacks).then_some(crate::sources::StackOptions {
            threshold_ns: self.stack_threshold.as_nanos() as u64,
            sample: self.stack_sample,
            holds: self.hold_stacks,
            storage: self.stack_storage_size,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Write the report (table or JSON) to FILE instead of stdout, so a
    /// command's own output (`run`) never mixes with it; created before
    /// anything attaches
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// Group rows by
    #[arg(long, value_enum, default_value_t = GroupBy::Caller)]
    pub by: GroupBy,
    /// Print one JSON object (the documented contract) instead of a table
    #[arg(long)]
    pub json: bool,
    /// Rows to show in the table
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
    /// Order rows by this column, largest first
    #[arg(long, value_enum, default_value_t = crate::select::SortKey::Total)]
    pub sort: crate::select::SortKey,
    /// Only these locks: addresses (0xffff...) or parts of their names
    /// (`pipe:`, `mmap_lock`), comma-separated (perf's -L)
    #[arg(
        short = 'L',
        long = "lock-filter",
        value_delimiter = ',',
        value_name = "LOCK"
    )]
    pub lock_filter: Vec<String>,
    /// Only these kinds, comma-separated: a table label (rwsem:W), a JSON
    /// name (rwsem-write) or a family (rwsem, mutex, spinlock, pthread,
    /// futex) (perf's -Y)
    #[arg(
        short = 'Y',
        long = "type-filter",
        value_delimiter = ',',
        value_name = "KIND"
    )]
    pub type_filter: Vec<String>,
    /// Rows as fields separated by SEP instead of a table (`-x,` for CSV;
    /// numbers in ns, names whole, a `# ` header line) (perf's -x)
    #[arg(short = 'x', long = "field-separator", value_name = "SEP")]
    pub field_separator: Option<String>,
    /// Whole names at any terminal width (piped output always has them)
    #[arg(long)]
    pub wide: bool,
    /// Write a flame graph of wait time (SVG) here; implies --stacks
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<std::path::PathBuf>,
    /// Write folded stacks (for flamegraph.pl, inferno, speedscope) here;
    /// implies --stacks
    #[arg(long, value_name = "FILE")]
    pub folded: Option<std::path::PathBuf>,
    /// Write a flame graph of hold time (SVG) here: stacks of acquisitions
    /// weighted by the holds that followed (user-locks, mmap-lock);
    /// implies --hold-stacks
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph_hold: Option<std::path::PathBuf>,
    /// Write folded stacks of hold time here; implies --hold-stacks
    #[arg(long, value_name = "FILE")]
    pub folded_hold: Option<std::path::PathBuf>,
    /// Write the lock waits as a gzipped pprof profile here (Go's mutex
    /// profile types contentions/count and delay/nanoseconds, and holds
    /// where measured), for `go tool pprof`, Pyroscope, Parca; frames with
    /// --stacks, else the lock and its caller
    #[arg(long, value_name = "FILE.pb.gz")]
    pub pprof: Option<std::path::PathBuf>,
}

impl OutputArgs {
    /// Whether an output needs stacks.
    pub fn needs_stacks(&self) -> bool {
        self.flamegraph.is_some() || self.folded.is_some() || self.needs_hold_stacks()
    }

    /// Whether an output needs the stacks of holds.
    pub fn needs_hold_stacks(&self) -> bool {
        self.flamegraph_hold.is_some() || self.folded_hold.is_some()
    }
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// How long to trace: 500ms, 5s, 2m (default: until Ctrl-C or targets exit)
    #[arg(short = 'd', long = "duration", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Print a table (or a JSON line) every INTERVAL, each counting only
    /// what happened in it (like the -i of bcc's tools): 1s, 500ms.
    /// An interval's min/max are exact when they are new extremes, else
    /// bounded by its log2 buckets; holders and losses are totals
    #[arg(short = 'i', long = "interval", value_parser = parse_duration, value_name = "INTERVAL")]
    pub interval: Option<Duration>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub settings: TraceSettings,
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// How long to trace: 500ms, 5s, 2m (default: until Ctrl-C or targets exit)
    #[arg(short = 'd', long = "duration", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// JSON Lines instead of human lines
    #[arg(long)]
    pub json: bool,
    /// At the end, also print the in-kernel summary (as a table, or in the end line with --json)
    #[arg(long)]
    pub summary: bool,
    /// Whole callers at any terminal width (piped output always has them)
    #[arg(long)]
    pub wide: bool,
    /// Ring buffer size in MiB, per source (a power of two; lockscope maps
    /// each twice, so its RSS holds 2 x this per source). Drops are counted
    /// (ringbuf_dropped) and warned about at the end
    #[arg(long, default_value_t = 8, value_name = "MIB")]
    pub ringbuf_mb: u32,
    /// Write a timeline (Chrome trace-event JSON: open in ui.perfetto.dev or
    /// chrome://tracing) here instead of printing each operation
    #[arg(long, value_name = "FILE.json")]
    pub perfetto: Option<std::path::PathBuf>,
    /// Instead of each operation: the order in which each thread takes
    /// nested user locks (user-locks, every caller), and at the end every
    /// pair of locks taken in both orders, a potential deadlock whether or
    /// not it happened, as lockdep reports them (`lockscope deadlocks`)
    #[arg(long, conflicts_with = "perfetto")]
    pub lock_order: bool,
    #[command(flatten)]
    pub settings: TraceSettings,
    /// A command to start and trace with its children (instead of -p/-t/
    /// -c/--cgroup): tracing ends when it exits, and lockscope exits with
    /// its status
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Also write a timeline of every operation (Chrome trace-event JSON:
    /// open in ui.perfetto.dev) here, as `trace --perfetto` does
    #[arg(long, value_name = "FILE.json")]
    pub perfetto: Option<std::path::PathBuf>,
    /// With --perfetto: ring buffer size in MiB, per source (a power of
    /// two). Drops are counted (ringbuf_dropped) and warned about
    #[arg(long, default_value_t = 8, value_name = "MIB", requires = "perfetto")]
    pub ringbuf_mb: u32,
    #[command(flatten)]
    pub settings: TraceSettings,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Worker threads per workload
    #[arg(long, default_value_t = 4, value_parser = parse_threads)]
    pub threads: usize,
    /// Operations per thread
    #[arg(long, default_value_t = 20000)]
    pub ops: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Refresh interval: 500ms, 1s, 2s
    #[arg(short = 'i', long, value_parser = parse_duration, default_value = "1s", value_name = "DURATION")]
    pub interval: Duration,
    /// Rows at start (v cycles the views)
    #[arg(long, value_enum, default_value_t = GroupBy::Lock)]
    pub by: GroupBy,
    /// Batch mode for logs and pipes (as top -b): no screen, a table of
    /// each interval's waits every --interval (what `report -i` prints)
    #[arg(short = 'b', long)]
    pub batch: bool,
    /// With --batch: stop after this long (default: until Ctrl-C or the
    /// targets exit)
    #[arg(short = 'd', long = "duration", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub settings: TraceSettings,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print the probe results as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Address to listen on; anything but loopback is reachable by others
    #[arg(long, default_value = "127.0.0.1:9477", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Add pid and comm labels to lock series (capped by --max-processes)
    #[arg(long)]
    pub per_process: bool,
    /// Processes with their own labels; later ones are labelled pid="other"
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub max_processes: usize,
    /// Lock series exported; later label sets fold into "other"
    #[arg(long, default_value_t = 300, value_name = "N")]
    pub max_series: usize,
    /// Open HTTP connections at most; more are closed at once
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_connections: usize,
    /// How often the dashboard's charts are sampled
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "DURATION")]
    pub interval: Duration,
    /// Stop after this long (default: until Ctrl-C or SIGTERM)
    #[arg(short = 'd', long = "duration", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub settings: TraceSettings,
}

impl TargetArgs {
    /// Validates targets: every PID/TID must exist, the cgroup must be a
    /// cgroup v2 directory.
    pub fn validate(&self) -> Result<crate::sources::Targets, String> {
        for &p in &self.pids {
            if p == 0 || !std::path::Path::new(&format!("/proc/{p}")).exists() {
                return Err(format!("no process with PID {p}"));
            }
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) {
                let tgid = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Tgid:"))
                    .and_then(|v| v.trim().parse::<u32>().ok());
                if tgid.is_some_and(|t| t != p) {
                    return Err(format!(
                        "{p} is a thread of process {}, not a process: use -t {p} or -p {}",
                        tgid.unwrap_or(0),
                        tgid.unwrap_or(0)
                    ));
                }
            }
        }
        for &t in &self.tids {
            if t == 0 || !std::path::Path::new(&format!("/proc/{t}")).exists() {
                return Err(format!("no thread with TID {t}"));
            }
        }
        if let Some(c) = &self.comm
            && (c.is_empty() || c.len() > 15)
        {
            return Err(format!(
                "--comm '{c}': a task name is 1 to 15 bytes (the kernel truncates comm to 15)"
            ));
        }
        let cgroup: Option<PathBuf> = match &self.cgroup {
            Some(c) => Some(cgroup_v2_dir(c)?),
            None => None,
        };
        Ok(crate::sources::Targets {
            pids: self.pids.clone(),
            tids: self.tids.clone(),
            comm: self.comm.clone(),
            cgroup,
            // processes forked by a -p target are targets too
            follow_forks: !self.pids.is_empty(),
        })
    }
}

/// `--cgroup`: a directory of the cgroup v2 hierarchy. A cgroup v1
/// directory (or any other) is refused before anything loads: BPF names
/// tasks by their cgroup v2 id only.
fn cgroup_v2_dir(arg: &str) -> Result<PathBuf, String> {
    let dir = crate::cgroup::resolve_path(arg)?;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("--cgroup {arg}: a path without NUL bytes"))?;
    // SAFETY: statfs writes into a zeroed struct we own; c is a valid
    // NUL-terminated path.
    let fs_type = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut st) != 0 {
            return Err(format!(
                "--cgroup {arg}: {}",
                std::io::Error::last_os_error()
            ));
        }
        st.f_type as i64
    };
    if fs_type != CGROUP2_SUPER_MAGIC {
        let kind = if fs_type == 0x0027_e0eb {
            "a cgroup v1 directory"
        } else {
            "not a cgroup v2 directory"
        };
        return Err(format!(
            "--cgroup {}: {kind}; lockscope follows cgroup v2 only (mounted at {})",
            dir.display(),
            crate::cgroup::v2_root().display()
        ));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_report_options() {
        let c = Cli::try_parse_from([
            "lockscope",
            "report",
            "-d",
            "500ms",
            "-p",
            "1",
            "-p",
            "2",
            "--by",
            "caller",
            "--json",
        ])
        .expect("parses");
        let Command::Report(r) = c.command else {
            panic!("not report")
        };
        assert_eq!(r.duration, Some(Duration::from_millis(500)));
        assert_eq!(r.targets.pids, vec![1, 2]);
        assert_eq!(r.output.by, GroupBy::Caller);
        assert!(r.output.json);
    }

    #[test]
    fn bad_duration_is_a_usage_error() {
        let e = Cli::try_parse_from(["lockscope", "report", "-d", "5parsecs"]).expect_err("bad");
        assert!(e.to_string().contains("invalid duration"), "{e}");
    }

    #[test]
    fn run_takes_the_command_after_dashes() {
        let c = Cli::try_parse_from(["lockscope", "run", "--by", "task", "--", "ls", "-l"])
            .expect("parses");
        let Command::Run(r) = c.command else {
            panic!("not run")
        };
        assert_eq!(r.command, vec!["ls", "-l"]);
    }

    #[test]
    fn serve_listens_on_loopback_by_default() {
        let c = Cli::try_parse_from(["lockscope", "serve"]).expect("parses");
        let Command::Serve(s) = c.command else {
            panic!("not serve")
        };
        assert!(s.listen.ip().is_loopback(), "{}", s.listen);
        assert_eq!(s.listen.port(), 9477);
        assert!(!s.per_process);
        assert_eq!((s.max_series, s.max_processes), (300, 50));
        let e = Cli::try_parse_from(["lockscope", "serve", "--listen", "localhost"])
            .expect_err("not an address");
        assert!(e.to_string().contains("--listen"), "{e}");
    }

    #[test]
    fn missing_pid_is_reported_plainly() {
        let t = TargetArgs {
            pids: vec![999_999_999],
            ..Default::default()
        };
        assert_eq!(
            t.validate().expect_err("no such pid"),
            "no process with PID 999999999"
        );
    }
}
