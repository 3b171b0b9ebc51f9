//! Root test of `lockscope top`: the real binary in a real pseudo-terminal
//! (tmux), on the pipe-hold workload whose waits are known by construction
//! (the `ls-waiter` thread waits `--hold` on one pipe mutex every round).
//! The screen is read with `tmux capture-pane` and checked against the
//! workload's own report; keys are typed with `tmux send-keys`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A detached tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `cmd` in a new `w` x `h` pane.
    fn start(name: &str, cmd: &str, w: u16, h: u16) -> Tmux {
        let t = Tmux {
            socket: format!("lockscope-test-{name}-{}", std::process::id()),
        };
        let st = t
            .cmd()
            .args(["-u", "new-session", "-d", "-s", "t", "-x"])
            .arg(w.to_string())
            .arg("-y")
            .arg(h.to_string())
            .arg(cmd)
            .status()
            .expect("tmux is needed for this test: apt-get install tmux (scripts/setup.sh deps)");
        assert!(st.success(), "tmux new-session failed");
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn screen(&self) -> Vec<String> {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "t"])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    fn display(&self, fmt: &str) -> String {
        let out = self
            .cmd()
            .args(["display-message", "-p", "-t", "t", fmt])
            .output()
            .expect("display-message");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Types keys (tmux key names, or `-l` then literal text); then lets
    /// lockscope redraw. Escape is sent alone, so it is not read as Alt.
    fn keys(&self, keys: &[&str]) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .status()
            .expect("send-keys");
        assert!(st.success());
        std::thread::sleep(Duration::from_millis(400));
    }

    /// Presses q and waits for the shell's line after top: the screen
    /// then, as one text, checked for top's exit status 0.
    fn quit_top(&self) -> String {
        self.keys(&["q"]);
        let s = self.wait_for("top's exit", Duration::from_secs(10), |s| {
            s.iter().any(|l| l.starts_with("tty:"))
        });
        let text = s.join("\n");
        assert!(text.contains("top-exit=0"), "{text}");
        text
    }

    /// Waits until the screen satisfies `ok`; panics with the screen if not.
    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let end = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if Instant::now() > end {
                panic!("screen never showed {what}:\n{}", s.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // tmux leaves its socket file behind: remove it too
        let socket = self.display("#{socket_path}");
        let _ = self.cmd().arg("kill-server").status();
        if socket.contains(&self.socket) {
            let _ = std::fs::remove_file(&socket);
        }
    }
}

/// The shell line tmux runs: top, then its exit status and the terminal
/// modes it left behind (canonical input and echo are on again if the
/// terminal was restored), then a pause so the pane can be read.
/// `lockscope top ARGS` (kernel contention only: the test's truth is the
/// pipe mutex), then the exit status and the terminal's modes.
fn top_then_report(args: &str) -> String {
    format!(
        "{} top --source kernel-contention {args}; echo top-exit=$?; echo tty: $(stty -a | grep -o -w -e '-\\?icanon' -e '-\\?echo'); sleep 120",
        bin()
    )
}

/// The table header line.
fn header(s: &[String]) -> &String {
    s.iter()
        .find(|l| l.contains("Δcount"))
        .unwrap_or_else(|| panic!("no table header:\n{}", s.join("\n")))
}

/// A right-aligned numeric cell of `row` under the header word `name`:
/// cells are one space apart, so it spans from the end of the previous
/// header word to the end of this one.
fn cell(head: &str, row: &str, name: &str) -> String {
    let h: Vec<char> = head.chars().collect();
    let r: Vec<char> = row.chars().collect();
    let mut words = Vec::new(); // (start, end) char offsets
    let mut i = 0;
    while i < h.len() {
        if h[i] == ' ' {
            i += 1;
            continue;
        }
        let s = i;
        while i < h.len() && h[i] != ' ' {
            i += 1;
        }
        words.push((s, i));
    }
    let k = words
        .iter()
        .position(|&(s, e)| {
            let w: String = h[s..e].iter().filter(|c| !matches!(c, '▲' | '▼')).collect();
            w == name
        })
        .unwrap_or_else(|| panic!("no column {name} in {head}"));
    let from = if k == 0 { 0 } else { words[k - 1].1 + 1 };
    let to = words[k].1.min(r.len());
    r[from.min(to)..to]
        .iter()
        .collect::<String>()
        .trim()
        .to_string()
}

fn number(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("not a count: {s:?}"))
}

/// "6.03 s", "950 ms", "20.0 us", "641 ns" in ns.
fn duration_ns(s: &str) -> f64 {
    let (v, unit) = s
        .split_once(' ')
        .unwrap_or_else(|| panic!("not a duration: {s:?}"));
    let v: f64 = v
        .parse()
        .unwrap_or_else(|_| panic!("not a duration: {s:?}"));
    v * match unit {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        u => panic!("unit {u}"),
    }
}

/// The table rows under the header (up to the first empty line).
fn table_rows(s: &[String]) -> Vec<String> {
    let Some(i) = s.iter().position(|l| l.contains("Δcount")) else {
        return Vec::new();
    };
    s[i + 1..]
        .iter()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with('─'))
        .cloned()
        .collect()
}

fn pipe_row(s: &[String]) -> Option<String> {
    table_rows(s)
        .into_iter()
        .find(|l| l.contains(" mutex ") && l.contains("pipe"))
}

#[test]
fn top_shows_the_pipe_lock_live_sorts_filters_and_restores_the_terminal() {
    require_root();
    const ROUNDS: u64 = 160;
    let wl = Workload::start_paused(&[
        "pipe-hold",
        "--rounds",
        &ROUNDS.to_string(),
        "--hold",
        "50ms",
    ]);
    let tmux = Tmux::start(
        "live",
        &top_then_report(&format!("-p {} --stacks", wl.pid())),
        100,
        30,
    );
    // the TUI draws only once the sources are attached: then the workload goes
    tmux.wait_for("the TUI", Duration::from_secs(30), |s| {
        s.first().is_some_and(|l| l.starts_with("lockscope top ·"))
    });
    wl.go();

    // the workload's lock row appears: a pipe mutex waited on this second
    let first = tmux.wait_for("the pipe mutex row", Duration::from_secs(30), |s| {
        pipe_row(s).is_some()
    });
    let head = header(&first).clone();
    let row = pipe_row(&first).expect("row");
    assert!(first[0].starts_with(&format!("lockscope top · pid {} · by lock", wl.pid())));
    let (n1, d1) = (
        number(&cell(&head, &row, "count")),
        number(&cell(&head, &row, "Δcount")),
    );
    assert!(
        n1 >= 1 && d1 >= 1 && d1 <= n1,
        "a live row: {row}\n{}",
        first.join("\n")
    );
    // each wait is behind one hold of at least 50 ms (longer when the
    // holder's thread waits for a CPU; the exact truth is checked at the end)
    let avg = duration_ns(&cell(&head, &row, "avg"));
    assert!(avg >= 40e6, "avg {avg} ns: {row}");

    // it updates: a couple of seconds later the count has grown
    std::thread::sleep(Duration::from_millis(2500));
    let second = tmux.screen();
    let row2 = pipe_row(&second).unwrap_or_else(|| panic!("{}", second.join("\n")));
    let n2 = number(&cell(header(&second), &row2, "count"));
    assert!(
        n2 > n1,
        "count grows while the workload runs: {n1} then {n2}"
    );
    // 20 rounds a second: 2.5 s adds about 50 (less under load, never more
    // than the time allows)
    assert!(n2 - n1 <= 2 * 55 + 20, "{n1} -> {n2}");

    // s steps the sort column: Δtotal, Δmax, Δavg, Δp99, count
    tmux.keys(&["s", "s", "s", "s"]);
    let s = tmux.wait_for("sort by count", Duration::from_secs(5), |s| {
        s[0].contains("sort count▼") && header(s).contains("count▼")
    });
    let counts: Vec<u64> = table_rows(&s)
        .iter()
        .map(|r| number(&cell(header(&s), r, "count")))
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "descending: {counts:?}"
    );
    tmux.keys(&["r"]);
    let s = tmux.wait_for("reversed", Duration::from_secs(5), |s| {
        header(s).contains("count▲")
    });
    let counts: Vec<u64> = table_rows(&s)
        .iter()
        .map(|r| number(&cell(header(&s), r, "count")))
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "ascending: {counts:?}"
    );

    // filter by the waiter's thread name, seen by thread: only it is left
    tmux.keys(&["/"]);
    tmux.keys(&["-l", "ls-waiter"]);
    tmux.keys(&["Enter"]);
    tmux.keys(&["v"]);
    tmux.keys(&["v"]);
    let s = tmux.wait_for("the waiter alone, by task", Duration::from_secs(5), |s| {
        s[0].contains("by task") && s[1].starts_with("filter \"ls-waiter\"")
    });
    // one thread (its waits on every lock: the pipe mutex and any other)
    let waiter_row = match table_rows(&s).as_slice() {
        [r] if r.contains("ls-waiter ") => r.clone(),
        rows => panic!("only the waiter: {rows:?}\n{}", s.join("\n")),
    };
    // a filter that matches nothing says so
    tmux.keys(&["/"]);
    tmux.keys(&["-l", "no-such-lock-zzz"]);
    tmux.wait_for("the empty filter", Duration::from_secs(5), |s| {
        s.iter()
            .any(|l| l.contains("no rows match the filter \"no-such-lock-zzz\""))
    });
    tmux.keys(&["Escape"]);
    tmux.wait_for("the filter back", Duration::from_secs(5), |s| {
        s[1].starts_with("filter \"ls-waiter\"")
    });
    tmux.keys(&["Escape"]);
    tmux.keys(&["v"]);
    tmux.keys(&["v"]);
    tmux.wait_for("by lock, unfiltered", Duration::from_secs(5), |s| {
        s[0].contains("by lock") && !s[1].starts_with("filter")
    });

    // when the workload is done, the row holds exactly its rounds
    let done = wl.finish();
    let w = &done[0];
    let waiter_tid = u(&w["waiter_tid"]);
    assert!(
        waiter_row.contains(&format!("ls-waiter {waiter_tid} ")),
        "the filtered row is the waiter thread {waiter_tid}: {waiter_row}"
    );
    let measured: u64 = total_of(w, "waiter_write_ns");
    // after the interval that saw its last waits, nothing new: Δcount 0
    let s = tmux.wait_for(
        "targets exited, no new waits",
        Duration::from_secs(10),
        |s| {
            s[0].contains("targets exited")
                && pipe_row(s).is_some_and(|r| cell(header(s), &r, "Δcount") == "0")
        },
    );
    let row = pipe_row(&s).unwrap_or_else(|| panic!("{}", s.join("\n")));
    let head = header(&s);
    assert_eq!(
        number(&cell(head, &row, "count")),
        ROUNDS,
        "one contended wait per round: {row}"
    );
    let total = duration_ns(&cell(head, &row, "total"));
    // the waiter's own measurement of its blocked writes, within 2 ms a
    // wait (as tests/root.rs), plus the rounding of the 3 digits shown
    let tolerance = ROUNDS as f64 * 2e6 + total * 0.001;
    assert!(
        (total - measured as f64).abs() <= tolerance,
        "screen total {total} ns vs measured {measured} ns: {row}"
    );

    // back to sorting by Δtotal (all 0 now, so by total wait): the pipe
    // mutex is the top row; its detail pane names the waiter
    tmux.keys(&["S", "S", "S", "S"]);
    tmux.keys(&["g"]);
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("the detail pane", Duration::from_secs(5), |s| {
        s.iter().any(|l| l.starts_with("─ lock"))
    });
    // the pane scrolls (PgDn): what it holds is the union of both views
    tmux.keys(&["PageDown"]);
    let mut pane = s.clone();
    pane.extend(tmux.screen());
    let text = pane.join("\n");
    assert!(
        text.contains(&format!(
            "threads  ls-waiter {}/{waiter_tid}: {ROUNDS} waits",
            w["pid"]
        )),
        "{text}"
    );
    assert!(text.contains("callers") && text.contains("pipe"), "{text}");
    assert!(
        text.contains(&format!("waits    {ROUNDS} since start")),
        "{text}"
    );
    // --stacks: every 50 ms wait is over the 1 ms threshold, so the top
    // stacks account for all rounds; the first shows the pipe write path
    // (lock frames trimmed) and the workload's own user frames by name
    let heads: Vec<(u64, u64)> = pane
        .iter()
        .filter_map(|l| {
            let t = l.strip_prefix("stacks")?.trim_start();
            let (_, rest) = t.split_once(": ")?;
            let (n, rest) = rest.split_once(" of ")?;
            let (of, _) = rest.split_once(" waits")?;
            Some((n.parse().ok()?, of.parse().ok()?))
        })
        .collect();
    assert!(
        heads.first().is_some_and(|&(n, of)| of == ROUNDS && n >= 1),
        "a stacks head line: {text}"
    );
    let kernel = pane
        .iter()
        .find(|l| l.starts_with("  kernel "))
        .unwrap_or_else(|| panic!("kernel frames: {text}"));
    assert!(
        kernel["  kernel ".len()..].starts_with("anon_pipe_write")
            || kernel["  kernel ".len()..].starts_with("pipe_write"),
        "caller first: {kernel}"
    );
    // the user frames: the "  user" line and its continuation lines
    let user: String = pane
        .iter()
        .skip_while(|l| !l.starts_with("  user "))
        .take_while(|l| l.starts_with("  user ") || l.starts_with("         "))
        .map(|l| l.as_str())
        .collect();
    assert!(
        user.contains("holdwork"),
        "the workload's own frames: {text}"
    );
    assert!(
        pane.iter()
            .any(|l| l.to_lowercase().starts_with("lost kernel-contention: ")),
        "loss counters in the footer: {text}"
    );

    // q quits with status 0 and gives the terminal back
    let text = tmux.quit_top();
    assert!(
        text.contains("tty: icanon echo"),
        "canonical mode and echo restored: {text}"
    );
    assert!(!text.contains("lockscope top ·"), "the TUI is gone: {text}");
    assert_eq!(tmux.display("#{alternate_on}"), "0", "main screen back");
}

/// Ctrl-C (a key in raw mode) and SIGTERM end `top` with status 0 and the
/// terminal restored.
#[test]
fn top_restores_the_terminal_on_ctrl_c_and_sigterm() {
    require_root();
    let mut target = Command::new("sleep").arg("60").spawn().expect("sleep");
    let pid = target.id();
    for how in ["ctrl-c", "sigterm"] {
        let tmux = Tmux::start(how, &top_then_report(&format!("-p {pid}")), 80, 24);
        tmux.wait_for("the TUI", Duration::from_secs(30), |s| {
            s.first().is_some_and(|l| l.starts_with("lockscope top ·"))
                && s.iter()
                    .any(|l| l.to_lowercase().starts_with("lost kernel-contention"))
        });
        if how == "ctrl-c" {
            tmux.keys(&["C-c"]);
        } else {
            // top is the child of the pane's shell
            let shell: u32 = tmux.display("#{pane_pid}").parse().expect("pane pid");
            let top = std::fs::read_dir("/proc")
                .expect("/proc")
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .find(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|st| {
                        st.rsplit_once(')').is_some_and(|(name, rest)| {
                            name.ends_with("(lockscope")
                                && rest.split_whitespace().nth(1)
                                    == Some(shell.to_string().as_str())
                        })
                    })
                })
                .expect("the lockscope process");
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(top as i32, libc::SIGTERM) };
        }
        let s = tmux.wait_for("top's exit", Duration::from_secs(10), |s| {
            s.iter().any(|l| l.starts_with("tty:"))
        });
        let text = s.join("\n");
        assert!(text.contains("top-exit=0"), "{how}: {text}");
        assert!(text.contains("tty: icanon echo"), "{how}: {text}");
        assert_eq!(tmux.display("#{alternate_on}"), "0", "{how}");
    }
    let _ = target.kill();
    let _ = target.wait();
}

/// Lets a paused deadlock workload go and returns its truth (its first
/// stdout line): the threads, what each holds and waits for.
fn deadlock_truth(w: &mut Killed) -> serde_json::Value {
    use std::io::BufRead;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(w.0.id() as i32, libc::SIGUSR1) };
    let mut truth = String::new();
    std::io::BufReader::new(w.0.stdout.take().expect("stdout piped"))
        .read_line(&mut truth)
        .expect("the workload's truth");
    eprintln!("[test] truth {truth}");
    serde_json::from_str(&truth).expect("truth JSON")
}

/// The tid of the truth's thread that holds the lock `waits_for`.
fn holder_of(threads: &[serde_json::Value], waits_for: &str) -> u64 {
    threads
        .iter()
        .find(|h| h["holds"] == waits_for)
        .map(|h| u(&h["tid"]))
        .expect("a holder")
}

/// Each hop of the truth's cycle as the banner words it: `thread T (comm)
/// waits for LOCK held by H`.
fn banner_hops(truth: &serde_json::Value) -> Vec<String> {
    let threads = truth["threads"].as_array().expect("threads");
    threads
        .iter()
        .map(|t| {
            let waits_for = t["waits_for"].as_str().expect("waits_for");
            let holder = holder_of(threads, waits_for);
            format!(
                "thread {} ({}) waits for {waits_for} held by {holder}",
                u(&t["tid"]),
                t["comm"].as_str().expect("comm")
            )
        })
        .collect()
}

/// `top` on two threads deadlocked ABBA: a red banner above the table
/// names both threads, the lock each waits for (by symbol) and its holder
/// while the cycle lasts; it goes when the workload is killed, and the
/// deadlock is printed on the terminal once top has left the screen.
#[test]
fn top_shows_a_live_deadlock_in_a_banner_above_the_table() {
    require_root();
    let mut w = Killed::paused("deadlock-abba");
    let pid = w.0.id();
    let tmux = Tmux::start("deadlock", &top_then_report(&format!("-p {pid}")), 220, 30);
    tmux.wait_for("the TUI", attach_timeout(), |s| {
        s.first().is_some_and(|l| l.starts_with("lockscope top ·"))
    });
    let truth = deadlock_truth(&mut w);
    let hops = banner_hops(&truth);
    let want = format!("DEADLOCK pid {pid} (");
    let s = tmux.wait_for("the deadlock banner", attach_timeout(), |s| {
        s.iter().any(|l| l.starts_with(&want))
    });
    let i = s.iter().position(|l| l.starts_with(&want)).expect("banner");
    for h in &hops {
        assert!(s[i].contains(h.as_str()), "{h} in: {}", s[i]);
    }
    assert!(
        i >= 1 && s[i + 1].contains("Δcount"),
        "above the table:\n{}",
        s.join("\n")
    );
    // the workload gone, so is the banner
    drop(w);
    tmux.wait_for(
        "no banner once the workload is gone",
        attach_timeout(),
        |s| s[0].contains("targets exited") && !s.iter().any(|l| l.contains("DEADLOCK")),
    );
    let text = tmux.quit_top();
    assert!(
        text.contains(&format!("lockscope: DEADLOCK in pid {pid} ")),
        "the deadlock on stderr after the screen: {text}"
    );
}

/// `top --batch` on two threads deadlocked ABBA: the deadlock is printed
/// (the block `report` prints) naming both threads, the lock each waits
/// for by symbol and address, and its holder.
#[test]
fn top_batch_prints_the_deadlock_with_both_threads() {
    require_root();
    let mut w = Killed::paused("deadlock-abba");
    let pid = w.0.id();
    let mut t = Tracer::start(&["top", "--batch", "-i", "1s", "-p", &pid.to_string()]);
    let truth = deadlock_truth(&mut w);
    let (_, rx) = std::sync::mpsc::channel();
    let rx = std::mem::replace(&mut t.stderr, rx);
    let end = Instant::now() + attach_timeout();
    let line = loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("DEADLOCK") => break l,
            Ok(_) => continue,
            Err(e) => panic!("no deadlock from top --batch: {e}"),
        }
    };
    t.signal(libc::SIGINT);
    let (code, stdout) = t.finish();
    drop(w);
    assert_eq!(code, 0);
    assert!(
        line.starts_with(&format!("lockscope: DEADLOCK in pid {pid} ")),
        "{line}"
    );
    // and on stdout, above the interval's table: one banner line
    let banner: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("DEADLOCK pid "))
        .collect();
    assert_eq!(banner.len(), 1, "one banner: {stdout}");
    assert!(
        banner[0].starts_with(&format!("DEADLOCK pid {pid} ")),
        "{}",
        banner[0]
    );
    let threads = truth["threads"].as_array().expect("threads");
    for th in threads {
        let waits_for = th["waits_for"].as_str().expect("waits_for");
        let holder = holder_of(threads, waits_for);
        let hop = format!(
            "thread {} ({}) waits for lock {} ({waits_for}) held by thread {holder}",
            u(&th["tid"]),
            th["comm"].as_str().expect("comm"),
            th["waits_for_addr"].as_str().expect("addr"),
        );
        assert!(line.contains(&hop), "{hop} in: {line}");
    }
    for banner_hop in banner_hops(&truth) {
        assert!(
            banner[0].contains(&banner_hop),
            "{banner_hop} in: {}",
            banner[0]
        );
    }
}
