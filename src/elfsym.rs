//! Function symbols of an ELF file: where to put a uprobe (file offset of
//! a function, with glibc's symbol versions and aliases handled) and which
//! function an address in a process belongs to. ELF64 little-endian only
//! (x86_64, aarch64); anything else is an error that says so.

use std::path::Path;

use anyhow::{Context, Result, bail};

const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const SHT_GNU_VERSYM: u32 = 0x6fff_ffff;
const PT_LOAD: u32 = 1;
const STT_OBJECT: u8 = 1;
const STT_FUNC: u8 = 2;
const STT_GNU_IFUNC: u8 = 10;
const STB_WEAK: u8 = 2;
const VERSYM_HIDDEN: u16 = 0x8000;

/// A symbol table (with its string table) larger than this is not read:
/// its symbols would cost tens of MB (libLLVM's `.symtab` and `.strtab`
/// are 24 MB, ~30 MB more as parsed symbols), too much for `serve`'s
/// memory budget. Such a file is named from its `.dynsym` (exported
/// symbols) alone. A debug build of lockscope has 7 MB.
pub const MAX_SYMTAB_BYTES: usize = 12 << 20;

/// Whether a symbol table of `size` bytes, with a string table of
/// `strsize` bytes, is read (see [`MAX_SYMTAB_BYTES`]).
fn within_budget(size: usize, strsize: usize) -> bool {
    size.saturating_add(strsize) <= MAX_SYMTAB_BYTES
}

/// One function symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncSym {
    pub name: String,
    /// Virtual address as linked (relative for shared objects).
    pub vaddr: u64,
    pub size: u64,
    /// A default (`name@@VER`) or unversioned symbol; false for hidden
    /// compatibility versions (`name@VER`), which old binaries bind to.
    pub default_version: bool,
    pub weak: bool,
}

/// A loadable segment: file offsets [offset, offset+filesz) map to
/// [vaddr, vaddr+filesz).
#[derive(Clone, Copy, Debug)]
struct Segment {
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// The function (and data object) symbols of one ELF file.
#[derive(Clone, Debug, Default)]
pub struct ElfSymbols {
    /// Sorted by vaddr.
    funcs: Vec<FuncSym>,
    /// Data objects (`static` variables: a global `pthread_mutex_t`),
    /// sorted by vaddr.
    objects: Vec<FuncSym>,
    segments: Vec<Segment>,
}

/// The file as [`ElfSymbols::parse`] reads it, with only the parts it
/// reads filled in (headers, symbol tables and their strings): the rest
/// stays zero pages that are never touched, so a 200 MB binary (a
/// compiler's shared library) costs its symbol tables, not its size.
fn read_symbol_parts(path: &Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let len = usize::try_from(f.metadata()?.len())?;
    let mut b = vec![0u8; len];
    let fill = |b: &mut Vec<u8>, off: usize, n: usize| {
        if let Some(end) = off.checked_add(n).map(|e| e.min(len))
            && off < end
        {
            let _ = f.read_exact_at(&mut b[off..end], off as u64);
        }
    };
    fill(&mut b, 0, 64);
    let (phoff, shoff) = (
        u64_at(&b, 32).unwrap_or(0) as usize,
        u64_at(&b, 40).unwrap_or(0) as usize,
    );
    let (phentsize, phnum) = (
        u16_at(&b, 54).unwrap_or(0) as usize,
        u16_at(&b, 56).unwrap_or(0) as usize,
    );
    let (shentsize, shnum) = (
        u16_at(&b, 58).unwrap_or(0) as usize,
        u16_at(&b, 60).unwrap_or(0) as usize,
    );
    fill(&mut b, phoff, phentsize.saturating_mul(phnum));
    fill(&mut b, shoff, shentsize.saturating_mul(shnum));
    let section = |b: &[u8], i: usize| {
        let s = shoff + i * shentsize;
        (
            u32_at(b, s + 4).unwrap_or(0),
            u64_at(b, s + 24).unwrap_or(0) as usize,
            u64_at(b, s + 32).unwrap_or(0) as usize,
            u32_at(b, s + 40).unwrap_or(0) as usize,
        )
    };
    for i in 0..shnum {
        let (ty, off, size, link) = section(&b, i);
        if ty == SHT_GNU_VERSYM {
            fill(&mut b, off, size);
        }
        if (ty == SHT_SYMTAB || ty == SHT_DYNSYM) && link < shnum {
            let (_, stroff, strsize, _) = section(&b, link);
            // too large: left as zeros, which parse skips too
            if within_budget(size, strsize) {
                fill(&mut b, off, size);
                fill(&mut b, stroff, strsize);
            }
        }
    }
    Ok(b)
}

fn rd<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}
fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    rd::<2>(b, off).map(u16::from_le_bytes)
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    rd::<4>(b, off).map(u32::from_le_bytes)
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    rd::<8>(b, off).map(u64::from_le_bytes)
}
fn cstr(b: &[u8], off: usize) -> Option<&str> {
    let s = b.get(off..)?;
    let end = s.iter().position(|&c| c == 0)?;
    std::str::from_utf8(&s[..end]).ok()
}

struct Section {
    ty: u32,
    offset: usize,
    size: usize,
    link: u32,
    entsize: usize,
}

impl ElfSymbols {
    pub fn open(path: &Path) -> Result<ElfSymbols> {
        let bytes = read_symbol_parts(path).with_context(|| format!("read {}", path.display()))?;
        Self::parse(&bytes).with_context(|| format!("parse ELF {}", path.display()))
    }

    /// Symbols kept (functions and data objects).
    pub fn len(&self) -> usize {
        self.funcs.len() + self.objects.len()
    }

    pub fn parse(b: &[u8]) -> Result<ElfSymbols> {
        if b.get(..4) != Some(b"\x7fELF") {
            bail!("not an ELF file");
        }
        if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
            bail!("not a 64-bit little-endian ELF file (unsupported)");
        }
        let bad = || anyhow::anyhow!("truncated or malformed ELF header");
        let phoff = u64_at(b, 32).ok_or_else(bad)? as usize;
        let shoff = u64_at(b, 40).ok_or_else(bad)? as usize;
        let phentsize = u16_at(b, 54).ok_or_else(bad)? as usize;
        let phnum = u16_at(b, 56).ok_or_else(bad)? as usize;
        let shentsize = u16_at(b, 58).ok_or_else(bad)? as usize;
        let shnum = u16_at(b, 60).ok_or_else(bad)? as usize;

        let mut segments = Vec::new();
        for i in 0..phnum {
            let p = phoff + i * phentsize;
            if u32_at(b, p) == Some(PT_LOAD) {
                segments.push(Segment {
                    offset: u64_at(b, p + 8).ok_or_else(bad)?,
                    vaddr: u64_at(b, p + 16).ok_or_else(bad)?,
                    filesz: u64_at(b, p + 32).ok_or_else(bad)?,
                });
            }
        }
        let mut sections = Vec::new();
        for i in 0..shnum {
            let s = shoff + i * shentsize;
            sections.push(Section {
                ty: u32_at(b, s + 4).ok_or_else(bad)?,
                offset: u64_at(b, s + 24).ok_or_else(bad)? as usize,
                size: u64_at(b, s + 32).ok_or_else(bad)? as usize,
                link: u32_at(b, s + 40).ok_or_else(bad)?,
                entsize: u64_at(b, s + 56).ok_or_else(bad)? as usize,
            });
        }
        let versym = sections.iter().find(|s| s.ty == SHT_GNU_VERSYM);
        let mut funcs = Vec::new();
        let mut objects = Vec::new();
        for ty in [SHT_DYNSYM, SHT_SYMTAB] {
            for sec in sections.iter().filter(|s| s.ty == ty) {
                let Some(strtab) = sections.get(sec.link as usize) else {
                    continue;
                };
                if !within_budget(sec.size, strtab.size) {
                    continue;
                }
                let ent = if sec.entsize == 0 { 24 } else { sec.entsize };
                for i in 0..sec.size / ent {
                    let o = sec.offset + i * ent;
                    let (Some(name), Some(info), Some(shndx), Some(value), Some(size)) = (
                        u32_at(b, o),
                        b.get(o + 4).copied(),
                        u16_at(b, o + 6),
                        u64_at(b, o + 8),
                        u64_at(b, o + 16),
                    ) else {
                        bail!("truncated symbol table");
                    };
                    let st_type = info & 0xf;
                    let object = st_type == STT_OBJECT && size > 0;
                    if (st_type != STT_FUNC && st_type != STT_GNU_IFUNC && !object)
                        || shndx == 0
                        || value == 0
                    {
                        continue;
                    }
                    let Some(name) = cstr(b, strtab.offset + name as usize) else {
                        continue;
                    };
                    let default_version = match (ty, versym) {
                        (SHT_DYNSYM, Some(v)) => {
                            u16_at(b, v.offset + 2 * i).is_none_or(|x| x & VERSYM_HIDDEN == 0)
                        }
                        // .symtab names carry the version: "f@VER" is hidden
                        _ => !name.contains('@') || name.contains("@@"),
                    };
                    let name = name.split('@').next().unwrap_or(name);
                    let list = if object { &mut objects } else { &mut funcs };
                    list.push(FuncSym {
                        name: name.to_string(),
                        vaddr: value,
                        size,
                        default_version,
                        weak: info >> 4 == STB_WEAK,
                    });
                }
            }
        }
        funcs.sort_by(|a, b| a.vaddr.cmp(&b.vaddr).then(a.name.cmp(&b.name)));
        funcs.dedup_by(|a, b| a.vaddr == b.vaddr && a.name == b.name);
        objects.sort_by(|a, b| a.vaddr.cmp(&b.vaddr).then(a.name.cmp(&b.name)));
        objects.dedup_by(|a, b| a.vaddr == b.vaddr && a.name == b.name);
        Ok(ElfSymbols {
            funcs,
            objects,
            segments,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.funcs.is_empty()
    }

    /// Whether the file defines function `name`.
    pub fn defines(&self, name: &str) -> bool {
        self.funcs.iter().any(|f| f.name == name)
    }

    /// File offset of function `name` (what a uprobe is attached at).
    /// Several versions: the default one (`@@`); several addresses among
    /// those: the non-weak one; still several: an error.
    pub fn func_offset(&self, name: &str) -> Result<Option<u64>> {
        let all: Vec<&FuncSym> = self.funcs.iter().filter(|f| f.name == name).collect();
        if all.is_empty() {
            return Ok(None);
        }
        let mut pick: Vec<&FuncSym> = all.iter().copied().filter(|f| f.default_version).collect();
        if pick.is_empty() {
            pick = all;
        }
        let strong: Vec<&FuncSym> = pick.iter().copied().filter(|f| !f.weak).collect();
        if !strong.is_empty() {
            pick = strong;
        }
        let first = pick[0].vaddr;
        if pick.iter().any(|f| f.vaddr != first) {
            bail!("{name} is defined at several addresses");
        }
        self.vaddr_to_offset(first)
            .map(Some)
            .ok_or_else(|| anyhow::anyhow!("{name} at {first:#x} is in no loadable segment"))
    }

    fn vaddr_to_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr < s.vaddr + s.filesz)
            .map(|s| vaddr - s.vaddr + s.offset)
    }

    /// The linked virtual address of a file offset.
    pub fn offset_to_vaddr(&self, off: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| off >= s.offset && off < s.offset + s.filesz)
            .map(|s| off - s.offset + s.vaddr)
    }

    /// The function containing `vaddr`, as `name+0xoff`.
    pub fn symbolize(&self, vaddr: u64) -> Option<String> {
        Self::name_in(&self.funcs, vaddr)
    }

    /// The data object (a `static` variable) containing `vaddr`, as
    /// `name+0xoff`: only inside the object's size.
    pub fn data_symbol(&self, vaddr: u64) -> Option<String> {
        Self::name_in(&self.objects, vaddr)
    }

    fn name_in(list: &[FuncSym], vaddr: u64) -> Option<String> {
        let i = list.partition_point(|f| f.vaddr <= vaddr);
        let f = list[..i]
            .iter()
            .rev()
            .find(|f| vaddr < f.vaddr + f.size.max(1))?;
        // Rust names demangled, without their hash
        let name = match rustc_demangle::try_demangle(&f.name) {
            Ok(d) => format!("{d:#}"),
            Err(_) => f.name.clone(),
        };
        Some(match vaddr - f.vaddr {
            0 => name,
            d => format!("{name}+{d:#x}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_tables_over_the_budget_are_skipped() {
        assert!(within_budget(MAX_SYMTAB_BYTES - 100, 100));
        assert!(!within_budget(MAX_SYMTAB_BYTES - 100, 101));
        assert!(!within_budget(usize::MAX, 1));
    }

    #[inline(never)]
    #[unsafe(no_mangle)]
    pub extern "C" fn lockscope_elfsym_test_target(x: u64) -> u64 {
        std::hint::black_box(x) * 3 + 1
    }

    #[test]
    fn finds_and_symbolizes_a_function_of_this_binary() {
        let exe = std::fs::read_link("/proc/self/exe").expect("own exe");
        let syms = ElfSymbols::open(&exe).expect("parse own exe");
        assert!(syms.defines("lockscope_elfsym_test_target"));
        let off = syms
            .func_offset("lockscope_elfsym_test_target")
            .expect("resolves")
            .expect("present");
        let vaddr = syms.offset_to_vaddr(off).expect("in a segment");
        assert_eq!(
            syms.symbolize(vaddr).as_deref(),
            Some("lockscope_elfsym_test_target")
        );
        assert_eq!(
            syms.symbolize(vaddr + 1).as_deref(),
            Some("lockscope_elfsym_test_target+0x1")
        );
        assert_eq!(lockscope_elfsym_test_target(1), 4);
    }

    #[unsafe(no_mangle)]
    pub static LOCKSCOPE_ELFSYM_TEST_DATA: std::sync::atomic::AtomicU64 =
        std::sync::atomic::AtomicU64::new(7);

    #[test]
    fn names_a_static_variable_of_this_binary() {
        let exe = std::fs::read_link("/proc/self/exe").expect("own exe");
        let syms = ElfSymbols::open(&exe).expect("parse own exe");
        // where the running binary is loaded: its first mapping's bias
        let maps = crate::procmaps::read_maps(None).expect("own maps");
        let first = maps
            .iter()
            .filter(|m| std::path::Path::new(&m.path) == exe)
            .min_by_key(|m| m.start)
            .expect("exe mapped");
        let bias = first.start - syms.offset_to_vaddr(first.offset).expect("in a segment");
        let addr = &LOCKSCOPE_ELFSYM_TEST_DATA as *const _ as u64;
        assert_eq!(
            syms.data_symbol(addr - bias).as_deref(),
            Some("LOCKSCOPE_ELFSYM_TEST_DATA")
        );
        assert_eq!(
            syms.data_symbol(addr - bias + 4).as_deref(),
            Some("LOCKSCOPE_ELFSYM_TEST_DATA+0x4")
        );
        assert!(syms.symbolize(addr - bias).is_none(), "not a function");
        assert_eq!(
            LOCKSCOPE_ELFSYM_TEST_DATA.load(std::sync::atomic::Ordering::Relaxed),
            7
        );
    }

    #[test]
    fn default_version_wins_over_compat_versions() {
        let mk = |name: &str, vaddr, default_version, weak| FuncSym {
            name: name.into(),
            vaddr,
            size: 16,
            default_version,
            weak,
        };
        let syms = ElfSymbols {
            objects: Vec::new(),
            funcs: vec![
                mk("pthread_cond_wait", 0x1000, false, false), // @GLIBC_2.2.5
                mk("pthread_cond_wait", 0x2000, true, false),  // @@GLIBC_2.3.2
                mk("lock", 0x3000, true, true),
                mk("lock", 0x3000, true, false), // alias, same address
                mk("dup", 0x4000, true, false),
                mk("dup", 0x5000, true, false),
            ],
            segments: vec![Segment {
                offset: 0,
                vaddr: 0,
                filesz: 0x10000,
            }],
        };
        assert_eq!(
            syms.func_offset("pthread_cond_wait").expect("ok"),
            Some(0x2000)
        );
        assert_eq!(syms.func_offset("lock").expect("ok"), Some(0x3000));
        assert_eq!(syms.func_offset("missing").expect("ok"), None);
        assert!(syms.func_offset("dup").is_err(), "ambiguous");
    }

    #[test]
    fn rejects_what_it_cannot_parse() {
        assert!(ElfSymbols::parse(b"#!/bin/sh\n").is_err());
        let mut elf32 = b"\x7fELF".to_vec();
        elf32.extend_from_slice(&[1, 1, 1]);
        let e = ElfSymbols::parse(&elf32).expect_err("32-bit");
        assert!(e.to_string().contains("64-bit"), "{e}");
        let mut trunc = b"\x7fELF".to_vec();
        trunc.extend_from_slice(&[2, 1, 1]);
        assert!(ElfSymbols::parse(&trunc).is_err());
    }
}
