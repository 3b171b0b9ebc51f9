//! A timeline of waits and holds in Chrome trace-event JSON, which
//! ui.perfetto.dev and chrome://tracing open: one track per thread (grouped
//! by process), a slice per wait and per hold named by lock, and a flow
//! arrow from the thread that released a lock to the waiter it let in.
//!
//! [`Stream`] writes the file as the operations arrive (header, one line per
//! trace event, footer), keeping only what the next flows need: the last
//! releases of each lock, for a bounded time. Memory does not grow with the
//! number of operations.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Write};

use serde_json::{Value, json};

use crate::model::Event;

fn label(e: &Event) -> String {
    e.lock_name
        .clone()
        .unwrap_or_else(|| format!("0x{:x}", e.lock))
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// A wait ends at most this long after the release that let it in to get a
/// flow arrow from that release.
const FLOW_WINDOW_NS: u64 = 1_000_000;
/// Releases kept per lock.
const RELEASES_PER_LOCK: usize = 16;
/// Releases older than this (behind the newest seen) are forgotten.
const RELEASE_MEMORY_NS: u64 = 2_000_000_000;
/// Locks with remembered releases, at most; past it the oldest go first.
const MAX_LOCKS: usize = 65_536;

#[derive(Clone, Copy)]
struct Release {
    pid: u32,
    tid: u32,
    at: u64,
}

/// A trace-event JSON file written as operations arrive.
pub struct Stream<W: Write> {
    w: W,
    first: bool,
    threads: HashSet<(u32, u32)>,
    /// Processes named so far: true when named after their main thread.
    procs: HashMap<u32, bool>,
    releases: HashMap<u64, VecDeque<Release>>,
    newest: u64,
    pushed: u64,
    flow_id: u64,
    operations: u64,
}

impl<W: Write> Stream<W> {
    /// Writes the header.
    pub fn new(mut w: W) -> io::Result<Stream<W>> {
        w.write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n")?;
        Ok(Stream {
            w,
            first: true,
            threads: HashSet::new(),
            procs: HashMap::new(),
            releases: HashMap::new(),
            newest: 0,
            pushed: 0,
            flow_id: 0,
            operations: 0,
        })
    }

    fn emit(&mut self, v: &Value) -> io::Result<()> {
        if !self.first {
            self.w.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut self.w, v).map_err(io::Error::from)
    }

    /// Operations written so far.
    pub fn operations(&self) -> u64 {
        self.operations
    }

    /// Writes one operation: its track names the first time its thread is
    /// seen, its wait and hold slices, and a flow from the release (by
    /// another thread, already written) that let it in.
    pub fn push(&mut self, e: &Event) -> io::Result<()> {
        self.operations += 1;
        if self.threads.insert((e.pid, e.tid)) {
            self.emit(
                &json!({"ph": "M", "name": "thread_name", "pid": e.pid, "tid": e.tid,
                              "args": {"name": format!("{} {}", e.comm, e.tid)}}),
            )?;
            let main = e.pid == e.tid;
            let named = self.procs.get(&e.pid).copied();
            if named.is_none() || (main && named == Some(false)) {
                self.procs.insert(e.pid, main);
                self.emit(&json!({"ph": "M", "name": "process_name", "pid": e.pid,
                                  "args": {"name": format!("{} {}", e.comm, e.pid)}}))?;
            }
        }
        let name = label(e);
        let kind = e.kind.name();
        let common = json!({"source": e.source, "kind": kind, "lock": format!("0x{:x}", e.lock),
                            "caller": e.caller, "aborted": e.aborted, "failed": e.failed});
        if !e.partial && e.wait_ns > 0 {
            let mut args = common.clone();
            if let Some(sp) = e.split {
                args["asleep_ns"] = json!(sp.asleep);
                args["runnable_ns"] = json!(sp.runnable);
                args["oncpu_ns"] = json!(sp.oncpu);
            }
            if let Some(h) = e.holder_tid {
                args["holder_tid"] = json!(h);
            }
            self.emit(
                &json!({"ph": "X", "cat": "wait", "name": format!("wait {name}"),
                              "pid": e.pid, "tid": e.tid, "ts": us(e.begin_ns),
                              "dur": us(e.wait_ns), "args": args}),
            )?;
        }
        if let (Some(rel), Some(hold)) = (e.released_ns, e.hold_ns)
            && !e.failed
        {
            self.emit(
                &json!({"ph": "X", "cat": "hold", "name": format!("hold {name}"),
                              "pid": e.pid, "tid": e.tid, "ts": us(rel.saturating_sub(hold)),
                              "dur": us(hold), "args": common}),
            )?;
        }
        // flow: the last release of this lock by another thread at or
        // before this wait's end, within FLOW_WINDOW_NS
        if !(e.failed || e.partial || e.wait_ns == 0) {
            let from = self.releases.get(&e.lock).and_then(|rs| {
                rs.iter()
                    .rev()
                    .find(|r| r.at <= e.end_ns && r.tid != e.tid)
                    .filter(|r| e.end_ns - r.at <= FLOW_WINDOW_NS)
                    .copied()
            });
            if let Some(r) = from {
                self.flow_id += 1;
                let id = self.flow_id;
                self.emit(
                    &json!({"ph": "s", "id": id, "cat": "handoff", "name": "released to",
                                  "pid": r.pid, "tid": r.tid, "ts": us(r.at)}),
                )?;
                self.emit(&json!({"ph": "f", "bp": "e", "id": id, "cat": "handoff",
                                  "name": "released to", "pid": e.pid, "tid": e.tid,
                                  "ts": us(e.end_ns)}))?;
            }
        }
        if let Some(rel) = e.released_ns
            && !e.partial
        {
            self.remember(
                e.lock,
                Release {
                    pid: e.pid,
                    tid: e.tid,
                    at: rel,
                },
            );
        }
        Ok(())
    }

    /// Keeps a release for later flows, in time order, bounded per lock,
    /// in time and in number of locks.
    fn remember(&mut self, lock: u64, r: Release) {
        self.newest = self.newest.max(r.at);
        let rs = self.releases.entry(lock).or_default();
        let i = rs.partition_point(|x| x.at <= r.at);
        rs.insert(i, r);
        if rs.len() > RELEASES_PER_LOCK {
            rs.pop_front();
        }
        self.pushed += 1;
        if self.pushed.is_multiple_of(4096) || self.releases.len() > MAX_LOCKS {
            let horizon = self.newest.saturating_sub(RELEASE_MEMORY_NS);
            self.releases
                .retain(|_, rs| rs.back().is_some_and(|r| r.at >= horizon));
            if self.releases.len() > MAX_LOCKS {
                // many locks released within the horizon: keep the newest
                let mut ends: Vec<u64> = self
                    .releases
                    .values()
                    .filter_map(|rs| rs.back().map(|r| r.at))
                    .collect();
                let cut = ends.len() - MAX_LOCKS / 2;
                let (_, nth, _) = ends.select_nth_unstable(cut);
                let nth = *nth;
                self.releases
                    .retain(|_, rs| rs.back().is_some_and(|r| r.at >= nth));
            }
        }
    }

    /// Writes the footer; returns the writer (flush it).
    pub fn finish(mut self) -> io::Result<W> {
        self.w.write_all(b"\n]}\n")?;
        Ok(self.w)
    }

    /// Remembered releases (for tests of the bound).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.releases.values().map(VecDeque::len).sum()
    }
}

/// The trace-event JSON value of `events` (in arrival order).
pub fn timeline(events: &[Event]) -> Value {
    let mut buf = Vec::new();
    let written = Stream::new(&mut buf).and_then(|mut s| {
        for e in events {
            s.push(e)?;
        }
        s.finish().map(|_| ())
    });
    match written {
        Ok(()) => serde_json::from_slice(&buf).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LockKind;

    fn ev(tid: u32, begin: u64, end: u64, released: Option<u64>) -> Event {
        Event {
            lock_name: Some("global_lock".into()),
            caller: Some("main".into()),
            begin_ns: begin,
            end_ns: end,
            released_ns: released,
            wait_ns: end - begin,
            hold_ns: released.map(|r| r - end),
            slept: true,
            ..Event::new("user-mutex", LockKind::Mutex, 0x1000, 10, tid, "app".into())
        }
    }

    #[test]
    fn slices_tracks_and_a_flow_from_releaser_to_waiter() {
        // thread 11 holds 1..5 ms; thread 12 waits 2..5 ms, then holds
        let events = vec![
            ev(11, 1_000_000, 1_000_000, Some(5_000_000)),
            ev(12, 2_000_000, 5_000_100, Some(6_000_000)),
        ];
        let v = timeline(&events);
        let evs = v["traceEvents"].as_array().expect("array");
        let by = |ph: &str, cat: &str| -> Vec<&Value> {
            evs.iter()
                .filter(|e| e["ph"] == ph && e["cat"] == cat)
                .collect()
        };
        let holds = by("X", "hold");
        assert_eq!(holds.len(), 2);
        assert_eq!(holds[0]["name"], "hold global_lock");
        assert_eq!(holds[0]["ts"], 1000.0);
        assert_eq!(holds[0]["dur"], 4000.0);
        let waits = by("X", "wait");
        assert_eq!(waits.len(), 1, "the zero-length wait is no slice");
        assert_eq!(waits[0]["tid"], 12);
        let starts = by("s", "handoff");
        let ends = by("f", "handoff");
        assert_eq!((starts.len(), ends.len()), (1, 1));
        assert_eq!(starts[0]["tid"], 11);
        assert_eq!(ends[0]["tid"], 12);
        assert_eq!(starts[0]["id"], ends[0]["id"]);
        let names: Vec<&Value> = evs.iter().filter(|e| e["name"] == "thread_name").collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn a_stream_is_valid_json_at_every_size_and_forgets_old_releases() {
        // empty: header and footer alone parse
        let mut buf = Vec::new();
        Stream::new(&mut buf)
            .and_then(|s| s.finish())
            .expect("write to a Vec");
        let v: Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert_eq!(v["traceEvents"].as_array().map(Vec::len), Some(0));

        // 100 000 holds of 1 000 locks, 1 ms apart: every one written, at
        // most RELEASES_PER_LOCK remembered per lock, none older than
        // RELEASE_MEMORY_NS behind the newest
        let mut buf = Vec::new();
        let mut s = Stream::new(&mut buf).expect("header");
        let n = 100_000u64;
        for i in 0..n {
            let mut e = ev(
                11 + (i % 7) as u32,
                i * 1_000_000,
                i * 1_000_000,
                Some(i * 1_000_000 + 10),
            );
            e.lock = i % 1000;
            s.push(&e).expect("push");
        }
        assert_eq!(s.operations(), n);
        let kept = s.remembered();
        assert!(kept <= 1000 * RELEASES_PER_LOCK, "{kept} releases kept");
        s.finish().expect("footer");
        let v: Value = serde_json::from_slice(&buf).expect("valid JSON");
        let evs = v["traceEvents"].as_array().expect("array");
        let holds = evs.iter().filter(|e| e["cat"] == "hold").count() as u64;
        assert_eq!(holds, n);
        let names = evs.iter().filter(|e| e["name"] == "thread_name").count();
        assert_eq!(names, 7, "one track name per thread");
    }
}
