//! Which rows a report shows and in what order: `--sort`, the lock and
//! kind filters (perf lock contention's `-L` / `-Y`), and the
//! field-separated output of `-x SEP` (perf's `-x`, for scripts).

use std::io::{self, Write};

use crate::model::{LockKind, Record, Row};

/// `--sort`: the column rows are ordered by, largest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Number of contended waits
    Contended,
    /// Total wait time (the default)
    #[default]
    Total,
    /// Longest single wait
    Max,
    /// Average wait
    Avg,
    /// 99th percentile of the waits
    P99,
    /// Total hold time (rows without holds last)
    Hold,
}

/// Orders rows by `key`, largest first; ties keep the grouping's order.
pub fn sort_rows(rows: &mut [Row], key: SortKey) {
    let k = |r: &Row| -> u64 {
        match key {
            SortKey::Contended => r.count,
            SortKey::Total => r.wait.total_ns,
            SortKey::Max => r.wait.max_ns,
            SortKey::Avg => r.wait.avg_ns(),
            SortKey::P99 => r.wait.p99(),
            SortKey::Hold => r.hold_ns.as_ref().map_or(0, |h| h.total),
        }
    };
    rows.sort_by_key(|r| std::cmp::Reverse(k(r)));
}

/// The lock and kind filters; empty lists keep everything.
#[derive(Clone, Debug, Default)]
pub struct RowFilter {
    /// Lock addresses (hex, with or without 0x) or parts of lock names.
    pub locks: Vec<String>,
    /// Kinds: a JSON name (`rwsem-write`), a table label (`rwsem:W`), or a
    /// family (`rwsem`, `pthread`, `futex`).
    pub kinds: Vec<String>,
}

impl RowFilter {
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty() && self.kinds.is_empty()
    }

    /// Whether a record passes both filters.
    pub fn keep(&self, r: &Record) -> bool {
        (self.locks.is_empty() || self.locks.iter().any(|l| lock_matches(l, r)))
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| kind_matches(k, r.kind)))
    }
}

fn lock_matches(want: &str, r: &Record) -> bool {
    let hex = want.trim_start_matches("0x").trim_start_matches("0X");
    if !hex.is_empty()
        && let Ok(addr) = u64::from_str_radix(hex, 16)
        && addr == r.lock
    {
        return true;
    }
    r.lock_name.as_deref().is_some_and(|n| n.contains(want))
}

fn kind_matches(want: &str, kind: LockKind) -> bool {
    let want = want.to_ascii_lowercase();
    let name = kind.name();
    let label = crate::output::short_kind(Some(kind)).to_ascii_lowercase();
    if want == name || want == label {
        return true;
    }
    // a family: the JSON name up to its first dash ("rwsem" for
    // rwsem-read and rwsem-write; "pthread" for every user-space lock)
    name.split('-').next() == Some(want.as_str())
}

/// The columns of `-x SEP`, in order.
const FIELDS: &[&str] = &[
    "contended",
    "total_ns",
    "max_ns",
    "avg_ns",
    "p99_ns",
    "hold_ns",
    "kind",
    "source",
    "lock",
    "lock_name",
    "caller",
    "pid",
    "tid",
    "comm",
];

/// Rows as lines of fields separated by `sep` (numbers in ns, names
/// whole, empty where unknown), after a `# ` header naming the fields. A
/// separator inside a name is replaced by a space so that every line has
/// as many fields as the header.
pub fn write_separated(w: &mut dyn Write, rows: &[Row], sep: &str) -> io::Result<()> {
    writeln!(w, "# {}", FIELDS.join(sep))?;
    let clean = |s: &str| {
        if sep.is_empty() {
            s.to_string()
        } else {
            s.replace(sep, " ")
        }
    };
    let opt = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in rows {
        let fields = [
            r.count.to_string(),
            r.wait.total_ns.to_string(),
            r.wait.max_ns.to_string(),
            r.wait.avg_ns().to_string(),
            r.wait.p99().to_string(),
            r.hold_ns
                .as_ref()
                .map(|h| h.total.to_string())
                .unwrap_or_default(),
            r.kind.map(|k| k.name()).unwrap_or_default(),
            r.source.to_string(),
            r.lock.clone().unwrap_or_default(),
            clean(r.lock_name.as_deref().unwrap_or("")),
            clean(r.caller.as_deref().unwrap_or("")),
            opt(r.pid),
            opt(r.tid),
            clean(r.comm.as_deref().unwrap_or("")),
        ];
        writeln!(w, "{}", fields.join(sep))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GroupBy, group};

    fn rec(lock: u64, name: Option<&str>, kind: LockKind, waits: &[u64]) -> Record {
        Record {
            kind,
            lock_name: name.map(str::to_string),
            pid: 7,
            tid: 7,
            comm: "a, b".into(),
            cgroup: None,
            slept: 0,
            ..Record::sample(lock, "anon_pipe_write", waits)
        }
    }

    #[test]
    fn filters_by_address_name_and_kind() {
        let a = rec(
            0xabc,
            Some("pipe:[12] (fd 4 of 7 x)"),
            LockKind::Mutex,
            &[5],
        );
        let b = rec(
            0xdef,
            Some("mmap_lock of 7 (x)"),
            LockKind::RwsemWrite,
            &[5],
        );
        let f = |locks: &[&str], kinds: &[&str]| RowFilter {
            locks: locks.iter().map(|s| s.to_string()).collect(),
            kinds: kinds.iter().map(|s| s.to_string()).collect(),
        };
        assert!(f(&[], &[]).keep(&a) && f(&[], &[]).keep(&b));
        assert!(f(&["0xabc"], &[]).keep(&a) && !f(&["0xabc"], &[]).keep(&b));
        assert!(f(&["ABC"], &[]).keep(&a), "hex without 0x, any case");
        assert!(f(&["mmap_lock"], &[]).keep(&b) && !f(&["mmap_lock"], &[]).keep(&a));
        for k in ["rwsem-write", "rwsem:W", "rwsem", "RWSEM:w"] {
            assert!(f(&[], &[k]).keep(&b), "{k}");
            assert!(!f(&[], &[k]).keep(&a), "{k}");
        }
        assert!(f(&[], &["mutex", "spinlock"]).keep(&a));
        assert!(f(&[], &["pthread"]).keep(&rec(1, None, LockKind::UserRwlockRead, &[1])));
        // both filters must pass
        assert!(!f(&["0xabc"], &["rwsem"]).keep(&a));
    }

    #[test]
    fn sorts_by_each_key() {
        let recs = [
            rec(1, None, LockKind::Mutex, &[10, 10, 10, 10]), // 4 waits, 40 total
            rec(2, None, LockKind::Mutex, &[100]),            // 1 wait, 100 total
        ];
        let mut rows = group(&recs, GroupBy::Lock);
        sort_rows(&mut rows, SortKey::Contended);
        assert_eq!(rows[0].lock.as_deref(), Some("0x1"));
        for key in [SortKey::Total, SortKey::Max, SortKey::Avg, SortKey::P99] {
            sort_rows(&mut rows, key);
            assert_eq!(rows[0].lock.as_deref(), Some("0x2"), "{key:?}");
        }
    }

    #[test]
    fn separated_lines_have_every_field_and_whole_names() {
        let long = "a very long lock name that a table would cut: ".repeat(4);
        let rows = group(
            &[rec(0xabc, Some(&long), LockKind::Mutex, &[1000, 3000])],
            GroupBy::Lock,
        );
        let mut out = Vec::new();
        write_separated(&mut out, &rows, ",").expect("write");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let head: Vec<&str> = lines[0].trim_start_matches("# ").split(',').collect();
        let row: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(head.len(), row.len(), "{text}");
        assert_eq!(row[0], "2");
        assert_eq!(row[1], "4000");
        assert_eq!(row[6], "mutex");
        assert_eq!(row[9], long.replace(',', " "), "whole name");
        assert_eq!(row[13], "a  b", "the separator in a name is replaced");
    }
}
