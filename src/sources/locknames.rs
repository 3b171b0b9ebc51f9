//! Names of user-space locks, shared by the sources that see them
//! (`user-locks`, `futex`): a static lock by its ELF symbol, a heap lock
//! by the function that first took it ("first taken in f").

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::procmaps::UserSymbolizer;

/// A lock to name: its process, address and (caller, acquisitions) keys.
pub(crate) struct LockToName {
    pub pid: u32,
    pub lock: u64,
    pub callers: Vec<(u64, u64)>,
}

/// Names locks: by the ELF symbol of a static variable (a global
/// `pthread_mutex_t`), else by the function that took it (of the keys seen
/// when it was first looked at, the one with most acquisitions). `last`:
/// the final look, which names every lock, "unnamed" with the reason when
/// nothing is known.
pub(crate) fn name_locks(
    syms: &Mutex<UserSymbolizer>,
    names: &Mutex<HashMap<(u32, u64), String>>,
    todo: Vec<LockToName>,
    last: bool,
) {
    for t in todo {
        let symbol = syms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .data_name(t.pid, t.lock);
        let name = symbol.or_else(|| {
            let (caller, _) = t
                .callers
                .iter()
                .filter(|(c, _)| *c != 0)
                .max_by_key(|(c, n)| (*n, std::cmp::Reverse(*c)))?;
            let f = syms
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .name(t.pid, *caller)?;
            // the function, without the offset in it
            let f = match f.rsplit_once("+0x") {
                Some((f, _)) => f.to_string(),
                None => f,
            };
            Some(format!("first taken in {f}"))
        });
        let name = match name {
            Some(n) => n,
            None if last => "unnamed (no symbol; its acquisition was not seen)".into(),
            None => continue,
        };
        names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((t.pid, t.lock))
            .or_insert(name);
    }
}
