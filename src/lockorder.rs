//! Lock-order inversions, the way lockdep finds them for the kernel: the
//! order in which each thread took nested locks, and every pair of locks
//! taken in both orders (by different code paths or threads). Such a pair
//! is a potential deadlock even when this run never deadlocked.
//!
//! Input: completed holds (a lock, when it was acquired and released, by
//! which thread, from which call site), as the user-locks source streams
//! them. A thread releases its locks one after another, so its holds
//! arrive in release order: when a hold of A arrives, the holds that
//! nested inside it (acquired after A, released before it) have arrived
//! already; each of them makes an edge A -> inner. Memory is bounded: a
//! window of recent holds per thread, a cap on threads, and a cap on
//! edges; what the caps drop is counted.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// One completed hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub pid: u32,
    pub tid: u32,
    pub lock: u64,
    pub lock_name: Option<String>,
    /// Where the lock was taken (the lock call's caller).
    pub caller: Option<String>,
    pub acquired_ns: u64,
    pub released_ns: u64,
}

/// Where one order of a pair was seen first: the thread, and the call
/// sites of the outer and the inner lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub tid: u32,
    pub outer_caller: Option<String>,
    pub inner_caller: Option<String>,
    pub at_ns: u64,
}

/// One order, `outer` held while `inner` was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    pub count: u64,
    pub first: Example,
}

/// A pair of locks taken in both orders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inversion {
    pub pid: u32,
    /// The lock at the lower address, in hex.
    pub lock_a: String,
    pub lock_a_name: Option<String>,
    pub lock_b: String,
    pub lock_b_name: Option<String>,
    /// A held while B was taken.
    pub a_then_b: Edge,
    /// B held while A was taken.
    pub b_then_a: Edge,
}

/// What the bounds dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// New orders not kept because the edge cap was reached.
    pub edges: u64,
    /// Holds of threads not followed because the thread cap was reached.
    pub threads: u64,
    /// Holds pushed out of a thread's window while they may still have
    /// been nested in a longer hold.
    pub window: u64,
}

/// What `--lock-order` found: in the end line of `trace --json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOrder {
    /// Holds seen (completed acquisitions of user locks).
    pub holds: u64,
    /// Distinct orders (outer, inner) seen.
    pub orders: u64,
    pub inversions: Vec<Inversion>,
    pub dropped: Dropped,
}

/// The order graph of the traced processes.
pub struct OrderGraph {
    /// (pid, outer, inner) -> edge.
    edges: BTreeMap<(u32, u64, u64), Edge>,
    names: HashMap<(u32, u64), String>,
    recent: HashMap<u32, VecDeque<Hold>>,
    max_edges: usize,
    max_threads: usize,
    window: usize,
    dropped: Dropped,
    holds: u64,
    /// Locks seen (bounded like the edges).
    seen: std::collections::HashSet<(u32, u64)>,
}

impl OrderGraph {
    /// `max_edges` orders kept, `max_threads` threads followed, the last
    /// `window` holds of each thread kept to find what nested in them.
    pub fn new(max_edges: usize, max_threads: usize, window: usize) -> OrderGraph {
        OrderGraph {
            edges: BTreeMap::new(),
            names: HashMap::new(),
            recent: HashMap::new(),
            max_edges,
            max_threads,
            window: window.max(1),
            dropped: Dropped::default(),
            holds: 0,
            seen: Default::default(),
        }
    }

    /// Adds a completed hold (in the order the thread released them).
    pub fn add(&mut self, h: Hold) {
        self.holds += 1;
        if self.seen.len() < self.max_edges {
            self.seen.insert((h.pid, h.lock));
        }
        if let Some(n) = &h.lock_name {
            self.names
                .entry((h.pid, h.lock))
                .or_insert_with(|| n.clone());
        }
        if !self.recent.contains_key(&h.tid) && self.recent.len() >= self.max_threads {
            self.dropped.threads += 1;
            return;
        }
        let recent = self.recent.entry(h.tid).or_default();
        // the holds released inside this one, acquired after it: nested
        let mut new_edges = Vec::new();
        for inner in recent.iter().rev() {
            if inner.released_ns < h.acquired_ns {
                break; // released before this hold began: so were the older ones
            }
            if inner.lock != h.lock && inner.acquired_ns > h.acquired_ns {
                new_edges.push((inner.lock, inner.caller.clone(), inner.acquired_ns));
            }
        }
        if recent.len() == self.window
            && let Some(old) = recent.pop_front()
            && old.released_ns >= h.acquired_ns
        {
            self.dropped.window += 1;
        }
        recent.push_back(h.clone());
        for (inner, inner_caller, at_ns) in new_edges {
            let key = (h.pid, h.lock, inner);
            if let Some(e) = self.edges.get_mut(&key) {
                e.count += 1;
            } else if self.edges.len() >= self.max_edges {
                self.dropped.edges += 1;
            } else {
                self.edges.insert(
                    key,
                    Edge {
                        count: 1,
                        first: Example {
                            tid: h.tid,
                            outer_caller: h.caller.clone(),
                            inner_caller,
                            at_ns,
                        },
                    },
                );
            }
        }
    }

    /// Whether a lock has been seen already (its name, if it has one,
    /// is kept from its first hold).
    pub fn named(&self, pid: u32, lock: u64) -> bool {
        self.seen.contains(&(pid, lock))
    }

    /// Forgets a thread that exited (its window).
    pub fn thread_gone(&mut self, tid: u32) {
        self.recent.remove(&tid);
    }

    /// Every order seen: (pid, outer, inner) and its edge.
    pub fn edges(&self) -> impl Iterator<Item = (&(u32, u64, u64), &Edge)> {
        self.edges.iter()
    }

    /// What the bounds dropped.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// The summary of everything added so far.
    pub fn summary(&self) -> LockOrder {
        LockOrder {
            holds: self.holds,
            orders: self.edges.len() as u64,
            inversions: self.inversions(),
            dropped: self.dropped,
        }
    }

    /// Every pair taken in both orders, lower address first.
    pub fn inversions(&self) -> Vec<Inversion> {
        let mut out = Vec::new();
        for (&(pid, a, b), ab) in &self.edges {
            if a >= b {
                continue;
            }
            if let Some(ba) = self.edges.get(&(pid, b, a)) {
                out.push(Inversion {
                    pid,
                    lock_a: format!("0x{a:x}"),
                    lock_a_name: self.names.get(&(pid, a)).cloned(),
                    lock_b: format!("0x{b:x}"),
                    lock_b_name: self.names.get(&(pid, b)).cloned(),
                    a_then_b: ab.clone(),
                    b_then_a: ba.clone(),
                });
            }
        }
        out
    }
}

/// The human lines of an inversion, lockdep style.
pub fn describe(i: &Inversion) -> String {
    let name = |addr: &str, n: &Option<String>| match n {
        Some(n) => format!("{n} ({addr})"),
        None => addr.to_string(),
    };
    let at = |c: &Option<String>| c.as_deref().unwrap_or("?").to_string();
    let (a, b) = (
        name(&i.lock_a, &i.lock_a_name),
        name(&i.lock_b, &i.lock_b_name),
    );
    format!(
        "lock-order inversion in pid {pid}: {a} and {b} are taken in both orders\n  \
         {a} then {b}: {n1} time(s), first by thread {t1}: {a} taken in {c1a}, then {b} in {c1b}\n  \
         {b} then {a}: {n2} time(s), first by thread {t2}: {b} taken in {c2a}, then {a} in {c2b}",
        pid = i.pid,
        n1 = i.a_then_b.count,
        t1 = i.a_then_b.first.tid,
        c1a = at(&i.a_then_b.first.outer_caller),
        c1b = at(&i.a_then_b.first.inner_caller),
        n2 = i.b_then_a.count,
        t2 = i.b_then_a.first.tid,
        c2a = at(&i.b_then_a.first.outer_caller),
        c2b = at(&i.b_then_a.first.inner_caller),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(tid: u32, lock: u64, caller: &str, acquired_ns: u64, released_ns: u64) -> Hold {
        Hold {
            pid: 7,
            tid,
            lock,
            lock_name: Some(format!("L{lock}")),
            caller: Some(caller.into()),
            acquired_ns,
            released_ns,
        }
    }

    /// Thread `tid` holds `outer` over [base+10, base+50] and takes
    /// `inner` inside it, over [base+20, base+30].
    fn nested(tid: u32, outer: (u64, &str), inner: (u64, &str), base: u64) -> [Hold; 2] {
        [
            hold(tid, outer.0, outer.1, base + 10, base + 50),
            hold(tid, inner.0, inner.1, base + 20, base + 30),
        ]
    }

    /// A thread's holds in release order (as they arrive).
    fn feed(g: &mut OrderGraph, holds: &[Hold]) {
        let mut hs = holds.to_vec();
        hs.sort_by_key(|h| (h.tid, h.released_ns));
        for h in hs {
            g.add(h);
        }
    }

    #[test]
    fn nested_holds_make_an_edge_and_both_orders_an_inversion() {
        let mut g = OrderGraph::new(100, 10, 16);
        // thread 1: A [10, 50] holds B [20, 30]; thread 2 later: B [100,
        // 150] holds A [110, 120]
        feed(
            &mut g,
            &[
                nested(1, (0xa, "f"), (0xb, "g"), 0).as_slice(),
                &[hold(2, 0xb, "h", 100, 150), hold(2, 0xa, "k", 110, 120)],
            ]
            .concat(),
        );
        let edges: Vec<_> = g.edges().map(|(k, e)| (*k, e.count)).collect();
        assert_eq!(edges, [((7, 0xa, 0xb), 1), ((7, 0xb, 0xa), 1)]);
        let inv = g.inversions();
        assert_eq!(inv.len(), 1);
        let i = &inv[0];
        assert_eq!((i.lock_a.as_str(), i.lock_b.as_str()), ("0xa", "0xb"));
        assert_eq!(i.lock_a_name.as_deref(), Some("L10"));
        assert_eq!(i.a_then_b.first.tid, 1);
        assert_eq!(i.a_then_b.first.outer_caller.as_deref(), Some("f"));
        assert_eq!(i.a_then_b.first.inner_caller.as_deref(), Some("g"));
        assert_eq!(i.b_then_a.first.tid, 2);
        assert_eq!(i.b_then_a.first.outer_caller.as_deref(), Some("h"));
        assert_eq!(i.b_then_a.first.inner_caller.as_deref(), Some("k"));
        let text = describe(i);
        assert!(text.contains("L10 (0xa) and L11 (0xb)"), "{text}");
    }

    #[test]
    fn one_order_only_or_no_nesting_is_no_inversion() {
        let mut g = OrderGraph::new(100, 10, 16);
        let mut holds = Vec::new();
        for r in 0..50u64 {
            let t = 1 + (r % 3) as u32;
            let base = r * 100;
            holds.extend(nested(t, (0xa, "f"), (0xb, "g"), base));
            // B alone, then A alone: sequential, not nested
            holds.push(hold(t, 0xb, "h", base + 60, base + 70));
            holds.push(hold(t, 0xa, "k", base + 75, base + 80));
        }
        feed(&mut g, &holds);
        assert!(g.inversions().is_empty());
        let edges: Vec<_> = g.edges().map(|(k, e)| (*k, e.count)).collect();
        assert_eq!(edges, [((7, 0xa, 0xb), 50)]);
    }

    #[test]
    fn the_bounds_count_what_they_drop() {
        let mut g = OrderGraph::new(1, 1, 2);
        feed(
            &mut g,
            &[
                hold(1, 0xa, "f", 10, 100),
                hold(1, 0xb, "g", 20, 30),
                hold(1, 0xc, "g", 40, 50),
                hold(1, 0xd, "g", 60, 70),
                hold(2, 0xa, "f", 10, 100),
            ],
        );
        let d = g.dropped();
        assert_eq!(d.threads, 1, "thread 2 is over the cap");
        assert!(d.window >= 1, "{d:?}");
        assert!(d.edges >= 1, "{d:?}");
        assert_eq!(g.edges().count(), 1);
    }

    #[test]
    fn a_lock_taken_again_inside_itself_is_no_edge() {
        let mut g = OrderGraph::new(10, 10, 16);
        // a recursive mutex: A inside A
        feed(&mut g, &nested(1, (0xa, "f"), (0xa, "g"), 0));
        assert_eq!(g.edges().count(), 0);
    }
}
