//! Types that cross modules, at the bottom of the crate: what sources
//! report about themselves and what `output`, `serve` and `top` print. This
//! module imports nothing from the crate.

/// One source's status in a report header and in JSON.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct SourceStatus {
    pub name: String,
    pub backend: Option<String>,
    pub available: bool,
    pub reason: Option<String>,
}

/// Kernel run statistics of one BPF program.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProgStats {
    pub name: String,
    pub id: u32,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    pub recursion_misses: u64,
}
