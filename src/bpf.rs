//! Generated skeletons of the BPF objects under `src/bpf/`.
#![allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    non_camel_case_types,
    unsafe_op_in_unsafe_fn
)]

/// One module a generated skeleton `OUT_DIR/<name>.skel.rs`.
macro_rules! skeletons {
    ($($name:ident),+) => {
        $(
            pub mod $name {
                include!(concat!(env!("OUT_DIR"), "/", stringify!($name), ".skel.rs"));
            }
        )+
    };
}

skeletons!(
    contention, probe, mmaplock, sched, ulock, futex, kmutex, picknext, files, applocks, kwait
);
