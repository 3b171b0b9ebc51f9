//! Function-probe helpers shared by the fentry/kprobe sources
//! (kernel-mutex, kernel-rwsem, sched-picknext) and `doctor`: the backends in
//! order of preference, which kernel functions exist, and short errors.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Result, anyhow, bail};

/// Function probe backends, in order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Fentry,
    Kprobe,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
        }
    }

    /// Program name prefixes: (entry, return).
    pub fn prefixes(self) -> (&'static str, &'static str) {
        match self {
            Backend::Fentry => ("fe_", "fx_"),
            Backend::Kprobe => ("kp_", "kr_"),
        }
    }
}

/// The backends to try: the one `--backend` names, else all in order.
pub fn backends(source: &str, forced: Option<&str>) -> Result<Vec<Backend>> {
    match forced {
        None => Ok(vec![Backend::Fentry, Backend::Kprobe]),
        Some("fentry") => Ok(vec![Backend::Fentry]),
        Some("kprobe") => Ok(vec![Backend::Kprobe]),
        Some(other) => bail!("{source} has no backend '{other}' (fentry or kprobe)"),
    }
}

/// Names of kernel functions (text symbols) in /proc/kallsyms among `want`.
pub fn functions_present(want: &[&str]) -> HashSet<String> {
    let want: HashSet<&str> = want.iter().copied().collect();
    let Ok(f) = std::fs::File::open("/proc/kallsyms") else {
        return HashSet::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (_, ty, name) = (it.next()?, it.next()?, it.next()?);
            (matches!(ty, "T" | "t") && it.next().is_none() && want.contains(name))
                .then(|| name.to_string())
        })
        .collect()
}

/// Why kprobes cannot work here, when that is plain before trying.
pub fn kprobes_missing() -> Option<String> {
    let events = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|b| std::path::Path::new(&format!("{b}/kprobe_events")).exists());
    (!kprobe_pmu() && !events).then(|| {
        "kprobes are not compiled into this kernel (CONFIG_KPROBES: no kprobe PMU in \
         /sys/bus/event_source/devices)"
            .to_string()
    })
}

/// Whether the fork follower of a function-probe source is its tp_btf
/// program (the kernel has BTF: `/sys/kernel/btf/vmlinux`); else the
/// classic `sched/sched_process_fork` tracepoint follows forks.
pub fn fork_btf() -> bool {
    std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
}

/// The name of the fork follower to load: `{prefix}follow_fork_btf` or
/// `_tp` ([`fork_btf`]), or none when forks are not followed.
pub fn fork_program(prefix: &str, follow: bool) -> Option<String> {
    follow.then(|| {
        let kind = if fork_btf() { "btf" } else { "tp" };
        format!("{prefix}follow_fork_{kind}")
    })
}

/// "load failed: EPERM": libbpf's and the verifier's last lines only where
/// they say more than the errno (not for EPERM, where libbpf guesses at
/// `ulimit -l`, which is not the cause on kernels that refuse fentry).
pub fn load_error(what: &str, e: &libbpf_rs::Error) -> anyhow::Error {
    let short = short_error(e);
    let log = crate::libbpf_log::summary();
    if short == "EPERM" || log.is_empty() {
        anyhow!("{what} failed: {short}")
    } else {
        anyhow!("{what} failed: {short} ({log})")
    }
}

/// Starts a function-probe source with the first backend that works, in
/// order of preference (or the forced one); with it, why the preferred
/// ones did not (for the status), or, when none did, every reason.
pub fn first_backend<T>(
    source: &str,
    forced: Option<&str>,
    start: impl FnMut(Backend) -> Result<T>,
) -> Result<(T, Option<String>)> {
    let skip = |b| match b {
        Backend::Kprobe => kprobes_missing(),
        Backend::Fentry => None,
    };
    super::common::first_working(backends(source, forced)?, Backend::name, skip, start)
        .map_err(anyhow::Error::msg)
}

/// Whether the kernel has the kprobe PMU (perf_event kprobes).
pub fn kprobe_pmu() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

pub fn errno_name(code: i32) -> Option<&'static str> {
    Some(match code {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        5 => "EIO",
        6 => "ENXIO",
        7 => "E2BIG",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        22 => "EINVAL",
        28 => "ENOSPC",
        38 => "ENOSYS",
        40 => "ELOOP",
        95 => "EOPNOTSUPP",
        524 => "ENOTSUPP",
        _ => return None,
    })
}

/// The errno behind a libbpf-rs error, if it carries one.
pub fn errno_of(e: &libbpf_rs::Error) -> Option<i32> {
    let s = format!("{e:#}");
    let at = s.rfind("os error ")?;
    let digits: String = s[at + 9..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// "EPERM", or the error's own words when it has no errno.
pub fn short_error(e: &libbpf_rs::Error) -> String {
    match errno_of(e) {
        Some(n) => errno_name(n).map_or_else(|| format!("errno {n}"), str::to_string),
        None => format!("{e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_choice_follows_the_flag() {
        assert_eq!(
            backends("kernel-mutex", None).unwrap_or_default(),
            vec![Backend::Fentry, Backend::Kprobe]
        );
        assert_eq!(
            backends("kernel-mutex", Some("kprobe")).unwrap_or_default(),
            vec![Backend::Kprobe]
        );
        assert!(backends("kernel-mutex", Some("tp_btf")).is_err());
    }
}
