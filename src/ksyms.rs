//! Kernel symbols from /proc/kallsyms, and the rule that finds the caller of
//! a lock in a kernel stack: skip BPF/tracing frames and lock-internal frames
//! by symbol name, never by a fixed count.

use std::io::{BufRead, BufReader};

/// Sorted function symbols of the running kernel.
#[derive(Debug, Default)]
pub struct Ksyms {
    syms: Vec<(u64, String)>,
    /// Data symbols (global variables), when kallsyms lists them.
    data: Vec<(u64, String)>,
    /// kallsyms has data symbols too (CONFIG_KALLSYMS_ALL).
    pub has_data: bool,
}

/// The kernel's symbols, read on a thread of their own from creation (the
/// ~120 000 lines of /proc/kallsyms cost tens of ms: they overlap loading
/// and attaching the BPF programs) and waited for at first use.
pub struct LazyKsyms {
    ready: std::sync::OnceLock<Ksyms>,
    loading: std::sync::Mutex<Option<std::thread::JoinHandle<Ksyms>>>,
}

impl LazyKsyms {
    /// Starts reading /proc/kallsyms (on this thread if no thread starts).
    pub fn spawn() -> LazyKsyms {
        let loading = std::thread::Builder::new()
            .name("ls-kallsyms".into())
            .spawn(Ksyms::load)
            .ok();
        LazyKsyms {
            ready: Default::default(),
            loading: std::sync::Mutex::new(loading),
        }
    }

    /// The table if it is read already (never waits).
    pub fn try_get(&self) -> Option<&Ksyms> {
        if let Some(k) = self.ready.get() {
            return Some(k);
        }
        let finished = self
            .loading
            .lock()
            .ok()
            .is_some_and(|h| h.as_ref().is_none_or(|h| h.is_finished()));
        finished.then(|| self.get())
    }

    /// The table, waiting for the read to finish.
    pub fn get(&self) -> &Ksyms {
        self.ready.get_or_init(|| {
            let handle = self.loading.lock().ok().and_then(|mut h| h.take());
            match handle {
                // a panicked reader leaves names as addresses
                Some(h) => h.join().unwrap_or_default(),
                None => Ksyms::load(),
            }
        })
    }
}

impl Ksyms {
    /// Reads /proc/kallsyms. Returns an empty table (names then print as
    /// addresses) when addresses are hidden (kptr_restrict) or unreadable.
    pub fn load() -> Ksyms {
        match std::fs::File::open("/proc/kallsyms") {
            // large reads: each read of kallsyms costs a syscall and a seek
            Ok(f) => Ksyms::parse(BufReader::with_capacity(1 << 18, f)),
            Err(_) => Ksyms::default(),
        }
    }

    pub fn parse(r: impl BufRead) -> Ksyms {
        let mut syms = Vec::new();
        let mut data = Vec::new();
        let mut has_data = false;
        for line in r.lines().map_while(Result::ok) {
            let mut it = line.split_whitespace();
            let (Some(addr), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            match ty {
                "t" | "T" | "w" | "W" => syms.push((addr, name.to_string())),
                "d" | "D" | "b" | "B" => {
                    has_data = true;
                    data.push((addr, name.to_string()));
                }
                _ => {}
            }
        }
        syms.sort_unstable_by_key(|s| s.0);
        data.sort_unstable_by_key(|s| s.0);
        Ksyms {
            syms,
            data,
            has_data,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// The symbol containing `addr` and the offset into it. Addresses far
    /// past the nearest symbol (BPF JIT images loaded after the table was
    /// read, past `_einittext`) are unresolved rather than misnamed.
    pub fn resolve(&self, addr: u64) -> Option<(&str, u64)> {
        const MAX_FUNC: u64 = 1 << 18;
        let i = self.syms.partition_point(|s| s.0 <= addr);
        let (start, name) = self.syms.get(i.checked_sub(1)?)?;
        let off = addr - start;
        (off < MAX_FUNC && !name.starts_with("_einittext") && name != "_etext")
            .then_some((name.as_str(), off))
    }

    /// The global variable holding `addr` ("rtnl_mutex", or
    /// "kernfs_rename_lock+0x8"), when kallsyms lists data symbols. Lock
    /// addresses past 4 KiB into a symbol are not attributed to it.
    pub fn data_name(&self, addr: u64) -> Option<String> {
        let i = self.data.partition_point(|s| s.0 <= addr);
        let (start, name) = self.data.get(i.checked_sub(1)?)?;
        match addr - start {
            0 => Some(name.clone()),
            off if off < 4096 => Some(format!("{name}+0x{off:x}")),
            _ => None,
        }
    }

    /// Symbol name for `addr`, or its hex form.
    pub fn name(&self, addr: u64) -> String {
        match self.resolve(addr) {
            Some((n, _)) => n.to_string(),
            None => format!("0x{addr:x}"),
        }
    }
}

/// Frames of BPF, tracing and stack-walking machinery above the tracepoint.
fn is_tracing_frame(name: &str) -> bool {
    // an unresolved kernel address above the lock is a BPF JIT image
    if name.starts_with("0x") {
        return true;
    }
    const PREFIXES: &[&str] = &[
        "bpf_prog_",
        "bpf_trampoline_",
        "__bpf_trace_",
        "bpf_trace_run",
        "__traceiter_",
        "trace_contention_",
        "__mmap_lock_do_trace_",
        "perf_trace_",
        "trace_call_bpf",
        "bpf_get_stack",
        "__bpf_get_stack",
        "perf_callchain",
        "get_perf_callchain",
        "bpf_prog_run",
        "__bpf_prog_run",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Frames of the lock implementations themselves. A name may carry a
/// compiler suffix such as `.constprop.0` or `.isra.0`.
pub fn is_lock_internal(name: &str) -> bool {
    let base = name.split('.').next().unwrap_or(name);
    const PREFIXES: &[&str] = &[
        "__mutex_lock",
        "mutex_lock",
        "__mutex_",
        "mutex_spin_on_owner",
        "osq_lock",
        "_raw_spin_lock",
        "_raw_read_lock",
        "_raw_write_lock",
        "do_raw_spin_lock",
        "do_raw_read_lock",
        "do_raw_write_lock",
        "queued_spin_lock_slowpath",
        "native_queued_spin_lock_slowpath",
        "__pv_queued_spin_lock_slowpath",
        "pv_queued_spin_lock_slowpath",
        "queued_read_lock_slowpath",
        "queued_write_lock_slowpath",
        "rwsem_down_",
        "rwsem_optimistic_spin",
        "down_read",
        "down_write",
        "__down_",
        "rt_mutex_",
        "__rt_mutex",
        "rt_spin_lock",
        "rtlock_",
        "rwbase_",
        "percpu_down_",
        "__percpu_down",
        "percpu_rwsem_",
        "ww_mutex_lock",
        "__ww_mutex",
    ];
    PREFIXES.iter().any(|p| base.starts_with(p))
}

/// How deep the lock implementation may start in a stack: BPF programs,
/// a trampoline or kprobe handler, then the lock functions.
const LOCK_FRAMES_WITHIN: usize = 8;

/// Index of the caller frame in a symbolised stack (innermost first): the
/// first frame that is neither tracing machinery nor lock implementation,
/// after the last lock-implementation frame among the first few. (A BPF
/// trampoline taken from an fexit program may resolve to whatever symbol
/// precedes it, e.g. a module's last function: that is not the caller.)
pub fn caller_index(names: &[String]) -> Option<usize> {
    let start = names
        .iter()
        .take(LOCK_FRAMES_WITHIN)
        .rposition(|n| is_lock_internal(n))
        .map_or(0, |i| i + 1);
    names
        .iter()
        .skip(start)
        .position(|n| !is_tracing_frame(n) && !is_lock_internal(n))
        .map(|i| i + start)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`caller_index`] of a stack given innermost frame first.
    fn caller_of(frames: &[&str]) -> Option<usize> {
        let names: Vec<String> = frames.iter().map(|s| s.to_string()).collect();
        caller_index(&names)
    }

    const KALLSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81100000 T pipe_write
ffffffff81100400 t pipe_read
ffffffff81200000 T mutex_lock
ffffffff81200100 t __mutex_lock.constprop.0
ffffffff81300000 T bpf_prog_abc_contention_end_btf
0000000000000000 T hidden
";

    #[test]
    fn resolves_addresses_to_the_enclosing_function() {
        let k = Ksyms::parse(KALLSYMS.as_bytes());
        assert!(!k.has_data);
        assert_eq!(k.resolve(0xffffffff81100010), Some(("pipe_write", 0x10)));
        assert_eq!(k.resolve(0xffffffff81100400), Some(("pipe_read", 0)));
        assert_eq!(k.resolve(0x10), None);
        assert_eq!(
            k.resolve(0xffffffff81300000 + (1 << 20)),
            None,
            "far past the last symbol"
        );
        assert_eq!(k.name(0x10), "0x10");
        let with_data =
            Ksyms::parse("ffffffff82000000 D jiffies\nffffffff82000100 d rtnl_mutex\n".as_bytes());
        assert!(with_data.has_data);
        assert_eq!(
            with_data.data_name(0xffffffff82000100).as_deref(),
            Some("rtnl_mutex")
        );
        assert_eq!(
            with_data.data_name(0xffffffff82000108).as_deref(),
            Some("rtnl_mutex+0x8")
        );
        assert_eq!(with_data.data_name(0xffffffff82100000), None);
        assert_eq!(k.data_name(0xffffffff82000100), None, "no data symbols");
    }

    #[test]
    fn a_trampoline_named_after_its_neighbour_is_not_the_caller() {
        assert_eq!(
            caller_of(&["p9_virtio_cleanup", "mutex_lock", "pipe_write", "vfs_write"]),
            Some(2)
        );
        assert_eq!(caller_of(&["pipe_write", "vfs_write"]), Some(0));
    }

    #[test]
    fn caller_skips_tracing_and_lock_frames_by_name() {
        assert_eq!(
            caller_of(&[
                "bpf_prog_6d1c_contention_end_btf",
                "bpf_trace_run2",
                "__bpf_trace_contention_end",
                "__mutex_lock.constprop.0",
                "__mutex_lock_slowpath",
                "mutex_lock",
                "pipe_write",
                "vfs_write",
            ]),
            Some(6)
        );
        assert_eq!(
            caller_of(&[
                "0xffffffffa0012345",
                "bpf_trace_run2",
                "__mutex_lock.constprop.0",
                "anon_pipe_write",
            ]),
            Some(3),
            "unresolved JIT frames are skipped"
        );
        assert_eq!(
            caller_of(&[
                "native_queued_spin_lock_slowpath",
                "_raw_spin_lock_irqsave",
                "try_to_wake_up",
            ]),
            Some(2)
        );
        assert_eq!(
            caller_of(&[
                "rwsem_down_write_slowpath",
                "down_write_killable",
                "vm_munmap",
            ]),
            Some(2)
        );
        assert!(!is_lock_internal("pipe_lock"));
        assert!(!is_lock_internal("lock_mm_and_find_vma"));
    }
}
