//! User-space stacks: normalised (address -> file + offset) while the
//! process lives, symbolised later with blazesym and cached per binary, so
//! a process that exited before the report still gets names.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use blazesym::Pid;
use blazesym::normalize::{Normalizer, UserMeta};
use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};

/// One user frame after normalisation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Frame {
    /// A file offset in an ELF file.
    Elf(Arc<PathBuf>, u64),
    /// An address that belongs to no file (JIT, vdso, gone).
    Unknown(u64),
}

/// Normalised stacks by (pid, stack id) and symbol names by (file, offset).
pub struct UserStacks {
    normalizer: Normalizer,
    symbolizer: Symbolizer,
    stacks: HashMap<(u32, i32), Vec<Frame>>,
    names: HashMap<(Arc<PathBuf>, u64), Option<String>>,
    paths: HashMap<PathBuf, Arc<PathBuf>>,
}

impl Default for UserStacks {
    fn default() -> Self {
        UserStacks {
            // build ids are not needed: symbols come from the same machine
            normalizer: Normalizer::builder().enable_build_ids(false).build(),
            symbolizer: Symbolizer::new(),
            stacks: HashMap::new(),
            names: HashMap::new(),
            paths: HashMap::new(),
        }
    }
}

impl UserStacks {
    /// Whether a stack is already normalised.
    pub fn has(&self, pid: u32, id: i32) -> bool {
        self.stacks.contains_key(&(pid, id))
    }

    /// Normalises `addrs` (innermost first) of process `pid`; needs the
    /// process alive. Return addresses (all but the first frame) are
    /// normalised as the call instruction (addr - 1).
    pub fn normalize(&mut self, pid: u32, id: i32, addrs: &[u64]) -> bool {
        if self.has(pid, id) {
            return true;
        }
        let Some(nz) = NonZeroU32::new(pid) else {
            return false;
        };
        let adj: Vec<u64> = addrs
            .iter()
            .enumerate()
            .map(|(i, &a)| if i == 0 { a } else { a.saturating_sub(1) })
            .collect();
        let Ok(out) = self.normalizer.normalize_user_addrs(Pid::Pid(nz), &adj) else {
            return false;
        };
        let mut frames = Vec::with_capacity(adj.len());
        for (i, &(off, meta)) in out.outputs.iter().enumerate() {
            let frame = match out.meta.get(meta) {
                Some(UserMeta::Elf(elf)) => {
                    let p = self
                        .paths
                        .entry(elf.path.clone())
                        .or_insert_with(|| Arc::new(elf.path.clone()))
                        .clone();
                    Frame::Elf(p, off)
                }
                _ => Frame::Unknown(adj.get(i).copied().unwrap_or(off)),
            };
            frames.push(frame);
        }
        self.stacks.insert((pid, id), frames);
        true
    }

    fn name(&mut self, f: &Frame) -> String {
        match f {
            Frame::Unknown(a) => format!("0x{a:x}"),
            Frame::Elf(path, off) => {
                let key = (path.clone(), *off);
                if let Some(n) = self.names.get(&key) {
                    return n.clone().unwrap_or_else(|| unnamed(path, *off));
                }
                let src = Source::Elf(Elf::new(path.as_ref().clone()));
                let n = match self
                    .symbolizer
                    .symbolize_single(&src, Input::FileOffset(*off))
                {
                    Ok(Symbolized::Sym(s)) => Some(s.name.into_owned()),
                    _ => None,
                };
                self.names.insert(key, n.clone());
                n.unwrap_or_else(|| unnamed(path, *off))
            }
        }
    }

    /// Symbol names of a normalised stack, innermost first (empty when the
    /// stack was never normalised: the process was gone before we saw it).
    pub fn frames(&mut self, pid: u32, id: i32) -> Vec<String> {
        let Some(frames) = self.stacks.get(&(pid, id)).cloned() else {
            return Vec::new();
        };
        frames.iter().map(|f| self.name(f)).collect()
    }
}

fn unnamed(path: &std::path::Path, off: u64) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{file}+0x{off:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_ustack_test() -> u64 {
        marker_function_for_ustack_test as *const () as u64
    }

    #[test]
    fn names_a_function_of_this_process_after_normalising() {
        let addr = marker_function_for_ustack_test();
        let mut u = UserStacks::default();
        let pid = std::process::id();
        // the first frame is used as is, so this is the function's start
        assert!(u.normalize(pid, 7, &[addr]));
        let names = u.frames(pid, 7);
        assert_eq!(names.len(), 1);
        assert!(
            names[0].contains("marker_function_for_ustack_test"),
            "{names:?}"
        );
        assert!(u.frames(pid, 8).is_empty(), "never normalised");
    }
}
