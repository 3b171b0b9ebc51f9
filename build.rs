//! Compiles every `src/bpf/<name>.bpf.c` with clang-19 into a libbpf-rs
//! skeleton `<name>.skel.rs` in OUT_DIR (included by `src/bpf.rs`).
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const OBJECTS: &[&str] = &[
    "contention",
    "probe",
    "mmaplock",
    "sched",
    "ulock",
    "futex",
    "kmutex",
    "picknext",
    "files",
    "applocks",
    "kwait",
];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let clang = env::var("LOCKSCOPE_CLANG").unwrap_or_else(|_| "clang-19".to_string());
    for name in OBJECTS {
        let src = format!("src/bpf/{name}.bpf.c");
        let mut args = vec!["-Isrc/bpf", "-Wall", "-Wno-unused-function", "-O2", "-g"];
        // libbpf's usdt.bpf.h includes <linux/errno.h>, whose <asm/errno.h>
        // is in the multiarch directory (Debian)
        let multiarch = format!(
            "/usr/include/{}-linux-gnu",
            env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
        );
        if *name == "applocks" {
            args.push("-idirafter");
            args.push(&multiarch);
        }
        if *name == "contention" {
            // atomics that return the old value (BPF_FETCH, Linux 5.12):
            // the object needs Linux 5.19 anyway
            args.push("-mcpu=v3");
        }
        SkeletonBuilder::new()
            .source(&src)
            .clang(&clang)
            .clang_args(args)
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {src} with {clang}: {e:#}"));
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-changed=src/bpf/lockscope.h");
    println!("cargo:rerun-if-changed=src/bpf/target.bpf.h");
    println!("cargo:rerun-if-changed=src/bpf/user.bpf.h");
    println!("cargo:rerun-if-changed=src/bpf/offcpu.bpf.h");
    println!("cargo:rerun-if-changed=src/bpf/stacks.bpf.h");
    println!("cargo:rerun-if-changed=src/bpf/window.bpf.h");
    println!("cargo:rerun-if-changed=src/bpf/bits.bpf.h");
    println!("cargo:rerun-if-changed=src/bpf/maps.bpf.h");
    println!("cargo:rerun-if-changed=src/bpf/holds.bpf.h");
    println!("cargo:rerun-if-changed=src/bpf/vmlinux.h");
    println!("cargo:rerun-if-env-changed=LOCKSCOPE_CLANG");
}
