//! Generated skeletons of the BPF objects under `src/bpf/`.
#![allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    non_camel_case_types,
    unsafe_op_in_unsafe_fn
)]

pub mod contention {
    include!(concat!(env!("OUT_DIR"), "/contention.skel.rs"));
}

pub mod probe {
    include!(concat!(env!("OUT_DIR"), "/probe.skel.rs"));
}

pub mod mmaplock {
    include!(concat!(env!("OUT_DIR"), "/mmaplock.skel.rs"));
}

pub mod sched {
    include!(concat!(env!("OUT_DIR"), "/sched.skel.rs"));
}

pub mod ulock {
    include!(concat!(env!("OUT_DIR"), "/ulock.skel.rs"));
}

pub mod futex {
    include!(concat!(env!("OUT_DIR"), "/futex.skel.rs"));
}

pub mod kmutex {
    include!(concat!(env!("OUT_DIR"), "/kmutex.skel.rs"));
}

pub mod picknext {
    include!(concat!(env!("OUT_DIR"), "/picknext.skel.rs"));
}

pub mod files {
    include!(concat!(env!("OUT_DIR"), "/files.skel.rs"));
}
