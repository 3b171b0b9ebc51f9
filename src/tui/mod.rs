//! `lockscope top`: a live terminal view of the hottest locks and threads.
//!
//! One thread does everything, because sources are not `Send`: every
//! interval it reads the sources' cumulative records (the collector, the
//! only I/O), hands them to [`state::App`], and between reads it waits for
//! keys. Drawing ([`ui::draw`]) only reads the state. The terminal is put
//! back (raw mode off, main screen, cursor shown) by a guard on every way
//! out: q, Ctrl-C (a key in raw mode), SIGINT/SIGTERM (flags polled by the
//! loop), errors, and panics (a hook restores before the message prints).

pub mod state;
pub mod ui;

use std::io;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use ratatui::crossterm::{cursor, execute, terminal};

use crate::deadlock::{Deadlock, Detector, MAX_KEPT, render};
use crate::model::GroupBy;
use crate::session::Stop;
use crate::sources::{Started, Symbolizer, Targets};
use state::{App, Flow, Snapshot};

/// How often sources get their periodic work and keys are looked at.
const TICK: Duration = Duration::from_millis(50);

/// Settings of one `top` session.
#[derive(Clone, Debug)]
pub struct Config {
    pub interval: Duration,
    pub view: GroupBy,
    /// Whether the sources take full stacks (`--stacks`).
    pub stacks: bool,
}

/// Puts the terminal back when dropped (and, through the panic hook, when
/// the program panics).
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard> {
        install_panic_hook();
        terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        let guard = TerminalGuard;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)
            .context("cannot switch to the alternate screen")?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Raw mode off, main screen back, cursor shown; harmless when repeated.
fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
}

/// Reads every source once ([`crate::session::read`]).
/// The snapshot's time is taken after the reads: a source may symbolise
/// (slowly, the first time a binary is seen) before it reads its counters.
fn collect(started: &Started, sym: &mut Symbolizer, t0: Instant, exited: bool) -> Snapshot {
    let reading = crate::session::read(started, sym);
    Snapshot::of(reading, t0.elapsed().as_nanos() as u64, exited)
}

/// Runs the live view until q, Ctrl-C, SIGINT or SIGTERM. When every
/// `-p`/`-t` target has exited, the sources are detached and the last
/// numbers stay on screen until the user quits.
pub fn run(
    started: &Started,
    sym: &mut Symbolizer,
    targets: &Targets,
    cfg: &Config,
    stop: &Stop,
) -> Result<()> {
    let mut app = App::new(targets.describe(), cfg.view, cfg.interval.as_nanos() as u64);
    app.stacks_on = cfg.stacks;
    let t0 = Instant::now();
    let guard = TerminalGuard::enter()?;
    let mut term = Terminal::new(CrosstermBackend::new(io::stdout()))
        .context("cannot draw on this terminal")?;
    // a plain clear: Terminal::clear asks the terminal where its cursor is,
    // which a terminal without a reply (script, some serial consoles)
    // never answers
    execute!(io::stdout(), terminal::Clear(terminal::ClearType::All))?;
    let mut next = t0 + cfg.interval;
    let mut last_tick = t0;
    let mut dirty = true;
    let mut exited = false;
    // deadlocks of the target processes: shown while they last, printed
    // on stderr once the screen is gone
    let mut deadlocks = Detector::for_targets(targets).quiet();
    let mut found: Vec<Deadlock> = Vec::new();
    while !stop.signalled() {
        if dirty {
            term.draw(|f| ui::draw(f, &app))?;
            dirty = false;
        }
        // sources' periodic work, as `report` does it: e.g. user stacks are
        // normalised while their processes still live
        if !exited && last_tick.elapsed() >= TICK {
            for s in &started.sources {
                s.tick(sym);
            }
            if watch_deadlocks(&mut deadlocks, &mut found, &mut app) {
                dirty = true;
            }
            last_tick = Instant::now();
        }
        let wait = next.saturating_duration_since(Instant::now()).min(TICK);
        let ready = match event::poll(wait) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
            Err(e) => return Err(e.into()),
        };
        if ready {
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    if app.on_key(k) == Flow::Quit {
                        break;
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        let now = Instant::now();
        if now >= next {
            if !exited && stop.targets_gone() {
                exited = true;
                crate::session::detach_all(started);
                app.deadlocks.clear(); // their processes are gone
            }
            app.update(collect(started, sym, t0, exited));
            dirty = true;
            // a read that took longer than the interval is not followed at
            // once by another (which would show an interval of nothing)
            let done = Instant::now();
            next += cfg.interval;
            if next <= done {
                next = done + cfg.interval;
            }
        }
    }
    drop(term);
    drop(guard);
    for d in &found {
        eprint!("{}", render(d));
    }
    Ok(())
}

/// Scans the target processes when a scan is due and shows the deadlocks
/// whose cycle is still there; true when that changed.
fn watch_deadlocks(det: &mut Detector, found: &mut Vec<Deadlock>, app: &mut App) -> bool {
    if det.pids().is_empty() {
        return false;
    }
    det.tick();
    for d in det.take() {
        if found.len() >= MAX_KEPT {
            // the oldest that is over, else the oldest
            let old = found.iter().position(|d| !det.is_live(d)).unwrap_or(0);
            found.remove(old);
        }
        found.push(d);
    }
    let live: Vec<Deadlock> = found.iter().filter(|d| det.is_live(d)).cloned().collect();
    if live == app.deadlocks {
        return false;
    }
    app.deadlocks = live;
    true
}
