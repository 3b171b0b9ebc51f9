//! `lockscope serve`: the sources stay attached and aggregate in the
//! kernel; their maps are read when someone asks (a scrape, the dashboard)
//! and once a second for the dashboard's charts. Prometheus metrics at
//! `/metrics`, a dashboard at `/`, its JSON at `/api/*`. Read-only: no
//! endpoint attaches, detaches or changes anything.
//!
//! Threads: the sources (libbpf skeletons, not `Send`) live on one
//! collector thread, which owns them from attach to detach. The HTTP side
//! is a single-threaded tokio runtime on the main thread; it asks the
//! collector for a snapshot over a channel and gets an `Arc` back.

pub mod http;
pub mod metrics;
pub mod snapshot;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};

use crate::cli::ServeArgs;
use crate::deadlock::Detector;
use crate::session::{Part, Stop, attach, detach_all, options, require_privileges};
use crate::sources::{Options, Started, Symbolizer, Targets};
use crate::status::usage;
use http::{CollectorRequest, Limits, Records};
use metrics::HttpStats;
use snapshot::{DeadlockBook, Folder, History, Point, SelfStats, Snapshot};

/// A request is answered from the last read when it is younger than this
/// (or than `--interval`, if shorter); otherwise the maps are read again
/// first. Reading a full map (16384 keys) and building a snapshot costs
/// tens of ms of CPU, so a scrape storm must not trigger one per scrape.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Rows in the dashboard's top tables.
const TOP: usize = 20;

/// Samples kept for the dashboard's charts (10 minutes at 1 s).
const HISTORY: usize = 600;

/// The collector spends at most 1/READ_SHARE of its time reading the maps:
/// on a busy host a read of full maps takes a second or more, and the
/// next chart sample (or a request's fresh read) then waits that many
/// times as long, rather than the collector reading back to back.
const READ_SHARE: u32 = 5;

pub fn run(a: ServeArgs) -> Result<i32> {
    let targets = a.targets.validate().map_err(usage)?;
    if a.max_series == 0 || a.max_processes == 0 || a.max_connections == 0 {
        return Err(usage(
            "--max-series, --max-processes and --max-connections must be at least 1",
        ));
    }
    require_privileges()?;
    // a client that hangs up must cost an EPIPE on its socket, not the
    // process (main() restores SIGPIPE's default for `trace | head`)
    // SAFETY: changing a signal disposition has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let opts = options(targets, &a.settings, false, 0)?;
    let listener = std::net::TcpListener::bind(a.listen)
        .map_err(|e| anyhow!("cannot listen on {}: {e}", a.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        eprintln!(
            "lockscope: warning: listening on {addr}, not loopback: anyone who can reach it \
             can read lock, process and cgroup names (read-only); firewall it or put a TLS \
             proxy in front"
        );
    }
    let stop = Stop::new(a.duration, &Targets::default())?;
    let wake = Wake::new()?;
    let (req_tx, req_rx) = channel::<CollectorRequest>();
    let (ready_tx, ready_rx) = channel::<Result<()>>();
    let quit = Arc::new(AtomicBool::new(false));
    let cfg = CollectorConfig {
        opts,
        chosen: a.settings.sources.clone(),
        interval: a.interval,
        max_series: a.max_series,
        per_process: a.per_process,
        max_processes: a.max_processes,
    };
    let q = quit.clone();
    let (done_tx, done_rx) = channel::<()>();
    let collector = std::thread::Builder::new()
        .name("ls-collector".into())
        .spawn(move || {
            collect(cfg, ready_tx, req_rx, q);
            let _ = done_tx.send(());
        })
        .context("start the collector thread")?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = collector.join();
            return Err(e);
        }
        Err(_) => {
            let _ = collector.join();
            return Err(anyhow!("the collector thread died while attaching"));
        }
    }
    eprintln!("lockscope: serving http://{addr}/ (metrics at /metrics; Ctrl-C to stop)");
    let limits = Limits {
        max_connections: a.max_connections,
        ..Limits::default()
    };
    let served = serve_until(listener, req_tx, limits, &stop, &wake);
    eprintln!("lockscope: stopping: detaching the sources");
    // the HTTP side is gone (so is every sender of requests): the collector
    // leaves its loop at once, or after the source it is reading
    quit.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    // bytes on the wake socket: one per signal; the first one stopped us
    // (unless -d did), a further one means "now"
    let stopping_signals = usize::from(stop.signalled());
    let mut seen = 0;
    loop {
        match done_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        // a second Ctrl-C or SIGTERM while detaching: leave now (the
        // kernel detaches what is left when the process exits)
        seen += wake.signals();
        if seen > stopping_signals {
            eprintln!(
                "lockscope: stopping at once ({} ms into the detach)",
                t0.elapsed().as_millis()
            );
            return Ok(if stop.terminated.load(Ordering::Relaxed) {
                143
            } else {
                130
            });
        }
    }
    let _ = collector.join();
    served?;
    Ok(0)
}

/// A socket that Ctrl-C and SIGTERM write a byte to, so that the async
/// side wakes at the signal (not at its next look at [`Stop`]'s flags) and
/// a second signal can be told from the first.
struct Wake {
    rx: std::os::unix::net::UnixStream,
}

impl Wake {
    fn new() -> Result<Wake> {
        let (rx, tx) = std::os::unix::net::UnixStream::pair().context("signal socket")?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::low_level::pipe::register(sig, tx.try_clone()?)
                .context("install the signal wake-up")?;
        }
        Ok(Wake { rx })
    }

    /// Signals received since the last call.
    fn signals(&self) -> usize {
        use std::io::Read;
        let mut n = 0;
        let mut buf = [0u8; 16];
        while let Ok(k) = (&self.rx).read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    }
}

fn serve_until(
    listener: std::net::TcpListener,
    req_tx: std::sync::mpsc::Sender<CollectorRequest>,
    limits: Limits,
    stop: &Stop,
    wake: &Wake,
) -> Result<()> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("start the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let woken = tokio::net::UnixStream::from_std(wake.rx.try_clone()?)?;
        let stopped = async {
            // a signal wakes this at once; -d by its own timer
            while !stop.should_stop() {
                let sleep = std::pin::pin!(tokio::time::sleep(stop.tick(Duration::from_secs(1))));
                let readable = std::pin::pin!(woken.readable());
                let _ = http::first_of(readable, sleep).await;
            }
        };
        http::serve(
            listener,
            req_tx,
            Arc::new(HttpStats::default()),
            limits,
            stopped,
        )
        .await;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}

struct CollectorConfig {
    opts: Options,
    chosen: Vec<String>,
    interval: Duration,
    max_series: usize,
    per_process: bool,
    max_processes: usize,
}

/// The collector thread: attaches, then answers snapshot requests and
/// samples once per interval, until told to quit or nobody can ask.
fn collect(
    cfg: CollectorConfig,
    ready: std::sync::mpsc::Sender<Result<()>>,
    requests: Receiver<CollectorRequest>,
    quit: Arc<AtomicBool>,
) {
    let started = match attach(&cfg.opts, &cfg.chosen) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut c = Collector::new(started, &cfg, quit.clone());
    c.refresh(true);
    if ready.send(Ok(())).is_err() {
        detach_all(&c.started);
        return;
    }
    let mut next_tick = Instant::now() + c.pace(cfg.interval);
    while !quit.load(Ordering::Relaxed) {
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match requests.recv_timeout(wait) {
            Ok(CollectorRequest::Records(req)) => {
                let _ = req.send(Arc::new(c.records()));
            }
            Ok(CollectorRequest::Snapshot(req)) => {
                if c.last_read.elapsed() > c.pace(MAX_AGE.min(cfg.interval)) {
                    c.refresh(false);
                }
                let _ = req.send(c.current.clone());
                // everyone who asked meanwhile gets the same snapshot
                while let Ok(r) = requests.try_recv() {
                    match r {
                        CollectorRequest::Snapshot(r) => {
                            let _ = r.send(c.current.clone());
                        }
                        CollectorRequest::Records(r) => {
                            let _ = r.send(Arc::new(c.records()));
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // at most every 100 ms (the wait above); the detector scans every
        // deadlock::SCAN_EVERY
        c.watch_deadlocks();
        let now = Instant::now();
        if now >= next_tick && !quit.load(Ordering::Relaxed) {
            c.refresh(true);
            next_tick += c.pace(cfg.interval);
            if next_tick < now {
                next_tick = now + c.pace(cfg.interval);
            }
        }
    }
    detach_all(&c.started);
}

struct Collector {
    started: Started,
    sym: Symbolizer,
    folder: Folder,
    history: Arc<History>,
    targets: String,
    start: Instant,
    last_read: Instant,
    current: Arc<Snapshot>,
    /// Reads made and failed (the time is the last snapshot's).
    collect: snapshot::CollectStats,
    /// Of the last snapshot made (new data or a new error count).
    seq: u64,
    names: BTreeMap<u32, Option<String>>,
    /// How long the last read took.
    read_cost: Duration,
    quit: Arc<AtomicBool>,
    /// Live deadlocks of the target processes (`-p`, `-t`), as `report`
    /// watches them; a deadlock found is printed on stderr at once.
    detector: Detector,
    deadlocks: DeadlockBook,
    /// The book's view, as snapshots carry it (copied when it changes).
    deadlocks_view: Arc<snapshot::Deadlocks>,
}

impl Collector {
    fn new(started: Started, cfg: &CollectorConfig, quit: Arc<AtomicBool>) -> Collector {
        let detector = Detector::for_targets(&cfg.opts.targets);
        let deadlocks = DeadlockBook::new(detector.pids(), cfg.max_processes);
        let names: Vec<String> = started
            .sources
            .iter()
            .map(|s| s.name().to_string())
            .collect();
        Collector {
            started,
            sym: Symbolizer::new(),
            folder: Folder::new(cfg.max_series, cfg.per_process, cfg.max_processes),
            history: Arc::new(History::new(HISTORY, names)),
            targets: cfg.opts.targets.describe(),
            start: Instant::now(),
            last_read: Instant::now(),
            current: Arc::new(Snapshot::default()),
            collect: snapshot::CollectStats::default(),
            seq: 0,
            names: BTreeMap::new(),
            read_cost: Duration::ZERO,
            quit,
            deadlocks_view: Arc::new(deadlocks.view().clone()),
            detector,
            deadlocks,
        }
    }

    /// Scans the target processes when a scan is due; a change (a new
    /// deadlock, one that is over) makes a new snapshot at once, with the
    /// same lock data.
    fn watch_deadlocks(&mut self) {
        if self.detector.pids().is_empty() {
            return;
        }
        self.detector.tick();
        let found = self.detector.take();
        let det = &self.detector;
        if !self.deadlocks.update(found, |d| det.is_live(d)) {
            return;
        }
        self.deadlocks_view = Arc::new(self.deadlocks.view().clone());
        self.seq += 1;
        let mut s = (*self.current).clone();
        s.seq = self.seq;
        s.deadlocks = self.deadlocks_view.clone();
        self.current = Arc::new(s);
    }

    /// Every source read now, records whole, for a profile: as `report`
    /// reads them (a source that fails to read is left out, and its
    /// status says so).
    fn records(&mut self) -> Records {
        let mut reading = crate::session::read(&self.started, &mut self.sym);
        let records = reading.take_records();
        let since_start = self.start.elapsed();
        let report = crate::output::Report {
            version: crate::output::JSON_VERSION,
            duration_ns: since_start.as_nanos() as u64,
            targets: self.targets.clone(),
            by: crate::output::by_name(crate::model::GroupBy::Lock),
            interval: None,
            sources: reading.statuses(),
            lost: reading.lost(),
            bpf_programs: {
                let mut p = reading.programs();
                p.extend(self.detector.programs());
                p
            },
            rows: crate::model::group(&records, crate::model::GroupBy::Lock),
            holders: Vec::new(),
            deadlocks: Vec::new(),
        };
        Records {
            at: Instant::now(),
            records,
            report,
        }
    }

    /// `period`, stretched so that reads take at most 1/READ_SHARE of the
    /// time.
    fn pace(&self, period: Duration) -> Duration {
        period.max(self.read_cost * READ_SHARE)
    }

    /// Reads every source; `tick` also appends a chart sample. A source
    /// that fails to read keeps serving the previous snapshot.
    fn refresh(&mut self, tick: bool) {
        let t0 = Instant::now();
        self.seq += 1;
        match self.read() {
            Ok(mut snap) => {
                self.collect.collections += 1;
                self.collect.collect_ns = t0.elapsed().as_nanos() as u64;
                snap.seq = self.seq;
                snap.collect = self.collect;
                if tick {
                    let points = snap
                        .sources
                        .iter()
                        .map(|t| Point {
                            waits: t.waits,
                            wait_ns: t.wait_ns,
                            holds: t.holds,
                            hold_ns: t.hold_ns,
                            lost: t.lost.values().sum(),
                        })
                        .collect();
                    Arc::make_mut(&mut self.history).push(snap.unix_ms, points);
                }
                snap.history = self.history.clone();
                self.current = Arc::new(snap);
            }
            Err(_) if self.quit.load(Ordering::Relaxed) => {}
            Err(e) => {
                if self.collect.collect_errors == 0 {
                    eprintln!("lockscope: reading the in-kernel maps failed: {e:#}");
                }
                self.collect.collect_errors += 1;
                let mut s = (*self.current).clone();
                s.collect.collect_errors = self.collect.collect_errors;
                s.seq = self.seq;
                self.current = Arc::new(s);
            }
        }
        self.last_read = Instant::now();
        self.read_cost = t0.elapsed();
        // a read of a full map allocates tens of MB for a moment: give the
        // freed pages back now rather than keep them resident
        // SAFETY: malloc_trim only releases free heap memory; no pointer
        // is involved.
        unsafe { libc::malloc_trim(0) };
    }

    fn read(&mut self) -> Result<Snapshot> {
        // source by source: only one source's records are held at a time
        // (a full map is 16384 records of ~1 KiB), each folded into the
        // bounded series, totals and top tables before the next is read
        let mut folded = snapshot::Folded::default();
        let mut sources = Vec::new();
        let mut top_locks = Vec::new();
        let mut procs = snapshot::ProcessTops::default();
        for s in &self.started.sources {
            if self.quit.load(Ordering::Relaxed) {
                return Err(anyhow!("stopping"));
            }
            // a part that could not be read fails the whole collection:
            // the previous snapshot stays, and the failure is counted
            let mut reading = crate::session::read_source(s.as_ref(), &mut self.sym);
            // (serve shows no holders: theirs is no failure here)
            let failed = reading.errors.drain(..).find(|e| e.part != Part::Holders);
            if let Some(e) = failed {
                return Err(e.error);
            }
            sources.push(snapshot::source_totals(&reading));
            let records = std::mem::take(&mut reading.records);
            let names = &mut self.names;
            self.folder.fold_into(
                &records,
                |pid| {
                    names
                        .entry(pid)
                        .or_insert_with(|| {
                            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                                .ok()
                                .map(|c| c.trim_end().to_string())
                        })
                        .clone()
                },
                &mut folded,
            );
            // only processes that got a label are ever asked for: bounded
            procs.add(&records);
            // last: takes the records (no copy of a full map's worth)
            top_locks.extend(snapshot::top_locks(records, TOP));
        }
        sources.extend(
            self.started
                .failed
                .iter()
                .cloned()
                .map(snapshot::SourceTotals::new),
        );
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Ok(Snapshot {
            seq: 0,
            unix_ms,
            uptime_s: self.start.elapsed().as_secs_f64(),
            targets: self.targets.clone(),
            per_process: self.folder.per_process,
            max_series: self.folder.max_series,
            sources,
            series: folded.series,
            folds: folded.counts,
            self_stats: SelfStats::read(),
            top_locks: snapshot::merge_top_locks(top_locks, TOP),
            top_processes: procs.rows(TOP),
            collect: snapshot::CollectStats::default(),
            history: Arc::new(History::default()),
            deadlocks: self.deadlocks_view.clone(),
        })
    }
}
