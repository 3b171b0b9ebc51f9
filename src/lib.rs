//! lockscope: an eBPF lock profiler. Library first; `main.rs` is a thin CLI.
pub mod bpf;
pub mod doctor;
pub mod workload;
