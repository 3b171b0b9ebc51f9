//! Root tests of the measuring window and of exits (issue 11, items 1-2):
//! every source stops counting at the same instant, `duration_ns` is the
//! real window, `trace` delivers nothing that ended after it, and lockscope
//! exits promptly whatever the number of targets.
//!
//! Ground truth: a poller thread (Python, `Event.wait(10 ms)` in a loop:
//! one timed-out futex wait per turn) that records when each wait ended;
//! the test knows the window lies between its own clock readings around
//! lockscope's run, so the count must be what some window of `duration_ns`
//! placed there would hold.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{EventLine, Report, Tracer, events, report, require_root, sleeper};

/// A Python process whose second thread waits `PERIOD_S` on an Event in a
/// loop until stdin closes, then prints when each wait ended.
struct Poller {
    child: Child,
    tid: u32,
}

const PERIOD_S: f64 = 0.01;

impl Poller {
    fn start() -> Poller {
        let script = format!(
            "import sys, threading, time\n\
             ev = threading.Event(); out = []\n\
             def poll():\n\
             \x20   print(threading.get_native_id(), flush=True)\n\
             \x20   while not ev.is_set():\n\
             \x20       threading.Event().wait({PERIOD_S}); out.append(time.monotonic_ns())\n\
             th = threading.Thread(target=poll); th.start()\n\
             sys.stdin.read(); ev.set(); th.join()\n\
             print(' '.join(map(str, out)), flush=True)\n"
        );
        let mut child = Command::new("python3")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("poller tid");
        let tid = line.trim().parse().expect("tid");
        Poller { child, tid }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the poller; returns the CLOCK_MONOTONIC end of each of its
    /// timed waits.
    fn finish(mut self) -> Vec<u64> {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().expect("stdout"), &mut rest)
            .expect("poller output");
        let _ = self.child.wait();
        rest.split_whitespace()
            .map(|s| s.parse().expect("timestamp"))
            .collect()
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The fewest and most of `ends` that any window of `d` ns placed inside
/// [`from`, `to`] can hold: lockscope's window lies somewhere in there.
fn window_bounds(ends: &[u64], from: u64, to: u64, d: u64) -> (usize, usize) {
    let last = to.saturating_sub(d).max(from);
    let mut xs = vec![from, last];
    for &e in ends {
        xs.push(e);
        xs.push(e.saturating_sub(d));
        xs.push(e.saturating_sub(d) + 1);
        xs.push(e + 1);
    }
    let counts = xs
        .into_iter()
        .filter(|x| (from..=last).contains(x))
        .map(|x| ends.iter().filter(|&&e| e >= x && e <= x + d).count());
    counts.fold((usize::MAX, 0), |(lo, hi), c| (lo.min(c), hi.max(c)))
}

/// Futex waits of thread `tid` in a report of at least 4.2 ms (log2 slot
/// 23 and up): the poller's timed waits, not short internal ones.
fn futex_waits(rep: &Report, tid: u32) -> u64 {
    rep.rows
        .iter()
        .filter(|r| r.source == "futex" && r.tid == Some(tid))
        .map(|r| r.wait_hist.iter().skip(23).sum::<u64>())
        .sum()
}

/// What [`over_poller`] measured.
struct PollerRun {
    /// lockscope's stdout
    out: String,
    /// from the "tracing" line to lockscope's exit
    wall: Duration,
    /// CLOCK_MONOTONIC before the start of lockscope and after its exit
    t_start: u64,
    t_end: u64,
    /// the poller's waiting thread, and the ends of its timed waits
    tid: u32,
    ends: Vec<u64>,
}

/// `lockscope CMD -p POLLER -d 1s --json EXTRA` over a [`Poller`], which
/// must exit 0. Needs root.
fn over_poller(cmd: &str, extra: &[&str]) -> PollerRun {
    require_root();
    let poller = Poller::start();
    let pid = poller.pid().to_string();
    let t_start = monotonic_ns();
    let mut args = vec![cmd, "-p", &pid, "-d", "1s", "--json"];
    args.extend_from_slice(extra);
    let tracer = Tracer::start(&args);
    let t_attached = Instant::now();
    let (code, out) = tracer.finish();
    let wall = t_attached.elapsed();
    let t_end = monotonic_ns();
    assert_eq!(code, 0, "{out}");
    let tid = poller.tid;
    let ends = poller.finish();
    PollerRun {
        out,
        wall,
        t_start,
        t_end,
        tid,
        ends,
    }
}

#[test]
fn every_source_stops_with_the_window() {
    // every source that can run here, the uprobe one included: its links
    // are the slowest to detach, so they used to keep futex counting
    let run = over_poller("report", &["--source", "all"]);
    let rep = report(&run.out);
    let window = rep.duration_ns;
    let waits = futex_waits(&rep, run.tid) as usize;
    let (lo, hi) = window_bounds(&run.ends, run.t_start, run.t_end, window);
    eprintln!(
        "[test] window {:.1} ms (wall since 'tracing' {:.1} ms), futex waits {waits} \
         (the poller's own turns: {lo}..={hi} in any such window of the run)",
        window as f64 / 1e6,
        run.wall.as_secs_f64() * 1e3,
    );
    assert!(
        window >= 1_000_000_000,
        "duration_ns {window} shorter than -d 1s"
    );
    assert!(
        u128::from(window) <= run.wall.as_nanos(),
        "duration_ns {window} longer than the run itself ({:?})",
        run.wall
    );
    assert!(
        waits + 2 >= lo && waits <= hi + 2,
        "{waits} futex waits in a window of {window} ns; the poller waited {lo}..={hi} times"
    );
}

#[test]
fn trace_delivers_nothing_after_the_window() {
    let run = over_poller("trace", &["--source", "futex", "--source", "user-locks"]);
    let period = PERIOD_S * 1e9;
    // the end line is the last line
    let (lines, end) = events(&run.out);
    assert_eq!(end.ty, "end");
    let window = end.duration_ns as f64;
    assert!(
        window >= 1e9 && window <= run.wall.as_nanos() as f64,
        "{window} vs {:?}",
        run.wall
    );
    let waits: Vec<&EventLine> = lines
        .iter()
        .filter(|l| l.ty == "wait" && l.source == "futex" && l.tid == run.tid)
        // the poller's timed waits; Python may add short internal ones
        .filter(|l| l.wait_ns as f64 >= period / 2.0)
        .collect();
    let n = waits.len();
    let (lo, hi) = window_bounds(&run.ends, run.t_start, run.t_end, window as u64);
    eprintln!("[test] {n} futex waits streamed; the poller waited {lo}..={hi} times");
    assert!(
        n + 2 >= lo && n <= hi + 2,
        "{n} waits in {window} ns; the poller waited {lo}..={hi} times"
    );
    // a wait that began before attach ends after it: spans are bounded by
    // the window plus one period
    let first = waits.iter().map(|w| w.begin_ns).min().unwrap_or(0);
    let last = waits.iter().map(|w| w.end_ns).max().unwrap_or(0);
    assert!(
        (last - first) as f64 <= window + period * 2.0,
        "events span {} ns, window {window} ns: first {:?} last {:?}",
        last - first,
        waits.first(),
        waits.last()
    );
}

/// `report -d 1s` with several targets exits promptly: the time from the
/// "tracing" line to the exit, minus the 1 s window.
fn exit_after_window(targets: usize) -> Duration {
    let (mut sleepers, pids): (Vec<Child>, Vec<String>) =
        (0..targets).map(|_| sleeper("600")).unzip();
    // every source: the most links to release
    let mut args = vec!["report", "-d", "1s", "--json", "--source", "all"];
    for p in &pids {
        args.push("-p");
        args.push(p);
    }
    let tracer = Tracer::start(&args);
    let t = Instant::now();
    let rep = tracer.finish_report();
    let wall = t.elapsed();
    for s in &mut sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
    let window = Duration::from_nanos(rep.duration_ns);
    let late = wall.saturating_sub(window);
    eprintln!("[test] {targets} targets: window {window:?}, exit {late:?} after it");
    late
}

#[test]
fn report_exits_promptly_with_two_and_four_targets() {
    require_root();
    for n in [2, 4] {
        let late = exit_after_window(n);
        // the goal is 500 ms (BENCHMARKS.md); detaching used to take
        // 4-17 s here, so 2 s separates the two without timing the machine
        assert!(
            late < Duration::from_secs(2),
            "{n} targets: exit {late:?} late"
        );
    }
}

#[test]
fn sigint_exits_promptly_and_a_second_one_at_once() {
    require_root();
    let (mut sleeper, pid) = sleeper("600");
    let tracer = Tracer::start(&["report", "-p", &pid, "--json", "--source", "all"]);
    let t = Instant::now();
    tracer.signal(libc::SIGINT);
    let rep = tracer.finish_report();
    let late = t.elapsed();
    eprintln!("[test] exit {late:?} after SIGINT");
    assert!(rep.duration_ns > 0);
    assert!(late < Duration::from_secs(2), "exit {late:?} after SIGINT");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    // a second Ctrl-C while the first is being handled: exit 130 at once
    let mut child = Command::new(common::bin())
        .args(["report", "-d", "30s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lockscope");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let _ = err.read_line(&mut line);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let st = child.wait().expect("wait");
    let _ = std::io::stderr().flush();
    assert!(
        st.code() == Some(130) || st.code() == Some(0),
        "two Ctrl-C: {st:?}"
    );
}
