//! Setup shared by the sources whose BPF objects include
//! `src/bpf/target.bpf.h`: the same settings and filter maps under the same
//! names in every object, so one macro fills any of their skeletons.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use super::{as_bytes, from_bytes};

/// Writes the target settings into an open skeleton's `.rodata`.
macro_rules! set_target_rodata {
    ($rodata:expr, $opts:expr) => {{
        let r = $rodata;
        let t = &$opts.targets;
        r.self_tgid = std::process::id();
        r.filter_pid = !t.pids.is_empty();
        r.filter_tid = !t.tids.is_empty();
        r.follow_forks = t.follow_forks;
        if let Some(comm) = &t.comm {
            r.filter_comm = true;
            for (dst, src) in r.target_comm.iter_mut().zip(comm.bytes().take(15)) {
                *dst = src as i8;
            }
        }
        if let Some(dir) = &t.cgroup {
            let (id, level) = crate::cgroup::id_and_level(dir).map_err(anyhow::Error::msg)?;
            r.filter_cgroup = true;
            r.target_cgroup_id = id;
            r.target_cgroup_level = level;
        }
    }};
}
pub(crate) use set_target_rodata;

/// An open skeleton's `.rodata`, with the target settings written
/// ([`set_target_rodata`]) and the standard settings named after them
/// (`emit_events`, `caller_mode`: [`std_rodata`]); the source writes its
/// own settings into it.
macro_rules! target_rodata {
    ($open:expr, $opts:expr $(, $field:ident)*) => {{
        let r = $open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| anyhow::anyhow!("BPF object has no .rodata"))?;
        $crate::sources::common::set_target_rodata!(&mut *r, $opts);
        $($crate::sources::common::std_rodata!(r, $opts, $field);)*
        r
    }};
}
pub(crate) use target_rodata;

/// One standard `.rodata` setting from the options: `emit_events` (the
/// event stream is read: `trace`, `top`), `caller_mode` (`--caller`).
macro_rules! std_rodata {
    ($r:expr, $opts:expr, emit_events) => {
        $r.emit_events = $opts.emit_events
    };
    ($r:expr, $opts:expr, caller_mode) => {
        $r.caller_mode = $opts.caller as u32
    };
}
pub(crate) use std_rodata;

/// Writes the `--stacks` settings (`stacks_on`, `stack_threshold_ns`,
/// `stack_sample`; with `holds`, also `hold_stacks_on`) when stacks are on.
macro_rules! set_stacks_rodata {
    ($rodata:expr, $opts:expr $(, $holds:ident)?) => {{
        let r = $rodata;
        if let Some(st) = $opts.stacks {
            r.stacks_on = true;
            $(r.$holds = st.holds;)?
            r.stack_threshold_ns = st.threshold_ns;
            r.stack_sample = st.sample;
        }
    }};
}
pub(crate) use set_stacks_rodata;

/// Marks structs generated from `lockscope.h` as [`super::Pod`].
macro_rules! bpf_pod {
    ($($t:ty),+ $(,)?) => {
        $(
            // SAFETY: generated from lockscope.h, repr(C), integer and
            // i8-array fields only, padded by hand to multiples of 8 bytes
            // (no implicit padding).
            unsafe impl $crate::sources::Pod for $t {}
        )+
    };
}
pub(crate) use bpf_pod;

/// Asserts at compile time that the Rust model and the BPF header agree on
/// the histogram layout: from `$field` of `$val` to its end lie exactly
/// the model's slots (`$n` histograms of them: 1 unless given).
macro_rules! assert_hist_layout {
    ($val:ty, $field:ident) => {
        $crate::sources::common::assert_hist_layout!($val, $field, 1);
    };
    ($val:ty, $field:ident, $n:literal) => {
        const _: () = assert!(
            std::mem::size_of::<[u64; $n * $crate::model::HIST_SLOTS]>()
                == std::mem::size_of::<$val>() - std::mem::offset_of!($val, $field)
        );
    };
}
pub(crate) use assert_hist_layout;

/// [`super::Source::name`] (the module's `SOURCE`) and
/// [`super::Source::life`] (`self.core`), as most sources define them.
macro_rules! source_name_and_life {
    () => {
        fn name(&self) -> &'static str {
            SOURCE
        }

        fn life(&self) -> &dyn $crate::sources::Life {
            &self.core
        }
    };
}
pub(crate) use source_name_and_life;

/// The wait statistics of an aggregation value with the usual counter
/// names (`count`, `total_ns`, `min_ns`, `max_ns`, `hist`).
macro_rules! wait_stats {
    ($v:expr) => {
        $crate::sources::common::stats($v.count, $v.total_ns, $v.min_ns, $v.max_ns, &$v.hist)
    };
}
pub(crate) use wait_stats;

/// The hold statistics of an aggregation value that times holds
/// (`hold_count`, `hold_total_ns`, `hold_min_ns`, `hold_max_ns`,
/// `hold_hist`).
macro_rules! hold_stats {
    ($v:expr) => {
        $crate::sources::common::stats(
            $v.hold_count,
            $v.hold_total_ns,
            $v.hold_min_ns,
            $v.hold_max_ns,
            &$v.hold_hist,
        )
    };
}
pub(crate) use hold_stats;

/// Wait or hold statistics from a kernel entry's counters (the minimum is
/// 0 when nothing was counted: the kernel starts it at u64::MAX).
pub fn stats(count: u64, total: u64, min: u64, max: u64, hist: &[u64]) -> crate::model::Stats {
    let mut h = crate::model::Log2Hist::default();
    h.slots.copy_from_slice(&hist[..crate::model::HIST_SLOTS]);
    crate::model::Stats {
        count,
        total_ns: total,
        min_ns: if count == 0 { 0 } else { min },
        max_ns: max,
        hist: h,
    }
}

/// Starts a source with the first backend of `order` that works; with it,
/// why the ones before it did not (for the status: "name: reason; ..."),
/// or, when none did, every reason. `skip` says why a backend cannot work
/// when that is plain before trying.
pub fn first_working<B: Copy, T>(
    order: impl IntoIterator<Item = B>,
    name: impl Fn(B) -> &'static str,
    skip: impl Fn(B) -> Option<String>,
    mut start: impl FnMut(B) -> Result<T>,
) -> std::result::Result<(T, Option<String>), String> {
    let mut errors = Vec::new();
    for backend in order {
        if let Some(why) = skip(backend) {
            errors.push(format!("{}: {why}", name(backend)));
            continue;
        }
        match start(backend) {
            Ok(s) => return Ok((s, (!errors.is_empty()).then(|| errors.join("; ")))),
            Err(e) => errors.push(format!("{}: {e:#}", name(backend))),
        }
    }
    Err(errors.join("; "))
}

/// Fills a loaded object's `target_pids`, `target_tids`, `target_cgroup`.
pub fn fill_target_maps(
    pids: &dyn MapCore,
    tids: &dyn MapCore,
    cgroup: &dyn MapCore,
    opts: &super::Options,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    for pid in &opts.targets.pids {
        pids.update(as_bytes(pid), &[1u8], MapFlags::ANY)
            .context("fill target_pids")?;
    }
    for tid in &opts.targets.tids {
        tids.update(as_bytes(tid), &[1u8], MapFlags::ANY)
            .context("fill target_tids")?;
    }
    if let Some(path) = &opts.targets.cgroup {
        let dir =
            std::fs::File::open(path).with_context(|| format!("open cgroup {}", path.display()))?;
        let fd = dir.as_raw_fd() as u32;
        cgroup
            .update(as_bytes(&0u32), as_bytes(&fd), MapFlags::ANY)
            .with_context(|| format!("{} is not a cgroup v2 directory", path.display()))?;
    }
    Ok(())
}

/// Sums a per-CPU array of u64 counters into `names[i] -> total`.
pub fn read_lost(map: &dyn MapCore, names: &[&str]) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let sum = percpu_u64_sum(map, i as u32).context("read lost counters")?;
        out.insert((*name).to_string(), sum);
    }
    Ok(out)
}

/// Counter `key` of a per-CPU array of u64 counters, summed over the CPUs
/// (0 when the key has no value).
pub fn percpu_u64_sum(map: &dyn MapCore, key: u32) -> Result<u64> {
    let per_cpu = map
        .lookup_percpu(as_bytes(&key), MapFlags::ANY)?
        .unwrap_or_default();
    Ok(per_cpu.iter().filter_map(|b| from_bytes::<u64>(b)).sum())
}

/// Every (key, value) of a hash map, decoded; entries deleted meanwhile
/// are skipped.
pub fn entries<K: super::Pod, V: super::Pod>(map: &dyn MapCore) -> Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    for_each_entry(map, |k: K, v: V| out.push((k, v)))?;
    Ok(out)
}

/// Calls `f` with every (key, value) of a hash map, decoded, as it is
/// read: no copy of the whole map (a full one is 16384 values of up to
/// ~1 KiB); entries deleted meanwhile are skipped.
pub fn for_each_entry<K: super::Pod, V: super::Pod>(
    map: &dyn MapCore,
    mut f: impl FnMut(K, V),
) -> Result<()> {
    for k in map.keys() {
        let Some(v) = map
            .lookup(&k, MapFlags::ANY)
            .context("read aggregation map")?
        else {
            continue;
        };
        if let (Some(k), Some(v)) = (from_bytes::<K>(&k), from_bytes::<V>(&v)) {
            f(k, v);
        }
    }
    Ok(())
}

/// The addresses behind stack id `id` (innermost first) of a stack map and
/// its spill map (maps.bpf.h `ls_stackid`: an id with [`SPILL_ID`] set is
/// in `spill`).
pub fn stack_in(main: &dyn MapCore, spill: &dyn MapCore, id: i32) -> Option<Vec<u64>> {
    let (map, id) = if id >= 0 && id & SPILL_ID != 0 {
        (spill, id & !SPILL_ID)
    } else {
        (main, id)
    };
    if id < 0 {
        return None;
    }
    let key = id as u32;
    let bytes = map.lookup(as_bytes(&key), MapFlags::ANY).ok()??;
    Some(
        bytes
            .chunks_exact(8)
            .filter_map(from_bytes::<u64>)
            .take_while(|&a| a != 0)
            .collect(),
    )
}

/// The `--stacks` maps of an object: `stack_agg` (per lock, thread and
/// stack pair), `full_stacks`, and `spill_stacks`, which takes a stack
/// whose bucket in `full_stacks` held another (its id then has
/// [`SPILL_ID`] set).
#[derive(Clone, Copy)]
pub struct StackMaps<'a> {
    pub agg: &'a dyn MapCore,
    pub main: &'a dyn MapCore,
    pub spill: &'a dyn MapCore,
}

/// The [`StackMaps`] of a skeleton's maps (every object with `--stacks`
/// names them alike).
macro_rules! stack_maps {
    ($maps:expr) => {
        $crate::sources::common::StackMaps {
            agg: &$maps.stack_agg,
            main: &$maps.full_stacks,
            spill: &$maps.spill_stacks,
        }
    };
}
pub(crate) use stack_maps;

/// maps.bpf.h `LS_SPILL_ID`.
pub const SPILL_ID: i32 = 1 << 30;

impl StackMaps<'_> {
    /// The addresses of stack `id` (< 0: none taken).
    pub fn get(&self, id: i32) -> Option<Vec<u64>> {
        stack_in(self.main, self.spill, id)
    }

    /// Normalises the user stacks of `stack_agg` not seen yet, while their
    /// processes live (a source's `tick`, so that a process that exits
    /// before the end still gets its frames named).
    pub fn normalize_new(self, sym: &mut super::Symbolizer) {
        let Ok(all) = entries::<ls_stack_key, ls_stack_val>(self.agg) else {
            return;
        };

        for (k, _) in all {
            if k.ustack_id >= 0
                && !sym.user.has(k.pid, k.ustack_id)
                && let Some(addrs) = self.get(k.ustack_id)
            {
                sym.user.normalize(k.pid, k.ustack_id, &addrs);
            }
        }
    }

    /// Every entry of `stack_agg`, its stacks from `stacks`:
    /// kernel frames from the lock's caller outwards, user frames named.
    pub fn entries(self, sym: &mut super::Symbolizer) -> Result<Vec<StackEntry>> {
        let mut out = Vec::new();
        for (k, v) in entries::<ls_stack_key, ls_stack_val>(self.agg)? {
            let kernel = self
                .get(k.kstack_id)
                .map(|a| sym.kernel_frames(&a))
                .unwrap_or_default();
            let uaddrs = self.get(k.ustack_id);
            if let Some(addrs) = &uaddrs
                && !sym.user.has(k.pid, k.ustack_id)
            {
                sym.user.normalize(k.pid, k.ustack_id, addrs);
            }
            let user = if k.ustack_id >= 0 {
                sym.user.frames(k.pid, k.ustack_id)
            } else {
                Vec::new()
            };
            out.push(StackEntry {
                key: k,
                sample: crate::model::StackSample {
                    kernel,
                    user,
                    count: v.count,
                    total_ns: v.total_ns,
                    max_ns: v.max_ns,
                    hold_count: v.hold_count,
                    hold_total_ns: v.hold_total_ns,
                    hold_max_ns: v.hold_max_ns,
                },
                user_first: uaddrs.and_then(|a| a.first().copied()),
            });
        }
        Ok(out)
    }
}

/// Per key (e.g. a tid), the value of the item with the largest weight.
pub fn busiest<'a, K, V>(
    items: impl Iterator<Item = (K, u64, &'a V)>,
) -> std::collections::HashMap<K, &'a V>
where
    K: std::hash::Hash + Eq,
{
    let mut best: std::collections::HashMap<K, (u64, &'a V)> = Default::default();
    for (k, w, v) in items {
        let e = best.entry(k).or_insert((w, v));
        if w > e.0 {
            *e = (w, v);
        }
    }
    best.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

/// A live thread's current name (`/proc/PID/task/TID/comm`): a thread's
/// name is read in the kernel when its key is created, which may be before
/// it named itself. `None` once it has exited.
pub fn live_comm(pid: u32, tid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .ok()
        .map(|c| c.trim_end_matches('\n').to_string())
}

/// Thread names for records: the live name where the thread still runs,
/// else the name of its busiest key (per tid: weight, kernel comm).
pub fn thread_names<'a>(
    items: impl Iterator<Item = (u32, u32, u64, &'a [i8; 16])>,
) -> std::collections::HashMap<u32, String> {
    let items: Vec<_> = items.collect();
    let pids: std::collections::HashMap<u32, u32> =
        items.iter().map(|(pid, tid, _, _)| (*tid, *pid)).collect();
    let best = busiest(items.iter().map(|(_, tid, w, c)| (*tid, *w, *c)));
    best.into_iter()
        .map(|(tid, c)| {
            let live = pids.get(&tid).and_then(|pid| live_comm(*pid, tid));
            (tid, live.unwrap_or_else(|| super::comm_str(&c[..])))
        })
        .collect()
}

/// Whether the kernel serves most page faults under per-VMA locks
/// (CONFIG_PER_VMA_LOCK, Linux 6.4+): then faults mostly skip mmap_lock.
/// `lock_vma_under_rcu` exists exactly when it is configured.
pub fn per_vma_locks() -> bool {
    use std::io::BufRead;
    let Ok(f) = std::fs::File::open("/proc/kallsyms") else {
        return false;
    };
    std::io::BufReader::new(f)
        .lines()
        .map_while(std::result::Result::ok)
        .any(|l| l.split_whitespace().nth(2) == Some("lock_vma_under_rcu"))
}

/// The `--stacks` key and value of every object that includes
/// `stacks.bpf.h` (and of contention.bpf.c): one struct of lockscope.h,
/// generated identically into each skeleton; these are the ones read.
pub use crate::bpf::contention::types::{ls_stack_key, ls_stack_val};

const _: () = {
    use std::mem::size_of;
    assert!(size_of::<ls_stack_key>() == size_of::<crate::bpf::ulock::types::ls_stack_key>());
    assert!(size_of::<ls_stack_val>() == size_of::<crate::bpf::ulock::types::ls_stack_val>());
    assert!(size_of::<ls_stack_key>() == size_of::<crate::bpf::futex::types::ls_stack_key>());
    assert!(size_of::<ls_stack_val>() == size_of::<crate::bpf::futex::types::ls_stack_val>());
    assert!(size_of::<ls_stack_key>() == size_of::<crate::bpf::mmaplock::types::ls_stack_key>());
    assert!(size_of::<ls_stack_val>() == size_of::<crate::bpf::mmaplock::types::ls_stack_val>());
    assert!(size_of::<ls_stack_key>() == size_of::<crate::bpf::kmutex::types::ls_stack_key>());
    assert!(size_of::<ls_stack_val>() == size_of::<crate::bpf::kmutex::types::ls_stack_val>());
};

/// One aggregated stack entry, symbolised.
pub struct StackEntry {
    pub key: ls_stack_key,
    pub sample: crate::model::StackSample,
    /// The innermost user address as taken (for user-locks: the lock
    /// call's return address, the caller of its aggregation key).
    pub user_first: Option<u64>,
}

impl StackMaps<'_> {
    /// Reads the entries and gives each record those of its (lock, tid,
    /// kind) key ([`attach_stacks`]); `kind` maps an entry's flags to the
    /// third part of the record's key.
    pub fn attach<F: std::hash::Hash + Eq + Copy>(
        self,
        sym: &mut super::Symbolizer,
        records: &mut [crate::model::Record],
        record_key: impl Fn(usize, &crate::model::Record) -> (u64, u32, F),
        kind: impl Fn(u32) -> F,
        pick: impl Fn(usize, &StackEntry) -> bool,
    ) -> Result<()> {
        let entries = self.entries(sym)?;
        attach_stacks(
            records,
            entries,
            record_key,
            |e| (e.key.lock, e.key.tid, kind(e.key.flags)),
            pick,
        );
        Ok(())
    }
}

/// Gives each record the stack entries of the same key (e.g. lock, tid,
/// kind): those `pick` matches to the record (by index) first, the rest to
/// the first record of that key, so no sample is lost when a key has
/// several records.
pub fn attach_stacks<K: std::hash::Hash + Eq + Copy>(
    records: &mut [crate::model::Record],
    entries: Vec<StackEntry>,
    record_key: impl Fn(usize, &crate::model::Record) -> K,
    entry_key: impl Fn(&StackEntry) -> K,
    pick: impl Fn(usize, &StackEntry) -> bool,
) {
    use std::collections::HashMap;
    let mut by_key: HashMap<K, Vec<StackEntry>> = HashMap::new();
    for e in entries {
        by_key.entry(entry_key(&e)).or_default().push(e);
    }
    let mut first: HashMap<K, usize> = HashMap::new();
    for (i, r) in records.iter_mut().enumerate() {
        let key = record_key(i, r);
        first.entry(key).or_insert(i);
        let Some(list) = by_key.get_mut(&key) else {
            continue;
        };
        let (mine, rest): (Vec<StackEntry>, Vec<StackEntry>) =
            list.drain(..).partition(|e| pick(i, e));
        *list = rest;
        r.stacks.extend(mine.into_iter().map(|e| e.sample));
    }
    for (key, list) in by_key {
        if let Some(&i) = first.get(&key) {
            records[i].stacks.extend(list.into_iter().map(|e| e.sample));
        }
    }
}

/// `s` as a fixed C char array, zero-padded (a BPF struct's `comm` or
/// name field in decode tests).
#[cfg(test)]
pub fn c_chars<const N: usize>(s: &str) -> [i8; N] {
    let mut c = [0i8; N];
    for (d, b) in c.iter_mut().zip(s.bytes()) {
        *d = b as i8;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_picks_the_heaviest_item_per_key() {
        let items = [(1, 3, "a"), (1, 9, "b"), (2, 1, "c"), (1, 5, "d")];
        let best = busiest(items.iter().map(|(k, w, v)| (*k, *w, v)));
        assert_eq!(best.get(&1).map(|v| **v), Some("b"));
        assert_eq!(best.get(&2).map(|v| **v), Some("c"));
    }
}
