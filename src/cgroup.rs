//! cgroup v2 ids (as `bpf_get_current_cgroup_id` returns them) to paths.
//! On cgroup v2 the id is the inode number of the cgroup's directory.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on unified systems, e.g.
/// `/sys/fs/cgroup/unified` on hybrid v1/v2 ones. Found in /proc/mounts.
pub fn v2_root() -> PathBuf {
    std::fs::read_to_string("/proc/mounts")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                let mut f = l.split_whitespace();
                let (_dev, dir, ty) = (f.next()?, f.next()?, f.next()?);
                (ty == "cgroup2").then(|| PathBuf::from(dir))
            })
        })
        .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"))
}

/// Lazily built id → path table; rebuilt once when an id is not found, so
/// cgroups created after start are still named.
#[derive(Default)]
pub struct CgroupNames {
    table: HashMap<u64, String>,
    built: bool,
    rebuilt: bool,
    /// Hierarchy to name; `None`: cgroup v2 ([`v2_root`]).
    root: Option<PathBuf>,
}

/// Where the memory controller's hierarchy is mounted: the cgroup v2 root
/// when it has the `memory` controller, else a cgroup v1 `memory` mount
/// (hybrid systems). Memory cgroup ids resolve to paths below it.
pub fn memory_root() -> Option<PathBuf> {
    let v2 = v2_root();
    let controllers = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory") {
        return Some(v2);
    }
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory"))
            .then(|| PathBuf::from(f[1]))
    })
}

impl CgroupNames {
    /// Names the cgroups of the hierarchy mounted at `root`.
    pub fn under(root: PathBuf) -> CgroupNames {
        CgroupNames {
            root: Some(root),
            ..Default::default()
        }
    }

    fn build(&mut self) {
        self.table.clear();
        let root = self.root.clone().unwrap_or_else(v2_root);
        let dev = std::fs::metadata(&root).map(|m| m.dev()).unwrap_or(0);
        walk(&root, Path::new("/"), dev, 0, &mut self.table);
    }

    /// Path of a cgroup relative to the cgroup v2 root (`/` for the root),
    /// or `None` when it no longer exists.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if !self.built {
            self.build();
            self.built = true;
        }
        if let Some(p) = self.table.get(&id) {
            return Some(p.clone());
        }
        if !self.rebuilt {
            self.rebuilt = true;
            self.build();
        }
        self.table.get(&id).cloned()
    }
}

fn walk(dir: &Path, rel: &Path, dev: u64, depth: usize, out: &mut HashMap<u64, String>) {
    if depth > 32 {
        return;
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    if meta.dev() != dev {
        return; // another filesystem mounted below (never part of v2)
    }
    out.insert(meta.ino(), rel.display().to_string());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let name = e.file_name();
            walk(&e.path(), &rel.join(&name), dev, depth + 1, out);
        }
    }
}

/// Resolves a user-given cgroup (absolute path, or relative to the v2 root).
pub fn resolve_path(arg: &str) -> Result<PathBuf, String> {
    let p = Path::new(arg);
    let root = v2_root();
    let candidates = [p.to_path_buf(), root.join(arg.trim_start_matches('/'))];
    for c in candidates {
        if c.join("cgroup.procs").exists() {
            return Ok(c);
        }
    }
    Err(format!(
        "no cgroup v2 directory '{arg}' (looked at {arg} and {}/{})",
        root.display(),
        arg.trim_start_matches('/')
    ))
}

/// A cgroup v2 directory's id (as `bpf_get_current_cgroup_id` returns it)
/// and its depth below the v2 root (the root is 0), as the kernel's
/// `cgroup->level` counts it.
pub fn id_and_level(dir: &Path) -> Result<(u64, u32), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (dir, root) = (canon(dir), canon(&v2_root()));
    let rel = dir.strip_prefix(&root).map_err(|_| {
        format!(
            "{} is not below the cgroup v2 root {}",
            dir.display(),
            root.display()
        )
    })?;
    Ok((meta.ino(), rel.components().count() as u32))
}

/// The cgroup v2 path of a process, from /proc/PID/cgroup.
pub fn of_pid(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}
