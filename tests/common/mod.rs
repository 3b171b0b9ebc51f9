//! Helpers for tests that run the real binary (root tests load BPF).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

// the typed JSON of lockscope's reports and trace lines; not every test
// uses every one
#[allow(unused_imports)]
pub use lockscope::model::{HolderRow, LockKind, Row};
#[allow(unused_imports)]
pub use lockscope::output::{EndLine, EventLine, Report, SourceStatus, TraceLine};
use serde_json::Value;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lockscope")
}

/// The built-in workloads' own binary (`lockscope workload` runs it).
pub fn workload_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lockscope-workload")
}

pub fn lockscope(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run lockscope")
}

/// Fails the calling test at once when it does not run as root, with the
/// command that runs it as root. A failure, never a skip: CI runs as root
/// and runs every root test for real.
#[track_caller]
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root (it loads BPF programs) and runs as uid {euid}: \
         run it as root with `sudo -E env \"PATH=$PATH\" cargo test --test {}`, \
         or the whole suite as CI does with `scripts/setup.sh test`",
        env!("CARGO_CRATE_NAME")
    );
}

/// `lockscope run ARGS -- lockscope workload WORKLOAD --json`: a
/// built-in workload traced from its start to its end.
pub fn run_workload(args: &[&str], workload: &[&str]) -> Output {
    let mut a = vec!["run"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--", bin(), "workload"]);
    a.extend_from_slice(workload);
    a.push("--json");
    lockscope(&a)
}

/// Starts `cmd` with its stderr piped (`what` names it in a failure): the
/// child and the lines of its stderr.
fn spawn_with_stderr(cmd: &mut Command, what: &str) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect(what);
    let err = child.stderr.take().expect("stderr piped");
    (child, BufReader::new(err).lines())
}

/// Reads the piped stdout of `child` (`who`) to its end and waits for its
/// exit: (its exit status, its stdout).
fn stdout_to_exit(child: &mut Child, who: &str) -> (ExitStatus, String) {
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout piped")
        .read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("read {who} stdout: {e}"));
    let st = child.wait().unwrap_or_else(|e| panic!("wait {who}: {e}"));
    (st, out)
}

/// A started workload, held until its start delay ends.
pub struct Workload {
    pub child: Child,
}

impl Workload {
    /// `lockscope-workload KIND... --json --start-delay DELAY ...`
    pub fn start(args: &[&str], delay: &str) -> Workload {
        let child = Command::new(workload_bin())
            .args(args)
            .args(["--json", "--start-delay", delay])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start workload");
        Workload { child }
    }

    /// `lockscope-workload KIND... --json --wait-usr1 ...`: held until
    /// [`Workload::go`], once the handler is installed.
    pub fn start_paused(args: &[&str]) -> Workload {
        let (child, mut lines) = spawn_with_stderr(
            Command::new(workload_bin())
                .args(args)
                .args(["--json", "--wait-usr1"])
                .stdout(Stdio::piped()),
            "start workload",
        );
        match lines.next() {
            Some(Ok(l)) if l.contains("waiting for SIGUSR1") => {}
            other => panic!("workload did not get ready: {other:?}"),
        }
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Workload { child }
    }

    /// Lets a paused workload start.
    pub fn go(&self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGUSR1) };
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits and returns the workload's own JSON reports.
    pub fn finish(mut self) -> Vec<Value> {
        let (st, out) = stdout_to_exit(&mut self.child, "workload");
        assert!(st.success(), "workload failed: {st}");
        out.lines()
            .map(|l| serde_json::from_str(l).expect("workload JSON"))
            .collect()
    }
}

/// How long lockscope takes here to attach a trivial trace (the futex
/// source, two tracepoints, on this test process) and print "tracing":
/// measured once per test process, the first time a timeout needs it. The
/// timeouts of these tests derive from it, so they scale with the
/// machine's speed and load (the kernel matrix runs its kernels under
/// emulation, where everything is many times slower and slower still with
/// a busy host CPU). The measurement itself waits without a bound of its
/// own: it ends when lockscope prints the line or exits (a failure), and a
/// hung kernel is the harness's to catch (the VM's -t, CI's job timeout).
pub fn attach_unit() -> Duration {
    require_root();
    static UNIT: OnceLock<Duration> = OnceLock::new();
    *UNIT.get_or_init(|| {
        let me = std::process::id().to_string();
        let t0 = Instant::now();
        let (mut child, mut lines) = spawn_with_stderr(
            Command::new(bin())
                .args(["report", "--source", "futex", "-p", &me])
                .stdout(Stdio::null()),
            "start lockscope",
        );
        let unit = loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("lockscope: tracing") => break t0.elapsed(),
                Some(Ok(_)) => continue,
                other => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the calibration trace did not attach: {other:?}");
                }
            }
        };
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        let _ = child.wait();
        eprintln!("[test] a trivial trace attached in {} ms", unit.as_millis());
        unit
    })
}

/// `n` times the measured attach time, and never less than `floor` (what
/// the test needs on a fast machine).
pub fn scaled(n: u32, floor: Duration) -> Duration {
    (attach_unit() * n).max(floor)
}

/// How long to wait for a tracer to attach: a multiple of the measured
/// attach time (the kernel-mutex source attaches dozens of function
/// probes where the calibration attaches two tracepoints: 2x as long in the
/// 6.1 VM under load, 32 s against 16 s).
pub fn attach_timeout() -> Duration {
    scaled(20, Duration::from_secs(30))
}

/// A running lockscope whose stderr is watched for the "tracing" line.
pub struct Tracer {
    pub child: Child,
    pub stderr: Receiver<String>,
    /// how long it took to print "tracing"
    pub attached_in: Duration,
}

impl Tracer {
    pub fn start(args: &[&str]) -> Tracer {
        attach_unit();
        let t0 = Instant::now();
        let (child, lines) = spawn_with_stderr(
            Command::new(bin()).args(args).stdout(Stdio::piped()),
            "start lockscope",
        );
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("[lockscope] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let timeout = attach_timeout();
        let mut t = Tracer {
            child,
            stderr: rx,
            attached_in: Duration::ZERO,
        };
        t.wait_for("lockscope: tracing", timeout);
        t.attached_in = t0.elapsed();
        eprintln!(
            "[test] attached in {} ms (timeout {} s)",
            t.attached_in.as_millis(),
            timeout.as_secs()
        );
        t
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return,
                Ok(_) => continue,
                Err(e) => panic!("no '{needle}' from lockscope: {e}"),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit; returns (status code, stdout).
    pub fn finish(mut self) -> (i32, String) {
        let (st, out) = stdout_to_exit(&mut self.child, "lockscope");
        (st.code().unwrap_or(-1), out)
    }

    pub fn finish_json(self) -> Value {
        let (code, out) = self.finish();
        assert_eq!(code, 0, "lockscope failed; stdout: {out}");
        serde_json::from_str(out.trim()).expect("report JSON")
    }

    /// Waits for a successful exit; its `report --json`, typed.
    pub fn finish_report(self) -> Report {
        let (code, out) = self.finish();
        assert_eq!(code, 0, "lockscope failed; stdout: {out}");
        report(&out)
    }
}

/// BPF program and link ids held open by a process, from the fdinfo of its
/// file descriptors (`prog_id:` / `link_id:`).
pub fn bpf_objects_of(pid: u32) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return found;
    };
    for fd in fds.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        for line in info.lines() {
            for (key, kind) in [("prog_id:", "prog"), ("link_id:", "link")] {
                if let Some(v) = line.strip_prefix(key)
                    && let Ok(id) = v.trim().parse()
                {
                    found.push((kind.to_string(), id));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Whether a BPF object id still exists.
pub fn bpf_object_exists(kind: &str, id: u64) -> bool {
    Command::new("bpftool")
        .args([kind, "show", "id", &id.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn rows(report: &Value) -> &Vec<Value> {
    report["rows"].as_array().expect("rows array")
}

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// The sum of the numbers of the JSON array `w[field]` (a workload's
/// per-round times).
pub fn total_of(w: &Value, field: &str) -> u64 {
    w[field].as_array().expect(field).iter().map(u).sum()
}

/// The numbers of a JSON array.
pub fn nums(v: &Value) -> Vec<u64> {
    v.as_array().expect("array").iter().map(u).collect()
}

/// `lockscope report --cgroup /NAME <extra> --by cgroup --json -d 30s`,
/// stopped with SIGINT, over a workload that starts once the tracer is
/// attached, moved into a new cgroup v2 directory NAME (`prefix`-PID,
/// removed after): ("/NAME", the report, the workload's reports). Needs root.
pub fn report_in_new_cgroup(
    prefix: &str,
    workload: &[&str],
    extra: &[&str],
) -> (String, Value, Vec<Value>) {
    require_root();
    let root = lockscope::cgroup::v2_root();
    let name = format!("{prefix}-{}", std::process::id());
    let dir = root.join(&name);
    std::fs::create_dir(&dir).expect("create a cgroup v2 directory");
    let wl = Workload::start_paused(workload);
    std::fs::write(dir.join("cgroup.procs"), wl.pid().to_string())
        .expect("move workload into the cgroup");
    let path = format!("/{name}");
    let mut args = vec!["report", "--cgroup", &path];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--by", "cgroup", "--json", "-d", "30s"]);
    let tracer = Tracer::start(&args);
    wl.go();
    let done = wl.finish();
    tracer.signal(libc::SIGINT);
    let rep = tracer.finish_json();
    let _ = std::fs::remove_dir(&dir);
    (path, rep, done)
}

/// A paused workload (`workload`: its arguments) and `lockscope <args> -p
/// PID` on it; the workload goes (creates its threads) once the tracer is
/// attached. Needs root.
#[track_caller]
pub fn start_traced(workload: &[&str], args: &[&str]) -> (Workload, Tracer) {
    require_root();
    let wl = Workload::start_paused(workload);
    let pid = wl.pid().to_string();
    let mut a = args.to_vec();
    a.extend(["-p", &pid]);
    let tracer = Tracer::start(&a);
    wl.go();
    (wl, tracer)
}

/// `lockscope <cmd> --json <extra> -p PID` over a workload that starts
/// (creates its threads) only once the tracer is attached; returns (tracer
/// stdout, workload reports). Needs root.
#[track_caller]
pub fn traced(cmd: &str, workload: &[&str], extra: &[&str]) -> (String, Vec<Value>) {
    require_root();
    let mut args = vec![cmd, "--json"];
    args.extend_from_slice(extra);
    let (wl, tracer) = start_traced(workload, &args);
    let done = wl.finish();
    let (code, out) = tracer.finish();
    assert_eq!(code, 0, "lockscope failed: {out}");
    (out, done)
}

/// Invariants every row of every report must satisfy ([`check_row`] of
/// the row read as a [`Row`]).
pub fn check_row_invariants(r: &Value) {
    check_row(&serde_json::from_value(r.clone()).unwrap_or_else(|e| panic!("a row ({e}): {r}")));
}

/// Checks that `text` is well-formed XML as far as an SVG writer can get
/// it wrong: every element closed in order, attribute values quoted,
/// `&` only in the five predefined entities or character references, no
/// `<` inside text or attribute values. Returns the number of elements.
pub fn xml_well_formed(text: &str) -> Result<usize, String> {
    let mut open: Vec<String> = Vec::new();
    let mut elements = 0;
    let b = text.as_bytes();
    let mut i = 0;
    let check_text = |s: &str, at: usize| -> Result<(), String> {
        let mut rest = s;
        while let Some(p) = rest.find('&') {
            let after = &rest[p..];
            let ok = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#"]
                .iter()
                .any(|e| after.starts_with(e))
                && after.contains(';');
            if !ok {
                return Err(format!("bare '&' near byte {at}"));
            }
            rest = &after[1..];
        }
        Ok(())
    };
    while i < b.len() {
        if b[i] != b'<' {
            let end = text[i..].find('<').map_or(b.len(), |p| i + p);
            check_text(&text[i..end], i)?;
            i = end;
            continue;
        }
        let end = text[i..]
            .find('>')
            .map(|p| i + p)
            .ok_or_else(|| format!("unterminated tag at byte {i}"))?;
        let tag = &text[i + 1..end];
        if tag.starts_with('?') || tag.starts_with('!') {
            i = end + 1;
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            match open.pop() {
                Some(o) if o == name.trim() => {}
                other => return Err(format!("</{name}> closes {other:?} at byte {i}")),
            }
        } else {
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body.split_whitespace().next().unwrap_or("");
            if name.is_empty() || body.contains('<') {
                return Err(format!("bad tag at byte {i}: <{tag}>"));
            }
            // attributes: name="value" pairs, values without '<'
            let attrs = &body[name.len()..];
            if !attrs.matches('"').count().is_multiple_of(2) {
                return Err(format!("unbalanced quotes in <{tag}>"));
            }
            check_text(attrs, i)?;
            elements += 1;
            if !self_closing {
                open.push(name.to_string());
            }
        }
        i = end + 1;
    }
    match open.last() {
        None => Ok(elements),
        Some(o) => Err(format!("<{o}> never closed")),
    }
}

/// The frames of a stack sample (`kernel` or `user`), as strings.
pub fn frames<'a>(st: &'a Value, which: &str) -> Vec<&'a str> {
    st[which]
        .as_array()
        .unwrap_or_else(|| panic!("{which} frames: {st}"))
        .iter()
        .filter_map(|f| f.as_str())
        .collect()
}

/// The two JSON lines of a successful `run --json -- lockscope workload
/// ... --json`: the workload's own line (it exits first), then the report.
pub fn workload_and_report(out: &Output) -> (Value, Value) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let w = serde_json::from_str(lines.next().expect("workload line")).expect("workload JSON");
    let rep = serde_json::from_str(lines.next().expect("report line")).expect("report JSON");
    (w, rep)
}

/// A `report --json` document (compact or pretty), typed.
#[track_caller]
pub fn report(out: &str) -> Report {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("report JSON ({e}): {out}"))
}

/// The lines of `trace --json`, typed.
#[track_caller]
pub fn trace_lines(out: &str) -> Vec<TraceLine> {
    out.lines()
        .map(|l| TraceLine::parse(l).unwrap_or_else(|e| panic!("trace JSON line ({e}): {l}")))
        .collect()
}

/// The events of `trace --json` (every line but the end line).
#[track_caller]
pub fn trace_events(out: &str) -> Vec<EventLine> {
    trace_lines(out)
        .into_iter()
        .filter_map(|l| match l {
            TraceLine::Event(e) => Some(*e),
            TraceLine::End(_) => None,
        })
        .collect()
}

/// `lockscope trace --json --summary EXTRA -- lockscope workload --json
/// WORKLOAD`, as root: (the workload's own report line, the streamed
/// waits, the report of the end line).
pub fn trace_summary(extra: &[&str], workload: &[&str]) -> (Value, Vec<EventLine>, Report) {
    require_root();
    let out = Command::new(bin())
        .args(["trace", "--json", "--summary"])
        .args(extra)
        .arg("--")
        .args([bin(), "workload", "--json"])
        .args(workload)
        .output()
        .expect("trace");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut w, mut events, mut report) = (Value::Null, Vec::new(), None);
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(l).expect("JSON line");
        match v["type"].as_str() {
            Some("wait") => events.push(serde_json::from_value::<EventLine>(v).expect("event")),
            Some("end") => report = serde_json::from_value::<EndLine>(v).expect("end").report,
            Some(other) => panic!("unexpected line type {other}: {l}"),
            None => w = v,
        }
    }
    assert!(w.is_object(), "the workload's report line");
    (w, events, report.expect("an end line with a report"))
}

/// The lines of `trace --json`: its events, then its end line (which must
/// be the last line).
#[track_caller]
pub fn events(out: &str) -> (Vec<EventLine>, EndLine) {
    let mut evs = Vec::new();
    let mut end = None;
    for l in trace_lines(out) {
        assert!(end.is_none(), "a line after the end line: {out}");
        match l {
            TraceLine::Event(e) => evs.push(*e),
            TraceLine::End(e) => end = Some(*e),
        }
    }
    (evs, end.unwrap_or_else(|| panic!("no end line: {out}")))
}

/// The names of the sources that ran (`available`) in a report.
pub fn available_sources(rep: &Report) -> Vec<String> {
    rep.sources
        .iter()
        .filter(|s| s.available)
        .map(|s| s.name.clone())
        .collect()
}

/// The rows of a report on the lock at `lock` (its hex address).
pub fn rows_of<'a>(rep: &'a Report, lock: &str) -> Vec<&'a Row> {
    rep.rows
        .iter()
        .filter(|r| r.lock.as_deref() == Some(lock))
        .collect()
}

/// [`check_row_invariants`] of a typed row.
pub fn check_row(r: &Row) {
    let count = r.count;
    let w = &r.wait_ns;
    let hist: u64 = r.wait_hist.iter().sum();
    assert_eq!(hist, count, "histogram sum equals count: {r:?}");
    let untimed = r.failed + r.partial;
    let acquired = r.acquired;
    assert!(
        count > 0 || untimed > 0 || acquired.is_some_and(|a| a > 0),
        "{r:?}"
    );
    if let Some(a) = acquired {
        assert!(count <= a, "contended {count} of {a} acquisitions: {r:?}");
    }
    if count == 0 {
        return;
    }
    assert!(
        w.min <= w.p50 && w.p50 <= w.p99 && w.p99 <= w.max,
        "ordered quantiles: {r:?}"
    );
    assert!(
        w.total >= w.min * count && w.total <= w.max * count,
        "total within bounds: {r:?}"
    );
    assert!(r.aborted <= count);
}

/// [`workload_and_report`] with the report typed.
pub fn workload_and_typed_report(out: &Output) -> (Value, Report) {
    let (w, rep) = workload_and_report(out);
    (w, serde_json::from_value(rep).expect("report JSON"))
}

/// A workload process killed (SIGKILL) and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Killed {
    /// The workload `kind`, paused until a tracer is attached to it
    /// ([`Workload::start_paused`]; its SIGUSR1 then lets it go).
    pub fn paused(kind: &str) -> Killed {
        Killed(Workload::start_paused(&[kind]).child)
    }
}

/// The path of `name` in `PATH`; fails the test when it is not installed.
pub fn require_program(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{name}` is not installed: `scripts/setup.sh deps` installs it (Debian package)")
    })
}

/// A fresh (emptied) directory `<tmp>/lockscope-TAG-PID` for a test's files.
pub fn fresh_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lockscope-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The strings at `field` of the objects of the JSON array `v[list]`.
pub fn field_strs<'a>(v: &'a Value, list: &str, field: &str) -> Vec<&'a str> {
    v[list]
        .as_array()
        .expect(list)
        .iter()
        .filter_map(|x| x[field].as_str())
        .collect()
}

/// `sleep ARG` started: the child and its pid as an argument.
pub fn sleeper(arg: &str) -> (Child, String) {
    let child = Command::new("sleep").arg(arg).spawn().expect("sleep");
    let pid = child.id().to_string();
    (child, pid)
}

/// One node of `go tool pprof -top`: flat and cum, in the unit asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PprofNode {
    pub flat: f64,
    pub cum: f64,
}

/// A `-top` value: a number, optionally followed by `ns` (with -unit=ns);
/// `0` is written bare.
fn pprof_value(s: &str) -> f64 {
    s.trim_end_matches("ns")
        .parse()
        .unwrap_or_else(|_| panic!("a -top value: {s:?}"))
}

/// `go tool pprof -top [-unit=ns] -sample_index=INDEX ARGS FILE`, with
/// HOME, PPROF_TMPDIR and Go's caches in `dir` (pprof keeps fetched
/// profiles under $HOME/pprof); `unit_ns` for exact times: the text, and
/// every node by name.
pub fn pprof_top(
    dir: &Path,
    file: &Path,
    index: &str,
    unit_ns: bool,
    args: &[&str],
) -> (String, Vec<(String, PprofNode)>) {
    let out = Command::new(require_program("go"))
        .args(["tool", "pprof", "-top"])
        .args(unit_ns.then_some("-unit=ns"))
        .arg(format!("-sample_index={index}"))
        .args(args)
        .arg(file)
        .env("HOME", dir)
        .env("PPROF_TMPDIR", dir)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .output()
        .expect(
            "run `go tool pprof` (Debian package golang-go; scripts/setup.sh test installs it)",
        );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "go tool pprof failed: {err}\n{text}");
    eprintln!("[test] go tool pprof -top -sample_index={index} {args:?}:\n{text}{err}");
    let mut nodes = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() == Some(&"flat") {
            in_table = true;
            continue;
        }
        if !in_table || cols.len() < 6 {
            continue;
        }
        // flat flat% sum% cum cum% name (a name may hold spaces)
        let name = cols[5..].join(" ");
        nodes.push((
            name,
            PprofNode {
                flat: pprof_value(cols[0]),
                cum: pprof_value(cols[3]),
            },
        ));
    }
    (text, nodes)
}

/// A [`fresh_dir`] for a flame graph's files: (the directory, its
/// `STEM.svg`, its `STEM.folded`).
pub fn flame_files(tag: &str, stem: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = fresh_dir(tag);
    let svg = dir.join(format!("{stem}.svg"));
    let folded = dir.join(format!("{stem}.folded"));
    (dir, svg, folded)
}

/// [`traced`] `report` over `pipe-hold --rounds ROUNDS --hold HOLD`: a
/// waiter that blocks on one pipe mutex once a round, for HOLD.
#[track_caller]
pub fn report_pipe_hold(rounds: &str, hold: &str, extra: &[&str]) -> (String, Vec<Value>) {
    traced(
        "report",
        &["pipe-hold", "--rounds", rounds, "--hold", hold],
        extra,
    )
}
