//! pprof profiles of lock waits (`--pprof FILE`): a report's lock rows as a
//! gzipped `profile.proto` (github.com/google/pprof, proto/profile.proto),
//! the format `go tool pprof`, Pyroscope, Parca, Grafana and speedscope read.
//!
//! Sample types follow Go's mutex profile (`runtime/pprof`'s "mutex"):
//! `contentions/count` and `delay/nanoseconds`, `delay` the default; where
//! a row's source measures holds (user-locks, mmap-lock, the function-probe
//! sources), `holds/count` and `hold/nanoseconds` follow (present only when
//! some row has holds). Every value adds up to the report's: a row's
//! stacks (`--stacks`) are samples of their own, and what they do not
//! cover (waits under `--stack-threshold` not sampled, or no `--stacks`)
//! is one more sample on a synthetic stack.
//!
//! Stacks, innermost (leaf) first as pprof wants them:
//! - the lock itself, `[KIND NAME]` (`[mutex pipe:[12] (fd 4 of 7 x)]`),
//!   named as in the flame graphs, so a profile's flat time is per lock;
//! - with stacks: the kernel frames (the lock's caller first), then the
//!   user frames; without: the caller the report names (if any).
//!
//! Kernel frames are told apart by their mapping: kernel functions' locations
//! belong to a mapping named `[kernel.kallsyms]` (perf's and the Parca
//! agent's name for it), and their names stay the kernel's own, so they
//! match other tools' profiles. User frames and the lock frame have no
//! mapping. Functions are named frames, one Function per name and
//! mapping; there are no addresses or lines (lockscope keeps names only).
//!
//! Labels on each sample, where the row knows them (a row of several
//! threads has no `tid`, one of several locks no `lock`): `lock` (its name,
//! else its address), `kind`, `source`, `comm`, `cgroup` (strings) and
//! `pid`, `tid` (numbers).
//!
//! Only the report's lock rows are profiled: run-queue latency, pick-next
//! time, condition-variable and other plain futex waits (the "not a lock"
//! sections under the table) are not lock contention, and Go's mutex
//! profile leaves them out too.
//!
//! [`encode`] is a pure function of the report: `report`/`run --pprof`
//! write its bytes, and a server can return them as they are.

use std::collections::HashMap;
use std::io::Write;

use crate::model::Row;
use crate::output::{Report, Section};
use crate::sources::{futex, ulock};

/// The messages of profile.proto this writer uses (all of them but the
/// deprecated ones), declared for prost; field numbers are the proto's.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        /// Index 0 must be "".
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Leaf first.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

use proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

/// The mapping of kernel frames.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

/// The sample types, in order: Go's mutex profile's two, then the holds'.
pub const CONTENTIONS: (&str, &str) = ("contentions", "count");
pub const DELAY: (&str, &str) = ("delay", "nanoseconds");
pub const HOLDS: (&str, &str) = ("holds", "count");
pub const HOLD: (&str, &str) = ("hold", "nanoseconds");

/// The profile of `report`'s lock rows (see the module's documentation),
/// with no wall-clock time (`time_nanos` 0).
pub fn profile(report: &Report) -> Profile {
    Builder::default().build(report)
}

/// [`profile`] gzipped, as pprof files and `/debug/pprof/*` responses are.
pub fn encode(report: &Report) -> Vec<u8> {
    encode_at(report, 0)
}

/// [`encode`] with the profile's start as wall-clock time (ns since the
/// Unix epoch), which readers show as its `Time:`.
pub fn encode_at(report: &Report, time_nanos: i64) -> Vec<u8> {
    let mut p = profile(report);
    p.time_nanos = time_nanos;
    gzip(&prost::Message::encode_to_vec(&p))
}

/// [`encode_at`] for a report that ends now: its time is now minus its
/// duration.
pub fn encode_ending_now(report: &Report) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let dur = i64::try_from(report.duration_ns).unwrap_or(i64::MAX);
    encode_at(report, now.saturating_sub(dur).max(0))
}

/// `raw` gzipped. Writing into a Vec cannot fail; if the encoder ever
/// did, the raw protobuf is returned: every pprof reader takes an
/// uncompressed profile too.
fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    match gz.write_all(raw).and_then(|()| gz.finish()) {
        Ok(v) => v,
        Err(_) => raw.to_vec(),
    }
}

/// Interns strings, functions and locations while samples are added.
#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    /// (name, kernel) -> location id (one location per function).
    locations: HashMap<(String, bool), u64>,
    profile: Profile,
    kernel_mapping: Option<u64>,
}

impl Builder {
    fn s(&mut self, v: &str) -> i64 {
        if self.strings.is_empty() {
            self.strings.push(String::new());
            self.string_ids.insert(String::new(), 0);
        }
        if let Some(&i) = self.string_ids.get(v) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(v.to_string());
        self.string_ids.insert(v.to_string(), i);
        i
    }

    fn value_type(&mut self, (t, u): (&str, &str)) -> ValueType {
        ValueType {
            r#type: self.s(t),
            unit: self.s(u),
        }
    }

    /// The location of the function `name` (kernel or not).
    fn location(&mut self, name: &str, kernel: bool) -> u64 {
        if let Some(&id) = self.locations.get(&(name.to_string(), kernel)) {
            return id;
        }
        let mapping_id = if kernel {
            match self.kernel_mapping {
                Some(id) => id,
                None => {
                    let id = self.profile.mapping.len() as u64 + 1;
                    let filename = self.s(KERNEL_MAPPING);
                    self.profile.mapping.push(Mapping {
                        id,
                        filename,
                        has_functions: true,
                        ..Default::default()
                    });
                    self.kernel_mapping = Some(id);
                    id
                }
            }
        } else {
            0
        };
        let name_id = self.s(name);
        let function_id = self.profile.function.len() as u64 + 1;
        // no system (mangled) name: the names are demangled already, and
        // pprof's demangler, given a system name equal to the name, would
        // cut what looks like C++ parameters and templates out of it (the
        // `(fd 4 of ...)` of a lock's name, the `<T as Trait>` of a Rust
        // frame)
        self.profile.function.push(Function {
            id: function_id,
            name: name_id,
            ..Default::default()
        });
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            mapping_id,
            line: vec![Line {
                function_id,
                ..Default::default()
            }],
            ..Default::default()
        });
        self.locations.insert((name.to_string(), kernel), id);
        id
    }

    fn str_label(&mut self, key: &str, v: &str) -> Label {
        Label {
            key: self.s(key),
            str: self.s(v),
            ..Default::default()
        }
    }

    fn num_label(&mut self, key: &str, v: i64) -> Label {
        Label {
            key: self.s(key),
            num: v,
            ..Default::default()
        }
    }

    fn labels(&mut self, r: &Row) -> Vec<Label> {
        let mut l = Vec::new();
        if let Some(lock) = r.lock_name.as_ref().or(r.lock.as_ref()) {
            l.push(self.str_label("lock", lock));
        }
        if let Some(k) = r.kind {
            l.push(self.str_label("kind", &k.name()));
        }
        l.push(self.str_label("source", r.source));
        if let Some(c) = &r.comm {
            l.push(self.str_label("comm", c));
        }
        if let Some(c) = &r.cgroup {
            l.push(self.str_label("cgroup", c));
        }
        if let Some(p) = r.pid {
            l.push(self.num_label("pid", i64::from(p)));
        }
        if let Some(t) = r.tid {
            l.push(self.num_label("tid", i64::from(t)));
        }
        l
    }

    fn build(mut self, report: &Report) -> Profile {
        let holds = report
            .rows
            .iter()
            .any(|r| Section::of(r) == Section::Lock && r.hold_ns.is_some());
        let mut types = vec![CONTENTIONS, DELAY];
        if holds {
            types.extend([HOLDS, HOLD]);
        }
        self.profile.sample_type = types.iter().map(|&t| self.value_type(t)).collect();
        self.profile.period_type = Some(self.value_type(CONTENTIONS));
        self.profile.period = 1;
        self.profile.default_sample_type = self.s(DELAY.0);
        self.profile.duration_nanos = i64::try_from(report.duration_ns).unwrap_or(i64::MAX);
        let comments = [
            format!("lockscope {}", env!("CARGO_PKG_VERSION")),
            format!("targets: {}", report.targets),
            format!("rows by {}", report.by),
        ];
        self.profile.comment = comments.iter().map(|c| self.s(c)).collect();
        for r in report
            .rows
            .iter()
            .filter(|r| Section::of(r) == Section::Lock)
        {
            self.add_row(r, holds);
        }
        self.profile.string_table = std::mem::take(&mut self.strings);
        if self.profile.string_table.is_empty() {
            self.profile.string_table.push(String::new());
        }
        self.profile
    }

    fn add_row(&mut self, r: &Row, holds: bool) {
        let labels = self.labels(r);
        let leaf_name = lock_frame(r);
        let leaf = self.location(&leaf_name, false);
        let values = |count: u64, ns: u64, hcount: u64, hns: u64| {
            let v = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
            let mut out = vec![v(count), v(ns)];
            if holds {
                out.extend([v(hcount), v(hns)]);
            }
            out
        };
        let (mut count, mut ns) = (r.count, r.wait_ns.total);
        let mut hcount = r.holds.unwrap_or(0);
        let mut hns = r.hold_ns.map_or(0, |h| h.total);
        for st in &r.stacks {
            let (hc, hn) = (st.hold_count, st.hold_total_ns);
            if st.count == 0 && st.total_ns == 0 && hc == 0 && hn == 0 {
                continue;
            }
            let mut ids = vec![leaf];
            for f in &st.kernel {
                ids.push(self.location(f, true));
            }
            for f in &st.user {
                ids.push(self.location(f, false));
            }
            self.profile.sample.push(Sample {
                location_id: ids,
                value: values(st.count, st.total_ns, hc, hn),
                label: labels.clone(),
            });
            count = count.saturating_sub(st.count);
            ns = ns.saturating_sub(st.total_ns);
            hcount = hcount.saturating_sub(hc);
            hns = hns.saturating_sub(hn);
        }
        if count == 0 && ns == 0 && hcount == 0 && hns == 0 {
            return;
        }
        // what the stacks do not cover: the lock and its caller
        let mut ids = vec![leaf];
        if let Some(c) = &r.caller {
            ids.push(self.location(c, caller_in_kernel(r)));
        }
        self.profile.sample.push(Sample {
            location_id: ids,
            value: values(count, ns, hcount, hns),
            label: labels,
        });
    }
}

/// Whether a row's caller is a kernel function: the kernel's locks' callers
/// are, pthread locks' and futex waits' are user code.
fn caller_in_kernel(r: &Row) -> bool {
    use crate::model::LockKind::*;
    match r.kind {
        Some(UserMutex | UserRwlockRead | UserRwlockWrite | UserSpin | UserCond | Futex) => false,
        Some(_) => true,
        None => ![
            ulock::SOURCE,
            ulock::ROW_MUTEX,
            ulock::ROW_RWLOCK,
            ulock::ROW_SPIN,
            futex::SOURCE,
            futex::ROW_MUTEX,
            futex::ROW_RWLOCK,
        ]
        .contains(&r.source),
    }
}

/// The leaf frame of a row's samples: `[KIND NAME]`, as the flame graphs
/// name it.
pub fn lock_frame(r: &Row) -> String {
    format!(
        "[{} {}]",
        r.kind.map_or_else(|| "lock".into(), |k| k.name()),
        r.lock_name
            .as_deref()
            .or(r.lock.as_deref())
            .unwrap_or("(several)")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GroupBy, LockKind, Record, StackSample, Stats, group};
    use std::io::Read;

    const MS: u64 = 1_000_000;

    fn rec(source: &'static str, kind: LockKind, lock: u64, caller: &str, waits: &[u64]) -> Record {
        Record {
            source,
            kind,
            tid: 101,
            ..Record::sample(lock, caller, waits)
        }
    }

    /// A pipe mutex: 3 waits (30, 20, 1 ms), the two long ones with a
    /// stack; a pthread mutex: 1 wait of 5 us and 4 holds of 10 us; a
    /// run-queue row (left out).
    fn report() -> Report {
        let mut pipe = rec(
            "kernel-contention",
            LockKind::Mutex,
            0x10,
            "pipe_write",
            &[30 * MS, 20 * MS, MS],
        );
        pipe.lock_name = Some("pipe:[42] (fd 4 of 100 w)".into());
        pipe.stacks = vec![StackSample {
            kernel: vec!["pipe_write".into(), "vfs_write".into()],
            user: vec!["write".into(), "main".into()],
            count: 2,
            total_ns: 50 * MS,
            max_ns: 30 * MS,
            ..Default::default()
        }];
        let mut user = rec(
            ulock::ROW_MUTEX,
            LockKind::UserMutex,
            0x20,
            "worker+0x10",
            &[5_000],
        );
        user.tid = 102;
        user.hold = Some(Stats::of(&[10_000; 4]));
        user.acquired = Some(4);
        let runq = rec(
            crate::sources::sched::SOURCE,
            LockKind::RunQueue,
            0,
            "x",
            &[7 * MS],
        );
        Report {
            duration_ns: 2_000 * MS,
            targets: "pid 100".into(),
            ..Report::of_rows(group(&[pipe, user, runq], GroupBy::Lock))
        }
    }

    fn decode(bytes: &[u8]) -> Profile {
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzipped");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .expect("gunzip");
        <Profile as prost::Message>::decode(raw.as_slice()).expect("profile.proto")
    }

    fn st(p: &Profile, i: i64) -> &str {
        &p.string_table[i as usize]
    }

    /// A sample's frames, leaf first, each with whether it is a kernel
    /// frame.
    fn frames(p: &Profile, s: &Sample) -> Vec<(String, bool)> {
        s.location_id
            .iter()
            .map(|&id| {
                let loc = &p.location[id as usize - 1];
                assert_eq!(loc.id, id);
                let f = &p.function[loc.line[0].function_id as usize - 1];
                let kernel = loc.mapping_id != 0
                    && st(p, p.mapping[loc.mapping_id as usize - 1].filename) == KERNEL_MAPPING;
                (st(p, f.name).to_string(), kernel)
            })
            .collect()
    }

    fn labels(p: &Profile, s: &Sample) -> Vec<(String, String)> {
        s.label
            .iter()
            .map(|l| {
                let v = if l.str != 0 {
                    st(p, l.str).to_string()
                } else {
                    l.num.to_string()
                };
                (st(p, l.key).to_string(), v)
            })
            .collect()
    }

    #[test]
    fn sample_types_are_gos_mutex_profile_and_holds() {
        let p = decode(&encode(&report()));
        assert_eq!(p.string_table[0], "");
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|t| (st(&p, t.r#type), st(&p, t.unit)))
            .collect();
        assert_eq!(types, [CONTENTIONS, DELAY, HOLDS, HOLD]);
        assert_eq!(st(&p, p.default_sample_type), "delay");
        let pt = p.period_type.as_ref().expect("period type");
        assert_eq!((st(&p, pt.r#type), st(&p, pt.unit)), CONTENTIONS);
        assert_eq!(p.period, 1);
        assert_eq!(p.duration_nanos, 2_000 * MS as i64);
        assert_eq!(p.time_nanos, 0);
        assert_eq!(decode(&encode_at(&report(), 77)).time_nanos, 77);
    }

    #[test]
    fn values_add_up_to_the_reports_lock_rows() {
        let p = decode(&encode(&report()));
        let sum = |i: usize| p.sample.iter().map(|s| s.value[i]).sum::<i64>();
        // 3 + 1 waits; the run-queue row's 7 ms is not a lock wait
        assert_eq!(sum(0), 4);
        assert_eq!(sum(1), (51 * MS + 5_000) as i64);
        assert_eq!(sum(2), 4);
        assert_eq!(sum(3), 40_000);
        assert!(p.sample.iter().all(|s| s.value.len() == 4));
        assert_eq!(p.sample.len(), 3, "stack, stack remainder, user mutex");
    }

    #[test]
    fn stacks_are_leaf_first_with_kernel_frames_in_the_kernel_mapping() {
        let p = decode(&encode(&report()));
        let leaf = "[mutex pipe:[42] (fd 4 of 100 w)]";
        let s = &p.sample[0];
        assert_eq!(
            frames(&p, s),
            [
                (leaf.to_string(), false),
                ("pipe_write".into(), true),
                ("vfs_write".into(), true),
                ("write".into(), false),
                ("main".into(), false),
            ]
        );
        assert_eq!(s.value, [2, 50 * MS as i64, 0, 0]);
        // the wait under the stack threshold: the lock and its caller
        let rest = &p.sample[1];
        assert_eq!(
            frames(&p, rest),
            [(leaf.to_string(), false), ("pipe_write".into(), true)]
        );
        assert_eq!(rest.value, [1, MS as i64, 0, 0]);
        assert_eq!(
            rest.location_id[1], s.location_id[1],
            "one location per function"
        );
        // a pthread mutex: its caller is user code
        let u = &p.sample[2];
        assert_eq!(
            frames(&p, u),
            [
                ("[pthread-mutex 0x20]".to_string(), false),
                ("worker+0x10".into(), false)
            ]
        );
        assert_eq!(u.value, [1, 5_000, 4, 40_000]);
        assert_eq!(p.mapping.len(), 1);
        assert!(p.mapping[0].has_functions);
        let names: Vec<&str> = p.function.iter().map(|f| st(&p, f.name)).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            names.len(),
            "one function per name: {names:?}"
        );
        assert!(
            p.function.iter().all(|f| f.system_name == 0),
            "no system name: pprof would demangle the names"
        );
    }

    #[test]
    fn samples_carry_the_rows_labels() {
        let p = decode(&encode(&report()));
        let l = labels(&p, &p.sample[0]);
        let want = [
            ("lock", "pipe:[42] (fd 4 of 100 w)"),
            ("kind", "mutex"),
            ("source", "kernel-contention"),
            ("comm", "w"),
            ("cgroup", "/a"),
            ("pid", "100"),
            ("tid", "101"),
        ];
        assert_eq!(
            l,
            want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
        );
        let l = labels(&p, &p.sample[2]);
        assert!(l.contains(&("lock".into(), "0x20".into())), "{l:?}");
        assert!(l.contains(&("source".into(), "user-mutex".into())), "{l:?}");
        assert!(l.contains(&("tid".into(), "102".into())), "{l:?}");
        let comments: Vec<&str> = p.comment.iter().map(|&c| st(&p, c)).collect();
        assert!(comments.contains(&"targets: pid 100"), "{comments:?}");
    }

    #[test]
    fn a_report_without_holds_is_a_go_mutex_profile() {
        let mut rep = report();
        rep.rows.retain(|r| r.hold_ns.is_none());
        // rows of several threads and locks: no tid, no lock label
        for r in &mut rep.rows {
            r.tid = None;
            r.lock = None;
            r.lock_name = None;
            r.stacks.clear();
        }
        let p = decode(&encode(&rep));
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|t| (st(&p, t.r#type), st(&p, t.unit)))
            .collect();
        assert_eq!(types, [CONTENTIONS, DELAY]);
        assert_eq!(p.sample.len(), 1);
        assert_eq!(p.sample[0].value, [3, 51 * MS as i64]);
        assert_eq!(
            frames(&p, &p.sample[0]),
            [
                ("[mutex (several)]".to_string(), false),
                ("pipe_write".into(), true)
            ]
        );
        let keys: Vec<String> = labels(&p, &p.sample[0]).into_iter().map(|l| l.0).collect();
        assert_eq!(keys, ["kind", "source", "comm", "cgroup", "pid"]);
        // nothing to profile: still a valid, empty profile
        rep.rows.clear();
        let p = decode(&encode(&rep));
        assert!(p.sample.is_empty() && p.location.is_empty());
        assert_eq!(p.sample_type.len(), 2);
    }
}
