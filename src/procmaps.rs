//! A process's mapped files (`/proc/PID/maps`): which object holds its
//! pthread functions (its libc, or the executable when static), and which
//! function an address in it belongs to.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::elfsym::ElfSymbols;

/// One line of `/proc/PID/maps` backed by a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub inode: u64,
    pub path: String,
}

/// Parses the file-backed lines of a maps file.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let range = it.next()?;
            let _perms = it.next()?;
            let offset = u64::from_str_radix(it.next()?, 16).ok()?;
            let _dev = it.next()?;
            let inode: u64 = it.next()?.parse().ok()?;
            let path: String = it.collect::<Vec<_>>().join(" ");
            if inode == 0 || !path.starts_with('/') {
                return None;
            }
            let (s, e) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                offset,
                inode,
                path,
            })
        })
        .collect()
}

/// `/proc/PID/maps` (`None`: our own process).
pub fn read_maps(pid: Option<u32>) -> Result<Vec<Mapping>> {
    let file = match pid {
        Some(p) => format!("/proc/{p}/maps"),
        None => "/proc/self/maps".into(),
    };
    let text = std::fs::read_to_string(&file).with_context(|| format!("read {file}"))?;
    Ok(parse_maps(&text))
}

/// Where a process's pthread functions are.
#[derive(Clone, Debug)]
pub struct PthreadObject {
    /// Path to attach to, valid in lockscope's mount namespace.
    pub path: PathBuf,
    /// The path as the process sees it.
    pub shown: String,
    /// glibc (its lock layouts are known: owner tids can be read).
    pub glibc: bool,
    pub symbols: ElfSymbols,
}

/// A path of `pid`'s that names the same file in our namespace: the path
/// itself when it is that inode, else through `/proc/PID/root`.
fn reachable(pid: Option<u32>, m: &Mapping) -> PathBuf {
    let direct = PathBuf::from(&m.path);
    if std::fs::metadata(&direct).is_ok_and(|md| md.ino() == m.inode) {
        return direct;
    }
    match pid {
        Some(p) => PathBuf::from(format!("/proc/{p}/root{}", m.path)),
        None => direct,
    }
}

fn libc_like(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with("libc.so")
        || base.starts_with("libc-")
        || base.starts_with("libpthread")
        || base.starts_with("ld-musl")
}

/// Finds the object that defines `pthread_mutex_lock` among the files
/// `pid` maps (libc-like names first, then the executable, then the rest).
/// The error says what was looked at and why nothing fits.
pub fn find_pthread_object(pid: Option<u32>) -> Result<PthreadObject> {
    let maps = read_maps(pid)?;
    let mut paths: Vec<&Mapping> = Vec::new();
    for m in &maps {
        if !paths.iter().any(|p| p.inode == m.inode && p.path == m.path) {
            paths.push(m);
        }
    }
    if paths.is_empty() {
        bail!("maps no files (a kernel thread, or exiting)");
    }
    let exe = paths[0].path.clone();
    // libc-like names first, then the executable, then everything else
    paths.sort_by_key(|m| {
        if libc_like(&m.path) {
            0
        } else if m.path == exe {
            1
        } else {
            2
        }
    });
    let mut unparsable = Vec::new();
    for m in paths {
        let path = reachable(pid, m);
        let symbols = match ElfSymbols::open(&path) {
            Ok(s) => s,
            Err(e) => {
                if libc_like(&m.path) {
                    unparsable.push(format!("{}: {e:#}", m.path));
                }
                continue;
            }
        };
        if symbols.defines("pthread_mutex_lock") {
            let glibc = symbols.defines("gnu_get_libc_version");
            return Ok(PthreadObject {
                path,
                shown: m.path.clone(),
                glibc,
                symbols,
            });
        }
    }
    if !unparsable.is_empty() {
        bail!("cannot parse its libc ({})", unparsable.join("; "));
    }
    bail!(
        "no mapped object defines pthread_mutex_lock (a static or stripped binary, \
         or a libc without pthread symbols; executable {exe})"
    )
}

/// Names addresses in processes, caching each file's symbols and each
/// process's maps (so names survive the process's exit once seen).
///
/// Bounded for long runs (`serve` system-wide, processes coming and
/// going): names given are kept per (pid, address), so they stay the same
/// after the maps of processes that exited and the symbols of files are
/// dropped ([`MAX_PIDS`] processes' maps, [`MAX_SYMBOLS`] files' symbols).
#[derive(Default)]
pub struct UserSymbolizer {
    maps: HashMap<u32, Vec<Mapping>>,
    files: HashMap<(String, u64), Option<ElfSymbols>>,
    named: HashMap<(u32, u64), Option<String>>,
}

/// Processes whose maps are kept; past it, those of exited ones go.
pub const MAX_PIDS: usize = 512;
/// Symbols of files kept; past it, the other files' symbols go.
pub const MAX_SYMBOLS: usize = 200_000;
/// Names kept by (pid, address); past it, all go (and are named again).
pub const MAX_NAMED: usize = 65_536;

impl UserSymbolizer {
    /// Reads (or re-reads) the maps of a live process.
    pub fn remember(&mut self, pid: u32) {
        if let Ok(m) = read_maps(Some(pid))
            && !m.is_empty()
        {
            if self.maps.len() >= MAX_PIDS && !self.maps.contains_key(&pid) {
                self.maps
                    .retain(|p, _| Path::new(&format!("/proc/{p}")).exists());
                if self.maps.len() >= MAX_PIDS {
                    self.maps.clear();
                }
            }
            self.maps.insert(pid, m);
        }
    }

    /// The symbols of a file, loaded (and the cache trimmed) if needed.
    fn load_file(&mut self, key: &(String, u64), pid: u32, m: &Mapping) {
        if self.files.contains_key(key) {
            return;
        }
        let syms = ElfSymbols::open(&reachable(Some(pid), m)).ok();
        let kept: usize = self.files.values().flatten().map(ElfSymbols::len).sum();
        if kept + syms.as_ref().map_or(0, ElfSymbols::len) > MAX_SYMBOLS {
            self.files.clear();
        }
        self.files.insert(key.clone(), syms);
    }

    /// `function+0xoff` of `addr` in `pid`, or the file and offset.
    pub fn name(&mut self, pid: u32, addr: u64) -> Option<String> {
        if addr == 0 {
            return None;
        }
        if let Some(n) = self.named.get(&(pid, addr)) {
            return n.clone();
        }
        let n = self.name_now(pid, addr);
        // a process not seen alive is not remembered (it may appear later)
        if n.is_some() || self.maps.contains_key(&pid) {
            if self.named.len() >= MAX_NAMED {
                self.named.clear();
            }
            self.named.insert((pid, addr), n.clone());
        }
        n
    }

    fn name_now(&mut self, pid: u32, addr: u64) -> Option<String> {
        let find = |maps: &Vec<Mapping>| {
            maps.iter()
                .find(|m| addr >= m.start && addr < m.end)
                .cloned()
        };
        let mut hit = self.maps.get(&pid).and_then(find);
        if hit.is_none() {
            self.remember(pid);
            hit = self.maps.get(&pid).and_then(find);
        }
        let m = hit?;
        let off = addr - m.start + m.offset;
        let key = (m.path.clone(), m.inode);
        self.load_file(&key, pid, &m);
        let base = m.path.rsplit('/').next().unwrap_or(&m.path).to_string();
        let named = self
            .files
            .get(&key)
            .and_then(|s| s.as_ref())
            .and_then(|s| s.offset_to_vaddr(off).and_then(|v| s.symbolize(v)));
        Some(named.unwrap_or_else(|| format!("{base}+{off:#x}")))
    }
}

impl UserSymbolizer {
    /// The static variable at `addr` in `pid` from the ELF symbols of the
    /// file loaded there (`name+0xoff`, plus ` in FILE` outside the
    /// executable). A `.bss` beyond the file's pages is mapped anonymously
    /// right after the file's mappings, so the file is the one loaded last
    /// below `addr`; the symbol's size decides.
    pub fn data_name(&mut self, pid: u32, addr: u64) -> Option<String> {
        if addr == 0 {
            return None;
        }
        if !self.maps.contains_key(&pid) {
            self.remember(pid);
            return self.data_name_now(pid, addr);
        }
        // maps remembered earlier may be another image's (read before the
        // process exec'd): on a miss, read them again once
        self.data_name_now(pid, addr).or_else(|| {
            self.remember(pid);
            self.data_name_now(pid, addr)
        })
    }

    fn data_name_now(&mut self, pid: u32, addr: u64) -> Option<String> {
        let maps = self.maps.get(&pid)?;
        let owner = maps
            .iter()
            .filter(|m| m.start <= addr)
            .max_by_key(|m| m.start)?;
        let first = maps
            .iter()
            .filter(|m| m.inode == owner.inode && m.path == owner.path)
            .min_by_key(|m| m.start)?
            .clone();
        let exe = maps.first().is_some_and(|m| m.path == first.path);
        let key = (first.path.clone(), first.inode);
        self.load_file(&key, pid, &first);
        let syms = self.files.get(&key)?.as_ref()?;
        let bias = first
            .start
            .checked_sub(syms.offset_to_vaddr(first.offset)?)?;
        let name = syms.data_symbol(addr.checked_sub(bias)?)?;
        if exe {
            return Some(name);
        }
        let base = first.path.rsplit('/').next().unwrap_or(&first.path);
        Some(format!("{name} in {base}"))
    }
}

/// Whether `pid` still maps a file with this inode and path.
pub fn maps_file(pid: u32, path: &Path, shown: &str) -> Option<bool> {
    let maps = read_maps(Some(pid)).ok()?;
    let ino = std::fs::metadata(path).ok()?.ino();
    Some(maps.iter().any(|m| m.inode == ino && m.path == shown))
}

/// `/proc/PID/task/TID/syscall` of a thread blocked in a system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InSyscall {
    pub nr: i64,
    pub args: [u64; 6],
    pub sp: u64,
    pub pc: u64,
}

/// Parses a `syscall` file: None when the thread is running or not in a
/// system call ("running", "-1 sp pc").
pub fn parse_syscall(text: &str) -> Option<InSyscall> {
    let mut it = text.split_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut v = [0u64; 8];
    for x in &mut v {
        let s = it.next()?;
        *x = u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()?;
    }
    Some(InSyscall {
        nr,
        args: [v[0], v[1], v[2], v[3], v[4], v[5]],
        sp: v[6],
        pc: v[7],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_backed_lines_only() {
        let text = "\
55d0c0a00000-55d0c0a21000 r--p 00000000 fe:01 1234 /usr/bin/x y
7f1c2e200000-7f1c2e228000 r-xp 00028000 fe:01 5678 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd4a1e0000-7ffd4a201000 rw-p 00000000 00:00 0 [stack]
7f1c2e400000-7f1c2e401000 rw-p 00000000 00:00 0
";
        let m = parse_maps(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].path, "/usr/bin/x y");
        assert_eq!(m[1].offset, 0x28000);
        assert_eq!(m[1].inode, 5678);
        assert_eq!(m[1].start, 0x7f1c2e200000);
    }

    #[test]
    fn finds_our_own_libc_and_its_real_pthread_mutex_lock() {
        let obj = find_pthread_object(None).expect("this test binary uses glibc");
        assert!(obj.glibc, "{}", obj.shown);
        let off = obj
            .symbols
            .func_offset("pthread_mutex_lock")
            .expect("resolves")
            .expect("present");
        // the function pointer the dynamic linker gave us is in that file,
        // at that offset
        let addr = libc::pthread_mutex_lock as *const () as usize as u64;
        let maps = read_maps(None).expect("own maps");
        let m = maps
            .iter()
            .find(|m| addr >= m.start && addr < m.end)
            .expect("mapped");
        assert_eq!(m.path, obj.shown);
        assert_eq!(addr - m.start + m.offset, off);
        let mut sym = UserSymbolizer::default();
        let pid = std::process::id();
        assert_eq!(sym.name(pid, addr).as_deref(), Some("pthread_mutex_lock"));
    }

    /// A pthread mutex at a fixed address.
    struct PMutex(std::cell::UnsafeCell<libc::pthread_mutex_t>);
    // SAFETY: only its address is used here; a pthread mutex is made to be
    // shared between threads.
    unsafe impl Sync for PMutex {}
    impl PMutex {
        const fn new() -> PMutex {
            PMutex(std::cell::UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER))
        }
        fn ptr(&self) -> *mut libc::pthread_mutex_t {
            self.0.get()
        }
    }

    #[unsafe(no_mangle)]
    static LOCKSCOPE_PROCMAPS_TEST_MUTEX: PMutex = PMutex::new();

    #[test]
    fn names_a_static_mutex_by_its_symbol_and_not_a_heap_one() {
        let mut sym = UserSymbolizer::default();
        let pid = std::process::id();
        let addr = LOCKSCOPE_PROCMAPS_TEST_MUTEX.ptr() as u64;
        assert_eq!(
            sym.data_name(pid, addr).as_deref(),
            Some("LOCKSCOPE_PROCMAPS_TEST_MUTEX")
        );
        let heap = Box::new(PMutex::new());
        assert_eq!(sym.data_name(pid, heap.ptr() as u64), None);
    }
}
