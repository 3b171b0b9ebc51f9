//! Built-in workloads with known contention.
