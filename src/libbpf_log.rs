//! libbpf's own messages: kept in a small buffer instead of being printed,
//! so a failed load can quote the verifier's last words in one error, and
//! printed live only when LOCKSCOPE_DEBUG is set.

use std::sync::Mutex;

use libbpf_rs::PrintLevel;

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
const KEEP: usize = 200;

fn sink(level: PrintLevel, msg: String) {
    if std::env::var_os("LOCKSCOPE_DEBUG").is_some() {
        eprint!("{msg}");
    }
    if level == PrintLevel::Debug {
        return;
    }
    if let Ok(mut log) = LOG.lock() {
        if log.len() >= KEEP {
            log.remove(0);
        }
        log.push(msg.trim_end().to_string());
    }
}

/// Routes libbpf's messages to the buffer. Idempotent.
pub fn install() {
    libbpf_rs::set_print(Some((PrintLevel::Debug, sink)));
}

/// Takes the buffered messages and clears the buffer.
pub fn take() -> Vec<String> {
    LOG.lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

/// The most telling lines of a failed load: libbpf's summary lines and the
/// verifier's last few lines.
pub fn summary() -> String {
    let lines = take();
    let tail: Vec<&String> = lines
        .iter()
        .filter(|l| !l.starts_with(|c: char| c.is_ascii_digit() || c == ';'))
        .collect();
    let start = tail.len().saturating_sub(4);
    tail[start..]
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" | ")
}
