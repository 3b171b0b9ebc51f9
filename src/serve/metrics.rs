//! `/metrics`: a [`Snapshot`] in the OpenMetrics text format, written by
//! the prometheus-client crate through a custom collector (the values are
//! the kernel's cumulative counts, not observations made here).
//!
//! Histograms use the kernel's own log2 slots as buckets: slot k counts
//! waits in [2^(k-1), 2^k) ns, so bucket `le` = 2^k ns in seconds is exact
//! for every wait shorter than 2^k ns. Slots 0..=7 (waits under 128 ns)
//! share the first bucket and slots 36 and up (waits of 2^35 ns = 34.4 s
//! and longer) only count in `+Inf`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::snapshot::{Series, SeriesKey, Snapshot};
use crate::model::{HIST_SLOTS, Log2Hist, Stats};

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// First and last log2 slot with a bucket of its own.
pub const FIRST_BUCKET_SLOT: usize = 7;
pub const LAST_BUCKET_SLOT: usize = 36;

/// Counters of the HTTP side, shared with the server.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub requests: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub shed_connections: AtomicU64,
    pub snapshot_timeouts: AtomicU64,
}

/// `(le in seconds, count in the bucket)`, non-cumulative, as
/// prometheus-client's histogram encoder takes them.
pub fn buckets(h: &Log2Hist) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(LAST_BUCKET_SLOT - FIRST_BUCKET_SLOT + 2);
    let below: u64 = h.slots[..=FIRST_BUCKET_SLOT].iter().sum();
    out.push((slot_le(FIRST_BUCKET_SLOT), below));
    for k in FIRST_BUCKET_SLOT + 1..LAST_BUCKET_SLOT {
        out.push((slot_le(k), h.slots[k]));
    }
    let rest: u64 = h.slots[LAST_BUCKET_SLOT..HIST_SLOTS].iter().sum();
    out.push((f64::INFINITY, rest));
    out
}

/// Upper bound of log2 slot `k` in seconds: 2^k ns.
pub fn slot_le(k: usize) -> f64 {
    (1u64 << k) as f64 / 1e9
}

/// Writes the whole exposition of `snap`.
pub fn encode(snap: Arc<Snapshot>, http: Arc<HttpStats>) -> Result<String, std::fmt::Error> {
    finish(&encode_snapshot(snap)?, http)
}

/// The part of the exposition that depends only on the snapshot: the
/// server encodes it once per snapshot and reuses it for every scrape that
/// gets the same snapshot.
pub fn encode_snapshot(snap: Arc<Snapshot>) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(Exposition { snap }));
    let mut out = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode_registry(&mut out, &reg)?;
    Ok(out)
}

/// A snapshot's part, then the HTTP counters (read now), then `# EOF`.
pub fn finish(snapshot_part: &str, http: Arc<HttpStats>) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(HttpExposition { http }));
    let mut out = String::with_capacity(snapshot_part.len() + 2048);
    out.push_str(snapshot_part);
    prometheus_client::encoding::text::encode_registry(&mut out, &reg)?;
    prometheus_client::encoding::text::encode_eof(&mut out)?;
    Ok(out)
}

#[derive(Debug)]
struct Exposition {
    snap: Arc<Snapshot>,
}

#[derive(Debug)]
struct HttpExposition {
    http: Arc<HttpStats>,
}

impl Collector for HttpExposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let counters: [(&str, &str, u64); 4] = [
            (
                "lockscope_http_requests",
                "HTTP requests served",
                self.http.requests.load(Ordering::Relaxed),
            ),
            (
                "lockscope_http_rejected_connections",
                "Connections closed at once: --max-connections were open, all in an exchange",
                self.http.rejected_connections.load(Ordering::Relaxed),
            ),
            (
                "lockscope_http_shed_connections",
                "Connections closed to make room for a new one: of the --max-connections open, \
                 the one that had waited longest for a request head",
                self.http.shed_connections.load(Ordering::Relaxed),
            ),
            (
                "lockscope_http_snapshot_timeouts",
                "Requests answered 503 because the collector did not answer in time",
                self.http.snapshot_timeouts.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            m.encode_counter::<NoLabelSet, u64, u64>(&v, None)?;
        }
        Ok(())
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn series_labels(k: &SeriesKey) -> Labels<'_> {
    let mut l = vec![
        ("source", k.source),
        ("kind", k.kind.as_str()),
        ("lock", k.lock.as_str()),
        ("caller", k.caller.as_str()),
        ("cgroup", k.cgroup.as_str()),
    ];
    if let Some((pid, comm)) = &k.process {
        l.push(("pid", pid.as_str()));
        l.push(("comm", comm.as_str()));
    }
    l
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &mut dyn Iterator<Item = (&SeriesKey, &Stats)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (k, st) in series {
        let labels = series_labels(k);
        m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            st.total_ns as f64 / 1e9,
            st.count,
            &buckets(&st.hist),
            None,
        )?;
    }
    Ok(())
}

/// One counter per lock series.
fn series_counter(
    enc: &mut DescriptorEncoder,
    snap: &Snapshot,
    name: &str,
    help: &str,
    value: fn(&Series) -> u64,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (k, s) in &snap.series {
        let labels = series_labels(k);
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, u64, u64>(&value(s), None)?;
    }
    Ok(())
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &*self.snap;
        {
            let mut m = enc.encode_descriptor(
                "lockscope_build",
                "lockscope's version",
                None,
                MetricType::Info,
            )?;
            m.encode_info(&vec![("version", env!("CARGO_PKG_VERSION"))])?;
        }
        {
            let mut m = enc.encode_descriptor(
                "lockscope_source",
                "Each source and the backend it attached with",
                None,
                MetricType::Info,
            )?;
            for t in &s.sources {
                let backend = t.status.backend.as_deref().unwrap_or("");
                let hold = if t.measures_hold { "true" } else { "false" };
                let avail = if t.status.available { "true" } else { "false" };
                m.encode_info(&vec![
                    ("source", t.status.name.as_str()),
                    ("backend", backend),
                    ("available", avail),
                    ("measures_hold", hold),
                ])?;
            }
        }
        histogram(
            &mut enc,
            "lockscope_wait",
            "Contended waits for a lock (log2 buckets of the in-kernel histogram)",
            &mut s.series.iter().map(|(k, v)| (k, &v.wait)),
        )?;
        histogram(
            &mut enc,
            "lockscope_hold",
            "Lock hold times, for sources that measure holds",
            &mut s
                .series
                .iter()
                .filter_map(|(k, v)| v.hold.as_ref().map(|h| (k, h))),
        )?;
        series_counter(
            &mut enc,
            s,
            "lockscope_contended",
            "Contended acquisitions (equals lockscope_wait_seconds_count)",
            |v| v.wait.count,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "lockscope_acquired",
                "Every acquisition, contended or not, for sources that see them all \
                 (user-locks, mmap-lock); lockscope_contended counts those that waited",
                None,
                MetricType::Counter,
            )?;
            for (k, v) in &s.series {
                let Some(n) = v.acquired else { continue };
                m.encode_family(&series_labels(k))?
                    .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
            }
        }
        series_counter(
            &mut enc,
            s,
            "lockscope_aborted",
            "Waits that ended without the lock (signal, timeout)",
            |v| v.aborted,
        )?;
        series_counter(
            &mut enc,
            s,
            "lockscope_failed",
            "Failed acquisitions (a trylock that found the lock taken)",
            |v| v.failed,
        )?;
        series_counter(
            &mut enc,
            s,
            "lockscope_partial",
            "Operations whose start was not seen (counted, never timed)",
            |v| v.partial,
        )?;
        series_counter(&mut enc, s, "lockscope_spun", "Waits that spun", |v| v.spun)?;
        series_counter(
            &mut enc,
            s,
            "lockscope_slept",
            "Waits during which the waiter switched out",
            |v| v.slept,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "lockscope_wait_split",
                "Of the wait time: on CPU (spinning), runnable, asleep",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            for (k, v) in &s.series {
                let Some(sp) = &v.split else { continue };
                for (state, ns) in [
                    ("oncpu", sp.oncpu),
                    ("runnable", sp.runnable),
                    ("asleep", sp.asleep),
                ] {
                    let mut labels = series_labels(k);
                    labels.push(("state", state));
                    m.encode_family(&labels)?
                        .encode_counter::<NoLabelSet, f64, f64>(&(ns as f64 / 1e9), None)?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "lockscope_lost",
                "Loss counters of each source: what was not measured and why",
                None,
                MetricType::Counter,
            )?;
            for t in &s.sources {
                for (counter, v) in &t.lost {
                    let labels = vec![("source", t.status.name.as_str()), ("counter", counter)];
                    m.encode_family(&labels)?
                        .encode_counter::<NoLabelSet, u64, u64>(v, None)?;
                }
            }
        }
        type ProgValue = fn(&crate::sources::ProgStats) -> f64;
        let prog_metrics: [(&str, &str, Option<Unit>, ProgValue); 3] = [
            (
                "lockscope_bpf_program_runs",
                "Runs of each BPF program",
                None,
                |p| p.run_cnt as f64,
            ),
            (
                "lockscope_bpf_program_run",
                "Kernel run time of each BPF program (needs sysctl kernel.bpf_stats_enabled=1)",
                Some(Unit::Seconds),
                |p| p.run_time_ns as f64 / 1e9,
            ),
            (
                "lockscope_bpf_program_recursion_misses",
                "Runs of each BPF program the kernel skipped (recursion)",
                None,
                |p| p.recursion_misses as f64,
            ),
        ];
        for (name, help, unit, value) in prog_metrics {
            let mut m = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
            for t in &s.sources {
                for p in &t.programs {
                    let labels = vec![("source", t.status.name.as_str()), ("program", &p.name)];
                    m.encode_family(&labels)?
                        .encode_counter::<NoLabelSet, f64, f64>(&value(p), None)?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "lockscope_series",
                "Lock series exported (the cap is --max-series, plus one overflow series per source)",
                None,
                MetricType::Gauge,
            )?;
            m.encode_gauge(&(s.series.len() as u64))?;
        }
        {
            let mut m = enc.encode_descriptor(
                "lockscope_series_limit",
                "--max-series",
                None,
                MetricType::Gauge,
            )?;
            m.encode_gauge(&(s.max_series as u64))?;
        }
        {
            let mut m = enc.encode_descriptor(
                "lockscope_folded",
                "Label sets (what=series) and processes (what=process) folded into 'other' by the caps",
                None,
                MetricType::Counter,
            )?;
            let f = &s.folds;
            for (what, v) in [("series", f.folded_series), ("process", f.folded_processes)] {
                m.encode_family(&vec![("what", what)])?
                    .encode_counter::<NoLabelSet, u64, u64>(&v, None)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "lockscope_process_cpu",
                "CPU time used by lockscope itself (user space and kernel, BPF programs excluded)",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            for (mode, v) in [
                ("user", s.self_stats.cpu_user_s),
                ("system", s.self_stats.cpu_system_s),
            ] {
                m.encode_family(&vec![("mode", mode)])?
                    .encode_counter::<NoLabelSet, f64, f64>(&v, None)?;
            }
        }
        let gauges: [(&str, &str, Option<Unit>, f64); 5] = [
            (
                "lockscope_process_resident_memory",
                "Resident memory of lockscope (VmRSS)",
                Some(Unit::Bytes),
                s.self_stats.rss_bytes as f64,
            ),
            (
                "lockscope_process_peak_resident_memory",
                "Peak resident memory of lockscope (VmHWM)",
                Some(Unit::Bytes),
                s.self_stats.peak_rss_bytes as f64,
            ),
            (
                "lockscope_process_threads",
                "Threads of lockscope",
                None,
                s.self_stats.threads as f64,
            ),
            (
                "lockscope_collect_duration",
                "How long the last read of the in-kernel maps took",
                Some(Unit::Seconds),
                s.collect.collect_ns as f64 / 1e9,
            ),
            (
                "lockscope_uptime",
                "Time since the sources were attached",
                Some(Unit::Seconds),
                s.uptime_s,
            ),
        ];
        for (name, help, unit, v) in gauges {
            let mut m = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
            m.encode_gauge(&v)?;
        }
        let counters: [(&str, &str, u64); 2] = [
            (
                "lockscope_collections",
                "Reads of the in-kernel maps",
                s.collect.collections,
            ),
            (
                "lockscope_collect_errors",
                "Reads of the in-kernel maps that failed (the previous data was served)",
                s.collect.collect_errors,
            ),
        ];
        for (name, help, v) in counters {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            m.encode_counter::<NoLabelSet, u64, u64>(&v, None)?;
        }
        if s.deadlocks.watched {
            deadlock_metrics(&mut enc, &s.deadlocks)?;
        }
        Ok(())
    }
}

/// The deadlocks of the target processes, by `pid` (only when serve
/// watches processes: `-p`, `-t`).
fn deadlock_metrics(
    enc: &mut DescriptorEncoder,
    d: &super::snapshot::Deadlocks,
) -> std::fmt::Result {
    {
        let mut m = enc.encode_descriptor(
            "lockscope_deadlocks",
            "Deadlocks reported: cycles of threads each waiting for a lock the next one holds,              every edge there for the threshold (1 s); a cycle counts once while it lasts",
            None,
            MetricType::Counter,
        )?;
        for c in &d.by_process {
            m.encode_family(&vec![("pid", c.pid.as_str())])?
                .encode_counter::<NoLabelSet, u64, u64>(&c.tally.reported, None)?;
        }
    }
    let mut m = enc.encode_descriptor(
        "lockscope_deadlocked_threads",
        "Threads in a reported deadlock cycle that is still there",
        None,
        MetricType::Gauge,
    )?;
    for c in &d.by_process {
        m.encode_family(&vec![("pid", c.pid.as_str())])?
            .encode_gauge(&c.tally.live_threads)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Record;
    use crate::output::SourceStatus;
    use crate::serve::snapshot::{Folder, SourceTotals};
    use std::collections::BTreeMap;

    fn record(comm: &str, waits: &[u64]) -> Record {
        Record {
            pid: 42,
            tid: 42,
            comm: comm.into(),
            cgroup: Some("/user.slice".into()),
            spun: 1,
            split: Some(crate::model::WaitSplit::from_offcpu(
                waits.iter().sum(),
                waits.iter().sum(),
                0,
            )),
            ..Record::sample(0xffff_8881_0351_5600, "anon_pipe_write", waits)
        }
    }

    fn snapshot(recs: &[Record], per_process: bool) -> Snapshot {
        let mut f = Folder::new(100, per_process, 10);
        let folded = f.fold(recs, |_| None);
        Snapshot {
            series: folded.series,
            max_series: 100,
            per_process,
            sources: vec![SourceTotals {
                lost: BTreeMap::from([("map_full".to_string(), 2)]),
                ..SourceTotals::new(SourceStatus {
                    name: "kernel-contention".into(),
                    backend: Some("tp_btf".into()),
                    available: true,
                    reason: None,
                })
            }],
            ..Default::default()
        }
    }

    /// `name{labels} value` lines of the exposition, comments dropped.
    fn samples(text: &str) -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').expect("name value");
                (k.to_string(), v.parse::<f64>().expect("number"))
            })
            .collect()
    }

    #[test]
    fn buckets_are_the_kernel_slots_cumulated_with_le_in_seconds() {
        let mut h = Log2Hist::default();
        h.record(5); // slot 3: folded into the first bucket (le 128 ns)
        h.record(20_000_000); // slot 25: [16.8 ms, 33.6 ms)
        h.record(20_000_000);
        h.record(100_000_000_000); // 100 s: slot 37, only in +Inf
        let b = buckets(&h);
        assert_eq!(b.len(), LAST_BUCKET_SLOT - FIRST_BUCKET_SLOT + 1);
        assert_eq!(b[0], (128e-9, 1));
        let i = b
            .iter()
            .position(|(le, _)| *le == 0.033554432)
            .expect("le 2^25 ns");
        assert_eq!(b[i].1, 2);
        assert_eq!(b[i - 1], (0.016777216, 0));
        assert_eq!(*b.last().expect("+Inf"), (f64::INFINITY, 1));
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), h.count());
        // strictly increasing bounds
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn exposition_has_histograms_counters_losses_and_self_metrics() {
        let snap = snapshot(
            &[record("ls-waiter", &[20_000_000, 21_000_000, 900])],
            false,
        );
        let text = encode(Arc::new(snap), Arc::new(HttpStats::default())).expect("encodes");
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
        let s = samples(&text);
        let get = |name: &str| -> Vec<f64> {
            s.iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| *v)
                .collect()
        };
        let labels = "source=\"kernel-contention\",kind=\"mutex\",lock=\"0xffff888103515600\",\
                      caller=\"anon_pipe_write\",cgroup=\"/user.slice\"";
        assert_eq!(
            get(&format!("lockscope_wait_seconds_count{{{labels}}}")),
            vec![3.0]
        );
        let sum = get(&format!("lockscope_wait_seconds_sum{{{labels}}}"));
        assert!((sum[0] - 0.0410009).abs() < 1e-9, "{sum:?}");
        // cumulative buckets: 1 wait under 1.024 us, 3 under 33.6 ms
        let b = |le: &str| {
            get(&format!(
                "lockscope_wait_seconds_bucket{{le=\"{le}\",{labels}}}"
            ))
        };
        assert_eq!(b("0.000001024"), vec![1.0], "{text}");
        assert_eq!(b("0.016777216"), vec![1.0]);
        assert_eq!(b("0.033554432"), vec![3.0]);
        assert_eq!(b("+Inf"), vec![3.0]);
        assert_eq!(
            get(&format!("lockscope_contended_total{{{labels}}}")),
            vec![3.0]
        );
        assert_eq!(
            get(&format!("lockscope_slept_total{{{labels}}}")),
            vec![3.0]
        );
        assert_eq!(
            get(&format!("lockscope_aborted_total{{{labels}}}")),
            vec![0.0]
        );
        assert_eq!(
            get("lockscope_lost_total{source=\"kernel-contention\",counter=\"map_full\"}"),
            vec![2.0]
        );
        assert_eq!(
            get(&format!(
                "lockscope_wait_split_seconds_total{{{labels},state=\"asleep\"}}"
            )),
            vec![0.0410009]
        );
        assert!(
            !text.contains("lockscope_hold_seconds_count"),
            "no holds measured"
        );
        assert!(text.contains("lockscope_build_info{version=\""));
        assert!(text.contains("measures_hold=\"false\""));
        assert_eq!(get("lockscope_folded_total{what=\"series\"}"), vec![0.0]);
        assert_eq!(get("lockscope_series"), vec![1.0]);
        for name in [
            "lockscope_process_cpu_seconds_total{mode=\"user\"}",
            "lockscope_process_resident_memory_bytes",
            "lockscope_http_requests_total",
        ] {
            assert_eq!(get(name).len(), 1, "{name}: {text}");
        }
    }

    #[test]
    fn deadlocks_are_exported_by_pid_only_when_processes_are_watched() {
        use crate::serve::snapshot::{DeadlockCount, DeadlockTally};
        let tally = |reported, live_threads| DeadlockTally {
            reported,
            live_threads,
        };
        let snap = snapshot(&[record("x", &[1000])], false);
        let text = encode(Arc::new(snap.clone()), Arc::new(HttpStats::default())).expect("ok");
        assert!(!text.contains("lockscope_deadlock"), "{text}");
        let mut snap = snap;
        snap.deadlocks = Arc::new(crate::serve::snapshot::Deadlocks {
            watched: true,
            tally: tally(1, 2),
            by_process: vec![
                DeadlockCount {
                    pid: "4242".into(),
                    tally: tally(1, 2),
                },
                DeadlockCount {
                    pid: "7".into(),
                    tally: tally(0, 0),
                },
            ],
            ..Default::default()
        });
        let text = encode(Arc::new(snap), Arc::new(HttpStats::default())).expect("ok");
        let s = samples(&text);
        let get = |name: &str| s.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        assert_eq!(get("lockscope_deadlocks_total{pid=\"4242\"}"), Some(1.0));
        assert_eq!(get("lockscope_deadlocked_threads{pid=\"4242\"}"), Some(2.0));
        assert_eq!(get("lockscope_deadlocks_total{pid=\"7\"}"), Some(0.0));
        assert_eq!(get("lockscope_deadlocked_threads{pid=\"7\"}"), Some(0.0));
        assert!(
            text.contains("# TYPE lockscope_deadlocks counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE lockscope_deadlocked_threads gauge"),
            "{text}"
        );
    }

    #[test]
    fn per_process_labels_and_escaping_of_hostile_names() {
        let snap = snapshot(&[record("a\"b\\c\nd", &[1000])], true);
        let text = encode(Arc::new(snap), Arc::new(HttpStats::default())).expect("encodes");
        assert!(
            text.contains("pid=\"42\",comm=\"a\\\"b\\\\c\\nd\""),
            "label values are escaped: {text}"
        );
        // every sample line still parses as `name value`
        assert!(!samples(&text).is_empty());
    }

    #[test]
    fn hold_histograms_appear_for_sources_that_measure_holds() {
        let mut r = record("x", &[1000]);
        let mut hold = Stats::default();
        hold.record(30_000_000);
        r.hold = Some(hold);
        let text = encode(
            Arc::new(snapshot(&[r], false)),
            Arc::new(HttpStats::default()),
        )
        .expect("encodes");
        assert!(text.contains("lockscope_hold_seconds_count{"), "{text}");
        assert!(text.contains("lockscope_hold_seconds_sum{") && text.contains(" 0.03\n"));
        assert!(
            !text.contains("lockscope_acquired_total{"),
            "a source that does not see every acquisition: {text}"
        );
    }

    #[test]
    fn acquisitions_appear_for_sources_that_see_them_all() {
        // 1 contended wait of 500 acquisitions (user-locks-like)
        let mut r = record("x", &[1000]);
        r.acquired = Some(500);
        let text = encode(
            Arc::new(snapshot(&[r], false)),
            Arc::new(HttpStats::default()),
        )
        .expect("encodes");
        let s = samples(&text);
        let of = |prefix: &str| -> Vec<f64> {
            s.iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| *v)
                .collect()
        };
        assert_eq!(of("lockscope_acquired_total{"), vec![500.0], "{text}");
        assert_eq!(of("lockscope_contended_total{"), vec![1.0], "{text}");
    }
}
