//! Types that cross modules, at the bottom of the crate: what sources
//! report about themselves and what `output`, `serve` and `top` print, and
//! the typed error for the user's mistakes. This module imports nothing
//! from the crate.

/// An error caused by the user's input: exit status 2, one line.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A [`Usage`] error with this message.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// One source's status in a report header and in JSON.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct SourceStatus {
    pub name: String,
    pub backend: Option<String>,
    pub available: bool,
    pub reason: Option<String>,
}

/// Kernel run statistics of one BPF program.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ProgStats {
    pub name: String,
    pub id: u32,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    pub recursion_misses: u64,
}
