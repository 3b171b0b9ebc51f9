//! app-locks against a real PostgreSQL (issue 16): Debian's server
//! (scripts/setup.sh installs it), a cluster initdb'd in a temporary
//! directory, listening on a Unix socket only, stopped at the end (a Drop
//! guard, also when a test fails). Root; CI runs them as root.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One PostgreSQL test at a time: each runs its own server, and pgbench's
/// load would stretch the timed statements of another test.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

use common::*;
use serde_json::Value;

/// The newest installed server's bin directory.
fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed (scripts/setup.sh test)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL server binary")
}

/// A cluster in a temporary directory, stopped and removed on drop; one
/// at a time (it holds [`serial`] until then).
struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// Needs root.
    fn start(name: &str) -> Cluster {
        let c = Cluster::init(name);
        let data = c.data();
        let log = c.dir.join("log");
        c.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-o",
                &c.server_opts(),
                "-l",
                log.to_str().expect("path"),
                "-w",
                "start",
            ],
        );
        c
    }

    /// A cluster initdb'd, not started. Needs root.
    fn init(name: &str) -> Cluster {
        require_root();
        let _serial = serial();
        let bin = pg_bin();
        let dir = fresh_dir(&format!("pg-{name}"));
        let st = Command::new("chown")
            .args(["postgres:postgres", dir.to_str().expect("utf-8 path")])
            .status()
            .expect("chown");
        assert!(st.success());
        let c = Cluster { dir, bin, _serial };
        c.as_postgres("initdb", &["-D", &c.data(), "-A", "trust"]);
        c
    }

    /// The server's options: a Unix socket in the cluster's directory only.
    fn server_opts(&self) -> String {
        format!("-k {} -c listen_addresses=''", self.dir.display())
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> Output {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `pgbench -h DIR ARGS postgres` as the postgres user.
    fn pgbench(&self, args: &[&str]) -> Output {
        let dir = self.dir.to_str().expect("path");
        let mut a = vec!["-h", dir];
        a.extend_from_slice(args);
        a.push("postgres");
        self.as_postgres("pgbench", &a)
    }

    /// `lockscope CMD -p POSTMASTER REST`, attached.
    fn tracer(&self, cmd: &str, rest: &[&str]) -> Tracer {
        let pm = self.postmaster().to_string();
        let mut a = vec![cmd, "-p", &pm];
        a.extend_from_slice(rest);
        Tracer::start(&a)
    }

    fn postmaster(&self) -> u32 {
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).expect("pid file");
        pid.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("postmaster pid")
    }

    fn psql_cmd(&self) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(self.bin.join("psql"))
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=0", "-h"])
            .arg(&self.dir)
            .args(["-d", "postgres"]);
        c
    }

    /// Runs `sql` (psql -c), returns stdout.
    fn sql(&self, sql: &str) -> String {
        let out = self.psql_cmd().args(["-c", sql]).output().expect("psql");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A session fed statements on its stdin.
    fn session(&self) -> Session {
        let child = self
            .psql_cmd()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql session");
        Session { child }
    }

    /// Polls `query` until it prints `want` (a condition the test makes,
    /// not a time): the timeout only ends a test that would hang.
    fn wait_until(&self, query: &str, want: &str) {
        let end = Instant::now() + attach_timeout();
        loop {
            if self.sql(query) == want {
                return;
            }
            assert!(Instant::now() < end, "never true: {query} = {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Session {
    child: Child,
}

impl Session {
    fn send(&mut self, sql: &str) {
        let stdin = self.child.stdin.as_mut().expect("session stdin");
        stdin.write_all(sql.as_bytes()).expect("write to psql");
        stdin.write_all(b"\n").expect("write to psql");
        stdin.flush().expect("flush psql");
    }

    /// Ends the session; its (stdout, stderr).
    fn finish(mut self) -> (String, String) {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().expect("psql exit");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// psql's `\timing` lines ("Time: 745.885 ms"), in ns.
fn timings(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.strip_prefix("Time: "))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|ms| ms.parse::<f64>().ok())
        .map(|ms| (ms * 1e6) as u64)
        .collect()
}

/// B's statement in a fresh session, timed by psql: the same statements
/// for the baseline and the measured run.
const B_SQL: &str = "SELECT count(*) FROM t";

fn b_session(c: &Cluster) -> Child {
    c.psql_cmd()
        .args(["-c", "\\timing on", "-c", B_SQL])
        .stdout(Stdio::piped())
        .spawn()
        .expect("psql B")
}

fn b_time(child: Child) -> u64 {
    let out = child.wait_with_output().expect("psql B exit");
    let text = String::from_utf8_lossy(&out.stdout);
    let t = timings(&text);
    assert_eq!(t.len(), 1, "one timed statement: {text}");
    t[0]
}

fn rows(rep: &Value) -> Vec<&Value> {
    rep["rows"].as_array().expect("rows").iter().collect()
}

fn app_locks_note(rep: &Value) -> String {
    rep["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["name"] == "app-locks")
        .and_then(|s| s["reason"].as_str())
        .expect("app-locks status")
        .to_string()
}

/// The numbers of the status note: what the probes delivered.
struct Delivered {
    starts: u64,
    dones: u64,
    /// Dones whose start was seen.
    paired: u64,
    points: u64,
    /// Open waits a point ended (the deadlock victim's).
    ended: u64,
}

fn delivered(note: &str) -> Delivered {
    let n: Vec<u64> = note
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    // "...postgresql/15/bin/postgres); probes delivered S wait starts, D
    // wait dones (P paired), Q points (E ended an open wait)": the last
    // five numbers
    let k = n.len();
    assert!(k >= 5, "{note}");
    Delivered {
        starts: n[k - 5],
        dones: n[k - 4],
        paired: n[k - 3],
        points: n[k - 2],
        ended: n[k - 1],
    }
}

fn assert_nothing_lost(rep: &Value) {
    for (k, v) in rep["lost"].as_object().expect("lost") {
        if k.starts_with("app-locks.") {
            assert_eq!(v.as_u64(), Some(0), "{k}: {rep}");
        }
    }
}

/// pgbench's simple-update load (`-c 4 -j 2 -T SECS -N`) under `tracer`,
/// then the tracer stopped (SIGINT): its report, which lost nothing.
fn under_pgbench(c: &Cluster, tracer: Tracer, secs: &str) -> Value {
    c.pgbench(&["-c", "4", "-j", "2", "-T", secs, "-N"]);
    tracer.signal(libc::SIGINT);
    let rep = tracer.finish_json();
    assert_nothing_lost(&rep);
    rep
}

/// Session A holds `LOCK TABLE t IN ACCESS EXCLUSIVE MODE`; session B's
/// SELECT waits for it. lockscope reports one heavyweight lock wait on t,
/// AccessShareLock, as long as B's statement took beyond the same
/// statement without contention (psql's \timing of each), within 2 ms of
/// the uncontended statement's range on this machine. B's statement can
/// be delayed by the scheduler after its wait (another task on its CPU):
/// then that bound alone fails, and the whole measurement is made once
/// more; a second failure fails the test.
#[test]
fn a_relation_lock_wait_is_one_row_as_long_as_the_waiter_measured() {
    let c = Cluster::start("lock");
    c.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)");
    let rel = c.sql("SELECT 't'::regclass::oid");
    let db = c.sql("SELECT oid FROM pg_database WHERE datname = current_database()");
    if let Err(first) = relation_wait_once(&c, &rel, &db) {
        eprintln!("[test] measured again: {first}");
        relation_wait_once(&c, &rel, &db).unwrap_or_else(|e| panic!("{e} (and before: {first})"));
    }
}

/// Session A takes `LOCK TABLE t IN ACCESS EXCLUSIVE MODE` (and keeps its
/// transaction open); session B's `SELECT count(*) FROM t` then waits for
/// it: (A, B), once PostgreSQL shows B waiting on the lock.
fn b_waits_for_a(c: &Cluster) -> (Session, Child) {
    let mut a = c.session();
    a.send("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;");
    c.wait_until(
        "SELECT count(*) FROM pg_locks WHERE relation = 't'::regclass \
         AND mode = 'AccessExclusiveLock' AND granted",
        "1",
    );
    let b = b_session(c);
    c.wait_until(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
         AND query = 'SELECT count(*) FROM t'",
        "1",
    );
    (a, b)
}

/// One measurement of [`a_relation_lock_wait_is_one_row_as_long_as_the_waiter_measured`]:
/// Err only when B's statement beyond lockscope's wait is outside the
/// uncontended statement's range by more than 2 ms.
fn relation_wait_once(c: &Cluster, rel: &str, db: &str) -> Result<(), String> {
    // the same statement, first in a fresh session, without contention
    let mut base: Vec<u64> = (0..9).map(|_| b_time(b_session(c))).collect();
    base.sort_unstable();
    let tracer = c.tracer(
        "report",
        &["--source", "app-locks", "--json", "--by", "lock"],
    );
    let (mut a, b) = b_waits_for_a(c);
    a.send("SELECT pg_sleep(0.2); COMMIT;");
    let measured = b_time(b);
    let (_, a_err) = a.finish();
    assert!(a_err.is_empty(), "session A: {a_err}");
    // and again after: the machine's load around B's statement, both sides
    base.extend((0..9).map(|_| b_time(b_session(c))));
    base.sort_unstable();
    tracer.signal(libc::SIGINT);
    let rep = tracer.finish_json();
    assert_nothing_lost(&rep);
    let prefix = format!("relation {db}/{rel} (");
    let on_t: Vec<&Value> = rows(&rep)
        .into_iter()
        .filter(|r| r["kind"] == "pg-lock")
        .filter(|r| {
            r["lock_name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    assert_eq!(on_t.len(), 1, "one row on t: {on_t:?}");
    let r = on_t[0];
    assert_eq!(r["count"], 1, "{r}");
    assert_eq!(
        r["lock_name"].as_str(),
        Some(format!("relation {db}/{rel} (AccessShareLock)").as_str())
    );
    let wait = u(&r["wait_ns"]["total"]);
    // where it went: B's backend slept in WaitLatch until A committed.
    // The split sums to the wait; the waiter slept; it was off CPU for all
    // but what the backend ran between the probes (at most B's slowest
    // uncontended statement, which runs the same code and more)
    let sp = &r["wait_split"];
    let (oncpu, runnable, asleep) = (u(&sp["oncpu"]), u(&sp["runnable"]), u(&sp["asleep"]));
    eprintln!("[test] split: on CPU {oncpu} ns, runnable {runnable} ns, asleep {asleep} ns");
    assert_eq!(
        oncpu + runnable + asleep,
        wait,
        "the split sums to the wait: {r}"
    );
    assert_eq!(r["slept"], 1, "the waiter slept: {r}");
    let slowest = base[base.len() - 1];
    assert!(
        oncpu <= slowest,
        "on CPU {oncpu} ns of a lock wait, more than B's slowest whole statement {slowest} ns"
    );
    // B's statement is its wait plus the work the same statement does
    // without contention: compared with the fastest uncontended run (the
    // work itself) and bounded by the slowest (the work as this machine's
    // load stretched it), 2 ms either way
    let (fastest, slowest) = (base[0], base[base.len() - 1]);
    let rest = measured.saturating_sub(wait);
    eprintln!(
        "[test] B measured {measured} ns; lockscope {wait} ns; the rest {rest} ns; \
         uncontended {base:?} ns; B minus the fastest minus lockscope: {} ns",
        measured.saturating_sub(fastest).abs_diff(wait)
    );
    assert!(
        wait <= measured,
        "the wait is inside B's statement: {wait} > {measured}"
    );
    if rest + 2_000_000 >= fastest && rest <= slowest + 2_000_000 {
        Ok(())
    } else {
        Err(format!(
            "B's statement beyond lockscope's wait ({rest} ns) is the uncontended statement \
             ({fastest}..{slowest} ns) within 2 ms"
        ))
    }
}

/// `lockscope run -- runuser -u postgres -- postgres ...`: the server is
/// not running when lockscope starts (the command is lockscope itself,
/// held before its exec, and runuser comes between), so app-locks finds
/// its probes as the targets exec postgres. A relation lock wait the test
/// makes while the server runs is one row on that relation, counted once;
/// the report is written when the server the test stops exits.
#[test]
fn run_finds_the_probes_of_a_server_it_starts() {
    let c = Cluster::init("run");
    let postgres = c.bin.join("postgres");
    let data = c.data();
    let sock = c.dir.display().to_string();
    let tracer = Tracer::start(&[
        "run",
        "--source",
        "app-locks",
        "--json",
        "--by",
        "lock",
        "--",
        "runuser",
        "-u",
        "postgres",
        "--",
        postgres.to_str().expect("path"),
        "-D",
        &data,
        "-k",
        &sock,
        "-c",
        "listen_addresses=",
    ]);
    // the server accepts connections (its socket appears once it listens)
    let end = Instant::now() + attach_timeout();
    while !c.dir.join(".s.PGSQL.5432").exists() {
        assert!(Instant::now() < end, "the server never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.wait_until("SELECT 1", "1");
    c.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let rel = c.sql("SELECT 't'::regclass::oid");
    let db = c.sql("SELECT oid FROM pg_database WHERE datname = current_database()");
    let (mut a, b) = b_waits_for_a(&c);
    a.send("COMMIT;");
    b_time(b);
    let (_, a_err) = a.finish();
    assert!(a_err.is_empty(), "session A: {a_err}");
    c.as_postgres("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    let rep = tracer.finish_json();
    assert_nothing_lost(&rep);
    let st = &rep["sources"][0];
    assert_eq!(st["name"], "app-locks", "{st}");
    assert!(
        st["reason"]
            .as_str()
            .is_some_and(|r| r.contains("PostgreSQL (") && r.contains("/postgres)")),
        "{st}"
    );
    let name = format!("relation {db}/{rel} (AccessShareLock)");
    let on_t: Vec<&Value> = rows(&rep)
        .into_iter()
        .filter(|r| r["lock_name"].as_str() == Some(name.as_str()))
        .collect();
    assert_eq!(on_t.len(), 1, "one row on t: {:?}", rows(&rep));
    assert_eq!(on_t[0]["count"], 1, "{}", on_t[0]);
}

/// Two sessions update two rows in opposite orders: PostgreSQL's
/// deadlock__found appears in the report and in the stream.
#[test]
fn a_deadlock_the_test_makes_is_reported_and_streamed() {
    let c = Cluster::start("deadlock");
    c.sql("CREATE TABLE d (id int PRIMARY KEY, v int); INSERT INTO d VALUES (1, 0), (2, 0)");
    let tracer = c.tracer("trace", &["--source", "app-locks", "--json"]);
    let mut s1 = c.session();
    let mut s2 = c.session();
    s1.send("BEGIN; UPDATE d SET v = v + 1 WHERE id = 1;");
    s2.send("BEGIN; UPDATE d SET v = v + 1 WHERE id = 2;");
    c.wait_until(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' \
         AND query LIKE 'UPDATE d %'",
        "2",
    );
    s1.send("UPDATE d SET v = v + 1 WHERE id = 2;");
    c.wait_until(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
         AND query LIKE 'UPDATE d %'",
        "1",
    );
    s2.send("UPDATE d SET v = v + 1 WHERE id = 1;");
    s1.send("COMMIT;");
    s2.send("COMMIT;");
    let (_, e1) = s1.finish();
    let (_, e2) = s2.finish();
    let errors = format!("{e1}{e2}");
    assert_eq!(
        errors.matches("deadlock detected").count(),
        1,
        "PostgreSQL broke one deadlock: {errors}"
    );
    tracer.signal(libc::SIGINT);
    let (code, out) = tracer.finish();
    assert_eq!(code, 0, "{out}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let deadlocks: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "pg-deadlock")
        .collect();
    assert_eq!(deadlocks.len(), 1, "one deadlock__found event: {out}");
    assert_eq!(deadlocks[0]["lock_name"], "deadlock found");
    assert_eq!(deadlocks[0]["source"], "app-locks");
    // each session waited on the other's transaction: the survivor until
    // the victim's rollback, the victim until it found the deadlock, where
    // its wait ends in an error without lock__wait__done (deadlock__found
    // ends it, as an aborted wait), at least deadlock_timeout after it began
    let tx_waits: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "pg-lock")
        .filter(|l| {
            l["lock_name"]
                .as_str()
                .is_some_and(|n| n.starts_with("transaction ") && n.ends_with("(ShareLock)"))
        })
        .collect();
    assert_eq!(tx_waits.len(), 2, "both sessions' waits: {out}");
    let (victim, survivor): (Vec<&Value>, Vec<&Value>) = tx_waits
        .iter()
        .partition(|l| l["pid"] == deadlocks[0]["pid"]);
    assert_eq!(
        (victim.len(), survivor.len()),
        (1, 1),
        "the victim found the deadlock, the survivor waited: {out}"
    );
    eprintln!(
        "[test] the victim waited {} ns, the survivor {} ns",
        victim[0]["wait_ns"], survivor[0]["wait_ns"]
    );
    assert_eq!(victim[0]["aborted"], true, "{out}");
    assert_eq!(survivor[0]["aborted"], false, "{out}");
    let timeout_ms: u64 = c
        .sql("SELECT setting FROM pg_settings WHERE name = 'deadlock_timeout'")
        .parse()
        .expect("deadlock_timeout in ms");
    assert!(
        u(&victim[0]["wait_ns"]) >= timeout_ms * 1_000_000,
        "the victim waited deadlock_timeout ({timeout_ms} ms) before its check: {out}"
    );
}

/// Under pgbench, LWLock rows carry tranche names, and their counts with
/// the other rows' sum to exactly the start/done pairs the probes
/// delivered (the source's own counters), nothing lost.
#[test]
fn pgbench_lwlock_rows_count_every_pair_the_probes_delivered() {
    let c = Cluster::start("pgbench");
    c.pgbench(&["-i", "-s", "1", "-q"]);
    let tracer = c.tracer(
        "report",
        &["--source", "app-locks", "--json", "--by", "lock"],
    );
    let rep = under_pgbench(&c, tracer, "5");
    let d = delivered(&app_locks_note(&rep));
    let rs = rows(&rep);
    let lw: Vec<&&Value> = rs
        .iter()
        .filter(|r| r["kind"].as_str().is_some_and(|k| k.starts_with("lwlock:")))
        .collect();
    assert!(!lw.is_empty(), "LWLock waits under pgbench: {rep}");
    for r in &lw {
        let name = r["lock_name"].as_str().expect("named");
        let tranche = name.strip_prefix("LWLock ").expect("LWLock <tranche>");
        assert!(!tranche.is_empty(), "{r}");
    }
    let total: u64 = rs.iter().map(|r| u(&r["count"])).sum();
    eprintln!(
        "[test] {} LWLock rows, {} starts, {} dones, {} paired, {} points, {} ended; \
         rows count {total}",
        lw.len(),
        d.starts,
        d.dones,
        d.paired,
        d.points,
        d.ended
    );
    assert_eq!(
        total,
        d.paired + d.points + d.ended,
        "every delivered pair (and wait a point ended) is counted once"
    );
    assert_eq!(d.dones, d.paired, "every done had its start");
    assert_eq!(
        d.starts,
        d.paired + d.ended,
        "no wait left open after pgbench ended"
    );
}

/// The number the futex source's status gives after `label` ("... N").
fn futex_count(rep: &Value, label: &str) -> u64 {
    let note = rep["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["name"] == "futex")
        .and_then(|s| s["reason"].as_str())
        .expect("futex status");
    let at = note
        .find(label)
        .unwrap_or_else(|| panic!("{label} in {note}"));
    note[at + label.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a number after {label} in {note}"))
}

/// One wait, one row: with the default sources (futex and app-locks for a
/// process), a backend's semaphore futex wait inside an LWLock wait is
/// that LWLock wait. The futex source skips it (its `covered` count) and
/// only app-locks reports it; user-locks is not loaded, so every skipped
/// futex wait was inside an application lock wait.
#[test]
fn default_sources_report_a_wait_inside_an_lwlock_wait_once() {
    let c = Cluster::start("onewait");
    c.pgbench(&["-i", "-s", "1", "-q"]);
    let tracer = c.tracer("report", &["--json", "--by", "lock"]);
    let rep = under_pgbench(&c, tracer, "3");
    let names: Vec<&str> = rep["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter(|s| s["available"] == true)
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(names.contains(&"futex"), "{names:?}");
    assert!(names.contains(&"app-locks"), "{names:?}");
    assert!(!names.contains(&"user-locks"), "{names:?}");
    let d = delivered(&app_locks_note(&rep));
    let rs = rows(&rep);
    for r in &rs {
        eprintln!(
            "[test] row {} {} {} count {}",
            r["source"], r["kind"], r["lock_name"], r["count"]
        );
    }
    let lw: Vec<&&Value> = rs
        .iter()
        .filter(|r| r["kind"].as_str().is_some_and(|k| k.starts_with("lwlock:")))
        .collect();
    assert!(!lw.is_empty(), "LWLock waits under pgbench: {rep}");
    let covered = futex_count(&rep, "inside traced lock calls ");
    eprintln!(
        "[test] {} LWLock rows, {} starts, {} dones, {} paired, {} points; futex waits \
         skipped inside them {covered}",
        lw.len(),
        d.starts,
        d.dones,
        d.paired,
        d.points
    );
    assert!(
        covered > 0,
        "the backends' semaphore waits inside LWLock waits are skipped: {rep}"
    );
    // the app-locks rows still count every delivered pair once
    let app_total: u64 = rs
        .iter()
        .filter(|r| r["source"] == "app-locks")
        .map(|r| u(&r["count"]))
        .sum();
    assert_eq!(app_total, d.paired + d.points + d.ended, "{rep}");
}
