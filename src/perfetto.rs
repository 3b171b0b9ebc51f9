//! A timeline of waits and holds in Chrome trace-event JSON, which
//! ui.perfetto.dev and chrome://tracing open: one track per thread (grouped
//! by process), a slice per wait and per hold named by lock, and a flow
//! arrow from the thread that released a lock to the waiter it let in.

use std::collections::{BTreeMap, HashMap};
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

/// Builds the trace-event JSON value for `events`.
pub fn timeline(events: &[Event]) -> Value {
    let mut out: Vec<Value> = Vec::new();
    let mut threads: BTreeMap<(u32, u32), &str> = BTreeMap::new();
    for e in events {
        threads.entry((e.pid, e.tid)).or_insert(&e.comm);
    }
    let mut procs: BTreeMap<u32, &str> = BTreeMap::new();
    for (&(pid, tid), &comm) in &threads {
        if pid == tid || !procs.contains_key(&pid) {
            procs.insert(pid, comm);
        }
        out.push(
            json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                        "args": {"name": format!("{comm} {tid}")}}),
        );
    }
    for (pid, comm) in procs {
        out.push(json!({"ph": "M", "name": "process_name", "pid": pid,
                        "args": {"name": format!("{comm} {pid}")}}));
    }

    // holds by lock, to find who released a lock right before a wait ended
    let mut holds: HashMap<u64, Vec<&Event>> = HashMap::new();
    for e in events {
        if e.released_ns.is_some() && !e.partial {
            holds.entry(e.lock).or_default().push(e);
        }
    }
    for v in holds.values_mut() {
        v.sort_by_key(|e| e.released_ns);
    }

    let mut flow_id = 0u64;
    for e in events {
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
            out.push(
                json!({"ph": "X", "cat": "wait", "name": format!("wait {name}"),
                            "pid": e.pid, "tid": e.tid, "ts": us(e.begin_ns),
                            "dur": us(e.wait_ns), "args": args}),
            );
        }
        if let (Some(rel), Some(hold)) = (e.released_ns, e.hold_ns)
            && !e.failed
        {
            out.push(
                json!({"ph": "X", "cat": "hold", "name": format!("hold {name}"),
                            "pid": e.pid, "tid": e.tid, "ts": us(rel.saturating_sub(hold)),
                            "dur": us(hold), "args": common}),
            );
        }
        // flow: the last release of this lock by another thread at or
        // before this wait's end, within 1 ms
        if e.failed || e.partial || e.wait_ns == 0 {
            continue;
        }
        if let Some(hs) = holds.get(&e.lock) {
            let i = hs.partition_point(|h| h.released_ns.unwrap_or(0) <= e.end_ns);
            if let Some(h) = hs[..i].iter().rev().find(|h| h.tid != e.tid)
                && let Some(rel) = h.released_ns
                && e.end_ns.saturating_sub(rel) <= 1_000_000
            {
                flow_id += 1;
                out.push(
                    json!({"ph": "s", "id": flow_id, "cat": "handoff", "name": "released to",
                                "pid": h.pid, "tid": h.tid, "ts": us(rel)}),
                );
                out.push(
                    json!({"ph": "f", "bp": "e", "id": flow_id, "cat": "handoff",
                                "name": "released to", "pid": e.pid, "tid": e.tid,
                                "ts": us(e.end_ns)}),
                );
            }
        }
    }
    json!({"traceEvents": out, "displayTimeUnit": "ms"})
}

/// Writes the timeline of `events` as JSON.
pub fn write(w: &mut dyn Write, events: &[Event]) -> io::Result<()> {
    serde_json::to_writer(&mut *w, &timeline(events))?;
    writeln!(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LockKind;

    fn ev(tid: u32, begin: u64, end: u64, released: Option<u64>) -> Event {
        Event {
            source: "user-mutex",
            kind: LockKind::Mutex,
            lock: 0x1000,
            lock_name: Some("global_lock".into()),
            caller: Some("main".into()),
            pid: 10,
            tid,
            comm: "app".into(),
            cgroup: None,
            begin_ns: begin,
            end_ns: end,
            released_ns: released,
            wait_ns: end - begin,
            hold_ns: released.map(|r| r - end),
            aborted: false,
            failed: false,
            ret: 0,
            spun: false,
            slept: true,
            partial: false,
            holder_tid: None,
            split: None,
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
}
