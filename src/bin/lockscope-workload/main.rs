//! lockscope-workload: the built-in workloads with known lock operations,
//! the ground truth of the tests, the benchmarks and `lockscope demo`. A
//! binary of its own, so the product `lockscope` does not contain them;
//! `lockscope workload ARGS...` runs this binary (from lockscope's own
//! directory) with the same arguments.

mod anonmap;
mod deadwork;
mod holdwork;
mod mmwork;
mod ulockwork;
mod workload;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use lockscope::cli::workload_threads_ok;
use lockscope::status::{Usage, usage};
use lockscope::units::fmt_ns;

use crate::workload::{WorkloadArgs, WorkloadKind, WorkloadSpec};

fn main() {
    // A closed stdout (`lockscope-workload | head`) ends quietly.
    // SAFETY: restoring the default SIGPIPE disposition has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // The command name tracers see stays `lockscope`, as when the workloads
    // were part of it (reports, `demo` and the tests name it so); threads
    // without a name of their own inherit it.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"lockscope".as_ptr());
    }
    if let Some(code) = deadwork::main_if_named() {
        std::process::exit(code);
    }
    let args = WorkloadArgs::parse();
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // the messages and exit status of `lockscope`'s own errors
            let msg = format!("{e:#}");
            let msg = msg.strip_prefix("lockscope: ").unwrap_or(&msg);
            eprintln!("lockscope: {msg}");
            let code = if e.downcast_ref::<Usage>().is_some() {
                2
            } else {
                1
            };
            std::process::exit(code);
        }
    }
}

/// `--wait-usr1`: says so on stderr once the handler is in place (whoever
/// waits for that line then sends SIGUSR1), and returns when it came.
pub(crate) fn wait_for_usr1() -> Result<()> {
    let go = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, go.clone())
        .context("install SIGUSR1 handler")?;
    // tell whoever waits that the handler is in place
    eprintln!(
        "lockscope workload: pid {} waiting for SIGUSR1",
        std::process::id()
    );
    while !go.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn run(a: WorkloadArgs) -> Result<i32> {
    workload_threads_ok(a.threads)?;
    if a.wait_usr1 {
        wait_for_usr1()?;
    }
    let mut out = std::io::stdout().lock();
    for (i, kind) in a.kinds.iter().enumerate() {
        let delay = if i == 0 {
            a.start_delay.unwrap_or_default()
        } else {
            Duration::ZERO
        };
        if let Some((json, line)) = workload::run_mm_cli(*kind, &a, delay)? {
            writeln!(out, "{}", if a.json { json } else { line })?;
            continue;
        }
        if let WorkloadKind::User(k) = *kind {
            let spec = crate::ulockwork::UserSpec {
                kind: k,
                threads: a.threads,
                ops: a.ops,
                rounds: a.rounds,
                hold: a.hold,
                reads: a.reads,
                writes: a.writes,
                start_delay: delay,
                hog: a.hog,
                children: a.children,
                child_delay: a.child_delay.unwrap_or_default(),
            };
            let rep = crate::ulockwork::run(&spec)?;
            emit(&mut out, a.json, &rep, || {
                rep.head.line(format_args!(
                    "lock {}, {} acquisitions, {} failed calls in {}",
                    rep.lock,
                    rep.counts.acquisitions,
                    rep.counts.failed(),
                    fmt_ns(rep.elapsed_ns)
                ))
            })?;
            continue;
        }
        let hold_target = match kind {
            WorkloadKind::PipeHold => Some(crate::holdwork::HoldTarget::Pipe),
            WorkloadKind::FileHold => match &a.file {
                Some(p) => Some(crate::holdwork::HoldTarget::File(p.clone())),
                None => return Err(usage("file-hold needs --file PATH (the file it writes)")),
            },
            _ => None,
        };
        if let Some(target) = hold_target {
            let rep = crate::holdwork::run_on(&target, a.rounds, a.hold, delay, a.hog)?;
            emit(&mut out, a.json, &rep, || {
                let total: u64 = rep.per_round.waiter_write_ns.iter().sum();
                let lock = match &rep.file.path {
                    Some(p) => format!("the i_rwsem of {p}"),
                    None => format!("the mutex of pipe:[{}]", rep.file.ino),
                };
                rep.head.line(format_args!(
                    "holder {} held {lock} {} x {}, waiter {} blocked {} in total",
                    rep.holder_tid,
                    rep.rounds,
                    fmt_ns(rep.hold_ns),
                    rep.waiter_tid,
                    fmt_ns(total)
                ))
            })?;
            continue;
        }
        let spec = WorkloadSpec {
            kind: *kind,
            threads: a.threads,
            ops: a.ops,
            write_size: a.write_size,
            map_size: a.map_size,
            start_delay: delay,
        };
        let rep = workload::run(&spec)?;
        emit(&mut out, a.json, &rep, || {
            format!(
                "workload {}: pid {}, {} threads, {} ops in {} ({} blocked in syscalls)",
                rep.kind,
                rep.pid,
                rep.threads,
                rep.total_ops,
                fmt_ns(rep.elapsed_ns),
                fmt_ns(rep.blocked_ns)
            )
        })?;
    }
    Ok(0)
}

/// Prints a workload's report: its JSON line with `--json`, else its human
/// `line`.
fn emit(
    out: &mut impl Write,
    json: bool,
    rep: &impl serde::Serialize,
    line: impl FnOnce() -> String,
) -> Result<()> {
    if json {
        serde_json::to_writer(&mut *out, rep)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", line())?;
    }
    Ok(())
}
