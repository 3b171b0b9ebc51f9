//! Root test of the human report table as a script sees it (stdout a
//! pipe): whole names, and a headline that counts lock waits only.

mod common;

use common::*;

/// The first number of a line, when it starts with one (a table row).
fn leading_count(l: &str) -> Option<u64> {
    l.split_whitespace().next()?.parse().ok()
}

#[test]
fn piped_report_has_whole_names_and_a_lock_only_headline() {
    let rounds = 5;
    // -p: the report ends when the workload exits
    let (wl, tracer) = start_traced(
        &[
            "pipe-hold",
            "--rounds",
            &rounds.to_string(),
            "--hold",
            "20ms",
        ],
        &[
            "report",
            "--source",
            "kernel-contention,futex",
            "--by",
            "lock",
            "--top",
            "1000",
        ],
    );
    let pid = wl.pid();
    let done = wl.finish();
    let (code, text) = tracer.finish();
    assert_eq!(code, 0, "{text}");
    eprintln!("{text}");
    assert!(!text.contains('…'), "nothing cut when piped: {text}");

    // the pipe's mutex: its whole name (the workload's pipe inode is the
    // ground truth) and its whole caller on the row's line
    let ino = u(&done[0]["ino"]);
    let row = text
        .lines()
        .find(|l| l.contains(&format!("pipe:[{ino}] (fd ")))
        .unwrap_or_else(|| panic!("a row of pipe:[{ino}]: {text}"));
    let name_end = row.find(") ").expect("the lock name ends") + 2;
    let caller = &row[name_end..];
    assert!(
        caller.contains("pipe_write")
            && caller
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.+/".contains(c)),
        "the whole caller, a kernel symbol of the pipe write path: {row:?}"
    );
    assert!(
        leading_count(row).is_some_and(|n| n >= rounds),
        "one contended wait per round at least: {row:?}"
    );

    // the headline counts the lock rows, not the futex waits
    let lines: Vec<&str> = text.lines().collect();
    let headline = lines
        .iter()
        .find(|l| l.contains(&format!("pid {pid} for ")))
        .unwrap_or_else(|| panic!("headline: {text}"));
    let headline_count: u64 = headline
        .split(": ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {headline:?}"));
    let header = lines
        .iter()
        .position(|l| l.starts_with("contended"))
        .unwrap_or_else(|| panic!("table header: {text}"));
    let section = |title: &str| -> Vec<u64> {
        let Some(start) = lines.iter().position(|l| *l == title) else {
            return Vec::new();
        };
        lines[start + 1..]
            .iter()
            .map_while(|l| leading_count(l))
            .collect()
    };
    let locks: Vec<u64> = lines[header + 1..]
        .iter()
        .map_while(|l| leading_count(l))
        .collect();
    assert!(!locks.is_empty(), "{text}");
    assert_eq!(
        headline_count,
        locks.iter().sum::<u64>(),
        "headline = the lock rows' sum: {text}"
    );
    // the workload's threads wait on futexes too (17 waits in each of two
    // runs here): they are the futex section, not lock rows
    let futex = section("futex waits:");
    assert!(!futex.is_empty(), "a futex section: {text}");
    let futex_line = lines
        .iter()
        .find(|l| l.starts_with("  futex: "))
        .unwrap_or_else(|| panic!("a futex summary line: {text}"));
    assert!(
        futex_line.starts_with(&format!("  futex: {} waits,", futex.iter().sum::<u64>())),
        "{futex_line:?} sums the futex section: {text}"
    );
    assert!(
        !text.contains("BPF runs"),
        "no run count without a cost: {text}"
    );
    let footer: Vec<&str> = lines
        .iter()
        .rev()
        .take_while(|l| !l.is_empty())
        .copied()
        .collect();
    if headline.contains(" LOST, see below] ") {
        assert!(footer.iter().any(|l| l.starts_with("LOST: ")), "{text}");
    } else {
        assert_eq!(footer.len(), 1, "one footer line without loss: {text}");
        assert!(footer[0].starts_with("lost: none"), "{text}");
    }
}

/// At a 200-column terminal (a pseudo-terminal made by `script`, sized
/// with `stty`), the table fills the width it is given: the pipe's whole
/// lock name and caller are on the row, and no line is wider than 200.
#[test]
fn a_200_column_terminal_shows_the_whole_lock_name() {
    require_root();
    // the pipe is named from a listing of open files made while the
    // process lives (every 50 ms to 5 s, by the listing's own cost: the
    // CI host lists in a few ms): 10 x 100 ms outlive a few listings
    let wl = Workload::start_paused(&["pipe-hold", "--rounds", "10", "--hold", "100ms"]);
    let pid = wl.pid().to_string();
    let cmd = format!(
        "stty cols 200 rows 50; unset COLUMNS; exec {} report -p {pid} \
         --source kernel-contention --by lock",
        bin()
    );
    let mut tracer = std::process::Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env_remove("COLUMNS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    // the pty carries stderr too: the workload goes once lockscope says
    // it is tracing
    let stdout = tracer.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line.replace('\r', ""));
        }
    });
    let mut lines = Vec::new();
    loop {
        let l = rx
            .recv_timeout(attach_timeout())
            .unwrap_or_else(|e| panic!("no 'tracing' line ({e}): {lines:?}"));
        let tracing = l.contains("lockscope: tracing");
        lines.push(l);
        if tracing {
            break;
        }
    }
    wl.go();
    let done = wl.finish();
    let status = tracer.wait().expect("script");
    reader.join().expect("reader");
    lines.extend(rx.try_iter());
    let text = lines.join("\n");
    assert!(status.success(), "{text}");
    eprintln!("{text}");
    let ino = u(&done[0]["ino"]);
    let row = text
        .lines()
        .find(|l| l.contains(&format!("pipe:[{ino}] (fd ")))
        .unwrap_or_else(|| panic!("a row of pipe:[{ino}]: {text}"));
    assert!(!row.contains('…'), "the whole name at 200 columns: {row:?}");
    assert!(row.contains("pipe_write"), "the whole caller: {row:?}");
    for l in text.lines() {
        assert!(
            l.chars().count() <= 200,
            "a line wider than the terminal: {l:?}"
        );
    }
}
