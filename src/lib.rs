//! lockscope: an eBPF lock profiler. Library first; `main.rs` is a thin CLI.
pub mod app;
pub mod bpf;
pub mod cgroup;
pub mod cli;
pub mod doctor;
pub mod flame;
pub mod holdwork;
pub mod ksyms;
pub mod libbpf_log;
pub mod model;
pub mod output;
pub mod perfetto;
pub mod serve;
pub mod sources;
pub mod units;
pub mod ustack;
pub mod workload;
